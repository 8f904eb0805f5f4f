//! The continuous supervisor: restarts with backoff, crash-loop state, clean stop, publishing.

use std::time::Duration;

use edgefn_runtime::{
    Continuous, ContinuousOptions, ContinuousState, FunctionSpec, LogSink, MessageSink, Payload,
    Sandbox,
};
use edgefn_schema::{Handler, Mode, Runtime};
use serde_json::json;
use tokio::time::Instant;

use crate::common::*;

fn sh(script: &str) -> FunctionSpec {
    FunctionSpec {
        binding: binding("daemon", Mode::Continuous),
        interface: edgefn_schema::Interface::Protocol,
        runtime: Runtime::Exec,
        handler: Handler::Argv(vec!["/bin/sh".into(), "-c".into(), script.into()]),
        bundle_dir: std::env::temp_dir(),
        layer_dir: None,
        device: "dev-1".into(),
        revision: 1,
        secrets_dir: None,
        models: Default::default(),
        models_dir: None,
    }
}

fn fast() -> ContinuousOptions {
    ContinuousOptions {
        backoff_initial: Duration::from_millis(40),
        backoff_max: Duration::from_millis(160),
        reset_after: Duration::from_secs(30),
        crash_loop_after: 3,
        stop_grace: Duration::from_millis(300),
    }
}

/// Watches `c` until `n` restarts were scheduled; returns (restarts, until, crash loop?, reason).
async fn restarts(c: &Continuous, n: u32) -> Vec<(u32, Instant, bool, String)> {
    let mut w = c.watch();
    let mut seen: Vec<(u32, Instant, bool, String)> = Vec::new();
    tokio::time::timeout(Duration::from_secs(20), async {
        loop {
            let s = w.borrow_and_update().clone();
            let entry = match s {
                ContinuousState::Backoff {
                    until,
                    restarts,
                    reason,
                } => Some((restarts, until, false, reason)),
                ContinuousState::CrashLoop {
                    until,
                    restarts,
                    reason,
                    ..
                } => Some((restarts, until, true, reason)),
                _ => None,
            };
            if let Some(e) = entry
                && seen.last().is_none_or(|l| l.0 != e.0)
            {
                seen.push(e);
                if seen.len() as u32 >= n {
                    return;
                }
            }
            w.changed().await.expect("supervisor alive");
        }
    })
    .await
    .expect("restarts happen");
    seen
}

#[tokio::test]
async fn restarts_with_exponential_backoff_into_crash_loop() {
    let (log, mut rx) = logs();
    let c = Continuous::start(
        sh("echo started; exit 3"),
        fast(),
        &Sandbox::process(),
        log,
        MessageSink::new(|_| {}),
    )
    .expect("start");
    let seen = restarts(&c, 5).await;
    let numbers: Vec<u32> = seen.iter().map(|s| s.0).collect();
    assert_eq!(numbers, [1, 2, 3, 4, 5]);
    let crash_loop: Vec<bool> = seen.iter().map(|s| s.2).collect();
    assert_eq!(crash_loop, [false, false, true, true, true]);
    assert!(
        seen.iter().all(|s| s.3 == "exited (exit code 3)"),
        "{seen:?}"
    );
    // Each next start waits at least the doubled (then capped) delay after the previous one.
    let delays = [80, 160, 160, 160];
    for (w, d) in seen.windows(2).zip(delays) {
        assert!(
            w[1].1.duration_since(w[0].1) >= Duration::from_millis(d),
            "restart {} came too early",
            w[1].0
        );
    }
    let started = drain(&mut rx).iter().filter(|l| *l == "started").count();
    assert!(started >= 5, "{started}");
    let last = c.stop().await;
    assert_eq!(last.and_then(|e| e.code), Some(3));
}

#[tokio::test]
async fn staying_up_resets_the_backoff() {
    let opts = ContinuousOptions {
        reset_after: Duration::ZERO,
        crash_loop_after: 2,
        ..fast()
    };
    let c = Continuous::start(
        sh("exit 1"),
        opts,
        &Sandbox::process(),
        LogSink::discard(),
        MessageSink::new(|_| {}),
    )
    .expect("start");
    let seen = restarts(&c, 4).await;
    assert!(seen.iter().all(|s| !s.2), "never a crash loop: {seen:?}");
    c.stop().await;
}

#[tokio::test]
async fn stop_sends_sigterm_then_sigkill_after_grace() {
    let c = Continuous::start(
        sh("exec sleep 1000"),
        fast(),
        &Sandbox::process(),
        LogSink::discard(),
        MessageSink::new(|_| {}),
    )
    .expect("start");
    assert!(matches!(
        c.state(),
        ContinuousState::Starting { .. } | ContinuousState::Running { .. }
    ));
    let mut w = c.watch();
    w.wait_for(|s| matches!(s, ContinuousState::Running { .. }))
        .await
        .expect("running");
    let exit = c.stop().await.expect("an exit");
    assert_eq!(exit.signal, Some(15), "{exit}");

    let (log, mut rx) = logs();
    let c = Continuous::start(
        sh("trap '' TERM; echo ready; while :; do sleep 0.05; done"),
        fast(),
        &Sandbox::process(),
        log,
        MessageSink::new(|_| {}),
    )
    .expect("start");
    wait_for_line(&mut rx, |l| l.line == "ready").await;
    let watch = c.watch();
    let exit = c.stop().await.expect("an exit");
    assert_eq!(exit.signal, Some(9), "ignored SIGTERM, so SIGKILL: {exit}");
    assert!(matches!(*watch.borrow(), ContinuousState::Stopped { .. }));
}

#[tokio::test]
async fn python_continuous_publishes_through_context() {
    let dir = bundle(&[(
        "daemon.py",
        "import time\ndef run(context):\n    for i in range(3):\n        context.publish('metrics/' + context.device, {'i': i})\n    time.sleep(1000)\n",
    )]);
    let mut spec = lang_spec(Runtime::Python3, "daemon.run", dir.path());
    spec.binding.mode = Mode::Continuous;
    let (sink, mut msgs) = MessageSink::channel();
    let c = Continuous::start(spec, fast(), &Sandbox::process(), LogSink::discard(), sink)
        .expect("start");
    for i in 0..3 {
        let m = tokio::time::timeout(Duration::from_secs(10), msgs.recv())
            .await
            .expect("published in time")
            .expect("message");
        assert_eq!(m.topic, "metrics/dev-1");
        assert_eq!(m.payload, Payload::Json(json!({"i": i})));
    }
    assert!(matches!(
        c.state(),
        ContinuousState::Running { restarts: 0, .. }
    ));
    c.stop().await;
}

#[tokio::test]
async fn node_continuous_publishes_and_restarts_when_it_returns() {
    let dir = bundle(&[(
        "daemon.js",
        "exports.run = async (context) => { context.publish('up', Buffer.from([1, 2])); };\n",
    )]);
    let mut spec = lang_spec(Runtime::Node, "daemon.run", dir.path());
    spec.binding.mode = Mode::Continuous;
    let (sink, mut msgs) = MessageSink::channel();
    let c = Continuous::start(spec, fast(), &Sandbox::process(), LogSink::discard(), sink)
        .expect("start");
    for _ in 0..2 {
        let m = tokio::time::timeout(Duration::from_secs(10), msgs.recv())
            .await
            .expect("published in time")
            .expect("message");
        assert_eq!(m.payload, Payload::Bytes(vec![1, 2]));
    }
    let seen = restarts(&c, 1).await;
    assert_eq!(seen[0].3, "exited (exit code 0)");
    c.stop().await;
}

#[tokio::test]
async fn version_mismatch_is_the_restart_reason() {
    let mut spec = exec_spec(&["--protocol", "2"]);
    spec.binding.mode = Mode::Continuous;
    let c = Continuous::start(
        spec,
        fast(),
        &Sandbox::process(),
        LogSink::discard(),
        MessageSink::new(|_| {}),
    )
    .expect("start");
    let seen = restarts(&c, 1).await;
    assert!(
        seen[0].3.contains("version 2") && seen[0].3.contains("version 1"),
        "{seen:?}"
    );
    c.stop().await;
}

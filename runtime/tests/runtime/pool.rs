//! The warm pool in the process sandbox, with the Rust `echo` example as exec function.

use std::time::Duration;

use edgefn_runtime::protocol::ProtocolError;
use edgefn_runtime::{
    Event, InvokeError, LogSink, Payload, Pool, PoolOptions, Sandbox, StartError,
};
use serde_json::json;

use crate::common::*;

fn pool(args: &[&str], log: LogSink) -> Pool {
    Pool::start(
        exec_spec(args),
        PoolOptions::default(),
        &Sandbox::process(),
        log,
    )
    .expect("pool")
}

#[tokio::test]
async fn echo_round_trip_keeps_instance_warm() {
    let p = pool(&[], LogSink::discard());
    for i in 0..3 {
        let r = p
            .invoke(&Event::json("t/a", json!({"n": i})))
            .await
            .expect("reply");
        assert_eq!(r.result, Payload::Json(json!({"n": i})));
    }
    let bytes = p
        .invoke(&Event {
            topic: "t/b".into(),
            payload: Payload::Bytes(vec![0, 159, 255]),
        })
        .await
        .expect("bytes reply");
    assert_eq!(bytes.result, Payload::Bytes(vec![0, 159, 255]));
    let s = p.stats();
    assert_eq!(
        (s.started, s.instances, s.idle, s.invocations),
        (1, 1, 1, 4)
    );
    p.stop().await;
}

#[tokio::test]
async fn publish_and_handler_error_are_reported() {
    let p = pool(&[], LogSink::discard());
    let r = p
        .invoke(&Event::json(
            "t",
            json!({"publish": [["alerts/x", {"v": 1}]]}),
        ))
        .await
        .expect("reply");
    assert_eq!(r.publish.len(), 1);
    assert_eq!(r.publish[0].topic, "alerts/x");
    assert_eq!(r.publish[0].payload, Payload::Json(json!({"v": 1})));
    let err = p
        .invoke(&Event::json("t", json!({"fail": "no sensor"})))
        .await
        .expect_err("handler error");
    let InvokeError::Handler(h) = err else {
        panic!("{err:?}")
    };
    assert_eq!(
        (h.kind.as_str(), h.message.as_str()),
        ("EchoError", "no sensor")
    );
    // A handler error keeps the instance.
    p.invoke(&Event::json("t", json!(1)))
        .await
        .expect("still warm");
    assert_eq!(p.stats().started, 1);
    p.stop().await;
}

#[tokio::test]
async fn timeout_kills_and_replaces_the_instance() {
    let mut spec = exec_spec(&[]);
    spec.binding.timeout_ms = 200;
    let p = Pool::start(
        spec,
        PoolOptions::default(),
        &Sandbox::process(),
        LogSink::discard(),
    )
    .expect("pool");
    let err = p
        .invoke(&Event::json("t", json!({"sleep_ms": 5000})))
        .await
        .expect_err("times out");
    assert!(
        matches!(err, InvokeError::Timeout { timeout_ms: 200 }),
        "{err:?}"
    );
    assert_eq!(p.stats().instances, 0, "the timed-out instance is gone");
    p.invoke(&Event::json("t", json!(2)))
        .await
        .expect("replacement works");
    assert_eq!(p.stats().started, 2);
    p.stop().await;
}

#[tokio::test]
async fn crash_fails_the_event_with_exit_status_and_is_replaced() {
    let p = pool(&[], LogSink::discard());
    let err = p
        .invoke(&Event::json("t", json!({"exit": 3})))
        .await
        .expect_err("crash");
    let InvokeError::Crashed { exit } = err else {
        panic!("{err:?}")
    };
    assert_eq!(exit.code, Some(3));
    let err = p
        .invoke(&Event::json("t", json!({"abort": true})))
        .await
        .expect_err("abort");
    let InvokeError::Crashed { exit } = &err else {
        panic!("{err:?}")
    };
    assert_eq!(exit.signal, Some(6));
    assert!(err.to_string().contains("SIGABRT"), "{err}");
    p.invoke(&Event::json("t", json!(3)))
        .await
        .expect("replaced");
    assert_eq!(p.stats().started, 3);
    p.stop().await;
}

#[tokio::test]
async fn memory_rlimit_exhaustion_is_out_of_memory() {
    let mut spec = exec_spec(&[]);
    spec.binding.memory_bytes = 64 << 20;
    let (log, mut rx) = logs();
    let p = Pool::start(spec, PoolOptions::default(), &Sandbox::process(), log).expect("pool");
    let small = p.invoke(&Event::json("t", json!({"alloc_mb": 8}))).await;
    assert_eq!(
        small.expect("8 MiB fits").result,
        Payload::Json(json!(8 << 20))
    );
    let err = p
        .invoke(&Event::json("t", json!({"alloc_mb": 200})))
        .await
        .expect_err("oom");
    assert!(
        matches!(err, InvokeError::OutOfMemory { limit_bytes, .. } if limit_bytes == 64 << 20),
        "{err:?}"
    );
    let lines = drain(&mut rx);
    assert!(
        lines.iter().any(|l| l.contains("memory allocation of")),
        "{lines:?}"
    );
    p.stop().await;
}

#[tokio::test]
async fn handshake_version_mismatch_names_both_versions() {
    let p = pool(&["--protocol", "9"], LogSink::discard());
    let err = p
        .invoke(&Event::json("t", json!(1)))
        .await
        .expect_err("mismatch");
    assert!(
        matches!(
            err,
            InvokeError::Start(StartError::Handshake(ProtocolError::VersionMismatch {
                instance: 9,
                runtime: 1
            }))
        ),
        "{err:?}"
    );
    let text = err.to_string();
    assert!(
        text.contains("version 9") && text.contains("version 1"),
        "{text}"
    );
    assert_eq!(p.stats().instances, 0);
    p.stop().await;
}

#[tokio::test]
async fn init_error_is_reported_as_such() {
    let p = pool(&["--init-error"], LogSink::discard());
    let err = p
        .invoke(&Event::json("t", json!(1)))
        .await
        .expect_err("init");
    let InvokeError::Start(StartError::Init(h)) = &err else {
        panic!("{err:?}")
    };
    assert_eq!(h.kind, "ConfigError");
    assert!(err.to_string().contains("failed to initialize"), "{err}");
}

#[tokio::test]
async fn missing_program_is_a_start_error() {
    let mut spec = exec_spec(&[]);
    spec.handler = edgefn_schema::Handler::Argv(vec!["./does-not-exist".into()]);
    let p = Pool::start(
        spec,
        PoolOptions::default(),
        &Sandbox::process(),
        LogSink::discard(),
    )
    .expect("pool");
    let err = p
        .invoke(&Event::json("t", json!(1)))
        .await
        .expect_err("no program");
    assert!(
        matches!(err, InvokeError::Start(StartError::Sandbox(_))),
        "{err:?}"
    );
    assert!(err.to_string().contains("does-not-exist"), "{err}");
}

#[tokio::test]
async fn overload_beyond_the_queue_bound() {
    let (log, mut rx) = logs();
    let opts = PoolOptions {
        queue_per_instance: 1,
        ..PoolOptions::default()
    };
    let p = Pool::start(exec_spec(&["--print"]), opts, &Sandbox::process(), log).expect("pool");
    let busy = tokio::spawn({
        let p = p.clone();
        async move { p.invoke(&Event::json("t", json!({"sleep_ms": 400}))).await }
    });
    wait_for_line(&mut rx, |l| l.line.contains("sleep_ms")).await;
    let queued = tokio::spawn({
        let p = p.clone();
        async move { p.invoke(&Event::json("t", json!("queued"))).await }
    });
    eventually("one invocation queued", || p.stats().queued == 1).await;
    let err = p
        .invoke(&Event::json("t", json!(3)))
        .await
        .expect_err("overloaded");
    assert!(
        matches!(
            err,
            InvokeError::Overloaded {
                concurrency: 1,
                queued: 1
            }
        ),
        "{err:?}"
    );
    assert!(err.to_string().contains("overloaded"), "{err}");
    busy.await.expect("join").expect("busy one completes");
    let r = queued.await.expect("join").expect("queued one completes");
    assert_eq!(r.result, Payload::Json(json!("queued")));
    assert_eq!(p.stats().started, 1);
    p.stop().await;
}

#[tokio::test]
async fn scales_up_under_load_and_down_when_idle() {
    let mut spec = exec_spec(&["--print"]);
    spec.binding.concurrency = 2;
    let (log, mut rx) = logs();
    let opts = PoolOptions {
        idle_timeout: Some(Duration::from_millis(500)),
        ..PoolOptions::default()
    };
    let p = Pool::start(spec, opts, &Sandbox::process(), log).expect("pool");
    let calls: Vec<_> = (0..4)
        .map(|i| {
            let p = p.clone();
            tokio::spawn(async move {
                p.invoke(&Event::json("t", json!({"sleep_ms": 150, "i": i})))
                    .await
            })
        })
        .collect();
    // Two instances handle events at the same time.
    let a = wait_for_line(&mut rx, |l| l.line.contains("sleep_ms")).await;
    let b = wait_for_line(&mut rx, |l| {
        l.line.contains("sleep_ms") && l.instance != a.instance
    })
    .await;
    assert_ne!(a.instance, b.instance);
    for c in calls {
        c.await.expect("join").expect("reply");
    }
    let s = p.stats();
    assert_eq!((s.started, s.instances), (2, 2), "{s:?}");
    eventually("idle instances stopped", || p.stats().instances == 0).await;
    assert_eq!(p.stats().idled_out, 2);
    // The next event starts a fresh instance.
    p.invoke(&Event::json("t", json!(1)))
        .await
        .expect("cold again");
    assert_eq!(p.stats().started, 3);
    p.stop().await;
}

#[tokio::test]
async fn stop_fails_queued_invocations_and_kills_instances() {
    let (log, mut rx) = logs();
    let p = Pool::start(
        exec_spec(&["--print"]),
        PoolOptions::default(),
        &Sandbox::process(),
        log,
    )
    .expect("pool");
    let busy = tokio::spawn({
        let p = p.clone();
        async move { p.invoke(&Event::json("t", json!({"sleep_ms": 200}))).await }
    });
    wait_for_line(&mut rx, |l| l.line.contains("sleep_ms")).await;
    let queued = tokio::spawn({
        let p = p.clone();
        async move { p.invoke(&Event::json("t", json!(2))).await }
    });
    eventually("queued", || p.stats().queued == 1).await;
    p.clone().stop().await;
    assert!(busy.await.expect("join").is_ok(), "in-flight work finishes");
    let err = queued.await.expect("join").expect_err("stopped");
    assert!(matches!(err, InvokeError::Stopped), "{err:?}");
    assert_eq!(p.stats().instances, 0);
    let err = p
        .invoke(&Event::json("t", json!(3)))
        .await
        .expect_err("stopped");
    assert!(matches!(err, InvokeError::Stopped), "{err:?}");
}

#[tokio::test]
async fn an_event_larger_than_a_frame_is_refused_and_the_instance_kept() {
    let p = pool(&[], LogSink::discard());
    p.invoke(&Event::json("t", json!(1))).await.expect("warm");
    let huge = Event {
        topic: "t".into(),
        payload: Payload::Bytes(vec![7; edgefn_runtime::protocol::MAX_FRAME]),
    };
    let err = p.invoke(&huge).await.expect_err("too large");
    assert!(matches!(err, InvokeError::EventTooLarge(_)), "{err:?}");
    assert!(err.to_string().contains("exceeds the limit"), "{err}");
    p.invoke(&Event::json("t", json!(2)))
        .await
        .expect("same instance");
    assert_eq!(p.stats().started, 1);
    p.stop().await;
}

#[tokio::test]
async fn cpu_time_rlimit_ends_a_runaway_instance() {
    let sandbox = Sandbox::new(edgefn_runtime::SandboxOptions {
        cpu_time: Some(Duration::from_secs(1)),
        ..edgefn_runtime::SandboxOptions::default()
    })
    .expect("process sandbox");
    let mut spec = exec_spec(&[]);
    spec.binding.timeout_ms = 30_000;
    let p = Pool::start(spec, PoolOptions::default(), &sandbox, LogSink::discard()).expect("pool");
    let err = p
        .invoke(&Event::json("t", json!({"spin_ms": 20_000})))
        .await
        .expect_err("killed by RLIMIT_CPU");
    let InvokeError::Crashed { exit } = &err else {
        panic!("{err:?}")
    };
    assert_eq!(exit.signal, Some(24), "SIGXCPU: {err}");
    p.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn many_concurrent_invocations_with_crashes_and_cancellations_keep_the_books() {
    let mut spec = exec_spec(&[]);
    spec.binding.concurrency = 3;
    let p = Pool::start(
        spec,
        PoolOptions::default(),
        &Sandbox::process(),
        LogSink::discard(),
    )
    .expect("pool");
    let calls: Vec<_> = (0..150)
        .map(|i| {
            let p = p.clone();
            tokio::spawn(async move {
                let payload = if i % 10 == 7 {
                    json!({"exit": 5})
                } else {
                    json!({"i": i})
                };
                (i, p.invoke(&Event::json("t", payload)).await)
            })
        })
        .collect();
    let (mut ok, mut crashed) = (0, 0);
    for c in calls {
        match c.await.expect("join") {
            (i, Ok(r)) => {
                assert_eq!(r.result, Payload::Json(json!({"i": i})));
                ok += 1;
            }
            (_, Err(InvokeError::Crashed { exit })) => {
                assert_eq!(exit.code, Some(5));
                crashed += 1;
            }
            (_, Err(e)) => panic!("unexpected: {e:?}"),
        }
    }
    assert_eq!((ok, crashed), (135, 15));
    let s = p.stats();
    assert!(s.instances <= 3 && s.queued == 0, "{s:?}");
    // Three instances, plus at most one replacement per crash (none for a crash that no later
    // event needed a replacement for).
    assert!((3..=3 + 15).contains(&s.started), "{s:?}");

    // Callers that give up (dropped futures) while waiting or while being served leak nothing.
    let impatient: Vec<_> = (0..30)
        .map(|_| {
            let p = p.clone();
            tokio::spawn(async move {
                tokio::time::timeout(
                    Duration::from_millis(5),
                    p.invoke(&Event::json("t", json!({"sleep_ms": 50}))),
                )
                .await
            })
        })
        .collect();
    for c in impatient {
        assert!(c.await.expect("join").is_err(), "gave up");
    }
    let s = p.stats();
    assert!(s.instances <= 3 && s.queued == 0, "{s:?}");
    // All three slots are usable again.
    let again: Vec<_> = (0..3)
        .map(|i| {
            let p = p.clone();
            tokio::spawn(async move { p.invoke(&Event::json("t", json!(i))).await })
        })
        .collect();
    for c in again {
        c.await.expect("join").expect("served");
    }
    p.stop().await;
}

#[tokio::test]
async fn the_python_exec_example_speaks_the_protocol() {
    let (log, mut rx) = logs();
    let mut spec = exec_spec(&[]);
    spec.bundle_dir = std::path::PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/examples"));
    spec.handler = edgefn_schema::Handler::Argv(vec!["/usr/bin/python3".into(), "echo.py".into()]);
    let p = Pool::start(spec, PoolOptions::default(), &Sandbox::process(), log).expect("pool");
    let r = p
        .invoke(&Event::json("a/b", json!({"v": 1})))
        .await
        .expect("reply");
    assert_eq!(
        r.result,
        Payload::Json(json!({"topic": "a/b", "payload": {"v": 1}}))
    );
    assert_eq!(r.publish[0].topic, "echo/a/b");
    wait_for_line(&mut rx, |l| l.line == "event 1 on a/b").await;
    p.stop().await;
}

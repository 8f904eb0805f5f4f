//! Helpers shared by the runtime's integration tests.
#![allow(dead_code, unreachable_pub)]

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use edgefn_runtime::{FunctionSpec, LogLine, LogSink};
use edgefn_schema::{Handler, Mode, ResolvedBinding, Runtime};
use tokio::sync::mpsc::UnboundedReceiver;

/// The compiled `echo` example (cargo builds examples before integration tests).
pub fn echo_exe() -> PathBuf {
    let exe = std::env::current_exe().expect("test exe");
    let dir = exe.parent().and_then(Path::parent).expect("target dir");
    let echo = dir.join("examples").join("echo");
    assert!(
        echo.exists(),
        "{} missing: build the echo example",
        echo.display()
    );
    echo
}

pub fn binding(name: &str, mode: Mode) -> ResolvedBinding {
    ResolvedBinding {
        name: name.into(),
        function: name.into(),
        mode,
        triggers: vec!["t/#".into()],
        concurrency: 1,
        idle_timeout_ms: 60_000,
        memory_bytes: 256 << 20,
        cpu_millis: 1000,
        timeout_ms: 5_000,
        env: BTreeMap::new(),
        secrets: BTreeMap::new(),
        device_nodes: Vec::new(),
        gpu: None,
        models: Vec::new(),
    }
}

pub fn exec_spec(args: &[&str]) -> FunctionSpec {
    let mut argv = vec![echo_exe().display().to_string()];
    argv.extend(args.iter().map(|s| s.to_string()));
    FunctionSpec {
        binding: binding("echo", Mode::Triggered),
        interface: edgefn_schema::Interface::Protocol,
        runtime: Runtime::Exec,
        handler: Handler::Argv(argv),
        bundle_dir: std::env::temp_dir(),
        layer_dir: None,
        device: "dev-1".into(),
        revision: 7,
        secrets_dir: None,
        models: Default::default(),
        models_dir: None,
    }
}

/// A bundle folder holding `files`.
pub fn bundle(files: &[(&str, &str)]) -> tempfile::TempDir {
    let dir = tempfile::tempdir().expect("tempdir");
    for (name, text) in files {
        std::fs::write(dir.path().join(name), text).expect("write bundle file");
    }
    dir
}

pub fn lang_spec(runtime: Runtime, handler: &str, dir: &Path) -> FunctionSpec {
    FunctionSpec {
        binding: binding("fn", Mode::Triggered),
        interface: edgefn_schema::Interface::Protocol,
        runtime,
        handler: Handler::Entry(handler.into()),
        bundle_dir: dir.to_path_buf(),
        layer_dir: None,
        device: "dev-1".into(),
        revision: 7,
        secrets_dir: None,
        models: Default::default(),
        models_dir: None,
    }
}

pub fn logs() -> (LogSink, UnboundedReceiver<LogLine>) {
    LogSink::channel()
}

/// Receives log lines until one satisfies `pred`; panics after 10 s.
pub async fn wait_for_line(
    rx: &mut UnboundedReceiver<LogLine>,
    mut pred: impl FnMut(&LogLine) -> bool,
) -> LogLine {
    tokio::time::timeout(Duration::from_secs(10), async {
        loop {
            let l = rx.recv().await.expect("log channel open");
            if pred(&l) {
                return l;
            }
        }
    })
    .await
    .expect("expected log line did not arrive")
}

/// Collects every log line received so far.
pub fn drain(rx: &mut UnboundedReceiver<LogLine>) -> Vec<String> {
    let mut out = Vec::new();
    while let Ok(l) = rx.try_recv() {
        out.push(l.line);
    }
    out
}

/// Waits (checking every 5 ms, at most 10 s) until `cond` holds.
pub async fn eventually(what: &str, mut cond: impl FnMut() -> bool) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while !cond() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting: {what}"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

//! Plain programs (`interface: stdio` and `lines`): exec functions that do not speak the framed
//! protocol, in the process sandbox and (as root with cgroups) in containers.

use edgefn_runtime::{
    Event, FunctionSpec, InvokeError, LogSink, Payload, Pool, PoolOptions, Sandbox,
};
use edgefn_schema::{Handler, Interface, Mode, Runtime};
use serde_json::json;

use crate::common::*;

/// A triggered exec function running `sh -c script` with the given interface.
fn sh(interface: Interface, script: &str) -> FunctionSpec {
    FunctionSpec {
        binding: binding("plain", Mode::Triggered),
        interface,
        runtime: Runtime::Exec,
        handler: Handler::Argv(vec!["/bin/sh".into(), "-c".into(), script.into()]),
        bundle_dir: std::env::temp_dir(),
        layer_dir: None,
        device: "dev-1".into(),
        revision: 3,
        secrets_dir: None,
        models: Default::default(),
        models_dir: None,
    }
}

fn pool(spec: FunctionSpec, sandbox: &Sandbox, log: LogSink) -> Pool {
    Pool::start(spec, PoolOptions::default(), sandbox, log).expect("pool")
}

fn text(s: &str) -> Payload {
    Payload::Json(json!(s))
}

#[tokio::test]
async fn stdio_runs_one_process_per_event_with_the_payload_on_stdin() {
    let p = pool(
        sh(
            Interface::Stdio,
            "tr a-z A-Z; echo \" from $EDGEFN_FUNCTION on $EDGEFN_TOPIC\"",
        ),
        &Sandbox::process(),
        LogSink::discard(),
    );
    for name in ["ada", "grace", "linus"] {
        let topic = format!("greet/{name}");
        let r = p.invoke(&ev(&topic, text(name))).await.expect("reply");
        // Text in, text out; one trailing newline removed; the topic in the environment.
        assert_eq!(
            r.result,
            text(&format!("{} from plain on {topic}", name.to_uppercase()))
        );
    }
    let stats = p.stats();
    assert_eq!(stats.started, 3, "one process per event: {stats:?}");
    assert_eq!(stats.instances, 0, "a spent process is not kept: {stats:?}");
    p.warm().await.expect("warm");
    assert_eq!(
        p.stats().started,
        3,
        "nothing to warm for a per-event program"
    );
    p.stop().await;
}

#[tokio::test]
async fn stdio_json_in_and_out_by_the_payload_contract() {
    let p = pool(
        sh(Interface::Stdio, "cat"),
        &Sandbox::process(),
        LogSink::discard(),
    );
    let event = json!({"celsius": 45, "tags": ["a", "b"]});
    let r = p
        .invoke(&Event::json("t", event.clone()))
        .await
        .expect("reply");
    assert_eq!(r.result, Payload::Json(event));
    // Bytes that are not UTF-8 go through as bytes, both ways.
    let raw = vec![0xff, 0x00, 0xfe, b'\n', 0x80];
    let r = p
        .invoke(&ev("t", Payload::Bytes(raw.clone())))
        .await
        .expect("reply");
    assert_eq!(r.result, Payload::Bytes(raw));
    p.stop().await;
}

#[tokio::test]
async fn stdio_streams_large_payloads_both_ways_and_tolerates_unread_input() {
    let p = pool(
        sh(Interface::Stdio, "cat"),
        &Sandbox::process(),
        LogSink::discard(),
    );
    // Larger than any socket buffer: reading and writing at once, or this deadlocks.
    let big = "x".repeat(4 << 20);
    let r = p.invoke(&ev("t", text(&big))).await.expect("reply");
    assert_eq!(r.result, text(&big));
    p.stop().await;

    // A program that never reads its stdin still answers.
    let p = pool(
        sh(Interface::Stdio, "echo ignored"),
        &Sandbox::process(),
        LogSink::discard(),
    );
    let r = p.invoke(&ev("t", text(&big))).await.expect("reply");
    assert_eq!(r.result, text("ignored"));
    p.stop().await;
}

#[tokio::test]
async fn stdio_failure_is_the_exit_status_and_stderr_is_the_log() {
    let (log, mut rx) = logs();
    let p = pool(
        sh(Interface::Stdio, "echo 'no such sensor' >&2; exit 3"),
        &Sandbox::process(),
        log,
    );
    let err = p.invoke(&ev("t", text("x"))).await.expect_err("fails");
    match &err {
        InvokeError::Handler(h) => {
            assert_eq!(h.kind, "ExitStatus");
            assert!(h.message.contains('3'), "{h}");
        }
        other => panic!("expected a handler error, got {other:?}"),
    }
    wait_for_line(&mut rx, |l| l.line == "no such sensor").await;
    // The next event gets a new process, and fails the same way (not "overloaded" or stuck).
    let again = p.invoke(&ev("t", text("x"))).await.expect_err("fails");
    assert!(matches!(again, InvokeError::Handler(_)), "{again:?}");
    p.stop().await;
}

#[tokio::test]
async fn stdio_timeout_kills_the_program() {
    let mut spec = sh(Interface::Stdio, "sleep 30");
    spec.binding.timeout_ms = 300;
    let p = pool(spec, &Sandbox::process(), LogSink::discard());
    let err = p.invoke(&ev("t", text("x"))).await.expect_err("times out");
    assert!(matches!(err, InvokeError::Timeout { .. }), "{err:?}");
    p.stop().await;
}

/// A shell loop that answers each line with `{"got": LINE, "seen": K}`, K counting events in
/// this process: proof that one process handled them all.
const LINES_COUNTER: &str = r#"k=0; while IFS= read -r line; do k=$((k+1)); printf '{"got": %s, "seen": %d}\n' "$line" "$k"; done"#;

#[tokio::test]
async fn lines_keeps_one_program_warm_for_every_event() {
    let p = pool(
        sh(Interface::Lines, LINES_COUNTER),
        &Sandbox::process(),
        LogSink::discard(),
    );
    for i in 1..=5 {
        let r = p
            .invoke(&Event::json("t", json!({"i": i})))
            .await
            .expect("reply");
        assert_eq!(
            r.result,
            Payload::Json(json!({"got": {"topic": "t", "payload": {"i": i}}, "seen": i}))
        );
    }
    // Text is sent as a JSON string: a newline inside cannot split the event.
    let r = p.invoke(&ev("t", text("two\nlines"))).await.expect("reply");
    assert_eq!(
        r.result,
        Payload::Json(json!({"got": {"topic": "t", "payload": "two\nlines"}, "seen": 6}))
    );
    assert_eq!(p.stats().started, 1, "{:?}", p.stats());
    p.stop().await;
}

#[tokio::test]
async fn lines_refuses_binary_events_and_stays_warm() {
    let p = pool(
        sh(Interface::Lines, LINES_COUNTER),
        &Sandbox::process(),
        LogSink::discard(),
    );
    let err = p
        .invoke(&ev("t", Payload::Bytes(vec![0xff, 0xfe])))
        .await
        .expect_err("binary");
    match &err {
        InvokeError::Handler(h) => {
            assert_eq!(h.kind, "UnsupportedPayload");
            assert!(h.message.contains("interface: stdio"), "{h}");
        }
        other => panic!("expected a handler error, got {other:?}"),
    }
    let r = p.invoke(&Event::json("t", json!(1))).await.expect("reply");
    assert_eq!(
        r.result,
        Payload::Json(json!({"got": {"topic": "t", "payload": 1}, "seen": 1}))
    );
    assert_eq!(p.stats().started, 1);
    p.stop().await;
}

#[tokio::test]
async fn lines_program_that_exits_between_events_is_replaced_before_the_next() {
    let dir = tempfile::tempdir().expect("tmp");
    let pidfile = dir.path().join("pid");
    // Answers one line, says which process it was, then exits.
    let p = pool(
        sh(
            Interface::Lines,
            &format!(
                "read -r line; echo \"$line\"; echo $$ > {}",
                pidfile.display()
            ),
        ),
        &Sandbox::process(),
        LogSink::discard(),
    );
    let r = p
        .invoke(&Event::json("t", json!({"a": 1})))
        .await
        .expect("reply");
    assert_eq!(
        r.result,
        Payload::Json(json!({"topic": "t", "payload": {"a": 1}}))
    );
    eventually("the program has exited", || {
        std::fs::read_to_string(&pidfile)
            .ok()
            .and_then(|p| p.trim().parse::<u32>().ok())
            .is_some_and(|pid| {
                std::fs::read_to_string(format!("/proc/{pid}/stat"))
                    .map_or(true, |s| s.contains(") Z "))
            })
    })
    .await;
    // The next event is not lost on the dead instance: it goes to a fresh one.
    let r = p
        .invoke(&Event::json("t", json!(2)))
        .await
        .expect("a new instance");
    assert_eq!(r.result, Payload::Json(json!({"topic": "t", "payload": 2})));
    assert_eq!(p.stats().started, 2);
    p.stop().await;
}

#[tokio::test]
async fn lines_program_that_exits_without_answering_is_a_crash() {
    let p = pool(
        sh(Interface::Lines, "read -r line; exit 0"),
        &Sandbox::process(),
        LogSink::discard(),
    );
    let err = p
        .invoke(&Event::json("t", json!(1)))
        .await
        .expect_err("no answer");
    assert!(matches!(err, InvokeError::Crashed { .. }), "{err:?}");
    p.stop().await;
}

#[tokio::test]
async fn lines_output_between_answers_is_logged_not_taken_for_the_next_result() {
    let (log, mut rx) = logs();
    // Two lines per event, in one write: only the first is the answer.
    let p = pool(
        sh(
            Interface::Lines,
            r#"k=0; while IFS= read -r line; do k=$((k+1)); printf '{"answer": %d}\n{"stray": %d}\n' "$k" "$k"; done"#,
        ),
        &Sandbox::process(),
        log,
    );
    for k in 1..=3 {
        let r = p.invoke(&Event::json("t", json!(k))).await.expect("reply");
        assert_eq!(r.result, Payload::Json(json!({"answer": k})));
    }
    wait_for_line(&mut rx, |l| {
        l.line == "(not an answer: printed between events) {\"stray\": 2}"
    })
    .await;
    p.stop().await;
}

#[tokio::test]
async fn stdio_output_past_the_result_limit_is_a_clear_error() {
    let p = pool(
        sh(Interface::Stdio, "head -c 20000000 /dev/zero"),
        &Sandbox::process(),
        LogSink::discard(),
    );
    let err = p.invoke(&ev("t", text("x"))).await.expect_err("too large");
    match &err {
        InvokeError::Handler(h) => {
            assert_eq!(h.kind, "ResultTooLarge");
            assert!(h.message.contains("16 MiB"), "{h}");
        }
        other => panic!("expected a handler error, got {other:?}"),
    }
    p.stop().await;
}

#[tokio::test]
async fn a_program_without_the_execute_bit_says_how_to_fix_it() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().expect("tmp");
    let prog = dir.path().join("m.sh");
    std::fs::write(&prog, "#!/bin/sh\ncat\n").expect("write");
    std::fs::set_permissions(&prog, std::fs::Permissions::from_mode(0o644)).expect("chmod");
    let mut spec = sh(Interface::Stdio, "");
    spec.handler = Handler::Argv(vec!["./m.sh".into()]);
    spec.bundle_dir = dir.path().to_path_buf();
    let p = pool(spec, &Sandbox::process(), LogSink::discard());
    let err = p
        .invoke(&ev("t", text("x")))
        .await
        .expect_err("not executable");
    assert!(err.to_string().contains("chmod +x"), "{err}");
    p.stop().await;
}

#[tokio::test]
async fn plain_programs_in_containers() {
    let Some((sandbox, _state)) = crate::container::container() else {
        return;
    };
    let mut spec = sh(Interface::Stdio, "tr a-z A-Z");
    spec.binding.name = "ctr-plain-stdio".into();
    let p = pool(spec, &sandbox, LogSink::discard());
    for name in ["ada", "grace"] {
        let r = p.invoke(&ev("t", text(name))).await.expect("reply");
        assert_eq!(r.result, text(&name.to_uppercase()));
    }
    assert_eq!(p.stats().started, 2);
    p.stop().await;

    let mut spec = sh(Interface::Lines, LINES_COUNTER);
    spec.binding.name = "ctr-plain-lines".into();
    let p = pool(spec, &sandbox, LogSink::discard());
    for i in 1..=3 {
        let r = p.invoke(&Event::json("t", json!(i))).await.expect("reply");
        assert_eq!(
            r.result,
            Payload::Json(json!({"got": {"topic": "t", "payload": i}, "seen": i}))
        );
    }
    assert_eq!(p.stats().started, 1);
    p.stop().await;
}

fn ev(topic: &str, payload: Payload) -> Event {
    Event {
        topic: topic.into(),
        payload,
    }
}

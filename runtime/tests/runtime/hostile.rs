//! Hostile values through every path of the shims (result, error, publish, log) and the frame
//! decoder: text that cannot be encoded (lone surrogates), values that are not JSON, errors that
//! cannot be printed, stray async failures. Each becomes an ordinary result or handler error,
//! and the warm instance survives all of them.

use edgefn_runtime::{
    Continuous, ContinuousOptions, Event, InvokeError, LogSink, MessageSink, Payload, Pool,
    PoolOptions, Sandbox,
};
use edgefn_schema::{Mode, Runtime};
use serde_json::{Value, json};

use crate::common::*;

const PY: &str = r#"
import sys

BAD = b"caf\xe9 \xff".decode("utf-8", "surrogateescape")
LONE = "half \ud83d of a pair"

class Unprintable(Exception):
    def __str__(self):
        raise RuntimeError("no text for you")

def deep(n):
    v = []
    for _ in range(n):
        v = [v]
    return v

def handle(event, context):
    case = event["payload"]
    if case == "raise-surrogateescape":
        raise ValueError(BAD)
    if case == "raise-lone":
        raise RuntimeError(LONE)
    if case == "raise-unprintable":
        raise Unprintable()
    if case == "return-text":
        return {"bad": BAD, "lone": LONE, "pair": "\ud83d\ude00"}
    if case == "return-nan":
        return float("nan")
    if case == "return-set":
        return {1, 2}
    if case == "return-deep":
        return deep(200)
    if case == "return-very-deep":
        return deep(100000)
    if case == "publish-text":
        context.publish("t/" + BAD, {"v": LONE})
        return "published"
    if case == "publish-unserializable-then-raise":
        context.publish("t", {1, 2})
        raise ValueError("after a bad publish")
    if case == "log-text":
        print("out " + LONE)
        print("err " + BAD, file=sys.stderr)
        return "logged"
    return "ok"
"#;

const JS: &str = r#"
const LONE = 'half \ud83d of a pair';
exports.handle = async (event, context) => {
  const c = event.payload;
  if (c === 'raise-lone') throw new Error(LONE);
  if (c === 'throw-string-lone') throw LONE;
  if (c === 'throw-null-prototype') throw Object.create(null);
  if (c === 'throw-hostile-message') {
    const e = new TypeError('x');
    Object.defineProperty(e, 'message', { get() { throw new Error('no message'); } });
    throw e;
  }
  if (c === 'return-text') return { lone: LONE, low: '\udc80', pair: '\ud83d\ude00' };
  if (c === 'return-lone-string') return '\ud83d';
  if (c === 'return-bigint') return 10n;
  if (c === 'return-circular') { const o = {}; o.o = o; return o; }
  if (c === 'return-deep') { let v = []; for (let i = 0; i < 200; i++) v = [v]; return v; }
  if (c === 'publish-text') { context.publish('t/\udfff', { v: LONE }); return 'published'; }
  if (c === 'log-text') { console.log('out ' + LONE); console.error('err \udc80'); return 'logged'; }
  if (c === 'stray-rejection') {
    // Not awaited: rejects 300 ms later, while the next event is in flight.
    (async () => { await new Promise((r) => setTimeout(r, 300)); throw new Error('stray failure'); })();
    return 'started';
  }
  if (c === 'stray-throw') {
    setTimeout(() => { throw new Error('thrown from a timer'); }, 300);
    return 'started';
  }
  if (c === 'slow') { await new Promise((r) => setTimeout(r, 900)); return 'slow done'; }
  return 'ok';
};
"#;

const FFFD: char = '\u{fffd}';

fn pool(runtime: Runtime, dir: &std::path::Path, log: LogSink) -> Pool {
    let handler = match runtime {
        Runtime::Python3 => "main.handle",
        _ => "index.handle",
    };
    Pool::start(
        lang_spec(runtime, handler, dir),
        PoolOptions::default(),
        &Sandbox::process(),
        log,
    )
    .expect("pool")
}

async fn ok(p: &Pool, case: &str) -> (Value, Vec<edgefn_runtime::Message>) {
    match p.invoke(&Event::json("t", json!(case))).await {
        Ok(r) => match r.result {
            Payload::Json(v) => (v, r.publish),
            other => panic!("{case}: not JSON: {other:?}"),
        },
        Err(e) => panic!("{case}: {e}"),
    }
}

async fn handler_error(p: &Pool, case: &str) -> edgefn_runtime::HandlerError {
    match p.invoke(&Event::json("t", json!(case))).await {
        Err(InvokeError::Handler(h)) => h,
        other => panic!("{case}: expected a handler error, got {other:?}"),
    }
}

/// Waits for a line matching `a` and one matching `b`, in either order: stdout and stderr are
/// read by two tasks, so their lines reach the log in no set order.
async fn both_lines(
    rx: &mut tokio::sync::mpsc::UnboundedReceiver<edgefn_runtime::LogLine>,
    a: impl Fn(&edgefn_runtime::LogLine) -> bool,
    b: impl Fn(&edgefn_runtime::LogLine) -> bool,
) {
    let (mut seen_a, mut seen_b) = (false, false);
    wait_for_line(rx, |l| {
        seen_a |= a(l);
        seen_b |= b(l);
        seen_a && seen_b
    })
    .await;
}

#[tokio::test]
async fn python_hostile_values_fail_the_event_not_the_instance() {
    let dir = bundle(&[("main.py", PY)]);
    let (log, mut rx) = logs();
    let p = pool(Runtime::Python3, dir.path(), log);

    let e = handler_error(&p, "raise-surrogateescape").await;
    assert_eq!(e.kind, "ValueError");
    assert_eq!(
        e.message,
        format!("caf{FFFD} {FFFD}"),
        "the original error is kept"
    );
    let e = handler_error(&p, "raise-lone").await;
    assert_eq!(e.kind, "RuntimeError");
    assert_eq!(e.message, format!("half {FFFD} of a pair"));
    let e = handler_error(&p, "raise-unprintable").await;
    assert_eq!(e.kind, "Unprintable");
    assert_eq!(e.message, "<unprintable Unprintable>");

    let (v, _) = ok(&p, "return-text").await;
    assert_eq!(
        v,
        json!({"bad": format!("caf{FFFD} {FFFD}"), "lone": format!("half {FFFD} of a pair"), "pair": "😀"})
    );
    for (case, kind) in [
        ("return-nan", "ValueError"),
        ("return-set", "TypeError"),
        ("return-very-deep", "RecursionError"),
        ("return-deep", "UnreadableResult"),
    ] {
        let e = handler_error(&p, case).await;
        assert_eq!(e.kind, kind, "{case}: {e:?}");
    }

    let (v, publish) = ok(&p, "publish-text").await;
    assert_eq!(v, json!("published"));
    assert_eq!(publish.len(), 1);
    assert_eq!(publish[0].topic, format!("t/caf{FFFD} {FFFD}"));
    assert_eq!(
        publish[0].payload,
        Payload::Json(json!({"v": format!("half {FFFD} of a pair")}))
    );
    let e = handler_error(&p, "publish-unserializable-then-raise").await;
    assert_eq!(e.kind, "TypeError", "the bad publish is the error: {e:?}");

    let (v, _) = ok(&p, "log-text").await;
    assert_eq!(v, json!("logged"));
    both_lines(
        &mut rx,
        |l| l.line == r"out half \ud83d of a pair",
        |l| l.line.starts_with("err caf"),
    )
    .await;

    assert_eq!(ok(&p, "fine").await.0, json!("ok"));
    assert_eq!(p.stats().started, 1, "one warm instance took it all");
    p.stop().await;
}

#[tokio::test]
async fn node_hostile_values_fail_the_event_not_the_instance() {
    let dir = bundle(&[("index.js", JS)]);
    let (log, mut rx) = logs();
    let p = pool(Runtime::Node, dir.path(), log);

    let e = handler_error(&p, "raise-lone").await;
    assert_eq!(e.kind, "Error");
    assert_eq!(e.message, format!("half {FFFD} of a pair"));
    let e = handler_error(&p, "throw-string-lone").await;
    assert_eq!(e.message, format!("half {FFFD} of a pair"));
    let e = handler_error(&p, "throw-null-prototype").await;
    assert_eq!(e.message, "<unprintable value>");
    let e = handler_error(&p, "throw-hostile-message").await;
    assert_eq!(e.kind, "TypeError");
    assert_eq!(e.message, "<unprintable error>");

    let (v, _) = ok(&p, "return-text").await;
    assert_eq!(
        v,
        json!({"lone": format!("half {FFFD} of a pair"), "low": FFFD.to_string(), "pair": "😀"})
    );
    assert_eq!(
        ok(&p, "return-lone-string").await.0,
        json!(FFFD.to_string())
    );
    for (case, kind) in [
        ("return-bigint", "TypeError"),
        ("return-circular", "TypeError"),
        ("return-deep", "UnreadableResult"),
    ] {
        let e = handler_error(&p, case).await;
        assert_eq!(e.kind, kind, "{case}: {e:?}");
    }

    let (v, publish) = ok(&p, "publish-text").await;
    assert_eq!(v, json!("published"));
    assert_eq!(publish[0].topic, format!("t/{FFFD}"));
    assert_eq!(
        publish[0].payload,
        Payload::Json(json!({"v": format!("half {FFFD} of a pair")}))
    );

    assert_eq!(ok(&p, "log-text").await.0, json!("logged"));
    both_lines(
        &mut rx,
        |l| l.line == format!("out half {FFFD} of a pair"),
        |l| l.line == format!("err {FFFD}"),
    )
    .await;

    assert_eq!(ok(&p, "fine").await.0, json!("ok"));
    assert_eq!(p.stats().started, 1, "one warm instance took it all");
    p.stop().await;
}

/// A promise nobody awaits rejects (or a timer throws) while the next, unrelated event is in
/// flight: the failure is logged against the instance, the event finishes, the instance stays.
#[tokio::test]
async fn node_stray_async_failures_are_logged_and_the_next_event_finishes() {
    let dir = bundle(&[("index.js", JS)]);
    for (case, logged) in [
        (
            "stray-rejection",
            "unhandled promise rejection: Error: stray failure",
        ),
        (
            "stray-throw",
            "uncaught exception: Error: thrown from a timer",
        ),
    ] {
        let (log, mut rx) = logs();
        let p = pool(Runtime::Node, dir.path(), log);
        assert_eq!(ok(&p, case).await.0, json!("started"));
        // Fails 300 ms later, while this one is in flight.
        assert_eq!(ok(&p, "slow").await.0, json!("slow done"), "{case}");
        let line = wait_for_line(&mut rx, |l| l.line.contains(logged)).await;
        assert_eq!(line.instance, 1, "{case}: logged against the instance");
        assert_eq!(ok(&p, "fine").await.0, json!("ok"));
        assert_eq!(p.stats().started, 1, "{case}: the instance stayed");
        p.stop().await;
    }
}

const PY_CONTINUOUS: &str = r#"
def run(context):
    context.publish("t", {"v": "half \ud83d"})
    context.publish("t", b"\xff")
    while True:
        import time
        time.sleep(60)
"#;

const JS_CONTINUOUS: &str = r#"
exports.run = async (context) => {
  context.publish('t', { v: 'half \ud83d' });
  await new Promise(() => {});
};
"#;

/// A continuous function publishing text that cannot be encoded: the message arrives, with the
/// text replaced, and the instance goes on.
#[tokio::test]
async fn continuous_publish_of_hostile_text_arrives() {
    for (runtime, file, code, handler) in [
        (Runtime::Python3, "main.py", PY_CONTINUOUS, "main.run"),
        (Runtime::Node, "index.js", JS_CONTINUOUS, "index.run"),
    ] {
        let dir = bundle(&[(file, code)]);
        let mut spec = lang_spec(runtime, handler, dir.path());
        spec.binding = binding("fn", Mode::Continuous);
        let (sink, mut messages) = MessageSink::channel();
        let c = Continuous::start(
            spec,
            ContinuousOptions::default(),
            &Sandbox::process(),
            LogSink::discard(),
            sink,
        )
        .expect("start");
        let m = tokio::time::timeout(std::time::Duration::from_secs(10), messages.recv())
            .await
            .unwrap_or_else(|_| panic!("{runtime}: no message within 10 s: {:?}", c.state()))
            .expect("a message");
        assert_eq!(
            m.payload,
            Payload::Json(json!({"v": format!("half {FFFD}")})),
            "{runtime}"
        );
        assert!(
            matches!(
                c.state(),
                edgefn_runtime::ContinuousState::Running { restarts: 0, .. }
            ),
            "{runtime}: {:?}",
            c.state()
        );
        c.stop().await;
    }
}

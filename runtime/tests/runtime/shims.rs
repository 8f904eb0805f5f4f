//! The python3 and node shims end to end, in the process sandbox.

use edgefn_runtime::{
    Event, InvokeError, LogSink, Payload, Pool, PoolOptions, Sandbox, StartError, Stream,
};
use edgefn_schema::Runtime;
use serde_json::json;

use crate::common::*;

const PY_HANDLERS: &str = r#"
import os

def echo(event, context):
    return event["payload"]

def info(event, context):
    context.publish("out/" + event["topic"], {"seen": event["topic"]})
    context.publish("raw", b"\x00\x01")
    return {"function": context.function, "binding": context.binding,
            "device": context.device, "revision": context.revision,
            "env": os.environ.get("GREETING"), "cwd": os.getcwd(),
            "remaining": context.remaining_ms() > 0,
            "bytes": isinstance(event["payload"], bytes)}

def fail(event, context):
    raise ValueError("temperature out of range")

def hog(event, context):
    return len(bytearray(512 << 20))
"#;

const JS_HANDLERS: &str = r#"
exports.echo = (event) => event.payload;
exports.slowEcho = async (event, context) => {
  await new Promise((r) => setTimeout(r, 5));
  context.publish('out/' + event.topic, { seen: event.payload });
  return { payload: event.payload, device: context.device, revision: context.revision,
           remaining: context.remainingMs() > 0, greeting: process.env.GREETING };
};
exports.fail = async () => { throw new RangeError('reading out of range'); };
exports.hog = () => { const a = []; for (;;) a.push(new Array(100000).fill(Math.random())); };
"#;

fn pool_for(runtime: Runtime, handler: &str, dir: &std::path::Path, log: LogSink) -> Pool {
    let mut spec = lang_spec(runtime, handler, dir);
    spec.binding.env.insert("GREETING".into(), "hi".into());
    Pool::start(spec, PoolOptions::default(), &Sandbox::process(), log).expect("pool")
}

#[tokio::test]
async fn python_echo_context_publish_and_bytes() {
    let dir = bundle(&[("main.py", PY_HANDLERS)]);
    let p = pool_for(
        Runtime::Python3,
        "main.echo",
        dir.path(),
        LogSink::discard(),
    );
    let r = p
        .invoke(&Event::json("t/a", json!({"t": 41.5})))
        .await
        .expect("echo");
    assert_eq!(r.result, Payload::Json(json!({"t": 41.5})));
    p.stop().await;

    let p = pool_for(
        Runtime::Python3,
        "main.info",
        dir.path(),
        LogSink::discard(),
    );
    let r = p
        .invoke(&Event {
            topic: "t/b".into(),
            payload: Payload::Bytes(b"\xff\x00".to_vec()),
        })
        .await
        .expect("info");
    let Payload::Json(v) = &r.result else {
        panic!("{r:?}")
    };
    assert_eq!(v["function"], "fn");
    assert_eq!(v["device"], "dev-1");
    assert_eq!(v["revision"], 7);
    assert_eq!(v["env"], "hi");
    assert_eq!(v["bytes"], true);
    assert_eq!(v["remaining"], true);
    assert_eq!(
        std::fs::canonicalize(v["cwd"].as_str().expect("cwd")).expect("canon"),
        std::fs::canonicalize(dir.path()).expect("canon")
    );
    assert_eq!(r.publish.len(), 2);
    assert_eq!(r.publish[0].topic, "out/t/b");
    assert_eq!(r.publish[1].payload, Payload::Bytes(vec![0, 1]));
    p.stop().await;
}

#[tokio::test]
async fn python_exception_is_structured_with_traceback_in_logs() {
    let dir = bundle(&[("main.py", PY_HANDLERS)]);
    let (log, mut rx) = logs();
    let p = pool_for(Runtime::Python3, "main.fail", dir.path(), log);
    let err = p
        .invoke(&Event::json("t", json!(1)))
        .await
        .expect_err("raises");
    let InvokeError::Handler(h) = &err else {
        panic!("{err:?}")
    };
    assert_eq!(h.kind, "ValueError");
    assert_eq!(h.message, "temperature out of range");
    assert!(
        h.traceback.as_deref().unwrap_or("").contains("Traceback"),
        "{h:?}"
    );
    // The traceback's lines, in order, on stderr.
    wait_for_line(&mut rx, |l| {
        l.line.contains("main.py") && l.line.contains("in fail")
    })
    .await;
    let line = wait_for_line(&mut rx, |l| l.line.contains("ValueError: temperature")).await;
    assert_eq!(line.stream, Stream::Stderr);
    p.invoke(&Event::json("t", json!(2)))
        .await
        .expect_err("still the same warm instance");
    assert_eq!(p.stats().started, 1);
    p.stop().await;
}

#[tokio::test]
async fn python_import_error_is_an_init_failure() {
    let dir = bundle(&[("main.py", "import not_a_module_anywhere\n")]);
    let (log, mut rx) = logs();
    let p = pool_for(Runtime::Python3, "main.echo", dir.path(), log);
    let err = p
        .invoke(&Event::json("t", json!(1)))
        .await
        .expect_err("init");
    let InvokeError::Start(StartError::Init(h)) = &err else {
        panic!("{err:?}")
    };
    assert_eq!(h.kind, "ModuleNotFoundError");
    wait_for_line(&mut rx, |l| l.line.contains("No module named")).await;
    let empty = bundle(&[("main.py", "")]);
    let missing = pool_for(
        Runtime::Python3,
        "main.nope",
        empty.path(),
        LogSink::discard(),
    );
    let err = missing
        .invoke(&Event::json("t", json!(1)))
        .await
        .expect_err("init");
    assert!(err.to_string().contains("has no function 'nope'"), "{err}");
}

#[tokio::test]
async fn python_memory_error_is_out_of_memory() {
    let dir = bundle(&[("main.py", PY_HANDLERS)]);
    let mut spec = lang_spec(Runtime::Python3, "main.hog", dir.path());
    spec.binding.memory_bytes = 128 << 20;
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
        .expect_err("oom");
    assert!(
        matches!(err, InvokeError::OutOfMemory { limit_bytes, .. } if limit_bytes == 128 << 20),
        "{err:?}"
    );
    p.stop().await;
}

#[tokio::test]
async fn node_sync_and_async_handlers() {
    let dir = bundle(&[("index.js", JS_HANDLERS)]);
    let p = pool_for(Runtime::Node, "index.echo", dir.path(), LogSink::discard());
    let r = p
        .invoke(&Event::json("t", json!([1, "two"])))
        .await
        .expect("sync");
    assert_eq!(r.result, Payload::Json(json!([1, "two"])));
    p.stop().await;

    let p = pool_for(
        Runtime::Node,
        "index.slowEcho",
        dir.path(),
        LogSink::discard(),
    );
    for i in 0..3 {
        let r = p
            .invoke(&Event::json("t/x", json!(i)))
            .await
            .expect("async");
        let Payload::Json(v) = &r.result else {
            panic!("{r:?}")
        };
        assert_eq!(v["payload"], i);
        assert_eq!(v["device"], "dev-1");
        assert_eq!(v["revision"], 7);
        assert_eq!(v["remaining"], true);
        assert_eq!(v["greeting"], "hi");
        assert_eq!(r.publish[0].topic, "out/t/x");
    }
    assert_eq!(p.stats().started, 1);
    p.stop().await;
}

#[tokio::test]
async fn node_exception_is_structured_with_stack_in_logs() {
    let dir = bundle(&[("index.js", JS_HANDLERS)]);
    let (log, mut rx) = logs();
    let p = pool_for(Runtime::Node, "index.fail", dir.path(), log);
    let err = p
        .invoke(&Event::json("t", json!(1)))
        .await
        .expect_err("throws");
    let InvokeError::Handler(h) = &err else {
        panic!("{err:?}")
    };
    assert_eq!(
        (h.kind.as_str(), h.message.as_str()),
        ("RangeError", "reading out of range")
    );
    wait_for_line(&mut rx, |l| {
        l.stream == Stream::Stderr && l.line.contains("RangeError: reading out of range")
    })
    .await;
    p.stop().await;
}

#[tokio::test]
async fn node_missing_export_is_an_init_failure() {
    let dir = bundle(&[("index.js", JS_HANDLERS)]);
    let p = pool_for(Runtime::Node, "index.nope", dir.path(), LogSink::discard());
    let err = p
        .invoke(&Event::json("t", json!(1)))
        .await
        .expect_err("init");
    let InvokeError::Start(StartError::Init(h)) = &err else {
        panic!("{err:?}")
    };
    assert_eq!(h.kind, "TypeError");
    assert!(h.message.contains("nope"), "{h:?}");
}

#[tokio::test]
async fn node_heap_exhaustion_is_out_of_memory() {
    let dir = bundle(&[("index.js", JS_HANDLERS)]);
    let mut spec = lang_spec(Runtime::Node, "index.hog", dir.path());
    spec.binding.memory_bytes = 64 << 20;
    spec.binding.timeout_ms = 30_000;
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
        .expect_err("oom");
    assert!(matches!(err, InvokeError::OutOfMemory { .. }), "{err:?}");
    p.stop().await;
}

#[tokio::test]
async fn open_files_rlimit_applies() {
    let dir = bundle(&[(
        "main.py",
        "def many(event, context):\n    return len([open('/dev/null') for _ in range(event['payload'])])\n",
    )]);
    let sandbox = Sandbox::new(edgefn_runtime::SandboxOptions {
        max_open_files: 32,
        ..edgefn_runtime::SandboxOptions::default()
    })
    .expect("process sandbox");
    let spec = lang_spec(Runtime::Python3, "main.many", dir.path());
    let p = Pool::start(spec, PoolOptions::default(), &sandbox, LogSink::discard()).expect("pool");
    let ok = p
        .invoke(&Event::json("t", json!(10)))
        .await
        .expect("10 files");
    assert_eq!(ok.result, Payload::Json(json!(10)));
    let err = p
        .invoke(&Event::json("t", json!(64)))
        .await
        .expect_err("EMFILE");
    let InvokeError::Handler(h) = &err else {
        panic!("{err:?}")
    };
    assert_eq!(h.kind, "OSError");
    assert!(h.message.contains("Too many open files"), "{h:?}");
    p.stop().await;
}

#[tokio::test]
async fn process_sandbox_can_run_as_another_user() {
    let dir = bundle(&[(
        "main.py",
        "import os\ndef who(event, context):\n    return [os.getuid(), os.getgid()]\n",
    )]);
    use std::os::unix::fs::PermissionsExt as _;
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).expect("chmod");
    std::fs::set_permissions(
        dir.path().join("main.py"),
        std::fs::Permissions::from_mode(0o644),
    )
    .expect("chmod");
    let sandbox = Sandbox::new(edgefn_runtime::SandboxOptions {
        run_as: Some((65534, 65534)),
        ..edgefn_runtime::SandboxOptions::default()
    })
    .expect("process sandbox");
    let p = Pool::start(
        lang_spec(Runtime::Python3, "main.who", dir.path()),
        PoolOptions::default(),
        &sandbox,
        LogSink::discard(),
    )
    .expect("pool");
    let r = p.invoke(&Event::json("t", json!(1))).await.expect("reply");
    assert_eq!(r.result, Payload::Json(json!([65534, 65534])));
    p.stop().await;
}

/// An instance's command line is short and names its function (`ps` shows it, not kilobytes of
/// shim source), and the shim's source is not left in the handler's environment.
#[tokio::test]
async fn instances_show_a_short_command_line_naming_the_function() {
    let py = "import os\n\ndef me(event, context):\n    return {'cmdline': open('/proc/self/cmdline', 'rb').read().decode().split('\\0'), 'shim': 'EDGEFN_SHIM' in os.environ}\n";
    let js = "exports.me = () => ({ cmdline: require('fs').readFileSync('/proc/self/cmdline', 'utf8').split('\\0'), shim: 'EDGEFN_SHIM' in process.env });\n";
    let dir = bundle(&[("main.py", py), ("index.js", js)]);
    for (runtime, handler) in [(Runtime::Python3, "main.me"), (Runtime::Node, "index.me")] {
        let p = pool_for(runtime, handler, dir.path(), LogSink::discard());
        let r = p
            .invoke(&Event::json("t", json!(null)))
            .await
            .expect("invoke");
        let Payload::Json(v) = &r.result else {
            panic!("{r:?}")
        };
        let args: Vec<&str> = v["cmdline"]
            .as_array()
            .expect("cmdline")
            .iter()
            .filter_map(|a| a.as_str())
            .filter(|a| !a.is_empty())
            .collect();
        let total: usize = args.iter().map(|a| a.len()).sum();
        assert!(total < 400, "{runtime:?}: a short command line: {args:?}");
        assert_eq!(
            args.last().copied(),
            Some("fn"),
            "{runtime:?}: names the function: {args:?}"
        );
        assert_eq!(
            v["shim"], false,
            "{runtime:?}: the shim's source is not in the environment"
        );
        p.stop().await;
    }
}

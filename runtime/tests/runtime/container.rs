//! The container sandbox (libcontainer), as root with cgroups. Elsewhere these tests print why
//! they are skipped and pass.

use std::path::{Path, PathBuf};

use edgefn_runtime::{
    Event, InvokeError, LogSink, Payload, Pool, PoolOptions, Sandbox, SandboxKind, SandboxOptions,
};
use edgefn_schema::Runtime;
use serde_json::json;

use crate::common::*;

/// A container sandbox with its own state folder, or `None` (with the reason printed) where
/// containers cannot work: not root, or no cgroups. As root with cgroups, failing to set one up
/// fails the test.
#[allow(clippy::print_stdout)] // the skip reason is for whoever reads the test output
pub(crate) fn container() -> Option<(Sandbox, tempfile::TempDir)> {
    if !nix_is_root() {
        println!("skipped: container tests need root");
        return None;
    }
    if !Path::new("/sys/fs/cgroup/memory").is_dir()
        && !Path::new("/sys/fs/cgroup/cgroup.controllers").exists()
    {
        println!("skipped: no cgroup memory controller");
        return None;
    }
    let state = tempfile::tempdir().expect("state dir");
    let sandbox = Sandbox::new(SandboxOptions {
        kind: SandboxKind::Container,
        helper: Some(PathBuf::from(env!("CARGO_BIN_EXE_edgefn-sandbox-helper"))),
        state_dir: state.path().to_path_buf(),
        ..SandboxOptions::default()
    })
    .expect("containers work as root with cgroups");
    assert_eq!(sandbox.kind(), SandboxKind::Container);
    Some((sandbox, state))
}

fn nix_is_root() -> bool {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("Uid:"))
                .map(|l| l.split_whitespace().nth(1) == Some("0"))
        })
        .unwrap_or(false)
}

/// Containers and cgroups under `edgefn/` whose id mentions this process: none may remain.
fn leftovers(state: &Path) -> Vec<String> {
    let me = format!("-{}-", std::process::id());
    let mut found = Vec::new();
    let mut scan = |dir: PathBuf| {
        if let Ok(entries) = std::fs::read_dir(&dir) {
            for e in entries.flatten() {
                let name = e.file_name().to_string_lossy().into_owned();
                if name.contains(&me) {
                    found.push(dir.join(name).display().to_string());
                }
            }
        }
    };
    if let Ok(ctrls) = std::fs::read_dir("/sys/fs/cgroup") {
        for c in ctrls.flatten() {
            scan(c.path().join("edgefn"));
        }
    }
    scan(PathBuf::from("/sys/fs/cgroup/edgefn"));
    scan(state.join("state"));
    scan(state.join("bundles"));
    found
}

/// The cgroup of the running container of `binding` has the binding's limits (v1 or v2).
fn assert_cgroup_limits(binding: &str, memory: u64, cpu_quota_us: u64, pids: u64) {
    let prefix = format!("{binding}-{}-", std::process::id());
    let find = |base: &str| -> Option<PathBuf> {
        std::fs::read_dir(base).ok()?.flatten().find_map(|e| {
            let name = e.file_name().to_string_lossy().into_owned();
            name.starts_with(&prefix).then(|| e.path())
        })
    };
    let read = |p: PathBuf| {
        std::fs::read_to_string(&p)
            .map(|s| s.trim().to_owned())
            .unwrap_or_else(|e| panic!("{}: {e}", p.display()))
    };
    if let Some(mem) = find("/sys/fs/cgroup/memory/edgefn") {
        assert_eq!(read(mem.join("memory.limit_in_bytes")), memory.to_string());
        let cpu = find("/sys/fs/cgroup/cpu/edgefn").expect("cpu cgroup");
        assert_eq!(read(cpu.join("cpu.cfs_quota_us")), cpu_quota_us.to_string());
        let p = find("/sys/fs/cgroup/pids/edgefn").expect("pids cgroup");
        assert_eq!(read(p.join("pids.max")), pids.to_string());
    } else {
        let cg = find("/sys/fs/cgroup/edgefn").expect("v2 cgroup");
        assert_eq!(read(cg.join("memory.max")), memory.to_string());
        assert_eq!(read(cg.join("cpu.max")), format!("{cpu_quota_us} 100000"));
        assert_eq!(read(cg.join("pids.max")), pids.to_string());
    }
}

fn container_leftovers_of(state: &Path, pool_name: &str) -> Vec<String> {
    leftovers(state)
        .into_iter()
        .filter(|p| p.contains(pool_name))
        .collect()
}

#[tokio::test]
async fn exec_echo_in_a_container_and_nothing_left_behind() {
    let Some((sandbox, state)) = container() else {
        return;
    };
    let mut spec = exec_spec(&[]);
    let bin = tempfile::tempdir().expect("bundle");
    std::fs::copy(echo_exe(), bin.path().join("echo")).expect("copy echo");
    spec.bundle_dir = bin.path().to_path_buf();
    spec.handler = edgefn_schema::Handler::Argv(vec!["./echo".into()]);
    spec.binding.name = "ctr-echo".into();
    let p = Pool::start(spec, PoolOptions::default(), &sandbox, LogSink::discard()).expect("pool");
    for i in 0..3 {
        let r = p
            .invoke(&Event::json("t", json!({"i": i})))
            .await
            .expect("reply");
        assert_eq!(r.result, Payload::Json(json!({"i": i})));
    }
    let running = container_leftovers_of(state.path(), "ctr-echo");
    assert!(
        !running.is_empty(),
        "a running container has a cgroup and state"
    );
    assert_cgroup_limits("ctr-echo", 256 << 20, 100_000, 256);
    p.stop().await;
    assert_eq!(
        container_leftovers_of(state.path(), "ctr-echo"),
        Vec::<String>::new()
    );
}

const PY_INSIDE: &str = r#"
import os, socket

def inside(event, context):
    try:
        open("/fn/new-file", "w")
        bundle_writable = True
    except OSError:
        bundle_writable = False
    with open("/tmp/scratch", "w") as f:
        f.write("ok")
    return {"pid": os.getpid(), "hostname": socket.gethostname(), "cwd": os.getcwd(),
            "bundle_writable": bundle_writable, "root": sorted(os.listdir("/")),
            "device": context.device}

def fail(event, context):
    raise KeyError("sensor")
"#;

#[tokio::test]
async fn python_in_a_container_is_isolated() {
    let Some((sandbox, state)) = container() else {
        return;
    };
    let dir = bundle(&[("main.py", PY_INSIDE)]);
    let mut spec = lang_spec(Runtime::Python3, "main.inside", dir.path());
    spec.binding.name = "ctr-py".into();
    let (log, mut rx) = logs();
    let p = Pool::start(spec, PoolOptions::default(), &sandbox, log).expect("pool");
    let r = p.invoke(&Event::json("t", json!(1))).await.expect("reply");
    let Payload::Json(v) = &r.result else {
        panic!("{r:?}")
    };
    assert_eq!(v["pid"], 1, "own pid namespace: {v}");
    assert_eq!(v["hostname"], "edgefn", "own uts namespace: {v}");
    assert_eq!(v["cwd"], "/fn");
    assert_eq!(v["bundle_writable"], false);
    assert_eq!(v["device"], "dev-1");
    let root: Vec<&str> = v["root"]
        .as_array()
        .expect("list")
        .iter()
        .filter_map(|x| x.as_str())
        .collect();
    assert!(
        !root.contains(&"root") && !root.contains(&"home"),
        "{root:?}"
    );
    p.stop().await;

    let mut spec = lang_spec(Runtime::Python3, "main.fail", dir.path());
    spec.binding.name = "ctr-py".into();
    let p = Pool::start(spec, PoolOptions::default(), &sandbox, LogSink::discard()).expect("pool");
    let err = p
        .invoke(&Event::json("t", json!(1)))
        .await
        .expect_err("raises");
    let InvokeError::Handler(h) = &err else {
        panic!("{err:?}")
    };
    assert_eq!(h.kind, "KeyError");
    p.stop().await;
    drop(drain(&mut rx));
    assert_eq!(
        container_leftovers_of(state.path(), "ctr-py"),
        Vec::<String>::new()
    );
}

#[tokio::test]
async fn node_in_a_container() {
    let Some((sandbox, state)) = container() else {
        return;
    };
    let dir = bundle(&[(
        "index.js",
        "exports.h = async (e) => ({ got: e.payload, pid: process.pid });\n",
    )]);
    let mut spec = lang_spec(Runtime::Node, "index.h", dir.path());
    spec.binding.name = "ctr-node".into();
    let p = Pool::start(spec, PoolOptions::default(), &sandbox, LogSink::discard()).expect("pool");
    let r = p
        .invoke(&Event::json("t", json!("x")))
        .await
        .expect("reply");
    assert_eq!(r.result, Payload::Json(json!({"got": "x", "pid": 1})));
    p.stop().await;
    assert_eq!(
        container_leftovers_of(state.path(), "ctr-node"),
        Vec::<String>::new()
    );
}

#[tokio::test]
async fn cgroup_oom_kill_is_out_of_memory() {
    let Some((sandbox, state)) = container() else {
        return;
    };
    let mut spec = exec_spec(&[]);
    spec.bundle_dir = echo_exe().parent().expect("dir").to_path_buf();
    spec.handler = edgefn_schema::Handler::Argv(vec!["./echo".into()]);
    spec.binding.name = "ctr-oom".into();
    spec.binding.memory_bytes = 64 << 20;
    spec.binding.timeout_ms = 20_000;
    let p = Pool::start(spec, PoolOptions::default(), &sandbox, LogSink::discard()).expect("pool");
    let ok = p.invoke(&Event::json("t", json!({"alloc_mb": 8}))).await;
    assert_eq!(ok.expect("fits").result, Payload::Json(json!(8 << 20)));
    let err = p
        .invoke(&Event::json("t", json!({"alloc_mb": 200})))
        .await
        .expect_err("oom");
    let InvokeError::OutOfMemory { exit, .. } = &err else {
        panic!("{err:?}")
    };
    assert_eq!(
        exit.signal,
        Some(9),
        "the cgroup OOM killer SIGKILLs: {err}"
    );
    p.stop().await;
    assert_eq!(
        container_leftovers_of(state.path(), "ctr-oom"),
        Vec::<String>::new()
    );
}

#[tokio::test]
async fn timeout_and_crash_in_a_container_clean_up() {
    let Some((sandbox, state)) = container() else {
        return;
    };
    let mut spec = exec_spec(&[]);
    spec.bundle_dir = echo_exe().parent().expect("dir").to_path_buf();
    spec.handler = edgefn_schema::Handler::Argv(vec!["./echo".into()]);
    spec.binding.name = "ctr-tc".into();
    spec.binding.timeout_ms = 300;
    let p = Pool::start(spec, PoolOptions::default(), &sandbox, LogSink::discard()).expect("pool");
    let err = p
        .invoke(&Event::json("t", json!({"sleep_ms": 5000})))
        .await
        .expect_err("timeout");
    assert!(matches!(err, InvokeError::Timeout { .. }), "{err:?}");
    let err = p
        .invoke(&Event::json("t", json!({"exit": 4})))
        .await
        .expect_err("crash");
    let InvokeError::Crashed { exit } = &err else {
        panic!("{err:?}")
    };
    assert_eq!(exit.code, Some(4));
    p.invoke(&Event::json("t", json!(1)))
        .await
        .expect("replaced");
    p.stop().await;
    assert_eq!(
        container_leftovers_of(state.path(), "ctr-tc"),
        Vec::<String>::new()
    );
}

#[tokio::test]
async fn auto_says_what_it_picked() {
    let state = tempfile::tempdir().expect("state");
    let auto = Sandbox::new(SandboxOptions {
        kind: SandboxKind::Auto,
        helper: Some(PathBuf::from(env!("CARGO_BIN_EXE_edgefn-sandbox-helper"))),
        state_dir: state.path().to_path_buf(),
        ..SandboxOptions::default()
    })
    .expect("auto never fails");
    assert_ne!(auto.kind(), SandboxKind::Auto);
    assert!(!auto.reason().is_empty());
    if container().is_some() {
        assert_eq!(auto.kind(), SandboxKind::Container, "{}", auto.reason());
    }
    let no_helper = Sandbox::new(SandboxOptions {
        kind: SandboxKind::Auto,
        helper: None,
        ..SandboxOptions::default()
    })
    .expect("auto never fails");
    assert_eq!(no_helper.kind(), SandboxKind::Process);
    assert!(
        no_helper.reason().contains("using processes"),
        "{}",
        no_helper.reason()
    );
}

#[tokio::test]
async fn dropping_a_pool_without_stop_still_cleans_up() {
    let Some((sandbox, state)) = container() else {
        return;
    };
    let mut spec = exec_spec(&[]);
    spec.bundle_dir = echo_exe().parent().expect("dir").to_path_buf();
    spec.handler = edgefn_schema::Handler::Argv(vec!["./echo".into()]);
    spec.binding.name = "ctr-drop".into();
    let p = Pool::start(spec, PoolOptions::default(), &sandbox, LogSink::discard()).expect("pool");
    p.invoke(&Event::json("t", json!(1))).await.expect("reply");
    assert!(!container_leftovers_of(state.path(), "ctr-drop").is_empty());
    drop(p);
    eventually("the helper deleted its container", || {
        container_leftovers_of(state.path(), "ctr-drop").is_empty()
    })
    .await;
}

#[tokio::test]
async fn continuous_in_a_container_stops_with_sigterm() {
    let Some((sandbox, state)) = container() else {
        return;
    };
    let dir = bundle(&[(
        "daemon.py",
        "import time\ndef run(context):\n    context.publish('up', {'pid': __import__('os').getpid()})\n    time.sleep(1000)\n",
    )]);
    let mut spec = lang_spec(Runtime::Python3, "daemon.run", dir.path());
    spec.binding.mode = edgefn_schema::Mode::Continuous;
    spec.binding.name = "ctr-daemon".into();
    let (sink, mut msgs) = edgefn_runtime::MessageSink::channel();
    let c = edgefn_runtime::Continuous::start(
        spec,
        edgefn_runtime::ContinuousOptions::default(),
        &sandbox,
        LogSink::discard(),
        sink,
    )
    .expect("start");
    let m = tokio::time::timeout(std::time::Duration::from_secs(10), msgs.recv())
        .await
        .expect("published")
        .expect("message");
    assert_eq!(m.payload, Payload::Json(json!({"pid": 1})));
    let exit = c.stop().await.expect("exit");
    assert_eq!(exit.code, Some(143), "the shim exits on SIGTERM: {exit}");
    assert_eq!(
        container_leftovers_of(state.path(), "ctr-daemon"),
        Vec::<String>::new()
    );
}

#[tokio::test]
async fn containers_of_a_killed_runtime_are_swept_by_the_next_one() {
    let Some((_, state)) = container() else {
        return;
    };
    // A runtime pid that is certainly dead: a child we already reaped.
    let mut gone = std::process::Command::new("/bin/true")
        .spawn()
        .expect("spawn");
    let dead_pid = gone.id();
    gone.wait().expect("wait");
    let id = format!("stale-{dead_pid}-1-0000abcd");
    let config = json!({
        "id": id, "state_dir": state.path(), "bundle_dir": std::env::temp_dir(),
        "program": "/usr/bin/sleep", "args": ["1000"], "env": [["PATH", "/usr/bin"]],
        "memory_bytes": 64 << 20, "cpu_millis": 1000, "max_pids": 16, "max_open_files": 64,
        "probe": true
    });
    let mut helper = std::process::Command::new(env!("CARGO_BIN_EXE_edgefn-sandbox-helper"))
        .arg("__edgefn_sandbox_helper")
        .arg(config.to_string())
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("helper");
    let mut started = String::new();
    std::io::BufRead::read_line(
        &mut std::io::BufReader::new(helper.stdout.take().expect("stdout")),
        &mut started,
    )
    .expect("status line");
    assert!(started.contains("started"), "{started}");
    // The helper dies without cleaning up, as if the whole runtime were SIGKILLed.
    helper.kill().expect("kill helper");
    helper.wait().expect("reap helper");
    let stale = |state: &Path| {
        let mut found: Vec<String> = Vec::new();
        for dir in [
            PathBuf::from("/sys/fs/cgroup/memory/edgefn").join(&id),
            PathBuf::from("/sys/fs/cgroup/edgefn").join(&id),
            state.join("state").join(&id),
        ] {
            if dir.exists() {
                found.push(dir.display().to_string());
            }
        }
        found
    };
    assert!(
        !stale(state.path()).is_empty(),
        "the container outlived its helper"
    );
    // The next runtime's probe sweeps it.
    Sandbox::new(SandboxOptions {
        kind: SandboxKind::Container,
        helper: Some(PathBuf::from(env!("CARGO_BIN_EXE_edgefn-sandbox-helper"))),
        state_dir: state.path().to_path_buf(),
        ..SandboxOptions::default()
    })
    .expect("sandbox");
    assert_eq!(stale(state.path()), Vec::<String>::new());
}

#[tokio::test]
async fn a_container_user_cannot_read_root_only_files() {
    let Some((_, state)) = container() else {
        return;
    };
    let sandbox = Sandbox::new(SandboxOptions {
        kind: SandboxKind::Container,
        helper: Some(PathBuf::from(env!("CARGO_BIN_EXE_edgefn-sandbox-helper"))),
        state_dir: state.path().to_path_buf(),
        run_as: Some((65534, 65534)),
        ..SandboxOptions::default()
    })
    .expect("sandbox");
    let dir = bundle(&[(
        "main.py",
        "import os\ndef who(event, context):\n    try:\n        open('/etc/shadow').read()\n        shadow = True\n    except OSError:\n        shadow = False\n    return {'uid': os.getuid(), 'shadow': shadow}\n",
    )]);
    use std::os::unix::fs::PermissionsExt as _;
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).expect("chmod");
    std::fs::set_permissions(
        dir.path().join("main.py"),
        std::fs::Permissions::from_mode(0o644),
    )
    .expect("chmod");
    let mut spec = lang_spec(Runtime::Python3, "main.who", dir.path());
    spec.binding.name = "ctr-user".into();
    let p = Pool::start(spec, PoolOptions::default(), &sandbox, LogSink::discard()).expect("pool");
    let r = p.invoke(&Event::json("t", json!(1))).await.expect("reply");
    assert_eq!(
        r.result,
        Payload::Json(json!({"uid": 65534, "shadow": false}))
    );
    p.stop().await;
    assert_eq!(
        container_leftovers_of(state.path(), "ctr-user"),
        Vec::<String>::new()
    );
}

/// A container whose runtime died (its record names a runtime that is gone) is killed by the
/// next runtime's sweep: its processes, its cgroup and its state.
#[tokio::test]
async fn a_container_left_by_a_dead_runtime_is_swept() {
    let Some((_, state)) = container() else {
        return;
    };
    let records = tempfile::tempdir().expect("records");
    let sandbox = Sandbox::new(SandboxOptions {
        kind: SandboxKind::Container,
        helper: Some(PathBuf::from(env!("CARGO_BIN_EXE_edgefn-sandbox-helper"))),
        state_dir: state.path().to_path_buf(),
        records: Some(records.path().to_path_buf()),
        ..SandboxOptions::default()
    })
    .expect("containers work as root with cgroups");
    let dir = bundle(&[(
        "daemon.py",
        "import time\ndef run(context):\n    context.publish('up', {'pid': __import__('os').getpid()})\n    time.sleep(1000)\n",
    )]);
    let mut spec = lang_spec(Runtime::Python3, "daemon.run", dir.path());
    spec.binding.mode = edgefn_schema::Mode::Continuous;
    spec.binding.name = "swept-daemon".into();
    let (sink, mut msgs) = edgefn_runtime::MessageSink::channel();
    let c = edgefn_runtime::Continuous::start(
        spec,
        edgefn_runtime::ContinuousOptions::default(),
        &sandbox,
        LogSink::discard(),
        sink,
    )
    .expect("start");
    tokio::time::timeout(std::time::Duration::from_secs(10), msgs.recv())
        .await
        .expect("published")
        .expect("message");

    // The runtime that started it is gone, as far as its record says.
    let files: Vec<PathBuf> = std::fs::read_dir(records.path())
        .expect("records")
        .flatten()
        .map(|e| e.path())
        .collect();
    assert_eq!(files.len(), 1, "one instance, one record: {files:?}");
    let mut record: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&files[0]).expect("read")).expect("json");
    let id = record["container"][0]
        .as_str()
        .expect("container id")
        .to_owned();
    let pid = record["pid"].as_i64().expect("pid");
    record["owner"] = json!(i32::MAX);
    std::fs::write(&files[0], record.to_string()).expect("write");

    let mut state_watch = c.watch();
    let sweeper = sandbox.clone();
    let swept = tokio::task::spawn_blocking(move || sweeper.sweep_leftovers())
        .await
        .expect("sweep");
    assert_eq!(swept.len(), 1, "{swept:?}");
    assert!(
        swept[0].contains(&format!("deleted container {id}")),
        "{swept:?}"
    );
    assert!(!files[0].exists(), "the record is gone");
    assert!(
        !Path::new("/proc").join(pid.to_string()).exists()
            || std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|s| s
                .rsplit_once(')')
                .is_some_and(|(_, r)| r.trim_start().starts_with('Z'))),
        "the helper is dead"
    );
    assert!(
        !state.path().join("state").join(&id).exists(),
        "its state is deleted"
    );
    assert!(
        !Path::new("/sys/fs/cgroup/edgefn").join(&id).exists(),
        "its cgroup is removed"
    );
    // The supervisor saw its instance end.
    tokio::time::timeout(
        std::time::Duration::from_secs(10),
        state_watch.wait_for(|s| !matches!(s, edgefn_runtime::ContinuousState::Running { .. })),
    )
    .await
    .expect("the instance ended")
    .expect("watch");
    c.stop().await;
    assert_eq!(
        container_leftovers_of(state.path(), "swept-daemon"),
        Vec::<String>::new()
    );
}

/// A character device node made for a test with mknod under `/dev`, removed when dropped.
struct TestNode(PathBuf);

impl TestNode {
    fn make(name: &str, major: u64, minor: u64) -> TestNode {
        let path = PathBuf::from(format!("/dev/edgefn-test-{name}-{}", std::process::id()));
        let _ = std::fs::remove_file(&path);
        let status = std::process::Command::new("mknod")
            .args(["-m", "0666"])
            .arg(&path)
            .args(["c", &major.to_string(), &minor.to_string()])
            .status()
            .expect("run mknod");
        assert!(status.success(), "mknod {}", path.display());
        TestNode(path)
    }

    fn path(&self) -> String {
        self.0.display().to_string()
    }
}

impl Drop for TestNode {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

const PY_DEVICES: &str = r#"
import errno, os

def probe(event, context):
    out = {}
    for p in event["payload"]["paths"]:
        try:
            fd = os.open(p, os.O_RDWR)
            os.close(fd)
            out[p] = "opened"
        except OSError as e:
            out[p] = errno.errorcode.get(e.errno, str(e.errno))
    out["dev"] = sorted(os.listdir("/dev"))
    return out
"#;

/// The device cgroup (v1) rules of the running container of `binding`, sorted; `None` on a
/// cgroup v2 host.
fn device_rules(binding: &str) -> Option<Vec<String>> {
    let prefix = format!("{binding}-{}-", std::process::id());
    let dir = std::fs::read_dir("/sys/fs/cgroup/devices/edgefn")
        .ok()?
        .flatten()
        .find(|e| e.file_name().to_string_lossy().starts_with(&prefix))?
        .path();
    let text = std::fs::read_to_string(dir.join("devices.list")).expect("devices.list");
    let mut rules: Vec<String> = text.lines().map(str::to_owned).collect();
    rules.sort();
    Some(rules)
}

/// A binding that asks for a device node sees exactly that node in its container's `/dev` and
/// can open it; another node the host has is neither there nor allowed by the device cgroup,
/// whose rules are the standard set plus the asked node.
#[tokio::test]
async fn a_container_gets_exactly_the_device_nodes_asked_for() {
    let Some((sandbox, state)) = container() else {
        return;
    };
    // /dev/fuse's numbers (outside the standard set, opened by anyone) where the host has it.
    let (major, minor) = if Path::new("/dev/fuse").exists() {
        (10, 229)
    } else {
        (1, 3)
    };
    let asked = TestNode::make("asked", major, minor);
    let other = TestNode::make("other", 1, 5);
    let dir = bundle(&[("main.py", PY_DEVICES)]);
    let mut spec = lang_spec(Runtime::Python3, "main.probe", dir.path());
    spec.binding.name = "ctr-dev".into();
    spec.binding.device_nodes = vec![asked.path()];
    let p = Pool::start(spec, PoolOptions::default(), &sandbox, LogSink::discard()).expect("pool");
    let r = p
        .invoke(&Event::json(
            "t",
            json!({"paths": [asked.path(), other.path(), "/dev/kmsg", "/dev/null"]}),
        ))
        .await
        .expect("reply");
    let Payload::Json(v) = &r.result else {
        panic!("{r:?}")
    };
    assert_eq!(v[asked.path()], "opened", "{v}");
    assert_eq!(v[other.path()], "ENOENT", "{v}");
    assert_eq!(v["/dev/kmsg"], "ENOENT", "{v}");
    assert_eq!(v["/dev/null"], "opened", "{v}");
    let listed: Vec<&str> = v["dev"]
        .as_array()
        .expect("list")
        .iter()
        .filter_map(|x| x.as_str())
        .collect();
    let asked_name = asked.0.file_name().unwrap().to_string_lossy().into_owned();
    let nodes: Vec<&str> = listed
        .iter()
        .copied()
        .filter(|n| n.starts_with("edgefn-test-"))
        .collect();
    assert_eq!(nodes, [asked_name.as_str()], "{listed:?}");
    let rules = device_rules("ctr-dev");
    assert_eq!(
        rules.is_some(),
        Path::new("/sys/fs/cgroup/devices").is_dir(),
        "a cgroup v1 host has the container's device rules"
    );
    if let Some(rules) = rules {
        let mut want: Vec<String> = [
            "c 1:3 rwm",
            "c 1:5 rwm",
            "c 1:7 rwm",
            "c 1:8 rwm",
            "c 1:9 rwm",
            "c 5:0 rwm",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        want.push(format!("c {major}:{minor} rwm"));
        want.sort();
        want.dedup();
        assert_eq!(
            rules, want,
            "the standard set and the asked node, nothing else"
        );
    }
    p.stop().await;
    assert_eq!(
        container_leftovers_of(state.path(), "ctr-dev"),
        Vec::<String>::new()
    );
}

/// A node that is not there stops the instance before it starts, naming the node; in either
/// sandbox.
#[tokio::test]
async fn a_missing_device_node_stops_the_instance_naming_it() {
    let dir = bundle(&[("main.py", PY_DEVICES)]);
    let missing = format!("/dev/edgefn-test-absent-{}", std::process::id());
    let mut sandboxes = vec![(Sandbox::process(), None)];
    if let Some((s, state)) = container() {
        sandboxes.push((s, Some(state)));
    }
    for (sandbox, _state) in sandboxes {
        let mut spec = lang_spec(Runtime::Python3, "main.probe", dir.path());
        spec.binding.name = "ctr-missing".into();
        spec.binding.device_nodes = vec!["/dev/null".into(), missing.clone()];
        assert_eq!(
            edgefn_runtime::missing_device_nodes(&spec.binding),
            std::slice::from_ref(&missing)
        );
        let p =
            Pool::start(spec, PoolOptions::default(), &sandbox, LogSink::discard()).expect("pool");
        let err = p.warm().await.expect_err("cannot start");
        assert!(
            err.to_string()
                .contains(&format!("device node {missing} is missing")),
            "{err}"
        );
        p.stop().await;
    }
}

//! End-to-end tests of the device agent with the real `edgefn-cloud`, `edgefn` and
//! `edgefn-agent` binaries: updates, a switchover under load, SIGKILL at each point of an update,
//! refused bundles, and booting with the cloud down.

#[path = "common/mod.rs"]
mod common;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use common::*;

const MAIN_PY: &str = r#"import os

def handle(event, context):
    seq = event["payload"]["seq"]
    with open(os.environ["OUT"], "a") as f:
        f.write("%s %s\n" % (os.environ["VERSION"], seq))
    return {"version": os.environ["VERSION"], "seq": seq}
"#;

/// A project with one triggered python function on device `dev-a`, in git.
struct Fleet {
    project: tempfile::TempDir,
    cloud: Cloud,
    _cloud_data: tempfile::TempDir,
    agent_config: PathBuf,
    out: PathBuf,
}

/// The daemon that runs continuously beside the triggered function.
const GOOD_DAEMON: &str = "#!/bin/sh\necho \"daemon up\"\nwhile true; do sleep 1; done\n";

fn manifest(version: u32, out: &Path) -> String {
    format!(
        "apiVersion: edgefn/v1\nproject: agent-test\nfunctions:\n  work:\n    path: functions/work\n    runtime: python3\n    handler: main.handle\n    env: {{ VERSION: \"{version}\", OUT: \"{}\" }}\n  daemon:\n    path: functions/daemon\n    runtime: exec\n    handler: [\"./run.sh\"]\ndevices:\n  dev-a: {{}}\nbindings:\n  - function: work\n    devices: {{ names: [dev-a] }}\n    triggers: [ {{ topic: \"jobs/#\" }} ]\n    concurrency: 2\n  - function: daemon\n    devices: {{ names: [dev-a] }}\n    mode: continuous\n",
        out.display()
    )
}

fn write_daemon(project: &Path, script: &str) {
    use std::os::unix::fs::PermissionsExt;
    let dir = project.join("functions/daemon");
    std::fs::create_dir_all(&dir).expect("mkdir");
    std::fs::write(dir.join("run.sh"), script).expect("write");
    std::fs::set_permissions(dir.join("run.sh"), std::fs::Permissions::from_mode(0o755))
        .expect("chmod");
}

impl Fleet {
    fn new() -> Fleet {
        let cloud_data = tempfile::tempdir().expect("data");
        // A port the cloud can come back on after a restart.
        let cloud = Cloud::start_at(cloud_data.path(), &format!("127.0.0.1:{}", server_port()));
        let project = tempfile::tempdir().expect("project");
        let out = project.path().join("seen.txt");
        let dir = project.path().join("functions/work");
        std::fs::create_dir_all(&dir).expect("mkdir");
        std::fs::write(dir.join("main.py"), MAIN_PY).expect("write");
        std::fs::write(project.path().join("edgefn.yaml"), manifest(1, &out)).expect("write");
        write_daemon(project.path(), GOOD_DAEMON);
        std::fs::write(project.path().join(".gitignore"), "seen.txt\nagent.yaml\n").expect("write");
        git(project.path(), &["init", "-q"]);
        git(project.path(), &["add", "-A"]);
        git(project.path(), &["commit", "-q", "-m", "v1"]);
        let agent_config = project.path().join("agent.yaml");
        let f = Fleet {
            project,
            cloud,
            _cloud_data: cloud_data,
            agent_config,
            out,
        };
        ok(&f.cli(&[
            "device",
            "add",
            "dev-a",
            "--out",
            f.agent_config.to_str().expect("utf8"),
        ]));
        let mut config = std::fs::read_to_string(&f.agent_config).expect("read");
        config.push_str("healthWindow: 1s\npollWait: 5s\nreportInterval: 1s\n");
        std::fs::write(&f.agent_config, config).expect("write");
        f
    }

    fn cli(&self, args: &[&str]) -> std::process::Output {
        let env = self.cloud.env();
        edgefn_env(
            self.project.path(),
            args,
            &[(env[0].0, env[0].1.as_str()), (env[1].0, env[1].1.as_str())],
        )
    }

    /// Commits and applies version `v` of the manifest; `blob` adds that many random bytes to
    /// the function's folder (so its bundle changes and takes a while to download).
    fn apply(&self, v: u32, blob: usize) -> u64 {
        self.apply_with_daemon(v, blob, GOOD_DAEMON)
    }

    fn apply_with_daemon(&self, v: u32, blob: usize, daemon: &str) -> u64 {
        std::fs::write(
            self.project.path().join("edgefn.yaml"),
            manifest(v, &self.out),
        )
        .expect("write");
        write_daemon(self.project.path(), daemon);
        if blob > 0 {
            let mut bytes = vec![0u8; blob];
            let mut x: u64 = 0x9E37_79B9_7F4A_7C15 ^ u64::from(v);
            for b in bytes.iter_mut() {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                *b = x as u8;
            }
            std::fs::write(self.project.path().join("functions/work/blob.bin"), bytes)
                .expect("write");
        }
        git(self.project.path(), &["add", "-A"]);
        git(
            self.project.path(),
            &["commit", "-q", "--allow-empty", "-m", &format!("v{v}")],
        );
        let out: serde_json::Value =
            serde_json::from_str(&ok(&self.cli(&["apply", "--output", "json"]))).expect("json");
        out["revision"].as_u64().expect("revision")
    }

    fn desired_digest(&self) -> String {
        let s = http(
            &self.cloud.addr(),
            "GET",
            "/v1/status",
            Some(&self.cloud.admin),
            &[],
            b"",
        )
        .json();
        s["devices"][0]["desiredDigest"]
            .as_str()
            .expect("digest")
            .to_owned()
    }

    fn device_status(&self) -> serde_json::Value {
        let s = http(
            &self.cloud.addr(),
            "GET",
            "/v1/status",
            Some(&self.cloud.admin),
            &[],
            b"",
        )
        .json();
        s["devices"]
            .as_array()
            .expect("devices")
            .iter()
            .find(|d| d["name"] == "dev-a")
            .cloned()
            .unwrap_or_default()
    }

    fn converged(&self) -> bool {
        self.device_status()["converged"] == true
    }
}

fn current_link(data: &Path) -> Option<String> {
    let target = std::fs::read_link(data.join("current")).ok()?;
    Some(target.file_stem()?.to_string_lossy().into_owned())
}

fn version_of(agent: &AgentProc, seq: u64) -> String {
    let r = agent.publish("jobs/one", &serde_json::json!({"seq": seq}));
    let d = r["deliveries"].as_array().expect("deliveries");
    assert_eq!(d.len(), 1, "one binding fires: {r}");
    d[0]["result"]["version"]
        .as_str()
        .unwrap_or_else(|| panic!("no result: {r}"))
        .to_owned()
}

#[test]
fn apply_converges_and_a_switchover_under_load_loses_and_duplicates_nothing() {
    let fleet = Fleet::new();
    fleet.apply(1, 0);
    let data = tempfile::tempdir().expect("agent data");
    let agent = AgentProc::start(&fleet.agent_config, data.path(), &[]);
    wait_until(30, "the device converges on revision 1", || {
        fleet.converged()
    });
    assert_eq!(version_of(&agent, 0), "1");
    let daemon_pids = || {
        let pattern = format!("{}/bundles/.*run.sh", data.path().display());
        let out = std::process::Command::new("pgrep")
            .args(["-f", &pattern])
            .output()
            .expect("pgrep");
        text(&out.stdout).trim().to_owned()
    };
    wait_until(10, "the daemon runs", || !daemon_pids().is_empty());
    let daemon_before = daemon_pids();

    // A steady stream of triggers through the switch to revision 2.
    let local = agent.local.clone();
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let sender = std::thread::spawn({
        let stop = stop.clone();
        move || {
            let mut answers = Vec::new();
            let mut seq = 1u64;
            let mut v2_seen = 0;
            while v2_seen < 50 {
                let started = Instant::now();
                let body = serde_json::json!({ "seq": seq }).to_string();
                let r = http(
                    &local,
                    "POST",
                    "/v1/publish?topic=jobs/stream&wait=true",
                    None,
                    &[("Content-Type", "application/json")],
                    body.as_bytes(),
                );
                let latency = started.elapsed();
                let v = r.json();
                let deliveries = v["deliveries"].as_array().cloned().unwrap_or_default();
                if deliveries.len() == 1 && deliveries[0]["result"]["version"] == "2" {
                    v2_seen += 1;
                }
                answers.push((seq, deliveries, latency));
                seq += 1;
                assert!(seq < 100_000, "revision 2 never answered");
                if stop.load(std::sync::atomic::Ordering::Relaxed) {
                    break;
                }
            }
            answers
        }
    });
    pause(300);
    fleet.apply(2, 0);
    let answers = sender.join().expect("sender");
    stop.store(true, std::sync::atomic::Ordering::Relaxed);

    // Every trigger was delivered exactly once, to v1 until the switch and to v2 after it.
    let mut switched = false;
    let mut v1 = 0;
    for (seq, deliveries, _) in &answers {
        assert_eq!(
            deliveries.len(),
            1,
            "trigger {seq} was delivered {} times: {deliveries:?}",
            deliveries.len()
        );
        let version = deliveries[0]["result"]["version"]
            .as_str()
            .unwrap_or_else(|| panic!("trigger {seq} failed: {:?}", deliveries[0]));
        match version {
            "1" => {
                assert!(!switched, "trigger {seq} reached v1 after v2 had answered");
                v1 += 1;
            }
            _ => switched = true,
        }
    }
    assert!(v1 > 0, "the stream ran before the switch");
    let seen = std::fs::read_to_string(&fleet.out).expect("seen");
    let mut count = std::collections::BTreeMap::new();
    for line in seen.lines() {
        let seq: u64 = line
            .split(' ')
            .nth(1)
            .and_then(|s| s.parse().ok())
            .expect("seq");
        *count.entry(seq).or_insert(0) += 1;
    }
    for (seq, _, _) in &answers {
        assert_eq!(
            count.get(seq),
            Some(&1),
            "trigger {seq} ran {:?} times",
            count.get(seq)
        );
    }
    let worst = answers.iter().map(|a| a.2).max().unwrap_or_default();
    eprintln!(
        "{} triggers, {v1} on v1; slowest round trip during the switch: {worst:?}",
        answers.len()
    );
    wait_until(30, "the device reports revision 2", || {
        fleet.converged() && fleet.device_status()["report"]["runningRevision"] == 2
    });
    // The daemon did not change: it went on running through the update, not restarted.
    assert_eq!(
        daemon_pids(),
        daemon_before,
        "the unchanged continuous function kept its process"
    );
    // The previous release is gone once the new one passed its window: one release kept.
    wait_until(10, "garbage collection", || {
        std::fs::read_dir(data.path().join("releases"))
            .map(|d| d.count())
            .unwrap_or(0)
            == 1
    });
}

#[test]
fn sigkill_at_each_point_of_an_update_ends_on_the_old_or_the_new_release() {
    for (i, point) in ["download", "extract", "before-switch", "after-switch"]
        .into_iter()
        .enumerate()
    {
        let fleet = Fleet::new();
        fleet.apply(1, 0);
        let v1 = fleet.desired_digest();
        let data = tempfile::tempdir().expect("agent data");
        let agent = AgentProc::start(&fleet.agent_config, data.path(), &[]);
        wait_until(30, "revision 1 runs", || {
            agent.running().as_deref() == Some(v1.as_str())
        });
        agent.kill();

        // An agent that dies by SIGKILL at `point` of the update to v2 (a 3 MiB bundle, so the
        // download is in progress when it dies there).
        let crashing = AgentProc::start(
            &fleet.agent_config,
            data.path(),
            &[("EDGEFN_AGENT_CRASH_AT", point)],
        );
        fleet.apply(2, 3 << 20);
        let v2 = fleet.desired_digest();
        let status = crashing.wait(Duration::from_secs(60));
        assert_eq!(
            std::os::unix::process::ExitStatusExt::signal(&status),
            Some(9),
            "{point}: killed by SIGKILL"
        );
        let on_disk = current_link(data.path());
        match point {
            "after-switch" => assert_eq!(
                on_disk.as_deref(),
                Some(v2.as_str()),
                "{point}: the switch was done"
            ),
            _ => assert_eq!(
                on_disk.as_deref(),
                Some(v1.as_str()),
                "{point}: the switch was not done"
            ),
        }
        if point == "download" {
            let parts: Vec<_> = std::fs::read_dir(data.path().join("downloads"))
                .expect("downloads")
                .flatten()
                .collect();
            assert_eq!(parts.len(), 1, "the interrupted download is kept to resume");
        }

        // Restarted, it runs exactly the release `current` names, then converges on v2.
        let agent = AgentProc::start(&fleet.agent_config, data.path(), &[]);
        let first = agent.running();
        assert!(
            first == on_disk,
            "{point}: boots on {first:?}, current is {on_disk:?}"
        );
        let answer = version_of(&agent, i as u64);
        assert_eq!(
            answer,
            if first.as_deref() == Some(v1.as_str()) {
                "1"
            } else {
                "2"
            },
            "{point}"
        );
        wait_until(60, "convergence on v2 after the crash", || {
            agent.running().as_deref() == Some(v2.as_str()) && fleet.converged()
        });
        assert_eq!(version_of(&agent, 100 + i as u64), "2");
        // Nothing half-done is left behind.
        for dir in ["bundles", "releases", ""] {
            for e in std::fs::read_dir(data.path().join(dir))
                .expect("read")
                .flatten()
            {
                assert!(
                    !e.file_name().to_string_lossy().contains(".tmp-"),
                    "{point}: leftover {:?}",
                    e.path()
                );
            }
        }
    }
}

/// Uploads `bytes` as a bundle and submits a revision whose function uses it.
fn submit_with_bundle(fleet: &Fleet, bytes: &[u8], version: u32) {
    let digest = edgefn_schema::bundle::digest(bytes);
    let r = http(
        &fleet.cloud.addr(),
        "PUT",
        &format!("/v1/bundles/{digest}"),
        Some(&fleet.cloud.admin),
        &[],
        bytes,
    );
    assert!(r.status == 201 || r.status == 200, "{}", text(&r.body));
    let latest = http(
        &fleet.cloud.addr(),
        "GET",
        "/v1/revisions?limit=1",
        Some(&fleet.cloud.admin),
        &[],
        b"",
    )
    .json();
    let parent = latest[0]["number"].as_u64().unwrap_or(0);
    let current = http(
        &fleet.cloud.addr(),
        "GET",
        &format!("/v1/revisions/{parent}"),
        Some(&fleet.cloud.admin),
        &[],
        b"",
    )
    .json();
    let mut bundles = current["bundles"].clone();
    bundles["work"] = serde_json::Value::String(digest);
    let body = serde_json::json!({"manifest": manifest(version, &fleet.out), "bundles": bundles, "expectedParent": parent});
    let r = http(
        &fleet.cloud.addr(),
        "POST",
        "/v1/revisions",
        Some(&fleet.cloud.admin),
        &[("Content-Type", "application/json")],
        body.to_string().as_bytes(),
    );
    assert_eq!(r.status, 201, "{}", text(&r.body));
}

fn wait_for_failure(fleet: &Fleet) -> String {
    let mut message = String::new();
    wait_until(30, "the device reports the update failed", || {
        let s = fleet.device_status();
        message = s["report"]["message"]
            .as_str()
            .unwrap_or_default()
            .to_owned();
        s["report"]["state"] == "failed"
    });
    message
}

#[test]
fn a_bundle_corrupted_on_the_cloud_is_refused_and_the_old_release_keeps_running() {
    let fleet = Fleet::new();
    fleet.apply(1, 0);
    let data = tempfile::tempdir().expect("agent data");
    let agent = AgentProc::start(&fleet.agent_config, data.path(), &[]);
    wait_until(30, "revision 1 runs", || fleet.converged());

    // A good v2 bundle, uploaded, then damaged on the cloud's disk before the revision lands.
    let good = edgefn_schema::bundle::pack(vec![edgefn_schema::bundle::BundleFile {
        path: "main.py".into(),
        kind: edgefn_schema::bundle::FileKind::Regular {
            data: format!("{MAIN_PY}# v2\n").into_bytes(),
            executable: false,
        },
    }])
    .expect("pack");
    let digest = edgefn_schema::bundle::digest(&good);
    let r = http(
        &fleet.cloud.addr(),
        "PUT",
        &format!("/v1/bundles/{digest}"),
        Some(&fleet.cloud.admin),
        &[],
        &good,
    );
    assert_eq!(r.status, 201);
    let on_disk = fleet.cloud.data.join("bundles").join(&digest);
    let mut damaged = std::fs::read(&on_disk).expect("read");
    let last = damaged.len() - 1;
    damaged[last] ^= 0xff;
    std::fs::write(&on_disk, damaged).expect("write");
    submit_with_bundle(&fleet, &good, 2);

    let message = wait_for_failure(&fleet);
    assert!(
        message.contains("sha256") && message.contains("refused"),
        "{message}"
    );
    assert_eq!(version_of(&agent, 1), "1", "the old release keeps running");
    let cli_status = ok(&fleet.cli(&["status"]));
    assert!(
        cli_status.contains("failed") && cli_status.contains("refused"),
        "edgefn status shows why:\n{cli_status}"
    );
}

#[test]
fn archives_escaping_the_bundle_are_refused() {
    fn raw_tar(path: &str, kind: tar::EntryType, link: Option<&str>) -> Vec<u8> {
        let mut b = tar::Builder::new(Vec::new());
        let mut h = tar::Header::new_gnu();
        h.set_entry_type(kind);
        h.set_size(if link.is_some() { 0 } else { 5 });
        h.set_mode(0o644);
        h.as_old_mut().name[..path.len()].copy_from_slice(path.as_bytes());
        if let Some(l) = link {
            h.as_old_mut().linkname[..l.len()].copy_from_slice(l.as_bytes());
        }
        h.set_cksum();
        let data: &[u8] = if link.is_some() { b"" } else { b"pwned" };
        b.append(&h, data).expect("append");
        zstd::bulk::compress(&b.into_inner().expect("tar"), 1).expect("zstd")
    }
    for (i, (name, bytes)) in [
        (
            "dot-dot",
            raw_tar("../../escaped.txt", tar::EntryType::Regular, None),
        ),
        (
            "symlink out",
            raw_tar("main.py", tar::EntryType::Symlink, Some("/etc/passwd")),
        ),
    ]
    .into_iter()
    .enumerate()
    {
        let fleet = Fleet::new();
        fleet.apply(1, 0);
        let data = tempfile::tempdir().expect("agent data");
        let agent = AgentProc::start(&fleet.agent_config, data.path(), &[]);
        wait_until(30, "revision 1 runs", || fleet.converged());
        submit_with_bundle(&fleet, &bytes, 2 + i as u32);
        let message = wait_for_failure(&fleet);
        assert!(
            message.contains("unsafe or invalid archive"),
            "{name}: {message}"
        );
        assert!(
            !data.path().join("escaped.txt").exists()
                && !data
                    .path()
                    .parent()
                    .expect("parent")
                    .join("escaped.txt")
                    .exists(),
            "{name}: nothing written outside"
        );
        assert_eq!(
            version_of(&agent, 1),
            "1",
            "{name}: the old release keeps running"
        );
    }
}

#[test]
fn the_agent_boots_and_runs_its_release_with_the_cloud_down_then_catches_up() {
    let mut fleet = Fleet::new();
    fleet.apply(1, 0);
    let data = tempfile::tempdir().expect("agent data");
    let agent = AgentProc::start(&fleet.agent_config, data.path(), &[]);
    wait_until(30, "revision 1 runs", || fleet.converged());
    agent.kill();

    // The cloud goes away; the agent restarts with no network to it.
    let addr = fleet.cloud.addr();
    let cloud_data = fleet.cloud.data.clone();
    let old = std::mem::replace(
        &mut fleet.cloud,
        Cloud::start(&tempfile::tempdir().expect("tmp").keep()),
    );
    old.kill();
    let agent = AgentProc::start(&fleet.agent_config, data.path(), &[]);
    assert!(
        agent.running().is_some(),
        "runs its release from local state"
    );
    // Its continuous function starts too, offline.
    let pattern = format!("{}/bundles/.*run.sh", data.path().display());
    wait_until(20, "the daemon runs offline", || {
        let out = std::process::Command::new("pgrep")
            .args(["-f", &pattern])
            .output()
            .expect("pgrep");
        !text(&out.stdout).trim().is_empty()
    });
    // Its output is kept on the device while nothing can be shipped.
    wait_until(20, "the daemon's log line, kept locally", || {
        let r = http(
            &agent.local,
            "GET",
            "/v1/logs?binding=daemon&tail=10",
            None,
            &[],
            b"",
        );
        r.status == 200 && text(&r.body).contains("daemon up")
    });
    assert_eq!(version_of(&agent, 7), "1", "and handles triggers");

    // The cloud comes back on the same address; an update goes through.
    let back = Cloud::start_at(&cloud_data, &addr);
    let _ = std::mem::replace(&mut fleet.cloud, back);
    fleet.apply(2, 0);
    wait_until(60, "the update after the cloud came back", || {
        version_of(&agent, 8) == "2"
    });
}

#[test]
fn a_bad_config_or_a_rejected_token_stops_the_agent_with_a_clear_error() {
    let data = tempfile::tempdir().expect("data");
    let missing = std::process::Command::new(sibling_bin("edgefn-agent"))
        .args(["--config", "/nonexistent/agent.yaml"])
        .output()
        .expect("run");
    assert_eq!(missing.status.code(), Some(2));
    assert!(
        text(&missing.stderr).contains("cannot read the configuration /nonexistent/agent.yaml"),
        "{}",
        text(&missing.stderr)
    );

    let bad = data.path().join("bad.yaml");
    std::fs::write(
        &bad,
        "cloud: http://127.0.0.1:1\ndevice: Bad Name\ntoken: t\n",
    )
    .expect("write");
    let out = std::process::Command::new(sibling_bin("edgefn-agent"))
        .args(["--config", bad.to_str().expect("utf8")])
        .output()
        .expect("run");
    assert_eq!(out.status.code(), Some(2));
    assert!(
        text(&out.stderr).contains("bad.yaml:2:1: `Bad Name` is not a valid device name"),
        "{}",
        text(&out.stderr)
    );

    let fleet = Fleet::new();
    ok(&fleet.cli(&["device", "remove", "dev-a"]));
    let agent = AgentProc::start(&fleet.agent_config, data.path(), &[]);
    let status = agent.wait(Duration::from_secs(30));
    assert_eq!(status.code(), Some(1), "a revoked token stops the agent");
}

#[test]
fn a_release_whose_daemon_exits_at_once_rolls_back_by_itself() {
    let fleet = Fleet::new();
    fleet.apply(1, 0);
    let v1 = fleet.desired_digest();
    let data = tempfile::tempdir().expect("agent data");
    let agent = AgentProc::start(&fleet.agent_config, data.path(), &[]);
    wait_until(30, "revision 1 runs", || fleet.converged());
    let daemon = |s: &serde_json::Value| {
        s["report"]["functions"]
            .as_array()
            .and_then(|f| f.iter().find(|f| f["binding"] == "daemon").cloned())
            .unwrap_or_default()
    };
    wait_until(10, "the daemon runs", || {
        daemon(&fleet.device_status())["state"] == "running"
    });

    fleet.apply_with_daemon(
        2,
        0,
        "#!/bin/sh\necho 'cannot open /dev/sensor' >&2\nexit 3\n",
    );
    let mut message = String::new();
    wait_until(60, "the device rolls back", || {
        let s = fleet.device_status();
        message = s["report"]["message"]
            .as_str()
            .unwrap_or_default()
            .to_owned();
        s["report"]["state"] == "rolled_back"
    });
    assert!(
        message.contains("daemon"),
        "the reason names the function: {message}"
    );
    assert_eq!(
        current_link(data.path()).as_deref(),
        Some(v1.as_str()),
        "back on v1 on disk"
    );
    assert_eq!(agent.running().as_deref(), Some(v1.as_str()));
    assert_eq!(version_of(&agent, 1), "1", "v1 answers triggers");
    wait_until(10, "the old daemon runs again", || {
        daemon(&fleet.device_status())["state"] == "running"
    });
    let status = ok(&fleet.cli(&["status"]));
    assert!(
        status.contains("rolled_back") && status.contains("daemon"),
        "edgefn status shows why:\n{status}"
    );

    // The failed revision is not retried; a newer one is applied.
    pause(1500);
    assert_eq!(
        agent.running().as_deref(),
        Some(v1.as_str()),
        "no retry of the failed revision"
    );
    fleet.apply(3, 0);
    wait_until(60, "revision 3 runs", || {
        fleet.converged() && version_of(&agent, 2) == "3"
    });
}

/// A daemon that leaves a process of its own behind when it is killed (a background `sleep`
/// in its process group), besides the shell that loops.
const LINGERING_DAEMON: &str =
    "#!/bin/sh\necho \"daemon up\"\nsleep 100000 &\nwhile true; do sleep 1; done\n";

/// A process: pid, start time (`/proc/PID/stat` field 22) and command line.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Proc {
    pid: u32,
    start: u64,
    cmdline: String,
}

fn stat_fields(pid: u32) -> Option<Vec<String>> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let (_, rest) = stat.rsplit_once(')')?;
    Some(rest.split_whitespace().map(str::to_owned).collect())
}

/// Whether `p` still runs (the same process: same pid and start time, and not a zombie).
fn alive(p: &Proc) -> bool {
    stat_fields(p.pid).is_some_and(|f| f[0] != "Z" && f[19].parse() == Ok(p.start))
}

/// Every live process below `root`.
fn descendants(root: u32) -> Vec<Proc> {
    let mut all = Vec::new();
    for e in std::fs::read_dir("/proc").expect("/proc").flatten() {
        let Ok(pid) = e.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        let Some(f) = stat_fields(pid) else { continue };
        if f[0] == "Z" {
            continue;
        }
        // The start is enough to tell (a shim's command line holds all its code).
        let cmdline: String = std::fs::read(format!("/proc/{pid}/cmdline"))
            .map(|b| String::from_utf8_lossy(&b).replace('\0', " "))
            .unwrap_or_default()
            .chars()
            .take(400)
            .collect();
        let (Ok(ppid), Ok(start)) = (f[1].parse::<u32>(), f[19].parse::<u64>()) else {
            continue;
        };
        all.push((
            ppid,
            Proc {
                pid,
                start,
                cmdline,
            },
        ));
    }
    let mut found: Vec<Proc> = Vec::new();
    let mut parents = vec![root];
    while let Some(parent) = parents.pop() {
        for (ppid, p) in &all {
            if *ppid == parent && !found.contains(p) {
                parents.push(p.pid);
                found.push(p.clone());
            }
        }
    }
    found
}

fn is_root_with_cgroups() -> bool {
    let root = std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("Uid:"))
                .map(|l| l.split_whitespace().nth(1) == Some("0"))
        })
        .unwrap_or(false);
    root && (Path::new("/sys/fs/cgroup/memory").is_dir()
        || Path::new("/sys/fs/cgroup/cgroup.controllers").exists())
}

/// SIGKILLs an agent running a continuous function that leaves a process behind: the function
/// dies with the agent (parent-death signal, or the container helper's control pipe), what it
/// left is killed by the restarted agent (the sweep of `DATA/instances`), and after the restart
/// exactly one instance runs.
fn a_continuous_function_does_not_outlive_its_agent(sandbox: &str) {
    let fleet = Fleet::new();
    fleet.apply_with_daemon(1, 0, LINGERING_DAEMON);
    let data = tempfile::tempdir().expect("agent data");
    let instances = |agent: &AgentProc| -> Vec<Proc> {
        descendants(agent.child.id())
            .into_iter()
            .filter(|p| p.cmdline.starts_with("/bin/sh ") && p.cmdline.contains("run.sh"))
            .collect()
    };
    let agent = AgentProc::start_in(&fleet.agent_config, data.path(), &[], sandbox);
    wait_until(30, "the daemon and its background sleep run", || {
        let below = descendants(agent.child.id());
        below.iter().any(|p| p.cmdline.starts_with("/bin/sh "))
            && below.iter().any(|p| p.cmdline.contains("sleep 100000"))
    });
    let old = descendants(agent.child.id());
    let old_instances = instances(&agent);
    assert_eq!(old_instances.len(), 1, "{old:?}");
    agent.kill();

    wait_until(10, "the instance dies with its agent", || {
        !old_instances.iter().any(alive)
    });

    let agent = AgentProc::start_in(&fleet.agent_config, data.path(), &[], sandbox);
    wait_until(
        30,
        "the restarted agent killed what the old instance left",
        || !old.iter().any(alive),
    );
    wait_until(30, "the restarted agent runs the daemon", || {
        instances(&agent).len() == 1
    });
    // Give a second copy the time to show up, were one started.
    wait_until(10, "the daemon's background sleep runs", || {
        descendants(agent.child.id())
            .iter()
            .any(|p| p.cmdline.contains("sleep 100000"))
    });
    let now = instances(&agent);
    assert_eq!(now.len(), 1, "exactly one instance: {now:?}");
    assert!(!old.iter().any(alive), "nothing of the first run is left");

    // A clean stop (SIGTERM) ends the instances and leaves no record to sweep.
    let running = descendants(agent.child.id());
    let pid = agent.child.id().to_string();
    let _ = std::process::Command::new("kill")
        .args(["-TERM", &pid])
        .status();
    let status = agent.wait(Duration::from_secs(60));
    assert_eq!(status.code(), Some(0), "a clean stop");
    wait_until(10, "the instance ends with its agent", || {
        !running.iter().any(alive)
    });
    let records: Vec<_> = std::fs::read_dir(data.path().join("instances"))
        .map(|d| d.flatten().map(|e| e.path()).collect())
        .unwrap_or_default();
    assert_eq!(records, Vec::<PathBuf>::new(), "no record left");
}

#[test]
fn a_continuous_function_does_not_outlive_its_agent_in_the_process_sandbox() {
    a_continuous_function_does_not_outlive_its_agent("process");
}

#[test]
#[allow(clippy::print_stdout)] // the skip reason is for whoever reads the test output
fn a_continuous_function_does_not_outlive_its_agent_in_the_container_sandbox() {
    if !is_root_with_cgroups() {
        println!("skipped: container tests need root and a cgroup memory controller");
        return;
    }
    a_continuous_function_does_not_outlive_its_agent("container");
}

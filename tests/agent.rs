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
    assert_eq!(
        status.code(),
        Some(78),
        "a revoked token stops the agent, with the status its systemd unit does not restart on"
    );
    let unit = std::fs::read_to_string(repo().join("examples/systemd/edgefn-agent.service"))
        .expect("unit");
    assert!(unit.contains("\nRestartPreventExitStatus=78\n"), "{unit}");

    // A local MQTT listener configured at the cloud's broker address would take the messages
    // meant for the cloud: refused, saying why.
    let port = server_port();
    let config = fleet.project.path().join("self.yaml");
    let base = std::fs::read_to_string(&fleet.agent_config).expect("read");
    std::fs::write(
        &config,
        with_config(&base, &format!("mqtt: mqtt://localhost:{port}\n")),
    )
    .expect("write");
    let out = std::process::Command::new(sibling_bin("edgefn-agent"))
        .args(["--config", config.to_str().expect("utf8")])
        .args(["--data", data.path().to_str().expect("utf8")])
        .args([
            "--local-listen",
            "127.0.0.1:0",
            "--local-mqtt",
            &format!("127.0.0.1:{port}"),
        ])
        .output()
        .expect("run");
    assert_eq!(out.status.code(), Some(1));
    assert!(
        text(&out.stderr).contains("its messages for the cloud would go to its own listener"),
        "{}",
        text(&out.stderr)
    );
}

#[test]
fn a_config_bomb_deep_nesting_or_bad_bytes_stop_the_agent_with_where() {
    let dir = tempfile::tempdir().expect("dir");
    let bomb = include_str!("../schema/tests/fixtures/alias-bomb.yaml");
    let cases: [(&str, Vec<u8>, &str); 3] = [
        (
            "bomb.yaml",
            bomb.as_bytes().to_vec(),
            "bomb.yaml:12:18: `*e` expands the document past its limit",
        ),
        (
            "deep.yaml",
            format!("cloud:\n  {}x\n", "- ".repeat(100_000)).into_bytes(),
            "deep.yaml:2:201: lists and mappings nested more than 100 deep",
        ),
        (
            "latin1.yaml",
            b"cloud: http://127.0.0.1:1\ndevice: caf\xE9\ntoken: t\n".to_vec(),
            "latin1.yaml:2:12: the file is not UTF-8 text: byte 0xE9",
        ),
    ];
    for (name, bytes, expected) in cases {
        let path = dir.path().join(name);
        std::fs::write(&path, bytes).expect("write");
        let out = std::process::Command::new(sibling_bin("edgefn-agent"))
            .args(["--config", path.to_str().expect("utf8")])
            .output()
            .expect("run");
        let err = text(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{name}: {err}");
        assert!(err.contains(expected), "{name}: {err}");
        assert!(err.contains("help: "), "{name}: {err}");
    }
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

    // A rollback to the revision that failed here: not run again, and said, so that the
    // rollback's --wait fails with the reason rather than the fleet quietly running revision 3.
    let out = fleet.cli(&["rollback", "--wait", "--timeout", "30s"]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out.stderr));
    assert!(
        text(&out.stderr).contains("already failed on this device"),
        "{}",
        text(&out.stderr)
    );
    assert_eq!(
        version_of(&agent, 3),
        "3",
        "the release before it keeps running"
    );
}

/// A revision that does not change a device's desired state is not re-sent to it, and the
/// device, already running what that revision asks of it, shows as running it.
#[test]
fn a_revision_that_leaves_a_device_unchanged_shows_it_running_that_revision() {
    let fleet = Fleet::new();
    fleet.apply(1, 0);
    let data = tempfile::tempdir().expect("agent data");
    let _agent = AgentProc::start(&fleet.agent_config, data.path(), &[]);
    wait_until(30, "revision 1 runs", || fleet.converged());
    let digest = fleet.desired_digest();

    // Revision 2 adds another device: nothing changes for dev-a.
    let path = fleet.project.path().join("edgefn.yaml");
    let text = manifest(1, &fleet.out).replace("  dev-a: {}\n", "  dev-a: {}\n  dev-b: {}\n");
    std::fs::write(&path, text).expect("write");
    git(fleet.project.path(), &["commit", "-qam", "add dev-b"]);
    ok(&fleet.cli(&["apply"]));
    assert_eq!(
        fleet.desired_digest(),
        digest,
        "dev-a's desired state is unchanged"
    );
    assert!(fleet.converged());
    let status = ok(&fleet.cli(&["status"]));
    let line = status
        .lines()
        .find(|l| l.starts_with("dev-a "))
        .unwrap_or_else(|| panic!("no dev-a line:\n{status}"));
    let columns: Vec<&str> = line.split_whitespace().collect();
    assert_eq!(
        columns[1..3],
        ["2", "2"],
        "desired and running revision:\n{status}"
    );
    assert!(line.contains("converged"), "{status}");
}

/// `apply --wait` shows one line per device when it changes (never the same line twice), and on
/// a timeout or a failure names each device and what it last said.
#[test]
fn apply_wait_shows_what_each_device_does_and_why_it_did_not_converge() {
    let fleet = Fleet::new();
    let lines_of = |out: &std::process::Output| -> Vec<String> {
        text(&out.stderr).lines().map(str::to_owned).collect()
    };
    let no_repeats = |lines: &[String]| {
        for (i, l) in lines.iter().enumerate() {
            assert!(
                !lines[..i].contains(l),
                "line repeated: {l}\n{}",
                lines.join("\n")
            );
        }
    };
    // No agent runs: a timeout that says why.
    let out = fleet.cli(&["apply", "--wait", "--timeout", "3s"]);
    assert_eq!(out.status.code(), Some(1));
    let lines = lines_of(&out);
    no_repeats(&lines);
    let err = lines.join("\n");
    assert!(
        err.contains("timed out after 3s: 1 of 1 devices have not converged")
            && err.contains("  dev-a: never seen (is its agent running and online?)"),
        "{err}"
    );

    // With its agent, the device converges and says so, once.
    let data = tempfile::tempdir().expect("agent data");
    let _agent = AgentProc::start(&fleet.agent_config, data.path(), &[]);
    wait_until(30, "revision 1 runs", || fleet.converged());
    std::fs::write(
        fleet.project.path().join("edgefn.yaml"),
        manifest(2, &fleet.out),
    )
    .expect("write");
    git(fleet.project.path(), &["commit", "-qam", "v2"]);
    let out = fleet.cli(&["apply", "--wait", "--timeout", "60s"]);
    let lines = lines_of(&out);
    assert!(out.status.success(), "{}", lines.join("\n"));
    no_repeats(&lines);
    assert!(
        lines
            .iter()
            .any(|l| l == "dev-a: converged, runs revision 2"),
        "{}",
        lines.join("\n")
    );

    // A release whose daemon exits: the failure names the device and the reason.
    write_daemon(
        fleet.project.path(),
        "#!/bin/sh\necho 'no sensor' >&2\nexit 3\n",
    );
    git(fleet.project.path(), &["add", "-A"]);
    git(fleet.project.path(), &["commit", "-qm", "v3"]);
    let out = fleet.cli(&["apply", "--wait", "--timeout", "60s"]);
    assert_eq!(out.status.code(), Some(1));
    let lines = lines_of(&out);
    no_repeats(&lines);
    let err = lines.join("\n");
    assert!(
        err.contains("1 of 1 devices failed to run revision 3: dev-a")
            && err.contains("dev-a: rolled_back")
            && err.contains("daemon"),
        "{err}"
    );
}

/// After a release rolls back, applying content identical to what the device still runs (the
/// result of `git revert`) converges at once: `apply --wait` succeeds, as the CI job needs.
#[test]
fn reverting_to_what_a_device_runs_converges_at_once() {
    let fleet = Fleet::new();
    fleet.apply(1, 0);
    let data = tempfile::tempdir().expect("agent data");
    let _agent = AgentProc::start(&fleet.agent_config, data.path(), &[]);
    wait_until(30, "revision 1 runs", || fleet.converged());
    fleet.apply_with_daemon(2, 0, "#!/bin/sh\necho 'no sensor' >&2\nexit 3\n");
    wait_until(60, "revision 2 rolls back", || {
        fleet.device_status()["report"]["state"] == "rolled_back"
    });
    // `git revert`: the manifest and daemon of revision 1 again.
    std::fs::write(
        fleet.project.path().join("edgefn.yaml"),
        manifest(1, &fleet.out),
    )
    .expect("write");
    write_daemon(fleet.project.path(), GOOD_DAEMON);
    git(fleet.project.path(), &["add", "-A"]);
    git(fleet.project.path(), &["commit", "-qm", "Revert v2"]);
    let out = fleet.cli(&["apply", "--wait", "--timeout", "30s"]);
    assert!(
        out.status.success(),
        "{}\n{}",
        text(&out.stdout),
        text(&out.stderr)
    );
    assert!(
        text(&out.stderr).contains("dev-a: converged, runs revision 3"),
        "{}",
        text(&out.stderr)
    );
    // And the device itself says it runs revision 3, no longer that revision 2 rolled back.
    wait_until(10, "the device reports running", || {
        let s = fleet.device_status();
        s["report"]["state"] == "running" && s["report"]["message"] == "running revision 3"
    });
}

impl Fleet {
    /// Replaces the agent configuration's `key: value` line.
    fn set_config(&self, key: &str, value: &str) {
        let text = std::fs::read_to_string(&self.agent_config).expect("read");
        let mut lines: Vec<String> = text
            .lines()
            .filter(|l| !l.starts_with(&format!("{key}:")))
            .map(str::to_owned)
            .collect();
        lines.push(format!("{key}: {value}"));
        std::fs::write(&self.agent_config, lines.join("\n") + "\n").expect("write");
    }
}

/// A regression: after refusing a revision the agent slept `pollWait` before asking again, so
/// the fixed revision waited up to that long. Here `pollWait` is far longer than the test's
/// patience: the fixed revision arrives only if the agent long-polls again at once.
#[test]
fn a_fixed_revision_arrives_at_once_after_a_refused_one() {
    let fleet = Fleet::new();
    fleet.set_config("pollWait", "300s");
    fleet.apply(1, 0);
    let data = tempfile::tempdir().expect("agent data");
    let agent = AgentProc::start(&fleet.agent_config, data.path(), &[]);
    wait_until(30, "revision 1 runs", || fleet.converged());
    // Refused after its health window: rolled back.
    fleet.apply_with_daemon(2, 0, "#!/bin/sh\nexit 3\n");
    wait_until(60, "the device rolls back", || {
        fleet.device_status()["report"]["state"] == "rolled_back"
    });
    fleet.apply(3, 0);
    wait_until(60, "revision 3 runs", || {
        fleet.converged() && version_of(&agent, 1) == "3"
    });
    // Refused before its switch (a bundle that is no archive): the same.
    submit_with_bundle(&fleet, b"not an archive", 4);
    wait_for_failure(&fleet);
    fleet.apply(5, 0);
    wait_until(60, "revision 5 runs", || {
        fleet.converged() && version_of(&agent, 2) == "5"
    });
}

/// A regression: an agent started before the first apply took the empty revision 0 into a
/// health window, and the real revision waited for that window to end before its own began.
/// Here health windows are far longer than the test's patience: an empty desired state enters
/// none, and a newer revision supersedes one in its window, which stays the rollback target's
/// business (`previous` keeps pointing at the release that last passed its window).
#[test]
fn an_agent_started_before_the_first_apply_is_not_held_by_health_windows() {
    let fleet = Fleet::new();
    fleet.set_config("healthWindow", "600s");
    let empty = fleet.desired_digest();
    let data = tempfile::tempdir().expect("agent data");
    let agent = AgentProc::start(&fleet.agent_config, data.path(), &[]);
    wait_until(30, "the empty revision 0 is kept at once", || {
        let s = fleet.device_status();
        s["converged"] == true && s["report"]["runningRevision"] == 0
    });

    let r1 = fleet.apply(1, 0);
    wait_until(30, "revision 1 is in its health window", || {
        let s = fleet.device_status();
        s["report"]["runningRevision"] == r1 && s["report"]["state"] == "updating"
    });
    assert_eq!(version_of(&agent, 1), "1");
    let r2 = fleet.apply(2, 0);
    let mut report = serde_json::Value::Null;
    wait_until(30, "revision 2 supersedes revision 1 in its window", || {
        report = fleet.device_status()["report"].clone();
        report["runningRevision"] == r2
    });
    assert_eq!(report["state"], "updating", "{report}");
    assert!(
        report["message"]
            .as_str()
            .is_some_and(|m| m.contains(&format!("revision {r2}: in its health window"))),
        "{report}"
    );
    assert_eq!(version_of(&agent, 2), "2");
    let previous = std::fs::read_link(data.path().join("previous")).expect("previous");
    assert_eq!(
        previous
            .file_stem()
            .map(|s| s.to_string_lossy().into_owned()),
        Some(empty),
        "the rollback target is the release that passed its window, not the superseded one"
    );
}

/// `edgefn-agent` with `config` and `data`, and `args`, its output read in threads: returns the
/// process, its first line of stdout and its stderr so far.
#[allow(clippy::type_complexity)]
fn start_agent_raw(
    config: &Path,
    data: &Path,
    args: &[&str],
) -> (
    std::process::Child,
    std::sync::mpsc::Receiver<String>,
    std::sync::Arc<std::sync::Mutex<String>>,
) {
    use std::io::BufRead;
    let mut child = std::process::Command::new(sibling_bin("edgefn-agent"))
        .args(["--config", config.to_str().expect("utf8")])
        .args(["--data", data.to_str().expect("utf8")])
        .args(["--sandbox", "process"])
        .args(args)
        .env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("start edgefn-agent");
    let (tx, rx) = std::sync::mpsc::channel();
    let stdout = child.stdout.take().expect("stdout");
    std::thread::spawn(move || {
        for line in std::io::BufReader::new(stdout)
            .lines()
            .map_while(Result::ok)
        {
            let _ = tx.send(line);
        }
    });
    let err = std::sync::Arc::new(std::sync::Mutex::new(String::new()));
    let sink = err.clone();
    let stderr = child.stderr.take().expect("stderr");
    std::thread::spawn(move || {
        for line in std::io::BufReader::new(stderr)
            .lines()
            .map_while(Result::ok)
        {
            let mut s = sink.lock().expect("lock");
            s.push_str(&line);
            s.push('\n');
        }
    });
    (child, rx, err)
}

/// A regression: a second agent on one host (the README's "second machine", tried on one)
/// exited because the default local HTTP address was taken, while the same clash of the local
/// MQTT listener was only a warning. One rule for both: a busy default address is a warning and
/// the agent runs without that listener; a busy address the configuration or a flag names
/// stops the agent, saying which and how to fix it.
#[test]
fn a_second_agent_on_one_host_runs_without_the_busy_default_local_listeners() {
    let fleet = Fleet::new();
    fleet.apply(1, 0);
    // The default addresses, busy (held here, or by whatever already holds them).
    let _http = std::net::TcpListener::bind("127.0.0.1:7071");
    let _mqtt = std::net::TcpListener::bind("127.0.0.1:1883");
    assert!(std::net::TcpListener::bind("127.0.0.1:7071").is_err());
    assert!(std::net::TcpListener::bind("127.0.0.1:1883").is_err());

    let data = tempfile::tempdir().expect("agent data");
    let (mut child, lines, err) = start_agent_raw(&fleet.agent_config, data.path(), &[]);
    let first = lines
        .recv_timeout(Duration::from_secs(30))
        .unwrap_or_else(|_| {
            panic!(
                "the agent printed nothing; stderr:\n{}",
                err.lock().expect("lock")
            )
        });
    assert!(
        first.contains("for device dev-a with no local listener"),
        "{first}"
    );
    wait_until(30, "the second agent runs its release", || {
        fleet.converged()
    });
    assert!(child.try_wait().expect("wait").is_none(), "still running");
    let warned = err.lock().expect("lock").clone();
    assert!(
        warned.contains(
            "no listener for the local message endpoint: cannot listen on its default address"
        ) && warned.contains("localListen:"),
        "{warned}"
    );
    // The local MQTT default is busy too, and here also the cloud's broker address (the
    // cloud's host, port 1883): either way a warning, and no listener.
    assert!(
        warned.contains("no listener for local MQTT clients: ") && warned.contains("localMqtt:"),
        "{warned}"
    );
    let _ = child.kill();
    let _ = child.wait();

    // Named explicitly, a busy address stops the agent, whichever listener it is.
    for (flag, addr, what) in [
        (
            "--local-listen",
            "127.0.0.1:7071",
            "the local message endpoint",
        ),
        ("--local-mqtt", "127.0.0.1:1883", "local MQTT clients"),
    ] {
        let (mut child, _lines, err) =
            start_agent_raw(&fleet.agent_config, data.path(), &[flag, addr]);
        let status = child.wait().expect("wait");
        assert_eq!(status.code(), Some(1), "{flag} {addr}");
        wait_until(5, "the error is read", || {
            !err.lock().expect("lock").is_empty()
        });
        let message = err.lock().expect("lock").clone();
        // 127.0.0.1:1883 is also the cloud's broker address here (its host, port 1883): the
        // agent refuses it for that reason first.
        assert!(
            message.contains(&format!("cannot listen for {what} on {addr}"))
                || (flag == "--local-mqtt"
                    && message.contains("its messages for the cloud would go to its own listener")),
            "{message}"
        );
    }
}

/// One crafted entry: path, type, link target, mode, contents.
type Entry<'a> = (&'a str, tar::EntryType, Option<&'a str>, u32, &'a [u8]);

/// An archive written by hand, as an attacker would: (path, type, link target, mode, data).
fn crafted(entries: &[Entry<'_>]) -> Vec<u8> {
    let mut b = tar::Builder::new(Vec::new());
    for (path, kind, link, mode, data) in entries {
        let mut h = tar::Header::new_gnu();
        h.set_entry_type(*kind);
        h.set_size(data.len() as u64);
        h.set_mode(*mode);
        h.as_old_mut().name[..path.len()].copy_from_slice(path.as_bytes());
        if let Some(l) = link {
            h.as_old_mut().linkname[..l.len()].copy_from_slice(l.as_bytes());
        }
        h.set_cksum();
        b.append(&h, *data).expect("append");
    }
    zstd::bulk::compress(&b.into_inner().expect("tar"), 1).expect("zstd")
}

/// Every path under `dir` (links not followed) whose name is `name`.
fn find_named(dir: &Path, name: &str) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut todo = vec![dir.to_path_buf()];
    while let Some(d) = todo.pop() {
        for e in std::fs::read_dir(&d).into_iter().flatten().flatten() {
            let p = e.path();
            if e.file_name() == name {
                out.push(p.clone());
            }
            if e.file_type().is_ok_and(|t| t.is_dir()) {
                todo.push(p);
            }
        }
    }
    out
}

#[test]
fn links_an_archive_made_cannot_carry_its_files_out_and_setuid_entries_are_refused() {
    use tar::EntryType::{Regular, Symlink};
    let main: &[u8] = MAIN_PY.as_bytes();
    for (i, (name, entries, expect)) in [
        (
            "the chain a/b -> .., a/b/c -> ..",
            vec![
                ("main.py", Regular, None, 0o644, main),
                ("a/b", Symlink, Some(".."), 0o777, b""),
                ("a/b/c", Symlink, Some(".."), 0o777, b""),
                ("a/b/c/pwned", Regular, None, 0o644, b"pwned"),
            ],
            "under the symlink `a/b`",
        ),
        (
            "a longer chain",
            vec![
                ("main.py", Regular, None, 0o644, main),
                ("a/b", Symlink, Some(".."), 0o777, b""),
                ("a/b/c", Symlink, Some(".."), 0o777, b""),
                ("a/b/c/d", Symlink, Some(".."), 0o777, b""),
                ("a/b/c/d/pwned", Regular, None, 0o644, b"pwned"),
            ],
            "under the symlink `a/b`",
        ),
        (
            "a setuid file",
            vec![("main.py", Regular, None, 0o4755, main)],
            "`main.py` has the setuid or setgid bit",
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
        submit_with_bundle(&fleet, &crafted(&entries), 2 + i as u32);
        let message = wait_for_failure(&fleet);
        assert!(
            message.contains("unsafe or invalid archive") && message.contains(expect),
            "{name}: {message}"
        );
        let pwned = find_named(data.path(), "pwned");
        let beside = data.path().parent().expect("parent").join("pwned");
        assert!(
            pwned.is_empty() && !beside.exists(),
            "{name}: written outside the bundle: {pwned:?}"
        );
        assert_eq!(
            version_of(&agent, 1),
            "1",
            "{name}: the old release keeps running"
        );
    }
}

/// A tmpfs of `size` mounted on a new folder, unmounted when dropped; `None` (with a message)
/// where mounting is not permitted.
struct Tmpfs(tempfile::TempDir);

impl Tmpfs {
    #[allow(clippy::print_stderr)]
    fn mount(size: &str) -> Option<Tmpfs> {
        let dir = tempfile::tempdir().expect("tempdir");
        let ok = std::process::Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(dir.path())
            .stderr(std::process::Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
        if !ok {
            eprintln!("SKIPPED: cannot mount a tmpfs here (needs root): no full-disk test");
            return None;
        }
        Some(Tmpfs(dir))
    }

    fn path(&self) -> &Path {
        self.0.path()
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount")
            .arg("-l")
            .arg(self.0.path())
            .status();
    }
}

/// Writes `path` until the file system is full.
fn fill(path: &Path) {
    use std::io::Write;
    let mut f = std::fs::File::create(path).expect("create");
    let block = vec![0x5au8; 4096];
    while f.write_all(&block).is_ok() {}
    let _ = f.sync_all();
}

#[test]
fn on_a_full_disk_the_agent_reclaims_its_debris_reports_the_shortage_and_retries() {
    let Some(disk) = Tmpfs::mount("12m") else {
        return;
    };
    let fleet = Fleet::new();
    fleet.apply(1, 0);
    let data = disk.path().join("data");
    let agent = AgentProc::start(&fleet.agent_config, &data, &[]);
    wait_until(30, "revision 1 runs", || fleet.converged());

    // 1. The disk is full of the agent's own debris: a stale download, a half-extracted
    // folder, a bundle no release uses. The update makes room by itself.
    let stale_part = data
        .join("downloads")
        .join(format!("{}.part", "c".repeat(64)));
    let unused = data.join("bundles").join("e".repeat(64));
    let debris = data
        .join("bundles")
        .join(format!("{}.tmp-1", "d".repeat(64)));
    std::fs::create_dir_all(&unused).expect("mkdir");
    std::fs::create_dir_all(&debris).expect("mkdir");
    std::fs::write(&stale_part, vec![1u8; 3 << 20]).expect("write");
    std::fs::write(unused.join("f"), vec![2u8; 3 << 20]).expect("write");
    fill(&debris.join("half"));
    fleet.apply(2, 1 << 20);
    let v2 = fleet.desired_digest();
    wait_until(60, "revision 2 runs on the once-full disk", || {
        agent.running().as_deref() == Some(v2.as_str()) && fleet.converged()
    });
    assert_eq!(version_of(&agent, 2), "2");
    assert!(
        !stale_part.exists() && !unused.exists() && !debris.exists(),
        "the agent's debris was reclaimed"
    );

    // 2. Something else fills the disk: the update says so, is not marked failed, and goes
    // through once there is room again, with nobody touching the agent's files.
    let filler = disk.path().join("filler");
    fill(&filler);
    fleet.apply(3, 1 << 20);
    let v3 = fleet.desired_digest();
    let mut message = String::new();
    wait_until(60, "the device reports the full disk", || {
        let s = fleet.device_status();
        message = s["report"]["message"]
            .as_str()
            .unwrap_or_default()
            .to_owned();
        message.contains("no space left on the device")
    });
    assert!(
        message.contains("the bundles need") && message.contains("free"),
        "{message}"
    );
    let state = fleet.device_status()["report"]["state"].clone();
    assert_ne!(state, "failed", "a full disk is not the release's fault");
    assert_eq!(version_of(&agent, 3), "2", "the old release keeps running");
    std::fs::remove_file(&filler).expect("rm");
    wait_until(90, "revision 3 runs once there is room", || {
        agent.running().as_deref() == Some(v3.as_str()) && fleet.converged()
    });
    assert_eq!(version_of(&agent, 4), "3");
    drop(agent);
}

/// The peak resident memory (`VmHWM`) of process `pid`, in KiB.
fn peak_rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("status");
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmHWM")
}

/// A bundle that inflates to `files` × 1 GiB of zeros, compressed as a stream (the frame does
/// not say its size) unless `pledged`.
fn bomb(files: u64, pledged: bool) -> Vec<u8> {
    use std::io::Read;
    const GIB: u64 = 1 << 30;
    let tar_len = files * (512 + GIB) + 1024;
    let mut enc = zstd::stream::write::Encoder::new(Vec::new(), 1).expect("zstd");
    if pledged {
        enc.set_pledged_src_size(Some(tar_len)).expect("pledge");
    }
    let mut b = tar::Builder::new(enc);
    for i in 0..files {
        let mut h = tar::Header::new_gnu();
        h.set_entry_type(tar::EntryType::Regular);
        h.set_size(GIB);
        h.set_mode(0o644);
        h.set_cksum();
        b.append_data(&mut h, format!("zeros-{i}"), std::io::repeat(0).take(GIB))
            .expect("append");
    }
    b.into_inner().expect("tar").finish().expect("zstd")
}

/// Measures the agent's peak memory while it refuses bundles that inflate to 4 GiB:
/// `cargo build --workspace --bins && cargo test -p edgefn --test agent bomb -- --ignored --nocapture`
/// (builds the bombs, a few seconds each; the streamed one has the agent write 1 GiB to its
/// data folder before it is refused).
#[test]
#[ignore = "a measurement: builds 4 GiB-inflating bundles; run it by name with --ignored"]
#[allow(clippy::print_stderr)]
fn the_agent_refuses_a_4_gib_bomb_in_bounded_memory() {
    let fleet = Fleet::new();
    fleet.apply(1, 0);
    let data = tempfile::tempdir().expect("agent data");
    let agent = AgentProc::start(&fleet.agent_config, data.path(), &[]);
    wait_until(30, "revision 1 runs", || fleet.converged());
    let pid = agent.child.id();
    eprintln!("agent peak RSS before: {} KiB", peak_rss_kib(pid));
    for (i, (name, pledged)) in [
        ("4 × 1 GiB, the frame says its size", true),
        ("4 × 1 GiB, streamed (size unknown until inflated)", false),
    ]
    .into_iter()
    .enumerate()
    {
        let bytes = bomb(4, pledged);
        eprintln!("{name}: {} bytes compressed", bytes.len());
        let revision = 2 + i as u32;
        submit_with_bundle(&fleet, &bytes, revision);
        let mut message = String::new();
        wait_until(120, "the device refuses the bomb", || {
            let s = fleet.device_status();
            message = s["report"]["message"]
                .as_str()
                .unwrap_or_default()
                .to_owned();
            s["report"]["state"] == "failed" && message.contains(&format!("revision {revision} "))
        });
        assert!(message.contains("inflates past"), "{name}: {message}");
        let peak = peak_rss_kib(pid);
        eprintln!(
            "{name}: refused ({message}); agent peak RSS so far {peak} KiB ({:.1} MiB)",
            peak as f64 / 1024.0
        );
        assert!(peak < 64 << 10, "{name}: peak RSS {peak} KiB");
        assert_eq!(version_of(&agent, i as u64), "1");
    }
}

#[test]
fn a_download_finished_before_a_crash_is_not_fetched_again() {
    let fleet = Fleet::new();
    fleet.apply(1, 0);
    let data = tempfile::tempdir().expect("agent data");
    let agent = AgentProc::start(&fleet.agent_config, data.path(), &[]);
    wait_until(30, "revision 1 runs", || fleet.converged());
    agent.kill();

    // Revision 2's bundle lies whole in downloads/, as when the agent died between the end of
    // the download and the extraction: the cloud answers its `Range` with 416.
    let revision = fleet.apply(2, 64 << 10);
    let r = http(
        &fleet.cloud.addr(),
        "GET",
        &format!("/v1/revisions/{revision}"),
        Some(&fleet.cloud.admin),
        &[],
        b"",
    )
    .json();
    let digest = r["bundles"]["work"].as_str().expect("bundle").to_owned();
    let bytes = http(
        &fleet.cloud.addr(),
        "GET",
        &format!("/v1/bundles/{digest}"),
        Some(&fleet.cloud.admin),
        &[],
        b"",
    )
    .body;
    std::fs::write(
        data.path().join("downloads").join(format!("{digest}.part")),
        bytes,
    )
    .expect("write");
    let v2 = fleet.desired_digest();
    let agent = AgentProc::start(&fleet.agent_config, data.path(), &[]);
    wait_until(60, "revision 2 runs", || {
        agent.running().as_deref() == Some(v2.as_str()) && fleet.converged()
    });
    assert_eq!(version_of(&agent, 1), "2");
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

/// Plain programs (`interface: stdio` and `lines`) go from the manifest through the control
/// plane's desired state to the agent, and answer messages on the device's bus.
#[test]
fn plain_programs_answer_messages_on_a_device() {
    use std::os::unix::fs::PermissionsExt;
    let fleet = Fleet::new();
    let project = fleet.project.path();
    for (name, script) in [
        (
            "upper",
            "#!/bin/sh\necho \"$EDGEFN_TOPIC: $(tr a-z A-Z)\"\n",
        ),
        (
            "count",
            "#!/bin/sh\nk=0\nwhile IFS= read -r line; do k=$((k+1)); echo \"{\\\"seen\\\": $k, \\\"event\\\": $line}\"; done\n",
        ),
    ] {
        let dir = project.join("functions").join(name);
        std::fs::create_dir_all(&dir).expect("mkdir");
        std::fs::write(dir.join("run.sh"), script).expect("write");
        std::fs::set_permissions(dir.join("run.sh"), std::fs::Permissions::from_mode(0o755))
            .expect("chmod");
    }
    let manifest = manifest(1, &fleet.out)
        .replace(
            "devices:\n",
            "  upper:\n    path: functions/upper\n    runtime: exec\n    handler: [\"./run.sh\"]\n    interface: stdio\n  count:\n    path: functions/count\n    runtime: exec\n    handler: [\"./run.sh\"]\n    interface: lines\ndevices:\n",
        )
        + "  - function: upper\n    devices: { names: [dev-a] }\n    triggers: [ \"plain/upper/#\" ]\n  - function: count\n    devices: { names: [dev-a] }\n    triggers: [ \"plain/count\" ]\n";
    std::fs::write(project.join("edgefn.yaml"), manifest).expect("write");
    git(project, &["add", "-A"]);
    git(project, &["commit", "-q", "-m", "plain programs"]);
    ok(&fleet.cli(&["apply"]));
    let data = tempfile::tempdir().expect("agent data");
    let agent = AgentProc::start(&fleet.agent_config, data.path(), &[]);
    wait_until(30, "the release runs", || fleet.converged());

    let result = |topic: &str, payload: serde_json::Value| {
        let r = agent.publish(topic, &payload);
        let d = r["deliveries"].as_array().expect("deliveries");
        assert_eq!(d.len(), 1, "one binding fires: {r}");
        d[0]["result"].clone()
    };
    assert_eq!(
        result("plain/upper/ada", serde_json::json!("hello")),
        serde_json::json!("plain/upper/ada: HELLO")
    );
    for k in 1..=3 {
        assert_eq!(
            result("plain/count", serde_json::json!({"k": k})),
            serde_json::json!({"seen": k, "event": {"topic": "plain/count", "payload": {"k": k}}}),
            "one warm process counts every event"
        );
    }
}

const PROBE_PY: &str = r#"import errno, os

# Which instance answered: a restarted function answers with another.
INSTANCE = os.urandom(8).hex()

def probe(event, context):
    out = {"instance": INSTANCE}
    for p in event["payload"]["paths"]:
        try:
            fd = os.open(p, os.O_RDONLY)
            out[p] = "read " + os.read(fd, 4).hex()
            os.close(fd)
        except OSError as e:
            out[p] = errno.errorcode.get(e.errno, str(e.errno))
    return out
"#;

/// A device node made with mknod for a test (a copy of `/dev/zero`'s 1:5), removed on drop.
struct TestNode(String);

impl TestNode {
    fn make(name: &str) -> TestNode {
        let path = format!("/dev/edgefn-test-{name}-{}", std::process::id());
        let _ = std::fs::remove_file(&path);
        let status = std::process::Command::new("mknod")
            .args(["-m", "0666", &path, "c", "1", "5"])
            .status()
            .expect("mknod");
        assert!(status.success(), "mknod {path}");
        TestNode(path)
    }
}

impl Drop for TestNode {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

/// A binding asking for a device node: on a device that has it, the function (in a container
/// where this host allows one) opens it and no other node made beside it; a release asking for
/// a node the device lacks is refused before the switch: the running release goes on untouched
/// (the same instance answers), and the device reports the release failed, naming the node.
#[test]
fn a_binding_gets_its_device_node_and_a_missing_node_is_refused_before_the_switch() {
    let fleet = Fleet::new();
    let root = is_root_with_cgroups();
    let (asked, other) = if root {
        (TestNode::make("asked"), TestNode::make("other"))
    } else {
        (TestNode("/dev/zero".into()), TestNode("/dev/full".into()))
    };
    let absent = format!("/dev/edgefn-test-absent-{}", std::process::id());
    let project = fleet.project.path();
    let dir = project.join("functions/probe");
    std::fs::create_dir_all(&dir).expect("mkdir");
    std::fs::write(dir.join("main.py"), PROBE_PY).expect("write");
    let with_probe = |v: u32, node: &str| {
        let m = manifest(v, &fleet.out).replace(
            "devices:\n",
            "  probe:\n    path: functions/probe\n    runtime: python3\n    handler: main.probe\ndevices:\n",
        ) + &format!(
            "  - function: probe\n    devices: {{ names: [dev-a] }}\n    triggers: [ \"probe\" ]\n    deviceNodes: [\"{node}\"]\n"
        );
        std::fs::write(project.join("edgefn.yaml"), m).expect("write");
        git(project, &["add", "-A"]);
        git(project, &["commit", "-q", "-m", &format!("v{v}")]);
        ok(&fleet.cli(&["apply"]));
    };
    with_probe(1, &asked.0);
    let data = tempfile::tempdir().expect("agent data");
    let sandbox = if root { "container" } else { "process" };
    let agent = AgentProc::start_in(&fleet.agent_config, data.path(), &[], sandbox);
    wait_until(30, "revision 1 runs", || fleet.converged());
    let v1 = fleet.desired_digest();
    let r = agent.publish("probe", &serde_json::json!({"paths": [&asked.0, &other.0]}));
    let result = &r["deliveries"][0]["result"];
    assert_eq!(result[&asked.0], "read 00000000", "{r}");
    if root {
        assert_eq!(result[&other.0], "ENOENT", "not in the container: {r}");
    }
    let instance = result["instance"].clone();
    assert!(instance.is_string(), "{r}");

    // Revision 2 asks for a node this device lacks.
    with_probe(2, &absent);
    let mut report = serde_json::Value::Null;
    wait_until(60, "the device refuses revision 2", || {
        report = fleet.device_status()["report"].clone();
        report["state"] == "failed"
    });
    let message = report["message"].as_str().unwrap_or_default();
    assert!(
        message.contains("revision 2 refused")
            && message.contains(&format!("device node {absent} is missing"))
            && message.contains("`probe`"),
        "the reason names the binding and the node: {message}"
    );
    assert_eq!(current_link(data.path()).as_deref(), Some(v1.as_str()));
    assert_eq!(agent.running().as_deref(), Some(v1.as_str()));
    let status = ok(&fleet.cli(&["status", "dev-a"]));
    assert!(
        status.contains("failed") && status.contains(&absent),
        "edgefn status names the node:\n{status}"
    );
    // Revision 1 was never stopped: the very instance that answered before answers again.
    let r = agent.publish("probe", &serde_json::json!({"paths": [&asked.0]}));
    let result = &r["deliveries"][0]["result"];
    assert_eq!(result[&asked.0], "read 00000000", "{r}");
    assert_eq!(
        result["instance"], instance,
        "revision 1 was not restarted: {r}"
    );
    // Its continuous function was not restarted either.
    let daemon = report["functions"]
        .as_array()
        .and_then(|f| f.iter().find(|f| f["binding"] == "daemon").cloned())
        .unwrap_or_default();
    assert_eq!(daemon["state"], "running", "{report}");
    assert_eq!(daemon["restarts"], 0, "{report}");
}

/// A bundle the control plane answers 404 to (its objects lost it after the apply): the agent
/// keeps what it runs and says which digest is missing and to apply again.
#[test]
fn a_bundle_the_control_plane_lacks_is_named_with_what_to_do() {
    let fleet = Fleet::new();
    let applied: serde_json::Value =
        serde_json::from_str(&ok(&fleet.cli(&["apply", "--output", "json"]))).expect("json");
    let digest = applied["bundles"]["work"]
        .as_str()
        .expect("work's bundle")
        .to_owned();
    let stored = fleet._cloud_data.path().join("bundles").join(&digest);
    std::fs::remove_file(&stored).unwrap_or_else(|e| panic!("{}: {e}", stored.display()));
    let data = tempfile::tempdir().expect("agent data");
    let _agent = AgentProc::start(&fleet.agent_config, data.path(), &[]);
    let mut message = String::new();
    wait_until(60, "the device says the bundle is missing", || {
        message = fleet.device_status()["report"]["message"]
            .as_str()
            .unwrap_or_default()
            .to_owned();
        message.contains("HTTP 404")
    });
    assert!(
        message.contains(&format!(
            "bundle {digest}: the control plane does not have it"
        )) && message.contains("apply again (`edgefn apply`"),
        "{message}"
    );
    assert_eq!(current_link(data.path()), None, "nothing switched");
}

/// A first release asking for a node the device lacks is refused before it starts anything:
/// it is marked failed, and the reason names the binding and the node.
#[test]
fn a_first_release_missing_a_device_node_is_refused() {
    let fleet = Fleet::new();
    let absent = format!("/dev/edgefn-test-absent-first-{}", std::process::id());
    let project = fleet.project.path();
    let m = manifest(1, &fleet.out).replace(
        "    mode: continuous\n",
        &format!("    mode: continuous\n    deviceNodes: [\"{absent}\"]\n"),
    );
    std::fs::write(project.join("edgefn.yaml"), m).expect("write");
    git(project, &["add", "-A"]);
    git(project, &["commit", "-q", "-m", "v1"]);
    ok(&fleet.cli(&["apply"]));
    let data = tempfile::tempdir().expect("agent data");
    let agent = AgentProc::start(&fleet.agent_config, data.path(), &[]);
    let mut report = serde_json::Value::Null;
    wait_until(60, "the release fails", || {
        report = fleet.device_status()["report"].clone();
        report["state"] == "failed"
    });
    assert_eq!(
        report["message"],
        format!(
            "revision 1 refused: binding `daemon` cannot start: device node {absent} is missing"
        ),
        "{report}"
    );
    assert_eq!(current_link(data.path()), None, "nothing was switched to");
    let status = ok(&fleet.cli(&["status", "dev-a"]));
    assert!(
        status.contains("failed") && status.contains(&absent),
        "edgefn status names the node:\n{status}"
    );
    // The node comes (a camera plugged in): the refusal was not remembered as a failure, so
    // the agent's next start runs the revision.
    let uid0 = std::fs::read_to_string("/proc/self/status").is_ok_and(|s| {
        s.lines()
            .any(|l| l.split_whitespace().take(2).eq(["Uid:", "0"]))
    });
    if uid0 {
        let node = TestNode::make("absent-first");
        assert_eq!(node.0, absent);
        drop(agent);
        let _agent = AgentProc::start(&fleet.agent_config, data.path(), &[]);
        wait_until(60, "revision 1 runs once its node is there", || {
            fleet.converged()
        });
    }
}

//! End-to-end tests of progressive rollouts with the real `edgefn-cloud`, `edgefn` and a fleet
//! of real `edgefn-agent`s (process sandbox): a crashing release halts at its canary and never
//! reaches the other devices; pause holds, resume continues, abort returns everyone; a rollout
//! survives a SIGKILL of the control plane.

#[path = "common/mod.rs"]
mod common;

use std::path::{Path, PathBuf};

use common::*;

const DEVICES: [&str; 3] = ["dev-a", "dev-b", "dev-c"];
const GOOD: &str = "#!/bin/sh\necho up\nwhile true; do sleep 1; done\n";
const CRASHING: &str = "#!/bin/sh\necho 'cannot open /dev/sensor' >&2\nexit 3\n";

/// A project with one continuous function on three devices, each with a running agent.
struct Fleet {
    project: tempfile::TempDir,
    cloud: Option<Cloud>,
    cloud_data: tempfile::TempDir,
    addr: String,
    agents: Vec<(AgentProc, tempfile::TempDir)>,
}

fn manifest(version: u32, rollout: &str) -> String {
    format!(
        "apiVersion: edgefn/v1\nproject: rollout-test\nfunctions:\n  daemon:\n    path: functions/daemon\n    runtime: exec\n    handler: [\"./run.sh\"]\n    env: {{ VERSION: \"{version}\" }}\ndevices:\n  dev-a: {{}}\n  dev-b: {{}}\n  dev-c: {{}}\nbindings:\n  - function: daemon\n    devices: {{ labels: {{}} }}\n    mode: continuous\n{rollout}"
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
    /// The fleet, with revision 1 (no rollout: the first revision has no baseline) running
    /// everywhere.
    fn new() -> Fleet {
        let cloud_data = tempfile::tempdir().expect("data");
        let addr = format!("127.0.0.1:{}", server_port());
        let cloud = Cloud::start_at(cloud_data.path(), &addr);
        let project = tempfile::tempdir().expect("project");
        write_daemon(project.path(), GOOD);
        std::fs::write(project.path().join("edgefn.yaml"), manifest(1, "")).expect("write");
        std::fs::write(project.path().join(".gitignore"), "*.agent.yaml\n").expect("write");
        git(project.path(), &["init", "-q"]);
        git(project.path(), &["add", "-A"]);
        git(project.path(), &["commit", "-q", "-m", "v1"]);
        let mut f = Fleet {
            project,
            cloud: Some(cloud),
            cloud_data,
            addr,
            agents: Vec::new(),
        };
        for name in DEVICES {
            let config: PathBuf = f.project.path().join(format!("{name}.agent.yaml"));
            ok(&f.cli(&[
                "device",
                "add",
                name,
                "--out",
                config.to_str().expect("utf8"),
            ]));
            let mut text = std::fs::read_to_string(&config).expect("read");
            text.push_str("healthWindow: 1s\npollWait: 2s\nreportInterval: 1s\n");
            std::fs::write(&config, text).expect("write");
            let data = tempfile::tempdir().expect("agent data");
            f.agents
                .push((AgentProc::start(&config, data.path(), &[]), data));
        }
        ok(&f.cli(&["apply", "--wait", "--timeout", "60s"]));
        f
    }

    fn cloud(&self) -> &Cloud {
        self.cloud.as_ref().expect("the cloud runs")
    }

    fn cli(&self, args: &[&str]) -> std::process::Output {
        let env = self.cloud().env();
        edgefn_env(
            self.project.path(),
            args,
            &[(env[0].0, env[0].1.as_str()), (env[1].0, env[1].1.as_str())],
        )
    }

    /// Writes and commits version `v` with `daemon` and `rollout` (YAML appended).
    fn write(&self, v: u32, daemon: &str, rollout: &str) {
        std::fs::write(
            self.project.path().join("edgefn.yaml"),
            manifest(v, rollout),
        )
        .expect("write");
        write_daemon(self.project.path(), daemon);
        git(self.project.path(), &["add", "-A"]);
        git(
            self.project.path(),
            &["commit", "-q", "-m", &format!("v{v}")],
        );
    }

    fn get(&self, path: &str) -> Response {
        http(
            &self.cloud().addr(),
            "GET",
            path,
            Some(&self.cloud().admin),
            &[],
            b"",
        )
    }

    fn post(&self, path: &str) -> Response {
        http(
            &self.cloud().addr(),
            "POST",
            path,
            Some(&self.cloud().admin),
            &[],
            b"",
        )
    }

    fn rollout(&self) -> serde_json::Value {
        self.get("/v1/rollout").json()
    }

    /// Each device's entry of `GET /v1/status`.
    fn device(&self, name: &str) -> serde_json::Value {
        self.get("/v1/status").json()["devices"]
            .as_array()
            .expect("devices")
            .iter()
            .find(|d| d["name"] == name)
            .cloned()
            .unwrap_or_default()
    }

    /// The digest device `name` reports running.
    fn running(&self, name: &str) -> String {
        self.device(name)["report"]["runningDigest"]
            .as_str()
            .unwrap_or_default()
            .to_owned()
    }

    fn all_converged(&self) -> bool {
        DEVICES.iter().all(|d| self.device(d)["converged"] == true)
    }

    /// The release files (one per desired state taken) in device `i`'s data folder.
    fn releases(&self, i: usize) -> Vec<String> {
        let mut names: Vec<String> = std::fs::read_dir(self.agents[i].1.path().join("releases"))
            .expect("releases")
            .flatten()
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .filter(|n| n.ends_with(".json"))
            .collect();
        names.sort();
        names
    }
}

const CANARY_THEN_ALL: &str = "rollout:\n  deadline: 30s\n  stages:\n    - { devices: 1, bake: 3s }\n    - { percent: 100, bake: 1s }\n";

#[test]
fn a_crashing_release_halts_at_its_canary_and_never_reaches_the_other_devices() {
    let fleet = Fleet::new();
    let v1: Vec<String> = DEVICES.iter().map(|d| fleet.running(d)).collect();
    let releases_before: Vec<Vec<String>> = (0..3).map(|i| fleet.releases(i)).collect();

    fleet.write(2, CRASHING, CANARY_THEN_ALL);
    let out = fleet.cli(&["apply", "--wait", "--timeout", "120s"]);
    let err = text(&out.stderr);
    assert_eq!(
        out.status.code(),
        Some(1),
        "apply --wait fails on a halt:\n{err}"
    );
    assert!(err.contains("halted"), "{err}");
    assert!(err.contains("rolled back"), "the reason says why: {err}");

    let r = fleet.rollout();
    assert_eq!(r["state"], "halted", "{r}");
    assert_eq!(r["stage"], 1, "it halted at the canary stage: {r}");
    let canary = r["stages"][0]["devices"][0]
        .as_str()
        .expect("canary")
        .to_owned();
    assert_eq!(r["stages"][0]["devices"].as_array().map(Vec::len), Some(1));
    let reason = r["reason"].as_str().unwrap_or_default();
    assert!(
        reason.contains(&canary) && reason.contains("maxFailures"),
        "{reason}"
    );

    // Every device runs revision 1 again (the canary by its own rollback) and is served it.
    wait_until(30, "every device back on revision 1", || {
        fleet.all_converged()
            && DEVICES
                .iter()
                .zip(&v1)
                .all(|(d, digest)| fleet.running(d) == *digest)
    });
    for (i, name) in DEVICES.iter().enumerate() {
        if *name == canary {
            // It took revision 2 and rolled back: the halt's reason is its report.
            assert!(
                reason.contains(&format!("{canary} rolled back")),
                "{reason}"
            );
        } else {
            assert_eq!(
                fleet.releases(i),
                releases_before[i],
                "{name} never received revision 2"
            );
            let report = &fleet.device(name)["report"];
            assert_eq!(report["runningRevision"], 1, "{report}");
            assert_eq!(report["state"], "running", "{report}");
        }
    }
    // `rollout status` shows it, and exits 1 for a halted rollout (for scripts).
    let out = fleet.cli(&["rollout", "status"]);
    assert_eq!(out.status.code(), Some(1));
    let status = text(&out.stdout);
    assert!(status.contains("rollout halted at stage 1/2"), "{status}");
    assert!(status.contains(&format!("reverted: {canary}")), "{status}");

    // A fixed release goes through every stage.
    fleet.write(3, GOOD, CANARY_THEN_ALL);
    let out = fleet.cli(&["apply", "--wait", "--timeout", "120s"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let r = fleet.rollout();
    assert_eq!(r["state"], "completed", "{r}");
    assert_eq!(r["revision"], 3, "{r}");
    assert_eq!(
        r["baseline"], 1,
        "it rolled out from the last completed revision: {r}"
    );
    assert!(fleet.all_converged());
    for name in DEVICES {
        assert_eq!(fleet.device(name)["report"]["runningRevision"], 3, "{name}");
    }
}

#[test]
fn pause_holds_resume_continues_and_abort_returns_everyone() {
    let fleet = Fleet::new();
    let slow = "rollout:\n  deadline: 30s\n  stages:\n    - { devices: 1, bake: 4s }\n    - { percent: 100, bake: 1s }\n";
    fleet.write(2, GOOD, slow);
    ok(&fleet.cli(&["apply"]));
    let paused = ok(&fleet.cli(&["rollout", "pause"]));
    assert!(paused.contains("rollout paused at stage 1/2"), "{paused}");
    let r = fleet.rollout();
    let canary = r["stages"][0]["devices"][0]
        .as_str()
        .expect("canary")
        .to_owned();
    let v1 = fleet.device("dev-a")["desiredDigest"].clone();
    wait_until(30, "the canary runs revision 2", || {
        fleet.device(&canary)["report"]["runningRevision"] == 2
    });
    // Held past the bake time: the stage does not advance, the others stay on revision 1.
    pause(5000);
    let r = fleet.rollout();
    assert_eq!(
        (r["state"].as_str(), r["stage"].as_u64()),
        (Some("paused"), Some(1)),
        "{r}"
    );
    for name in DEVICES.iter().filter(|d| **d != canary) {
        assert_eq!(fleet.device(name)["report"]["runningRevision"], 1, "{name}");
    }
    // They are held at the baseline, waiting for their stage: not "converged" on revision 2,
    // in `edgefn status` as in the console's fleet page (the same rule).
    let status = ok(&fleet.cli(&["status"]));
    for name in DEVICES {
        let line = status
            .lines()
            .find(|l| l.split_whitespace().next() == Some(name))
            .unwrap_or_else(|| panic!("{name} in:\n{status}"));
        let columns: Vec<&str> = line.split_whitespace().collect();
        if name == canary {
            assert_eq!(columns[1..4], ["2", "2", "running"], "{status}");
            assert!(line.contains("converged"), "{status}");
            assert_eq!(fleet.device(name)["held"], serde_json::Value::Null);
        } else {
            assert_eq!(columns[1..4], ["2", "1", "held"], "{status}");
            assert!(
                line.contains(
                    "held at revision 1: the rollout of revision 2 (paused) has not reached its stage yet"
                ) && !line.contains("converged"),
                "{status}"
            );
            assert_eq!(
                fleet.device(name)["held"],
                serde_json::json!({"revision": 1, "rolloutRevision": 2, "rollout": "paused"})
            );
        }
    }
    let page = fleet.get("/v1/status/page").json();
    assert_eq!(
        page["counts"]["held"].as_u64(),
        Some(DEVICES.len() as u64 - 1),
        "{page}"
    );
    let resumed = fleet.cli(&["rollout", "resume", "--wait", "--timeout", "60s"]);
    assert!(resumed.status.success(), "{}", text(&resumed.stderr));
    assert_eq!(fleet.rollout()["state"], "completed");
    // Resuming what has ended is refused with a clear error.
    let again = fleet.post("/v1/rollout/resume");
    assert_eq!(again.status, 409);
    assert!(
        again.json()["error"]["message"]
            .as_str()
            .unwrap_or_default()
            .contains("completed")
    );
    wait_until(30, "everyone on revision 2", || fleet.all_converged());
    let v2: Vec<serde_json::Value> = DEVICES
        .iter()
        .map(|d| fleet.device(d)["desiredDigest"].clone())
        .collect();
    assert_ne!(v1, v2[0]);

    // Abort: everyone, the canary too, back on revision 2.
    fleet.write(3, GOOD, slow);
    ok(&fleet.cli(&["apply"]));
    let r = fleet.rollout();
    let canary = r["stages"][0]["devices"][0]
        .as_str()
        .expect("canary")
        .to_owned();
    wait_until(30, "the canary runs revision 3", || {
        fleet.device(&canary)["report"]["runningRevision"] == 3
    });
    let out = fleet.cli(&["rollout", "abort"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let r = fleet.rollout();
    assert_eq!(r["state"], "aborted", "{r}");
    assert!(
        r["reason"]
            .as_str()
            .unwrap_or_default()
            .contains("back on revision 2"),
        "{r}"
    );
    wait_until(30, "everyone back on revision 2", || {
        fleet.all_converged()
            && DEVICES
                .iter()
                .zip(&v2)
                .all(|(d, digest)| fleet.device(d)["desiredDigest"] == *digest)
    });
    assert_eq!(fleet.post("/v1/rollout/abort").status, 409);
    // `edgefn diff` compares with what the devices run (revision 2), and says why, not "no
    // changes" against the aborted revision 3.
    let diff = fleet.cli(&["diff"]);
    let said = text(&diff.stdout);
    assert_eq!(diff.status.code(), Some(2), "{said}");
    assert!(
        said.contains("against revision 2")
            && said.contains("revision 3's rollout was aborted: the devices run revision 2")
            && !said.contains("no changes"),
        "{said}"
    );
    // The aborted revision never reached the fleet: applying the same commit again makes a
    // new revision that rolls out afresh, not "no changes".
    let out = ok(&fleet.cli(&["apply", "--output", "json"]));
    let applied: serde_json::Value = serde_json::from_str(&out).expect("json");
    assert_eq!(applied["created"], true, "{applied}");
    assert_eq!(applied["revision"], 4, "{applied}");
    let r = fleet.rollout();
    assert_eq!(
        (r["revision"].clone(), r["baseline"].clone()),
        (4.into(), 2.into()),
        "{r}"
    );
}

#[test]
fn a_rollout_survives_a_sigkill_of_the_control_plane_and_ends() {
    let mut fleet = Fleet::new();
    let rollout = "rollout:\n  deadline: 60s\n  stages:\n    - { devices: 1, bake: 2s }\n    - { devices: 2, bake: 2s }\n    - { percent: 100, bake: 1s }\n";
    fleet.write(2, GOOD, rollout);
    ok(&fleet.cli(&["apply"]));
    let before = fleet.rollout();
    let canary = before["stages"][0]["devices"][0]
        .as_str()
        .expect("canary")
        .to_owned();
    wait_until(30, "the canary runs revision 2", || {
        fleet.device(&canary)["report"]["runningRevision"] == 2
    });
    assert!(!before["state"].as_str().unwrap_or_default().is_empty());
    fleet.cloud.take().expect("cloud").kill();
    fleet.cloud = Some(Cloud::start_at(fleet.cloud_data.path(), &fleet.addr));
    let after = fleet.rollout();
    assert_eq!(after["revision"], 2, "{after}");
    assert_eq!(
        after["stages"], before["stages"],
        "the same stages after the restart"
    );
    let out = fleet.cli(&["rollout", "status", "--wait", "--timeout", "120s"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(fleet.rollout()["state"], "completed");
    wait_until(30, "everyone on revision 2", || {
        fleet.all_converged()
            && DEVICES
                .iter()
                .all(|d| fleet.device(d)["report"]["runningRevision"] == 2)
    });
}

/// A device that never reports halts its stage at the report deadline, with a reason naming
/// it; `--rollout none` skips the rollout and reaches every device at once.
#[test]
fn a_device_that_never_reports_halts_the_rollout_at_its_deadline() {
    let data = tempfile::tempdir().expect("data");
    let cloud = Cloud::start(data.path());
    let project = tempfile::tempdir().expect("project");
    write_daemon(project.path(), GOOD);
    let env = cloud.env();
    let env = [(env[0].0, env[0].1.as_str()), (env[1].0, env[1].1.as_str())];
    let apply = |v: u32, rollout: &str, args: &[&str]| {
        std::fs::write(project.path().join("edgefn.yaml"), manifest(v, rollout)).expect("write");
        let mut all = vec!["apply", "--allow-dirty"];
        all.extend_from_slice(args);
        edgefn_env(project.path(), &all, &env)
    };
    ok(&apply(1, "", &[]));
    let quick =
        "rollout:\n  deadline: 2s\n  stages:\n    - { devices: 1 }\n    - { percent: 100 }\n";
    let out = apply(2, quick, &["--wait", "--timeout", "60s"]);
    let err = text(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(
        err.contains("did not report revision 2 running within the deadline of 2s"),
        "{err}"
    );
    let r = http(
        &cloud.addr(),
        "GET",
        "/v1/rollout",
        Some(&cloud.admin),
        &[],
        b"",
    )
    .json();
    assert_eq!(r["state"], "halted", "{r}");
    let canary = r["stages"][0]["devices"][0].as_str().expect("canary");
    assert!(
        r["reason"].as_str().unwrap_or_default().contains(canary),
        "{r}"
    );

    // --rollout none: no rollout; `GET /v1/rollout` says revision 3 had none.
    let out = apply(3, quick, &["--rollout", "none"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let r = http(
        &cloud.addr(),
        "GET",
        "/v1/rollout",
        Some(&cloud.admin),
        &[],
        b"",
    );
    assert_eq!(r.status, 404);
    assert!(
        text(&r.body).contains("revision 3 has no rollout"),
        "{}",
        text(&r.body)
    );
}

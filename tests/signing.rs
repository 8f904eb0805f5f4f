//! End-to-end tests of signed revisions with the real `edgefn-cloud`, `edgefn` and
//! `edgefn-agent`: a revision applied with `edgefn apply --sign-key` runs on an agent that
//! trusts the key; the agent refuses, and keeps running its release, an unsigned state, one
//! byte of a stored revision changed in the control plane's store, a signature moved from
//! another device, a key it does not trust, and an older signed state replayed from a copy of
//! the control plane's data folder; a signed rollback runs. Bad input: a malformed key file, signatures that do not
//! match what the control plane computes.

#[path = "common/mod.rs"]
mod common;

use std::path::{Path, PathBuf};

use redb::{ReadableDatabase, ReadableTable};

use common::*;

const MAIN_PY: &str =
    "import os\n\ndef handle(event, context):\n    return {\"version\": os.environ[\"VERSION\"]}\n";

fn manifest(version: u32) -> String {
    format!(
        "apiVersion: edgefn/v1\nproject: signing-test\nfunctions:\n  work:\n    path: functions/work\n    runtime: python3\n    handler: main.handle\n    env: {{ VERSION: \"{version}\" }}\ndevices:\n  dev-a: {{}}\n  dev-b: {{}}\nbindings:\n  - function: work\n    devices: {{ names: [dev-a, dev-b] }}\n    triggers: [ {{ topic: \"jobs/#\" }} ]\n"
    )
}

/// A project in git, a control plane on a port it can come back on, device `dev-a` registered.
struct Fleet {
    project: tempfile::TempDir,
    cloud: Option<Cloud>,
    cloud_data: tempfile::TempDir,
    addr: String,
    agent_config: PathBuf,
}

impl Fleet {
    fn new() -> Fleet {
        let cloud_data = tempfile::tempdir().expect("data");
        let addr = format!("127.0.0.1:{}", server_port());
        let cloud = Cloud::start_at(cloud_data.path(), &addr);
        let project = tempfile::tempdir().expect("project");
        let dir = project.path().join("functions/work");
        std::fs::create_dir_all(&dir).expect("mkdir");
        std::fs::write(dir.join("main.py"), MAIN_PY).expect("write");
        std::fs::write(project.path().join(".gitignore"), "agent.yaml\n*.pem\n").expect("write");
        let agent_config = project.path().join("agent.yaml");
        let f = Fleet {
            project,
            cloud: Some(cloud),
            cloud_data,
            addr,
            agent_config,
        };
        ok(&f.cli(&[
            "device",
            "add",
            "dev-a",
            "--out",
            f.agent_config.to_str().expect("utf8"),
        ]));
        f
    }

    fn cloud(&self) -> &Cloud {
        self.cloud.as_ref().expect("the control plane runs")
    }

    fn cli(&self, args: &[&str]) -> std::process::Output {
        let env = self.cloud().env();
        edgefn_env(
            self.project.path(),
            args,
            &[(env[0].0, env[0].1.as_str()), (env[1].0, env[1].1.as_str())],
        )
    }

    /// Commits version `v` of the manifest and applies it with `extra` arguments.
    fn apply(&self, v: u32, extra: &[&str]) -> serde_json::Value {
        std::fs::write(self.project.path().join("edgefn.yaml"), manifest(v)).expect("write");
        if !self.project.path().join(".git").exists() {
            git(self.project.path(), &["init", "-q"]);
        }
        git(self.project.path(), &["add", "-A"]);
        git(
            self.project.path(),
            &["commit", "-q", "--allow-empty", "-m", &format!("v{v}")],
        );
        let mut args = vec!["apply", "--output", "json"];
        args.extend_from_slice(extra);
        serde_json::from_str(&ok(&self.cli(&args))).expect("json")
    }

    fn report(&self) -> serde_json::Value {
        let s = http(
            &self.cloud().addr(),
            "GET",
            "/v1/status",
            Some(&self.cloud().admin),
            &[],
            b"",
        )
        .json();
        s["devices"]
            .as_array()
            .expect("devices")
            .iter()
            .find(|d| d["name"] == "dev-a")
            .map(|d| d["report"].clone())
            .unwrap_or_default()
    }

    /// Waits for dev-a to report a refusal that contains `what`; returns the message.
    fn wait_for_refusal(&self, what: &str) -> String {
        let mut message = String::new();
        wait_until(30, &format!("dev-a refuses ({what})"), || {
            let r = self.report();
            message = r["message"].as_str().unwrap_or_default().to_owned();
            r["state"] == "failed" && message.contains(what)
        });
        message
    }

    /// Stops the control plane, runs `change` on its data folder, starts it again.
    fn with_cloud_stopped(&mut self, change: impl FnOnce(&Path)) {
        let status = self.cloud.take().expect("running").stop();
        assert!(
            status.success(),
            "the control plane stops cleanly: {status}"
        );
        change(self.cloud_data.path());
        self.cloud = Some(Cloud::start_at(self.cloud_data.path(), &self.addr));
    }
}

fn version_of(agent: &AgentProc) -> String {
    let r = agent.publish("jobs/one", &serde_json::json!({}));
    let d = r["deliveries"].as_array().expect("deliveries");
    assert_eq!(d.len(), 1, "one binding fires: {r}");
    d[0]["result"]["version"]
        .as_str()
        .unwrap_or_else(|| panic!("no result: {r}"))
        .to_owned()
}

const REVISIONS: redb::TableDefinition<u64, &[u8]> = redb::TableDefinition::new("revisions");

/// Changes revision `n` as the control plane stores it (JSON in its redb file), while it is
/// stopped: what someone with the control plane's disk could do.
fn edit_stored_revision(data: &Path, n: u64, edit: impl FnOnce(&mut Vec<u8>)) {
    let db = redb::Database::open(data.join("cloud.redb")).expect("open the store");
    let tx = db.begin_write().expect("write");
    {
        let mut t = tx.open_table(REVISIONS).expect("revisions");
        let mut bytes = t.get(n).expect("get").expect("revision").value().to_vec();
        edit(&mut bytes);
        t.insert(n, bytes.as_slice()).expect("insert");
    }
    tx.commit().expect("commit");
}

fn stored_revision(data: &Path, n: u64) -> Vec<u8> {
    let db = redb::Database::open(data.join("cloud.redb")).expect("open the store");
    let tx = db.begin_read().expect("read");
    let t = tx.open_table(REVISIONS).expect("revisions");
    t.get(n).expect("get").expect("revision").value().to_vec()
}

fn keygen(fleet: &Fleet, name: &str) -> (PathBuf, String) {
    let path = fleet.project.path().join(name);
    let out = fleet.cli(&["keygen", "--out", path.to_str().expect("utf8")]);
    let public = ok(&out).trim().to_owned();
    assert!(public.starts_with("ed25519:"), "{public}");
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(&path).expect("key").permissions().mode() & 0o777;
    assert_eq!(mode, 0o600, "the private key is 0600");
    (path, public)
}

#[test]
fn signed_revisions_run_and_unsigned_tampered_retargeted_untrusted_or_replayed_ones_are_refused() {
    let mut fleet = Fleet::new();
    let (key, public) = keygen(&fleet, "signing.pem");
    let key = key.to_str().expect("utf8").to_owned();
    let mut config = std::fs::read_to_string(&fleet.agent_config).expect("read");
    config.push_str(&format!(
        "healthWindow: 1s\npollWait: 5s\nreportInterval: 1s\ntrustedKeys:\n  - \"{public}\"\n"
    ));
    std::fs::write(&fleet.agent_config, config).expect("write");

    // A signed apply runs.
    let r1 = fleet.apply(1, &["--sign-key", &key]);
    assert_eq!(r1["revision"], 1);
    let data = tempfile::tempdir().expect("agent data");
    let agent = AgentProc::start(&fleet.agent_config, data.path(), &[]);
    wait_until(30, "signed revision 1 runs", || {
        fleet.report()["runningRevision"] == 1
    });
    assert_eq!(version_of(&agent), "1");

    // Unsigned: refused, and said; the release keeps serving.
    let r2 = fleet.apply(2, &[]);
    assert_eq!(r2["revision"], 2);
    let message = fleet.wait_for_refusal("not signed");
    assert!(message.contains("revision 2"), "{message}");
    assert_eq!(version_of(&agent), "1");
    let status = ok(&fleet.cli(&["status"]));
    assert!(
        status.contains("not signed"),
        "edgefn status shows why:\n{status}"
    );

    // The same manifest applied signed (through the environment, as CI does) is a new,
    // signed revision, and runs.
    let env = fleet.cloud().env();
    let out = edgefn_env(
        fleet.project.path(),
        &["apply", "--output", "json"],
        &[
            (env[0].0, env[0].1.as_str()),
            (env[1].0, env[1].1.as_str()),
            ("EDGEFN_SIGN_KEY_FILE", key.as_str()),
        ],
    );
    let r3: serde_json::Value = serde_json::from_str(&ok(&out)).expect("json");
    assert_eq!(r3["revision"], 3);
    wait_until(30, "signed revision 3 runs", || {
        fleet.report()["runningRevision"] == 3
    });
    assert_eq!(version_of(&agent), "2");

    // A copy of the control plane's data folder as it is now (revision 3), for the replay.
    let old = tempfile::tempdir().expect("copy");
    fleet.with_cloud_stopped(|d| copy_dir(d, old.path()));

    let r4 = fleet.apply(4, &["--sign-key", &key]);
    assert_eq!(r4["revision"], 4);
    wait_until(30, "signed revision 4 runs", || {
        fleet.report()["runningRevision"] == 4
    });
    assert_eq!(version_of(&agent), "4");

    // Signatures that do not match what the control plane computes: 422 naming the devices,
    // nothing committed.
    let rev4 = http(
        &fleet.cloud().addr(),
        "GET",
        "/v1/revisions/4",
        Some(&fleet.cloud().admin),
        &[],
        b"",
    )
    .json();
    let forged = serde_json::json!({
        "manifest": manifest(5),
        "bundles": rev4["bundles"],
        "expectedParent": 4,
        "signatures": rev4["signatures"],
    });
    let r = http(
        &fleet.cloud().addr(),
        "POST",
        "/v1/revisions",
        Some(&fleet.cloud().admin),
        &[("Content-Type", "application/json")],
        forged.to_string().as_bytes(),
    );
    assert_eq!(r.status, 422, "{}", text(&r.body));
    let body = r.json();
    assert_eq!(body["error"]["code"], "invalid_signatures", "{body}");
    let devices = body["error"]["details"]["devices"].to_string();
    assert!(
        devices.contains("dev-a") && devices.contains("dev-b"),
        "{body}"
    );

    // One byte of the stored revision changed (VERSION "4" → "9"): the state served no longer
    // matches its signature.
    let original = {
        let mut kept = Vec::new();
        fleet.with_cloud_stopped(|d| {
            kept = stored_revision(d, 4);
            edit_stored_revision(d, 4, |bytes| {
                // The manifest is a JSON string there: `VERSION: \"4\"`.
                let needle: &[u8] = b"VERSION: \\\"4";
                let at = bytes
                    .windows(needle.len())
                    .position(|w| w == needle)
                    .expect("the stored manifest holds VERSION");
                bytes[at + needle.len() - 1] = b'9';
            });
        });
        kept
    };
    let message = fleet.wait_for_refusal("signature does not match");
    assert!(message.contains("revision 4"), "{message}");
    assert_eq!(version_of(&agent), "4", "the release keeps serving");

    // Re-targeted: dev-b's signature served to dev-a (the stored revision otherwise intact).
    fleet.with_cloud_stopped(|d| {
        let mut rev: serde_json::Value = serde_json::from_slice(&original).expect("json");
        let b = rev["signatures"]["devices"]["dev-b"].clone();
        rev["signatures"]["devices"]["dev-a"] = b;
        let bytes = serde_json::to_vec(&rev).expect("json");
        edit_stored_revision(d, 4, |old| *old = bytes);
    });
    let message = fleet.wait_for_refusal("signature does not match");
    assert!(message.contains("another device"), "{message}");
    assert_eq!(version_of(&agent), "4");

    // Put back as it was: revision 4 is accepted again (already running).
    fleet.with_cloud_stopped(|d| edit_stored_revision(d, 4, |old| *old = original.clone()));
    wait_until(30, "dev-a runs revision 4 again, unrefused", || {
        let r = fleet.report();
        r["state"] == "running" && r["runningRevision"] == 4
    });

    // Signed by a key the agent does not trust.
    let (other, other_public) = keygen(&fleet, "other.pem");
    let r5 = fleet.apply(5, &["--sign-key", other.to_str().expect("utf8")]);
    assert_eq!(r5["revision"], 5);
    let message = fleet.wait_for_refusal("not in this agent's trustedKeys");
    assert!(message.contains(&other_public), "{message}");
    assert_eq!(version_of(&agent), "4");

    // Replayed: the control plane's data folder rolled back to the copy (revision 3, signed
    // with the trusted key, older than revision 4 which dev-a accepted).
    fleet.with_cloud_stopped(|d| {
        std::fs::remove_dir_all(d).expect("remove");
        copy_dir(old.path(), d);
    });
    let message = fleet.wait_for_refusal("older than revision 4");
    assert!(message.contains("revision 3"), "{message}");
    assert_eq!(version_of(&agent), "4", "the release keeps serving");

    // A signed rollback makes a new signed revision (4, on the restored store) and runs.
    let out = fleet.cli(&["rollback", "1", "--sign-key", &key, "--output", "json"]);
    let rolled: serde_json::Value = serde_json::from_str(&ok(&out)).expect("json");
    assert_eq!(rolled["revision"], 4, "{rolled}");
    wait_until(30, "the signed rollback runs", || {
        let r = fleet.report();
        r["state"] == "running" && r["runningRevision"] == 4
    });
    assert_eq!(version_of(&agent), "1");
    drop(agent);
}

#[test]
fn a_malformed_key_file_is_refused_naming_the_file_and_nothing_is_applied() {
    let fleet = Fleet::new();
    let bad = fleet.project.path().join("bad.pem");
    std::fs::write(&bad, "not a key\n").expect("write");
    std::fs::write(fleet.project.path().join("edgefn.yaml"), manifest(1)).expect("write");
    let out = fleet.cli(&[
        "apply",
        "--allow-dirty",
        "--sign-key",
        bad.to_str().expect("utf8"),
    ]);
    assert!(!out.status.success());
    // The report wraps at the terminal's width, and the temporary path's length moves the
    // breaks: compare the words.
    let err = text(&out.stderr);
    let flat = err
        .split_whitespace()
        .filter(|w| *w != "│")
        .collect::<Vec<_>>()
        .join(" ");
    assert!(
        flat.contains("bad.pem") && flat.contains("PRIVATE KEY") && flat.contains("edgefn keygen"),
        "{err}"
    );
    let missing = fleet.project.path().join("missing.pem");
    let out = fleet.cli(&["rollback", "--sign-key", missing.to_str().expect("utf8")]);
    assert!(!out.status.success());
    assert!(
        text(&out.stderr).contains("missing.pem"),
        "{}",
        text(&out.stderr)
    );
    let history = http(
        &fleet.cloud().addr(),
        "GET",
        "/v1/revisions",
        Some(&fleet.cloud().admin),
        &[],
        b"",
    )
    .json();
    assert_eq!(history, serde_json::json!([]), "nothing was applied");
    // keygen does not overwrite a key.
    let out = fleet.cli(&["keygen", "--out", bad.to_str().expect("utf8")]);
    assert!(!out.status.success());
    assert!(
        text(&out.stderr).contains("already exists"),
        "{}",
        text(&out.stderr)
    );
}

#[test]
fn a_malformed_trusted_key_stops_the_agent_with_where() {
    let fleet = Fleet::new();
    let mut config = std::fs::read_to_string(&fleet.agent_config).expect("read");
    config.push_str("trustedKeys:\n  - ed25519:tooshort\n");
    std::fs::write(&fleet.agent_config, &config).expect("write");
    let line = config.lines().count();
    let data = tempfile::tempdir().expect("data");
    let out = std::process::Command::new(sibling_bin("edgefn-agent"))
        .args([
            "--config",
            fleet.agent_config.to_str().expect("utf8"),
            "--data",
            data.path().to_str().expect("utf8"),
        ])
        .output()
        .expect("run the agent");
    assert!(!out.status.success());
    let err = text(&out.stderr);
    assert!(
        err.contains(&format!("agent.yaml:{line}:5: trustedKeys[0]"))
            && err.contains("ed25519:tooshort"),
        "{err}"
    );
}

/// `edgefn secret set` makes a revision the control plane cannot sign: it says so after a
/// signed revision, and a signed apply of the same manifest then makes a signed revision
/// (equal content, but the latest was unsigned) that pins the new version.
#[test]
fn after_a_signed_revision_the_control_plane_makes_no_unsigned_one_and_a_signed_apply_rolls_a_secret_out()
 {
    let fleet = Fleet::new();
    // The control plane creates its secrets key beside its data folder: removed at the end.
    struct RemoveOnDrop(PathBuf);
    impl Drop for RemoveOnDrop {
        fn drop(&mut self) {
            let _ = std::fs::remove_file(&self.0);
        }
    }
    let mut key_file = fleet.cloud_data.path().as_os_str().to_owned();
    key_file.push(".secret-key");
    let _key_file = RemoveOnDrop(PathBuf::from(key_file));
    let (key, _) = keygen(&fleet, "signing.pem");
    let key = key.to_str().expect("utf8").to_owned();
    let with_secret = manifest(1).replace(
        "    env: { VERSION: \"1\" }\n",
        "    env: { VERSION: \"1\" }\n    secrets: [api-key]\n",
    );
    std::fs::write(fleet.project.path().join("edgefn.yaml"), &with_secret).expect("write");
    let value = fleet.project.path().join("value.txt");
    std::fs::write(&value, "v1").expect("write");
    let v = value.to_str().expect("utf8");
    ok(&fleet.cli(&["secret", "set", "api-key", "--from-file", v]));
    let r1 = fleet.cli(&[
        "apply",
        "--allow-dirty",
        "--sign-key",
        &key,
        "--output",
        "json",
    ]);
    let r1: serde_json::Value = serde_json::from_str(&ok(&r1)).expect("json");
    assert_eq!(r1["revision"], 1);

    std::fs::write(&value, "v2").expect("write");
    let out = fleet.cli(&["secret", "set", "api-key", "--from-file", v]);
    let err = text(&out.stderr);
    assert!(out.status.success(), "{err}");
    assert!(
        err.contains("the latest revision is signed and the control plane cannot sign, so it made no revision")
            && err.contains("edgefn apply --sign-key"),
        "{err}"
    );
    let get = |n: u64| {
        http(
            &fleet.cloud().addr(),
            "GET",
            &format!("/v1/revisions/{n}"),
            Some(&fleet.cloud().admin),
            &[],
            b"",
        )
        .json()
    };
    assert_eq!(
        get(2)["error"]["code"],
        "not_found",
        "no unsigned revision 2"
    );
    // Nor does a bind (the console's, or the API's) or an unsigned rollback: refused, saying
    // how to make the change signed, and nothing committed.
    let admin = |method: &str, path: &str, body: &str| {
        http(
            &fleet.cloud().addr(),
            method,
            path,
            Some(&fleet.cloud().admin),
            &[("Content-Type", "application/json")],
            body.as_bytes(),
        )
    };
    let bind = admin(
        "POST",
        "/v1/bindings",
        r#"{"function": "work", "devices": {"names": ["dev-a"]}, "name": "work-again"}"#,
    );
    assert_eq!(bind.status, 409, "{}", text(&bind.body));
    assert_eq!(bind.json()["error"]["code"], "signing_required");
    let message = bind.json()["error"]["message"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    assert!(
        message.contains("revision 1 is signed")
            && message.contains("add the binding to edgefn.yaml")
            && message.contains("edgefn apply --sign-key FILE"),
        "{message}"
    );
    let rollback = admin("POST", "/v1/rollback", r#"{"to": 1}"#);
    assert_eq!(rollback.status, 409, "{}", text(&rollback.body));
    assert!(
        rollback.json()["error"]["message"]
            .as_str()
            .unwrap_or_default()
            .contains("edgefn rollback 1 --sign-key FILE"),
        "{}",
        text(&rollback.body)
    );
    assert_eq!(get(2)["error"]["code"], "not_found", "nothing committed");
    let r3 = fleet.cli(&[
        "apply",
        "--allow-dirty",
        "--sign-key",
        &key,
        "--output",
        "json",
    ]);
    let r3: serde_json::Value = serde_json::from_str(&ok(&r3)).expect("json");
    assert_eq!(r3["revision"], 2, "{r3}");
    let rev3 = get(2);
    assert_eq!(rev3["secrets"]["api-key"], 2, "{rev3}");
    assert!(rev3["signatures"]["devices"]["dev-a"].is_string(), "{rev3}");
    // Applied signed again, unchanged: nothing new.
    let again = fleet.cli(&[
        "apply",
        "--allow-dirty",
        "--sign-key",
        &key,
        "--output",
        "json",
    ]);
    let again: serde_json::Value = serde_json::from_str(&ok(&again)).expect("json");
    assert_eq!(again["revision"], 2, "{again}");
}

//! End-to-end tests of secrets with the real `edgefn-cloud`, `edgefn` and `edgefn-agent`: a
//! secret set with `edgefn secret set` reaches a function on a real agent as a file (process and
//! container sandboxes), a new value rolls out as a new revision, and the value is found nowhere
//! else in plain text: not in the control plane's or the agent's data folder, not in any API
//! answer or CLI output the test saw, not in any log. Bad input: secrets named but not set,
//! values too large or empty, bad names, devices asking for what their desired state does not
//! name, and a missing, malformed or wrong key file at the control plane's start.

#[path = "common/mod.rs"]
mod common;

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::Duration;

use common::*;

/// Reads both of its secrets from the folder `EDGEFN_SECRETS_DIR` names and answers with what
/// can be said of them without saying them: lengths and sha256 digests, whether any environment
/// variable holds one, and the folder's mode.
const READER_PY: &str = r#"import hashlib, os, stat

def handle(event, context):
    d = os.environ["EDGEFN_SECRETS_DIR"]
    out = {"dir": d, "files": sorted(os.listdir(d))}
    for name in ("db-password", "api-key"):
        with open(os.path.join(d, name), "rb") as f:
            v = f.read()
        out[name] = {"length": len(v), "sha256": hashlib.sha256(v).hexdigest(),
                     "inEnv": any(x.encode() == v or v in x.encode() for x in os.environ.values())}
    try:
        with open(os.path.join(d, "db-password"), "ab") as f:
            f.write(b"x")
        out["writable"] = True
    except OSError:
        out["writable"] = False
    return out
"#;

const MANIFEST: &str = "apiVersion: edgefn/v1\nproject: secrets-test\nfunctions:\n  reader:\n    path: functions/reader\n    runtime: python3\n    handler: main.handle\n    secrets: [db-password]\ndevices:\n  dev-a: {}\n  dev-b: {}\nbindings:\n  - function: reader\n    devices: { names: [dev-a] }\n    triggers: [ { topic: \"read/#\" } ]\n    secrets: [api-key]\n";

fn sha256_hex(v: &[u8]) -> String {
    use sha2::Digest;
    sha2::Sha256::digest(v)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// A value that is unmistakable when found: a fixed prefix and random hex.
fn distinct_value(label: &str) -> String {
    use std::hash::{BuildHasher, RandomState};
    let r = RandomState::new().hash_one((label, std::process::id()));
    format!("edgefn-test-{label}-{r:016x}")
}

/// `edgefn ARGS` with `stdin` as its standard input.
fn edgefn_stdin(dir: &Path, args: &[&str], env: &[(&str, &str)], stdin: &[u8]) -> Output {
    let home = tempfile::tempdir().expect("home");
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_edgefn"));
    cmd.args(args)
        .current_dir(dir)
        .env_clear()
        .env("HOME", home.path())
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .env("NO_COLOR", "1")
        // Messages on one line, for the assertions.
        .env("COLUMNS", "1000")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    for (k, v) in env {
        cmd.env(k, v);
    }
    let mut child = cmd.spawn().expect("run edgefn");
    // A command that refuses before it reads its input (a bad name, say) may close its end
    // first: that is not the test's failure.
    match child.stdin.take().expect("stdin").write_all(stdin) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => {}
        Err(e) => panic!("write stdin: {e}"),
    }
    child.wait_with_output().expect("wait")
}

/// Every file under `dir`, with its bytes.
fn files_under(dir: &Path) -> Vec<(PathBuf, Vec<u8>)> {
    let mut out = Vec::new();
    let Ok(entries) = std::fs::read_dir(dir) else {
        return out;
    };
    for e in entries.flatten() {
        let path = e.path();
        let Ok(meta) = std::fs::symlink_metadata(&path) else {
            continue;
        };
        if meta.is_dir() {
            out.extend(files_under(&path));
        } else if meta.is_file() {
            if let Ok(bytes) = std::fs::read(&path) {
                out.push((path, bytes));
            }
        }
    }
    out
}

fn contains(hay: &[u8], needle: &[u8]) -> bool {
    hay.windows(needle.len()).any(|w| w == needle)
}

/// What the test looks for: the value, and its hex and base64 spellings.
fn spellings(value: &str) -> Vec<Vec<u8>> {
    use base64::Engine as _;
    vec![
        value.as_bytes().to_vec(),
        value
            .bytes()
            .map(|b| format!("{b:02x}"))
            .collect::<String>()
            .into_bytes(),
        base64::engine::general_purpose::STANDARD
            .encode(value)
            .into_bytes(),
    ]
}

/// A project, a control plane (its key outside its data folder, its log in a file), device
/// `dev-a` registered, and everything the test saw, for the final search.
struct Setup {
    project: tempfile::TempDir,
    cloud: Option<Cloud>,
    cloud_data: tempfile::TempDir,
    key_dir: tempfile::TempDir,
    cloud_log: PathBuf,
    _logs: tempfile::TempDir,
    agent_config: PathBuf,
    /// Every API answer and CLI output the test saw.
    seen: Vec<(String, Vec<u8>)>,
}

impl Setup {
    fn new() -> Setup {
        let cloud_data = tempfile::tempdir().expect("data");
        let key_dir = tempfile::tempdir().expect("key dir");
        let logs = tempfile::tempdir().expect("logs");
        let cloud_log = logs.path().join("cloud.log");
        let key = key_dir.path().join("secret.key");
        let (cloud, _) = Cloud::start_logged(
            cloud_data.path(),
            &[
                "--mqtt-listen",
                "none",
                "--secret-key-file",
                key.to_str().expect("utf8"),
            ],
            &cloud_log,
        );
        let project = tempfile::tempdir().expect("project");
        let dir = project.path().join("functions/reader");
        std::fs::create_dir_all(&dir).expect("mkdir");
        std::fs::write(dir.join("main.py"), READER_PY).expect("write");
        std::fs::write(project.path().join("edgefn.yaml"), MANIFEST).expect("write");
        std::fs::write(
            project.path().join(".gitignore"),
            "agent*.yaml\nsecrets.local.yaml\n",
        )
        .expect("write");
        git(project.path(), &["init", "-q"]);
        git(project.path(), &["add", "-A"]);
        git(project.path(), &["commit", "-q", "-m", "reader"]);
        let agent_config = project.path().join("agent.yaml");
        let mut s = Setup {
            project,
            cloud: Some(cloud),
            cloud_data,
            key_dir,
            cloud_log,
            _logs: logs,
            agent_config,
            seen: Vec::new(),
        };
        let config = s.agent_config.to_str().expect("utf8").to_owned();
        s.cli_ok(&["device", "add", "dev-a", "--out", &config]);
        let mut text = std::fs::read_to_string(&s.agent_config).expect("read");
        text.push_str("healthWindow: 1s\npollWait: 5s\nreportInterval: 1s\n");
        std::fs::write(&s.agent_config, text).expect("write");
        s
    }

    fn cloud(&self) -> &Cloud {
        self.cloud.as_ref().expect("cloud")
    }

    fn env(&self) -> Vec<(&'static str, String)> {
        self.cloud().env().to_vec()
    }

    fn cli_stdin(&mut self, args: &[&str], stdin: &[u8]) -> Output {
        let env = self.env();
        let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
        let out = edgefn_stdin(self.project.path(), args, &env, stdin);
        self.seen.push((
            format!("edgefn {} (stdout)", args.join(" ")),
            out.stdout.clone(),
        ));
        self.seen.push((
            format!("edgefn {} (stderr)", args.join(" ")),
            out.stderr.clone(),
        ));
        out
    }

    fn cli(&mut self, args: &[&str]) -> Output {
        self.cli_stdin(args, b"")
    }

    fn cli_ok(&mut self, args: &[&str]) -> String {
        ok(&self.cli(args))
    }

    /// An admin request, kept for the final search.
    fn api(&mut self, method: &str, path: &str, body: &[u8]) -> Response {
        let cloud = self.cloud();
        let json: &[(&str, &str)] = if method == "POST" {
            &[("Content-Type", "application/json")]
        } else {
            &[]
        };
        let r = http(&cloud.addr(), method, path, Some(&cloud.admin), json, body);
        self.seen
            .push((format!("{method} {path} → {}", r.status), r.body.clone()));
        r
    }

    fn device_token(&self, device: &str) -> String {
        let config = if device == "dev-a" {
            self.agent_config.clone()
        } else {
            self.project.path().join(format!("agent-{device}.yaml"))
        };
        std::fs::read_to_string(config)
            .expect("agent config")
            .lines()
            .find_map(|l| l.strip_prefix("token: "))
            .expect("token line")
            .trim()
            .trim_matches('"')
            .to_owned()
    }

    fn device_get(&self, token: &str, path: &str) -> Response {
        http(&self.cloud().addr(), "GET", path, Some(token), &[], b"")
    }

    fn revisions(&mut self) -> Vec<serde_json::Value> {
        self.api("GET", "/v1/revisions", b"")
            .json()
            .as_array()
            .cloned()
            .unwrap_or_default()
    }

    fn converged(&mut self) -> bool {
        let s = self.api("GET", "/v1/status", b"").json();
        s["devices"]
            .as_array()
            .expect("devices")
            .iter()
            .any(|d| d["name"] == "dev-a" && d["converged"] == true)
    }

    /// Asserts that no spelling of any of `values` is in anything the test saw, the control
    /// plane's data folder, the agent's data folder or any log.
    fn assert_nowhere(&self, values: &[&str], agent_data: &Path, agent_log: &str) {
        let mut places: Vec<(String, Vec<u8>)> = self.seen.clone();
        for (path, bytes) in files_under(self.cloud_data.path()) {
            places.push((format!("cloud data {}", path.display()), bytes));
        }
        for (path, bytes) in files_under(agent_data) {
            places.push((format!("agent data {}", path.display()), bytes));
        }
        places.push((
            "the control plane's log".into(),
            std::fs::read(&self.cloud_log).expect("cloud log"),
        ));
        places.push(("the agent's log".into(), agent_log.as_bytes().to_vec()));
        assert!(
            places.iter().any(|(_, b)| contains(b, b"db-password")),
            "the search covers places that name the secret"
        );
        for v in values {
            for spelling in spellings(v) {
                for (place, bytes) in &places {
                    assert!(
                        !contains(bytes, &spelling),
                        "the value of a secret ({}) is in {place}",
                        String::from_utf8_lossy(&spelling)
                    );
                }
            }
        }
    }
}

fn read_secrets(agent: &AgentProc) -> serde_json::Value {
    let r = agent.publish("read/now", &serde_json::json!({}));
    let d = r["deliveries"].as_array().expect("deliveries");
    assert_eq!(d.len(), 1, "one binding fires: {r}");
    d[0]["result"].clone()
}

fn a_secret_reaches_a_function_as_a_file_and_nowhere_else(sandbox: &str) {
    let mut s = Setup::new();
    let db1 = distinct_value("db1");
    let db2 = distinct_value("db2");
    let api = distinct_value("api");

    // Named but never set: apply refuses, lists every missing one, and uploads nothing.
    let out = s.cli(&["apply"]);
    assert!(!out.status.success());
    let err = text(&out.stderr);
    assert!(err.contains("`api-key` (used by binding/reader)"), "{err}");
    assert!(
        err.contains("`db-password` (used by function/reader)"),
        "{err}"
    );
    assert!(err.contains("edgefn secret set"), "{err}");
    assert!(s.revisions().is_empty(), "no revision");
    assert_eq!(
        files_under(&s.cloud_data.path().join("bundles")).len(),
        0,
        "no bundle uploaded"
    );

    // Bad values and names, refused before sending.
    let out = s.cli_stdin(&["secret", "set", "db-password"], b"");
    assert!(!out.status.success());
    assert!(
        text(&out.stderr).contains("is empty"),
        "{}",
        text(&out.stderr)
    );
    let big = s.project.path().join("big.bin");
    std::fs::write(&big, vec![b'x'; 64 * 1024 + 1]).expect("write");
    let out = s.cli(&[
        "secret",
        "set",
        "db-password",
        "--from-file",
        big.to_str().expect("utf8"),
    ]);
    assert!(!out.status.success());
    assert!(
        text(&out.stderr).contains("more than 65536 bytes"),
        "{}",
        text(&out.stderr)
    );
    let out = s.cli_stdin(&["secret", "set", "DB Password"], b"v");
    assert!(!out.status.success());
    assert!(
        text(&out.stderr).contains("not a valid secret name"),
        "{}",
        text(&out.stderr)
    );
    assert!(text(&out.stderr).contains("db-password"), "suggests a name");
    // And by the control plane itself.
    let r = s.api("PUT", "/v1/secrets/db-password", &vec![b'x'; 64 * 1024 + 1]);
    assert_eq!(
        (r.status, r.json()["error"]["code"].clone()),
        (413, "secret_too_large".into())
    );
    let r = s.api("PUT", "/v1/secrets/db-password", b"");
    assert_eq!(
        (r.status, r.json()["error"]["code"].clone()),
        (400, "invalid_secret".into())
    );
    let r = s.api("PUT", "/v1/secrets/Bad.Name", b"v");
    assert_eq!(
        (r.status, r.json()["error"]["code"].clone()),
        (400, "invalid_secret".into())
    );
    assert_eq!(
        s.api("GET", "/v1/secrets", b"").json(),
        serde_json::json!([])
    );
    // The cloud refuses a revision naming unset secrets too (422, all listed).
    let r = s.api(
        "POST",
        "/v1/revisions",
        serde_json::json!({"manifest": MANIFEST, "bundles": {"reader": "0".repeat(64)}})
            .to_string()
            .as_bytes(),
    );
    assert_eq!(r.status, 422, "{}", text(&r.body));
    assert_eq!(r.json()["error"]["code"], "secret_not_set");
    assert_eq!(
        r.json()["error"]["details"]["missing"],
        serde_json::json!(["api-key", "db-password"])
    );

    // Set: from stdin (one trailing newline dropped) and from a file (as is).
    let out = s.cli_stdin(
        &["secret", "set", "db-password"],
        format!("{db1}\n").as_bytes(),
    );
    ok(&out);
    let api_file = s.project.path().join("api.txt");
    std::fs::write(&api_file, &api).expect("write");
    s.cli_ok(&[
        "secret",
        "set",
        "api-key",
        "--from-file",
        api_file.to_str().expect("utf8"),
    ]);
    std::fs::remove_file(&api_file).expect("rm");
    std::fs::remove_file(&big).expect("rm");
    git(s.project.path(), &["status", "--short"]);

    // Apply, and a real agent runs it with the secrets in memory.
    let shm = tempfile::tempdir_in("/dev/shm").expect("a memory file system at /dev/shm");
    let secrets_dir = shm.path().join("secrets");
    let mut config = std::fs::read_to_string(&s.agent_config).expect("read");
    config.push_str(&format!("secretsDir: {}\n", secrets_dir.display()));
    std::fs::write(&s.agent_config, config).expect("write");
    let agent_data = tempfile::tempdir().expect("agent data");
    let agent = AgentProc::start_in(&s.agent_config, agent_data.path(), &[], sandbox);
    s.cli_ok(&["apply", "--wait", "--timeout", "60s"]);
    let got = read_secrets(&agent);
    assert_eq!(got["db-password"]["length"], db1.len(), "{got}");
    assert_eq!(
        got["db-password"]["sha256"],
        sha256_hex(db1.as_bytes()),
        "{got}"
    );
    assert_eq!(
        got["api-key"]["sha256"],
        sha256_hex(api.as_bytes()),
        "{got}"
    );
    assert_eq!(
        got["db-password"]["inEnv"], false,
        "never in the environment: {got}"
    );
    assert_eq!(
        got["files"],
        serde_json::json!(["api-key", "db-password"]),
        "{got}"
    );
    if sandbox == "container" {
        // Read-only even to root inside: a read-only bind mount.
        assert_eq!(got["writable"], false, "read-only: {got}");
        assert_eq!(got["dir"], "/run/secrets", "{got}");
    } else {
        let dir = PathBuf::from(got["dir"].as_str().expect("dir"));
        assert!(dir.starts_with(&secrets_dir), "{got}");
        use std::os::unix::fs::PermissionsExt;
        let mode = |p: &Path| std::fs::metadata(p).expect("meta").permissions().mode() & 0o777;
        assert_eq!(mode(&secrets_dir), 0o700);
        assert_eq!(mode(&dir.join("db-password")), 0o400);
    }

    // A new value is a rollout: a new revision from `secret set`, and the function sees it.
    let before = s.revisions().len();
    let out = s.cli_stdin(
        &["secret", "set", "db-password", "--wait", "--timeout", "60s"],
        db2.as_bytes(),
    );
    ok(&out);
    assert!(
        text(&out.stderr).contains("rolls it out"),
        "{}",
        text(&out.stderr)
    );
    let revisions = s.revisions();
    assert_eq!(revisions.len(), before + 1, "one new revision");
    assert!(
        revisions[0]["provenance"]["message"]
            .as_str()
            .is_some_and(|m| m.starts_with("secret set db-password")),
        "{}",
        revisions[0]
    );
    wait_until(30, "dev-a converges", || s.converged());
    let got = read_secrets(&agent);
    assert_eq!(
        got["db-password"]["sha256"],
        sha256_hex(db2.as_bytes()),
        "{got}"
    );

    // Who may fetch a value: only dev-a, only what its desired state names, only that version.
    let dev_a = s.device_token("dev-a");
    let list = s.api("GET", "/v1/secrets", b"").json();
    let version = list
        .as_array()
        .expect("list")
        .iter()
        .find(|x| x["name"] == "db-password")
        .expect("db-password listed")["version"]
        .as_u64()
        .expect("version");
    let r = s.device_get(
        &dev_a,
        &format!("/v1/devices/dev-a/secrets/db-password?version={version}"),
    );
    assert_eq!(r.status, 200);
    assert_eq!(r.body, db2.as_bytes(), "the device's own, named secret");
    assert_eq!(r.header("cache-control"), Some("no-store"));
    let r = s.device_get(
        &dev_a,
        &format!(
            "/v1/devices/dev-a/secrets/db-password?version={}",
            version + 1
        ),
    );
    assert_eq!(r.status, 404, "a version its desired state does not name");
    s.cli_stdin(&["secret", "set", "unused"], b"not-for-devices");
    let r = s.device_get(&dev_a, "/v1/devices/dev-a/secrets/unused");
    assert_eq!(r.status, 404, "a secret its desired state does not name");
    let b_config = s.project.path().join("agent-dev-b.yaml");
    s.cli_ok(&[
        "device",
        "add",
        "dev-b",
        "--out",
        b_config.to_str().expect("utf8"),
    ]);
    let dev_b = s.device_token("dev-b");
    let r = s.device_get(&dev_b, "/v1/devices/dev-a/secrets/db-password");
    assert_eq!(r.status, 403, "another device's secret");
    let r = s.device_get(&dev_b, "/v1/devices/dev-b/secrets/db-password");
    assert_eq!(
        r.status, 404,
        "a secret dev-b's desired state does not name"
    );
    let r = s.api("GET", "/v1/devices/dev-a/secrets/db-password", b"");
    assert_eq!(r.status, 403, "never to an admin token");
    // Removing a secret in use is refused.
    let r = s.api("DELETE", "/v1/secrets/db-password", b"");
    assert_eq!(
        (r.status, r.json()["error"]["code"].clone()),
        (409, "secret_in_use".into())
    );
    assert_eq!(s.api("DELETE", "/v1/secrets/unused", b"").status, 204);

    // What people and scripts see: names, versions, users; never a value.
    let listed = s.cli_ok(&["secret", "list"]);
    assert!(listed.contains("db-password"), "{listed}");
    assert!(listed.contains("function/reader"), "{listed}");
    assert!(listed.contains("binding/reader"), "{listed}");
    s.cli_ok(&["secret", "list", "--output", "json"]);
    s.cli(&["status"]);
    s.cli(&["history"]);
    s.cli(&["diff"]);
    for r in s.revisions() {
        let n = r["number"].as_u64().expect("number");
        let one = s.api("GET", &format!("/v1/revisions/{n}"), b"").json();
        assert!(one.get("secrets").is_some(), "the versions it pins: {one}");
    }
    s.api("GET", "/v1/status", b"");
    s.api("GET", "/metrics", b"");
    let desired = s.device_get(&dev_a, "/v1/devices/dev-a/desired");
    s.seen.push(("desired".into(), desired.body.clone()));
    let binding = &desired.json()["state"]["bindings"][0];
    assert_eq!(binding["secrets"]["db-password"], version, "{binding}");

    let log = agent.log.lock().expect("log").clone();
    drop(agent);
    // Stopped: the control plane's store and log are complete.
    if let Some(c) = s.cloud.take() {
        c.stop();
    }
    s.assert_nowhere(&[&db1, &db2, &api], agent_data.path(), &log);
    assert!(
        !s.key_dir
            .path()
            .join("secret.key")
            .starts_with(s.cloud_data.path()),
        "the key is outside the data folder"
    );
}

#[test]
fn a_secret_reaches_a_function_as_a_file_and_nowhere_else_in_the_process_sandbox() {
    a_secret_reaches_a_function_as_a_file_and_nowhere_else("process");
}

#[test]
#[allow(clippy::print_stdout)] // the skip reason is for whoever reads the test output
fn a_secret_reaches_a_function_as_a_file_and_nowhere_else_in_the_container_sandbox() {
    let root = std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("Uid:"))
                .map(|l| l.split_whitespace().nth(1) == Some("0"))
        })
        .unwrap_or(false);
    if !root
        || !(Path::new("/sys/fs/cgroup/memory").is_dir()
            || Path::new("/sys/fs/cgroup/cgroup.controllers").exists())
    {
        println!("skipped: container tests need root and a cgroup memory controller");
        return;
    }
    a_secret_reaches_a_function_as_a_file_and_nowhere_else("container");
}

/// `edgefn-cloud` run to its end (it fails at start in these cases).
fn cloud_start_fails(data: &Path, key: &Path) -> String {
    let out = Command::new(sibling_bin("edgefn-cloud"))
        .args([
            "--data",
            data.to_str().expect("utf8"),
            "--listen",
            "127.0.0.1:0",
            "--mqtt-listen",
            "none",
            "--admin-token-file",
            data.join("admin.token").to_str().expect("utf8"),
            "--secret-key-file",
            key.to_str().expect("utf8"),
        ])
        .env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .stdin(Stdio::null())
        .output()
        .expect("run edgefn-cloud");
    assert!(
        !out.status.success(),
        "refused to start: {}",
        text(&out.stdout)
    );
    text(&out.stderr)
}

#[test]
fn a_missing_malformed_or_wrong_key_stops_the_control_plane_with_a_clear_error() {
    let data = tempfile::tempdir().expect("data");
    let keys = tempfile::tempdir().expect("keys");
    let key = keys.path().join("secret.key");
    let (cloud, _) = Cloud::start_with(
        data.path(),
        &[
            "--mqtt-listen",
            "none",
            "--secret-key-file",
            key.to_str().expect("utf8"),
        ],
    );
    // No key before the first secret; then one, 0600.
    assert!(!key.exists(), "created on first use");
    let r = http(
        &cloud.addr(),
        "PUT",
        "/v1/secrets/db-password",
        Some(&cloud.admin),
        &[],
        b"v1",
    );
    assert_eq!(r.status, 201, "{}", text(&r.body));
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(
        std::fs::metadata(&key).expect("key").permissions().mode() & 0o777,
        0o600
    );
    cloud.stop();

    // Missing.
    let gone = keys.path().join("elsewhere.key");
    let err = cloud_start_fails(data.path(), &gone);
    assert!(
        err.contains("does not exist") && err.contains("holds secrets"),
        "{err}"
    );
    // Malformed.
    let bad = keys.path().join("bad.key");
    std::fs::write(&bad, "not a key\n").expect("write");
    let err = cloud_start_fails(data.path(), &bad);
    assert!(err.contains("does not hold a key"), "{err}");
    // Another key: a valid one, but not the one the store was sealed with.
    let other = keys.path().join("other.key");
    std::fs::write(&other, format!("{}\n", "ab".repeat(32))).expect("write");
    let err = cloud_start_fails(data.path(), &other);
    assert!(err.contains("different key"), "{err}");
    // Inside the data folder, which is backed up with the data.
    let inside = data.path().join("secret.key");
    std::fs::copy(&key, &inside).expect("copy");
    let err = cloud_start_fails(data.path(), &inside);
    assert!(err.contains("inside the data folder"), "{err}");

    // The right key still opens it all, and a device is served nothing it was not given.
    let (cloud, _) = Cloud::start_with(
        data.path(),
        &[
            "--mqtt-listen",
            "none",
            "--secret-key-file",
            key.to_str().expect("utf8"),
        ],
    );
    let list = http(
        &cloud.addr(),
        "GET",
        "/v1/secrets",
        Some(&cloud.admin),
        &[],
        b"",
    )
    .json();
    assert_eq!(list[0]["name"], "db-password");
    assert_eq!(list[0]["version"], 1);
}

/// A rollback runs with the secret versions its revision pinned, while the control plane keeps
/// them (the last five); past that it is refused with a code saying so. Versions are never
/// reused, even after a removal.
/// The values live as long as the agent runs: a clean stop (SIGTERM) removes the folders it
/// wrote on /dev/shm; after a SIGKILL the next start on the same data folder removes what the
/// killed run left, and fetches what its release names again.
#[test]
fn the_agent_removes_its_secrets_when_it_stops_and_what_a_killed_run_left_when_it_starts() {
    let mut s = Setup::new();
    ok(&s.cli_stdin(&["secret", "set", "db-password"], b"one"));
    ok(&s.cli_stdin(&["secret", "set", "api-key"], b"key"));
    s.cli_ok(&["apply"]);
    let data = tempfile::tempdir().expect("agent data");
    let root = agent_secrets_root(data.path());
    let folders = |root: &Path| -> Vec<String> {
        let mut names: Vec<String> = std::fs::read_dir(root)
            .map(|d| {
                d.flatten()
                    .map(|e| e.file_name().to_string_lossy().into_owned())
                    .collect()
            })
            .unwrap_or_default();
        names.sort();
        names
    };

    let agent = AgentProc::start(&s.agent_config, data.path(), &[]);
    wait_until(60, "dev-a converges", || s.converged());
    assert_eq!(
        read_secrets(&agent)["db-password"]["sha256"],
        sha256_hex(b"one")
    );
    let running = folders(&root);
    assert_eq!(running.len(), 1, "one binding's folder: {running:?}");
    assert!(agent.stop(Duration::from_secs(30)).success());
    assert!(!root.exists(), "a clean stop removes {}", root.display());

    // SIGKILL: the folder stays behind, with one an older version left (a run killed mid-way).
    let agent = AgentProc::start(&s.agent_config, data.path(), &[]);
    wait_until(60, "the agent fetches its secrets again", || {
        folders(&root) == running
    });
    agent.kill();
    let stale = root.join("reader-0123456789ab");
    std::fs::create_dir(&stale).expect("mkdir");
    std::fs::write(stale.join("db-password"), "old").expect("write");
    assert_eq!(folders(&root).len(), 2);
    let agent = AgentProc::start(&s.agent_config, data.path(), &[]);
    wait_until(30, "the start removes what the killed run left", || {
        !stale.exists()
    });
    wait_until(60, "the agent fetches its secrets again", || {
        folders(&root) == running
    });
    assert_eq!(
        read_secrets(&agent)["db-password"]["sha256"],
        sha256_hex(b"one")
    );
    assert_eq!(folders(&root), running, "its own folder is fetched again");
    assert!(agent.stop(Duration::from_secs(30)).success());
    assert!(!root.exists());
}

#[test]
fn a_rollback_pins_the_versions_it_ran_with_while_they_are_kept() {
    let mut s = Setup::new();
    let pins = |s: &mut Setup, n: u64| {
        s.api("GET", &format!("/v1/revisions/{n}"), b"").json()["secrets"].clone()
    };
    ok(&s.cli_stdin(&["secret", "set", "db-password"], b"one"));
    ok(&s.cli_stdin(&["secret", "set", "api-key"], b"key"));
    s.cli_ok(&["apply"]);
    assert_eq!(
        pins(&mut s, 1),
        serde_json::json!({"api-key": 1, "db-password": 1})
    );
    ok(&s.cli_stdin(&["secret", "set", "db-password"], b"two"));
    assert_eq!(
        pins(&mut s, 2),
        serde_json::json!({"api-key": 1, "db-password": 2})
    );
    // Applying again changes nothing: the same manifest, bundles and versions.
    let out = s.cli(&["apply"]);
    assert!(
        text(&out.stderr).contains("no changes"),
        "{}",
        text(&out.stderr)
    );
    // A device that reports running revision 1 (rolled back on its own) may still fetch what
    // revision 1 named for it; the latest names version 2.
    let dev_a = s.device_token("dev-a");
    let path = "/v1/devices/dev-a/secrets/db-password?version=1";
    assert_eq!(
        s.device_get(&dev_a, path).status,
        404,
        "not what it runs yet"
    );
    let report = serde_json::json!({"runningRevision": 1, "state": "running", "functions": []});
    let r = http(
        &s.cloud().addr(),
        "POST",
        "/v1/devices/dev-a/status",
        Some(&dev_a),
        &[("Content-Type", "application/json")],
        report.to_string().as_bytes(),
    );
    assert!(r.status < 300, "{}", text(&r.body));
    let r = s.device_get(&dev_a, path);
    assert_eq!((r.status, r.body.as_slice()), (200, &b"one"[..]));
    assert_eq!(
        s.device_get(&dev_a, "/v1/devices/dev-a/secrets/db-password?version=2")
            .body,
        b"two"
    );
    s.cli_ok(&["rollback", "1"]);
    assert_eq!(
        pins(&mut s, 3),
        serde_json::json!({"api-key": 1, "db-password": 1})
    );
    // What was rolled back is the new value (revision 2, made by the control plane from the
    // same commit): applying that commit again would bring it back, so it is refused.
    let out = s.cli(&["apply"]);
    let err = text(&out.stderr);
    assert!(
        !out.status.success() && err.contains("rolled back") && err.contains("--force"),
        "{err}"
    );
    assert_eq!(
        s.api("GET", "/v1/revisions?limit=1", b"").json()[0]["number"],
        3,
        "nothing applied"
    );
    for v in 3..=7 {
        ok(&s.cli_stdin(
            &["secret", "set", "db-password"],
            format!("v{v}").as_bytes(),
        ));
    }
    let listed = s.api("GET", "/v1/secrets", b"").json();
    let db = listed
        .as_array()
        .expect("list")
        .iter()
        .find(|x| x["name"] == "db-password")
        .cloned()
        .expect("listed");
    assert_eq!(
        db["versions"],
        serde_json::json!([3, 4, 5, 6, 7]),
        "the last five kept"
    );
    let out = s.cli(&["rollback", "1"]);
    assert!(!out.status.success());
    let err = text(&out.stderr);
    assert!(
        err.contains("db-password@1") && err.contains("no longer kept"),
        "{err}"
    );

    // Removed, then set again: the next version number, never an old one.
    ok(&s.cli_stdin(&["secret", "set", "spare"], b"a"));
    s.cli_ok(&["secret", "rm", "spare"]);
    let out = s.cli(&["secret", "rm", "spare"]);
    assert!(
        !out.status.success(),
        "already removed: {}",
        text(&out.stderr)
    );
    let set: serde_json::Value = serde_json::from_str(&ok(
        &s.cli_stdin(&["secret", "set", "spare", "--output", "json"], b"b")
    ))
    .expect("json");
    assert_eq!(set["version"], 2);
}

/// `edgefn test` and `edgefn invoke` hand a function the local values of its secrets, from the
/// git-ignored `secrets.local.yaml`, as files; a value the file lacks is an error naming the
/// file. `edgefn init` lists the file in `.gitignore`.
#[test]
fn edgefn_test_reads_local_values_from_the_git_ignored_file() {
    let tmp = tempfile::tempdir().expect("tmp");
    let out = edgefn_stdin(tmp.path(), &["init", "demo"], &[], b"");
    ok(&out);
    let project = tmp.path().join("demo");
    let gitignore = std::fs::read_to_string(project.join(".gitignore")).expect("gitignore");
    assert!(
        gitignore.lines().any(|l| l == "secrets.local.yaml"),
        "{gitignore}"
    );

    let dir = project.join("functions/reader");
    std::fs::create_dir_all(dir.join("tests")).expect("mkdir");
    std::fs::write(
        dir.join("main.py"),
        "import hashlib, os\n\ndef handle(event, context):\n    d = os.environ[\"EDGEFN_SECRETS_DIR\"]\n    with open(os.path.join(d, \"db-password\"), \"rb\") as f:\n        v = f.read()\n    return {\"files\": sorted(os.listdir(d)), \"db\": hashlib.sha256(v).hexdigest()}\n",
    )
    .expect("write");
    std::fs::write(
        dir.join("tests/reads.yaml"),
        format!(
            "trigger: {{ topic: read/now, payload: {{}} }}\nexpect:\n  result:\n    files: [api-key, db-password]\n    db: \"{}\"\n",
            sha256_hex(b"local-db")
        ),
    )
    .expect("write");
    std::fs::write(project.join("edgefn.yaml"), MANIFEST).expect("write");
    let run = |args: &[&str]| edgefn_stdin(&project, args, &[], b"");

    // No local values: the error names every missing secret and the file to add them to.
    let out = run(&["test"]);
    assert!(!out.status.success());
    let err = text(&out.stderr);
    let flat = err
        .split_whitespace()
        .filter(|w| *w != "│")
        .collect::<Vec<_>>()
        .join(" ");
    assert!(
        flat.contains("secret `api-key`")
            && flat.contains("secret `db-password`")
            && flat.contains("secrets.local.yaml"),
        "{err}"
    );

    // With them: the function reads them as files, as on a device.
    std::fs::write(
        project.join("secrets.local.yaml"),
        "db-password: local-db\napi-key: \"local-key\"\n",
    )
    .expect("write");
    ok(&run(&["test"]));
    let out = ok(&run(&[
        "invoke", "reader", "--topic", "read/now", "--event", "{}",
    ]));
    assert!(out.contains(&sha256_hex(b"local-db")), "{out}");
    assert!(
        !out.contains("local-key"),
        "the value is not printed: {out}"
    );

    // A bad entry is an error with its line.
    std::fs::write(
        project.join("secrets.local.yaml"),
        "db-password: ok\nBad Name: x\n",
    )
    .expect("write");
    let err = text(&run(&["test"]).stderr);
    assert!(
        err.contains("secrets.local.yaml:2") && err.contains("Bad Name"),
        "{err}"
    );
}

/// `edgefn dev` sets the local values on its own control plane and its agents hand them to the
/// function as files; without a local value it stops at once and names the file.
#[test]
fn edgefn_dev_runs_functions_with_their_local_values() {
    let tmp = tempfile::tempdir().expect("tmp");
    let project = tmp.path();
    let dir = project.join("functions/reader");
    std::fs::create_dir_all(&dir).expect("mkdir");
    std::fs::write(dir.join("main.py"), READER_PY).expect("write");
    std::fs::write(project.join("edgefn.yaml"), MANIFEST).expect("write");

    let out = edgefn_stdin(project, &["dev", ".", "--sandbox", "process"], &[], b"");
    assert!(!out.status.success());
    let err = text(&out.stderr);
    assert!(
        err.contains("secrets.local.yaml") && err.contains("api-key"),
        "{err}"
    );

    std::fs::write(
        project.join("secrets.local.yaml"),
        "db-password: dev-db\napi-key: dev-key\n",
    )
    .expect("write");
    let home = tempfile::tempdir().expect("home");
    let mut child = Command::new(env!("CARGO_BIN_EXE_edgefn"))
        .args(["dev", ".", "--sandbox", "process"])
        .current_dir(project)
        .env_clear()
        .env("HOME", home.path())
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .env("NO_COLOR", "1")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn edgefn dev");
    struct Killed(std::process::Child);
    impl Drop for Killed {
        fn drop(&mut self) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
    let stdout = child.stdout.take().expect("stdout");
    let _dev = Killed(child);
    let lines = std::sync::Arc::new(std::sync::Mutex::new(Vec::<String>::new()));
    let keep = lines.clone();
    std::thread::spawn(move || {
        use std::io::BufRead;
        for l in std::io::BufReader::new(stdout)
            .lines()
            .map_while(Result::ok)
        {
            keep.lock().expect("lock").push(l);
        }
    });
    let has = |needle: &str| {
        lines
            .lock()
            .expect("lock")
            .iter()
            .any(|l| l.contains(needle))
    };
    wait_until(60, "edgefn dev watches", || has("Watching for changes"));
    let endpoint = lines
        .lock()
        .expect("lock")
        .iter()
        .find(|l| l.trim_start().starts_with("agent dev-a "))
        .and_then(|l| l.split("http://").nth(1))
        .and_then(|r| r.split_whitespace().next())
        .expect("dev-a's endpoint")
        .to_owned();
    let r = http(
        &endpoint,
        "POST",
        "/v1/publish?topic=read/now&wait=true",
        None,
        &[("Content-Type", "application/json")],
        b"{}",
    );
    let got = &r.json()["deliveries"][0]["result"];
    assert_eq!(got["db-password"]["sha256"], sha256_hex(b"dev-db"), "{got}");
    assert_eq!(got["api-key"]["sha256"], sha256_hex(b"dev-key"), "{got}");
    let out = lines.lock().expect("lock").join("\n");
    assert!(!out.contains("dev-db") && !out.contains("dev-key"), "{out}");
    // Stopped, it removes the folders that held them.
    let pid = _dev.0.id();
    let ours = |e: &std::fs::DirEntry| {
        e.file_name()
            .to_string_lossy()
            .starts_with(&format!("edgefn-dev-{pid}-"))
    };
    assert!(
        std::fs::read_dir("/dev/shm").is_ok_and(|d| d.flatten().any(|e| ours(&e))),
        "the values are kept on /dev/shm while it runs"
    );
    let _ = Command::new("kill")
        .args(["-TERM", &pid.to_string()])
        .status();
    wait_until(30, "edgefn dev stops", || {
        std::fs::read_dir("/dev/shm").is_ok_and(|d| !d.flatten().any(|e| ours(&e)))
    });
}

/// A new value that breaks the function is rolled back like any release: the health window
/// sees the continuous function fail, the device returns to the release with the old version,
/// whose secrets folder was kept, and the function runs again with the old value.
#[test]
fn a_value_that_breaks_the_function_is_rolled_back_under_the_health_window() {
    use std::os::unix::fs::PermissionsExt;
    let mut s = Setup::new();
    let dir = s.project.path().join("functions/watcher");
    std::fs::create_dir_all(&dir).expect("mkdir");
    // Runs while its token is good; exits at once on a value it cannot use.
    std::fs::write(
        dir.join("run.sh"),
        "#!/bin/sh\nif [ \"$(cat \"$EDGEFN_SECRETS_DIR/token\")\" = broken ]; then echo 'the token is refused' >&2; exit 3; fi\necho watching\nwhile true; do sleep 1; done\n",
    )
    .expect("write");
    std::fs::set_permissions(dir.join("run.sh"), std::fs::Permissions::from_mode(0o755))
        .expect("chmod");
    std::fs::write(
        s.project.path().join("edgefn.yaml"),
        "apiVersion: edgefn/v1\nproject: secrets-test\nfunctions:\n  watcher:\n    path: functions/watcher\n    runtime: exec\n    handler: [\"./run.sh\"]\n    secrets: [token]\ndevices:\n  dev-a: {}\nbindings:\n  - function: watcher\n    devices: { names: [dev-a] }\n    mode: continuous\n",
    )
    .expect("write");
    std::fs::remove_dir_all(s.project.path().join("functions/reader")).expect("rm");
    git(s.project.path(), &["add", "-A"]);
    git(s.project.path(), &["commit", "-q", "-m", "watcher"]);
    ok(&s.cli_stdin(&["secret", "set", "token"], b"good"));

    let shm = tempfile::tempdir_in("/dev/shm").expect("a memory file system at /dev/shm");
    let mut config = std::fs::read_to_string(&s.agent_config).expect("read");
    config.push_str(&format!("secretsDir: {}\n", shm.path().join("s").display()));
    std::fs::write(&s.agent_config, config).expect("write");
    let data = tempfile::tempdir().expect("agent data");
    let agent = AgentProc::start(&s.agent_config, data.path(), &[]);
    s.cli_ok(&["apply", "--wait", "--timeout", "60s"]);
    let report = |s: &mut Setup| {
        s.api("GET", "/v1/status", b"").json()["devices"]
            .as_array()
            .and_then(|d| d.iter().find(|d| d["name"] == "dev-a").cloned())
            .unwrap_or_default()["report"]
            .clone()
    };
    let watcher_runs = |s: &mut Setup| {
        report(s)["functions"].as_array().is_some_and(|f| {
            f.iter()
                .any(|f| f["binding"] == "watcher" && f["state"] == "running")
        })
    };
    wait_until(30, "the watcher runs", || watcher_runs(&mut s));
    let good = report(&mut s)["runningDigest"].clone();

    let out = s.cli_stdin(
        &["secret", "set", "token", "--wait", "--timeout", "60s"],
        b"broken",
    );
    assert!(
        !out.status.success(),
        "the rollout fails: {}",
        text(&out.stderr)
    );
    let mut last = serde_json::Value::Null;
    wait_until(60, "dev-a rolls back", || {
        last = report(&mut s);
        last["state"] == "rolled_back"
    });
    assert!(
        last["message"]
            .as_str()
            .is_some_and(|m| m.contains("watcher")),
        "{last}"
    );
    assert_eq!(
        last["runningDigest"], good,
        "back on the release with the old version"
    );
    wait_until(30, "the watcher runs again, with the old value", || {
        watcher_runs(&mut s)
    });
    let log = agent.log.lock().expect("log").clone();
    assert!(
        log.contains("the token is refused"),
        "the new value was tried"
    );
    let _ = shm;
}

//! End-to-end tests of models (`models:` in the manifest) with the real `edgefn`,
//! `edgefn-cloud` and `edgefn-agent`: a model is uploaded once and downloaded once (a corrupted
//! partial download is refused by its digest and fetched again), the function finds it at
//! `$EDGEFN_MODEL_<NAME>` and in `$EDGEFN_MODELS_DIR`, a warm instance loads it once for many
//! invocations, a code-only change moves no model bytes (the cloud's byte counters), a model no
//! kept release needs is removed from the device; a model larger than the device's free space
//! (a real tmpfs) refuses the release and the old one keeps running; bad manifests are refused
//! with the file or name at fault.

#[path = "common/mod.rs"]
mod common;

use std::path::{Path, PathBuf};

use common::*;
use sha2::Digest;

const MAIN_PY: &str = r#"import hashlib, os

# Loaded once per instance, at import: what a warm instance keeps.
LOADS = 0
CALLS = 0
with open(os.environ["EDGEFN_MODEL_DIGITS"], "rb") as f:
    MODEL = hashlib.sha256(f.read()).hexdigest()
LOADS += 1


def handle(event, context):
    global CALLS
    CALLS += 1
    return {
        "version": "v1",
        "model": MODEL,
        "loads": LOADS,
        "calls": CALLS,
        "pid": os.getpid(),
        "dir": sorted(os.listdir(os.environ["EDGEFN_MODELS_DIR"])),
    }
"#;

/// Deterministic bytes that do not compress (xorshift).
fn model_bytes(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x >> 24) as u8
        })
        .collect()
}

fn sha256_hex(bytes: &[u8]) -> String {
    sha2::Sha256::digest(bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// A project with one python function reading one model, in a git work tree.
struct Project {
    dir: tempfile::TempDir,
    cache: tempfile::TempDir,
}

impl Project {
    fn new(model: &[u8]) -> Project {
        let dir = tempfile::tempdir().expect("project");
        let root = dir.path();
        std::fs::create_dir_all(root.join("functions/classify")).expect("mkdir");
        std::fs::create_dir_all(root.join("models")).expect("mkdir");
        std::fs::write(root.join("models/digits.onnx"), model).expect("model");
        std::fs::write(root.join("functions/classify/main.py"), MAIN_PY).expect("code");
        std::fs::write(root.join("edgefn.yaml"), Self::manifest(true)).expect("manifest");
        std::fs::write(root.join(".gitignore"), "agent.yaml\n").expect("write");
        git(root, &["init", "-q"]);
        git(root, &["add", "-A"]);
        git(root, &["commit", "-q", "-m", "v1"]);
        Project {
            dir,
            cache: tempfile::tempdir().expect("cache"),
        }
    }

    fn manifest(with_model: bool) -> String {
        let (models, uses) = if with_model {
            (
                "models:\n  - name: digits\n    path: models/digits.onnx\n",
                "    models: [digits]\n",
            )
        } else {
            ("", "")
        };
        format!(
            "apiVersion: edgefn/v1\nproject: vision\n{models}functions:\n  classify:\n    path: functions/classify\n    runtime: python3\n    handler: main.handle\n    memory: 256Mi\n{uses}devices:\n  gw-01: {{}}\nbindings:\n  - function: classify\n    devices: {{ names: [gw-01] }}\n    triggers: [ {{ topic: images/# }} ]\n"
        )
    }

    fn path(&self, rel: &str) -> PathBuf {
        self.dir.path().join(rel)
    }

    fn edgefn(&self, cloud: Option<&Cloud>, args: &[&str]) -> std::process::Output {
        let cache = self.cache.path().display().to_string();
        let mut env: Vec<(&str, String)> = vec![("XDG_CACHE_HOME", cache)];
        if let Some(c) = cloud {
            env.extend(c.env());
        }
        let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
        edgefn_env(self.dir.path(), args, &env)
    }

    fn commit(&self, message: &str) {
        git(self.dir.path(), &["add", "-A"]);
        git(self.dir.path(), &["commit", "-q", "-m", message]);
    }

    fn apply(&self, cloud: &Cloud) -> serde_json::Value {
        serde_json::from_str(&ok(
            &self.edgefn(Some(cloud), &["apply", "--output", "json"])
        ))
        .expect("json")
    }

    /// Registers gw-01 and writes its agent file; returns its path.
    fn device(&self, cloud: &Cloud) -> PathBuf {
        let config = self.path("agent.yaml");
        ok(&self.edgefn(
            Some(cloud),
            &[
                "device",
                "add",
                "gw-01",
                "--out",
                config.to_str().expect("utf8"),
            ],
        ));
        let mut text = std::fs::read_to_string(&config).expect("config");
        text.push_str("healthWindow: 1s\npollWait: 5s\nreportInterval: 1s\n");
        std::fs::write(&config, text).expect("write");
        config
    }
}

/// A counter of the cloud's `/metrics`.
fn metric(cloud: &Cloud, name: &str) -> u64 {
    let r = http(
        &cloud.addr(),
        "GET",
        "/metrics",
        Some(&cloud.admin),
        &[],
        b"",
    );
    text(&r.body)
        .lines()
        .find_map(|l| l.strip_prefix(name)?.trim().parse().ok())
        .unwrap_or_else(|| panic!("no {name} in /metrics"))
}

fn status(cloud: &Cloud) -> serde_json::Value {
    http(
        &cloud.addr(),
        "GET",
        "/v1/status",
        Some(&cloud.admin),
        &[],
        b"",
    )
    .json()
}

fn converged(cloud: &Cloud, revision: u64) -> bool {
    let s = status(cloud);
    s["revision"].as_u64() >= Some(revision)
        && s["devices"]
            .as_array()
            .is_some_and(|d| d.iter().all(|d| d["converged"] == true))
}

/// The one delivery's result of a message on the agent's bus.
fn result(agent: &AgentProc, payload: serde_json::Value) -> serde_json::Value {
    let r = agent.publish("images/in", &payload);
    let d = r["deliveries"].as_array().expect("deliveries");
    assert_eq!(d.len(), 1, "{r}");
    d[0]["result"].clone()
}

fn stored_size(cloud_data: &Path, digest: &str) -> u64 {
    std::fs::metadata(cloud_data.join("bundles").join(digest))
        .expect("stored")
        .len()
}

#[test]
fn a_model_moves_once_and_a_code_only_change_moves_no_model_bytes() {
    let model = model_bytes(6 << 20, 7);
    let digest = sha256_hex(&model);
    let project = Project::new(&model);
    let cloud_data = tempfile::tempdir().expect("cloud data");
    let cloud = Cloud::start(cloud_data.path());
    let config = project.device(&cloud);

    // `edgefn test`-style runs read the project's file where it is.
    let invoked = ok(&project.edgefn(None, &["invoke", "classify", "--event", "{}"]));
    assert!(invoked.contains(&digest), "{invoked}");

    // First apply: the code bundle and the model go up, the model streamed as it is.
    let first = project.apply(&cloud);
    assert_eq!(
        first["uploaded"],
        serde_json::json!(["classify", "model digits"]),
        "{first}"
    );
    assert_eq!(first["models"]["digits"]["digest"], digest.as_str());
    assert_eq!(first["models"]["digits"]["kind"], "file");
    assert_eq!(stored_size(cloud_data.path(), &digest), model.len() as u64);
    let uploaded = first["uploadedBytes"].as_u64().expect("bytes");
    assert_eq!(
        metric(&cloud, "edgefn_bundle_bytes_received_total"),
        uploaded
    );

    // A download that broke off with every byte there but the wrong ones: refused by its
    // digest on the device and fetched again from the first byte.
    let data = tempfile::tempdir().expect("agent data");
    std::fs::create_dir_all(data.path().join("downloads")).expect("mkdir");
    std::fs::write(
        data.path().join(format!("downloads/{digest}.part")),
        model_bytes(model.len(), 99),
    )
    .expect("corrupt part");
    let agent = AgentProc::start(&config, data.path(), &[]);
    let revision = first["revision"].as_u64().expect("revision");
    wait_until(60, "gw-01 converges", || converged(&cloud, revision));
    let on_device = data.path().join("models").join(&digest);
    let meta = std::fs::metadata(&on_device).expect("model on the device");
    assert_eq!(meta.len(), model.len() as u64);
    assert_eq!(
        std::os::unix::fs::PermissionsExt::mode(&meta.permissions()) & 0o777,
        0o444,
        "read-only"
    );
    let code = first["bundles"]["classify"].as_str().expect("bundle");
    assert_eq!(
        metric(&cloud, "edgefn_bundle_bytes_served_total"),
        stored_size(cloud_data.path(), code) + model.len() as u64,
        "the code and the model came down once each (the bad partial file cost nothing)"
    );

    // The function finds it, only it, and a warm instance loaded it once for every call.
    let mut pid = None;
    for call in 1..=4u64 {
        let r = result(&agent, serde_json::json!({}));
        assert_eq!(r["model"], digest.as_str(), "{r}");
        assert_eq!(r["dir"], serde_json::json!(["digits"]), "{r}");
        assert_eq!(r["loads"], 1, "{r}");
        assert_eq!(r["calls"], call, "{r}");
        assert!(pid.is_none() || pid == Some(r["pid"].clone()), "{r}");
        pid = Some(r["pid"].clone());
    }

    // A code-only change: only the code bundle goes up and comes down.
    let served_before = metric(&cloud, "edgefn_bundle_bytes_served_total");
    let received_before = metric(&cloud, "edgefn_bundle_bytes_received_total");
    let main = project.path("functions/classify/main.py");
    std::fs::write(&main, MAIN_PY.replace("\"v1\"", "\"v2\"")).expect("write");
    project.commit("v2");
    let second = project.apply(&cloud);
    assert_eq!(
        second["uploaded"],
        serde_json::json!(["classify"]),
        "{second}"
    );
    assert_eq!(second["models"], first["models"]);
    let moved_up = second["uploadedBytes"].as_u64().expect("bytes");
    assert_eq!(
        metric(&cloud, "edgefn_bundle_bytes_received_total") - received_before,
        moved_up
    );
    assert!(moved_up < 4 << 10, "{moved_up} bytes uploaded");
    let revision = second["revision"].as_u64().expect("revision");
    wait_until(60, "gw-01 runs the new code", || {
        converged(&cloud, revision)
    });
    let r = result(&agent, serde_json::json!({}));
    assert_eq!(
        (r["version"].as_str(), r["loads"].as_u64()),
        (Some("v2"), Some(1))
    );
    let new_code = second["bundles"]["classify"].as_str().expect("bundle");
    assert_eq!(
        metric(&cloud, "edgefn_bundle_bytes_served_total") - served_before,
        stored_size(cloud_data.path(), new_code),
        "only the new code bundle came down, no model byte"
    );

    // The model leaves the manifest: once no kept release names it, it leaves the device.
    std::fs::write(project.path("edgefn.yaml"), Project::manifest(false)).expect("write");
    std::fs::write(
        &main,
        "def handle(event, context):\n    return {\"version\": \"v3\"}\n",
    )
    .expect("write");
    project.commit("no model");
    let third = project.apply(&cloud);
    let revision = third["revision"].as_u64().expect("revision");
    wait_until(60, "gw-01 runs without the model", || {
        converged(&cloud, revision)
    });
    wait_until(10, "the unused model is removed", || !on_device.exists());
    assert_eq!(result(&agent, serde_json::json!({}))["version"], "v3");
    agent.kill();
}

/// A tmpfs mounted for the test, unmounted when dropped.
struct Tmpfs(tempfile::TempDir);

impl Tmpfs {
    fn mount(size: &str) -> Option<Tmpfs> {
        let dir = tempfile::tempdir().expect("mount point");
        let ok = std::process::Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(dir.path())
            .status()
            .is_ok_and(|s| s.success());
        ok.then_some(Tmpfs(dir))
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount")
            .arg(self.0.path())
            .status();
    }
}

#[test]
fn a_model_larger_than_the_free_space_refuses_the_release_and_the_old_one_runs_on() {
    // The agent's data folder on a real 16 MiB file system; the model is 24 MiB.
    let Some(fs) = Tmpfs::mount("16m") else {
        panic!("mounting a tmpfs needs root (CAP_SYS_ADMIN)");
    };
    let model = model_bytes(24 << 20, 3);
    let project = Project::new(&model);
    // First without the model: a release that fits.
    std::fs::write(project.path("edgefn.yaml"), Project::manifest(false)).expect("write");
    std::fs::write(
        project.path("functions/classify/main.py"),
        "def handle(event, context):\n    return {\"version\": \"small\"}\n",
    )
    .expect("write");
    project.commit("small");
    let cloud_data = tempfile::tempdir().expect("cloud data");
    let cloud = Cloud::start(cloud_data.path());
    let config = project.device(&cloud);
    let first = project.apply(&cloud);
    let agent = AgentProc::start(&config, fs.0.path(), &[]);
    let revision = first["revision"].as_u64().expect("revision");
    wait_until(60, "gw-01 converges", || converged(&cloud, revision));

    // Now with the model.
    std::fs::write(project.path("edgefn.yaml"), Project::manifest(true)).expect("write");
    std::fs::write(project.path("functions/classify/main.py"), MAIN_PY).expect("write");
    project.commit("with the model");
    let second = project.apply(&cloud);
    let mut message = String::new();
    wait_until(60, "gw-01 refuses the release", || {
        let s = status(&cloud);
        let report = &s["devices"][0]["report"];
        message = report["message"].as_str().unwrap_or_default().to_owned();
        report["state"] == "failed"
    });
    assert!(
        message.contains("refused")
            && message.contains("models `digits`")
            && message.contains("does not fit")
            && message.contains("free"),
        "{message}"
    );
    assert!(second["revision"].as_u64() > Some(revision));
    // Nothing of the model was downloaded, and the old release answers.
    let parts: Vec<_> = std::fs::read_dir(fs.0.path().join("downloads"))
        .expect("downloads")
        .collect();
    assert!(parts.is_empty(), "{parts:?}");
    assert_eq!(result(&agent, serde_json::json!({}))["version"], "small");
    agent.kill();
}

#[test]
fn a_missing_model_file_and_an_unknown_model_name_are_refused_with_their_place() {
    let project = Project::new(b"weights");
    std::fs::remove_file(project.path("models/digits.onnx")).expect("rm");
    let out = project.edgefn(None, &["validate"]);
    assert!(!out.status.success());
    let err = text(&out.stderr);
    assert!(
        err.contains("the file `models/digits.onnx` of model `digits` does not exist")
            && err.contains("edgefn.yaml:5"),
        "{err}"
    );

    let project = Project::new(b"weights");
    let text_before = std::fs::read_to_string(project.path("edgefn.yaml")).expect("read");
    std::fs::write(
        project.path("edgefn.yaml"),
        text_before.replace("models: [digits]", "models: [digit]"),
    )
    .expect("write");
    let out = project.edgefn(None, &["validate"]);
    assert!(!out.status.success());
    let err = text(&out.stderr);
    assert!(
        err.contains("function `classify` names the model `digit`, which is not defined")
            && err.contains("did you mean `digits`?")
            && err.contains("unknown_model"),
        "{err}"
    );
}

#[test]
fn the_cloud_stores_a_model_streamed_and_serves_it_from_any_offset() {
    let data = tempfile::tempdir().expect("data");
    let cloud = Cloud::start(data.path());
    let addr = cloud.addr();
    let admin = Some(cloud.admin.as_str());
    let model = model_bytes(3 << 20, 11);
    let digest = sha256_hex(&model);

    // Bytes that are not the digest's: refused, nothing stored (not even a temporary file).
    let bad = http(
        &addr,
        "PUT",
        &format!("/v1/bundles/{digest}"),
        admin,
        &[],
        &model[1..],
    );
    assert_eq!(bad.status, 400, "{}", text(&bad.body));
    assert_eq!(bad.json()["error"]["code"], "digest_mismatch");
    let stored: Vec<_> = std::fs::read_dir(data.path().join("bundles"))
        .expect("bundles")
        .collect();
    assert!(stored.is_empty(), "{stored:?}");

    let put = http(
        &addr,
        "PUT",
        &format!("/v1/bundles/{digest}"),
        admin,
        &[],
        &model,
    );
    assert_eq!(put.status, 201, "{}", text(&put.body));
    let again = http(
        &addr,
        "PUT",
        &format!("/v1/bundles/{digest}"),
        admin,
        &[],
        &model,
    );
    assert_eq!(again.status, 200, "already stored");

    let whole = http(
        &addr,
        "GET",
        &format!("/v1/bundles/{digest}"),
        admin,
        &[],
        b"",
    );
    assert_eq!((whole.status, whole.body.len()), (200, model.len()));
    assert!(whole.body == model);
    let from = 1_000_003;
    let tail = http(
        &addr,
        "GET",
        &format!("/v1/bundles/{digest}"),
        admin,
        &[("Range", &format!("bytes={from}-"))],
        b"",
    );
    assert_eq!(tail.status, 206);
    assert_eq!(
        tail.header("content-range"),
        Some(format!("bytes {from}-{}/{}", model.len() - 1, model.len()).as_str())
    );
    assert!(tail.body == model[from..]);
    let past = http(
        &addr,
        "GET",
        &format!("/v1/bundles/{digest}"),
        admin,
        &[("Range", &format!("bytes={}-", model.len()))],
        b"",
    );
    assert_eq!(past.status, 416);
    assert_eq!(
        past.header("content-range"),
        Some(format!("bytes */{}", model.len()).as_str())
    );
}

#[test]
fn a_folder_model_arrives_whole_as_in_the_project() {
    let project = Project::new(b"weights");
    let root = project.path("");
    std::fs::create_dir_all(root.join("models/tok/vocab")).expect("mkdir");
    std::fs::write(root.join("models/tok/vocab/words.txt"), "a\nb\n").expect("write");
    std::fs::write(root.join("models/tok/config.json"), "{\"n\": 2}").expect("write");
    let manifest = Project::manifest(true)
        .replace(
            "models:\n",
            "models:\n  - name: tok\n    path: models/tok\n",
        )
        .replace("models: [digits]", "models: [digits, tok]");
    std::fs::write(root.join("edgefn.yaml"), manifest).expect("write");
    std::fs::write(
        root.join("functions/classify/main.py"),
        "import os\n\ndef handle(event, context):\n    d = os.environ[\"EDGEFN_MODEL_TOK\"]\n    with open(os.path.join(d, \"vocab\", \"words.txt\")) as f:\n        words = f.read().split()\n    return {\"files\": sorted(os.listdir(d)), \"words\": words,\n            \"listed\": sorted(os.listdir(os.environ[\"EDGEFN_MODELS_DIR\"]))}\n",
    )
    .expect("write");
    project.commit("folder model");
    let expected = serde_json::json!({
        "files": ["config.json", "vocab"],
        "words": ["a", "b"],
        "listed": ["digits", "tok"],
    });
    let local = ok(&project.edgefn(None, &["invoke", "classify", "--event", "{}"]));
    let local: serde_json::Value = serde_json::from_str(&local).expect("json");
    assert_eq!(local, expected);

    let cloud_data = tempfile::tempdir().expect("cloud data");
    let cloud = Cloud::start(cloud_data.path());
    let config = project.device(&cloud);
    let applied = project.apply(&cloud);
    assert_eq!(applied["models"]["tok"]["kind"], "folder", "{applied}");
    let data = tempfile::tempdir().expect("agent data");
    let agent = AgentProc::start(&config, data.path(), &[]);
    let revision = applied["revision"].as_u64().expect("revision");
    wait_until(60, "gw-01 converges", || converged(&cloud, revision));
    assert_eq!(result(&agent, serde_json::json!({})), expected);
    agent.kill();
}

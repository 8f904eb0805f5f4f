//! End-to-end tests of dependency layers with the real `edgefn`, `edgefn-cloud` and
//! `edgefn-agent`, real pip and npm against PyPI and the npm registry: the example project's
//! python and node functions run on an agent with their packages; a code-only change moves only
//! the code bundle (the CLI's upload report and the cloud's byte counters agree); a layer no
//! kept release needs is removed from the device; layers are reproducible; bad dependencies are
//! refused before anything is uploaded.

#[path = "common/mod.rs"]
mod common;

use std::path::{Path, PathBuf};

use common::*;

/// The example project, in a git work tree of its own, with a cache folder for its layers.
struct Project {
    dir: tempfile::TempDir,
    cache: tempfile::TempDir,
}

impl Project {
    fn example() -> Project {
        let dir = tempfile::tempdir().expect("project");
        copy_dir(&repo().join("examples/dependencies"), dir.path());
        std::fs::write(dir.path().join(".gitignore"), "agent.yaml\n").expect("write");
        git(dir.path(), &["init", "-q"]);
        git(dir.path(), &["add", "-A"]);
        git(dir.path(), &["commit", "-q", "-m", "v1"]);
        Project {
            dir,
            cache: tempfile::tempdir().expect("cache"),
        }
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

fn converged(cloud: &Cloud, revision: u64) -> bool {
    let s = http(
        &cloud.addr(),
        "GET",
        "/v1/status",
        Some(&cloud.admin),
        &[],
        b"",
    )
    .json();
    s["revision"].as_u64() >= Some(revision)
        && s["devices"]
            .as_array()
            .is_some_and(|d| d.iter().all(|d| d["converged"] == true))
}

/// The one delivery's result of a message on the agent's bus.
fn result(agent: &AgentProc, topic: &str, payload: serde_json::Value) -> serde_json::Value {
    let r = agent.publish(topic, &payload);
    let d = r["deliveries"].as_array().expect("deliveries");
    assert_eq!(d.len(), 1, "{r}");
    d[0]["result"].clone()
}

/// The archives extracted on the device: its `bundles/` folder.
fn extracted(data: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(data.join("bundles"))
        .expect("bundles")
        .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
        .filter(|n| !n.starts_with('.') && !n.contains(".tmp-"))
        .collect();
    names.sort();
    names
}

fn layer_digests(applied: &serde_json::Value) -> Vec<String> {
    let mut out: Vec<String> = applied["layers"]
        .as_object()
        .expect("layers")
        .values()
        .flat_map(|by| by.as_object().expect("by platform").values())
        .map(|d| d.as_str().expect("digest").to_owned())
        .collect();
    out.sort();
    out
}

#[test]
fn packages_run_on_a_real_agent_and_a_code_only_change_moves_only_the_code() {
    let project = Project::example();
    let cloud_data = tempfile::tempdir().expect("cloud data");
    let cloud = Cloud::start(cloud_data.path());
    let config = project.path("agent.yaml");
    ok(&project.edgefn(
        Some(&cloud),
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

    // First apply: both code bundles and both layers go up.
    let first = project.apply(&cloud);
    let uploaded: Vec<&str> = first["uploaded"]
        .as_array()
        .expect("uploaded")
        .iter()
        .filter_map(|v| v.as_str())
        .collect();
    assert_eq!(
        uploaded,
        [
            "durations",
            "units",
            "durations (dependencies, linux/amd64)",
            "units (dependencies, linux/amd64)"
        ],
        "{first}"
    );
    let layers = layer_digests(&first);
    assert_eq!(layers.len(), 2, "{first}");
    assert_eq!(
        metric(&cloud, "edgefn_bundle_bytes_received_total"),
        first["uploadedBytes"].as_u64().expect("bytes")
    );

    let data = tempfile::tempdir().expect("agent data");
    let agent = AgentProc::start(&config, data.path(), &[]);
    let revision = first["revision"].as_u64().expect("revision");
    wait_until(60, "gw-01 converges", || converged(&cloud, revision));
    assert_eq!(
        result(&agent, "units/convert", serde_json::json!({"text": "hi"})),
        serde_json::json!({"six": "1.16.0", "text": "HI"})
    );
    assert_eq!(
        result(
            &agent,
            "durations/parse",
            serde_json::json!({"duration": "2h"})
        ),
        serde_json::json!({"ms": 7_200_000, "version": "2.1.3"})
    );
    let on_device = extracted(data.path());
    for l in &layers {
        assert!(on_device.contains(l), "{l} not extracted: {on_device:?}");
    }
    // Nothing is written into a layer: the instances import from it, read-only to them.
    let served_before = metric(&cloud, "edgefn_bundle_bytes_served_total");
    let received_before = metric(&cloud, "edgefn_bundle_bytes_received_total");

    // A code-only change: only the code bundle of `units` goes up, and comes down.
    let main = project.path("functions/units/main.py");
    let code = std::fs::read_to_string(&main).expect("read");
    std::fs::write(&main, code.replace("text.upper()", "text.lower()")).expect("write");
    project.commit("lower case");
    let second = project.apply(&cloud);
    assert_eq!(second["uploaded"], serde_json::json!(["units"]), "{second}");
    let moved_up = second["uploadedBytes"].as_u64().expect("bytes");
    assert!(moved_up < 10 << 10, "{moved_up} bytes uploaded");
    assert_eq!(layer_digests(&second), layers, "the layers did not change");
    assert_eq!(
        metric(&cloud, "edgefn_bundle_bytes_received_total") - received_before,
        moved_up
    );
    let revision = second["revision"].as_u64().expect("revision");
    wait_until(60, "gw-01 runs the new code", || {
        converged(&cloud, revision)
    });
    assert_eq!(
        result(&agent, "units/convert", serde_json::json!({"text": "Hi"})),
        serde_json::json!({"six": "1.16.0", "text": "hi"})
    );
    let moved_down = metric(&cloud, "edgefn_bundle_bytes_served_total") - served_before;
    let new_bundle = second["bundles"]["units"].as_str().expect("bundle");
    let new_bundle_size = std::fs::metadata(cloud_data.path().join("bundles").join(new_bundle))
        .expect("stored bundle")
        .len();
    assert_eq!(
        moved_down, new_bundle_size,
        "only the new code bundle came down"
    );
    assert!(moved_down < 10 << 10);

    // The python function drops its dependency: once the new release passed its health window
    // (so no kept release names the layer), the layer is removed from the device; the node
    // function's layer, still named, stays.
    std::fs::remove_file(project.path("functions/units/requirements.txt")).expect("rm");
    std::fs::write(
        &main,
        "def handle(event, context):\n    return {\"text\": \"plain\"}\n",
    )
    .expect("write");
    project.commit("no six");
    let third = project.apply(&cloud);
    assert_eq!(layer_digests(&third).len(), 1, "{third}");
    let revision = third["revision"].as_u64().expect("revision");
    wait_until(60, "gw-01 runs without six", || converged(&cloud, revision));
    let six_layer = first["layers"]["units"]["linux/amd64"]
        .as_str()
        .expect("layer")
        .to_owned();
    wait_until(10, "the unused layer is removed", || {
        !extracted(data.path()).contains(&six_layer)
    });
    assert_eq!(
        result(&agent, "units/convert", serde_json::json!({})),
        serde_json::json!({"text": "plain"})
    );
    let node_layer = first["layers"]["durations"]["linux/amd64"]
        .as_str()
        .expect("layer");
    assert!(extracted(data.path()).contains(&node_layer.to_owned()));
    assert_eq!(
        result(
            &agent,
            "durations/parse",
            serde_json::json!({"duration": "1s"})
        ),
        serde_json::json!({"ms": 1000, "version": "2.1.3"})
    );
    agent.kill();
}

#[test]
fn layers_are_reproducible_and_a_warm_cache_is_used() {
    let project = Project::example();
    // The list, and what was said on stderr.
    let package = |p: &Project| -> (Vec<serde_json::Value>, String) {
        let out = p.edgefn(None, &["package", "--output", "json"]);
        (
            serde_json::from_str(&ok(&out)).expect("json"),
            text(&out.stderr),
        )
    };
    let layers = |list: &[serde_json::Value]| -> Vec<(String, String)> {
        list.iter()
            .filter(|e| e.get("layer").is_some())
            .map(|e| {
                (
                    e["function"].as_str().expect("function").to_owned(),
                    e["digest"].as_str().expect("digest").to_owned(),
                )
            })
            .collect()
    };
    let (cold, said) = package(&project);
    // A miss says what it builds before pip or npm runs, and how long it took after.
    for line in [
        "building the dependency layer of function `units` for linux/amd64 from requirements.txt with pip (once: it is cached afterwards in ",
        "building the dependency layer of function `durations` for linux/amd64 from package-lock.json with npm (once: it is cached afterwards in ",
        "built the dependency layer of function `units` for linux/amd64 in ",
        "built the dependency layer of function `durations` for linux/amd64 in ",
    ] {
        assert!(said.contains(line), "{line}\n{said}");
    }
    assert!(
        cold.iter()
            .filter(|e| e.get("layer").is_some())
            .all(|e| e["cached"] == false)
    );
    // Another machine's view: a fresh cache, a fresh install, the same bytes.
    let other = Project::example();
    let (fresh, _) = package(&other);
    assert_eq!(layers(&cold), layers(&fresh));
    assert_eq!(layers(&cold).len(), 2);
    let (warm, said) = package(&project);
    assert!(
        !said.contains("dependency layer"),
        "a hit says nothing: {said}"
    );
    assert_eq!(layers(&warm), layers(&cold));
    assert!(
        warm.iter()
            .filter(|e| e.get("layer").is_some())
            .all(|e| e["cached"] == true)
    );
    // `edgefn test` runs the functions with the same layers, built for this machine.
    let out = ok(&project.edgefn(None, &["test"]));
    assert!(out.contains("2 passed, 0 failed"), "{out}");
}

/// A project with one function `f` in `functions/f` (python3 or node) on device `d` of
/// `platform`.
fn one_function(runtime: &str, handler: &str, platform: &str) -> Project {
    let dir = tempfile::tempdir().expect("project");
    std::fs::create_dir_all(dir.path().join("functions/f")).expect("mkdir");
    std::fs::write(
        dir.path().join("edgefn.yaml"),
        format!(
            "apiVersion: edgefn/v1\nproject: p\nfunctions:\n  f: {{ path: functions/f, runtime: {runtime}, handler: {handler} }}\ndevices:\n  d: {{ platform: {platform} }}\nbindings:\n  - {{ function: f, devices: {{ names: [d] }}, triggers: [ {{ topic: a }} ] }}\n"
        ),
    )
    .expect("write");
    Project {
        dir,
        cache: tempfile::tempdir().expect("cache"),
    }
}

/// The error a refused command printed, on one line (the report wraps long lines).
fn refused(out: &std::process::Output) -> String {
    assert!(!out.status.success(), "not refused: {}", text(&out.stdout));
    text(&out.stderr)
        .replace('│', " ")
        .split_whitespace()
        .collect::<Vec<_>>()
        .join(" ")
}

#[test]
fn a_package_without_a_wheel_for_a_device_is_refused_before_anything_is_uploaded() {
    let p = one_function("python3", "main.handle", "linux/arm/v7");
    std::fs::write(p.path("functions/f/main.py"), "import numpy\n").expect("write");
    // numpy publishes wheels for x86_64 and aarch64, none for 32-bit ARM.
    std::fs::write(p.path("functions/f/requirements.txt"), "numpy==1.26.4\n").expect("write");
    let cloud_data = tempfile::tempdir().expect("cloud data");
    let cloud = Cloud::start(cloud_data.path());
    let err = refused(&p.edgefn(Some(&cloud), &["apply", "--allow-dirty"]));
    assert!(
        err.contains("`numpy==1.26.4`") && err.contains("no binary wheel for linux/arm/v7"),
        "{err}"
    );
    assert_eq!(metric(&cloud, "edgefn_bundle_bytes_received_total"), 0);
    let history = http(
        &cloud.addr(),
        "GET",
        "/v1/revisions",
        Some(&cloud.admin),
        &[],
        b"",
    );
    assert_eq!(history.json(), serde_json::json!([]));
}

#[test]
fn source_builds_lock_mismatches_and_links_out_of_a_layer_are_refused_clearly() {
    // A source build, by line.
    let p = one_function("python3", "main.handle", "linux/amd64");
    std::fs::write(
        p.path("functions/f/main.py"),
        "def handle(e, c):\n    return 1\n",
    )
    .expect("write");
    std::fs::write(
        p.path("functions/f/requirements.txt"),
        "six==1.16.0\n-e git+https://github.com/benjaminp/six#egg=six\n",
    )
    .expect("write");
    let err = refused(&p.edgefn(None, &["package"]));
    assert!(
        err.contains("requirements.txt:2") && err.contains("editable install, built from source"),
        "{err}"
    );
    // An install elsewhere.
    std::fs::write(
        p.path("functions/f/requirements.txt"),
        "--prefix /usr\nsix\n",
    )
    .expect("write");
    let err = refused(&p.edgefn(None, &["package"]));
    assert!(err.contains("outside the function's layer"), "{err}");

    // A lock that disagrees with package.json.
    let p = one_function("node", "index.handle", "linux/amd64");
    std::fs::write(
        p.path("functions/f/index.js"),
        "exports.handle = () => 1;\n",
    )
    .expect("write");
    copy_dir(
        &repo().join("examples/dependencies/functions/durations"),
        &p.path("functions/f"),
    );
    let pkg = p.path("functions/f/package.json");
    let json = std::fs::read_to_string(&pkg).expect("read");
    std::fs::write(&pkg, json.replace("\"ms\": \"2.1.3\"", "\"ms\": \"2.1.2\"")).expect("write");
    let err = refused(&p.edgefn(None, &["package"]));
    assert!(
        err.contains("package-lock.json disagrees with") && err.contains("package.json"),
        "{err}"
    );
    assert!(err.contains("run `npm install`"), "{err}");

    // A dependency that npm installs as a link out of node_modules.
    let outside = p.path("outside");
    std::fs::create_dir_all(&outside).expect("mkdir");
    std::fs::write(
        outside.join("package.json"),
        r#"{"name":"outside","version":"1.0.0"}"#,
    )
    .expect("write");
    std::fs::write(
        &pkg,
        r#"{"name":"f","version":"1.0.0","dependencies":{"outside":"file:../../outside"}}"#,
    )
    .expect("write");
    let lock = std::process::Command::new("npm")
        .args(["install", "--package-lock-only", "--no-audit", "--no-fund"])
        .current_dir(p.path("functions/f"))
        .output()
        .expect("npm");
    assert!(lock.status.success(), "{}", text(&lock.stderr));
    let err = refused(&p.edgefn(None, &["package"]));
    assert!(
        err.contains("cannot be packed into a layer") && err.contains("outside"),
        "{err}"
    );

    // A lock missing altogether.
    std::fs::remove_file(p.path("functions/f/package-lock.json")).expect("rm");
    let err = refused(&p.edgefn(None, &["package"]));
    assert!(err.contains("no package-lock.json"), "{err}");
}

#[test]
fn the_cloud_checks_a_revisions_layers_and_a_device_reads_only_the_layer_of_its_platform() {
    let cloud_data = tempfile::tempdir().expect("cloud data");
    let cloud = Cloud::start(cloud_data.path());
    let admin = Some(cloud.admin.as_str());
    let json = [("Content-Type", "application/json")];
    let mut digests = Vec::new();
    for body in [&b"code"[..], b"amd64 layer", b"arm64 layer"] {
        let digest = {
            use std::fmt::Write;
            let sum = <sha2::Sha256 as sha2::Digest>::digest(body);
            sum.iter().fold(String::new(), |mut s, b| {
                let _ = write!(s, "{b:02x}");
                s
            })
        };
        let r = http(
            &cloud.addr(),
            "PUT",
            &format!("/v1/bundles/{digest}"),
            admin,
            &[],
            body,
        );
        assert!(r.status < 300, "{}", text(&r.body));
        digests.push(digest);
    }
    let (code, amd64, arm64) = (&digests[0], &digests[1], &digests[2]);
    let manifest = "apiVersion: edgefn/v1\nproject: p\nfunctions:\n  f: { path: f, runtime: python3, handler: main.handle }\ndevices:\n  x86: {}\n  pi: { platform: linux/arm64 }\nbindings:\n  - { function: f, devices: { labels: {} }, triggers: [ { topic: a } ] }\n";
    let submit = |layers: serde_json::Value| {
        let body =
            serde_json::json!({"manifest": manifest, "bundles": {"f": code}, "layers": layers});
        http(
            &cloud.addr(),
            "POST",
            "/v1/revisions",
            admin,
            &json,
            body.to_string().as_bytes(),
        )
    };
    // A layer for one platform only: the other device would run without its dependencies.
    let r = submit(serde_json::json!({"f": {"linux/amd64": amd64}}));
    assert_eq!(r.status, 422, "{}", text(&r.body));
    let msg = r.json()["error"]["message"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    assert!(
        msg.contains("none for linux/arm64") && msg.contains("`pi`"),
        "{msg}"
    );
    // Layers of an unknown function, a digest that is not one, a platform that is not one.
    let r = submit(
        serde_json::json!({"nope": {"linux/amd64": amd64}, "f": {"linux/amd64": "x", "linux/arm64": arm64}}),
    );
    assert_eq!(r.status, 422, "{}", text(&r.body));
    let msg = r.json()["error"]["message"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    assert!(
        msg.contains("`nope`") && msg.contains("not a sha256 digest"),
        "{msg}"
    );
    let r = submit(serde_json::json!({"f": {"linux/mips": amd64}}));
    assert_eq!(r.status, 400, "{}", text(&r.body));
    // A layer the cloud lacks.
    let r = submit(serde_json::json!({"f": {"linux/amd64": amd64, "linux/arm64": "0".repeat(64)}}));
    assert_eq!(r.status, 422, "{}", text(&r.body));
    assert_eq!(
        r.json()["error"]["code"],
        "missing_bundles",
        "{}",
        text(&r.body)
    );
    let r = submit(serde_json::json!({"f": {"linux/amd64": amd64, "linux/arm64": arm64}}));
    assert_eq!(r.status, 201, "{}", text(&r.body));

    // Each device reads the layer of its own platform, and not the other.
    let r = http(
        &cloud.addr(),
        "POST",
        "/v1/devices",
        admin,
        &json,
        br#"{"name":"pi"}"#,
    );
    assert!(r.status < 300, "{}", text(&r.body));
    let token = r.json()["token"].as_str().expect("token").to_owned();
    let get = |digest: &str| {
        http(
            &cloud.addr(),
            "GET",
            &format!("/v1/bundles/{digest}"),
            Some(&token),
            &[],
            b"",
        )
        .status
    };
    assert_eq!(get(code), 200);
    assert_eq!(get(arm64), 200);
    assert_eq!(get(amd64), 403);
    let desired = http(
        &cloud.addr(),
        "GET",
        "/v1/devices/pi/desired",
        Some(&token),
        &[],
        b"",
    );
    assert_eq!(
        desired.json()["state"]["functions"]["f"]["layer"],
        arm64.as_str(),
        "{}",
        text(&desired.body)
    );
}

/// `edgefn dev` in the background, its stdout collected; killed when dropped.
struct Dev {
    child: std::process::Child,
    lines: std::sync::Arc<std::sync::Mutex<Vec<String>>>,
}

impl Drop for Dev {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[test]
fn edgefn_dev_runs_functions_with_layers_built_for_this_machine() {
    use std::io::BufRead;
    let project = Project::example();
    // A device of another platform: its agent runs here, so dev builds for this machine.
    let manifest = project.path("edgefn.yaml");
    let text = std::fs::read_to_string(&manifest).expect("read");
    std::fs::write(
        &manifest,
        text.replace("platform: linux/amd64", "platform: linux/arm64"),
    )
    .expect("write");
    let home = tempfile::tempdir().expect("home");
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_edgefn"))
        .args(["dev", "."])
        .current_dir(project.dir.path())
        .env_clear()
        .env("HOME", home.path())
        .env("XDG_CACHE_HOME", project.cache.path())
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .env("NO_COLOR", "1")
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::inherit())
        .spawn()
        .expect("edgefn dev");
    let stdout = child.stdout.take().expect("stdout");
    let dev = Dev {
        child,
        lines: Default::default(),
    };
    let lines = dev.lines.clone();
    std::thread::spawn(move || {
        for l in std::io::BufReader::new(stdout)
            .lines()
            .map_while(Result::ok)
        {
            lines.lock().expect("lock").push(l);
        }
    });
    let output = || dev.lines.lock().expect("lock").join("\n");
    wait_until(120, "edgefn dev watches", || {
        output().contains("Watching for changes")
    });
    let out = output();
    let addr = out
        .lines()
        .find(|l| l.trim_start().starts_with("agent gw-01 "))
        .and_then(|l| l.split("http://").nth(1))
        .and_then(|r| r.split_whitespace().next())
        .unwrap_or_else(|| panic!("no endpoint line:\n{out}"))
        .to_owned();
    let ask = |topic: &str, payload: &str| {
        let r = http(
            &addr,
            "POST",
            &format!("/v1/publish?topic={topic}&wait=true"),
            None,
            &[("Content-Type", "application/json")],
            payload.as_bytes(),
        );
        r.json()["deliveries"][0]["result"].clone()
    };
    assert_eq!(
        ask("units/convert", r#"{"text": "dev"}"#),
        serde_json::json!({"six": "1.16.0", "text": "DEV"}),
        "{}",
        output()
    );
    assert_eq!(
        ask("durations/parse", r#"{"duration": "1m"}"#),
        serde_json::json!({"ms": 60000, "version": "2.1.3"})
    );
}

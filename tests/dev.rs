//! The product end to end: `edgefn dev` (the README's main job), and a day in the life of a
//! team, from `edgefn init` to a rollback on two devices.

#[path = "common/mod.rs"]
mod common;

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};

use common::*;

/// A background `edgefn` process whose stdout lines are collected.
struct Background {
    child: Child,
    lines: Arc<Mutex<Vec<String>>>,
}

impl Background {
    fn start(dir: &Path, args: &[&str], env: &[(&str, &str)]) -> Background {
        let home = tempfile::tempdir().expect("home").keep();
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_edgefn"));
        cmd.args(args)
            .current_dir(dir)
            .env_clear()
            .env("HOME", home)
            .env("PATH", std::env::var_os("PATH").unwrap_or_default())
            .env("NO_COLOR", "1")
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit());
        for (k, v) in env {
            cmd.env(k, v);
        }
        let mut child = cmd.spawn().expect("spawn edgefn");
        let lines: Arc<Mutex<Vec<String>>> = Arc::default();
        let out = lines.clone();
        let stdout = child.stdout.take().expect("stdout");
        std::thread::spawn(move || {
            for l in BufReader::new(stdout).lines().map_while(Result::ok) {
                out.lock().expect("lock").push(l);
            }
        });
        Background { child, lines }
    }

    fn wait_for(&self, secs: u64, needle: &str) {
        wait_until(secs, needle, || {
            self.lines
                .lock()
                .expect("lock")
                .iter()
                .any(|l| l.contains(needle))
        });
    }

    fn text(&self) -> String {
        self.lines.lock().expect("lock").join("\n")
    }
}

impl Drop for Background {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[test]
fn edgefn_dev_runs_the_quickstart_answers_publish_and_hot_updates() {
    let tmp = tempfile::tempdir().expect("tmp");
    copy_dir(&repo().join("examples/quickstart"), tmp.path());
    let dir = tmp.path();
    let dev = Background::start(dir, &["dev", "."], &[]);
    dev.wait_for(60, "Watching for changes");
    let out = dev.text();
    assert!(out.contains("gw-01: collector (continuous); greeter (on commands/greet); temp-filter (on sensors/+/temperature)"), "{out}");
    assert!(
        out.contains("gw-01 runs revision 1") && out.contains("gw-02 runs revision 1"),
        "{out}"
    );
    dev.wait_for(20, "[gw-01] collector: collector started");
    // The session file names the admin token: the owner's alone, and so is its folder.
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = |p: &Path| std::fs::metadata(p).expect("meta").permissions().mode() & 0o777;
        let state = dir.join(".edgefn").join("dev");
        assert_eq!(mode(&state.join("session.json")), 0o600, "session file");
        assert_eq!(mode(&state.join("admin.token")), 0o600, "admin token");
        assert_eq!(mode(&state), 0o700, "the session's folder");
    }

    // Another terminal in the project: subscribe, then publish; the function answers upstream.
    let sub = Background::start(
        dir,
        &["subscribe", "greetings/#", "--count", "1", "--json"],
        &[],
    );
    pause(500);
    let greet = |name: &str| {
        ok(&edgefn_env(
            dir,
            &[
                "publish",
                "gw-02",
                "commands/greet",
                &format!("{{\"name\": \"{name}\"}}"),
            ],
            &[],
        ))
    };
    wait_until(30, "the greeting arrives upstream", || {
        greet("Ada");
        pause(300);
        !sub.lines.lock().expect("lock").is_empty()
    });
    let first: serde_json::Value = serde_json::from_str(&sub.text()).expect("json");
    assert_eq!(first["payload"]["greeting"], "Hello, Ada!");
    assert_eq!(first["device"], "gw-02");
    // Each invocation is one line of dev's output: device, binding, topic, outcome, time.
    dev.wait_for(10, "[gw-02] greeter ← commands/greet: ok, ");

    // A command in the project says which control plane it talks to, and that it chose the
    // dev session over the one `edgefn login` saved; a saved token never goes elsewhere.
    let creds = dir.join("..").join(format!(
        "login-{}.json",
        dir.file_name().expect("name").to_string_lossy()
    ));
    std::fs::write(
        &creds,
        r#"{"cloud": "http://127.0.0.1:9", "token": "edgefn_admin_elsewhere"}"#,
    )
    .expect("write");
    let creds_env = [("EDGEFN_CONFIG", creds.to_str().expect("utf8"))];
    let out = edgefn_env(dir, &["status"], &creds_env);
    let err = text(&out.stderr);
    assert!(out.status.success(), "{err}");
    assert!(
        err.contains("(the `edgefn dev` session running in this project, not the control plane `edgefn login` saved (http://127.0.0.1:9); pass --cloud to choose)"),
        "{err}"
    );
    let out = edgefn_env(
        dir,
        &["status", "--cloud", "http://127.0.0.1:10"],
        &creds_env,
    );
    assert!(
        text(&out.stderr).contains("no token given"),
        "the saved token is for another control plane: {}",
        text(&out.stderr)
    );
    let _ = std::fs::remove_file(&creds);

    // Edit the code: a hot over-the-air update through the real path.
    let code = dir.join("functions/greeter/index.js");
    std::fs::write(
        &code,
        std::fs::read_to_string(&code)
            .expect("read")
            .replace("Hello", "Bonjour"),
    )
    .expect("write");
    dev.wait_for(60, "gw-02 runs revision 2");
    assert!(
        dev.text()
            .contains("revision 2 applied (uploaded: greeter)"),
        "{}",
        dev.text()
    );
    let sub = Background::start(
        dir,
        &["subscribe", "greetings/#", "--count", "1", "--json"],
        &[],
    );
    pause(500);
    wait_until(30, "the new greeting", || {
        greet("Ada");
        pause(300);
        sub.text().contains("Bonjour, Ada!")
    });

    // A broken edit is reported and not applied.
    std::fs::write(
        dir.join("edgefn.yaml"),
        std::fs::read_to_string(dir.join("edgefn.yaml"))
            .expect("read")
            .replace("memory: 96Mi", "memory: lots"),
    )
    .expect("write");
    dev.wait_for(30, "not applied: fix the problems above");

    // Ctrl-C stops everything cleanly: the devices' processes are gone.
    let mut dev = dev;
    let _ = Command::new("kill")
        .args(["-INT", &dev.child.id().to_string()])
        .status();
    let status = dev.child.wait().expect("wait");
    assert!(status.success(), "{status:?}");
    assert!(dev.text().contains("stopped"));
    let leftover = Command::new("pgrep")
        .args(["-f", &dir.display().to_string()])
        .output()
        .expect("pgrep");
    assert!(
        text(&leftover.stdout).trim().is_empty(),
        "processes left behind: {}",
        text(&leftover.stdout)
    );
}

#[test]
fn a_day_in_the_life() {
    // The control plane with its embedded broker, as a team would run it.
    let cloud_data = tempfile::tempdir().expect("cloud");
    let (cloud, mqtt) = Cloud::start_with(cloud_data.path(), &["--mqtt-listen", "127.0.0.1:0"]);
    let mqtt = mqtt.expect("broker");
    let env = cloud.env();
    let env = [(env[0].0, env[0].1.as_str()), (env[1].0, env[1].1.as_str())];

    // init → new → test.
    let tmp = tempfile::tempdir().expect("tmp");
    let dir = tmp.path().join("fleet");
    ok(&edgefn_env(tmp.path(), &["init", "fleet"], &env));
    ok(&edgefn_env(
        &dir,
        &["new", "shout", "--runtime", "python3"],
        &env,
    ));
    std::fs::write(
        dir.join("functions/shout/main.py"),
        "def handle(event, context):\n    text = event[\"payload\"][\"text\"].upper()\n    context.publish(\"shouts/\" + context.device, {\"text\": text})\n    return {\"text\": text}\n",
    )
    .expect("write");
    std::fs::write(
        dir.join("functions/shout/tests/example.yaml"),
        "trigger:\n  topic: commands/shout\n  payload: { text: hi }\nexpect:\n  result: { text: HI }\n  publish:\n    - topic: shouts/dev-01\n",
    )
    .expect("write");
    let manifest = std::fs::read_to_string(dir.join("edgefn.yaml")).expect("read");
    let manifest = manifest
        .replace("devices:\n  dev-01:\n    labels: { role: gateway }\n", "devices:\n  dev-01:\n    labels: { role: gateway }\n  dev-02:\n    labels: { role: gateway }\n")
        .replace("bindings: []", "bindings:\n  - function: shout\n    devices: { labels: { role: gateway } }\n    triggers: [ commands/shout ]")
        .replace("routes: []", "routes:\n  - { from: \"shouts/#\", to: cloud }\n  - { from: \"cloud:commands/#\", to: local }");
    std::fs::write(dir.join("edgefn.yaml"), manifest).expect("write");
    let tested = ok(&edgefn_env(&dir, &["test"], &env));
    assert!(tested.contains("1 passed, 0 failed"), "{tested}");

    // Apply from git, with provenance.
    git(&dir, &["init", "-q"]);
    let mut devices = Vec::new();
    for d in ["dev-01", "dev-02"] {
        let config = tmp.path().join(format!("{d}.yaml"));
        ok(&edgefn_env(
            &dir,
            &["device", "add", d, "--out", config.to_str().expect("utf8")],
            &env,
        ));
        let c = std::fs::read_to_string(&config).expect("read");
        let c = with_config(
            &c,
            &format!("mqtt: mqtt://{mqtt}\nhealthWindow: 1s\npollWait: 5s\nreportInterval: 1s\n"),
        );
        std::fs::write(&config, c).expect("write");
        devices.push(config);
    }
    git(&dir, &["add", "-A"]);
    git(&dir, &["commit", "-q", "-m", "shout v1"]);
    let v1: serde_json::Value =
        serde_json::from_str(&ok(&edgefn_env(&dir, &["apply", "--output", "json"], &env)))
            .expect("json");
    assert_eq!(v1["revision"], 1);
    let history = ok(&edgefn_env(&dir, &["history", "--output", "json"], &env));
    assert!(
        history.contains("\"message\": \"shout v1\"") && history.contains("\"branch\": \"main\""),
        "{history}"
    );

    // Two agents converge.
    let data: Vec<tempfile::TempDir> = devices
        .iter()
        .map(|_| tempfile::tempdir().expect("data"))
        .collect();
    let _agents: Vec<AgentProc> = devices
        .iter()
        .zip(&data)
        .map(|(c, d)| AgentProc::start(c, d.path(), &[]))
        .collect();
    ok(&edgefn_env(
        &dir,
        &["apply", "--wait", "--timeout", "60s"],
        &env,
    ));
    // Publish to both devices until each has answered upstream at least once (a device whose
    // link is still connecting answers late, not never); every answer carries `expect`.
    let shout = |expect: &str| {
        let sub = Background::start(
            &dir,
            &["subscribe", "shouts/#", "--count", "1000", "--json"],
            &env,
        );
        pause(500);
        let devices_seen = || {
            let mut from: Vec<String> = sub
                .lines
                .lock()
                .expect("lock")
                .iter()
                .map(|l| {
                    serde_json::from_str::<serde_json::Value>(l).expect("json")["device"]
                        .as_str()
                        .unwrap_or_default()
                        .to_owned()
                })
                .collect();
            from.sort();
            from.dedup();
            from
        };
        wait_until(30, "both devices answer upstream", || {
            ok(&edgefn_env(
                &dir,
                &[
                    "publish",
                    "--label",
                    "role=gateway",
                    "commands/shout",
                    "{\"text\": \"hello\"}",
                ],
                &env,
            ));
            pause(400);
            devices_seen().len() >= 2
        });
        assert_eq!(devices_seen(), ["dev-01", "dev-02"]);
        let lines = sub.lines.lock().expect("lock").clone();
        assert!(lines.iter().all(|l| l.contains(expect)), "{lines:?}");
    };
    shout("HELLO");

    // Change the code → apply → OTA switch on both.
    let main = dir.join("functions/shout/main.py");
    std::fs::write(
        &main,
        std::fs::read_to_string(&main)
            .expect("read")
            .replace(".upper()", ".upper() + \"!\""),
    )
    .expect("write");
    std::fs::write(dir.join("functions/shout/tests/example.yaml"), "trigger:\n  topic: commands/shout\n  payload: { text: hi }\nexpect:\n  result: { text: HI! }\n").expect("write");
    ok(&edgefn_env(&dir, &["test"], &env));
    git(&dir, &["commit", "-q", "-am", "shout v2"]);
    let diff = edgefn_env(&dir, &["diff"], &env);
    assert_eq!(diff.status.code(), Some(2), "{}", text(&diff.stdout));
    ok(&edgefn_env(
        &dir,
        &["apply", "--wait", "--timeout", "60s"],
        &env,
    ));
    shout("HELLO!");

    // Roll back: both devices back on the old code, in a new revision.
    let rb: serde_json::Value = serde_json::from_str(&ok(&edgefn_env(
        &dir,
        &["rollback", "--wait", "--timeout", "60s", "--output", "json"],
        &env,
    )))
    .expect("json");
    assert_eq!(rb["revision"], 3);
    let status: serde_json::Value = serde_json::from_str(&ok(&edgefn_env(
        &dir,
        &["status", "--output", "json"],
        &env,
    )))
    .expect("json");
    for d in status["devices"].as_array().expect("devices") {
        assert_eq!(d["converged"], true, "{d}");
    }
    let r1 = http(
        &cloud.addr(),
        "GET",
        "/v1/revisions/1",
        Some(&cloud.admin),
        &[],
        b"",
    )
    .json();
    let r3 = http(
        &cloud.addr(),
        "GET",
        "/v1/revisions/3",
        Some(&cloud.admin),
        &[],
        b"",
    )
    .json();
    assert_eq!(r1["bundles"], r3["bundles"]);
    shout("\"HELLO\"");
}

/// The local endpoint dev printed for `device`.
fn local_endpoint(dev: &Background, device: &str) -> String {
    let text = dev.text();
    let line = text
        .lines()
        .find(|l| l.trim_start().starts_with(&format!("agent {device} ")))
        .unwrap_or_else(|| panic!("no endpoint line for {device}:\n{text}"));
    line.split("http://")
        .nth(1)
        .and_then(|r| r.split_whitespace().next())
        .expect("address")
        .to_owned()
}

/// A greeting straight from `device`'s local bus (the agent's local endpoint).
fn greeting(addr: &str) -> String {
    let r = http(
        addr,
        "POST",
        "/v1/publish?topic=commands/greet&wait=true",
        None,
        &[("Content-Type", "application/json")],
        br#"{"name": "Ada"}"#,
    );
    r.json()["deliveries"][0]["result"]["greeting"]
        .as_str()
        .unwrap_or_default()
        .to_owned()
}

/// `edgefn dev` says why an agent cannot run, applies every save (one made while the previous
/// change rolls out included), starts devices added to the manifest and stops removed ones,
/// and derives its hints from the project.
#[test]
fn edgefn_dev_applies_every_save_and_follows_the_devices_of_the_manifest() {
    let tmp = tempfile::tempdir().expect("tmp");
    copy_dir(&repo().join("examples/quickstart"), tmp.path());
    let dir = tmp.path();
    // gw-02's data folder cannot be made: its agent fails, and dev says why.
    std::fs::create_dir_all(dir.join(".edgefn/dev/agents")).expect("mkdir");
    std::fs::write(dir.join(".edgefn/dev/agents/gw-02"), "in the way").expect("write");
    let dev = Background::start(dir, &["dev"], &[]);
    dev.wait_for(60, "Watching for changes");
    let out = dev.text();
    assert!(
        out.contains("agent gw-02 stopped: ") && out.contains("Not a directory"),
        "{out}"
    );
    assert!(out.contains("gw-01 runs revision 1"), "{out}");
    assert!(
        out.contains("edgefn publish gw-01 commands/greet '{}'   # fires greeter"),
        "hints from the project: {out}"
    );
    let gw01 = local_endpoint(&dev, "gw-01");
    assert_eq!(greeting(&gw01), "Hello, Ada!");

    // Two saves in a row, the second while the first rolls out: the second is applied.
    let code = dir.join("functions/greeter/index.js");
    let original = std::fs::read_to_string(&code).expect("read");
    std::fs::write(&code, original.replace("Hello", "Bonjour")).expect("write");
    dev.wait_for(30, "change detected");
    std::fs::write(&code, original.replace("Hello", "Hola")).expect("write");
    wait_until(60, "the second save runs", || {
        greeting(&gw01) == "Hola, Ada!"
    });

    // A device added to the manifest gets an agent, and runs its release.
    let manifest = dir.join("edgefn.yaml");
    let before = std::fs::read_to_string(&manifest).expect("read");
    std::fs::write(
        &manifest,
        before.replace(
            "  gw-02: { labels: { site: beijing, role: gateway } }\n",
            "  gw-02: { labels: { site: beijing, role: gateway } }\n  gw-03: { labels: { site: lab, role: gateway } }\n",
        ),
    )
    .expect("write");
    dev.wait_for(60, "new device gw-03: started its agent");
    dev.wait_for(60, "gw-03 runs revision");
    assert_eq!(greeting(&local_endpoint(&dev, "gw-03")), "Hola, Ada!");
    // And removed again: its agent stops.
    std::fs::write(&manifest, before).expect("write");
    dev.wait_for(60, "device gw-03 left the manifest: stopping its agent");

    // A handler that throws: the error points at the project's file, not the bundle's copy.
    std::fs::write(
        &code,
        "exports.handler = async (event) => {\n  return event.payload.missing.field;\n};\n",
    )
    .expect("write");
    wait_until(60, "the throwing release runs", || {
        http(
            &gw01,
            "POST",
            "/v1/publish?topic=commands/greet&wait=true",
            None,
            &[],
            b"{}",
        )
        .json()["deliveries"][0]["error"]
            .is_string()
    });
    dev.wait_for(10, "[gw-01] greeter ← commands/greet: error, ");
    dev.wait_for(10, "functions/greeter/index.js:2");
    let out = dev.text();
    assert!(
        !out.contains("gw-01/bundles/"),
        "no bundle copy's path: {out}"
    );

    // Closing the terminal (SIGHUP) stops everything and removes the session file.
    let mut dev = dev;
    let _ = Command::new("kill")
        .args(["-HUP", &dev.child.id().to_string()])
        .status();
    let status = dev.child.wait().expect("wait");
    assert!(status.success(), "{status:?}");
    assert!(!dir.join(".edgefn/dev/session.json").exists());
    let leftover = Command::new("pgrep")
        .args(["-f", &dir.display().to_string()])
        .output()
        .expect("pgrep");
    assert!(
        text(&leftover.stdout).trim().is_empty(),
        "processes left behind: {}",
        text(&leftover.stdout)
    );
}

/// The README's walkthrough, from `edgefn init` to a function on another machine, runs as
/// printed: each ```sh block of that section in a fresh HOME, the server and the device in the
/// background, until `edgefn status` shows the device converged.
#[test]
fn the_readme_walkthrough_runs_as_printed() {
    let readme = std::fs::read_to_string(repo().join("README.md")).expect("readme");
    let start = readme
        .find("## From `edgefn init` to a function on another machine")
        .expect("the walkthrough section");
    let section = &readme[start..];
    let section = &section[..section[3..].find("\n## ").map_or(section.len(), |i| i + 3)];
    let blocks: Vec<&str> = section
        .split("```sh\n")
        .skip(1)
        .map(|b| b.split("```").next().expect("block"))
        .collect();
    assert_eq!(
        blocks.len(),
        5,
        "project, server, project, device, status: {blocks:?}"
    );

    let tmp = tempfile::tempdir().expect("tmp");
    let home = tmp.path().join("home");
    let work = tmp.path().join("work");
    std::fs::create_dir_all(&home).expect("home");
    std::fs::create_dir_all(&work).expect("work");
    let bins = sibling_bin("edgefn-cloud")
        .parent()
        .expect("bin dir")
        .to_path_buf();
    let path = format!(
        "{}:{}",
        bins.display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let bash = |dir: &Path, script: &str| {
        let mut cmd = Command::new("bash");
        cmd.arg("-c")
            .arg(script)
            .current_dir(dir)
            .env_clear()
            .env("HOME", &home)
            .env("PATH", &path)
            .env("NO_COLOR", "1")
            .env("GIT_AUTHOR_NAME", "Ada")
            .env("GIT_AUTHOR_EMAIL", "ada@example.com")
            .env("GIT_COMMITTER_NAME", "Ada")
            .env("GIT_COMMITTER_EMAIL", "ada@example.com");
        cmd
    };
    let run = |dir: &Path, block: &str| {
        let out = bash(dir, &format!("set -euo pipefail\n{block}"))
            .output()
            .expect("bash");
        assert!(
            out.status.success(),
            "README block failed:\n{block}\nstdout:\n{}\nstderr:\n{}",
            text(&out.stdout),
            text(&out.stderr)
        );
        out
    };
    let background = |dir: &Path, block: &str| {
        bash(dir, &format!("exec {}", block.trim()))
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("spawn")
    };
    // Kills the process when the test ends, however it ends.
    struct Killed(Child);
    impl Drop for Killed {
        fn drop(&mut self) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }

    run(&work, blocks[0]);
    let project = work.join("my-fleet");
    let mut cloud = Killed(background(&project, blocks[1]));
    let stdout = cloud.0.stdout.take().expect("stdout");
    let mut lines = BufReader::new(stdout).lines();
    loop {
        let line = lines
            .next()
            .expect("edgefn-cloud exited before listening (are ports 7070 and 1883 free?)")
            .expect("read");
        if line.contains("listening on") {
            break;
        }
    }
    std::thread::spawn(move || for _ in lines {});
    run(&project, blocks[2]);
    let _agent = Killed(background(&project, blocks[3]));
    let mut last = String::new();
    wait_until(90, "the device converges", || {
        last = text(&run(&project, blocks[4]).stdout);
        last.lines()
            .any(|l| l.starts_with("dev-01 ") && l.contains("converged"))
    });
    drop(cloud);
}

//! The inference example (`examples/vision`) with the real `edgefn`, `edgefn-cloud` and
//! `edgefn-agent`, real pip against PyPI (onnxruntime and numpy in the function's layer) and
//! the checked-in ONNX model as a `models:` artifact: its `edgefn test` cases pass; on a real
//! agent, an image published from the cloud is classified on the device and the answer arrives
//! upstream through the route; an image of the wrong shape is a handler error naming the
//! expected shape, and the same warm instance (the model loaded once) answers the next image.

#[path = "common/mod.rs"]
mod common;

use std::path::PathBuf;
use std::process::{Command, Stdio};

use common::*;

/// A held-out 0 from scikit-learn's digits (as in the example's tests/digit-0.yaml).
fn zero() -> serde_json::Value {
    test_case_payload("digit-0.yaml")
}

/// The payload of one of the example's test cases.
fn test_case_payload(file: &str) -> serde_json::Value {
    let path = repo()
        .join("examples/vision/functions/classify/tests")
        .join(file);
    let source = edgefn_schema::Source::new(
        path.display().to_string(),
        std::fs::read_to_string(&path).expect("read"),
    );
    match edgefn_schema::testcase::load_test_case(&source)
        .unwrap_or_else(|e| panic!("{file}: {e:?}"))
        .trigger
    {
        edgefn_schema::testcase::TestTrigger::Message { payload, .. } => payload,
        other => panic!("{file}: {other:?}"),
    }
}

/// The example project, in a git work tree of its own, with a cache folder for its layers.
struct Project {
    dir: tempfile::TempDir,
    cache: tempfile::TempDir,
}

impl Project {
    fn example() -> Project {
        let dir = tempfile::tempdir().expect("project");
        copy_dir(&repo().join("examples/vision"), dir.path());
        git(dir.path(), &["init", "-q"]);
        git(dir.path(), &["add", "-A"]);
        git(dir.path(), &["commit", "-q", "-m", "vision"]);
        Project {
            dir,
            cache: tempfile::tempdir().expect("cache"),
        }
    }

    fn path(&self, rel: &str) -> PathBuf {
        self.dir.path().join(rel)
    }

    fn env(&self, cloud: Option<&Cloud>) -> Vec<(&'static str, String)> {
        let mut env = vec![("XDG_CACHE_HOME", self.cache.path().display().to_string())];
        if let Some(c) = cloud {
            env.extend(c.env());
        }
        env
    }

    fn edgefn(&self, cloud: Option<&Cloud>, args: &[&str]) -> std::process::Output {
        let env = self.env(cloud);
        let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
        edgefn_env(self.dir.path(), args, &env)
    }
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

/// The one delivery of a message put on the agent's bus.
fn delivery(agent: &AgentProc, topic: &str, payload: &serde_json::Value) -> serde_json::Value {
    let r = agent.publish(topic, payload);
    let d = r["deliveries"].as_array().expect("deliveries");
    assert_eq!(d.len(), 1, "{r}");
    d[0].clone()
}

/// The lines of the agent's function log that say the model was loaded.
fn model_loads(agent: &AgentProc) -> usize {
    let r = http(&agent.local, "GET", "/v1/logs?tail=1000", None, &[], b"");
    assert_eq!(r.status, 200, "{}", text(&r.body));
    text(&r.body).matches("classify: model loaded in").count()
}

#[test]
fn the_example_passes_its_test_cases() {
    let project = Project::example();
    let out = project.edgefn(None, &["test"]);
    let stdout = text(&out.stdout);
    assert!(out.status.success(), "{stdout}\n{}", text(&out.stderr));
    for case in ["digit-0", "digit-3", "digit-7", "digit-9", "wrong-shape"] {
        assert!(
            stdout.contains(&format!("PASS classify/{case}")),
            "{stdout}"
        );
    }
    assert!(stdout.contains("5 passed, 0 failed"), "{stdout}");
}

#[test]
fn an_image_from_the_cloud_is_classified_on_a_real_agent_and_the_answer_arrives_upstream() {
    let project = Project::example();
    let cloud_data = tempfile::tempdir().expect("cloud data");
    let (cloud, mqtt) = Cloud::start_with(cloud_data.path(), &["--mqtt-listen", "127.0.0.1:0"]);
    let mqtt = mqtt.expect("the embedded broker listens");
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
    let mut text_config = std::fs::read_to_string(&config).expect("config");
    text_config = with_config(&text_config, &format!("mqtt: mqtt://{mqtt}\n"));
    text_config.push_str("healthWindow: 1s\npollWait: 5s\nreportInterval: 1s\n");
    std::fs::write(&config, text_config).expect("write");

    // The code bundle, the layer (onnxruntime, numpy, ...) and the model go up.
    let applied: serde_json::Value = serde_json::from_str(&ok(
        &project.edgefn(Some(&cloud), &["apply", "--output", "json"])
    ))
    .expect("json");
    let revision = applied["revision"].as_u64().expect("revision");

    let data = tempfile::tempdir().expect("agent data");
    let agent = AgentProc::start(&config, data.path(), &[]);
    wait_until(120, "gw-01 converges", || converged(&cloud, revision));

    // `edgefn subscribe` on the cloud side, until one answer.
    let env = project.env(Some(&cloud));
    let home = tempfile::tempdir().expect("home");
    let mut sub = Command::new(env!("CARGO_BIN_EXE_edgefn"))
        .args(["subscribe", "predictions/#", "--count", "1", "--json"])
        .env_clear()
        .env("HOME", home.path())
        .envs(env.iter().map(|(k, v)| (*k, v.as_str())))
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("subscribe");
    let mut err = std::io::BufReader::new(sub.stderr.take().expect("stderr"));
    let mut line = String::new();
    while !line.contains("subscribed to") {
        line.clear();
        assert!(
            std::io::BufRead::read_line(&mut err, &mut line).expect("read") > 0,
            "subscribe exited early"
        );
    }
    // The image goes down through the cloud's broker (the route `cloud:images/#`); the agent's
    // MQTT session comes up a moment after convergence, so publish until the answer is seen.
    let image = zero().to_string();
    for _ in 0..50 {
        ok(&project.edgefn(Some(&cloud), &["publish", "gw-01", "images/cam-1", &image]));
        pause(300);
        if sub.try_wait().expect("wait").is_some() {
            break;
        }
    }
    if sub.try_wait().expect("wait").is_none() {
        let _ = sub.kill();
    }
    let out = sub.wait_with_output().expect("output");
    let line = text(&out.stdout);
    let answer: serde_json::Value = serde_json::from_str(line.trim())
        .unwrap_or_else(|e| panic!("no answer upstream ({e}): {line}\n{}", agent_log(&agent)));
    assert_eq!(answer["device"], "gw-01", "{answer}");
    assert_eq!(answer["topic"], "predictions/cam-1", "{answer}");
    assert_eq!(answer["payload"]["class"], 0, "{answer}");
    let confidence = answer["payload"]["confidence"]
        .as_f64()
        .expect("confidence");
    assert!((0.9..=1.0).contains(&confidence), "{answer}");

    // The other shapes, on the device bus: each case's expected class.
    for (file, class) in [
        ("digit-3.yaml", 3),
        ("digit-7.yaml", 7),
        ("digit-9.yaml", 9),
    ] {
        let d = delivery(&agent, "images/cam-2", &test_case_payload(file));
        assert_eq!(d["result"]["class"], class, "{file}: {d}");
        assert_eq!(d["publish"][0]["topic"], "predictions/cam-2", "{d}");
    }

    // The wrong shape: a handler error saying which shape was expected, nothing published.
    let d = delivery(
        &agent,
        "images/cam-1",
        &serde_json::json!({"pixels": [1, 2, 3]}),
    );
    let error = d["error"].as_str().unwrap_or_else(|| panic!("{d}"));
    assert!(
        error.contains("ValueError")
            && error.contains("expected an 8x8 image of grey levels 0-16")
            && error.contains("pixels has 3 numbers"),
        "{d}"
    );
    let d = delivery(
        &agent,
        "images/cam-1",
        &serde_json::json!({"base64": "AAAA"}),
    );
    assert!(
        d["error"]
            .as_str()
            .is_some_and(|e| e.contains("base64 holds 3 bytes")),
        "{d}"
    );
    // ... and the same warm instance answers the next image: the model was loaded once.
    let d = delivery(&agent, "images/cam-1", &zero());
    assert_eq!(d["result"]["class"], 0, "{d}");
    assert_eq!(model_loads(&agent), 1, "{}", agent_log(&agent));
}

fn agent_log(agent: &AgentProc) -> String {
    agent.log.lock().map(|l| l.clone()).unwrap_or_default()
}

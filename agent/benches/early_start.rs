//! Early-start benchmark: an agent started before the first apply, then the first revision
//! applied a moment later; the time from that apply until the cloud shows the device converged.
//!
//! ```sh
//! cargo bench -p edgefn-agent --bench early_start
//! # another agent binary (e.g. an older build, to compare):
//! EDGEFN_AGENT_BIN=path/to/edgefn-agent cargo bench -p edgefn-agent --bench early_start
//! # other health windows (default: 10s, the agent's default, and 1s):
//! EDGEFN_BENCH_HEALTH_WINDOWS=10s,1s cargo bench -p edgefn-agent --bench early_start
//! ```
//!
//! A real control plane runs in this process on a loopback port; the device is registered
//! before any revision exists, so the agent first takes the empty revision 0. Revision 1 runs
//! one continuous function (so it has a health window to pass). Converged: the cloud's status
//! shows the device running revision 1, out of its health window.

#![allow(
    clippy::print_stdout,
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::disallowed_methods
)]

mod common;
use common::{agent_bin, control_plane, http};

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use edgefn_schema::bundle::{self, BundleFile, FileKind};

const MANIFEST: &str = "apiVersion: edgefn/v1\nproject: early\nfunctions:\n  daemon:\n    path: functions/daemon\n    runtime: exec\n    handler: [\"./run.sh\"]\ndevices:\n  gw-01: {}\nbindings:\n  - function: daemon\n    devices: { names: [gw-01] }\n    mode: continuous\n";

/// One early start with `window` as the health window: the time from the apply to converged.
fn run(window: &str) -> Duration {
    let data = tempfile::tempdir().unwrap();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    let (cloud, admin) = control_plane(&rt, data.path());

    // The device, registered before any revision.
    let (_, b) = http(
        &cloud,
        "POST",
        "/v1/devices",
        Some(&admin),
        br#"{"name":"gw-01"}"#,
    );
    let token = serde_json::from_slice::<serde_json::Value>(&b).unwrap()["token"]
        .as_str()
        .unwrap()
        .to_owned();
    let agent_config = data.path().join("agent.yaml");
    std::fs::write(&agent_config, format!("cloud: http://{cloud}\ndevice: gw-01\ntoken: {token}\nhealthWindow: {window}\npollWait: 30s\nreportInterval: 5s\n")).unwrap();
    let mut agent = Command::new(agent_bin())
        .args([
            "--config",
            agent_config.to_str().unwrap(),
            "--data",
            data.path().join("agent").to_str().unwrap(),
            "--sandbox",
            "process",
            "--local-listen",
            "127.0.0.1:0",
            "--local-mqtt",
            "none",
            "--log-level",
            "warn",
        ])
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(agent.stdout.take().unwrap()).lines();
    let local = loop {
        let l = lines.next().unwrap().unwrap();
        if let Some((_, a)) = l.split_once("listening on http://") {
            break a.split(' ').next().unwrap_or(a).to_owned();
        }
    };
    // The agent took the empty revision 0.
    let t = Instant::now();
    loop {
        let (_, b) = http(&local, "GET", "/healthz", None, b"");
        if serde_json::from_slice::<serde_json::Value>(&b).unwrap()["running"].is_string() {
            break;
        }
        assert!(
            t.elapsed() < Duration::from_secs(30),
            "revision 0 never ran"
        );
        std::thread::sleep(Duration::from_millis(10));
    }

    // Revision 1, a moment later.
    let run_sh = b"#!/bin/sh\nwhile true; do sleep 1; done\n".to_vec();
    let bytes = bundle::pack(vec![BundleFile {
        path: "run.sh".into(),
        kind: FileKind::Regular {
            data: run_sh,
            executable: true,
        },
    }])
    .unwrap();
    let digest = bundle::digest(&bytes);
    assert!(
        http(
            &cloud,
            "PUT",
            &format!("/v1/bundles/{digest}"),
            Some(&admin),
            &bytes
        )
        .0 < 300
    );
    let body = serde_json::json!({"manifest": MANIFEST, "bundles": {"daemon": digest}, "expectedParent": 0}).to_string();
    let t = Instant::now();
    let (status, b) = http(
        &cloud,
        "POST",
        "/v1/revisions",
        Some(&admin),
        body.as_bytes(),
    );
    assert_eq!(status, 201, "{}", String::from_utf8_lossy(&b));
    loop {
        let (_, b) = http(&cloud, "GET", "/v1/status", Some(&admin), b"");
        let v: serde_json::Value = serde_json::from_slice(&b).unwrap();
        let converged = v["devices"].as_array().unwrap().iter().any(|d| {
            d["name"] == "gw-01" && d["converged"] == true && d["report"]["runningRevision"] == 1
        });
        if converged {
            break;
        }
        assert!(t.elapsed() < Duration::from_secs(120), "never converged");
        std::thread::sleep(Duration::from_millis(20));
    }
    let took = t.elapsed();
    let _ = agent.kill();
    let _ = agent.wait();
    took
}

fn main() {
    let windows = std::env::var("EDGEFN_BENCH_HEALTH_WINDOWS").unwrap_or_else(|_| "10s,1s".into());
    println!("agent: {}", agent_bin().display());
    for window in windows.split(',') {
        let took = run(window);
        println!(
            "early start, health window {window}: apply → converged in {:.2} s",
            took.as_secs_f64()
        );
    }
}

//! Fleet benchmark and simulator: one real `edgefn-cloud`, N simulated devices.
//!
//! ```sh
//! cargo bench -p edgefn-cloud --bench fleet -- --devices 1000
//! cargo bench -p edgefn-cloud --bench fleet -- --devices 10000
//! cargo bench -p edgefn-cloud --bench fleet -- --devices 10000 --store postgres://USER@HOST/DB
//! ```
//!
//! `--store URL` runs the cloud with its state in that (empty) PostgreSQL database; the
//! password, if any, from `$PGPASSWORD`.
//!
//! It starts the real `edgefn-cloud` binary on a loopback port with a temporary data folder,
//! registers N devices (each with its own token), applies a revision that runs a function on all
//! of them, and starts N light simulated agents: each fetches its desired state, reports its
//! status, then long-polls for a change (real HTTP, no function processes). With all N waiting,
//! it applies a change and measures the time until every device has received it, and until every
//! device has reported it (the cloud's fleet status shows all converged). It also reports the
//! cloud's RSS while the N long-polls wait, its CPU time during the rollout, and the rate of
//! non-waiting desired-state requests. Last, the web console at that size: the bytes and time
//! of the first status an open page receives, and the delay from a device's report to the
//! change reaching the page — for the whole-fleet stream (`/console/events`) and for the paged
//! overview the console opens (`/console/events?page=0&size=100`, and `GET /v1/status/page`).
//! Then a progressive rollout in three stages (5 % → 25 % → 100 %, no bake time) to agents
//! that follow every change: the time each stage takes, and the cloud's CPU time.
//!
//! Traffic goes only to 127.0.0.1; every loop is bounded in count and time.

#![allow(
    clippy::print_stdout,
    clippy::print_stderr,
    clippy::unwrap_used,
    clippy::expect_used
)]

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use edgefn_schema::bundle::{BundleFile, FileKind};

fn arg(name: &str, default: usize) -> usize {
    let args: Vec<String> = std::env::args().collect();
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// `--store URL` passed on to the cloud, when given.
fn store_arg() -> Vec<String> {
    let args: Vec<String> = std::env::args().collect();
    args.iter()
        .position(|a| a == "--store")
        .and_then(|i| args.get(i + 1))
        .map(|url| vec!["--store".to_owned(), url.clone()])
        .unwrap_or_default()
}

fn proc_field(pid: u32, key: &str) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix(key))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

/// utime + stime of a process, in clock ticks (100 per second on Linux).
fn cpu_ticks(pid: u32) -> u64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let after = stat.rsplit_once(')').map_or("", |(_, rest)| rest);
    let fields: Vec<&str> = after.split_whitespace().collect();
    let get = |i: usize| {
        fields
            .get(i)
            .and_then(|v| v.parse::<u64>().ok())
            .unwrap_or(0)
    };
    get(11) + get(12)
}

fn manifest(n: usize, version: u32) -> String {
    let mut m = String::from(
        "apiVersion: edgefn/v1\nproject: fleet-bench\nfunctions:\n  f:\n    path: functions/f\n    runtime: exec\n    handler: [\"./run.sh\"]\ndevices:\n",
    );
    for i in 0..n {
        m.push_str(&format!("  dev-{i:05}: {{ labels: {{ role: sim }} }}\n"));
    }
    m.push_str(&format!(
        "bindings:\n  - function: f\n    devices: {{ labels: {{ role: sim }} }}\n    mode: continuous\n    env: {{ VERSION: \"{version}\" }}\n"
    ));
    m
}

fn main() {
    let n = arg("--devices", 1000);
    let rate_secs = arg("--rate-seconds", 3);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(run(n, rate_secs));
}

async fn run(n: usize, rate_secs: usize) {
    let data = tempfile::tempdir().unwrap();
    let token_file = data.path().join("admin.token");
    let mut child = Command::new(env!("CARGO_BIN_EXE_edgefn-cloud"))
        .args([
            "--data",
            data.path().to_str().unwrap(),
            "--listen",
            "127.0.0.1:0",
            "--admin-token-file",
            token_file.to_str().unwrap(),
            "--mqtt-listen",
            "none",
            "--log-level",
            "warn",
        ])
        .args(store_arg())
        .stdout(Stdio::piped())
        .spawn()
        .expect("start edgefn-cloud");
    let pid = child.id();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let url = loop {
        let line = lines.next().unwrap().unwrap();
        if let Some(u) = line.strip_prefix("edgefn-cloud listening on ") {
            break u.to_owned();
        }
    };
    let admin = std::fs::read_to_string(&token_file)
        .unwrap()
        .trim()
        .to_owned();
    // reqwest is built without a default TLS provider in this workspace.
    let _ = rustls::crypto::ring::default_provider().install_default();
    let http = reqwest::Client::builder()
        .pool_max_idle_per_host(usize::MAX)
        .timeout(Duration::from_secs(120))
        .build()
        .unwrap();
    println!("edgefn-cloud fleet benchmark: {n} devices, cloud pid {pid} at {url}");

    // Register the devices, 32 at a time.
    let t = Instant::now();
    let names: Vec<String> = (0..n).map(|i| format!("dev-{i:05}")).collect();
    let mut tokens = Vec::with_capacity(n);
    for chunk in names.chunks(32) {
        let futs = chunk.iter().map(|name| {
            let http = http.clone();
            let (url, admin) = (url.clone(), admin.clone());
            let name = name.clone();
            async move {
                let r = http
                    .post(format!("{url}/v1/devices"))
                    .bearer_auth(&admin)
                    .json(&serde_json::json!({"name": name}))
                    .send()
                    .await
                    .unwrap();
                assert_eq!(r.status(), 201);
                let v: serde_json::Value = r.json().await.unwrap();
                v["token"].as_str().unwrap().to_owned()
            }
        });
        tokens.extend(futures_join(futs).await);
    }
    println!(
        "registered {n} devices in {:.2} s",
        t.elapsed().as_secs_f64()
    );

    // A bundle, and revision 1.
    let bytes = edgefn_schema::bundle::pack(vec![BundleFile {
        path: "run.sh".into(),
        kind: FileKind::Regular {
            data: b"#!/bin/sh\nsleep 3600\n".to_vec(),
            executable: true,
        },
    }])
    .unwrap();
    let digest = edgefn_schema::bundle::digest(&bytes);
    let r = http
        .put(format!("{url}/v1/bundles/{digest}"))
        .bearer_auth(&admin)
        .body(bytes)
        .send()
        .await
        .unwrap();
    assert!(r.status().is_success());
    let apply = |version: u32, parent: u64| {
        let http = http.clone();
        let (url, admin, digest) = (url.clone(), admin.clone(), digest.clone());
        async move {
            let body = serde_json::json!({"manifest": manifest(n, version), "bundles": {"f": digest}, "expectedParent": parent});
            let r = http
                .post(format!("{url}/v1/revisions"))
                .bearer_auth(&admin)
                .json(&body)
                .send()
                .await
                .unwrap();
            assert_eq!(r.status(), 201, "{}", r.text().await.unwrap());
        }
    };
    let t = Instant::now();
    apply(1, 0).await;
    println!(
        "revision 1 (manifest of {n} devices) committed in {:.3} s",
        t.elapsed().as_secs_f64()
    );

    // Non-waiting desired-state requests per second, 64 in flight.
    let done = Arc::new(AtomicUsize::new(0));
    let deadline = Instant::now() + Duration::from_secs(rate_secs as u64);
    let mut workers = Vec::new();
    for w in 0..64usize {
        let (http, url, done) = (http.clone(), url.clone(), done.clone());
        let (name, token) = (names[w % n].clone(), tokens[w % n].clone());
        workers.push(tokio::spawn(async move {
            while Instant::now() < deadline {
                let r = http
                    .get(format!("{url}/v1/devices/{name}/desired"))
                    .bearer_auth(&token)
                    .send()
                    .await
                    .unwrap();
                let _ = r.bytes().await.unwrap();
                done.fetch_add(1, Ordering::Relaxed);
            }
        }));
    }
    for w in workers {
        w.await.unwrap();
    }
    println!(
        "desired-state requests: {:.0} per second (64 concurrent, {rate_secs} s)",
        done.load(Ordering::Relaxed) as f64 / rate_secs as f64
    );

    println!(
        "cloud RSS before the agents connect: {:.1} MiB",
        proc_field(pid, "VmRSS:") as f64 / 1024.0
    );
    // N simulated agents: fetch, report, long-poll.
    let received = Arc::new(AtomicUsize::new(0));
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<Instant>();
    let mut agents = Vec::new();
    for (name, token) in names.iter().cloned().zip(tokens.iter().cloned()) {
        let (http, url, tx, received) = (http.clone(), url.clone(), tx.clone(), received.clone());
        agents.push(tokio::spawn(async move {
            let report = |digest: String, revision: u64| {
                let (http, url, name, token) = (http.clone(), url.clone(), name.clone(), token.clone());
                async move {
                    let body = serde_json::json!({"state": "running", "runningDigest": digest, "runningRevision": revision});
                    let r = http.post(format!("{url}/v1/devices/{name}/status")).bearer_auth(&token).json(&body).send().await.unwrap();
                    assert_eq!(r.status(), 204);
                }
            };
            let r = http.get(format!("{url}/v1/devices/{name}/desired")).bearer_auth(&token).send().await.unwrap();
            let first: serde_json::Value = r.json().await.unwrap();
            let etag = first["digest"].as_str().unwrap().to_owned();
            report(etag.clone(), first["revision"].as_u64().unwrap()).await;
            let r = http
                .get(format!("{url}/v1/devices/{name}/desired?wait=120"))
                .bearer_auth(&token)
                .header("If-None-Match", format!("\"{etag}\""))
                .send()
                .await
                .unwrap();
            assert_eq!(r.status(), 200);
            let next: serde_json::Value = r.json().await.unwrap();
            tx.send(Instant::now()).unwrap();
            received.fetch_add(1, Ordering::Relaxed);
            report(next["digest"].as_str().unwrap().to_owned(), next["revision"].as_u64().unwrap()).await;
        }));
    }
    drop(tx);
    // Wait until all N long-polls are parked on the server.
    let t = Instant::now();
    loop {
        let m = http
            .get(format!("{url}/metrics"))
            .bearer_auth(&admin)
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        let waiting: usize = m
            .lines()
            .find_map(|l| l.strip_prefix("edgefn_longpolls_waiting "))
            .and_then(|v| v.parse().ok())
            .unwrap_or(0);
        if waiting >= n {
            break;
        }
        assert!(
            t.elapsed() < Duration::from_secs(300),
            "only {waiting} of {n} long-polls waiting"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    println!(
        "{n} agents fetched, reported and are long-polling after {:.2} s",
        t.elapsed().as_secs_f64()
    );
    let rss_waiting = proc_field(pid, "VmRSS:");
    println!(
        "cloud RSS with {n} long-polls waiting: {:.1} MiB",
        rss_waiting as f64 / 1024.0
    );

    // The rollout.
    let cpu_before = cpu_ticks(pid);
    let start = Instant::now();
    apply(2, 1).await;
    let committed = start.elapsed();
    let mut last = start;
    let mut count = 0;
    while let Some(at) = rx.recv().await {
        count += 1;
        last = last.max(at);
    }
    assert_eq!(count, n);
    let all_received = last.duration_since(start);
    for a in agents {
        a.await.unwrap();
    }
    let all_reported = start.elapsed();
    let status: serde_json::Value = http
        .get(format!("{url}/v1/status"))
        .bearer_auth(&admin)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let converged = status["devices"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|d| d["converged"] == true)
        .count();
    let cpu = (cpu_ticks(pid) - cpu_before) as f64 / 100.0;
    println!("apply → committed: {:.3} s", committed.as_secs_f64());
    println!(
        "apply → all {n} devices received revision 2: {:.3} s",
        all_received.as_secs_f64()
    );
    println!(
        "apply → all {n} devices reported it: {:.3} s ({converged}/{n} converged in /v1/status)",
        all_reported.as_secs_f64()
    );
    println!(
        "cloud CPU time during the rollout: {cpu:.2} s; peak RSS {:.1} MiB",
        proc_field(pid, "VmHWM:") as f64 / 1024.0
    );

    // The web console at this fleet size: what an open page first receives (the whole status,
    // as one server-sent event), and how long a device's report takes to reach it.
    let signed = http
        .post(format!("{url}/console/session"))
        .json(&serde_json::json!({ "token": admin }))
        .send()
        .await
        .unwrap();
    assert_eq!(signed.status(), 201);
    let cookie = signed.headers()["set-cookie"]
        .to_str()
        .unwrap()
        .split(';')
        .next()
        .unwrap()
        .to_owned();
    let t = Instant::now();
    let mut events = http
        .get(format!("{url}/console/events"))
        .header("Cookie", &cookie)
        .send()
        .await
        .unwrap();
    let mut buf = Vec::new();
    let first_end = loop {
        buf.extend_from_slice(&events.chunk().await.unwrap().expect("the first event"));
        if let Some(i) = buf.windows(2).position(|w| w == b"\n\n") {
            break i + 2;
        }
    };
    let first = t.elapsed();
    println!(
        "console, first page's status with {n} devices: {:.1} KiB in {:.0} ms",
        first_end as f64 / 1024.0,
        first.as_secs_f64() * 1000.0
    );
    buf.drain(..first_end);
    let (name, token) = (&names[0], &tokens[0]);
    let t = Instant::now();
    let r = http
        .post(format!("{url}/v1/devices/{name}/status"))
        .bearer_auth(token)
        .json(&serde_json::json!({"state": "failed", "message": "bench"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 204);
    let needle = format!("\"name\":\"{name}\"");
    loop {
        let text = String::from_utf8_lossy(&buf);
        if text.contains("event: delta") && text.contains(&needle) {
            break;
        }
        buf.extend_from_slice(&events.chunk().await.unwrap().expect("a delta"));
    }
    println!(
        "console, a device's report → the change in an open page: {:.0} ms (changes are sent at most every 250 ms)",
        t.elapsed().as_secs_f64() * 1000.0
    );

    // The overview as the console opens it now: one page of 100 devices, filtered on the server,
    // with the whole fleet's counts; and a report of a device on that page reaching it.
    let t = Instant::now();
    let mut paged = http
        .get(format!("{url}/console/events?page=0&size=100"))
        .header("Cookie", &cookie)
        .send()
        .await
        .unwrap();
    let mut buf = Vec::new();
    let first_end = loop {
        buf.extend_from_slice(&paged.chunk().await.unwrap().expect("the first page"));
        if let Some(i) = buf.windows(2).position(|w| w == b"\n\n") {
            break i + 2;
        }
    };
    let first = t.elapsed();
    println!(
        "console, first page (100 of {n} devices, with the fleet's counts): {:.1} KiB in {:.0} ms",
        first_end as f64 / 1024.0,
        first.as_secs_f64() * 1000.0
    );
    // Server time alone, over plain HTTP: the same page, 20 times.
    let t = Instant::now();
    for _ in 0..20 {
        let r = http
            .get(format!("{url}/v1/status/page?page=0&size=100"))
            .bearer_auth(&admin)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
        r.bytes().await.unwrap();
    }
    println!(
        "GET /v1/status/page (100 of {n} devices): {:.1} ms per request",
        t.elapsed().as_secs_f64() * 1000.0 / 20.0
    );
    buf.drain(..first_end);
    let t = Instant::now();
    let r = http
        .post(format!("{url}/v1/devices/{name}/status"))
        .bearer_auth(token)
        .json(&serde_json::json!({"state": "failed", "message": "paged"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 204);
    loop {
        let text = String::from_utf8_lossy(&buf);
        if text.contains("event: page") && text.contains("\"message\":\"paged\"") {
            break;
        }
        buf.extend_from_slice(&paged.chunk().await.unwrap().expect("a page"));
    }
    println!(
        "console, a device's report → the change in an open page of 100: {:.0} ms (changes are sent at most every 250 ms)",
        t.elapsed().as_secs_f64() * 1000.0
    );
    drop(paged);

    // A three-stage progressive rollout (5 % → 25 % → 100 %, no bake time): simulated agents
    // that follow every change (long-poll, report what they got, again); the time each stage
    // takes from its start to the next, as `GET /v1/rollout` shows it (polled every 10 ms).
    let mut followers = Vec::new();
    for (name, token) in names.iter().cloned().zip(tokens.iter().cloned()) {
        let (http, url) = (http.clone(), url.clone());
        followers.push(tokio::spawn(async move {
            let mut etag = String::new();
            // Until aborted at the end, or the cloud goes.
            loop {
                let mut req = http
                    .get(format!("{url}/v1/devices/{name}/desired?wait=30"))
                    .bearer_auth(&token);
                if !etag.is_empty() {
                    req = req.header("If-None-Match", format!("\"{etag}\""));
                }
                let Ok(r) = req.send().await else { break };
                if r.status() != 200 {
                    continue;
                }
                let Ok(v) = r.json::<serde_json::Value>().await else { break };
                etag = v["digest"].as_str().unwrap_or_default().to_owned();
                let body = serde_json::json!({"state": "running", "runningDigest": etag, "runningRevision": v["revision"]});
                let _ = http
                    .post(format!("{url}/v1/devices/{name}/status"))
                    .bearer_auth(&token)
                    .json(&body)
                    .send()
                    .await;
            }
        }));
    }
    let converged = || {
        let (http, url, admin) = (http.clone(), url.clone(), admin.clone());
        async move {
            let s: serde_json::Value = http
                .get(format!("{url}/v1/status"))
                .bearer_auth(&admin)
                .send()
                .await
                .unwrap()
                .json()
                .await
                .unwrap();
            s["devices"]
                .as_array()
                .unwrap()
                .iter()
                .filter(|d| d["converged"] == true)
                .count()
        }
    };
    let t = Instant::now();
    while converged().await < n {
        assert!(
            t.elapsed() < Duration::from_secs(300),
            "the followers did not converge"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let mut staged = manifest(n, 3);
    staged.push_str("rollout:\n  deadline: 5m\n  stages: [ { percent: 5 }, { percent: 25 }, { percent: 100 } ]\n");
    let body =
        serde_json::json!({"manifest": staged, "bundles": {"f": digest}, "expectedParent": 2});
    let cpu_before = cpu_ticks(pid);
    let start = Instant::now();
    let r = http
        .post(format!("{url}/v1/revisions"))
        .bearer_auth(&admin)
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201, "{}", r.text().await.unwrap());
    let (mut stage, mut stage_start) = (1u64, Instant::now());
    loop {
        let r: serde_json::Value = http
            .get(format!("{url}/v1/rollout"))
            .bearer_auth(&admin)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        let now_stage = r["stage"].as_u64().unwrap_or(0);
        let state = r["state"].as_str().unwrap_or_default().to_owned();
        if now_stage != stage || state != "running" {
            let devices = r["stages"][stage as usize - 1]["devices"]
                .as_array()
                .map_or(0, Vec::len);
            println!(
                "rollout stage {stage} ({devices} devices added): {:.3} s",
                stage_start.elapsed().as_secs_f64()
            );
            stage = now_stage;
            stage_start = Instant::now();
        }
        if state != "running" {
            assert_eq!(state, "completed", "{r}");
            break;
        }
        assert!(
            start.elapsed() < Duration::from_secs(600),
            "the rollout did not end: {r}"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    println!(
        "three-stage rollout of {n} devices: {:.3} s in all; cloud CPU time {:.2} s",
        start.elapsed().as_secs_f64(),
        (cpu_ticks(pid) - cpu_before) as f64 / 100.0
    );
    for f in followers {
        f.abort();
    }
    let _ = child.kill();
    let _ = child.wait();
}

/// Runs futures concurrently and collects their outputs in order.
async fn futures_join<F: std::future::Future<Output = T> + Send + 'static, T: Send + 'static>(
    futs: impl Iterator<Item = F>,
) -> Vec<T> {
    let handles: Vec<_> = futs.map(tokio::spawn).collect();
    let mut out = Vec::with_capacity(handles.len());
    for h in handles {
        out.push(h.await.unwrap());
    }
    out
}

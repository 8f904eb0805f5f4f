//! Memory per waiting device: the real `edgefn-cloud` with N devices long-polling over N real
//! TCP connections.
//!
//! ```sh
//! cargo bench -p edgefn-cloud --bench longpoll -- --devices 10000
//! # the same run against another build too (for example one made before a change), for a
//! # ratio measured on the same machine at the same time:
//! cargo bench -p edgefn-cloud --bench longpoll -- --devices 10000 --compare /tmp/edgefn-cloud-before
//! ```
//!
//! For each binary: start it on a loopback port with a temporary data folder, register N
//! devices, apply a revision that runs a function on all of them, fetch each device's desired
//! state once (64 connections, then closed), and read the cloud's RSS. Then open N TCP
//! connections, each sending the long-poll an agent sends (`GET /v1/devices/NAME/desired?wait=600`
//! with `If-None-Match: "<digest>"`), wait until the cloud's `/metrics` counts N long-polls
//! waiting, and read the RSS again. The connections open in two halves, and the second half's
//! growth divided by N/2 is the memory per waiting device (the first half may reuse memory the
//! allocator kept from the set-up; (after − before) / N is printed too). Last,
//! the long-polls still work: a new revision is applied and every connection must get its new
//! desired state (200, new ETag).
//!
//! Traffic goes only to 127.0.0.1; every wait is bounded in time. N connections need N file
//! descriptors in both this process and the cloud (`ulimit -n`).

#![allow(
    clippy::print_stdout,
    clippy::print_stderr,
    clippy::unwrap_used,
    clippy::expect_used
)]

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use edgefn_schema::bundle::{BundleFile, FileKind};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

fn arg(name: &str) -> Option<String> {
    let args: Vec<String> = std::env::args().collect();
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1))
        .cloned()
}

fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

fn manifest(n: usize, version: u32) -> String {
    let mut m = String::from(
        "apiVersion: edgefn/v1\nproject: longpoll-bench\nfunctions:\n  f:\n    path: functions/f\n    runtime: exec\n    handler: [\"./run.sh\"]\ndevices:\n",
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
    let n: usize = arg("--devices")
        .and_then(|v| v.parse().ok())
        .unwrap_or(10_000);
    let own = PathBuf::from(env!("CARGO_BIN_EXE_edgefn-cloud"));
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    let mut results = Vec::new();
    if let Some(other) = arg("--compare") {
        let other = PathBuf::from(other);
        results.push((other.display().to_string(), rt.block_on(run(&other, n))));
    }
    results.push(("this build".to_owned(), rt.block_on(run(&own, n))));
    println!();
    println!(
        "memory per waiting device ({n} long-polls; RSS growth of the second half / its count):"
    );
    for (name, per) in &results {
        println!("  {per:>6.2} KiB  {name}");
    }
    if let [(_, before), (_, after)] = results.as_slice() {
        println!("  ratio this build / compared: {:.3}", after / before);
    }
}

struct Cloud {
    child: std::process::Child,
    url: String,
    addr: String,
    admin: String,
    _data: tempfile::TempDir,
}

impl Drop for Cloud {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn start(bin: &Path) -> Cloud {
    let data = tempfile::tempdir().unwrap();
    let token_file = data.path().join("admin.token");
    let mut child = Command::new(bin)
        .args([
            "--data",
            data.path().join("cloud").to_str().unwrap(),
            "--listen",
            "127.0.0.1:0",
            "--admin-token-file",
            token_file.to_str().unwrap(),
            "--mqtt-listen",
            "none",
            "--log-level",
            "warn",
        ])
        .stdout(Stdio::piped())
        .spawn()
        .expect("start edgefn-cloud");
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let url = loop {
        let line = lines
            .next()
            .expect("the cloud says where it listens")
            .unwrap();
        if let Some(u) = line.strip_prefix("edgefn-cloud listening on ") {
            break u.to_owned();
        }
    };
    let admin = std::fs::read_to_string(&token_file)
        .unwrap()
        .trim()
        .to_owned();
    let addr = url.trim_start_matches("http://").to_owned();
    Cloud {
        child,
        url,
        addr,
        admin,
        _data: data,
    }
}

async fn join_all<T: Send + 'static>(
    futs: impl IntoIterator<Item = impl std::future::Future<Output = T> + Send + 'static>,
) -> Vec<T> {
    let handles: Vec<_> = futs.into_iter().map(tokio::spawn).collect();
    let mut out = Vec::with_capacity(handles.len());
    for h in handles {
        out.push(h.await.unwrap());
    }
    out
}

/// The long-polls waiting, from the cloud's `/metrics`.
async fn waiting(http: &reqwest::Client, cloud: &Cloud) -> usize {
    let m = http
        .get(format!("{}/metrics", cloud.url))
        .bearer_auth(&cloud.admin)
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    m.lines()
        .find_map(|l| l.strip_prefix("edgefn_longpolls_waiting "))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

/// Reads one HTTP/1.1 response's head and `Content-Length` body (at most 1 MiB), returning the
/// status code and the ETag.
async fn read_response(stream: &mut TcpStream) -> (u16, String) {
    let mut buf = Vec::with_capacity(4096);
    let mut chunk = [0u8; 4096];
    loop {
        let k = tokio::time::timeout(Duration::from_secs(120), stream.read(&mut chunk))
            .await
            .expect("an answer within 120 s")
            .unwrap();
        assert!(k > 0, "connection closed before an answer");
        buf.extend_from_slice(&chunk[..k]);
        assert!(buf.len() < 1 << 20, "answer too large");
        let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") else {
            continue;
        };
        let head = String::from_utf8_lossy(&buf[..end]).to_ascii_lowercase();
        let status: u16 = head
            .split_whitespace()
            .nth(1)
            .and_then(|s| s.parse().ok())
            .unwrap_or(0);
        let header = |name: &str| {
            head.lines()
                .find_map(|l| l.strip_prefix(name))
                .map(|v| v.trim().to_owned())
                .unwrap_or_default()
        };
        let len: usize = header("content-length:").parse().unwrap_or(0);
        if buf.len() >= end + 4 + len {
            return (status, header("etag:"));
        }
    }
}

/// Memory per waiting device (KiB) for the cloud binary `bin`.
async fn run(bin: &Path, n: usize) -> f64 {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let cloud = start(bin);
    let pid = cloud.child.id();
    println!("{}: pid {pid} at {}", bin.display(), cloud.url);
    // One connection for the admin's requests; a pool of 64 for the devices' first requests,
    // closed before the measurement.
    let http = reqwest::Client::builder()
        .pool_max_idle_per_host(1)
        .timeout(Duration::from_secs(120))
        .build()
        .unwrap();
    let pool = reqwest::Client::builder()
        .pool_max_idle_per_host(64)
        .timeout(Duration::from_secs(120))
        .build()
        .unwrap();

    let t = Instant::now();
    let names: Vec<String> = (0..n).map(|i| format!("dev-{i:05}")).collect();
    let mut tokens = Vec::with_capacity(n);
    for chunk in names.chunks(64) {
        tokens.extend(
            join_all(chunk.iter().cloned().map(|name| {
                let (http, url, admin) = (pool.clone(), cloud.url.clone(), cloud.admin.clone());
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
            }))
            .await,
        );
    }
    println!(
        "  registered {n} devices in {:.1} s",
        t.elapsed().as_secs_f64()
    );

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
        .put(format!("{}/v1/bundles/{digest}", cloud.url))
        .bearer_auth(&cloud.admin)
        .body(bytes)
        .send()
        .await
        .unwrap();
    assert!(r.status().is_success());
    let apply = |version: u32, parent: u64| {
        let (http, url, admin, digest) = (
            http.clone(),
            cloud.url.clone(),
            cloud.admin.clone(),
            digest.clone(),
        );
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
    apply(1, 0).await;

    // Each device's digest, as its agent would know it.
    let mut etags = Vec::with_capacity(n);
    let pairs: Vec<(String, String)> = names.iter().cloned().zip(tokens.iter().cloned()).collect();
    for chunk in pairs.chunks(64) {
        etags.extend(
            join_all(chunk.iter().cloned().map(|(name, token)| {
                let (http, url) = (pool.clone(), cloud.url.clone());
                async move {
                    let r = http
                        .get(format!("{url}/v1/devices/{name}/desired"))
                        .bearer_auth(&token)
                        .send()
                        .await
                        .unwrap();
                    let v: serde_json::Value = r.json().await.unwrap();
                    v["digest"].as_str().unwrap().to_owned()
                }
            }))
            .await,
        );
    }
    // Close the pool's connections; let the cloud settle.
    drop(pool);
    // Past jemalloc's 10 s decay of freed pages.
    tokio::time::sleep(Duration::from_secs(12)).await;
    let before = rss_kib(pid);
    println!(
        "  RSS with {n} devices, none waiting: {:.1} MiB",
        before as f64 / 1024.0
    );

    // N long-polls on N connections, in two halves: memory freed earlier (and kept by the
    // allocator) is reused by the first half, so the second half's growth is the cost of a
    // waiting device.
    let half = n / 2;
    let t = Instant::now();
    let mut streams: Vec<TcpStream> = Vec::with_capacity(n);
    let mut rss = Vec::new();
    for range in [0..half, half..n] {
        let end = range.end;
        for chunk in range.collect::<Vec<_>>().chunks(256) {
            streams.extend(
                join_all(chunk.iter().map(|&i| {
                    let addr = cloud.addr.clone();
                    let request = format!(
                        "GET /v1/devices/{}/desired?wait=600 HTTP/1.1\r\nhost: {addr}\r\naccept: */*\r\nauthorization: Bearer {}\r\nif-none-match: \"{}\"\r\n\r\n",
                        names[i], tokens[i], etags[i]
                    );
                    async move {
                        let mut s = TcpStream::connect(&addr).await.unwrap();
                        s.write_all(request.as_bytes()).await.unwrap();
                        s
                    }
                }))
                .await,
            );
        }
        loop {
            let w = waiting(&http, &cloud).await;
            if w >= end {
                break;
            }
            assert!(
                t.elapsed() < Duration::from_secs(300),
                "only {w} of {end} long-polls waiting"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        tokio::time::sleep(Duration::from_secs(2)).await;
        rss.push(rss_kib(pid));
        println!(
            "  {end} long-polls waiting after {:.1} s: RSS {:.1} MiB",
            t.elapsed().as_secs_f64(),
            rss[rss.len() - 1] as f64 / 1024.0
        );
    }
    let whole = rss[1].saturating_sub(before) as f64 / n as f64;
    let per = rss[1].saturating_sub(rss[0]) as f64 / (n - half) as f64;
    println!(
        "  per waiting device: {per:.2} KiB (second half's growth / {}); {whole:.2} KiB (all N / N)",
        n - half
    );

    // The long-polls still answer: a new revision reaches every connection.
    let t = Instant::now();
    apply(2, 1).await;
    let answers = join_all(
        streams
            .into_iter()
            .map(|mut s| async move { read_response(&mut s).await }),
    )
    .await;
    for (i, (status, etag)) in answers.iter().enumerate() {
        assert_eq!(*status, 200, "device {i}");
        assert_ne!(
            etag.trim_matches('"'),
            etags[i],
            "device {i} got a new state"
        );
    }
    println!(
        "  revision 2 reached all {n} waiting devices in {:.2} s",
        t.elapsed().as_secs_f64()
    );
    per
}

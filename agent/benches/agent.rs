//! Agent benchmark: idle memory, apply-to-running latency, and the trigger pause of a switch.
//!
//! ```sh
//! cargo bench -p edgefn-agent --bench agent
//! # the packaged static build instead of this build's binary:
//! EDGEFN_AGENT_BIN=target/x86_64-unknown-linux-musl/release/edgefn-agent cargo bench -p edgefn-agent --bench agent
//! ```
//!
//! A real control plane runs in this process on a loopback port; the real `edgefn-agent` binary
//! (release build) runs the quickstart example's release for device `gw-01` with the process
//! sandbox. It reports:
//! - the agent's RSS once the release runs and idles (function processes excluded), the largest
//!   mappings in it, and its idle working set (pages referenced in 5 s of idling);
//! - for 10 updates, the time from the revision's submission until the agent runs it (its local
//!   endpoint names the new digest) and until the cloud shows the device converged;
//! - the latency of triggers sent back to back through the local endpoint while those updates
//!   switch, p50 / p99 / max, against the same stream with no update.

#![allow(
    clippy::print_stdout,
    clippy::print_stderr,
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::disallowed_methods
)]

mod common;
use common::{agent_bin, control_plane, http};

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use edgefn_schema::bundle::{self, BundleFile, FileKind};

fn files(dir: &Path, rel: &str, out: &mut Vec<BundleFile>) {
    for e in std::fs::read_dir(dir).unwrap().flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        let path = if rel.is_empty() {
            name.clone()
        } else {
            format!("{rel}/{name}")
        };
        if e.file_type().unwrap().is_dir() {
            if !(rel.is_empty() && name == "tests") {
                files(&e.path(), &path, out);
            }
        } else {
            use std::os::unix::fs::PermissionsExt;
            let executable = e.metadata().unwrap().permissions().mode() & 0o111 != 0;
            out.push(BundleFile {
                path,
                kind: FileKind::Regular {
                    data: std::fs::read(e.path()).unwrap(),
                    executable,
                },
            });
        }
    }
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    sorted[((sorted.len() - 1) as f64 * p).round() as usize]
}

fn main() {
    let quickstart = Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/quickstart");
    let data = tempfile::tempdir().unwrap();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();

    // The control plane, in this process.
    let (cloud, admin) = control_plane(&rt, data.path());

    // Bundles and revision 1 of the quickstart.
    let manifest_text = std::fs::read_to_string(quickstart.join("edgefn.yaml")).unwrap();
    let mut bundles = BTreeMap::new();
    for f in ["temp-filter", "greeter", "collector"] {
        let mut list = Vec::new();
        files(&quickstart.join("functions").join(f), "", &mut list);
        let bytes = bundle::pack(list).unwrap();
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
        bundles.insert(f.to_owned(), digest);
    }
    let submit = |threshold: u32, parent: u64| {
        let m = manifest_text.replace("THRESHOLD: \"40\"", &format!("THRESHOLD: \"{threshold}\""));
        let body = serde_json::json!({"manifest": m, "bundles": bundles, "expectedParent": parent})
            .to_string();
        let (status, b) = http(
            &cloud,
            "POST",
            "/v1/revisions",
            Some(&admin),
            body.as_bytes(),
        );
        assert_eq!(status, 201, "{}", String::from_utf8_lossy(&b));
    };
    let desired_digest = || {
        let (_, b) = http(&cloud, "GET", "/v1/status", Some(&admin), b"");
        let v: serde_json::Value = serde_json::from_slice(&b).unwrap();
        let d = v["devices"]
            .as_array()
            .unwrap()
            .iter()
            .find(|d| d["name"] == "gw-01")
            .unwrap()
            .clone();
        (
            d["desiredDigest"].as_str().unwrap().to_owned(),
            d["converged"] == true,
        )
    };
    submit(40, 0);
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
    std::fs::write(&agent_config, format!("cloud: http://{cloud}\ndevice: gw-01\ntoken: {token}\nhealthWindow: 1s\npollWait: 30s\nreportInterval: 5s\n")).unwrap();

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
            "127.0.0.1:0",
            "--log-level",
            "warn",
        ])
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let pid = agent.id();
    let mut lines = BufReader::new(agent.stdout.take().unwrap()).lines();
    let local = loop {
        let l = lines.next().unwrap().unwrap();
        if let Some((_, a)) = l.split_once("listening on http://") {
            break a.split(' ').next().unwrap_or(a).to_owned();
        }
    };
    let running = || -> String {
        let (_, b) = http(&local, "GET", "/healthz", None, b"");
        serde_json::from_slice::<serde_json::Value>(&b).unwrap()["running"]
            .as_str()
            .unwrap_or_default()
            .to_owned()
    };
    let t = Instant::now();
    while !desired_digest().1 {
        assert!(
            t.elapsed() < Duration::from_secs(60),
            "the agent did not converge"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    std::thread::sleep(Duration::from_secs(2));
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let field = |name: &str| {
        status
            .lines()
            .find(|l| l.starts_with(name))
            .unwrap()
            .split_whitespace()
            .nth(1)
            .unwrap()
            .parse::<f64>()
            .unwrap()
            / 1024.0
    };
    let (rss, anon, file) = (field("VmRSS:"), field("RssAnon:"), field("RssFile:"));
    println!(
        "agent RSS with the quickstart release running (function processes excluded): {rss:.1} MiB = {anon:.1} MiB anonymous (heap, stacks) + {file:.1} MiB mapped from files (its code and libc's: shared, reclaimable)"
    );
    // Where the resident memory is, by mapping (the largest few).
    let smaps = std::fs::read_to_string(format!("/proc/{pid}/smaps")).unwrap_or_default();
    let mut by_map: BTreeMap<String, u64> = BTreeMap::new();
    let mut current = String::new();
    for line in smaps.lines() {
        let mut words = line.split_whitespace();
        let first = words.next().unwrap_or_default();
        if first.contains('-') && first.chars().next().is_some_and(|c| c.is_ascii_hexdigit()) {
            let perms = words.next().unwrap_or_default();
            let path = words.nth(3).unwrap_or("[anonymous]");
            let path = path.rsplit('/').next().unwrap_or(path);
            current = format!("{path} {perms}");
        } else if first == "Rss:" {
            *by_map.entry(current.clone()).or_default() += words
                .next()
                .and_then(|k| k.parse::<u64>().ok())
                .unwrap_or(0);
        }
    }
    let mut by_map: Vec<_> = by_map.into_iter().filter(|(_, kib)| *kib >= 128).collect();
    by_map.sort_by_key(|(_, kib)| std::cmp::Reverse(*kib));
    for (map, kib) in by_map.iter().take(8) {
        println!("  {:>6.2} MiB  {map}", *kib as f64 / 1024.0);
    }
    // The idle working set: what the agent touches in 5 s of idling (the rest of its RSS is code
    // run once at start-up, and neighbours the kernel maps around each page it faults in).
    if std::fs::write(format!("/proc/{pid}/clear_refs"), "1").is_ok() {
        std::thread::sleep(Duration::from_secs(5));
        let smaps = std::fs::read_to_string(format!("/proc/{pid}/smaps")).unwrap_or_default();
        let referenced: u64 = smaps
            .lines()
            .filter_map(|l| l.strip_prefix("Referenced:"))
            .filter_map(|v| v.split_whitespace().next()?.parse::<u64>().ok())
            .sum();
        println!(
            "agent idle working set (pages touched in 5 s idle): {:.1} MiB",
            referenced as f64 / 1024.0
        );
    }

    // A back-to-back trigger stream.
    let stream = |stop: Arc<AtomicBool>, out: Arc<Mutex<Vec<Duration>>>| {
        let local = local.clone();
        std::thread::spawn(move || {
            while !stop.load(Ordering::Relaxed) {
                let t = Instant::now();
                let (status, _) = http(
                    &local,
                    "POST",
                    "/v1/publish?topic=sensors/l1/temperature&wait=true",
                    None,
                    br#"{"celsius": 45}"#,
                );
                assert_eq!(status, 200);
                out.lock().unwrap().push(t.elapsed());
            }
        })
    };
    let quiet = Arc::new(Mutex::new(Vec::new()));
    let stop = Arc::new(AtomicBool::new(false));
    let h = stream(stop.clone(), quiet.clone());
    std::thread::sleep(Duration::from_secs(3));
    stop.store(true, Ordering::Relaxed);
    h.join().unwrap();

    let busy = Arc::new(Mutex::new(Vec::new()));
    let stop = Arc::new(AtomicBool::new(false));
    let h = stream(stop.clone(), busy.clone());
    let mut to_running = Vec::new();
    let mut to_converged = Vec::new();
    for i in 0..10u32 {
        let before = running();
        let t = Instant::now();
        submit(41 + i, u64::from(i) + 1);
        let (want, _) = desired_digest();
        assert_ne!(want, before);
        while running() != want {
            assert!(t.elapsed() < Duration::from_secs(60));
            std::thread::sleep(Duration::from_millis(1));
        }
        to_running.push(t.elapsed());
        while !desired_digest().1 {
            assert!(t.elapsed() < Duration::from_secs(60));
            std::thread::sleep(Duration::from_millis(5));
        }
        to_converged.push(t.elapsed());
        std::thread::sleep(Duration::from_millis(300));
    }
    stop.store(true, Ordering::Relaxed);
    h.join().unwrap();

    let report = |name: &str, v: &Mutex<Vec<Duration>>| {
        let mut v = v.lock().unwrap().clone();
        v.sort();
        println!(
            "{name}: {} triggers, p50 {:.2} ms, p99 {:.2} ms, max {:.2} ms",
            v.len(),
            percentile(&v, 0.5).as_secs_f64() * 1e3,
            percentile(&v, 0.99).as_secs_f64() * 1e3,
            v.last().copied().unwrap_or_default().as_secs_f64() * 1e3
        );
    };
    report("trigger round trip, no update", &quiet);
    report("trigger round trip, 10 updates switching", &busy);
    to_running.sort();
    to_converged.sort();
    println!(
        "apply → the agent runs the new release: p50 {:.0} ms, max {:.0} ms (10 updates)",
        percentile(&to_running, 0.5).as_secs_f64() * 1e3,
        to_running.last().unwrap().as_secs_f64() * 1e3
    );
    println!(
        "apply → the cloud shows the device converged (after a 1 s health window): p50 {:.0} ms, max {:.0} ms",
        percentile(&to_converged, 0.5).as_secs_f64() * 1e3,
        to_converged.last().unwrap().as_secs_f64() * 1e3
    );
    let _ = agent.kill();
    let _ = agent.wait();
}

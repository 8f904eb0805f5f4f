//! Fleet benchmark against control-plane replicas (two by default) on one PostgreSQL, with one
//! of them SIGKILLed in the middle of a rollout.
//!
//! ```sh
//! cargo bench -p edgefn-cloud --bench replicas -- --devices 10000
//! cargo bench -p edgefn-cloud --bench replicas -- --devices 100000 --replicas 7
//! # where memory goes, without freed memory the allocator keeps:
//! _RJEM_MALLOC_CONF=dirty_decay_ms:0,muzzy_decay_ms:0 cargo bench -p edgefn-cloud --bench replicas -- --devices 10000
//! ```
//!
//! Needs PostgreSQL's programs (`apt-get install postgresql`; `scripts/test.sh` installs them).
//! Each device holds a TCP connection in a simulator process and in a replica, so each replica
//! needs N / (K - 1) + 1,500 open files once one of the K is killed: the benchmark refuses to
//! start when the hard limit (`ulimit -Hn`) is lower, saying to add replicas. Simulated devices
//! run in this process, or spread over simulator processes (this binary with `--simulate`)
//! when one cannot hold them all; `--simulators S` sets their number.
//!
//! What it runs: a throwaway PostgreSQL cluster (`tests/common/postgres.rs`: its own `initdb`,
//! `fsync=off`, so the database's disk is not measured, its CPU is) with `pg_stat_statements`;
//! K `edgefn-cloud` processes (release build) on it with `--store postgres://…` (A takes the
//! applies, B is the one killed); N devices registered through them, and a revision binding a
//! function to all of them. Then N
//! light simulated agents, each one TCP connection speaking HTTP/1.1 as an agent does: the
//! desired state (long-poll with `If-None-Match`, `wait=120`), a status report for each new
//! state, again. Device i talks to replica i mod K, as a round-robin balancer would spread them;
//! when its connection fails it waits as the agent does (0.5–1 s, `agent/src/retry.rs`) and goes
//! to the next replica, as a balancer that health-checks its backends would send it. Devices
//! join in two steps — fetch and report, hang up; then long-poll — so that replica A's memory
//! is measured per device for each.
//!
//! Measured, for an apply through A with every device long-polling:
//!
//! 1. all replicas up: apply → every device has received the revision, → every device has
//!    reported it, → replica A's `GET /v1/status/page` counts all N converged;
//! 2. the same apply with replica B SIGKILLed when half the devices have received it: B's devices
//!    reconnect to another replica and converge through it.
//!
//! For each: the CPU time of each replica and of PostgreSQL (the postmaster and its backends,
//! from /proc; the backends of the killed replica included), the statements' execution time and
//! count and the six that took longest (`pg_stat_statements`, reset at each apply); the
//! replicas' RSS while all devices wait. Last, replica A's history must hold each revision once.
//! (Not `pg_stat_database.xact_commit`: an idle backend reports its counts up to 10 s late, and
//! a killed replica's backends all at once.)
//!
//! Traffic goes only to 127.0.0.0/8 (the devices use source addresses 127.0.0.2, .3, … so that
//! 100,000 connections do not run out of ephemeral ports); every wait is bounded in time.

#![allow(
    clippy::print_stdout,
    clippy::print_stderr,
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::disallowed_methods
)]

#[path = "../../tests/common/postgres.rs"]
mod pg;

use std::io::{BufRead, BufReader};
use std::net::{Ipv4Addr, SocketAddr};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use edgefn_schema::bundle::{BundleFile, FileKind};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};

/// Devices per source address. Linux has about 28,000 ephemeral ports, and `bind` to port 0
/// takes the even ones first (leaving odd ones to `connect`): with 10,000 devices an address,
/// reconnecting thousands at once made the port search itself the bottleneck.
const DEVICES_PER_SOURCE: usize = 4_000;
/// Longest wait for any phase.
const PHASE_LIMIT: Duration = Duration::from_secs(900);

fn arg(name: &str, default: usize) -> usize {
    let args: Vec<String> = std::env::args().collect();
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn proc_status_kib(pid: u32, key: &str) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix(key))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

/// (ppid, utime + stime in clock ticks) of a process.
fn stat(pid: u32) -> Option<(u32, u64)> {
    stat_with_children(pid).map(|(ppid, own, _)| (ppid, own))
}

/// Parent pid, CPU ticks of process `pid` itself, and those of its children it waited for.
fn stat_with_children(pid: u32) -> Option<(u32, u64, u64)> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let after = stat.rsplit_once(')')?.1;
    let f: Vec<&str> = after.split_whitespace().collect();
    let num = |i: usize| f.get(i).and_then(|v| v.parse::<u64>().ok());
    Some((
        u32::try_from(num(1)?).ok()?,
        num(11)? + num(12)?,
        num(13)? + num(14)?,
    ))
}

/// CPU seconds of a process.
fn cpu_secs(pid: u32) -> f64 {
    stat(pid).map_or(0.0, |(_, t)| t as f64 / 100.0)
}

/// CPU seconds of PostgreSQL: the postmaster, every process it started, and those that ended
/// (the backends of a killed replica: counted in the postmaster's children's time once it
/// waited for them).
fn pg_cpu_secs(postmaster: u32) -> f64 {
    let mut ticks = stat_with_children(postmaster).map_or(0, |(_, own, children)| own + children);
    for e in std::fs::read_dir("/proc").unwrap().flatten() {
        let Some(pid) = e.file_name().to_str().and_then(|s| s.parse::<u32>().ok()) else {
            continue;
        };
        if let Some((ppid, t)) = stat(pid)
            && ppid == postmaster
        {
            ticks += t;
        }
    }
    ticks as f64 / 100.0
}

fn manifest(n: usize, version: u32) -> String {
    let mut m = String::with_capacity(n * 40 + 512);
    m.push_str(
        "apiVersion: edgefn/v1\nproject: fleet-bench\nfunctions:\n  f:\n    path: functions/f\n    runtime: exec\n    handler: [\"./run.sh\"]\ndevices:\n",
    );
    for i in 0..n {
        m.push_str(&format!("  dev-{i:06}: {{ labels: {{ role: sim }} }}\n"));
    }
    m.push_str(&format!(
        "bindings:\n  - function: f\n    devices: {{ labels: {{ role: sim }} }}\n    mode: continuous\n    env: {{ VERSION: \"{version}\" }}\n"
    ));
    m
}

/// One `edgefn-cloud` replica.
struct Replica {
    child: Child,
    url: String,
    addr: SocketAddr,
}

impl Replica {
    fn start(
        name: &'static str,
        dir: &std::path::Path,
        token: &std::path::Path,
        store: &str,
    ) -> Replica {
        let log = std::fs::File::create(dir.join(format!("{name}.log"))).unwrap();
        let mut child = Command::new(env!("CARGO_BIN_EXE_edgefn-cloud"))
            .arg("--data")
            .arg(dir.join(name))
            .args(["--listen", "127.0.0.1:0", "--mqtt-listen", "none"])
            .arg("--admin-token-file")
            .arg(token)
            .args(["--store", store, "--log-level", "warn"])
            .stdout(Stdio::piped())
            .stderr(Stdio::from(log))
            .spawn()
            .expect("start edgefn-cloud");
        let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
        let url = loop {
            let line = lines
                .next()
                .unwrap_or_else(|| panic!("replica {name} exited; see its log"))
                .unwrap();
            if let Some(u) = line.strip_prefix("edgefn-cloud listening on ") {
                break u.to_owned();
            }
        };
        std::thread::spawn(move || for _ in lines {});
        let addr = url.trim_start_matches("http://").parse().unwrap();
        Replica { child, url, addr }
    }

    fn pid(&self) -> u32 {
        self.child.id()
    }
}

impl Drop for Replica {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// What the simulated devices have done, shared with the measuring loop.
struct Progress {
    /// By revision (index), how many devices have received it / reported it running.
    received: Vec<AtomicUsize>,
    reported: Vec<AtomicUsize>,
    /// Connections opened again after a failure.
    reconnects: AtomicU64,
}

const MAX_REVISION: usize = 8;

impl Progress {
    /// The counters as a simulator process prints them.
    fn line(&self) -> String {
        let mut out = String::from("P");
        for c in self.received.iter().chain(&self.reported) {
            out.push_str(&format!(" {}", c.load(Ordering::Relaxed)));
        }
        out.push_str(&format!(" {}", self.reconnects.load(Ordering::Relaxed)));
        out
    }

    fn new() -> Progress {
        Progress {
            received: (0..=MAX_REVISION).map(|_| AtomicUsize::new(0)).collect(),
            reported: (0..=MAX_REVISION).map(|_| AtomicUsize::new(0)).collect(),
            reconnects: AtomicU64::new(0),
        }
    }
}

#[derive(serde::Deserialize)]
struct Desired {
    revision: u64,
    digest: String,
}

/// Reads one HTTP/1.1 answer (head and a `Content-Length` body of at most 1 MiB): status, body.
async fn read_answer(s: &mut TcpStream, buf: &mut Vec<u8>) -> std::io::Result<(u16, Vec<u8>)> {
    buf.clear();
    let mut chunk = [0u8; 4096];
    loop {
        let k = s.read(&mut chunk).await?;
        if k == 0 {
            return Err(std::io::ErrorKind::UnexpectedEof.into());
        }
        buf.extend_from_slice(&chunk[..k]);
        if buf.len() > 1 << 20 {
            return Err(std::io::Error::other("answer over 1 MiB"));
        }
        let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") else {
            continue;
        };
        let head = String::from_utf8_lossy(&buf[..end]).to_ascii_lowercase();
        let status = head
            .split_whitespace()
            .nth(1)
            .and_then(|v| v.parse().ok())
            .unwrap_or(0);
        let len: usize = head
            .lines()
            .find_map(|l| l.strip_prefix("content-length:"))
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or(0);
        if buf.len() >= end + 4 + len {
            return Ok((status, buf[end + 4..end + 4 + len].to_vec()));
        }
    }
}

/// One simulated agent: long-poll, report each new state, again; on a failed connection wait
/// 0.5–1 s and go to another replica ([`next`]). Runs until aborted.
#[allow(clippy::too_many_arguments)]
async fn device(
    i: usize,
    name: String,
    token: String,
    replicas: Arc<[SocketAddr]>,
    progress: Arc<Progress>,
    first: Arc<tokio::sync::Semaphore>,
    mut wait: tokio::sync::watch::Receiver<bool>,
) {
    let source = Ipv4Addr::new(127, 0, 0, 2 + u8::try_from(i / DEVICES_PER_SOURCE).unwrap());
    let mut home = i % replicas.len();
    let mut etag = String::new();
    // A state received but not yet reported (the report failed with the connection).
    let mut unreported: Option<Desired> = None;
    let mut permit = Some(first.acquire_owned().await.unwrap());
    let mut buf = Vec::with_capacity(4096);
    let mut failures = 0u32;
    loop {
        let conn = async {
            let sock = TcpSocket::new_v4()?;
            sock.bind(SocketAddr::new(source.into(), 0))?;
            sock.connect(replicas[home]).await
        };
        let mut s = match conn.await {
            Ok(s) => s,
            Err(_) => {
                failures += 1;
                home = next(home, i, replicas.len());
                tokio::time::sleep(backoff()).await;
                continue;
            }
        };
        if failures > 0 {
            progress.reconnects.fetch_add(1, Ordering::Relaxed);
        }
        let result: std::io::Result<bool> = async {
            loop {
                if let Some(d) = &unreported {
                    let body = format!(
                        "{{\"state\":\"running\",\"runningDigest\":\"{}\",\"runningRevision\":{}}}",
                        d.digest, d.revision
                    );
                    let req = format!(
                        "POST /v1/devices/{name}/status HTTP/1.1\r\nhost: edgefn\r\nauthorization: Bearer {token}\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n{body}",
                        body.len()
                    );
                    s.write_all(req.as_bytes()).await?;
                    let (status, _) = read_answer(&mut s, &mut buf).await?;
                    if status != 204 {
                        return Err(std::io::Error::other(format!("report answered {status}")));
                    }
                    let rev = usize::try_from(d.revision).unwrap().min(MAX_REVISION);
                    progress.reported[rev].fetch_add(1, Ordering::Relaxed);
                    unreported = None;
                    if permit.take().is_some() {
                        // Joined: hang up until every device has, so that the replicas' memory
                        // for reports is measured apart from that for waiting connections.
                        return Ok(true);
                    }
                }
                let if_none_match = if etag.is_empty() {
                    String::new()
                } else {
                    format!("if-none-match: \"{etag}\"\r\n")
                };
                let req = format!(
                    "GET /v1/devices/{name}/desired?wait=120 HTTP/1.1\r\nhost: edgefn\r\nauthorization: Bearer {token}\r\n{if_none_match}\r\n"
                );
                s.write_all(req.as_bytes()).await?;
                let (status, body) = read_answer(&mut s, &mut buf).await?;
                match status {
                    200 => {
                        let d: Desired = serde_json::from_slice(&body)
                            .map_err(|e| std::io::Error::other(e.to_string()))?;
                        let rev = usize::try_from(d.revision).unwrap().min(MAX_REVISION);
                        progress.received[rev].fetch_add(1, Ordering::Relaxed);
                        etag.clone_from(&d.digest);
                        unreported = Some(d);
                    }
                    304 => {}
                    other => return Err(std::io::Error::other(format!("desired answered {other}"))),
                }
            }
        }
        .await;
        if matches!(result, Ok(true)) {
            // Reset rather than close: a closed connection's port stays in TIME_WAIT for a
            // minute, and binding 10,000 more beside those slows the kernel's port search.
            let _ = s.set_zero_linger();
            drop(s);
            let _ = wait.wait_for(|go| *go).await;
            continue;
        }
        if result.is_err() {
            failures += 1;
            // A closed or reset connection: the replica is gone, go to the other one (a
            // balancer's redispatch). An HTTP error from a live replica: try it again.
            let gone = matches!(&result, Err(e) if e.kind() != std::io::ErrorKind::Other);
            if gone {
                home = next(home, i, replicas.len());
            }
            tokio::time::sleep(backoff()).await;
        }
    }
}

/// The replica device `i` tries after a failure on replica `home` (of `k`): the devices of a
/// failed replica spread evenly over the others, as a round-robin balancer sends them.
fn next(home: usize, i: usize, k: usize) -> usize {
    (home + 1 + (i / k) % (k - 1)) % k
}

/// The agent's first retry delay: uniformly random in [0.5 s, 1 s] (`agent/src/retry.rs`).
fn backoff() -> Duration {
    edgefn_os::backoff::Backoff::new(Duration::from_secs(1), Duration::from_secs(60)).delay(0)
}

fn main() {
    if let Some(i) = std::env::args().position(|a| a == "--simulate") {
        let args: Vec<String> = std::env::args().skip(i + 1).collect();
        simulate(&args);
        return;
    }
    let n = arg("--devices", 10_000);
    let k = arg("--replicas", 2);
    assert!(k >= 2, "--replicas: at least 2 (one is killed)");
    assert!(
        n <= DEVICES_PER_SOURCE * 200,
        "at most {} devices",
        DEVICES_PER_SOURCE * 200
    );
    // Each device is a connection in a simulator process and in a replica: once the last
    // replica is killed, the others hold its devices too (plus their pools').
    let hard = edgefn_os::limits::raise_open_files(None).map_or(0, |l| l.hard);
    let per_replica = u64::try_from(n.div_ceil(k - 1)).unwrap() + 1_500;
    assert!(
        per_replica <= hard,
        "{n} devices over {k} replicas need {per_replica} open files in each replica once one is \
         killed, but the hard limit is {hard} (raising it takes root with CAP_SYS_RESOURCE): \
         raise `ulimit -Hn`, or run with more --replicas or fewer --devices"
    );
    // Simulated devices per process: as many as its open files allow.
    let per_simulator = usize::try_from(hard.saturating_sub(1_000)).unwrap().max(1);
    let simulators = arg("--simulators", n.div_ceil(per_simulator).max(1)).max(1);
    println!(
        "open-files limit: {hard}; {k} replicas; {n} devices in {simulators} simulator process{}",
        if simulators == 1 { "" } else { "es" }
    );
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(run(n, k, simulators));
}

/// A simulator process (`--simulate FROM TO ADDR,ADDR,… TOKENS`): devices FROM..TO of the
/// tokens file (one token a line, device i named `dev-{i:06}`), against the replicas at the
/// addresses. Prints its counters (`P`, then received and reported by revision, then
/// reconnects) when they change; starts long-polling at a `go` line on stdin, and exits when
/// stdin closes (the benchmark ended or died).
fn simulate(args: &[String]) {
    let from: usize = args[0].parse().unwrap();
    let to: usize = args[1].parse().unwrap();
    let addrs: Arc<[SocketAddr]> = args[2].split(',').map(|a| a.parse().unwrap()).collect();
    let tokens: Vec<String> = std::fs::read_to_string(&args[3])
        .unwrap()
        .lines()
        .skip(from)
        .take(to - from)
        .map(str::to_owned)
        .collect();
    let _ = edgefn_os::limits::raise_open_files(None);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async move {
        let progress = Arc::new(Progress::new());
        let (go_tx, go_rx) = tokio::sync::watch::channel(false);
        let _devices = spawn_devices(from, &tokens, &addrs, &progress, &go_rx);
        std::thread::spawn(move || {
            for line in std::io::stdin().lines() {
                match line {
                    Ok(l) if l.trim() == "go" => {
                        go_tx.send_replace(true);
                    }
                    Ok(_) => {}
                    Err(_) => break,
                }
            }
            std::process::exit(0);
        });
        let mut last = String::new();
        loop {
            let now = progress.line();
            if now != last {
                println!("{now}");
                last = now;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    });
}

/// Spawns devices `first`.. with `tokens` (device i is `dev-{i:06}`).
fn spawn_devices(
    first: usize,
    tokens: &[String],
    addrs: &Arc<[SocketAddr]>,
    progress: &Arc<Progress>,
    go: &tokio::sync::watch::Receiver<bool>,
) -> Vec<tokio::task::JoinHandle<()>> {
    // 512 joining at a time.
    let joining = Arc::new(tokio::sync::Semaphore::new(512));
    tokens
        .iter()
        .enumerate()
        .map(|(k, token)| {
            let i = first + k;
            tokio::spawn(device(
                i,
                format!("dev-{i:06}"),
                token.clone(),
                addrs.clone(),
                progress.clone(),
                joining.clone(),
                go.clone(),
            ))
        })
        .collect()
}

/// Simulator processes, their counters summed into one [`Progress`].
struct Simulators {
    children: Vec<Child>,
    stdins: Vec<std::process::ChildStdin>,
}

impl Simulators {
    /// Starts `count` processes sharing devices 0..n between them.
    fn start(
        count: usize,
        n: usize,
        addrs: &[SocketAddr],
        tokens: &std::path::Path,
        progress: &Arc<Progress>,
    ) -> Simulators {
        let list: Vec<String> = addrs.iter().map(ToString::to_string).collect();
        let mut children = Vec::new();
        let mut stdins = Vec::new();
        for c in 0..count {
            let (from, to) = (n * c / count, n * (c + 1) / count);
            let mut child = Command::new(std::env::current_exe().unwrap())
                .arg("--simulate")
                .args([from.to_string(), to.to_string(), list.join(",")])
                .arg(tokens)
                .stdin(Stdio::piped())
                .stdout(Stdio::piped())
                .spawn()
                .expect("start a simulator process");
            stdins.push(child.stdin.take().unwrap());
            let out = BufReader::new(child.stdout.take().unwrap());
            let progress = progress.clone();
            std::thread::spawn(move || {
                let mut seen = [0u64; 2 * (MAX_REVISION + 1) + 1];
                for line in out.lines() {
                    let Ok(line) = line else { break };
                    let Some(rest) = line.strip_prefix("P ") else {
                        continue;
                    };
                    let now: Vec<u64> = rest.split(' ').map(|v| v.parse().unwrap()).collect();
                    for (j, (v, was)) in now.iter().zip(seen.iter_mut()).enumerate() {
                        let d = v - *was;
                        *was = *v;
                        let d_usize = usize::try_from(d).unwrap();
                        if j <= MAX_REVISION {
                            progress.received[j].fetch_add(d_usize, Ordering::Relaxed);
                        } else if j <= 2 * MAX_REVISION + 1 {
                            progress.reported[j - MAX_REVISION - 1]
                                .fetch_add(d_usize, Ordering::Relaxed);
                        } else {
                            progress.reconnects.fetch_add(d, Ordering::Relaxed);
                        }
                    }
                }
            });
            children.push(child);
        }
        Simulators { children, stdins }
    }

    fn go(&mut self) {
        use std::io::Write as _;
        for s in &mut self.stdins {
            writeln!(s, "go").unwrap();
            s.flush().unwrap();
        }
    }

    fn cpu_secs(&self) -> f64 {
        self.children.iter().map(|c| cpu_secs(c.id())).sum()
    }
}

impl Drop for Simulators {
    fn drop(&mut self) {
        self.stdins.clear();
        for c in &mut self.children {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// `GET url` with the admin token, as JSON (a benchmark: any failure panics).
async fn admin_json(http: &reqwest::Client, admin: &str, url: &str) -> serde_json::Value {
    http.get(url)
        .bearer_auth(admin)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap()
}

/// Figures of one phase.
struct Phase {
    received: Duration,
    reported: Duration,
    converged: Duration,
    /// A, the killed replica (until killed), the others together.
    cpu: [f64; 3],
    pg_cpu: f64,
    statements_ms: f64,
    statements: u64,
    reconnects: u64,
    killed_at: Option<usize>,
}

/// (total execution time in ms, calls) of all statements.
fn pg_counters(pg: &pg::PgServer, db: &str) -> (f64, u64) {
    let out = pg.psql(
        db,
        "SELECT coalesce(sum(total_exec_time), 0), coalesce(sum(calls), 0) FROM pg_stat_statements",
    );
    let f: Vec<&str> = out.split('|').collect();
    (f[0].parse().unwrap(), f[1].parse().unwrap())
}

#[allow(clippy::too_many_lines)]
async fn run(n: usize, k: usize, simulators: usize) {
    let _ = rustls::crypto::ring::default_provider().install_default();
    // PostgreSQL with pg_stat_statements.
    let mut pg = pg::PgServer::start();
    pg.psql(
        "postgres",
        "ALTER SYSTEM SET shared_preload_libraries = 'pg_stat_statements'",
    );
    pg.stop();
    pg.start_again();
    let db = pg.create_db();
    pg.psql(&db, "CREATE EXTENSION pg_stat_statements");
    let postmaster: u32 = std::fs::read_to_string(pg.socket_dir().join("data/postmaster.pid"))
        .unwrap()
        .lines()
        .next()
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    let store = pg.url(&db);

    let dir = tempfile::tempdir().unwrap();
    let token_file = dir.path().join("admin.token");
    // Replica A (index 0) takes the applies and is asked for the status; the last one, "B",
    // is killed in the second phase.
    const NAMES: [&str; 26] = [
        "a", "c", "d", "e", "f", "g", "h", "i", "j", "k", "l", "m", "n", "o", "p", "q", "r", "s",
        "t", "u", "v", "w", "x", "y", "z", "b",
    ];
    assert!(k <= NAMES.len(), "at most {} replicas", NAMES.len());
    let mut reps: Vec<Option<Replica>> = (0..k)
        .map(|r| {
            let name = if r == k - 1 { "b" } else { NAMES[r] };
            Some(Replica::start(name, dir.path(), &token_file, &store))
        })
        .collect();
    let admin = std::fs::read_to_string(&token_file)
        .unwrap()
        .trim()
        .to_owned();
    let urls: Vec<String> = reps
        .iter()
        .map(|r| r.as_ref().unwrap().url.clone())
        .collect();
    let addrs: Arc<[SocketAddr]> = reps.iter().map(|r| r.as_ref().unwrap().addr).collect();
    let pids: Vec<u32> = reps.iter().map(|r| r.as_ref().unwrap().pid()).collect();
    let killed = k - 1;
    println!(
        "edgefn-cloud on PostgreSQL, {k} replicas: {n} devices; A pid {} at {}, B (the one killed) pid {} at {}",
        pids[0], urls[0], pids[killed], urls[killed]
    );
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(300))
        .build()
        .unwrap();

    // Where replica A's memory goes: its RSS at each step (KiB).
    let rss_a = || proc_status_kib(pids[0], "VmRSS:");
    let rss_start = rss_a();

    // Register the devices through both replicas, 64 at a time.
    let t = Instant::now();
    let names: Vec<String> = (0..n).map(|i| format!("dev-{i:06}")).collect();
    let mut tokens = Vec::with_capacity(n);
    for (c, chunk) in names.chunks(64).enumerate() {
        let handles: Vec<_> = chunk
            .iter()
            .enumerate()
            .map(|(j, name)| {
                let (http, url, admin, name) = (
                    http.clone(),
                    urls[(c * 64 + j) % urls.len()].clone(),
                    admin.clone(),
                    name.clone(),
                );
                tokio::spawn(async move {
                    let r = http
                        .post(format!("{url}/v1/devices"))
                        .bearer_auth(&admin)
                        .json(&serde_json::json!({ "name": name }))
                        .send()
                        .await
                        .unwrap();
                    assert_eq!(r.status(), 201);
                    let v: serde_json::Value = r.json().await.unwrap();
                    v["token"].as_str().unwrap().to_owned()
                })
            })
            .collect();
        for h in handles {
            tokens.push(h.await.unwrap());
        }
    }
    println!(
        "registered {n} devices through the replicas in {:.1} s ({:.0} per second)",
        t.elapsed().as_secs_f64(),
        n as f64 / t.elapsed().as_secs_f64()
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
        .put(format!("{}/v1/bundles/{digest}", urls[0]))
        .bearer_auth(&admin)
        .body(bytes)
        .send()
        .await
        .unwrap();
    assert!(r.status().is_success());
    let apply = |version: u32| {
        let (http, url, admin, digest) =
            (http.clone(), urls[0].clone(), admin.clone(), digest.clone());
        async move {
            let body = serde_json::json!({
                "manifest": manifest(n, version),
                "bundles": { "f": digest },
                "expectedParent": u64::from(version) - 1,
            });
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
    let rss_registered = rss_a();
    let t = Instant::now();
    apply(1).await;
    println!(
        "revision 1 (a manifest of {n} devices, {:.1} MiB) committed in {:.2} s",
        manifest(n, 1).len() as f64 / f64::from(1 << 20),
        t.elapsed().as_secs_f64()
    );
    // The others serve it once they have read it (NOTIFY); a device asking one before would
    // be given revision 0 and report that.
    let t = Instant::now();
    for url in &urls[1..] {
        loop {
            let v = admin_json(
                &http,
                &admin,
                &format!("{url}/v1/status/page?page=0&size=1"),
            )
            .await;
            if v["revision"] == 1 {
                break;
            }
            assert!(t.elapsed() < PHASE_LIMIT, "{url} never served revision 1");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
    let rss_applied = rss_a();

    // The devices join: fetch, report, long-poll; in this process, or in simulator processes
    // when one cannot hold every connection.
    let progress = Arc::new(Progress::new());
    let (go_tx, go_rx) = tokio::sync::watch::channel(false);
    let t = Instant::now();
    let sim_cpu_before = cpu_secs(std::process::id());
    let (devices, mut sims) = if simulators == 1 {
        (spawn_devices(0, &tokens, &addrs, &progress, &go_rx), None)
    } else {
        let file = dir.path().join("tokens");
        std::fs::write(&file, tokens.join("\n")).unwrap();
        let sims = Simulators::start(simulators, n, &addrs, &file, &progress);
        (Vec::new(), Some(sims))
    };
    let sim_cpu = |sims: &Option<Simulators>| {
        cpu_secs(std::process::id()) - sim_cpu_before
            + sims.as_ref().map_or(0.0, Simulators::cpu_secs)
    };
    let waiting = |url: String| {
        let (http, admin) = (http.clone(), admin.clone());
        async move {
            let Ok(r) = http
                .get(format!("{url}/metrics"))
                .bearer_auth(&admin)
                .send()
                .await
            else {
                return 0;
            };
            r.text()
                .await
                .unwrap_or_default()
                .lines()
                .find_map(|l| l.strip_prefix("edgefn_longpolls_waiting "))
                .and_then(|v| v.parse::<usize>().ok())
                .unwrap_or(0)
        }
    };
    // Step 1: every device fetched its state, reported it and hung up.
    while progress.reported[1].load(Ordering::Relaxed) < n {
        assert!(
            t.elapsed() < PHASE_LIMIT,
            "only {} of {n} reported",
            progress.reported[1].load(Ordering::Relaxed)
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // Each replica reads the other's reports within a second.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let rss_reported = rss_a();
    // Step 2: every device long-polls.
    go_tx.send_replace(true);
    if let Some(s) = &mut sims {
        s.go();
    }
    loop {
        let mut w = 0;
        for url in &urls {
            w += waiting(url.clone()).await;
        }
        if w >= n {
            break;
        }
        assert!(
            t.elapsed() < PHASE_LIMIT,
            "only {w} of {n} long-polls waiting"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let sim_cpu_join = sim_cpu(&sims);
    println!(
        "{n} devices fetched, reported and are long-polling after {:.1} s (simulator CPU {sim_cpu_join:.1} s)",
        t.elapsed().as_secs_f64(),
    );
    let rss_waiting = [
        proc_status_kib(pids[0], "VmRSS:"),
        proc_status_kib(pids[killed], "VmRSS:"),
    ];
    let on_a = n.div_ceil(k);
    println!(
        "RSS with all devices waiting (about {on_a} on each): A {:.1} MiB, B {:.1} MiB",
        rss_waiting[0] as f64 / 1024.0,
        rss_waiting[1] as f64 / 1024.0
    );
    let per = |after: u64, before: u64, count: usize| {
        (after.saturating_sub(before)) as f64 / count as f64
    };
    println!(
        "replica A's RSS: {:.1} MiB at start; per device of the fleet: {:+.2} KiB registered, \
         {:+.2} KiB once revision 1 is served, {:+.2} KiB once every device has reported (each \
         replica keeps every report); {:+.2} KiB per device waiting on A ({} of them)",
        rss_start as f64 / 1024.0,
        per(rss_registered, rss_start, n),
        per(rss_applied, rss_registered, n),
        per(rss_reported, rss_applied, n),
        per(rss_waiting[0], rss_reported, on_a),
        on_a,
    );

    // Converged as replica A's status page counts it.
    let converged = |url: String| {
        let (http, admin) = (http.clone(), admin.clone());
        async move {
            let Ok(r) = http
                .get(format!("{url}/v1/status/page?page=0&size=1"))
                .bearer_auth(&admin)
                .send()
                .await
            else {
                return (0, 0);
            };
            let v: serde_json::Value = r.json().await.unwrap_or_default();
            (
                v["revision"].as_u64().unwrap_or(0),
                v["counts"]["converged"].as_u64().unwrap_or(0),
            )
        }
    };

    let mut phases = Vec::new();
    for (version, kill) in [(2u32, false), (3u32, true)] {
        let rev = version as usize;
        // Let the previous phase's reports settle into the database.
        tokio::time::sleep(Duration::from_secs(3)).await;
        pg.psql(&db, "SELECT pg_stat_statements_reset()");
        let pg_before = pg_counters(&pg, &db);
        let cpu_before: Vec<f64> = pids.iter().map(|p| cpu_secs(*p)).collect();
        let pg_cpu_before = pg_cpu_secs(postmaster);
        let reconnects_before = progress.reconnects.load(Ordering::Relaxed);
        let start = Instant::now();
        apply(version).await;
        let (mut received, mut reported, mut killed_at) = (None, None, None);
        let mut cpu_b = 0.0;
        loop {
            let got = progress.received[rev].load(Ordering::Relaxed);
            if kill && killed_at.is_none() && got >= n / 2 {
                cpu_b = cpu_secs(pids[killed]) - cpu_before[killed];
                drop(reps[killed].take()); // SIGKILL
                killed_at = Some(got);
                println!(
                    "  replica B SIGKILLed {:.2} s after the apply, when {got} of {n} devices had received revision {version}",
                    start.elapsed().as_secs_f64()
                );
            }
            if received.is_none() && got >= n {
                received = Some(start.elapsed());
            }
            if reported.is_none() && progress.reported[rev].load(Ordering::Relaxed) >= n {
                reported = Some(start.elapsed());
                break;
            }
            assert!(
                start.elapsed() < PHASE_LIMIT,
                "revision {version}: {got} of {n} received, {} reported",
                progress.reported[rev].load(Ordering::Relaxed)
            );
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        let converged_at = loop {
            let (r, c) = converged(urls[0].clone()).await;
            if r == u64::from(version) && c >= n as u64 {
                break start.elapsed();
            }
            assert!(
                start.elapsed() < PHASE_LIMIT,
                "replica A counts {c} of {n} converged on revision {r}"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        };
        let cpu = [
            cpu_secs(pids[0]) - cpu_before[0],
            if kill {
                cpu_b
            } else {
                cpu_secs(pids[killed]) - cpu_before[killed]
            },
            (1..killed).map(|r| cpu_secs(pids[r]) - cpu_before[r]).sum(),
        ];
        let pg_after = pg_counters(&pg, &db);
        // Where the database's time went.
        println!(
            "  statements by time (calls | ms | statement):\n{}",
            pg.psql(
                &db,
                "SELECT calls || ' | ' || round(total_exec_time::numeric, 1) || ' | ' || \
                 left(regexp_replace(query, '\\s+', ' ', 'g'), 90) \
                 FROM pg_stat_statements ORDER BY total_exec_time DESC LIMIT 6"
            )
            .lines()
            .map(|l| format!("    {l}"))
            .collect::<Vec<_>>()
            .join("\n")
        );
        phases.push(Phase {
            received: received.unwrap(),
            reported: reported.unwrap(),
            converged: converged_at,
            cpu,
            pg_cpu: pg_cpu_secs(postmaster) - pg_cpu_before,
            statements_ms: pg_after.0 - pg_before.0,
            statements: pg_after.1 - pg_before.1,
            reconnects: progress.reconnects.load(Ordering::Relaxed) - reconnects_before,
            killed_at,
        });
        println!(
            "  revision {version}{}: all received {:.2} s, all reported {:.2} s, all converged in A's status {:.2} s",
            if kill {
                " (B killed at the midpoint)"
            } else {
                ""
            },
            phases[phases.len() - 1].received.as_secs_f64(),
            phases[phases.len() - 1].reported.as_secs_f64(),
            converged_at.as_secs_f64()
        );
    }

    // Nothing lost or duplicated: A's history holds revisions 1, 2, 3 once each.
    let history = admin_json(&http, &admin, &format!("{}/v1/revisions", urls[0])).await;
    let mut numbers: Vec<u64> = history
        .as_array()
        .or_else(|| history["revisions"].as_array())
        .expect("a list of revisions")
        .iter()
        .filter_map(|r| r["number"].as_u64().or_else(|| r["revision"].as_u64()))
        .collect();
    numbers.sort_unstable();
    assert_eq!(numbers, [1, 2, 3], "replica A's history: {history}");
    println!("replica A's history: revisions 1, 2, 3, each once");

    for d in devices {
        d.abort();
    }
    drop(sims);
    let (p, kp) = (&phases[0], &phases[1]);
    let ratio = |a: f64, b: f64| {
        if a > 0.0 {
            format!("{:.2}", b / a)
        } else {
            "–".into()
        }
    };
    println!();
    println!(
        "| {n} devices, {k} replicas + PostgreSQL | all replicas up | B SIGKILLed at the midpoint | ratio |"
    );
    println!("|---|---:|---:|---:|");
    for (what, x, y) in [
        (
            "apply → every device received the revision (s)",
            p.received.as_secs_f64(),
            kp.received.as_secs_f64(),
        ),
        (
            "apply → every device reported it (s)",
            p.reported.as_secs_f64(),
            kp.reported.as_secs_f64(),
        ),
        (
            "apply → all converged in replica A's `/v1/status/page` (s)",
            p.converged.as_secs_f64(),
            kp.converged.as_secs_f64(),
        ),
        ("replica A CPU (s)", p.cpu[0], kp.cpu[0]),
        ("replica B CPU (s; until killed)", p.cpu[1], kp.cpu[1]),
        ("PostgreSQL CPU (s)", p.pg_cpu, kp.pg_cpu),
        (
            "statements' execution time in PostgreSQL (s)",
            p.statements_ms / 1000.0,
            kp.statements_ms / 1000.0,
        ),
    ] {
        println!("| {what} | {x:.2} | {y:.2} | {} |", ratio(x, y));
    }
    if k > 2 {
        let (x, y) = (p.cpu[2], kp.cpu[2]);
        println!(
            "| the other replicas' CPU together (s) | {x:.2} | {y:.2} | {} |",
            ratio(x, y)
        );
    }
    println!(
        "| statements executed | {} | {} | |",
        p.statements, kp.statements
    );
    println!(
        "| devices that reconnected | {} | {} (B killed when {} had the revision) | |",
        p.reconnects,
        kp.reconnects,
        kp.killed_at.unwrap_or(0)
    );
    println!(
        "| simulator CPU while devices joined (s; {simulators} process{}) | {:.1} | | |",
        if simulators == 1 { "" } else { "es" },
        sim_cpu_join
    );
    println!(
        "| RSS with all devices waiting, A / B (MiB) | {:.0} / {:.0} | | |",
        rss_waiting[0] as f64 / 1024.0,
        rss_waiting[1] as f64 / 1024.0
    );
    println!(
        "| peak RSS, A (MiB) | {:.0} | | |",
        proc_status_kib(pids[0], "VmHWM:") as f64 / 1024.0
    );
    drop(reps);
    drop(pg);
}

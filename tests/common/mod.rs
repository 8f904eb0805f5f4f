//! Test harness shared by the end-to-end tests: the real binaries, started in temporary folders
//! with a cleared environment, servers on port 0, and a minimal HTTP client for raw requests.
#![allow(dead_code, unreachable_pub)]

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::Duration;

/// The repository's root.
pub fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// A binary of the workspace, built next to `edgefn` (`cargo test --workspace` builds them all).
pub fn sibling_bin(name: &str) -> PathBuf {
    let edgefn = PathBuf::from(env!("CARGO_BIN_EXE_edgefn"));
    let path = edgefn.with_file_name(name);
    assert!(
        path.is_file(),
        "{} is not built: run the tests with `cargo test --workspace` (or `cargo build -p {name}` first)",
        path.display()
    );
    path
}

/// `edgefn ARGS` in `dir` with a clean environment plus `env`.
pub fn edgefn_env(dir: &Path, args: &[&str], env: &[(&str, &str)]) -> Output {
    let home = tempfile::tempdir().expect("home");
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_edgefn"));
    cmd.args(args)
        .current_dir(dir)
        .env_clear()
        .env("HOME", home.path())
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .env("NO_COLOR", "1")
        .env("COLUMNS", "100");
    for (k, v) in env {
        cmd.env(k, v);
    }
    cmd.output().expect("run edgefn")
}

/// Text of an output stream.
pub fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// Asserts success; returns stdout.
#[track_caller]
pub fn ok(out: &Output) -> String {
    assert!(
        out.status.success(),
        "failed: {:?}\nstdout:\n{}\nstderr:\n{}",
        out.status,
        text(&out.stdout),
        text(&out.stderr)
    );
    text(&out.stdout)
}

/// A running `edgefn-cloud`.
pub struct Cloud {
    /// The process.
    pub child: Child,
    /// `http://127.0.0.1:PORT`.
    pub url: String,
    /// Admin token.
    pub admin: String,
    /// Data folder.
    pub data: PathBuf,
    /// The embedded broker's TLS listener (`host:port`), when it has one.
    pub mqtts: Option<String>,
}

impl Cloud {
    /// Starts a cloud on port 0 with its data in `data` (reused across restarts).
    pub fn start(data: &Path) -> Cloud {
        Self::start_at(data, "127.0.0.1:0")
    }

    /// Starts a cloud listening on `addr`, without a broker (tests of messages use
    /// [`Cloud::start_with`]).
    pub fn start_at(data: &Path, addr: &str) -> Cloud {
        Self::spawn(data, addr, &["--mqtt-listen", "none"]).0
    }

    /// Starts a cloud on port 0 with extra arguments (e.g. `--mqtt-listen 127.0.0.1:0`);
    /// returns it and the embedded MQTT broker's `host:port` when it has one.
    pub fn start_with(data: &Path, extra: &[&str]) -> (Cloud, Option<String>) {
        Self::spawn(data, "127.0.0.1:0", extra)
    }

    /// Starts a cloud listening on `addr` with extra arguments; returns it and its embedded
    /// broker's `host:port` when it has one.
    pub fn start_at_with(data: &Path, addr: &str, extra: &[&str]) -> (Cloud, Option<String>) {
        Self::spawn(data, addr, extra)
    }

    /// [`Cloud::start_with`], its log (stderr) written to `log` instead of the test's output.
    pub fn start_logged(data: &Path, extra: &[&str], log: &Path) -> (Cloud, Option<String>) {
        Self::spawn_logged(data, "127.0.0.1:0", extra, Some(log))
    }

    /// Starts a cloud on port 0 without a broker, with extra arguments and environment
    /// variables (e.g. `--objects s3://…` and the `AWS_*` variables).
    /// Its log (stderr) goes to `log` when given.
    pub fn start_env(
        data: &Path,
        extra: &[&str],
        env: &[(&str, &str)],
        log: Option<&Path>,
    ) -> Cloud {
        let args: Vec<&str> = ["--mqtt-listen", "none"]
            .into_iter()
            .chain(extra.iter().copied())
            .collect();
        Self::spawn_env(data, "127.0.0.1:0", &args, log, env).0
    }

    fn spawn(data: &Path, addr: &str, extra: &[&str]) -> (Cloud, Option<String>) {
        Self::spawn_logged(data, addr, extra, None)
    }

    fn spawn_logged(
        data: &Path,
        addr: &str,
        extra: &[&str],
        log: Option<&Path>,
    ) -> (Cloud, Option<String>) {
        Self::spawn_env(data, addr, extra, log, &[])
    }

    fn spawn_env(
        data: &Path,
        addr: &str,
        extra: &[&str],
        log: Option<&Path>,
        env: &[(&str, &str)],
    ) -> (Cloud, Option<String>) {
        let token_file = data.join("admin.token");
        std::fs::create_dir_all(data).expect("data dir");
        let mut child = Command::new(sibling_bin("edgefn-cloud"))
            .args([
                "--data",
                &data.display().to_string(),
                "--listen",
                addr,
                "--admin-token-file",
                &token_file.display().to_string(),
                "--log-level",
                // EDGEFN_TEST_CLOUD_LOG=debug shows the cloud's own account of a failing test.
                // A log kept in a file is kept whole (tests search it).
                &std::env::var("EDGEFN_TEST_CLOUD_LOG")
                    .unwrap_or_else(|_| if log.is_some() { "debug" } else { "warn" }.into()),
            ])
            .args(extra)
            .env_clear()
            .env("PATH", std::env::var_os("PATH").unwrap_or_default())
            .envs(env.iter().copied())
            .stdout(Stdio::piped())
            .stderr(match log {
                Some(path) => Stdio::from(std::fs::File::create(path).expect("cloud log file")),
                None => Stdio::inherit(),
            })
            .spawn()
            .expect("start edgefn-cloud");
        let stdout = child.stdout.take().expect("stdout");
        let mut lines = BufReader::new(stdout).lines();
        let mut mqtt = None;
        let mut mqtts = None;
        let url = loop {
            let line = lines
                .next()
                .expect("edgefn-cloud exited before listening")
                .expect("read");
            if let Some(addr) = line.strip_prefix("edgefn-cloud MQTT broker on mqtt://") {
                mqtt = Some(addr.to_owned());
            }
            if let Some(addr) = line.strip_prefix("edgefn-cloud MQTT broker on mqtts://") {
                mqtts = Some(addr.to_owned());
            }
            if let Some(url) = line.strip_prefix("edgefn-cloud listening on ") {
                break url.to_owned();
            }
        };
        std::thread::spawn(move || for _ in lines {});
        let admin = std::fs::read_to_string(&token_file)
            .expect("admin token")
            .trim()
            .to_owned();
        (
            Cloud {
                child,
                url,
                admin,
                data: data.to_path_buf(),
                mqtts,
            },
            mqtt,
        )
    }

    /// The environment the CLI needs to reach this cloud as admin.
    pub fn env(&self) -> [(&'static str, String); 2] {
        [
            ("EDGEFN_CLOUD", self.url.clone()),
            ("EDGEFN_TOKEN", self.admin.clone()),
        ]
    }

    /// `host:port`.
    pub fn addr(&self) -> String {
        self.url
            .trim_start_matches("http://")
            .trim_start_matches("https://")
            .to_owned()
    }

    /// SIGKILL.
    pub fn kill(mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// SIGTERM, then wait for a clean exit.
    pub fn stop(mut self) -> std::process::ExitStatus {
        let pid = self.child.id().to_string();
        let _ = Command::new("kill").args(["-TERM", &pid]).status();
        self.child.wait().expect("wait")
    }
}

impl Drop for Cloud {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// An HTTP response.
#[derive(Debug)]
pub struct Response {
    /// Status code.
    pub status: u16,
    /// Headers, lowercase names.
    pub headers: Vec<(String, String)>,
    /// Body.
    pub body: Vec<u8>,
}

impl Response {
    /// The body as JSON.
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {}", text(&self.body)))
    }
    /// A header.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }
}

/// One HTTP/1.1 request over a fresh connection.
pub fn http(
    addr: &str,
    method: &str,
    path: &str,
    token: Option<&str>,
    headers: &[(&str, &str)],
    body: &[u8],
) -> Response {
    let mut s = TcpStream::connect(addr).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(60)))
        .expect("timeout");
    let mut req = format!(
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\nContent-Length: {}\r\n",
        body.len()
    );
    if let Some(t) = token {
        req.push_str(&format!("Authorization: Bearer {t}\r\n"));
    }
    for (k, v) in headers {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    req.push_str("\r\n");
    s.write_all(req.as_bytes()).expect("write");
    s.write_all(body).expect("write body");
    let mut raw = Vec::new();
    s.read_to_end(&mut raw).expect("read");
    let split = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .expect("header end");
    let head = String::from_utf8_lossy(&raw[..split]).into_owned();
    let mut lines = head.lines();
    let status: u16 = lines
        .next()
        .and_then(|l| l.split(' ').nth(1))
        .and_then(|c| c.parse().ok())
        .expect("status");
    let headers: Vec<(String, String)> = lines
        .filter_map(|l| {
            l.split_once(':')
                .map(|(k, v)| (k.trim().to_lowercase(), v.trim().to_owned()))
        })
        .collect();
    let mut body = raw[split + 4..].to_vec();
    if headers
        .iter()
        .any(|(k, v)| k == "transfer-encoding" && v == "chunked")
    {
        body = dechunk(&body);
    }
    Response {
        status,
        headers,
        body,
    }
}

fn dechunk(mut data: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    loop {
        let Some(end) = data.windows(2).position(|w| w == b"\r\n") else {
            return out;
        };
        let size =
            usize::from_str_radix(String::from_utf8_lossy(&data[..end]).trim(), 16).unwrap_or(0);
        if size == 0 {
            return out;
        }
        out.extend_from_slice(&data[end + 2..end + 2 + size]);
        data = &data[end + 2 + size + 2..];
    }
}

/// Runs `git` in `dir`.
pub fn git(dir: &Path, args: &[&str]) {
    let out = Command::new("git")
        .args([
            "-c",
            "user.name=Test User",
            "-c",
            "user.email=test@example.com",
            "-c",
            "init.defaultBranch=main",
        ])
        .args(args)
        .current_dir(dir)
        .output()
        .expect("git");
    assert!(
        out.status.success(),
        "git {args:?}: {}{}",
        text(&out.stdout),
        text(&out.stderr)
    );
}

/// Copies a folder recursively.
pub fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).expect("mkdir");
    for e in std::fs::read_dir(from).expect("read").flatten() {
        let target = to.join(e.file_name());
        let ft = e.file_type().expect("type");
        if ft.is_dir() {
            copy_dir(&e.path(), &target);
        } else {
            std::fs::copy(e.path(), &target).expect("copy");
        }
    }
}

/// The quickstart example in a fresh git repository, committed.
pub fn quickstart_repo() -> tempfile::TempDir {
    let tmp = tempfile::tempdir().expect("tmp");
    copy_dir(&repo().join("examples/quickstart"), tmp.path());
    git(tmp.path(), &["init", "-q"]);
    git(tmp.path(), &["add", "-A"]);
    git(tmp.path(), &["commit", "-q", "-m", "quickstart"]);
    tmp
}

/// A running `edgefn-agent`.
pub struct AgentProc {
    /// The process.
    pub child: Child,
    /// `host:port` of its local endpoint.
    pub local: String,
    /// `host:port` of its local MQTT listener.
    pub mqtt: Option<String>,
    /// Its data folder, swept when it is dropped (see [`Drop`]).
    data: Option<PathBuf>,
    /// Everything it printed (stdout and stderr), as it came.
    pub log: std::sync::Arc<std::sync::Mutex<String>>,
}

impl AgentProc {
    /// Starts an agent with `config`, its data in `data`, a local endpoint on port 0, and the
    /// extra environment `env` (e.g. the crash hook). Returns once it listens.
    #[allow(clippy::print_stderr)] // The agent's log, relayed into the test's output.
    pub fn start(config: &Path, data: &Path, env: &[(&str, &str)]) -> AgentProc {
        AgentProc::start_in(config, data, env, "process")
    }

    /// [`AgentProc::start`] with the sandbox `sandbox` (`process`, `container` or `auto`).
    #[allow(clippy::print_stderr)] // The agent's log, relayed into the test's output.
    pub fn start_in(config: &Path, data: &Path, env: &[(&str, &str)], sandbox: &str) -> AgentProc {
        let mut cmd = Command::new(sibling_bin("edgefn-agent"));
        cmd.args([
            "--config",
            &config.display().to_string(),
            "--data",
            &data.display().to_string(),
            "--sandbox",
            sandbox,
            "--local-listen",
            "127.0.0.1:0",
            "--local-mqtt",
            "127.0.0.1:0",
            "--log-level",
            "info",
        ])
        .env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
        for (k, v) in env {
            cmd.env(k, v);
        }
        let mut child = cmd.spawn().expect("start edgefn-agent");
        let stdout = child.stdout.take().expect("stdout");
        let stderr = child.stderr.take().expect("stderr");
        // The agent's log goes to the test's output, prefixed, for diagnosis.
        let log = std::sync::Arc::new(std::sync::Mutex::new(String::new()));
        let keep = log.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                eprintln!("  agent| {line}");
                if let Ok(mut l) = keep.lock() {
                    l.push_str(&line);
                    l.push('\n');
                }
            }
        });
        let mut lines = BufReader::new(stdout).lines();
        let (local, mqtt) = loop {
            let line = lines
                .next()
                .expect("edgefn-agent exited before listening")
                .expect("read");
            // `... listening on http://ADDR and mqtt://ADDR`
            if let Some((_, rest)) = line.split_once("listening on http://") {
                let http = rest.split(' ').next().unwrap_or(rest).to_owned();
                let mqtt = rest.split_once("mqtt://").map(|(_, a)| a.trim().to_owned());
                break (http, mqtt);
            }
        };
        let keep = log.clone();
        std::thread::spawn(move || {
            for line in lines.map_while(Result::ok) {
                if let Ok(mut l) = keep.lock() {
                    l.push_str(&line);
                    l.push('\n');
                }
            }
        });
        AgentProc {
            child,
            local,
            mqtt,
            data: Some(data.to_path_buf()),
            log,
        }
    }

    /// Puts a message on the device bus and waits for the deliveries.
    pub fn publish(&self, topic: &str, payload: &serde_json::Value) -> serde_json::Value {
        let r = http(
            &self.local,
            "POST",
            &format!("/v1/publish?topic={topic}&wait=true"),
            None,
            &[("Content-Type", "application/json")],
            payload.to_string().as_bytes(),
        );
        assert_eq!(r.status, 200, "{}", text(&r.body));
        r.json()
    }

    /// The digest of the release running now.
    pub fn running(&self) -> Option<String> {
        let r = http(&self.local, "GET", "/healthz", None, &[], b"");
        r.json()["running"].as_str().map(str::to_owned)
    }

    /// Waits for the process to exit by itself; returns how it ended. What its functions left
    /// is left for the next agent on the same data folder to sweep.
    pub fn wait(mut self, timeout: Duration) -> std::process::ExitStatus {
        self.data = None;
        let deadline = std::time::Instant::now() + timeout;
        loop {
            if let Some(status) = self.child.try_wait().expect("wait") {
                return status;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "the agent did not exit"
            );
            pause(20);
        }
    }

    /// SIGTERM, then wait for it to stop by itself; returns how it ended.
    pub fn stop(mut self, timeout: Duration) -> std::process::ExitStatus {
        let pid = self.child.id().to_string();
        let _ = Command::new("kill").args(["-TERM", &pid]).status();
        let deadline = std::time::Instant::now() + timeout;
        loop {
            if let Ok(Some(status)) = self.child.try_wait() {
                return status;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "edgefn-agent did not stop within {timeout:?} of SIGTERM"
            );
            pause(20);
        }
    }

    /// SIGKILL. What its functions left (their own children: the instances themselves die with
    /// the agent) is left for the next agent on the same data folder to sweep.
    pub fn kill(mut self) {
        self.data = None;
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// SIGKILL, then what the agent's functions left is killed the way a restarted agent would
/// (`Sandbox::sweep_leftovers` on its `DATA/instances`), so that no test leaves processes behind.
impl Drop for AgentProc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if let Some(data) = self.data.take() {
            let options = edgefn_runtime::SandboxOptions {
                records: Some(data.join("instances")),
                ..edgefn_runtime::SandboxOptions::default()
            };
            if let Ok(sandbox) = edgefn_runtime::Sandbox::new(options) {
                sandbox.sweep_leftovers();
            }
            // And its secrets, as a restarted agent clears them.
            let root = agent_secrets_root(&data);
            if root.exists() {
                let _ = Command::new("chmod")
                    .args(["-R", "u+w"])
                    .arg(&root)
                    .status();
                let _ = std::fs::remove_dir_all(&root);
            }
        }
    }
}

/// Where an agent whose data folder is `data` keeps its secrets when no `secretsDir` is
/// configured: `/dev/shm/edgefn-agent-<the first 12 hex digits of sha256(absolute data path)>`
/// (`agent/src/secrets.rs`).
pub fn agent_secrets_root(data: &Path) -> PathBuf {
    use sha2::Digest as _;
    let data = std::path::absolute(data).unwrap_or_else(|_| data.to_owned());
    let digest = sha2::Sha256::digest(data.as_os_str().as_encoded_bytes());
    let hex: String = digest.iter().map(|b| format!("{b:02x}")).collect();
    PathBuf::from(format!("/dev/shm/edgefn-agent-{}", &hex[..12]))
}

/// A short pause between two observations of something that changes by itself.
#[allow(clippy::disallowed_methods)] // Tests are synchronous; this is not async code.
pub fn pause(ms: u64) {
    std::thread::sleep(Duration::from_millis(ms));
}

/// A free loopback port for a server that must come back on the same port after a restart.
/// It is taken below Linux's ephemeral range (32768–60999), which port-0 listeners and outgoing
/// connections draw from: a port from there could be taken by another test's client while the
/// server is down. Random, so that tests running at once do not pick the same one.
pub fn server_port() -> u16 {
    use std::hash::{BuildHasher, RandomState};
    for attempt in 0u64.. {
        let r = RandomState::new().hash_one((std::process::id(), attempt));
        let port = 20_000 + (r % 12_000) as u16;
        if std::net::TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
    unreachable!("some port below 32000 is free")
}

/// Polls `cond` every 20 ms until it holds, failing after `secs` seconds with `what`.
#[track_caller]
pub fn wait_until(secs: u64, what: &str, mut cond: impl FnMut() -> bool) {
    let deadline = std::time::Instant::now() + Duration::from_secs(secs);
    while !cond() {
        assert!(
            std::time::Instant::now() < deadline,
            "timed out after {secs} s waiting for: {what}"
        );
        pause(20);
    }
}

/// The Mosquitto binary, if installed (scripts/test.sh installs it).
pub fn mosquitto_bin() -> Option<PathBuf> {
    [
        "/usr/sbin/mosquitto",
        "/usr/local/sbin/mosquitto",
        "/usr/bin/mosquitto",
    ]
    .iter()
    .map(PathBuf::from)
    .find(|p| p.is_file())
}

/// Runs `openssl` in `dir`.
pub fn openssl(dir: &Path, args: &[&str]) {
    let out = Command::new("openssl")
        .args(args)
        .current_dir(dir)
        .output()
        .expect("openssl");
    assert!(
        out.status.success(),
        "openssl {args:?}: {}",
        text(&out.stderr)
    );
}

/// A test CA (`ca.pem`) and a server certificate it signs for `localhost` and 127.0.0.1
/// (`server.pem`, `server.key`), in `dir`.
pub fn test_pki(dir: &Path) {
    openssl(
        dir,
        &[
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-keyout",
            "ca.key",
            "-out",
            "ca.pem",
            "-days",
            "1",
            "-subj",
            "/CN=edgefn test CA",
        ],
    );
    openssl(
        dir,
        &[
            "req",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-keyout",
            "server.key",
            "-out",
            "server.csr",
            "-subj",
            "/CN=localhost",
        ],
    );
    std::fs::write(dir.join("ext.cnf"), "subjectAltName=DNS:localhost,IP:127.0.0.1\nbasicConstraints=CA:FALSE\nkeyUsage=digitalSignature,keyEncipherment\nextendedKeyUsage=serverAuth\n").expect("write");
    openssl(
        dir,
        &[
            "x509",
            "-req",
            "-in",
            "server.csr",
            "-CA",
            "ca.pem",
            "-CAkey",
            "ca.key",
            "-CAcreateserial",
            "-out",
            "server.pem",
            "-days",
            "1",
            "-extfile",
            "ext.cnf",
        ],
    );
}

/// An agent configuration `text` with the `key: value` lines of `extra` set: any line of `text`
/// for one of those keys is dropped first (a YAML key once), then `extra` is appended.
pub fn with_config(text: &str, extra: &str) -> String {
    let keys: Vec<&str> = extra
        .lines()
        .filter_map(|l| l.split_once(':').map(|(k, _)| k.trim()))
        .filter(|k| !k.is_empty() && !k.starts_with('#'))
        .collect();
    let mut out: String = text
        .lines()
        .filter(|l| {
            !keys
                .iter()
                .any(|k| l.strip_prefix(k).is_some_and(|r| r.starts_with(':')))
        })
        .map(|l| format!("{l}\n"))
        .collect();
    out.push_str(extra);
    out
}

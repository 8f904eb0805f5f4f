//! A throwaway PostgreSQL server for tests: its own cluster (initdb) in a temporary folder, on
//! a free port of 127.0.0.1 and a unix socket in that folder, stopped when dropped. As root it
//! runs as the `postgres` user (PostgreSQL refuses to run as root).
//!
//! Shared by the cloud crate's tests (`#[path]`) and the end-to-end tests.
#![allow(dead_code, unreachable_pub, clippy::disallowed_methods)] // Synchronous test code.

use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// The role the control plane connects as, and its password.
pub const PG_USER: &str = "edgefn";
/// Its password (scram-sha-256 over TCP): what the tests check never shows up in logs.
pub const PG_PASSWORD: &str = "pg-secret-7f3a";

/// A running throwaway PostgreSQL server.
#[derive(Debug)]
pub struct PgServer {
    child: Option<Child>,
    dir: tempfile::TempDir,
    bin: PathBuf,
    /// Its TCP port on 127.0.0.1.
    pub port: u16,
    owner: Option<(u32, u32)>,
    next_db: u32,
}

/// The folder of PostgreSQL's programs (the newest installed), or `None` when none is.
pub fn pg_bin() -> Option<PathBuf> {
    let mut found: Vec<PathBuf> = std::fs::read_dir("/usr/lib/postgresql")
        .ok()?
        .flatten()
        .map(|e| e.path().join("bin"))
        .filter(|b| b.join("postgres").is_file())
        .collect();
    found.sort_by_key(|p| {
        p.parent()
            .and_then(|v| v.file_name())
            .and_then(|v| v.to_str())
            .and_then(|v| v.parse::<u32>().ok())
            .unwrap_or(0)
    });
    found.pop()
}

/// A free loopback port below Linux's ephemeral range (32768–60999), so that no test's client
/// takes it while the server is stopped between two starts.
fn free_port() -> u16 {
    use std::hash::{BuildHasher, RandomState};
    for attempt in 0u64.. {
        let r = RandomState::new().hash_one((std::process::id(), attempt, "pg"));
        let port = 20_000 + (r % 12_000) as u16;
        if std::net::TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
    unreachable!("some port below 32000 is free")
}

/// The uid and gid of the `postgres` user when we are root (PostgreSQL refuses root).
fn owner() -> Option<(u32, u32)> {
    let me = Command::new("id").arg("-u").output().ok()?;
    if String::from_utf8_lossy(&me.stdout).trim() != "0" {
        return None;
    }
    let passwd = std::fs::read_to_string("/etc/passwd").expect("/etc/passwd");
    let line = passwd
        .lines()
        .find(|l| l.starts_with("postgres:"))
        .expect("a `postgres` user to run PostgreSQL as (the postgresql package creates it)");
    let f: Vec<&str> = line.split(':').collect();
    Some((f[2].parse().expect("uid"), f[3].parse().expect("gid")))
}

impl PgServer {
    /// A new cluster, started, with role [`PG_USER`] (password [`PG_PASSWORD`]) allowed to
    /// create databases. Panics with what to install when PostgreSQL is missing.
    pub fn start() -> PgServer {
        let bin = pg_bin().expect(
            "PostgreSQL is not installed (/usr/lib/postgresql/*/bin): `apt-get install postgresql`, or run scripts/test.sh",
        );
        let dir = tempfile::Builder::new()
            .prefix("edgefn-pg-")
            .tempdir()
            .expect("temp dir");
        let owner = owner();
        if let Some((uid, gid)) = owner {
            std::os::unix::fs::chown(dir.path(), Some(uid), Some(gid)).expect("chown");
        }
        let pw = dir.path().join("pwfile");
        std::fs::write(&pw, "postgres-superuser\n").expect("pwfile");
        if let Some((uid, gid)) = owner {
            std::os::unix::fs::chown(&pw, Some(uid), Some(gid)).expect("chown");
        }
        let mut initdb = Command::new(bin.join("initdb"));
        initdb
            .args(["-D"])
            .arg(dir.path().join("data"))
            .args([
                "-U",
                "postgres",
                "--auth-local=trust",
                "--auth-host=scram-sha-256",
                "--no-sync",
                "--no-instructions",
                "-E",
                "UTF8",
                "--locale=C",
            ])
            .arg(format!("--pwfile={}", pw.display()))
            .current_dir(dir.path());
        if let Some((uid, gid)) = owner {
            initdb.uid(uid).gid(gid);
        }
        let out = initdb.output().expect("run initdb");
        assert!(
            out.status.success(),
            "initdb failed: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        let mut server = PgServer {
            child: None,
            dir,
            bin,
            port: free_port(),
            owner,
            next_db: 0,
        };
        server.start_again();
        server.psql(
            "postgres",
            &format!("CREATE ROLE {PG_USER} LOGIN CREATEDB PASSWORD '{PG_PASSWORD}'"),
        );
        server
    }

    /// The folder of its unix socket.
    pub fn socket_dir(&self) -> &Path {
        self.dir.path()
    }

    /// Starts the server again (after [`PgServer::stop`] or [`PgServer::crash`]) on the same
    /// port and data, and waits until it takes connections.
    pub fn start_again(&mut self) {
        assert!(self.child.is_none(), "already running");
        let mut cmd = Command::new(self.bin.join("postgres"));
        cmd.arg("-D")
            .arg(self.dir.path().join("data"))
            .args(["-p", &self.port.to_string(), "-k"])
            .arg(self.dir.path())
            .args([
                "-c",
                "listen_addresses=127.0.0.1",
                // A throwaway cluster: no waiting on the disk. The tests crash the server
                // process, never the machine, so what was written survives in the page cache;
                // commits stay synchronous (written before they are acknowledged).
                "-c",
                "fsync=off",
                "-c",
                "full_page_writes=off",
            ])
            .current_dir(self.dir.path())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(
                std::fs::OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(self.dir.path().join("server.log"))
                    .map(Stdio::from)
                    .unwrap_or_else(|_| Stdio::null()),
            );
        if let Some((uid, gid)) = self.owner {
            cmd.uid(uid).gid(gid);
        }
        self.child = Some(cmd.spawn().expect("start postgres"));
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let ready = Command::new(self.bin.join("pg_isready"))
                .arg("-h")
                .arg(self.dir.path())
                .args(["-p", &self.port.to_string(), "-q"])
                .status()
                .is_ok_and(|s| s.success());
            if ready {
                return;
            }
            if let Some(Ok(Some(status))) = self.child.as_mut().map(Child::try_wait) {
                panic!("postgres exited ({status}): {}", self.log());
            }
            assert!(
                Instant::now() < deadline,
                "postgres did not start: {}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Its log so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("server.log")).unwrap_or_default()
    }

    /// Runs `sql` in database `db` as the superuser (over the unix socket); its output
    /// (unaligned, tuples only). Panics on an error.
    pub fn psql(&self, db: &str, sql: &str) -> String {
        let out = Command::new(self.bin.join("psql"))
            .arg("-h")
            .arg(self.dir.path())
            .args([
                "-p",
                &self.port.to_string(),
                "-U",
                "postgres",
                "-d",
                db,
                "-X",
                "-A",
                "-t",
                "-v",
                "ON_ERROR_STOP=1",
                "-c",
                sql,
            ])
            .output()
            .expect("run psql");
        assert!(
            out.status.success(),
            "psql `{sql}`: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).trim().to_owned()
    }

    /// `psql` reading SQL from its standard input, kept open: statements written to it run
    /// in one session (e.g. a transaction holding a lock) until the child is dropped.
    pub fn session(&self, db: &str) -> Child {
        Command::new(self.bin.join("psql"))
            .arg("-h")
            .arg(self.dir.path())
            .args([
                "-p",
                &self.port.to_string(),
                "-U",
                "postgres",
                "-d",
                db,
                "-X",
                "-q",
            ])
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .spawn()
            .expect("run psql")
    }

    /// A new, empty database owned by [`PG_USER`]; its name.
    pub fn create_db(&mut self) -> String {
        self.next_db += 1;
        let name = format!("edgefn_test_{}", self.next_db);
        self.psql(
            "postgres",
            &format!("CREATE DATABASE {name} OWNER {PG_USER}"),
        );
        name
    }

    /// The URL of database `db` over TCP, as [`PG_USER`] with its password.
    pub fn url(&self, db: &str) -> String {
        format!(
            "postgres://{PG_USER}:{PG_PASSWORD}@127.0.0.1:{}/{db}",
            self.port
        )
    }

    /// Stops the server (fast shutdown: sessions are ended, the data is kept).
    pub fn stop(&mut self) {
        self.signal("-INT");
    }

    /// Stops the server as a crash would: every process ends at once (immediate shutdown,
    /// SIGQUIT), no checkpoint; the next start recovers from the write-ahead log.
    pub fn crash(&mut self) {
        self.signal("-QUIT");
    }

    fn signal(&mut self, sig: &str) {
        let Some(mut child) = self.child.take() else {
            return;
        };
        let _ = Command::new("kill")
            .args([sig, &child.id().to_string()])
            .status();
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Ok(Some(_)) = child.try_wait() {
                return;
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                let _ = child.wait();
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for PgServer {
    fn drop(&mut self) {
        self.signal("-QUIT");
    }
}

/// TLS on a [`PgServer`] (added by the TLS tests; kept apart from the code above).
impl PgServer {
    /// Restarts the server with `ssl = on`, serving `cert` and `key` (PEM), and a `pg_hba.conf`
    /// that takes TCP connections only over TLS (`hostssl`), so a plain one is refused; the
    /// unix socket (the superuser's [`PgServer::psql`]) stays as it was.
    pub fn require_tls(&mut self, cert: &Path, key: &Path) {
        use std::os::unix::fs::PermissionsExt;
        let data = self.dir.path().join("data");
        for (from, to) in [(cert, "server.crt"), (key, "server.key")] {
            let path = data.join(to);
            std::fs::copy(from, &path).expect("copy the server's certificate and key");
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).expect("chmod");
            if let Some((uid, gid)) = self.owner {
                std::os::unix::fs::chown(&path, Some(uid), Some(gid)).expect("chown");
            }
        }
        let mut conf = std::fs::read_to_string(data.join("postgresql.conf")).expect("conf");
        conf.push_str("\nssl = on\nssl_cert_file = 'server.crt'\nssl_key_file = 'server.key'\n");
        std::fs::write(data.join("postgresql.conf"), conf).expect("write conf");
        std::fs::write(
            data.join("pg_hba.conf"),
            "local all all trust\nhostssl all all 127.0.0.1/32 scram-sha-256\n",
        )
        .expect("write pg_hba.conf");
        self.stop();
        self.start_again();
    }
}

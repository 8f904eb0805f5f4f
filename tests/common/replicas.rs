//! Several `edgefn-cloud` replicas on one throwaway PostgreSQL database, behind HAProxy: what
//! the multi-process tests of `tests/postgres.rs` share ([`Replicas`]), with [`Haproxy`] and an
//! anonymous [`Mosquitto`].
//!
//! Kept apart from `tests/common/postgres.rs`, which the cloud crate's own tests include too
//! (they have no `Cloud` harness or `edgefn` binary). Include it after `common/mod.rs` (as
//! `mod common`) and `common/postgres.rs` (as `mod pg`).
#![allow(dead_code, unreachable_pub)]

use std::path::Path;
use std::process::{Command, Output, Stdio};

use crate::common::{
    Cloud, Response, edgefn_env, http, mosquitto_bin, server_port, text, wait_until,
};
use crate::pg::PgServer;

/// HAProxy (Debian's) in front of the given `host:port` backends, round robin, health-checked
/// on `/healthz`; stopped when dropped.
pub struct Haproxy {
    child: std::process::Child,
    /// `127.0.0.1:PORT`.
    pub addr: String,
    _dir: tempfile::TempDir,
}

impl Haproxy {
    /// Starts it and waits until it listens. Panics with what to install when it is missing.
    pub fn start(backends: &[String]) -> Haproxy {
        let bin = ["/usr/sbin/haproxy", "/usr/bin/haproxy"]
            .into_iter()
            .find(|p| Path::new(p).is_file())
            .expect("HAProxy is not installed: `apt-get install haproxy`, or run scripts/test.sh");
        let dir = tempfile::tempdir().expect("dir");
        let port = server_port();
        let servers: String = backends
            .iter()
            .enumerate()
            .map(|(i, b)| format!("    server cloud{i} {b} check inter 200ms fall 1 rise 1\n"))
            .collect();
        // Long-polls wait up to 60 s: the timeouts are longer. A request whose replica is
        // down is sent to another (redispatch).
        let config = format!(
            "global\n    maxconn 512\n\ndefaults\n    mode http\n    timeout connect 2s\n    timeout client 90s\n    timeout server 90s\n    retries 3\n    option redispatch\n\nfrontend api\n    bind 127.0.0.1:{port}\n    default_backend clouds\n\nbackend clouds\n    balance roundrobin\n    option httpchk GET /healthz\n{servers}"
        );
        let cfg = dir.path().join("haproxy.cfg");
        std::fs::write(&cfg, config).expect("config");
        let check = Command::new(bin)
            .arg("-c")
            .arg("-f")
            .arg(&cfg)
            .output()
            .expect("haproxy -c");
        assert!(check.status.success(), "{}", text(&check.stderr));
        let child = Command::new(bin)
            .arg("-db")
            .arg("-f")
            .arg(&cfg)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start haproxy");
        let addr = format!("127.0.0.1:{port}");
        wait_until(30, "HAProxy listens", || {
            std::net::TcpStream::connect(&addr).is_ok()
        });
        Haproxy {
            child,
            addr,
            _dir: dir,
        }
    }
}

impl Drop for Haproxy {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// An anonymous Mosquitto on a free port, for one test; killed when dropped.
pub struct Mosquitto {
    child: std::process::Child,
    /// Its port on 127.0.0.1.
    pub port: u16,
    _dir: tempfile::TempDir,
}

impl Mosquitto {
    /// Starts it and waits until it takes connections. Panics with what to install when it is
    /// missing.
    pub fn start() -> Mosquitto {
        let dir = tempfile::tempdir().expect("dir");
        let port = server_port();
        let conf = dir.path().join("mosquitto.conf");
        std::fs::write(
            &conf,
            format!(
                "listener {port} 127.0.0.1\nuser root\nallow_anonymous true\npersistence false\nlog_dest stderr\nlog_type error\n"
            ),
        )
        .expect("conf");
        let child = Command::new(mosquitto_bin().expect(
            "mosquitto is not installed: scripts/test.sh installs it (apt-get install mosquitto)",
        ))
        .args(["-c", conf.to_str().expect("utf8")])
        .stdout(Stdio::null())
        .spawn()
        .expect("start mosquitto");
        wait_until(10, "mosquitto accepts connections", || {
            std::net::TcpStream::connect(("127.0.0.1", port)).is_ok()
        });
        Mosquitto {
            child,
            port,
            _dir: dir,
        }
    }

    /// `mqtt://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        format!("mqtt://127.0.0.1:{}", self.port)
    }
}

impl Drop for Mosquitto {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// N `edgefn-cloud --store postgres://…` replicas on one fresh database of their own
/// throwaway PostgreSQL cluster, behind [`Haproxy`] (round robin). Every replica accepts every
/// admin token (they are in the database): [`Replicas::admin`] is the first replica's.
/// Dropped: HAProxy, then the replicas, then PostgreSQL stop; their folders are removed.
pub struct Replicas {
    /// The load balancer in front of every replica.
    pub lb: Haproxy,
    clouds: Vec<Option<Cloud>>,
    /// The PostgreSQL server.
    pub pg: PgServer,
    /// The replicas' database (its name in [`Replicas::pg`]).
    pub db: String,
    /// The replicas' `--store` URL.
    pub url: String,
    /// An admin token, valid on every replica.
    pub admin: String,
    _data: Vec<tempfile::TempDir>,
}

impl Replicas {
    /// `n` replicas without a broker (`--mqtt-listen none`).
    pub fn start(n: usize) -> Replicas {
        Self::start_with(n, &["--mqtt-listen", "none"])
    }

    /// `n` replicas started with `args` besides `--store` (e.g. `--mqtt-url mqtt://…`).
    pub fn start_with(n: usize, args: &[&str]) -> Replicas {
        Self::spawn(n, args, None)
    }

    /// [`Replicas::start_with`], replica `i`'s log (at debug level) written to
    /// `logs/replica-i.log` instead of the test's output.
    pub fn start_logged(n: usize, args: &[&str], logs: &Path) -> Replicas {
        Self::spawn(n, args, Some(logs))
    }

    /// The log files of [`Replicas::start_logged`] in `logs`, whole.
    pub fn logs(&self, logs: &Path) -> Vec<String> {
        (0..self.clouds.len())
            .map(|i| {
                std::fs::read_to_string(logs.join(format!("replica-{i}.log"))).unwrap_or_default()
            })
            .collect()
    }

    fn spawn(n: usize, args: &[&str], logs: Option<&Path>) -> Replicas {
        let mut pg = PgServer::start();
        let db = pg.create_db();
        let url = pg.url(&db);
        let mut data = Vec::new();
        let mut clouds = Vec::new();
        for _ in 0..n {
            let dir = tempfile::tempdir().expect("replica data");
            let mut all: Vec<&str> = args.to_vec();
            all.extend(["--store", url.as_str()]);
            let cloud = match logs {
                Some(logs) => {
                    let log = logs.join(format!("replica-{}.log", clouds.len()));
                    Cloud::start_logged(dir.path(), &all, &log).0
                }
                None => Cloud::start_at_with(dir.path(), "127.0.0.1:0", &all).0,
            };
            clouds.push(Some(cloud));
            data.push(dir);
        }
        let addrs: Vec<String> = clouds.iter().flatten().map(Cloud::addr).collect();
        let lb = Haproxy::start(&addrs);
        let admin = clouds[0].as_ref().expect("started").admin.clone();
        Replicas {
            lb,
            clouds,
            pg,
            db,
            url,
            admin,
            _data: data,
        }
    }

    /// Replica `i` (from 0). Panics when it was killed.
    pub fn cloud(&self, i: usize) -> &Cloud {
        self.clouds[i]
            .as_ref()
            .unwrap_or_else(|| panic!("replica {i} was killed"))
    }

    /// The replicas still running.
    pub fn running(&self) -> impl Iterator<Item = &Cloud> {
        self.clouds.iter().flatten()
    }

    /// The `http://host:port` of each replica still running.
    pub fn urls(&self) -> Vec<String> {
        self.running().map(|c| c.url.clone()).collect()
    }

    /// The load balancer's URL, `http://127.0.0.1:PORT`.
    pub fn front_url(&self) -> String {
        format!("http://{}", self.lb.addr)
    }

    /// SIGKILLs replica `i` (HAProxy's health check then sends its requests to the others).
    pub fn kill(&mut self, i: usize) {
        if let Some(c) = self.clouds[i].take() {
            c.kill();
        }
    }

    /// `edgefn ARGS` in `dir`, aimed at the load balancer with [`Replicas::admin`].
    pub fn cli(&self, dir: &Path, args: &[&str]) -> Output {
        let front = self.front_url();
        edgefn_env(
            dir,
            args,
            &[
                ("EDGEFN_CLOUD", front.as_str()),
                ("EDGEFN_TOKEN", self.admin.as_str()),
            ],
        )
    }

    /// `GET path` through the load balancer, as admin.
    pub fn get(&self, path: &str) -> Response {
        http(&self.lb.addr, "GET", path, Some(&self.admin), &[], b"")
    }
}

//! Bundles in an S3-compatible object store (`edgefn-cloud --objects s3://…`), end to end against
//! a real S3 server process: `s3s-fs` (crates.io; `scripts/test.sh` installs it into
//! `~/.cache/edgefn-tools/bin`), started by each test on a free port with a folder of its own and
//! stopped when the test ends. Apply → objects in the bucket → an agent downloads them through
//! the cloud; dedup; the object store down during an apply; bad configuration at start.

#[path = "common/mod.rs"]
mod common;
#[path = "common/postgres.rs"]
mod pg;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::SystemTime;

use common::*;

const BUCKET: &str = "edgefn-bundles";
const ACCESS_KEY: &str = "edgefn-test-access";
/// Never printed by the cloud: every test checks its output for it.
const SECRET_KEY: &str = "s3cr3t-edgefn-4f9a2c7e";

const MAIN_PY: &str = r#"import os

def handle(event, context):
    return {"version": os.environ["VERSION"]}
"#;

/// The `s3s-fs` binary: on PATH, or where `scripts/test.sh` installs it.
fn s3s_fs() -> PathBuf {
    let cached = std::env::var_os("HOME")
        .map(|h| PathBuf::from(h).join(".cache/edgefn-tools/bin/s3s-fs"))
        .filter(|p| p.is_file());
    let on_path = std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|d| d.join("s3s-fs"))
            .find(|p| p.is_file())
    });
    on_path.or(cached).expect(
        "s3s-fs is not installed: scripts/test.sh installs it, or run `cargo install --locked --root ~/.cache/edgefn-tools --version 0.14.1 --features binary s3s-fs`",
    )
}

/// An `s3s-fs` process serving `root` (one folder per bucket) on 127.0.0.1:`port`, with one
/// access key; killed when dropped.
struct S3Server {
    child: Option<Child>,
    port: u16,
    root: PathBuf,
}

impl S3Server {
    /// Starts it with bucket [`BUCKET`] in `root`.
    fn start(root: &Path) -> S3Server {
        std::fs::create_dir_all(root.join(BUCKET)).expect("bucket folder");
        let mut s = S3Server {
            child: None,
            port: server_port(),
            root: root.to_path_buf(),
        };
        s.resume();
        s
    }

    /// (Re)starts it on the same port and folder.
    fn resume(&mut self) {
        let child = Command::new(s3s_fs())
            .args([
                "--host",
                "127.0.0.1",
                "--port",
                &self.port.to_string(),
                "--access-key",
                ACCESS_KEY,
                "--secret-key",
                SECRET_KEY,
            ])
            .arg(&self.root)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("start s3s-fs");
        self.child = Some(child);
        let addr = format!("127.0.0.1:{}", self.port);
        wait_until(30, "s3s-fs listens", || {
            std::net::TcpStream::connect(&addr).is_ok()
        });
    }

    /// SIGKILL: the object store is gone.
    fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// The `AWS_*` variables that reach it, with `secret` as the secret key.
    fn env_with(&self, secret: &str) -> Vec<(&'static str, String)> {
        vec![
            ("AWS_ACCESS_KEY_ID", ACCESS_KEY.into()),
            ("AWS_SECRET_ACCESS_KEY", secret.into()),
            ("AWS_REGION", "us-east-1".into()),
            (
                "AWS_ENDPOINT_URL",
                format!("http://127.0.0.1:{}", self.port),
            ),
            ("AWS_ALLOW_HTTP", "true".into()),
        ]
    }

    fn env(&self) -> Vec<(&'static str, String)> {
        self.env_with(SECRET_KEY)
    }

    /// The objects under `prefix` in the bucket (digest-named files) and their modification
    /// times.
    fn objects(&self, prefix: &str) -> Vec<(String, SystemTime)> {
        let dir = self.root.join(BUCKET).join(prefix);
        let mut out: Vec<(String, SystemTime)> = std::fs::read_dir(&dir)
            .map(|rd| {
                rd.flatten()
                    .filter(|e| {
                        let n = e.file_name().to_string_lossy().into_owned();
                        n.len() == 64 && n.bytes().all(|b| b.is_ascii_hexdigit())
                    })
                    .map(|e| {
                        let m = e.metadata().expect("stat").modified().expect("mtime");
                        (e.file_name().to_string_lossy().into_owned(), m)
                    })
                    .collect()
            })
            .unwrap_or_default();
        out.sort();
        out
    }
}

impl Drop for S3Server {
    fn drop(&mut self) {
        self.stop();
    }
}

fn pairs<'a>(env: &'a [(&'static str, String)]) -> Vec<(&'static str, &'a str)> {
    env.iter().map(|(k, v)| (*k, v.as_str())).collect()
}

/// A project with one python function on device `dev-a`, in git, and a cloud whose bundles go
/// to `s3://edgefn-bundles/PREFIX`.
struct Fleet {
    project: tempfile::TempDir,
    cloud: Cloud,
    _cloud_data: tempfile::TempDir,
    cloud_log: PathBuf,
    agent_config: PathBuf,
}

fn manifest(version: u32) -> String {
    format!(
        "apiVersion: edgefn/v1\nproject: objects-test\nfunctions:\n  work:\n    path: functions/work\n    runtime: python3\n    handler: main.handle\n    env: {{ VERSION: \"{version}\" }}\ndevices:\n  dev-a: {{}}\nbindings:\n  - function: work\n    devices: {{ names: [dev-a] }}\n    triggers: [ {{ topic: \"jobs/#\" }} ]\n"
    )
}

impl Fleet {
    fn new(s3: &S3Server, prefix: &str) -> Fleet {
        Fleet::new_with(s3, prefix, &[])
    }

    /// [`Fleet::new`], the cloud started with `extra` arguments too.
    fn new_with(s3: &S3Server, prefix: &str, extra: &[&str]) -> Fleet {
        let cloud_data = tempfile::tempdir().expect("data");
        let cloud_log = cloud_data.path().join("cloud.log");
        let url = format!("s3://{BUCKET}/{prefix}");
        let mut args = vec!["--objects", url.as_str()];
        args.extend_from_slice(extra);
        let cloud = Cloud::start_env(
            &cloud_data.path().join("data"),
            &args,
            &pairs(&s3.env()),
            Some(&cloud_log),
        );
        let project = tempfile::tempdir().expect("project");
        let dir = project.path().join("functions/work");
        std::fs::create_dir_all(&dir).expect("mkdir");
        std::fs::write(dir.join("main.py"), MAIN_PY).expect("write");
        std::fs::write(project.path().join("edgefn.yaml"), manifest(1)).expect("write");
        std::fs::write(project.path().join(".gitignore"), "agent.yaml\n").expect("write");
        git(project.path(), &["init", "-q"]);
        git(project.path(), &["add", "-A"]);
        git(project.path(), &["commit", "-q", "-m", "v1"]);
        let agent_config = project.path().join("agent.yaml");
        let f = Fleet {
            project,
            cloud,
            _cloud_data: cloud_data,
            cloud_log,
            agent_config,
        };
        ok(&f.cli(&[
            "device",
            "add",
            "dev-a",
            "--out",
            f.agent_config.to_str().expect("utf8"),
        ]));
        let mut config = std::fs::read_to_string(&f.agent_config).expect("read");
        config.push_str("healthWindow: 1s\npollWait: 5s\nreportInterval: 1s\n");
        std::fs::write(&f.agent_config, config).expect("write");
        f
    }

    fn cli(&self, args: &[&str]) -> std::process::Output {
        let env = self.cloud.env();
        edgefn_env(
            self.project.path(),
            args,
            &[(env[0].0, env[0].1.as_str()), (env[1].0, env[1].1.as_str())],
        )
    }

    /// Commits version `v` of the manifest, and `code` as an extra line of the function (a
    /// new bundle when it changes); returns the output of `edgefn apply`.
    fn commit_and_apply(&self, v: u32, code: &str) -> std::process::Output {
        std::fs::write(self.project.path().join("edgefn.yaml"), manifest(v)).expect("write");
        std::fs::write(
            self.project.path().join("functions/work/main.py"),
            format!("{MAIN_PY}{code}\n"),
        )
        .expect("write");
        git(self.project.path(), &["add", "-A"]);
        git(
            self.project.path(),
            &["commit", "-q", "--allow-empty", "-m", &format!("v{v}")],
        );
        self.cli(&["apply"])
    }

    fn admin(&self, method: &str, path: &str, headers: &[(&str, &str)], body: &[u8]) -> Response {
        http(
            &self.cloud.addr(),
            method,
            path,
            Some(&self.cloud.admin),
            headers,
            body,
        )
    }

    fn revisions(&self) -> usize {
        let r = self.admin("GET", "/v1/revisions", &[], b"");
        assert_eq!(r.status, 200, "{}", text(&r.body));
        r.json().as_array().expect("revisions").len()
    }

    fn converged(&self) -> bool {
        let s = self.admin("GET", "/v1/status", &[], b"").json();
        s["devices"]
            .as_array()
            .and_then(|d| d.iter().find(|d| d["name"] == "dev-a"))
            .is_some_and(|d| d["converged"] == true)
    }

    /// The cloud's log: it never holds the secret key.
    fn log_without_secret(&self) -> String {
        let log = std::fs::read_to_string(&self.cloud_log).unwrap_or_default();
        assert!(
            !log.contains(SECRET_KEY),
            "the secret key is in the log:\n{log}"
        );
        log
    }
}

fn version_of(agent: &AgentProc) -> String {
    let r = agent.publish("jobs/one", &serde_json::json!({}));
    r["deliveries"][0]["result"]["version"]
        .as_str()
        .unwrap_or_else(|| panic!("no result: {r}"))
        .to_owned()
}

fn all_output(out: &std::process::Output) -> String {
    format!("{}{}", text(&out.stdout), text(&out.stderr))
}

#[test]
fn bundles_go_to_the_object_store_once_and_an_agent_downloads_them_from_there() {
    let s3_root = tempfile::tempdir().expect("s3 root");
    let s3 = S3Server::start(s3_root.path());
    let fleet = Fleet::new(&s3, "fleet-a");
    let out = fleet.commit_and_apply(1, "");
    assert!(out.status.success(), "{}", all_output(&out));
    assert!(
        all_output(&out).contains("uploading"),
        "{}",
        all_output(&out)
    );

    // The bundle is an object in the bucket, under the prefix; none is in the data folder.
    let objects = s3.objects("fleet-a");
    assert_eq!(objects.len(), 1, "{objects:?}");
    let digest = objects[0].0.clone();
    let local = fleet.cloud.data.join("bundles");
    assert!(
        std::fs::read_dir(&local).map_or(true, |mut d| d.next().is_none()),
        "nothing in {}",
        local.display()
    );

    // An agent downloads it through the cloud and runs it.
    let agent_data = tempfile::tempdir().expect("agent data");
    let agent = AgentProc::start(&fleet.agent_config, agent_data.path(), &[]);
    wait_until(60, "revision 1 runs", || fleet.converged());
    assert_eq!(version_of(&agent), "1");

    // The cloud serves it from the object store, whole and from an offset (a resumed download).
    let stored =
        std::fs::read(s3_root.path().join(BUCKET).join("fleet-a").join(&digest)).expect("object");
    let whole = fleet.admin("GET", &format!("/v1/bundles/{digest}"), &[], b"");
    assert_eq!(whole.status, 200);
    assert_eq!(whole.body, stored);
    let rest = fleet.admin(
        "GET",
        &format!("/v1/bundles/{digest}"),
        &[("Range", "bytes=10-")],
        b"",
    );
    assert_eq!(rest.status, 206, "{}", text(&rest.body));
    assert_eq!(rest.body, stored[10..]);
    assert_eq!(
        rest.header("content-range"),
        Some(format!("bytes 10-{}/{}", stored.len() - 1, stored.len()).as_str())
    );
    let past = fleet.admin(
        "GET",
        &format!("/v1/bundles/{digest}"),
        &[("Range", &format!("bytes={}-", stored.len()))],
        b"",
    );
    assert_eq!(past.status, 416);
    let absent = fleet.admin("GET", &format!("/v1/bundles/{}", "0".repeat(64)), &[], b"");
    assert_eq!(absent.status, 404);

    // A second apply with the same bundle (only the manifest changes) uploads nothing: the
    // object is not written again.
    let out = fleet.commit_and_apply(2, "");
    assert!(out.status.success(), "{}", all_output(&out));
    assert!(
        !all_output(&out).contains("uploading"),
        "{}",
        all_output(&out)
    );
    assert_eq!(
        s3.objects("fleet-a"),
        objects,
        "the object was not rewritten"
    );
    // Uploading it again by hand is answered 200 (already stored), and writes nothing either.
    let again = fleet.admin("PUT", &format!("/v1/bundles/{digest}"), &[], &stored);
    assert_eq!(again.status, 200, "{}", text(&again.body));
    assert_eq!(
        s3.objects("fleet-a"),
        objects,
        "the object was not rewritten"
    );
    wait_until(60, "revision 2 runs", || {
        fleet.converged() && version_of(&agent) == "2"
    });

    // A new bundle is a second object.
    let out = fleet.commit_and_apply(3, "# v3");
    assert!(out.status.success(), "{}", all_output(&out));
    assert_eq!(s3.objects("fleet-a").len(), 2);
    wait_until(60, "revision 3 runs", || {
        fleet.converged() && version_of(&agent) == "3"
    });
    fleet.log_without_secret();
}

#[test]
fn the_object_store_down_during_an_apply_fails_it_whole_and_it_goes_through_once_back() {
    let s3_root = tempfile::tempdir().expect("s3 root");
    let mut s3 = S3Server::start(s3_root.path());
    let fleet = Fleet::new(&s3, "");
    let out = fleet.commit_and_apply(1, "");
    assert!(out.status.success(), "{}", all_output(&out));
    assert_eq!(fleet.revisions(), 1);
    let first = s3.objects("");
    assert_eq!(first.len(), 1);

    // The object store goes away between the apply's steps: each step fails with 503, and no
    // revision names a bundle that is not stored.
    let new_bundle = b"bytes of a bundle that never reaches the object store".to_vec();
    let digest = {
        use sha2::Digest;
        hex(&sha2::Sha256::digest(&new_bundle))
    };
    let missing = fleet.admin(
        "POST",
        "/v1/bundles/missing",
        &[("Content-Type", "application/json")],
        serde_json::json!({ "digests": [digest] })
            .to_string()
            .as_bytes(),
    );
    assert_eq!(missing.status, 200, "{}", text(&missing.body));
    s3.stop();
    let put = fleet.admin("PUT", &format!("/v1/bundles/{digest}"), &[], &new_bundle);
    assert_eq!(put.status, 503, "{}", text(&put.body));
    assert_eq!(put.json()["error"]["code"], "object_store_unavailable");
    let message = put.json()["error"]["message"]
        .as_str()
        .expect("message")
        .to_owned();
    assert!(
        message.contains(&format!("s3://{BUCKET}")) && message.contains("try again"),
        "{message}"
    );
    // The commit checks that its bundles are stored (HEAD): it cannot, so it commits nothing.
    let latest = fleet.admin("GET", "/v1/revisions/1", &[], b"").json();
    let request = serde_json::json!({
        "manifest": manifest(2),
        "bundles": latest["bundles"],
    });
    let commit = fleet.admin(
        "POST",
        "/v1/revisions",
        &[("Content-Type", "application/json")],
        request.to_string().as_bytes(),
    );
    assert_eq!(commit.status, 503, "{}", text(&commit.body));
    assert_eq!(commit.json()["error"]["code"], "object_store_unavailable");
    assert_eq!(fleet.revisions(), 1, "no revision was committed");
    // A download fails the same way, and says so.
    let get = fleet.admin("GET", &format!("/v1/bundles/{}", first[0].0), &[], b"");
    assert_eq!(get.status, 503, "{}", text(&get.body));

    // `edgefn apply` of a new bundle fails whole, with a message that says what to do.
    let out = fleet.commit_and_apply(2, "# v2");
    assert!(!out.status.success(), "{}", all_output(&out));
    let said = all_output(&out);
    eprintln!("edgefn apply with the object store down said:\n{said}");
    assert!(
        said.contains("object store") && said.contains("try again"),
        "{said}"
    );
    assert_eq!(fleet.revisions(), 1, "no revision was committed");

    // Back: the same apply goes through, and the new bundle is stored.
    s3.resume();
    let out = fleet.cli(&["apply"]);
    assert!(out.status.success(), "{}", all_output(&out));
    assert_eq!(fleet.revisions(), 2);
    assert_eq!(s3.objects("").len(), 2);
    let agent_data = tempfile::tempdir().expect("agent data");
    let agent = AgentProc::start(&fleet.agent_config, agent_data.path(), &[]);
    wait_until(60, "revision 2 runs", || fleet.converged());
    assert_eq!(version_of(&agent), "2");
    let log = fleet.log_without_secret();
    assert!(log.contains("object store"), "the log says why:\n{log}");
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Runs `edgefn-cloud --objects URL` with `env`: it must exit at once with an error.
fn refused(url: &str, env: &[(&str, &str)]) -> String {
    let data = tempfile::tempdir().expect("data");
    let out = Command::new(sibling_bin("edgefn-cloud"))
        .args(["--data"])
        .arg(data.path().join("data"))
        .args([
            "--listen",
            "127.0.0.1:0",
            "--mqtt-listen",
            "none",
            "--objects",
            url,
        ])
        .env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .envs(env.iter().copied())
        .stdin(Stdio::null())
        .output()
        .expect("run edgefn-cloud");
    let said = all_output(&out);
    assert_eq!(out.status.code(), Some(1), "{url}: {said}");
    assert!(!said.contains("listening"), "{url}: {said}");
    for (_, v) in env {
        if v.starts_with("s3cr3t") || v.starts_with("wrong-") {
            assert!(!said.contains(v), "{url}: a secret is printed: {said}");
        }
    }
    said
}

#[test]
fn bad_object_store_configuration_is_refused_at_start_naming_what_to_fix() {
    let s3_root = tempfile::tempdir().expect("s3 root");
    let s3 = S3Server::start(s3_root.path());
    let env = s3.env();
    let good = pairs(&env);

    let said = refused("gs://edgefn-bundles", &good);
    assert!(
        said.contains("unknown scheme `gs`") && said.contains("s3://BUCKET"),
        "{said}"
    );
    let said = refused("s3://", &good);
    assert!(said.contains("no bucket"), "{said}");
    let said = refused("s3://edgefn:s3cr3t-in-url@bucket", &good);
    assert!(said.contains("AWS_SECRET_ACCESS_KEY"), "{said}");
    assert!(!said.contains("s3cr3t-in-url"), "{said}");

    let said = refused("s3://no-such-bucket/p", &good);
    assert!(
        said.contains("`no-such-bucket` does not exist") && said.contains("create it"),
        "{said}"
    );

    let wrong = s3.env_with("wrong-secret-5b1d");
    let said = refused("s3://edgefn-bundles", &pairs(&wrong));
    assert!(
        said.contains("refused the credentials")
            && said.contains("AWS_ACCESS_KEY_ID")
            && said.contains("AWS_SECRET_ACCESS_KEY"),
        "{said}"
    );

    let plain: Vec<(&str, &str)> = good
        .iter()
        .copied()
        .filter(|(k, _)| *k != "AWS_ALLOW_HTTP")
        .collect();
    let said = refused("s3://edgefn-bundles", &plain);
    assert!(said.contains("AWS_ALLOW_HTTP=true"), "{said}");

    // An endpoint without a scheme is refused (object_store would panic on it); an upper-case
    // `HTTP://` is plain http all the same.
    let endpoint = |value: &'static str| -> Vec<(&str, &str)> {
        plain
            .iter()
            .map(|(k, v)| {
                if *k == "AWS_ENDPOINT_URL" {
                    (*k, value)
                } else {
                    (*k, *v)
                }
            })
            .collect()
    };
    let said = refused("s3://edgefn-bundles", &endpoint("127.0.0.1:9"));
    assert!(
        said.contains("is not an http:// or https:// URL") && said.contains("AWS_ENDPOINT_URL"),
        "{said}"
    );
    let said = refused("s3://edgefn-bundles", &endpoint("HTTP://127.0.0.1:9"));
    assert!(said.contains("AWS_ALLOW_HTTP=true"), "{said}");

    // Nothing answers on the endpoint.
    let closed = format!("http://127.0.0.1:{}", server_port());
    let unreachable: Vec<(&str, &str)> = good
        .iter()
        .map(|(k, v)| {
            if *k == "AWS_ENDPOINT_URL" {
                (*k, closed.as_str())
            } else {
                (*k, *v)
            }
        })
        .collect();
    let said = refused("s3://edgefn-bundles", &unreachable);
    assert!(
        said.contains("cannot list bucket") && said.contains("AWS_ENDPOINT_URL"),
        "{said}"
    );
}

/// With the state in PostgreSQL (`--store`) and `--objects`, bundles go to the object store and
/// nothing of them to the database; an agent runs them; a code change adds one object.
#[test]
fn with_the_state_in_postgres_bundles_go_to_the_object_store_not_the_database() {
    let mut pg = pg::PgServer::start();
    let db = pg.create_db();
    let s3_root = tempfile::tempdir().expect("s3 root");
    let s3 = S3Server::start(s3_root.path());
    let store = pg.url(&db);
    let fleet = Fleet::new_with(&s3, "pg", &["--store", &store]);
    let out = fleet.commit_and_apply(1, "");
    assert!(out.status.success(), "{}", all_output(&out));
    assert_eq!(s3.objects("pg").len(), 1, "{:?}", s3.objects("pg"));
    assert_eq!(pg.psql(&db, "SELECT count(*) FROM bundles"), "0");
    assert_eq!(pg.psql(&db, "SELECT count(*) FROM revisions"), "1");

    let agent_data = tempfile::tempdir().expect("agent data");
    let agent = AgentProc::start(&fleet.agent_config, agent_data.path(), &[]);
    wait_until(60, "revision 1 runs", || fleet.converged());
    assert_eq!(version_of(&agent), "1");

    let out = fleet.commit_and_apply(2, "# changed");
    assert!(out.status.success(), "{}", all_output(&out));
    assert_eq!(s3.objects("pg").len(), 2);
    assert_eq!(pg.psql(&db, "SELECT count(*) FROM bundles"), "0");
    wait_until(60, "revision 2 runs", || {
        fleet.converged() && version_of(&agent) == "2"
    });
    let log = fleet.log_without_secret();
    assert!(
        !log.contains(pg::PG_PASSWORD),
        "the database password is in the log"
    );
}

/// A control plane moved to another object store without its bundles says at start which
/// archives the latest revision names that are not there, and how to bring them back.
#[test]
fn a_control_plane_moved_to_an_object_store_without_its_bundles_says_so_at_start() {
    let s3_root = tempfile::tempdir().expect("s3 root");
    let s3 = S3Server::start(s3_root.path());
    let fleet = Fleet::new(&s3, "before");
    let out = fleet.commit_and_apply(1, "");
    assert!(out.status.success(), "{}", all_output(&out));
    let Fleet {
        cloud, _cloud_data, ..
    } = fleet;
    let data = cloud.data.clone();
    cloud.stop();
    // The same data folder, its bundles now looked for under another prefix.
    let log = _cloud_data.path().join("moved.log");
    let moved = Cloud::start_env(
        &data,
        &["--objects", "s3://edgefn-bundles/after"],
        &pairs(&s3.env()),
        Some(&log),
    );
    let said = std::fs::read_to_string(&log).unwrap_or_default();
    assert!(
        said.contains("revision 1 names 1 archive(s) that are not stored here")
            && said.contains("edgefn apply"),
        "{said}"
    );
    drop(moved);
}

/// `edgefn-cloud move-store --objects s3://…`: a cloud on its data folder, moved into
/// PostgreSQL with its bundles put into the object store (none into the database); started with
/// `--store` and the same `--objects`, it serves the same revision and the same bundle bytes.
#[test]
fn move_store_puts_the_bundles_into_the_object_store() {
    let mut pg = pg::PgServer::start();
    let db = pg.create_db();
    let s3_root = tempfile::tempdir().expect("s3 root");
    let s3 = S3Server::start(s3_root.path());
    let data = tempfile::tempdir().expect("data");
    let project = tempfile::tempdir().expect("project");
    let dir = project.path().join("functions/work");
    std::fs::create_dir_all(&dir).expect("mkdir");
    std::fs::write(dir.join("main.py"), MAIN_PY).expect("write");
    std::fs::write(project.path().join("edgefn.yaml"), manifest(1)).expect("write");
    git(project.path(), &["init", "-q"]);
    git(project.path(), &["add", "-A"]);
    git(project.path(), &["commit", "-q", "-m", "v1"]);
    let local = Cloud::start(data.path());
    let env = local.env();
    let env = [(env[0].0, env[0].1.as_str()), (env[1].0, env[1].1.as_str())];
    ok(&edgefn_env(project.path(), &["apply"], &env));
    let get =
        |cloud: &Cloud, path: &str| http(&cloud.addr(), "GET", path, Some(&cloud.admin), &[], b"");
    let revision = get(&local, "/v1/revisions/1").json();
    let digest = revision["bundles"]["work"]
        .as_str()
        .expect("the bundle's digest")
        .to_owned();
    let bytes = get(&local, &format!("/v1/bundles/{digest}")).body;
    assert!(!bytes.is_empty());
    assert!(local.stop().success());

    let url = format!("s3://{BUCKET}/moved");
    let out = Command::new(sibling_bin("edgefn-cloud"))
        .args(["move-store", "--data"])
        .arg(data.path())
        .args(["--to", &pg.url(&db), "--objects", &url])
        .envs(s3.env())
        .stdin(Stdio::null())
        .output()
        .expect("run move-store");
    assert!(out.status.success(), "{}", all_output(&out));
    assert!(
        text(&out.stdout).contains(&format!("1 object(s) copied into {url}")),
        "{}",
        all_output(&out)
    );
    assert!(!all_output(&out).contains(SECRET_KEY));
    assert_eq!(
        s3.objects("moved")
            .into_iter()
            .map(|(d, _)| d)
            .collect::<Vec<_>>(),
        vec![digest.clone()]
    );
    assert_eq!(pg.psql(&db, "SELECT count(*) FROM bundles"), "0");

    let moved = Cloud::start_env(
        data.path(),
        &["--store", &pg.url(&db), "--objects", &url],
        &pairs(&s3.env()),
        None,
    );
    assert_eq!(get(&moved, "/v1/revisions/1").json(), revision);
    let served = get(&moved, &format!("/v1/bundles/{digest}"));
    assert_eq!(served.status, 200);
    assert!(served.body == bytes, "the same bundle bytes");
}

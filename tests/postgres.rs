//! End-to-end tests of `edgefn-cloud --store postgres://…` against a real PostgreSQL server
//! (a throwaway cluster per test, tests/common/postgres.rs): the control-plane flow with a
//! real agent, two processes on one database racing applies, the database down at start, and
//! the database lost in the middle of an apply; and replicas behind HAProxy
//! (tests/common/replicas.rs): one killed, the rollout driver killed mid-rollout, messages
//! handled once on one Mosquitto, console sessions and log rings across replicas; TLS to the
//! database (sslmode, sslrootcert) and `edgefn-cloud move-store`.

#[path = "common/mod.rs"]
mod common;
#[path = "common/postgres.rs"]
mod pg;
#[path = "common/replicas.rs"]
mod replicas;

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::*;
use pg::{PG_PASSWORD, PgServer};
use replicas::{Mosquitto, Replicas};

const DAEMON: &str = "#!/bin/sh\necho \"daemon up\"\nwhile true; do sleep 1; done\n";

fn manifest(version: u32, rollout: &str) -> String {
    format!(
        "apiVersion: edgefn/v1\nproject: pg-test\nfunctions:\n  daemon:\n    path: functions/daemon\n    runtime: exec\n    handler: [\"./run.sh\"]\n    env: {{ VERSION: \"{version}\" }}\ndevices:\n  dev-a: {{}}\nbindings:\n  - function: daemon\n    devices: {{ names: [dev-a] }}\n    mode: continuous\n{rollout}"
    )
}

/// A project (in git) with one daemon on device `dev-a`, at version `v`.
fn project(v: u32) -> tempfile::TempDir {
    use std::os::unix::fs::PermissionsExt;
    let project = tempfile::tempdir().expect("project");
    let dir = project.path().join("functions/daemon");
    std::fs::create_dir_all(&dir).expect("mkdir");
    std::fs::write(dir.join("run.sh"), DAEMON).expect("write");
    std::fs::set_permissions(dir.join("run.sh"), std::fs::Permissions::from_mode(0o755))
        .expect("chmod");
    std::fs::write(project.path().join("edgefn.yaml"), manifest(v, "")).expect("write");
    std::fs::write(project.path().join(".gitignore"), "*.agent.yaml\ndist/\n").expect("write");
    git(project.path(), &["init", "-q"]);
    git(project.path(), &["add", "-A"]);
    git(project.path(), &["commit", "-q", "-m", &format!("v{v}")]);
    project
}

fn cli(dir: &Path, cloud: &Cloud, args: &[&str]) -> std::process::Output {
    let env = cloud.env();
    edgefn_env(
        dir,
        args,
        &[(env[0].0, env[0].1.as_str()), (env[1].0, env[1].1.as_str())],
    )
}

/// A cloud keeping its state in `url`, its local files in `data`.
fn cloud(data: &Path, addr: &str, url: &str) -> Cloud {
    Cloud::start_at_with(data, addr, &["--mqtt-listen", "none", "--store", url]).0
}

fn get(cloud: &Cloud, path: &str) -> Response {
    http(&cloud.addr(), "GET", path, Some(&cloud.admin), &[], b"")
}

fn device(cloud: &Cloud, name: &str) -> serde_json::Value {
    get(cloud, "/v1/status").json()["devices"]
        .as_array()
        .expect("devices")
        .iter()
        .find(|d| d["name"] == name)
        .cloned()
        .unwrap_or_default()
}

/// Packages the project and uploads its bundles; the bundles map of a submission.
fn upload(cloud: &Cloud, dir: &Path) -> serde_json::Value {
    let out = ok(&cli(
        dir,
        cloud,
        &["package", "--output", "json", "--out", "dist"],
    ));
    let list: serde_json::Value = serde_json::from_str(&out).expect("json");
    let mut bundles = serde_json::Map::new();
    for b in list.as_array().expect("list") {
        let digest = b["digest"].as_str().expect("digest");
        let bytes = std::fs::read(dir.join(format!("dist/{digest}.tar.zst"))).expect("bundle");
        let r = http(
            &cloud.addr(),
            "PUT",
            &format!("/v1/bundles/{digest}"),
            Some(&cloud.admin),
            &[],
            &bytes,
        );
        assert!(r.status == 201 || r.status == 200, "{}", text(&r.body));
        bundles.insert(
            b["function"].as_str().expect("name").to_owned(),
            b["digest"].clone(),
        );
    }
    serde_json::Value::Object(bundles)
}

fn submit(cloud: &Cloud, manifest: &str, bundles: &serde_json::Value, parent: u64) -> Response {
    submit_to(&cloud.addr(), &cloud.admin, manifest, bundles, parent)
}

/// [`submit`] to `addr` (a cloud or a load balancer) with `admin`.
fn submit_to(
    addr: &str,
    admin: &str,
    manifest: &str,
    bundles: &serde_json::Value,
    parent: u64,
) -> Response {
    let body =
        serde_json::json!({"manifest": manifest, "bundles": bundles, "expectedParent": parent});
    http(
        addr,
        "POST",
        "/v1/revisions",
        Some(admin),
        &[("Content-Type", "application/json")],
        body.to_string().as_bytes(),
    )
}

/// The whole flow with the state in PostgreSQL: apply, an agent converges; the cloud restarted
/// with an empty data folder still knows the revision, the device and its token (they are in
/// the database, not the folder), and the next apply reaches the agent.
#[test]
fn apply_converges_with_the_state_in_postgres() {
    let mut pg = PgServer::start();
    let db = pg.create_db();
    let url = pg.url(&db);
    let addr = format!("127.0.0.1:{}", server_port());
    let data = tempfile::tempdir().expect("data");
    let cloud1 = cloud(data.path(), &addr, &url);
    let project = project(1);
    let config: PathBuf = project.path().join("dev-a.agent.yaml");
    ok(&cli(
        project.path(),
        &cloud1,
        &[
            "device",
            "add",
            "dev-a",
            "--out",
            config.to_str().expect("utf8"),
        ],
    ));
    let mut text = std::fs::read_to_string(&config).expect("read");
    text.push_str("healthWindow: 1s\npollWait: 2s\nreportInterval: 1s\n");
    std::fs::write(&config, text).expect("write");
    ok(&cli(project.path(), &cloud1, &["apply"]));
    let agent_data = tempfile::tempdir().expect("agent data");
    let _agent = AgentProc::start(&config, agent_data.path(), &[]);
    wait_until(60, "dev-a converges on revision 1", || {
        let d = device(&cloud1, "dev-a");
        d["converged"] == true && d["report"]["runningRevision"] == 1
    });
    assert!(
        !data.path().join("cloud.redb").exists() && !data.path().join("bundles").exists(),
        "with --store, no state in the data folder"
    );
    assert!(cloud1.stop().success());

    // A new data folder: everything the device needs is in the database.
    let data2 = tempfile::tempdir().expect("data");
    let cloud2 = cloud(data2.path(), &addr, &url);
    std::fs::write(project.path().join("edgefn.yaml"), manifest(2, "")).expect("write");
    git(project.path(), &["commit", "-q", "-am", "v2"]);
    let out: serde_json::Value = serde_json::from_str(&ok(&cli(
        project.path(),
        &cloud2,
        &["apply", "--output", "json"],
    )))
    .expect("json");
    assert_eq!(out["revision"], 2, "revision 1 was kept: {out}");
    wait_until(60, "dev-a converges on revision 2", || {
        let d = device(&cloud2, "dev-a");
        d["converged"] == true && d["report"]["runningRevision"] == 2
    });
    assert_eq!(pg.psql(&db, "SELECT count(*) FROM revisions"), "2");
    assert_eq!(
        pg.psql(&db, "SELECT string_agg(name, ',') FROM devices"),
        "dev-a"
    );
}

/// Two control-plane processes on one database: applies racing on the same parent, one to
/// each, give one 201 and one 409 naming the new latest revision; both then serve it.
#[test]
fn applies_racing_on_two_processes_give_one_201_and_one_409() {
    let mut pg = PgServer::start();
    let db = pg.create_db();
    let url = pg.url(&db);
    let (data_a, data_b) = (
        tempfile::tempdir().expect("a"),
        tempfile::tempdir().expect("b"),
    );
    let a = cloud(data_a.path(), "127.0.0.1:0", &url);
    let b = cloud(data_b.path(), "127.0.0.1:0", &url);
    let project = project(1);
    // Uploaded through one, stored for both.
    let bundles = upload(&a, project.path());
    for round in 0..5u64 {
        let (ra, rb) = std::thread::scope(|s| {
            let ta = s.spawn(|| submit(&a, &manifest(2 * round as u32 + 1, ""), &bundles, round));
            let tb = s.spawn(|| submit(&b, &manifest(2 * round as u32 + 2, ""), &bundles, round));
            (ta.join().expect("a"), tb.join().expect("b"))
        });
        let mut statuses = [ra.status, rb.status];
        statuses.sort_unstable();
        assert_eq!(
            statuses,
            [201, 409],
            "round {round}: a: {} b: {}",
            text(&ra.body),
            text(&rb.body)
        );
        let conflict = if ra.status == 409 { &ra } else { &rb };
        assert_eq!(conflict.json()["error"]["code"], "conflict");
        assert_eq!(conflict.json()["error"]["details"]["latest"], round + 1);
    }
    for c in [&a, &b] {
        let history = get(c, "/v1/revisions").json();
        assert_eq!(history.as_array().map(Vec::len), Some(5));
        // Each serves the latest: the loser of the last race read it again.
        let status = get(c, "/v1/status").json();
        assert_eq!(status["revision"], 5, "{status}");
    }
}

/// A report answered `204` is in the database: the replica that took it, SIGKILLed straight
/// after answering, loses none, and the other replica shows every one. (Reports used to wait
/// up to a second in memory, and a killed replica's last second of them was lost until each
/// device's next report.)
#[test]
fn reports_answered_204_survive_a_sigkill_of_the_replica_that_took_them() {
    let mut pg = PgServer::start();
    let db = pg.create_db();
    let url = pg.url(&db);
    let (data_a, data_b) = (
        tempfile::tempdir().expect("a"),
        tempfile::tempdir().expect("b"),
    );
    let a = cloud(data_a.path(), "127.0.0.1:0", &url);
    let b = cloud(data_b.path(), "127.0.0.1:0", &url);
    let names: Vec<String> = (0..20).map(|i| format!("dev-{i:02}")).collect();
    let tokens: Vec<String> = names.iter().map(|n| register(&a, n)).collect();
    wait_until(30, "B knows the devices", || {
        get(&b, "/v1/devices").json().as_array().map(Vec::len) == Some(names.len())
    });
    std::thread::scope(|s| {
        for (name, token) in names.iter().zip(&tokens) {
            let b = &b;
            s.spawn(move || {
                let r = http(
                    &b.addr(),
                    "POST",
                    &format!("/v1/devices/{name}/status"),
                    Some(token),
                    &[("Content-Type", "application/json")],
                    br#"{"state":"running","runningRevision":7}"#,
                );
                assert_eq!(r.status, 204, "{}", text(&r.body));
            });
        }
    });
    b.kill();
    assert_eq!(
        pg.psql(
            &db,
            "SELECT count(*) FROM device_status WHERE report->>'runningRevision' = '7'"
        ),
        names.len().to_string(),
        "every answered report is stored"
    );
    wait_until(30, "A shows every report", || {
        names
            .iter()
            .all(|n| device(&a, n)["report"]["runningRevision"] == 7)
    });
}

/// PostgreSQL down when the cloud starts: it says which database (never the password, given
/// here in `$PGPASSWORD`) and why, and that it retries; keeps retrying, and serves once the
/// database is up.
#[test]
fn a_database_down_at_start_is_retried_until_it_comes_up() {
    let mut pg = PgServer::start();
    let db = pg.create_db();
    // The password from $PGPASSWORD, as the README recommends.
    let url = pg.url(&db).replace(&format!(":{PG_PASSWORD}@"), "@");
    pg.stop();
    let data = tempfile::tempdir().expect("data");
    let log = data.path().join("cloud.log");
    let mut child = Command::new(sibling_bin("edgefn-cloud"))
        .args(["--listen", "127.0.0.1:0", "--mqtt-listen", "none", "--data"])
        .arg(data.path().join("local"))
        .arg("--admin-token-file")
        .arg(data.path().join("admin.token"))
        .args(["--store", &url])
        .env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .env("PGPASSWORD", PG_PASSWORD)
        .stdout(Stdio::piped())
        .stderr(Stdio::from(std::fs::File::create(&log).expect("log")))
        .spawn()
        .expect("start edgefn-cloud");
    let read_log = || std::fs::read_to_string(&log).unwrap_or_default();
    wait_until(30, "the cloud says it retries, twice", || {
        read_log().matches("retrying in").count() >= 2
    });
    let text = read_log();
    assert!(
        text.contains(&format!(
            "PostgreSQL at postgres://edgefn@127.0.0.1:{}/{db} is not reachable",
            pg.port
        )),
        "{text}"
    );
    assert!(text.contains("Connection refused"), "says why: {text}");
    assert!(
        !text.contains(PG_PASSWORD),
        "the password is never logged: {text}"
    );
    assert!(child.try_wait().expect("wait").is_none(), "still waiting");
    pg.start_again();
    let mut lines = BufReader::new(child.stdout.take().expect("stdout")).lines();
    let started = Instant::now();
    let url = loop {
        let line = lines
            .next()
            .expect("edgefn-cloud exited before listening")
            .expect("read");
        if let Some(u) = line.strip_prefix("edgefn-cloud listening on ") {
            break u.to_owned();
        }
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "never listened"
        );
    };
    std::thread::spawn(move || for _ in lines {});
    let admin = std::fs::read_to_string(data.path().join("admin.token")).expect("token");
    let r = http(
        url.trim_start_matches("http://"),
        "GET",
        "/v1/revisions",
        Some(admin.trim()),
        &[],
        b"",
    );
    assert_eq!(r.status, 200, "{}", common::text(&r.body));
    assert!(!read_log().contains(PG_PASSWORD));
    let _ = child.kill();
    let _ = child.wait();
}

/// PostgreSQL crashes while an apply is being committed (its revision inserted, its rollout
/// record waiting on a lock another session holds): the apply is answered 503
/// `store_unavailable` with `Retry-After`; after the restart the database holds neither the
/// revision nor its rollout, and the same apply retried succeeds on the same cloud.
#[test]
fn a_database_lost_mid_apply_answers_503_and_keeps_no_partial_revision() {
    let mut pg = PgServer::start();
    let db = pg.create_db();
    let url = pg.url(&db);
    let data = tempfile::tempdir().expect("data");
    let c = cloud(data.path(), "127.0.0.1:0", &url);
    let project = project(1);
    let bundles = upload(&c, project.path());
    assert_eq!(submit(&c, &manifest(1, ""), &bundles, 0).status, 201);
    // Revision 2 rolls out (from revision 1): its commit writes a rollout record too.
    let v2 = manifest(
        2,
        "rollout:\n  deadline: 30s\n  stages:\n    - { percent: 100, bake: 1s }\n",
    );
    let mut holder = pg.session(&db);
    {
        use std::io::Write as _;
        let stdin = holder.stdin.as_mut().expect("stdin");
        writeln!(stdin, "BEGIN; LOCK TABLE meta IN ACCESS EXCLUSIVE MODE;").expect("lock");
        stdin.flush().expect("flush");
    }
    wait_until(30, "the lock is held", || {
        pg.psql(
            &db,
            "SELECT count(*) FROM pg_locks l JOIN pg_class c ON c.oid = l.relation WHERE c.relname = 'meta' AND l.mode = 'AccessExclusiveLock' AND l.granted",
        ) == "1"
    });
    let r = std::thread::scope(|s| {
        let apply = s.spawn(|| submit(&c, &v2, &bundles, 1));
        wait_until(30, "the commit waits on the lock", || {
            pg.psql(
                &db,
                "SELECT count(*) FROM pg_stat_activity WHERE application_name = 'edgefn-cloud' AND wait_event_type = 'Lock'",
            ) == "1"
        });
        pg.crash();
        apply.join().expect("apply")
    });
    assert_eq!(r.status, 503, "{}", text(&r.body));
    assert_eq!(r.json()["error"]["code"], "store_unavailable");
    assert_eq!(r.header("retry-after"), Some("2"));
    assert!(!text(&r.body).contains(PG_PASSWORD));
    let _ = holder.kill();
    let _ = holder.wait();
    pg.start_again();
    assert_eq!(pg.psql(&db, "SELECT max(number) FROM revisions"), "1");
    assert_eq!(
        pg.psql(&db, "SELECT count(*) FROM meta WHERE key = 'rollout'"),
        "0"
    );
    let again = submit(&c, &v2, &bundles, 1);
    assert_eq!(again.status, 201, "{}", text(&again.body));
    assert_eq!(again.json()["revision"], 2);
    assert_eq!(get(&c, "/v1/rollout").status, 200);
}

fn register(cloud: &Cloud, name: &str) -> String {
    let r = http(
        &cloud.addr(),
        "POST",
        "/v1/devices",
        Some(&cloud.admin),
        &[("Content-Type", "application/json")],
        format!("{{\"name\":\"{name}\"}}").as_bytes(),
    );
    assert_eq!(r.status, 201, "{}", text(&r.body));
    r.json()["token"].as_str().expect("token").to_owned()
}

/// Long-polls `cloud` for `device`'s desired state changing from `etag`, on a thread; returns
/// once the poll is parked on the server.
fn park_long_poll(
    cloud: &Cloud,
    device: &str,
    token: &str,
    etag: &str,
) -> std::thread::JoinHandle<Response> {
    let addr = cloud.addr();
    let (path, token, etag) = (
        format!("/v1/devices/{device}/desired?wait=60"),
        token.to_owned(),
        etag.to_owned(),
    );
    let poll = std::thread::spawn(move || {
        http(
            &addr,
            "GET",
            &path,
            Some(&token),
            &[("If-None-Match", &etag)],
            b"",
        )
    });
    wait_until(30, "the long-poll is parked", || {
        get(cloud, "/metrics")
            .body
            .windows(26)
            .any(|w| w == b"edgefn_longpolls_waiting 1")
    });
    poll
}

/// Two processes on one database: a device registered through A is known to B; long-polling
/// B, it wakes when an apply lands on A (PostgreSQL LISTEN/NOTIFY), and again after PostgreSQL
/// restarted (B's listener reconnects and reads the latest revision again); a report sent to B
/// is shown by A; removed through A, B refuses its token.
#[test]
fn a_device_long_polling_one_process_wakes_when_an_apply_lands_on_another() {
    let mut pg = PgServer::start();
    let db = pg.create_db();
    let url = pg.url(&db);
    let (data_a, data_b) = (
        tempfile::tempdir().expect("a"),
        tempfile::tempdir().expect("b"),
    );
    let a = cloud(data_a.path(), "127.0.0.1:0", &url);
    let project = project(1);
    let bundles = upload(&a, project.path());
    assert_eq!(submit(&a, &manifest(1, ""), &bundles, 0).status, 201);
    let b = cloud(data_b.path(), "127.0.0.1:0", &url);
    // Registered through A, known to B.
    let token = register(&a, "dev-a");
    let desired = |c: &Cloud| {
        http(
            &c.addr(),
            "GET",
            "/v1/devices/dev-a/desired",
            Some(&token),
            &[],
            b"",
        )
    };
    wait_until(30, "B knows the device registered through A", || {
        desired(&b).status == 200
    });
    let first = desired(&b);
    assert_eq!(first.json()["revision"], 1);
    let etag = first.header("etag").expect("etag").to_owned();

    let poll = park_long_poll(&b, "dev-a", &token, &etag);
    assert_eq!(submit(&a, &manifest(2, ""), &bundles, 1).status, 201);
    let woke = poll.join().expect("poll");
    assert_eq!(woke.status, 200, "{}", text(&woke.body));
    assert_eq!(woke.json()["revision"], 2);
    assert_eq!(get(&b, "/v1/status").json()["revision"], 2);

    // PostgreSQL restarts; the next apply on A still reaches the device waiting on B.
    let etag = woke.header("etag").expect("etag").to_owned();
    let poll = park_long_poll(&b, "dev-a", &token, &etag);
    pg.crash();
    pg.start_again();
    let r = submit(&a, &manifest(3, ""), &bundles, 2);
    assert_eq!(r.status, 201, "{}", text(&r.body));
    let woke = poll.join().expect("poll");
    assert_eq!(woke.status, 200, "{}", text(&woke.body));
    assert_eq!(woke.json()["revision"], 3);

    // A report sent to B is seen by A (through the database, within a flush or two).
    let report = http(
        &b.addr(),
        "POST",
        "/v1/devices/dev-a/status",
        Some(&token),
        &[("Content-Type", "application/json")],
        br#"{"state":"running","runningRevision":3}"#,
    );
    assert_eq!(report.status, 204, "{}", text(&report.body));
    wait_until(30, "A shows the report B received", || {
        device(&a, "dev-a")["report"]["runningRevision"] == 3
    });

    // Removed through A: B refuses its token.
    let r = http(
        &a.addr(),
        "DELETE",
        "/v1/devices/dev-a",
        Some(&a.admin),
        &[],
        b"",
    );
    assert!(r.status == 204 || r.status == 200, "{}", text(&r.body));
    wait_until(30, "B refuses the removed device's token", || {
        desired(&b).status == 401
    });
}

/// A device woken by one process downloads its new bundle through another that has not heard
/// of the revision yet (behind a balancer the download may go anywhere): the download is
/// served, not refused with a 403 that the agent took for a refused token. The late
/// notification is made certain by stopping A's LISTEN backend (SIGSTOP) while B commits.
#[test]
fn a_download_through_a_process_not_yet_notified_of_the_revision_is_served() {
    let mut pg = PgServer::start();
    let db = pg.create_db();
    let url = pg.url(&db);
    let (data_a, data_b) = (
        tempfile::tempdir().expect("a"),
        tempfile::tempdir().expect("b"),
    );
    let a = cloud(data_a.path(), "127.0.0.1:0", &url);
    let listen_sql = "SELECT pid FROM pg_stat_activity WHERE query LIKE 'LISTEN%'";
    let mut listener = String::new();
    wait_until(30, "A listens for notifications", || {
        listener = pg.psql(&db, listen_sql).trim().to_owned();
        !listener.is_empty()
    });
    let listener: i32 = listener.parse().expect("one LISTEN backend: A's");
    let project = project(1);
    let bundles = upload(&a, project.path());
    assert_eq!(submit(&a, &manifest(1, ""), &bundles, 0).status, 201);
    let token = register(&a, "dev-a");
    let b = cloud(data_b.path(), "127.0.0.1:0", &url);

    // Revision 2 with a new bundle, committed through B while A cannot hear of it.
    let run = project.path().join("functions/daemon/run.sh");
    std::fs::write(&run, format!("{DAEMON}# v2\n")).expect("write");
    git(project.path(), &["commit", "-qam", "v2"]);
    /// A backend stopped (SIGSTOP) until this is dropped (SIGCONT), however the test ends: a
    /// stopped backend would keep the cluster from stopping.
    struct Stopped(i32);
    impl Stopped {
        fn new(pid: i32) -> Stopped {
            let s = Command::new("kill")
                .args(["-STOP", &pid.to_string()])
                .status()
                .expect("kill");
            assert!(s.success(), "kill -STOP {pid}");
            Stopped(pid)
        }
    }
    impl Drop for Stopped {
        fn drop(&mut self) {
            let _ = Command::new("kill")
                .args(["-CONT", &self.0.to_string()])
                .status();
        }
    }
    let stopped = Stopped::new(listener);
    let new = upload(&b, project.path());
    let r = submit(&b, &manifest(2, ""), &new, 1);
    let digest = new["daemon"].as_str().expect("digest").to_owned();
    let from_a = http(
        &a.addr(),
        "GET",
        &format!("/v1/bundles/{digest}"),
        Some(&token),
        &[],
        b"",
    );
    let a_status = get(&a, "/v1/status").json()["revision"].clone();
    drop(stopped);
    assert_eq!(r.status, 201, "{}", text(&r.body));
    assert_ne!(
        bundles["daemon"], new["daemon"],
        "revision 2 has a new bundle"
    );
    assert_eq!(
        from_a.status,
        200,
        "the download through A: {}",
        text(&from_a.body)
    );
    assert_eq!(
        from_a.body,
        std::fs::read(project.path().join(format!("dist/{digest}.tar.zst"))).expect("bundle")
    );
    assert_eq!(a_status, 2, "A serves revision 2 once it caught up");
    // A bundle no desired state names is still refused, after the same catch-up.
    let other = http(
        &a.addr(),
        "GET",
        &format!(
            "/v1/bundles/{}",
            bundles["daemon"].as_str().expect("digest")
        ),
        Some(&token),
        &[],
        b"",
    );
    assert_eq!(other.status, 403, "{}", text(&other.body));

    // Revision 3 through B, A again unaware: the device, served revision 3 by B, polls A
    // saying so (`seen`, as the agent does) and is not sent back to revision 2.
    let stopped = Stopped::new(listener);
    let r = submit(&b, &manifest(3, ""), &new, 2);
    let from_b = http(
        &b.addr(),
        "GET",
        "/v1/devices/dev-a/desired",
        Some(&token),
        &[],
        b"",
    );
    let etag = from_b.header("etag").unwrap_or_default().to_owned();
    let poll_a = http(
        &a.addr(),
        "GET",
        "/v1/devices/dev-a/desired?wait=0&seen=3",
        Some(&token),
        &[("If-None-Match", &etag)],
        b"",
    );
    drop(stopped);
    assert_eq!(r.status, 201, "{}", text(&r.body));
    assert_eq!(from_b.json()["revision"], 3, "{}", text(&from_b.body));
    assert_eq!(
        poll_a.status,
        304,
        "A answered the device that has revision 3 with: {}",
        text(&poll_a.body)
    );
}

/// Two replicas on one database behind HAProxy: the CLI and a real agent talk only to
/// HAProxy; the agent converges on revision 1; with one replica SIGKILLed, the next apply
/// still lands and the agent converges on it through the other.
#[test]
fn two_replicas_behind_haproxy_keep_serving_when_one_is_killed() {
    // The CLI sees one control plane: HAProxy, with A's admin token (valid on both).
    let mut r = Replicas::start(2);
    let project = project(1);
    let config: PathBuf = project.path().join("dev-a.agent.yaml");
    ok(&r.cli(
        project.path(),
        &[
            "device",
            "add",
            "dev-a",
            "--out",
            config.to_str().expect("utf8"),
        ],
    ));
    let mut text_config = std::fs::read_to_string(&config).expect("read");
    assert!(
        text_config.contains(&r.lb.addr),
        "the agent is given HAProxy's address"
    );
    text_config.push_str("healthWindow: 1s\npollWait: 2s\nreportInterval: 1s\n");
    std::fs::write(&config, text_config).expect("write");
    // Both replicas know the device before it starts (registered through one of them).
    for c in r.running() {
        wait_until(30, "the replica knows dev-a", || {
            get(c, "/v1/devices").json().to_string().contains("dev-a")
        });
    }
    ok(&r.cli(project.path(), &["apply"]));
    let agent_data = tempfile::tempdir().expect("agent data");
    let _agent = AgentProc::start(&config, agent_data.path(), &[]);
    wait_until(60, "dev-a runs revision 1", || {
        r.running()
            .any(|c| device(c, "dev-a")["report"]["runningRevision"] == 1)
    });

    r.kill(0);
    std::fs::write(project.path().join("edgefn.yaml"), manifest(2, "")).expect("write");
    git(project.path(), &["commit", "-q", "-am", "v2"]);
    let out: serde_json::Value =
        serde_json::from_str(&ok(&r.cli(project.path(), &["apply", "--output", "json"])))
            .expect("json");
    assert_eq!(out["revision"], 2, "{out}");
    wait_until(60, "dev-a converges on revision 2 through B", || {
        let d = device(r.cloud(1), "dev-a");
        d["converged"] == true && d["report"]["runningRevision"] == 2
    });
}

/// The manifest of [`a_staged_rollout_continues_through_the_other_replica_when_its_driver_is_killed`]:
/// the daemon on `dev-a` and `dev-b`, at version `v`, with `rollout` appended.
fn fleet_manifest(version: u32, rollout: &str) -> String {
    format!(
        "apiVersion: edgefn/v1\nproject: pg-test\nfunctions:\n  daemon:\n    path: functions/daemon\n    runtime: exec\n    handler: [\"./run.sh\"]\n    env: {{ VERSION: \"{version}\" }}\ndevices:\n  dev-a: {{}}\n  dev-b: {{}}\nbindings:\n  - function: daemon\n    devices: {{ names: [dev-a, dev-b] }}\n    mode: continuous\n{rollout}"
    )
}

/// Which `edgefn-cloud` process holds the rollout driver's advisory lock, as PostgreSQL sees
/// it (the holder's connection is named `edgefn-cloud pid N`); the pids of every holder.
fn driver_pids(pg: &PgServer, db: &str) -> Vec<u32> {
    pg.psql(
        db,
        "SELECT a.application_name FROM pg_locks l JOIN pg_stat_activity a ON a.pid = l.pid \
         WHERE l.locktype = 'advisory' AND l.granted",
    )
    .lines()
    .filter_map(|l| l.strip_prefix("edgefn-cloud pid "))
    .map(|p| p.parse().expect("pid"))
    .collect()
}

/// Two replicas behind HAProxy, two real agents: exactly one replica drives a staged rollout
/// (holds the advisory lock); SIGKILLed while its canary stage bakes, the lock moves to the
/// other, which steps the rollout to its end: both devices converge on the new revision, and
/// the history holds revisions 1 and 2 once each.
#[test]
fn a_staged_rollout_continues_through_the_other_replica_when_its_driver_is_killed() {
    let mut r = Replicas::start(2);
    let project = project(1);
    std::fs::write(project.path().join("edgefn.yaml"), fleet_manifest(1, "")).expect("write");
    git(project.path(), &["commit", "-q", "-am", "two devices"]);
    let mut agents = Vec::new();
    let mut agent_dirs = Vec::new();
    for name in ["dev-a", "dev-b"] {
        let config: PathBuf = project.path().join(format!("{name}.agent.yaml"));
        ok(&r.cli(
            project.path(),
            &[
                "device",
                "add",
                name,
                "--out",
                config.to_str().expect("utf8"),
            ],
        ));
        let mut text_config = std::fs::read_to_string(&config).expect("read");
        text_config.push_str("healthWindow: 1s\npollWait: 2s\nreportInterval: 1s\n");
        std::fs::write(&config, text_config).expect("write");
        agent_dirs.push((name, config));
    }
    for c in r.running() {
        wait_until(30, "the replica knows both devices", || {
            let list = get(c, "/v1/devices").json().to_string();
            list.contains("dev-a") && list.contains("dev-b")
        });
    }
    ok(&r.cli(project.path(), &["apply"]));
    for (_, config) in &agent_dirs {
        let data = tempfile::tempdir().expect("agent data");
        agents.push((AgentProc::start(config, data.path(), &[]), data));
    }
    wait_until(60, "both devices run revision 1", || {
        ["dev-a", "dev-b"]
            .iter()
            .all(|d| device(r.cloud(1), d)["report"]["runningRevision"] == 1)
    });
    wait_until(30, "one replica drives rollouts", || {
        driver_pids(&r.pg, &r.db).len() == 1
    });
    let pids = [r.cloud(0).child.id(), r.cloud(1).child.id()];
    let leader = driver_pids(&r.pg, &r.db)[0];
    assert!(pids.contains(&leader), "{leader} is one of {pids:?}");

    // Revision 2 rolls out in two stages: one device, bake, then everyone.
    let rollout = "rollout:\n  deadline: 60s\n  stages:\n    - { devices: 1, bake: 4s }\n    - { percent: 100, bake: 1s }\n";
    std::fs::write(
        project.path().join("edgefn.yaml"),
        fleet_manifest(2, rollout),
    )
    .expect("write");
    git(project.path(), &["commit", "-q", "-am", "v2"]);
    ok(&r.cli(project.path(), &["apply"]));
    // The other replica reads the new revision when its NOTIFY arrives (milliseconds).
    wait_until(30, "both replicas serve revision 2's rollout", || {
        r.running()
            .all(|c| get(c, "/v1/rollout").json()["revision"] == 2)
    });
    let started = r.get("/v1/rollout").json();
    assert_eq!(started["revision"], 2, "{started}");
    let canary = started["stages"][0]["devices"][0]
        .as_str()
        .expect("canary")
        .to_owned();
    wait_until(60, "the canary runs revision 2", || {
        device(r.cloud(1), &canary)["report"]["runningRevision"] == 2
    });
    let middle = r.get("/v1/rollout").json();
    assert_eq!(middle["state"], "running", "killed in the middle: {middle}");
    assert_eq!(driver_pids(&r.pg, &r.db), vec![leader], "still one driver");

    // SIGKILL the driver: its session ends, the other replica takes the lock.
    let (killed, survivor) = if leader == pids[0] { (0, 1) } else { (1, 0) };
    r.kill(killed);
    let survivor = r.cloud(survivor);
    wait_until(30, "the survivor drives rollouts", || {
        driver_pids(&r.pg, &r.db) == vec![survivor.child.id()]
    });
    wait_until(90, "the rollout completes through the survivor", || {
        get(survivor, "/v1/rollout").json()["state"] == "completed"
    });
    wait_until(60, "both devices converge on revision 2", || {
        ["dev-a", "dev-b"].iter().all(|d| {
            let d = device(survivor, d);
            d["converged"] == true && d["report"]["runningRevision"] == 2
        })
    });
    let history = get(survivor, "/v1/revisions").json();
    let numbers: Vec<u64> = history
        .as_array()
        .expect("history")
        .iter()
        .map(|h| h["number"].as_u64().expect("number"))
        .collect();
    assert_eq!(
        numbers,
        vec![2, 1],
        "no revision lost or duplicated: {history}"
    );
    assert_eq!(
        r.pg.psql(
            &r.db,
            "SELECT count(*), count(DISTINCT number) FROM revisions"
        ),
        "2|2"
    );
}

/// Publishes `(id, copies)` messages up as device `dev-a`'s outbox `outbox` would: each on
/// `edgefn/dev-a/up/alerts/<id>` with the outbox's user properties, `copies` times (the
/// resends of at-least-once delivery), at QoS 1, waiting for every acknowledgement.
fn publish_up(port: u16, outbox: &str, messages: &[(u64, usize)]) {
    use rumqttc::v5::mqttbytes::QoS;
    use rumqttc::v5::mqttbytes::v5::{Packet, PublishProperties};
    use rumqttc::v5::{AsyncClient, Event, MqttOptions};
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("rt");
    rt.block_on(async {
        let (client, mut events) =
            AsyncClient::new(MqttOptions::new("dev-a", "127.0.0.1", port), 1000);
        let mut sent = 0;
        for &(id, copies) in messages {
            for _ in 0..copies {
                let props = PublishProperties {
                    user_properties: vec![
                        ("edgefn-id".into(), id.to_string()),
                        ("edgefn-outbox".into(), outbox.into()),
                    ],
                    ..Default::default()
                };
                client
                    .publish_with_properties(
                        format!("edgefn/dev-a/up/alerts/{id}"),
                        QoS::AtLeastOnce,
                        false,
                        format!("{{\"seq\":{id}}}"),
                        props,
                    )
                    .await
                    .expect("publish");
                sent += 1;
            }
        }
        let mut acked = 0;
        while acked < sent {
            if let Ok(Event::Incoming(Packet::PubAck(_))) = events.poll().await {
                acked += 1;
            }
        }
        let _ = client.disconnect().await;
    });
}

/// The value of the `/metrics` line starting with `prefix`.
fn metric(cloud: &Cloud, prefix: &str) -> u64 {
    let r = get(cloud, "/metrics");
    text(&r.body)
        .lines()
        .find_map(|l| l.strip_prefix(prefix))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or_else(|| panic!("no `{prefix}` in /metrics"))
}

/// Two replicas on one database and one Mosquitto: their subscription to what devices send up
/// is an MQTT 5 shared subscription (each message reaches one replica), and the marks of the
/// messages handled are in the database: 30 messages, each published twice (resends, which
/// the broker may hand to either replica), are handled 30 times in all — once each — and
/// both replicas handle some.
#[test]
fn messages_sent_up_are_handled_once_across_replicas_on_one_mosquitto() {
    let mut pg = PgServer::start();
    let db = pg.create_db();
    let url = pg.url(&db);
    let broker = Mosquitto::start();
    let mqtt_url = format!("mqtt://127.0.0.1:{}", broker.port);
    let (data_a, data_b) = (
        tempfile::tempdir().expect("a"),
        tempfile::tempdir().expect("b"),
    );
    let start = |data: &Path| {
        Cloud::start_at_with(
            data,
            "127.0.0.1:0",
            &["--mqtt-url", &mqtt_url, "--store", &url],
        )
        .0
    };
    let (a, b) = (start(data_a.path()), start(data_b.path()));
    for c in [&a, &b] {
        wait_until(30, "the replica is subscribed", || {
            metric(c, "edgefn_mqtt_connected ") == 1
        });
    }
    // A live stream on A: it sees every message once, whichever replica the broker chose.
    let stream = std::sync::Arc::new(std::sync::Mutex::new(Vec::<u8>::new()));
    let (addr, admin, sink) = (a.addr(), a.admin.clone(), stream.clone());
    std::thread::spawn(move || {
        use std::io::{Read, Write};
        let mut s = std::net::TcpStream::connect(&addr).expect("connect");
        write!(
            s,
            "GET /v1/messages?topic=%23 HTTP/1.1\r\nHost: {addr}\r\nAuthorization: Bearer {admin}\r\n\r\n"
        )
        .expect("request");
        let mut buf = [0u8; 4096];
        while let Ok(n) = s.read(&mut buf) {
            if n == 0 {
                break;
            }
            sink.lock().expect("lock").extend_from_slice(&buf[..n]);
        }
    });
    wait_until(30, "the stream is open", || {
        String::from_utf8_lossy(&stream.lock().expect("lock")).contains(" 200 ")
    });
    let n = 30u64;
    let messages: Vec<(u64, usize)> = (1..=n).map(|id| (id, 2)).collect();
    publish_up(broker.port, "outbox-1", &messages);
    let streamed = || {
        let text = String::from_utf8_lossy(&stream.lock().expect("lock")).into_owned();
        (1..=n)
            .map(|i| text.matches(&format!("\"alerts/{i}\"")).count())
            .collect::<Vec<_>>()
    };
    let deadline = Instant::now() + Duration::from_secs(30);
    while !streamed().iter().all(|&c| c >= 1) {
        assert!(
            Instant::now() < deadline,
            "A's stream shows every message: {:?}\n{}",
            streamed(),
            String::from_utf8_lossy(&stream.lock().expect("lock"))
        );
        pause(50);
    }
    let up = |c: &Cloud| metric(c, "edgefn_messages_total{direction=\"up\"} ");
    let dup = |c: &Cloud| metric(c, "edgefn_messages_duplicates_total ");
    wait_until(30, "every copy reached a replica", || {
        up(&a) + up(&b) + dup(&a) + dup(&b) >= 2 * n
    });
    assert_eq!(
        (up(&a) + up(&b), dup(&a) + dup(&b)),
        (n, n),
        "each message handled once, each resend dropped"
    );
    assert!(up(&a) > 0 && up(&b) > 0, "both replicas handled some");
    assert_eq!(
        pg.psql(&db, "SELECT count(*) FROM message_marks"),
        n.to_string()
    );
    // A new outbox (the device reinstalled) starts afresh.
    publish_up(broker.port, "outbox-2", &[(1, 1)]);
    wait_until(30, "the new outbox's message is handled", || {
        up(&a) + up(&b) == n + 1
    });
    // (Its topic is alerts/1 again: a new outbox numbers from 1.)
    wait_until(30, "A's stream shows it", || streamed()[0] == 2);
    let mut once = vec![1; n as usize];
    once[0] = 2;
    assert_eq!(streamed(), once, "each message streamed once");
}

/// Two applies racing through HAProxy (round robin over two replicas on one database): one
/// `201` and one `409 conflict` in each round, and both replicas then hold and serve the same
/// history.
#[test]
fn applies_racing_through_haproxy_give_one_201_and_one_409() {
    let r = Replicas::start(2);
    let project = project(1);
    let bundles = upload(r.cloud(0), project.path());
    for round in 0..5u64 {
        let send = |v: u64| {
            submit_to(
                &r.lb.addr,
                &r.admin,
                &manifest(v as u32, ""),
                &bundles,
                round,
            )
        };
        let (r1, r2) = std::thread::scope(|s| {
            let t1 = s.spawn(|| send(2 * round + 1));
            let t2 = s.spawn(|| send(2 * round + 2));
            (t1.join().expect("1"), t2.join().expect("2"))
        });
        let mut statuses = [r1.status, r2.status];
        statuses.sort_unstable();
        assert_eq!(
            statuses,
            [201, 409],
            "round {round}: {} / {}",
            text(&r1.body),
            text(&r2.body)
        );
    }
    for c in r.running() {
        wait_until(30, "the replica serves revision 5", || {
            get(c, "/v1/status").json()["revision"] == 5
        });
        let history = get(c, "/v1/revisions").json();
        assert_eq!(history.as_array().map(Vec::len), Some(5), "{history}");
    }
}

/// Signs in to the console at `addr` with admin token `token`: the cookie pair
/// (`edgefn_session=…`) and the CSRF token.
fn console_sign_in(addr: &str, token: &str) -> (String, String) {
    let signed = http(
        addr,
        "POST",
        "/console/session",
        None,
        &[("Content-Type", "application/json")],
        format!(r#"{{"token": "{token}"}}"#).as_bytes(),
    );
    assert_eq!(signed.status, 201, "{}", text(&signed.body));
    let cookie = signed
        .header("set-cookie")
        .expect("cookie")
        .split(';')
        .next()
        .expect("pair")
        .to_owned();
    let csrf = signed.json()["csrf"].as_str().expect("csrf").to_owned();
    (cookie, csrf)
}

/// A request to `addr` with a console session's cookie (and its CSRF token, when given).
fn with_session(
    addr: &str,
    method: &str,
    path: &str,
    cookie: &str,
    csrf: Option<&str>,
) -> Response {
    let mut headers = vec![("Cookie", cookie), ("Content-Type", "application/json")];
    if let Some(c) = csrf {
        headers.push(("X-CSRF-Token", c));
    }
    http(addr, method, path, None, &headers, b"{}")
}

/// Console sessions live in the database, so the balancer need not be sticky: a session made
/// on replica A reads and changes (with its CSRF token) through replica B and through HAProxy;
/// signed out on B, A refuses it; a session made with an admin token that is then revoked
/// ends on every replica. The database holds the sha256 of the cookie's value, never the
/// value, and no replica's log (at debug level) nor PostgreSQL's holds the value or the CSRF
/// token.
#[test]
fn a_console_session_works_on_every_replica_and_ends_on_all() {
    let logs = tempfile::tempdir().expect("logs");
    let r = Replicas::start_logged(2, &["--mqtt-listen", "none"], logs.path());
    let (a, b) = (r.cloud(0).addr(), r.cloud(1).addr());
    let (cookie, csrf) = console_sign_in(&a, &r.admin);
    let id = cookie.strip_prefix("edgefn_session=").expect("value");
    assert_eq!(
        r.pg.psql(
            &r.db,
            &format!(
                "SELECT count(*) FROM console_sessions WHERE id_hash = sha256(convert_to('{id}', 'UTF8'))"
            )
        ),
        "1",
        "stored by the sha256 of the cookie's value"
    );
    assert_eq!(
        r.pg.psql(
            &r.db,
            &format!(
                "SELECT count(*) FROM console_sessions WHERE position(convert_to('{id}', 'UTF8') IN id_hash || token_hash || convert_to(csrf, 'UTF8')) > 0"
            )
        ),
        "0",
        "never the value itself"
    );

    // B accepts A's session: reads, and changes with the CSRF token only.
    let status = with_session(&b, "GET", "/v1/status", &cookie, None);
    assert_eq!(status.status, 200, "{}", text(&status.body));
    let info = with_session(&b, "GET", "/console/session", &cookie, None).json();
    assert_eq!(info["signedIn"], true, "{info}");
    assert_eq!(info["csrf"], csrf.as_str());
    let no_csrf = with_session(&b, "POST", "/v1/rollback", &cookie, None);
    assert_eq!(no_csrf.status, 403, "{}", text(&no_csrf.body));
    let change = with_session(&b, "POST", "/v1/rollback", &cookie, Some(&csrf));
    assert_eq!(
        change.status,
        409,
        "past the session and CSRF checks, the API's own answer (nothing to roll back): {}",
        text(&change.body)
    );
    // Round robin through HAProxy: every request lands on either replica, each accepted.
    for _ in 0..4 {
        let r = with_session(&r.lb.addr, "GET", "/v1/status", &cookie, None);
        assert_eq!(r.status, 200, "{}", text(&r.body));
    }

    // Signed out on B: A refuses the cookie.
    let out = with_session(&b, "DELETE", "/console/session", &cookie, Some(&csrf));
    assert_eq!(out.status, 204, "{}", text(&out.body));
    let refused = with_session(&a, "GET", "/v1/status", &cookie, None);
    assert_eq!(refused.status, 401, "{}", text(&refused.body));
    assert!(text(&refused.body).contains("sign in again"));

    // A session made on B with a second admin token; the token revoked through A: B refuses
    // the session, and its row is gone.
    let made = http(
        &a,
        "POST",
        "/v1/tokens",
        Some(&r.admin),
        &[("Content-Type", "application/json")],
        br#"{"name": "second"}"#,
    )
    .json();
    let second = made["token"].as_str().expect("token").to_owned();
    wait_until(30, "B knows the second admin token", || {
        http(&b, "GET", "/v1/status", Some(&second), &[], b"").status == 200
    });
    let (cookie2, csrf2) = console_sign_in(&b, &second);
    assert_eq!(
        with_session(&a, "GET", "/v1/status", &cookie2, None).status,
        200
    );
    let revoked = http(
        &a,
        "DELETE",
        &format!("/v1/tokens/{}", made["id"].as_str().expect("id")),
        Some(&r.admin),
        &[],
        b"",
    );
    assert_eq!(revoked.status, 204, "{}", text(&revoked.body));
    for addr in [&a, &b] {
        let after = with_session(addr, "GET", "/v1/status", &cookie2, None);
        assert_eq!(after.status, 401, "{}", text(&after.body));
    }
    assert_eq!(
        r.pg.psql(&r.db, "SELECT count(*) FROM console_sessions"),
        "0",
        "signed out, and revoked: no session is kept"
    );

    // Nothing about the sessions reaches a log.
    let mut all = r.logs(logs.path());
    all.push(r.pg.log());
    let id2 = cookie2.strip_prefix("edgefn_session=").expect("value");
    for secret in [id, &csrf, id2, &csrf2] {
        for log in &all {
            assert!(!log.contains(secret), "a session's secret is logged: {log}");
        }
    }
    assert!(
        all[0].contains("DEBUG") || all[0].contains("debug"),
        "the logs were written: {}",
        all[0]
    );
}

/// A daemon that writes a numbered line every 200 ms.
const TICKER: &str =
    "#!/bin/sh\ni=0\nwhile true; do i=$((i+1)); echo \"tick $i\"; sleep 0.2; done\n";

/// The lines of device `dev-a`'s log ring on the replica at `addr` (`GET
/// /v1/devices/dev-a/logs`, the whole ring).
fn ring(addr: &str, admin: &str) -> Vec<String> {
    let r = http(
        addr,
        "GET",
        "/v1/devices/dev-a/logs?tail=1000",
        Some(admin),
        &[],
        b"",
    );
    assert_eq!(r.status, 200, "{}", text(&r.body));
    text(&r.body)
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| {
            let v: serde_json::Value = serde_json::from_str(l).expect("a JSON line");
            v["line"].as_str().unwrap_or_default().to_owned()
        })
        .collect()
}

/// The highest `tick N` among `lines`.
fn last_tick(lines: &[String]) -> Option<u64> {
    lines
        .iter()
        .filter_map(|l| l.strip_prefix("tick ")?.trim().parse().ok())
        .max()
}

/// Log rings across replicas: two replicas on one PostgreSQL and one Mosquitto each subscribe
/// to every device's log lines (not shared) and keep a ring of their own. A real agent's daemon
/// writes numbered lines; a line in replica A's ring is in B's too, and the reverse (`GET
/// /v1/devices/dev-a/logs` on each, and `edgefn logs` through HAProxy); a live log stream
/// opened on B (`follow=true&tail=0`: only lines that arrive after it opened) shows new ones.
#[test]
fn log_lines_reach_the_ring_of_every_replica() {
    let broker = Mosquitto::start();
    let r = Replicas::start_with(
        2,
        &[
            "--mqtt-url",
            &broker.url(),
            "--device-mqtt-url",
            &broker.url(),
        ],
    );
    for c in r.running() {
        wait_until(30, "the replica is subscribed", || {
            metric(c, "edgefn_mqtt_connected ") == 1
        });
    }
    let project = project(1);
    std::fs::write(project.path().join("functions/daemon/run.sh"), TICKER).expect("write");
    git(project.path(), &["commit", "-q", "-am", "ticker"]);
    let config: PathBuf = project.path().join("dev-a.agent.yaml");
    ok(&r.cli(
        project.path(),
        &[
            "device",
            "add",
            "dev-a",
            "--out",
            config.to_str().expect("utf8"),
        ],
    ));
    let mut text_config = std::fs::read_to_string(&config).expect("read");
    assert!(
        text_config.contains(&broker.url()),
        "the agent is given Mosquitto's address: {text_config}"
    );
    text_config.push_str("healthWindow: 1s\npollWait: 2s\nreportInterval: 1s\n");
    std::fs::write(&config, text_config).expect("write");
    for c in r.running() {
        wait_until(30, "the replica knows dev-a", || {
            get(c, "/v1/devices").json().to_string().contains("dev-a")
        });
    }
    ok(&r.cli(project.path(), &["apply"]));
    let agent_data = tempfile::tempdir().expect("agent data");
    let _agent = AgentProc::start(&config, agent_data.path(), &[]);
    let (a, b) = (r.cloud(0).addr(), r.cloud(1).addr());

    let mut on_a = None;
    wait_until(60, "A's ring holds the daemon's lines", || {
        on_a = last_tick(&ring(&a, &r.admin));
        on_a.is_some()
    });
    let on_a = on_a.expect("a line");
    let mut on_b = 0;
    wait_until(30, "B's ring holds A's line, and a later one", || {
        let lines = ring(&b, &r.admin);
        on_b = last_tick(&lines).unwrap_or(0);
        lines.contains(&format!("tick {on_a}")) && on_b > on_a
    });
    wait_until(30, "A's ring holds B's later line", || {
        ring(&a, &r.admin).contains(&format!("tick {on_b}"))
    });
    // `edgefn logs` through HAProxy (either replica) shows them too.
    let out = ok(&r.cli(project.path(), &["logs", "dev-a", "--tail", "1000"]));
    assert!(
        out.contains(&format!("daemon stdout: tick {on_b}")),
        "{out}"
    );

    // A live stream on B, from now on only.
    let stream = std::sync::Arc::new(std::sync::Mutex::new(Vec::<u8>::new()));
    let (addr, admin, sink) = (b.clone(), r.admin.clone(), stream.clone());
    std::thread::spawn(move || {
        use std::io::{Read, Write};
        let mut s = std::net::TcpStream::connect(&addr).expect("connect");
        write!(
            s,
            "GET /v1/devices/dev-a/logs?follow=true&tail=0 HTTP/1.1\r\nHost: {addr}\r\nAuthorization: Bearer {admin}\r\n\r\n"
        )
        .expect("request");
        let mut buf = [0u8; 4096];
        while let Ok(n) = s.read(&mut buf) {
            if n == 0 {
                break;
            }
            sink.lock().expect("lock").extend_from_slice(&buf[..n]);
        }
    });
    let streamed = || String::from_utf8_lossy(&stream.lock().expect("lock")).into_owned();
    wait_until(30, "the stream is open", || streamed().contains(" 200 "));
    let opened_after = last_tick(&ring(&b, &r.admin)).unwrap_or(0);
    wait_until(30, "B's live stream shows a new line", || {
        let text = streamed();
        let ticks: Vec<String> = text
            .split("\"line\":\"")
            .skip(1)
            .filter_map(|l| l.split('"').next().map(str::to_owned))
            .collect();
        last_tick(&ticks).is_some_and(|n| n > opened_after)
    });
}

/// Runs `edgefn-cloud --store URL` expecting it to refuse to start; its error output (also
/// printed, to read the messages with `--nocapture`).
#[allow(clippy::print_stderr)]
fn cloud_refuses(url: &str) -> String {
    let data = tempfile::tempdir().expect("data");
    let log = data.path().join("cloud.log");
    let mut child = Command::new(sibling_bin("edgefn-cloud"))
        .args(["--listen", "127.0.0.1:0", "--mqtt-listen", "none", "--data"])
        .arg(data.path().join("local"))
        .args(["--store", url])
        .env_remove("PGSSLMODE")
        .env_remove("PGSSLROOTCERT")
        .stdout(Stdio::null())
        .stderr(Stdio::from(std::fs::File::create(&log).expect("log")))
        .spawn()
        .expect("start edgefn-cloud");
    let mut status = None;
    wait_until(60, "edgefn-cloud to give up", || {
        status = child.try_wait().expect("wait");
        status.is_some()
    });
    assert!(!status.expect("exited").success(), "it must not start");
    let text = std::fs::read_to_string(&log).unwrap_or_default();
    assert!(
        !text.contains(PG_PASSWORD),
        "the password is never shown: {text}"
    );
    eprintln!("edgefn-cloud refused, as expected: {text}");
    text
}

/// `--store` URL of `db` with TLS parameters `query` (`sslmode=…&sslrootcert=…`).
fn tls_url(pg: &PgServer, db: &str, query: &str) -> String {
    format!("{}?{query}", pg.url(db))
}

/// `sslmode=verify-full` with the CA that signed the server's certificate: the cloud starts on
/// a server that takes only TLS connections, an apply commits, and PostgreSQL reports every
/// connection of the cloud — the pool's, the LISTEN connection's and the rollout driver's —
/// as TLS.
#[test]
fn verify_full_with_the_right_ca_keeps_every_connection_on_tls() {
    let mut pg = PgServer::start();
    let db = pg.create_db();
    let pki = tempfile::tempdir().expect("pki");
    test_pki(pki.path());
    pg.require_tls(
        &pki.path().join("server.pem"),
        &pki.path().join("server.key"),
    );
    let url = tls_url(
        &pg,
        &db,
        &format!(
            "sslmode=verify-full&sslrootcert={}",
            pki.path().join("ca.pem").display()
        ),
    );
    let data = tempfile::tempdir().expect("data");
    let cloud = cloud(data.path(), "127.0.0.1:0", &url);
    let dir = project(1);
    let bundles = upload(&cloud, dir.path());
    let r = submit(&cloud, &manifest(1, ""), &bundles, 0);
    assert_eq!(r.status, 201, "{}", text(&r.body));
    let r = get(&cloud, "/v1/revisions");
    assert_eq!(r.status, 200);
    assert_eq!(r.json()[0]["number"], 1, "{}", text(&r.body));
    // The connections of role `edgefn` (the cloud's): the LISTEN one is up and on TLS.
    let count = |cond: &str| {
        pg.psql(
            &db,
            &format!(
                "SELECT count(*) FROM pg_stat_activity a JOIN pg_stat_ssl s USING (pid) WHERE a.usename = 'edgefn' AND {cond}"
            ),
        )
    };
    wait_until(30, "the cloud's LISTEN connection", || {
        count("a.query = 'LISTEN edgefn_changes'") == "1"
    });
    wait_until(30, "the rollout driver's connection", || {
        count("a.application_name LIKE 'edgefn-cloud pid %'") == "1"
    });
    assert_eq!(count("NOT s.ssl"), "0", "no connection without TLS");
    assert_eq!(count("a.query = 'LISTEN edgefn_changes' AND s.ssl"), "1");
    assert_eq!(
        count("a.application_name LIKE 'edgefn-cloud pid %' AND s.ssl"),
        "1"
    );
    let versions = pg.psql(
        &db,
        "SELECT DISTINCT s.version FROM pg_stat_activity a JOIN pg_stat_ssl s USING (pid) WHERE a.usename = 'edgefn'",
    );
    assert!(versions.starts_with("TLSv1."), "{versions}");
}

/// A server certificate signed by another CA than `sslrootcert`'s is refused, the error naming
/// the host and the CA file and saying how to fix it; so are a missing CA file and an unknown
/// `sslmode`.
#[test]
fn a_certificate_the_ca_did_not_sign_is_refused_with_the_host_named() {
    let mut pg = PgServer::start();
    let db = pg.create_db();
    let pki = tempfile::tempdir().expect("pki");
    test_pki(pki.path());
    let other = tempfile::tempdir().expect("other pki");
    test_pki(other.path());
    pg.require_tls(
        &pki.path().join("server.pem"),
        &pki.path().join("server.key"),
    );
    let wrong = other.path().join("ca.pem");
    let err = cloud_refuses(&tls_url(
        &pg,
        &db,
        &format!("sslmode=verify-full&sslrootcert={}", wrong.display()),
    ));
    assert!(
        err.contains(&format!(
            "the certificate of 127.0.0.1:{} does not verify against the CA in {}",
            pg.port,
            wrong.display()
        )),
        "{err}"
    );
    assert!(
        err.contains("sslrootcert=PATH"),
        "says how to fix it: {err}"
    );
    // verify-ca checks the chain too.
    let err = cloud_refuses(&tls_url(
        &pg,
        &db,
        &format!("sslmode=verify-ca&sslrootcert={}", wrong.display()),
    ));
    assert!(err.contains("does not verify against"), "{err}");
    let missing = other.path().join("missing.pem");
    let err = cloud_refuses(&tls_url(
        &pg,
        &db,
        &format!("sslmode=verify-full&sslrootcert={}", missing.display()),
    ));
    assert!(
        err.contains(&format!(
            "sslrootcert {}: cannot read it",
            missing.display()
        )) && err.contains("sslrootcert=PATH"),
        "{err}"
    );
    let err = cloud_refuses(&tls_url(&pg, &db, "sslmode=verify-everything"));
    assert!(
        err.contains("unknown sslmode `verify-everything`: use disable, prefer, require, verify-ca or verify-full"),
        "{err}"
    );
}

/// `sslmode=require` against a server without TLS, and `sslmode=disable` against one that
/// takes only TLS connections: each refused with what is wrong and how to fix it.
#[test]
fn plain_and_tls_mismatches_are_said_clearly() {
    let mut pg = PgServer::start();
    let db = pg.create_db();
    let err = cloud_refuses(&tls_url(&pg, &db, "sslmode=require"));
    assert!(
        err.contains(&format!(
            "127.0.0.1:{} does not accept TLS connections, and sslmode=require requires TLS",
            pg.port
        )),
        "{err}"
    );
    let pki = tempfile::tempdir().expect("pki");
    test_pki(pki.path());
    pg.require_tls(
        &pki.path().join("server.pem"),
        &pki.path().join("server.key"),
    );
    let err = cloud_refuses(&tls_url(&pg, &db, "sslmode=disable"));
    assert!(err.contains("no pg_hba.conf entry"), "{err}");
    assert!(
        err.contains(
            "the server accepts this connection only over TLS, and sslmode=disable does not use it"
        ),
        "{err}"
    );
    // The default (prefer) uses TLS when the server offers it.
    let data = tempfile::tempdir().expect("data");
    let cloud = cloud(data.path(), "127.0.0.1:0", &pg.url(&db));
    assert_eq!(get(&cloud, "/v1/revisions").status, 200);
}

/// Runs `edgefn-cloud move-store ARGS`; its output.
fn move_store(args: &[&str]) -> std::process::Output {
    Command::new(sibling_bin("edgefn-cloud"))
        .arg("move-store")
        .args(args)
        .env_remove("PGSSLMODE")
        .env_remove("PGSSLROOTCERT")
        .stdin(Stdio::null())
        .output()
        .expect("run edgefn-cloud move-store")
}

/// A cloud on the embedded store, populated through the API and the CLI (a device with a
/// report, two revisions, a secret, bundles), moved into PostgreSQL while stopped: started
/// with `--store` it shows the same history, devices and status, and an agent with its old
/// token and an empty folder gets its desired state and bundle. Refused: a move while the
/// cloud runs, a second move into the same database, a missing data folder, an unreachable
/// database.
#[test]
fn move_store_moves_a_local_cloud_into_postgres_whole() {
    let mut pg = PgServer::start();
    let db = pg.create_db();
    let url = pg.url(&db);
    let addr = format!("127.0.0.1:{}", server_port());
    let data = tempfile::tempdir().expect("data");
    let local = Cloud::start_at_with(data.path(), &addr, &["--mqtt-listen", "none"]).0;
    let project = project(1);
    let config: PathBuf = project.path().join("dev-a.agent.yaml");
    ok(&cli(
        project.path(),
        &local,
        &[
            "device",
            "add",
            "dev-a",
            "--out",
            config.to_str().expect("utf8"),
        ],
    ));
    let mut yaml = std::fs::read_to_string(&config).expect("read");
    yaml.push_str("healthWindow: 1s\npollWait: 2s\nreportInterval: 1s\n");
    std::fs::write(&config, yaml).expect("write");
    ok(&cli(project.path(), &local, &["apply"]));
    let r = http(
        &local.addr(),
        "PUT",
        "/v1/secrets/db-token",
        Some(&local.admin),
        &[],
        b"s3cr3t-value",
    );
    assert!(r.status == 201 || r.status == 200, "{}", text(&r.body));
    let v2 = manifest(2, "").replace(
        "    env: { VERSION: \"2\" }\n",
        "    env: { VERSION: \"2\" }\n    secrets: [db-token]\n",
    );
    std::fs::write(project.path().join("edgefn.yaml"), v2).expect("write");
    git(project.path(), &["commit", "-q", "-am", "v2"]);
    ok(&cli(project.path(), &local, &["apply"]));
    {
        let agent_data = tempfile::tempdir().expect("agent data");
        let _agent = AgentProc::start(&config, agent_data.path(), &[]);
        wait_until(60, "dev-a converges on revision 2", || {
            let d = device(&local, "dev-a");
            d["converged"] == true && d["report"]["runningRevision"] == 2
        });
    }
    // What must read the same after the move.
    let kept = [
        "/v1/revisions",
        "/v1/revisions/1",
        "/v1/revisions/2",
        "/v1/secrets",
        "/v1/tokens",
        "/v1/rollout",
    ];
    let snapshot: Vec<serde_json::Value> = kept.iter().map(|p| get(&local, p).json()).collect();
    let history = snapshot[0].clone();
    let before = device(&local, "dev-a");
    assert_eq!(history.as_array().map(Vec::len), Some(2), "{history}");

    // Not while the cloud runs.
    let out = move_store(&["--data", data.path().to_str().expect("utf8"), "--to", &url]);
    assert!(!out.status.success());
    let err = text(&out.stderr);
    assert!(
        err.contains("is in use by a running edgefn-cloud: stop it first"),
        "{err}"
    );
    assert_eq!(
        pg.psql(
            &db,
            "SELECT count(*) FROM information_schema.tables WHERE table_name = 'revisions'"
        ),
        "0",
        "nothing was written"
    );
    assert!(local.stop().success());

    let out = move_store(&["--data", data.path().to_str().expect("utf8"), "--to", &url]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let said = text(&out.stdout);
    assert!(
        said.contains("moved 2 revision(s), 1 device(s)") && said.contains("1 secret(s)"),
        "{said}"
    );
    assert!(!said.contains(PG_PASSWORD) && !text(&out.stderr).contains(PG_PASSWORD));

    let moved = cloud(data.path(), &addr, &url);
    for (path, was) in kept.iter().zip(&snapshot) {
        assert_eq!(&get(&moved, path).json(), was, "GET {path}");
    }
    let after = device(&moved, "dev-a");
    assert_eq!(after, before, "the device's status and last report");
    assert_eq!(get(&moved, "/v1/status").json()["revision"], 2);
    // The old device token, an empty agent folder: the bundle comes from the database.
    let agent_data = tempfile::tempdir().expect("agent data");
    let agent = AgentProc::start(&config, agent_data.path(), &[]);
    wait_until(
        60,
        "a new agent with the old token converges on revision 2",
        || {
            let d = device(&moved, "dev-a");
            d["converged"] == true
                && d["report"]["runningRevision"] == 2
                && d["lastSeenMs"] != before["lastSeenMs"]
        },
    );
    drop(agent);
    let files = std::fs::read_dir(data.path().join("bundles"))
        .expect("bundles")
        .filter(|e| {
            e.as_ref()
                .is_ok_and(|e| !e.file_name().to_string_lossy().starts_with('.'))
        })
        .count();
    assert!(files > 0);
    assert_eq!(
        pg.psql(&db, "SELECT count(*) FROM bundles"),
        files.to_string(),
        "every bundle of the folder is in the database"
    );
    assert!(moved.stop().success());

    // Into the same database again: refused, nothing changed.
    let out = move_store(&["--data", data.path().to_str().expect("utf8"), "--to", &url]);
    assert!(!out.status.success());
    let err = text(&out.stderr);
    assert!(
        err.contains("already holds a control plane's state (table `revisions` is not empty)")
            && err.contains("CREATE DATABASE"),
        "{err}"
    );
    assert_eq!(pg.psql(&db, "SELECT count(*) FROM revisions"), "2");

    // A folder that is not a cloud's data folder.
    let empty = tempfile::tempdir().expect("empty");
    let missing = empty.path().join("nope");
    let out = move_store(&["--data", missing.to_str().expect("utf8"), "--to", &url]);
    assert!(!out.status.success());
    let err = text(&out.stderr);
    assert!(
        err.contains(&format!(
            "{}: no such file",
            missing.join("cloud.redb").display()
        )) && err.contains("give --data the folder the old cloud ran with"),
        "{err}"
    );
    // A database nobody listens for.
    let db2 = pg.create_db();
    let port = pg.port;
    pg.stop();
    let out = move_store(&[
        "--data",
        data.path().to_str().expect("utf8"),
        "--to",
        &pg.url(&db2),
    ]);
    assert!(!out.status.success());
    let err = text(&out.stderr);
    assert!(
        err.contains(&format!(
            "the database postgres://edgefn@127.0.0.1:{port}/{db2} is unavailable"
        )) && err.contains("Connection refused"),
        "{err}"
    );
    assert!(!err.contains(PG_PASSWORD), "{err}");
}

/// A server certificate for another name than the URL's host: `verify-full` refuses it saying
/// so; `verify-ca` (the chain only) accepts it.
#[test]
fn verify_full_checks_the_name_and_verify_ca_does_not() {
    let mut pg = PgServer::start();
    let db = pg.create_db();
    let pki = tempfile::tempdir().expect("pki");
    test_pki(pki.path());
    // Another certificate from the same CA, for db.example.com only.
    let dir = pki.path();
    openssl(
        dir,
        &[
            "req",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-keyout",
            "other.key",
            "-out",
            "other.csr",
            "-subj",
            "/CN=db.example.com",
        ],
    );
    std::fs::write(dir.join("other.cnf"), "subjectAltName=DNS:db.example.com\n").expect("write");
    openssl(
        dir,
        &[
            "x509",
            "-req",
            "-in",
            "other.csr",
            "-CA",
            "ca.pem",
            "-CAkey",
            "ca.key",
            "-CAcreateserial",
            "-out",
            "other.pem",
            "-days",
            "1",
            "-extfile",
            "other.cnf",
        ],
    );
    pg.require_tls(&dir.join("other.pem"), &dir.join("other.key"));
    let ca = dir.join("ca.pem");
    let err = cloud_refuses(&tls_url(
        &pg,
        &db,
        &format!("sslmode=verify-full&sslrootcert={}", ca.display()),
    ));
    assert!(
        err.contains(&format!(
            "the certificate of 127.0.0.1:{} does not name that host",
            pg.port
        )) && err.contains("sslmode=verify-ca"),
        "{err}"
    );
    let data = tempfile::tempdir().expect("data");
    let cloud = cloud(
        data.path(),
        "127.0.0.1:0",
        &tls_url(
            &pg,
            &db,
            &format!("sslmode=verify-ca&sslrootcert={}", ca.display()),
        ),
    );
    assert_eq!(get(&cloud, "/v1/revisions").status, 200);
}

//! End-to-end tests of the control plane: the real `edgefn-cloud` on port 0 with a temporary
//! data folder, driven by the real `edgefn` and by raw HTTP requests.

#[path = "common/mod.rs"]
mod common;

use std::path::Path;
use std::time::{Duration, Instant};

use common::*;

fn cli(dir: &Path, cloud: &Cloud, args: &[&str]) -> std::process::Output {
    let env = cloud.env();
    edgefn_env(
        dir,
        args,
        &[(env[0].0, env[0].1.as_str()), (env[1].0, env[1].1.as_str())],
    )
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

fn desired(cloud: &Cloud, device: &str, token: &str) -> Response {
    http(
        &cloud.addr(),
        "GET",
        &format!("/v1/devices/{device}/desired"),
        Some(token),
        &[],
        b"",
    )
}

#[test]
fn apply_reapply_diff_history_rollback() {
    let data = tempfile::tempdir().expect("data");
    let cloud = Cloud::start(data.path());
    let project = quickstart_repo();
    let dir = project.path();

    let diff = cli(dir, &cloud, &["diff"]);
    assert_eq!(
        diff.status.code(),
        Some(2),
        "changes before the first apply: {}",
        text(&diff.stdout)
    );
    assert!(text(&diff.stdout).contains("+ temp-filter"));

    let first = cli(dir, &cloud, &["apply", "--output", "json"]);
    let applied: serde_json::Value = serde_json::from_str(&ok(&first)).expect("json");
    assert_eq!(
        (applied["revision"].as_u64(), applied["created"].as_bool()),
        (Some(1), Some(true))
    );
    assert_eq!(applied["uploaded"].as_array().map(Vec::len), Some(3));

    // Unchanged: nothing uploaded, no new revision.
    let again = cli(dir, &cloud, &["apply", "--output", "json"]);
    let again: serde_json::Value = serde_json::from_str(&ok(&again)).expect("json");
    assert_eq!(
        (again["revision"].as_u64(), again["created"].as_bool()),
        (Some(1), Some(false))
    );
    assert_eq!(again["uploaded"].as_array().map(Vec::len), Some(0));
    assert_eq!(cli(dir, &cloud, &["diff"]).status.code(), Some(0));

    // Change one function's code: only the devices that run it change.
    let token = register(&cloud, "gw-02");
    let before = desired(&cloud, "gw-02", &token);
    std::fs::write(
        dir.join("functions/collector/collect.sh"),
        "#!/bin/sh\necho v2\nsleep 60\n",
    )
    .expect("write");
    let dirty = cli(dir, &cloud, &["apply"]);
    assert_eq!(dirty.status.code(), Some(1), "a dirty tree is refused");
    assert!(
        text(&dirty.stderr).contains("uncommitted changes"),
        "{}",
        text(&dirty.stderr)
    );
    git(dir, &["commit", "-q", "-am", "collector v2"]);
    let diff = cli(dir, &cloud, &["diff"]);
    assert_eq!(diff.status.code(), Some(2));
    let out = text(&diff.stdout);
    assert!(
        out.contains("gw-01:\n  ~ collector") && out.contains("gw-02: no changes"),
        "{out}"
    );
    ok(&cli(dir, &cloud, &["apply"]));
    let after = desired(&cloud, "gw-02", &token);
    assert_eq!(
        before.header("etag"),
        after.header("etag"),
        "gw-02 does not run the collector: same digest"
    );

    // History records provenance.
    let history: serde_json::Value =
        serde_json::from_str(&ok(&cli(dir, &cloud, &["history", "--output", "json"])))
            .expect("json");
    let list = history.as_array().expect("list");
    assert_eq!(list.len(), 2);
    assert_eq!(list[0]["number"], 2);
    assert_eq!(list[0]["provenance"]["message"], "collector v2");
    assert_eq!(list[0]["provenance"]["branch"], "main");
    assert_eq!(
        list[0]["provenance"]["author"],
        "Test User <test@example.com>"
    );
    assert_eq!(list[0]["provenance"]["dirty"], false);
    assert_eq!(
        list[0]["provenance"]["commit"].as_str().map(str::len),
        Some(40)
    );

    // Rollback makes revision 3 equal to revision 1.
    let rb: serde_json::Value =
        serde_json::from_str(&ok(&cli(dir, &cloud, &["rollback", "--output", "json"])))
            .expect("json");
    assert_eq!(rb["revision"], 3);
    let r1 = http(
        &cloud.addr(),
        "GET",
        "/v1/revisions/1",
        Some(&cloud.admin),
        &[],
        b"",
    )
    .json();
    let r3 = http(
        &cloud.addr(),
        "GET",
        "/v1/revisions/3",
        Some(&cloud.admin),
        &[],
        b"",
    )
    .json();
    assert_eq!(r1["manifest"], r3["manifest"]);
    assert_eq!(r1["bundles"], r3["bundles"]);
    assert_eq!(r3["rollbackOf"], 1);
    assert_eq!(
        cli(dir, &cloud, &["diff"]).status.code(),
        Some(2),
        "the checkout (v2) now differs from the cloud (v1)"
    );
}

/// `edgefn apply` says, without failing, when the manifest names devices the control plane
/// does not know (they would never converge) and when its `project:` is not the current
/// revision's (a rename, or the wrong folder); it says nothing of either when all is well.
#[test]
fn apply_warns_of_unregistered_devices_and_another_project() {
    let data = tempfile::tempdir().expect("data");
    let cloud = Cloud::start(data.path());
    let project = quickstart_repo();
    let dir = project.path();

    let first = cli(dir, &cloud, &["apply"]);
    ok(&first);
    let err = text(&first.stderr);
    assert!(
        err.contains(
            "warning: the manifest names devices not registered with the control plane: gw-01, gw-02"
        ) && err.contains("`edgefn device add NAME`"),
        "{err}"
    );
    assert!(!err.contains("project `"), "{err}");
    // In JSON too, without breaking stdout.
    let json = cli(dir, &cloud, &["apply", "--output", "json"]);
    let json: serde_json::Value = serde_json::from_str(&ok(&json)).expect("json");
    assert_eq!(json["warnings"].as_array().map(Vec::len), Some(1), "{json}");

    // One registered: only the other is named.
    register(&cloud, "gw-01");
    let err = text(&cli(dir, &cloud, &["apply"]).stderr);
    assert!(
        err.contains("the manifest names device not registered with the control plane: gw-02;")
            && err.contains("`edgefn device add gw-02`"),
        "{err}"
    );
    register(&cloud, "gw-02");
    let quiet = cli(dir, &cloud, &["apply"]);
    ok(&quiet);
    assert!(
        !text(&quiet.stderr).contains("warning"),
        "{}",
        text(&quiet.stderr)
    );

    // Another project name: applied, and said.
    let manifest = std::fs::read_to_string(dir.join("edgefn.yaml")).expect("read");
    std::fs::write(
        dir.join("edgefn.yaml"),
        manifest.replace("project: quickstart", "project: quickstart-two"),
    )
    .expect("write");
    git(dir, &["commit", "-qam", "rename"]);
    let renamed = cli(dir, &cloud, &["apply"]);
    ok(&renamed);
    let err = text(&renamed.stderr);
    assert!(
        err.contains(
            "warning: this manifest is project `quickstart-two`, but the current revision (1) is project `quickstart`"
        ),
        "{err}"
    );
    assert!(err.contains("applied revision 2"), "{err}");
}

#[test]
fn allow_dirty_records_it() {
    let data = tempfile::tempdir().expect("data");
    let cloud = Cloud::start(data.path());
    let project = quickstart_repo();
    std::fs::write(project.path().join("notes.txt"), "untracked").expect("write");
    ok(&cli(project.path(), &cloud, &["apply", "--allow-dirty"]));
    let history = http(
        &cloud.addr(),
        "GET",
        "/v1/revisions",
        Some(&cloud.admin),
        &[],
        b"",
    )
    .json();
    assert_eq!(history[0]["provenance"]["dirty"], true);
}

#[test]
fn an_invalid_manifest_is_not_applied() {
    let data = tempfile::tempdir().expect("data");
    let cloud = Cloud::start(data.path());
    let project = quickstart_repo();
    let manifest = project.path().join("edgefn.yaml");
    let text_before = std::fs::read_to_string(&manifest).expect("read");
    std::fs::write(
        &manifest,
        text_before.replace("memory: 64Mi", "memory: 64MB"),
    )
    .expect("write");
    git(project.path(), &["commit", "-q", "-am", "broken"]);
    let out = cli(project.path(), &cloud, &["apply"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        text(&out.stderr).contains("edgefn::manifest::invalid_quantity"),
        "{}",
        text(&out.stderr)
    );
    let history = http(
        &cloud.addr(),
        "GET",
        "/v1/revisions",
        Some(&cloud.admin),
        &[],
        b"",
    )
    .json();
    assert_eq!(history.as_array().map(Vec::len), Some(0), "nothing applied");
}

/// Uploads the quickstart's bundles and returns (manifest text, bundles JSON).
fn upload_quickstart(cloud: &Cloud, dir: &Path) -> (String, serde_json::Value) {
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
    (
        std::fs::read_to_string(dir.join("edgefn.yaml")).expect("manifest"),
        serde_json::Value::Object(bundles),
    )
}

fn submit(cloud: &Cloud, manifest: &str, bundles: &serde_json::Value, parent: u64) -> Response {
    let body =
        serde_json::json!({"manifest": manifest, "bundles": bundles, "expectedParent": parent});
    http(
        &cloud.addr(),
        "POST",
        "/v1/revisions",
        Some(&cloud.admin),
        &[("Content-Type", "application/json")],
        body.to_string().as_bytes(),
    )
}

#[test]
fn concurrent_applies_on_one_parent_one_gets_a_conflict() {
    let data = tempfile::tempdir().expect("data");
    let cloud = Cloud::start(data.path());
    let project = quickstart_repo();
    let (manifest, bundles) = upload_quickstart(&cloud, project.path());
    let other = manifest.replace("concurrency: 2", "concurrency: 3");
    // Two CI jobs that both saw revision 0.
    let (a, b) = std::thread::scope(|s| {
        let a = s.spawn(|| submit(&cloud, &manifest, &bundles, 0));
        let b = s.spawn(|| submit(&cloud, &other, &bundles, 0));
        (a.join().expect("a"), b.join().expect("b"))
    });
    let mut statuses = [a.status, b.status];
    statuses.sort_unstable();
    assert_eq!(
        statuses,
        [201, 409],
        "a: {} b: {}",
        text(&a.body),
        text(&b.body)
    );
    let conflict = if a.status == 409 { &a } else { &b };
    assert_eq!(conflict.json()["error"]["code"], "conflict");
    assert_eq!(conflict.json()["error"]["details"]["latest"], 1);
    let history = http(
        &cloud.addr(),
        "GET",
        "/v1/revisions",
        Some(&cloud.admin),
        &[],
        b"",
    )
    .json();
    assert_eq!(history.as_array().map(Vec::len), Some(1));
}

#[test]
fn tokens_are_checked_on_every_endpoint() {
    let data = tempfile::tempdir().expect("data");
    let cloud = Cloud::start(data.path());
    let project = quickstart_repo();
    ok(&cli(project.path(), &cloud, &["apply"]));
    let out_file = project.path().join("gw-01.yaml");
    ok(&cli(
        project.path(),
        &cloud,
        &[
            "device",
            "add",
            "gw-01",
            "--out",
            out_file.to_str().expect("utf8"),
        ],
    ));
    let config = std::fs::read_to_string(&out_file).expect("config");
    let gw1 = config
        .lines()
        .find_map(|l| l.strip_prefix("token: "))
        .expect("token")
        .to_owned();
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        assert_eq!(
            std::fs::metadata(&out_file)
                .expect("meta")
                .permissions()
                .mode()
                & 0o777,
            0o600
        );
    }
    let gw2 = register(&cloud, "gw-02");
    let addr = cloud.addr();

    // No token, a wrong one, another device's.
    assert_eq!(
        http(&addr, "GET", "/v1/devices/gw-01/desired", None, &[], b"").status,
        401
    );
    assert_eq!(
        http(
            &addr,
            "GET",
            "/v1/devices/gw-01/desired",
            Some("edgefn_dev_nope"),
            &[],
            b""
        )
        .status,
        401
    );
    assert_eq!(
        http(
            &addr,
            "GET",
            "/v1/devices/gw-01/desired",
            Some(&gw2),
            &[],
            b""
        )
        .status,
        403
    );
    assert_eq!(
        http(
            &addr,
            "POST",
            "/v1/devices/gw-01/status",
            Some(&gw2),
            &[("Content-Type", "application/json")],
            br#"{"state":"running"}"#
        )
        .status,
        403
    );
    assert_eq!(desired(&cloud, "gw-01", &gw1).status, 200);
    // A device token is not an admin token.
    for (method, path) in [
        ("GET", "/v1/status"),
        ("GET", "/v1/revisions"),
        ("GET", "/metrics"),
        ("POST", "/v1/devices"),
        ("GET", "/v1/devices"),
    ] {
        assert_eq!(
            http(
                &addr,
                method,
                path,
                Some(&gw1),
                &[("Content-Type", "application/json")],
                b"{}"
            )
            .status,
            403,
            "{method} {path}"
        );
        assert_eq!(
            http(&addr, method, path, None, &[], b"").status,
            401,
            "{method} {path}"
        );
    }
    // Bundles: a device gets only those its desired state names.
    let state = desired(&cloud, "gw-01", &gw1).json();
    let collector = state["state"]["functions"]["collector"]["bundle"]
        .as_str()
        .expect("bundle")
        .to_owned();
    let own = http(
        &addr,
        "GET",
        &format!("/v1/bundles/{collector}"),
        Some(&gw1),
        &[],
        b"",
    );
    assert_eq!(own.status, 200);
    assert_eq!(edgefn_schema::bundle::digest(&own.body), collector);
    assert_eq!(
        http(
            &addr,
            "GET",
            &format!("/v1/bundles/{collector}"),
            Some(&gw2),
            &[],
            b""
        )
        .status,
        403,
        "gw-02 does not run the collector"
    );

    // Revoked: the token stops working.
    ok(&cli(project.path(), &cloud, &["device", "remove", "gw-01"]));
    assert_eq!(desired(&cloud, "gw-01", &gw1).status, 401);
    let list = ok(&cli(project.path(), &cloud, &["device", "list"]));
    assert_eq!(list.trim(), "gw-02");
    // The health check is the one open endpoint, and says nothing.
    assert_eq!(http(&addr, "GET", "/healthz", None, &[], b"").body, b"ok\n");
}

#[test]
fn bad_input_gets_a_json_4xx() {
    let data = tempfile::tempdir().expect("data");
    let cloud = Cloud::start(data.path());
    let addr = cloud.addr();
    let admin = Some(cloud.admin.as_str());
    let json = [("Content-Type", "application/json")];
    let zeros = "0".repeat(64);
    // method, path, headers, body, expected status, expected error code
    type Case<'a> = (
        &'a str,
        String,
        &'a [(&'a str, &'a str)],
        &'a [u8],
        u16,
        &'a str,
    );
    let cases: Vec<Case<'_>> = vec![
        (
            "PUT",
            format!("/v1/bundles/{zeros}"),
            &[],
            b"not the bytes of that digest",
            400,
            "digest_mismatch",
        ),
        (
            "PUT",
            "/v1/bundles/xyz".into(),
            &[],
            b"x",
            400,
            "bad_request",
        ),
        (
            "POST",
            "/v1/revisions".into(),
            &json,
            b"{not json",
            400,
            "bad_request",
        ),
        (
            "POST",
            "/v1/revisions".into(),
            &json,
            br#"{"manifest": 5}"#,
            400,
            "bad_request",
        ),
        (
            "POST",
            "/v1/revisions".into(),
            &json,
            br#"{"manifest": "apiVersion: edgefn/v1\nproject: [x", "bundles": {}}"#,
            422,
            "invalid_manifest",
        ),
        (
            "POST",
            "/v1/devices".into(),
            &json,
            br#"{"name": "Not Valid"}"#,
            400,
            "bad_request",
        ),
        (
            "GET",
            "/v1/revisions/abc".into(),
            &[],
            b"",
            400,
            "bad_request",
        ),
        ("GET", "/v1/revisions/99".into(), &[], b"", 404, "not_found"),
        (
            "GET",
            "/v1/revisions?limit=lots".into(),
            &[],
            b"",
            400,
            "bad_request",
        ),
        (
            "DELETE",
            "/v1/devices/ghost".into(),
            &[],
            b"",
            404,
            "not_found",
        ),
        ("GET", "/v1/nope".into(), &[], b"", 404, "not_found"),
        (
            "POST",
            "/v1/rollback".into(),
            &json,
            b"{}",
            409,
            "nothing_to_roll_back",
        ),
        (
            "POST",
            "/v1/bundles/missing".into(),
            &json,
            br#"{"digests": ["short"]}"#,
            400,
            "bad_request",
        ),
    ];
    for (method, path, headers, body, status, code) in cases {
        let r = http(&addr, method, &path, admin, headers, body);
        assert_eq!(r.status, status, "{method} {path}: {}", text(&r.body));
        assert_eq!(r.json()["error"]["code"], code, "{method} {path}");
    }
    // A revision naming bundles the cloud does not have.
    let manifest =
        std::fs::read_to_string(repo().join("examples/quickstart/edgefn.yaml")).expect("read");
    let bundles = serde_json::json!({"temp-filter": zeros, "greeter": zeros, "collector": zeros});
    let r = submit(&cloud, &manifest, &bundles, 0);
    assert_eq!(
        (r.status, r.json()["error"]["code"].as_str()),
        (422, Some("missing_bundles"))
    );
    let r = submit(
        &cloud,
        &manifest,
        &serde_json::json!({"temp-filter": zeros}),
        0,
    );
    assert_eq!(
        (r.status, r.json()["error"]["code"].as_str()),
        (422, Some("invalid_bundles"))
    );
    // Still healthy.
    assert_eq!(http(&addr, "GET", "/healthz", None, &[], b"").status, 200);
}

#[test]
fn hostile_manifests_and_bodies_get_a_4xx_and_the_cloud_stays_up() {
    let data = tempfile::tempdir().expect("data");
    // With a broker, so that `/v1/publish` reads its body.
    let (cloud, _) = Cloud::start_with(data.path(), &["--mqtt-listen", "127.0.0.1:0"]);
    let addr = cloud.addr();
    let admin = Some(cloud.admin.as_str());
    let json = [("Content-Type", "application/json")];
    let no_bundles = serde_json::json!({});
    let still_up = || {
        assert_eq!(http(&addr, "GET", "/healthz", None, &[], b"").status, 200);
        let history = http(&addr, "GET", "/v1/revisions", admin, &[], b"");
        assert_eq!(history.status, 200, "{}", text(&history.body));
    };

    // The alias bomb: 422 at the alias, and the cloud answers the next request.
    let bomb = include_str!("../schema/tests/fixtures/alias-bomb.yaml");
    let r = submit(&cloud, bomb, &no_bundles, 0);
    assert_eq!(r.status, 422, "{}", text(&r.body));
    let body = r.json();
    assert_eq!(body["error"]["code"], "invalid_manifest");
    let first = body["error"]["details"]["diagnostics"][0]
        .as_str()
        .unwrap_or_default();
    assert!(
        first.starts_with("12:18: error[edgefn::manifest::alias_expansion]"),
        "{body}"
    );
    still_up();

    // Nesting 100 000 levels deep.
    let deep = format!(
        "apiVersion: edgefn/v1\nproject: d\nx:\n  {}a\n",
        "- ".repeat(100_000)
    );
    let r = submit(&cloud, &deep, &no_bundles, 0);
    assert_eq!(r.status, 422, "{}", text(&r.body));
    let body = r.json();
    assert_eq!(
        body["error"]["details"]["diagnostics"][0],
        "4:201: error[edgefn::manifest::nesting_depth]: lists and mappings nested more than 100 deep",
        "{body}"
    );
    still_up();

    // Twenty thousand problems: counted, the first hundred listed.
    let mut many = String::from("apiVersion: edgefn/v1\nproject: many\n");
    for _ in 0..20_000 {
        many.push_str("project: again\n");
    }
    let r = submit(&cloud, &many, &no_bundles, 0);
    assert_eq!(r.status, 422, "{}", text(&r.body));
    let body = r.json();
    assert_eq!(
        body["error"]["details"]["diagnostics"]
            .as_array()
            .map(Vec::len),
        Some(100)
    );
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap_or_default()
            .starts_with("the manifest has 20000 error(s) (the first 100 are listed)"),
        "{}",
        body["error"]["message"]
    );

    // A manifest over 8 MiB, in a body under the route's limit.
    let big = format!(
        "apiVersion: edgefn/v1\nproject: big\n# {}\n",
        "x".repeat(8 << 20)
    );
    let r = submit(&cloud, &big, &no_bundles, 0);
    assert_eq!(r.status, 413, "{}", text(&r.body));
    assert_eq!(r.json()["error"]["code"], "manifest_too_large");

    // Bodies over a route's limit: 32 MiB for revisions, 6 × 256 KiB + 64 KiB for messages.
    for (path, limit) in [
        ("/v1/revisions", 32 << 20),
        ("/v1/publish", 6 * (256 << 10) + (64 << 10)),
    ] {
        let r = http(&addr, "POST", path, admin, &json, &vec![b' '; limit + 1]);
        assert_eq!(r.status, 413, "{path}: {}", text(&r.body));
        assert_eq!(r.json()["error"]["code"], "body_too_large", "{path}");
    }

    // JSON nested 100 000 deep, in every JSON body the cloud parses: as a field's value and
    // as an unknown field's (which serde skips). serde_json stops at 128 levels.
    let nested = format!("{}{}", "[".repeat(100_000), "]".repeat(100_000));
    for (path, field) in [
        ("/v1/revisions", "manifest"),
        ("/v1/bundles/missing", "digests"),
        ("/v1/rollback", "to"),
        ("/v1/devices", "name"),
        ("/v1/publish", "payload"),
    ] {
        for key in [field, "x-unknown"] {
            let body = format!("{{\"{key}\": {nested}}}");
            let r = http(&addr, "POST", path, admin, &json, body.as_bytes());
            assert!(
                (400..500).contains(&r.status),
                "{path} {key}: {}",
                text(&r.body)
            );
        }
    }
    // Where any JSON value is welcome, the depth is what is refused.
    let body = format!("{{\"payload\": {nested}, \"topic\": \"t\", \"devices\": []}}");
    let r = http(&addr, "POST", "/v1/publish", admin, &json, body.as_bytes());
    assert_eq!(r.status, 400, "{}", text(&r.body));
    assert!(
        text(&r.body).contains("recursion limit exceeded"),
        "{}",
        text(&r.body)
    );
    still_up();

    // And an ordinary manifest still goes in.
    let r = submit(
        &cloud,
        "apiVersion: edgefn/v1\nproject: fine\n",
        &no_bundles,
        0,
    );
    assert_eq!(r.status, 201, "{}", text(&r.body));
}

#[test]
fn every_documented_operation_is_served() {
    let data = tempfile::tempdir().expect("data");
    let cloud = Cloud::start(data.path());
    for op in edgefn_cloud_operations() {
        let path =
            op.1.replace("{digest}", &"0".repeat(64))
                .replace("{n}", "1")
                .replace("{name}", "gw-01");
        let r = http(
            &cloud.addr(),
            &op.0.to_uppercase(),
            &path,
            Some(&cloud.admin),
            &[("Content-Type", "application/json")],
            b"{}",
        );
        let unknown =
            r.status == 405 || (r.status == 404 && text(&r.body).contains("no such endpoint"));
        assert!(
            !unknown,
            "{} {path} is documented but not served ({})",
            op.0, r.status
        );
    }
}

/// The documented operations, read from the checked-in OpenAPI document.
fn edgefn_cloud_operations() -> Vec<(String, String)> {
    let doc: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(repo().join("cloud/openapi.json")).expect("read"),
    )
    .expect("json");
    let mut ops = Vec::new();
    for (path, methods) in doc["paths"].as_object().expect("paths") {
        for method in methods.as_object().expect("methods").keys() {
            ops.push((method.clone(), path.clone()));
        }
    }
    assert!(ops.len() >= 15);
    ops
}

#[test]
fn long_poll_answers_when_the_device_changes() {
    let data = tempfile::tempdir().expect("data");
    let cloud = Cloud::start(data.path());
    let project = quickstart_repo();
    ok(&cli(project.path(), &cloud, &["apply"]));
    let token = register(&cloud, "gw-02");
    let first = desired(&cloud, "gw-02", &token);
    let etag = first.header("etag").expect("etag").to_owned();
    assert_eq!(
        first.json()["digest"].as_str().map(|d| format!("\"{d}\"")),
        Some(etag.clone())
    );

    // Nothing changes: 304 after the wait.
    let quick = http(
        &cloud.addr(),
        "GET",
        "/v1/devices/gw-02/desired?wait=1",
        Some(&token),
        &[("If-None-Match", &etag)],
        b"",
    );
    assert_eq!(quick.status, 304);

    // A change for gw-02 ends the wait early.
    let started = Instant::now();
    let addr = cloud.addr();
    let poll = std::thread::spawn({
        let (token, etag) = (token.clone(), etag.clone());
        move || {
            http(
                &addr,
                "GET",
                "/v1/devices/gw-02/desired?wait=60",
                Some(&token),
                &[("If-None-Match", &etag)],
                b"",
            )
        }
    });
    // Wait until the long-poll is parked on the server (its gauge says so), then apply.
    while !http(
        &cloud.addr(),
        "GET",
        "/metrics",
        Some(&cloud.admin),
        &[],
        b"",
    )
    .body
    .windows(26)
    .any(|w| w == b"edgefn_longpolls_waiting 1")
    {
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "the long-poll never waited"
        );
    }
    let manifest = project.path().join("edgefn.yaml");
    let t = std::fs::read_to_string(&manifest).expect("read");
    std::fs::write(&manifest, t.replace("timeout: 3s", "timeout: 4s")).expect("write");
    git(project.path(), &["commit", "-q", "-am", "longer timeout"]);
    ok(&cli(project.path(), &cloud, &["apply"]));
    let changed = poll.join().expect("poll");
    assert_eq!(changed.status, 200);
    assert_ne!(changed.header("etag"), Some(etag.as_str()));
    assert_eq!(changed.json()["revision"], 2);
    assert!(
        started.elapsed() < Duration::from_secs(30),
        "answered on the change, not at the end of the wait"
    );
}

#[test]
fn a_restart_keeps_all_state() {
    let data = tempfile::tempdir().expect("data");
    let cloud = Cloud::start(data.path());
    let project = quickstart_repo();
    ok(&cli(project.path(), &cloud, &["apply"]));
    let token = register(&cloud, "gw-01");
    let report = br#"{"state":"running","runningRevision":1}"#;
    assert_eq!(
        http(
            &cloud.addr(),
            "POST",
            "/v1/devices/gw-01/status",
            Some(&token),
            &[("Content-Type", "application/json")],
            report
        )
        .status,
        204
    );
    let before = desired(&cloud, "gw-01", &token);
    assert!(cloud.stop().success(), "clean exit on SIGTERM");

    let cloud = Cloud::start(data.path());
    let after = desired(&cloud, "gw-01", &token);
    assert_eq!(after.status, 200, "the device token survives");
    assert_eq!(before.header("etag"), after.header("etag"));
    let history = http(
        &cloud.addr(),
        "GET",
        "/v1/revisions",
        Some(&cloud.admin),
        &[],
        b"",
    )
    .json();
    assert_eq!(history.as_array().map(Vec::len), Some(1));
    let status = http(
        &cloud.addr(),
        "GET",
        "/v1/status",
        Some(&cloud.admin),
        &[],
        b"",
    )
    .json();
    let gw1 = status["devices"]
        .as_array()
        .expect("devices")
        .iter()
        .find(|d| d["name"] == "gw-01")
        .expect("gw-01")
        .clone();
    assert_eq!(gw1["report"]["runningRevision"], 1);
    // Re-applying the same project after the restart is still "no changes".
    let again: serde_json::Value = serde_json::from_str(&ok(&cli(
        project.path(),
        &cloud,
        &["apply", "--output", "json"],
    )))
    .expect("json");
    assert_eq!(again["created"], false);
}

#[test]
fn sigkill_during_applies_leaves_whole_revisions() {
    let data = tempfile::tempdir().expect("data");
    let project = quickstart_repo();
    let mut committed = 0u64;
    for round in 0..5u64 {
        let cloud = Cloud::start(data.path());
        let (manifest, bundles) = upload_quickstart(&cloud, project.path());
        // Submit revisions as fast as possible from another thread, and SIGKILL the cloud
        // while they are in flight, after a different delay each round.
        let addr = cloud.addr();
        let admin = cloud.admin.clone();
        let start = committed;
        let submitter = std::thread::spawn(move || {
            for parent in start..start + 10_000 {
                let m = manifest.replace(
                    "concurrency: 2",
                    &format!("concurrency: {}", 2 + parent % 50),
                );
                let body = serde_json::json!({"manifest": m, "bundles": bundles, "expectedParent": parent});
                let Ok(mut s) = std::net::TcpStream::connect(&addr) else {
                    return;
                };
                use std::io::{Read, Write};
                let b = body.to_string();
                let req = format!(
                    "POST /v1/revisions HTTP/1.1\r\nHost: x\r\nConnection: close\r\nAuthorization: Bearer {admin}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{b}",
                    b.len()
                );
                if s.write_all(req.as_bytes()).is_err() {
                    return;
                }
                let mut out = String::new();
                if s.read_to_string(&mut out).is_err() || !out.starts_with("HTTP/1.1 201") {
                    return;
                }
            }
        });
        kill_after(cloud, Duration::from_millis(150 + 70 * round));
        submitter.join().expect("submitter");

        let cloud = Cloud::start(data.path());
        let history = http(
            &cloud.addr(),
            "GET",
            "/v1/revisions?limit=1000",
            Some(&cloud.admin),
            &[],
            b"",
        )
        .json();
        let list = history.as_array().expect("list");
        assert!(!list.is_empty(), "round {round}: revisions were committed");
        // Numbered 1..=n without gaps, each whole: manifest valid, bundles stored.
        let n = list[0]["number"].as_u64().expect("number");
        assert_eq!(list.len() as u64, n.min(1000));
        assert!(
            n > committed,
            "round {round}: revisions were committed before the kill, and none was lost"
        );
        let latest = http(
            &cloud.addr(),
            "GET",
            &format!("/v1/revisions/{n}"),
            Some(&cloud.admin),
            &[],
            b"",
        )
        .json();
        let loaded = edgefn_schema::load(
            &edgefn_schema::Source::new("edgefn.yaml", latest["manifest"].as_str().expect("text")),
            None,
        );
        assert!(
            loaded.is_ok(),
            "round {round}: the latest revision is whole"
        );
        for digest in latest["bundles"].as_object().expect("bundles").values() {
            let d = digest.as_str().expect("digest");
            let r = http(
                &cloud.addr(),
                "GET",
                &format!("/v1/bundles/{d}"),
                Some(&cloud.admin),
                &[],
                b"",
            );
            assert_eq!(r.status, 200);
            assert_eq!(edgefn_schema::bundle::digest(&r.body), d);
        }
        committed = n;
        cloud.kill();
    }
}

/// A report answered `204` is on disk: SIGKILLed straight after answering, the cloud started
/// again on the same data shows it (reports used to wait up to a second in memory).
#[test]
fn a_report_answered_204_survives_a_sigkill() {
    let data = tempfile::tempdir().expect("data");
    let cloud = Cloud::start(data.path());
    let token = register(&cloud, "gw-01");
    let r = http(
        &cloud.addr(),
        "POST",
        "/v1/devices/gw-01/status",
        Some(&token),
        &[("Content-Type", "application/json")],
        br#"{"state":"running","runningRevision":7}"#,
    );
    assert_eq!(r.status, 204, "{}", text(&r.body));
    cloud.kill();
    let cloud = Cloud::start(data.path());
    let status = http(
        &cloud.addr(),
        "GET",
        "/v1/status",
        Some(&cloud.admin),
        &[],
        b"",
    )
    .json();
    let gw = status["devices"]
        .as_array()
        .expect("devices")
        .iter()
        .find(|d| d["name"] == "gw-01")
        .cloned()
        .unwrap_or_default();
    assert_eq!(gw["report"]["runningRevision"], 7, "{status}");
}

/// SIGKILLs the cloud after `delay`: the chosen point of the crash test.
#[allow(clippy::disallowed_methods)] // A plain thread waiting in a test, not async code.
fn kill_after(cloud: Cloud, delay: Duration) {
    std::thread::sleep(delay);
    cloud.kill();
}

#[test]
fn bad_tls_settings_are_refused_with_what_is_wrong() {
    let pki = tempfile::tempdir().expect("pki");
    let dir = pki.path();
    test_pki(dir);
    // A second key, not the certificate's.
    openssl(dir, &["genpkey", "-algorithm", "RSA", "-out", "other.key"]);
    std::fs::write(dir.join("empty.pem"), "not a certificate\n").expect("write");
    let data = tempfile::tempdir().expect("data");
    let run = |args: &[&str]| {
        let out = std::process::Command::new(sibling_bin("edgefn-cloud"))
            .args([
                "--data",
                data.path().to_str().expect("utf8"),
                "--listen",
                "127.0.0.1:0",
                "--mqtt-listen",
                "none",
            ])
            .args(args)
            .current_dir(dir)
            .output()
            .expect("run edgefn-cloud");
        assert!(!out.status.success(), "{args:?} was accepted");
        text(&out.stderr)
    };
    let err = run(&["--tls-cert", "missing.pem", "--tls-key", "server.key"]);
    assert!(err.contains("--tls-cert missing.pem"), "{err}");
    let err = run(&["--tls-cert", "empty.pem", "--tls-key", "server.key"]);
    assert!(err.contains("no certificate in it"), "{err}");
    let err = run(&["--tls-cert", "server.pem", "--tls-key", "ca.pem"]);
    assert!(
        err.contains("--tls-key ca.pem") && err.contains("no usable private key"),
        "{err}"
    );
    let err = run(&["--tls-cert", "server.pem", "--tls-key", "other.key"]);
    assert!(err.contains("do not go together"), "{err}");
    let err = run(&["--mqtts-listen", "127.0.0.1:0"]);
    assert!(err.contains("--tls-cert"), "{err}");
    let err = run(&[
        "--tls-cert",
        "server.pem",
        "--tls-key",
        "server.key",
        "--mqtts-listen",
        "127.0.0.1:0",
    ]);
    assert!(err.contains("plain listener"), "{err}");
}

/// Every file the CLI writes that holds a token is created `0600` (its folder `0700` when the CLI
/// creates it), and one that existed readable is replaced by a private one.
#[cfg(unix)]
#[test]
fn files_holding_a_token_are_private() {
    use std::os::unix::fs::PermissionsExt;
    let mode = |p: &Path| std::fs::metadata(p).expect("meta").permissions().mode() & 0o777;
    let data = tempfile::tempdir().expect("data");
    let cloud = Cloud::start(data.path());
    let project = quickstart_repo();
    let home = tempfile::tempdir().expect("home");

    // `edgefn login`, into a folder that does not exist yet.
    let creds = home.path().join("config").join("edgefn").join("login.json");
    let creds_env = creds.to_str().expect("utf8");
    ok(&edgefn_env(
        project.path(),
        &["login", "--cloud", &cloud.url, "--token", &cloud.admin],
        &[("EDGEFN_CONFIG", creds_env)],
    ));
    assert_eq!(mode(&creds), 0o600, "credentials");
    assert_eq!(mode(creds.parent().expect("folder")), 0o700, "their folder");
    // Logging in again over a file someone made readable makes it private again.
    std::fs::set_permissions(&creds, std::fs::Permissions::from_mode(0o644)).expect("chmod");
    ok(&edgefn_env(
        project.path(),
        &["login", "--cloud", &cloud.url, "--token", &cloud.admin],
        &[("EDGEFN_CONFIG", creds_env)],
    ));
    assert_eq!(mode(&creds), 0o600, "credentials, replaced");

    // `edgefn device add --out --force` over a readable file.
    let out = home.path().join("gw-01.yaml");
    std::fs::write(&out, "old\n").expect("write");
    std::fs::set_permissions(&out, std::fs::Permissions::from_mode(0o644)).expect("chmod");
    ok(&cli(
        project.path(),
        &cloud,
        &[
            "device",
            "add",
            "gw-01",
            "--force",
            "--out",
            out.to_str().expect("utf8"),
        ],
    ));
    assert!(
        std::fs::read_to_string(&out)
            .expect("read")
            .contains("token: ")
    );
    assert_eq!(mode(&out), 0o600, "agent configuration");
    // Nothing else (no temporary file) was left beside it.
    let names: Vec<String> = std::fs::read_dir(home.path())
        .expect("list")
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(names.len(), 2, "{names:?}");
}

/// `edgefn publish` to a device where no route brings the topic down still sends it, but says
/// that nothing there will see it, and which route would bring it down.
#[test]
fn publishing_a_topic_no_route_brings_down_warns_with_the_route_that_would() {
    let data = tempfile::tempdir().expect("data");
    let (cloud, _) = Cloud::start_with(data.path(), &["--mqtt-listen", "127.0.0.1:0"]);
    let project = quickstart_repo();
    ok(&cli(project.path(), &cloud, &["apply"]));

    // The quickstart brings `cloud:commands/#` down: no warning.
    let out = cli(
        project.path(),
        &cloud,
        &["publish", "gw-02", "commands/greet", "{\"name\": \"Ada\"}"],
    );
    assert!(ok(&out).contains("sent `commands/greet` to 1 device: gw-02"));
    assert!(
        !text(&out.stderr).contains("warning"),
        "{}",
        text(&out.stderr)
    );

    // Nothing brings `sensors/...` down.
    let out = cli(
        project.path(),
        &cloud,
        &["publish", "gw-02", "sensors/l1/temperature", "42"],
    );
    ok(&out);
    let err = text(&out.stderr);
    assert!(
        err.contains("warning: no route brings `sensors/l1/temperature` down on gw-02")
            && err.contains(r#"from: "cloud:sensors/#", to: local"#),
        "{err}"
    );
    // The same for a label selector, naming every device; and in the API's answer.
    let out = cli(
        project.path(),
        &cloud,
        &[
            "publish",
            "--label",
            "role=gateway",
            "sensors/l1/temperature",
            "42",
        ],
    );
    ok(&out);
    assert!(
        text(&out.stderr).contains("down on gw-01, gw-02: the agents drop it"),
        "{}",
        text(&out.stderr)
    );
    let r = http(
        &cloud.addr(),
        "POST",
        "/v1/publish",
        Some(&cloud.admin),
        &[("Content-Type", "application/json")],
        br#"{"devices": ["gw-01"], "topic": "alerts/x", "payload": 1}"#,
    );
    assert_eq!(r.status, 200, "{}", text(&r.body));
    assert_eq!(r.json()["unrouted"], serde_json::json!(["gw-01"]));
}

/// The exit codes are those of the README's table: 0, 1, 2 (`diff`: changes) and 64 (usage),
/// so `edgefn diff || [ $? -eq 2 ]` passes on changes and fails on a typo.
#[test]
fn exit_codes_are_the_documented_ones() {
    let readme = std::fs::read_to_string(repo().join("README.md")).expect("readme");
    let documented: Vec<i32> = readme
        .lines()
        .filter_map(|l| l.trim().strip_prefix("| "))
        .filter_map(|l| l.split(" |").next()?.trim().parse().ok())
        .collect();
    assert_eq!(documented, [0, 1, 2, 64], "the README's exit-code table");

    let data = tempfile::tempdir().expect("data");
    let cloud = Cloud::start(data.path());
    let project = quickstart_repo();
    let code = |args: &[&str]| cli(project.path(), &cloud, args).status.code();
    assert_eq!(code(&["validate"]), Some(0));
    assert_eq!(code(&["--help"]), Some(0));
    assert_eq!(code(&["diff"]), Some(2), "changes: nothing applied yet");
    for typo in [
        &["diff", "--nope"][..],
        &["dif"],
        &["device", "add"],
        &["status", "--output", "yaml"],
    ] {
        let out = cli(project.path(), &cloud, typo);
        assert_eq!(
            out.status.code(),
            Some(64),
            "{typo:?}: {}",
            text(&out.stderr)
        );
        assert!(text(&out.stderr).contains("error"), "{}", text(&out.stderr));
    }
    ok(&cli(project.path(), &cloud, &["apply"]));
    assert_eq!(code(&["diff"]), Some(0), "no changes");
    std::fs::write(project.path().join("edgefn.yaml"), "apiVersion: nope\n").expect("write");
    assert_eq!(code(&["validate"]), Some(1));
    assert_eq!(code(&["diff"]), Some(1), "an invalid manifest is a failure");
}

/// `edgefn diff` says what changes in each changed function, per device: the bundle's digests,
/// and each key of the function or its bindings (env, triggers, limits) that differs; and which
/// routes come and go.
#[test]
fn diff_shows_what_changes_in_each_function() {
    let data = tempfile::tempdir().expect("data");
    let cloud = Cloud::start(data.path());
    let project = quickstart_repo();
    let dir = project.path();
    ok(&cli(dir, &cloud, &["apply"]));
    let path = dir.join("edgefn.yaml");
    let manifest = std::fs::read_to_string(&path).expect("read");
    let manifest = manifest
        .replace("THRESHOLD: \"40\"", "THRESHOLD: \"45\"")
        .replace(
            "triggers: [ { topic: \"commands/greet\" } ]",
            "triggers: [ { topic: \"commands/hello\" } ]",
        )
        .replace("    memory: 96Mi\n", "    memory: 128Mi\n")
        .replace(
            "  - { from: \"cloud:commands/#\", to: local }",
            "  - { from: \"cloud:commands/#\", to: local }\n  - { from: \"status/#\", to: cloud }",
        );
    std::fs::write(&path, manifest).expect("write");
    std::fs::write(
        dir.join("functions/greeter/index.js"),
        "exports.handler = async () => 1;\n",
    )
    .expect("write");
    git(dir, &["commit", "-qam", "tune"]);
    let out = cli(dir, &cloud, &["diff"]);
    assert_eq!(out.status.code(), Some(2));
    let diff = text(&out.stdout);
    for want in [
        "  ~ temp-filter\n      binding temp-filter: env.THRESHOLD: \"40\" → \"45\"",
        "binding greeter: triggers: [\"commands/greet\"] → [\"commands/hello\"]",
        "binding greeter: memoryBytes: 100663296 → 134217728",
        "  + route status/# → cloud",
    ] {
        assert!(diff.contains(want), "missing {want:?} in:\n{diff}");
    }
    let bundle_line = diff
        .lines()
        .find(|l| l.trim_start().starts_with("bundle "))
        .unwrap_or_else(|| panic!("no bundle line:\n{diff}"));
    let digests: Vec<&str> = bundle_line.split_whitespace().collect();
    assert_eq!(digests.len(), 4, "{bundle_line}");
    assert_ne!(digests[1], digests[3]);
    assert_eq!(digests[1].len(), 12);
}

/// After `edgefn rollback`, git and the control plane disagree: `status` and `diff` say so,
/// `apply` of the rolled-back commit (a CI re-run) is refused unless `--force`, and a commit that
/// comes after it (`git revert`, a fix) replaces the rollback.
#[test]
fn a_rollback_is_never_undone_silently_by_the_next_apply() {
    let data = tempfile::tempdir().expect("data");
    let cloud = Cloud::start(data.path());
    let project = quickstart_repo();
    let dir = project.path();
    ok(&cli(dir, &cloud, &["apply"]));
    let script = dir.join("functions/collector/collect.sh");
    let original = std::fs::read_to_string(&script).expect("read");
    std::fs::write(&script, "#!/bin/sh\necho broken\nexit 1\n").expect("write");
    git(dir, &["commit", "-qam", "break the collector"]);
    ok(&cli(dir, &cloud, &["apply"]));
    ok(&cli(dir, &cloud, &["rollback"]));

    let status = ok(&cli(dir, &cloud, &["status"]));
    assert!(
        status.contains("note: revision 3 is a rollback from revision 2 to revision 1"),
        "{status}"
    );
    let diff = cli(dir, &cloud, &["diff"]);
    let out = text(&diff.stdout);
    assert!(
        out.contains("drift: revision 3 is a rollback") && out.contains("would undo it"),
        "{out}"
    );

    // CI re-runs on the rolled-back commit: refused, nothing created.
    let again = cli(dir, &cloud, &["apply"]);
    assert_eq!(again.status.code(), Some(1));
    let err = text(&again.stderr);
    assert!(
        err.contains("applying this checkout would undo it") && err.contains("--force"),
        "{err}"
    );
    let history = ok(&cli(dir, &cloud, &["history", "--output", "json"]));
    let history: serde_json::Value = serde_json::from_str(&history).expect("json");
    assert_eq!(history[0]["number"], 3, "nothing applied: {history}");

    // A fix committed after it replaces the rollback, and says so.
    std::fs::write(&script, original.replace("collector", "collector v2")).expect("write");
    git(dir, &["commit", "-qam", "fix the collector"]);
    let diff = text(&cli(dir, &cloud, &["diff"]).stdout);
    assert!(
        diff.contains("`edgefn apply` replaces it: commit"),
        "{diff}"
    );
    let fixed = cli(dir, &cloud, &["apply"]);
    ok(&fixed);
    assert!(
        text(&fixed.stderr).contains("revision 3 is a rollback from revision 2 to revision 1")
            && text(&fixed.stderr).contains("replaced: commit"),
        "{}",
        text(&fixed.stderr)
    );
    let status = ok(&cli(dir, &cloud, &["status"]));
    assert!(!status.contains("rollback"), "{status}");

    // --force undoes a rollback on purpose.
    ok(&cli(dir, &cloud, &["rollback"]));
    let forced = cli(dir, &cloud, &["apply", "--force"]);
    ok(&forced);
    assert!(
        text(&forced.stderr).contains("--force: undone"),
        "{}",
        text(&forced.stderr)
    );
}

/// `edgefn subscribe --reconnect-for D`, started in the background; its stderr lines collected.
fn background_subscribe(
    dir: &Path,
    cloud: &Cloud,
    reconnect_for: &str,
) -> (
    std::process::Child,
    std::sync::Arc<std::sync::Mutex<Vec<String>>>,
) {
    use std::io::BufRead;
    let home = tempfile::tempdir().expect("home");
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_edgefn"))
        .args(["subscribe", "#", "--reconnect-for", reconnect_for])
        .current_dir(dir)
        .env_clear()
        .env("HOME", home.path())
        .envs(cloud.env())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("subscribe");
    let lines: std::sync::Arc<std::sync::Mutex<Vec<String>>> = Default::default();
    let sink = lines.clone();
    let err = child.stderr.take().expect("stderr");
    std::thread::spawn(move || {
        for l in std::io::BufReader::new(err).lines().map_while(Result::ok) {
            sink.lock().expect("lock").push(l);
        }
    });
    (child, lines)
}

/// `edgefn subscribe` says when the control plane goes away, reconnects when it comes back,
/// and fails (exit 1, saying why) when it does not come back in time: never a silent exit 0.
#[test]
fn subscribe_says_when_the_control_plane_goes_away_and_comes_back() {
    let data = tempfile::tempdir().expect("data");
    let addr = format!("127.0.0.1:{}", server_port());
    let broker = ["--mqtt-listen", "127.0.0.1:0"];
    let (cloud, _) = Cloud::start_at_with(data.path(), &addr, &broker);
    let dir = tempfile::tempdir().expect("dir");
    let (mut sub, lines) = background_subscribe(dir.path(), &cloud, "60s");
    let has = |needle: &str| {
        lines
            .lock()
            .expect("lock")
            .iter()
            .any(|l| l.contains(needle))
    };
    wait_until(20, "subscribed", || has("subscribed to `#`"));
    cloud.kill();
    wait_until(20, "the loss is reported", || {
        has("lost the stream from the control plane at http://")
    });
    assert!(sub.try_wait().expect("wait").is_none(), "still trying");
    let (cloud, _) = Cloud::start_at_with(data.path(), &addr, &broker);
    wait_until(30, "it subscribes again", || has("subscribed again to `#`"));
    assert!(sub.try_wait().expect("wait").is_none(), "still following");
    let _ = sub.kill();
    let _ = sub.wait();

    // It does not come back in time: exit 1, saying so.
    let (mut sub, lines) = background_subscribe(dir.path(), &cloud, "1s");
    let has = |needle: &str| {
        lines
            .lock()
            .expect("lock")
            .iter()
            .any(|l| l.contains(needle))
    };
    wait_until(20, "subscribed", || has("subscribed to `#`"));
    cloud.kill();
    let mut status = None;
    wait_until(30, "subscribe gives up", || {
        status = sub.try_wait().expect("wait");
        status.is_some()
    });
    assert_eq!(status.and_then(|s| s.code()), Some(1));
    // Its last line may still be in the pipe the reader thread drains.
    wait_until(10, "it says why it gave up", || {
        has("did not come back within 1s")
    });
}

/// `edgefn device add` keeps the device's token out of git: by default the file goes beside the
/// saved login, outside the project; a file asked for inside the work tree is git-ignored before
/// it is written. `apply` names the files that make the tree dirty.
#[test]
fn device_files_stay_out_of_git_and_apply_names_dirty_files() {
    let data = tempfile::tempdir().expect("data");
    let cloud = Cloud::start(data.path());
    let project = quickstart_repo();
    let dir = project.path();
    let config_home = tempfile::tempdir().expect("config");
    let env = cloud.env();
    let xdg = config_home.path().to_str().expect("utf8");
    let with_xdg = [
        (env[0].0, env[0].1.as_str()),
        (env[1].0, env[1].1.as_str()),
        ("XDG_CONFIG_HOME", xdg),
    ];
    let out = ok(&edgefn_env(dir, &["device", "add", "gw-01"], &with_xdg));
    let file = config_home.path().join("edgefn/devices/gw-01.yaml");
    assert!(out.contains(&file.display().to_string()), "{out}");
    let written = std::fs::read_to_string(&file).expect("read");
    assert!(written.contains("token: "), "{written}");
    // The broker's address is written out (the cloud's host), never left to a default.
    assert!(
        written.contains("\nmqtt: mqtt://127.0.0.1:1883 "),
        "{written}"
    );

    // Inside the project: ignored, so the tree stays clean but for .gitignore.
    let out = ok(&cli(
        dir,
        &cloud,
        &["device", "add", "gw-02", "--out", "gw-02.yaml"],
    ));
    assert!(
        out.contains("added it to") && out.contains(".gitignore"),
        "{out}"
    );
    let gitignore = std::fs::read_to_string(dir.join(".gitignore")).expect("read");
    assert!(gitignore.contains("\n/gw-02.yaml\n"), "{gitignore}");
    let status = std::process::Command::new("git")
        .args(["status", "--porcelain"])
        .current_dir(dir)
        .output()
        .expect("git");
    let changed: Vec<String> = text(&status.stdout)
        .lines()
        .map(|l| l[3..].to_owned())
        .collect();
    assert_eq!(
        changed,
        [".gitignore"],
        "only .gitignore changes, never the token's file"
    );

    // apply names what is dirty.
    let refused = cli(dir, &cloud, &["apply"]);
    assert_eq!(refused.status.code(), Some(1));
    assert!(
        text(&refused.stderr).contains("uncommitted changes: .gitignore"),
        "{}",
        text(&refused.stderr)
    );
    git(dir, &["add", "-A"]);
    git(dir, &["commit", "-qm", "ignore the device file"]);
    ok(&cli(dir, &cloud, &["apply"]));
    // A second file in the same place is not added twice.
    ok(&cli(dir, &cloud, &["device", "remove", "gw-02"]));
    let again = ok(&cli(
        dir,
        &cloud,
        &["device", "add", "gw-02", "--out", "gw-02.yaml", "--force"],
    ));
    assert!(!again.contains("added it to"), "{again}");
}

/// Admin tokens are created, listed and revoked from the CLI; a revoked token fails at once and
/// never comes back through its token file; the last one cannot be revoked; a lost token is
/// replaced by starting once with a new token file, whose folder is created.
#[test]
fn admin_tokens_are_created_listed_and_revoked() {
    let data = tempfile::tempdir().expect("data");
    let cloud = Cloud::start(data.path());
    let dir = tempfile::tempdir().expect("dir");
    let as_admin = |token: &str, args: &[&str]| {
        edgefn_env(
            dir.path(),
            args,
            &[
                ("EDGEFN_CLOUD", cloud.url.as_str()),
                ("EDGEFN_TOKEN", token),
            ],
        )
    };
    let list = |token: &str| -> serde_json::Value {
        serde_json::from_str(&ok(&as_admin(
            token,
            &["token", "list", "--output", "json"],
        )))
        .expect("json")
    };
    let first = list(&cloud.admin);
    assert_eq!(first.as_array().map(Vec::len), Some(1), "{first}");
    assert_eq!(first[0]["current"], true);
    let first_id = first[0]["id"].as_str().expect("id").to_owned();

    let ci = ok(&as_admin(&cloud.admin, &["token", "create", "ci"]))
        .trim()
        .to_owned();
    assert!(ci.starts_with("edgefn_adm_"), "{ci}");
    let both = list(&ci);
    assert_eq!(both.as_array().map(Vec::len), Some(2));
    let text_list = ok(&as_admin(&ci, &["token", "list"]));
    assert!(
        !text_list.contains(&ci) && !text_list.contains(&cloud.admin),
        "never a token"
    );
    assert!(
        text_list.contains("ci") && text_list.contains("(this one)"),
        "{text_list}"
    );

    // The first token is revoked with the new one, and fails from then on.
    ok(&as_admin(&ci, &["token", "revoke", &first_id]));
    let refused = as_admin(&cloud.admin, &["status"]);
    assert_eq!(refused.status.code(), Some(1));
    assert!(
        text(&refused.stderr).contains("401"),
        "{}",
        text(&refused.stderr)
    );
    // The last one cannot be revoked; an unknown id is a 404.
    let ci_id = list(&ci)[0]["id"].as_str().expect("id").to_owned();
    let last = as_admin(&ci, &["token", "revoke", &ci_id]);
    assert_eq!(last.status.code(), Some(1));
    assert!(
        text(&last.stderr).contains("last admin token"),
        "{}",
        text(&last.stderr)
    );
    let unknown = as_admin(&ci, &["token", "revoke", "000000000000"]);
    assert!(
        text(&unknown.stderr).contains("no admin token"),
        "{}",
        text(&unknown.stderr)
    );
    let bad = as_admin(&ci, &["token", "create", "no spaces"]);
    assert!(
        text(&bad.stderr).contains("not a valid token name"),
        "{}",
        text(&bad.stderr)
    );
    cloud.stop();

    // Restarted with the file that holds the revoked token: refused, saying why.
    let token_file = data.path().join("admin.token");
    let out = std::process::Command::new(sibling_bin("edgefn-cloud"))
        .args([
            "--data",
            data.path().to_str().expect("utf8"),
            "--listen",
            "127.0.0.1:0",
        ])
        .args([
            "--mqtt-listen",
            "none",
            "--admin-token-file",
            token_file.to_str().expect("utf8"),
        ])
        .output()
        .expect("run");
    assert_eq!(out.status.code(), Some(1));
    assert!(
        text(&out.stderr).contains("was revoked"),
        "{}",
        text(&out.stderr)
    );

    // Deleting the file gives a new token there, and the other tokens still work.
    std::fs::remove_file(&token_file).expect("rm");
    let (cloud, _) = Cloud::start_with(data.path(), &["--mqtt-listen", "none"]);
    assert_ne!(cloud.admin, first_id);
    let env = [
        ("EDGEFN_CLOUD", cloud.url.as_str()),
        ("EDGEFN_TOKEN", cloud.admin.as_str()),
    ];
    ok(&edgefn_env(dir.path(), &["status"], &env));
    let env = [
        ("EDGEFN_CLOUD", cloud.url.as_str()),
        ("EDGEFN_TOKEN", ci.as_str()),
    ];
    ok(&edgefn_env(dir.path(), &["status"], &env));
    drop(cloud);

    // A token file in a folder that does not exist: the folder is created (0700), and the
    // operator is told where the token is.
    let other = tempfile::tempdir().expect("other");
    let fresh = other.path().join("etc").join("edgefn").join("admin.token");
    let mut child = std::process::Command::new(sibling_bin("edgefn-cloud"))
        .args(["--data", other.path().join("data").to_str().expect("utf8")])
        .args(["--listen", "127.0.0.1:0", "--mqtt-listen", "none"])
        .args(["--admin-token-file", fresh.to_str().expect("utf8")])
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("run");
    let mut said = String::new();
    for line in std::io::BufRead::lines(std::io::BufReader::new(
        child.stdout.take().expect("stdout"),
    )) {
        let line = line.expect("line");
        said.push_str(&line);
        said.push('\n');
        if line.contains("listening on") {
            break;
        }
    }
    let _ = child.kill();
    let _ = child.wait();
    assert!(
        said.contains(&format!("wrote a new admin token to {}", fresh.display())),
        "{said}"
    );
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = |p: &Path| std::fs::metadata(p).expect("meta").permissions().mode() & 0o777;
        assert_eq!(mode(&fresh), 0o600);
        assert_eq!(mode(fresh.parent().expect("folder")), 0o700);
    }
}

/// Empty states say what to do next; errors carry no empty help and no chain of layer names.
#[test]
fn empty_states_and_unreachable_clouds_say_what_to_do() {
    let data = tempfile::tempdir().expect("data");
    let (cloud, _) = Cloud::start_with(data.path(), &["--mqtt-listen", "127.0.0.1:0"]);
    let project = quickstart_repo();
    let dir = project.path();
    let err_of = |args: &[&str]| text(&cli(dir, &cloud, args).stderr);
    assert!(
        err_of(&["status"]).contains("nothing is applied yet"),
        "{}",
        err_of(&["status"])
    );
    assert!(err_of(&["history"]).contains("no revision yet: `edgefn apply`"));
    assert!(err_of(&["device", "list"]).contains("no device is registered"));
    let rollback = err_of(&["rollback"]);
    assert!(
        rollback.contains("nothing has been applied yet") && !rollback.contains("help: \n"),
        "{rollback}"
    );
    ok(&cli(dir, &cloud, &["apply"]));
    let logs = err_of(&["logs", "gw-01", "no-such-function"]);
    assert!(
        logs.contains("runs no function or binding `no-such-function`")
            && logs.contains("collector, greeter, temp-filter"),
        "{logs}"
    );
    let unreachable = edgefn_env(
        dir,
        &["status", "--cloud", "http://127.0.0.1:9", "--token", "x"],
        &[],
    );
    let err = text(&unreachable.stderr);
    assert!(
        err.contains("cannot reach the control plane at http://127.0.0.1:9: Connection refused")
            && !err.contains("error sending request"),
        "{err}"
    );
}

/// A cloud whose embedded broker listens on another port than 1883, started without
/// `--device-mqtt-url`: `edgefn device add` writes the port it listens on, not the usual one
/// (on a shared host, 1883 may be somebody else's broker).
#[test]
fn device_add_writes_the_port_the_embedded_broker_listens_on() {
    let data = tempfile::tempdir().expect("data");
    let (cloud, mqtt) = Cloud::start_with(data.path(), &["--mqtt-listen", "127.0.0.1:0"]);
    let port = mqtt
        .expect("broker")
        .rsplit(':')
        .next()
        .expect("port")
        .to_owned();
    assert_ne!(port, "1883");
    let project = quickstart_repo();
    let out_file = project.path().join("gw-01.yaml");
    let env = cloud.env();
    ok(&edgefn_env(
        project.path(),
        &[
            "device",
            "add",
            "gw-01",
            "--out",
            out_file.to_str().expect("utf8"),
        ],
        &[(env[0].0, env[0].1.as_str()), (env[1].0, env[1].1.as_str())],
    ));
    let written = std::fs::read_to_string(&out_file).expect("read");
    assert!(
        written.contains(&format!("\nmqtt: mqtt://127.0.0.1:{port} ")),
        "{written}"
    );
}

fn post_json(cloud: &Cloud, path: &str, body: &serde_json::Value) -> Response {
    http(
        &cloud.addr(),
        "POST",
        path,
        Some(&cloud.admin),
        &[("Content-Type", "application/json")],
        body.to_string().as_bytes(),
    )
}

fn get_json(cloud: &Cloud, path: &str) -> Response {
    http(&cloud.addr(), "GET", path, Some(&cloud.admin), &[], b"")
}

/// A binding made outside git (`POST /v1/bindings`, as the console does) is a new revision made
/// from the latest manifest's text (comments kept), through the same checks as an apply (409 on
/// a stale parent); `status` and `diff` then say git lacks it, and `apply` from git says what it
/// would undo and refuses without `--force`.
#[test]
fn a_binding_made_outside_git_is_never_undone_silently() {
    let data = tempfile::tempdir().expect("data");
    let cloud = Cloud::start(data.path());
    let project = quickstart_repo();
    let dir = project.path();

    let r = post_json(
        &cloud,
        "/v1/bindings",
        &serde_json::json!({"function": "collector", "devices": {"names": ["gw-02"]}}),
    );
    assert_eq!(r.status, 409, "nothing applied yet: {}", text(&r.body));
    ok(&cli(dir, &cloud, &["apply"]));

    // Bad input: each refused with what is wrong, nothing committed.
    let hostile = "<script>alert(\"x\")</script>".repeat(100);
    for (body, status, says) in [
        (
            serde_json::json!({"function": hostile, "devices": {"names": ["gw-02"]}}),
            404,
            "has no function",
        ),
        (
            serde_json::json!({"function": "collector", "devices": {"names": [hostile]}}),
            400,
            "not a device of revision 1",
        ),
        (
            serde_json::json!({"function": "collector", "devices": {"labels": {"site": hostile}}}),
            404,
            "select no device",
        ),
        (
            serde_json::json!({"function": "collector", "devices": {"names": ["gw-01"]}}),
            400,
            "already runs on gw-01",
        ),
        (
            serde_json::json!({"function": "collector", "devices": {"names": ["gw-02"]}, "mode": "triggered", "triggers": ["a/+b"]}),
            422,
            "the manifest has",
        ),
        (
            serde_json::json!({"function": "collector", "devices": {"names": ["gw-02"]}, "expectedParent": 0}),
            409,
            "latest revision is 1",
        ),
    ] {
        let r = post_json(&cloud, "/v1/bindings", &body);
        assert_eq!(r.status, status, "{body}: {}", text(&r.body));
        assert!(text(&r.body).contains(says), "{}", text(&r.body));
    }
    let long = post_json(
        &cloud,
        "/v1/bindings",
        &serde_json::json!({"function": "x".repeat(70_000), "devices": {"names": ["gw-02"]}}),
    );
    assert_eq!(long.status, 413);
    assert_eq!(
        get_json(&cloud, "/v1/revisions?limit=1").json()[0]["number"],
        1
    );

    let made = post_json(
        &cloud,
        "/v1/bindings",
        &serde_json::json!({"function": "collector", "devices": {"names": ["gw-02"]}, "mode": "continuous", "expectedParent": 1}),
    );
    assert_eq!(made.status, 201, "{}", text(&made.body));
    let made = made.json();
    assert_eq!(made["revision"], 2);
    assert_eq!(made["binding"], "collector-2");
    assert_eq!(made["devices"], serde_json::json!(["gw-02"]));
    let rev = get_json(&cloud, "/v1/revisions/2").json();
    assert_eq!(rev["provenance"]["tool"], "api", "{rev}");
    assert!(
        rev["provenance"]["author"]
            .as_str()
            .is_some_and(|a| a.contains("admin token `token-file`")),
        "{rev}"
    );
    let manifest = rev["manifest"].as_str().expect("manifest");
    assert!(
        manifest.starts_with("# yaml-language-server")
            && manifest.contains("# exec (shell): a daemon that samples a sensor")
            && manifest.contains("  - name: \"collector-2\"\n    function: \"collector\"\n"),
        "the latest text with one binding appended: {manifest}"
    );

    // The revision diff: gw-02 gains the collector, gw-01 does not change.
    let diff = get_json(&cloud, "/v1/revisions/1/diff/2");
    assert_eq!(diff.status, 200, "{}", text(&diff.body));
    let diff = diff.json();
    assert_eq!(diff["unchanged"], 1, "{diff}");
    assert_eq!(diff["devices"][0]["device"], "gw-02");
    assert_eq!(
        diff["devices"][0]["functionsAdded"],
        serde_json::json!(["collector"])
    );
    assert_eq!(
        diff["devices"][0]["bindingsAdded"],
        serde_json::json!(["collector-2"])
    );
    assert_eq!(get_json(&cloud, "/v1/revisions/1/diff/9").status, 404);
    assert_eq!(get_json(&cloud, "/v1/revisions/1/diff/x").status, 400);

    // Functions, and a bundle's files.
    let functions = get_json(&cloud, "/v1/functions").json();
    let collector = functions
        .as_array()
        .and_then(|a| a.iter().find(|f| f["name"] == "collector"))
        .expect("collector")
        .clone();
    assert_eq!(collector["devices"], serde_json::json!(["gw-01", "gw-02"]));
    let digest = collector["bundle"].as_str().expect("bundle");
    let files = get_json(&cloud, &format!("/v1/bundles/{digest}/files")).json();
    let script = files["files"]
        .as_array()
        .and_then(|a| a.iter().find(|f| f["path"] == "collect.sh"))
        .expect("collect.sh")
        .clone();
    assert_eq!(script["executable"], true, "{files}");
    let preview = get_json(&cloud, &format!("/v1/bundles/{digest}/files/collect.sh")).json();
    assert!(
        preview["text"]
            .as_str()
            .is_some_and(|t| t.starts_with("#!/bin/sh")),
        "{preview}"
    );
    assert_eq!(preview["binary"], false);
    assert_eq!(
        get_json(&cloud, &format!("/v1/bundles/{digest}/files/nope.txt")).status,
        404
    );
    assert_eq!(get_json(&cloud, "/v1/bundles/nothex/files").status, 400);
    assert_eq!(
        get_json(&cloud, &format!("/v1/bundles/{}/files", "0".repeat(64))).status,
        404
    );

    // Git does not have it: status and diff say so, apply refuses without --force.
    let status = ok(&cli(dir, &cloud, &["status"]));
    assert!(
        status.contains("note: revision 2 was made through the API by admin token `token-file`")
            && status.contains("lacks binding `collector-2` (collector on gw-02)"),
        "{status}"
    );
    let diff = cli(dir, &cloud, &["diff"]);
    assert_eq!(diff.status.code(), Some(2), "the apply would change gw-02");
    let out = text(&diff.stdout);
    assert!(
        out.contains("drift: revision 2 was made through the API")
            && out.contains("`edgefn apply` would undo binding `collector-2` (collector on gw-02), so it refuses without --force"),
        "{out}"
    );
    let refused = cli(dir, &cloud, &["apply"]);
    assert_eq!(refused.status.code(), Some(1));
    // The message as one line (the error report wraps it).
    let err = text(&refused.stderr)
        .replace('│', " ")
        .split_whitespace()
        .collect::<Vec<_>>()
        .join(" ");
    assert!(
        err.contains(
            "applying this checkout would undo: binding `collector-2` (collector on gw-02)"
        ) && err.contains("--force"),
        "{err}"
    );
    assert_eq!(
        get_json(&cloud, "/v1/revisions?limit=1").json()[0]["number"],
        2
    );

    // Committing the same change in git replaces it without a word of warning.
    let path = dir.join("edgefn.yaml");
    let local = std::fs::read_to_string(&path).expect("read").replace(
        "routes:\n",
        "  - { name: collector-2, function: collector, devices: { names: [gw-02] }, mode: continuous }\n\nroutes:\n",
    );
    std::fs::write(&path, local).expect("write");
    git(dir, &["commit", "-qam", "the console's binding"]);
    let diff = text(&cli(dir, &cloud, &["diff"]).stdout);
    assert!(diff.contains("this checkout has its change"), "{diff}");

    // --force undoes it on purpose.
    git(dir, &["reset", "-q", "--hard", "HEAD~1"]);
    let forced = cli(dir, &cloud, &["apply", "--force"]);
    ok(&forced);
    assert!(
        text(&forced.stderr).contains("--force: undone (binding `collector-2`"),
        "{}",
        text(&forced.stderr)
    );
}

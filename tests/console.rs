//! The web console in a real browser: Chromium (Debian's `chromium` and `chromium-driver`,
//! installed by scripts/test.sh) driven through WebDriver (fantoccini), against the real
//! `edgefn-cloud` with two real agents. Screenshots of each page go to
//! `target/console-screenshots/`; with `EDGEFN_BLESS=1` the main ones are copied to
//! `docs/console/` for the README.

#[path = "common/mod.rs"]
mod common;

use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use common::*;
use fantoccini::{Client, ClientBuilder, Locator};

/// `chromedriver` on a free port in a process group of its own, killed with its browsers when
/// dropped (also when a test fails with sessions open).
struct Driver {
    child: Child,
    url: String,
}

impl Driver {
    fn start() -> Driver {
        let port = server_port();
        let child = Command::new(chromedriver())
            .arg(format!("--port={port}"))
            .process_group(0)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start chromedriver");
        let url = format!("http://127.0.0.1:{port}");
        wait_until(20, "chromedriver listens", || {
            std::net::TcpStream::connect(("127.0.0.1", port)).is_ok()
        });
        Driver { child, url }
    }
}

impl Drop for Driver {
    fn drop(&mut self) {
        let _ = Command::new("kill")
            .args(["-KILL", "--", &format!("-{}", self.child.id())])
            .status();
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn chromedriver() -> PathBuf {
    ["/usr/bin/chromedriver", "/usr/lib/chromium/chromedriver"]
        .iter()
        .map(PathBuf::from)
        .find(|p| p.exists())
        .expect("chromedriver: apt-get install chromium chromium-driver (scripts/test.sh does)")
}

async fn browser(driver: &Driver, width: u32, height: u32) -> Client {
    let mut caps = serde_json::Map::new();
    caps.insert(
        "goog:chromeOptions".into(),
        serde_json::json!({
            "binary": "/usr/bin/chromium",
            "args": ["--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                     format!("--window-size={width},{height}")],
        }),
    );
    caps.insert(
        "goog:loggingPrefs".into(),
        serde_json::json!({"browser": "ALL"}),
    );
    ClientBuilder::new(hyper_util::client::legacy::connect::HttpConnector::new())
        .capabilities(caps)
        .connect(&driver.url)
        .await
        .expect("a Chromium session")
}

fn shots() -> PathBuf {
    let dir = repo().join("target/console-screenshots");
    std::fs::create_dir_all(&dir).expect("screenshot folder");
    dir
}

async fn screenshot(c: &Client, name: &str) {
    let png = c.screenshot().await.expect("screenshot");
    std::fs::write(shots().join(format!("{name}.png")), &png).expect("write screenshot");
    if std::env::var_os("EDGEFN_BLESS").is_some() {
        let docs = repo().join("docs/console");
        std::fs::create_dir_all(&docs).expect("docs/console");
        std::fs::write(docs.join(format!("{name}.png")), &png).expect("write");
    }
}

/// Waits (10 s at most) until the element `css` has text containing `want`; returns the text.
async fn text_of(c: &Client, css: &str, want: &str) -> String {
    let mut last = String::new();
    for _ in 0..100 {
        if let Ok(e) = c.find(Locator::Css(css)).await {
            last = e.text().await.unwrap_or_default();
            if last.contains(want) {
                return last;
            }
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("`{css}` never showed {want:?}; it shows {last:?}");
}

/// The browser's console messages at SEVERE level (errors) since the last call.
async fn console_errors(c: &Client) -> Vec<String> {
    let logs = c
        .execute("return (window.__edgefnErrors || []).splice(0);", vec![])
        .await
        .expect("read errors");
    logs.as_array()
        .map(|a| a.iter().map(|v| v.to_string()).collect())
        .unwrap_or_default()
}

/// Installs a hook that records errors and failed resource loads in the page (CSP violations
/// included), where `console_errors` finds them.
async fn watch_errors(c: &Client) {
    c.execute(
        "window.__edgefnErrors = window.__edgefnErrors || [];
         window.addEventListener('error', e => window.__edgefnErrors.push(String(e.message || e.type)));
         window.addEventListener('unhandledrejection', e => window.__edgefnErrors.push(String(e.reason)));
         document.addEventListener('securitypolicyviolation', e => window.__edgefnErrors.push('CSP: ' + e.violatedDirective));
         const orig = console.error; console.error = (...a) => { window.__edgefnErrors.push(a.join(' ')); orig(...a); };",
        vec![],
    )
    .await
    .expect("install the error hook");
}

/// Opens `url` and hooks the page's errors (see [`watch_errors`]).
async fn open(c: &Client, url: &str) {
    c.goto(url)
        .await
        .unwrap_or_else(|e| panic!("open {url}: {e}"));
    watch_errors(c).await;
}

/// Clicks the element `css` once it is on the page.
/// A live page may replace the element between finding and clicking it (the overview renders
/// its page again when a device reports): a stale element is found again, as a person's click
/// would land on the new one.
async fn click(c: &Client, css: &str) {
    for attempt in 0.. {
        let found = c
            .wait()
            .for_element(Locator::Css(css))
            .await
            .unwrap_or_else(|e| panic!("`{css}` never appeared: {e}"));
        match found.click().await {
            Ok(()) => return,
            Err(e) if e.is_stale_element_reference() && attempt < 20 => {}
            Err(e) => panic!("click `{css}`: {e}"),
        }
    }
}

/// A project from the quickstart with a commit message full of markup, two registered devices
/// and their agent files.
struct Fleet {
    cloud: Cloud,
    _data: tempfile::TempDir,
    project: tempfile::TempDir,
    agents: Vec<AgentProc>,
    _agent_data: Vec<tempfile::TempDir>,
}

const HOSTILE: &str =
    "<script>window.__pwned=1</script><img src=x onerror=\"window.__pwned=2\"> \"quotes' & more";

/// A file name with markup in it (in the temp-filter's bundle).
const HOSTILE_FILE: &str = "<img src=x onerror=\"window.__pwned=3\">'.txt";

fn fleet() -> Fleet {
    let data = tempfile::tempdir().expect("cloud data");
    // With its embedded broker, which carries the functions' logs up.
    let mqtt = format!("127.0.0.1:{}", server_port());
    let (cloud, _) = Cloud::start_with(
        data.path(),
        &[
            "--mqtt-listen",
            &mqtt,
            "--device-mqtt-url",
            &format!("mqtt://{mqtt}"),
        ],
    );
    let project = quickstart_repo();
    let env = cloud.env();
    let env = [(env[0].0, env[0].1.as_str()), (env[1].0, env[1].1.as_str())];
    let mut agents = Vec::new();
    let mut agent_data = Vec::new();
    for d in ["gw-01", "gw-02"] {
        let config = project.path().join(format!("{d}.yaml"));
        ok(&edgefn_env(
            project.path(),
            &["device", "add", d, "--out", config.to_str().expect("utf8")],
            &env,
        ));
        let mut text = std::fs::read_to_string(&config).expect("agent file");
        text.push_str("reportInterval: 1s\npollWait: 5s\nhealthWindow: 1s\n");
        std::fs::write(&config, text).expect("write");
    }
    // A label with markup in it, for the fleet page.
    let manifest = project.path().join("edgefn.yaml");
    let text = std::fs::read_to_string(&manifest).expect("manifest");
    std::fs::write(
        &manifest,
        text.replace(
            "site: beijing",
            "site: \"<b onmouseover=alert(1)>beijing</b>\"",
        ),
    )
    .expect("write");
    // The temp-filter logs a line with markup in it, for the logs panel.
    let main = project.path().join("functions/temp-filter/main.py");
    let code = std::fs::read_to_string(&main).expect("main.py");
    std::fs::write(
        &main,
        code.replacen(
            "def handle(event, context):\n",
            &format!("def handle(event, context):\n    print({HOSTILE:?})\n"),
            1,
        ),
    )
    .expect("write");
    // A file whose name and contents are markup, for the bundle view.
    std::fs::write(
        project
            .path()
            .join("functions/temp-filter")
            .join(HOSTILE_FILE),
        HOSTILE,
    )
    .expect("write");
    git(project.path(), &["add", "-A"]);
    git(project.path(), &["commit", "-q", "-m", HOSTILE]);
    ok(&edgefn_env(project.path(), &["apply"], &env));
    for d in ["gw-01", "gw-02"] {
        let dd = tempfile::tempdir().expect("agent data");
        agents.push(AgentProc::start(
            &project.path().join(format!("{d}.yaml")),
            dd.path(),
            &[],
        ));
        agent_data.push(dd);
    }
    Fleet {
        cloud,
        _data: data,
        project,
        agents,
        _agent_data: agent_data,
    }
}

#[test]
fn the_console_signs_in_watches_the_fleet_follows_logs_rolls_back_and_signs_out() {
    let fleet = fleet();
    let driver = Driver::start();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(async {
        let c = browser(&driver, 1280, 800).await;
        open(&c, &format!("{}/", fleet.cloud.url)).await;

        // Sign in: a wrong token is refused with a message, the right one opens the fleet.
        let token = c
            .wait()
            .for_element(Locator::Css("#token"))
            .await
            .expect("sign-in form");
        screenshot(&c, "sign-in").await;
        token
            .send_keys("edgefn_adm_not-a-token\n")
            .await
            .expect("type");
        text_of(&c, "form [role=alert]", "not an admin token").await;
        let token = c.find(Locator::Css("#token")).await.expect("field");
        token.clear().await.expect("clear");
        // By keyboard: Enter submits.
        token
            .send_keys(&format!("{}\n", fleet.cloud.admin))
            .await
            .expect("type");
        watch_errors(&c).await;

        // Both agents converge, live: the page is not reloaded.
        text_of(&c, "#fleet-summary", "2 of 2 devices converged").await;
        text_of(&c, "#fleet-rows tr[data-device=gw-01]", "converged").await;
        text_of(
            &c,
            "#fleet-rows tr[data-device=gw-02]",
            "site=<b onmouseover=alert(1)>beijing</b>",
        )
        .await;
        // Filters: by label, then by state.
        let label = c
            .find(Locator::Css("#f-label"))
            .await
            .expect("label filter");
        label.send_keys("role=gateway").await.expect("type");
        text_of(&c, "#fleet-summary", "2 of 2 devices converged").await;
        label.clear().await.expect("clear");
        label.send_keys("site=shanghai").await.expect("type");
        text_of(&c, "#fleet-summary", "1 shown by the filters").await;
        label.clear().await.expect("clear");
        label.send_keys(" ").await.expect("type");
        screenshot(&c, "fleet").await;

        // The device page: functions, and logs that follow.
        click(&c, "#fleet-rows tr[data-device=gw-01] a").await;
        watch_errors(&c).await;
        text_of(&c, "#device-functions", "temp-filter").await;
        click(&c, "#log-follow").await;
        let r = fleet.agents[0].publish(
            "sensors/line1/temperature",
            &serde_json::json!({"celsius": 50}),
        );
        assert_eq!(r["deliveries"].as_array().map(Vec::len), Some(1), "{r}");
        let logs = text_of(&c, "#device-logs", "onerror").await;
        assert!(
            logs.contains(HOSTILE),
            "the log line is shown as text: {logs}"
        );
        screenshot(&c, "device").await;

        // Revisions, with the hostile commit message as text; roll back to revision 1 after a
        // second apply.
        let env = fleet.cloud.env();
        let env = [(env[0].0, env[0].1.as_str()), (env[1].0, env[1].1.as_str())];
        let manifest = fleet.project.path().join("edgefn.yaml");
        let text = std::fs::read_to_string(&manifest).expect("manifest");
        std::fs::write(
            &manifest,
            text.replace("THRESHOLD: \"40\"", "THRESHOLD: \"45\""),
        )
        .expect("write");
        git(fleet.project.path(), &["commit", "-qam", "threshold 45"]);
        ok(&edgefn_env(fleet.project.path(), &["apply"], &env));
        open(&c, &format!("{}/#/revisions", fleet.cloud.url)).await;
        let row = text_of(&c, "#revision-rows tr[data-revision='1']", "<script>").await;
        assert!(row.contains("onerror"), "{row}");
        screenshot(&c, "revisions").await;
        click(&c, "#revision-rows tr[data-revision='1'] a").await;
        watch_errors(&c).await;
        click(&c, "#rollback").await;
        c.accept_alert().await.expect("confirm the rollback");
        text_of(&c, "#rollback-result", "returns the fleet to revision 1").await;
        let history = http(
            &fleet.cloud.addr(),
            "GET",
            "/v1/revisions?limit=1",
            Some(&fleet.cloud.admin),
            &[],
            b"",
        )
        .json();
        assert_eq!(history[0]["rollbackOf"], 1, "{history}");
        assert_eq!(
            c.execute("return window.__pwned === undefined;", vec![])
                .await
                .expect("script"),
            serde_json::json!(true),
            "markup from the fleet never runs"
        );

        // The page's own requests need its CSRF token: one without it is refused.
        let refused = c
            .execute_async(
                "const done = arguments[0];
                 fetch('/v1/rollback', {method: 'POST', credentials: 'same-origin',
                   headers: {'Content-Type': 'application/json'}, body: '{}'})
                   .then(r => done(r.status));",
                vec![],
            )
            .await
            .expect("fetch");
        assert_eq!(refused, serde_json::json!(403));

        // Add a device: registered, with its agent's configuration to download.
        open(&c, &format!("{}/#/add-device", fleet.cloud.url)).await;
        let name = c
            .wait()
            .for_element(Locator::Css("#new-device"))
            .await
            .expect("the form");
        // A name the API refuses: its message, as text.
        c.execute(
            "document.getElementById('new-device').removeAttribute('pattern');",
            vec![],
        )
        .await
        .expect("script");
        name.send_keys("<script>x</script>\n").await.expect("type");
        let refused = text_of(&c, "#new-device-result [role=alert]", "").await;
        assert!(!refused.is_empty(), "the refusal is shown");
        name.clear().await.expect("clear");
        name.send_keys("gw-03\n").await.expect("type");
        let config = text_of(&c, "#agent-config-text", "token: edgefn_dev_").await;
        assert!(config.contains("device: gw-03"), "{config}");
        assert!(
            config.contains(&format!("cloud: {}", fleet.cloud.url)),
            "{config}"
        );
        assert!(config.contains("mqtt: mqtt://127.0.0.1:"), "{config}");
        let link = c
            .find(Locator::Css("#agent-config"))
            .await
            .expect("download link");
        assert_eq!(
            link.attr("download").await.expect("attr").as_deref(),
            Some("gw-03.yaml")
        );
        screenshot(&c, "add-device").await;
        let devices = http(
            &fleet.cloud.addr(),
            "GET",
            "/v1/devices",
            Some(&fleet.cloud.admin),
            &[],
            b"",
        )
        .json();
        assert!(devices.to_string().contains("gw-03"), "{devices}");

        let errors = console_errors(&c).await;
        assert!(errors.is_empty(), "errors in the browser: {errors:?}");

        // Sign out: the session ends on the server too.
        click(&c, "#signout").await;
        c.wait()
            .for_element(Locator::Css("#token"))
            .await
            .expect("signed out");
        let after = c
            .execute_async(
                "const done = arguments[0];
                 fetch('/v1/status', {credentials: 'same-origin'}).then(r => done(r.status));",
                vec![],
            )
            .await
            .expect("fetch");
        assert_eq!(after, serde_json::json!(401));
        c.close().await.expect("close");

        // A phone's width: the fleet page still works, without the wide columns.
        let phone = browser(&driver, 390, 844).await;
        phone
            .goto(&format!("{}/", fleet.cloud.url))
            .await
            .expect("open");
        let token = phone
            .wait()
            .for_element(Locator::Css("#token"))
            .await
            .expect("form");
        token
            .send_keys(&format!("{}\n", fleet.cloud.admin))
            .await
            .expect("type");
        text_of(&phone, "#fleet-summary", "devices converged").await;
        let hidden = phone
            .execute(
                "return getComputedStyle(document.querySelector('th.hide-narrow')).display;",
                vec![],
            )
            .await
            .expect("style");
        assert_eq!(hidden, serde_json::json!("none"));
        screenshot(&phone, "fleet-phone").await;
        phone.close().await.expect("close");
    });
}

/// Sessions are checked on the server: a forged or missing cookie, and changes without the
/// CSRF token, are refused with the API's errors; the pages forbid inline and foreign scripts.
#[test]
fn sessions_and_csrf_are_enforced_and_pages_carry_a_strict_csp() {
    let data = tempfile::tempdir().expect("data");
    let cloud = Cloud::start(data.path());
    let addr = cloud.addr();
    let page = http(&addr, "GET", "/", None, &[], b"");
    assert_eq!(page.status, 200);
    let csp = page
        .header("content-security-policy")
        .expect("CSP")
        .to_owned();
    assert!(
        csp.contains("script-src 'self'") && !csp.contains("unsafe-inline"),
        "{csp}"
    );
    assert!(csp.contains("frame-ancestors 'none'"), "{csp}");

    let forged = http(
        &addr,
        "GET",
        "/v1/status",
        None,
        &[("Cookie", "edgefn_session=0123456789abcdef")],
        b"",
    );
    assert_eq!(forged.status, 401, "{}", text(&forged.body));

    let wrong = http(
        &addr,
        "POST",
        "/console/session",
        None,
        &[("Content-Type", "application/json")],
        br#"{"token": "edgefn_adm_nope"}"#,
    );
    assert_eq!(wrong.status, 401);
    let long = format!(r#"{{"token": "{}"}}"#, "x".repeat(100_000));
    let long = http(
        &addr,
        "POST",
        "/console/session",
        None,
        &[("Content-Type", "application/json")],
        long.as_bytes(),
    );
    assert_eq!(
        long.status,
        413,
        "a sign-in body is small: {}",
        text(&long.body)
    );

    let signed = http(
        &addr,
        "POST",
        "/console/session",
        None,
        &[("Content-Type", "application/json")],
        format!(r#"{{"token": "{}"}}"#, cloud.admin).as_bytes(),
    );
    assert_eq!(signed.status, 201, "{}", text(&signed.body));
    let set = signed.header("set-cookie").expect("cookie").to_owned();
    assert!(
        set.contains("HttpOnly") && set.contains("SameSite=Strict"),
        "{set}"
    );
    let cookie = set.split(';').next().expect("pair").to_owned();
    let csrf = signed.json()["csrf"].as_str().expect("csrf").to_owned();

    let status = http(
        &addr,
        "GET",
        "/v1/status",
        None,
        &[("Cookie", &cookie)],
        b"",
    );
    assert_eq!(status.status, 200, "a session reads like an admin token");
    let no_csrf = http(
        &addr,
        "POST",
        "/v1/rollback",
        None,
        &[("Cookie", &cookie), ("Content-Type", "application/json")],
        b"{}",
    );
    assert_eq!(no_csrf.status, 403, "{}", text(&no_csrf.body));
    let bad_csrf = http(
        &addr,
        "POST",
        "/v1/rollback",
        None,
        &[
            ("Cookie", &cookie),
            ("X-CSRF-Token", "nope"),
            ("Content-Type", "application/json"),
        ],
        b"{}",
    );
    assert_eq!(bad_csrf.status, 403);
    let with_csrf = http(
        &addr,
        "POST",
        "/v1/rollback",
        None,
        &[
            ("Cookie", &cookie),
            ("X-CSRF-Token", &csrf),
            ("Content-Type", "application/json"),
        ],
        b"{}",
    );
    assert_eq!(
        with_csrf.status,
        409,
        "past the CSRF check, the API's own answer (nothing to roll back): {}",
        text(&with_csrf.body)
    );

    // Revoking the admin token the session came from ends the session.
    let tokens = http(&addr, "GET", "/v1/tokens", Some(&cloud.admin), &[], b"").json();
    let made = http(
        &addr,
        "POST",
        "/v1/tokens",
        Some(&cloud.admin),
        &[("Content-Type", "application/json")],
        br#"{"name": "second"}"#,
    )
    .json();
    let second = made["token"].as_str().expect("token").to_owned();
    let signed = http(
        &addr,
        "POST",
        "/console/session",
        None,
        &[("Content-Type", "application/json")],
        format!(r#"{{"token": "{second}"}}"#).as_bytes(),
    );
    let cookie2 = signed
        .header("set-cookie")
        .expect("cookie")
        .split(';')
        .next()
        .expect("pair")
        .to_owned();
    let id = made["id"]
        .as_str()
        .map(str::to_owned)
        .unwrap_or_else(|| made["id"].to_string());
    let revoked = http(
        &addr,
        "DELETE",
        &format!("/v1/tokens/{id}"),
        Some(&cloud.admin),
        &[],
        b"",
    );
    assert!(
        revoked.status == 204 || revoked.status == 200,
        "{} {}",
        revoked.status,
        text(&revoked.body)
    );
    let after = http(
        &addr,
        "GET",
        "/v1/status",
        None,
        &[("Cookie", &cookie2)],
        b"",
    );
    assert_eq!(after.status, 401, "{tokens}");

    // A page following the live status does not hold up the control plane's stop.
    use std::io::{BufRead, Write};
    let mut events = std::net::TcpStream::connect(&addr).expect("connect");
    write!(
        events,
        "GET /console/events HTTP/1.1\r\nHost: x\r\nCookie: {cookie}\r\nAccept: text/event-stream\r\n\r\n"
    )
    .expect("request");
    let mut reader = std::io::BufReader::new(events.try_clone().expect("clone"));
    let mut line = String::new();
    let mut saw_status = false;
    for _ in 0..50 {
        line.clear();
        if reader.read_line(&mut line).expect("read") == 0 {
            break;
        }
        if line.starts_with("event: status") {
            saw_status = true;
            break;
        }
    }
    assert!(saw_status, "the live status starts with the whole status");
    let (done_tx, done_rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let _ = done_tx.send(cloud.stop());
    });
    let stopped = done_rx
        .recv_timeout(Duration::from_secs(20))
        .expect("the control plane stops with a console page open");
    assert!(stopped.success(), "{stopped:?}");
    drop(events);
}

/// Sessions are kept in the store (redb in the data folder): one made before a restart of the
/// control plane still reads and changes (with its CSRF token) after it, and signing out ends
/// it. The data folder holds the sha256 of the cookie's value, never the value, and neither
/// log (at debug level) holds the value or the CSRF token.
#[test]
fn a_console_session_survives_a_restart_of_the_control_plane() {
    let data = tempfile::tempdir().expect("data");
    let logs = tempfile::tempdir().expect("logs");
    let (first, second) = (logs.path().join("1.log"), logs.path().join("2.log"));
    let (cloud, _) = Cloud::start_logged(data.path(), &["--mqtt-listen", "none"], &first);
    let signed = http(
        &cloud.addr(),
        "POST",
        "/console/session",
        None,
        &[("Content-Type", "application/json")],
        format!(r#"{{"token": "{}"}}"#, cloud.admin).as_bytes(),
    );
    assert_eq!(signed.status, 201, "{}", text(&signed.body));
    let cookie = signed
        .header("set-cookie")
        .expect("cookie")
        .split(';')
        .next()
        .expect("pair")
        .to_owned();
    let id = cookie
        .strip_prefix("edgefn_session=")
        .expect("value")
        .to_owned();
    let csrf = signed.json()["csrf"].as_str().expect("csrf").to_owned();
    assert!(cloud.stop().success());

    let (cloud, _) = Cloud::start_logged(data.path(), &["--mqtt-listen", "none"], &second);
    let addr = cloud.addr();
    let request = |method: &str, path: &str, csrf: Option<&str>| {
        let mut headers = vec![
            ("Cookie", cookie.as_str()),
            ("Content-Type", "application/json"),
        ];
        if let Some(c) = csrf {
            headers.push(("X-CSRF-Token", c));
        }
        http(&addr, method, path, None, &headers, b"{}")
    };
    let status = request("GET", "/v1/status", None);
    assert_eq!(
        status.status,
        200,
        "still signed in: {}",
        text(&status.body)
    );
    let info = request("GET", "/console/session", None).json();
    assert_eq!(info["signedIn"], true, "{info}");
    assert_eq!(info["csrf"], csrf.as_str(), "the same CSRF token");
    let change = request("POST", "/v1/rollback", Some(&csrf));
    assert_eq!(
        change.status,
        409,
        "past the CSRF check, the API's own answer: {}",
        text(&change.body)
    );
    assert_eq!(
        request("DELETE", "/console/session", Some(&csrf)).status,
        204
    );
    assert_eq!(request("GET", "/v1/status", None).status, 401, "signed out");
    assert!(cloud.stop().success());

    let db = std::fs::read(data.path().join("cloud.redb")).expect("redb");
    assert!(
        !db.windows(id.len()).any(|w| w == id.as_bytes()),
        "the cookie's value is not stored"
    );
    for log in [&first, &second] {
        let log = std::fs::read_to_string(log).expect("log");
        assert!(!log.is_empty(), "the log was written");
        assert!(
            !log.contains(&id) && !log.contains(&csrf),
            "a session's secret is logged: {log}"
        );
    }
}

/// Waits (`secs` at most) until the element `css` has text containing `want`.
async fn text_within(c: &Client, css: &str, want: &str, secs: u64) -> String {
    let mut last = String::new();
    for _ in 0..secs * 10 {
        if let Ok(e) = c.find(Locator::Css(css)).await {
            last = e.text().await.unwrap_or_default();
            if last.contains(want) {
                return last;
            }
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("`{css}` never showed {want:?}; it shows {last:?}");
}

/// Selects the option `value` of the `<select>` `css`.
async fn choose(c: &Client, css: &str, value: &str) {
    c.wait()
        .for_element(Locator::Css(css))
        .await
        .unwrap_or_else(|e| panic!("`{css}` never appeared: {e}"))
        .select_by_value(value)
        .await
        .unwrap_or_else(|e| panic!("choose {value} in `{css}`: {e}"));
}

/// Signs in with the admin token on the page at `url`.
async fn sign_in(c: &Client, url: &str, admin: &str) {
    open(c, url).await;
    c.wait()
        .for_element(Locator::Css("#token"))
        .await
        .expect("sign-in form")
        .send_keys(&format!("{admin}\n"))
        .await
        .expect("type");
    c.wait()
        .for_element(Locator::Css("#nav:not([hidden])"))
        .await
        .expect("signed in");
    watch_errors(c).await;
}

/// Bind with a click: the collector runs on gw-02 (its real agent takes it); the drift shows in
/// `edgefn status`; a bind that races an apply gets the API's 409, shown in the page; the CSRF
/// token is required. Then the revision diff, the functions page and a bundle's files, with
/// markup in file names, contents and commit messages shown as text.
#[test]
fn the_console_binds_with_a_click_and_shows_diffs_functions_and_bundles() {
    let fleet = fleet();
    let driver = Driver::start();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let env = fleet.cloud.env();
    let env = [(env[0].0, env[0].1.as_str()), (env[1].0, env[1].1.as_str())];
    rt.block_on(async {
        let c = browser(&driver, 1280, 800).await;
        let base = fleet.cloud.url.clone();
        sign_in(&c, &format!("{base}/#/bind"), &fleet.cloud.admin).await;

        // Bind the collector to gw-02, by keyboard: choose, type, Enter.
        choose(&c, "#bind-function", "collector").await;
        let device = c.find(Locator::Css("#bind-device")).await.expect("device");
        device.send_keys("gw-02").await.expect("type");
        screenshot(&c, "bind").await;
        device.send_keys("\n").await.expect("submit");
        let done = text_of(&c, "#bind-result", "Revision 2 runs collector on gw-02").await;
        assert!(done.contains("binding collector-2"), "{done}");
        assert!(done.contains("Git does not have this change"), "{done}");

        // The device takes it: its real agent runs the collector.
        click(&c, "#bind-result a[href='#/devices/gw-02']").await;
        watch_errors(&c).await;
        let fns = text_within(&c, "#device-functions", "collector-2", 60).await;
        assert!(fns.contains("temp-filter"), "{fns}");
        let rev = http(
            &fleet.cloud.addr(),
            "GET",
            "/v1/revisions/2",
            Some(&fleet.cloud.admin),
            &[],
            b"",
        )
        .json();
        assert_eq!(rev["provenance"]["tool"], "console", "{rev}");
        assert!(
            rev["provenance"]["author"]
                .as_str()
                .is_some_and(|a| a.starts_with("admin token `")),
            "{rev}"
        );

        // Git does not have it: `edgefn status` in the project says so.
        let status = ok(&edgefn_env(fleet.project.path(), &["status"], &env));
        assert!(
            status.contains("note: revision 2 was made in the web console")
                && status.contains("lacks binding `collector-2` (collector on gw-02)"),
            "{status}"
        );

        // The revision diff, picked on the revisions page.
        open(&c, &format!("{base}/#/revisions")).await;
        let from = c
            .wait()
            .for_element(Locator::Css("#diff-a"))
            .await
            .expect("compare form");
        from.clear().await.expect("clear");
        from.send_keys("1").await.expect("type");
        click(&c, "#compare-submit").await;
        let row = text_of(&c, "#diff-rows tr[data-device=gw-02]", "collector-2").await;
        assert!(row.contains("+ functions: collector"), "{row}");
        text_of(&c, "#diff-summary", "Changed: 1 device; unchanged: 1").await;
        let from = text_of(&c, "#diff-from", "<script>").await;
        assert!(from.contains(HOSTILE), "the commit message as text: {from}");
        screenshot(&c, "revision-diff").await;

        // Functions: who runs what; a bundle's files, a name and contents with markup as text.
        open(&c, &format!("{base}/#/functions")).await;
        let collector = text_of(&c, "#functions-rows tr[data-function=collector]", "gw-02").await;
        assert!(collector.contains("gw-01"), "{collector}");
        let links = c
            .find_all(Locator::Css(
                "#functions-rows tr[data-function=collector] a.chip",
            ))
            .await
            .expect("device links");
        assert_eq!(links.len(), 2, "a link per device: {collector}");
        screenshot(&c, "functions").await;
        click(&c, "#functions-rows tr[data-function=temp-filter] a.bundle").await;
        let files = text_of(&c, "#bundle-files", "main.py").await;
        assert!(files.contains(HOSTILE_FILE), "{files}");
        click(
            &c,
            &format!("#bundle-files tr[data-path={:?}] a", HOSTILE_FILE),
        )
        .await;
        let shown = text_of(&c, "#bundle-text", "<script>").await;
        assert_eq!(shown, HOSTILE);
        click(&c, "#bundle-files tr[data-path='main.py'] a").await;
        text_of(&c, "#bundle-text", "def handle(event, context):").await;
        screenshot(&c, "bundle").await;

        // A bind that races an apply: the page was made against revision 2; `edgefn apply
        // --force` from git (revision 3) gets there first, and the click gets the API's 409.
        open(&c, &format!("{base}/#/bind/greeter")).await;
        c.wait()
            .for_element(Locator::Css("#bind-labels"))
            .await
            .expect("form");
        ok(&edgefn_env(
            fleet.project.path(),
            &["apply", "--force"],
            &env,
        ));
        let labels = c.find(Locator::Css("#bind-labels")).await.expect("labels");
        labels
            .send_keys("site=<img src=x onerror=window.__pwned=4>")
            .await
            .expect("type");
        click(&c, "#bind-submit").await;
        text_of(
            &c,
            "#bind-result [role=alert]",
            "Someone applied a revision",
        )
        .await;
        // Against the latest: labels that select nothing are refused, the markup stays text.
        open(&c, &format!("{base}/#/bind/temp-filter")).await;
        let labels = c
            .wait()
            .for_element(Locator::Css("#bind-labels"))
            .await
            .expect("labels");
        labels
            .send_keys("site=<img src=x onerror=window.__pwned=4>\n")
            .await
            .expect("type");
        text_of(&c, "#bind-result [role=alert]", "select no device").await;
        assert_eq!(
            c.execute("return window.__pwned === undefined;", vec![])
                .await
                .expect("script"),
            serde_json::json!(true),
            "markup never runs"
        );

        // The bind needs the page's CSRF token: missing or forged, 403.
        for token in [None, Some("forged")] {
            let status = c
                .execute_async(
                    "const [token, done] = arguments;
                     const headers = {'Content-Type': 'application/json'};
                     if (token) headers['X-CSRF-Token'] = token;
                     fetch('/v1/bindings', {method: 'POST', credentials: 'same-origin', headers,
                       body: JSON.stringify({function: 'greeter', devices: {names: ['gw-01']}})})
                       .then(r => done(r.status));",
                    vec![serde_json::json!(token)],
                )
                .await
                .expect("fetch");
            assert_eq!(status, serde_json::json!(403), "CSRF token {token:?}");
        }
        let errors = console_errors(&c).await;
        assert!(errors.is_empty(), "errors in the browser: {errors:?}");
        c.close().await.expect("close");

        // A phone's width: the bind form and the functions page fit.
        let phone = browser(&driver, 390, 844).await;
        sign_in(&phone, &format!("{base}/#/bind"), &fleet.cloud.admin).await;
        phone
            .wait()
            .for_element(Locator::Css("#bind-submit"))
            .await
            .expect("form");
        let fits = phone
            .execute(
                "return document.documentElement.scrollWidth <= window.innerWidth;",
                vec![],
            )
            .await
            .expect("width");
        assert_eq!(fits, serde_json::json!(true), "no sideways scrolling");
        screenshot(&phone, "bind-phone").await;
        let errors = console_errors(&phone).await;
        assert!(errors.is_empty(), "errors in the browser: {errors:?}");
        phone.close().await.expect("close");
    });
}

/// The overview is paged and filtered on the server: with 122 devices, a page holds 100, the
/// counts cover the fleet, the filters narrow it, and a report changes the visible page live.
#[test]
fn the_overview_pages_and_filters_many_devices_on_the_server() {
    let data = tempfile::tempdir().expect("data");
    let cloud = Cloud::start(data.path());
    let project = quickstart_repo();
    let env = cloud.env();
    let env = [(env[0].0, env[0].1.as_str()), (env[1].0, env[1].1.as_str())];
    ok(&edgefn_env(project.path(), &["apply"], &env));
    let mut gw01 = String::new();
    for i in 0..120 {
        let r = http(
            &cloud.addr(),
            "POST",
            "/v1/devices",
            Some(&cloud.admin),
            &[("Content-Type", "application/json")],
            format!(r#"{{"name": "dev-{i:03}"}}"#).as_bytes(),
        );
        assert_eq!(r.status, 201, "{}", text(&r.body));
    }
    for d in ["gw-01", "gw-02"] {
        let r = http(
            &cloud.addr(),
            "POST",
            "/v1/devices",
            Some(&cloud.admin),
            &[("Content-Type", "application/json")],
            format!(r#"{{"name": "{d}"}}"#).as_bytes(),
        );
        if d == "gw-01" {
            gw01 = r.json()["token"].as_str().expect("token").to_owned();
        }
    }
    // The page's API: bounded, and its filters checked.
    let bad = http(
        &cloud.addr(),
        "GET",
        "/v1/status/page?size=100000",
        Some(&cloud.admin),
        &[],
        b"",
    );
    assert_eq!(bad.status, 400, "{}", text(&bad.body));
    let bad = http(
        &cloud.addr(),
        "GET",
        "/v1/status/page?state=%3Cscript%3E",
        Some(&cloud.admin),
        &[],
        b"",
    );
    assert_eq!(bad.status, 400, "{}", text(&bad.body));
    let page = http(
        &cloud.addr(),
        "GET",
        "/v1/status/page?page=1&size=100",
        Some(&cloud.admin),
        &[],
        b"",
    )
    .json();
    assert_eq!(page["counts"]["total"], 122, "{page}");
    assert_eq!(page["devices"].as_array().map(Vec::len), Some(22));

    let driver = Driver::start();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(async {
        let c = browser(&driver, 1280, 800).await;
        sign_in(&c, &format!("{}/", cloud.url), &cloud.admin).await;
        text_of(&c, "#fleet-summary", "0 of 122 devices converged").await;
        text_of(&c, "#page-of", "page 1 of 2").await;
        let rows = c
            .find_all(Locator::Css("#fleet-rows tr"))
            .await
            .expect("rows");
        assert_eq!(rows.len(), 100, "one page");
        screenshot(&c, "fleet-paged").await;
        click(&c, "#page-next").await;
        text_of(&c, "#page-of", "page 2 of 2").await;
        text_of(&c, "#fleet-rows tr[data-device=gw-01]", "never seen").await;

        // A report changes the visible page, live, and the counts.
        let r = http(
            &cloud.addr(),
            "POST",
            "/v1/devices/gw-01/status",
            Some(&gw01),
            &[("Content-Type", "application/json")],
            br#"{"state": "failed", "message": "<b>bench</b>"}"#,
        );
        assert_eq!(r.status, 204, "{}", text(&r.body));
        text_of(&c, "#fleet-rows tr[data-device=gw-01]", "failed").await;
        text_of(&c, "#fleet-summary", "failed 1").await;

        // Filters, on the server: a name, a label, a state.
        let q = c.find(Locator::Css("#f-q")).await.expect("name filter");
        q.send_keys("dev-11").await.expect("type");
        text_of(&c, "#fleet-summary", "10 shown by the filters").await;
        text_of(&c, "#page-of", "page 1 of 1").await;
        q.clear().await.expect("clear");
        q.send_keys(" ").await.expect("type");
        let label = c.find(Locator::Css("#f-label")).await.expect("label");
        label.send_keys("site=shanghai").await.expect("type");
        text_of(&c, "#fleet-summary", "1 shown by the filters").await;
        text_of(&c, "#fleet-rows", "gw-01").await;
        label.clear().await.expect("clear");
        label.send_keys(" ").await.expect("type");
        choose(&c, "#f-state", "failed").await;
        text_of(&c, "#fleet-summary", "1 shown by the filters").await;
        choose(&c, "#f-state", "never seen").await;
        text_of(&c, "#fleet-summary", "121 shown by the filters").await;
        let errors = console_errors(&c).await;
        assert!(errors.is_empty(), "errors in the browser: {errors:?}");
        c.close().await.expect("close");
    });
}

/// Issue 15's invoke panel, in the browser: a function bound on a real agent runs on request
/// and its answer and the logs it wrote show, as text (a topic with markup and quotes, the
/// log line full of markup); the same for an offline device gives a clear timeout. Through the
/// API's own endpoint, with the session and its CSRF token.
#[test]
fn the_invoke_panel_runs_a_function_on_a_device_and_shows_its_answer_as_text() {
    let mut fleet = fleet();
    let driver = Driver::start();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(async {
        let c = browser(&driver, 1280, 800).await;
        open(&c, &format!("{}/", fleet.cloud.url)).await;
        let token = c
            .wait()
            .for_element(Locator::Css("#token"))
            .await
            .expect("sign-in form");
        token
            .send_keys(&format!("{}\n", fleet.cloud.admin))
            .await
            .expect("type");
        text_of(&c, "#fleet-summary", "2 of 2 devices converged").await;
        open(&c, &format!("{}/#/devices/gw-01", fleet.cloud.url)).await;
        text_of(&c, "#invoke-function", "temp-filter").await;
        c.find(Locator::Css("#invoke-function"))
            .await
            .expect("function picker")
            .select_by_value("temp-filter")
            .await
            .expect("pick temp-filter");
        let topic = c
            .find(Locator::Css("#invoke-topic"))
            .await
            .expect("topic field");
        assert_eq!(
            topic.attr("placeholder").await.expect("attr").as_deref(),
            Some("sensors/+/temperature"),
            "the trigger is the hint"
        );
        let hostile_line = "<img src=x onerror=\"window.__pwned=4\">'q'";
        topic
            .send_keys(&format!("sensors/{hostile_line}/temperature"))
            .await
            .expect("type");
        c.find(Locator::Css("#invoke-payload"))
            .await
            .expect("payload field")
            .send_keys("{\"celsius\": 50}")
            .await
            .expect("type");
        // The agent's link comes up a moment after convergence: a request before it times
        // out (and never runs later); ask again until it answers.
        let mut shown = String::new();
        for _ in 0..20 {
            c.find(Locator::Css("#invoke-timeout"))
                .await
                .expect("wait field")
                .clear()
                .await
                .expect("clear");
            c.find(Locator::Css("#invoke-timeout"))
                .await
                .expect("wait field")
                .send_keys("2")
                .await
                .expect("type");
            click(&c, "#invoke-run").await;
            shown = text_of(&c, "#invoke-result", "").await;
            for _ in 0..50 {
                shown = c
                    .find(Locator::Css("#invoke-result"))
                    .await
                    .expect("result")
                    .text()
                    .await
                    .unwrap_or_default();
                if !shown.contains("Waiting for") {
                    break;
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            if shown.contains("answered in") {
                break;
            }
        }
        assert!(shown.contains("temp-filter answered in"), "{shown}");
        let value = text_of(&c, "#invoke-value", "\"alert\": true").await;
        // Shown as JSON text: the markup and quotes as they are, escaped only as JSON escapes.
        let as_json = serde_json::to_string(hostile_line).expect("json");
        assert!(value.contains(&as_json), "the result, as text: {value}");
        let published = text_of(&c, "#invoke-published", "alerts/").await;
        assert!(
            published.contains(&format!("alerts/{hostile_line} ")) && published.contains(&as_json),
            "{published}"
        );
        let logs = text_of(&c, "#invoke-logs", "onerror").await;
        assert!(logs.contains(HOSTILE), "the log line, as text: {logs}");
        assert_eq!(
            c.execute("return window.__pwned === undefined;", vec![])
                .await
                .expect("script"),
            serde_json::json!(true),
            "markup in an answer never runs"
        );
        c.execute(
            "document.getElementById('invoke-panel').scrollIntoView();",
            vec![],
        )
        .await
        .expect("scroll");
        screenshot(&c, "invoke").await;
        // The panel's endpoint needs the session's CSRF token like every change.
        let refused = c
            .execute_async(
                "const done = arguments[0];
                 fetch('/v1/devices/gw-01/invoke', {method: 'POST', credentials: 'same-origin',
                   headers: {'Content-Type': 'application/json'},
                   body: JSON.stringify({function: 'temp-filter'})})
                   .then(r => done(r.status));",
                vec![],
            )
            .await
            .expect("fetch");
        assert_eq!(refused, serde_json::json!(403));

        // An offline device: a clear timeout within the wait asked for.
        fleet.agents.remove(1).kill();
        open(&c, &format!("{}/#/devices/gw-02", fleet.cloud.url)).await;
        text_of(&c, "#invoke-function", "temp-filter").await;
        c.find(Locator::Css("#invoke-function"))
            .await
            .expect("function picker")
            .select_by_value("temp-filter")
            .await
            .expect("pick temp-filter");
        c.find(Locator::Css("#invoke-topic"))
            .await
            .expect("topic field")
            .send_keys("sensors/line2/temperature")
            .await
            .expect("type");
        let wait = c
            .find(Locator::Css("#invoke-timeout"))
            .await
            .expect("wait field");
        wait.clear().await.expect("clear");
        wait.send_keys("1").await.expect("type");
        click(&c, "#invoke-run").await;
        let timeout = text_of(&c, "#invoke-result [role=alert]", "No answer in time.").await;
        assert!(
            timeout.contains("did not answer") && timeout.contains("will not run later"),
            "{timeout}"
        );
        c.execute(
            "document.getElementById('invoke-panel').scrollIntoView();",
            vec![],
        )
        .await
        .expect("scroll");
        screenshot(&c, "invoke-timeout").await;
        let errors = console_errors(&c).await;
        assert!(errors.is_empty(), "errors in the browser: {errors:?}");
        c.close().await.expect("close");
    });
}

/// Issue 16's rollout in the console: a revision with a `rollout:` section shows its stage and
/// devices on the revisions page, and the page pauses, resumes and aborts it through the API's
/// own endpoints (with the session's CSRF token), each change confirmed by `GET /v1/rollout`.
#[test]
fn the_revisions_page_shows_a_rollout_and_pauses_resumes_and_aborts_it() {
    let fleet = fleet();
    let env = fleet.cloud.env();
    let env = [(env[0].0, env[0].1.as_str()), (env[1].0, env[1].1.as_str())];
    // A second revision that rolls out to one canary first, baking for longer than the test.
    let manifest = fleet.project.path().join("edgefn.yaml");
    let text = std::fs::read_to_string(&manifest).expect("manifest");
    let text = text.replace("THRESHOLD: \"40\"", "THRESHOLD: \"41\"")
        + "\nrollout:\n  deadline: 10m\n  stages:\n    - { devices: 1, bake: 10m }\n    - { percent: 100 }\n";
    std::fs::write(&manifest, text).expect("write");
    git(
        fleet.project.path(),
        &["commit", "-qam", "roll out in stages"],
    );
    ok(&edgefn_env(fleet.project.path(), &["apply"], &env));
    let rollout_state = || -> String {
        let r = http(
            &fleet.cloud.addr(),
            "GET",
            "/v1/rollout",
            Some(&fleet.cloud.admin),
            &[],
            b"",
        )
        .json();
        r["state"].as_str().unwrap_or_default().to_owned()
    };
    assert_eq!(rollout_state(), "running");
    let driver = Driver::start();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(async {
        let c = browser(&driver, 1280, 800).await;
        sign_in(&c, &format!("{}/", fleet.cloud.url), &fleet.cloud.admin).await;
        open(&c, &format!("{}/#/revisions", fleet.cloud.url)).await;
        text_of(&c, "#rollout-state", "running, stage 1 of 2").await;
        text_of(&c, "#rollout-stages", "600 s").await;
        screenshot(&c, "rollout").await;
        click(&c, "#rollout-pause").await;
        text_of(&c, "#rollout-state", "paused").await;
        assert_eq!(rollout_state(), "paused");
        click(&c, "#rollout-resume").await;
        text_of(&c, "#rollout-state", "running").await;
        assert_eq!(rollout_state(), "running");
        click(&c, "#rollout-abort").await;
        c.accept_alert().await.expect("confirm the abort");
        text_of(&c, "#rollout-state", "aborted").await;
        assert_eq!(rollout_state(), "aborted");
        let errors = console_errors(&c).await;
        assert!(errors.is_empty(), "errors in the browser: {errors:?}");
        c.close().await.expect("close");
    });
}

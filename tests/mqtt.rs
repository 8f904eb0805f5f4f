//! Messages between the cloud and devices over MQTT, end to end: the real `edgefn-cloud` with its
//! embedded broker, and with a real Mosquitto it configures; devices played by rumqttc clients
//! holding their name and token; the real `edgefn publish`, `subscribe` and `logs`.

#[path = "common/mod.rs"]
mod common;

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use common::{
    Cloud, edgefn_env, http, mosquitto_bin, ok, pause, quickstart_repo, server_port, text,
    wait_until,
};
use rumqttc::{Client, Event, Incoming, MqttOptions, QoS, SubscribeReasonCode};

/// `edgefn ARGS` against `cloud`.
fn cli(dir: &Path, cloud: &Cloud, args: &[&str]) -> std::process::Output {
    let env = cloud.env();
    edgefn_env(
        dir,
        args,
        &[("EDGEFN_CLOUD", &env[0].1), ("EDGEFN_TOKEN", &env[1].1)],
    )
}

/// Registers `name`; returns its token.
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

/// A device's MQTT connection.
struct Device {
    client: Client,
    events: mpsc::Receiver<Result<Incoming, String>>,
}

/// Connects as `user`/`password` with client id `id`; `Err` with the broker's refusal.
fn connect(addr: &str, id: &str, user: &str, password: &str) -> Result<Device, String> {
    let (host, port) = addr.rsplit_once(':').expect("host:port");
    let mut opts = MqttOptions::new(id, host, port.parse().expect("port"));
    opts.set_credentials(user, password)
        .set_keep_alive(Duration::from_secs(10))
        .set_max_packet_size(1 << 20, 1 << 20);
    let (client, mut connection) = Client::new(opts, 100);
    let (tx, events) = mpsc::channel();
    std::thread::spawn(move || {
        for ev in connection.iter() {
            match ev {
                Ok(Event::Incoming(i)) => {
                    if tx.send(Ok(i)).is_err() {
                        return;
                    }
                }
                Ok(Event::Outgoing(_)) => {}
                Err(e) => {
                    let _ = tx.send(Err(format!("{e:?}")));
                    return;
                }
            }
        }
    });
    let dev = Device { client, events };
    match dev.next(Duration::from_secs(10)) {
        Some(Ok(Incoming::ConnAck(_))) => Ok(dev),
        Some(Ok(other)) => Err(format!("unexpected {other:?}")),
        Some(Err(e)) => Err(e),
        None => Err("no CONNACK".into()),
    }
}

impl Device {
    fn next(&self, timeout: Duration) -> Option<Result<Incoming, String>> {
        self.events.recv_timeout(timeout).ok()
    }

    /// Subscribes; returns the broker's answer.
    fn subscribe(&self, filter: &str) -> SubscribeReasonCode {
        self.client
            .subscribe(filter, QoS::AtLeastOnce)
            .expect("subscribe");
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            match self.next(Duration::from_secs(1)) {
                Some(Ok(Incoming::SubAck(ack))) => return ack.return_codes[0],
                Some(Err(e)) => panic!("connection failed while subscribing: {e}"),
                _ => {}
            }
        }
        panic!("no SUBACK for {filter}")
    }

    /// Publishes with QoS 1 and waits for the PUBACK.
    fn publish(&self, topic: &str, payload: &str) {
        self.client
            .publish(topic, QoS::AtLeastOnce, false, payload.as_bytes().to_vec())
            .expect("publish");
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            match self.next(Duration::from_secs(1)) {
                Some(Ok(Incoming::PubAck(_))) => return,
                Some(Err(e)) => panic!("connection failed while publishing: {e}"),
                _ => {}
            }
        }
        panic!("no PUBACK for {topic}")
    }

    /// The next message received, as (topic, payload).
    fn receive(&self, timeout: Duration) -> Option<(String, String)> {
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            match self.next(Duration::from_millis(200)) {
                Some(Ok(Incoming::Publish(p))) => {
                    return Some((p.topic, String::from_utf8_lossy(&p.payload).into_owned()));
                }
                Some(Err(e)) => panic!("connection failed while receiving: {e}"),
                _ => {}
            }
        }
        None
    }
}

/// `edgefn subscribe FILTER --count N --json`, started and subscribed.
struct Subscriber {
    child: Child,
    stdout: Option<std::thread::JoinHandle<String>>,
}

impl Subscriber {
    fn start(cloud: &Cloud, filter: &str, count: usize) -> Subscriber {
        let mut child = Command::new(env!("CARGO_BIN_EXE_edgefn"))
            .args(["subscribe", filter, "--count", &count.to_string(), "--json"])
            .env_clear()
            .env("PATH", std::env::var_os("PATH").unwrap_or_default())
            .env("EDGEFN_CLOUD", &cloud.url)
            .env("EDGEFN_TOKEN", &cloud.admin)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start edgefn subscribe");
        let stderr = child.stderr.take().expect("stderr");
        let mut lines = BufReader::new(stderr).lines();
        loop {
            let line = lines
                .next()
                .expect("edgefn subscribe exited before subscribing")
                .expect("read");
            if line.starts_with("subscribed to") {
                break;
            }
            assert!(!line.contains("error"), "edgefn subscribe: {line}");
        }
        // Read stdout as it comes, so that a long output never fills the pipe.
        let mut out = child.stdout.take().expect("stdout");
        let stdout = std::thread::spawn(move || {
            let mut text = String::new();
            let _ = std::io::Read::read_to_string(&mut out, &mut text);
            text
        });
        Subscriber {
            child,
            stdout: Some(stdout),
        }
    }

    /// Waits for the exit (after `count` messages); returns the messages.
    fn finish(mut self, timeout: Duration) -> Vec<serde_json::Value> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = self.child.try_wait().expect("wait") {
                assert!(status.success(), "edgefn subscribe failed: {status}");
                break;
            }
            assert!(
                Instant::now() < deadline,
                "edgefn subscribe did not get its messages in time"
            );
            pause(20);
        }
        let out = self.stdout.take().expect("stdout").join().expect("reader");
        out.lines()
            .map(|l| serde_json::from_str(l).expect("JSON line"))
            .collect()
    }
}

impl Drop for Subscriber {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Everything a device may and may not do, the same on either broker. With `strict_suback`,
/// subscriptions outside the namespace must be answered with the failure code (the embedded
/// broker); otherwise they may be granted but must never deliver anything (Mosquitto checks
/// each message against the receiver's ACL).
fn namespace_scenario(cloud: &Cloud, mqtt: &str, strict_suback: bool) {
    let project = quickstart_repo();
    // gw-01 (site shanghai) and gw-02 (site beijing) are in the quickstart manifest.
    ok(&cli(project.path(), cloud, &["apply"]));
    let t1 = register(cloud, "gw-01");
    let t2 = register(cloud, "gw-02");
    let t3 = register(cloud, "gw-03");

    // A wrong token, or another device's, is refused at CONNECT.
    assert!(connect(mqtt, "gw-01", "gw-01", "edgefn_dev_wrong").is_err());
    assert!(connect(mqtt, "gw-01", "gw-01", &t2).is_err());
    assert!(connect(mqtt, "x", "nobody", &t1).is_err());

    let d1 = connect(mqtt, "gw-01", "gw-01", &t1).expect("gw-01 connects");
    let d2 = connect(mqtt, "gw-02", "gw-02", &t2).expect("gw-02 connects");
    let d3 = connect(mqtt, "gw-03", "gw-03", &t3).expect("gw-03 connects");

    // A device subscribes to its own down namespace; its attempts at others' get a failure
    // code, or (Mosquitto, which may grant and then filter) never a message: checked below.
    assert!(matches!(
        d1.subscribe("edgefn/gw-01/down/#"),
        SubscribeReasonCode::Success(_)
    ));
    assert!(matches!(
        d2.subscribe("edgefn/gw-02/down/#"),
        SubscribeReasonCode::Success(_)
    ));
    let probe = connect(mqtt, "gw-01.probe", "gw-01", &t1).expect("second gw-01 client");
    let foreign = [
        probe.subscribe("edgefn/gw-02/down/#"),
        probe.subscribe("edgefn/+/down/#"),
        probe.subscribe("#"),
        probe.subscribe("edgefn/gw-02/up/#"),
        probe.subscribe("edgefn/gw-01/up/#"),
    ];
    if strict_suback {
        assert!(
            foreign.iter().all(|c| *c == SubscribeReasonCode::Failure),
            "{foreign:?}"
        );
    }

    // What devices send up reaches `edgefn subscribe`, and only from their own namespace.
    let sub = Subscriber::start(cloud, "alerts/#", 2);
    d2.publish("edgefn/gw-01/up/alerts/forged", "forged by gw-02");
    d2.publish("edgefn/gw-01/logs/forged", "forged by gw-02");
    d1.publish("edgefn/gw-01/up/alerts/line1", "{\"celsius\": 45}");
    d2.publish("edgefn/gw-02/up/alerts/line2", "hot");
    let got = sub.finish(Duration::from_secs(20));
    assert_eq!(got.len(), 2, "{got:?}");
    assert_eq!(got[0]["device"], "gw-01");
    assert_eq!(got[0]["topic"], "alerts/line1");
    assert_eq!(got[0]["payload"], serde_json::json!({"celsius": 45}));
    assert_eq!(got[1]["device"], "gw-02");
    assert_eq!(got[1]["payload"], "hot");

    // A device cannot publish into another's down namespace either; `edgefn publish` reaches
    // the named device, and only it.
    d2.publish("edgefn/gw-01/down/commands/greet", "forged by gw-02");
    let dir = project.path();
    let out = ok(&cli(
        dir,
        cloud,
        &["publish", "gw-02", "commands/greet", "for gw-02"],
    ));
    assert!(
        out.contains("sent `commands/greet` to 1 device: gw-02"),
        "{out}"
    );
    ok(&cli(
        dir,
        cloud,
        &["publish", "gw-01", "commands/greet", "{\"name\": \"ada\"}"],
    ));
    assert_eq!(
        d2.receive(Duration::from_secs(10)),
        Some((
            "edgefn/gw-02/down/commands/greet".into(),
            "for gw-02".into()
        ))
    );
    assert_eq!(
        d1.receive(Duration::from_secs(10)),
        Some((
            "edgefn/gw-01/down/commands/greet".into(),
            "{\"name\":\"ada\"}".into()
        )),
        "gw-01 received a message not meant for it"
    );

    // Invocations on request: a device reads only its own requests and answers only for
    // itself; another device can neither read gw-01's requests nor answer them.
    let spy = connect(mqtt, "gw-02.spy", "gw-02", &t2).expect("second gw-02 client");
    let spied = [
        spy.subscribe("edgefn/gw-01/invoke/+"),
        spy.subscribe("edgefn/+/invoke/+"),
        spy.subscribe("edgefn/gw-01/reply/+"),
        spy.subscribe("edgefn/gw-02/reply/+"),
    ];
    if strict_suback {
        assert!(
            spied.iter().all(|c| *c == SubscribeReasonCode::Failure),
            "{spied:?}"
        );
    }
    assert!(matches!(
        spy.subscribe("edgefn/gw-02/down/#"),
        SubscribeReasonCode::Success(_)
    ));
    assert!(matches!(
        d1.subscribe("edgefn/gw-01/invoke/+"),
        SubscribeReasonCode::Success(_)
    ));
    let call = std::thread::spawn({
        let (addr, admin) = (cloud.addr(), cloud.admin.clone());
        move || {
            http(
                &addr,
                "POST",
                "/v1/devices/gw-01/invoke",
                Some(&admin),
                &[("Content-Type", "application/json")],
                br#"{"function": "temp-filter", "payload": {"celsius": 45}, "timeoutMs": 20000}"#,
            )
        }
    });
    let (topic, request) = d1
        .receive(Duration::from_secs(20))
        .expect("gw-01 receives the invocation request");
    let id = topic
        .strip_prefix("edgefn/gw-01/invoke/")
        .unwrap_or_else(|| panic!("{topic}"))
        .to_owned();
    assert_eq!(id.len(), 32, "{id}");
    let request: serde_json::Value = serde_json::from_str(&request).expect("JSON request");
    assert_eq!(request["binding"], "temp-filter");
    assert_eq!(request["payload"], serde_json::json!({"celsius": 45}));
    assert!(request["deadline_ms"].as_u64().is_some(), "{request}");
    // gw-02 answers for gw-01, in gw-01's namespace (refused) and in its own (not gw-01's
    // answer); then gw-01 answers. The cloud hears gw-01.
    let forged = r#"{"binding": "forged", "function": "forged", "logs": [], "durationMs": 1}"#;
    d2.publish(&format!("edgefn/gw-01/reply/{id}"), forged);
    d2.publish(&format!("edgefn/gw-02/reply/{id}"), forged);
    d1.publish(
        &format!("edgefn/gw-01/reply/{id}"),
        r#"{"binding": "temp-filter", "function": "temp-filter", "result": {"alert": true}, "logs": [], "durationMs": 3}"#,
    );
    let r = call.join().expect("invoke");
    assert_eq!(r.status, 200, "{}", text(&r.body));
    assert_eq!(r.json()["binding"], "temp-filter", "{}", text(&r.body));
    assert_eq!(r.json()["result"]["alert"], true);
    // The spy saw none of it: the first thing it receives is what is sent to gw-02.
    ok(&cli(
        project.path(),
        cloud,
        &["publish", "gw-02", "commands/spy-check", "sentinel"],
    ));
    assert_eq!(
        spy.receive(Duration::from_secs(10)),
        Some((
            "edgefn/gw-02/down/commands/spy-check".into(),
            "sentinel".into()
        ))
    );
    assert_eq!(
        d2.receive(Duration::from_secs(10)),
        Some((
            "edgefn/gw-02/down/commands/spy-check".into(),
            "sentinel".into()
        ))
    );
    drop(spy);

    // --label reaches exactly the labelled devices of the manifest.
    let out = ok(&cli(
        dir,
        cloud,
        &[
            "publish",
            "--label",
            "site=beijing",
            "commands/reload",
            "now",
        ],
    ));
    assert!(out.contains("to 1 device: gw-02"), "{out}");
    ok(&cli(
        dir,
        cloud,
        &["publish", "gw-01", "commands/after", "sentinel"],
    ));
    assert_eq!(
        d2.receive(Duration::from_secs(10)),
        Some(("edgefn/gw-02/down/commands/reload".into(), "now".into()))
    );
    assert_eq!(
        d1.receive(Duration::from_secs(10)),
        Some(("edgefn/gw-01/down/commands/after".into(), "sentinel".into()))
    );
    let out = ok(&cli(
        dir,
        cloud,
        &["publish", "--label", "role=gateway", "commands/all", "x"],
    ));
    assert!(out.contains("to 2 devices: gw-01, gw-02"), "{out}");
    assert!(d1.receive(Duration::from_secs(10)).is_some());
    assert!(d2.receive(Duration::from_secs(10)).is_some());

    // Bad topics and oversized payloads are refused with clear errors.
    let bad = cli(dir, cloud, &["publish", "gw-01", "commands/+", "x"]);
    assert_eq!(bad.status.code(), Some(1));
    assert!(
        text(&bad.stderr).contains("not a valid topic"),
        "{}",
        text(&bad.stderr)
    );
    let r = http(
        &cloud.addr(),
        "POST",
        "/v1/publish",
        Some(&cloud.admin),
        &[("Content-Type", "application/json")],
        br#"{"devices": ["gw-01"], "topic": "commands/#", "payload": "x"}"#,
    );
    assert_eq!(r.status, 400);
    assert_eq!(r.json()["error"]["code"], "invalid_topic");
    let big = dir.join("big.txt");
    std::fs::write(&big, "x".repeat(300 << 10)).expect("write");
    let too_big = cli(
        dir,
        cloud,
        &[
            "publish",
            "gw-01",
            "commands/big",
            &format!("@{}", big.display()),
        ],
    );
    assert_eq!(too_big.status.code(), Some(1));
    let err = text(&too_big.stderr);
    assert!(
        err.contains("at most 262144 bytes") && err.contains("HTTP 413"),
        "{err}"
    );
    let none = cli(
        dir,
        cloud,
        &["publish", "--label", "site=mars", "commands/x", "y"],
    );
    assert_eq!(none.status.code(), Some(1));
    assert!(
        text(&none.stderr).contains("no device of the latest manifest has the labels site=mars")
    );
    let unknown = cli(dir, cloud, &["publish", "gw-09", "commands/x", "y"]);
    assert_eq!(unknown.status.code(), Some(1));
    assert!(text(&unknown.stderr).contains("`gw-09`"));
    let bad_filter = http(
        &cloud.addr(),
        "GET",
        "/v1/messages?topic=a/%23/b",
        Some(&cloud.admin),
        &[],
        b"",
    );
    assert_eq!(bad_filter.status, 400);

    // Logs shipped up are kept and shown by `edgefn logs`.
    d1.publish(
        "edgefn/gw-01/logs/greeter",
        r#"{"ts_ms": 1709251200123, "binding": "greeter", "stream": "stderr", "line": "hello from greeter"}"#,
    );
    d1.publish(
        "edgefn/gw-01/logs/collector",
        r#"{"ts_ms": 1709251200456, "binding": "collector", "stream": "stdout", "line": "collected"}"#,
    );
    wait_until(10, "log lines kept", || {
        ok(&cli(dir, cloud, &["logs", "gw-01"])).contains("collected")
    });
    let logs = ok(&cli(dir, cloud, &["logs", "gw-01"]));
    assert_eq!(
        logs,
        "2024-03-01T00:00:00.123Z greeter stderr: hello from greeter\n2024-03-01T00:00:00.456Z collector stdout: collected\n"
    );
    let one = ok(&cli(dir, cloud, &["logs", "gw-01", "collector"]));
    assert_eq!(one.lines().count(), 1, "{one}");
    assert!(ok(&cli(dir, cloud, &["logs", "gw-02"])).is_empty());

    // All that reached the probe, whatever it subscribed to, was gw-01's own down traffic (and,
    // on Mosquitto, which grants `#` and then filters, its own invocation request).
    while let Some((topic, payload)) = probe.receive(Duration::from_millis(500)) {
        assert!(
            topic.starts_with("edgefn/gw-01/down/") || topic.starts_with("edgefn/gw-01/invoke/"),
            "gw-01 received {topic} ({payload}) through {foreign:?}"
        );
    }

    // A removed device can no longer connect.
    ok(&cli(dir, cloud, &["device", "remove", "gw-03"]));
    wait_until(10, "gw-03 refused after its removal", || {
        connect(mqtt, "gw-03", "gw-03", &t3).is_err()
    });
    drop(d3);
    // The others still can.
    assert!(connect(mqtt, "gw-02.probe", "gw-02", &t2).is_ok());
}

#[test]
fn embedded_broker_confines_each_device_to_its_namespace() {
    let data = tempfile::tempdir().expect("data");
    let (cloud, mqtt) = Cloud::start_with(data.path(), &["--mqtt-listen", "127.0.0.1:0"]);
    let mqtt = mqtt.expect("the embedded broker's address");
    namespace_scenario(&cloud, &mqtt, true);
    let metrics = http(
        &cloud.addr(),
        "GET",
        "/metrics",
        Some(&cloud.admin),
        &[],
        b"",
    );
    let metrics = text(&metrics.body);
    assert!(metrics.contains("edgefn_mqtt_connected 1"), "{metrics}");
    assert!(
        metrics.contains("edgefn_messages_total{direction=\"up\"} 2"),
        "{metrics}"
    );
    assert!(metrics.contains("edgefn_mqtt_clients "), "{metrics}");
}

#[test]
fn embedded_broker_checks_client_ids_and_keeps_persistent_sessions() {
    let data = tempfile::tempdir().expect("data");
    let (cloud, mqtt) = Cloud::start_with(data.path(), &["--mqtt-listen", "127.0.0.1:0"]);
    let mqtt = mqtt.expect("address");
    let project = quickstart_repo();
    ok(&cli(project.path(), &cloud, &["apply"]));
    let t1 = register(&cloud, "gw-01");
    register(&cloud, "gw-02");
    // A device's client id is its name, or its name and a `.suffix`.
    assert!(connect(&mqtt, "gw-02", "gw-01", &t1).is_err());
    assert!(connect(&mqtt, "gw-01x", "gw-01", &t1).is_err());
    assert!(connect(&mqtt, "gw-01.tool", "gw-01", &t1).is_ok());

    // A persistent session keeps what is sent while the device is away.
    let (host, port) = mqtt.rsplit_once(':').expect("addr");
    let persistent = |id: &str| {
        let mut opts = MqttOptions::new(id, host, port.parse().expect("port"));
        opts.set_credentials("gw-01", t1.as_str())
            .set_clean_session(false)
            .set_keep_alive(Duration::from_secs(10));
        opts
    };
    {
        let (client, mut conn) = Client::new(persistent("gw-01"), 10);
        client
            .subscribe("edgefn/gw-01/down/#", QoS::AtLeastOnce)
            .expect("subscribe");
        for ev in conn.iter() {
            if let Ok(Event::Incoming(Incoming::SubAck(_))) = ev {
                break;
            }
        }
        client.disconnect().expect("disconnect");
        for ev in conn.iter() {
            if ev.is_err() || matches!(ev, Ok(Event::Outgoing(rumqttc::Outgoing::Disconnect))) {
                break;
            }
        }
    }
    pause(200);
    ok(&cli(
        project.path(),
        &cloud,
        &["publish", "gw-01", "commands/greet", "while away"],
    ));
    let (_client, mut conn) = Client::new(persistent("gw-01"), 10);
    let mut got = None;
    let deadline = Instant::now() + Duration::from_secs(10);
    for ev in conn.iter() {
        match ev {
            Ok(Event::Incoming(Incoming::ConnAck(ack))) => assert!(ack.session_present),
            Ok(Event::Incoming(Incoming::Publish(p))) => {
                got = Some(String::from_utf8_lossy(&p.payload).into_owned());
                break;
            }
            Err(e) => panic!("{e:?}"),
            _ => {}
        }
        assert!(Instant::now() < deadline, "nothing arrived");
    }
    assert_eq!(got.as_deref(), Some("while away"));
}

#[test]
fn messages_are_refused_clearly_without_a_broker() {
    let data = tempfile::tempdir().expect("data");
    let (cloud, mqtt) = Cloud::start_with(data.path(), &["--mqtt-listen", "none"]);
    assert!(mqtt.is_none());
    let tmp = tempfile::tempdir().expect("tmp");
    let out = cli(
        tmp.path(),
        &cloud,
        &["publish", "gw-01", "commands/greet", "x"],
    );
    assert_eq!(out.status.code(), Some(1));
    assert!(
        text(&out.stderr).contains("without an MQTT broker"),
        "{}",
        text(&out.stderr)
    );
    // An invocation on request needs the broker too.
    let out = cli(
        tmp.path(),
        &cloud,
        &["invoke", "greeter", "--device", "gw-01"],
    );
    assert_eq!(out.status.code(), Some(1));
    assert!(
        text(&out.stderr).contains("without an MQTT broker") && text(&out.stderr).contains("503"),
        "{}",
        text(&out.stderr)
    );
    // The cloud's own MQTT user name is not a device name.
    let r = http(
        &cloud.addr(),
        "POST",
        "/v1/devices",
        Some(&cloud.admin),
        &[("Content-Type", "application/json")],
        br#"{"name": "edgefn-cloud"}"#,
    );
    assert_eq!(r.status, 400);
}

/// A Mosquitto started for one test, on a free port, with the files edgefn-cloud writes.
struct Mosquitto {
    child: Child,
}

impl Drop for Mosquitto {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Starts Mosquitto on a free port, reading `passwd` and `acl` in `dir` (empty until the cloud
/// writes them and signals a reload), and writes its pid to `pid_file`. A port taken between
/// choosing and binding it is retried with another.
fn start_mosquitto(bin: &Path, dir: &Path, pid_file: &Path) -> (Mosquitto, u16) {
    for f in ["passwd", "acl"] {
        std::fs::write(dir.join(f), "").expect("empty file");
    }
    for _ in 0..5 {
        let port = server_port();
        let conf = dir.join("mosquitto.conf");
        std::fs::write(
            &conf,
            format!(
                "per_listener_settings false\nallow_anonymous false\npassword_file {d}/passwd\nacl_file {d}/acl\npersistence false\nuser root\nlog_dest stderr\nlog_type error\nlistener {port} 127.0.0.1\n",
                d = dir.display()
            ),
        )
        .expect("config");
        let child = Command::new(bin)
            .args(["-c", &conf.display().to_string()])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("start mosquitto");
        let mut m = Mosquitto { child };
        let addr = format!("127.0.0.1:{port}");
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if std::net::TcpStream::connect(&addr).is_ok() {
                std::fs::write(pid_file, m.child.id().to_string()).expect("pid file");
                return (m, port);
            }
            if m.child.try_wait().expect("wait").is_some() {
                break;
            }
            pause(20);
        }
        drop(m);
    }
    panic!("mosquitto did not start");
}

#[test]
fn mosquitto_confines_each_device_to_its_namespace() {
    let Some(bin) = mosquitto_bin() else {
        if std::env::var_os("CI").is_some() {
            panic!("mosquitto is not installed: run scripts/test.sh, which installs it");
        }
        eprintln!("SKIPPED: mosquitto is not installed (scripts/test.sh installs it)");
        return;
    };
    let data = tempfile::tempdir().expect("data");
    let mdir = tempfile::tempdir().expect("mosquitto dir");
    let pid_file = mdir.path().join("mosquitto.pid");
    let (_mosquitto, port) = start_mosquitto(&bin, mdir.path(), &pid_file);
    let url = format!("mqtt://127.0.0.1:{port}");
    let (cloud, embedded) = Cloud::start_with(
        data.path(),
        &[
            "--mqtt-url",
            &url,
            "--mosquitto-dir",
            &mdir.path().display().to_string(),
            "--mosquitto-pid-file",
            &pid_file.display().to_string(),
        ],
    );
    assert!(embedded.is_none());
    // The cloud writes Mosquitto's files as it starts, and has it reload them.
    wait_until(10, "Mosquitto's files written", || {
        std::fs::read_to_string(mdir.path().join("passwd"))
            .is_ok_and(|p| p.starts_with("edgefn-cloud:$7$101$"))
    });
    let acl = std::fs::read_to_string(mdir.path().join("acl")).expect("acl written");
    assert!(acl.contains("pattern read edgefn/%u/down/#"), "{acl}");
    assert!(acl.contains("pattern read edgefn/%u/invoke/+"), "{acl}");
    assert!(acl.contains("pattern write edgefn/%u/reply/+"), "{acl}");
    namespace_scenario(&cloud, &format!("127.0.0.1:{port}"), false);
    let passwd = std::fs::read_to_string(mdir.path().join("passwd")).expect("passwd");
    assert!(
        passwd.contains("gw-01:$7$") && !passwd.contains("gw-03"),
        "{passwd}"
    );
}

#[test]
fn a_burst_arrives_whole_and_in_order_and_logs_follow() {
    let data = tempfile::tempdir().expect("data");
    let (cloud, mqtt) = Cloud::start_with(data.path(), &["--mqtt-listen", "127.0.0.1:0"]);
    let mqtt = mqtt.expect("address");
    let token = register(&cloud, "gw-01");
    let dev = connect(&mqtt, "gw-01", "gw-01", &token).expect("connect");

    const N: usize = 2000;
    let sub = Subscriber::start(&cloud, "seq/+", N);
    for i in 0..N {
        dev.client
            .publish(
                format!("edgefn/gw-01/up/seq/{}", i % 3),
                QoS::AtLeastOnce,
                false,
                i.to_string().into_bytes(),
            )
            .expect("publish");
    }
    let got = sub.finish(Duration::from_secs(60));
    let seq: Vec<u64> = got
        .iter()
        .map(|m| m["payload"].as_u64().expect("a number"))
        .collect();
    assert_eq!(seq, (0..N as u64).collect::<Vec<_>>());

    // `edgefn logs --follow` shows the kept lines, then new ones as they come.
    let line = |n: u32| {
        format!(
            r#"{{"ts_ms": {n}, "binding": "collector", "stream": "stdout", "line": "line {n}"}}"#
        )
    };
    dev.client
        .publish(
            "edgefn/gw-01/logs/collector",
            QoS::AtLeastOnce,
            false,
            line(1).into_bytes(),
        )
        .expect("publish");
    let tmp = tempfile::tempdir().expect("tmp");
    wait_until(10, "the first line kept", || {
        ok(&cli(tmp.path(), &cloud, &["logs", "gw-01"])).contains("line 1")
    });
    let mut follow = Command::new(env!("CARGO_BIN_EXE_edgefn"))
        .args(["logs", "gw-01", "collector", "--follow"])
        .env_clear()
        .env("EDGEFN_CLOUD", &cloud.url)
        .env("EDGEFN_TOKEN", &cloud.admin)
        .stdout(Stdio::piped())
        .spawn()
        .expect("edgefn logs --follow");
    let mut lines = BufReader::new(follow.stdout.take().expect("stdout")).lines();
    let first = lines.next().expect("a line").expect("read");
    assert!(first.ends_with("collector stdout: line 1"), "{first}");
    dev.client
        .publish(
            "edgefn/gw-01/logs/collector",
            QoS::AtLeastOnce,
            false,
            line(2).into_bytes(),
        )
        .expect("publish");
    let second = lines.next().expect("a line").expect("read");
    assert!(second.ends_with("collector stdout: line 2"), "{second}");
    let _ = follow.kill();
    let _ = follow.wait();
}

#[test]
fn the_cloud_drops_messages_a_device_sends_twice() {
    let data = tempfile::tempdir().expect("data");
    let (cloud, mqtt) = Cloud::start_with(data.path(), &["--mqtt-listen", "127.0.0.1:0"]);
    let mqtt = mqtt.expect("address");
    let token = register(&cloud, "gw-01");
    // The device's outbox, as the agent sends it: MQTT 5, each message with its number and the
    // outbox's identity.
    let (host, port) = mqtt.rsplit_once(':').expect("host:port");
    let mut opts = rumqttc::v5::MqttOptions::new("gw-01", host, port.parse().expect("port"));
    opts.set_credentials("gw-01", &token);
    let (client, mut connection) = rumqttc::v5::Client::new(opts, 100);
    std::thread::spawn(move || for _ in connection.iter() {});
    let sub = Subscriber::start(&cloud, "seq", 4);
    let send = |outbox: &str, id: u64, payload: &str| {
        let props = rumqttc::v5::mqttbytes::v5::PublishProperties {
            user_properties: vec![
                ("edgefn-id".into(), id.to_string()),
                ("edgefn-outbox".into(), outbox.into()),
            ],
            ..Default::default()
        };
        client
            .publish_with_properties(
                "edgefn/gw-01/up/seq",
                rumqttc::v5::mqttbytes::QoS::AtLeastOnce,
                false,
                payload.as_bytes().to_vec(),
                props,
            )
            .expect("publish");
    };
    send("aaaa", 1, "first");
    send("aaaa", 2, "second");
    // Resent after a lost acknowledgement: dropped.
    send("aaaa", 1, "first again");
    send("aaaa", 2, "second again");
    send("aaaa", 3, "third");
    // The device was reinstalled: a new outbox counts from 1 again.
    send("bbbb", 1, "after reinstall");
    let got = sub.finish(Duration::from_secs(30));
    let seen: Vec<(String, u64)> = got
        .iter()
        .map(|m| {
            (
                m["payload"].as_str().expect("text").to_owned(),
                m["id"].as_u64().expect("the message's number"),
            )
        })
        .collect();
    assert_eq!(
        seen,
        vec![
            ("first".to_owned(), 1),
            ("second".to_owned(), 2),
            ("third".to_owned(), 3),
            ("after reinstall".to_owned(), 1)
        ]
    );
    let metrics = text(
        &http(
            &cloud.addr(),
            "GET",
            "/metrics",
            Some(&cloud.admin),
            &[],
            b"",
        )
        .body,
    );
    assert!(
        metrics.contains("edgefn_messages_duplicates_total 2"),
        "{metrics}"
    );
}

#[test]
fn messages_kept_for_an_away_device_survive_a_cloud_sigkill() {
    let data = tempfile::tempdir().expect("data");
    let (cloud, mqtt) = Cloud::start_with(data.path(), &["--mqtt-listen", "127.0.0.1:0"]);
    let mqtt = mqtt.expect("address");
    let project = quickstart_repo();
    let token = register(&cloud, "gw-01");
    let persistent = |addr: &str| {
        let (host, port) = addr.rsplit_once(':').expect("addr");
        let mut opts = MqttOptions::new("gw-01", host, port.parse().expect("port"));
        opts.set_credentials("gw-01", token.as_str())
            .set_clean_session(false)
            .set_keep_alive(Duration::from_secs(10));
        opts
    };
    // The device subscribes with a persistent session, then goes away.
    {
        let (client, mut conn) = Client::new(persistent(&mqtt), 10);
        client
            .subscribe("edgefn/gw-01/down/#", QoS::AtLeastOnce)
            .expect("subscribe");
        for ev in conn.iter() {
            if let Ok(Event::Incoming(Incoming::SubAck(_))) = ev {
                break;
            }
        }
        client.disconnect().expect("disconnect");
        for ev in conn.iter() {
            if ev.is_err() || matches!(ev, Ok(Event::Outgoing(rumqttc::Outgoing::Disconnect))) {
                break;
            }
        }
    }
    pause(200);
    for n in 1..=3 {
        ok(&cli(
            project.path(),
            &cloud,
            &[
                "publish",
                "gw-01",
                "commands/step",
                &format!("{{\"n\": {n}}}"),
            ],
        ));
    }
    // Answered means stored: the cloud dies at once, and comes back on the same data.
    cloud.kill();
    let (cloud, mqtt) = Cloud::start_with(data.path(), &["--mqtt-listen", "127.0.0.1:0"]);
    let mqtt = mqtt.expect("address");
    let (_client, mut conn) = Client::new(persistent(&mqtt), 10);
    let mut got = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(10);
    for ev in conn.iter() {
        match ev {
            Ok(Event::Incoming(Incoming::ConnAck(ack))) => {
                assert!(ack.session_present, "the session outlived the cloud");
            }
            Ok(Event::Incoming(Incoming::Publish(p))) => {
                assert_eq!(p.topic, "edgefn/gw-01/down/commands/step");
                got.push(String::from_utf8_lossy(&p.payload).into_owned());
                if got.len() == 3 {
                    break;
                }
            }
            Err(e) => panic!("{e:?}"),
            _ => {}
        }
        assert!(Instant::now() < deadline, "only {got:?} arrived");
    }
    assert_eq!(got, vec![r#"{"n":1}"#, r#"{"n":2}"#, r#"{"n":3}"#]);

    // A removed device's session goes with it.
    let r = http(
        &cloud.addr(),
        "DELETE",
        "/v1/devices/gw-01",
        Some(&cloud.admin),
        &[],
        b"",
    );
    assert!(r.status < 300, "{}", text(&r.body));
    drop(_client);
    cloud.kill();
    let (_cloud, mqtt) = Cloud::start_with(data.path(), &["--mqtt-listen", "127.0.0.1:0"]);
    let token2 = register(&_cloud, "gw-01");
    let mut opts = persistent(mqtt.as_deref().expect("address"));
    opts.set_credentials("gw-01", token2.as_str());
    let (_c, mut conn) = Client::new(opts, 10);
    for ev in conn.iter() {
        if let Ok(Event::Incoming(Incoming::ConnAck(ack))) = ev {
            assert!(!ack.session_present, "a re-registered device starts afresh");
            break;
        }
        assert!(ev.is_ok(), "{ev:?}");
    }
}

/// `edgefn-cloud` with its embedded broker, allowed to write files of at most `limit_kib` KiB
/// (RLIMIT_FSIZE, with SIGXFSZ ignored: a write past the limit fails with EFBIG, as one on a
/// full disk fails with ENOSPC). Returns it and its broker's `host:port`.
fn cloud_with_file_limit(data: &Path, limit_kib: u64) -> (Cloud, String) {
    let token_file = data.join("admin.token");
    let cloud = common::sibling_bin("edgefn-cloud");
    // `ulimit -f` counts 512-byte blocks; the ignored signal and the limit survive the exec.
    let mut child = Command::new("sh")
        .args([
            "-c",
            "trap '' XFSZ; ulimit -f \"$1\" || exit 1; shift; exec \"$@\"",
            "sh",
            &(limit_kib * 2).to_string(),
        ])
        .arg(&cloud)
        .args(["--data", &data.display().to_string()])
        .args(["--listen", "127.0.0.1:0", "--mqtt-listen", "127.0.0.1:0"])
        .args(["--admin-token-file", &token_file.display().to_string()])
        .args(["--log-level", "error"])
        .env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("start edgefn-cloud");
    let mut lines = BufReader::new(child.stdout.take().expect("stdout")).lines();
    let mut mqtt = None;
    let url = loop {
        let line = lines
            .next()
            .expect("edgefn-cloud exited before listening")
            .expect("read");
        if let Some(addr) = line.strip_prefix("edgefn-cloud MQTT broker on mqtt://") {
            mqtt = Some(addr.to_owned());
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
    let cloud = Cloud {
        child,
        url,
        admin,
        data: data.to_path_buf(),
        mqtts: None,
    };
    (cloud, mqtt.expect("the embedded broker's address"))
}

/// `POST /v1/publish` answers only once the message is stored for the device's persistent
/// session: when the broker's store cannot write (its file may not grow), the answer is 503
/// `message_not_stored`, never 200. After a SIGKILL, exactly the messages answered 200 come
/// back, in order.
#[test]
fn a_publish_the_broker_could_not_store_is_an_error() {
    let data = tempfile::tempdir().expect("data");
    let (cloud, mqtt) = cloud_with_file_limit(data.path(), 2048);
    let token = register(&cloud, "gw-01");
    let persistent = |addr: &str| {
        let (host, port) = addr.rsplit_once(':').expect("addr");
        let mut opts = MqttOptions::new("gw-01", host, port.parse().expect("port"));
        opts.set_credentials("gw-01", token.as_str())
            .set_clean_session(false)
            .set_keep_alive(Duration::from_secs(10))
            .set_max_packet_size(1 << 20, 1 << 20);
        opts
    };
    {
        let (client, mut conn) = Client::new(persistent(&mqtt), 10);
        client
            .subscribe("edgefn/gw-01/down/#", QoS::AtLeastOnce)
            .expect("subscribe");
        for ev in conn.iter() {
            if let Ok(Event::Incoming(Incoming::SubAck(_))) = ev {
                break;
            }
        }
        client.disconnect().expect("disconnect");
        for ev in conn.iter() {
            if ev.is_err() || matches!(ev, Ok(Event::Outgoing(rumqttc::Outgoing::Disconnect))) {
                break;
            }
        }
    }
    // 200 KB messages for the away device, until the store's file cannot grow.
    let padding = "x".repeat(200_000);
    let mut accepted = 0;
    let refused = loop {
        let n = accepted + 1;
        assert!(n <= 100, "20 MB stored under a 2 MiB file limit");
        let body = serde_json::json!({
            "devices": ["gw-01"],
            "topic": "commands/step",
            "payload": format!("{n}:{padding}"),
        });
        let r = http(
            &cloud.addr(),
            "POST",
            "/v1/publish",
            Some(&cloud.admin),
            &[("Content-Type", "application/json")],
            body.to_string().as_bytes(),
        );
        if r.status != 200 {
            break r;
        }
        accepted = n;
    };
    assert_eq!(refused.status, 503, "{}", text(&refused.body));
    assert_eq!(
        refused.json()["error"]["code"],
        "message_not_stored",
        "{}",
        text(&refused.body)
    );
    assert!(accepted > 0, "the first messages fit");

    // What was answered 200 is on disk: all of it, and nothing else (a last message, sent
    // after the restart, comes right after them).
    cloud.kill();
    let (cloud, mqtt) = Cloud::start_with(data.path(), &["--mqtt-listen", "127.0.0.1:0"]);
    let r = http(
        &cloud.addr(),
        "POST",
        "/v1/publish",
        Some(&cloud.admin),
        &[("Content-Type", "application/json")],
        br#"{"devices": ["gw-01"], "topic": "commands/step", "payload": "last:"}"#,
    );
    assert_eq!(r.status, 200, "{}", text(&r.body));
    let (_client, mut conn) = Client::new(persistent(&mqtt.expect("address")), 10);
    let mut got = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(20);
    for ev in conn.iter() {
        match ev {
            Ok(Event::Incoming(Incoming::ConnAck(ack))) => {
                assert!(ack.session_present, "the session outlived the cloud");
            }
            Ok(Event::Incoming(Incoming::Publish(p))) => {
                let text = String::from_utf8_lossy(&p.payload);
                got.push(text.split(':').next().unwrap_or_default().to_owned());
                if got.last().is_some_and(|n| n == "last") {
                    break;
                }
            }
            Err(e) => panic!("{e:?}"),
            _ => {}
        }
        assert!(Instant::now() < deadline, "only {got:?} arrived");
    }
    let mut want: Vec<String> = (1..=accepted).map(|n| n.to_string()).collect();
    want.push("last".into());
    assert_eq!(got, want);
}

/// Cloud → device order, at the broker: 1,000 numbered commands sent one after another with
/// `POST /v1/publish` reach the device's MQTT session in the order they were sent, each once.
/// (`tests/uplink.rs` checks the same through the agent, to a program on the device's bus.)
#[test]
fn a_thousand_commands_reach_a_device_session_in_order() {
    const N: u64 = 1000;
    let data = tempfile::tempdir().expect("data");
    let (cloud, mqtt) = Cloud::start_with(data.path(), &["--mqtt-listen", "127.0.0.1:0"]);
    let mqtt = mqtt.expect("the embedded broker's address");
    let token = register(&cloud, "gw-01");
    let dev = connect(&mqtt, "gw-01", "gw-01", &token).expect("connect");
    assert!(matches!(
        dev.subscribe("edgefn/gw-01/down/#"),
        SubscribeReasonCode::Success(_)
    ));
    let (addr, admin) = (cloud.addr(), cloud.admin.clone());
    let sender = std::thread::spawn(move || {
        for i in 0..N {
            let r = http(
                &addr,
                "POST",
                "/v1/publish",
                Some(&admin),
                &[("Content-Type", "application/json")],
                format!(
                    r#"{{"devices": ["gw-01"], "topic": "commands/seq", "payload": {{"n": {i}}}}}"#
                )
                .as_bytes(),
            );
            assert_eq!(r.status, 200, "{}", text(&r.body));
        }
    });
    let mut got = Vec::new();
    while (got.len() as u64) < N {
        let Some((topic, payload)) = dev.receive(Duration::from_secs(30)) else {
            panic!("{} of {N} commands arrived: {got:?}", got.len());
        };
        assert_eq!(topic, "edgefn/gw-01/down/commands/seq");
        let v: serde_json::Value = serde_json::from_str(&payload).expect("json");
        got.push(v["n"].as_u64().expect("n"));
    }
    sender.join().expect("sender");
    assert_eq!(got, (0..N).collect::<Vec<_>>(), "in the order sent");
}

//! End-to-end tests of the agent's messaging with a real Mosquitto started here: routes up and
//! down, and the durable outbox through a broker outage and agent SIGKILLs.

#[path = "common/mod.rs"]
mod common;

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::*;
use rumqttc::v5::mqttbytes::QoS;
use rumqttc::v5::mqttbytes::v5::Packet;
use rumqttc::v5::{AsyncClient, Event, MqttOptions};

/// A Mosquitto broker on a free loopback port, with persistence in its folder.
struct Mosquitto {
    child: Child,
    port: u16,
    dir: PathBuf,
}

impl Mosquitto {
    fn start(dir: &Path, port: Option<u16>) -> Mosquitto {
        Self::start_with(dir, port, "")
    }

    /// With `extra` lines of configuration.
    fn start_with(dir: &Path, port: Option<u16>, extra: &str) -> Mosquitto {
        let port = port.unwrap_or_else(server_port);
        let conf = dir.join("mosquitto.conf");
        std::fs::write(
            &conf,
            format!(
                "listener {port} 127.0.0.1\nuser root\nallow_anonymous true\npersistence true\npersistence_location {}/\nautosave_interval 1\nmax_queued_messages 100000\nlog_dest stderr\nlog_type error\n{extra}",
                dir.display()
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
            dir: dir.to_path_buf(),
        }
    }

    /// Stops it cleanly (SIGTERM: it saves its sessions and queued messages).
    fn stop(mut self) -> u16 {
        let _ = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status();
        let _ = self.child.wait();
        self.port
    }
}

impl Drop for Mosquitto {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// What a cloud-side subscriber received: (edgefn-id, topic, payload).
type Received = Arc<Mutex<Vec<(Option<u64>, String, Vec<u8>)>>>;

/// A subscriber with a persistent session, in its own thread.
fn subscribe(port: u16, filter: &str) -> Received {
    let received: Received = Arc::default();
    let out = received.clone();
    let filter = filter.to_owned();
    let ready = Arc::new((Mutex::new(false), std::sync::Condvar::new()));
    let ready2 = ready.clone();
    std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("rt");
        rt.block_on(async move {
            let mut opts = MqttOptions::new("test-cloud-subscriber", "127.0.0.1", port);
            opts.set_clean_start(false);
            opts.set_session_expiry_interval(Some(3600));
            opts.set_keep_alive(Duration::from_secs(5));
            let (client, mut events) = AsyncClient::new(opts, 1000);
            client
                .subscribe(filter, QoS::AtLeastOnce)
                .await
                .expect("subscribe");
            loop {
                match events.poll().await {
                    Ok(Event::Incoming(Packet::SubAck(_))) => {
                        let (lock, cv) = &*ready2;
                        *lock.lock().expect("lock") = true;
                        cv.notify_all();
                    }
                    Ok(Event::Incoming(Packet::Publish(p))) => {
                        let id = p
                            .properties
                            .as_ref()
                            .and_then(|pr| {
                                pr.user_properties.iter().find(|(k, _)| k == "edgefn-id")
                            })
                            .and_then(|(_, v)| v.parse().ok());
                        out.lock().expect("lock").push((
                            id,
                            String::from_utf8_lossy(&p.topic).into_owned(),
                            p.payload.to_vec(),
                        ));
                    }
                    Ok(_) => {}
                    Err(_) => tokio::time::sleep(Duration::from_millis(200)).await,
                }
            }
        });
    });
    let (lock, cv) = &*ready;
    let guard = lock.lock().expect("lock");
    let _ready = cv
        .wait_timeout_while(guard, Duration::from_secs(10), |r| !*r)
        .expect("wait");
    received
}

/// Publishes one message as the cloud would, to `topic`.
fn cloud_publish(port: u16, topic: &str, payload: &[u8]) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("rt");
    rt.block_on(async {
        let (client, mut events) = AsyncClient::new(
            MqttOptions::new("test-cloud-publisher", "127.0.0.1", port),
            10,
        );
        client
            .publish(topic, QoS::AtLeastOnce, false, payload.to_vec())
            .await
            .expect("publish");
        loop {
            if let Ok(Event::Incoming(Packet::PubAck(_))) = events.poll().await {
                break;
            }
        }
    });
}

const GREETER: &str = "exports.handler = async (event, context) => {\n  context.publish('alerts/greeting', { greeting: 'Hello, ' + event.payload.name + '!' });\n  return { ok: true };\n};\n";

/// A cloud, a device `dev-a` with routes `alerts/#` up and `cloud:commands/#` down, a greeter
/// triggered by `commands/greet`, and the agent's config pointing at `broker_port`.
struct Setup {
    _cloud_data: tempfile::TempDir,
    cloud: Cloud,
    project: tempfile::TempDir,
    config: PathBuf,
}

fn setup(broker_port: u16) -> Setup {
    let cloud_data = tempfile::tempdir().expect("data");
    let cloud = Cloud::start(cloud_data.path());
    setup_with(
        cloud_data,
        cloud,
        Some(&format!("mqtt://127.0.0.1:{broker_port}")),
        None,
    )
}

/// The environment of the CLI for `cloud`, trusting `ca` when given.
fn cli_env<'a>(
    env: &'a [(&'static str, String); 2],
    ca: Option<&'a str>,
) -> Vec<(&'a str, &'a str)> {
    let mut out = vec![(env[0].0, env[0].1.as_str()), (env[1].0, env[1].1.as_str())];
    if let Some(ca) = ca {
        out.push(("EDGEFN_CA_CERT", ca));
    }
    out
}

/// The project, device `dev-a` registered and its configuration written for the broker at
/// `broker_url` (or the one the cloud gave, when `None`); with `ca`, the CLI and the agent
/// trust that CA for the control plane.
fn setup_with(
    cloud_data: tempfile::TempDir,
    cloud: Cloud,
    broker_url: Option<&str>,
    ca: Option<&Path>,
) -> Setup {
    let project = tempfile::tempdir().expect("project");
    let dir = project.path();
    std::fs::create_dir_all(dir.join("functions/greeter")).expect("mkdir");
    std::fs::write(dir.join("functions/greeter/index.js"), GREETER).expect("write");
    std::fs::write(
        dir.join("edgefn.yaml"),
        "apiVersion: edgefn/v1\nproject: msg\nfunctions:\n  greeter:\n    path: functions/greeter\n    runtime: node\n    handler: index.handler\ndevices:\n  dev-a: {}\n  dev-b: {}\nbindings:\n  - function: greeter\n    devices: { names: [dev-a] }\n    triggers: [ commands/greet ]\nroutes:\n  - { from: \"alerts/#\", to: cloud }\n  - { from: \"cloud:commands/#\", to: local }\n",
    )
    .expect("write");
    std::fs::write(dir.join(".gitignore"), "agent.yaml\n").expect("write");
    git(dir, &["init", "-q"]);
    git(dir, &["add", "-A"]);
    git(dir, &["commit", "-q", "-m", "messages"]);
    let env = cloud.env();
    let ca_text = ca.map(|p| p.display().to_string());
    let env = cli_env(&env, ca_text.as_deref());
    let config = dir.join("agent.yaml");
    ok(&edgefn_env(
        dir,
        &[
            "device",
            "add",
            "dev-a",
            "--out",
            config.to_str().expect("utf8"),
        ],
        &env,
    ));
    ok(&edgefn_env(dir, &["apply"], &env));
    let mut text = std::fs::read_to_string(&config).expect("read");
    if let Some(url) = broker_url {
        text = with_config(&text, &format!("mqtt: {url}\n"));
    }
    text.push_str("healthWindow: 1s\npollWait: 5s\nreportInterval: 1s\n");
    if let Some(ca) = &ca_text {
        text.push_str(&format!("cloudCa: {ca}\n"));
    }
    std::fs::write(&config, text).expect("write");
    Setup {
        _cloud_data: cloud_data,
        cloud,
        project,
        config,
    }
}

fn converged(s: &Setup) -> bool {
    let st = http(
        &s.cloud.addr(),
        "GET",
        "/v1/status",
        Some(&s.cloud.admin),
        &[],
        b"",
    )
    .json();
    st["devices"].as_array().is_some_and(|d| {
        d.iter()
            .any(|d| d["name"] == "dev-a" && d["converged"] == true)
    })
}

#[test]
fn a_message_from_the_cloud_triggers_the_function_and_its_output_reaches_the_cloud() {
    let broker_dir = tempfile::tempdir().expect("broker");
    let broker = Mosquitto::start(broker_dir.path(), None);
    let s = setup(broker.port);
    let up = subscribe(broker.port, "edgefn/+/up/#");
    let data = tempfile::tempdir().expect("agent");
    let _agent = AgentProc::start(&s.config, data.path(), &[]);
    wait_until(30, "dev-a converges", || converged(&s));
    // The agent subscribes on connect; a message to another device's namespace is not for it.
    wait_until(10, "the agent's session is up", || {
        cloud_publish(
            broker.port,
            "edgefn/dev-a/down/commands/greet",
            br#"{"name": "Ada"}"#,
        );
        pause(200);
        !up.lock().expect("lock").is_empty()
    });
    cloud_publish(
        broker.port,
        "edgefn/dev-b/down/commands/greet",
        br#"{"name": "Bob"}"#,
    );
    cloud_publish(
        broker.port,
        "edgefn/dev-a/down/other/greet",
        br#"{"name": "Eve"}"#,
    );
    pause(500);
    let got = up.lock().expect("lock").clone();
    assert!(
        got.iter()
            .all(|(_, t, _)| t == "edgefn/dev-a/up/alerts/greeting"),
        "{got:?}"
    );
    let payloads: Vec<String> = got
        .iter()
        .map(|(_, _, p)| String::from_utf8_lossy(p).into_owned())
        .collect();
    assert!(
        payloads.iter().all(|p| p.contains("Hello, Ada!")),
        "only dev-a, only via the route: {payloads:?}"
    );
    assert!(
        got.iter().all(|(id, _, _)| id.is_some()),
        "each message carries its id"
    );
    let _ = s.project;
}

/// Produces `n` messages on the device bus through the local endpoint, `alerts/<i>` with the
/// payload `{"seq": i}`; each returns once the message is in the outbox.
fn produce(agent: &AgentProc, from: u64, n: u64) {
    for i in from..from + n {
        let r = http(
            &agent.local,
            "POST",
            &format!("/v1/publish?topic=alerts/{i}"),
            None,
            &[("Content-Type", "application/json")],
            format!("{{\"seq\":{i}}}").as_bytes(),
        );
        assert_eq!(r.status, 202, "{}", text(&r.body));
    }
}

/// Every message arrived, in order, after dropping duplicates by id.
fn check_all_in_order(received: &Received, n: u64) {
    wait_until(120, "all messages arrive", || {
        let got = received.lock().expect("lock");
        let mut ids: Vec<u64> = got.iter().filter_map(|(id, _, _)| *id).collect();
        ids.sort_unstable();
        ids.dedup();
        ids.len() as u64 >= n
    });
    let got = received.lock().expect("lock").clone();
    let mut seen = std::collections::HashSet::new();
    let mut seqs = Vec::new();
    for (id, topic, payload) in got {
        if !seen.insert(id.expect("id")) {
            continue;
        }
        let v: serde_json::Value = serde_json::from_slice(&payload).expect("json");
        let seq = v["seq"].as_u64().expect("seq");
        assert_eq!(topic, format!("edgefn/dev-a/up/alerts/{seq}"));
        seqs.push(seq);
    }
    assert_eq!(seqs.len() as u64, n, "every message, once");
    assert!(seqs.windows(2).all(|w| w[0] < w[1]), "in order");
}

fn outage(kills: usize) {
    let broker_dir = tempfile::tempdir().expect("broker");
    let broker = Mosquitto::start(broker_dir.path(), None);
    let s = setup(broker.port);
    let received = subscribe(broker.port, "edgefn/dev-a/up/#");
    let data = tempfile::tempdir().expect("agent");
    let mut agent = AgentProc::start(&s.config, data.path(), &[]);
    wait_until(30, "dev-a converges", || converged(&s));

    // The broker goes away for 30 s while the device produces 10,000 messages.
    let started = std::time::Instant::now();
    let (dir, port) = (broker.dir.clone(), broker.stop());
    let total = 10_000u64;
    let per_part = total / (kills as u64 + 1);
    let mut produced = 0;
    for part in 0..=kills {
        let n = if part == kills {
            total - produced
        } else {
            per_part
        };
        produce(&agent, produced, n);
        produced += n;
        if part < kills {
            // SIGKILL the agent mid-outage, and start it again from its data folder.
            agent.kill();
            agent = AgentProc::start(&s.config, data.path(), &[]);
        }
    }
    let outbox = data.path().join("outbox.redb");
    assert!(outbox.is_file());
    while started.elapsed() < Duration::from_secs(30) {
        pause(100);
    }
    let _broker = Mosquitto::start(&dir, Some(port));
    check_all_in_order(&received, total);
    // The device reports its outbox drained.
    wait_until(30, "the outbox reported empty", || {
        let st = http(
            &s.cloud.addr(),
            "GET",
            "/v1/status",
            Some(&s.cloud.admin),
            &[],
            b"",
        )
        .json();
        let device = st["devices"]
            .as_array()
            .and_then(|d| d.iter().find(|d| d["name"] == "dev-a").cloned())
            .unwrap_or_default();
        let o = &device["report"]["outbox"];
        o["pending"] == 0 && o["dropped"] == 0 && o["sent"].as_u64().unwrap_or(0) >= total
    });
    drop(agent);
}

/// A TCP proxy to `upstream` that holds back the broker's first bytes (its CONNACK) for
/// `delay`, as a loaded broker or a slow link does; counts the connections it accepted.
fn slow_handshake_proxy(upstream: u16, delay: Duration) -> (u16, Arc<Mutex<usize>>) {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = listener.local_addr().expect("addr").port();
    let accepted = Arc::new(Mutex::new(0usize));
    let count = accepted.clone();
    std::thread::spawn(move || {
        for client in listener.incoming().map_while(Result::ok) {
            *count.lock().expect("lock") += 1;
            let Ok(server) = std::net::TcpStream::connect(("127.0.0.1", upstream)) else {
                continue;
            };
            let (mut c_read, mut s_write) = (
                client.try_clone().expect("clone"),
                server.try_clone().expect("clone"),
            );
            std::thread::spawn(move || {
                let _ = std::io::copy(&mut c_read, &mut s_write);
                let _ = s_write.shutdown(std::net::Shutdown::Write);
            });
            let (mut s_read, mut c_write) = (server, client);
            std::thread::spawn(move || {
                use std::io::{Read, Write};
                let mut first = [0u8; 4096];
                let Ok(n) = s_read.read(&mut first) else {
                    return;
                };
                pause(delay.as_millis() as u64);
                if c_write.write_all(&first[..n]).is_ok() {
                    let _ = std::io::copy(&mut s_read, &mut c_write);
                }
                let _ = c_write.shutdown(std::net::Shutdown::Write);
            });
        }
    });
    (port, accepted)
}

/// A regression: rumqttc's `poll` is not cancel-safe while connecting, and the link used to
/// poll inside a `select!` that woke every 100 ms. A CONNACK slower than that made the device
/// abandon each attempt and dial again, for ever; with the embedded broker, an abandoned
/// CONNECT that arrived last took the session over and closed the live connection.
#[test]
fn a_broker_slow_to_answer_connect_gets_one_connection_and_all_messages() {
    let broker_dir = tempfile::tempdir().expect("broker");
    let broker = Mosquitto::start(broker_dir.path(), None);
    let (proxy, accepted) = slow_handshake_proxy(broker.port, Duration::from_millis(600));
    let s = setup(proxy);
    let received = subscribe(broker.port, "edgefn/dev-a/up/#");
    let data = tempfile::tempdir().expect("agent");
    let agent = AgentProc::start(&s.config, data.path(), &[]);
    wait_until(30, "dev-a converges", || converged(&s));
    produce(&agent, 0, 50);
    check_all_in_order(&received, 50);
    produce(&agent, 50, 50);
    check_all_in_order(&received, 100);
    assert_eq!(
        *accepted.lock().expect("lock"),
        1,
        "the device connected once and kept that connection"
    );
}

#[test]
fn ten_thousand_messages_survive_a_30_second_broker_outage_in_order() {
    outage(0);
}

#[test]
fn the_same_with_the_agent_sigkilled_twice_during_the_outage() {
    outage(2);
}

#[test]
fn with_the_embedded_broker_edgefn_publish_reaches_the_function_and_subscribe_sees_its_output() {
    round_trip_through_the_embedded_broker(false);
}

#[test]
fn the_same_over_https_and_mqtts_with_a_private_ca() {
    round_trip_through_the_embedded_broker(true);
}

/// `edgefn publish` → cloud → embedded broker → agent → function → agent → broker → cloud →
/// `edgefn subscribe`; with `tls`, the API is https and the device's broker link mqtts, with
/// certificates from a test CA that the CLI and the agent are told to trust.
fn round_trip_through_the_embedded_broker(tls: bool) {
    let pki = tempfile::tempdir().expect("pki");
    let cloud_data = tempfile::tempdir().expect("data");
    let (cloud, broker_url, ca) = if tls {
        test_pki(pki.path());
        let (cert, key) = (pki.path().join("server.pem"), pki.path().join("server.key"));
        let port = TcpListener::bind("127.0.0.1:0")
            .expect("bind")
            .local_addr()
            .expect("addr")
            .port();
        let mqtts = format!("127.0.0.1:{port}");
        let (cloud, _) = Cloud::start_with(
            cloud_data.path(),
            &[
                "--mqtt-listen",
                "127.0.0.1:0",
                "--tls-cert",
                cert.to_str().expect("utf8"),
                "--tls-key",
                key.to_str().expect("utf8"),
                "--mqtts-listen",
                &mqtts,
                "--device-mqtt-url",
                &format!("mqtts://{mqtts}"),
            ],
        );
        assert!(cloud.url.starts_with("https://"), "{}", cloud.url);
        assert_eq!(cloud.mqtts.as_deref(), Some(mqtts.as_str()));
        // The broker URL comes from the cloud, through `edgefn device add`.
        (cloud, None, Some(pki.path().join("ca.pem")))
    } else {
        let (cloud, mqtt) = Cloud::start_with(cloud_data.path(), &["--mqtt-listen", "127.0.0.1:0"]);
        let mqtt = mqtt.expect("the embedded broker listens");
        (cloud, Some(format!("mqtt://{mqtt}")), None)
    };
    let s = setup_with(cloud_data, cloud, broker_url.as_deref(), ca.as_deref());
    if tls {
        let config = std::fs::read_to_string(&s.config).expect("read");
        assert!(config.contains("\nmqtt: mqtts://127.0.0.1:"), "{config}");
    }
    let data = tempfile::tempdir().expect("agent");
    let agent = AgentProc::start(&s.config, data.path(), &[]);
    if tls {
        // The agent fetched its desired state and bundle over https.
        wait_until(30, "dev-a runs its release", || agent.running().is_some());
    } else {
        wait_until(30, "dev-a converges", || converged(&s));
    }
    let env = s.cloud.env();
    let ca_text = ca.as_ref().map(|p| p.display().to_string());
    let env = cli_env(&env, ca_text.as_deref());
    if tls {
        // Without the CA, the CLI does not trust the cloud, and says what to do.
        let out = edgefn_env(s.project.path(), &["status"], &env[..2]);
        assert!(!out.status.success());
        let err = text(&out.stderr);
        assert!(
            err.contains("certificate") && err.contains("EDGEFN_CA_CERT"),
            "{err}"
        );
    }

    // `edgefn subscribe` in the background, until one message.
    let home = tempfile::tempdir().expect("home");
    let mut sub = Command::new(env!("CARGO_BIN_EXE_edgefn"))
        .args(["subscribe", "alerts/#", "--count", "1", "--json"])
        .env_clear()
        .env("HOME", home.path())
        .envs(env.iter().copied())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("subscribe");
    let mut err = std::io::BufReader::new(sub.stderr.take().expect("stderr"));
    let mut line = String::new();
    while !line.contains("subscribed to") {
        line.clear();
        assert!(
            std::io::BufRead::read_line(&mut err, &mut line).expect("read") > 0,
            "subscribe exited early"
        );
    }
    // The agent's MQTT session comes up a moment after convergence: publish until it answers.
    let mut answered = false;
    for _ in 0..50 {
        ok(&edgefn_env(
            s.project.path(),
            &["publish", "dev-a", "commands/greet", "{\"name\": \"Ada\"}"],
            &env,
        ));
        if sub.try_wait().expect("wait").is_some() {
            answered = true;
            break;
        }
        pause(200);
        if sub.try_wait().expect("wait").is_some() {
            answered = true;
            break;
        }
    }
    assert!(answered || sub.wait().is_ok());
    let out = sub.wait_with_output().expect("output");
    let line = text(&out.stdout);
    let v: serde_json::Value =
        serde_json::from_str(line.trim()).unwrap_or_else(|e| panic!("{e}: {line}"));
    assert_eq!(v["device"], "dev-a");
    assert_eq!(v["topic"], "alerts/greeting");
    assert_eq!(v["payload"]["greeting"], "Hello, Ada!");
}

#[test]
fn the_agent_reaches_the_broker_over_tls_and_verifies_it() {
    // A CA, and a certificate it signs for the broker at 127.0.0.1.
    let pki = tempfile::tempdir().expect("pki");
    let dir = pki.path();
    test_pki(dir);

    // Mosquitto with a TLS listener (for the device) and a plain one (for the test's subscriber).
    let free = || {
        TcpListener::bind("127.0.0.1:0")
            .expect("bind")
            .local_addr()
            .expect("addr")
            .port()
    };
    let (tls_port, plain_port) = (free(), free());
    let conf = dir.join("mosquitto.conf");
    std::fs::write(
        &conf,
        format!(
            "per_listener_settings false\nallow_anonymous true\nuser root\nlistener {tls_port} 127.0.0.1\ncafile {d}/ca.pem\ncertfile {d}/server.pem\nkeyfile {d}/server.key\nlistener {plain_port} 127.0.0.1\nlog_dest stderr\nlog_type error\n",
            d = dir.display()
        ),
    )
    .expect("conf");
    let mut broker = Command::new(mosquitto_bin().expect(
        "mosquitto is not installed: scripts/test.sh installs it (apt-get install mosquitto)",
    ))
    .args(["-c", conf.to_str().expect("utf8")])
    .stdout(Stdio::null())
    .spawn()
    .expect("mosquitto");
    wait_until(10, "mosquitto listens", || {
        std::net::TcpStream::connect(("127.0.0.1", plain_port)).is_ok()
    });

    let s = setup(plain_port);
    // Point the agent at the TLS listener, trusting the test CA.
    let config = std::fs::read_to_string(&s.config).expect("read").replace(
        &format!("mqtt: mqtt://127.0.0.1:{plain_port}"),
        &format!(
            "mqtt: mqtts://127.0.0.1:{tls_port}\nmqttCa: {}",
            dir.join("ca.pem").display()
        ),
    );
    std::fs::write(&s.config, config).expect("write");
    let received = subscribe(plain_port, "edgefn/dev-a/up/#");
    let data = tempfile::tempdir().expect("agent");
    let agent = AgentProc::start(&s.config, data.path(), &[]);
    wait_until(30, "dev-a converges", || converged(&s));
    produce(&agent, 0, 20);
    check_all_in_order(&received, 20);

    // Without the CA, the broker's certificate is not trusted: nothing goes up.
    drop(agent);
    let untrusting = std::fs::read_to_string(&s.config)
        .expect("read")
        .lines()
        .filter(|l| !l.starts_with("mqttCa:"))
        .collect::<Vec<_>>()
        .join("\n");
    std::fs::write(&s.config, untrusting + "\n").expect("write");
    let data = tempfile::tempdir().expect("agent");
    let agent = AgentProc::start(&s.config, data.path(), &[]);
    wait_until(30, "dev-a converges again", || converged(&s));
    produce(&agent, 100, 5);
    pause(3000);
    let late = received
        .lock()
        .expect("lock")
        .iter()
        .filter(|(_, t, _)| t.ends_with("/alerts/100"))
        .count();
    assert_eq!(
        late, 0,
        "a broker with an untrusted certificate gets nothing"
    );
    let _ = broker.kill();
    let _ = broker.wait();
}

/// Messages received by a local client: (topic, payload).
type LocalInbox = Arc<Mutex<Vec<(String, String)>>>;

/// A client of the agent's local MQTT listener, speaking MQTT 5, subscribed to `filters`;
/// returns its client and what it receives.
async fn local_v5_client(
    addr: &str,
    id: &str,
    password: &str,
    filters: &[&str],
) -> (AsyncClient, LocalInbox) {
    let (host, port) = addr.rsplit_once(':').expect("host:port");
    let mut opts = MqttOptions::new(id, host, port.parse().expect("port"));
    opts.set_credentials("sensor", password);
    let (client, mut events) = AsyncClient::new(opts, 100);
    for f in filters {
        client
            .subscribe(*f, QoS::AtLeastOnce)
            .await
            .expect("subscribe");
    }
    let inbox: LocalInbox = Arc::default();
    let out = inbox.clone();
    let (acked_tx, mut acked_rx) = tokio::sync::mpsc::unbounded_channel();
    tokio::spawn(async move {
        loop {
            match events.poll().await {
                Ok(Event::Incoming(Packet::SubAck(a))) => {
                    let _ = acked_tx.send(a.return_codes);
                }
                Ok(Event::Incoming(Packet::Publish(p))) => out.lock().expect("lock").push((
                    String::from_utf8_lossy(&p.topic).into_owned(),
                    String::from_utf8_lossy(&p.payload).into_owned(),
                )),
                Ok(_) => {}
                Err(_) => break,
            }
        }
    });
    for _ in filters {
        let codes = tokio::time::timeout(Duration::from_secs(10), acked_rx.recv())
            .await
            .expect("SUBACK in time")
            .expect("SUBACK");
        assert!(
            codes.iter().all(|c| matches!(
                c,
                rumqttc::v5::mqttbytes::v5::SubscribeReasonCode::Success(_)
            )),
            "{codes:?}"
        );
    }
    (client, inbox)
}

async fn wait_for(inbox: &LocalInbox, what: &str, cond: impl Fn(&[(String, String)]) -> bool) {
    for _ in 0..100 {
        if cond(&inbox.lock().expect("lock")) {
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("{what}: got {:?}", inbox.lock().expect("lock"));
}

#[test]
fn local_programs_use_the_bus_through_the_devices_own_mqtt_listener() {
    let broker_dir = tempfile::tempdir().expect("broker");
    let broker = Mosquitto::start(broker_dir.path(), None);
    let s = setup(broker.port);
    let mut text = std::fs::read_to_string(&s.config).expect("read");
    text.push_str("localMqttPassword: local-secret\n");
    std::fs::write(&s.config, text).expect("write");
    let up = subscribe(broker.port, "edgefn/+/up/#");
    let data = tempfile::tempdir().expect("agent");
    let agent = AgentProc::start(&s.config, data.path(), &[]);
    let local = agent
        .mqtt
        .clone()
        .expect("the agent prints its local MQTT address");
    assert!(local.starts_with("127.0.0.1:"), "loopback: {local}");
    wait_until(30, "dev-a converges", || converged(&s));

    let rt = tokio::runtime::Runtime::new().expect("rt");
    rt.block_on(async {
        // A program that watches alerts and commands (MQTT 5), and a sensor (MQTT 3.1.1).
        let (_watcher, seen) = local_v5_client(
            &local,
            "watcher",
            "local-secret",
            &["alerts/#", "commands/#"],
        )
        .await;
        let (host, port) = local.rsplit_once(':').expect("host:port");
        let mut opts = rumqttc::MqttOptions::new("sensor-1", host, port.parse().expect("port"));
        opts.set_credentials("sensor", "local-secret");
        let (sensor, mut sensor_events) = rumqttc::AsyncClient::new(opts, 100);
        let (acks_tx, mut acks) = tokio::sync::mpsc::unbounded_channel();
        tokio::spawn(async move {
            while let Ok(ev) = sensor_events.poll().await {
                if let rumqttc::Event::Incoming(p) = ev {
                    let _ = acks_tx.send(p);
                }
            }
        });

        // The sensor triggers the function: its output reaches the local watcher and, by the
        // route, the cloud.
        sensor
            .publish(
                "commands/greet",
                rumqttc::QoS::AtLeastOnce,
                false,
                br#"{"name":"Lin"}"#.to_vec(),
            )
            .await
            .expect("publish");
        wait_for(&seen, "the function's output on the local bus", |m| {
            m.iter()
                .any(|(t, p)| t == "alerts/greeting" && p.contains("Hello, Lin!"))
        })
        .await;
        // What the sensor published reached the watcher once, through the broker (not twice).
        wait_for(&seen, "the sensor's own message", |m| {
            m.iter().filter(|(t, _)| t == "commands/greet").count() == 1
        })
        .await;
        // A sensor message routed up goes to the cloud as it is.
        sensor
            .publish(
                "alerts/temperature",
                rumqttc::QoS::AtLeastOnce,
                false,
                b"41.5".to_vec(),
            )
            .await
            .expect("publish");
        // A message from the cloud, brought down by the route, is on the local bus too.
        let cloud_port = broker.port;
        tokio::task::spawn_blocking(move || {
            cloud_publish(
                cloud_port,
                "edgefn/dev-a/down/commands/greet",
                br#"{"name":"Ada"}"#,
            );
        })
        .await
        .expect("publish from the cloud");
        wait_for(&seen, "the cloud's message and its answer", |m| {
            m.iter()
                .any(|(t, p)| t == "commands/greet" && p.contains("Ada"))
                && m.iter()
                    .any(|(t, p)| t == "alerts/greeting" && p.contains("Hello, Ada!"))
        })
        .await;
        let got = seen.lock().expect("lock").clone();
        assert_eq!(
            got.iter()
                .filter(|(t, _)| t == "alerts/temperature")
                .count(),
            1,
            "{got:?}"
        );

        // `$` topics are reserved: the subscription is refused.
        sensor
            .subscribe("$SYS/#", rumqttc::QoS::AtLeastOnce)
            .await
            .expect("subscribe");
        let refused = loop {
            match tokio::time::timeout(Duration::from_secs(10), acks.recv()).await {
                Ok(Some(rumqttc::Packet::SubAck(a))) => break a.return_codes,
                Ok(Some(_)) => {}
                other => panic!("no SUBACK: {other:?}"),
            }
        };
        assert_eq!(refused, vec![rumqttc::SubscribeReasonCode::Failure]);

        // Without the password, no connection.
        let mut opts = rumqttc::MqttOptions::new("intruder", host, port.parse().expect("port"));
        opts.set_credentials("sensor", "guess");
        let (_c, mut ev) = rumqttc::AsyncClient::new(opts, 10);
        let refused = loop {
            match tokio::time::timeout(Duration::from_secs(10), ev.poll()).await {
                Ok(Err(rumqttc::ConnectionError::ConnectionRefused(code))) => break code,
                Ok(Ok(rumqttc::Event::Incoming(rumqttc::Packet::ConnAck(a)))) => {
                    panic!("connected without the password: {a:?}")
                }
                Ok(_) => {}
                Err(_) => panic!("no answer to CONNECT"),
            }
        };
        assert_eq!(refused, rumqttc::ConnectReturnCode::BadUserNamePassword);
    });

    // In the cloud: both outputs of the function and the sensor's reading, once each.
    wait_until(10, "the cloud receives the local messages", || {
        let got = up.lock().expect("lock");
        got.iter()
            .any(|(_, t, p)| t == "edgefn/dev-a/up/alerts/temperature" && p == b"41.5")
            && got
                .iter()
                .filter(|(_, t, _)| t == "edgefn/dev-a/up/alerts/greeting")
                .count()
                == 2
    });
    let _ = s.project;
}

#[test]
fn what_the_local_listener_acknowledged_survives_an_agent_sigkill() {
    let broker_dir = tempfile::tempdir().expect("broker");
    let broker = Mosquitto::start(broker_dir.path(), None);
    let s = setup(broker.port);
    let received = subscribe(broker.port, "edgefn/dev-a/up/#");
    let data = tempfile::tempdir().expect("agent");
    let agent = AgentProc::start(&s.config, data.path(), &[]);
    wait_until(30, "dev-a converges", || converged(&s));
    let local = agent.mqtt.clone().expect("local MQTT");

    // The cloud's broker is down; a local program publishes 500 messages with QoS 1 and
    // waits for every PUBACK; the agent is SIGKILLed right after the last one.
    let (dir, port) = (broker.dir.clone(), broker.stop());
    const N: u64 = 500;
    let rt = tokio::runtime::Runtime::new().expect("rt");
    rt.block_on(async {
        let (host, p) = local.rsplit_once(':').expect("host:port");
        let opts = rumqttc::MqttOptions::new("sensor", host, p.parse().expect("port"));
        let (client, mut events) = rumqttc::AsyncClient::new(opts, 1000);
        for i in 0..N {
            client
                .publish(
                    format!("alerts/{i}"),
                    rumqttc::QoS::AtLeastOnce,
                    false,
                    format!("{{\"seq\":{i}}}").into_bytes(),
                )
                .await
                .expect("publish");
        }
        let mut acked = 0;
        while acked < N {
            match tokio::time::timeout(Duration::from_secs(20), events.poll()).await {
                Ok(Ok(rumqttc::Event::Incoming(rumqttc::Packet::PubAck(_)))) => acked += 1,
                Ok(Ok(_)) => {}
                other => panic!("after {acked} PUBACKs: {other:?}"),
            }
        }
    });
    agent.kill();

    // Back up: the restarted agent sends every acknowledged message, in order.
    let _broker = Mosquitto::start(&dir, Some(port));
    let _agent = AgentProc::start(&s.config, data.path(), &[]);
    check_all_in_order(&received, N);
}

/// `edgefn subscribe FILTER --json` in the background, once it is subscribed: each message it
/// prints, parsed, on the returned channel.
fn cli_subscribe(
    env: &[(&str, &str)],
    filter: &str,
) -> (
    std::process::Child,
    std::sync::mpsc::Receiver<serde_json::Value>,
    tempfile::TempDir,
) {
    use std::io::BufRead;
    let home = tempfile::tempdir().expect("home");
    let mut sub = Command::new(env!("CARGO_BIN_EXE_edgefn"))
        .args(["subscribe", filter, "--json"])
        .env_clear()
        .env("HOME", home.path())
        .envs(env.iter().copied())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("subscribe");
    let mut err = std::io::BufReader::new(sub.stderr.take().expect("stderr"));
    let mut line = String::new();
    while !line.contains("subscribed to") {
        line.clear();
        assert!(
            err.read_line(&mut line).expect("read") > 0,
            "subscribe exited early"
        );
    }
    let stdout = sub.stdout.take().expect("stdout");
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in std::io::BufReader::new(stdout)
            .lines()
            .map_while(Result::ok)
        {
            if let Ok(v) = serde_json::from_str(&line) {
                let _ = tx.send(v);
            }
        }
    });
    (sub, rx, home)
}

/// The next message `edgefn subscribe` printed, within `secs`.
fn next_message(rx: &std::sync::mpsc::Receiver<serde_json::Value>, secs: u64) -> serde_json::Value {
    rx.recv_timeout(Duration::from_secs(secs))
        .expect("a message reaches the cloud")
}

/// A cloud with its embedded broker, device `dev-a` set up for it, with `extra` lines in the
/// agent's configuration.
fn embedded_setup(extra: &str) -> Setup {
    let cloud_data = tempfile::tempdir().expect("data");
    let (cloud, mqtt) = Cloud::start_with(cloud_data.path(), &["--mqtt-listen", "127.0.0.1:0"]);
    let mqtt = mqtt.expect("the embedded broker listens");
    let s = setup_with(cloud_data, cloud, Some(&format!("mqtt://{mqtt}")), None);
    let mut text = std::fs::read_to_string(&s.config).expect("read");
    text.push_str(extra);
    std::fs::write(&s.config, text).expect("write");
    s
}

/// Posts `body` on `topic` to the agent's local endpoint.
fn local_post(agent: &AgentProc, topic: &str, wait: bool, body: &[u8]) -> Response {
    http(
        &agent.local,
        "POST",
        &format!(
            "/v1/publish?topic={topic}{}",
            if wait { "&wait=true" } else { "" }
        ),
        None,
        &[],
        body,
    )
}

/// Posts small messages on `alerts/ready` until the cloud sees one: the agent's link is up.
fn until_the_link_is_up(agent: &AgentProc, rx: &std::sync::mpsc::Receiver<serde_json::Value>) {
    for _ in 0..100 {
        assert_eq!(local_post(agent, "alerts/ready", false, b"1").status, 202);
        if let Ok(m) = rx.recv_timeout(Duration::from_millis(300)) {
            assert_eq!(m["topic"], "alerts/ready", "{m}");
            while rx.recv_timeout(Duration::from_millis(300)).is_ok() {}
            return;
        }
    }
    panic!("the agent's link to the broker never came up");
}

fn device_report(s: &Setup) -> serde_json::Value {
    let st = http(
        &s.cloud.addr(),
        "GET",
        "/v1/status",
        Some(&s.cloud.admin),
        &[],
        b"",
    )
    .json();
    st["devices"]
        .as_array()
        .and_then(|d| d.iter().find(|d| d["name"] == "dev-a").cloned())
        .unwrap_or_default()["report"]
        .clone()
}

/// A regression: one message larger than the broker takes, queued for the cloud, broke the
/// link at each attempt to send it, for ever, and nothing behind it went up. Now every entry
/// point refuses it: the local endpoint with 413, a function's publish by failing the
/// invocation, the local MQTT listener with DISCONNECT 0x95 (MQTT 5) or by closing the
/// connection (MQTT 3.1.1); and the messages after it flow.
#[test]
fn a_message_too_large_for_the_cloud_is_refused_where_it_enters() {
    // The configured limit (64 KiB) is below what the embedded broker announces (1 MiB+).
    let s = embedded_setup("mqttMaxPacketSize: 64Ki\n");
    let env = s.cloud.env();
    let env = cli_env(&env, None);
    let (_sub, rx, _home) = cli_subscribe(&env, "alerts/#");
    let data = tempfile::tempdir().expect("agent");
    let agent = AgentProc::start(&s.config, data.path(), &[]);
    wait_until(30, "dev-a converges", || converged(&s));
    until_the_link_is_up(&agent, &rx);
    let big = vec![b'x'; 100 << 10];

    // The local endpoint: 413, in both modes, saying what is wrong.
    for wait in [false, true] {
        let r = local_post(&agent, "alerts/big", wait, &big);
        assert_eq!(r.status, 413, "{}", text(&r.body));
        let e = r.json()["error"].as_str().unwrap_or_default().to_owned();
        assert!(
            e.contains("`alerts/big` is too large for the cloud")
                && e.contains("65536")
                && e.contains("mqttMaxPacketSize"),
            "{e}"
        );
    }
    // A message not routed to the cloud is not limited by it.
    assert_eq!(local_post(&agent, "local/big", false, &big).status, 202);

    // A function whose output is too large: its invocation fails, clearly; nothing is sent.
    let name = "n".repeat(100 << 10);
    let r = local_post(
        &agent,
        "commands/greet",
        true,
        serde_json::json!({ "name": name }).to_string().as_bytes(),
    );
    assert_eq!(r.status, 200, "{}", text(&r.body));
    let d = r.json()["deliveries"][0].clone();
    let e = d["error"].as_str().unwrap_or_default();
    assert!(
        e.contains("MessageTooLarge") && e.contains("`alerts/greeting` is too large"),
        "{d}"
    );

    // The local MQTT listener: MQTT 5 is told (DISCONNECT 0x95, with the reason); MQTT 3.1.1,
    // which cannot be, is disconnected.
    let local = agent.mqtt.clone().expect("local MQTT");
    let (host, port) = local.rsplit_once(':').expect("host:port");
    let port: u16 = port.parse().expect("port");
    let rt = tokio::runtime::Runtime::new().expect("rt");
    rt.block_on(async {
        let opts = MqttOptions::new("big-v5", host, port);
        let (client, mut events) = AsyncClient::new(opts, 10);
        client
            .publish("alerts/big", QoS::AtLeastOnce, false, big.clone())
            .await
            .expect("publish");
        let refused = loop {
            match tokio::time::timeout(Duration::from_secs(10), events.poll()).await {
                Ok(Err(rumqttc::v5::ConnectionError::MqttState(
                    rumqttc::v5::StateError::ServerDisconnect {
                        reason_code,
                        reason_string,
                    },
                ))) => break (reason_code, reason_string.unwrap_or_default()),
                Ok(Ok(Event::Incoming(Packet::PubAck(a)))) => panic!("accepted: {a:?}"),
                Ok(Ok(_)) => {}
                other => panic!("no DISCONNECT: {other:?}"),
            }
        };
        assert_eq!(
            refused.0,
            rumqttc::v5::mqttbytes::v5::DisconnectReasonCode::PacketTooLarge
        );
        assert!(
            refused.1.contains("too large for the cloud"),
            "{}",
            refused.1
        );

        let mut opts = rumqttc::MqttOptions::new("big-v4", host, port);
        opts.set_max_packet_size(1 << 20, 1 << 20);
        let (client, mut events) = rumqttc::AsyncClient::new(opts, 10);
        client
            .publish("alerts/big", rumqttc::QoS::AtLeastOnce, false, big.clone())
            .await
            .expect("publish");
        loop {
            match tokio::time::timeout(Duration::from_secs(10), events.poll()).await {
                Ok(Err(_)) => break,
                Ok(Ok(rumqttc::Event::Incoming(rumqttc::Packet::PubAck(a)))) => {
                    panic!("accepted: {a:?}")
                }
                Ok(Ok(_)) => {}
                Err(_) => panic!("still connected"),
            }
        }
    });

    // What comes after goes up, and nothing too large did.
    for i in 0..3 {
        assert_eq!(
            local_post(&agent, &format!("alerts/after/{i}"), false, b"1").status,
            202
        );
    }
    for i in 0..3 {
        let m = next_message(&rx, 30);
        assert_eq!(m["topic"], format!("alerts/after/{i}"), "{m}");
    }
    let o = &device_report(&s)["outbox"];
    assert_eq!(
        o["rejected"], 0,
        "refused at the door, nothing set aside: {o}"
    );
}

/// Pushes messages into the outbox at `data`, as an older agent did.
fn older_agent_queued(data: &Path, messages: Vec<(String, Vec<u8>)>) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("rt");
    rt.block_on(async {
        let o = edgefn_agent::outbox::Outbox::open(
            &data.join("outbox.redb"),
            edgefn_agent::outbox::OutboxLimits::default(),
        )
        .expect("outbox");
        o.push(messages).await.expect("push");
        o.close().await;
    });
}

/// A message already in the outbox that the broker cannot take (an older agent queued it) is
/// set aside and counted, in the device's status and the cloud's /metrics, and the messages
/// behind it flow, also after a restart. The limit is the one the broker announced in CONNACK
/// (the configured one is larger), which the entry points then use too.
#[test]
fn a_queued_message_the_broker_cannot_take_is_set_aside_and_the_rest_flow() {
    let s = embedded_setup("mqttMaxPacketSize: 8Mi\n");
    let env = s.cloud.env();
    let env = cli_env(&env, None);
    let (_sub, rx, _home) = cli_subscribe(&env, "alerts/#");
    let data = tempfile::tempdir().expect("agent");
    let big = vec![b'x'; 2_000_000];
    older_agent_queued(
        data.path(),
        vec![
            ("alerts/big".into(), big.clone()),
            ("alerts/small/1".into(), b"1".to_vec()),
            ("alerts/small/2".into(), b"2".to_vec()),
        ],
    );
    let agent = AgentProc::start(&s.config, data.path(), &[]);
    for i in 1..=2 {
        let m = next_message(&rx, 30);
        assert_eq!(m["topic"], format!("alerts/small/{i}"), "{m}");
    }
    wait_until(30, "the device reports one message set aside", || {
        let o = device_report(&s)["outbox"].clone();
        o["rejected"] == 1 && o["pending"] == 0
    });
    let metrics = text(
        &http(
            &s.cloud.addr(),
            "GET",
            "/metrics",
            Some(&s.cloud.admin),
            &[],
            b"",
        )
        .body,
    );
    assert!(
        metrics.contains("\nedgefn_outbox_rejected 1\n"),
        "{metrics}"
    );
    // The limit the broker announced applies at the door too.
    let r = local_post(&agent, "alerts/big", false, &big[..1_500_000]);
    assert_eq!(r.status, 413, "{}", text(&r.body));
    let e = r.json()["error"].as_str().unwrap_or_default().to_owned();
    assert!(
        e.contains("Maximum Packet Size") && e.contains("1114112"),
        "{e}"
    );

    // Again after a restart: nothing is stuck, the count goes on.
    agent.kill();
    older_agent_queued(
        data.path(),
        vec![
            ("alerts/big".into(), big),
            ("alerts/small/3".into(), b"3".to_vec()),
        ],
    );
    let _agent = AgentProc::start(&s.config, data.path(), &[]);
    let m = next_message(&rx, 30);
    assert_eq!(m["topic"], "alerts/small/3", "{m}");
    wait_until(30, "the device reports two messages set aside", || {
        device_report(&s)["outbox"]["rejected"] == 2
    });
}

/// With Mosquitto's `max_packet_size` set: MQTT 5 learns the limit from its CONNACK (below the
/// configured one), sets aside the queued message over it and refuses the next at the door;
/// MQTT 3.1.1, which is told nothing, finds the message the broker closes the connection on
/// and sets it aside. Either way the messages behind it flow, and it is counted.
#[test]
fn with_mosquittos_max_packet_size_the_messages_behind_a_too_large_one_flow() {
    for (protocol, learned) in [("5", true), ("3.1.1", false)] {
        let broker_dir = tempfile::tempdir().expect("broker");
        let broker = Mosquitto::start_with(broker_dir.path(), None, "max_packet_size 65536\n");
        let s = setup(broker.port);
        let mut config = std::fs::read_to_string(&s.config).expect("read");
        config.push_str(&format!("mqttProtocol: \"{protocol}\"\n"));
        std::fs::write(&s.config, config).expect("write");
        let up = subscribe(broker.port, "edgefn/dev-a/up/#");
        let data = tempfile::tempdir().expect("agent");
        let big = vec![b'x'; 100 << 10];
        older_agent_queued(
            data.path(),
            vec![
                ("alerts/small/0".into(), b"0".to_vec()),
                ("alerts/big".into(), big.clone()),
                ("alerts/small/1".into(), b"1".to_vec()),
                ("alerts/small/2".into(), b"2".to_vec()),
            ],
        );
        let agent = AgentProc::start(&s.config, data.path(), &[]);
        wait_until(30, "dev-a converges", || converged(&s));
        wait_until(60, "the messages behind the large one arrive", || {
            up.lock()
                .expect("lock")
                .iter()
                .any(|(_, t, _)| t == "edgefn/dev-a/up/alerts/small/2")
        });
        let got: Vec<String> = up
            .lock()
            .expect("lock")
            .iter()
            .map(|(_, t, _)| t.clone())
            .collect();
        let mut seen = got.clone();
        seen.dedup();
        assert_eq!(
            seen,
            [0, 1, 2].map(|i| format!("edgefn/dev-a/up/alerts/small/{i}")),
            "MQTT {protocol}: in order, the large one not among them"
        );
        wait_until(30, "the device reports the message set aside", || {
            device_report(&s)["outbox"]["rejected"] == 1
        });
        let r = local_post(&agent, "alerts/big", false, &big);
        if learned {
            assert_eq!(r.status, 413, "{}", text(&r.body));
            let e = r.json()["error"].as_str().unwrap_or_default().to_owned();
            assert!(
                e.contains("65536") && e.contains("Maximum Packet Size"),
                "{e}"
            );
        } else {
            // Nothing told the agent: the message is queued, and set aside in its turn.
            assert_eq!(r.status, 202, "{}", text(&r.body));
            assert_eq!(
                local_post(&agent, "alerts/small/3", false, b"3").status,
                202
            );
            wait_until(60, "the next message arrives", || {
                up.lock()
                    .expect("lock")
                    .iter()
                    .any(|(_, t, _)| t == "edgefn/dev-a/up/alerts/small/3")
            });
            wait_until(30, "the device reports two set aside", || {
                device_report(&s)["outbox"]["rejected"] == 2
            });
        }
    }
}

/// The agent says when its MQTT link fails (at its default log level, once, not at every retry)
/// and when it recovers; `edgefn status` and `/metrics` show the link; a change reaches the
/// cloud within seconds, not a whole `reportInterval` later.
#[test]
fn a_failing_mqtt_link_is_said_once_shown_in_status_and_its_recovery_too() {
    let port = server_port();
    let s = setup(port);
    // A long report interval: only a change makes the agent report within the test's waits.
    let config = std::fs::read_to_string(&s.config)
        .expect("read")
        .replace("reportInterval: 1s\n", "reportInterval: 300s\n");
    std::fs::write(&s.config, config).expect("write");
    let data = tempfile::tempdir().expect("agent");
    let mut agent = Command::new(sibling_bin("edgefn-agent"))
        .args(["--config", s.config.to_str().expect("utf8")])
        .args(["--data", data.path().to_str().expect("utf8")])
        .args([
            "--sandbox",
            "process",
            "--local-listen",
            "127.0.0.1:0",
            "--local-mqtt",
            "none",
        ])
        .env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("agent");
    let log: Arc<Mutex<Vec<String>>> = Arc::default();
    let sink = log.clone();
    let stderr = agent.stderr.take().expect("stderr");
    std::thread::spawn(move || {
        for l in std::io::BufRead::lines(std::io::BufReader::new(stderr)).map_while(Result::ok) {
            sink.lock().expect("lock").push(l);
        }
    });
    let count = |needle: &str| {
        log.lock()
            .expect("lock")
            .iter()
            .filter(|l| l.contains(needle))
            .count()
    };
    let broker = format!("127.0.0.1:{port}");
    wait_until(30, "the failure is said", || {
        count(&format!("cannot reach the cloud's broker at {broker}")) == 1
    });
    wait_until(30, "dev-a converges", || converged(&s));
    let env = s.cloud.env();
    let env = cli_env(&env, None);
    wait_until(10, "status shows the link down", || {
        let out = ok(&edgefn_env(s.project.path(), &["status", "dev-a"], &env));
        out.contains(&format!("link to {broker}: DOWN since")) && out.contains("MQTT link down")
    });
    let metrics = http(
        &s.cloud.addr(),
        "GET",
        "/metrics",
        Some(&s.cloud.admin),
        &[],
        b"",
    );
    assert!(
        text(&metrics.body).contains("edgefn_devices_link_down 1"),
        "{}",
        text(&metrics.body)
    );
    pause(3000);
    assert_eq!(
        count("cannot reach the cloud's broker"),
        1,
        "said once, not at every retry: {:?}",
        log.lock()
    );

    // The broker comes up: the recovery is said, and reported within seconds.
    let dir = tempfile::tempdir().expect("mosquitto");
    let _mosquitto = Mosquitto::start(dir.path(), Some(port));
    wait_until(30, "the recovery is said", || {
        count(&format!(
            "connected to the cloud's broker at {broker} after"
        )) == 1
    });
    wait_until(10, "status shows the link up", || {
        let out = ok(&edgefn_env(s.project.path(), &["status", "dev-a"], &env));
        out.contains(&format!("link to {broker}: up since")) && !out.contains("MQTT link down")
    });
    let _ = agent.kill();
    let _ = agent.wait();
}

/// A function that prints 5,000 lines at once: `edgefn logs --follow` gets them all, or the newest
/// with a marker counting exactly those dropped (`… N lines dropped …`) — never a silent gap.
#[test]
fn a_burst_of_log_lines_arrives_whole_or_with_its_gap_counted() {
    let s = embedded_setup("");
    let dir = s.project.path();
    std::fs::write(
        dir.join("functions/greeter/index.js"),
        "exports.handler = async () => {\n  for (let i = 0; i < 5000; i++) console.log('burst ' + i);\n  return 1;\n};\n",
    )
    .expect("write");
    git(dir, &["commit", "-qam", "burst"]);
    let env = s.cloud.env();
    let env = cli_env(&env, None);
    ok(&edgefn_env(dir, &["apply"], &env));
    let data = tempfile::tempdir().expect("agent");
    let agent = AgentProc::start(&s.config, data.path(), &[]);
    wait_until(30, "dev-a converges", || converged(&s));
    let (_sub, rx, _sub_home) = cli_subscribe(&env, "alerts/#");
    until_the_link_is_up(&agent, &rx);

    let home = tempfile::tempdir().expect("home");
    let mut follow = Command::new(env!("CARGO_BIN_EXE_edgefn"))
        .args(["logs", "dev-a", "greeter", "--follow", "--tail", "0"])
        .env_clear()
        .env("HOME", home.path())
        .envs(env.iter().copied())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("logs --follow");
    let lines: Arc<Mutex<Vec<String>>> = Arc::default();
    let sink = lines.clone();
    let stdout = follow.stdout.take().expect("stdout");
    std::thread::spawn(move || {
        for l in std::io::BufRead::lines(std::io::BufReader::new(stdout)).map_while(Result::ok) {
            sink.lock().expect("lock").push(l);
        }
    });
    pause(1000);
    assert_eq!(
        local_post(&agent, "commands/greet", true, b"{}").status,
        200
    );
    wait_until(60, "the last line arrives", || {
        lines
            .lock()
            .expect("lock")
            .iter()
            .any(|l| l.ends_with("greeter stdout: burst 4999"))
    });
    pause(500);
    let got = lines.lock().expect("lock").clone();
    let mut seen = 0u64;
    let mut dropped = 0u64;
    let mut last: Option<u64> = None;
    for l in &got {
        if let Some(n) = l.split("burst ").nth(1).and_then(|n| n.parse::<u64>().ok()) {
            assert!(last.is_none_or(|p| n > p), "in order: {n} after {last:?}");
            last = Some(n);
            seen += 1;
        } else if let Some(n) = l
            .split("… ")
            .nth(1)
            .and_then(|r| r.split(" lines dropped").next())
            .and_then(|n| n.parse::<u64>().ok())
        {
            dropped += n;
        }
    }
    assert_eq!(
        seen + dropped,
        5000,
        "every line arrived or was counted: {seen} arrived, {dropped} counted as dropped"
    );
    let _ = follow.kill();
    let _ = follow.wait();
}

/// Commands sent down to one device reach its function in the order they were sent: one
/// consumer of the downlink, bounded, never a task per message that could overtake another.
/// 1,000 numbered commands go through the cloud's `POST /v1/publish` and the embedded broker;
/// the greeter answers each in turn, and its answers reach the cloud in the same order.
#[test]
fn downlink_keeps_order() {
    const N: usize = 1000;
    let s = embedded_setup("");
    let data = tempfile::tempdir().expect("agent");
    let agent = AgentProc::start(&s.config, data.path(), &[]);
    wait_until(30, "dev-a converges", || converged(&s));
    let env = s.cloud.env();
    let env = cli_env(&env, None);
    let (mut sub, rx, _home) = cli_subscribe(&env, "alerts/#");
    until_the_link_is_up(&agent, &rx);
    for i in 0..N {
        let body = serde_json::json!({
            "devices": ["dev-a"],
            "topic": "commands/greet",
            "payload": {"name": i.to_string()},
        });
        let r = http(
            &s.cloud.addr(),
            "POST",
            "/v1/publish",
            Some(&s.cloud.admin),
            &[("Content-Type", "application/json")],
            body.to_string().as_bytes(),
        );
        assert_eq!(r.status, 200, "{}", text(&r.body));
    }
    let got: Vec<String> = (0..N)
        .map(|_| {
            let m = next_message(&rx, 60);
            assert_eq!(m["topic"], "alerts/greeting", "{m}");
            m["payload"]["greeting"]
                .as_str()
                .unwrap_or_default()
                .to_owned()
        })
        .collect();
    let want: Vec<String> = (0..N).map(|i| format!("Hello, {i}!")).collect();
    let _ = sub.kill();
    let _ = sub.wait();
    assert_eq!(
        got, want,
        "the function saw the commands in the order they were sent"
    );
}

/// Cloud → device order: 1,000 numbered commands sent one after another with `POST
/// /v1/publish` to one device reach a program on the device's local bus in the order they were
/// sent, each once. Nothing on the way (the cloud's handler, the embedded broker, the agent's
/// link and its local bus) may let one command overtake another.
#[test]
fn a_thousand_commands_from_the_cloud_reach_the_device_in_order() {
    const N: u64 = 1000;
    let s = embedded_setup("localMqttPassword: local-secret\n");
    let data = tempfile::tempdir().expect("agent");
    let agent = AgentProc::start(&s.config, data.path(), &[]);
    wait_until(30, "dev-a converges", || converged(&s));
    let local = agent.mqtt.clone().expect("local MQTT");
    let addr = s.cloud.addr();
    let admin = s.cloud.admin.clone();
    let publish = move |topic: &str, payload: serde_json::Value| {
        let body = serde_json::json!({ "devices": ["dev-a"], "topic": topic, "payload": payload });
        let r = http(
            &addr,
            "POST",
            "/v1/publish",
            Some(&admin),
            &[("Content-Type", "application/json")],
            body.to_string().as_bytes(),
        );
        assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    };
    let rt = tokio::runtime::Runtime::new().expect("rt");
    rt.block_on(async {
        let (_watcher, seen) =
            local_v5_client(&local, "watcher", "local-secret", &["commands/#"]).await;
        // The agent's link to the broker comes up a moment after convergence: send a probe
        // until it arrives.
        let mut up = false;
        for _ in 0..100 {
            let p = publish.clone();
            tokio::task::spawn_blocking(move || p("commands/probe", serde_json::json!("probe")))
                .await
                .expect("probe");
            tokio::time::sleep(Duration::from_millis(200)).await;
            if seen
                .lock()
                .expect("lock")
                .iter()
                .any(|(t, _)| t == "commands/probe")
            {
                up = true;
                break;
            }
        }
        assert!(up, "the device's link to the broker never came up");
        let p = publish.clone();
        tokio::task::spawn_blocking(move || {
            for i in 0..N {
                p("commands/seq", serde_json::json!({ "n": i }));
            }
        })
        .await
        .expect("publish");
        wait_for(&seen, "every command on the local bus", |m| {
            m.iter().filter(|(t, _)| t == "commands/seq").count() as u64 >= N
        })
        .await;
        let got: Vec<u64> = seen
            .lock()
            .expect("lock")
            .iter()
            .filter(|(t, _)| t == "commands/seq")
            .map(|(_, p)| {
                serde_json::from_str::<serde_json::Value>(p).expect("json")["n"]
                    .as_u64()
                    .expect("n")
            })
            .collect();
        let expected: Vec<u64> = (0..N).collect();
        if got != expected {
            let first = got
                .iter()
                .zip(&expected)
                .position(|(a, b)| a != b)
                .unwrap_or(got.len().min(expected.len()));
            panic!(
                "{} commands arrived, out of order from position {first}: {:?}",
                got.len(),
                &got[first.saturating_sub(3)..(first + 10).min(got.len())]
            );
        }
    });
    let _ = s.project;
}

/// A python function for invocations on request: it writes log lines (one with markup and
/// quotes, which every reader must show as text), returns what it got, and fails on `"fail"`.
const SHOUT: &str = r#"import sys

def handle(event, context):
    payload = event["payload"]
    print("shout got " + repr(payload))
    print("<script>alert('x')</script> \"quoted\"", file=sys.stderr)
    if payload == "fail":
        raise ValueError("asked to fail")
    return {"heard": payload, "topic": event["topic"]}
"#;

/// A cloud with its embedded broker; device `dev-a` runs `shout` (triggered by `jobs/shout`)
/// and `dev-b` is registered too; the agent's configuration for `dev-a`.
fn invoke_setup() -> Setup {
    let cloud_data = tempfile::tempdir().expect("data");
    let (cloud, mqtt) = Cloud::start_with(cloud_data.path(), &["--mqtt-listen", "127.0.0.1:0"]);
    let mqtt = mqtt.expect("the embedded broker listens");
    let project = tempfile::tempdir().expect("project");
    let dir = project.path();
    std::fs::create_dir_all(dir.join("functions/shout")).expect("mkdir");
    std::fs::write(dir.join("functions/shout/main.py"), SHOUT).expect("write");
    std::fs::write(
        dir.join("edgefn.yaml"),
        "apiVersion: edgefn/v1\nproject: inv\nfunctions:\n  shout: { path: functions/shout, runtime: python3, handler: main.handle }\ndevices:\n  dev-a: {}\n  dev-b: {}\nbindings:\n  - function: shout\n    devices: { names: [dev-a] }\n    triggers: [ jobs/shout ]\n",
    )
    .expect("write");
    std::fs::write(dir.join(".gitignore"), "agent.yaml\nb.yaml\n").expect("write");
    git(dir, &["init", "-q"]);
    git(dir, &["add", "-A"]);
    git(dir, &["commit", "-q", "-m", "invoke"]);
    let env = cloud.env();
    let env = cli_env(&env, None);
    let config = dir.join("agent.yaml");
    ok(&edgefn_env(
        dir,
        &[
            "device",
            "add",
            "dev-a",
            "--out",
            config.to_str().expect("utf8"),
        ],
        &env,
    ));
    ok(&edgefn_env(
        dir,
        &[
            "device",
            "add",
            "dev-b",
            "--out",
            dir.join("b.yaml").to_str().expect("utf8"),
        ],
        &env,
    ));
    ok(&edgefn_env(dir, &["apply"], &env));
    let text = std::fs::read_to_string(&config).expect("read");
    let mut text = with_config(&text, &format!("mqtt: mqtt://{mqtt}\n"));
    text.push_str("healthWindow: 1s\npollWait: 5s\nreportInterval: 1s\n");
    std::fs::write(&config, text).expect("write");
    Setup {
        _cloud_data: cloud_data,
        cloud,
        project,
        config,
    }
}

/// `POST /v1/devices/{device}/invoke` with `body`.
fn invoke_http(s: &Setup, device: &str, token: &str, body: &serde_json::Value) -> Response {
    http(
        &s.cloud.addr(),
        "POST",
        &format!("/v1/devices/{device}/invoke"),
        Some(token),
        &[("Content-Type", "application/json")],
        body.to_string().as_bytes(),
    )
}

/// Invokes `shout` on dev-a until its link is up and it answers (a request sent before the
/// link subscribed is lost, by design, and times out).
fn until_it_answers(s: &Setup, payload: &str) -> serde_json::Value {
    for _ in 0..30 {
        let r = invoke_http(
            s,
            "dev-a",
            &s.cloud.admin,
            &serde_json::json!({"function": "shout", "payload": payload, "timeoutMs": 2000}),
        );
        if r.status == 200 {
            return r.json();
        }
        assert_eq!(r.status, 504, "{}", text(&r.body));
    }
    panic!("dev-a never answered an invocation");
}

/// The `shout` binding's invocation count in dev-a's last status report, and that report's
/// time.
fn shout_invocations(s: &Setup) -> (Option<u64>, u64) {
    let st = http(
        &s.cloud.addr(),
        "GET",
        "/v1/status",
        Some(&s.cloud.admin),
        &[],
        b"",
    )
    .json();
    let dev = st["devices"]
        .as_array()
        .and_then(|d| d.iter().find(|d| d["name"] == "dev-a").cloned())
        .unwrap_or_default();
    let count = dev["report"]["functions"].as_array().and_then(|f| {
        f.iter()
            .find(|f| f["binding"] == "shout")
            .and_then(|f| f["invocations"].as_u64())
    });
    (count, dev["lastSeenMs"].as_u64().unwrap_or(0))
}

/// Issue 15: the cloud → device request/response path. A function runs on the real device and
/// its answer comes back with the log lines it wrote (the CLI and the API); a function error,
/// a name the device does not run (422 with a suggestion), an unknown device (404), a device's
/// token (403), a bad timeout (400); and an offline device: 504 `device_timeout` within the
/// deadline, and when the device comes back the request has not run there.
#[test]
fn a_function_runs_on_the_device_on_request_and_an_offline_device_times_out_without_running_it_later()
 {
    let s = invoke_setup();
    let data = tempfile::tempdir().expect("agent");
    let agent = AgentProc::start(&s.config, data.path(), &[]);
    wait_until(60, "dev-a converges", || converged(&s));
    let answer = until_it_answers(&s, "warm-up");
    assert_eq!(answer["binding"], "shout");
    assert_eq!(answer["function"], "shout");
    assert!(answer.get("error").is_none(), "{answer}");
    assert_eq!(answer["result"]["heard"], "warm-up");
    assert_eq!(answer["result"]["topic"], "invoke");
    let logs: Vec<&str> = answer["logs"]
        .as_array()
        .expect("logs")
        .iter()
        .filter_map(|l| l["line"].as_str())
        .collect();
    assert!(logs.contains(&"shout got 'warm-up'"), "{answer}");
    assert!(
        logs.contains(&"<script>alert('x')</script> \"quoted\""),
        "{answer}"
    );

    // The CLI: the result on stdout, the logs on stderr, exit 0; a function error exits 1.
    let env = s.cloud.env();
    let env = cli_env(&env, None);
    let dir = s.project.path();
    let out = edgefn_env(
        dir,
        &[
            "invoke",
            "shout",
            "--device",
            "dev-a",
            "--event",
            "{\"celsius\": 45}",
            "--topic",
            "sensors/l1/temperature",
        ],
        &env,
    );
    let stdout = ok(&out);
    assert!(stdout.contains("\"celsius\": 45"), "{stdout}");
    assert!(stdout.contains("sensors/l1/temperature"), "{stdout}");
    let stderr = text(&out.stderr);
    assert!(
        stderr.contains("[stdout] shout got {'celsius': 45}"),
        "{stderr}"
    );
    assert!(
        stderr.contains("ran `shout` (function `shout`) on dev-a in"),
        "{stderr}"
    );
    let failed = edgefn_env(
        dir,
        &["invoke", "shout", "--device", "dev-a", "--event", "fail"],
        &env,
    );
    assert_eq!(failed.status.code(), Some(1));
    let stderr = text(&failed.stderr);
    assert!(
        stderr.contains("error: `shout` on dev-a failed: ValueError: asked to fail"),
        "{stderr}"
    );
    assert!(stderr.contains("[stdout] shout got 'fail'"), "{stderr}");

    // Names the device does not run, devices the cloud does not know, tokens that may not.
    let typo = edgefn_env(dir, &["invoke", "shuot", "--device", "dev-a"], &env);
    assert_eq!(typo.status.code(), Some(1));
    let stderr = text(&typo.stderr);
    assert!(
        stderr.contains("did you mean `shout`?") && stderr.contains("422"),
        "{stderr}"
    );
    let r = invoke_http(
        &s,
        "dev-b",
        &s.cloud.admin,
        &serde_json::json!({"function": "shout"}),
    );
    assert_eq!(r.status, 422, "{}", text(&r.body));
    assert_eq!(r.json()["error"]["code"], "not_invocable");
    assert!(
        text(&r.body).contains("it runs no triggered function"),
        "{}",
        text(&r.body)
    );
    let r = invoke_http(
        &s,
        "dev-z",
        &s.cloud.admin,
        &serde_json::json!({"function": "shout"}),
    );
    assert_eq!(r.status, 404, "{}", text(&r.body));
    assert_eq!(r.json()["error"]["code"], "unknown_device");
    let config = std::fs::read_to_string(&s.config).expect("config");
    let device_token = config
        .lines()
        .find_map(|l| l.strip_prefix("token:"))
        .map(|t| t.trim().trim_matches('"').to_owned())
        .expect("the agent's token");
    let r = invoke_http(
        &s,
        "dev-a",
        &device_token,
        &serde_json::json!({"function": "shout"}),
    );
    assert_eq!(
        r.status,
        403,
        "a device token cannot invoke: {}",
        text(&r.body)
    );
    let r = invoke_http(
        &s,
        "dev-a",
        &s.cloud.admin,
        &serde_json::json!({"function": "shout", "timeoutMs": 60001}),
    );
    assert_eq!(r.status, 400, "{}", text(&r.body));
    assert!(text(&r.body).contains("timeoutMs"), "{}", text(&r.body));
    let r = invoke_http(
        &s,
        "dev-a",
        &s.cloud.admin,
        &serde_json::json!({"function": "shout", "payload": "x".repeat(300 << 10)}),
    );
    assert_eq!(r.status, 413, "{}", text(&r.body));
    assert_eq!(r.json()["error"]["code"], "payload_too_large");
    let r = invoke_http(
        &s,
        "dev-a",
        &s.cloud.admin,
        &serde_json::json!({"function": "shout", "topic": "jobs/+"}),
    );
    assert_eq!(r.status, 400, "{}", text(&r.body));
    assert_eq!(r.json()["error"]["code"], "invalid_topic");

    // Offline: a clear timeout, within the deadline (and not long before it).
    agent.kill();
    let started = std::time::Instant::now();
    let r = invoke_http(
        &s,
        "dev-a",
        &s.cloud.admin,
        &serde_json::json!({"function": "shout", "payload": "while away", "timeoutMs": 1500}),
    );
    let waited = started.elapsed();
    assert_eq!(r.status, 504, "{}", text(&r.body));
    assert_eq!(r.json()["error"]["code"], "device_timeout");
    assert!(
        text(&r.body).contains("will not run later"),
        "{}",
        text(&r.body)
    );
    assert!(waited >= Duration::from_millis(1500), "{waited:?}");
    let out = edgefn_env(
        dir,
        &["invoke", "shout", "--device", "dev-a", "--timeout", "1s"],
        &env,
    );
    assert_eq!(out.status.code(), Some(1));
    let stderr = text(&out.stderr);
    assert!(
        stderr.contains("did not answer") && stderr.contains("edgefn status"),
        "{stderr}"
    );
    let metrics = text(
        &http(
            &s.cloud.addr(),
            "GET",
            "/metrics",
            Some(&s.cloud.admin),
            &[],
            b"",
        )
        .body,
    );
    assert!(
        metrics.contains("edgefn_invocations_waiting 0"),
        "nothing left pending: {metrics}"
    );

    // Back online: the request made while it was away never runs. Its persistent session
    // resumes first, so a kept request would arrive before the next one; after that one's
    // answer, a report newer than it counts exactly one invocation since the restart.
    let agent = AgentProc::start(&s.config, data.path(), &[]);
    let answer = until_it_answers(&s, "back");
    assert_eq!(answer["result"]["heard"], "back");
    let answered_at = edgefn_os::time::now_ms();
    let mut count = None;
    wait_until(30, "a status report after the answer", || {
        let (c, at) = shout_invocations(&s);
        count = c;
        at > answered_at + 1000
    });
    assert_eq!(
        count,
        Some(1),
        "only the invocation made after the device came back ran"
    );
    drop(agent);
}

/// A measurement, not a check: the round trip of 300 invocations on request, one after
/// another (HTTP request → cloud → embedded broker → agent → function → reply → answer; a new
/// HTTP connection each, as the CLI makes), and the time the device reports for each.
/// `cargo test -p edgefn --test uplink invoke_round_trip -- --ignored --nocapture`
#[test]
#[ignore = "a measurement: run it by name with --ignored --nocapture"]
#[allow(clippy::print_stderr)]
fn invoke_round_trip_latency() {
    let s = invoke_setup();
    let data = tempfile::tempdir().expect("agent");
    let _agent = AgentProc::start(&s.config, data.path(), &[]);
    wait_until(60, "dev-a converges", || converged(&s));
    until_it_answers(&s, "warm-up");
    let mut round = Vec::new();
    let mut device = Vec::new();
    for i in 0..300 {
        let started = std::time::Instant::now();
        let r = invoke_http(
            &s,
            "dev-a",
            &s.cloud.admin,
            &serde_json::json!({"function": "shout", "payload": i, "timeoutMs": 5000}),
        );
        round.push(started.elapsed().as_secs_f64() * 1000.0);
        assert_eq!(r.status, 200, "{}", text(&r.body));
        device.push(r.json()["durationMs"].as_f64().unwrap_or(0.0));
    }
    let pct = |v: &mut Vec<f64>, p: f64| {
        v.sort_by(f64::total_cmp);
        v[((v.len() as f64 - 1.0) * p).round() as usize]
    };
    eprintln!(
        "invoke round trip over {} calls: p50 {:.1} ms, p95 {:.1} ms, max {:.1} ms; on the device: p50 {:.1} ms, p95 {:.1} ms",
        round.len(),
        pct(&mut round, 0.5),
        pct(&mut round, 0.95),
        pct(&mut round, 1.0),
        pct(&mut device, 0.5),
        pct(&mut device, 0.95),
    );
}

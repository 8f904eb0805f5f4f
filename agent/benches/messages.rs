//! Messaging benchmark, against a real Mosquitto started here (it must be installed:
//! `apt-get install mosquitto`).
//!
//! ```sh
//! cargo bench -p edgefn-agent --bench messages
//! # the packaged static build instead of this build's binary:
//! EDGEFN_AGENT_BIN=target/x86_64-unknown-linux-musl/release/edgefn-agent cargo bench -p edgefn-agent --bench messages
//! ```
//!
//! - Drain rate: 20,000 messages queued in the outbox while the link was down, sent up once it
//!   connects (QoS 1, each removed from the outbox once acknowledged), against rumqttc publishing
//!   the same 20,000 messages QoS 1 straight to the same broker, in the same run. Reported as
//!   messages per second and as a ratio.
//! - End-to-end latency: the cloud publishes a command to a device; the agent brings it down
//!   through a route, a node function handles it and publishes an answer, which goes up through
//!   a route and the outbox to the cloud's subscriber. p50 and p99 of 300 round trips.
//! - The device's local MQTT listener: a local program publishes a command, the function's
//!   answer comes back to a local subscriber (p50, p99 of 300); and a local program publishes
//!   20,000 QoS 1 messages that a route sends to the cloud, each acknowledged once it is in the
//!   outbox on disk (messages per second, one connection and four).

#![allow(
    clippy::print_stdout,
    clippy::print_stderr,
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::disallowed_methods
)]

mod common;
use common::agent_bin;

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader};
use std::net::TcpListener;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use edgefn_agent::outbox::{Outbox, OutboxLimits};
use edgefn_agent::uplink::{self, BrokerAddr};
use rumqttc::v5::mqttbytes::QoS;
use rumqttc::v5::mqttbytes::v5::Packet;
use rumqttc::v5::{AsyncClient, Event, MqttOptions};

const N: usize = 20_000;

fn mosquitto(dir: &std::path::Path) -> (std::process::Child, u16) {
    let bin = ["/usr/sbin/mosquitto", "/usr/bin/mosquitto"]
        .into_iter()
        .map(PathBuf::from)
        .find(|p| p.is_file())
        .expect("install mosquitto");
    let port = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let conf = dir.join("mosquitto.conf");
    std::fs::write(&conf, format!("listener {port} 127.0.0.1\nuser root\nallow_anonymous true\nset_tcp_nodelay true\nmax_inflight_messages 1000\nmax_queued_messages 100000\nlog_dest none\n")).unwrap();
    let child = Command::new(bin)
        .args(["-c", conf.to_str().unwrap()])
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let t = Instant::now();
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(t.elapsed() < Duration::from_secs(10));
        std::thread::sleep(Duration::from_millis(20));
    }
    (child, port)
}

async fn raw_rate(port: u16) -> f64 {
    let mut opts = MqttOptions::new("bench-raw", "127.0.0.1", port);
    let mut net = rumqttc::NetworkOptions::new();
    net.set_tcp_nodelay(true);
    opts.set_network_options(net);
    let (client, mut events) = AsyncClient::new(opts, 1024);
    let counter = tokio::spawn(async move {
        let mut acks = 0;
        let mut start = None;
        loop {
            match events.poll().await.unwrap() {
                Event::Outgoing(rumqttc::Outgoing::Publish(_)) if start.is_none() => {
                    start = Some(Instant::now())
                }
                Event::Incoming(Packet::PubAck(_)) => {
                    acks += 1;
                    if acks == N {
                        return start.unwrap().elapsed();
                    }
                }
                _ => {}
            }
        }
    });
    for i in 0..N {
        client
            .publish(
                format!("edgefn/bench/up/alerts/{i}"),
                QoS::AtLeastOnce,
                false,
                vec![7u8; 100],
            )
            .await
            .unwrap();
    }
    let elapsed = counter.await.unwrap();
    N as f64 / elapsed.as_secs_f64()
}

async fn outbox_rate(port: u16, dir: &std::path::Path) -> f64 {
    let outbox = Outbox::open(&dir.join("outbox.redb"), OutboxLimits::default()).unwrap();
    for chunk in 0..N / 1000 {
        outbox
            .push(
                (0..1000)
                    .map(|i| (format!("alerts/{}", chunk * 1000 + i), vec![7u8; 100]))
                    .collect(),
            )
            .await
            .unwrap();
    }
    assert_eq!(outbox.stats().await.pending, N as u64);
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let (down_tx, _down_rx) = tokio::sync::mpsc::channel(1024);
    let logs = std::sync::Arc::new(uplink::LogQueue::new(1));
    let start = Instant::now();
    let link = tokio::spawn(uplink::run(
        BrokerAddr {
            host: "127.0.0.1".into(),
            port,
            tls: None,
        },
        uplink::Protocol::V5,
        "bench".into(),
        "t".into(),
        outbox.clone(),
        std::sync::Arc::new(uplink::PacketLimit::new(
            "bench",
            uplink::DEFAULT_MAX_PACKET,
        )),
        down_tx,
        logs,
        std::sync::Arc::new(uplink::LinkState::new(format!("127.0.0.1:{port}"))),
        None,
        stop_rx,
    ));
    while outbox.stats().await.pending > 0 {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let elapsed = start.elapsed();
    let _ = stop_tx.send(true);
    let _ = link.await;
    N as f64 / elapsed.as_secs_f64()
}

fn main() {
    let dir = tempfile::tempdir().unwrap();
    let (mut broker, port) = mosquitto(dir.path());
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let raw = rt.block_on(raw_rate(port));
    let drained = rt.block_on(outbox_rate(port, dir.path()));
    println!(
        "rumqttc QoS 1 straight to Mosquitto: {raw:.0} messages/s ({N} messages of 100 bytes)"
    );
    println!(
        "outbox drain after an outage:      {drained:.0} messages/s (ratio {:.2})",
        drained / raw
    );
    latency(&rt, port, dir.path());
    let _ = broker.kill();
    let _ = broker.wait();
}

fn latency(rt: &tokio::runtime::Runtime, port: u16, dir: &std::path::Path) {
    // A control plane in this process, one device running a node function.
    let config = edgefn_cloud::Config {
        data: dir.join("cloud"),
        admin_token_file: Some(dir.join("admin.token")),
        secret_key_file: None,
        objects: None,
    };
    let prepared = edgefn_cloud::prepare(&config).unwrap();
    let listener = rt
        .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
        .unwrap();
    let cloud = listener.local_addr().unwrap().to_string();
    rt.spawn(edgefn_cloud::serve(
        prepared,
        listener,
        std::future::pending(),
    ));
    let admin = std::fs::read_to_string(dir.join("admin.token"))
        .unwrap()
        .trim()
        .to_owned();
    let http = reqwest::Client::new();
    let code = b"exports.handler = async (e, c) => { c.publish('answers/' + e.payload.n, { n: e.payload.n }); return null; };\n".to_vec();
    let bundle = edgefn_schema::bundle::pack(vec![edgefn_schema::bundle::BundleFile {
        path: "index.js".into(),
        kind: edgefn_schema::bundle::FileKind::Regular {
            data: code,
            executable: false,
        },
    }])
    .unwrap();
    let digest = edgefn_schema::bundle::digest(&bundle);
    let manifest = "apiVersion: edgefn/v1\nproject: lat\nfunctions:\n  echo:\n    path: functions/echo\n    runtime: node\n    handler: index.handler\ndevices:\n  dev-a: {}\nbindings:\n  - function: echo\n    devices: { names: [dev-a] }\n    triggers: [ commands/echo ]\nroutes:\n  - { from: \"answers/#\", to: cloud }\n  - { from: \"cloud:commands/#\", to: local }\n";
    let token = rt.block_on(async {
        http.put(format!("http://{cloud}/v1/bundles/{digest}")).bearer_auth(&admin).body(bundle).send().await.unwrap();
        let r = http.post(format!("http://{cloud}/v1/revisions")).bearer_auth(&admin).json(&serde_json::json!({"manifest": manifest, "bundles": BTreeMap::from([("echo", &digest)])})).send().await.unwrap();
        assert_eq!(r.status(), 201);
        let r: serde_json::Value = http.post(format!("http://{cloud}/v1/devices")).bearer_auth(&admin).json(&serde_json::json!({"name": "dev-a"})).send().await.unwrap().json().await.unwrap();
        r["token"].as_str().unwrap().to_owned()
    });
    let agent_config = dir.join("agent.yaml");
    std::fs::write(&agent_config, format!("cloud: http://{cloud}\ndevice: dev-a\ntoken: {token}\nmqtt: mqtt://127.0.0.1:{port}\nhealthWindow: 1s\n")).unwrap();
    let mut agent = Command::new(agent_bin())
        .args([
            "--config",
            agent_config.to_str().unwrap(),
            "--data",
            dir.join("agent").to_str().unwrap(),
            "--sandbox",
            "process",
            "--local-listen",
            "127.0.0.1:0",
            "--local-mqtt",
            "127.0.0.1:0",
            "--log-level",
            "warn",
        ])
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(agent.stdout.take().unwrap()).lines();
    let first = lines.next().unwrap().unwrap();
    let local_mqtt = first
        .split_once("mqtt://")
        .map(|(_, a)| a.trim().to_owned())
        .expect("the agent's local MQTT address");
    let samples = rt.block_on(async {
        let mut opts = MqttOptions::new("bench-cloud", "127.0.0.1", port);
        opts.set_keep_alive(Duration::from_secs(30));
        let mut net = rumqttc::NetworkOptions::new();
        net.set_tcp_nodelay(true);
        opts.set_network_options(net);
        let (client, mut events) = AsyncClient::new(opts, 100);
        client
            .subscribe("edgefn/dev-a/up/#", QoS::AtLeastOnce)
            .await
            .unwrap();
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<String>();
        tokio::spawn(async move {
            while let Ok(e) = events.poll().await {
                if let Event::Incoming(Packet::Publish(p)) = e {
                    let _ = tx.send(String::from_utf8_lossy(&p.topic).into_owned());
                }
            }
        });
        // Until the device runs the function and its link is up.
        let start = Instant::now();
        loop {
            client
                .publish(
                    "edgefn/dev-a/down/commands/echo",
                    QoS::AtLeastOnce,
                    false,
                    br#"{"n": -1}"#.to_vec(),
                )
                .await
                .unwrap();
            if tokio::time::timeout(Duration::from_millis(500), rx.recv())
                .await
                .is_ok()
            {
                break;
            }
            assert!(
                start.elapsed() < Duration::from_secs(60),
                "the device never answered"
            );
        }
        while rx.try_recv().is_ok() {}
        let mut samples = Vec::new();
        for n in 0..300 {
            let t = Instant::now();
            client
                .publish(
                    "edgefn/dev-a/down/commands/echo",
                    QoS::AtLeastOnce,
                    false,
                    format!("{{\"n\": {n}}}").into_bytes(),
                )
                .await
                .unwrap();
            loop {
                let topic = rx.recv().await.unwrap();
                if topic.ends_with(&format!("/answers/{n}")) {
                    break;
                }
            }
            samples.push(t.elapsed());
        }
        samples
    });
    let mut s = samples;
    s.sort();
    println!(
        "cloud → device → function → cloud round trip: p50 {:.2} ms, p99 {:.2} ms ({} round trips)",
        s[s.len() / 2].as_secs_f64() * 1e3,
        s[(s.len() - 1) * 99 / 100].as_secs_f64() * 1e3,
        s.len()
    );
    rt.block_on(local(&local_mqtt));
    let _ = agent.kill();
    let _ = agent.wait();
}

/// A client of the agent's local listener, and its incoming publishes' topics.
async fn local_client(
    addr: &str,
    id: &str,
) -> (
    AsyncClient,
    tokio::sync::mpsc::UnboundedReceiver<String>,
    tokio::sync::mpsc::UnboundedReceiver<()>,
) {
    let (host, port) = addr.rsplit_once(':').unwrap();
    let mut opts = MqttOptions::new(id, host, port.parse().unwrap());
    opts.set_keep_alive(Duration::from_secs(30));
    let mut net = rumqttc::NetworkOptions::new();
    net.set_tcp_nodelay(true);
    opts.set_network_options(net);
    let (client, mut events) = AsyncClient::new(opts, 1000);
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel::<String>();
    let (ack_tx, ack_rx) = tokio::sync::mpsc::unbounded_channel::<()>();
    tokio::spawn(async move {
        while let Ok(e) = events.poll().await {
            match e {
                Event::Incoming(Packet::Publish(p)) => {
                    let _ = tx.send(String::from_utf8_lossy(&p.topic).into_owned());
                }
                Event::Incoming(Packet::PubAck(_)) => {
                    let _ = ack_tx.send(());
                }
                _ => {}
            }
        }
    });
    (client, rx, ack_rx)
}

async fn local(addr: &str) {
    let (client, mut rx, _) = local_client(addr, "bench-local").await;
    client
        .subscribe("answers/#", QoS::AtLeastOnce)
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(200)).await;
    let mut samples = Vec::new();
    for n in 1000..1300 {
        let t = Instant::now();
        client
            .publish(
                "commands/echo",
                QoS::AtLeastOnce,
                false,
                format!("{{\"n\": {n}}}").into_bytes(),
            )
            .await
            .unwrap();
        loop {
            let topic = rx.recv().await.unwrap();
            if topic == format!("answers/{n}") {
                break;
            }
        }
        samples.push(t.elapsed());
    }
    samples.sort();
    println!(
        "local MQTT → function → local subscriber: p50 {:.2} ms, p99 {:.2} ms ({} round trips)",
        samples[samples.len() / 2].as_secs_f64() * 1e3,
        samples[(samples.len() - 1) * 99 / 100].as_secs_f64() * 1e3,
        samples.len()
    );
    for conns in [1usize, 4] {
        let per = N / conns;
        let mut clients = Vec::new();
        for c in 0..conns {
            clients.push(local_client(addr, &format!("bench-sensor-{c}")).await);
        }
        let t = Instant::now();
        let mut tasks = Vec::new();
        for (c, (client, _, mut acks)) in clients.into_iter().enumerate() {
            tasks.push(tokio::spawn(async move {
                let sender = tokio::spawn(async move {
                    for i in 0..per {
                        client
                            .publish(
                                format!("answers/load/{c}"),
                                QoS::AtLeastOnce,
                                false,
                                vec![b'x'; 100],
                            )
                            .await
                            .unwrap();
                        let _ = i;
                    }
                    client
                });
                for _ in 0..per {
                    acks.recv().await.unwrap();
                }
                sender.await.unwrap()
            }));
        }
        for t in tasks {
            let _ = t.await.unwrap();
        }
        let rate = (per * conns) as f64 / t.elapsed().as_secs_f64();
        println!(
            "local MQTT publish into the outbox (QoS 1, acknowledged on disk), {conns} connection(s): {rate:.0} messages/s"
        );
    }
}

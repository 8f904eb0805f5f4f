//! The broker against Mosquitto, same client, same run: one rumqttc MQTT 5 publisher sends
//! 20,000 messages of 100 bytes at QoS 1 (then QoS 2) through the broker to one subscriber of
//! the same QoS; each broker runs in a process of its own (this one re-runs this binary as the
//! broker). Reported per broker and QoS: messages per second (first PUBLISH sent to last one
//! received) and the broker process's CPU time per message (user + system, from
//! `/proc/PID/stat`), the median of 3 runs; and the rate ratio edgefn / Mosquitto.
//!
//! ```sh
//! cargo bench -p edgefn-broker --bench vs_mosquitto   # needs mosquitto (apt-get install mosquitto)
//! ```

#![allow(
    clippy::print_stdout,
    clippy::print_stderr,
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::disallowed_methods
)]

use std::io::{BufRead, BufReader, Read};
use std::net::TcpListener as StdListener;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use edgefn_broker::{Authenticator, Broker, BrokerOptions, Client};
use rumqttc::v5::mqttbytes::QoS;
use rumqttc::v5::mqttbytes::v5::Packet;
use rumqttc::v5::{AsyncClient, Event, MqttOptions};

const N: usize = 20_000;
const RUNS: usize = 3;

#[derive(Clone, Debug)]
struct Anyone;

impl Client for Anyone {
    fn name(&self) -> &str {
        "bench"
    }
    fn may_publish(&self, _: &str) -> bool {
        true
    }
    fn may_subscribe(&self, _: &str) -> bool {
        true
    }
    fn may_receive(&self, _: &str) -> bool {
        true
    }
}

struct Open;

impl Authenticator for Open {
    type Client = Anyone;
    fn authenticate(&self, _: Option<&str>, _: Option<&str>) -> Option<Anyone> {
        Some(Anyone)
    }
}

/// The broker process: serves on a port it prints, until its stdin closes (its parent gone).
fn serve() {
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        println!("{}", listener.local_addr().unwrap().port());
        let broker = Broker::with_options(Open, BrokerOptions::default());
        let (stop, rx) = tokio::sync::watch::channel(false);
        tokio::spawn(broker.serve(listener, rx));
        tokio::task::spawn_blocking(|| {
            let _ = std::io::stdin().read_to_end(&mut Vec::new());
        })
        .await
        .unwrap();
        let _ = stop.send(true);
    });
}

fn edgefn() -> (Child, u16) {
    let mut child = Command::new(std::env::current_exe().unwrap())
        .env("EDGEFN_BENCH_SERVE", "1")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    (child, line.trim().parse().unwrap())
}

fn mosquitto(dir: &std::path::Path) -> (Child, u16) {
    let bin = ["/usr/sbin/mosquitto", "/usr/bin/mosquitto"]
        .into_iter()
        .find(|p| std::path::Path::new(p).is_file())
        .expect("install mosquitto");
    let port = StdListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let conf = dir.join("mosquitto.conf");
    std::fs::write(
        &conf,
        format!("listener {port} 127.0.0.1\nuser root\nallow_anonymous true\nset_tcp_nodelay true\nmax_inflight_messages 100\nmax_queued_messages 100000\npersistence false\nlog_dest none\n"),
    )
    .unwrap();
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

/// CPU time of process `pid` so far (user + system).
fn cpu(pid: u32) -> Duration {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    // Fields after the command name (which may hold spaces) end with ')'.
    let rest = &stat[stat.rfind(')').unwrap() + 2..];
    let f: Vec<&str> = rest.split(' ').collect();
    let ticks: u64 = f[11].parse::<u64>().unwrap() + f[12].parse::<u64>().unwrap();
    // Clock ticks are 1/100 s on Linux.
    Duration::from_millis(ticks * 10)
}

fn options(id: &str, port: u16) -> MqttOptions {
    let mut o = MqttOptions::new(id, "127.0.0.1", port);
    let mut net = rumqttc::NetworkOptions::new();
    net.set_tcp_nodelay(true);
    o.set_network_options(net);
    o.set_keep_alive(Duration::from_secs(60));
    o
}

/// One run: (messages per second, broker CPU per message).
async fn run(port: u16, pid: u32, qos: QoS, tag: &str) -> (f64, Duration) {
    let (sub, mut sub_events) = AsyncClient::new(options(&format!("sub-{tag}"), port), 1024);
    sub.subscribe("bench/#", qos).await.unwrap();
    loop {
        if let Event::Incoming(Packet::SubAck(_)) = sub_events.poll().await.unwrap() {
            break;
        }
    }
    let received = tokio::spawn(async move {
        let mut n = 0;
        while n < N {
            if let Event::Incoming(Packet::Publish(_)) = sub_events.poll().await.unwrap() {
                n += 1;
            }
        }
        let done = Instant::now();
        drop(sub);
        done
    });
    let (publisher, mut pub_events) = AsyncClient::new(options(&format!("pub-{tag}"), port), 1024);
    let driver = tokio::spawn(async move { while pub_events.poll().await.is_ok() {} });
    let cpu_before = cpu(pid);
    let start = Instant::now();
    let payload = vec![b'x'; 100];
    for i in 0..N {
        publisher
            .publish(format!("bench/{}", i % 10), qos, false, payload.clone())
            .await
            .unwrap();
    }
    let done = received.await.unwrap();
    let cpu_used = cpu(pid) - cpu_before;
    let _ = publisher.disconnect().await;
    driver.abort();
    (
        N as f64 / done.duration_since(start).as_secs_f64(),
        cpu_used / N as u32,
    )
}

fn median<T: PartialOrd + Copy>(mut v: Vec<T>) -> T {
    v.sort_by(|a, b| a.partial_cmp(b).unwrap());
    v[v.len() / 2]
}

fn main() {
    if std::env::var_os("EDGEFN_BENCH_SERVE").is_some() {
        serve();
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let rt = tokio::runtime::Runtime::new().unwrap();
    let (mut ours, our_port) = edgefn();
    let (mut theirs, their_port) = mosquitto(dir.path());
    println!("{N} messages of 100 bytes, one publisher, one subscriber; median of {RUNS} runs");
    for (qos, q) in [(QoS::AtLeastOnce, 1), (QoS::ExactlyOnce, 2)] {
        let mut rates = Vec::new();
        for (name, port, pid) in [
            ("edgefn-broker", our_port, ours.id()),
            ("mosquitto", their_port, theirs.id()),
        ] {
            let mut rate = Vec::new();
            let mut per = Vec::new();
            for r in 0..RUNS {
                let (m, c) = rt.block_on(run(port, pid, qos, &format!("{q}-{r}")));
                rate.push(m);
                per.push(c);
            }
            let (m, c) = (median(rate), median(per));
            println!(
                "QoS {q} {name:>14}: {m:>8.0} messages/s, {:>5.1} µs CPU per message",
                c.as_secs_f64() * 1e6
            );
            rates.push(m);
        }
        println!(
            "QoS {q} rate ratio edgefn / mosquitto: {:.2}",
            rates[0] / rates[1]
        );
    }
    drop(ours.stdin.take());
    let _ = ours.wait();
    let _ = theirs.kill();
    let _ = theirs.wait();
}

//! MQTT conformance, written from the specifications (MQTT 3.1.1, OASIS 2014; MQTT 5.0, OASIS
//! 2019): each test is named after the normative statement or section it checks, and drives
//! raw packets (rumqttc's codecs) over TCP against three brokers, one module per statement:
//!
//! - `cloud`: this broker as the cloud configures it: device namespaces (a device publishes
//!   under `edgefn/{device}/up/`, reads `edgefn/{device}/down/`, uses client ids `{device}` or
//!   `{device}.…`), an all-rights `cloud` user, and a store (persistent sessions, as the
//!   cloud's redb store is given them, here kept in memory so a restart can be played);
//! - `agent`: this broker as the agent configures it: the local password, any topic but `$…`,
//!   an hour's session expiry limit, a publish hook acknowledging after it is done;
//! - `mosquitto`: Mosquitto (started here on a free port with a temporary configuration and
//!   killed at the end), the control. A statement Mosquitto fails too is marked with the reason.
//!
//! Tests that wait for time to pass (message expiry, will delay) sleep past it; nothing asserts
//! on how long anything takes. "Not delivered" is shown by a later message arriving first.

use std::collections::HashMap;
use std::net::TcpListener as StdListener;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use edgefn_broker::{
    Authenticator, Broker, BrokerOptions, Change, Client, Message, Persistence, StoreError, Stored,
    StoredSession,
};
use rumqttc::mqttbytes::v4;
use rumqttc::v5::mqttbytes::QoS;
use rumqttc::v5::mqttbytes::v5::{self, Packet};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::watch;

/// How long a test waits for a packet it expects before failing.
const WAIT: Duration = Duration::from_secs(10);

// ---------------------------------------------------------------------------------------------
// The brokers under test.

/// The cloud's rights: `cloud` may do anything; a device only its own namespace.
#[derive(Clone, Debug)]
enum CloudUser {
    Cloud,
    Device(String),
}

impl Client for CloudUser {
    fn name(&self) -> &str {
        match self {
            CloudUser::Cloud => "cloud",
            CloudUser::Device(d) => d,
        }
    }
    fn may_use_client_id(&self, id: &str) -> bool {
        match self {
            CloudUser::Cloud => true,
            CloudUser::Device(d) => {
                id == d
                    || id
                        .strip_prefix(d.as_str())
                        .is_some_and(|r| r.starts_with('.'))
            }
        }
    }
    fn may_publish(&self, topic: &str) -> bool {
        match self {
            CloudUser::Cloud => true,
            CloudUser::Device(d) => topic.starts_with(&format!("edgefn/{d}/up/")),
        }
    }
    fn may_subscribe(&self, filter: &str) -> bool {
        match self {
            CloudUser::Cloud => true,
            CloudUser::Device(d) => filter.starts_with(&format!("edgefn/{d}/down/")),
        }
    }
    fn may_receive(&self, topic: &str) -> bool {
        match self {
            CloudUser::Cloud => true,
            CloudUser::Device(d) => topic.starts_with(&format!("edgefn/{d}/down/")),
        }
    }
}

struct CloudAuth;

impl Authenticator for CloudAuth {
    type Client = CloudUser;
    fn authenticate(&self, username: Option<&str>, password: Option<&str>) -> Option<CloudUser> {
        match (username?, password?) {
            ("cloud", "cloud-pw") => Some(CloudUser::Cloud),
            (d @ ("gw-01" | "gw-02"), p) if p == format!("{d}-pw") => {
                Some(CloudUser::Device(d.to_owned()))
            }
            _ => None,
        }
    }
    fn restore(&self, name: &str) -> Option<CloudUser> {
        match name {
            "cloud" => Some(CloudUser::Cloud),
            "gw-01" | "gw-02" => Some(CloudUser::Device(name.to_owned())),
            _ => None,
        }
    }
}

/// The agent's rights: any topic but `$…`, with the local password.
#[derive(Clone, Debug)]
struct Local(String);

impl Client for Local {
    fn name(&self) -> &str {
        &self.0
    }
    fn may_publish(&self, topic: &str) -> bool {
        !topic.starts_with('$')
    }
    fn may_subscribe(&self, filter: &str) -> bool {
        !filter.starts_with('$')
    }
    fn may_receive(&self, topic: &str) -> bool {
        !topic.starts_with('$')
    }
}

struct LocalAuth;

impl Authenticator for LocalAuth {
    type Client = Local;
    fn authenticate(&self, username: Option<&str>, password: Option<&str>) -> Option<Local> {
        (password == Some("local-pw")).then(|| Local(username.unwrap_or("local").to_owned()))
    }
}

/// A store in memory, as a `Persistence` sees changes: what a restart finds.
#[derive(Default)]
struct MemStore {
    sessions: Mutex<HashMap<String, StoredSession>>,
    retained: Mutex<HashMap<String, Message>>,
}

impl Persistence for MemStore {
    fn commit(&self, changes: &[Change]) -> Result<(), StoreError> {
        let mut sessions = self.sessions.lock().expect("store lock");
        let mut retained = self.retained.lock().expect("store lock");
        for c in changes {
            match c {
                Change::Session {
                    client_id,
                    owner,
                    subs,
                } => {
                    let s = sessions
                        .entry(client_id.clone())
                        .or_insert_with(|| StoredSession {
                            client_id: client_id.clone(),
                            owner: owner.clone(),
                            subs: Vec::new(),
                            queue: Vec::new(),
                        });
                    s.subs = subs.clone();
                }
                Change::ForgetSession { client_id } => {
                    sessions.remove(client_id);
                }
                Change::Keep {
                    client_id,
                    seq,
                    message,
                } => {
                    if let Some(s) = sessions.get_mut(client_id) {
                        s.queue.push((*seq, (**message).clone()));
                    }
                }
                Change::Done { client_id, seq } => {
                    if let Some(s) = sessions.get_mut(client_id) {
                        s.queue.retain(|(n, _)| n != seq);
                    }
                }
                Change::Retain { topic, message } => match message {
                    Some(m) => {
                        retained.insert(topic.clone(), (**m).clone());
                    }
                    None => {
                        retained.remove(topic);
                    }
                },
            }
        }
        Ok(())
    }
}

impl MemStore {
    fn load(&self) -> Stored {
        Stored {
            sessions: self
                .sessions
                .lock()
                .expect("test I/O")
                .values()
                .map(|s| StoredSession {
                    client_id: s.client_id.clone(),
                    owner: s.owner.clone(),
                    subs: s.subs.clone(),
                    queue: s.queue.clone(),
                })
                .collect(),
            retained: self
                .retained
                .lock()
                .expect("store lock")
                .values()
                .cloned()
                .collect(),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Cloud,
    Agent,
    Mosquitto,
}

/// A broker under test; stopped (or killed) when dropped.
struct Target {
    kind: Kind,
    port: u16,
    stop: Option<watch::Sender<bool>>,
    child: Option<Child>,
    _dir: Option<tempfile::TempDir>,
}

impl Drop for Target {
    fn drop(&mut self) {
        if let Some(stop) = &self.stop {
            let _ = stop.send(true);
        }
        if let Some(c) = &mut self.child {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

async fn listener() -> (tokio::net::TcpListener, u16) {
    let l = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("test I/O");
    let port = l.local_addr().expect("test I/O").port();
    (l, port)
}

impl Target {
    async fn start(kind: Kind) -> Target {
        match kind {
            Kind::Cloud => Target::cloud(Arc::new(MemStore::default())).await,
            Kind::Agent => {
                let (l, port) = listener().await;
                let options = BrokerOptions {
                    session_expiry_limit: Some(Duration::from_secs(3600)),
                    on_publish: Some(Arc::new(|_m: Message| {
                        Box::pin(async { tokio::task::yield_now().await })
                    })),
                    ..BrokerOptions::default()
                };
                let broker = Broker::with_options(LocalAuth, options);
                let (tx, rx) = watch::channel(false);
                tokio::spawn(broker.serve(l, rx));
                Target {
                    kind,
                    port,
                    stop: Some(tx),
                    child: None,
                    _dir: None,
                }
            }
            Kind::Mosquitto => {
                let bin = ["/usr/sbin/mosquitto", "/usr/bin/mosquitto"]
                    .into_iter()
                    .find(|p| std::path::Path::new(p).is_file())
                    .expect("Mosquitto is not installed (scripts/test.sh installs it)");
                let port = StdListener::bind("127.0.0.1:0")
                    .expect("test I/O")
                    .local_addr()
                    .expect("test I/O")
                    .port();
                let dir = tempfile::tempdir().expect("test I/O");
                let acl = dir.path().join("acl");
                std::fs::write(&acl, "topic readwrite t/#\n").expect("test I/O");
                let conf = dir.path().join("mosquitto.conf");
                std::fs::write(
                    &conf,
                    format!(
                        "listener {port} 127.0.0.1\nuser root\nallow_anonymous true\nacl_file {}\npersistence false\nlog_dest none\n",
                        acl.display()
                    ),
                )
                .expect("test I/O");
                let child = Command::new(bin)
                    .args(["-c", conf.to_str().expect("test I/O")])
                    .stdout(Stdio::null())
                    .stderr(Stdio::null())
                    .spawn()
                    .expect("start mosquitto");
                let t = Target {
                    kind,
                    port,
                    stop: None,
                    child: Some(child),
                    _dir: Some(dir),
                };
                for _ in 0..500 {
                    if TcpStream::connect(("127.0.0.1", port)).await.is_ok() {
                        return t;
                    }
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
                panic!("mosquitto did not listen on {port}");
            }
        }
    }

    /// The cloud-like broker over `store` (what it kept is restored first).
    async fn cloud(store: Arc<MemStore>) -> Target {
        let (l, port) = listener().await;
        let options = BrokerOptions {
            persistence: Some(store.clone()),
            ..BrokerOptions::default()
        };
        let broker = Broker::with_options(CloudAuth, options);
        broker.restore(store.load());
        let (tx, rx) = watch::channel(false);
        tokio::spawn(broker.serve(l, rx));
        Target {
            kind: Kind::Cloud,
            port,
            stop: Some(tx),
            child: None,
            _dir: None,
        }
    }

    /// Credentials with every right (those the tests of plain protocol use).
    fn login(&self) -> Option<(&'static str, &'static str)> {
        match self.kind {
            Kind::Cloud => Some(("cloud", "cloud-pw")),
            Kind::Agent => Some(("sensor", "local-pw")),
            Kind::Mosquitto => None,
        }
    }

    /// A topic every right covers.
    fn topic(&self, name: &str) -> String {
        format!("t/{name}")
    }
}

// ---------------------------------------------------------------------------------------------
// Raw clients.

/// An MQTT 5 client speaking raw packets.
struct C5 {
    s: TcpStream,
    buf: BytesMut,
}

/// What goes into a CONNECT.
struct Connect5 {
    connect: v5::Connect,
    will: Option<v5::LastWill>,
    login: Option<v5::Login>,
}

fn props() -> v5::ConnectProperties {
    v5::ConnectProperties::new()
}

fn publish5(topic: &str, qos: QoS, pkid: u16, payload: &str) -> v5::Publish {
    v5::Publish {
        dup: false,
        qos,
        retain: false,
        topic: Bytes::copy_from_slice(topic.as_bytes()),
        pkid: if qos == QoS::AtMostOnce { 0 } else { pkid },
        payload: Bytes::copy_from_slice(payload.as_bytes()),
        properties: None,
    }
}

impl C5 {
    async fn connect(t: &Target, id: &str, f: impl FnOnce(&mut Connect5)) -> (C5, v5::ConnAck) {
        let mut c = Connect5 {
            connect: v5::Connect {
                keep_alive: 60,
                client_id: id.to_owned(),
                clean_start: true,
                properties: None,
            },
            will: None,
            login: t.login().map(|(u, p)| v5::Login {
                username: u.into(),
                password: p.into(),
            }),
        };
        f(&mut c);
        let s = TcpStream::connect(("127.0.0.1", t.port))
            .await
            .expect("test I/O");
        s.set_nodelay(true).expect("test I/O");
        let mut me = C5 {
            s,
            buf: BytesMut::new(),
        };
        me.send(Packet::Connect(c.connect, c.will, c.login)).await;
        match me.recv().await {
            Packet::ConnAck(a) => (me, a),
            p => panic!("expected CONNACK, got {p:?}"),
        }
    }

    /// Connects and expects success.
    async fn ok(t: &Target, id: &str, f: impl FnOnce(&mut Connect5)) -> (C5, v5::ConnAck) {
        let (c, a) = C5::connect(t, id, f).await;
        assert_eq!(a.code, v5::ConnectReturnCode::Success, "{a:?}");
        (c, a)
    }

    async fn send(&mut self, p: Packet) {
        let mut out = BytesMut::new();
        p.write(&mut out, None).expect("test I/O");
        self.s.write_all(&out).await.expect("test I/O");
    }

    async fn try_recv(&mut self) -> Option<Packet> {
        loop {
            // A DISCONNECT without a body (reason 0): rumqttc's reader wants one.
            if self.buf.len() >= 2 && self.buf[0] == 0xE0 && self.buf[1] == 0 {
                let _ = self.buf.split_to(2);
                return Some(Packet::Disconnect(v5::Disconnect::new(
                    v5::DisconnectReasonCode::NormalDisconnection,
                )));
            }
            match Packet::read(&mut self.buf, None) {
                Ok(p) => return Some(p),
                Err(rumqttc::v5::mqttbytes::Error::InsufficientBytes(_)) => {}
                Err(e) => panic!("unreadable packet: {e:?}"),
            }
            let n = tokio::time::timeout(WAIT, self.s.read_buf(&mut self.buf))
                .await
                .expect("no packet from the broker in time")
                .unwrap_or(0);
            if n == 0 {
                return None;
            }
        }
    }

    async fn recv(&mut self) -> Packet {
        self.try_recv()
            .await
            .expect("the broker closed the connection")
    }

    /// The next PUBLISH (acknowledging nothing); PINGRESPs are skipped.
    async fn publish(&mut self) -> v5::Publish {
        loop {
            match self.recv().await {
                Packet::Publish(p) => return p,
                Packet::PingResp(_) => {}
                p => panic!("expected PUBLISH, got {p:?}"),
            }
        }
    }

    /// The connection ends; the DISCONNECT reason if the broker sent one.
    async fn closed(&mut self) -> Option<v5::DisconnectReasonCode> {
        let mut reason = None;
        loop {
            match self.try_recv().await {
                None => return reason,
                Some(Packet::Disconnect(d)) => reason = Some(d.reason_code),
                Some(_) => {}
            }
        }
    }

    async fn subscribe(
        &mut self,
        pkid: u16,
        filters: Vec<v5::Filter>,
        id: Option<usize>,
    ) -> v5::SubAck {
        let properties = id.map(|id| v5::SubscribeProperties {
            id: Some(id),
            user_properties: Vec::new(),
        });
        self.send(Packet::Subscribe(v5::Subscribe {
            pkid,
            filters,
            properties,
        }))
        .await;
        match self.recv().await {
            Packet::SubAck(a) => {
                assert_eq!(a.pkid, pkid);
                a
            }
            p => panic!("expected SUBACK, got {p:?}"),
        }
    }

    /// Subscribes to one filter at `qos` and expects it granted.
    async fn sub(&mut self, filter: &str, qos: QoS) {
        let a = self
            .subscribe(1, vec![v5::Filter::new(filter, qos)], None)
            .await;
        assert_eq!(a.return_codes, vec![v5::SubscribeReasonCode::Success(qos)]);
    }

    /// PINGREQ answered: the connection is alive and everything sent before was handled.
    async fn ping(&mut self) {
        self.send(Packet::PingReq(v5::PingReq)).await;
        loop {
            match self.recv().await {
                Packet::PingResp(_) => return,
                Packet::Publish(p) => panic!("unexpected PUBLISH on {:?}", p.topic),
                _ => {}
            }
        }
    }

    /// Publishes at QoS 1 and waits for the PUBACK.
    async fn pub1(&mut self, topic: &str, pkid: u16, payload: &str) {
        self.send(Packet::Publish(publish5(
            topic,
            QoS::AtLeastOnce,
            pkid,
            payload,
        )))
        .await;
        match self.recv().await {
            Packet::PubAck(a) => {
                assert_eq!((a.pkid, a.reason), (pkid, v5::PubAckReason::Success))
            }
            p => panic!("expected PUBACK, got {p:?}"),
        }
    }

    async fn disconnect(mut self) {
        self.send(Packet::Disconnect(v5::Disconnect::new(
            v5::DisconnectReasonCode::NormalDisconnection,
        )))
        .await;
        let _ = self.s.shutdown().await;
    }
}

/// An MQTT 3.1.1 client speaking raw packets.
struct C4 {
    s: TcpStream,
    buf: BytesMut,
}

impl C4 {
    async fn connect(t: &Target, id: &str, clean: bool) -> (C4, v4::ConnAck) {
        let s = TcpStream::connect(("127.0.0.1", t.port))
            .await
            .expect("test I/O");
        let mut me = C4 {
            s,
            buf: BytesMut::new(),
        };
        me.send(v4::Packet::Connect(v4::Connect {
            protocol: rumqttc::mqttbytes::Protocol::V4,
            keep_alive: 60,
            client_id: id.into(),
            clean_session: clean,
            last_will: None,
            login: t.login().map(|(u, p)| v4::Login {
                username: u.into(),
                password: p.into(),
            }),
        }))
        .await;
        match me.recv().await {
            v4::Packet::ConnAck(a) => {
                assert_eq!(a.code, v4::ConnectReturnCode::Success);
                (me, a)
            }
            p => panic!("expected CONNACK, got {p:?}"),
        }
    }

    async fn send(&mut self, p: v4::Packet) {
        let mut out = BytesMut::new();
        p.write(&mut out, usize::MAX).expect("test I/O");
        self.s.write_all(&out).await.expect("test I/O");
    }

    async fn recv(&mut self) -> v4::Packet {
        loop {
            match v4::Packet::read(&mut self.buf, usize::MAX) {
                Ok(p) => return p,
                Err(rumqttc::mqttbytes::Error::InsufficientBytes(_)) => {}
                Err(e) => panic!("unreadable packet: {e:?}"),
            }
            let n = tokio::time::timeout(WAIT, self.s.read_buf(&mut self.buf))
                .await
                .expect("no packet from the broker in time")
                .expect("test I/O");
            assert!(n > 0, "the broker closed the connection");
        }
    }

    async fn ping(&mut self) {
        self.send(v4::Packet::PingReq).await;
        assert_eq!(self.recv().await, v4::Packet::PingResp);
    }
}

fn pub4(topic: &str, qos: rumqttc::mqttbytes::QoS, pkid: u16, payload: &str) -> v4::Publish {
    let mut p = v4::Publish::new(topic, qos, payload.as_bytes().to_vec());
    p.pkid = pkid;
    p
}

/// Generates one test per broker for `$name`, run by `$body(target)`; `mosquitto: "reason"`
/// marks a statement the control fails too.
macro_rules! conformance {
    ($name:ident, $body:ident) => {
        mod $name {
            use super::*;
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn cloud() {
                $body(Target::start(Kind::Cloud).await).await
            }
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn agent() {
                $body(Target::start(Kind::Agent).await).await
            }
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn mosquitto() {
                $body(Target::start(Kind::Mosquitto).await).await
            }
        }
    };
    ($name:ident, $body:ident, mosquitto: $why:literal) => {
        mod $name {
            use super::*;
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn cloud() {
                $body(Target::start(Kind::Cloud).await).await
            }
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn agent() {
                $body(Target::start(Kind::Agent).await).await
            }
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            #[ignore = $why]
            async fn mosquitto() {
                $body(Target::start(Kind::Mosquitto).await).await
            }
        }
    };
}

/// Reads `c`'s packets until a PUBLISH on `end`, acknowledging QoS 1 and 2 ones (QoS 2 through
/// PUBCOMP); returns the PUBLISHes before it.
async fn until(c: &mut C5, end: &str) -> Vec<v5::Publish> {
    let mut got = Vec::new();
    loop {
        match c.recv().await {
            Packet::Publish(p) => {
                match p.qos {
                    QoS::AtMostOnce => {}
                    QoS::AtLeastOnce => c.send(Packet::PubAck(v5::PubAck::new(p.pkid, None))).await,
                    QoS::ExactlyOnce => c.send(Packet::PubRec(v5::PubRec::new(p.pkid, None))).await,
                }
                if p.topic == end.as_bytes() {
                    return got;
                }
                got.push(p);
            }
            Packet::PubRel(r) => {
                c.send(Packet::PubComp(v5::PubComp::new(r.pkid, None)))
                    .await
            }
            Packet::PingResp(_) => {}
            p => panic!("unexpected {p:?}"),
        }
    }
}

fn payloads(ps: &[v5::Publish]) -> Vec<String> {
    ps.iter()
        .map(|p| String::from_utf8_lossy(&p.payload).into_owned())
        .collect()
}

// ---------------------------------------------------------------------------------------------
// Every packet answered: refusals in each version's way.

/// MQTT 5 §4.7.2 ($ topics are not for clients to exchange messages), §3.4.2.1 / §3.5.2.1
/// (PUBACK/PUBREC reason codes): a QoS 1 or 2 PUBLISH to a `$` topic is answered with a
/// refusal (0x90 Topic Name invalid, or 0x87 Not authorized), never left unanswered, and the
/// connection goes on.
async fn dollar_topic_publish_refused(t: Target) {
    let (mut c, _) = C5::ok(&t, "dollar", |_| {}).await;
    c.send(Packet::Publish(publish5("$x/y", QoS::AtLeastOnce, 1, "no")))
        .await;
    match c.recv().await {
        Packet::PubAck(a) => {
            assert_eq!(a.pkid, 1);
            assert!(
                matches!(
                    a.reason,
                    v5::PubAckReason::TopicNameInvalid | v5::PubAckReason::NotAuthorized
                ),
                "{a:?}"
            );
        }
        p => panic!("expected PUBACK, got {p:?}"),
    }
    c.send(Packet::Publish(publish5("$x/y", QoS::ExactlyOnce, 2, "no")))
        .await;
    match c.recv().await {
        Packet::PubRec(a) => {
            assert_eq!(a.pkid, 2);
            assert!(
                matches!(
                    a.reason,
                    v5::PubRecReason::TopicNameInvalid | v5::PubRecReason::NotAuthorized
                ),
                "{a:?}"
            );
        }
        p => panic!("expected PUBREC, got {p:?}"),
    }
    c.ping().await;
}
conformance!(
    mqtt5_4_7_2_dollar_topic_publish_refused_with_reason,
    dollar_topic_publish_refused
);

/// MQTT 3.1.1 [MQTT-3.3.5-2]: a PUBLISH the server does not authorise is acknowledged as its
/// QoS asks (or the connection closed); these brokers acknowledge and drop: PUBACK for QoS 1,
/// PUBREC then PUBCOMP for QoS 2, and the message reaches no one.
async fn refused_publish_acknowledged_311(t: Target) {
    use rumqttc::mqttbytes::QoS as Q;
    let (mut sub, _) = C5::ok(&t, "sub311", |_| {}).await;
    sub.sub(&t.topic("#"), QoS::AtLeastOnce).await;
    let (mut c, _) = C4::connect(&t, "pub311", true).await;
    c.send(v4::Packet::Publish(pub4("$x/y", Q::AtLeastOnce, 1, "no")))
        .await;
    assert_eq!(c.recv().await, v4::Packet::PubAck(v4::PubAck::new(1)));
    c.send(v4::Packet::Publish(pub4("$x/y", Q::ExactlyOnce, 2, "no")))
        .await;
    assert_eq!(c.recv().await, v4::Packet::PubRec(v4::PubRec::new(2)));
    c.send(v4::Packet::PubRel(v4::PubRel::new(2))).await;
    assert_eq!(c.recv().await, v4::Packet::PubComp(v4::PubComp::new(2)));
    c.ping().await;
    c.send(v4::Packet::Publish(pub4(
        &t.topic("end"),
        Q::AtLeastOnce,
        3,
        "end",
    )))
    .await;
    assert_eq!(c.recv().await, v4::Packet::PubAck(v4::PubAck::new(3)));
    assert!(until(&mut sub, &t.topic("end")).await.is_empty());
}
conformance!(
    mqtt311_3_3_5_2_refused_publish_acknowledged_and_dropped,
    refused_publish_acknowledged_311
);

/// MQTT 3.1.1 [MQTT-3.1.2-2]: a protocol level the server does not support is answered with
/// CONNACK 0x01 (unacceptable protocol level), then the connection is closed.
async fn unsupported_protocol_level(t: Target) {
    let mut s = TcpStream::connect(("127.0.0.1", t.port))
        .await
        .expect("test I/O");
    // CONNECT, "MQTT", level 3, clean session, keepalive 60, client id "old".
    let body = [
        0, 4, b'M', b'Q', b'T', b'T', 3, 0x02, 0, 60, 0, 3, b'o', b'l', b'd',
    ];
    let mut packet = vec![0x10, body.len() as u8];
    packet.extend_from_slice(&body);
    s.write_all(&packet).await.expect("test I/O");
    let mut got = Vec::new();
    tokio::time::timeout(WAIT, s.read_to_end(&mut got))
        .await
        .expect("the connection is closed")
        .expect("test I/O");
    assert_eq!(got, [0x20, 2, 0, 1]);
}
conformance!(
    mqtt311_3_1_2_2_unsupported_protocol_level_connack_0x01,
    unsupported_protocol_level
);

/// MQTT 5 §3.11.2.1 (UNSUBACK reason codes): an unsubscription from a filter the session did
/// not have answers 0x11 (No subscription existed); one it had, 0x00.
async fn unsuback_reasons(t: Target) {
    let (mut c, _) = C5::ok(&t, "unsub", |_| {}).await;
    c.sub(&t.topic("u"), QoS::AtLeastOnce).await;
    c.send(Packet::Unsubscribe(v5::Unsubscribe {
        pkid: 5,
        filters: vec![t.topic("u"), t.topic("never")],
        properties: None,
    }))
    .await;
    match c.recv().await {
        Packet::UnsubAck(a) => {
            assert_eq!(a.pkid, 5);
            assert_eq!(
                a.reasons,
                vec![
                    v5::UnsubAckReason::Success,
                    v5::UnsubAckReason::NoSubscriptionExisted
                ]
            );
        }
        p => panic!("expected UNSUBACK, got {p:?}"),
    }
}
conformance!(
    mqtt5_3_11_2_1_unsuback_no_subscription_existed_0x11,
    unsuback_reasons
);

/// MQTT 5 [MQTT-3.3.2-9]: a Topic Alias above the server's Topic Alias Maximum is a protocol
/// error answered with DISCONNECT 0x94 (Topic Alias invalid).
async fn topic_alias_over_maximum(t: Target) {
    let (mut c, ack) = C5::ok(&t, "alias-max", |_| {}).await;
    let max = ack.properties.and_then(|p| p.topic_alias_max).unwrap_or(0);
    let mut p = publish5(&t.topic("a"), QoS::AtLeastOnce, 1, "x");
    p.properties = Some(v5::PublishProperties {
        topic_alias: Some(max + 1),
        ..Default::default()
    });
    c.send(Packet::Publish(p)).await;
    assert_eq!(
        c.closed().await,
        Some(v5::DisconnectReasonCode::TopicAliasInvalid)
    );
}
conformance!(
    mqtt5_3_3_2_9_topic_alias_over_maximum_disconnect_0x94,
    topic_alias_over_maximum,
    mosquitto: "Mosquitto 2.0.11 closes the connection without a DISCONNECT (no reason code)"
);

/// MQTT 5 §3.1.2.11.9 and §4.12: a CONNECT with an Authentication Method the
/// server does not support is refused with CONNACK 0x8C (Bad authentication method).
async fn bad_authentication_method(t: Target) {
    let (_, ack) = C5::connect(&t, "auth", |c| {
        c.connect.properties = Some(v5::ConnectProperties {
            authentication_method: Some("SCRAM-SHA-256".into()),
            ..props()
        })
    })
    .await;
    assert_eq!(ack.code, v5::ConnectReturnCode::BadAuthenticationMethod);
}
conformance!(
    mqtt5_4_12_unsupported_authentication_method_connack_0x8c,
    bad_authentication_method
);

// ---------------------------------------------------------------------------------------------
// QoS 2.

/// MQTT 5 §3.2.2.3.4: a server that supports QoS 2 sends no Maximum QoS (or 2), and a
/// subscription asking QoS 2 is granted QoS 2 ([MQTT-3.9.3-1] reason code 0x02), delivered
/// with PUBREC/PUBREL/PUBCOMP.
async fn qos2_granted(t: Target) {
    let (mut sub, ack) = C5::ok(&t, "q2sub", |_| {}).await;
    let max_qos = ack.properties.and_then(|p| p.max_qos);
    assert!(
        max_qos.is_none() || max_qos == Some(2),
        "Maximum QoS {max_qos:?}"
    );
    sub.sub(&t.topic("q2"), QoS::ExactlyOnce).await;
    let (mut p, _) = C5::ok(&t, "q2pub", |_| {}).await;
    p.send(Packet::Publish(publish5(
        &t.topic("q2"),
        QoS::ExactlyOnce,
        9,
        "two",
    )))
    .await;
    match p.recv().await {
        Packet::PubRec(r) => assert_eq!((r.pkid, r.reason), (9, v5::PubRecReason::Success)),
        x => panic!("expected PUBREC, got {x:?}"),
    }
    p.send(Packet::PubRel(v5::PubRel::new(9, None))).await;
    match p.recv().await {
        Packet::PubComp(c) => assert_eq!((c.pkid, c.reason), (9, v5::PubCompReason::Success)),
        x => panic!("expected PUBCOMP, got {x:?}"),
    }
    let m = sub.publish().await;
    assert_eq!((m.qos, &m.payload[..]), (QoS::ExactlyOnce, &b"two"[..]));
    sub.send(Packet::PubRec(v5::PubRec::new(m.pkid, None)))
        .await;
    match sub.recv().await {
        Packet::PubRel(r) => assert_eq!(r.pkid, m.pkid),
        x => panic!("expected PUBREL, got {x:?}"),
    }
    sub.send(Packet::PubComp(v5::PubComp::new(m.pkid, None)))
        .await;
    sub.ping().await;
}
conformance!(mqtt5_3_2_2_3_4_qos2_supported_and_granted, qos2_granted);

/// MQTT 3.1.1 §4.3.3 [MQTT-4.3.3-2]: until the receiver has the PUBREL, a PUBLISH resent under
/// the same packet id is acknowledged again but not delivered again (exactly once).
async fn qos2_exactly_once_311(t: Target) {
    use rumqttc::mqttbytes::QoS as Q;
    let (mut sub, _) = C5::ok(&t, "eo4sub", |_| {}).await;
    sub.sub(&t.topic("eo4/#"), QoS::ExactlyOnce).await;
    let (mut c, _) = C4::connect(&t, "eo4pub", true).await;
    let mut once = pub4(&t.topic("eo4/m"), Q::ExactlyOnce, 7, "once");
    c.send(v4::Packet::Publish(once.clone())).await;
    assert_eq!(c.recv().await, v4::Packet::PubRec(v4::PubRec::new(7)));
    once.dup = true;
    c.send(v4::Packet::Publish(once)).await;
    assert_eq!(c.recv().await, v4::Packet::PubRec(v4::PubRec::new(7)));
    c.send(v4::Packet::PubRel(v4::PubRel::new(7))).await;
    assert_eq!(c.recv().await, v4::Packet::PubComp(v4::PubComp::new(7)));
    c.send(v4::Packet::Publish(pub4(
        &t.topic("eo4/end"),
        Q::AtMostOnce,
        0,
        "end",
    )))
    .await;
    assert_eq!(
        payloads(&until(&mut sub, &t.topic("eo4/end")).await),
        ["once"]
    );
}
conformance!(mqtt311_4_3_3_qos2_exactly_once, qos2_exactly_once_311);

/// MQTT 5 §4.3.3 [MQTT-4.3.3-9], [MQTT-4.3.3-10]: the same in MQTT 5, the duplicate answered
/// with a successful PUBREC and the PUBREL with PUBCOMP.
async fn qos2_exactly_once_5(t: Target) {
    let (mut sub, _) = C5::ok(&t, "eo5sub", |_| {}).await;
    sub.sub(&t.topic("eo5/#"), QoS::ExactlyOnce).await;
    let (mut c, _) = C5::ok(&t, "eo5pub", |_| {}).await;
    let mut once = publish5(&t.topic("eo5/m"), QoS::ExactlyOnce, 7, "once");
    for dup in [false, true] {
        once.dup = dup;
        c.send(Packet::Publish(once.clone())).await;
        match c.recv().await {
            Packet::PubRec(r) => assert_eq!((r.pkid, r.reason), (7, v5::PubRecReason::Success)),
            x => panic!("expected PUBREC, got {x:?}"),
        }
    }
    c.send(Packet::PubRel(v5::PubRel::new(7, None))).await;
    match c.recv().await {
        Packet::PubComp(r) => assert_eq!(r.pkid, 7),
        x => panic!("expected PUBCOMP, got {x:?}"),
    }
    c.send(Packet::Publish(publish5(
        &t.topic("eo5/end"),
        QoS::AtMostOnce,
        0,
        "end",
    )))
    .await;
    assert_eq!(
        payloads(&until(&mut sub, &t.topic("eo5/end")).await),
        ["once"]
    );
}
conformance!(mqtt5_4_3_3_9_qos2_exactly_once, qos2_exactly_once_5);

/// MQTT 5 [MQTT-4.4.0-1]: on reconnection with a kept session, the server resends an
/// unacknowledged QoS 2 PUBLISH (DUP set, the same packet id) and, once PUBREC came, the
/// PUBREL; after PUBCOMP, nothing.
async fn qos2_resent_on_reconnect(t: Target) {
    let keep = |c: &mut Connect5| {
        c.connect.clean_start = false;
        c.connect.properties = Some(v5::ConnectProperties {
            session_expiry_interval: Some(300),
            ..props()
        });
    };
    let (mut r, _) = C5::ok(&t, "q2resend", |c| {
        keep(c);
        c.connect.clean_start = true;
    })
    .await;
    r.sub(&t.topic("q2r"), QoS::ExactlyOnce).await;
    let (mut p, _) = C5::ok(&t, "q2resend-pub", |_| {}).await;
    p.send(Packet::Publish(publish5(
        &t.topic("q2r"),
        QoS::ExactlyOnce,
        3,
        "kept",
    )))
    .await;
    assert!(matches!(p.recv().await, Packet::PubRec(_)));
    p.send(Packet::PubRel(v5::PubRel::new(3, None))).await;
    assert!(matches!(p.recv().await, Packet::PubComp(_)));
    let first = r.publish().await;
    assert!(!first.dup);
    drop(r);
    let (mut r, ack) = C5::ok(&t, "q2resend", keep).await;
    assert!(ack.session_present);
    let again = r.publish().await;
    assert_eq!(
        (again.dup, again.pkid, &again.payload[..]),
        (true, first.pkid, &b"kept"[..])
    );
    r.send(Packet::PubRec(v5::PubRec::new(first.pkid, None)))
        .await;
    match r.recv().await {
        Packet::PubRel(x) => assert_eq!(x.pkid, first.pkid),
        x => panic!("expected PUBREL, got {x:?}"),
    }
    drop(r);
    let (mut r, _) = C5::ok(&t, "q2resend", keep).await;
    match r.recv().await {
        Packet::PubRel(x) => assert_eq!(x.pkid, first.pkid),
        x => panic!("expected the PUBREL again, got {x:?}"),
    }
    r.send(Packet::PubComp(v5::PubComp::new(first.pkid, None)))
        .await;
    r.ping().await;
    drop(r);
    let (mut r, _) = C5::ok(&t, "q2resend", keep).await;
    r.ping().await;
}
conformance!(
    mqtt5_4_4_0_1_qos2_resent_on_reconnect,
    qos2_resent_on_reconnect
);

/// MQTT 5 §4.1 (Session State: QoS 1 and 2 messages pending for the client are part of it):
/// a QoS 2 message kept for a persistent session outlives a restart of the cloud's broker, and
/// is delivered with its PUBREC/PUBREL/PUBCOMP after it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mqtt5_4_1_qos2_session_state_outlives_a_restart_cloud() {
    let store = Arc::new(MemStore::default());
    let t = Target::cloud(store.clone()).await;
    let keep = |c: &mut Connect5| {
        c.connect.clean_start = false;
        c.connect.properties = Some(v5::ConnectProperties {
            session_expiry_interval: Some(300),
            ..props()
        });
    };
    let (mut r, _) = C5::ok(&t, "q2store", keep).await;
    r.sub("t/q2s", QoS::ExactlyOnce).await;
    r.disconnect().await;
    let (mut p, _) = C5::ok(&t, "q2store-pub", |_| {}).await;
    p.send(Packet::Publish(publish5(
        "t/q2s",
        QoS::ExactlyOnce,
        1,
        "stored",
    )))
    .await;
    assert!(matches!(p.recv().await, Packet::PubRec(_)));
    drop(p);
    drop(t);
    let t = Target::cloud(store).await;
    let (mut r, ack) = C5::ok(&t, "q2store", keep).await;
    assert!(ack.session_present);
    let m = r.publish().await;
    assert_eq!((m.qos, &m.payload[..]), (QoS::ExactlyOnce, &b"stored"[..]));
    r.send(Packet::PubRec(v5::PubRec::new(m.pkid, None))).await;
    assert!(matches!(r.recv().await, Packet::PubRel(_)));
    r.send(Packet::PubComp(v5::PubComp::new(m.pkid, None)))
        .await;
    r.ping().await;
}

// ---------------------------------------------------------------------------------------------
// The owners' rules, unchanged.

/// The cloud's device namespaces: a device's PUBLISH outside its namespace is refused with
/// 0x87 (Not authorized, MQTT 5 §3.4.2.1) for QoS 1 and 2, acknowledged and dropped in MQTT
/// 3.1.1 ([MQTT-3.3.5-2]); its SUBSCRIBE to another device's filter, or a shared subscription
/// over one (§4.8.2, authorised on the underlying filter), gets 0x87 (0x80 in
/// MQTT 3.1.1); its own namespace works.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mqtt5_3_4_2_1_not_authorized_0x87_cloud_device_namespaces() {
    use rumqttc::mqttbytes::QoS as Q;
    let t = Target::start(Kind::Cloud).await;
    let (mut cloud, _) = C5::ok(&t, "cloud-1", |_| {}).await;
    cloud.sub("edgefn/#", QoS::AtLeastOnce).await;
    let device = |c: &mut Connect5| {
        c.login = Some(v5::Login {
            username: "gw-01".into(),
            password: "gw-01-pw".into(),
        })
    };
    let (_, refused) = C5::connect(&t, "gw-02", device).await;
    assert_eq!(
        refused.code,
        v5::ConnectReturnCode::ClientIdentifierNotValid
    );
    let (mut d, _) = C5::ok(&t, "gw-01.sensor", device).await;
    d.send(Packet::Publish(publish5(
        "edgefn/gw-02/up/x",
        QoS::AtLeastOnce,
        1,
        "no",
    )))
    .await;
    match d.recv().await {
        Packet::PubAck(a) => assert_eq!(a.reason, v5::PubAckReason::NotAuthorized),
        p => panic!("{p:?}"),
    }
    d.send(Packet::Publish(publish5(
        "edgefn/gw-02/up/x",
        QoS::ExactlyOnce,
        2,
        "no",
    )))
    .await;
    match d.recv().await {
        Packet::PubRec(a) => assert_eq!(a.reason, v5::PubRecReason::NotAuthorized),
        p => panic!("{p:?}"),
    }
    let a = d
        .subscribe(
            3,
            vec![
                v5::Filter::new("edgefn/gw-02/down/#", QoS::AtLeastOnce),
                v5::Filter::new("$share/g/edgefn/gw-02/down/#", QoS::AtLeastOnce),
                v5::Filter::new("$share/g/edgefn/gw-01/down/#", QoS::AtLeastOnce),
                v5::Filter::new("edgefn/gw-01/down/#", QoS::ExactlyOnce),
            ],
            None,
        )
        .await;
    assert_eq!(
        a.return_codes,
        vec![
            v5::SubscribeReasonCode::NotAuthorized,
            v5::SubscribeReasonCode::NotAuthorized,
            v5::SubscribeReasonCode::Success(QoS::AtLeastOnce),
            v5::SubscribeReasonCode::Success(QoS::ExactlyOnce),
        ]
    );
    // MQTT 3.1.1: acknowledged, dropped; SUBACK 0x80.
    let mut d4 = {
        let s = TcpStream::connect(("127.0.0.1", t.port))
            .await
            .expect("test I/O");
        C4 {
            s,
            buf: BytesMut::new(),
        }
    };
    d4.send(v4::Packet::Connect(v4::Connect {
        protocol: rumqttc::mqttbytes::Protocol::V4,
        keep_alive: 60,
        client_id: "gw-01.v4".into(),
        clean_session: true,
        last_will: None,
        login: Some(v4::Login {
            username: "gw-01".into(),
            password: "gw-01-pw".into(),
        }),
    }))
    .await;
    assert!(
        matches!(d4.recv().await, v4::Packet::ConnAck(a) if a.code == v4::ConnectReturnCode::Success)
    );
    d4.send(v4::Packet::Publish(pub4(
        "edgefn/gw-02/up/x",
        Q::AtLeastOnce,
        4,
        "no",
    )))
    .await;
    assert_eq!(d4.recv().await, v4::Packet::PubAck(v4::PubAck::new(4)));
    d4.send(v4::Packet::Subscribe(v4::Subscribe::new(
        "edgefn/gw-02/down/#",
        Q::AtLeastOnce,
    )))
    .await;
    match d4.recv().await {
        v4::Packet::SubAck(a) => assert_eq!(a.return_codes, vec![v4::SubscribeReasonCode::Failure]),
        p => panic!("{p:?}"),
    }
    d4.ping().await;
    // Only what the device may publish reaches the cloud's subscriber.
    d.pub1("edgefn/gw-01/up/ok", 5, "ok").await;
    let m = cloud.publish().await;
    assert_eq!(&m.payload[..], b"ok");
}

/// The agent's local password: a wrong or missing one is refused (MQTT 5 CONNACK 0x86 Bad
/// user name or password, MQTT 3.1.1 0x04), and `$` filters are refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mqtt5_3_2_2_2_bad_password_0x86_agent_local_password() {
    let t = Target::start(Kind::Agent).await;
    let (_, a) = C5::connect(&t, "nopw", |c| c.login = None).await;
    assert_eq!(a.code, v5::ConnectReturnCode::BadUserNamePassword);
    let (_, a) = C5::connect(&t, "badpw", |c| {
        c.login = Some(v5::Login {
            username: "x".into(),
            password: "wrong".into(),
        })
    })
    .await;
    assert_eq!(a.code, v5::ConnectReturnCode::BadUserNamePassword);
    let mut c4 = C4 {
        s: TcpStream::connect(("127.0.0.1", t.port))
            .await
            .expect("test I/O"),
        buf: BytesMut::new(),
    };
    c4.send(v4::Packet::Connect(v4::Connect {
        protocol: rumqttc::mqttbytes::Protocol::V4,
        keep_alive: 60,
        client_id: "v4".into(),
        clean_session: true,
        last_will: None,
        login: Some(v4::Login {
            username: "x".into(),
            password: "wrong".into(),
        }),
    }))
    .await;
    assert!(
        matches!(c4.recv().await, v4::Packet::ConnAck(a) if a.code == v4::ConnectReturnCode::BadUserNamePassword)
    );
    let (mut c, _) = C5::ok(&t, "dollar-sub", |_| {}).await;
    let a = c
        .subscribe(1, vec![v5::Filter::new("$SYS/#", QoS::AtMostOnce)], None)
        .await;
    assert!(!matches!(
        a.return_codes[0],
        v5::SubscribeReasonCode::Success(_)
    ));
}

// ---------------------------------------------------------------------------------------------
// MQTT 5 properties and options.

/// Connects a client that keeps its session for 300 s.
fn keep300(c: &mut Connect5) {
    c.connect.clean_start = false;
    c.connect.properties = Some(v5::ConnectProperties {
        session_expiry_interval: Some(300),
        ..props()
    });
}

/// MQTT 5 [MQTT-3.3.2-5]: a message whose expiry interval passed before onward delivery
/// started is not delivered; [MQTT-3.3.2-6]: one delivered later carries the interval less the
/// time it waited in the server.
async fn message_expiry(t: Target) {
    let (mut r, _) = C5::ok(&t, "expiry-r", |c| {
        keep300(c);
        c.connect.clean_start = true;
    })
    .await;
    r.sub(&t.topic("exp/#"), QoS::AtLeastOnce).await;
    r.disconnect().await;
    let (mut p, _) = C5::ok(&t, "expiry-p", |_| {}).await;
    for (i, (name, expiry)) in [("short", Some(1)), ("long", Some(100)), ("end", None)]
        .into_iter()
        .enumerate()
    {
        let mut m = publish5(
            &t.topic(&format!("exp/{name}")),
            QoS::AtLeastOnce,
            i as u16 + 1,
            name,
        );
        m.properties = Some(v5::PublishProperties {
            message_expiry_interval: expiry,
            ..Default::default()
        });
        p.send(Packet::Publish(m)).await;
        assert!(matches!(p.recv().await, Packet::PubAck(_)));
    }
    tokio::time::sleep(Duration::from_millis(2500)).await;
    let (mut r, ack) = C5::ok(&t, "expiry-r", keep300).await;
    assert!(ack.session_present);
    let got = until(&mut r, &t.topic("exp/end")).await;
    assert_eq!(payloads(&got), ["long"]);
    let left = got[0]
        .properties
        .as_ref()
        .and_then(|p| p.message_expiry_interval);
    assert!(
        left.is_some_and(|s| (1..100).contains(&s)),
        "expiry sent {left:?}"
    );
}
conformance!(mqtt5_3_3_2_5_message_expiry, message_expiry);

/// MQTT 5 [MQTT-3.3.2-4] (Payload Format Indicator), [MQTT-3.3.2-20] (Content Type),
/// [MQTT-3.3.2-15] (Response Topic), [MQTT-3.3.2-16] (Correlation Data), [MQTT-3.3.2-17] and
/// [MQTT-3.3.2-18] (User Properties, in order): forwarded unaltered to the receiver.
async fn properties_forwarded(t: Target) {
    let (mut r, _) = C5::ok(&t, "props-r", |_| {}).await;
    r.sub(&t.topic("props"), QoS::AtLeastOnce).await;
    let (mut p, _) = C5::ok(&t, "props-p", |_| {}).await;
    let sent = v5::PublishProperties {
        payload_format_indicator: Some(1),
        content_type: Some("application/json".into()),
        response_topic: Some(t.topic("props/reply")),
        correlation_data: Some(Bytes::from_static(b"\x00\x01req-7")),
        user_properties: vec![
            ("a".into(), "1".into()),
            ("b".into(), "2".into()),
            ("a".into(), "3".into()),
        ],
        ..Default::default()
    };
    let mut m = publish5(&t.topic("props"), QoS::AtLeastOnce, 1, "{}");
    m.properties = Some(sent.clone());
    p.send(Packet::Publish(m)).await;
    assert!(matches!(p.recv().await, Packet::PubAck(_)));
    let got = r.publish().await.properties.expect("properties");
    assert_eq!(got.payload_format_indicator, sent.payload_format_indicator);
    assert_eq!(got.content_type, sent.content_type);
    assert_eq!(got.response_topic, sent.response_topic);
    assert_eq!(got.correlation_data, sent.correlation_data);
    assert_eq!(got.user_properties, sent.user_properties);
}
conformance!(
    mqtt5_3_3_2_4_15_16_17_18_20_properties_forwarded_unaltered,
    properties_forwarded
);

/// MQTT 5 [MQTT-3.8.3-3]: with No Local, a client's own messages are not sent back to it.
async fn no_local(t: Target) {
    let (mut c, _) = C5::ok(&t, "nolocal", |_| {}).await;
    let mut f = v5::Filter::new(t.topic("nl"), QoS::AtLeastOnce);
    f.nolocal = true;
    c.subscribe(1, vec![f], None).await;
    c.pub1(&t.topic("nl"), 2, "mine").await;
    let (mut o, _) = C5::ok(&t, "nolocal-other", |_| {}).await;
    o.pub1(&t.topic("nl"), 1, "theirs").await;
    assert_eq!(&c.publish().await.payload[..], b"theirs");
}
conformance!(mqtt5_3_8_3_3_no_local, no_local);

/// MQTT 5 [MQTT-3.3.1-12], [MQTT-3.3.1-13]: Retain As Published keeps a live message's retain
/// flag; without it the flag is 0.
async fn retain_as_published(t: Target) {
    let topic = t.topic("rap");
    let (mut keep, _) = C5::ok(&t, "rap-1", |_| {}).await;
    let mut f = v5::Filter::new(&topic, QoS::AtLeastOnce);
    f.preserve_retain = true;
    keep.subscribe(1, vec![f], None).await;
    let (mut plain, _) = C5::ok(&t, "rap-0", |_| {}).await;
    plain.sub(&topic, QoS::AtLeastOnce).await;
    let (mut p, _) = C5::ok(&t, "rap-p", |_| {}).await;
    let mut m = publish5(&topic, QoS::AtLeastOnce, 1, "r");
    m.retain = true;
    p.send(Packet::Publish(m)).await;
    assert!(matches!(p.recv().await, Packet::PubAck(_)));
    assert!(keep.publish().await.retain);
    assert!(!plain.publish().await.retain);
    // Clear it.
    let mut m = publish5(&topic, QoS::AtLeastOnce, 2, "");
    m.retain = true;
    p.send(Packet::Publish(m)).await;
    assert!(matches!(p.recv().await, Packet::PubAck(_)));
}
conformance!(mqtt5_3_3_1_12_13_retain_as_published, retain_as_published);

/// MQTT 5 [MQTT-3.3.1-9] (Retain Handling 0: retained messages sent at every subscribe),
/// [MQTT-3.3.1-10] (1: only when the subscription did not exist), [MQTT-3.3.1-11] (2: never).
async fn retain_handling(t: Target) {
    let topic = t.topic("rh/x");
    let (mut p, _) = C5::ok(&t, "rh-p", |_| {}).await;
    let mut m = publish5(&topic, QoS::AtLeastOnce, 1, "kept");
    m.retain = true;
    p.send(Packet::Publish(m)).await;
    assert!(matches!(p.recv().await, Packet::PubAck(_)));
    let (mut c, _) = C5::ok(&t, "rh", |_| {}).await;
    let filter = |f: String, rule| {
        let mut f = v5::Filter::new(f, QoS::AtMostOnce);
        f.retain_forward_rule = rule;
        vec![f]
    };
    use v5::RetainForwardRule as R;
    for _ in 0..2 {
        c.subscribe(1, filter(t.topic("rh/#"), R::OnEverySubscribe), None)
            .await;
        let m = c.publish().await;
        assert!(m.retain && &m.payload[..] == b"kept");
    }
    c.subscribe(2, filter(t.topic("rh/#"), R::OnNewSubscribe), None)
        .await;
    c.ping().await;
    c.subscribe(3, filter(t.topic("rh/+"), R::OnNewSubscribe), None)
        .await;
    assert_eq!(&c.publish().await.payload[..], b"kept");
    c.subscribe(4, filter(t.topic("+/x"), R::Never), None).await;
    c.ping().await;
    let mut m = publish5(&topic, QoS::AtLeastOnce, 2, "");
    m.retain = true;
    p.send(Packet::Publish(m)).await;
    assert!(matches!(p.recv().await, Packet::PubAck(_)));
}
conformance!(mqtt5_3_3_1_9_10_11_retain_handling, retain_handling);

/// MQTT 5 [MQTT-3.1.3-6], [MQTT-3.2.2-16]: an empty client id gets one assigned by the
/// server, sent in CONNACK's Assigned Client Identifier; a session kept under it resumes.
async fn assigned_client_identifier(t: Target) {
    let (c, ack) = C5::ok(&t, "", keep300).await;
    let id = ack
        .properties
        .and_then(|p| p.assigned_client_identifier)
        .expect("an Assigned Client Identifier");
    assert!(!id.is_empty());
    c.disconnect().await;
    let (_, again) = C5::ok(&t, &id, keep300).await;
    assert!(again.session_present);
}
conformance!(
    mqtt5_3_2_2_16_assigned_client_identifier,
    assigned_client_identifier
);

/// MQTT 5 §3.3.2.3.4 [MQTT-3.3.2-12]: a Topic Alias the client set maps to its topic for the
/// rest of the connection (a PUBLISH with an empty topic and the alias reaches the topic's
/// subscribers), and not beyond it: a new connection using it without setting it is a protocol
/// error (DISCONNECT 0x82).
async fn topic_alias(t: Target) {
    let (mut r, _) = C5::ok(&t, "alias-r", |_| {}).await;
    r.sub(&t.topic("alias"), QoS::AtLeastOnce).await;
    let (mut p, _) = C5::ok(&t, "alias-p", |_| {}).await;
    let aliased = |topic: &str, pkid, payload| {
        let mut m = publish5(topic, QoS::AtLeastOnce, pkid, payload);
        m.properties = Some(v5::PublishProperties {
            topic_alias: Some(1),
            ..Default::default()
        });
        Packet::Publish(m)
    };
    p.send(aliased(&t.topic("alias"), 1, "set")).await;
    assert!(matches!(p.recv().await, Packet::PubAck(_)));
    p.send(aliased("", 2, "used")).await;
    assert!(matches!(p.recv().await, Packet::PubAck(_)));
    for want in ["set", "used"] {
        let m = r.publish().await;
        assert_eq!(
            (m.topic, &m.payload[..]),
            (Bytes::from(t.topic("alias")), want.as_bytes())
        );
        r.send(Packet::PubAck(v5::PubAck::new(m.pkid, None))).await;
    }
    p.disconnect().await;
    let (mut p, _) = C5::ok(&t, "alias-p", |_| {}).await;
    p.send(aliased("", 3, "unset")).await;
    assert_eq!(
        p.closed().await,
        Some(v5::DisconnectReasonCode::ProtocolError)
    );
}
conformance!(
    mqtt5_3_3_2_12_topic_alias_per_connection,
    topic_alias,
    mosquitto: "Mosquitto 2.0.11 closes the connection without a DISCONNECT (no reason code; §4.13.1 says it SHOULD send one)"
);

/// MQTT 5 [MQTT-3.1.3-9]: the will is not published when the client is back before its Will
/// Delay Interval has passed; it is published once the interval passed without it.
async fn will_delay(t: Target) {
    let (mut s, _) = C5::ok(&t, "will-s", |_| {}).await;
    s.sub(&t.topic("will"), QoS::AtLeastOnce).await;
    let with_will = |c: &mut Connect5| {
        keep300(c);
        c.will = Some(v5::LastWill {
            topic: Bytes::from(t.topic("will")),
            message: Bytes::from_static(b"gone"),
            qos: QoS::AtLeastOnce,
            retain: false,
            properties: Some(v5::LastWillProperties {
                delay_interval: Some(2),
                payload_format_indicator: None,
                message_expiry_interval: None,
                content_type: None,
                response_topic: None,
                correlation_data: None,
                user_properties: Vec::new(),
            }),
        });
    };
    let (w, _) = C5::ok(&t, "will-w", with_will).await;
    drop(w); // No DISCONNECT: the will is due, after 2 s.
    let (w, _) = C5::ok(&t, "will-w", with_will).await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    s.ping().await;
    drop(w);
    let m = s.publish().await;
    assert_eq!(&m.payload[..], b"gone");
}
conformance!(mqtt5_3_1_3_9_will_delay, will_delay);

/// MQTT 5 [MQTT-3.1.2-23]: a session with an expiry interval above 0 is kept after the
/// connection closes (CONNACK Session Present on return, messages published meanwhile
/// delivered); §3.14.2.2.2: an interval of 0 set at DISCONNECT ends it.
async fn session_expiry(t: Target) {
    let (mut c, _) = C5::ok(&t, "sess", |c| {
        keep300(c);
        c.connect.clean_start = true;
    })
    .await;
    c.sub(&t.topic("sess"), QoS::AtLeastOnce).await;
    c.disconnect().await;
    let (mut p, _) = C5::ok(&t, "sess-p", |_| {}).await;
    p.pub1(&t.topic("sess"), 1, "meanwhile").await;
    let (mut c, ack) = C5::ok(&t, "sess", keep300).await;
    assert!(ack.session_present);
    let m = c.publish().await;
    assert_eq!(&m.payload[..], b"meanwhile");
    c.send(Packet::PubAck(v5::PubAck::new(m.pkid, None))).await;
    c.send(Packet::Disconnect(v5::Disconnect {
        reason_code: v5::DisconnectReasonCode::NormalDisconnection,
        properties: Some(v5::DisconnectProperties {
            session_expiry_interval: Some(0),
            reason_string: None,
            user_properties: Vec::new(),
            server_reference: None,
        }),
    }))
    .await;
    assert_eq!(c.closed().await, None);
    let (_, ack) = C5::ok(&t, "sess", keep300).await;
    assert!(!ack.session_present);
}
conformance!(mqtt5_3_1_2_23_session_expiry, session_expiry);

/// MQTT 5 [MQTT-3.3.4-3] / [MQTT-3.3.4-4] / [MQTT-3.3.4-5]: a message matching subscriptions
/// with identifiers carries them (all in one copy, or each in its own copy).
async fn subscription_identifiers(t: Target) {
    let (mut c, _) = C5::ok(&t, "subid", |_| {}).await;
    c.subscribe(
        1,
        vec![v5::Filter::new(t.topic("sid/#"), QoS::AtLeastOnce)],
        Some(42),
    )
    .await;
    c.subscribe(
        2,
        vec![v5::Filter::new(t.topic("sid/+"), QoS::AtLeastOnce)],
        Some(7),
    )
    .await;
    c.sub(&t.topic("sid-end"), QoS::AtLeastOnce).await;
    let (mut p, _) = C5::ok(&t, "subid-p", |_| {}).await;
    p.pub1(&t.topic("sid/x"), 1, "x").await;
    p.pub1(&t.topic("sid-end"), 2, "end").await;
    let mut ids: Vec<usize> = until(&mut c, &t.topic("sid-end"))
        .await
        .into_iter()
        .flat_map(|m| {
            m.properties
                .map(|p| p.subscription_identifiers)
                .unwrap_or_default()
        })
        .collect();
    ids.sort();
    assert_eq!(ids, [7, 42]);
}
conformance!(
    mqtt5_3_3_4_3_subscription_identifiers,
    subscription_identifiers
);

// ---------------------------------------------------------------------------------------------
// Shared subscriptions.

/// MQTT 5 §4.8.2: a message matching a shared subscription goes to one member
/// of the group (none gets it twice, every message reaches the group); these brokers take
/// turns, so both members get some.
async fn shared_subscription(t: Target) {
    let mut members = Vec::new();
    for id in ["share-a", "share-b"] {
        let (mut m, _) = C5::ok(&t, id, |_| {}).await;
        m.sub(&format!("$share/g/{}", t.topic("sh")), QoS::AtLeastOnce)
            .await;
        m.sub(&t.topic("sh-end"), QoS::AtLeastOnce).await;
        members.push(m);
    }
    let (mut p, _) = C5::ok(&t, "share-p", |_| {}).await;
    for i in 1..=10u16 {
        p.pub1(&t.topic("sh"), i, &i.to_string()).await;
    }
    p.pub1(&t.topic("sh-end"), 11, "end").await;
    let mut all = Vec::new();
    for m in &mut members {
        let got = payloads(&until(m, &t.topic("sh-end")).await);
        assert!(!got.is_empty(), "a member got nothing");
        all.extend(got);
    }
    all.sort_by_key(|s| s.parse::<u32>().unwrap_or(0));
    let want: Vec<String> = (1..=10).map(|i: u32| i.to_string()).collect();
    assert_eq!(all, want);
}
conformance!(
    mqtt5_4_8_2_shared_subscription_one_member_per_message,
    shared_subscription
);

/// MQTT 5 §3.3.2.3.4 and [MQTT-3.3.2-10]/[MQTT-3.3.2-11]: a server may set Topic Aliases
/// towards a client that allows them (its CONNECT's Topic Alias Maximum), never above that
/// maximum; a PUBLISH using one has an empty topic and means the topic the alias was set to.
async fn topic_alias_server_to_client(t: Target) {
    let (mut r, _) = C5::ok(&t, "alias-in", |c| {
        c.connect.properties = Some(v5::ConnectProperties {
            topic_alias_max: Some(1),
            ..props()
        })
    })
    .await;
    r.sub(&t.topic("alias-in/#"), QoS::AtMostOnce).await;
    let (mut p, _) = C5::ok(&t, "alias-in-p", |_| {}).await;
    for (i, topic) in ["a", "a", "b", "a"].into_iter().enumerate() {
        p.pub1(&t.topic(&format!("alias-in/{topic}")), i as u16 + 1, topic)
            .await;
    }
    let mut aliases = HashMap::new();
    for _ in 0..4 {
        let m = r.publish().await;
        let alias = m.properties.and_then(|p| p.topic_alias);
        let topic = match (alias, m.topic.is_empty()) {
            (Some(a), true) => aliases.get(&a).cloned().expect("an alias set before"),
            (Some(a), false) => {
                assert!(a == 1, "alias {a} above the maximum of 1");
                aliases.insert(a, m.topic.clone());
                m.topic
            }
            (None, _) => m.topic,
        };
        assert_eq!(
            topic,
            Bytes::from(t.topic(&format!("alias-in/{}", String::from_utf8_lossy(&m.payload))))
        );
    }
    assert!(!aliases.is_empty(), "no alias was set");
}
conformance!(
    mqtt5_3_3_2_11_topic_alias_server_to_client,
    topic_alias_server_to_client,
    mosquitto: "Mosquitto 2.0.11 sets no topic aliases towards clients"
);

/// MQTT 5 [MQTT-3.3.4-9] and §4.9: a client that has more QoS 2 messages awaiting their
/// PUBCOMP than the server's Receive Maximum is disconnected with 0x93 (Receive Maximum
/// exceeded).
async fn receive_maximum_exceeded(t: Target) {
    let (mut c, ack) = C5::ok(&t, "flow", |_| {}).await;
    let max = ack
        .properties
        .and_then(|p| p.receive_max)
        .unwrap_or(u16::MAX);
    assert!(max < 1000, "a Receive Maximum this test can exceed: {max}");
    for i in 1..=max + 1 {
        c.send(Packet::Publish(publish5(
            &t.topic("flow"),
            QoS::ExactlyOnce,
            i,
            "x",
        )))
        .await;
    }
    assert_eq!(
        c.closed().await,
        Some(v5::DisconnectReasonCode::ReceiveMaximumExceeded)
    );
}
conformance!(
    mqtt5_3_3_4_9_receive_maximum_exceeded_0x93,
    receive_maximum_exceeded,
    mosquitto: "Mosquitto 2.0.11 keeps the connection open past its Receive Maximum (no DISCONNECT 0x93)"
);

/// MQTT 5 [MQTT-3.3.4-7]: the server sends no more unacknowledged QoS 1 messages than the
/// client's Receive Maximum; the next goes once one is acknowledged.
async fn client_receive_maximum(t: Target) {
    let (mut r, _) = C5::ok(&t, "recvmax", |c| {
        c.connect.properties = Some(v5::ConnectProperties {
            receive_maximum: Some(2),
            ..props()
        })
    })
    .await;
    r.sub(&t.topic("recvmax"), QoS::AtLeastOnce).await;
    let (mut p, _) = C5::ok(&t, "recvmax-p", |_| {}).await;
    for i in 1..=3u16 {
        p.pub1(&t.topic("recvmax"), i, &i.to_string()).await;
    }
    let first = r.publish().await;
    let second = r.publish().await;
    assert_eq!(
        (&first.payload[..], &second.payload[..]),
        (&b"1"[..], &b"2"[..])
    );
    r.ping().await;
    r.send(Packet::PubAck(v5::PubAck::new(first.pkid, None)))
        .await;
    assert_eq!(&r.publish().await.payload[..], b"3");
}
conformance!(mqtt5_3_3_4_7_client_receive_maximum, client_receive_maximum);

/// MQTT 5 §3.2.2.3.14 [MQTT-3.2.2-21]/[MQTT-3.2.2-22]: a broker with a keep alive limit
/// ([`BrokerOptions::max_keep_alive`], not set by the cloud or the agent) tells a client that
/// asks for more, or for none, its Server Keep Alive and holds it to it: a client silent past
/// 1.5 times that is disconnected with 0x8D (Keep Alive timeout); one that asks for less is told
/// nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mqtt5_3_2_2_21_server_keep_alive() {
    let (l, port) = listener().await;
    let broker = Broker::with_options(
        LocalAuth,
        BrokerOptions {
            max_keep_alive: Some(1),
            ..BrokerOptions::default()
        },
    );
    let (stop, rx) = watch::channel(false);
    tokio::spawn(broker.serve(l, rx));
    let t = Target {
        kind: Kind::Agent,
        port,
        stop: Some(stop),
        child: None,
        _dir: None,
    };
    let (mut c, ack) = C5::ok(&t, "ka", |c| c.connect.keep_alive = 0).await;
    assert_eq!(ack.properties.and_then(|p| p.server_keep_alive), Some(1));
    assert_eq!(
        c.closed().await,
        Some(v5::DisconnectReasonCode::KeepAliveTimeout)
    );
    let (_, ack) = C5::ok(&t, "ka-2", |c| c.connect.keep_alive = 1).await;
    assert_eq!(ack.properties.and_then(|p| p.server_keep_alive), None);
}

//! The broker over real TCP with rumqttc clients of both versions: MQTT 5 user properties
//! reach MQTT 5 receivers, retained messages, refusals answered in each version's way, and the
//! publish hook; a store that fails or is slow.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::Duration;

use edgefn_broker::{
    Authenticator, Broker, BrokerOptions, Change, Client, Message, PersistError, Persistence,
    StoreError,
};
use rumqttc::v5::mqttbytes::v5::{Packet as P5, PubAckReason};
use tokio::sync::{mpsc, watch};

/// Users `reader` (reads `open/#`, writes nothing) and `writer` (writes `open/...`).
#[derive(Clone, Debug)]
struct User(String);

impl Client for User {
    fn name(&self) -> &str {
        &self.0
    }
    fn may_publish(&self, topic: &str) -> bool {
        self.0 == "writer" && topic.starts_with("open/")
    }
    fn may_subscribe(&self, filter: &str) -> bool {
        filter.starts_with("open/")
    }
    fn may_receive(&self, topic: &str) -> bool {
        topic.starts_with("open/")
    }
}

struct Auth;

impl Authenticator for Auth {
    type Client = User;
    fn authenticate(&self, username: Option<&str>, password: Option<&str>) -> Option<User> {
        (password == Some("pw")).then(|| User(username.unwrap_or("").to_owned()))
    }
}

async fn start(hook: Option<edgefn_broker::OnPublish>) -> (u16, watch::Sender<bool>) {
    start_with(BrokerOptions {
        on_publish: hook,
        ..BrokerOptions::default()
    })
    .await
}

async fn start_with(options: BrokerOptions) -> (u16, watch::Sender<bool>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let port = listener.local_addr().expect("addr").port();
    let broker = Broker::with_options(Auth, options);
    let (tx, rx) = watch::channel(false);
    tokio::spawn(broker.serve(listener, rx));
    (port, tx)
}

/// An MQTT 5 client; its incoming packets go to the returned channel.
fn v5(port: u16, id: &str, user: &str) -> (rumqttc::v5::AsyncClient, mpsc::UnboundedReceiver<P5>) {
    v5_with(port, id, user, |_| {})
}

/// The same, with options set by `f`.
fn v5_with(
    port: u16,
    id: &str,
    user: &str,
    f: impl FnOnce(&mut rumqttc::v5::MqttOptions),
) -> (rumqttc::v5::AsyncClient, mpsc::UnboundedReceiver<P5>) {
    let mut o = rumqttc::v5::MqttOptions::new(id, "127.0.0.1", port);
    o.set_credentials(user, "pw");
    f(&mut o);
    let (c, mut ev) = rumqttc::v5::AsyncClient::new(o, 10);
    let (tx, rx) = mpsc::unbounded_channel();
    tokio::spawn(async move {
        while let Ok(e) = ev.poll().await {
            if let rumqttc::v5::Event::Incoming(p) = e {
                let _ = tx.send(p);
            }
        }
    });
    (c, rx)
}

async fn next<T>(rx: &mut mpsc::UnboundedReceiver<T>, what: &str, f: impl Fn(&T) -> bool) -> T {
    loop {
        match tokio::time::timeout(Duration::from_secs(10), rx.recv()).await {
            Ok(Some(p)) if f(&p) => return p,
            Ok(Some(_)) => {}
            _ => panic!("no {what}"),
        }
    }
}

#[tokio::test]
async fn mqtt5_properties_retained_messages_refusals_and_the_hook() {
    let seen: Arc<Mutex<Vec<String>>> = Arc::default();
    let s = seen.clone();
    let hook: edgefn_broker::OnPublish = Arc::new(move |m: Message| {
        s.lock().unwrap().push(m.topic);
        Box::pin(async {})
    });
    let (port, _stop) = start(Some(hook)).await;
    use rumqttc::v5::mqttbytes::QoS;

    let (reader, mut rin) = v5(port, "reader-1", "reader");
    next(&mut rin, "CONNACK", |p| matches!(p, P5::ConnAck(_))).await;
    reader.subscribe("open/#", QoS::AtLeastOnce).await.unwrap();
    next(&mut rin, "SUBACK", |p| matches!(p, P5::SubAck(_))).await;

    let (writer, mut win) = v5(port, "writer-1", "writer");
    next(&mut win, "CONNACK", |p| matches!(p, P5::ConnAck(_))).await;
    let props = rumqttc::v5::mqttbytes::v5::PublishProperties {
        user_properties: vec![("edgefn-id".into(), "42".into())],
        ..Default::default()
    };
    writer
        .publish_with_properties("open/a", QoS::AtLeastOnce, true, b"one".to_vec(), props)
        .await
        .unwrap();
    let P5::Publish(p) = next(&mut rin, "the message", |p| matches!(p, P5::Publish(_))).await
    else {
        unreachable!()
    };
    assert_eq!(&p.payload[..], b"one");
    assert_eq!(
        p.properties.unwrap().user_properties,
        vec![("edgefn-id".to_owned(), "42".to_owned())],
        "user properties reach an MQTT 5 receiver"
    );

    // Refused: MQTT 5 says why in the PUBACK.
    writer
        .publish("closed/x", QoS::AtLeastOnce, false, b"no".to_vec())
        .await
        .unwrap();
    let P5::PubAck(ack) = next(
        &mut win,
        "PUBACK",
        |p| matches!(p, P5::PubAck(a) if a.reason != PubAckReason::Success),
    )
    .await
    else {
        unreachable!()
    };
    assert_eq!(ack.reason, PubAckReason::NotAuthorized);
    reader
        .subscribe("closed/#", QoS::AtLeastOnce)
        .await
        .unwrap();
    let P5::SubAck(sa) = next(&mut rin, "SUBACK", |p| matches!(p, P5::SubAck(_))).await else {
        unreachable!()
    };
    assert_eq!(
        sa.return_codes,
        vec![rumqttc::v5::mqttbytes::v5::SubscribeReasonCode::NotAuthorized]
    );

    // The retained message reaches a late MQTT 3.1.1 subscriber, flagged as retained.
    let mut o = rumqttc::MqttOptions::new("reader-2", "127.0.0.1", port);
    o.set_credentials("reader", "pw");
    let (late, mut ev) = rumqttc::AsyncClient::new(o, 10);
    late.subscribe("open/#", rumqttc::QoS::AtLeastOnce)
        .await
        .unwrap();
    let retained = loop {
        match tokio::time::timeout(Duration::from_secs(10), ev.poll()).await {
            Ok(Ok(rumqttc::Event::Incoming(rumqttc::Packet::Publish(p)))) => break p,
            Ok(Ok(_)) => {}
            other => panic!("no retained message: {other:?}"),
        }
    };
    assert!(retained.retain && &retained.payload[..] == b"one");

    // Wrong password: refused.
    let mut o = rumqttc::MqttOptions::new("x", "127.0.0.1", port);
    o.set_credentials("reader", "nope");
    let (_c, mut ev) = rumqttc::AsyncClient::new(o, 10);
    assert!(matches!(
        ev.poll().await,
        Err(rumqttc::ConnectionError::ConnectionRefused(
            rumqttc::ConnectReturnCode::BadUserNamePassword
        ))
    ));

    assert_eq!(
        *seen.lock().unwrap(),
        vec!["open/a".to_owned()],
        "the hook sees accepted messages only"
    );
}

/// A persistent MQTT 5 session asking for `expiry` seconds: connects, returns whether the broker
/// had kept the session and the topics of the messages waiting in it, then disconnects.
async fn visit_v5(port: u16, id: &str, expiry: u32, subscribe: bool) -> (bool, Vec<String>) {
    let (c, mut rx) = v5_with(port, id, "reader", |o| {
        o.set_clean_start(false);
        o.set_session_expiry_interval(Some(expiry));
    });
    let P5::ConnAck(ack) = next(&mut rx, "CONNACK", |p| matches!(p, P5::ConnAck(_))).await else {
        unreachable!()
    };
    if subscribe {
        c.subscribe("open/#", rumqttc::v5::mqttbytes::QoS::AtLeastOnce)
            .await
            .expect("request");
        next(&mut rx, "SUBACK", |p| matches!(p, P5::SubAck(_))).await;
    }
    let mut got = Vec::new();
    while let Ok(Some(p)) = tokio::time::timeout(Duration::from_millis(300), rx.recv()).await {
        if let P5::Publish(p) = p {
            got.push(String::from_utf8_lossy(&p.topic).into_owned());
        }
    }
    c.disconnect().await.expect("request");
    tokio::time::sleep(Duration::from_millis(100)).await;
    (ack.session_present, got)
}

/// The same for MQTT 3.1.1 (`clean session = false`; no expiry of its own).
async fn visit_v4(port: u16, id: &str, subscribe: bool) -> (bool, Vec<String>) {
    let mut o = rumqttc::MqttOptions::new(id, "127.0.0.1", port);
    o.set_credentials("reader", "pw");
    o.set_clean_session(false);
    let (c, mut ev) = rumqttc::AsyncClient::new(o, 10);
    let mut present = None;
    let mut got = Vec::new();
    if subscribe {
        c.subscribe("open/#", rumqttc::QoS::AtLeastOnce)
            .await
            .expect("request");
    }
    while let Ok(Ok(e)) = tokio::time::timeout(Duration::from_millis(300), ev.poll()).await {
        match e {
            rumqttc::Event::Incoming(rumqttc::Packet::ConnAck(a)) => {
                present = Some(a.session_present);
            }
            rumqttc::Event::Incoming(rumqttc::Packet::Publish(p)) => got.push(p.topic),
            _ => {}
        }
    }
    c.disconnect().await.expect("request");
    let _ = tokio::time::timeout(Duration::from_millis(300), ev.poll()).await;
    (present.expect("CONNACK"), got)
}

/// A session ends once its client has been away past its expiry: the MQTT 5 interval it asked
/// for, capped by the broker's limit, which is also what MQTT 3.1.1 sessions get.
#[tokio::test]
async fn persistent_sessions_end_after_their_expiry() {
    let (port, _stop) = start_with(BrokerOptions {
        session_expiry_limit: Some(Duration::from_secs(4)),
        ..BrokerOptions::default()
    })
    .await;
    // Four sessions subscribe and go away: MQTT 5 asking for 1 s, MQTT 5 asking for a day
    // (capped to 4 s), and two MQTT 3.1.1 ones.
    assert!(!visit_v5(port, "short", 1, true).await.0);
    assert!(!visit_v5(port, "long", 86_400, true).await.0);
    assert!(!visit_v4(port, "old-1", true).await.0);
    assert!(!visit_v4(port, "old-2", true).await.0);
    let (writer, mut win) = v5(port, "writer-1", "writer");
    next(&mut win, "CONNACK", |p| matches!(p, P5::ConnAck(_))).await;
    writer
        .publish(
            "open/kept",
            rumqttc::v5::mqttbytes::QoS::AtLeastOnce,
            false,
            b"x".to_vec(),
        )
        .await
        .unwrap();
    next(&mut win, "PUBACK", |p| matches!(p, P5::PubAck(_))).await;

    // 2.5 s later: the 1 s session is gone (with its message); the others are kept.
    tokio::time::sleep(Duration::from_millis(2500)).await;
    assert_eq!(visit_v5(port, "short", 1, false).await, (false, vec![]));
    assert_eq!(
        visit_v5(port, "long", 86_400, false).await,
        (true, vec!["open/kept".to_owned()])
    );
    assert_eq!(
        visit_v4(port, "old-1", false).await,
        (true, vec!["open/kept".to_owned()])
    );

    // Past the limit, the MQTT 3.1.1 session left alone is gone too.
    tokio::time::sleep(Duration::from_millis(3000)).await;
    assert_eq!(visit_v4(port, "old-2", false).await, (false, vec![]));
}

/// A raw MQTT connection: packets written and read with rumqttc's codecs, so that what the
/// broker sends (or does not) is seen as it is.
struct Raw {
    stream: tokio::net::TcpStream,
    buf: bytes::BytesMut,
    v5: bool,
}

impl Raw {
    async fn connect(port: u16, v5: bool) -> (Raw, Option<u32>) {
        use rumqttc::v5::mqttbytes::v5 as m5;
        use tokio::io::AsyncWriteExt;
        let stream = tokio::net::TcpStream::connect(("127.0.0.1", port))
            .await
            .expect("connect");
        let mut raw = Raw {
            stream,
            buf: bytes::BytesMut::new(),
            v5,
        };
        let mut out = bytes::BytesMut::new();
        if v5 {
            m5::Packet::Connect(
                m5::Connect {
                    keep_alive: 30,
                    client_id: "raw".into(),
                    clean_start: true,
                    properties: None,
                },
                None,
                Some(m5::Login::new("writer", "pw")),
            )
            .write(&mut out, None)
            .expect("encode");
        } else {
            let mut c = rumqttc::mqttbytes::v4::Connect::new("raw");
            c.set_login("writer", "pw");
            rumqttc::mqttbytes::v4::Packet::Connect(c)
                .write(&mut out, usize::MAX)
                .expect("encode");
        }
        raw.stream.write_all(&out).await.expect("write");
        let max = if v5 {
            match raw.read5().await {
                Some(P5::ConnAck(a)) => a.properties.and_then(|p| p.max_packet_size),
                other => panic!("no CONNACK: {other:?}"),
            }
        } else {
            match raw.read4().await {
                Some(rumqttc::mqttbytes::v4::Packet::ConnAck(_)) => None,
                other => panic!("no CONNACK: {other:?}"),
            }
        };
        (raw, max)
    }

    async fn publish(&mut self, topic: &str, size: usize) {
        use tokio::io::AsyncWriteExt;
        let mut out = bytes::BytesMut::new();
        if self.v5 {
            let mut p = rumqttc::v5::mqttbytes::v5::Publish::new(
                topic,
                rumqttc::v5::mqttbytes::QoS::AtLeastOnce,
                vec![7u8; size],
                None,
            );
            p.pkid = 1;
            P5::Publish(p).write(&mut out, None).expect("encode");
        } else {
            let mut p = rumqttc::mqttbytes::v4::Publish::new(
                topic,
                rumqttc::mqttbytes::QoS::AtLeastOnce,
                vec![7u8; size],
            );
            p.pkid = 1;
            rumqttc::mqttbytes::v4::Packet::Publish(p)
                .write(&mut out, usize::MAX)
                .expect("encode");
        }
        // The broker may close the connection before it has read everything.
        let _ = self.stream.write_all(&out).await;
    }

    async fn fill(&mut self) -> bool {
        use tokio::io::AsyncReadExt;
        matches!(
            tokio::time::timeout(Duration::from_secs(10), self.stream.read_buf(&mut self.buf)).await,
            Ok(Ok(n)) if n > 0
        )
    }

    /// The next MQTT 5 packet, or `None` once the broker closed the connection.
    async fn read5(&mut self) -> Option<P5> {
        loop {
            match P5::read(&mut self.buf, None) {
                Ok(p) => return Some(p),
                Err(rumqttc::v5::mqttbytes::Error::InsufficientBytes(_)) => {
                    if !self.fill().await {
                        return None;
                    }
                }
                Err(e) => panic!("{e}"),
            }
        }
    }

    /// The next MQTT 3.1.1 packet, or `None` once the broker closed the connection.
    async fn read4(&mut self) -> Option<rumqttc::mqttbytes::v4::Packet> {
        loop {
            match rumqttc::mqttbytes::v4::Packet::read(&mut self.buf, usize::MAX) {
                Ok(p) => return Some(p),
                Err(rumqttc::mqttbytes::Error::InsufficientBytes(_)) => {
                    if !self.fill().await {
                        return None;
                    }
                }
                Err(e) => panic!("{e}"),
            }
        }
    }
}

/// The limit is announced in CONNACK; a packet over it, or a message the owner finds too large
/// for where it goes next, ends the connection: MQTT 5 with DISCONNECT 0x95 (Packet too large)
/// and the reason, MQTT 3.1.1 (which cannot refuse a message) by closing it. Nothing refused
/// reaches a subscriber.
#[tokio::test]
async fn packets_too_large_are_refused_in_each_versions_way() {
    use rumqttc::v5::mqttbytes::v5::DisconnectReasonCode;
    let check: edgefn_broker::TooLarge = Arc::new(|m: &Message| {
        (m.topic == "open/up" && m.payload.len() > 100)
            .then(|| "over the 100 bytes the uplink takes".to_owned())
    });
    let (port, _stop) = start_with(BrokerOptions {
        max_packet: 4096,
        too_large: Some(check),
        ..BrokerOptions::default()
    })
    .await;
    let (_reader, mut seen) = v5(port, "reader", "reader");
    _reader
        .subscribe("open/#", rumqttc::v5::mqttbytes::QoS::AtLeastOnce)
        .await
        .expect("subscribe");
    next(&mut seen, "SUBACK", |p| matches!(p, P5::SubAck(_))).await;

    for (topic, size, why) in [
        ("open/x", 5000, "Maximum Packet Size of 4096 bytes"),
        ("open/up", 200, "over the 100 bytes the uplink takes"),
    ] {
        let (mut raw, max) = Raw::connect(port, true).await;
        assert_eq!(max, Some(4096), "announced in CONNACK");
        raw.publish(topic, size).await;
        match raw.read5().await {
            Some(P5::Disconnect(d)) => {
                assert_eq!(d.reason_code, DisconnectReasonCode::PacketTooLarge);
                let reason = d
                    .properties
                    .and_then(|p| p.reason_string)
                    .unwrap_or_default();
                assert!(reason.contains(why), "{reason}");
            }
            other => panic!("no DISCONNECT for {topic}: {other:?}"),
        }
        assert!(raw.read5().await.is_none(), "closed after the DISCONNECT");

        let (mut raw, max) = Raw::connect(port, false).await;
        assert_eq!(max, None);
        raw.publish(topic, size).await;
        assert!(raw.read4().await.is_none(), "MQTT 3.1.1: closed, no packet");
    }
    // Under both limits, a message goes through (and is the only one the reader sees).
    let (mut raw, _) = Raw::connect(port, true).await;
    raw.publish("open/up", 100).await;
    assert!(matches!(raw.read5().await, Some(P5::PubAck(_))));
    let got = next(&mut seen, "the message", |p| matches!(p, P5::Publish(_))).await;
    let P5::Publish(p) = got else { unreachable!() };
    assert_eq!(p.payload.len(), 100);
    assert!(
        tokio::time::timeout(Duration::from_millis(300), seen.recv())
            .await
            .is_err(),
        "nothing refused was delivered"
    );
}

/// A store for the broker under test: it fails while `fail` is set, holds each commit while its
/// gate is closed, says when a commit starts, and keeps what it committed.
#[derive(Default)]
struct TestStore {
    fail: AtomicBool,
    closed: Mutex<bool>,
    opened: Condvar,
    started: Mutex<Option<mpsc::UnboundedSender<()>>>,
    committed: Mutex<Vec<Change>>,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

impl TestStore {
    fn gate(&self, closed: bool) {
        *lock(&self.closed) = closed;
        self.opened.notify_all();
    }
}

impl Persistence for TestStore {
    fn commit(&self, changes: &[Change]) -> Result<(), StoreError> {
        if let Some(tx) = &*lock(&self.started) {
            let _ = tx.send(());
        }
        let mut closed = lock(&self.closed);
        while *closed {
            closed = self
                .opened
                .wait(closed)
                .unwrap_or_else(std::sync::PoisonError::into_inner);
        }
        drop(closed);
        if self.fail.load(Ordering::SeqCst) {
            return Err(std::io::Error::other("no space left (test)").into());
        }
        lock(&self.committed).extend_from_slice(changes);
        Ok(())
    }
}

async fn start_stored(store: Arc<TestStore>) -> (Arc<Broker<Auth>>, u16, watch::Sender<bool>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let port = listener.local_addr().expect("addr").port();
    let broker = Broker::with_options(
        Auth,
        BrokerOptions {
            persistence: Some(store),
            ..BrokerOptions::default()
        },
    );
    let (tx, rx) = watch::channel(false);
    tokio::spawn(broker.clone().serve(listener, rx));
    (broker, port, tx)
}

fn message(topic: &str) -> Message {
    Message::new(
        topic,
        edgefn_broker::Bytes::from_static(b"x"),
        edgefn_broker::QoS::AtLeastOnce,
        false,
    )
}

/// A message kept for a persistent session is acknowledged only once it is stored, and a
/// failed commit is an error to whoever published it: `publish_many` returns it; a client's
/// QoS 1 PUBLISH gets no PUBACK but the end of its connection (MQTT 5: DISCONNECT 0x80 with
/// the reason; MQTT 3.1.1: closed), so that it sends the message again.
#[tokio::test]
async fn a_failed_commit_is_an_error_to_the_publisher() {
    use rumqttc::v5::mqttbytes::v5::DisconnectReasonCode;
    let store = Arc::new(TestStore::default());
    let (broker, port, _stop) = start_stored(store.clone()).await;
    // A persistent session subscribed to `open/#`, away: what it should get is stored.
    visit_v5(port, "away", 3600, true).await;

    broker
        .publish_many(vec![message("open/a")])
        .await
        .expect("stored");
    assert!(
        store.committed.lock().unwrap().iter().any(
            |c| matches!(c, Change::Keep { client_id, message, .. } if client_id == "away" && message.topic == "open/a")
        ),
        "publish_many returns after the commit"
    );

    store.fail.store(true, Ordering::SeqCst);
    let err = broker
        .publish_many(vec![message("open/b")])
        .await
        .expect_err("a failed commit is an error");
    assert!(matches!(err, PersistError::Failed(_)), "{err:?}");
    let source = std::error::Error::source(&err).expect("the store's error is kept as the source");
    assert_eq!(source.to_string(), "no space left (test)");

    let (mut raw, _) = Raw::connect(port, true).await;
    raw.publish("open/c", 10).await;
    match raw.read5().await {
        Some(P5::Disconnect(d)) => {
            assert_eq!(d.reason_code, DisconnectReasonCode::UnspecifiedError);
            let reason = d
                .properties
                .and_then(|p| p.reason_string)
                .unwrap_or_default();
            assert!(reason.contains("no space left (test)"), "{reason}");
        }
        other => panic!("no DISCONNECT, no PUBACK: {other:?}"),
    }
    assert!(raw.read5().await.is_none(), "closed after the DISCONNECT");
    let (mut raw, _) = Raw::connect(port, false).await;
    raw.publish("open/c", 10).await;
    assert!(raw.read4().await.is_none(), "MQTT 3.1.1: closed, no PUBACK");

    // The store works again: so does publishing.
    store.fail.store(false, Ordering::SeqCst);
    let (mut raw, _) = Raw::connect(port, true).await;
    raw.publish("open/d", 10).await;
    assert!(matches!(raw.read5().await, Some(P5::PubAck(_))));
    broker
        .publish_many(vec![message("open/e")])
        .await
        .expect("stored");
}

/// While a commit is on the disk, only what waits for it waits: the PUBACK of the message being
/// stored comes after the commit, and meanwhile other clients connect, subscribe and exchange
/// messages (the broker's lock is never held around I/O).
#[tokio::test]
async fn a_slow_store_holds_up_only_what_waits_for_it() {
    use rumqttc::v5::mqttbytes::QoS;
    let store = Arc::new(TestStore::default());
    let (started_tx, mut started) = mpsc::unbounded_channel();
    *store.started.lock().unwrap() = Some(started_tx);
    let (broker, port, _stop) = start_stored(store.clone()).await;
    visit_v5(port, "away", 3600, true).await;
    while started.try_recv().is_ok() {}

    store.gate(true);
    let (mut raw, _) = Raw::connect(port, true).await;
    raw.publish("open/slow", 10).await;
    // The commit of the message kept for `away` has started, and is held.
    started.recv().await.expect("a commit");

    let (reader, mut rin) = v5(port, "live-reader", "reader");
    next(&mut rin, "CONNACK", |p| matches!(p, P5::ConnAck(_))).await;
    reader
        .subscribe("open/live", QoS::AtMostOnce)
        .await
        .unwrap();
    next(&mut rin, "SUBACK", |p| matches!(p, P5::SubAck(_))).await;
    let (writer, mut win) = v5(port, "live-writer", "writer");
    next(&mut win, "CONNACK", |p| matches!(p, P5::ConnAck(_))).await;
    writer
        .publish("open/live", QoS::AtMostOnce, false, b"hi".to_vec())
        .await
        .unwrap();
    next(&mut rin, "the live message", |p| {
        matches!(p, P5::Publish(_))
    })
    .await;
    assert!(broker.connected() >= 3, "the broker's state answers");

    // The commit is still held, so the PUBACK cannot have been sent.
    let mut byte = [0u8; 1];
    assert!(
        raw.buf.is_empty()
            && matches!(raw.stream.try_read(&mut byte), Err(e) if e.kind() == std::io::ErrorKind::WouldBlock),
        "no PUBACK before the commit"
    );
    store.gate(false);
    assert!(matches!(raw.read5().await, Some(P5::PubAck(_))));
}

/// What the owner sends a client arrives in the order it was sent: 1,000 numbered QoS 1
/// messages, half of them stored, through one connection's queue and its inflight window.
#[tokio::test]
async fn a_clients_messages_arrive_in_the_order_they_were_sent() {
    let store = Arc::new(TestStore::default());
    let (broker, port, _stop) = start_stored(store).await;
    let (reader, mut rin) = v5_with(port, "ordered", "reader", |o| {
        o.set_clean_start(false);
        o.set_session_expiry_interval(Some(3600));
    });
    next(&mut rin, "CONNACK", |p| matches!(p, P5::ConnAck(_))).await;
    reader
        .subscribe("open/#", rumqttc::v5::mqttbytes::QoS::AtLeastOnce)
        .await
        .unwrap();
    next(&mut rin, "SUBACK", |p| matches!(p, P5::SubAck(_))).await;
    for n in 0..1000u32 {
        let mut m = message("open/n");
        m.payload = edgefn_broker::Bytes::from(n.to_string());
        if n % 2 == 0 {
            broker.publish(m);
        } else {
            broker.publish_many(vec![m]).await.expect("stored");
        }
    }
    for n in 0..1000u32 {
        let P5::Publish(p) = next(&mut rin, "the next message", |p| {
            matches!(p, P5::Publish(_))
        })
        .await
        else {
            unreachable!()
        };
        assert_eq!(String::from_utf8_lossy(&p.payload), n.to_string());
    }
}

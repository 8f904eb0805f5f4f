//! The broker over real TCP with rumqttc clients of both versions: MQTT 5 user properties
//! reach MQTT 5 receivers, retained messages, refusals answered in each version's way, and the
//! publish hook.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use edgefn_broker::{Authenticator, Broker, BrokerOptions, Client, Message};
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

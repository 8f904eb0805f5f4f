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
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let port = listener.local_addr().expect("addr").port();
    let broker = Broker::with_options(
        Auth,
        BrokerOptions {
            on_publish: hook,
            ..BrokerOptions::default()
        },
    );
    let (tx, rx) = watch::channel(false);
    tokio::spawn(broker.serve(listener, rx));
    (port, tx)
}

/// An MQTT 5 client; its incoming packets go to the returned channel.
fn v5(port: u16, id: &str, user: &str) -> (rumqttc::v5::AsyncClient, mpsc::UnboundedReceiver<P5>) {
    let mut o = rumqttc::v5::MqttOptions::new(id, "127.0.0.1", port);
    o.set_credentials(user, "pw");
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

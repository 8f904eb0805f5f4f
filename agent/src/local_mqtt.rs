//! The device's local MQTT listener: local sensors and programs publish onto the device bus and
//! subscribe to what is on it, with any MQTT 3.1.1 or 5 client. It is the `edgefn-broker`
//! broker, on loopback by default (`localMqtt:`), with a password required when it listens
//! beyond this machine (`localMqttPassword:`).
//!
//! What a local client publishes is handled like `POST /v1/publish` of the local HTTP endpoint:
//! queued on disk first when a route sends it to the cloud (the PUBACK comes after that), then
//! delivered to the triggered bindings whose filters match. Every other message on the bus (a
//! function's output, a message brought down from the cloud, one posted over HTTP, one a
//! continuous function published) is delivered to the local subscribers. A client's own
//! messages reach the other local subscribers through the broker itself, never twice.
//! Topics starting with `$` are reserved. A message a route sends to the cloud that is larger
//! than the cloud's broker takes is refused where it enters: MQTT 5 clients get DISCONNECT
//! 0x95 (Packet too large) with the reason, MQTT 3.1.1 clients (which have no way to be told)
//! are disconnected.

use std::sync::{Arc, Weak};

use edgefn_broker::{Authenticator, Broker, BrokerOptions, Bytes, Client, Message, QoS};
use edgefn_runtime::Payload;
use tokio::sync::{mpsc, oneshot};

use crate::bus::Bus;

/// A local client: any topic but `$...`.
#[derive(Debug, Clone)]
pub(crate) struct LocalClient {
    name: String,
}

impl Client for LocalClient {
    fn name(&self) -> &str {
        &self.name
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

/// Local credentials: none needed, unless a password is configured (any user name).
#[derive(Debug)]
pub(crate) struct LocalAuth {
    password_hash: Option<[u8; 32]>,
}

fn sha256(s: &str) -> [u8; 32] {
    use sha2::Digest;
    sha2::Sha256::digest(s.as_bytes()).into()
}

impl Authenticator for LocalAuth {
    type Client = LocalClient;
    fn authenticate(&self, username: Option<&str>, password: Option<&str>) -> Option<LocalClient> {
        if let Some(want) = &self.password_hash {
            let got = sha256(password?);
            // Constant time: compare every byte.
            if got.iter().zip(want).fold(0u8, |acc, (a, b)| acc | (a ^ b)) != 0 {
                return None;
            }
        }
        Some(LocalClient {
            name: username.unwrap_or("local").to_owned(),
        })
    }
}

/// The local broker of a running agent.
pub(crate) type LocalBroker = Broker<LocalAuth>;

/// A message from a local client, and who waits for it to be accepted.
type Ingested = (String, Payload, oneshot::Sender<()>);

/// Most messages accepted together (one outbox commit for those routed up).
const INGEST_BATCH: usize = 1024;

/// Messages from local clients waiting to be accepted, at most, before the broker's hook falls
/// back to waiting for room (see [`broker`]).
const INGEST_QUEUE: usize = 8 * INGEST_BATCH;

/// The longest a local client's persistent session outlives its connection.
pub(crate) const LOCAL_SESSION_EXPIRY: std::time::Duration = std::time::Duration::from_secs(3600);

/// A broker that puts what local clients publish on the bus.
///
/// Messages are taken in the order they arrive, from every client, by one task that accepts
/// whatever has queued up in one go: the ones a route sends up are written to the outbox in one
/// commit, and each is acknowledged to its client after that; then they go, in the same order,
/// to the bus's consumer for local clients, which delivers them to the bindings. So a client
/// that streams many messages is not held to one disk commit per message.
///
/// The queue to the ingest task is bounded ([`INGEST_QUEUE`]). The broker's hook is a plain
/// call that cannot wait, made in the order messages arrive: it queues each message there and
/// then. Only when the queue is full (the disk stalls while clients stream) does the message
/// wait for room in its acknowledgement's future instead, which lets messages that arrive in
/// the meantime pass it. The broker holds back reading from a client while its QoS 1
/// acknowledgements wait, which bounds what each client can have outstanding.
pub(crate) fn broker(bus: &Arc<Bus>, password: Option<&str>) -> Arc<LocalBroker> {
    let weak: Weak<Bus> = Arc::downgrade(bus);
    let deliver = bus.local_clients();
    let (tx, mut rx) = mpsc::channel::<Ingested>(INGEST_QUEUE);
    tokio::spawn(async move {
        while let Some(first) = rx.recv().await {
            let mut batch = vec![first];
            while batch.len() < INGEST_BATCH {
                match rx.try_recv() {
                    Ok(m) => batch.push(m),
                    Err(_) => break,
                }
            }
            let Some(bus) = weak.upgrade() else { return };
            let (messages, done): (Vec<(String, Payload)>, Vec<oneshot::Sender<()>>) =
                batch.into_iter().map(|(t, p, d)| ((t, p), d)).unzip();
            bus.queue_from_local_clients(&messages).await;
            for d in done {
                let _ = d.send(());
            }
            drop(bus);
            for m in messages {
                let _ = deliver.send(m).await;
            }
        }
    });
    let check = Arc::downgrade(bus);
    let options = BrokerOptions {
        // A message routed to the cloud that its broker cannot take ends the client's
        // connection before anything is done with it: MQTT 5 DISCONNECT 0x95 (Packet too
        // large) with the reason; MQTT 3.1.1 closes it.
        too_large: Some(Arc::new(move |m: &Message| {
            let bus = check.upgrade()?;
            bus.too_large_up(&m.topic, m.payload.len())
                .err()
                .map(|e| e.to_string())
        })),
        on_publish: Some(Arc::new(move |m: Message| {
            let (done, accepted) = oneshot::channel();
            let full = match tx.try_send((m.topic, payload_from(m.payload.to_vec()), done)) {
                Ok(()) => None,
                Err(mpsc::error::TrySendError::Full(m)) => Some((tx.clone(), m)),
                Err(mpsc::error::TrySendError::Closed(_)) => None,
            };
            Box::pin(async move {
                if let Some((tx, m)) = full {
                    let _ = tx.send(m).await;
                }
                let _ = accepted.await;
            })
        })),
        // Local programs come and go, some with a new client id each time: a session (and the
        // messages kept for it, in memory) ends after an hour without its client.
        session_expiry_limit: Some(LOCAL_SESSION_EXPIRY),
        ..BrokerOptions::default()
    };
    Broker::with_options(
        LocalAuth {
            password_hash: password.map(sha256),
        },
        options,
    )
}

/// A payload as the bus holds it: the payload contract of [`Payload::from_message`].
pub(crate) fn payload_from(bytes: Vec<u8>) -> Payload {
    Payload::from_message(bytes)
}

/// Delivers a bus message to the local subscribers.
pub(crate) fn echo(broker: &LocalBroker, topic: &str, payload: &Payload) {
    let payload = match payload {
        Payload::Json(v) => serde_json::to_vec(v).unwrap_or_default(),
        Payload::Bytes(b) => b.clone(),
    };
    broker.publish(Message::new(
        topic,
        Bytes::from(payload),
        QoS::AtLeastOnce,
        false,
    ));
}

//! The link to the cloud's MQTT broker: the outbox drained up, messages from the cloud brought
//! down, and function logs shipped best-effort.
//!
//! MQTT 5, client id = the device's name, credentials = its name and token, a persistent session
//! (clean start off, long session expiry) so messages sent down while the device is offline wait
//! for it. Up: each outbox message is published QoS 1 on `edgefn/<device>/up/<topic>` with its
//! sequence number in the user property `edgefn-id`; it leaves the outbox only when the broker
//! acknowledged it (and every message before it). Down: `edgefn/<device>/down/#`, QoS 1.
//! Invocations on request: `edgefn/<device>/invoke/+` at QoS 0 (so no broker keeps a request
//! for an absent device), handed to [`crate::invoke`]; their replies go out at QoS 0 on
//! `edgefn/<device>/reply/<id>`, beside the outbox, not through it. After a
//! lost connection the link reconnects with exponential backoff and jitter, and sends again
//! everything unacknowledged, in order.
//!
//! Size: the largest packet the broker takes is its MQTT 5 CONNACK's Maximum Packet Size, or the
//! configured `mqttMaxPacketSize` (the smaller, when both are known; [`PacketLimit`]). Messages
//! are checked against it where they enter the device bus; one in the outbox that is still too
//! large when its turn comes (queued by an older agent, or before a smaller limit was learned),
//! or that the broker refuses with a negative PUBACK, is set aside and counted, never retried,
//! so the messages behind it flow. A broker that cannot take a message without saying so
//! (MQTT 3.1.1 has no way to; an MQTT 5 broker may announce no limit) closes the connection
//! when it reads it: after such a break the link sends one message at a time until the one at
//! the head is acknowledged, and sets it aside when the broker closed the connection
//! three times (`STRIKES`) in a row with it alone unacknowledged.

use std::collections::{BTreeSet, HashMap, VecDeque};
use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use rumqttc::Outgoing;
use rumqttc::v5::mqttbytes::QoS;
use rumqttc::v5::mqttbytes::v5::{Packet, PublishProperties};
use rumqttc::v5::{AsyncClient, Event, MqttOptions};
use tokio::sync::{mpsc, watch};

use edgefn_schema::wire::{self, Kind, LogRecord, LogStream};

use crate::outbox::Outbox;

/// Messages published at once and not yet acknowledged.
const WINDOW: usize = 1024;

/// The largest MQTT packet the cloud's embedded broker takes, and the default
/// `mqttMaxPacketSize`: a payload of up to 1 MiB plus its topic.
pub const DEFAULT_MAX_PACKET: u32 = (1 << 20) + (64 << 10);

/// A message larger than the cloud's broker takes.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "the message on `{topic}` is too large for the cloud: {size} bytes as an MQTT packet, over the {max} bytes {by}; publish less (e.g. a reference to the data, or the data in parts)"
)]
pub(crate) struct TooLarge {
    /// Its topic on the device bus.
    pub topic: String,
    /// Its size as the packet the link would send, in bytes.
    pub size: usize,
    /// The limit, in bytes.
    pub max: u32,
    /// Where the limit comes from.
    pub by: &'static str,
}

/// The largest packet the cloud's broker takes: the Maximum Packet Size its last CONNACK
/// announced (MQTT 5), capped by the configured limit (`mqttMaxPacketSize`), which alone
/// applies until a broker announces one, and to brokers that announce none.
#[derive(Debug)]
pub struct PacketLimit {
    configured: u32,
    /// 0: none announced.
    announced: AtomicU32,
    /// `edgefn/<device>/up/`, which the link puts before each topic.
    prefix: usize,
}

/// Bytes of the user properties each message carries (`edgefn-id` with a sequence number of
/// up to 20 digits, `edgefn-outbox` with 16 hex digits), at most.
const PROPERTY_BYTES: usize = (1 + 2 + 9 + 2 + 20) + (1 + 2 + 13 + 2 + 16);

impl PacketLimit {
    /// The limit of `device`'s link, `configured` bytes until a broker announces its own.
    pub fn new(device: &str, configured: u32) -> PacketLimit {
        PacketLimit {
            configured,
            announced: AtomicU32::new(0),
            prefix: wire::prefix(device, Kind::Up).len(),
        }
    }

    /// Takes the Maximum Packet Size a CONNACK announced (`None`: it announced none).
    pub(crate) fn announce(&self, max: Option<u32>) {
        self.announced.store(max.unwrap_or(0), Ordering::Relaxed);
    }

    /// The limit in bytes, and where it comes from.
    pub(crate) fn max(&self) -> (u32, &'static str) {
        match self.announced.load(Ordering::Relaxed) {
            a if a != 0 && a < self.configured => {
                (a, "the cloud's broker takes (its Maximum Packet Size)")
            }
            _ => (
                self.configured,
                "the cloud's broker is known to take (mqttMaxPacketSize)",
            ),
        }
    }

    /// The size of the packet that carries a message on `topic` with `payload` bytes up (MQTT 5
    /// with its user properties, QoS 1: an upper bound for MQTT 3.1.1 too).
    pub(crate) fn packet_size(&self, topic: &str, payload: usize) -> usize {
        let remaining = 2 + self.prefix + topic.len() + 2 + 1 + PROPERTY_BYTES + payload;
        let length_bytes = match remaining {
            0..=127 => 1,
            128..=16_383 => 2,
            16_384..=2_097_151 => 3,
            _ => 4,
        };
        1 + length_bytes + remaining
    }

    /// Whether a message on `topic` with `payload` bytes fits.
    pub(crate) fn check(&self, topic: &str, payload: usize) -> Result<(), TooLarge> {
        let size = self.packet_size(topic, payload);
        let (max, by) = self.max();
        if size > max as usize {
            return Err(TooLarge {
                topic: topic.to_owned(),
                size,
                max,
                by,
            });
        }
        Ok(())
    }
}

/// Where the broker is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BrokerAddr {
    /// Host.
    pub host: String,
    /// Port.
    pub port: u16,
    /// TLS (`mqtts://`): `None` for plain TCP; `Some(None)` to verify the broker against the
    /// system's roots; `Some(Some(pem))` against this CA.
    pub tls: Option<Option<Vec<u8>>>,
}

impl BrokerAddr {
    /// Parses `mqtt://host[:port]` (default 1883) or `mqtts://host[:port]` (TLS against the
    /// system's roots, default 8883), IPv6 hosts in brackets (`mqtt://[::1]:1883`), by the one
    /// parser of `schema` ([`edgefn_schema::MqttUrl`]). A user name or password in the URL is
    /// not used: the link always signs in as the device, with its token.
    pub fn parse(url: &str) -> Result<BrokerAddr, edgefn_schema::MqttUrlError> {
        let url = edgefn_schema::MqttUrl::parse(url)?;
        Ok(BrokerAddr {
            host: url.host,
            port: url.port,
            tls: url.tls.then_some(None),
        })
    }

    /// The rumqttc transport for this address.
    fn transport(&self) -> rumqttc::Transport {
        // TLS is rustls with the ring provider (installed once per process).
        let _ = rustls::crypto::ring::default_provider().install_default();
        match &self.tls {
            None => rumqttc::Transport::Tcp,
            Some(None) => rumqttc::Transport::tls_with_default_config(),
            Some(Some(ca)) => rumqttc::Transport::tls(ca.clone(), None, None),
        }
    }
}

/// A message that came down from the cloud: its topic without the namespace, and payload.
#[derive(Debug, Clone)]
pub struct Downlink {
    /// e.g. `commands/greet`.
    pub topic: String,
    /// Bytes.
    pub payload: Vec<u8>,
}

/// An invocation request or reply as the link carries it: the request's id (the last level
/// of its topic) and the JSON bytes.
#[derive(Debug, Clone)]
pub struct RawInvocation {
    /// The request's id.
    pub id: String,
    /// JSON: a `wire::InvokeRequest`, or an `api::InvokeResponse`.
    pub payload: Vec<u8>,
}

/// Where the link hands invocation requests, and where it takes their replies from.
#[derive(Debug)]
pub struct InvokeChannels {
    /// Requests from the cloud (a full queue drops the request: the cloud times out).
    pub requests: mpsc::Sender<RawInvocation>,
    /// Replies to publish.
    pub replies: mpsc::Receiver<RawInvocation>,
}

/// A function log line to ship.
#[derive(Debug, Clone)]
pub(crate) struct ShippedLog {
    /// Binding.
    pub binding: String,
    /// JSON payload.
    pub json: Vec<u8>,
}

/// Function log lines waiting for the link: bounded, keeping the newest. When it is full the
/// oldest line goes, counted per binding, and the count is shipped in its place as a marker line
/// (`… N lines dropped …`, with `"dropped": N`) where the user reads the logs — never a silent gap.
#[derive(Debug)]
pub struct LogQueue {
    inner: std::sync::Mutex<LogQueueInner>,
    ready: tokio::sync::Notify,
    capacity: usize,
}

#[derive(Debug, Default)]
struct LogQueueInner {
    lines: std::collections::VecDeque<ShippedLog>,
    dropped: std::collections::BTreeMap<String, u64>,
}

impl LogQueue {
    /// A queue of at most `capacity` lines.
    pub fn new(capacity: usize) -> Self {
        Self {
            inner: std::sync::Mutex::default(),
            ready: tokio::sync::Notify::new(),
            capacity: capacity.max(1),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, LogQueueInner> {
        self.inner
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Queues a line; when full, the oldest line makes room and is counted.
    pub(crate) fn push(&self, line: ShippedLog) {
        {
            let mut q = self.lock();
            if q.lines.len() >= self.capacity {
                if let Some(old) = q.lines.pop_front() {
                    *q.dropped.entry(old.binding).or_default() += 1;
                }
            }
            q.lines.push_back(line);
        }
        self.ready.notify_one();
    }

    /// The next line to ship: a marker for lines dropped, first, then the oldest line kept.
    fn pop(&self) -> Option<ShippedLog> {
        let mut q = self.lock();
        if let Some((binding, n)) = q.dropped.pop_first() {
            return Some(dropped_marker(&binding, n));
        }
        q.lines.pop_front()
    }

    /// Puts back a line the link could not take just now.
    fn unpop(&self, line: ShippedLog) {
        let mut q = self.lock();
        match serde_json::from_slice::<serde_json::Value>(&line.json)
            .ok()
            .and_then(|v| v.get("dropped").and_then(serde_json::Value::as_u64))
        {
            // A marker goes back as its count.
            Some(n) => *q.dropped.entry(line.binding).or_default() += n,
            None => q.lines.push_front(line),
        }
    }

    /// Lines dropped and not yet shipped as a marker, and lines waiting.
    #[cfg(test)]
    pub(crate) fn counts(&self) -> (u64, usize) {
        let q = self.lock();
        (q.dropped.values().sum(), q.lines.len())
    }

    async fn ready(&self) {
        self.ready.notified().await;
    }
}

/// The marker line shipped in place of `n` dropped lines of `binding`.
fn dropped_marker(binding: &str, n: u64) -> ShippedLog {
    let record = LogRecord {
        ts_ms: edgefn_os::time::now_ms(),
        binding: binding.to_owned(),
        stream: LogStream::Stderr,
        line: format!(
            "… {n} lines dropped (the link to the cloud could not keep up; the newest are kept) …"
        ),
        dropped: Some(n),
    };
    ShippedLog {
        binding: binding.to_owned(),
        json: record.to_json(),
    }
}

/// The MQTT version spoken to the broker.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Protocol {
    /// MQTT 3.1.1 (messages carry no id).
    V4,
    /// MQTT 5 (each message carries its id in the user property `edgefn-id`).
    V5,
    /// MQTT 5 when the broker accepts it, else 3.1.1 (the embedded broker speaks 3.1.1).
    Auto,
}

/// Messages sent and not yet acknowledged, in order, tracked from the sequence numbers the
/// outbox gave them to the packet ids the MQTT client gave them.
#[derive(Debug, Default)]
struct Window {
    unnamed: VecDeque<u64>,
    by_pkid: HashMap<u16, u64>,
    acked: BTreeSet<u64>,
    in_flight: BTreeSet<u64>,
    last_sent: u64,
}

impl Window {
    fn room(&self) -> usize {
        if self.in_flight.len() <= WINDOW / 2 {
            WINDOW - self.in_flight.len()
        } else {
            0
        }
    }

    fn sent(&mut self, seq: u64) {
        self.unnamed.push_back(seq);
        self.in_flight.insert(seq);
        self.last_sent = seq;
    }

    /// The client sent the next publish with `pkid`.
    fn named(&mut self, pkid: u16) {
        if let Some(seq) = self.unnamed.pop_front() {
            self.by_pkid.insert(pkid, seq);
        }
    }

    /// The sequence number of the message sent with `pkid`, while it is in flight.
    fn seq_of(&self, pkid: u16) -> Option<u64> {
        self.by_pkid.get(&pkid).copied()
    }

    /// Message `seq` was set aside instead of sent: the next look at the outbox starts after it.
    fn skip(&mut self, seq: u64) {
        self.last_sent = self.last_sent.max(seq);
    }

    /// The broker acknowledged `pkid`; returns the sequence number up to which the outbox can
    /// forget, when enough has accumulated (or nothing is left in flight).
    fn acked(&mut self, pkid: u16) -> Option<u64> {
        let seq = self.by_pkid.remove(&pkid)?;
        self.in_flight.remove(&seq);
        self.acked.insert(seq);
        let upto = self.in_flight.first().map_or(self.last_sent, |s| s - 1);
        let ready = self.acked.range(..=upto).count();
        if ready >= 512 || (self.in_flight.is_empty() && ready > 0) {
            self.acked = self.acked.split_off(&(upto + 1));
            Some(upto)
        } else {
            None
        }
    }
}

/// What one connection needs.
#[derive(Debug)]
struct Link<'a> {
    broker: &'a BrokerAddr,
    device: &'a str,
    token: &'a str,
    outbox: &'a Outbox,
    down: &'a mpsc::Sender<Downlink>,
    limit: &'a PacketLimit,
    state: &'a LinkState,
    /// Where requests go, and where replies come from (held by one connection at a time).
    invoke: Option<(
        &'a mpsc::Sender<RawInvocation>,
        &'a tokio::sync::Mutex<mpsc::Receiver<RawInvocation>>,
    )>,
}

/// Runs the link until `stop`.
#[allow(clippy::too_many_arguments)]
pub async fn run(
    broker: BrokerAddr,
    protocol: Protocol,
    device: String,
    token: String,
    outbox: Outbox,
    limit: Arc<PacketLimit>,
    down: mpsc::Sender<Downlink>,
    logs: Arc<LogQueue>,
    state: Arc<LinkState>,
    invoke: Option<InvokeChannels>,
    mut stop: watch::Receiver<bool>,
) {
    let (requests, replies) = match invoke {
        Some(c) => (Some(c.requests), Some(tokio::sync::Mutex::new(c.replies))),
        None => (None, None),
    };
    let link = Link {
        broker: &broker,
        device: &device,
        token: &token,
        outbox: &outbox,
        down: &down,
        limit: &limit,
        state: &state,
        invoke: requests.as_ref().zip(replies.as_ref()),
    };
    let mut attempt = 0u32;
    let mut v5 = protocol != Protocol::V4;
    // The message at the head of the window when connections broke, and how many times in a
    // row: a broker that cannot take a message without saying so (MQTT 3.1.1, or no Maximum
    // Packet Size announced) closes the connection each time it reads it.
    let mut suspect: Option<(u64, u32)> = None;
    loop {
        let probe = suspect.map(|(seq, _)| seq);
        let Ended {
            connected: connected_once,
            head,
        } = if v5 {
            connection_v5(&link, probe, &logs, &mut stop).await
        } else {
            connection_v4(&link, probe, &logs, &mut stop).await
        };
        if *stop.borrow() {
            return;
        }
        if let (true, Some(head)) = (connected_once, head) {
            let strikes = match suspect {
                Some((seq, n)) if seq == head => n + 1,
                _ => 1,
            };
            if strikes >= STRIKES {
                set_aside(
                    &outbox,
                    head,
                    &format!("the broker closed the connection {strikes} times in a row with this message alone unacknowledged"),
                )
                .await;
                suspect = None;
            } else {
                suspect = Some((head, strikes));
            }
        }
        if !connected_once && protocol == Protocol::Auto {
            // A broker that does not take MQTT 5 refuses the connection: try the other version.
            v5 = !v5;
        }
        attempt = if connected_once {
            0
        } else {
            attempt.saturating_add(1)
        };
        // Brokers come back quickly: at most ~10 s between attempts (the HTTP poll, which a whole
        // fleet shares with the control plane, backs off further).
        let wait = if !connected_once && protocol == Protocol::Auto && !v5 {
            Duration::ZERO
        } else {
            crate::retry::LINK.delay(attempt)
        };
        tracing::debug!("MQTT: reconnecting in {:.1} s", wait.as_secs_f64());
        tokio::select! {
            () = tokio::time::sleep(wait) => {}
            _ = stop.wait_for(|s| *s) => return,
        }
    }
}

fn nodelay() -> rumqttc::NetworkOptions {
    // Small messages must not wait for Nagle's algorithm.
    let mut net = rumqttc::NetworkOptions::new();
    net.set_tcp_nodelay(true);
    net
}

/// The link's state, shared with the status report: up or down since when, and the last
/// failure. The first failure after a start or a recovery is logged at `warn`, the recovery at
/// `info`; the failed attempts in between at `debug` (they repeat every few seconds).
#[derive(Debug)]
pub struct LinkState {
    state: std::sync::Mutex<edgefn_schema::api::LinkStatus>,
}

impl LinkState {
    /// Down, since now, towards `broker` (`host:port`).
    pub fn new(broker: String) -> Self {
        Self {
            state: std::sync::Mutex::new(edgefn_schema::api::LinkStatus {
                up: false,
                since_ms: edgefn_os::time::now_ms(),
                broker,
                last_error: None,
            }),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, edgefn_schema::api::LinkStatus> {
        self.state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// The link is up.
    fn up(&self, version: &str) {
        let mut s = self.lock();
        let now = edgefn_os::time::now_ms();
        match &s.last_error {
            Some(e) if !s.up => tracing::info!(
                "{version}: connected to the cloud's broker at {} after {:.0} s down (last error: {e})",
                s.broker,
                now.saturating_sub(s.since_ms) as f64 / 1000.0
            ),
            _ => tracing::info!("{version}: connected to {}", s.broker),
        }
        s.up = true;
        s.since_ms = now;
    }

    /// The link failed (`lost`: it was up); the first failure of a run of them is logged.
    fn down(&self, error: &str, lost: bool) {
        let mut s = self.lock();
        let first = s.up || s.last_error.is_none() || lost;
        if first {
            tracing::warn!(
                "MQTT: {} the cloud's broker at {}: {error}; retrying (messages for the cloud wait in the outbox)",
                if lost {
                    "lost the connection to"
                } else {
                    "cannot reach"
                },
                s.broker
            );
        } else {
            tracing::debug!("MQTT: still cannot reach {}: {error}", s.broker);
        }
        if s.up {
            s.since_ms = edgefn_os::time::now_ms();
        }
        s.up = false;
        s.last_error = Some(error.to_owned());
    }

    /// What the status report says.
    pub(crate) fn snapshot(&self) -> edgefn_schema::api::LinkStatus {
        self.lock().clone()
    }
}

/// Connections the broker closes in a row while one message alone waits for its
/// acknowledgement (sent one at a time after the first) before that message is set aside.
const STRIKES: u32 = 3;

/// How a connection ended.
struct Ended {
    /// It was established.
    connected: bool,
    /// The oldest message sent on it and not acknowledged, when it broke.
    head: Option<u64>,
}

/// Largest packet taken from the broker (the cloud sends payloads up to 256 KiB).
const MAX_PACKET: usize = 1 << 20;

async fn forget(outbox: &Outbox, upto: Option<u64>) {
    if let Some(upto) = upto {
        if let Err(e) = outbox.ack(upto).await {
            tracing::error!("{e}");
        }
    }
}

/// Sets aside message `seq` of the outbox, which the broker cannot take, saying why.
async fn set_aside(outbox: &Outbox, seq: u64, why: &str) {
    match outbox.set_aside(seq).await {
        Ok(true) => tracing::warn!("MQTT: message {seq} set aside, not sent again: {why}"),
        Ok(false) => {}
        Err(e) => tracing::error!("{e}"),
    }
}

/// What a connection's event loop yields, whatever the MQTT version.
enum LinkEvent {
    /// CONNACK, with the Maximum Packet Size it announced (MQTT 5).
    Connected(Option<u32>),
    Sent(u16),
    /// PUBACK: whether the broker took the message (MQTT 5 reason codes below 0x80).
    Acked(u16, bool),
    Message(String, Vec<u8>),
    /// The DISCONNECT went out.
    Closed,
    Other,
}

/// Why a connection broke: the MQTT client's error, kept whole.
#[derive(Debug, thiserror::Error)]
enum LinkError {
    /// The MQTT 5 client's.
    #[error("{0}")]
    V5(#[source] rumqttc::v5::ConnectionError),
    /// The MQTT 3.1.1 client's.
    #[error("{0}")]
    V4(#[source] rumqttc::ConnectionError),
    /// The event loop's task ended.
    #[error("the event loop stopped")]
    Stopped,
}

/// The two rumqttc event loops (MQTT 5 and 3.1.1) behind one face.
///
/// `poll` is not cancel-safe: dropped while connecting, it drops a socket that already sent
/// CONNECT and dials again, and the broker, seeing the abandoned CONNECT last, hands the session
/// to it and closes the live connection. So an event loop runs in its own task (see `pump`),
/// never inside a `select!` that could drop it half-way.
trait Events: Send + 'static {
    fn next(&mut self) -> impl Future<Output = Result<LinkEvent, LinkError>> + Send;
}

/// The two rumqttc clients behind one face.
trait Client: Send {
    fn publish(&self, topic: String, payload: Vec<u8>, id: u64) -> bool;
    /// Publishes a log line (QoS 0); false when the client cannot take it now.
    fn publish_log(&self, topic: String, payload: Vec<u8>) -> bool;
    /// Subscribes at QoS 1, or at QoS 0 with `at_most_once`.
    fn subscribe(&self, filter: String, at_most_once: bool) -> impl Future<Output = ()> + Send;
    fn disconnect(&self) -> impl Future<Output = ()> + Send;
}

impl Events for rumqttc::v5::EventLoop {
    async fn next(&mut self) -> Result<LinkEvent, LinkError> {
        Ok(match self.poll().await.map_err(LinkError::V5)? {
            Event::Incoming(Packet::ConnAck(ack)) => {
                LinkEvent::Connected(ack.properties.and_then(|p| p.max_packet_size))
            }
            Event::Outgoing(Outgoing::Publish(pkid)) if pkid != 0 => LinkEvent::Sent(pkid),
            Event::Outgoing(Outgoing::Disconnect) => LinkEvent::Closed,
            Event::Incoming(Packet::PubAck(ack)) => {
                use rumqttc::v5::mqttbytes::v5::PubAckReason;
                let taken = matches!(
                    ack.reason,
                    PubAckReason::Success | PubAckReason::NoMatchingSubscribers
                );
                LinkEvent::Acked(ack.pkid, taken)
            }
            Event::Incoming(Packet::Publish(p)) => LinkEvent::Message(
                String::from_utf8_lossy(&p.topic).into_owned(),
                p.payload.to_vec(),
            ),
            _ => LinkEvent::Other,
        })
    }
}

impl Events for rumqttc::EventLoop {
    async fn next(&mut self) -> Result<LinkEvent, LinkError> {
        use rumqttc::{Event, Packet};
        Ok(match self.poll().await.map_err(LinkError::V4)? {
            Event::Incoming(Packet::ConnAck(_)) => LinkEvent::Connected(None),
            Event::Outgoing(Outgoing::Publish(pkid)) if pkid != 0 => LinkEvent::Sent(pkid),
            Event::Outgoing(Outgoing::Disconnect) => LinkEvent::Closed,
            Event::Incoming(Packet::PubAck(ack)) => LinkEvent::Acked(ack.pkid, true),
            Event::Incoming(Packet::Publish(p)) => LinkEvent::Message(p.topic, p.payload.to_vec()),
            _ => LinkEvent::Other,
        })
    }
}

/// Polls an event loop to its first error in a task of its own; the connection reads the events
/// from the returned channel (which is cancel-safe). Dropping the guard stops the task.
fn pump(mut events: impl Events) -> (mpsc::Receiver<Result<LinkEvent, LinkError>>, AbortOnDrop) {
    let (tx, rx) = mpsc::channel(256);
    let task = tokio::spawn(async move {
        loop {
            let event = events.next().await;
            let end = event.is_err();
            if tx.send(event).await.is_err() || end {
                return;
            }
        }
    });
    (rx, AbortOnDrop(task))
}

/// Aborts a task when dropped.
struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// An MQTT 5 client, and the outbox identity its messages carry.
struct V5(AsyncClient, String);

impl Client for V5 {
    fn publish(&self, topic: String, payload: Vec<u8>, id: u64) -> bool {
        let props = PublishProperties {
            user_properties: vec![
                (wire::PROP_ID.into(), id.to_string()),
                (wire::PROP_OUTBOX.into(), self.1.clone()),
            ],
            ..PublishProperties::default()
        };
        self.0
            .try_publish_with_properties(topic, QoS::AtLeastOnce, false, payload, props)
            .is_ok()
    }
    fn publish_log(&self, topic: String, payload: Vec<u8>) -> bool {
        self.0
            .try_publish(topic, QoS::AtMostOnce, false, payload)
            .is_ok()
    }
    fn subscribe(&self, filter: String, at_most_once: bool) -> impl Future<Output = ()> + Send {
        let client = self.0.clone();
        let qos = if at_most_once {
            QoS::AtMostOnce
        } else {
            QoS::AtLeastOnce
        };
        async move {
            if let Err(e) = client.subscribe(filter, qos).await {
                tracing::warn!("MQTT: subscribe: {e}");
            }
        }
    }
    fn disconnect(&self) -> impl Future<Output = ()> + Send {
        let client = self.0.clone();
        async move {
            let _ = client.disconnect().await;
        }
    }
}

struct V4(rumqttc::AsyncClient);

impl Client for V4 {
    fn publish(&self, topic: String, payload: Vec<u8>, _id: u64) -> bool {
        self.0
            .try_publish(topic, rumqttc::QoS::AtLeastOnce, false, payload)
            .is_ok()
    }
    fn publish_log(&self, topic: String, payload: Vec<u8>) -> bool {
        self.0
            .try_publish(topic, rumqttc::QoS::AtMostOnce, false, payload)
            .is_ok()
    }
    fn subscribe(&self, filter: String, at_most_once: bool) -> impl Future<Output = ()> + Send {
        let client = self.0.clone();
        let qos = if at_most_once {
            rumqttc::QoS::AtMostOnce
        } else {
            rumqttc::QoS::AtLeastOnce
        };
        async move {
            if let Err(e) = client.subscribe(filter, qos).await {
                tracing::warn!("MQTT: subscribe: {e}");
            }
        }
    }
    fn disconnect(&self) -> impl Future<Output = ()> + Send {
        let client = self.0.clone();
        async move {
            let _ = client.disconnect().await;
        }
    }
}

/// One MQTT 5 connection: returns when it breaks (true if it was established).
async fn connection_v5(
    link: &Link<'_>,
    probe: Option<u64>,
    logs: &LogQueue,
    stop: &mut watch::Receiver<bool>,
) -> Ended {
    let mut opts = MqttOptions::new(link.device, link.broker.host.clone(), link.broker.port);
    opts.set_credentials(link.device, link.token);
    opts.set_keep_alive(Duration::from_secs(30));
    opts.set_clean_start(false);
    opts.set_session_expiry_interval(Some(7 * 24 * 3600));
    opts.set_max_packet_size(Some(MAX_PACKET as u32));
    // rumqttc sizes a table by this bound up front (65,535 entries, 14 MB, by default).
    opts.set_outgoing_inflight_upper_limit(WINDOW as u16);
    opts.set_network_options(nodelay());
    opts.set_transport(link.broker.transport());
    let (client, eventloop) = AsyncClient::new(opts, WINDOW * 2);
    let identity = format!("{:016x}", link.outbox.identity);
    connection(
        link,
        V5(client, identity),
        eventloop,
        "MQTT 5",
        probe,
        logs,
        stop,
    )
    .await
}

/// One MQTT 3.1.1 connection (no message ids): returns when it breaks.
async fn connection_v4(
    link: &Link<'_>,
    probe: Option<u64>,
    logs: &LogQueue,
    stop: &mut watch::Receiver<bool>,
) -> Ended {
    let mut opts =
        rumqttc::MqttOptions::new(link.device, link.broker.host.clone(), link.broker.port);
    opts.set_credentials(link.device, link.token);
    opts.set_keep_alive(Duration::from_secs(30));
    opts.set_clean_session(false);
    opts.set_max_packet_size(MAX_PACKET, MAX_PACKET);
    opts.set_transport(link.broker.transport());
    let (client, mut eventloop) = rumqttc::AsyncClient::new(opts, WINDOW * 2);
    eventloop.network_options = nodelay();
    connection(link, V4(client), eventloop, "MQTT 3.1.1", probe, logs, stop).await
}

/// Drives one connection: fills the send window from the outbox, forgets what the broker
/// acknowledged, brings messages down, ships logs. With `probe` (a message at the head of the
/// window when connections broke), messages go one at a time until that one is acknowledged.
#[allow(clippy::too_many_arguments)]
async fn connection(
    link: &Link<'_>,
    client: impl Client,
    events: impl Events,
    version: &str,
    mut probe: Option<u64>,
    logs: &LogQueue,
    stop: &mut watch::Receiver<bool>,
) -> Ended {
    let down_prefix = wire::prefix(link.device, Kind::Down);
    let up_prefix = wire::prefix(link.device, Kind::Up);
    let invoke_prefix = wire::prefix(link.device, Kind::Invoke);
    let mut replies = match link.invoke {
        Some((_, replies)) => Some(replies.lock().await),
        None => None,
    };
    let mut connected = false;
    let mut window = Window::default();
    let mut wake = tokio::time::interval(Duration::from_millis(100));
    let (mut events, _pump) = pump(events);
    let mut batch = Vec::with_capacity(256);
    // The client's queue was full at the last try: logs wait for an event or the tick.
    let mut logs_blocked = false;
    loop {
        if probe.is_some_and(|p| window.last_sent >= p && !window.in_flight.contains(&p)) {
            probe = None;
        }
        let room = match probe {
            Some(_) => usize::from(window.in_flight.is_empty()),
            None => window.room(),
        };
        if connected && room > 0 {
            match link.outbox.peek_after(window.last_sent, room).await {
                Ok(batch) => {
                    for (seq, m) in batch {
                        if let Err(e) = link.limit.check(&m.topic, m.payload.len()) {
                            // Never handed to the client: a packet over the broker's limit
                            // would break the connection, and break it again after each
                            // reconnection.
                            set_aside(link.outbox, seq, &e.to_string()).await;
                            window.skip(seq);
                            continue;
                        }
                        if !client.publish(format!("{up_prefix}{}", m.topic), m.payload, seq) {
                            break;
                        }
                        window.sent(seq);
                    }
                }
                Err(e) => tracing::error!("{e}"),
            }
        }
        // Function logs, as many as the client takes now; the rest wait for the next round.
        if connected {
            logs_blocked = false;
            while let Some(log) = logs.pop() {
                let topic = wire::topic(link.device, Kind::Logs, &log.binding);
                if !client.publish_log(topic, log.json.clone()) {
                    logs.unpop(log);
                    logs_blocked = true;
                    break;
                }
            }
        }
        tokio::select! {
            // All the events waiting, then one look at the outbox (not one per event).
            n = events.recv_many(&mut batch, 256) => {
                if n == 0 {
                    batch.push(Err(LinkError::Stopped));
                }
                for event in batch.drain(..) {
                    match event {
                        Ok(LinkEvent::Connected(max_packet)) => {
                            link.limit.announce(max_packet);
                            if let Some(max) = max_packet {
                                tracing::debug!("{version}: the broker takes packets of up to {max} bytes");
                            }
                            connected = true;
                            link.state.up(version);
                            client.subscribe(wire::down_filter(link.device), false).await;
                            if link.invoke.is_some() {
                                client.subscribe(wire::invoke_filter(link.device), true).await;
                            }
                        }
                        Ok(LinkEvent::Sent(pkid)) => window.named(pkid),
                        Ok(LinkEvent::Acked(pkid, taken)) => {
                            if !taken {
                                if let Some(seq) = window.seq_of(pkid) {
                                    set_aside(link.outbox, seq, "the broker refused it").await;
                                }
                            }
                            forget(link.outbox, window.acked(pkid)).await;
                        }
                        Ok(LinkEvent::Message(topic, payload)) => {
                            if let Some(local) = topic.strip_prefix(&down_prefix) {
                                // In order, into the bus's one consumer of the downlink; a
                                // full queue holds the link back (bounded, nothing dropped).
                                let _ = link.down.send(Downlink { topic: local.to_owned(), payload }).await;
                            } else if let (Some(id), Some((requests, _))) = (topic.strip_prefix(&invoke_prefix), link.invoke) {
                                // Never waited for: the link goes on; a request that finds the
                                // queue full is dropped, and the cloud's wait times out.
                                if requests.try_send(RawInvocation { id: id.to_owned(), payload }).is_err() {
                                    tracing::warn!("an invocation request was dropped: too many waiting");
                                }
                            }
                        }
                        Ok(LinkEvent::Closed | LinkEvent::Other) => {}
                        Err(e) => {
                            link.state.down(&e.to_string(), connected);
                            return Ended {
                                connected,
                                head: window.in_flight.first().copied(),
                            };
                        }
                    }
                }
            }
            () = link.outbox.pushed() => {}
            _ = wake.tick() => {}
            () = logs.ready(), if connected && !logs_blocked => {}
            Some(reply) = next_reply(&mut replies), if connected => {
                let topic = wire::topic(link.device, Kind::Reply, &reply.id);
                if !client.publish_log(topic, reply.payload) {
                    tracing::warn!("an invocation's reply was dropped: the link is not keeping up");
                }
            }
            changed = stop.changed() => {
                if changed.is_err() || *stop.borrow() {
                    // A clean DISCONNECT, given a moment to go out.
                    client.disconnect().await;
                    let _ = tokio::time::timeout(Duration::from_secs(1), async {
                        while let Some(Ok(e)) = events.recv().await {
                            if matches!(e, LinkEvent::Closed) {
                                break;
                            }
                        }
                    })
                    .await;
                    return Ended {
                        connected,
                        head: None,
                    };
                }
            }
        }
    }
}

/// The next reply to publish; never, without replies.
async fn next_reply(
    replies: &mut Option<tokio::sync::MutexGuard<'_, mpsc::Receiver<RawInvocation>>>,
) -> Option<RawInvocation> {
    match replies {
        Some(r) => r.recv().await,
        None => std::future::pending().await,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn line(binding: &str, n: u32) -> ShippedLog {
        ShippedLog {
            binding: binding.into(),
            json: format!("{{\"line\": \"{n}\"}}").into_bytes(),
        }
    }

    #[test]
    fn a_full_log_queue_keeps_the_newest_and_marks_what_it_dropped() {
        let q = LogQueue::new(3);
        for n in 0..5 {
            q.push(line("a", n));
        }
        q.push(line("b", 5));
        assert_eq!(q.counts(), (3, 3));
        let marker = q.pop().expect("marker");
        let v: serde_json::Value = serde_json::from_slice(&marker.json).expect("json");
        assert_eq!(
            (marker.binding.as_str(), v["dropped"].as_u64()),
            ("a", Some(3))
        );
        assert!(
            v["line"]
                .as_str()
                .expect("line")
                .contains("3 lines dropped")
        );
        // A marker the client could not take goes back as its count, not lost.
        q.unpop(marker);
        assert_eq!(q.counts(), (3, 3));
        assert!(
            q.pop()
                .is_some_and(|m| m.json.windows(9).any(|w| w == b"\"dropped\""))
        );
        let rest: Vec<Vec<u8>> = std::iter::from_fn(|| q.pop()).map(|l| l.json).collect();
        assert_eq!(
            rest,
            [line("a", 3).json, line("a", 4).json, line("b", 5).json],
            "the newest, in order"
        );
    }

    #[test]
    fn the_limit_follows_the_broker_capped_by_the_configuration() {
        let limit = PacketLimit::new("gw-01", 1000);
        let size = limit.packet_size("alerts/x", 100);
        // Fixed header, topic with the namespace, packet id, properties, payload.
        let topic = "edgefn/gw-01/up/alerts/x".len();
        assert_eq!(size, 1 + 2 + 2 + topic + 2 + 1 + PROPERTY_BYTES + 100);
        assert!(limit.check("alerts/x", 100).is_ok());
        let e = limit.check("alerts/x", 1000).unwrap_err();
        assert_eq!(e.max, 1000);
        assert!(e.to_string().contains("mqttMaxPacketSize"), "{e}");
        limit.announce(Some(300));
        let e = limit.check("alerts/x", 250).unwrap_err();
        assert!(e.to_string().contains("Maximum Packet Size"), "{e}");
        limit.announce(Some(5000));
        assert_eq!(
            limit.max().0,
            1000,
            "the configured limit caps a larger one"
        );
        limit.announce(None);
        assert_eq!(limit.max().0, 1000);
    }

    #[test]
    fn broker_urls() {
        assert_eq!(
            BrokerAddr::parse("mqtt://cloud:1884").unwrap(),
            BrokerAddr {
                host: "cloud".into(),
                port: 1884,
                tls: None
            }
        );
        assert_eq!(BrokerAddr::parse("mqtt://cloud").unwrap().port, 1883);
        let tls = BrokerAddr::parse("mqtts://cloud").unwrap();
        assert_eq!((tls.port, tls.tls), (8883, Some(None)));
        assert!(BrokerAddr::parse("http://cloud").is_err());
    }
}

//! The cloud as a client of its broker (embedded or external), over MQTT 5: it subscribes to
//! what every device sends up and to their log lines, fans messages out to `GET /v1/messages`
//! streams, keeps the last log lines of each device in a bounded ring, publishes what
//! `POST /v1/publish` sends down, and carries invocations on request
//! (`POST /v1/devices/{name}/invoke`): each request goes out at QoS 0 under a random id and its
//! waiter sits in a bounded map until the device's reply with that id arrives or the deadline
//! passes; either way the waiter is removed, so nothing is left pending.
//!
//! Duplicates are dropped here. At-least-once delivery means a message the broker received but
//! whose acknowledgement the agent never saw (a lost connection, an agent killed) is sent again.
//! Each message from an agent's outbox carries its sequence number (user property `edgefn-id`)
//! and the outbox's identity (`edgefn-outbox`, random, made when the outbox is created). The
//! outbox sends in order and resends in order from its oldest unacknowledged message, so for
//! one outbox a number at or below the highest seen is a duplicate; a new outbox (a device
//! reinstalled) starts afresh. Messages without these properties pass through.

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use edgefn_os::time::now_ms;
use edgefn_schema::wire::{self, Kind, LogLine, LogRecord};
use rumqttc::v5::mqttbytes::QoS;
use rumqttc::v5::mqttbytes::v5::{Filter, Packet, SubscribeReasonCode};
use rumqttc::v5::{AsyncClient, Event, MqttOptions};
use schemars::JsonSchema;
use serde::Serialize;
use tokio::sync::{broadcast, oneshot, watch};

use super::MAX_PACKET_BYTES;

/// Log lines kept per device.
pub(crate) const LOG_RING: usize = 1000;

/// Invocations waiting for their device's reply at once, at most.
pub(crate) const MAX_WAITERS: usize = 1024;

/// An invocation waiting for its reply: the device it went to, and where the reply goes.
#[derive(Debug)]
struct Waiter {
    device: String,
    reply: oneshot::Sender<Bytes>,
}

/// Why an invocation got no reply.
#[derive(Debug)]
pub(crate) enum InvokeWaitError {
    /// [`MAX_WAITERS`] invocations are waiting already.
    Busy,
    /// The request could not be handed to the connection.
    NotSent(Box<rumqttc::v5::ClientError>),
    /// No reply by the deadline.
    Timeout,
    /// No randomness for the request's id.
    Random(getrandom::Error),
}

/// The waiter of an invocation, removed from the map when dropped (answered, timed out, or the
/// HTTP request abandoned).
struct Pending<'a> {
    hub: &'a Hub,
    id: String,
}

impl Drop for Pending<'_> {
    fn drop(&mut self) {
        self.hub.waiters().remove(&self.id);
    }
}

/// A message a device sent up.
#[derive(Debug, Clone)]
pub(crate) struct UpMessage {
    /// The device.
    pub(crate) device: String,
    /// Its local topic (without `edgefn/<device>/up/`).
    pub(crate) topic: String,
    /// The payload, raw.
    pub(crate) payload: Bytes,
    /// When the cloud received it.
    pub(crate) ts_ms: u64,
    /// Its sequence number in the device's outbox, when it came from one.
    pub(crate) id: Option<u64>,
}

/// One line of an NDJSON stream of messages.
#[derive(Debug, Clone, Serialize, JsonSchema)]
pub(crate) struct MessageLine {
    /// The device that sent it.
    pub(crate) device: String,
    /// Its local topic (without `edgefn/<device>/up/`).
    pub(crate) topic: String,
    /// The payload: its JSON value when it is JSON, else its text; `null` when it is not UTF-8.
    pub(crate) payload: serde_json::Value,
    /// The payload in base64, only when it is not UTF-8.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) payload_base64: Option<String>,
    /// When the cloud received it (ms since the Unix epoch).
    pub(crate) ts_ms: u64,
    /// Its sequence number in the device's outbox (increasing per device, gaps where the
    /// outbox dropped messages past its bounds); absent for messages from other clients.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) id: Option<u64>,
}

impl UpMessage {
    /// The line sent to a stream.
    pub(crate) fn line(&self) -> MessageLine {
        let (payload, payload_base64) = payload_value(&self.payload);
        MessageLine {
            device: self.device.clone(),
            topic: self.topic.clone(),
            payload,
            payload_base64,
            ts_ms: self.ts_ms,
            id: self.id,
        }
    }
}

/// A payload as JSON: its value if it is JSON, its text if it is UTF-8, else base64.
pub(crate) fn payload_value(bytes: &[u8]) -> (serde_json::Value, Option<String>) {
    if let Ok(v) = serde_json::from_slice::<serde_json::Value>(bytes) {
        return (v, None);
    }
    match std::str::from_utf8(bytes) {
        Ok(s) => (serde_json::Value::String(s.to_owned()), None),
        Err(_) => {
            use base64::Engine;
            (
                serde_json::Value::Null,
                Some(base64::engine::general_purpose::STANDARD.encode(bytes)),
            )
        }
    }
}

/// The line `device` shipped on `edgefn/<device>/logs/<binding>` with `payload` (read
/// leniently: see [`LogRecord::parse`]).
fn log_line(device: &str, binding: &str, payload: &[u8]) -> LogLine {
    LogLine::new(device, LogRecord::parse(binding, payload, now_ms()))
}

/// The cloud's connection to its broker.
#[derive(Debug)]
pub(crate) struct Hub {
    client: AsyncClient,
    up: broadcast::Sender<Arc<UpMessage>>,
    log_tx: broadcast::Sender<Arc<LogLine>>,
    logs: Mutex<HashMap<String, VecDeque<Arc<LogLine>>>>,
    ready: watch::Sender<bool>,
    /// Per device: its outbox's identity and the highest sequence number seen from it.
    seen: Mutex<HashMap<String, (String, u64)>>,
    /// Invocations waiting for a reply, by request id.
    waiting: Mutex<HashMap<String, Waiter>>,
    /// Marks in the store shared with other processes, when it is (see [`HubOptions::shared`]).
    shared: Option<SharedMarks>,
    /// The position of the last shared message streamed here ([`Hub::stream_shared`]).
    shared_seq: AtomicU64,
    /// Held while reading shared messages, so each is streamed once.
    shared_read: Mutex<()>,
    /// When the hub started (ms since the Unix epoch).
    started_ms: u64,
    /// Messages received from devices (`up`), log lines received, messages sent down,
    /// duplicates dropped.
    pub(crate) counts: [AtomicU64; 4],
}

/// How the hub connects.
#[derive(Debug, Clone)]
pub(crate) struct HubOptions {
    /// Broker host.
    pub(crate) host: String,
    /// Broker port.
    pub(crate) port: u16,
    /// User name.
    pub(crate) username: String,
    /// Password.
    pub(crate) password: String,
    /// When other processes share the store (and the broker): the store that marks which
    /// messages were handled, and the subscription to messages sent up is an MQTT 5 shared
    /// subscription ([`SHARE_GROUP`]), so each message reaches one of the processes.
    pub(crate) shared: Option<SharedMarks>,
}

/// The MQTT 5 shared-subscription group of the processes sharing a store: each message sent
/// up reaches one process of the group.
pub(crate) const SHARE_GROUP: &str = "edgefn";

/// The store that marks messages handled across processes ([`crate::store::Store::mark_message`]).
#[derive(Clone)]
pub(crate) struct SharedMarks(pub(crate) Arc<dyn crate::store::Store>);

impl std::fmt::Debug for SharedMarks {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SharedMarks")
    }
}

/// The filters the cloud subscribes to: [`wire::CLOUD_FILTERS`], messages sent up shared in
/// [`SHARE_GROUP`] when `shared` (log lines and replies are not: every process keeps the log
/// lines for its streams, and a reply goes to the process that sent its request).
pub(crate) fn cloud_filters(shared: bool) -> Vec<String> {
    wire::CLOUD_FILTERS
        .iter()
        .map(|f| {
            if shared && f.contains("/up/") {
                format!("$share/{SHARE_GROUP}/{f}")
            } else {
                (*f).to_owned()
            }
        })
        .collect()
}

impl Hub {
    /// Connects (and keeps reconnecting) to the broker until `shutdown` turns true.
    pub(crate) fn start(opts: HubOptions, mut shutdown: watch::Receiver<bool>) -> Arc<Hub> {
        let mut suffix = [0u8; 6];
        let _ = getrandom::fill(&mut suffix);
        let id = format!(
            "{}.{}",
            super::CLOUD_USER,
            edgefn_schema::resolve::hex(&suffix)
        );
        let mut mo = MqttOptions::new(id, opts.host.clone(), opts.port);
        mo.set_credentials(opts.username, opts.password)
            .set_keep_alive(Duration::from_secs(30))
            .set_clean_start(true)
            .set_max_packet_size(Some(MAX_PACKET_BYTES as u32))
            // rumqttc sizes a table by this bound up front (65,535 entries, 14 MB, by default).
            .set_outgoing_inflight_upper_limit(1024);
        let (client, mut eventloop) = AsyncClient::new(mo, 1024);
        let hub = Arc::new(Hub {
            client,
            up: broadcast::channel(4096).0,
            log_tx: broadcast::channel(4096).0,
            logs: Mutex::new(HashMap::new()),
            ready: watch::Sender::new(false),
            seen: Mutex::new(HashMap::new()),
            waiting: Mutex::new(HashMap::new()),
            shared: opts.shared.clone(),
            shared_seq: AtomicU64::new(0),
            shared_read: Mutex::new(()),
            started_ms: now_ms(),
            counts: Default::default(),
        });
        let filters = cloud_filters(hub.shared.is_some());
        let h = hub.clone();
        tokio::spawn(async move {
            let mut failures = 0u32;
            loop {
                tokio::select! {
                    ev = eventloop.poll() => match ev {
                        Ok(Event::Incoming(Packet::ConnAck(_))) => {
                            failures = 0;
                            let subs = filters
                                .iter()
                                .map(|f| Filter::new(f.clone(), QoS::AtLeastOnce));
                            if let Err(e) = h.client.try_subscribe_many(subs) {
                                tracing::warn!("mqtt: cannot subscribe: {e}");
                            }
                        }
                        Ok(Event::Incoming(Packet::SubAck(ack))) => {
                            let refused = ack.return_codes.iter().any(|c| !matches!(c, SubscribeReasonCode::Success(_)));
                            if refused {
                                tracing::error!("mqtt: the broker refused the cloud's subscriptions to {}: check its ACL", filters.join(", "));
                            }
                            h.ready.send_replace(!refused);
                        }
                        Ok(Event::Incoming(Packet::Publish(p))) => {
                            let topic = String::from_utf8_lossy(&p.topic);
                            let props = p.properties.map(|p| p.user_properties).unwrap_or_default();
                            h.incoming(&topic, p.payload, &props);
                        }
                        Ok(_) => {}
                        Err(e) => {
                            h.ready.send_replace(false);
                            failures += 1;
                            if failures == 1 || failures % 30 == 0 {
                                tracing::warn!(host = %opts.host, port = opts.port, "mqtt: connection to the broker failed (retrying every second): {e}");
                            }
                            tokio::select! {
                                () = tokio::time::sleep(Duration::from_secs(1)) => {}
                                () = crate::mqtt::stopped(&mut shutdown) => break,
                            }
                        }
                    },
                    () = crate::mqtt::stopped(&mut shutdown) => break,
                }
            }
            let _ = h.client.try_disconnect();
        });
        hub
    }

    /// Whether message `id` of outbox `outbox` from `device` was seen already; records it.
    /// Shared with other processes: whether any of them marked it in the store (a message of
    /// one outbox may reach them in any order, so each message has its own mark); if the
    /// store cannot say, the message is handled (at least once rather than lost).
    fn duplicate(&self, device: &str, outbox: &str, id: u64) -> bool {
        if let Some(SharedMarks(store)) = &self.shared {
            let mark = || store.mark_message(device, outbox, id, now_ms());
            // A database round trip: the async worker lets others run meanwhile.
            let marked = match tokio::runtime::Handle::try_current().map(|h| h.runtime_flavor()) {
                Ok(tokio::runtime::RuntimeFlavor::MultiThread) => tokio::task::block_in_place(mark),
                _ => mark(),
            };
            match marked {
                Ok(Some(first)) => return !first,
                Ok(None) => {}
                Err(e) => {
                    tracing::warn!(%device, id, "cannot mark a message as handled ({e}); handling it");
                    return false;
                }
            }
        }
        let mut seen = self
            .seen
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        match seen.get_mut(device) {
            Some((o, max)) if o == outbox => {
                if id <= *max {
                    return true;
                }
                *max = id;
                false
            }
            _ => {
                seen.insert(device.to_owned(), (outbox.to_owned(), id));
                false
            }
        }
    }

    fn incoming(&self, topic: &str, payload: Bytes, props: &[(String, String)]) {
        let Some(wire::Topic { device, kind, rest }) = wire::parse(topic) else {
            return;
        };
        let prop = |k: &str| props.iter().find(|(n, _)| n == k).map(|(_, v)| v.as_str());
        match kind {
            Kind::Up => {
                let id = prop(wire::PROP_ID).and_then(|v| v.parse::<u64>().ok());
                if let (Some(id), Some(outbox)) = (id, prop(wire::PROP_OUTBOX)) {
                    if self.duplicate(device, outbox, id) {
                        self.counts[3].fetch_add(1, Ordering::Relaxed);
                        tracing::debug!(%device, id, "a message received twice: dropped");
                        return;
                    }
                }
                self.counts[0].fetch_add(1, Ordering::Relaxed);
                let msg = UpMessage {
                    device: device.to_owned(),
                    topic: rest.to_owned(),
                    payload,
                    ts_ms: now_ms(),
                    id,
                };
                // Shared: every process's streams get it through the store (this one's too).
                if let Some(SharedMarks(store)) = &self.shared {
                    let m = crate::store::SharedMessage {
                        device: msg.device.clone(),
                        topic: msg.topic.clone(),
                        payload: msg.payload.to_vec(),
                        ts_ms: msg.ts_ms,
                        id: msg.id,
                    };
                    let share = || store.share_message(&m);
                    let shared =
                        match tokio::runtime::Handle::try_current().map(|h| h.runtime_flavor()) {
                            Ok(tokio::runtime::RuntimeFlavor::MultiThread) => {
                                tokio::task::block_in_place(share)
                            }
                            _ => share(),
                        };
                    match shared {
                        Ok(true) => return,
                        Ok(false) => {}
                        Err(e) => {
                            tracing::warn!(%device, "cannot pass a message to the other processes' streams ({e}); streaming it here only")
                        }
                    }
                }
                let _ = self.up.send(Arc::new(msg));
            }
            Kind::Logs => {
                self.counts[1].fetch_add(1, Ordering::Relaxed);
                let line = Arc::new(log_line(device, rest, &payload));
                {
                    let mut logs = self
                        .logs
                        .lock()
                        .unwrap_or_else(std::sync::PoisonError::into_inner);
                    let ring = logs.entry(device.to_owned()).or_default();
                    if ring.len() >= LOG_RING {
                        ring.pop_front();
                    }
                    ring.push_back(line.clone());
                }
                let _ = self.log_tx.send(line);
            }
            Kind::Reply => {
                let waiter = {
                    let mut waiting = self.waiters();
                    match waiting.get(rest) {
                        // Only the device the request went to answers it.
                        Some(w) if w.device == device => waiting.remove(rest),
                        _ => None,
                    }
                };
                match waiter {
                    Some(w) => {
                        let _ = w.reply.send(payload);
                    }
                    None => {
                        tracing::debug!(%device, id = rest, "a reply nobody waits for (late, or not ours): dropped")
                    }
                }
            }
            Kind::Down | Kind::Invoke => {}
        }
    }

    fn waiters(&self) -> std::sync::MutexGuard<'_, HashMap<String, Waiter>> {
        self.waiting
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Sends `request` to `device` (QoS 0, on `edgefn/<device>/invoke/<id>` with a new random
    /// id) and waits up to `wait` for the reply's bytes. The waiter is gone when this returns
    /// or is dropped: a reply after that is dropped.
    pub(crate) async fn invoke(
        &self,
        device: &str,
        request: Vec<u8>,
        wait: Duration,
    ) -> Result<Bytes, InvokeWaitError> {
        let mut raw = [0u8; 16];
        getrandom::fill(&mut raw).map_err(InvokeWaitError::Random)?;
        let id = edgefn_schema::resolve::hex(&raw);
        let (tx, rx) = oneshot::channel();
        {
            let mut waiting = self.waiters();
            if waiting.len() >= MAX_WAITERS {
                return Err(InvokeWaitError::Busy);
            }
            waiting.insert(
                id.clone(),
                Waiter {
                    device: device.to_owned(),
                    reply: tx,
                },
            );
        }
        let pending = Pending { hub: self, id };
        // QoS 0: no broker keeps it for an absent device, so it never runs after the deadline.
        self.client
            .try_publish(
                wire::topic(device, Kind::Invoke, &pending.id),
                QoS::AtMostOnce,
                false,
                request,
            )
            .map_err(|e| InvokeWaitError::NotSent(Box::new(e)))?;
        self.counts[2].fetch_add(1, Ordering::Relaxed);
        let reply = tokio::time::timeout(wait, rx).await;
        drop(pending);
        match reply {
            Ok(Ok(bytes)) => Ok(bytes),
            _ => Err(InvokeWaitError::Timeout),
        }
    }

    /// Invocations waiting for a reply now.
    pub(crate) fn waiting(&self) -> usize {
        self.waiters().len()
    }

    /// Waits up to `timeout` for the hub to be connected and subscribed.
    pub(crate) async fn wait_ready(&self, timeout: Duration) -> bool {
        let mut rx = self.ready.subscribe();
        tokio::time::timeout(timeout, rx.wait_for(|r| *r))
            .await
            .is_ok_and(|r| r.is_ok())
    }

    /// Messages sent up from now on.
    pub(crate) fn subscribe_up(&self) -> broadcast::Receiver<Arc<UpMessage>> {
        self.up.subscribe()
    }

    /// Log lines received from now on.
    pub(crate) fn subscribe_logs(&self) -> broadcast::Receiver<Arc<LogLine>> {
        self.log_tx.subscribe()
    }

    /// The last `tail` kept log lines of `device` (of `binding` only, when given).
    pub(crate) fn recent_logs(
        &self,
        device: &str,
        binding: Option<&str>,
        tail: usize,
    ) -> Vec<LogLine> {
        let logs = self
            .logs
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let Some(ring) = logs.get(device) else {
            return Vec::new();
        };
        let mut out: Vec<LogLine> = ring
            .iter()
            .rev()
            .filter(|l| binding.is_none_or(|b| l.of(b)))
            .take(tail)
            .map(|l| (**l).clone())
            .collect();
        out.reverse();
        out
    }

    /// Streams here the messages passed through the store since the last read (all
    /// processes' shared messages, see [`HubOptions::shared`]). Blocking: reads the store.
    pub(crate) fn stream_shared(&self) {
        let Some(SharedMarks(store)) = &self.shared else {
            return;
        };
        let _one_reader = self
            .shared_read
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        // The first read skips what was received before this process connected (its streams
        // are all newer).
        let first = self.shared_seq.load(Ordering::SeqCst) == 0;
        loop {
            let from = self.shared_seq.load(Ordering::SeqCst);
            let (messages, last) = match store.messages_since(from) {
                Ok(page) => page,
                Err(e) => {
                    tracing::warn!("cannot read the messages other processes received: {e}");
                    return;
                }
            };
            self.shared_seq.store(last, Ordering::SeqCst);
            if messages.is_empty() {
                return;
            }
            for m in messages {
                if first && m.ts_ms < self.started_ms {
                    continue;
                }
                let _ = self.up.send(Arc::new(UpMessage {
                    device: m.device,
                    topic: m.topic,
                    payload: Bytes::from(m.payload),
                    ts_ms: m.ts_ms,
                    id: m.id,
                }));
            }
        }
    }

    /// Forgets the log lines and message numbers of a removed device.
    pub(crate) fn forget(&self, device: &str) {
        self.seen
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .remove(device);
        self.logs
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .remove(device);
    }

    /// Hands `payload` for `topic` (QoS 1) to the connection; fails when its queue is full.
    pub(crate) fn publish(
        &self,
        topic: String,
        payload: Vec<u8>,
    ) -> Result<(), Box<rumqttc::v5::ClientError>> {
        self.client
            .try_publish(topic, QoS::AtLeastOnce, false, payload)
            .map_err(Box::new)?;
        self.counts[2].fetch_add(1, Ordering::Relaxed);
        Ok(())
    }

    /// Counts messages sent down without this connection (through the embedded broker).
    pub(crate) fn count_down(&self, n: u64) {
        self.counts[2].fetch_add(n, Ordering::Relaxed);
    }

    /// Lines for `/metrics`.
    pub(crate) fn render_metrics(&self, clients: Option<usize>) -> String {
        let get = |i: usize| self.counts[i].load(Ordering::Relaxed);
        let mut out = format!(
            "# HELP edgefn_mqtt_connected Whether the cloud is connected and subscribed to its broker.\n\
             # TYPE edgefn_mqtt_connected gauge\n\
             edgefn_mqtt_connected {}\n\
             # HELP edgefn_messages_total Messages through the cloud's broker connection.\n\
             # TYPE edgefn_messages_total counter\n\
             edgefn_messages_total{{direction=\"up\"}} {}\n\
             edgefn_messages_total{{direction=\"logs\"}} {}\n\
             edgefn_messages_total{{direction=\"down\"}} {}\n\
             # HELP edgefn_messages_duplicates_total Messages from devices received again (at-least-once resends) and dropped.\n\
             # TYPE edgefn_messages_duplicates_total counter\n\
             edgefn_messages_duplicates_total {}\n\
             # HELP edgefn_invocations_waiting Invocations on request waiting for their device's reply.\n\
             # TYPE edgefn_invocations_waiting gauge\n\
             edgefn_invocations_waiting {}\n",
            u8::from(*self.ready.borrow()),
            get(0),
            get(1),
            get(2),
            get(3),
            self.waiting()
        );
        if let Some(n) = clients {
            out.push_str(&format!(
                "# HELP edgefn_mqtt_clients Clients connected to the embedded broker.\n\
                 # TYPE edgefn_mqtt_clients gauge\n\
                 edgefn_mqtt_clients {n}\n"
            ));
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn log_lines_parse_and_match_bindings() {
        let l = log_line(
            "gw-01",
            "temp-filter",
            br#"{"ts_ms":5,"binding":"temp-filter#1","stream":"stderr","line":"hot"}"#,
        );
        assert_eq!(
            (l.ts_ms, l.stream.as_str(), l.line.as_str()),
            (5, "stderr", "hot")
        );
        assert!(l.of("temp-filter") && l.of("temp-filter#1") && !l.of("temp"));
        let raw = log_line("gw-01", "collector", b"plain text\n");
        assert_eq!(
            (raw.binding.as_str(), raw.line.as_str()),
            ("collector", "plain text")
        );
        assert_eq!(payload_value(b"{\"a\":1}").0, serde_json::json!({"a": 1}));
        assert_eq!(payload_value(b"hi").0, serde_json::json!("hi"));
        assert!(payload_value(&[0xff, 0xfe]).1.is_some());
    }
}

//! The device bus: where a message goes once it is on the device. Each message is first queued
//! for the cloud when a route of the active release sends it there (durably, in the outbox),
//! handed to the local MQTT subscribers, then delivered to the triggered bindings whose filters
//! match; what those functions publish goes the same way (at most 8 hops deep, against loops).
//!
//! Every stream into the bus has one consumer, bounded, so its messages keep their order: the
//! cloud's messages brought down ([`Bus::downlink`]), messages accepted from the local HTTP
//! endpoint and the local MQTT listener ([`Bus::accept`], [`Bus::accept_from_local_clients`]),
//! and those continuous functions publish ([`Bus::message_sink`]). A consumer delivers one
//! message to its bindings and waits for them before it takes the next, so a message reaches a
//! function only after the one before it on the same stream did.
//!
//! The bus knows the local MQTT listener only as a [`LocalEcho`] (no cycle between the two
//! modules): the listener gets a bus handle, the bus a function to hand messages to it.

use std::sync::{Arc, OnceLock, Weak};

use edgefn_runtime::{Event, InvokeError, MessageSink, Payload, Reply};
use tokio::sync::mpsc;

use crate::live::{Lease, Live};
use crate::outbox::Outbox;
use crate::uplink::{Downlink, PacketLimit, TooLarge};

/// Messages waiting on one stream into the bus, at most; past it the producer waits.
pub(crate) const STREAM_CAPACITY: usize = 1024;

/// How deep messages functions publish are delivered again (against loops).
const MAX_HOPS: u32 = 8;

/// Hands a bus message to the local MQTT clients subscribed to it.
pub(crate) type LocalEcho = Box<dyn Fn(&str, &Payload) + Send + Sync>;

/// The result of one delivery to one binding.
#[derive(Debug)]
pub(crate) struct Delivery {
    /// The binding.
    pub(crate) binding: String,
    /// What it answered.
    pub(crate) outcome: Result<Reply, InvokeError>,
}

/// The device bus; shared by the local endpoint, the local MQTT listener, the link and the
/// update (which switches the release it delivers to).
pub(crate) struct Bus {
    live: Arc<Live>,
    outbox: Outbox,
    limit: Arc<PacketLimit>,
    local: OnceLock<LocalEcho>,
    invocations: OnceLock<crate::InvocationHook>,
    /// The one consumer of messages accepted from the local HTTP endpoint.
    accepted: OnceLock<mpsc::Sender<(String, Payload)>>,
}

impl std::fmt::Debug for Bus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Bus").finish_non_exhaustive()
    }
}

/// A payload as bytes on the wire: JSON text, or the bytes themselves.
pub(crate) fn payload_bytes(payload: &Payload) -> Vec<u8> {
    match payload {
        Payload::Json(v) => serde_json::to_vec(v).unwrap_or_default(),
        Payload::Bytes(b) => b.clone(),
    }
}

impl Bus {
    /// A bus delivering to `live`'s release, queueing for the cloud in `outbox`.
    pub(crate) fn new(live: Arc<Live>, outbox: Outbox, limit: Arc<PacketLimit>) -> Arc<Bus> {
        let bus = Arc::new(Bus {
            live,
            outbox,
            limit,
            local: OnceLock::new(),
            invocations: OnceLock::new(),
            accepted: OnceLock::new(),
        });
        let _ = bus.accepted.set(bus.local_clients());
        bus
    }

    /// The outbox messages for the cloud wait in.
    pub(crate) fn outbox(&self) -> &Outbox {
        &self.outbox
    }

    /// The largest packet the cloud's broker takes.
    pub(crate) fn limit(&self) -> &Arc<PacketLimit> {
        &self.limit
    }

    /// The active release.
    pub(crate) fn live(&self) -> &Arc<Live> {
        &self.live
    }

    /// Hands bus messages to the local MQTT clients from now on (once).
    pub(crate) fn attach_local(&self, echo: LocalEcho) {
        let _ = self.local.set(echo);
    }

    /// Tells `hook` of every invocation from now on (once; a second hook is ignored).
    pub(crate) fn on_invocation(&self, hook: crate::InvocationHook) {
        let _ = self.invocations.set(hook);
    }

    /// Starts one consumer of a stream into the bus: it takes the items in order and runs
    /// `handle` on each to its end before the next. Bounded at [`STREAM_CAPACITY`]; the
    /// consumer ends when every sender is dropped or the bus is.
    pub(crate) fn stream<T, F, Fut>(self: &Arc<Self>, handle: F) -> mpsc::Sender<T>
    where
        T: Send + 'static,
        F: Fn(Arc<Bus>, T) -> Fut + Send + 'static,
        Fut: std::future::Future<Output = ()> + Send,
    {
        let (tx, mut rx) = mpsc::channel::<T>(STREAM_CAPACITY);
        let weak: Weak<Bus> = Arc::downgrade(self);
        tokio::spawn(async move {
            while let Some(item) = rx.recv().await {
                let Some(bus) = weak.upgrade() else { return };
                handle(bus, item).await;
            }
        });
        tx
    }

    /// The consumer of messages brought down from the cloud: each goes on the bus, in the
    /// order the link received them, when a route (`from: "cloud:FILTER"`, `to: local`) lets it.
    pub(crate) fn downlink(self: &Arc<Self>) -> mpsc::Sender<Downlink> {
        self.stream(|bus, m: Downlink| async move { bus.deliver_down(&m.topic, m.payload).await })
    }

    /// Delivers a message that came down from the cloud to the local bus, when a route lets it.
    async fn deliver_down(self: &Arc<Self>, topic: &str, payload: Vec<u8>) {
        let allowed = self.live.get().await.is_some_and(|r| r.routes_down(topic));
        if !allowed {
            tracing::debug!(
                topic,
                "a message from the cloud that no route brings down: dropped"
            );
            return;
        }
        let payload = Payload::from_message(payload);
        if let Err(e) = self.publish(topic, payload).await {
            tracing::warn!("a message from the cloud was not put on the bus: {e}");
        }
    }

    /// Puts a message on the device bus and waits for every binding it triggers: first it is
    /// queued for the cloud when a route sends it there (durably), then delivered. The messages
    /// the functions publish go the same way (queued before this returns, delivered after).
    ///
    /// A message routed to the cloud that is larger than the cloud's broker takes is refused
    /// here, whole: not queued, not delivered.
    pub(crate) async fn publish(
        self: &Arc<Self>,
        topic: &str,
        payload: Payload,
    ) -> Result<Vec<Delivery>, TooLarge> {
        self.check_up(topic, &payload)?;
        self.queue_up(&[(topic, &payload)]).await;
        self.echo_local(topic, &payload);
        Ok(self.dispatch(topic, payload, 0).await)
    }

    /// Like [`Bus::publish`], but returns once the message is accepted (queued for the cloud
    /// when a route says so); the functions run afterwards, in the order messages were
    /// accepted. Messages accepted one after another reach the cloud in that order.
    /// A message too large for the cloud is refused, as by [`Bus::publish`].
    pub(crate) async fn accept(
        self: &Arc<Self>,
        topic: &str,
        payload: Payload,
    ) -> Result<(), TooLarge> {
        self.check_up(topic, &payload)?;
        self.queue_up(&[(topic, &payload)]).await;
        self.echo_local(topic, &payload);
        if let Some(tx) = self.accepted.get() {
            let _ = tx.send((topic.to_owned(), payload)).await;
        }
        Ok(())
    }

    /// Messages local MQTT clients published, in order: those a route sends up are queued for
    /// the cloud, in one commit, before this returns. They are not handed back to the local
    /// clients (the broker delivered them); the listener hands them to the bindings through
    /// its own consumer ([`Bus::local_clients`]).
    pub(crate) async fn queue_from_local_clients(&self, messages: &[(String, Payload)]) {
        let refs: Vec<(&str, &Payload)> = messages.iter().map(|(t, p)| (t.as_str(), p)).collect();
        self.queue_up(&refs).await;
    }

    /// A consumer that delivers messages to the bindings, in order: one for the local HTTP
    /// endpoint's, one for the local MQTT listener's.
    pub(crate) fn local_clients(self: &Arc<Self>) -> mpsc::Sender<(String, Payload)> {
        self.stream(|bus, (topic, payload): (String, Payload)| async move {
            bus.dispatch(&topic, payload, 0).await;
        })
    }

    /// Refuses a message that a route of the active release sends to the cloud and that is
    /// larger than the cloud's broker takes; `len` is its payload's size in bytes.
    pub(crate) fn too_large_up(&self, topic: &str, len: usize) -> Result<(), TooLarge> {
        match self.limit.check(topic, len) {
            Err(e) if self.live.routes_up_now(topic) => Err(e),
            _ => Ok(()),
        }
    }

    fn check_up(&self, topic: &str, payload: &Payload) -> Result<(), TooLarge> {
        let len = match payload {
            Payload::Bytes(b) => b.len(),
            Payload::Json(v) => serde_json::to_vec(v).map_or(0, |b| b.len()),
        };
        self.too_large_up(topic, len)
    }

    /// Hands a bus message to the local MQTT clients subscribed to it.
    fn echo_local(&self, topic: &str, payload: &Payload) {
        if let Some(echo) = self.local.get() {
            echo(topic, payload);
        }
    }

    /// Queues, in one outbox commit, those of `messages` a route of the active release sends
    /// to the cloud; returns once they are on disk.
    async fn queue_up(&self, messages: &[(&str, &Payload)]) {
        let up: Vec<(String, Vec<u8>)> = match self.live.get().await {
            Some(release) => messages
                .iter()
                .filter(|(topic, _)| release.routes_up(topic))
                .map(|(topic, payload)| ((*topic).to_owned(), payload_bytes(payload)))
                .collect(),
            None => return,
        };
        if up.is_empty() {
            return;
        }
        if let Err(e) = self.outbox.push(up).await {
            tracing::error!("messages for the cloud could not be queued: {e}");
        }
    }

    /// Delivers a message to the bindings of the active release it triggers, and waits for
    /// them; then puts what they published on the bus.
    fn dispatch<'a>(
        self: &'a Arc<Self>,
        topic: &'a str,
        payload: Payload,
        depth: u32,
    ) -> std::pin::Pin<Box<dyn std::future::Future<Output = Vec<Delivery>> + Send + 'a>> {
        Box::pin(async move {
            // The lease is taken under the slot's read lock: once a switch has swapped the
            // release, no new event reaches the old one, and the old one is stopped only after
            // every event that did reach it has finished.
            let Some(release) = self.live.get().await else {
                return Vec::new();
            };
            let event = Event {
                topic: topic.to_owned(),
                payload,
            };
            let bindings = release.matching(topic);
            self.run_bindings(release, bindings, event, depth).await
        })
    }

    /// Runs `binding` of the release `release` holds with `event` now, as a triggered event
    /// would (the same lease, pool, concurrency, timeout and counters); what it publishes goes
    /// on the bus as usual. For invocations on request from the cloud ([`crate::invoke`]).
    pub(crate) async fn invoke_binding(
        self: &Arc<Self>,
        release: Lease,
        binding: String,
        event: Event,
    ) -> Option<Delivery> {
        self.run_bindings(release, vec![binding], event, 0)
            .await
            .pop()
    }

    /// Delivers `event` to `bindings` of `release` and waits for them; then puts what they
    /// published on the bus.
    fn run_bindings<'a>(
        self: &'a Arc<Self>,
        release: Lease,
        bindings: Vec<String>,
        event: Event,
        depth: u32,
    ) -> std::pin::Pin<Box<dyn std::future::Future<Output = Vec<Delivery>> + Send + 'a>> {
        Box::pin(async move {
            let mut handles = Vec::new();
            for b in bindings {
                let (release, event) = (release.clone(), event.clone());
                let hook = self.invocations.get().cloned();
                handles.push(tokio::spawn(async move {
                    let started = std::time::Instant::now();
                    let outcome = release.invoke(&b, &event).await;
                    if let Some(hook) = hook {
                        hook(&crate::Invocation {
                            function: release.function_of(&b).unwrap_or_default(),
                            binding: b.clone(),
                            topic: event.topic.clone(),
                            outcome: outcome.as_ref().map(|_| ()).map_err(|e| e.to_string()),
                            duration: started.elapsed(),
                        });
                    }
                    Delivery {
                        binding: b,
                        outcome,
                    }
                }));
            }
            drop(release);
            let mut out = Vec::new();
            for h in handles {
                if let Ok(mut d) = h.await {
                    // A function's messages are published whole or not at all: one too large
                    // for the cloud fails the invocation.
                    let refused = d.outcome.as_ref().ok().and_then(|reply| {
                        reply
                            .publish
                            .iter()
                            .find_map(|m| self.check_up(&m.topic, &m.payload).err())
                    });
                    if let Some(e) = refused {
                        tracing::error!(binding = %d.binding, "{e}");
                        d.outcome = Err(InvokeError::Handler(edgefn_runtime::HandlerError {
                            kind: "MessageTooLarge".into(),
                            message: format!("nothing it published was sent: {e}"),
                            traceback: None,
                        }));
                    }
                    out.push(d);
                }
            }
            // What the functions published: queued for the cloud now, in order, then back on
            // the bus (bounded against loops). Not through a stream's consumer: the consumer
            // waits for this delivery, and would wait for itself.
            for d in &out {
                if let Ok(reply) = &d.outcome {
                    for m in &reply.publish {
                        self.queue_up(&[(m.topic.as_str(), &m.payload)]).await;
                        self.echo_local(&m.topic, &m.payload);
                        if depth < MAX_HOPS {
                            let me = self.clone();
                            let (t, p) = (m.topic.clone(), m.payload.clone());
                            tokio::spawn(async move {
                                me.dispatch(&t, p, depth + 1).await;
                            });
                        }
                    }
                }
            }
            out
        })
    }

    /// Messages continuous functions publish go on the bus, in the order they published them,
    /// through one consumer. The runtime hands them over from a plain callback, which cannot
    /// wait: this stream alone is unbounded, each message held until the consumer takes it.
    pub(crate) fn message_sink(self: &Arc<Self>) -> MessageSink {
        let (sink, mut rx) = MessageSink::channel();
        let weak = Arc::downgrade(self);
        tokio::spawn(async move {
            while let Some(m) = rx.recv().await {
                let Some(bus) = weak.upgrade() else { return };
                if let Err(e) = bus.publish(&m.topic, m.payload).await {
                    tracing::error!("a continuous function's message was refused: {e}");
                }
            }
        });
        sink
    }
}

#[cfg(test)]
mod tests {
    use edgefn_schema::api::DesiredResponse;
    use edgefn_schema::conformance;

    use super::*;
    use crate::outbox::OutboxLimits;
    use crate::release::RunningRelease;

    /// Item 3 of issue 13: the schema's table of topics and routes gives the same answers
    /// through the agent's own entry points — the bindings a message on the bus invokes, the
    /// check of a message routed to the cloud, and the route that brings one down.
    #[test]
    fn the_shared_routing_table_gives_the_same_answers_on_the_bus() {
        let dir = tempfile::tempdir().expect("dir");
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("rt");
        rt.block_on(async {
            let outbox =
                Outbox::open(&dir.path().join("o.redb"), OutboxLimits::default()).expect("outbox");
            // A limit nothing fits under: a message is refused exactly when a route sends it up.
            let limit = Arc::new(PacketLimit::new(conformance::DEVICE, 1));
            let live = Arc::new(Live::default());
            let bus = Bus::new(live.clone(), outbox, limit);
            let desired = DesiredResponse {
                revision: 1,
                digest: "conformance".into(),
                state: conformance::desired_state(),
                signature: None,
            };
            assert!(live.swap(RunningRelease::idle(desired)).await.is_none());
            let release = live.get().await.expect("active");
            for case in conformance::ROUTES {
                assert_eq!(
                    release.matching(case.topic),
                    case.triggered,
                    "bindings invoked by {}",
                    case.topic
                );
                assert_eq!(
                    bus.too_large_up(case.topic, 10).is_err(),
                    !case.up.is_empty(),
                    "sent up: {}",
                    case.topic
                );
                assert_eq!(
                    release.routes_down(case.topic),
                    !case.down.is_empty(),
                    "brought down: {}",
                    case.topic
                );
            }
        });
    }
}

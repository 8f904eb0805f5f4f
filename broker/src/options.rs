//! A broker's settings and limits.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use crate::message::Message;
use crate::persist::Persistence;

/// Messages kept for a persistent session while its client is away, and messages waiting to be
/// sent on one connection; the oldest go first.
pub(crate) const QUEUE_LIMIT: usize = 10_000;
/// Retained messages kept, at most (one per topic); a new topic beyond this is not retained.
pub(crate) const RETAINED_LIMIT: usize = 10_000;
/// QoS 1 messages sent to a client and not yet acknowledged, at most.
pub(crate) const INFLIGHT_LIMIT: usize = 100;
/// Messages of one client waiting for the publish hook or the store before more packets are
/// read.
pub(crate) const MAX_WAITING: usize = 1000;
/// How long a new connection has to send CONNECT.
pub(crate) const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// How often [`crate::Broker::serve`] ends expired sessions.
pub(crate) const SWEEP_EVERY: Duration = Duration::from_secs(1);
/// How long a connection the broker ended with a DISCONNECT stays open to read what the client
/// still sends (dropped), so that it reads the DISCONNECT rather than a reset.
pub(crate) const LINGER: Duration = Duration::from_secs(1);
/// A client that does not take a packet for this long is disconnected.
pub(crate) const WRITE_TIMEOUT: Duration = Duration::from_secs(30);

/// A hook called with every message a client publishes, after the access check: called at
/// once and in order, as each message is read; the message is acknowledged when the returned
/// future completes (acknowledgements keep the order of the messages, and up to 1000 messages
/// of a client wait at a time).
///
/// The futures of one client are awaited one after another, in order, by its connection (no
/// task is spawned for them): do the work elsewhere, as the agent's ingest task does, and
/// return a future that waits for it.
pub type OnPublish = Arc<dyn Fn(Message) -> Pin<Box<dyn Future<Output = ()> + Send>> + Send + Sync>;

/// Says why a message a client published is too large for where its owner sends it next
/// (`None`: it is not). Called before anything is done with the message; a refusal ends the
/// connection as a packet over [`BrokerOptions::max_packet`] does.
pub type TooLarge = Arc<dyn Fn(&Message) -> Option<String> + Send + Sync>;

/// Settings of a broker.
#[derive(Clone)]
pub struct BrokerOptions {
    /// Largest packet accepted or sent, in bytes; announced in MQTT 5 CONNACKs. Default
    /// 1088 KiB (1 MiB of payload and room for the rest).
    pub max_packet: usize,
    /// The owner's check of a message's size (see [`TooLarge`]).
    pub too_large: Option<TooLarge>,
    /// Called with every accepted message (see [`OnPublish`]).
    pub on_publish: Option<OnPublish>,
    /// Keeps sessions and retained messages across restarts (default: memory only). The
    /// broker gives it to a thread of its own, which commits the changes in groups.
    pub persistence: Option<Arc<dyn Persistence>>,
    /// The longest a persistent session outlives its connection: MQTT 5 clients may ask for
    /// less; MQTT 3.1.1 clients, which cannot ask, get this. `None`: as long as each MQTT 5
    /// client asks, and for ever for MQTT 3.1.1 (and for sessions restored from persistence).
    pub session_expiry_limit: Option<Duration>,
    /// The longest keep alive an MQTT 5 client gets, in seconds: one that asks for more, or
    /// for none (0), is told this value in CONNACK's Server Keep Alive (MQTT 5 §3.2.2.3.14) and
    /// held to it. MQTT 3.1.1 clients, which cannot be told, keep theirs. `None` (default):
    /// each client's own.
    pub max_keep_alive: Option<u16>,
}

impl Default for BrokerOptions {
    fn default() -> Self {
        Self {
            max_packet: (1 << 20) + (64 << 10),
            too_large: None,
            on_publish: None,
            persistence: None,
            session_expiry_limit: None,
            max_keep_alive: None,
        }
    }
}

impl std::fmt::Debug for BrokerOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BrokerOptions")
            .field("max_packet", &self.max_packet)
            .field("too_large", &self.too_large.is_some())
            .field("on_publish", &self.on_publish.is_some())
            .field("persistence", &self.persistence.is_some())
            .field("session_expiry_limit", &self.session_expiry_limit)
            .field("max_keep_alive", &self.max_keep_alive)
            .finish()
    }
}

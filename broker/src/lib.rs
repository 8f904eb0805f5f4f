//! A small MQTT broker (3.1.1 and 5) that asks its owner, packet by packet, what each client may
//! do. The cloud embeds it with per-device namespaces; the agent embeds it as the device's local
//! listener, where local programs and sensors reach the device bus.
//!
//! Why not rumqttd: rumqttd 0.20 can check a client's credentials at CONNECT (an auth handler)
//! but has no per-client rule for what it may publish or subscribe to; its only confinement is a
//! topic prefix taken from a TLS client certificate's organisation. Putting a filtering proxy in
//! front would mean parsing MQTT anyway, with the real broker still reachable behind it. This
//! broker is small and enforces the rules at the one place every packet passes. It reuses
//! rumqttc's packet codecs, so it adds no dependency to crates that already speak MQTT.
//!
//! What it does:
//! - CONNECT (MQTT 3.1.1 or 5) with the credentials checked by an [`Authenticator`]; the client
//!   id checked by [`Client::may_use_client_id`].
//! - SUBSCRIBE checked filter by filter: a refused filter gets the failure code (0x80, or 0x87
//!   "not authorized" in MQTT 5).
//! - PUBLISH checked against the publisher's rights, and again against each receiver's rights
//!   at delivery. A refused QoS 1 message is answered "not authorized" in MQTT 5; MQTT 3.1.1 has
//!   no negative PUBACK, so there it is acknowledged and dropped.
//! - QoS 0 and 1 (QoS 2 is accepted from clients and delivered as QoS 1).
//! - Persistent sessions (MQTT 3.1.1 `clean session = false`; MQTT 5 a session expiry above 0):
//!   subscriptions and up to 10,000 QoS 1 messages kept while the client is away, unacknowledged
//!   ones resent on reconnection. A session ends once its client has been away for its MQTT 5
//!   session expiry interval, or for [`BrokerOptions::session_expiry_limit`] when that is
//!   shorter (MQTT 3.1.1 sessions have no interval of their own: the limit, or never).
//! - MQTT 5 user properties are carried to receivers (edgefn's message ids travel in them).
//! - Retained messages (up to 10,000 topics), keepalive, last will, session takeover.
//! - An optional hook ([`BrokerOptions::on_publish`]) that sees every accepted message before
//!   it is acknowledged: the agent queues messages for the cloud there, on disk.
//! - A packet limit ([`BrokerOptions::max_packet`]), announced to MQTT 5 clients in CONNACK
//!   (Maximum Packet Size). A larger packet, or a message the owner's check
//!   ([`BrokerOptions::too_large`]) finds too large for where it goes next, ends the connection:
//!   MQTT 5 with DISCONNECT 0x95 (Packet too large) and the reason; MQTT 3.1.1, which has no
//!   way to refuse a message, by closing it.
//! - Optional storage ([`Persistence`]): sessions, the QoS 1 messages kept for them and
//!   retained messages outlive a restart. One thread owns the store and commits the changes in
//!   groups; the broker's lock guards memory only. Nothing that needed storing is acknowledged
//!   before its commit: a client's QoS 1 PUBLISH gets its PUBACK, a SUBSCRIBE its SUBACK, and
//!   [`Broker::publish_many`] returns, after it; a failed commit is an error to whoever waits.
//!
//! Not done: QoS 2 end to end, MQTT 5 topic aliases (the broker allows none), shared
//! subscriptions, enhanced authentication.
//!
//! Modules, by job: `broker` (the shared state, the accept loop), `session` (sessions: created at
//! CONNECT, kept while away, expired, revoked, restored), `routing` (the subscription index and
//! delivery), `connection` (one client's read/write loop), `codec` (MQTT 3.1.1 and 5 packets
//! through rumqttc's codecs), `persist` (the store's writer thread), `access` (what the owner
//! decides), `message`, `options`, `error`.

mod access;
mod broker;
mod codec;
mod connection;
mod error;
mod message;
mod options;
mod persist;
mod routing;
mod session;
mod subscription;

pub use access::{Authenticator, Client};
pub use broker::{Broker, stopped};
pub use bytes::Bytes;
pub use message::{Message, PublishProperties, QoS};
pub use options::{BrokerOptions, OnPublish, TooLarge};
pub use persist::{Change, PersistError, Persistence, StoreError, Stored, StoredSession};
pub use subscription::Subscription;

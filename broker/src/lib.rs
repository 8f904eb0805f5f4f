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
//! What it does (each point tested from the specification in `tests/conformance.rs`, against
//! the broker as the cloud and as the agent configure it, with Mosquitto as the control):
//! - CONNECT (MQTT 3.1.1 or 5) with the credentials checked by an [`Authenticator`]; the client
//!   id checked by [`Client::may_use_client_id`]; an MQTT 5 client with an empty id is given one
//!   (CONNACK Assigned Client Identifier). Other protocol levels get CONNACK 0x01 (3.1.1) or
//!   0x84 (5); MQTT 5 enhanced authentication is refused with 0x8C.
//! - Every packet answered. SUBSCRIBE is checked filter by filter: a refused filter gets 0x80 in
//!   MQTT 3.1.1, 0x87 (not authorized) or 0x8F (invalid filter) in MQTT 5; UNSUBACK says 0x11
//!   for a filter the session did not have. PUBLISH is checked against the publisher's rights,
//!   and again against each receiver's rights at delivery: a refused QoS 1 or 2 message is
//!   answered PUBACK/PUBREC 0x87 (not authorized) or 0x90 (a `$` topic) in MQTT 5; MQTT 3.1.1
//!   has no negative acknowledgement, so there it is acknowledged and dropped ([MQTT-3.3.5-2]).
//!   A connection the broker ends in MQTT 5 gets DISCONNECT with the reason (malformed packet,
//!   protocol error, keep alive, taken over, not authorized once revoked, shutting down, topic
//!   alias invalid, receive maximum exceeded, packet too large).
//! - QoS 0, 1 and 2: QoS 2 both ways (PUBREC/PUBREL/PUBCOMP; a PUBLISH resent before its
//!   PUBREL is not delivered twice; unfinished exchanges resumed after a reconnection with the
//!   same packet ids, a released one by its PUBREL). MQTT 5 clients are held to the Receive
//!   Maximum announced (100), and never sent more than theirs.
//! - Persistent sessions (MQTT 3.1.1 `clean session = false`; MQTT 5 a session expiry above 0,
//!   changeable at DISCONNECT): subscriptions and up to 10,000 QoS 1 and 2 messages kept while
//!   the client is away, unacknowledged ones resent on reconnection. A session ends once its
//!   client has been away for its MQTT 5 session expiry interval, or for
//!   [`BrokerOptions::session_expiry_limit`] when that is shorter (announced in CONNACK; MQTT
//!   3.1.1 sessions have no interval of their own: the limit, or never). A connection that takes
//!   a session over waits for the one it replaces to hand back what it had in flight.
//! - MQTT 5 PUBLISH properties carried to MQTT 5 receivers: user properties (edgefn's message ids
//!   travel in them), payload format indicator, content type, response topic, correlation data
//!   ([`PublishProperties`]), and the message expiry interval: an expired message is not
//!   delivered, and receivers get the time left ([`Message::expires_at`]).
//! - MQTT 5 subscription options (no local, retain as published, retain handling 0/1/2) and
//!   subscription identifiers; shared subscriptions (`$share/{group}/{filter}`: each message to
//!   one member of the group, in turn, a connected one first; rights checked on the filter).
//! - MQTT 5 topic aliases both ways: up to 64 from a client, per connection; towards a client up
//!   to the maximum it announced.
//! - Retained messages (up to 10,000 topics), keepalive, last will (MQTT 5: with its delay
//!   interval, not sent if the client is back in time), session takeover.
//! - An optional hook ([`BrokerOptions::on_publish`]) that sees every accepted message before
//!   it is acknowledged: the agent queues messages for the cloud there, on disk.
//! - A packet limit ([`BrokerOptions::max_packet`]), announced to MQTT 5 clients in CONNACK
//!   (Maximum Packet Size). A larger packet, or a message the owner's check
//!   ([`BrokerOptions::too_large`]) finds too large for where it goes next, ends the connection:
//!   MQTT 5 with DISCONNECT 0x95 (Packet too large) and the reason; MQTT 3.1.1, which has no
//!   way to refuse a message, by closing it.
//! - Optional storage ([`Persistence`]): sessions (with their subscription options), the QoS 1
//!   and 2 messages kept for them and retained messages outlive a restart. One thread owns the
//!   store and commits the changes in groups; the broker's lock guards memory only. Nothing that
//!   needed storing is acknowledged before its commit: a client's QoS 1 PUBLISH gets its PUBACK
//!   (QoS 2: its PUBREC), a SUBSCRIBE its SUBACK, and [`Broker::publish_many`] returns, after it;
//!   a failed commit is an error to whoever waits.
//!
//! - An optional keep alive limit for MQTT 5 clients ([`BrokerOptions::max_keep_alive`]: CONNACK
//!   Server Keep Alive), off unless the owner sets it.
//!
//! Not done: enhanced authentication (AUTH), the QoS 2 state of
//! exchanges in progress across a restart (a QoS 2 message kept for an away client is stored
//! and delivered after a restart; one whose PUBREC had come is sent again as a PUBLISH, and the
//! packet ids a client's unfinished QoS 2 PUBLISHes hold are forgotten, so a PUBLISH resent after
//! a restart is delivered again), messages kept for wills whose delay outlives a restart.
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

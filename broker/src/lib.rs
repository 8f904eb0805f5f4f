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
//!   subscriptions and up to [`QUEUE_LIMIT`] QoS 1 messages kept in memory while the client is
//!   away, unacknowledged ones resent on reconnection. A session ends once its client has been
//!   away for its MQTT 5 session expiry interval, or for [`BrokerOptions::session_expiry_limit`]
//!   when that is shorter (MQTT 3.1.1 sessions have no interval of their own: the limit, or never).
//! - MQTT 5 user properties are carried to receivers (edgefn's message ids travel in them).
//! - Retained messages (up to [`RETAINED_LIMIT`] topics), keepalive, last will, session takeover.
//! - An optional hook ([`BrokerOptions::on_publish`]) that sees every accepted message before
//!   it is acknowledged: the agent queues messages for the cloud there, on disk.
//! - A packet limit ([`BrokerOptions::max_packet`]), announced to MQTT 5 clients in CONNACK
//!   (Maximum Packet Size). A larger packet, or a message the owner's check
//!   ([`BrokerOptions::too_large`]) finds too large for where it goes next, ends the connection:
//!   MQTT 5 with DISCONNECT 0x95 (Packet too large) and the reason; MQTT 3.1.1, which has no
//!   way to refuse a message, by closing it.
//!
//! Not done: QoS 2 end to end, MQTT 5 topic aliases (the broker allows none), shared
//! subscriptions, enhanced authentication; sessions outlive a restart only with a [`Persistence`].

use std::collections::{HashMap, VecDeque};
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

pub use bytes::Bytes;
use bytes::BytesMut;
use rumqttc::mqttbytes::v4;
use rumqttc::v5::mqttbytes::v5;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::sync::{mpsc, watch};

/// Messages kept for a persistent session while its client is away; the oldest go first.
pub const QUEUE_LIMIT: usize = 10_000;
/// Retained messages kept, at most (one per topic); a new topic beyond this is not retained.
pub const RETAINED_LIMIT: usize = 10_000;
/// QoS 1 messages sent to a client and not yet acknowledged, at most.
const INFLIGHT_LIMIT: usize = 100;
/// Messages of one client waiting for the publish hook before more packets are read.
const MAX_WAITING: usize = 1000;
/// How long a new connection has to send CONNECT.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// How often [`Broker::serve`] ends expired sessions.
const SWEEP_EVERY: Duration = Duration::from_secs(1);
/// A client that does not take a packet for this long is disconnected.
const WRITE_TIMEOUT: Duration = Duration::from_secs(30);

/// What one connected client may do.
pub trait Client: Clone + Send + Sync + 'static {
    /// Its name, for logs; sessions are resumed only by the same name.
    fn name(&self) -> &str;
    /// Whether it may connect with this client id (never empty here).
    fn may_use_client_id(&self, id: &str) -> bool {
        let _ = id;
        true
    }
    /// Whether it may publish to `topic` (a valid, concrete topic).
    fn may_publish(&self, topic: &str) -> bool;
    /// Whether it may subscribe to `filter` (a valid filter).
    fn may_subscribe(&self, filter: &str) -> bool;
    /// Whether a message on `topic` may be delivered to it (checked again at delivery, whatever
    /// it subscribed to).
    fn may_receive(&self, topic: &str) -> bool;
}

/// Checks credentials.
pub trait Authenticator: Send + Sync + 'static {
    /// The rights of a connected client.
    type Client: Client;
    /// Who presents these credentials (each `None` when the CONNECT has none), or `None` to
    /// refuse the connection.
    fn authenticate(&self, username: Option<&str>, password: Option<&str>) -> Option<Self::Client>;
    /// The rights of the owner of a stored session, by name, or `None` when it no longer
    /// exists (its session is then dropped).
    fn restore(&self, name: &str) -> Option<Self::Client> {
        let _ = name;
        None
    }
}

/// Quality of service: at most once or at least once.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum QoS {
    /// 0.
    AtMostOnce,
    /// 1.
    AtLeastOnce,
}

/// A message through the broker.
#[derive(Debug, Clone)]
pub struct Message {
    /// Its topic.
    pub topic: String,
    /// Its payload.
    pub payload: Bytes,
    /// QoS.
    pub qos: QoS,
    /// Retain flag.
    pub retain: bool,
    /// MQTT 5 user properties (dropped for MQTT 3.1.1 receivers).
    pub properties: Vec<(String, String)>,
}

/// A hook called with every message a client publishes, after the access check: called at
/// once and in order, as each message is read; the message is acknowledged when the returned
/// future completes (acknowledgements keep the order of the messages, and up to 1000 messages
/// of a client wait at a time).
pub type OnPublish = Arc<dyn Fn(Message) -> Pin<Box<dyn Future<Output = ()> + Send>> + Send + Sync>;

/// Says why a message a client published is too large for where its owner sends it next
/// (`None`: it is not). Called before anything is done with the message; a refusal ends the
/// connection as a packet over [`BrokerOptions::max_packet`] does.
pub type TooLarge = Arc<dyn Fn(&Message) -> Option<String> + Send + Sync>;

/// Settings of a broker.
#[derive(Clone)]
pub struct BrokerOptions {
    /// Largest packet accepted or sent, in bytes; announced in MQTT 5 CONNACKs.
    pub max_packet: usize,
    /// The owner's check of a message's size (see [`TooLarge`]).
    pub too_large: Option<TooLarge>,
    /// Called with every accepted message (see [`OnPublish`]).
    pub on_publish: Option<OnPublish>,
    /// Keeps sessions and retained messages across restarts (default: memory only).
    pub persistence: Option<Arc<dyn Persistence>>,
    /// The longest a persistent session outlives its connection: MQTT 5 clients may ask for
    /// less; MQTT 3.1.1 clients, which cannot ask, get this. `None`: as long as each MQTT 5
    /// client asks, and for ever for MQTT 3.1.1 (and for sessions restored from persistence).
    pub session_expiry_limit: Option<Duration>,
}

impl Default for BrokerOptions {
    fn default() -> Self {
        Self {
            max_packet: (1 << 20) + (64 << 10),
            too_large: None,
            on_publish: None,
            persistence: None,
            session_expiry_limit: None,
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
            .finish()
    }
}

/// A message on its way to one receiver.
#[derive(Debug, Clone)]
struct Out {
    msg: Arc<Message>,
    qos: QoS,
    retain: bool,
    dup: bool,
    /// Its number in the session's store (0: not stored).
    seq: u64,
}

enum Cmd {
    Deliver(Out),
    Close,
}

struct Session<C> {
    owner: C,
    subs: Vec<(String, QoS)>,
    conn: Option<(u64, mpsc::Sender<Cmd>)>,
    persistent: bool,
    /// How long it outlives a connection (`None`: for ever).
    expiry: Option<Duration>,
    /// When it ends, while its client is away.
    expires_at: Option<Instant>,
    queue: VecDeque<Out>,
    /// The next number of a stored message.
    next_seq: u64,
}

impl<C> Session<C> {
    /// Keeps a message for the client's return; returns the one dropped to make room.
    fn keep(&mut self, p: Out) -> Option<Out> {
        let dropped = if self.queue.len() >= QUEUE_LIMIT {
            self.queue.pop_front()
        } else {
            None
        };
        self.queue.push_back(p);
        dropped
    }
}

/// Where a broker keeps its persistent sessions (subscriptions and the QoS 1 messages not yet
/// acknowledged) and retained messages, so that they outlive a restart. Each call returns once
/// its change is stored; calls come in the order of the changes, some under the broker's lock,
/// so they should be quick.
pub trait Persistence: Send + Sync + 'static {
    /// A persistent session and its subscriptions (created or changed).
    fn session(&self, client_id: &str, owner: &str, subs: &[(String, QoS)]);
    /// Forgets a session and its messages.
    fn forget_session(&self, client_id: &str);
    /// Keeps messages for sessions: (client id, number, message).
    fn keep(&self, messages: &[(&str, u64, &Message)]);
    /// A kept message was acknowledged or dropped. Need not be durable at once: after a crash
    /// the message is sent again, which at-least-once delivery allows.
    fn done(&self, client_id: &str, seq: u64);
    /// A retained message set (`Some`) or cleared (`None`).
    fn retain(&self, topic: &str, message: Option<&Message>);
}

/// What a [`Persistence`] kept, loaded at start with [`Broker::restore`].
#[derive(Debug, Default)]
pub struct Stored {
    /// Persistent sessions.
    pub sessions: Vec<StoredSession>,
    /// Retained messages.
    pub retained: Vec<Message>,
}

/// A kept session.
#[derive(Debug)]
pub struct StoredSession {
    /// Client id.
    pub client_id: String,
    /// Its owner's name (see [`Authenticator::restore`]).
    pub owner: String,
    /// Its subscriptions.
    pub subs: Vec<(String, QoS)>,
    /// Its messages, by number.
    pub queue: Vec<(u64, Message)>,
}

struct State<C> {
    sessions: HashMap<String, Session<C>>,
    retained: HashMap<String, Arc<Message>>,
    next_conn: u64,
}

/// The broker: sessions and routing. Serve connections with [`Broker::serve`] or
/// [`Broker::serve_stream`].
pub struct Broker<A: Authenticator> {
    auth: A,
    options: BrokerOptions,
    state: Mutex<State<A::Client>>,
}

impl<A: Authenticator> std::fmt::Debug for Broker<A> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Broker").finish_non_exhaustive()
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// Completes when `shutdown` turns true (or its sender is gone).
pub async fn stopped(shutdown: &mut watch::Receiver<bool>) {
    let _ = shutdown.wait_for(|s| *s).await;
}

impl<A: Authenticator> Broker<A> {
    /// A broker that admits the clients `auth` accepts.
    pub fn new(auth: A) -> Arc<Self> {
        Self::with_options(auth, BrokerOptions::default())
    }

    /// A broker with settings.
    pub fn with_options(auth: A, options: BrokerOptions) -> Arc<Self> {
        Arc::new(Self {
            auth,
            options,
            state: Mutex::new(State {
                sessions: HashMap::new(),
                retained: HashMap::new(),
                next_conn: 0,
            }),
        })
    }

    /// Accepts connections on `listener` until `shutdown` turns true.
    pub async fn serve(
        self: Arc<Self>,
        listener: tokio::net::TcpListener,
        mut shutdown: watch::Receiver<bool>,
    ) {
        let mut sweep = tokio::time::interval(SWEEP_EVERY);
        sweep.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = sweep.tick() => self.expire_sessions(),
                accepted = listener.accept() => match accepted {
                    Ok((stream, peer)) => {
                        let _ = stream.set_nodelay(true);
                        let broker = self.clone();
                        let stop = shutdown.clone();
                        tokio::spawn(async move { broker.serve_stream(stream, peer.to_string(), stop).await });
                    }
                    Err(e) => {
                        tracing::warn!("mqtt: accept failed: {e}");
                        tokio::time::sleep(Duration::from_millis(100)).await;
                    }
                },
                () = stopped(&mut shutdown) => return,
            }
        }
    }

    /// Ends the sessions whose clients have been away past their expiry ([`Broker::serve`]
    /// calls this every second; an owner that only uses [`Broker::serve_stream`] calls it).
    pub fn expire_sessions(&self) {
        let now = Instant::now();
        let mut st = lock(&self.state);
        let store = self.options.persistence.as_deref();
        st.sessions.retain(|id, s| {
            let expired = s.conn.is_none() && s.expires_at.is_some_and(|t| t <= now);
            if expired {
                tracing::debug!(client_id = %id, "mqtt: session expired");
                if let (Some(p), true) = (store, s.persistent) {
                    p.forget_session(id);
                }
            }
            !expired
        });
    }

    /// Closes the connections of the clients named `name` and forgets their sessions (e.g. a
    /// device whose token was revoked).
    pub fn revoke(&self, name: &str) {
        let mut st = lock(&self.state);
        let store = self.options.persistence.as_deref();
        st.sessions.retain(|id, s| {
            if s.owner.name() != name {
                return true;
            }
            if let Some((_, tx)) = &s.conn {
                close(tx);
            }
            if let (Some(p), true) = (store, s.persistent) {
                p.forget_session(id);
            }
            false
        });
    }

    /// Tells the store about kept messages of `client_id` acknowledged or dropped (under the
    /// lock, so never before the message itself was stored).
    fn forget_gone(&self, gone: &mut Vec<u64>, client_id: &str) {
        gone.retain(|n| *n != 0);
        if let (Some(p), false) = (self.options.persistence.as_deref(), gone.is_empty()) {
            let _st = lock(&self.state);
            for n in gone.iter() {
                p.done(client_id, *n);
            }
        }
        gone.clear();
    }

    /// Loads what a [`Persistence`] kept (call once, before serving).
    pub fn restore(&self, stored: Stored) {
        let store = self.options.persistence.as_deref();
        let mut st = lock(&self.state);
        for m in stored.retained {
            st.retained.insert(m.topic.clone(), Arc::new(m));
        }
        for s in stored.sessions {
            let Some(owner) = self.auth.restore(&s.owner) else {
                if let Some(p) = store {
                    p.forget_session(&s.client_id);
                }
                continue;
            };
            let next_seq = s.queue.iter().map(|(n, _)| *n).max().unwrap_or(0) + 1;
            let queue = s
                .queue
                .into_iter()
                .map(|(seq, m)| Out {
                    qos: m.qos,
                    retain: false,
                    dup: true,
                    seq,
                    msg: Arc::new(m),
                })
                .collect();
            // The interval its client asked for was not stored: the broker's limit applies.
            let expiry = self.options.session_expiry_limit;
            st.sessions.insert(
                s.client_id,
                Session {
                    owner,
                    subs: s.subs,
                    conn: None,
                    persistent: true,
                    expiry,
                    expires_at: expiry.map(|d| Instant::now() + d),
                    queue,
                    next_seq,
                },
            );
        }
    }

    /// Delivers messages from the broker's owner, like [`Broker::publish`], storing those kept
    /// for persistent sessions in one go.
    pub fn publish_many(&self, messages: Vec<Message>) {
        let mut st = lock(&self.state);
        let mut kept = Vec::new();
        for m in messages {
            self.route_locked(&mut st, Arc::new(m), &mut kept);
        }
        self.store_kept(&kept);
    }

    /// Number of connected clients.
    pub fn connected(&self) -> usize {
        lock(&self.state)
            .sessions
            .values()
            .filter(|s| s.conn.is_some())
            .count()
    }

    /// Delivers `msg` (from the broker's owner, or from a client and already checked against
    /// its rights) to every session subscribed to its topic and allowed to read it; keeps it
    /// when it is retained.
    pub fn publish(&self, msg: Message) {
        let mut st = lock(&self.state);
        let mut kept = Vec::new();
        self.route_locked(&mut st, Arc::new(msg), &mut kept);
        self.store_kept(&kept);
    }

    /// Stores the messages kept for persistent sessions (still under the lock, so that an
    /// acknowledgement never overtakes its message).
    fn store_kept(&self, kept: &[(String, u64, Arc<Message>)]) {
        if let (Some(p), false) = (&self.options.persistence, kept.is_empty()) {
            let refs: Vec<(&str, u64, &Message)> = kept
                .iter()
                .map(|(c, n, m)| (c.as_str(), *n, m.as_ref()))
                .collect();
            p.keep(&refs);
        }
    }

    fn route_locked(
        &self,
        st: &mut State<A::Client>,
        msg: Arc<Message>,
        kept: &mut Vec<(String, u64, Arc<Message>)>,
    ) {
        let store = self.options.persistence.as_deref();
        if msg.retain {
            if msg.payload.is_empty() {
                if st.retained.remove(&msg.topic).is_some() {
                    if let Some(p) = store {
                        p.retain(&msg.topic, None);
                    }
                }
            } else if st.retained.len() < RETAINED_LIMIT || st.retained.contains_key(&msg.topic) {
                st.retained.insert(msg.topic.clone(), msg.clone());
                if let Some(p) = store {
                    p.retain(&msg.topic, Some(&msg));
                }
            }
        }
        let topic = msg.topic.as_str();
        for (client_id, s) in st.sessions.iter_mut() {
            if !s.owner.may_receive(topic) {
                continue;
            }
            let granted = s
                .subs
                .iter()
                .filter(|(f, _)| edgefn_schema::topic::matches(f, topic))
                .map(|(_, q)| *q)
                .max();
            let Some(granted) = granted else { continue };
            let qos = msg.qos.min(granted);
            let mut seq = 0;
            if store.is_some() && s.persistent && qos == QoS::AtLeastOnce {
                seq = s.next_seq;
                s.next_seq += 1;
                kept.push((client_id.clone(), seq, msg.clone()));
            }
            let out = Out {
                msg: msg.clone(),
                qos,
                // A retained message delivered live carries no retain flag (MQTT 3.1.1 §3.3.1.3).
                retain: false,
                dup: false,
                seq,
            };
            let undelivered = match &s.conn {
                Some((_, tx)) => match tx.try_send(Cmd::Deliver(out)) {
                    Ok(()) => None,
                    // The client is going away: keep the message for its session.
                    Err(mpsc::error::TrySendError::Closed(Cmd::Deliver(p))) => Some(p),
                    Err(mpsc::error::TrySendError::Full(_)) => {
                        tracing::warn!(client = s.owner.name(), %topic, "mqtt: a client is {QUEUE_LIMIT} messages behind; message dropped for it");
                        forget_kept(store, kept, client_id, seq);
                        None
                    }
                    Err(_) => None,
                },
                None => Some(out),
            };
            if let Some(p) = undelivered {
                if s.persistent && p.qos == QoS::AtLeastOnce {
                    if let Some(old) = s.keep(p) {
                        forget_kept(store, kept, client_id, old.seq);
                    }
                }
            }
        }
    }

    /// Serves one client connection (a TCP stream, or a TLS stream over one) until it ends.
    pub async fn serve_stream<S>(
        self: Arc<Self>,
        stream: S,
        peer: String,
        mut shutdown: watch::Receiver<bool>,
    ) where
        S: AsyncRead + AsyncWrite + Send + Unpin + 'static,
    {
        let (mut rd, wr) = tokio::io::split(stream);
        let mut buf = BytesMut::with_capacity(4096);
        let max = self.options.max_packet;
        let connect =
            match tokio::time::timeout(CONNECT_TIMEOUT, read_connect(&mut rd, &mut buf, max)).await
            {
                Ok(Ok(c)) => c,
                Ok(Err(e)) => {
                    tracing::debug!(%peer, "mqtt: bad first packet: {e}");
                    return;
                }
                Err(_) => return,
            };
        let version = connect.version;
        let mut conn = Conn {
            wr,
            version,
            inflight: VecDeque::new(),
            pending: VecDeque::new(),
            next_pkid: 0,
            receive_max: connect.receive_max.clamp(1, INFLIGHT_LIMIT),
            max_out: connect.max_packet.min(max),
            max_in: max,
            gone: Vec::new(),
        };
        let Some(client) = self
            .auth
            .authenticate(connect.username.as_deref(), connect.password.as_deref())
        else {
            tracing::info!(%peer, user = connect.username.as_deref(), "mqtt: refused: bad user name or password");
            let _ = conn.connack(Some(Refusal::Credentials), false).await;
            return;
        };
        let user = client.name().to_owned();
        let client_id = if connect.client_id.is_empty() {
            if connect.persistent && version == Version::V4 {
                let _ = conn.connack(Some(Refusal::ClientId), false).await;
                return;
            }
            None
        } else if client.may_use_client_id(&connect.client_id) {
            Some(connect.client_id.clone())
        } else {
            tracing::info!(%peer, %user, client_id = %connect.client_id, "mqtt: refused: client id not allowed for this user");
            let _ = conn.connack(Some(Refusal::ClientId), false).await;
            return;
        };

        let store = self.options.persistence.as_deref();
        let (tx, mut rx) = mpsc::channel(QUEUE_LIMIT);
        let (conn_id, client_id, session_present) = {
            let mut st = lock(&self.state);
            st.next_conn += 1;
            let conn_id = st.next_conn;
            // A session under an id the client was not told cannot be resumed: not kept.
            let persistent = connect.persistent && client_id.is_some();
            let expiry = match (connect.expiry, self.options.session_expiry_limit) {
                (Some(asked), Some(limit)) => Some(asked.min(limit)),
                (asked, limit) => asked.or(limit),
            };
            let client_id = client_id.unwrap_or_else(|| format!("{user}.auto-{conn_id}"));
            let mut present = false;
            if let Some(old) = st.sessions.remove(&client_id) {
                if let Some((_, otx)) = &old.conn {
                    close(otx);
                }
                if connect.resume && old.persistent && old.owner.name() == user {
                    present = true;
                    conn.pending = old.queue;
                    st.sessions.insert(
                        client_id.clone(),
                        Session {
                            owner: old.owner,
                            subs: old.subs,
                            conn: Some((conn_id, tx.clone())),
                            persistent,
                            expiry,
                            expires_at: None,
                            queue: VecDeque::new(),
                            next_seq: old.next_seq,
                        },
                    );
                } else if let (Some(p), true) = (store, old.persistent) {
                    p.forget_session(&client_id);
                }
            }
            if !present {
                if let (Some(p), true) = (store, persistent) {
                    p.session(&client_id, &user, &[]);
                }
                st.sessions.insert(
                    client_id.clone(),
                    Session {
                        owner: client.clone(),
                        subs: Vec::new(),
                        conn: Some((conn_id, tx.clone())),
                        persistent,
                        expiry,
                        expires_at: None,
                        queue: VecDeque::new(),
                        next_seq: 1,
                    },
                );
            }
            (conn_id, client_id, present)
        };
        drop(tx);
        tracing::debug!(%peer, %user, %client_id, session_present, ?version, "mqtt: connected");

        let keepalive = (connect.keep_alive > 0)
            .then(|| Duration::from_millis(u64::from(connect.keep_alive) * 1500));
        let mut clean_exit = false;
        let mut waiting: VecDeque<(Reply, Option<tokio::task::JoinHandle<()>>)> = VecDeque::new();
        let result: Result<(), String> = async {
            conn.connack(None, session_present).await?;
            conn.fill().await?;
            loop {
                let idle = async {
                    match keepalive {
                        Some(k) => tokio::time::sleep(k).await,
                        None => std::future::pending().await,
                    }
                };
                tokio::select! {
                    () = async {
                        if let Some((_, Some(h))) = waiting.front_mut() {
                            let _ = h.await;
                        }
                    }, if waiting.front().is_some_and(|(_, h)| h.is_some()) => {
                        if let Some((_, h)) = waiting.front_mut() {
                            *h = None;
                        }
                        while waiting.front().is_some_and(|(_, h)| h.as_ref().is_none_or(|h| h.is_finished())) {
                            if let Some((reply, _)) = waiting.pop_front() {
                                conn.write(reply).await?;
                            }
                        }
                    }
                    packet = read_packet(&mut rd, &mut buf, version, max), if waiting.len() < MAX_WAITING => {
                        match packet? {
                            In::Publish { msg, pkid, qos2 } => {
                                if let Err(e) = edgefn_schema::topic::validate_topic(&msg.topic) {
                                    return Err(format!("invalid topic `{}`: {}", msg.topic, e.message));
                                }
                                if let Some(why) = self.options.too_large.as_ref().and_then(|check| check(&msg)) {
                                    tracing::info!(%user, topic = %msg.topic, "mqtt: message refused: {why}");
                                    return Err(conn.too_large(why).await);
                                }
                                let allowed = client.may_publish(&msg.topic);
                                let qos = msg.qos;
                                let mut wait = None;
                                if allowed {
                                    if let Some(hook) = &self.options.on_publish {
                                        wait = Some(tokio::spawn(hook(msg.clone())));
                                    }
                                    self.publish(msg);
                                } else {
                                    tracing::info!(%user, topic = %msg.topic, "mqtt: publish outside the client's rights refused");
                                }
                                let reply = if qos2 {
                                    Some(Reply::PubRec(pkid, allowed))
                                } else if qos == QoS::AtLeastOnce {
                                    Some(Reply::PubAck(pkid, allowed))
                                } else {
                                    None
                                };
                                // Acknowledgements go in the order the messages came, each once
                                // its hook is done.
                                if let Some(reply) = reply {
                                    if wait.is_none() && waiting.is_empty() {
                                        conn.write(reply).await?;
                                    } else {
                                        waiting.push_back((reply, wait));
                                    }
                                }
                            }
                            In::PubRel(pkid) => conn.write(Reply::PubComp(pkid)).await?,
                            In::PubAck(pkid) => {
                                if let Some(i) = conn.inflight.iter().position(|(id, _)| *id == pkid) {
                                    if let Some((_, out)) = conn.inflight.remove(i) {
                                        conn.gone.push(out.seq);
                                    }
                                }
                                self.forget_gone(&mut conn.gone, &client_id);
                                conn.fill().await?;
                            }
                            In::Subscribe { pkid, filters } => {
                                let mut codes = Vec::with_capacity(filters.len());
                                let mut retained = Vec::new();
                                {
                                    let mut guard = lock(&self.state);
                                    let st = &mut *guard;
                                    let session = st.sessions.get_mut(&client_id).filter(|s| s.conn.as_ref().is_some_and(|(c, _)| *c == conn_id));
                                    let Some(session) = session else { return Err("session taken over".into()) };
                                    for (filter, q) in filters {
                                        let ok = edgefn_schema::topic::validate_filter(&filter).is_ok() && client.may_subscribe(&filter);
                                        if !ok {
                                            tracing::info!(%user, %filter, "mqtt: subscription refused");
                                            codes.push(None);
                                            continue;
                                        }
                                        for m in st.retained.values() {
                                            if edgefn_schema::topic::matches(&filter, &m.topic) && client.may_receive(&m.topic) {
                                                retained.push(Out { msg: m.clone(), qos: m.qos.min(q), retain: true, dup: false, seq: 0 });
                                            }
                                        }
                                        session.subs.retain(|(x, _)| *x != filter);
                                        session.subs.push((filter, q));
                                        codes.push(Some(q));
                                    }
                                    if let (Some(p), true) = (store, session.persistent) {
                                        p.session(&client_id, &user, &session.subs);
                                    }
                                }
                                conn.write(Reply::SubAck(pkid, codes)).await?;
                                for r in retained {
                                    conn.send(r).await?;
                                }
                            }
                            In::Unsubscribe { pkid, filters } => {
                                if let Some(session) = lock(&self.state).sessions.get_mut(&client_id) {
                                    session.subs.retain(|(x, _)| !filters.contains(x));
                                    if let (Some(p), true) = (store, session.persistent) {
                                        p.session(&client_id, &user, &session.subs);
                                    }
                                }
                                conn.write(Reply::UnsubAck(pkid, filters.len())).await?;
                            }
                            In::PingReq => conn.write(Reply::PingResp).await?,
                            In::Disconnect { with_will } => {
                                clean_exit = !with_will;
                                return Ok(());
                            }
                            In::Ignored => {}
                            In::TooLarge(size) => {
                                let why = format!("a packet of {size} bytes, over this broker's Maximum Packet Size of {max} bytes");
                                tracing::info!(%user, "mqtt: {why}");
                                return Err(conn.too_large(why).await);
                            }
                            In::Unexpected(what) => return Err(format!("unexpected packet {what}")),
                        }
                    }
                    cmd = rx.recv() => match cmd {
                        Some(Cmd::Deliver(p)) => {
                            conn.send(p).await?;
                            self.forget_gone(&mut conn.gone, &client_id);
                        }
                        Some(Cmd::Close) | None => return Err("closed by the broker".into()),
                    },
                    () = idle => return Err("keepalive expired".into()),
                    () = stopped(&mut shutdown) => return Err("shutting down".into()),
                }
            }
        }
        .await;
        if let Err(e) = &result {
            tracing::debug!(%peer, %user, %client_id, "mqtt: connection ended: {e}");
        }

        // Keep what the client did not acknowledge, in order, for a persistent session.
        {
            let mut st = lock(&self.state);
            let mine = st
                .sessions
                .get(&client_id)
                .is_some_and(|s| s.conn.as_ref().is_some_and(|(c, _)| *c == conn_id));
            if mine {
                let persistent = st.sessions.get(&client_id).is_some_and(|s| s.persistent);
                if !persistent {
                    st.sessions.remove(&client_id);
                    if let (Some(p), true) = (store, session_present) {
                        p.forget_session(&client_id);
                    }
                } else if let Some(s) = st.sessions.get_mut(&client_id) {
                    s.conn = None;
                    s.expires_at = s.expiry.map(|d| Instant::now() + d);
                    let mut kept: VecDeque<Out> = conn
                        .inflight
                        .drain(..)
                        .map(|(_, mut p)| {
                            p.dup = true;
                            p
                        })
                        .collect();
                    kept.extend(conn.pending.drain(..));
                    while let Ok(cmd) = rx.try_recv() {
                        if let Cmd::Deliver(p) = cmd {
                            kept.push_back(p);
                        }
                    }
                    kept.retain(|p| p.qos == QoS::AtLeastOnce);
                    kept.extend(s.queue.drain(..));
                    for p in kept {
                        if let (Some(old), Some(store)) = (s.keep(p), store) {
                            if old.seq != 0 {
                                store.done(&client_id, old.seq);
                            }
                        }
                    }
                }
            }
        }
        if !clean_exit {
            if let Some(will) = connect.will {
                if client.may_publish(&will.topic)
                    && edgefn_schema::topic::validate_topic(&will.topic).is_ok()
                {
                    self.publish(will);
                }
            }
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Version {
    V4,
    V5,
}

/// What the first packet said, in either version.
struct ConnectInfo {
    version: Version,
    client_id: String,
    username: Option<String>,
    password: Option<String>,
    keep_alive: u16,
    /// Keep the session after the connection ends.
    persistent: bool,
    /// Resume a kept session.
    resume: bool,
    /// How long a kept session outlives the connection (`None`: for ever).
    expiry: Option<Duration>,
    will: Option<Message>,
    receive_max: usize,
    max_packet: usize,
}

#[derive(Debug, Clone, Copy)]
enum Refusal {
    Credentials,
    ClientId,
}

/// A packet from a client, in either version.
enum In {
    Publish {
        msg: Message,
        pkid: u16,
        qos2: bool,
    },
    PubAck(u16),
    PubRel(u16),
    Subscribe {
        pkid: u16,
        filters: Vec<(String, QoS)>,
    },
    Unsubscribe {
        pkid: u16,
        filters: Vec<String>,
    },
    PingReq,
    Disconnect {
        with_will: bool,
    },
    /// A packet with nothing to do (a PUBREC/PUBCOMP: the broker never sends QoS 2).
    Ignored,
    /// A packet whose remaining length (bytes) is over the limit; not read.
    TooLarge(usize),
    Unexpected(&'static str),
}

/// A packet to a client, other than PUBLISH.
enum Reply {
    /// `true` when the message was accepted.
    PubAck(u16, bool),
    PubRec(u16, bool),
    PubComp(u16),
    /// The granted QoS per filter, `None` when refused.
    SubAck(u16, Vec<Option<QoS>>),
    UnsubAck(u16, usize),
    PingResp,
}

fn qos_in(q: u8) -> QoS {
    if q == 0 {
        QoS::AtMostOnce
    } else {
        QoS::AtLeastOnce
    }
}

fn v4_qos(q: QoS) -> rumqttc::mqttbytes::QoS {
    match q {
        QoS::AtMostOnce => rumqttc::mqttbytes::QoS::AtMostOnce,
        QoS::AtLeastOnce => rumqttc::mqttbytes::QoS::AtLeastOnce,
    }
}

fn v5_qos(q: QoS) -> rumqttc::v5::mqttbytes::QoS {
    match q {
        QoS::AtMostOnce => rumqttc::v5::mqttbytes::QoS::AtMostOnce,
        QoS::AtLeastOnce => rumqttc::v5::mqttbytes::QoS::AtLeastOnce,
    }
}

/// Length of the fixed header and the remaining length, once enough bytes are there.
fn fixed_header(buf: &[u8]) -> Option<(usize, usize)> {
    let mut len = 0usize;
    for (i, b) in buf.iter().skip(1).take(4).enumerate() {
        len |= usize::from(b & 0x7f) << (7 * i);
        if b & 0x80 == 0 {
            return Some((i + 2, len));
        }
    }
    None
}

async fn fill_buf<R: AsyncRead + Unpin>(rd: &mut R, buf: &mut BytesMut) -> Result<(), String> {
    buf.reserve(4096);
    let read = rd.read_buf(buf).await.map_err(|e| e.to_string())?;
    if read == 0 {
        return Err("connection closed".into());
    }
    Ok(())
}

/// Reads CONNECT in whichever version the client speaks (the protocol level is the 7th byte
/// of the variable header: 0, 4, "MQTT", level).
async fn read_connect<R: AsyncRead + Unpin>(
    rd: &mut R,
    buf: &mut BytesMut,
    max: usize,
) -> Result<ConnectInfo, String> {
    let level = loop {
        if let Some((header, _)) = fixed_header(buf) {
            if buf[0] >> 4 != 1 {
                return Err("the first packet is not CONNECT".into());
            }
            if let Some(level) = buf.get(header + 6) {
                break *level;
            }
        } else if buf.len() >= 5 {
            return Err("malformed packet length".into());
        }
        fill_buf(rd, buf).await?;
    };
    if level == 5 {
        let packet = loop {
            match v5::Packet::read(buf, Some(max as u32)) {
                Ok(p) => break p,
                Err(rumqttc::v5::mqttbytes::Error::InsufficientBytes(_)) => {
                    fill_buf(rd, buf).await?
                }
                Err(e) => return Err(format!("malformed CONNECT: {e}")),
            }
        };
        let v5::Packet::Connect(c, will, login) = packet else {
            return Err("the first packet is not CONNECT".into());
        };
        let props = c.properties.unwrap_or_else(v5::ConnectProperties::new);
        let will = match will {
            Some(w) => Some(Message {
                topic: String::from_utf8(w.topic.to_vec())
                    .map_err(|_| "a will topic that is not UTF-8")?,
                payload: w.message,
                qos: qos_in(w.qos as u8),
                retain: w.retain,
                properties: w.properties.map(|p| p.user_properties).unwrap_or_default(),
            }),
            None => None,
        };
        return Ok(ConnectInfo {
            version: Version::V5,
            client_id: c.client_id,
            username: login.as_ref().map(|l| l.username.clone()),
            password: login.map(|l| l.password),
            keep_alive: c.keep_alive,
            persistent: props.session_expiry_interval.unwrap_or(0) > 0,
            resume: !c.clean_start,
            // 0xFFFFFFFF means never.
            expiry: match props.session_expiry_interval {
                Some(u32::MAX) => None,
                s => Some(Duration::from_secs(u64::from(s.unwrap_or(0)))),
            },
            will,
            receive_max: usize::from(props.receive_maximum.unwrap_or(u16::MAX)),
            max_packet: props.max_packet_size.map_or(usize::MAX, |m| m as usize),
        });
    }
    let packet = loop {
        match v4::Packet::read(buf, max) {
            Ok(p) => break p,
            Err(rumqttc::mqttbytes::Error::InsufficientBytes(_)) => fill_buf(rd, buf).await?,
            Err(rumqttc::mqttbytes::Error::InvalidProtocolLevel(_)) => {
                return Err(format!("protocol level {level} is not MQTT 3.1.1 or 5"));
            }
            Err(e) => return Err(format!("malformed CONNECT: {e}")),
        }
    };
    let v4::Packet::Connect(c) = packet else {
        return Err("the first packet is not CONNECT".into());
    };
    Ok(ConnectInfo {
        version: Version::V4,
        client_id: c.client_id,
        username: c.login.as_ref().map(|l| l.username.clone()),
        password: c.login.map(|l| l.password),
        keep_alive: c.keep_alive,
        persistent: !c.clean_session,
        resume: !c.clean_session,
        expiry: None,
        will: c.last_will.map(|w| Message {
            topic: w.topic,
            payload: w.message,
            qos: qos_in(w.qos as u8),
            retain: w.retain,
            properties: Vec::new(),
        }),
        receive_max: INFLIGHT_LIMIT,
        max_packet: usize::MAX,
    })
}

async fn read_packet<R: AsyncRead + Unpin>(
    rd: &mut R,
    buf: &mut BytesMut,
    version: Version,
    max: usize,
) -> Result<In, String> {
    loop {
        let parsed = match version {
            Version::V4 => match v4::Packet::read(buf, max) {
                Ok(p) => Some(Ok(v4_in(p)?)),
                Err(rumqttc::mqttbytes::Error::InsufficientBytes(_)) => None,
                Err(rumqttc::mqttbytes::Error::PayloadSizeLimitExceeded(size)) => {
                    Some(Ok(In::TooLarge(size)))
                }
                Err(e) => Some(Err(format!("malformed packet: {e}"))),
            },
            Version::V5 => {
                // rumqttc's v5 reader refuses a DISCONNECT without a body (reason 0, as most
                // clients send it).
                if buf.len() >= 2 && buf[0] == 0xE0 && buf[1] == 0 {
                    let _ = buf.split_to(2);
                    return Ok(In::Disconnect { with_will: false });
                }
                match v5::Packet::read(buf, Some(max as u32)) {
                    Ok(p) => Some(Ok(v5_in(p)?)),
                    Err(rumqttc::v5::mqttbytes::Error::InsufficientBytes(_)) => None,
                    Err(rumqttc::v5::mqttbytes::Error::PayloadSizeLimitExceeded {
                        pkt_size,
                        ..
                    }) => Some(Ok(In::TooLarge(pkt_size))),
                    Err(e) => Some(Err(format!("malformed packet: {e}"))),
                }
            }
        };
        match parsed {
            Some(r) => return r,
            None => fill_buf(rd, buf).await?,
        }
    }
}

fn v4_in(p: v4::Packet) -> Result<In, String> {
    Ok(match p {
        v4::Packet::Publish(p) => In::Publish {
            qos2: p.qos == rumqttc::mqttbytes::QoS::ExactlyOnce,
            pkid: p.pkid,
            msg: Message {
                topic: p.topic,
                payload: p.payload,
                qos: qos_in(p.qos as u8),
                retain: p.retain,
                properties: Vec::new(),
            },
        },
        v4::Packet::PubAck(a) => In::PubAck(a.pkid),
        v4::Packet::PubRel(r) => In::PubRel(r.pkid),
        v4::Packet::PubRec(_) | v4::Packet::PubComp(_) => In::Ignored,
        v4::Packet::Subscribe(s) => In::Subscribe {
            pkid: s.pkid,
            filters: s
                .filters
                .into_iter()
                .map(|f| (f.path, qos_in(f.qos as u8)))
                .collect(),
        },
        v4::Packet::Unsubscribe(u) => In::Unsubscribe {
            pkid: u.pkid,
            filters: u.topics,
        },
        v4::Packet::PingReq => In::PingReq,
        v4::Packet::Disconnect => In::Disconnect { with_will: false },
        v4::Packet::Connect(_) => In::Unexpected("a second CONNECT"),
        _ => In::Unexpected("from the server side"),
    })
}

fn v5_in(p: v5::Packet) -> Result<In, String> {
    Ok(match p {
        v5::Packet::Publish(p) => {
            let props = p.properties.unwrap_or_default();
            if props.topic_alias.is_some() {
                return Err("a topic alias (this broker allows none)".into());
            }
            In::Publish {
                qos2: p.qos == rumqttc::v5::mqttbytes::QoS::ExactlyOnce,
                pkid: p.pkid,
                msg: Message {
                    topic: String::from_utf8(p.topic.to_vec())
                        .map_err(|_| "a topic that is not UTF-8".to_owned())?,
                    payload: p.payload,
                    qos: qos_in(p.qos as u8),
                    retain: p.retain,
                    properties: props.user_properties,
                },
            }
        }
        v5::Packet::PubAck(a) => In::PubAck(a.pkid),
        v5::Packet::PubRel(r) => In::PubRel(r.pkid),
        v5::Packet::PubRec(_) | v5::Packet::PubComp(_) => In::Ignored,
        v5::Packet::Subscribe(s) => In::Subscribe {
            pkid: s.pkid,
            filters: s
                .filters
                .into_iter()
                .map(|f| (f.path, qos_in(f.qos as u8)))
                .collect(),
        },
        v5::Packet::Unsubscribe(u) => In::Unsubscribe {
            pkid: u.pkid,
            filters: u.filters,
        },
        v5::Packet::PingReq(_) => In::PingReq,
        v5::Packet::Disconnect(d) => In::Disconnect {
            with_will: d.reason_code == v5::DisconnectReasonCode::DisconnectWithWillMessage,
        },
        v5::Packet::Auth(_) => In::Unexpected("AUTH (enhanced authentication is not supported)"),
        v5::Packet::Connect(..) => In::Unexpected("a second CONNECT"),
        _ => In::Unexpected("from the server side"),
    })
}

struct Conn<W> {
    wr: W,
    version: Version,
    inflight: VecDeque<(u16, Out)>,
    pending: VecDeque<Out>,
    next_pkid: u16,
    receive_max: usize,
    max_out: usize,
    /// The largest packet taken from the client (announced in MQTT 5 CONNACKs).
    max_in: usize,
    /// Numbers of stored messages acknowledged or dropped, to tell the store.
    gone: Vec<u64>,
}

impl<W: AsyncWrite + Unpin> Conn<W> {
    async fn write_bytes(&mut self, out: &[u8]) -> Result<(), String> {
        match tokio::time::timeout(WRITE_TIMEOUT, self.wr.write_all(out)).await {
            Ok(written) => written.map_err(|e| e.to_string()),
            Err(_) => Err("the client takes no data".into()),
        }
    }

    async fn connack(&mut self, refusal: Option<Refusal>, present: bool) -> Result<(), String> {
        let mut out = BytesMut::new();
        match self.version {
            Version::V4 => {
                use v4::ConnectReturnCode as C;
                let code = match refusal {
                    None => C::Success,
                    Some(Refusal::Credentials) => C::BadUserNamePassword,
                    Some(Refusal::ClientId) => C::BadClientId,
                };
                v4::Packet::ConnAck(v4::ConnAck::new(code, present))
                    .write(&mut out, usize::MAX)
                    .map_err(|e| e.to_string())
            }
            Version::V5 => {
                use v5::ConnectReturnCode as C;
                let code = match refusal {
                    None => C::Success,
                    Some(Refusal::Credentials) => C::BadUserNamePassword,
                    Some(Refusal::ClientId) => C::ClientIdentifierNotValid,
                };
                let properties = v5::ConnAckProperties {
                    session_expiry_interval: None,
                    receive_max: Some(INFLIGHT_LIMIT as u16),
                    max_qos: Some(1),
                    retain_available: None,
                    max_packet_size: Some(u32::try_from(self.max_in).unwrap_or(u32::MAX)),
                    assigned_client_identifier: None,
                    topic_alias_max: None,
                    reason_string: None,
                    user_properties: Vec::new(),
                    wildcard_subscription_available: None,
                    subscription_identifiers_available: Some(0),
                    shared_subscription_available: Some(0),
                    server_keep_alive: None,
                    response_information: None,
                    server_reference: None,
                    authentication_method: None,
                    authentication_data: None,
                };
                v5::Packet::ConnAck(v5::ConnAck {
                    session_present: present,
                    code,
                    properties: Some(properties),
                })
                .write(&mut out, None)
                .map_err(|e| e.to_string())
            }
        }?;
        self.write_bytes(&out).await
    }

    /// Ends the connection for a packet too large: MQTT 5 says so (DISCONNECT 0x95, with
    /// `why`); MQTT 3.1.1 has no way to, and is just closed. Returns the error that ends it.
    async fn too_large(&mut self, why: String) -> String {
        if self.version == Version::V5 {
            let mut out = BytesMut::new();
            let disconnect = v5::Packet::Disconnect(v5::Disconnect {
                reason_code: v5::DisconnectReasonCode::PacketTooLarge,
                properties: Some(v5::DisconnectProperties {
                    session_expiry_interval: None,
                    reason_string: Some(why.clone()),
                    user_properties: Vec::new(),
                    server_reference: None,
                }),
            });
            if disconnect.write(&mut out, None).is_ok() {
                let _ = self.write_bytes(&out).await;
                let _ = self.wr.flush().await;
            }
        }
        format!("packet too large: {why}")
    }

    async fn write(&mut self, ack: Reply) -> Result<(), String> {
        let mut out = BytesMut::new();
        let written = match self.version {
            Version::V4 => {
                let p = match ack {
                    Reply::PubAck(id, _) => v4::Packet::PubAck(v4::PubAck::new(id)),
                    Reply::PubRec(id, _) => v4::Packet::PubRec(v4::PubRec::new(id)),
                    Reply::PubComp(id) => v4::Packet::PubComp(v4::PubComp::new(id)),
                    Reply::SubAck(id, codes) => v4::Packet::SubAck(v4::SubAck::new(
                        id,
                        codes
                            .into_iter()
                            .map(|c| match c {
                                Some(q) => v4::SubscribeReasonCode::Success(v4_qos(q)),
                                None => v4::SubscribeReasonCode::Failure,
                            })
                            .collect(),
                    )),
                    Reply::UnsubAck(id, _) => v4::Packet::UnsubAck(v4::UnsubAck::new(id)),
                    Reply::PingResp => v4::Packet::PingResp,
                };
                p.write(&mut out, usize::MAX).map_err(|e| e.to_string())
            }
            Version::V5 => {
                let p = match ack {
                    Reply::PubAck(pkid, ok) => v5::Packet::PubAck(v5::PubAck {
                        pkid,
                        reason: if ok {
                            v5::PubAckReason::Success
                        } else {
                            v5::PubAckReason::NotAuthorized
                        },
                        properties: None,
                    }),
                    Reply::PubRec(pkid, ok) => v5::Packet::PubRec(v5::PubRec {
                        pkid,
                        reason: if ok {
                            v5::PubRecReason::Success
                        } else {
                            v5::PubRecReason::NotAuthorized
                        },
                        properties: None,
                    }),
                    Reply::PubComp(pkid) => v5::Packet::PubComp(v5::PubComp::new(pkid, None)),
                    Reply::SubAck(pkid, codes) => v5::Packet::SubAck(v5::SubAck {
                        pkid,
                        return_codes: codes
                            .into_iter()
                            .map(|c| match c {
                                Some(q) => v5::SubscribeReasonCode::Success(v5_qos(q)),
                                None => v5::SubscribeReasonCode::NotAuthorized,
                            })
                            .collect(),
                        properties: None,
                    }),
                    Reply::UnsubAck(pkid, n) => v5::Packet::UnsubAck(v5::UnsubAck {
                        pkid,
                        reasons: vec![v5::UnsubAckReason::Success; n],
                        properties: None,
                    }),
                    Reply::PingResp => v5::Packet::PingResp(v5::PingResp),
                };
                p.write(&mut out, None).map_err(|e| e.to_string())
            }
        };
        written?;
        self.write_bytes(&out).await
    }

    async fn write_publish(&mut self, p: &Out, pkid: u16) -> Result<(), String> {
        let mut out = BytesMut::new();
        let m = &p.msg;
        match self.version {
            Version::V4 => v4::Packet::Publish(v4::Publish {
                dup: p.dup,
                qos: v4_qos(p.qos),
                retain: p.retain,
                topic: m.topic.clone(),
                pkid,
                payload: m.payload.clone(),
            })
            .write(&mut out, usize::MAX)
            .map_err(|e| e.to_string())?,
            Version::V5 => v5::Packet::Publish(v5::Publish {
                dup: p.dup,
                qos: v5_qos(p.qos),
                retain: p.retain,
                topic: Bytes::copy_from_slice(m.topic.as_bytes()),
                pkid,
                payload: m.payload.clone(),
                properties: (!m.properties.is_empty()).then(|| v5::PublishProperties {
                    user_properties: m.properties.clone(),
                    ..Default::default()
                }),
            })
            .write(&mut out, None)
            .map_err(|e| e.to_string())?,
        };
        if out.len() > self.max_out {
            tracing::debug!(topic = %m.topic, "mqtt: a message larger than the client accepts is not sent to it");
            return Ok(());
        }
        self.write_bytes(&out).await
    }

    async fn send(&mut self, p: Out) -> Result<(), String> {
        if p.qos == QoS::AtMostOnce {
            return self.write_publish(&p, 0).await;
        }
        if self.pending.len() >= QUEUE_LIMIT {
            // The client acknowledges nothing: drop the oldest rather than grow without end.
            if let Some(old) = self.pending.pop_front() {
                self.gone.push(old.seq);
            }
        }
        self.pending.push_back(p);
        self.fill().await
    }

    /// Sends pending QoS 1 messages while fewer than the limit are unacknowledged.
    async fn fill(&mut self) -> Result<(), String> {
        while self.inflight.len() < self.receive_max {
            let Some(p) = self.pending.pop_front() else {
                return Ok(());
            };
            if p.qos == QoS::AtMostOnce {
                self.write_publish(&p, 0).await?;
                continue;
            }
            loop {
                self.next_pkid = self.next_pkid.wrapping_add(1).max(1);
                let id = self.next_pkid;
                if !self.inflight.iter().any(|(x, _)| *x == id) {
                    break;
                }
            }
            let id = self.next_pkid;
            self.write_publish(&p, id).await?;
            self.inflight.push_back((id, p));
        }
        Ok(())
    }
}

/// A kept message is gone (acknowledged or dropped): tells the store, or takes it out of the
/// batch about to be stored.
fn forget_kept(
    store: Option<&dyn Persistence>,
    kept: &mut Vec<(String, u64, Arc<Message>)>,
    client_id: &str,
    seq: u64,
) {
    if seq == 0 {
        return;
    }
    let before = kept.len();
    kept.retain(|(c, n, _)| !(c == client_id && *n == seq));
    if kept.len() == before {
        if let Some(p) = store {
            p.done(client_id, seq);
        }
    }
}

/// Asks a connection to close (it may already be closing).
fn close(tx: &mpsc::Sender<Cmd>) {
    if tx.try_send(Cmd::Close).is_err() {
        // Full: the connection is far behind; spawn the send.
        let tx = tx.clone();
        tokio::spawn(async move {
            let _ = tx.send(Cmd::Close).await;
        });
    }
}

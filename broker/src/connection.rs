//! One client's connection: CONNECT, then a loop that reads the client's packets and writes
//! what the broker routes to it, until either side ends it.
//!
//! Outgoing messages come through one bounded channel per connection, in the order routing put
//! them there; QoS 1 ones wait in `pending` while the client has its receive maximum of
//! unacknowledged messages. Acknowledgements of a client's messages go out in the order the
//! messages came, each once its publish hook and its commit are done (awaited in order, by
//! this loop: no task per message).

use std::collections::{HashMap, HashSet, VecDeque};
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime};

use bytes::BytesMut;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::sync::watch;

use crate::access::{Authenticator, Client};
use crate::broker::{Broker, stopped};
use crate::codec::{
    self, Accepted, Goodbye, In, PubRefusal, Refusal, Reply, TOPIC_ALIAS_MAX, Version,
};
use crate::error::{ConnError, chain};
use crate::message::{Out, QoS};
use crate::options::{
    CONNECT_TIMEOUT, INFLIGHT_LIMIT, LINGER, MAX_WAITING, QUEUE_LIMIT, WRITE_TIMEOUT,
};
use crate::persist::PersistError;
use crate::session::Leaving;

/// What an acknowledgement waits for: the publish hook, then the store's commit.
type Done = Pin<Box<dyn Future<Output = Result<(), PersistError>> + Send>>;

/// The writing side of a connection and what it has sent.
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
    /// MQTT 5 topic aliases set towards the client (§3.3.2.3.4), at most its Topic Alias
    /// Maximum, first come first kept.
    aliases_out: HashMap<Arc<str>, u16>,
    alias_max_out: u16,
    /// A DISCONNECT was sent: the connection is closed gracefully.
    said_goodbye: bool,
}

impl<W: AsyncWrite + Unpin> Conn<W> {
    async fn write_bytes(&mut self, out: &[u8]) -> Result<(), ConnError> {
        match tokio::time::timeout(WRITE_TIMEOUT, self.wr.write_all(out)).await {
            Ok(written) => written.map_err(ConnError::Io),
            Err(_) => Err(ConnError::WriteTimeout),
        }
    }

    async fn connack(
        &mut self,
        refusal: Option<Refusal>,
        present: bool,
        accepted: Accepted,
    ) -> Result<(), ConnError> {
        let out = codec::connack(self.version, refusal, present, self.max_in, accepted)?;
        self.write_bytes(&out).await
    }

    /// Ends the connection: MQTT 5 says why (DISCONNECT with `reason` and `why`); MQTT 3.1.1
    /// has no way to, and is just closed. Returns `error`, which ends it.
    async fn goodbye(&mut self, reason: Goodbye, why: String, error: ConnError) -> ConnError {
        if self.version == Version::V5 {
            if let Ok(out) = codec::disconnect(reason, why) {
                let _ = self.write_bytes(&out).await;
                let _ = self.wr.flush().await;
                self.said_goodbye = true;
            }
        }
        error
    }

    /// Ends the connection for a packet too large (DISCONNECT 0x95 in MQTT 5).
    async fn too_large(&mut self, why: String) -> ConnError {
        self.goodbye(
            Goodbye::PacketTooLarge,
            why.clone(),
            ConnError::TooLarge(why),
        )
        .await
    }

    /// Ends the connection because what the client sent could not be stored, unacknowledged:
    /// the client sends it again when it reconnects (DISCONNECT 0x80 in MQTT 5, with the
    /// reason).
    async fn not_stored(&mut self, e: PersistError) -> ConnError {
        let why = format!("not stored: {}", chain(&e));
        self.goodbye(Goodbye::UnspecifiedError, why, ConnError::Store(e))
            .await
    }

    async fn write(&mut self, reply: Reply) -> Result<(), ConnError> {
        let out = codec::reply(self.version, reply)?;
        self.write_bytes(&out).await
    }

    /// Writes a PUBLISH; `false` when it is not sent: expired (MQTT 5 §3.3.2.3.3), or larger
    /// than the client takes (§3.1.2.11.4).
    async fn write_publish(&mut self, p: &Out, pkid: u16) -> Result<bool, ConnError> {
        let expiry = p
            .msg
            .expires_at
            .and_then(|_| p.msg.seconds_left(SystemTime::now()));
        if expiry == Some(0) && !p.dup {
            return Ok(false);
        }
        let alias = if self.alias_max_out == 0 {
            None
        } else if let Some(a) = self.aliases_out.get(p.msg.topic.as_str()) {
            Some((*a, false))
        } else if self.aliases_out.len() < usize::from(self.alias_max_out) {
            // Kept once the packet that sets it is sent.
            Some((self.aliases_out.len() as u16 + 1, true))
        } else {
            None
        };
        let out: BytesMut = codec::publish(self.version, p, pkid, expiry.map(|s| s.max(1)), alias)?;
        if out.len() > self.max_out {
            tracing::debug!(topic = %p.msg.topic, "mqtt: a message larger than the client accepts is not sent to it");
            return Ok(false);
        }
        self.write_bytes(&out).await?;
        if let Some((a, true)) = alias {
            self.aliases_out.insert(Arc::from(p.msg.topic.as_str()), a);
        }
        Ok(true)
    }

    async fn send(&mut self, p: Out) -> Result<(), ConnError> {
        if p.qos == QoS::AtMostOnce {
            self.write_publish(&p, 0).await?;
            return Ok(());
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

    /// Sends pending QoS 1 and 2 messages while fewer than the limit are unacknowledged (a
    /// QoS 2 one until PUBCOMP). A message sent before is resent with its packet id (a
    /// released QoS 2 one as PUBREL).
    async fn fill(&mut self) -> Result<(), ConnError> {
        while self.inflight.len() < self.receive_max {
            let Some(mut p) = self.pending.pop_front() else {
                return Ok(());
            };
            if p.qos == QoS::AtMostOnce {
                self.write_publish(&p, 0).await?;
                continue;
            }
            let id = if p.pkid != 0 && !self.inflight.iter().any(|(x, _)| *x == p.pkid) {
                p.pkid
            } else {
                loop {
                    self.next_pkid = self.next_pkid.wrapping_add(1).max(1);
                    let id = self.next_pkid;
                    if !self.inflight.iter().any(|(x, _)| *x == id) {
                        break id;
                    }
                }
            };
            if p.released {
                self.write(Reply::PubRel(id)).await?;
            } else if !self.write_publish(&p, id).await? {
                self.gone.push(p.seq);
                continue;
            }
            p.pkid = id;
            self.inflight.push_back((id, p));
        }
        Ok(())
    }

    /// Takes a message out of the in-flight window (acknowledged, or refused by a PUBREC);
    /// sends what waits.
    async fn acknowledged(&mut self, at: usize) -> Result<(), ConnError> {
        if let Some((_, out)) = self.inflight.remove(at) {
            self.gone.push(out.seq);
        }
        self.fill().await
    }
}

/// A client id for an MQTT 5 client that sent an empty one (MQTT 5 §3.1.3.1): `{user}.auto-`
/// and a number unique in this process and time.
fn assign_client_id(user: &str) -> String {
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let n = NEXT.fetch_add(1, Ordering::Relaxed);
    let t = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.as_micros());
    format!("{user}.auto-{t:x}-{n}")
}

impl<A: Authenticator> Broker<A> {
    /// Serves one client connection (a TCP stream, or a TLS stream over one) until it ends.
    pub async fn serve_stream<S>(
        self: Arc<Self>,
        stream: S,
        peer: String,
        mut shutdown: watch::Receiver<bool>,
    ) where
        S: AsyncRead + AsyncWrite + Send + Unpin + 'static,
    {
        let (mut rd, mut wr) = tokio::io::split(stream);
        let mut buf = BytesMut::with_capacity(4096);
        let max = self.options.max_packet;
        let connect = match tokio::time::timeout(
            CONNECT_TIMEOUT,
            codec::read_connect(&mut rd, &mut buf, max),
        )
        .await
        {
            Ok(Ok(c)) => c,
            Ok(Err(ConnError::Level(level))) => {
                // MQTT 3.1.1 [MQTT-3.1.2-2]: CONNACK 0x01, then close; MQTT 5 §3.1.2.2: 0x84.
                tracing::debug!(%peer, "mqtt: refused: protocol level {level}");
                let v = if level < 5 { Version::V4 } else { Version::V5 };
                if let Ok(out) =
                    codec::connack(v, Some(Refusal::Version), false, max, Accepted::default())
                {
                    let _ = tokio::time::timeout(WRITE_TIMEOUT, wr.write_all(&out)).await;
                }
                return;
            }
            Ok(Err(e)) => {
                tracing::debug!(%peer, "mqtt: bad first packet: {}", chain(&e));
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
            aliases_out: HashMap::new(),
            alias_max_out: connect.topic_alias_max,
            said_goodbye: false,
        };
        if connect.auth_method.is_some() {
            tracing::info!(%peer, "mqtt: refused: enhanced authentication is not supported");
            let _ = conn
                .connack(Some(Refusal::AuthMethod), false, Accepted::default())
                .await;
            return;
        }
        let Some(client) = self
            .auth
            .authenticate(connect.username.as_deref(), connect.password.as_deref())
        else {
            tracing::info!(%peer, user = connect.username.as_deref(), "mqtt: refused: bad user name or password");
            let _ = conn
                .connack(Some(Refusal::Credentials), false, Accepted::default())
                .await;
            return;
        };
        let user = client.name().to_owned();
        let mut accepted = Accepted::default();
        let client_id = if connect.client_id.is_empty() {
            match version {
                // [MQTT-3.1.3-8]: an empty id with clean session 0 is refused.
                Version::V4 if connect.persistent => {
                    let _ = conn
                        .connack(Some(Refusal::ClientId), false, Accepted::default())
                        .await;
                    return;
                }
                Version::V4 => None,
                // MQTT 5 [MQTT-3.1.3-6], [MQTT-3.2.2-16]: the broker assigns one and says which.
                Version::V5 => {
                    let id = assign_client_id(&user);
                    accepted.assigned_client_id = Some(id.clone());
                    Some(id)
                }
            }
        } else if client.may_use_client_id(&connect.client_id) {
            Some(connect.client_id.clone())
        } else {
            tracing::info!(%peer, %user, client_id = %connect.client_id, "mqtt: refused: client id not allowed for this user");
            let _ = conn
                .connack(Some(Refusal::ClientId), false, Accepted::default())
                .await;
            return;
        };
        // MQTT 5 §3.2.2.3.2: a shorter interval than asked is announced.
        if let (Version::V5, Some(asked), Some(limit)) =
            (version, connect.expiry, self.options.session_expiry_limit)
        {
            if connect.persistent && limit < asked {
                accepted.session_expiry = Some(u32::try_from(limit.as_secs()).unwrap_or(u32::MAX));
            }
        }
        if let (Version::V5, None, true, Some(limit)) = (
            version,
            connect.expiry,
            connect.persistent,
            self.options.session_expiry_limit,
        ) {
            accepted.session_expiry = Some(u32::try_from(limit.as_secs()).unwrap_or(u32::MAX));
        }

        let opened = match self.open_session(&client, client_id, &connect).await {
            Ok(o) => o,
            Err(e) => {
                tracing::error!(%peer, %user, "mqtt: refused: {}", chain(&e));
                let _ = conn
                    .connack(Some(Refusal::Unavailable), false, Accepted::default())
                    .await;
                return;
            }
        };
        let (conn_id, client_id, session_present) =
            (opened.conn_id, opened.client_id, opened.present);
        let (mut rx, close) = (opened.rx, opened.close);
        let (taken_over, ended) = (opened.taken_over, opened.ended);
        conn.pending = opened.pending;
        let mut qos2_in: HashSet<u16> = opened.qos2_in;
        tracing::debug!(%peer, %user, %client_id, session_present, ?version, "mqtt: connected");

        let mut keep_alive = connect.keep_alive;
        if let (Version::V5, Some(max)) = (version, self.options.max_keep_alive) {
            if keep_alive == 0 || keep_alive > max {
                keep_alive = max;
                accepted.server_keep_alive = Some(max);
            }
        }
        let keepalive =
            (keep_alive > 0).then(|| Duration::from_millis(u64::from(keep_alive) * 1500));
        let mut clean_exit = false;
        let mut expiry_at_disconnect: Option<u32> = None;
        // MQTT 5 topic aliases the client set (§3.3.2.3.4), for this connection only.
        let mut aliases: HashMap<u16, String> = HashMap::new();
        // Acknowledgements held for their message's hook and commit, in the order received.
        let mut waiting: VecDeque<(Reply, Option<Done>)> = VecDeque::new();
        // The PUBACKs among them (QoS 1 messages not yet acknowledged).
        let mut unacked1: usize = 0;
        let result: Result<(), ConnError> = async {
            if let Err(e) = opened.stored.wait().await {
                let _ = conn.connack(Some(Refusal::Unavailable), false, Accepted::default()).await;
                return Err(ConnError::Store(e));
            }
            conn.connack(None, session_present, accepted).await?;
            conn.fill().await?;
            loop {
                let idle = async {
                    match keepalive {
                        Some(k) => tokio::time::sleep(k).await,
                        None => std::future::pending().await,
                    }
                };
                tokio::select! {
                    done = async {
                        match waiting.front_mut() {
                            Some((_, Some(f))) => f.as_mut().await,
                            _ => std::future::pending().await,
                        }
                    }, if waiting.front().is_some_and(|(_, f)| f.is_some()) => {
                        if let Err(e) = done {
                            return Err(conn.not_stored(e).await);
                        }
                        if let Some((_, f)) = waiting.front_mut() {
                            *f = None;
                        }
                        while waiting.front().is_some_and(|(_, f)| f.is_none()) {
                            if let Some((reply, _)) = waiting.pop_front() {
                                if matches!(reply, Reply::PubAck(..)) {
                                    unacked1 -= 1;
                                }
                                conn.write(reply).await?;
                            }
                        }
                    }
                    packet = codec::read_packet(&mut rd, &mut buf, version, max), if waiting.len() < MAX_WAITING => {
                        match packet? {
                            In::Publish { mut msg, pkid, alias, expiry } => {
                                if let Some(a) = alias {
                                    if a == 0 || a > TOPIC_ALIAS_MAX {
                                        return Err(ConnError::TopicAlias(format!("topic alias {a}: this broker takes 1 to {TOPIC_ALIAS_MAX}")));
                                    }
                                    if msg.topic.is_empty() {
                                        match aliases.get(&a) {
                                            Some(t) => msg.topic = t.clone(),
                                            None => return Err(ConnError::Protocol(format!("topic alias {a} was never set"))),
                                        }
                                    } else {
                                        aliases.insert(a, msg.topic.clone());
                                    }
                                }
                                let qos = msg.qos;
                                if expiry.is_some() {
                                    codec::set_expiry(&mut msg, SystemTime::now(), expiry);
                                }
                                // A well-formed topic the broker does not take (a `$` topic,
                                // MQTT 5 §4.7.2) is refused with 0x90; anything else invalid
                                // (a wildcard, an empty topic) is a malformed packet.
                                let mut refused = None;
                                if let Err(source) = edgefn_schema::topic::validate_topic(&msg.topic) {
                                    let bad_form = msg.topic.is_empty() || source.wildcard || msg.topic.contains('\0');
                                    if bad_form || !msg.topic.starts_with('$') {
                                        return Err(ConnError::Topic { topic: msg.topic, source });
                                    }
                                    refused = Some(PubRefusal::TopicNameInvalid);
                                }
                                if qos == QoS::ExactlyOnce && qos2_in.contains(&pkid) {
                                    // A resend before PUBREL: answered, not delivered again
                                    // ([MQTT-4.3.3-9] in MQTT 5, [MQTT-4.3.3-2] in 3.1.1).
                                    let reply = Reply::PubRec(pkid, None);
                                    if waiting.is_empty() {
                                        conn.write(reply).await?;
                                    } else {
                                        waiting.push_back((reply, None));
                                    }
                                    continue;
                                }
                                // MQTT 5 [MQTT-3.3.4-9]: no more QoS 1 and 2 messages awaiting
                                // their acknowledgement than the Receive Maximum announced.
                                if version == Version::V5 && qos != QoS::AtMostOnce && qos2_in.len() + unacked1 >= INFLIGHT_LIMIT {
                                    return Err(ConnError::ReceiveMaximum);
                                }
                                if refused.is_none() {
                                    if let Some(why) = self.options.too_large.as_ref().and_then(|check| check(&msg)) {
                                        tracing::info!(%user, topic = %msg.topic, "mqtt: message refused: {why}");
                                        return Err(conn.too_large(why).await);
                                    }
                                    if !client.may_publish(&msg.topic) {
                                        refused = Some(PubRefusal::NotAuthorized);
                                    }
                                }
                                let mut done: Option<Done> = None;
                                if refused.is_none() {
                                    // Called now, in the order the messages came.
                                    let hook = self.options.on_publish.as_ref().map(|h| h(msg.clone()));
                                    let stored = match self.route(msg, Some(&client_id)).await {
                                        Ok(ack) => ack,
                                        Err(e) => return Err(conn.not_stored(e).await),
                                    };
                                    if hook.is_some() || !stored.is_ready() {
                                        done = Some(Box::pin(async move {
                                            if let Some(hook) = hook {
                                                hook.await;
                                            }
                                            stored.wait().await
                                        }));
                                    }
                                } else {
                                    tracing::info!(%user, topic = %msg.topic, ?refused, "mqtt: publish refused");
                                }
                                let reply = match qos {
                                    QoS::ExactlyOnce => {
                                        // MQTT 3.1.1 acknowledges a refused message as usual
                                        // ([MQTT-3.3.5-2]), so its PUBREL follows.
                                        if refused.is_none() || version == Version::V4 {
                                            qos2_in.insert(pkid);
                                        }
                                        Some(Reply::PubRec(pkid, refused))
                                    }
                                    QoS::AtLeastOnce => Some(Reply::PubAck(pkid, refused)),
                                    QoS::AtMostOnce => None,
                                };
                                // Acknowledgements go in the order the messages came, each once
                                // its hook and its commit are done. A QoS 0 message has none to
                                // wait for: its commit is not awaited (a failure is logged).
                                if let Some(reply) = reply {
                                    if done.is_none() && waiting.is_empty() {
                                        conn.write(reply).await?;
                                    } else {
                                        if matches!(reply, Reply::PubAck(..)) {
                                            unacked1 += 1;
                                        }
                                        waiting.push_back((reply, done));
                                    }
                                }
                            }
                            In::PubRel(pkid) => {
                                let found = qos2_in.remove(&pkid);
                                let reply = Reply::PubComp(pkid, found);
                                if waiting.is_empty() {
                                    conn.write(reply).await?;
                                } else {
                                    waiting.push_back((reply, None));
                                }
                            }
                            In::PubAck(pkid) => {
                                if let Some(i) = conn.inflight.iter().position(|(id, p)| *id == pkid && p.qos == QoS::AtLeastOnce) {
                                    conn.acknowledged(i).await?;
                                }
                                self.forget_gone(&mut conn.gone, &client_id, conn_id).await;
                            }
                            In::PubRec(pkid, ok) => {
                                let at = conn.inflight.iter().position(|(id, p)| *id == pkid && p.qos == QoS::ExactlyOnce);
                                match at {
                                    Some(i) if ok => {
                                        if let Some((_, p)) = conn.inflight.get_mut(i) {
                                            p.released = true;
                                        }
                                        conn.write(Reply::PubRel(pkid)).await?;
                                    }
                                    // A refusal ends the exchange (MQTT 5 §4.3.3).
                                    Some(i) => conn.acknowledged(i).await?,
                                    None => conn.write(Reply::PubRel(pkid)).await?,
                                }
                                self.forget_gone(&mut conn.gone, &client_id, conn_id).await;
                            }
                            In::PubComp(pkid) => {
                                if let Some(i) = conn.inflight.iter().position(|(id, p)| *id == pkid && p.qos == QoS::ExactlyOnce) {
                                    conn.acknowledged(i).await?;
                                }
                                self.forget_gone(&mut conn.gone, &client_id, conn_id).await;
                            }
                            In::Subscribe { pkid, filters, id } => {
                                let (codes, retained, stored) =
                                    self.subscribe(&client, &client_id, conn_id, filters, id).await?;
                                if let Err(e) = stored.wait().await {
                                    return Err(conn.not_stored(e).await);
                                }
                                conn.write(Reply::SubAck(pkid, codes)).await?;
                                for r in retained {
                                    conn.send(r).await?;
                                }
                            }
                            In::Unsubscribe { pkid, filters } => {
                                let (results, stored) = self.unsubscribe(&client, &client_id, &filters).await?;
                                if let Err(e) = stored.wait().await {
                                    return Err(conn.not_stored(e).await);
                                }
                                conn.write(Reply::UnsubAck(pkid, results)).await?;
                            }
                            In::PingReq => conn.write(Reply::PingResp).await?,
                            In::Disconnect { with_will, session_expiry } => {
                                // [MQTT-3.14.2-2]: not from 0 to more.
                                if session_expiry.is_some_and(|e| e > 0) && !connect.persistent {
                                    return Err(ConnError::Protocol("a session expiry interval set at DISCONNECT after a CONNECT with none".into()));
                                }
                                expiry_at_disconnect = session_expiry;
                                clean_exit = !with_will;
                                return Ok(());
                            }
                            In::TooLarge(size) => {
                                let why = format!("a packet of {size} bytes, over this broker's Maximum Packet Size of {max} bytes");
                                tracing::info!(%user, "mqtt: {why}");
                                return Err(conn.too_large(why).await);
                            }
                            In::Unexpected(what) => return Err(ConnError::Unexpected(what)),
                        }
                    }
                    out = rx.recv() => match out {
                        Some(p) => {
                            conn.send(p).await?;
                            self.forget_gone(&mut conn.gone, &client_id, conn_id).await;
                        }
                        // The session was taken over or revoked.
                        None => return Err(ConnError::ClosedByBroker),
                    },
                    () = close.notified() => return Err(ConnError::ClosedByBroker),
                    () = idle => return Err(ConnError::KeepaliveExpired),
                    () = stopped(&mut shutdown) => return Err(ConnError::ShuttingDown),
                }
            }
        }
        .await;
        if let Err(e) = &result {
            tracing::debug!(%peer, %user, %client_id, "mqtt: connection ended: {}", chain(e));
            // MQTT 5 §4.13: the broker says why it closes (those that said so already aside).
            if version == Version::V5 {
                let reason = match e {
                    ConnError::Malformed5(_)
                    | ConnError::TopicNotUtf8(_)
                    | ConnError::Topic { .. }
                    | ConnError::Length => Some(Goodbye::Malformed),
                    ConnError::Unexpected(_) | ConnError::Protocol(_) => {
                        Some(Goodbye::ProtocolError)
                    }
                    ConnError::TopicAlias(_) => Some(Goodbye::TopicAlias),
                    ConnError::ReceiveMaximum => Some(Goodbye::ReceiveMaximum),
                    ConnError::KeepaliveExpired => Some(Goodbye::KeepAlive),
                    ConnError::ShuttingDown => Some(Goodbye::ShuttingDown),
                    ConnError::ClosedByBroker | ConnError::TakenOver => {
                        let taken = taken_over.load(std::sync::atomic::Ordering::Relaxed);
                        Some(if taken {
                            Goodbye::TakenOver
                        } else {
                            Goodbye::NotAuthorized
                        })
                    }
                    _ => None,
                };
                if let Some(reason) = reason {
                    let _ = conn.goodbye(reason, chain(e), ConnError::Eof).await;
                }
            }
        }

        // Keep what the client did not acknowledge, in order, for a persistent session.
        self.forget_gone(&mut conn.gone, &client_id, conn_id).await;
        let mut left: VecDeque<Out> = conn
            .inflight
            .drain(..)
            .map(|(_, mut p)| {
                p.dup = true;
                p
            })
            .collect();
        left.extend(conn.pending.drain(..));
        let leaving = Leaving {
            left,
            qos2_in,
            expiry_at_disconnect,
        };
        self.close_session(&client_id, conn_id, session_present, leaving, &mut rx)
            .await;
        // The session has what this connection left: one that takes it over may go on.
        drop(ended);
        if !clean_exit {
            if let Some(will) = connect.will {
                if client.may_publish(&will.topic)
                    && edgefn_schema::topic::validate_topic(&will.topic).is_ok()
                {
                    // MQTT 5 §3.1.3.2.2: after the Will Delay Interval, or when the session
                    // ends if sooner; not at all if the client is back by then.
                    let session_left = if connect.persistent {
                        connect.expiry.unwrap_or(Duration::MAX)
                    } else {
                        Duration::ZERO
                    };
                    let delay = connect.will_delay.min(session_left);
                    let will_expiry = connect.will_expiry;
                    let broker = self.clone();
                    let mut stop = shutdown.clone();
                    let publish = async move {
                        if !delay.is_zero() {
                            tokio::select! {
                                () = tokio::time::sleep(delay) => {}
                                // A broker going away sends no delayed wills.
                                () = stopped(&mut stop) => return,
                            }
                            let back = broker
                                .lock()
                                .sessions
                                .get(&client_id)
                                .is_some_and(|s| s.conn.is_some());
                            if back {
                                return;
                            }
                        }
                        let mut will = will;
                        codec::set_expiry(&mut will, SystemTime::now(), will_expiry);
                        match broker.route(will, None).await {
                            Ok(stored) => stored.detach(),
                            Err(e) => {
                                tracing::error!(%client_id, "mqtt: a will not stored: {}", chain(&e))
                            }
                        }
                    };
                    if delay.is_zero() {
                        publish.await;
                    } else {
                        tokio::spawn(publish);
                    }
                }
            }
        }
        if conn.said_goodbye {
            // Closed gracefully: FIN, then what the client still sends (a PUBREL already on its
            // way) is read and dropped for a moment, so that it reads the DISCONNECT rather than
            // a reset.
            let _ = conn.wr.shutdown().await;
            let _ = tokio::time::timeout(LINGER, async {
                let mut sink = [0u8; 4096];
                while let Ok(1..) = rd.read(&mut sink).await {}
            })
            .await;
        }
    }
}

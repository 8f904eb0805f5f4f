//! One client's connection: CONNECT, then a loop that reads the client's packets and writes
//! what the broker routes to it, until either side ends it.
//!
//! Outgoing messages come through one bounded channel per connection, in the order routing put
//! them there; QoS 1 ones wait in `pending` while the client has its receive maximum of
//! unacknowledged messages. Acknowledgements of a client's messages go out in the order the
//! messages came, each once its publish hook and its commit are done (awaited in order, by
//! this loop: no task per message).

use std::collections::VecDeque;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use bytes::BytesMut;
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt};
use tokio::sync::watch;

use crate::access::{Authenticator, Client};
use crate::broker::{Broker, stopped};
use crate::codec::{self, Goodbye, In, Refusal, Reply, Version};
use crate::error::{ConnError, chain};
use crate::message::{Out, QoS};
use crate::options::{CONNECT_TIMEOUT, INFLIGHT_LIMIT, MAX_WAITING, QUEUE_LIMIT, WRITE_TIMEOUT};
use crate::persist::PersistError;

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
}

impl<W: AsyncWrite + Unpin> Conn<W> {
    async fn write_bytes(&mut self, out: &[u8]) -> Result<(), ConnError> {
        match tokio::time::timeout(WRITE_TIMEOUT, self.wr.write_all(out)).await {
            Ok(written) => written.map_err(ConnError::Io),
            Err(_) => Err(ConnError::WriteTimeout),
        }
    }

    async fn connack(&mut self, refusal: Option<Refusal>, present: bool) -> Result<(), ConnError> {
        let out = codec::connack(self.version, refusal, present, self.max_in)?;
        self.write_bytes(&out).await
    }

    /// Ends the connection: MQTT 5 says why (DISCONNECT with `reason` and `why`); MQTT 3.1.1
    /// has no way to, and is just closed. Returns `error`, which ends it.
    async fn goodbye(&mut self, reason: Goodbye, why: String, error: ConnError) -> ConnError {
        if self.version == Version::V5 {
            if let Ok(out) = codec::disconnect(reason, why) {
                let _ = self.write_bytes(&out).await;
                let _ = self.wr.flush().await;
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

    async fn write_publish(&mut self, p: &Out, pkid: u16) -> Result<(), ConnError> {
        let out: BytesMut = codec::publish(self.version, p, pkid)?;
        if out.len() > self.max_out {
            tracing::debug!(topic = %p.msg.topic, "mqtt: a message larger than the client accepts is not sent to it");
            return Ok(());
        }
        self.write_bytes(&out).await
    }

    async fn send(&mut self, p: Out) -> Result<(), ConnError> {
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
    async fn fill(&mut self) -> Result<(), ConnError> {
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
        let (mut rd, wr) = tokio::io::split(stream);
        let mut buf = BytesMut::with_capacity(4096);
        let max = self.options.max_packet;
        let connect = match tokio::time::timeout(
            CONNECT_TIMEOUT,
            codec::read_connect(&mut rd, &mut buf, max),
        )
        .await
        {
            Ok(Ok(c)) => c,
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

        let opened = match self.open_session(&client, client_id, &connect).await {
            Ok(o) => o,
            Err(e) => {
                tracing::error!(%peer, %user, "mqtt: refused: {}", chain(&e));
                let _ = conn.connack(Some(Refusal::Unavailable), false).await;
                return;
            }
        };
        let (conn_id, client_id, session_present) =
            (opened.conn_id, opened.client_id, opened.present);
        let (mut rx, close) = (opened.rx, opened.close);
        conn.pending = opened.pending;
        tracing::debug!(%peer, %user, %client_id, session_present, ?version, "mqtt: connected");

        let keepalive = (connect.keep_alive > 0)
            .then(|| Duration::from_millis(u64::from(connect.keep_alive) * 1500));
        let mut clean_exit = false;
        // Acknowledgements held for their message's hook and commit, in the order received.
        let mut waiting: VecDeque<(Reply, Option<Done>)> = VecDeque::new();
        let result: Result<(), ConnError> = async {
            if let Err(e) = opened.stored.wait().await {
                let _ = conn.connack(Some(Refusal::Unavailable), false).await;
                return Err(ConnError::Store(e));
            }
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
                                conn.write(reply).await?;
                            }
                        }
                    }
                    packet = codec::read_packet(&mut rd, &mut buf, version, max), if waiting.len() < MAX_WAITING => {
                        match packet? {
                            In::Publish { msg, pkid, qos2 } => {
                                if let Err(source) = edgefn_schema::topic::validate_topic(&msg.topic) {
                                    return Err(ConnError::Topic { topic: msg.topic, source });
                                }
                                if let Some(why) = self.options.too_large.as_ref().and_then(|check| check(&msg)) {
                                    tracing::info!(%user, topic = %msg.topic, "mqtt: message refused: {why}");
                                    return Err(conn.too_large(why).await);
                                }
                                let allowed = client.may_publish(&msg.topic);
                                let qos = msg.qos;
                                let mut done: Option<Done> = None;
                                if allowed {
                                    // Called now, in the order the messages came.
                                    let hook = self.options.on_publish.as_ref().map(|h| h(msg.clone()));
                                    let stored = match self.route(msg).await {
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
                                // its hook and its commit are done. A QoS 0 message has none to
                                // wait for: its commit is not awaited (a failure is logged).
                                if let Some(reply) = reply {
                                    if done.is_none() && waiting.is_empty() {
                                        conn.write(reply).await?;
                                    } else {
                                        waiting.push_back((reply, done));
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
                                self.forget_gone(&mut conn.gone, &client_id, conn_id).await;
                                conn.fill().await?;
                            }
                            In::Subscribe { pkid, filters } => {
                                let (codes, retained, stored) =
                                    self.subscribe(&client, &client_id, conn_id, filters).await?;
                                if let Err(e) = stored.wait().await {
                                    return Err(conn.not_stored(e).await);
                                }
                                conn.write(Reply::SubAck(pkid, codes)).await?;
                                for r in retained {
                                    conn.send(r).await?;
                                }
                            }
                            In::Unsubscribe { pkid, filters } => {
                                let stored = self.unsubscribe(&client, &client_id, &filters).await?;
                                if let Err(e) = stored.wait().await {
                                    return Err(conn.not_stored(e).await);
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
        self.close_session(&client_id, conn_id, session_present, left, &mut rx)
            .await;
        if !clean_exit {
            if let Some(will) = connect.will {
                if client.may_publish(&will.topic)
                    && edgefn_schema::topic::validate_topic(&will.topic).is_ok()
                {
                    match self.route(will).await {
                        Ok(stored) => stored.detach(),
                        Err(e) => {
                            tracing::error!(%client_id, "mqtt: a will not stored: {}", chain(&e))
                        }
                    }
                }
            }
        }
    }
}

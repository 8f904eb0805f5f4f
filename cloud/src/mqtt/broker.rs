//! The embedded MQTT 3.1.1 broker, for a control plane on a single machine.
//!
//! Why not rumqttd: rumqttd 0.20 can check a client's credentials at CONNECT (an auth handler)
//! but has no per-client rule for what it may publish or subscribe to; its only confinement is a
//! topic prefix taken from a TLS client certificate's organisation. Putting a filtering proxy in
//! front would mean parsing MQTT anyway, with the real broker still reachable behind it. This
//! broker is small and enforces the namespace at the one place every packet passes: it reuses
//! rumqttc's MQTT 3.1.1 packet codec (the cloud's client needs rumqttc anyway), so it adds no
//! dependency.
//!
//! What it does: CONNECT with user name and password checked by an [`Authenticator`]; client
//! ids confined per user (a device's is its name, or `<name>.<suffix>`); SUBSCRIBE checked
//! filter by filter (a refused filter gets the SUBACK failure code 0x80); PUBLISH checked
//! against the publisher's rights (a refused message is acknowledged, as MQTT 3.1.1 has no
//! negative PUBACK, and dropped) and again against each receiver's rights at delivery; QoS 0
//! and 1 (QoS 2 is accepted from clients and delivered as QoS 1); persistent sessions
//! (`clean session = false`): subscriptions and up to [`QUEUE_LIMIT`] QoS 1 messages kept in
//! memory while the client is away, unacknowledged ones resent on reconnection; keepalive;
//! last will; session takeover. Not done: retained messages, MQTT 5, TLS, persistence across
//! restarts of the cloud.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::BytesMut;
use rumqttc::mqttbytes::v4::{
    ConnAck, ConnectReturnCode, Packet, PubAck, PubComp, PubRec, Publish, SubAck,
    SubscribeReasonCode, UnsubAck,
};
use rumqttc::mqttbytes::{Error as CodecError, Protocol, QoS};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::sync::{mpsc, watch};

use super::{Identity, MAX_PACKET_BYTES};

/// Messages kept for a persistent session while its client is away; the oldest go first.
pub const QUEUE_LIMIT: usize = 10_000;
/// QoS 1 messages sent to a client and not yet acknowledged, at most.
const INFLIGHT_LIMIT: usize = 100;
/// How long a new connection has to send CONNECT.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// A client that does not take a packet for this long is disconnected.
const WRITE_TIMEOUT: Duration = Duration::from_secs(30);

/// Checks MQTT credentials.
pub trait Authenticator: Send + Sync + 'static {
    /// Who `username` with `password` is, or `None` to refuse the connection.
    fn authenticate(&self, username: &str, password: &str) -> Option<Identity>;
}

enum Cmd {
    Deliver(Publish),
    Close,
}

struct Session {
    owner: Identity,
    subs: Vec<(String, QoS)>,
    conn: Option<(u64, mpsc::Sender<Cmd>)>,
    clean: bool,
    queue: VecDeque<Publish>,
}

impl Session {
    fn keep(&mut self, p: Publish) {
        if self.queue.len() >= QUEUE_LIMIT {
            self.queue.pop_front();
        }
        self.queue.push_back(p);
    }
}

#[derive(Default)]
struct State {
    sessions: HashMap<String, Session>,
    next_conn: u64,
}

/// The broker: sessions and routing. Serve connections with [`Broker::serve`].
pub struct Broker {
    auth: Arc<dyn Authenticator>,
    state: Mutex<State>,
}

impl std::fmt::Debug for Broker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Broker").finish_non_exhaustive()
    }
}

fn lock(m: &Mutex<State>) -> std::sync::MutexGuard<'_, State> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

impl Broker {
    /// A broker that admits the clients `auth` accepts.
    pub fn new(auth: Arc<dyn Authenticator>) -> Arc<Self> {
        Arc::new(Self {
            auth,
            state: Mutex::new(State::default()),
        })
    }

    /// Accepts connections on `listener` until `shutdown` turns true.
    pub async fn serve(
        self: Arc<Self>,
        listener: tokio::net::TcpListener,
        mut shutdown: watch::Receiver<bool>,
    ) {
        loop {
            tokio::select! {
                accepted = listener.accept() => match accepted {
                    Ok((stream, _)) => {
                        let _ = stream.set_nodelay(true);
                        let broker = self.clone();
                        let stop = shutdown.clone();
                        tokio::spawn(async move { broker.connection(stream, stop).await });
                    }
                    Err(e) => {
                        tracing::warn!("mqtt: accept failed: {e}");
                        tokio::time::sleep(Duration::from_millis(100)).await;
                    }
                },
                () = crate::mqtt::stopped(&mut shutdown) => return,
            }
        }
    }

    /// Closes the connections of `device` and forgets its sessions (its token was revoked).
    pub fn revoke(&self, device: &str) {
        let who = Identity::Device(device.to_owned());
        let mut st = lock(&self.state);
        st.sessions.retain(|_, s| {
            if s.owner != who {
                return true;
            }
            if let Some((_, tx)) = &s.conn {
                close(tx);
            }
            false
        });
    }

    /// Number of connected clients.
    pub fn connected(&self) -> usize {
        lock(&self.state)
            .sessions
            .values()
            .filter(|s| s.conn.is_some())
            .count()
    }

    /// Delivers `publish` (already checked against the sender's rights) to every session
    /// subscribed to its topic and allowed to read it.
    fn route(&self, topic: &str, payload: &bytes::Bytes, qos: QoS) {
        let mut st = lock(&self.state);
        for s in st.sessions.values_mut() {
            if !s.owner.may_receive(topic) {
                continue;
            }
            let granted = s
                .subs
                .iter()
                .filter(|(f, _)| edgefn_schema::topic::matches(f, topic))
                .map(|(_, q)| *q)
                .max_by_key(|q| *q as u8);
            let Some(granted) = granted else { continue };
            let q = if (qos as u8) < (granted as u8) {
                qos
            } else {
                granted
            };
            let p = Publish::from_bytes(topic, q, payload.clone());
            let undelivered = match &s.conn {
                Some((_, tx)) => match tx.try_send(Cmd::Deliver(p)) {
                    Ok(()) => None,
                    // The client is going away: keep the message for its session.
                    Err(mpsc::error::TrySendError::Closed(Cmd::Deliver(p))) => Some(p),
                    Err(mpsc::error::TrySendError::Full(_)) => {
                        tracing::warn!(client = s.owner.username(), %topic, "mqtt: a client is {QUEUE_LIMIT} messages behind; message dropped for it");
                        None
                    }
                    Err(_) => None,
                },
                None => Some(p),
            };
            if let Some(p) = undelivered {
                if !s.clean && p.qos == QoS::AtLeastOnce {
                    s.keep(p);
                }
            }
        }
    }

    async fn connection(self: Arc<Self>, stream: TcpStream, mut shutdown: watch::Receiver<bool>) {
        let peer = stream
            .peer_addr()
            .map_or_else(|_| "?".to_owned(), |a| a.to_string());
        let (mut rd, mut wr) = stream.into_split();
        let mut buf = BytesMut::with_capacity(4096);
        let connect =
            match tokio::time::timeout(CONNECT_TIMEOUT, read_packet(&mut rd, &mut buf)).await {
                Ok(Ok(Packet::Connect(c))) => c,
                Ok(Ok(_)) | Err(_) => return,
                Ok(Err(e)) => {
                    tracing::debug!(%peer, "mqtt: bad first packet: {e}");
                    return;
                }
            };
        let refuse = |code| Packet::ConnAck(ConnAck::new(code, false));
        if connect.protocol != Protocol::V4 {
            let _ = write_packet(&mut wr, &refuse(ConnectReturnCode::RefusedProtocolVersion)).await;
            return;
        }
        let identity = connect
            .login
            .as_ref()
            .and_then(|l| self.auth.authenticate(&l.username, &l.password));
        let Some(identity) = identity else {
            tracing::info!(%peer, user = connect.login.as_ref().map(|l| l.username.as_str()), "mqtt: refused: bad user name or password");
            let _ = write_packet(&mut wr, &refuse(ConnectReturnCode::BadUserNamePassword)).await;
            return;
        };
        let user = identity.username().to_owned();
        let client_id = if connect.client_id.is_empty() {
            if !connect.clean_session {
                let _ = write_packet(&mut wr, &refuse(ConnectReturnCode::BadClientId)).await;
                return;
            }
            None
        } else {
            Some(connect.client_id.clone())
        };
        if let (Identity::Device(d), Some(id)) = (&identity, &client_id) {
            let ok = id == d
                || id
                    .strip_prefix(d.as_str())
                    .is_some_and(|r| r.starts_with('.'));
            if !ok {
                tracing::info!(%peer, device = %d, client_id = %id, "mqtt: refused: client id not the device's");
                let _ = write_packet(&mut wr, &refuse(ConnectReturnCode::BadClientId)).await;
                return;
            }
        }

        let (tx, mut rx) = mpsc::channel(QUEUE_LIMIT);
        let (conn_id, client_id, session_present, backlog) = {
            let mut st = lock(&self.state);
            st.next_conn += 1;
            let conn_id = st.next_conn;
            let client_id = client_id.unwrap_or_else(|| format!("{user}.auto-{conn_id}"));
            let mut present = false;
            let mut backlog = VecDeque::new();
            if let Some(old) = st.sessions.remove(&client_id) {
                if let Some((_, otx)) = &old.conn {
                    close(otx);
                }
                if !connect.clean_session && !old.clean && old.owner == identity {
                    present = true;
                    st.sessions.insert(
                        client_id.clone(),
                        Session {
                            conn: Some((conn_id, tx.clone())),
                            clean: false,
                            ..old
                        },
                    );
                    if let Some(s) = st.sessions.get_mut(&client_id) {
                        backlog = std::mem::take(&mut s.queue);
                    }
                }
            }
            if !present {
                st.sessions.insert(
                    client_id.clone(),
                    Session {
                        owner: identity.clone(),
                        subs: Vec::new(),
                        conn: Some((conn_id, tx.clone())),
                        clean: connect.clean_session,
                        queue: VecDeque::new(),
                    },
                );
            }
            (conn_id, client_id, present, backlog)
        };
        drop(tx);
        tracing::debug!(%peer, %user, %client_id, session_present, "mqtt: connected");

        let mut conn = Conn {
            wr,
            inflight: VecDeque::new(),
            pending: backlog,
            next_pkid: 0,
        };
        let keepalive = (connect.keep_alive > 0)
            .then(|| Duration::from_millis(u64::from(connect.keep_alive) * 1500));
        let mut clean_exit = false;
        let result: Result<(), String> = async {
            write_packet(
                &mut conn.wr,
                &Packet::ConnAck(ConnAck::new(ConnectReturnCode::Success, session_present)),
            )
            .await?;
            conn.fill().await?;
            loop {
                let idle = async {
                    match keepalive {
                        Some(k) => tokio::time::sleep(k).await,
                        None => std::future::pending().await,
                    }
                };
                tokio::select! {
                    packet = read_packet(&mut rd, &mut buf) => {
                        match packet? {
                            Packet::Publish(p) => {
                                if edgefn_schema::topic::validate_topic(&p.topic).is_err() {
                                    return Err(format!("invalid topic `{}`", p.topic));
                                }
                                if identity.may_publish(&p.topic) {
                                    self.route(&p.topic, &p.payload, p.qos);
                                } else {
                                    tracing::info!(%user, topic = %p.topic, "mqtt: publish outside the namespace dropped");
                                }
                                match p.qos {
                                    QoS::AtMostOnce => {}
                                    QoS::AtLeastOnce => write_packet(&mut conn.wr, &Packet::PubAck(PubAck::new(p.pkid))).await?,
                                    QoS::ExactlyOnce => write_packet(&mut conn.wr, &Packet::PubRec(PubRec::new(p.pkid))).await?,
                                }
                            }
                            Packet::PubRel(r) => write_packet(&mut conn.wr, &Packet::PubComp(PubComp::new(r.pkid))).await?,
                            Packet::PubAck(a) => {
                                conn.inflight.retain(|(id, _)| *id != a.pkid);
                                conn.fill().await?;
                            }
                            Packet::Subscribe(s) => {
                                let mut codes = Vec::with_capacity(s.filters.len());
                                {
                                    let mut st = lock(&self.state);
                                    let session = st.sessions.get_mut(&client_id).filter(|s| s.conn.as_ref().is_some_and(|(c, _)| *c == conn_id));
                                    let Some(session) = session else { return Err("session taken over".into()) };
                                    for f in s.filters {
                                        let ok = edgefn_schema::topic::validate_filter(&f.path).is_ok() && identity.may_subscribe(&f.path);
                                        if !ok {
                                            tracing::info!(%user, filter = %f.path, "mqtt: subscription refused");
                                            codes.push(SubscribeReasonCode::Failure);
                                            continue;
                                        }
                                        let q = if f.qos == QoS::AtMostOnce { QoS::AtMostOnce } else { QoS::AtLeastOnce };
                                        session.subs.retain(|(x, _)| *x != f.path);
                                        session.subs.push((f.path, q));
                                        codes.push(SubscribeReasonCode::Success(q));
                                    }
                                }
                                write_packet(&mut conn.wr, &Packet::SubAck(SubAck::new(s.pkid, codes))).await?;
                            }
                            Packet::Unsubscribe(u) => {
                                if let Some(session) = lock(&self.state).sessions.get_mut(&client_id) {
                                    session.subs.retain(|(x, _)| !u.topics.contains(x));
                                }
                                write_packet(&mut conn.wr, &Packet::UnsubAck(UnsubAck::new(u.pkid))).await?;
                            }
                            Packet::PingReq => write_packet(&mut conn.wr, &Packet::PingResp).await?,
                            Packet::Disconnect => {
                                clean_exit = true;
                                return Ok(());
                            }
                            other => return Err(format!("unexpected packet {other:?}")),
                        }
                    }
                    cmd = rx.recv() => match cmd {
                        Some(Cmd::Deliver(p)) => conn.send(p).await?,
                        Some(Cmd::Close) | None => return Err("closed by the broker".into()),
                    },
                    () = idle => return Err("keepalive expired".into()),
                    () = crate::mqtt::stopped(&mut shutdown) => return Err("shutting down".into()),
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
                let clean = st.sessions.get(&client_id).is_some_and(|s| s.clean);
                if clean {
                    st.sessions.remove(&client_id);
                } else if let Some(s) = st.sessions.get_mut(&client_id) {
                    s.conn = None;
                    let mut kept: VecDeque<Publish> = conn
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
                        s.keep(p);
                    }
                }
            }
        }
        if !clean_exit {
            if let Some(will) = connect.last_will {
                if identity.may_publish(&will.topic)
                    && edgefn_schema::topic::validate_topic(&will.topic).is_ok()
                {
                    self.route(&will.topic, &will.message, will.qos);
                }
            }
        }
    }
}

struct Conn {
    wr: OwnedWriteHalf,
    inflight: VecDeque<(u16, Publish)>,
    pending: VecDeque<Publish>,
    next_pkid: u16,
}

impl Conn {
    async fn send(&mut self, p: Publish) -> Result<(), String> {
        if p.qos == QoS::AtMostOnce {
            return write_packet(&mut self.wr, &Packet::Publish(p)).await;
        }
        if self.pending.len() >= QUEUE_LIMIT {
            // The client acknowledges nothing: drop the oldest rather than grow without end.
            self.pending.pop_front();
        }
        self.pending.push_back(p);
        self.fill().await
    }

    /// Sends pending QoS 1 messages while fewer than the limit are unacknowledged.
    async fn fill(&mut self) -> Result<(), String> {
        while self.inflight.len() < INFLIGHT_LIMIT {
            let Some(mut p) = self.pending.pop_front() else {
                return Ok(());
            };
            if p.qos == QoS::AtMostOnce {
                write_packet(&mut self.wr, &Packet::Publish(p)).await?;
                continue;
            }
            loop {
                self.next_pkid = self.next_pkid.wrapping_add(1).max(1);
                let id = self.next_pkid;
                if !self.inflight.iter().any(|(x, _)| *x == id) {
                    break;
                }
            }
            p.pkid = self.next_pkid;
            write_packet(&mut self.wr, &Packet::Publish(p.clone())).await?;
            self.inflight.push_back((p.pkid, p));
        }
        Ok(())
    }
}

async fn read_packet(rd: &mut OwnedReadHalf, buf: &mut BytesMut) -> Result<Packet, String> {
    loop {
        match Packet::read(buf, MAX_PACKET_BYTES) {
            Ok(p) => return Ok(p),
            Err(CodecError::InsufficientBytes(n)) => {
                buf.reserve(n.max(1024));
                let read = rd.read_buf(buf).await.map_err(|e| e.to_string())?;
                if read == 0 {
                    return Err("connection closed".into());
                }
            }
            Err(e) => return Err(format!("malformed packet: {e}")),
        }
    }
}

async fn write_packet(wr: &mut OwnedWriteHalf, p: &Packet) -> Result<(), String> {
    let mut out = BytesMut::new();
    p.write(&mut out, usize::MAX).map_err(|e| e.to_string())?;
    match tokio::time::timeout(WRITE_TIMEOUT, wr.write_all(&out)).await {
        Ok(written) => written.map_err(|e| e.to_string()),
        Err(_) => Err("the client takes no data".into()),
    }
}

/// Asks a connection to close (it may already be closing).
fn close(tx: &mpsc::Sender<Cmd>) {
    if tx.try_send(Cmd::Close).is_err() {
        // Full: the connection is far behind; dropping the sender side is not possible here,
        // so spawn the send.
        let tx = tx.clone();
        tokio::spawn(async move {
            let _ = tx.send(Cmd::Close).await;
        });
    }
}

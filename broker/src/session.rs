//! Sessions: created or resumed at CONNECT, kept while a persistent session's client is away
//! (with the QoS 1 messages for it), ended by expiry, revocation or a clean client, and restored
//! from a [`crate::Persistence`] at start.

use std::collections::{HashSet, VecDeque};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use tokio::sync::{Notify, mpsc, watch};

use crate::access::{Authenticator, Client};
use crate::broker::Broker;
use crate::codec::ConnectInfo;
use crate::message::{Out, QoS};
use crate::options::{QUEUE_LIMIT, WRITE_TIMEOUT};
use crate::persist::{Ack, Change, PersistError, Slot, Stored};
use crate::subscription::Subscription;

/// The connection a session is attached to.
pub(crate) struct Attached {
    /// Which connection (a session taken over gets a new one).
    pub(crate) id: u64,
    /// Messages for it, in order; bounded ([`QUEUE_LIMIT`]).
    pub(crate) tx: mpsc::Sender<Out>,
    /// Tells it to close.
    pub(crate) close: Arc<Notify>,
    /// Set when it is closed because another connection takes its session over.
    pub(crate) taken_over: Arc<AtomicBool>,
    /// Changes (its sender is dropped) once the connection has handed its state back to the
    /// session.
    pub(crate) ended: watch::Receiver<()>,
}

impl Attached {
    /// Asks the connection to close (it may already be closing).
    pub(crate) fn close(&self) {
        self.close.notify_one();
    }
}

pub(crate) struct Session<C> {
    pub(crate) owner: C,
    pub(crate) subs: Vec<Subscription>,
    pub(crate) conn: Option<Attached>,
    pub(crate) persistent: bool,
    /// How long it outlives a connection (`None`: for ever).
    pub(crate) expiry: Option<Duration>,
    /// When it ends, while its client is away.
    pub(crate) expires_at: Option<Instant>,
    pub(crate) queue: VecDeque<Out>,
    /// The next number of a stored message.
    pub(crate) next_seq: u64,
    /// Packet ids of QoS 2 messages from the client that were answered with PUBREC and wait
    /// for its PUBREL: a PUBLISH resent under one of them is not delivered again (MQTT 5
    /// §4.3.3, MQTT 3.1.1 §4.3.3).
    pub(crate) qos2_in: HashSet<u16>,
}

impl<C> Session<C> {
    /// Keeps a message for the client's return; returns the one dropped to make room.
    pub(crate) fn keep(&mut self, p: Out) -> Option<Out> {
        let dropped = if self.queue.len() >= QUEUE_LIMIT {
            self.queue.pop_front()
        } else {
            None
        };
        self.queue.push_back(p);
        dropped
    }

    /// Whether connection `conn_id` is the one attached.
    pub(crate) fn attached_to(&self, conn_id: u64) -> bool {
        self.conn.as_ref().is_some_and(|c| c.id == conn_id)
    }
}

/// What a connection leaves to its session as it ends.
pub(crate) struct Leaving {
    /// What the client did not acknowledge, in order, then what was on its way to it.
    pub(crate) left: VecDeque<Out>,
    /// QoS 2 packet ids from the client awaiting PUBREL.
    pub(crate) qos2_in: HashSet<u16>,
    /// The MQTT 5 session expiry interval the client's DISCONNECT set, in seconds.
    pub(crate) expiry_at_disconnect: Option<u32>,
}

/// A session attached to a new connection.
pub(crate) struct Opened {
    pub(crate) conn_id: u64,
    pub(crate) client_id: String,
    /// A kept session was resumed.
    pub(crate) present: bool,
    /// Its messages to send first, oldest first.
    pub(crate) pending: VecDeque<Out>,
    /// QoS 2 packet ids from the client awaiting PUBREL (a resumed session's).
    pub(crate) qos2_in: HashSet<u16>,
    pub(crate) rx: mpsc::Receiver<Out>,
    pub(crate) close: Arc<Notify>,
    /// Whether it was closed for another connection.
    pub(crate) taken_over: Arc<AtomicBool>,
    /// Dropped when the connection has handed its state back (see [`Attached::ended`]).
    pub(crate) ended: watch::Sender<()>,
    /// The commit of the session's record.
    pub(crate) stored: Ack,
}

impl<A: Authenticator> Broker<A> {
    /// A place for changes that are made whether or not they can be stored (a session ending):
    /// without room in the store's channel, only memory changes.
    async fn slot_or_memory(&self) -> Slot<'_> {
        self.slot().await.unwrap_or_else(|e| {
            tracing::error!("mqtt: {e}: a session change is not stored");
            Slot::memory_only()
        })
    }

    /// Creates or resumes the session of a client that connected, taking it over from another
    /// connection if it has one.
    pub(crate) async fn open_session(
        &self,
        client: &A::Client,
        client_id: Option<String>,
        connect: &ConnectInfo,
    ) -> Result<Opened, PersistError> {
        // A connection that has the session now is closed first, and hands back what it has
        // not finished (in-flight messages, QoS 2 state) before the session is resumed.
        if let Some(id) = &client_id {
            for _ in 0..3 {
                let ended = {
                    let st = self.lock();
                    st.sessions.get(id).and_then(|s| s.conn.as_ref()).map(|c| {
                        c.taken_over.store(true, Ordering::Relaxed);
                        c.close();
                        c.ended.clone()
                    })
                };
                let Some(mut ended) = ended else { break };
                let _ = tokio::time::timeout(WRITE_TIMEOUT, ended.changed()).await;
            }
        }
        let mut slot = self.slot().await?;
        let user = client.name();
        let (tx, rx) = mpsc::channel(QUEUE_LIMIT);
        let close = Arc::new(Notify::new());
        let taken_over = Arc::new(AtomicBool::new(false));
        let (ended, ended_rx) = watch::channel(());
        let mut st = self.lock();
        st.next_conn += 1;
        let conn_id = st.next_conn;
        // A session under an id the client was not told cannot be resumed: not kept.
        let persistent = connect.persistent && client_id.is_some();
        let expiry = match (connect.expiry, self.options.session_expiry_limit) {
            (Some(asked), Some(limit)) => Some(asked.min(limit)),
            (asked, limit) => asked.or(limit),
        };
        let client_id = client_id.unwrap_or_else(|| format!("{user}.auto-{conn_id}"));
        let attached = Attached {
            id: conn_id,
            tx,
            close: close.clone(),
            taken_over: taken_over.clone(),
            ended: ended_rx,
        };
        let mut present = false;
        let mut pending = VecDeque::new();
        let mut qos2_in = HashSet::new();
        let mut attached = Some(attached);
        if let Some(old) = st.sessions.remove(&client_id) {
            if let Some(c) = &old.conn {
                c.close();
            }
            if connect.resume && old.persistent && old.owner.name() == user {
                present = true;
                pending = old.queue;
                qos2_in = old.qos2_in;
                st.sessions.insert(
                    client_id.clone(),
                    Session {
                        owner: old.owner,
                        subs: old.subs,
                        conn: attached.take(),
                        persistent,
                        expiry,
                        expires_at: None,
                        queue: VecDeque::new(),
                        next_seq: old.next_seq,
                        qos2_in: HashSet::new(),
                    },
                );
            } else if old.persistent {
                slot.push(Change::ForgetSession {
                    client_id: client_id.clone(),
                });
            }
        }
        if !present {
            if persistent {
                slot.push(Change::Session {
                    client_id: client_id.clone(),
                    owner: user.to_owned(),
                    subs: Vec::new(),
                });
            }
            st.sessions.insert(
                client_id.clone(),
                Session {
                    owner: client.clone(),
                    subs: Vec::new(),
                    conn: attached.take(),
                    persistent,
                    expiry,
                    expires_at: None,
                    queue: VecDeque::new(),
                    next_seq: 1,
                    qos2_in: HashSet::new(),
                },
            );
        }
        let stored = slot.send();
        drop(st);
        Ok(Opened {
            conn_id,
            client_id,
            present,
            pending,
            qos2_in,
            rx,
            close,
            taken_over,
            ended,
            stored,
        })
    }

    /// Detaches connection `conn_id` from its session: a persistent one keeps `left` (what the
    /// client did not acknowledge, in order, then what was on its way to it) for the client's
    /// return; any other ends.
    pub(crate) async fn close_session(
        &self,
        client_id: &str,
        conn_id: u64,
        was_present: bool,
        leaving: Leaving,
        rx: &mut mpsc::Receiver<Out>,
    ) {
        let Leaving {
            left,
            qos2_in,
            expiry_at_disconnect,
        } = leaving;
        let mut slot = self.slot_or_memory().await;
        let mut st = self.lock();
        let persistent = match st.sessions.get_mut(client_id) {
            Some(s) if s.attached_to(conn_id) => {
                // MQTT 5 §3.14.2.2.2: the client may change the interval as it leaves (not from
                // 0, which the connection refuses earlier).
                if let Some(secs) = expiry_at_disconnect {
                    if s.persistent {
                        let asked =
                            (secs != u32::MAX).then(|| Duration::from_secs(u64::from(secs)));
                        s.expiry = match (asked, self.options.session_expiry_limit) {
                            (Some(a), Some(l)) => Some(a.min(l)),
                            (a, l) => a.or(l),
                        };
                        if secs == 0 {
                            s.persistent = false;
                        }
                    }
                }
                s.persistent
            }
            // Taken over, revoked or gone: not this connection's to change.
            _ => return,
        };
        if !persistent {
            let was_stored = st
                .sessions
                .remove(client_id)
                .is_some_and(|_| was_present || expiry_at_disconnect == Some(0));
            if was_stored {
                slot.push(Change::ForgetSession {
                    client_id: client_id.to_owned(),
                });
            }
        } else if let Some(s) = st.sessions.get_mut(client_id) {
            s.conn = None;
            s.expires_at = s.expiry.map(|d| Instant::now() + d);
            s.qos2_in = qos2_in;
            let mut kept = left;
            // Routing hands messages over under the lock: what is in the channel now is all.
            while let Ok(p) = rx.try_recv() {
                kept.push_back(p);
            }
            kept.retain(|p| p.qos != QoS::AtMostOnce);
            kept.extend(s.queue.drain(..));
            for p in kept {
                if let Some(old) = s.keep(p) {
                    slot.forget(client_id, old.seq);
                }
            }
        }
        slot.send().detach();
    }

    /// Ends the sessions whose clients have been away past their expiry ([`Broker::serve`]
    /// calls this every second).
    pub(crate) async fn expire_sessions(&self) {
        let now = Instant::now();
        let mut slot = self.slot_or_memory().await;
        let mut st = self.lock();
        st.sessions.retain(|id, s| {
            let expired = s.conn.is_none() && s.expires_at.is_some_and(|t| t <= now);
            if expired {
                tracing::debug!(client_id = %id, "mqtt: session expired");
                if s.persistent {
                    slot.push(Change::ForgetSession {
                        client_id: id.clone(),
                    });
                }
            }
            !expired
        });
        slot.send().detach();
    }

    /// Closes the connections of the clients named `name` and forgets their sessions (e.g. a
    /// device whose token was revoked). Returns once memory is changed; the store forgets them
    /// in the background (a session it still holds at the next start is dropped then, since
    /// [`Authenticator::restore`] no longer knows its owner).
    pub async fn revoke(&self, name: &str) {
        let mut slot = self.slot_or_memory().await;
        let mut st = self.lock();
        st.sessions.retain(|id, s| {
            if s.owner.name() != name {
                return true;
            }
            if let Some(c) = &s.conn {
                c.close();
            }
            if s.persistent {
                slot.push(Change::ForgetSession {
                    client_id: id.clone(),
                });
            }
            false
        });
        slot.send().detach();
    }

    /// Loads what a [`crate::Persistence`] kept (call once, before serving). Sessions whose
    /// owner [`Authenticator::restore`] no longer knows are dropped, and forgotten by the store.
    pub fn restore(&self, stored: Stored) {
        let mut slot = self
            .writer
            .as_ref()
            .and_then(|w| w.try_slot())
            .unwrap_or_else(Slot::memory_only);
        let mut st = self.lock();
        for m in stored.retained {
            st.retained.insert(m.topic.clone(), Arc::new(m));
        }
        for s in stored.sessions {
            let Some(owner) = self.auth.restore(&s.owner) else {
                slot.push(Change::ForgetSession {
                    client_id: s.client_id,
                });
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
                    sub_ids: Vec::new(),
                    released: false,
                    pkid: 0,
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
                    qos2_in: HashSet::new(),
                },
            );
        }
        slot.send().detach();
    }

    /// Tells the store that kept messages of `client_id` (numbers in `gone`; 0: not stored)
    /// were acknowledged or dropped by connection `conn_id`. Their [`Change::Keep`] went to the
    /// writer before the messages reached the connection, so these follow it. Once the session
    /// is no longer this connection's, they are left out: a new session numbers its messages
    /// from 1 again, and a resumed one resends what is left (at-least-once).
    pub(crate) async fn forget_gone(&self, gone: &mut Vec<u64>, client_id: &str, conn_id: u64) {
        gone.retain(|n| *n != 0);
        if gone.is_empty() || self.writer.is_none() {
            gone.clear();
            return;
        }
        let mut slot = self.slot_or_memory().await;
        let st = self.lock();
        if st
            .sessions
            .get(client_id)
            .is_some_and(|s| s.attached_to(conn_id))
        {
            for n in gone.drain(..) {
                slot.forget(client_id, n);
            }
            slot.send().detach();
        }
        gone.clear();
    }
}

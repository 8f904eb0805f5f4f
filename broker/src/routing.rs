//! The subscription index and routing: which sessions a message goes to (each session's
//! filters, checked again against the receiver's rights), delivered to a connected client's
//! queue or kept for an absent one; retained messages.

use std::sync::Arc;

use tokio::sync::mpsc::error::TrySendError;

use crate::access::{Authenticator, Client};
use crate::broker::{Broker, State};
use crate::error::ConnError;
use crate::message::{Message, Out, QoS};
use crate::options::{QUEUE_LIMIT, RETAINED_LIMIT};
use crate::persist::{Ack, Change, PersistError, Slot};

impl<A: Authenticator> Broker<A> {
    /// Delivers `msg` from the broker's owner to every session subscribed to its topic and
    /// allowed to read it, and keeps it when it is retained: in memory only, at once, without
    /// storing anything (the agent's local bus, which has no store). Use
    /// [`Broker::publish_many`] for messages that must outlive a restart.
    pub fn publish(&self, msg: Message) {
        let mut slot = Slot::memory_only();
        let mut st = self.lock();
        self.route_locked(&mut st, Arc::new(msg), &mut slot);
    }

    /// Delivers messages from the broker's owner like [`Broker::publish`], and with a
    /// [`crate::Persistence`] stores, in one commit, the copies kept for persistent sessions
    /// (QoS 1) and the retained messages; returns once they are stored.
    ///
    /// An error ([`PersistError`]) means the messages may not outlive a restart: nothing was
    /// stored, though they may already have reached connected clients (sending them again may
    /// deliver some twice, which at-least-once delivery allows).
    pub async fn publish_many(&self, messages: Vec<Message>) -> Result<(), PersistError> {
        let mut slot = self.slot().await?;
        let ack = {
            let mut st = self.lock();
            for m in messages {
                self.route_locked(&mut st, Arc::new(m), &mut slot);
            }
            slot.send()
        };
        ack.wait().await
    }

    /// Routes one message from a client (already checked against its rights) or a will,
    /// storing what needs it; the [`Ack`] completes with that commit.
    pub(crate) async fn route(&self, msg: Message) -> Result<Ack, PersistError> {
        let mut slot = self.slot().await?;
        let mut st = self.lock();
        self.route_locked(&mut st, Arc::new(msg), &mut slot);
        Ok(slot.send())
    }

    fn route_locked(&self, st: &mut State<A::Client>, msg: Arc<Message>, slot: &mut Slot<'_>) {
        if msg.retain {
            if msg.payload.is_empty() {
                if st.retained.remove(&msg.topic).is_some() {
                    slot.push(Change::Retain {
                        topic: msg.topic.clone(),
                        message: None,
                    });
                }
            } else if st.retained.len() < RETAINED_LIMIT || st.retained.contains_key(&msg.topic) {
                st.retained.insert(msg.topic.clone(), msg.clone());
                slot.push(Change::Retain {
                    topic: msg.topic.clone(),
                    message: Some(msg.clone()),
                });
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
            if slot.storing() && s.persistent && qos == QoS::AtLeastOnce {
                seq = s.next_seq;
                s.next_seq += 1;
                slot.push(Change::Keep {
                    client_id: client_id.clone(),
                    seq,
                    message: msg.clone(),
                });
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
                Some(c) => match c.tx.try_send(out) {
                    Ok(()) => None,
                    // The client is going away: keep the message for its session.
                    Err(TrySendError::Closed(p)) => Some(p),
                    Err(TrySendError::Full(_)) => {
                        tracing::warn!(client = s.owner.name(), %topic, "mqtt: a client is {QUEUE_LIMIT} messages behind; message dropped for it");
                        slot.forget(client_id, seq);
                        None
                    }
                },
                None => Some(out),
            };
            if let Some(p) = undelivered {
                if s.persistent && p.qos == QoS::AtLeastOnce {
                    if let Some(old) = s.keep(p) {
                        slot.forget(client_id, old.seq);
                    }
                }
            }
        }
    }

    /// Adds a connection's subscriptions to its session: each filter checked (`None`: refused)
    /// and granted at the QoS asked. Returns the codes, the retained messages the new filters
    /// match, and the commit of the session's record.
    pub(crate) async fn subscribe(
        &self,
        client: &A::Client,
        client_id: &str,
        conn_id: u64,
        filters: Vec<(String, QoS)>,
    ) -> Result<(Vec<Option<QoS>>, Vec<Out>, Ack), ConnError> {
        let mut slot = self.slot().await.map_err(ConnError::Store)?;
        let mut codes = Vec::with_capacity(filters.len());
        let mut retained = Vec::new();
        let mut guard = self.lock();
        let st = &mut *guard;
        let session = st
            .sessions
            .get_mut(client_id)
            .filter(|s| s.attached_to(conn_id))
            .ok_or(ConnError::TakenOver)?;
        for (filter, q) in filters {
            let ok = edgefn_schema::topic::validate_filter(&filter).is_ok()
                && client.may_subscribe(&filter);
            if !ok {
                tracing::info!(user = client.name(), %filter, "mqtt: subscription refused");
                codes.push(None);
                continue;
            }
            for m in st.retained.values() {
                if edgefn_schema::topic::matches(&filter, &m.topic) && client.may_receive(&m.topic)
                {
                    retained.push(Out {
                        msg: m.clone(),
                        qos: m.qos.min(q),
                        retain: true,
                        dup: false,
                        seq: 0,
                    });
                }
            }
            session.subs.retain(|(x, _)| *x != filter);
            session.subs.push((filter, q));
            codes.push(Some(q));
        }
        if session.persistent {
            slot.push(Change::Session {
                client_id: client_id.to_owned(),
                owner: client.name().to_owned(),
                subs: session.subs.clone(),
            });
        }
        Ok((codes, retained, slot.send()))
    }

    /// Removes subscriptions from a connection's session; the [`Ack`] completes with the
    /// commit of its record.
    pub(crate) async fn unsubscribe(
        &self,
        client: &A::Client,
        client_id: &str,
        filters: &[String],
    ) -> Result<Ack, ConnError> {
        let mut slot = self.slot().await.map_err(ConnError::Store)?;
        let mut st = self.lock();
        if let Some(session) = st.sessions.get_mut(client_id) {
            session.subs.retain(|(x, _)| !filters.contains(x));
            if session.persistent {
                slot.push(Change::Session {
                    client_id: client_id.to_owned(),
                    owner: client.name().to_owned(),
                    subs: session.subs.clone(),
                });
            }
        }
        Ok(slot.send())
    }
}

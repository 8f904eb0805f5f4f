//! The subscription index and routing: which sessions a message goes to (each session's
//! filters, checked again against the receiver's rights), delivered to a connected client's
//! queue or kept for an absent one; retained messages.

use std::sync::Arc;
use std::time::SystemTime;

use tokio::sync::mpsc::error::TrySendError;

use crate::access::{Authenticator, Client};
use crate::broker::{Broker, State};
use crate::codec::{SubRefusal, SubRequest, UnsubResult};
use crate::error::ConnError;
use crate::message::{Message, Out, QoS};
use crate::options::{QUEUE_LIMIT, RETAINED_LIMIT};
use crate::persist::{Ack, Change, PersistError, Slot};
use crate::session::Session;
use crate::subscription::{Subscription, shared, valid_shared};

/// A member of a shared subscription: its client id, granted QoS and subscription identifier.
type Member = (String, QoS, Option<usize>);

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
    /// storing what needs it; the [`Ack`] completes with that commit. `from`: the publishing
    /// client's id (for No Local).
    pub(crate) async fn route(
        &self,
        msg: Message,
        from: Option<&str>,
    ) -> Result<Ack, PersistError> {
        let mut slot = self.slot().await?;
        let mut st = self.lock();
        self.route_from(&mut st, Arc::new(msg), &mut slot, from);
        Ok(slot.send())
    }

    fn route_locked(&self, st: &mut State<A::Client>, msg: Arc<Message>, slot: &mut Slot<'_>) {
        self.route_from(st, msg, slot, None);
    }

    fn route_from(
        &self,
        st: &mut State<A::Client>,
        msg: Arc<Message>,
        slot: &mut Slot<'_>,
        from: Option<&str>,
    ) {
        if msg.expires_at.is_some() && msg.expired(SystemTime::now()) {
            return;
        }
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
        // Shared subscriptions matched: "group/filter" → (client id, QoS, id) of each member.
        let mut shared: Vec<(String, Vec<Member>)> = Vec::new();
        let State {
            sessions,
            share_next,
            ..
        } = st;
        for (client_id, s) in sessions.iter_mut() {
            if !s.owner.may_receive(topic) {
                continue;
            }
            let mut granted: Option<QoS> = None;
            let mut sub_ids = Vec::new();
            let mut retain = false;
            for sub in &s.subs {
                if let Some((group, filter)) = sub.shared() {
                    if edgefn_schema::topic::matches(filter, topic) {
                        let key = format!("{group}/{filter}");
                        let member = (client_id.clone(), sub.qos, sub.id);
                        match shared.iter_mut().find(|(k, _)| *k == key) {
                            Some((_, members)) => members.push(member),
                            None => shared.push((key, vec![member])),
                        }
                    }
                    continue;
                }
                if !edgefn_schema::topic::matches(&sub.filter, topic) {
                    continue;
                }
                // MQTT 5 §3.8.3.1: No Local.
                if sub.no_local && from == Some(client_id.as_str()) {
                    continue;
                }
                granted = granted.max(Some(sub.qos));
                sub_ids.extend(sub.id);
                retain |= sub.retain_as_published && msg.retain;
            }
            let Some(granted) = granted else { continue };
            let mut out = Out::new(msg.clone(), msg.qos.min(granted), retain);
            out.sub_ids = sub_ids;
            deliver(client_id, s, out, slot);
        }
        // One member of each group gets the message (MQTT 5 §4.8.2), in turn; a connected
        // one when there is one.
        for (key, mut members) in shared {
            members.sort_by(|a, b| a.0.cmp(&b.0));
            let turn = share_next.entry(key).or_insert(0);
            let connected: Vec<usize> = (0..members.len())
                .filter(|i| {
                    sessions
                        .get(&members[*i].0)
                        .is_some_and(|s| s.conn.is_some())
                })
                .collect();
            let pick = if connected.is_empty() {
                *turn % members.len()
            } else {
                connected[*turn % connected.len()]
            };
            *turn = turn.wrapping_add(1);
            let (client_id, qos, id) = members.swap_remove(pick);
            if let Some(s) = sessions.get_mut(&client_id) {
                let mut out = Out::new(msg.clone(), msg.qos.min(qos), false);
                out.sub_ids.extend(id);
                deliver(&client_id, s, out, slot);
            }
        }
    }

    /// Adds a connection's subscriptions to its session: each filter checked (refused with
    /// the reason) and granted at the QoS asked. Returns the codes, the retained messages the
    /// new filters match (as their Retain Handling asks), and the commit of the session's
    /// record.
    pub(crate) async fn subscribe(
        &self,
        client: &A::Client,
        client_id: &str,
        conn_id: u64,
        filters: Vec<SubRequest>,
        id: Option<usize>,
    ) -> Result<(Vec<Result<QoS, SubRefusal>>, Vec<Out>, Ack), ConnError> {
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
        let now = SystemTime::now();
        for req in filters {
            let sub = Subscription {
                filter: req.filter,
                qos: req.qos,
                no_local: req.no_local,
                retain_as_published: req.retain_as_published,
                id,
            };
            let share = sub.shared().map(|(g, f)| (g.to_owned(), f.to_owned()));
            let valid = match &share {
                // MQTT 5 §4.8.2: No Local on a shared subscription is a protocol error; it is
                // refused here instead.
                Some((group, filter)) => valid_shared(group, filter) && !sub.no_local,
                None => edgefn_schema::topic::validate_filter(&sub.filter).is_ok(),
            };
            if !valid {
                tracing::info!(user = client.name(), filter = %sub.filter, "mqtt: invalid filter refused");
                codes.push(Err(SubRefusal::FilterInvalid));
                continue;
            }
            // Authorisation is on the filter messages are matched against.
            if !client.may_subscribe(sub.topic_filter()) {
                tracing::info!(user = client.name(), filter = %sub.filter, "mqtt: subscription refused");
                codes.push(Err(SubRefusal::NotAuthorized));
                continue;
            }
            let existed = session.subs.iter().any(|x| x.filter == sub.filter);
            // MQTT 5 §3.3.1.3: no retained messages for a shared subscription.
            let send_retained = share.is_none()
                && match req.retain_handling {
                    0 => true,
                    1 => !existed,
                    _ => false,
                };
            if send_retained {
                for m in st.retained.values() {
                    if edgefn_schema::topic::matches(&sub.filter, &m.topic)
                        && client.may_receive(&m.topic)
                        && !m.expired(now)
                    {
                        let mut out = Out::new(m.clone(), m.qos.min(sub.qos), true);
                        out.sub_ids.extend(id);
                        retained.push(out);
                    }
                }
            }
            codes.push(Ok(sub.qos));
            session.subs.retain(|x| x.filter != sub.filter);
            session.subs.push(sub);
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

    /// Removes subscriptions from a connection's session; returns what became of each filter,
    /// and the [`Ack`] of the commit of its record.
    pub(crate) async fn unsubscribe(
        &self,
        client: &A::Client,
        client_id: &str,
        filters: &[String],
    ) -> Result<(Vec<UnsubResult>, Ack), ConnError> {
        let mut slot = self.slot().await.map_err(ConnError::Store)?;
        let mut st = self.lock();
        let mut results = Vec::with_capacity(filters.len());
        if let Some(session) = st.sessions.get_mut(client_id) {
            for f in filters {
                let before = session.subs.len();
                session.subs.retain(|x| x.filter != *f);
                results.push(if session.subs.len() < before {
                    UnsubResult::Success
                } else if shared(f).is_none() && edgefn_schema::topic::validate_filter(f).is_err() {
                    UnsubResult::FilterInvalid
                } else {
                    UnsubResult::NoSubscription
                });
            }
            if session.persistent {
                slot.push(Change::Session {
                    client_id: client_id.to_owned(),
                    owner: client.name().to_owned(),
                    subs: session.subs.clone(),
                });
            }
        }
        Ok((results, slot.send()))
    }
}

/// Hands `out` to session `s`: to its connection, or kept while its client is away (a
/// persistent session's QoS 1 and 2 messages, stored when the broker stores).
fn deliver<C: Client>(client_id: &str, s: &mut Session<C>, mut out: Out, slot: &mut Slot<'_>) {
    if slot.storing() && s.persistent && out.qos != QoS::AtMostOnce {
        out.seq = s.next_seq;
        s.next_seq += 1;
        slot.push(Change::Keep {
            client_id: client_id.to_owned(),
            seq: out.seq,
            message: out.msg.clone(),
        });
    }
    let seq = out.seq;
    let undelivered = match &s.conn {
        Some(c) => match c.tx.try_send(out) {
            Ok(()) => None,
            // The client is going away: keep the message for its session.
            Err(TrySendError::Closed(p)) => Some(p),
            Err(TrySendError::Full(p)) => {
                tracing::warn!(client = s.owner.name(), topic = %p.msg.topic, "mqtt: a client is {QUEUE_LIMIT} messages behind; message dropped for it");
                slot.forget(client_id, seq);
                None
            }
        },
        None => Some(out),
    };
    if let Some(p) = undelivered {
        if s.persistent && p.qos != QoS::AtMostOnce {
            if let Some(old) = s.keep(p) {
                slot.forget(client_id, old.seq);
            }
        }
    }
}

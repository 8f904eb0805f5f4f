//! The embedded broker's persistent sessions and retained messages, in redb
//! (`DATA/mqtt.redb`): what a device subscribed to and the QoS 1 messages sent to it and not yet
//! acknowledged survive a restart of the cloud, even a SIGKILL. The broker's store thread calls
//! [`Persistence::commit`] with every change queued since the last commit: one transaction per
//! group, durable before the broker acknowledges anything in it (so before `POST /v1/publish`
//! answers); a group of acknowledgements only is committed lazily (after a crash, a message
//! acknowledged in the last moments is sent again, which at-least-once delivery allows). A
//! failed commit is returned to the broker, which tells whoever waits for it.
//!
//! Records written before QoS 2 and MQTT 5 properties read as they did: a message record may
//! end after its payload (no MQTT 5 properties, no expiry), and a subscription's QoS byte
//! carries its options in bits the older records left at 0.

use std::path::Path;

use std::time::{Duration, SystemTime};

use edgefn_broker::{
    Change, Message, Persistence, PublishProperties, QoS, StoreError, Stored, StoredSession,
    Subscription,
};
use redb::{Database, Durability, ReadableDatabase, ReadableTable, TableDefinition};

/// client id → owner and subscriptions.
const SESSIONS: TableDefinition<&str, &[u8]> = TableDefinition::new("sessions");
/// (client id, number) → message.
const QUEUE: TableDefinition<(&str, u64), &[u8]> = TableDefinition::new("queue");
/// topic → message.
const RETAINED: TableDefinition<&str, &[u8]> = TableDefinition::new("retained");

/// The broker's store.
#[derive(Debug)]
pub(crate) struct BrokerStore {
    db: Database,
}

fn put_str(out: &mut Vec<u8>, s: &str) {
    out.extend_from_slice(&(s.len() as u32).to_le_bytes());
    out.extend_from_slice(s.as_bytes());
}

fn qos_byte(q: QoS) -> u8 {
    q.as_u8()
}

/// The QoS in the low 2 bits (0, 1 or 2; 3 is corrupt).
fn qos_of(b: u8) -> Option<QoS> {
    QoS::from_u8(b & 0b11)
}

/// A subscription's QoS byte: bits 0-1 QoS, 2 No Local, 3 Retain As Published, 4 a
/// Subscription Identifier follows (u32).
const NO_LOCAL: u8 = 1 << 2;
const RETAIN_AS_PUBLISHED: u8 = 1 << 3;
const HAS_ID: u8 = 1 << 4;

fn put_opt_bytes(out: &mut Vec<u8>, b: Option<&[u8]>) {
    match b {
        Some(b) => {
            out.push(1);
            out.extend_from_slice(&(b.len() as u32).to_le_bytes());
            out.extend_from_slice(b);
        }
        None => out.push(0),
    }
}

/// A small reader of the records below; `None` on a truncated or corrupt record.
struct Reader<'a>(&'a [u8]);

impl Reader<'_> {
    fn u8(&mut self) -> Option<u8> {
        let (b, rest) = self.0.split_first()?;
        self.0 = rest;
        Some(*b)
    }
    fn u32(&mut self) -> Option<u32> {
        let (b, rest) = self.0.split_at_checked(4)?;
        self.0 = rest;
        Some(u32::from_le_bytes(b.try_into().ok()?))
    }
    fn bytes(&mut self) -> Option<&[u8]> {
        let n = self.u32()? as usize;
        let (b, rest) = self.0.split_at_checked(n)?;
        self.0 = rest;
        Some(b)
    }
    fn string(&mut self) -> Option<String> {
        String::from_utf8(self.bytes()?.to_vec()).ok()
    }
    fn u64(&mut self) -> Option<u64> {
        let (b, rest) = self.0.split_at_checked(8)?;
        self.0 = rest;
        Some(u64::from_le_bytes(b.try_into().ok()?))
    }
    fn opt_bytes(&mut self) -> Option<Option<&[u8]>> {
        match self.u8()? {
            0 => Some(None),
            1 => Some(Some(self.bytes()?)),
            _ => None,
        }
    }
    fn opt_string(&mut self) -> Option<Option<String>> {
        match self.opt_bytes()? {
            None => Some(None),
            Some(b) => Some(Some(String::from_utf8(b.to_vec()).ok()?)),
        }
    }
}

/// qos, retain, topic, properties, payload, then, when the message has any, its MQTT 5 part:
/// 1, payload format indicator (1 + u8, or 0), content type, response topic, correlation data
/// (each 1 + length-prefixed bytes, or 0), expiry (1 + u64 milliseconds since the Unix epoch,
/// or 0).
fn encode_message(m: &Message) -> Vec<u8> {
    let mut out = Vec::with_capacity(m.topic.len() + m.payload.len() + 16);
    out.push(qos_byte(m.qos));
    out.push(u8::from(m.retain));
    put_str(&mut out, &m.topic);
    out.extend_from_slice(&(m.properties.len() as u32).to_le_bytes());
    for (k, v) in &m.properties {
        put_str(&mut out, k);
        put_str(&mut out, v);
    }
    out.extend_from_slice(&(m.payload.len() as u32).to_le_bytes());
    out.extend_from_slice(&m.payload);
    if m.v5 != PublishProperties::default() || m.expires_at.is_some() {
        out.push(1);
        match m.v5.payload_format_indicator {
            Some(b) => out.extend_from_slice(&[1, b]),
            None => out.push(0),
        }
        put_opt_bytes(&mut out, m.v5.content_type.as_deref().map(str::as_bytes));
        put_opt_bytes(&mut out, m.v5.response_topic.as_deref().map(str::as_bytes));
        put_opt_bytes(&mut out, m.v5.correlation_data.as_deref());
        match m.expires_at {
            Some(t) => {
                let ms = t
                    .duration_since(SystemTime::UNIX_EPOCH)
                    .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX));
                out.push(1);
                out.extend_from_slice(&ms.to_le_bytes());
            }
            None => out.push(0),
        }
    }
    out
}

fn decode_message(bytes: &[u8]) -> Option<Message> {
    let mut r = Reader(bytes);
    let qos = qos_of(r.u8()?)?;
    let retain = r.u8()? != 0;
    let topic = r.string()?;
    let n = r.u32()?;
    let mut properties = Vec::new();
    for _ in 0..n {
        properties.push((r.string()?, r.string()?));
    }
    let payload = edgefn_broker::Bytes::copy_from_slice(r.bytes()?);
    let mut v5 = PublishProperties::default();
    let mut expires_at = None;
    if !r.0.is_empty() {
        if r.u8()? != 1 {
            return None;
        }
        v5.payload_format_indicator = match r.u8()? {
            0 => None,
            1 => Some(r.u8()?),
            _ => return None,
        };
        v5.content_type = r.opt_string()?;
        v5.response_topic = r.opt_string()?;
        v5.correlation_data = r.opt_bytes()?.map(edgefn_broker::Bytes::copy_from_slice);
        expires_at = match r.u8()? {
            0 => None,
            1 => Some(SystemTime::UNIX_EPOCH + Duration::from_millis(r.u64()?)),
            _ => return None,
        };
    }
    Some(Message {
        topic,
        payload,
        qos,
        retain,
        properties,
        v5,
        expires_at,
    })
}

/// owner, subscriptions (filter, QoS byte with the options, then the identifier if any).
fn encode_session(owner: &str, subs: &[Subscription]) -> Vec<u8> {
    let mut out = Vec::new();
    put_str(&mut out, owner);
    out.extend_from_slice(&(subs.len() as u32).to_le_bytes());
    for s in subs {
        put_str(&mut out, &s.filter);
        let mut b = qos_byte(s.qos);
        if s.no_local {
            b |= NO_LOCAL;
        }
        if s.retain_as_published {
            b |= RETAIN_AS_PUBLISHED;
        }
        if s.id.is_some() {
            b |= HAS_ID;
        }
        out.push(b);
        if let Some(id) = s.id {
            out.extend_from_slice(&u32::try_from(id).unwrap_or(u32::MAX).to_le_bytes());
        }
    }
    out
}

fn decode_session(bytes: &[u8]) -> Option<(String, Vec<Subscription>)> {
    let mut r = Reader(bytes);
    let owner = r.string()?;
    let n = r.u32()?;
    let mut subs = Vec::new();
    for _ in 0..n {
        let filter = r.string()?;
        let b = r.u8()?;
        let mut s = Subscription::new(filter, qos_of(b)?);
        s.no_local = b & NO_LOCAL != 0;
        s.retain_as_published = b & RETAIN_AS_PUBLISHED != 0;
        if b & HAS_ID != 0 {
            s.id = Some(r.u32()? as usize);
        }
        subs.push(s);
    }
    Some((owner, subs))
}

impl BrokerStore {
    /// Opens (creating if needed) the store at `path`.
    pub(crate) fn open(path: &Path) -> Result<BrokerStore, redb::Error> {
        let db = Database::create(path)?;
        let tx = db.begin_write()?;
        tx.open_table(SESSIONS)?;
        tx.open_table(QUEUE)?;
        tx.open_table(RETAINED)?;
        tx.commit()?;
        Ok(BrokerStore { db })
    }

    /// Everything kept; corrupt records are skipped (and logged).
    pub(crate) fn load(&self) -> Result<Stored, redb::Error> {
        let tx = self.db.begin_read()?;
        let sessions = tx.open_table(SESSIONS)?;
        let queue = tx.open_table(QUEUE)?;
        let retained = tx.open_table(RETAINED)?;
        let mut stored = Stored::default();
        for entry in sessions.iter()? {
            let (k, v) = entry?;
            let client_id = k.value().to_owned();
            let Some((owner, subs)) = decode_session(v.value()) else {
                tracing::warn!(%client_id, "mqtt: a corrupt stored session skipped");
                continue;
            };
            let mut messages = Vec::new();
            for m in queue.range((client_id.as_str(), 0)..=(client_id.as_str(), u64::MAX))? {
                let (k, v) = m?;
                match decode_message(v.value()) {
                    Some(msg) => messages.push((k.value().1, msg)),
                    None => tracing::warn!(%client_id, "mqtt: a corrupt stored message skipped"),
                }
            }
            stored.sessions.push(StoredSession {
                client_id,
                owner,
                subs,
                queue: messages,
            });
        }
        for entry in retained.iter()? {
            let (_, v) = entry?;
            if let Some(m) = decode_message(v.value()) {
                stored.retained.push(m);
            }
        }
        Ok(stored)
    }
}

impl Persistence for BrokerStore {
    /// One transaction for the whole group; durable unless it only forgets acknowledged
    /// messages.
    fn commit(&self, changes: &[Change]) -> Result<(), StoreError> {
        let mut tx = self.db.begin_write()?;
        if !changes.iter().any(Change::needs_sync) {
            tx.set_durability(Durability::None)?;
        }
        {
            let mut sessions = tx.open_table(SESSIONS)?;
            let mut queue = tx.open_table(QUEUE)?;
            let mut retained = tx.open_table(RETAINED)?;
            for change in changes {
                match change {
                    Change::Session {
                        client_id,
                        owner,
                        subs,
                    } => {
                        sessions
                            .insert(client_id.as_str(), encode_session(owner, subs).as_slice())?;
                    }
                    Change::ForgetSession { client_id } => {
                        let id = client_id.as_str();
                        sessions.remove(id)?;
                        queue.retain_in((id, 0)..=(id, u64::MAX), |_, _| false)?;
                    }
                    Change::Keep {
                        client_id,
                        seq,
                        message,
                    } => {
                        queue.insert(
                            (client_id.as_str(), *seq),
                            encode_message(message).as_slice(),
                        )?;
                    }
                    Change::Done { client_id, seq } => {
                        queue.remove((client_id.as_str(), *seq))?;
                    }
                    Change::Retain { topic, message } => match message {
                        Some(m) => {
                            retained.insert(topic.as_str(), encode_message(m).as_slice())?;
                        }
                        None => {
                            retained.remove(topic.as_str())?;
                        }
                    },
                }
            }
        }
        tx.commit()?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sessions_messages_and_retained_survive_reopening() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("mqtt.redb");
        let m = |t: &str, p: &str| Message {
            properties: vec![("k".into(), "v".into())],
            ..Message::new(t, p.as_bytes().to_vec(), QoS::AtLeastOnce, false)
        };
        {
            let s = BrokerStore::open(&path).unwrap();
            let id = |c: &str| c.to_owned();
            let (a, b, c) = (m("x/1", "one"), m("x/2", "two"), m("x/3", "three"));
            s.commit(&[
                Change::Session {
                    client_id: id("gw-01"),
                    owner: id("gw-01"),
                    subs: vec![Subscription::new("edgefn/gw-01/down/#", QoS::AtLeastOnce)],
                },
                Change::Session {
                    client_id: id("gw-02"),
                    owner: id("gw-02"),
                    subs: vec![],
                },
                Change::Keep {
                    client_id: id("gw-01"),
                    seq: 1,
                    message: a.into(),
                },
                Change::Keep {
                    client_id: id("gw-01"),
                    seq: 2,
                    message: b.into(),
                },
                Change::Keep {
                    client_id: id("gw-02"),
                    seq: 1,
                    message: c.into(),
                },
            ])
            .unwrap();
            // Acknowledgements alone: a lazy commit, made durable by the next one.
            s.commit(&[Change::Done {
                client_id: id("gw-01"),
                seq: 1,
            }])
            .unwrap();
            s.commit(&[
                Change::ForgetSession {
                    client_id: id("gw-02"),
                },
                Change::Retain {
                    topic: id("r/1"),
                    message: Some(m("r/1", "kept").into()),
                },
                Change::Retain {
                    topic: id("r/2"),
                    message: Some(m("r/2", "cleared").into()),
                },
                Change::Retain {
                    topic: id("r/2"),
                    message: None,
                },
            ])
            .unwrap();
        }
        let stored = BrokerStore::open(&path).unwrap().load().unwrap();
        assert_eq!(stored.sessions.len(), 1);
        let s = &stored.sessions[0];
        assert_eq!((s.client_id.as_str(), s.owner.as_str()), ("gw-01", "gw-01"));
        assert_eq!(
            s.subs,
            vec![Subscription::new("edgefn/gw-01/down/#", QoS::AtLeastOnce)]
        );
        assert_eq!(s.queue.len(), 1);
        assert_eq!(s.queue[0].0, 2);
        assert_eq!(&s.queue[0].1.payload[..], b"two");
        assert_eq!(
            s.queue[0].1.properties,
            vec![("k".to_owned(), "v".to_owned())]
        );
        assert_eq!(stored.retained.len(), 1);
        assert_eq!(stored.retained[0].topic, "r/1");
        assert!(
            decode_message(&[1, 0, 9]).is_none(),
            "truncated records are refused"
        );
    }

    /// QoS 2, MQTT 5 properties, expiry and subscription options are kept; records written
    /// before them (QoS byte 0/1, a message ending at its payload) read as they did.
    #[test]
    fn qos2_properties_and_older_records() {
        let dir = tempfile::tempdir().unwrap();
        let s = BrokerStore::open(&dir.path().join("mqtt.redb")).unwrap();
        let at = SystemTime::UNIX_EPOCH + Duration::from_millis(1_900_000_000_123);
        let m = Message {
            v5: PublishProperties {
                payload_format_indicator: Some(1),
                content_type: Some("text/plain".into()),
                response_topic: Some("edgefn/gw-01/up/reply".into()),
                correlation_data: Some(edgefn_broker::Bytes::from_static(b"\x00id")),
            },
            expires_at: Some(at),
            ..Message::new("x/1", b"hi".to_vec(), QoS::ExactlyOnce, false)
        };
        let sub = Subscription {
            no_local: true,
            retain_as_published: true,
            id: Some(70_000),
            ..Subscription::new("$share/g/edgefn/gw-01/down/#", QoS::ExactlyOnce)
        };
        s.commit(&[
            Change::Session {
                client_id: "gw-01".into(),
                owner: "gw-01".into(),
                subs: vec![sub.clone(), Subscription::new("a/#", QoS::AtMostOnce)],
            },
            Change::Keep {
                client_id: "gw-01".into(),
                seq: 1,
                message: m.clone().into(),
            },
        ])
        .unwrap();
        let stored = s.load().unwrap();
        let got = &stored.sessions[0];
        assert_eq!(
            got.subs,
            vec![sub, Subscription::new("a/#", QoS::AtMostOnce)]
        );
        let back = &got.queue[0].1;
        assert_eq!(
            (back.qos, &back.v5, back.expires_at),
            (QoS::ExactlyOnce, &m.v5, Some(at))
        );

        // An older message record: qos 1, retain 0, topic, no properties, payload: nothing after.
        let mut old = vec![1, 0];
        put_str(&mut old, "t/old");
        old.extend_from_slice(&0u32.to_le_bytes());
        old.extend_from_slice(&2u32.to_le_bytes());
        old.extend_from_slice(b"ok");
        let read = decode_message(&old).unwrap();
        assert_eq!(
            (read.qos, &read.payload[..], read.expires_at),
            (QoS::AtLeastOnce, &b"ok"[..], None)
        );
        assert_eq!(read.v5, PublishProperties::default());
        // An older session record: owner, one filter at QoS 1.
        let mut old = Vec::new();
        put_str(&mut old, "gw-01");
        old.extend_from_slice(&1u32.to_le_bytes());
        put_str(&mut old, "edgefn/gw-01/down/#");
        old.push(1);
        assert_eq!(
            decode_session(&old).unwrap().1,
            vec![Subscription::new("edgefn/gw-01/down/#", QoS::AtLeastOnce)]
        );
        let mut bad = encode_message(&m);
        bad.pop();
        assert!(
            decode_message(&bad).is_none(),
            "a truncated MQTT 5 part is refused"
        );
    }
}

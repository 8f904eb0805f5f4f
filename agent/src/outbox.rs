//! The durable outbox: every message bound for the cloud waits here, on disk, until the cloud's
//! broker has acknowledged it.
//!
//! - **Durable before success.** [`Outbox::push`] returns only once the message is committed, so
//!   a publish that a function or a local program was told succeeded survives a broker outage,
//!   an agent SIGKILL and a reboot.
//! - **Batched.** Pushes that arrive together are committed in one transaction (group commit):
//!   flash is written once per batch, not once per message.
//! - **Ordered, with ids.** Each message gets the next sequence number of this device, kept
//!   across restarts; it is sent up in that order and carries it as its id, so a receiver can
//!   drop the duplicates that at-least-once delivery can produce.
//! - **Bounded.** At most `max_bytes` of payload and messages at most `max_age` old. Past either
//!   bound the *oldest* messages are dropped, and counted (`dropped`), so that fresh data wins.
//! - **Nothing is retried for ever.** A message the cloud's broker cannot take (larger than it
//!   accepts, or refused) is set aside: removed and counted (`rejected`), so the messages behind
//!   it flow.
//! - **Reclaimed.** Acknowledged messages are deleted; when the outbox drains, the file is
//!   compacted once it has grown past a few MiB.
//!
//! One task owns the database; callers talk to it through a channel.

use std::path::Path;
use std::time::Duration;

use redb::{Database, ReadableDatabase, ReadableTable, TableDefinition};
use serde::{Deserialize, Serialize};
use tokio::sync::{mpsc, oneshot};

const MESSAGES: TableDefinition<u64, &[u8]> = TableDefinition::new("messages");
const META: TableDefinition<&str, u64> = TableDefinition::new("meta");

/// A message waiting to go up.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OutMessage {
    /// Local topic (the cloud-side namespace is added when sent).
    pub topic: String,
    /// Payload bytes.
    pub payload: Vec<u8>,
    /// When it was queued, ms since the epoch.
    pub queued_ms: u64,
}

/// Counters of the outbox.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct OutboxStats {
    /// Messages waiting.
    pub pending: u64,
    /// Their payload bytes.
    pub pending_bytes: u64,
    /// Messages dropped for the size or age bound, since the outbox was created.
    pub dropped: u64,
    /// Messages acknowledged by the cloud, since the outbox was created.
    pub sent: u64,
    /// Messages set aside because the cloud's broker cannot take them (too large for it, or
    /// refused), since the outbox was created.
    #[serde(default)]
    pub rejected: u64,
}

/// Bounds of the outbox.
#[derive(Debug, Clone, Copy)]
pub struct OutboxLimits {
    /// Most payload bytes kept.
    pub max_bytes: u64,
    /// Oldest message kept.
    pub max_age: Duration,
}

impl Default for OutboxLimits {
    fn default() -> Self {
        OutboxLimits {
            max_bytes: 64 << 20,
            max_age: Duration::from_secs(7 * 24 * 3600),
        }
    }
}

/// Why the outbox failed. Cheap to clone: one group commit's error goes to every push in it.
#[derive(Debug, Clone, thiserror::Error)]
pub enum OutboxError {
    /// The database failed (open, transaction, commit, read).
    #[error("outbox: {0}")]
    Store(#[source] std::sync::Arc<redb::Error>),
    /// A record in the database is not one the outbox wrote.
    #[error("outbox: corrupt message record")]
    Corrupt,
    /// The outbox's thread cannot be started.
    #[error("outbox: cannot start its thread: {0}")]
    Thread(#[source] std::sync::Arc<std::io::Error>),
    /// The outbox's thread has stopped.
    #[error("outbox: the outbox is closed")]
    Closed,
}

impl<E: Into<redb::Error>> From<E> for OutboxError {
    fn from(e: E) -> Self {
        OutboxError::Store(std::sync::Arc::new(e.into()))
    }
}

enum Command {
    Push(
        Vec<(String, Vec<u8>)>,
        oneshot::Sender<Result<(), OutboxError>>,
    ),
    Peek(
        u64,
        usize,
        oneshot::Sender<Result<Vec<(u64, OutMessage)>, OutboxError>>,
    ),
    Ack(u64, oneshot::Sender<Result<(), OutboxError>>),
    SetAside(u64, oneshot::Sender<Result<bool, OutboxError>>),
    Stats(oneshot::Sender<OutboxStats>),
}

/// A handle on the outbox; cheap to clone.
#[derive(Debug, Clone)]
pub struct Outbox {
    /// This outbox's identity: random, made when the file is created, kept for its life.
    /// Receivers use it with the sequence numbers to drop duplicates (`edgefn-outbox`).
    pub identity: u64,
    tx: mpsc::Sender<Command>,
    wake: std::sync::Arc<tokio::sync::Notify>,
    thread: std::sync::Arc<std::sync::Mutex<Option<std::thread::JoinHandle<()>>>>,
}

impl std::fmt::Debug for Command {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Command")
    }
}

struct Store {
    db: Database,
    path: std::path::PathBuf,
    limits: OutboxLimits,
    stats: OutboxStats,
    next_seq: u64,
    identity: u64,
}

impl Store {
    // A blocking wait, once, at start, and only while another process holds the file.
    #[allow(clippy::disallowed_methods)]
    fn open(path: &Path, limits: OutboxLimits) -> Result<Store, OutboxError> {
        // redb locks the file per open file description: a child of a killed agent caught
        // between fork and exec (its parent-death signal kills it a moment later) can hold the
        // lock briefly. Wait for that, a little, rather than refuse to start.
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
        let db = loop {
            match Database::create(path) {
                Err(redb::DatabaseError::DatabaseAlreadyOpen)
                    if std::time::Instant::now() < deadline =>
                {
                    std::thread::sleep(std::time::Duration::from_millis(50));
                }
                other => break other?,
            }
        };
        let tx = db.begin_write()?;
        let (next_seq, stats, identity) = {
            let messages = tx.open_table(MESSAGES)?;
            let mut meta = tx.open_table(META)?;
            let known = meta.get("identity")?.map(|v| v.value());
            let identity = match known {
                Some(id) => id,
                None => {
                    let id = getrandom::u64().unwrap_or_else(|_| edgefn_os::time::now_ms()) | 1;
                    meta.insert("identity", id)?;
                    id
                }
            };
            let get = |k: &str| meta.get(k).ok().flatten().map_or(0, |v| v.value());
            let mut stats = OutboxStats {
                dropped: get("dropped"),
                sent: get("sent"),
                rejected: get("rejected"),
                ..OutboxStats::default()
            };
            for entry in messages.iter()? {
                let (_, v) = entry?;
                stats.pending += 1;
                stats.pending_bytes += decode(v.value())?.payload.len() as u64;
            }
            let last = messages.last()?.map_or(0, |(k, _)| k.value());
            (
                last.max(get("next_seq").saturating_sub(1)) + 1,
                stats,
                identity,
            )
        };
        tx.commit()?;
        Ok(Store {
            path: path.to_path_buf(),
            db,
            limits,
            stats,
            next_seq,
            identity,
        })
    }

    /// Commits a batch of pushes in one transaction, dropping the oldest past the bounds.
    fn push(&mut self, batch: &[(String, Vec<u8>)]) -> Result<(), OutboxError> {
        let now = edgefn_os::time::now_ms();
        let tx = self.db.begin_write()?;
        {
            let mut messages = tx.open_table(MESSAGES)?;
            for (topic, payload) in batch {
                let m = OutMessage {
                    topic: topic.clone(),
                    payload: payload.clone(),
                    queued_ms: now,
                };
                messages.insert(self.next_seq, encode(&m).as_slice())?;
                self.next_seq += 1;
                self.stats.pending += 1;
                self.stats.pending_bytes += payload.len() as u64;
            }
            // Bounds: drop from the oldest end.
            let oldest_allowed = now.saturating_sub(self.limits.max_age.as_millis() as u64);
            while self.stats.pending_bytes > self.limits.max_bytes
                || self.oldest_before(&messages, oldest_allowed)?
            {
                let Some((_, v)) = messages.pop_first()? else {
                    break;
                };
                let m = decode(v.value())?;
                self.stats.pending -= 1;
                self.stats.pending_bytes -= m.payload.len() as u64;
                self.stats.dropped += 1;
            }
            let mut meta = tx.open_table(META)?;
            meta.insert("next_seq", self.next_seq)?;
            meta.insert("dropped", self.stats.dropped)?;
        }
        tx.commit()?;
        Ok(())
    }

    fn oldest_before(
        &self,
        messages: &redb::Table<'_, u64, &'static [u8]>,
        limit: u64,
    ) -> Result<bool, OutboxError> {
        match messages.first()? {
            Some((_, v)) => Ok(decode(v.value())?.queued_ms < limit),
            None => Ok(false),
        }
    }

    fn peek(&self, after: u64, n: usize) -> Result<Vec<(u64, OutMessage)>, OutboxError> {
        let tx = self.db.begin_read()?;
        let messages = tx.open_table(MESSAGES)?;
        let mut out = Vec::with_capacity(n.min(1024));
        for entry in messages.range(after.saturating_add(1)..)?.take(n) {
            let (k, v) = entry?;
            out.push((k.value(), decode(v.value())?));
        }
        Ok(out)
    }

    /// Removes every message up to `seq` (the broker acknowledged them, in order).
    fn ack(&mut self, seq: u64) -> Result<(), OutboxError> {
        let mut tx = self.db.begin_write()?;
        // Losing an acknowledgement in a crash only means sending that message again (the
        // receiver drops the duplicate by its id): no fsync needed here.
        tx.set_durability(redb::Durability::None)?;
        {
            let mut messages = tx.open_table(MESSAGES)?;
            loop {
                let head = messages
                    .first()?
                    .map(|(k, v)| (k.value(), v.value().to_vec()));
                let Some((k, v)) = head else { break };
                if k > seq {
                    break;
                }
                messages.remove(k)?;
                let m = decode(&v)?;
                self.stats.pending -= 1;
                self.stats.pending_bytes -= m.payload.len() as u64;
                self.stats.sent += 1;
            }
            tx.open_table(META)?.insert("sent", self.stats.sent)?;
        }
        tx.commit()?;
        if self.stats.pending == 0 {
            self.reclaim();
        }
        Ok(())
    }

    /// Removes message `seq`, which the broker cannot take, and counts it; `false` when it was
    /// not there (already acknowledged or dropped).
    fn set_aside(&mut self, seq: u64) -> Result<bool, OutboxError> {
        let tx = self.db.begin_write()?;
        let found = {
            let mut messages = tx.open_table(MESSAGES)?;
            let removed = messages.remove(seq)?.map(|v| v.value().to_vec());
            match removed {
                Some(v) => {
                    let m = decode(&v)?;
                    self.stats.pending -= 1;
                    self.stats.pending_bytes -= m.payload.len() as u64;
                    self.stats.rejected += 1;
                    tx.open_table(META)?
                        .insert("rejected", self.stats.rejected)?;
                    true
                }
                None => false,
            }
        };
        tx.commit()?;
        Ok(found)
    }

    /// Gives disk back once drained: a durable commit, then compaction.
    fn reclaim(&mut self) {
        // Only a file that grew (an outage's backlog) is worth compacting; an outbox that
        // empties after every message in steady state is left alone.
        let big = std::fs::metadata(&self.path).is_ok_and(|m| m.len() > RECLAIM_ABOVE);
        if !big {
            return;
        }
        if let Ok(tx) = self.db.begin_write() {
            let _ = tx.commit();
        }
        let _ = self.db.compact();
    }
}

/// A record: queued time (8 bytes, little-endian), topic length (2 bytes), topic, payload.
fn encode(m: &OutMessage) -> Vec<u8> {
    let mut out = Vec::with_capacity(10 + m.topic.len() + m.payload.len());
    out.extend_from_slice(&m.queued_ms.to_le_bytes());
    out.extend_from_slice(&(m.topic.len() as u16).to_le_bytes());
    out.extend_from_slice(m.topic.as_bytes());
    out.extend_from_slice(&m.payload);
    out
}

fn decode(b: &[u8]) -> Result<OutMessage, OutboxError> {
    let corrupt = || OutboxError::Corrupt;
    let queued_ms = u64::from_le_bytes(
        b.get(..8)
            .ok_or_else(corrupt)?
            .try_into()
            .map_err(|_| corrupt())?,
    );
    let len = u16::from_le_bytes(
        b.get(8..10)
            .ok_or_else(corrupt)?
            .try_into()
            .map_err(|_| corrupt())?,
    ) as usize;
    let topic = std::str::from_utf8(b.get(10..10 + len).ok_or_else(corrupt)?)
        .map_err(|_| corrupt())?
        .to_owned();
    Ok(OutMessage {
        topic,
        payload: b[10 + len..].to_vec(),
        queued_ms,
    })
}

/// File size above which a drained outbox is compacted.
const RECLAIM_ABOVE: u64 = 4 << 20;

/// Most pushes merged into one commit.
const MAX_BATCH: usize = 4096;

impl Outbox {
    /// Opens the outbox at `path` and starts its task.
    pub fn open(path: &Path, limits: OutboxLimits) -> Result<Outbox, OutboxError> {
        let mut store = Store::open(path, limits)?;
        let identity = store.identity;
        let (tx, mut rx) = mpsc::channel::<Command>(MAX_BATCH);
        let wake = std::sync::Arc::new(tokio::sync::Notify::new());
        let wake_task = wake.clone();
        // A thread, not a task: commits block on the disk.
        let thread = std::thread::Builder::new()
            .name("edgefn-outbox".into())
            .spawn(move || {
                while let Some(first) = rx.blocking_recv() {
                    // Group commit: every push already queued joins this transaction.
                    let mut pushes = Vec::new();
                    let mut rest = Vec::new();
                    let mut queue = vec![first];
                    while let Ok(c) = rx.try_recv() {
                        queue.push(c);
                        if queue.len() >= MAX_BATCH {
                            break;
                        }
                    }
                    for c in queue {
                        match c {
                            Command::Push(batch, reply) => pushes.push((batch, reply)),
                            other => rest.push(other),
                        }
                    }
                    if !pushes.is_empty() {
                        let all: Vec<(String, Vec<u8>)> =
                            pushes.iter().flat_map(|(b, _)| b.iter().cloned()).collect();
                        let result = store.push(&all);
                        for (_, reply) in pushes {
                            let _ = reply.send(result.clone());
                        }
                        wake_task.notify_one();
                    }
                    for c in rest {
                        match c {
                            Command::Peek(after, n, reply) => {
                                let _ = reply.send(store.peek(after, n));
                            }
                            Command::Ack(seq, reply) => {
                                let _ = reply.send(store.ack(seq));
                            }
                            Command::SetAside(seq, reply) => {
                                let _ = reply.send(store.set_aside(seq));
                            }
                            Command::Stats(reply) => {
                                let _ = reply.send(store.stats);
                            }
                            Command::Push(..) => {}
                        }
                    }
                }
            })
            .map_err(|e| OutboxError::Thread(std::sync::Arc::new(e)))?;
        Ok(Outbox {
            identity,
            tx,
            wake,
            thread: std::sync::Arc::new(std::sync::Mutex::new(Some(thread))),
        })
    }

    /// Closes the database once every other handle is dropped, and waits for it.
    pub async fn close(self) {
        let thread = self.thread.clone();
        drop(self);
        let handle = thread.lock().ok().and_then(|mut t| t.take());
        if let Some(h) = handle {
            let _ = tokio::task::spawn_blocking(move || h.join()).await;
        }
    }

    async fn call<T>(
        &self,
        make: impl FnOnce(oneshot::Sender<T>) -> Command,
    ) -> Result<T, OutboxError> {
        let (reply, rx) = oneshot::channel();
        self.tx
            .send(make(reply))
            .await
            .map_err(|_| OutboxError::Closed)?;
        rx.await.map_err(|_| OutboxError::Closed)
    }

    /// Queues messages; returns once they are on disk.
    pub async fn push(&self, batch: Vec<(String, Vec<u8>)>) -> Result<(), OutboxError> {
        self.call(|r| Command::Push(batch, r)).await?
    }

    /// The oldest `n` messages, with their sequence numbers.
    #[cfg(test)]
    pub(crate) async fn peek(&self, n: usize) -> Result<Vec<(u64, OutMessage)>, OutboxError> {
        self.peek_after(0, n).await
    }

    /// The oldest `n` messages whose sequence number is above `after`.
    pub(crate) async fn peek_after(
        &self,
        after: u64,
        n: usize,
    ) -> Result<Vec<(u64, OutMessage)>, OutboxError> {
        self.call(|r| Command::Peek(after, n, r)).await?
    }

    /// Forgets every message up to `seq`, acknowledged by the cloud.
    pub(crate) async fn ack(&self, seq: u64) -> Result<(), OutboxError> {
        self.call(|r| Command::Ack(seq, r)).await?
    }

    /// Sets message `seq` aside: the cloud's broker cannot take it (too large for it, or
    /// refused). It is removed and counted in `rejected`; `false` when it was not there.
    pub(crate) async fn set_aside(&self, seq: u64) -> Result<bool, OutboxError> {
        self.call(|r| Command::SetAside(seq, r)).await?
    }

    /// Counters.
    pub async fn stats(&self) -> OutboxStats {
        self.call(Command::Stats).await.unwrap_or_default()
    }

    /// Resolves when a push has landed since the last call (for the sender to wake up).
    pub(crate) async fn pushed(&self) {
        self.wake.notified().await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rt() -> tokio::runtime::Runtime {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap()
    }

    #[test]
    fn ordered_acked_and_kept_across_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("outbox.redb");
        let identity = rt().block_on(async {
            let o = Outbox::open(&path, OutboxLimits::default()).unwrap();
            let identity = o.identity;
            let pushes: Vec<_> = (0..100)
                .map(|i| o.push(vec![(format!("t/{i}"), vec![i as u8])]))
                .collect();
            for p in pushes {
                p.await.unwrap();
            }
            let first = o.peek(10).await.unwrap();
            assert_eq!(first[0].1.topic, "t/0");
            assert_eq!(first[9].1.topic, "t/9");
            o.ack(first[4].0).await.unwrap();
            assert_eq!(o.stats().await.pending, 95);
            o.close().await;
            identity
        });
        // Reopened (as after a restart): the rest is there, sequence numbers go on, under the
        // same identity; another outbox has another.
        let other = dir.path().join("other.redb");
        rt().block_on(async {
            let o = Outbox::open(&path, OutboxLimits::default()).unwrap();
            assert_eq!(o.identity, identity);
            let o2 = Outbox::open(&other, OutboxLimits::default()).unwrap();
            assert_ne!(o2.identity, identity);
            let s = o.stats().await;
            assert_eq!((s.pending, s.sent), (95, 5));
            let all = o.peek(1000).await.unwrap();
            assert_eq!(all[0].1.topic, "t/5");
            let last = all.last().unwrap().0;
            o.push(vec![("t/new".into(), vec![])]).await.unwrap();
            let again = o.peek(1000).await.unwrap();
            assert_eq!(again.last().unwrap().0, last + 1);
            o.ack(last + 1).await.unwrap();
            assert_eq!(o.stats().await.pending, 0);
        });
    }

    #[test]
    fn a_message_set_aside_is_counted_and_the_rest_go_on() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("o.redb");
        rt().block_on(async {
            let o = Outbox::open(&path, OutboxLimits::default()).unwrap();
            o.push(vec![
                ("big".into(), vec![1; 1000]),
                ("a".into(), vec![2]),
                ("b".into(), vec![3]),
            ])
            .await
            .unwrap();
            let all = o.peek(10).await.unwrap();
            assert!(o.set_aside(all[0].0).await.unwrap());
            assert!(!o.set_aside(all[0].0).await.unwrap(), "once");
            let rest: Vec<String> = o
                .peek(10)
                .await
                .unwrap()
                .into_iter()
                .map(|(_, m)| m.topic)
                .collect();
            assert_eq!(rest, ["a", "b"]);
            let s = o.stats().await;
            assert_eq!((s.pending, s.pending_bytes, s.rejected), (2, 2, 1));
            o.close().await;
        });
        rt().block_on(async {
            let o = Outbox::open(&path, OutboxLimits::default()).unwrap();
            assert_eq!(o.stats().await.rejected, 1, "kept across a restart");
        });
    }

    #[test]
    fn the_oldest_are_dropped_past_the_size_bound() {
        let dir = tempfile::tempdir().unwrap();
        rt().block_on(async {
            let o = Outbox::open(
                &dir.path().join("o.redb"),
                OutboxLimits {
                    max_bytes: 1000,
                    max_age: Duration::from_secs(3600),
                },
            )
            .unwrap();
            for i in 0..30u8 {
                o.push(vec![(format!("t/{i}"), vec![i; 100])])
                    .await
                    .unwrap();
            }
            let s = o.stats().await;
            assert_eq!((s.pending, s.pending_bytes, s.dropped), (10, 1000, 20));
            assert_eq!(
                o.peek(1).await.unwrap()[0].1.topic,
                "t/20",
                "the newest are kept"
            );
        });
    }

    #[test]
    fn expired_messages_are_dropped() {
        let dir = tempfile::tempdir().unwrap();
        rt().block_on(async {
            let o = Outbox::open(
                &dir.path().join("o.redb"),
                OutboxLimits {
                    max_bytes: 1 << 20,
                    max_age: Duration::ZERO,
                },
            )
            .unwrap();
            o.push(vec![("a".into(), vec![1])]).await.unwrap();
            tokio::time::sleep(Duration::from_millis(5)).await;
            o.push(vec![("b".into(), vec![2])]).await.unwrap();
            let s = o.stats().await;
            assert!(s.dropped >= 1, "{s:?}");
        });
    }

    #[test]
    fn the_file_shrinks_once_drained() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("o.redb");
        rt().block_on(async {
            let o = Outbox::open(&path, OutboxLimits::default()).unwrap();
            for chunk in 0..20 {
                let batch = (0..500)
                    .map(|i| (format!("t/{chunk}/{i}"), vec![7u8; 1000]))
                    .collect();
                o.push(batch).await.unwrap();
            }
            let full = std::fs::metadata(&path).unwrap().len();
            let all = o.peek(100_000).await.unwrap();
            o.ack(all.last().unwrap().0).await.unwrap();
            let drained = std::fs::metadata(&path).unwrap().len();
            assert!(drained * 2 < full, "{full} → {drained}");
        });
    }
}

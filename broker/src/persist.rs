//! Storage of sessions, kept messages and retained messages: the [`Persistence`] trait its
//! owner implements, and the one thread that calls it.
//!
//! The broker changes its state in memory, under its lock, and hands each operation's changes
//! to the writer thread through a bounded channel, still under the lock (so the store sees
//! changes in the order the state made them) but without waiting: a place in the channel is
//! reserved before the lock is taken, so a full channel holds up the caller, never the lock.
//! The thread takes whatever has queued up and commits it in one [`Persistence::commit`] (group
//! commit, as the agent's outbox does), then answers each waiting caller with the result.

use std::sync::Arc;

use tokio::sync::{mpsc, oneshot};

use crate::message::Message;
use crate::subscription::Subscription;

/// Operations waiting for the writer thread, at most; more wait for a place.
const CHANNEL: usize = 1024;
/// Changes merged into one commit, at most (an operation's changes are never split).
const MAX_CHANGES: usize = 16_384;

/// Why a [`Persistence`] failed: its own error, kept as the source.
pub type StoreError = Box<dyn std::error::Error + Send + Sync>;

/// A change to what a [`Persistence`] keeps. A commit holds them in the order the broker made
/// them.
#[derive(Debug, Clone)]
pub enum Change {
    /// A persistent session and its subscriptions, created or changed.
    Session {
        /// Client id.
        client_id: String,
        /// Its owner's name (see [`crate::Authenticator::restore`]).
        owner: String,
        /// Its subscriptions, whole.
        subs: Vec<Subscription>,
    },
    /// Forget a session and every message kept for it.
    ForgetSession {
        /// Client id.
        client_id: String,
    },
    /// A QoS 1 or 2 message kept for a session until it is acknowledged (PUBACK, or PUBCOMP).
    Keep {
        /// Client id.
        client_id: String,
        /// Its number: grows within a session, never 0.
        seq: u64,
        /// The message.
        message: Arc<Message>,
    },
    /// A kept message was acknowledged or dropped: forget it. Need not be durable at once: after
    /// a crash the message is sent again, which at-least-once delivery allows.
    Done {
        /// Client id.
        client_id: String,
        /// The message's number.
        seq: u64,
    },
    /// A retained message set (`Some`) or cleared (`None`).
    Retain {
        /// Its topic.
        topic: String,
        /// The message, or `None` to clear it.
        message: Option<Arc<Message>>,
    },
}

impl Change {
    /// Whether a commit holding this change must be durable before it returns (all but
    /// [`Change::Done`]).
    pub fn needs_sync(&self) -> bool {
        !matches!(self, Change::Done { .. })
    }
}

/// Where a broker keeps its persistent sessions (subscriptions and the QoS 1 messages not yet
/// acknowledged) and retained messages, so that they outlive a restart. Called from one thread
/// of the broker's own, never from the async runtime, so it may block on the disk.
pub trait Persistence: Send + Sync + 'static {
    /// Applies `changes`, in order, all or none (one transaction), and returns once they are
    /// stored: durably when any of them [needs it](Change::needs_sync). An error fails every
    /// operation in the commit: their publishers are told.
    fn commit(&self, changes: &[Change]) -> Result<(), StoreError>;
}

/// What a [`Persistence`] kept, loaded at start with [`crate::Broker::restore`].
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
    /// Its owner's name (see [`crate::Authenticator::restore`]).
    pub owner: String,
    /// Its subscriptions.
    pub subs: Vec<Subscription>,
    /// Its messages, by number.
    pub queue: Vec<(u64, Message)>,
}

/// Why a change was not stored.
#[derive(Debug, Clone, thiserror::Error)]
pub enum PersistError {
    /// The store refused or failed the commit (a full disk, an I/O error).
    #[error("the broker's store failed")]
    Failed(#[source] Arc<dyn std::error::Error + Send + Sync>),
    /// The writer thread is gone (it could not start, or the broker is going away).
    #[error("the broker's store is closed")]
    Closed,
}

/// One operation's changes, and who waits for their commit.
struct Batch {
    changes: Vec<Change>,
    ack: oneshot::Sender<Result<(), PersistError>>,
}

/// The sending side of the writer thread; the thread ends when this is dropped, after
/// committing what is queued.
#[derive(Debug)]
pub(crate) struct Writer {
    tx: mpsc::Sender<Batch>,
}

impl Writer {
    /// Starts the thread that owns `store`.
    pub(crate) fn start(store: Arc<dyn Persistence>) -> Writer {
        let (tx, mut rx) = mpsc::channel::<Batch>(CHANNEL);
        // A thread, not a task: commits block on the disk.
        let started = std::thread::Builder::new()
            .name("edgefn-broker-store".into())
            .spawn(move || {
                while let Some(first) = rx.blocking_recv() {
                    let mut changes = first.changes;
                    let mut acks = vec![first.ack];
                    while changes.len() < MAX_CHANGES {
                        let Ok(more) = rx.try_recv() else { break };
                        changes.extend(more.changes);
                        acks.push(more.ack);
                    }
                    let result = store
                        .commit(&changes)
                        .map_err(|e| PersistError::Failed(Arc::from(e)));
                    if let Err(PersistError::Failed(e)) = &result {
                        tracing::error!(
                            changes = changes.len(),
                            "mqtt: the broker's store failed: {e}"
                        );
                    }
                    for ack in acks {
                        let _ = ack.send(result.clone());
                    }
                }
            });
        if let Err(e) = started {
            // The receiver is dropped with the closure: every operation that needs the store
            // fails with `Closed`.
            tracing::error!("mqtt: the broker's store thread could not start: {e}");
        }
        Writer { tx }
    }

    /// A place for one operation's changes, once the channel has room.
    pub(crate) async fn slot(&self) -> Result<Slot<'_>, PersistError> {
        let permit = self.tx.reserve().await.map_err(|_| PersistError::Closed)?;
        Ok(Slot {
            permit: Some(permit),
            changes: Vec::new(),
        })
    }

    /// A place, if the channel has room now.
    pub(crate) fn try_slot(&self) -> Option<Slot<'_>> {
        let permit = self.tx.try_reserve().ok()?;
        Some(Slot {
            permit: Some(permit),
            changes: Vec::new(),
        })
    }
}

/// The changes of one operation, collected under the broker's lock and sent before it is
/// released. Without a place (a broker without persistence), changes are not collected.
#[derive(Debug)]
pub(crate) struct Slot<'a> {
    permit: Option<mpsc::Permit<'a, Batch>>,
    changes: Vec<Change>,
}

impl Slot<'_> {
    /// A slot that stores nothing.
    pub(crate) fn memory_only<'b>() -> Slot<'b> {
        Slot {
            permit: None,
            changes: Vec::new(),
        }
    }

    /// Whether changes are stored.
    pub(crate) fn storing(&self) -> bool {
        self.permit.is_some()
    }

    /// Adds a change.
    pub(crate) fn push(&mut self, change: Change) {
        if self.storing() {
            self.changes.push(change);
        }
    }

    /// A kept message is gone (acknowledged or dropped): takes it out of this operation's
    /// changes when it is still there, else tells the store.
    pub(crate) fn forget(&mut self, client_id: &str, seq: u64) {
        if seq == 0 || !self.storing() {
            return;
        }
        let at = self.changes.iter().position(|c| {
            matches!(c, Change::Keep { client_id: c, seq: n, .. } if c == client_id && *n == seq)
        });
        match at {
            Some(i) => {
                self.changes.remove(i);
            }
            None => self.changes.push(Change::Done {
                client_id: client_id.to_owned(),
                seq,
            }),
        }
    }

    /// Hands the changes to the writer (call it under the broker's lock); the returned
    /// [`Ack`] completes with their commit.
    pub(crate) fn send(self) -> Ack {
        match self.permit {
            Some(permit) if !self.changes.is_empty() => {
                let (ack, rx) = oneshot::channel();
                permit.send(Batch {
                    changes: self.changes,
                    ack,
                });
                Ack(Some(rx))
            }
            _ => Ack(None),
        }
    }
}

/// The commit of one operation's changes (ready at once when there were none).
#[derive(Debug)]
#[must_use = "an operation's changes are stored in the background: wait to know they are"]
pub(crate) struct Ack(Option<oneshot::Receiver<Result<(), PersistError>>>);

impl Ack {
    /// Whether there is nothing to wait for.
    pub(crate) fn is_ready(&self) -> bool {
        self.0.is_none()
    }

    /// Completes once the changes are committed, with the commit's result.
    pub(crate) async fn wait(self) -> Result<(), PersistError> {
        match self.0 {
            None => Ok(()),
            Some(rx) => rx.await.unwrap_or(Err(PersistError::Closed)),
        }
    }

    /// Lets the changes be stored without waiting (a failure is logged by the writer).
    pub(crate) fn detach(self) {}
}

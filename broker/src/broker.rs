//! The broker: its state in memory under one lock, the writer of its store, and the accept
//! loop.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use tokio::sync::watch;

use crate::access::Authenticator;
use crate::message::Message;
use crate::options::{BrokerOptions, SWEEP_EVERY};
use crate::persist::{PersistError, Slot, Writer};
use crate::session::Session;

/// Everything the broker holds in memory. Guarded by one lock that is never held across an
/// await nor around I/O: what is stored is handed to the writer thread (see `persist`).
pub(crate) struct State<C> {
    pub(crate) sessions: HashMap<String, Session<C>>,
    pub(crate) retained: HashMap<String, Arc<Message>>,
    pub(crate) next_conn: u64,
    /// Shared subscriptions' turns, by `group/filter`: which member gets the next message.
    pub(crate) share_next: HashMap<String, usize>,
}

/// The broker: sessions and routing. Serve connections with [`Broker::serve`] or
/// [`Broker::serve_stream`].
pub struct Broker<A: Authenticator> {
    pub(crate) auth: A,
    pub(crate) options: BrokerOptions,
    pub(crate) state: Mutex<State<A::Client>>,
    /// The store's writer thread, with a [`crate::Persistence`].
    pub(crate) writer: Option<Writer>,
}

impl<A: Authenticator> std::fmt::Debug for Broker<A> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Broker").finish_non_exhaustive()
    }
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

    /// A broker with settings. With a [`crate::Persistence`], starts the thread that writes to
    /// it (it ends when the broker is dropped).
    pub fn with_options(auth: A, options: BrokerOptions) -> Arc<Self> {
        let writer = options.persistence.clone().map(Writer::start);
        Arc::new(Self {
            auth,
            options,
            state: Mutex::new(State {
                sessions: HashMap::new(),
                retained: HashMap::new(),
                next_conn: 0,
                share_next: HashMap::new(),
            }),
            writer,
        })
    }

    /// The state, for a moment: never held across an await.
    pub(crate) fn lock(&self) -> MutexGuard<'_, State<A::Client>> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// A place for one operation's changes to the store (take it before the lock); one that
    /// stores nothing without a [`crate::Persistence`].
    pub(crate) async fn slot(&self) -> Result<Slot<'_>, PersistError> {
        match &self.writer {
            Some(w) => w.slot().await,
            None => Ok(Slot::memory_only()),
        }
    }

    /// Accepts connections on `listener` until `shutdown` turns true; ends expired sessions
    /// every second.
    pub async fn serve(
        self: Arc<Self>,
        listener: tokio::net::TcpListener,
        mut shutdown: watch::Receiver<bool>,
    ) {
        let mut sweep = tokio::time::interval(SWEEP_EVERY);
        sweep.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = sweep.tick() => self.expire_sessions().await,
                accepted = listener.accept() => match accepted {
                    Ok((stream, peer)) => {
                        let _ = stream.set_nodelay(true);
                        let broker = self.clone();
                        let stop = shutdown.clone();
                        tokio::spawn(async move { broker.serve_stream(stream, peer.to_string(), stop).await });
                    }
                    Err(e) => {
                        // Out of descriptors, most likely: give connections a moment to end.
                        tracing::warn!("mqtt: accept failed: {e}");
                        tokio::time::sleep(Duration::from_millis(100)).await;
                    }
                },
                () = stopped(&mut shutdown) => return,
            }
        }
    }

    /// Number of connected clients.
    pub fn connected(&self) -> usize {
        self.lock()
            .sessions
            .values()
            .filter(|s| s.conn.is_some())
            .count()
    }
}

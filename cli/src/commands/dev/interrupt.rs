//! The session's end, asked for by Ctrl-C, SIGTERM or SIGHUP (the terminal closed): a flag the
//! synchronous main thread waits on between its polls, so that it stops at once rather than at
//! its next poll.

use std::sync::{Arc, Condvar, Mutex, PoisonError};
use std::time::Duration;

/// Set once, never cleared; clones share it.
#[derive(Debug, Clone, Default)]
pub(super) struct Interrupt(Arc<(Mutex<bool>, Condvar)>);

impl Interrupt {
    /// Sets the flag and wakes every waiter.
    pub(super) fn set(&self) {
        let (flag, changed) = &*self.0;
        *flag.lock().unwrap_or_else(PoisonError::into_inner) = true;
        changed.notify_all();
    }

    /// Whether the flag is set.
    pub(super) fn is_set(&self) -> bool {
        *self.0.0.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Waits up to `timeout` for the flag; returns whether it is set.
    pub(super) fn wait(&self, timeout: Duration) -> bool {
        let (flag, changed) = &*self.0;
        let guard = flag.lock().unwrap_or_else(PoisonError::into_inner);
        let (guard, _) = changed
            .wait_timeout_while(guard, timeout, |set| !*set)
            .unwrap_or_else(PoisonError::into_inner);
        *guard
    }
}

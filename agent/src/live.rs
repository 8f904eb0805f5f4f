//! The active release: the one slot events are routed to, and the lease every event holds on
//! the release it reached. A switch swaps the slot, then waits — on a signal, not a poll — for
//! the last lease on the outgoing release to go, so the outgoing release is stopped only after
//! every event that reached it finished, and no new event reaches it after the swap.

use std::ops::Deref;
use std::sync::Arc;

use edgefn_schema::DesiredState;
use tokio::sync::{Notify, RwLock};

use crate::release::RunningRelease;

/// A hold on a running release: events, the health window and the status report take one;
/// [`Live::swap`] and [`Live::take`] wait until every other lease is dropped.
#[derive(Debug)]
pub(crate) struct Lease {
    /// Always `Some` but in `drop`, which releases it before telling the waiter.
    release: Option<Arc<RunningRelease>>,
    released: Arc<Notify>,
}

impl Clone for Lease {
    fn clone(&self) -> Self {
        Lease {
            release: self.release.clone(),
            released: self.released.clone(),
        }
    }
}

impl Deref for Lease {
    type Target = RunningRelease;
    fn deref(&self) -> &RunningRelease {
        // Taken only by `drop` and `into_inner`, which consume the lease.
        self.release.as_deref().unwrap_or_else(|| unreachable!())
    }
}

impl Drop for Lease {
    fn drop(&mut self) {
        // The count goes down first, then the waiter (if any) looks again.
        drop(self.release.take());
        self.released.notify_waiters();
    }
}

impl Lease {
    fn new(release: RunningRelease) -> Lease {
        Lease {
            release: Some(Arc::new(release)),
            released: Arc::new(Notify::new()),
        }
    }

    /// The release, once every other lease on it is dropped.
    async fn into_inner(mut self) -> RunningRelease {
        let released = self.released.clone();
        let mut release = self.release.take().unwrap_or_else(|| unreachable!());
        drop(self);
        loop {
            let dropped = released.notified();
            tokio::pin!(dropped);
            // Registered before looking, so a lease dropped after the look wakes this.
            dropped.as_mut().enable();
            match Arc::try_unwrap(release) {
                Ok(r) => return r,
                Err(still_held) => release = still_held,
            }
            dropped.await;
        }
    }
}

/// The active release, and its desired state again for checks that cannot wait for the slot's
/// lock (the local MQTT listener's, made inside the broker).
#[derive(Debug, Default)]
pub(crate) struct Live {
    active: RwLock<Option<Lease>>,
    state: std::sync::RwLock<Option<Arc<DesiredState>>>,
}

impl Live {
    /// A lease on the active release, if any. Taken under the slot's read lock: once a switch
    /// swapped the release, no new event reaches the old one.
    pub(crate) async fn get(&self) -> Option<Lease> {
        self.active.read().await.clone()
    }

    /// The digest of the release running now.
    pub(crate) async fn digest(&self) -> Option<String> {
        self.active
            .read()
            .await
            .as_ref()
            .map(|r| r.digest().to_owned())
    }

    /// Makes `next` the active release; returns the old one once no lease on it is left.
    pub(crate) async fn swap(&self, next: RunningRelease) -> Option<RunningRelease> {
        *self
            .state
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner) =
            Some(Arc::new(next.desired.state.clone()));
        let old = self.active.write().await.replace(Lease::new(next));
        Some(old?.into_inner().await)
    }

    /// Empties the slot (shutdown); returns the release once no lease on it is left.
    pub(crate) async fn take(&self) -> Option<RunningRelease> {
        let old = self.active.write().await.take();
        Some(old?.into_inner().await)
    }

    /// Whether a route of the active release sends `topic` to the cloud, without waiting for
    /// the slot's lock.
    pub(crate) fn routes_up_now(&self, topic: &str) -> bool {
        self.state
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .as_ref()
            .is_some_and(|s| s.sends_up(topic))
    }
}

#[cfg(test)]
mod tests {
    use edgefn_schema::api::DesiredResponse;

    use super::*;

    fn idle(digest: &str) -> RunningRelease {
        RunningRelease::idle(DesiredResponse {
            revision: 1,
            digest: digest.into(),
            state: edgefn_schema::conformance::desired_state(),
            signature: None,
        })
    }

    /// The switch hands back the outgoing release once the last event holding it is done:
    /// woken by that lease's drop, not by polling.
    #[test]
    fn a_swap_returns_the_old_release_when_its_last_lease_goes() {
        let rt = tokio::runtime::Builder::new_current_thread()
            .build()
            .expect("rt");
        rt.block_on(async {
            let live = Arc::new(Live::default());
            assert!(live.swap(idle("a")).await.is_none());
            let in_flight = live.get().await.expect("a lease");
            let swap = tokio::spawn({
                let live = live.clone();
                async move { live.swap(idle("b")).await.map(|r| r.digest().to_owned()) }
            });
            // The swap runs as far as it can: the slot holds the new release at once, and
            // the old one is still held.
            for _ in 0..10 {
                tokio::task::yield_now().await;
            }
            assert_eq!(live.digest().await.as_deref(), Some("b"));
            assert!(!swap.is_finished(), "an event still holds the old release");
            drop(in_flight);
            assert_eq!(swap.await.expect("swap").as_deref(), Some("a"));
        });
    }
}

//! The control plane's state, shared by every handler: the store, the registry of devices and
//! tokens, the fleet view of the latest revision, the devices' last reports, the counters, and
//! the message machinery when messages are enabled.
//!
//! Dependencies point one way: `api` (the handlers) → `state` → `registry`, `fleet`, `store`,
//! `messaging`. Nothing here knows about HTTP routes.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use edgefn_schema::api::StatusReport;
use tokio::sync::watch;

use crate::error::{ApiError, blocking};
use crate::fleet::FleetView;
use crate::messaging::Messaging;
use crate::metrics::Metrics;
use crate::registry::Registry;
use crate::rollout::RolloutRecord;
use crate::store::{Store, StoreError};

/// How often the reports other processes sharing the store received are read (and anything
/// left unwritten is written again). Reports received here are written as they come, in group
/// commits: see [`AppState::record_status`].
pub(crate) const STATUS_FLUSH: Duration = Duration::from_secs(1);

/// How long a report's answer waits for the store to take it before answering 503.
const STATUS_STORED_WAIT: Duration = Duration::from_secs(30);

/// Where the writing of reports is: every report recorded with a ticket up to `stored` is in
/// the store; the write with number `failed` failed (its reports wait for the next one).
#[derive(Debug, Clone, Copy, Default)]
struct Flushed {
    stored: u64,
    failed: u64,
}

/// Device reports, kept in memory and flushed to the store in batches.
#[derive(Debug, Default)]
struct Statuses {
    /// Each device's last report and when it came (ms since the Unix epoch).
    last: HashMap<String, (StatusReport, u64)>,
    /// The devices that reported since the last flush.
    dirty: HashSet<String>,
    /// Where [`Store::statuses_since`] reads from next: reports other processes sharing the
    /// store received.
    seen: u64,
    /// The number of the write that will take the reports recorded now (their ticket).
    batch: u64,
}

/// Shared server state.
pub(crate) struct AppState {
    pub(crate) store: Arc<dyn Store>,
    /// Devices, their tokens, and the admin tokens.
    pub(crate) registry: Arc<Registry>,
    fleet: watch::Sender<Arc<FleetView>>,
    /// Held while a revision is committed, so that revisions are compared and committed one
    /// at a time.
    pub(crate) commit: tokio::sync::Mutex<()>,
    shutdown: watch::Receiver<bool>,
    /// Last report of each device, and the names reported since the last flush to the store.
    statuses: Mutex<Statuses>,
    /// Wakes the writer of reports ([`AppState::flush_statuses`]'s loop) when one is recorded.
    pub(crate) status_recorded: tokio::sync::Notify,
    /// Where the writing of reports is; a report's answer waits on it.
    status_flushed: watch::Sender<Flushed>,
    /// Counters for `/metrics`.
    pub(crate) metrics: Metrics,
    /// The broker connection and message endpoints, when messages are enabled.
    messaging: OnceLock<Arc<Messaging>>,
    /// The broker URL given to newly registered devices.
    device_mqtt_url: OnceLock<String>,
    /// Counts changes to what `GET /v1/status` shows (reports, revisions, registrations): the
    /// console's live pages wait on it.
    changes: watch::Sender<u64>,
    /// Served over TLS: the console's cookie is `Secure`.
    https: OnceLock<bool>,
    /// The embedded broker's port.
    broker_port: OnceLock<u16>,
    /// The key that seals secrets (set once at start).
    keyring: OnceLock<crate::secrets::Keyring>,
    /// The latest revision's rollout, if it had one ([`crate::rollout`]).
    rollout: Mutex<Option<RolloutRecord>>,
}

impl std::fmt::Debug for AppState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AppState").finish_non_exhaustive()
    }
}

/// The fleet view of the latest stored revision, with its rollout (and the view of that
/// rollout's baseline) when it has one.
fn stored_view(store: &dyn Store) -> Result<(FleetView, Option<RolloutRecord>), StoreError> {
    let mut view = FleetView::build(store.latest()?.as_ref());
    let rollout = match store.rollout()? {
        Some(bytes) => {
            Some(serde_json::from_slice::<RolloutRecord>(&bytes).map_err(StoreError::Corrupt)?)
        }
        None => None,
    }
    .filter(|r| r.revision == view.revision);
    if let Some(r) = &rollout {
        let baseline = Arc::new(FleetView::build(store.revision(r.baseline)?.as_ref()));
        view = crate::rollout::overlaid(&view, r, Some(&baseline));
    }
    Ok((view, rollout))
}

impl AppState {
    /// Reads the latest revision again and serves it when it is not the one served: after
    /// another process sharing the database committed one (a commit here then conflicts), or
    /// after a commit whose connection was lost while committing. Blocking; call it holding
    /// the commit lock. Whether the view changed.
    pub(crate) fn reload_latest(&self) -> Result<bool, StoreError> {
        let latest = self.store.history(1)?.first().map_or(0, |s| s.number);
        if latest == self.view().revision {
            // The same revision: its rollout may have moved on (another process's driver, or
            // a pause, resume or abort through it).
            let stored = match self.store.rollout()? {
                Some(bytes) => Some(
                    serde_json::from_slice::<RolloutRecord>(&bytes).map_err(StoreError::Corrupt)?,
                ),
                None => None,
            };
            return Ok(match stored {
                Some(r) if r.revision == latest && Some(&r) != self.rollout_record().as_ref() => {
                    self.update_rollout(r);
                    true
                }
                _ => false,
            });
        }
        let (view, rollout) = stored_view(self.store.as_ref())?;
        tracing::info!(
            revision = view.revision,
            "serving a revision committed by another process"
        );
        *self
            .rollout
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = rollout;
        self.fleet.send_replace(Arc::new(view));
        self.changed();
        Ok(true)
    }

    /// State over `store`, with the admin token hashes allowed. Reads the store: call it off
    /// the async threads.
    pub(crate) fn load(
        store: Arc<dyn Store>,
        admin: Vec<[u8; 32]>,
        shutdown: watch::Receiver<bool>,
    ) -> Result<Arc<Self>, StoreError> {
        let registry = Registry::new(store.devices()?, admin);
        let (view, rollout) = stored_view(store.as_ref())?;
        let statuses = Statuses {
            last: store.statuses()?.into_iter().collect(),
            dirty: HashSet::new(),
            seen: 0,
            batch: 1,
        };
        Ok(Arc::new(Self {
            store,
            registry: Arc::new(registry),
            fleet: watch::Sender::new(Arc::new(view)),
            commit: tokio::sync::Mutex::new(()),
            shutdown,
            statuses: Mutex::new(statuses),
            status_recorded: tokio::sync::Notify::new(),
            status_flushed: watch::Sender::new(Flushed::default()),
            metrics: Metrics::default(),
            messaging: OnceLock::new(),
            device_mqtt_url: OnceLock::new(),
            changes: watch::Sender::new(0),
            https: OnceLock::new(),
            broker_port: OnceLock::new(),
            keyring: OnceLock::new(),
            rollout: Mutex::new(rollout),
        }))
    }

    /// Uses `keyring` to seal and open secrets.
    pub(crate) fn set_keyring(&self, keyring: crate::secrets::Keyring) {
        let _ = self.keyring.set(keyring);
    }

    /// The secrets key (set at start).
    pub(crate) fn keyring(&self) -> &crate::secrets::Keyring {
        self.keyring
            .get()
            .expect("the keyring is set before serving")
    }

    /// Tells devices registered from now on to use the broker at `url`.
    pub(crate) fn set_device_mqtt_url(&self, url: String) {
        let _ = self.device_mqtt_url.set(url);
    }

    /// The broker URL given to newly registered devices, if one was set.
    pub(crate) fn device_mqtt_url(&self) -> Option<&String> {
        self.device_mqtt_url.get()
    }

    /// Records `report` as device `name`'s last, received at `at_ms`, and returns once the
    /// store holds it — so a device told `204` may rely on it (a replica killed right after
    /// answering loses nothing). Reports are written in group commits: the writer takes all
    /// those recorded while the previous write ran in one transaction, so a busy fleet's
    /// reports cost a few transactions a second and a lone report waits for one.
    ///
    /// Errors: the store failing or taking over [`STATUS_STORED_WAIT`]:
    /// [`StoreError::Unavailable`] (503; the device sends it again).
    pub(crate) async fn record_status(
        &self,
        name: String,
        report: StatusReport,
        at_ms: u64,
    ) -> Result<(), ApiError> {
        let ticket = {
            let mut st = self
                .statuses
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            st.dirty.insert(name.clone());
            st.last.insert(name, (report, at_ms));
            st.batch
        };
        self.changed();
        self.status_recorded.notify_one();
        let mut flushed = self.status_flushed.subscribe();
        let unavailable = |reason: &str| {
            ApiError::from(StoreError::Unavailable {
                store: "reports".to_owned(),
                reason: reason.to_owned(),
            })
        };
        let done = tokio::time::timeout(
            STATUS_STORED_WAIT,
            flushed.wait_for(|f| f.stored >= ticket || f.failed >= ticket),
        )
        .await
        .map_err(|_| unavailable("the report was not stored in time"))?
        .map_err(|_| unavailable("the control plane is stopping"))?
        .stored
            >= ticket;
        if done {
            Ok(())
        } else {
            Err(unavailable("the report could not be stored"))
        }
    }

    /// Tells the console's live pages that the fleet's status changed.
    pub(crate) fn changed(&self) {
        self.changes.send_modify(|n| *n = n.wrapping_add(1));
    }

    /// A receiver that wakes on each change of the fleet's status.
    pub(crate) fn subscribe_changes(&self) -> watch::Receiver<u64> {
        self.changes.subscribe()
    }

    /// Records the port the embedded broker listens on.
    pub(crate) fn set_broker_port(&self, port: u16) {
        let _ = self.broker_port.set(port);
    }

    /// The port the embedded broker listens on, when there is one.
    pub(crate) fn broker_port(&self) -> Option<u16> {
        self.broker_port.get().copied()
    }

    /// Records that the API is served over TLS.
    pub(crate) fn set_https(&self) {
        let _ = self.https.set(true);
    }

    /// Whether the API is served over TLS.
    pub(crate) fn https(&self) -> bool {
        self.https.get().copied().unwrap_or(false)
    }

    /// Writes the reports received since the last flush, then reads those that other
    /// processes sharing the store received meanwhile, keeping the newer of two reports of a
    /// device (off the async threads).
    ///
    /// The reports taken are those recorded with a ticket up to this write's number; when the
    /// write fails they are written by the next one, and their answers say 503.
    /// Other processes' reports are read only when `read_others`.
    pub(crate) async fn flush_statuses(&self, read_others: bool) -> Result<(), ApiError> {
        let (batch, seen, number): (Vec<(String, StatusReport, u64)>, u64, u64) = {
            let mut st = self
                .statuses
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            let names: Vec<String> = st.dirty.drain().collect();
            let batch = names
                .into_iter()
                .filter_map(|n| st.last.get(&n).map(|(r, at)| (n, r.clone(), *at)))
                .collect();
            let number = st.batch;
            st.batch += 1;
            (batch, st.seen, number)
        };
        let store = self.store.clone();
        let names: Vec<String> = batch.iter().map(|(n, _, _)| n.clone()).collect();
        let written = blocking(move || {
            if !batch.is_empty() {
                store.put_statuses(&batch)?;
            }
            Ok(())
        })
        .await;
        if let Err(e) = written {
            // Written again by the next write (unless a newer report came meanwhile, which is
            // marked anyway).
            self.statuses
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .dirty
                .extend(names);
            self.status_flushed.send_modify(|f| f.failed = number);
            return Err(e);
        }
        self.status_flushed.send_modify(|f| f.stored = number);
        if !read_others {
            return Ok(());
        }
        let store = self.store.clone();
        let others = blocking(move || Ok(store.statuses_since(seen)?)).await?;
        if others.reports.is_empty() && others.last == seen {
            return Ok(());
        }
        let mut newer = false;
        {
            let mut st = self
                .statuses
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            st.seen = st.seen.max(others.last);
            for (name, report, at) in others.reports {
                if st.last.get(&name).is_none_or(|(_, mine)| *mine < at) {
                    st.last.insert(name, (report, at));
                    newer = true;
                }
            }
        }
        if newer {
            self.changed();
        }
        Ok(())
    }

    /// The revision device `name` last reported running.
    pub(crate) fn running_revision(&self, name: &str) -> Option<u64> {
        self.statuses
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .last
            .get(name)
            .and_then(|(r, _)| r.running_revision)
    }

    /// Every device's last report and its time.
    pub(crate) fn status_snapshot(&self) -> HashMap<String, (StatusReport, u64)> {
        self.statuses
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .last
            .clone()
    }

    /// When `name` last reported its status (ms since the Unix epoch), since this process
    /// started or as stored.
    pub(crate) fn last_report_ms(&self, name: &str) -> Option<u64> {
        self.statuses
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .last
            .get(name)
            .map(|(_, at)| *at)
    }

    /// Runs `f` on every device's last report and its time, without copying them (the lock is
    /// held meanwhile: keep `f` short).
    pub(crate) fn with_statuses<T>(
        &self,
        f: impl FnOnce(&HashMap<String, (StatusReport, u64)>) -> T,
    ) -> T {
        f(&self
            .statuses
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .last)
    }

    /// The fleet under the latest revision.
    pub(crate) fn view(&self) -> Arc<FleetView> {
        self.fleet.borrow().clone()
    }

    /// A receiver that sees each new fleet view.
    pub(crate) fn subscribe_view(&self) -> watch::Receiver<Arc<FleetView>> {
        self.fleet.subscribe()
    }

    /// Publishes the view of a newly committed revision to every waiting device.
    pub(crate) fn publish_view(&self, view: FleetView) {
        self.fleet.send_replace(Arc::new(view));
        self.changed();
    }

    /// The latest revision's rollout record, if it has one.
    pub(crate) fn rollout_record(&self) -> Option<RolloutRecord> {
        self.rollout
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
    }

    /// Publishes the view of a newly committed revision with its rollout (`None`: no rollout,
    /// every device takes it), whose baseline is `baseline`. Call it holding the commit lock.
    pub(crate) fn publish_rollout_view(
        &self,
        view: FleetView,
        record: Option<RolloutRecord>,
        baseline: Option<Arc<FleetView>>,
    ) {
        let view = match &record {
            Some(r) => crate::rollout::overlaid(&view, r, baseline.as_ref()),
            None => view,
        };
        *self
            .rollout
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = record;
        self.publish_view(view);
    }

    /// Replaces the latest revision's rollout record (already stored) and serves what it
    /// decides. Call it holding the commit lock.
    pub(crate) fn update_rollout(&self, record: RolloutRecord) {
        let view = self.view();
        if view.revision != record.revision {
            return;
        }
        let baseline = view.overlay.as_ref().map(|o| Arc::clone(&o.baseline));
        let next = crate::rollout::overlaid(&view, &record, baseline.as_ref());
        *self
            .rollout
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = Some(record);
        self.publish_view(next);
    }

    /// Enables the message endpoints (once).
    pub(crate) fn set_messaging(&self, m: Arc<Messaging>) {
        let _ = self.messaging.set(m);
    }

    /// The message machinery, when enabled.
    pub(crate) fn messaging(&self) -> Option<&Arc<Messaging>> {
        self.messaging.get()
    }

    /// Turns true when the server stops.
    pub(crate) fn shutdown_signal(&self) -> watch::Receiver<bool> {
        self.shutdown.clone()
    }

    /// Whether `name` is a registered device or a device of the latest manifest.
    pub(crate) fn is_known_device(&self, name: &str) -> bool {
        self.view().devices.contains_key(name) || self.registry.is_registered(name)
    }

    /// Devices of the latest manifest having all of `labels`, sorted.
    pub(crate) fn devices_with_labels(
        &self,
        labels: &std::collections::BTreeMap<String, String>,
    ) -> Vec<String> {
        let view = self.view();
        let Some(m) = &view.manifest else {
            return Vec::new();
        };
        m.devices
            .iter()
            .filter(|(_, d)| labels.iter().all(|(k, v)| d.labels.get(k) == Some(v)))
            .map(|(n, _)| n.clone())
            .collect()
    }
}

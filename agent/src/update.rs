//! Updates: the state machine that takes the device from its running release to a desired
//! state, the health window that judges the new release, and the rollback.
//!
//! An update, in order: check the device nodes its bindings ask for (a missing one refuses it,
//! nothing switched) → download and verify the missing bundles → extract them safely → write
//! the release → start the new release's triggered instances, warm → record the update as
//! pending → point `previous` at the old release and switch `current` to the new one (one
//! rename, then fsync) → route new events to the new release → stop the old continuous
//! functions and start the new ones → let the old release's in-flight invocations finish, then
//! stop it → health window → keep it (report `running`, collect garbage) or roll back to the
//! previous release (report `rolled_back`, remember the digest as failed). Every update ends in
//! `running`, `rolled_back` or `failed`, with a reason.
//!
//! The health window runs beside the long-poll: a newer desired state that arrives during it
//! supersedes the release in its window (which ends without a verdict), and the release that
//! last passed its window stays the one to roll back to. An empty desired state (revision 0,
//! before the first apply) runs nothing that could be unhealthy and has no window.
//!
//! Every file-system step (fsync, rename, folder removal, the state file) runs on a blocking
//! thread ([`crate::blocking`]): the agent has two async worker threads, and an update must not
//! stall the local endpoint, the local MQTT listener or the link.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use edgefn_runtime::{ContinuousState, LogSink, Sandbox};
use edgefn_schema::api::{DesiredResponse, DeviceState};
use tokio::sync::watch;

use crate::bus::Bus;
use crate::cloud::{CloudClient, CloudError};
use crate::fault::{CrashPoint, Faults};
use crate::layout::{Layout, LayoutError};
use crate::release::RunningRelease;
use crate::report::Reporter;
use crate::secrets::SecretFolders;
use crate::state::{Pending, StateFile};

/// What an update needs; shared by the poll (which starts updates) and the health windows.
#[derive(Debug)]
pub(crate) struct Updater {
    pub(crate) layout: Layout,
    pub(crate) cloud: CloudClient,
    pub(crate) sandbox: Sandbox,
    pub(crate) log: LogSink,
    pub(crate) bus: Arc<Bus>,
    pub(crate) reporter: Arc<Reporter>,
    pub(crate) state: Arc<StateFile>,
    pub(crate) faults: Faults,
    pub(crate) health_window: Duration,
    /// Where the functions' secrets are kept (a memory file system).
    pub(crate) secrets: SecretFolders,
    /// Held by an update from start to end, and by a health window while it keeps or rolls
    /// back its release: one change to the releases at a time.
    changing: tokio::sync::Mutex<()>,
    /// The health window's generation: a switch to a newer release (or shutdown) moves it on,
    /// which ends the window running for the release it supersedes without a verdict.
    window: watch::Sender<u64>,
}

/// How an update ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Outcome {
    /// It reached a final state: switched (its health window runs on), refused or failed.
    Done,
    /// Something outside the release failed (the network, the disk): the old release keeps
    /// running, and the update is tried again later.
    Interrupted,
    /// Refused for something this device lacks that may come (a device node: a camera plugged
    /// in later): reported failed but not remembered as failed, so a newer revision, or the
    /// same one after a restart of the agent, is tried again.
    Refused,
}

impl Updater {
    /// The updater of the data folder `layout`.
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn new(
        layout: Layout,
        cloud: CloudClient,
        sandbox: Sandbox,
        log: LogSink,
        bus: Arc<Bus>,
        reporter: Arc<Reporter>,
        state: Arc<StateFile>,
        faults: Faults,
        health_window: Duration,
        secrets: SecretFolders,
    ) -> Arc<Updater> {
        Arc::new(Updater {
            secrets,
            layout,
            cloud,
            sandbox,
            log,
            bus,
            reporter,
            state,
            faults,
            health_window,
            changing: tokio::sync::Mutex::new(()),
            window: watch::channel(0).0,
        })
    }

    /// Runs `f` on the data folder on a blocking thread.
    async fn disk<T: Send + 'static>(&self, f: impl FnOnce(&Layout) -> T + Send + 'static) -> T {
        let layout = self.layout.clone();
        crate::blocking(move || f(&layout)).await
    }

    async fn save_state(&self) {
        if let Err(e) = self.state.save().await {
            tracing::error!("cannot save the agent's state: {e}");
        }
    }

    /// Starts the release `current` points to, from local state alone. A release left in its
    /// health window by a crash has its window run again.
    pub(crate) async fn boot(self: &Arc<Self>) {
        let Some(current) = self.disk(Layout::current).await else {
            tracing::info!("no release yet: waiting for the first desired state");
            return;
        };
        let pending = self.state.lock().pending.clone();
        // Kept in memory: after a reboot they are fetched again (the cloud must be reachable).
        if let Err(e) = self.secrets.ensure(&self.cloud, &current.state).await {
            tracing::warn!("the current release's secrets: {e}");
        }
        match RunningRelease::start(
            &self.layout,
            current.clone(),
            &self.sandbox,
            &self.log,
            &self.secrets,
        )
        .await
        {
            Ok(release) => {
                tracing::info!(revision = current.revision, digest = %current.digest, "running the current release");
                // Nothing was active: nothing to wait for.
                let _ = self.bus.live().swap(release).await;
                self.hand_over(None).await;
                self.reporter.set(DeviceState::Running, None, None);
                if let Some(p) = pending.filter(|p| p.digest == current.digest) {
                    self.start_health_window(p).await;
                }
            }
            Err(e) => {
                tracing::error!("the current release does not start: {e}");
                if let Some(prev) = self.disk(Layout::previous).await {
                    self.roll_back_to(
                        prev,
                        &current.digest,
                        format!("the release did not start after a restart: {e}"),
                    )
                    .await;
                } else {
                    self.reporter.set(
                        DeviceState::Failed,
                        Some(format!("the current release does not start: {e}")),
                        Some(current.digest),
                    );
                }
            }
        }
    }

    /// Applies a desired state; returns when the update reached a final state, or was
    /// interrupted (see [`Outcome`]).
    ///
    /// A release still in its health window is superseded by the switch: its window ends without
    /// a verdict, and the release that last passed its window stays the one to roll back to.
    /// The new release's health window runs in a task of its own (the caller goes on polling);
    /// an empty desired state needs none.
    pub(crate) async fn update(self: &Arc<Self>, desired: DesiredResponse) -> Outcome {
        let _changing = self.changing.lock().await;
        let digest = desired.digest.clone();
        let revision = desired.revision;
        self.reporter.set(
            DeviceState::Updating,
            Some(format!("updating to revision {revision}")),
            Some(digest.clone()),
        );

        // 0. Device nodes: a release asking for a node this device lacks is refused before
        // anything is downloaded or switched; the running release goes on untouched.
        if let Some(why) = crate::release::missing_devices(&desired) {
            let reason = format!("revision {revision} refused: {why}");
            tracing::error!("{reason}");
            self.reporter
                .set(DeviceState::Failed, Some(reason), Some(digest));
            return Outcome::Refused;
        }

        // 1. Bundles: download what is missing, verify, extract.
        // Dependency layers are bundles too, and models are artifacts: each downloaded once,
        // shared by every function and release that names it.
        let wanted: Vec<String> = desired.state.artifacts();
        let missing: Vec<String> = wanted
            .iter()
            .filter(|b| !self.layout.has_artifact(b))
            .cloned()
            .collect();
        // File models: verified and renamed into place, not extracted.
        let file_models: Vec<String> = desired
            .state
            .models
            .values()
            .filter(|m| m.kind == edgefn_schema::ModelKind::File)
            .map(|m| m.digest.clone())
            .collect();
        if !missing.is_empty() {
            if let Err(e) = self.make_room(&wanted, &missing, &file_models).await {
                // A model larger than the room there is, even after everything else that can
                // go went: refused (the old release keeps running), not retried for ever.
                let models: Vec<String> = desired
                    .state
                    .models
                    .iter()
                    .filter(|(_, m)| missing.contains(&m.digest))
                    .map(|(name, _)| format!("`{name}`"))
                    .collect();
                if e.1 && !models.is_empty() {
                    self.fail(
                        &digest,
                        format!(
                            "revision {revision} refused: what it downloads does not fit on the device (models {}, with its other new archives): {}",
                            models.join(", "),
                            e.0
                        ),
                    )
                    .await;
                    return Outcome::Done;
                }
                return self.interrupted(revision, e.0);
            }
        }
        for b in &missing {
            if file_models.contains(b) {
                if let Err(why) = self.fetch_model_file(b).await {
                    return self.interrupted(revision, why);
                }
                continue;
            }
            if let Err(e) = self.cloud.download(&self.layout, b, self.faults).await {
                // The network or the disk failed: not this release's fault. Keep the old one,
                // try again later.
                let why = if e.is_full() {
                    self.storage_full(&wanted, &missing).await
                } else {
                    e.to_string()
                };
                return self.interrupted(revision, why);
            }
            let name = b.clone();
            let faults = self.faults;
            let installed = self
                .disk(move |layout| layout.install_bundle(&name, || faults.at(CrashPoint::Extract)))
                .await;
            match installed {
                Ok(()) => {}
                Err(e) if e.is_storage() => {
                    let why = if e.is_full() && !matches!(e, LayoutError::NoSpace { .. }) {
                        self.storage_full(&wanted, &missing).await
                    } else {
                        if e.is_full() {
                            self.reclaim(&wanted).await;
                        }
                        e.to_string()
                    };
                    return self.interrupted(revision, why);
                }
                Err(e) => {
                    self.fail(&digest, format!("revision {revision} refused: {e}"))
                        .await;
                    return Outcome::Done;
                }
            }
        }

        // 1b. Secrets: the values of the versions the desired state names, into memory.
        if let Err(e) = self.secrets.ensure(&self.cloud, &desired.state).await {
            if self.secrets.unavailable() {
                self.fail(&digest, format!("revision {revision} refused: {e}"))
                    .await;
                return Outcome::Done;
            }
            return self.interrupted(revision, e);
        }

        // 2. The release, written whole.
        let release = desired.clone();
        let written = self
            .disk(move |l| {
                // Each binding's models folder (links), before its instances start.
                for b in &release.state.bindings {
                    let models = l.binding_models(&release.state, b);
                    if !models.is_empty() {
                        l.model_links(&models)?;
                    }
                }
                l.write_release(&release)
            })
            .await;
        if let Err(e) = written {
            if e.is_storage() {
                if e.is_full() {
                    self.reclaim(&wanted).await;
                }
                return self.interrupted(revision, e.to_string());
            }
            self.fail(&digest, format!("revision {revision}: {e}"))
                .await;
            return Outcome::Done;
        }

        // 3. The new instances, warm, before anything is switched.
        let next = match RunningRelease::start(
            &self.layout,
            desired.clone(),
            &self.sandbox,
            &self.log,
            &self.secrets,
        )
        .await
        {
            Ok(r) => r,
            Err(e) => {
                self.fail(&digest, format!("revision {revision} did not start: {e}"))
                    .await;
                return Outcome::Done;
            }
        };

        // 4. The switch. A release still in its health window is superseded: the rollback
        // target stays the release that last passed its window (`previous` already points there).
        let superseded = self.state.lock().pending.clone();
        let previous = match &superseded {
            Some(p) => p.previous.clone(),
            None => self.bus.live().digest().await,
        };
        self.state.lock().pending = Some(Pending {
            digest: digest.clone(),
            previous: previous.clone(),
        });
        // Without the pending update on disk, a crash after the switch would skip its health
        // window: no switch then (a full disk is retried later).
        if let Err(e) = self.state.save().await {
            self.state.lock().pending = superseded;
            next.stop().await;
            if crate::layout::is_full(&e) {
                self.reclaim(&wanted).await;
            }
            return self.interrupted(
                revision,
                format!("cannot save the agent's state before the switch: {e}"),
            );
        }
        let (faults, target, first) = (self.faults, digest.clone(), superseded.is_none());
        let from = previous.clone();
        let switched = self
            .disk(move |layout| {
                faults.at(CrashPoint::BeforeSwitch);
                let switched = (|| {
                    if let (Some(p), true) = (&from, first) {
                        layout.point("previous", p)?;
                    }
                    layout.point("current", &target)
                })();
                faults.at(CrashPoint::AfterSwitch);
                switched
            })
            .await;
        if let Err(e) = switched {
            next.stop().await;
            self.state.lock().pending = superseded;
            self.save_state().await;
            self.fail(&digest, format!("revision {revision}: cannot switch: {e}"))
                .await;
            return Outcome::Done;
        }
        // The window of a superseded release ends here, without a verdict.
        self.window.send_modify(|g| *g += 1);
        let old = self.bus.live().swap(next).await;
        tracing::info!(revision, %digest, "switched to the new release");
        self.hand_over(old).await;
        // Secrets folders no kept release (this one, the one to roll back to) uses.
        let (secrets, kept) = (self.secrets.clone(), desired.state.clone());
        self.disk(move |layout| {
            let previous = layout.previous();
            let mut keep = vec![&kept];
            if let Some(p) = &previous {
                keep.push(&p.state);
            }
            secrets.prune(&keep);
        })
        .await;

        // 5. The health window, while the caller goes on following the desired state; an empty
        // desired state runs nothing that could be unhealthy and is kept at once.
        if desired.state.functions.is_empty() {
            self.keep(revision).await;
        } else {
            self.start_health_window(Pending { digest, previous }).await;
        }
        Outcome::Done
    }

    /// Reports an update that stopped for a reason outside the release (the network, the
    /// disk), keeping the old release: it is tried again later, never marked failed.
    fn interrupted(&self, revision: u64, why: String) -> Outcome {
        self.reporter.set(
            DeviceState::Running,
            Some(format!(
                "update to revision {revision} interrupted: {why}; will retry"
            )),
            None,
        );
        Outcome::Interrupted
    }

    /// Frees what no release needs, besides the `wanted` bundles; returns the bytes freed.
    async fn reclaim(&self, wanted: &[String]) -> u64 {
        let wanted = wanted.to_vec();
        match self.disk(move |l| l.reclaim(&wanted)).await {
            Ok(freed) => freed,
            Err(e) => {
                tracing::warn!("reclaiming space: {e}");
                0
            }
        }
    }

    /// Downloads a file model (resuming), verifies its digest and renames it into place. A
    /// download whose bytes are not the digest's is removed and fetched again from the first
    /// byte, up to three times; the error says why when it still fails.
    async fn fetch_model_file(&self, digest: &str) -> Result<(), String> {
        let mut last = String::new();
        for attempt in 1..=3 {
            if let Err(e) = self.cloud.download(&self.layout, digest, self.faults).await {
                return Err(e.to_string());
            }
            let d = digest.to_owned();
            match self.disk(move |l| l.install_model_file(&d)).await {
                Ok(()) => return Ok(()),
                Err(e @ LayoutError::Bundle { .. }) => {
                    tracing::warn!("model {digest}: download {attempt} of 3 refused: {e}");
                    last = e.to_string();
                }
                Err(e) => return Err(e.to_string()),
            }
        }
        Err(format!("model {}: {last} (three downloads)", &digest[..12]))
    }

    /// Bytes the `missing` archives need on disk: what is left to download of each, plus (for
    /// a bundle, not a file model, which is renamed into place) at least as much again once
    /// extracted (the exact figure is checked before extraction).
    async fn space_needed(
        &self,
        missing: &[String],
        file_models: &[String],
    ) -> Result<u64, CloudError> {
        let mut need = 0u64;
        for b in missing {
            let size = self.cloud.bundle_size(b).await?;
            need = need.saturating_add(size.saturating_sub(self.layout.partial_bytes(b)));
            if !file_models.contains(b) {
                need = need.saturating_add(size);
            }
        }
        Ok(need)
    }

    /// Checks, before downloading, that the missing archives fit; when they do not, frees what
    /// no release needs (debris, stale downloads, unused bundles) and measures again. The
    /// error says why, and whether it is the room itself (`true`: they do not fit).
    async fn make_room(
        &self,
        wanted: &[String],
        missing: &[String],
        file_models: &[String],
    ) -> Result<(), (String, bool)> {
        let need = self
            .space_needed(missing, file_models)
            .await
            .map_err(|e| (e.to_string(), false))?;
        let free = self
            .disk(Layout::free_bytes)
            .await
            .map_err(|e| (e.to_string(), false))?;
        if free >= need {
            return Ok(());
        }
        let w = wanted.to_vec();
        let freed = self
            .disk(move |l| l.reclaim(&w))
            .await
            .map_err(|e| (e.to_string(), false))?;
        tracing::info!(
            "{}: freed {} of debris, stale downloads and unused bundles",
            crate::layout::need_free(need, free),
            crate::layout::human(freed),
        );
        let free = self
            .disk(Layout::free_bytes)
            .await
            .map_err(|e| (e.to_string(), false))?;
        if free >= need {
            Ok(())
        } else {
            Err((LayoutError::NoSpace { need, free }.to_string(), true))
        }
    }

    /// After a write failed on a full disk: frees what no release needs, and says how much
    /// room the bundles need and how much there is.
    async fn storage_full(&self, wanted: &[String], missing: &[String]) -> String {
        self.reclaim(wanted).await;
        let free = self.disk(Layout::free_bytes).await.unwrap_or(0);
        match self.space_needed(missing, &[]).await {
            Ok(need) => LayoutError::NoSpace { need, free }.to_string(),
            Err(_) => format!(
                "no space left on the device: {} free",
                crate::layout::human(free)
            ),
        }
    }

    /// The active release passed its health window (or needs none): forgets the pending update
    /// and the release before it, collects garbage, reports `running`.
    async fn keep(&self, revision: u64) {
        self.state.lock().pending = None;
        self.save_state().await;
        let collected = self
            .disk(|l| l.forget_previous().and_then(|()| l.collect_garbage()))
            .await;
        if let Err(e) = collected {
            tracing::warn!("garbage collection: {e}");
        }
        self.reporter.set(
            DeviceState::Running,
            Some(format!("running revision {revision}")),
            None,
        );
    }

    /// Starts the health window of a freshly switched release, in a task of its own: it keeps
    /// the release or rolls it back, unless a newer switch (or shutdown) supersedes it first.
    async fn start_health_window(self: &Arc<Self>, pending: Pending) {
        let revision = self
            .bus
            .live()
            .get()
            .await
            .map_or(0, |r| r.desired.revision);
        self.reporter.set(
            DeviceState::Updating,
            Some(format!("revision {revision}: in its health window")),
            Some(pending.digest.clone()),
        );
        let generation = *self.window.borrow();
        let mut superseded = self.window.subscribe();
        let me = self.clone();
        tokio::spawn(async move {
            let verdict = tokio::select! {
                v = me.watch_health() => v,
                _ = superseded.wait_for(|g| *g != generation) => return,
            };
            let _changing = me.changing.lock().await;
            if *me.window.borrow() != generation {
                return;
            }
            me.health_verdict(pending, revision, verdict).await;
        });
    }

    /// Ends a health window: keeps the release, or rolls it back for `verdict`.
    async fn health_verdict(
        self: &Arc<Self>,
        pending: Pending,
        revision: u64,
        verdict: Option<String>,
    ) {
        match verdict {
            None => self.keep(revision).await,
            Some(reason) => {
                let prev = match pending.previous {
                    Some(_) => self.disk(Layout::previous).await,
                    None => None,
                };
                let Some(prev) = prev else {
                    return self.fail(&pending.digest, format!("revision {revision} is unhealthy ({reason}) and there is no previous release")).await;
                };
                self.roll_back_to(
                    prev,
                    &pending.digest,
                    format!("revision {revision} rolled back: {reason}"),
                )
                .await;
            }
        }
    }

    /// Watches the active release for the health window. Unhealthy: a continuous function that
    /// exits during the window (even once, even if it came back since), or is in backoff or a
    /// crash loop. Woken by each change of a continuous function's state, not by polling.
    async fn watch_health(&self) -> Option<String> {
        let release = self.bus.live().get().await?;
        // A binding that could not start for want of a device node (a release started again at
        // boot on a device that lost a node since; an update refuses such a release before its
        // switch) fails the window at once.
        if let Some((binding, why)) = release.unavailable().iter().next() {
            return Some(format!("binding `{binding}` cannot start: {why}"));
        }
        let deadline = tokio::time::Instant::now() + self.health_window;
        let restarts = |st: &ContinuousState| match st {
            ContinuousState::Starting { restarts }
            | ContinuousState::Running { restarts, .. }
            | ContinuousState::Backoff { restarts, .. }
            | ContinuousState::CrashLoop { restarts, .. } => *restarts,
            ContinuousState::Stopped { .. } => 0,
        };
        let mut watched: Vec<(String, watch::Receiver<ContinuousState>, u32)> = release
            .continuous_watches()
            .await
            .into_iter()
            .map(|(b, rx)| {
                let at_start = restarts(&rx.borrow());
                (b, rx, at_start)
            })
            .collect();
        drop(release);
        let mut last_reason: HashMap<String, String> = HashMap::new();
        loop {
            for (binding, rx, at_start) in &mut watched {
                let st = rx.borrow_and_update().clone();
                if let ContinuousState::Backoff { reason, .. }
                | ContinuousState::CrashLoop { reason, .. } = &st
                {
                    last_reason.insert(binding.clone(), reason.clone());
                }
                let exited = restarts(&st).saturating_sub(*at_start);
                if exited > 0
                    || matches!(
                        st,
                        ContinuousState::Backoff { .. } | ContinuousState::CrashLoop { .. }
                    )
                {
                    let why = last_reason
                        .get(binding.as_str())
                        .cloned()
                        .unwrap_or_else(|| "it exited".to_owned());
                    return Some(format!(
                        "continuous function `{binding}` exited during the health window ({why})"
                    ));
                }
            }
            // A supervisor that ended sends nothing more: it is no longer watched.
            let changed = async {
                let mut waits: Vec<_> = watched
                    .iter_mut()
                    .enumerate()
                    .map(|(i, (_, rx, _))| Box::pin(async move { (i, rx.changed().await) }))
                    .collect();
                if waits.is_empty() {
                    return std::future::pending().await;
                }
                std::future::poll_fn(|cx| {
                    for w in &mut waits {
                        if let std::task::Poll::Ready(r) = w.as_mut().poll(cx) {
                            return std::task::Poll::Ready(r);
                        }
                    }
                    std::task::Poll::Pending
                })
                .await
            };
            tokio::select! {
                (i, r) = changed => {
                    if r.is_err() {
                        watched.swap_remove(i);
                    }
                }
                () = tokio::time::sleep_until(deadline) => return None,
            }
        }
    }

    /// After a switch: stops the outgoing release, and starts the active one's continuous
    /// functions once the outgoing ones stopped (they are singletons), except those that run
    /// exactly the same thing in both releases: those go on without a restart.
    async fn hand_over(self: &Arc<Self>, old: Option<RunningRelease>) {
        let active = self.bus.live().get().await;
        let mut kept = std::collections::BTreeMap::new();
        if let Some(old) = old {
            let outgoing = old.take_continuous().await;
            let unchanged = active
                .as_ref()
                .map(|a| a.unchanged(&outgoing))
                .unwrap_or_default();
            for (name, _, c) in outgoing {
                if unchanged.contains(&name) {
                    kept.insert(name, c);
                } else {
                    c.stop().await;
                }
            }
            old.stop().await;
        }
        if let Some(active) = active {
            if let Err(e) = active
                .start_continuous(
                    &self.layout,
                    &self.sandbox,
                    &self.log,
                    &self.bus.message_sink(),
                    kept,
                )
                .await
            {
                tracing::error!("{e}");
            }
        }
    }

    async fn roll_back_to(self: &Arc<Self>, prev: DesiredResponse, failed: &str, reason: String) {
        let digest = prev.digest.clone();
        if let Err(e) = self.secrets.ensure(&self.cloud, &prev.state).await {
            tracing::warn!("the previous release's secrets: {e}");
        }
        match RunningRelease::start(&self.layout, prev, &self.sandbox, &self.log, &self.secrets)
            .await
        {
            Ok(release) => {
                if let Err(e) = self.disk(move |l| l.point("current", &digest)).await {
                    release.stop().await;
                    return self
                        .fail(failed, format!("{reason}; and the rollback failed: {e}"))
                        .await;
                }
                let bad = self.bus.live().swap(release).await;
                self.hand_over(bad).await;
                {
                    let mut st = self.state.lock();
                    st.pending = None;
                    st.failed.insert(failed.to_owned());
                }
                self.save_state().await;
                let _ = self.disk(Layout::forget_previous).await;
                self.reporter.set(
                    DeviceState::RolledBack,
                    Some(reason),
                    Some(failed.to_owned()),
                );
            }
            Err(e) => {
                self.fail(
                    failed,
                    format!("{reason}; the previous release did not start either: {e}"),
                )
                .await;
            }
        }
    }

    async fn fail(&self, digest: &str, reason: String) {
        self.state.lock().failed.insert(digest.to_owned());
        self.save_state().await;
        tracing::error!("{reason}");
        self.reporter
            .set(DeviceState::Failed, Some(reason), Some(digest.to_owned()));
    }

    /// Stops the running release. A health window in progress ends without a verdict (it is
    /// run again at the next start) and lets go of the release.
    pub(crate) async fn shutdown(&self) {
        self.window.send_modify(|g| *g += 1);
        if let Some(r) = self.bus.live().take().await {
            r.stop().await;
        }
    }
}

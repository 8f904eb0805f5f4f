//! The agent: runs its current release from local state (with or without a network), follows
//! its desired state, and updates with an atomic switchover and a health-gated rollback.
//!
//! An update, in order: download and verify the missing bundles → extract them safely → write
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
//! before the first apply) runs nothing that could be unhealthy and has no window. After a
//! refused revision the agent long-polls again at once, for a desired state other than the
//! refused one.

use std::sync::Arc;
use std::time::Duration;

use edgefn_runtime::{
    ContinuousState, Event, InvokeError, LogSink, MessageSink, Payload, Reply, Sandbox,
};
use edgefn_schema::api::{DesiredResponse, DeviceState, StatusReport};
use tokio::sync::{Notify, RwLock, watch};

use crate::cloud::{CloudClient, CloudError};
use crate::config::AgentConfig;
use crate::layout::{Layout, LayoutError};
use crate::release::RunningRelease;
use crate::state::{AgentState, Pending};

/// Why the agent stopped.
#[derive(Debug, thiserror::Error)]
pub enum AgentError {
    /// The data folder is unusable.
    #[error(transparent)]
    Layout(#[from] crate::layout::LayoutError),
    /// The cloud refused the token.
    #[error(transparent)]
    Rejected(CloudError),
    /// The sandbox cannot be set up.
    #[error("sandbox: {0}")]
    Sandbox(String),
    /// The control plane's CA cannot be used.
    #[error("{0}")]
    Tls(String),
    /// The outbox cannot be opened.
    #[error("{0}")]
    Outbox(String),
    /// The local endpoint cannot listen.
    #[error("cannot listen on {addr}: {source}")]
    Listen {
        /// Where.
        addr: std::net::SocketAddr,
        /// Why.
        source: std::io::Error,
    },
}

/// What the agent last reported, or will.
#[derive(Debug, Clone)]
struct Reported {
    state: DeviceState,
    message: Option<String>,
    target: Option<String>,
}

/// The running agent.
pub struct Agent {
    config: AgentConfig,
    layout: Layout,
    cloud: CloudClient,
    sandbox: Sandbox,
    log: LogSink,
    active: RwLock<Option<Arc<RunningRelease>>>,
    reported: std::sync::Mutex<Reported>,
    report_now: Notify,
    state: std::sync::Mutex<AgentState>,
    /// Messages bound for the cloud.
    pub outbox: crate::outbox::Outbox,
    /// The largest packet the cloud's broker takes (learned by the link).
    pub limit: Arc<crate::uplink::PacketLimit>,
    /// Told of every invocation of a triggered function (`edgefn dev` shows them).
    invocations: std::sync::OnceLock<crate::InvocationHook>,
    /// The MQTT link's state, once the link is started (reported in the status).
    pub link: std::sync::OnceLock<Arc<crate::uplink::LinkState>>,
    /// The filters of the active release's routes to the cloud, for checks that cannot wait
    /// for the release's lock (the local MQTT listener's).
    up_filters: std::sync::RwLock<Vec<String>>,
    /// The local MQTT listener, once it is started: bus messages are delivered to its clients.
    local_mqtt: std::sync::OnceLock<Arc<crate::local_mqtt::LocalBroker>>,
    /// Held by an update from start to end, and by a health window while it keeps or rolls
    /// back its release: one change to the releases at a time.
    changing: tokio::sync::Mutex<()>,
    /// The health window's generation: a switch to a newer release (or shutdown) moves it on,
    /// which ends the window running for the release it supersedes without a verdict.
    window: watch::Sender<u64>,
}

impl std::fmt::Debug for Agent {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Agent")
            .field("device", &self.config.device)
            .finish_non_exhaustive()
    }
}

/// The result of one delivery to one binding.
#[derive(Debug)]
pub struct Delivery {
    /// The binding.
    pub binding: String,
    /// What it answered.
    pub outcome: Result<Reply, InvokeError>,
}

fn lock<T>(m: &std::sync::Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// A payload as bytes on the wire: JSON text, or the bytes themselves.
fn payload_bytes(payload: &Payload) -> Vec<u8> {
    match payload {
        Payload::Json(v) => serde_json::to_vec(v).unwrap_or_default(),
        Payload::Bytes(b) => b.clone(),
    }
}

/// The crash tests' hook: SIGKILL this process when `point` is the configured one.
pub fn crash_point(config: &AgentConfig, point: &str) {
    if config.crash_at.as_deref() == Some(point) {
        tracing::warn!("crash point `{point}`: killing myself with SIGKILL");
        let _ = std::process::Command::new("kill")
            .args(["-KILL", &std::process::id().to_string()])
            .status();
        // SIGKILL is delivered before `kill` returns; never go on.
        std::process::abort();
    }
}

/// Exponential backoff with jitter: a down cloud is never hammered, and a fleet that lost it
/// together does not come back in step.
/// How often the report loop looks for a change to report: a status change reaches the cloud
/// within this long, not a whole `reportInterval` later.
const CHANGE_CHECK: Duration = Duration::from_secs(1);

pub(crate) fn backoff(attempt: u32) -> Duration {
    let base = Duration::from_secs(1)
        .saturating_mul(1 << attempt.min(6))
        .min(Duration::from_secs(60));
    let jitter = getrandom::u64().unwrap_or(0) % (base.as_millis() as u64 / 2 + 1);
    base / 2 + Duration::from_millis(jitter)
}

impl Agent {
    /// Opens the data folder and sets up the sandbox.
    pub fn new(
        config: AgentConfig,
        sandbox: Sandbox,
        log: LogSink,
    ) -> Result<Arc<Agent>, AgentError> {
        let layout = Layout::open(&config.data)?;
        let outbox = crate::outbox::Outbox::open(&config.data.join("outbox.redb"), config.outbox)
            .map_err(|e| AgentError::Outbox(e.to_string()))?;
        let cloud = CloudClient::new(
            &config.cloud,
            &config.device,
            &config.token,
            config.cloud_ca.as_deref(),
        )
        .map_err(AgentError::Tls)?;
        let state = AgentState::load(&config.data);
        let limit = Arc::new(crate::uplink::PacketLimit::new(
            &config.device,
            config.mqtt_max_packet,
        ));
        Ok(Arc::new(Agent {
            limit,
            invocations: std::sync::OnceLock::new(),
            link: std::sync::OnceLock::new(),
            up_filters: std::sync::RwLock::new(Vec::new()),
            config,
            layout,
            cloud,
            sandbox,
            log,
            active: RwLock::new(None),
            reported: std::sync::Mutex::new(Reported {
                state: DeviceState::Running,
                message: None,
                target: None,
            }),
            report_now: Notify::new(),
            state: std::sync::Mutex::new(state),
            outbox,
            local_mqtt: std::sync::OnceLock::new(),
            changing: tokio::sync::Mutex::new(()),
            window: watch::channel(0).0,
        }))
    }

    /// Delivers a message that came down from the cloud to the local bus, when a route
    /// (`from: "cloud:FILTER"`, `to: local`) lets it.
    pub async fn deliver_down(self: &Arc<Self>, topic: &str, payload: Vec<u8>) {
        let allowed = self.active.read().await.as_ref().is_some_and(|r| {
            r.desired.state.routes.iter().any(|route| {
                route.to == edgefn_schema::RouteTarget::Local
                    && edgefn_schema::topic::matches(&route.filter, topic)
            })
        });
        if !allowed {
            tracing::debug!(
                topic,
                "a message from the cloud that no route brings down: dropped"
            );
            return;
        }
        let payload = Payload::from_message(payload);
        if let Err(e) = self.publish(topic, payload).await {
            tracing::warn!("a message from the cloud was not put on the bus: {e}");
        }
    }

    fn save_state(&self) {
        if let Err(e) = self.try_save_state() {
            tracing::error!("cannot save the agent's state: {e}");
        }
    }

    fn try_save_state(&self) -> std::io::Result<()> {
        let st = lock(&self.state).clone();
        st.save(&self.config.data)
    }

    fn set_reported(&self, state: DeviceState, message: Option<String>, target: Option<String>) {
        match &message {
            Some(m) => tracing::info!(state = ?state, "{m}"),
            None => tracing::info!(state = ?state, "state"),
        }
        *lock(&self.reported) = Reported {
            state,
            message,
            target,
        };
        self.report_now.notify_one();
    }

    /// The digest of the release running now.
    pub async fn current_digest(&self) -> Option<String> {
        self.active
            .read()
            .await
            .as_ref()
            .map(|r| r.digest().to_owned())
    }

    /// Starts the release `current` points to, from local state alone. A release left in its
    /// health window by a crash has its window run again.
    pub async fn boot(self: &Arc<Self>) {
        let Some(current) = self.layout.current() else {
            tracing::info!("no release yet: waiting for the first desired state");
            return;
        };
        let pending = lock(&self.state).pending.clone();
        match RunningRelease::start(&self.layout, current.clone(), &self.sandbox, &self.log).await {
            Ok(release) => {
                tracing::info!(revision = current.revision, digest = %current.digest, "running the current release");
                let release = Arc::new(release);
                self.set_up_filters(&release);
                *self.active.write().await = Some(release.clone());
                if let Err(e) = release
                    .start_continuous(
                        &self.layout,
                        &self.sandbox,
                        &self.log,
                        &self.message_sink(),
                        Default::default(),
                    )
                    .await
                {
                    tracing::error!("{e}");
                }
                self.set_reported(DeviceState::Running, None, None);
                if let Some(p) = pending.filter(|p| p.digest == current.digest) {
                    self.start_health_window(p).await;
                }
            }
            Err(e) => {
                tracing::error!("the current release does not start: {e}");
                if let Some(prev) = self.layout.previous() {
                    self.roll_back_to(
                        prev,
                        &current.digest,
                        format!("the release did not start after a restart: {e}"),
                    )
                    .await;
                } else {
                    self.set_reported(
                        DeviceState::Failed,
                        Some(format!("the current release does not start: {e}")),
                        Some(current.digest),
                    );
                }
            }
        }
    }

    /// Puts a message on the device bus and waits for every binding it triggers: first it is
    /// queued for the cloud when a route sends it there (durably), then delivered. The messages
    /// the functions publish go the same way (queued before this returns, delivered after).
    ///
    /// A message routed to the cloud that is larger than the cloud's broker takes is refused
    /// here, whole: not queued, not delivered.
    pub async fn publish(
        self: &Arc<Self>,
        topic: &str,
        payload: Payload,
    ) -> Result<Vec<Delivery>, crate::uplink::TooLarge> {
        self.check_up(topic, &payload)?;
        self.route_up(topic, &payload).await;
        self.echo_local(topic, &payload);
        Ok(self.dispatch(topic, payload, 0).await)
    }

    /// Refuses a message that a route of the active release sends to the cloud and that is
    /// larger than the cloud's broker takes; `len` is its payload's size in bytes.
    pub fn too_large_up(&self, topic: &str, len: usize) -> Result<(), crate::uplink::TooLarge> {
        match self.limit.check(topic, len) {
            Ok(()) => Ok(()),
            Err(e) => {
                let filters = self
                    .up_filters
                    .read()
                    .unwrap_or_else(std::sync::PoisonError::into_inner);
                if filters
                    .iter()
                    .any(|f| edgefn_schema::topic::matches(f, topic))
                {
                    Err(e)
                } else {
                    Ok(())
                }
            }
        }
    }

    fn check_up(&self, topic: &str, payload: &Payload) -> Result<(), crate::uplink::TooLarge> {
        let len = match payload {
            Payload::Bytes(b) => b.len(),
            Payload::Json(v) => serde_json::to_vec(v).map_or(0, |b| b.len()),
        };
        self.too_large_up(topic, len)
    }

    fn set_up_filters(&self, release: &RunningRelease) {
        let filters = release
            .desired
            .state
            .routes
            .iter()
            .filter(|r| r.to == edgefn_schema::RouteTarget::Cloud)
            .map(|r| r.filter.clone())
            .collect();
        *self
            .up_filters
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = filters;
    }

    /// Delivers the local MQTT listener's bus messages to its clients from now on.
    pub fn attach_local_mqtt(&self, broker: Arc<crate::local_mqtt::LocalBroker>) {
        let _ = self.local_mqtt.set(broker);
    }

    /// Hands a bus message to the local MQTT clients subscribed to it.
    fn echo_local(&self, topic: &str, payload: &Payload) {
        if let Some(b) = self.local_mqtt.get() {
            crate::local_mqtt::echo(b, topic, payload);
        }
    }

    /// Messages local MQTT clients published, in order: like [`Agent::accept`] (those a route
    /// sends up are queued for the cloud, in one commit, before this returns), but not handed
    /// back to the local clients (the broker delivered them).
    pub async fn accept_from_local_clients(self: &Arc<Self>, messages: Vec<(String, Payload)>) {
        let refs: Vec<(&str, &Payload)> = messages.iter().map(|(t, p)| (t.as_str(), p)).collect();
        self.queue_up(&refs).await;
        for (topic, payload) in messages {
            let me = self.clone();
            tokio::spawn(async move {
                me.dispatch(&topic, payload, 0).await;
            });
        }
    }

    /// Like [`Agent::publish`], but returns once the message is accepted (queued for the cloud
    /// when a route says so); the functions run afterwards. Messages accepted one after another
    /// reach the cloud in that order.
    /// A message too large for the cloud is refused, as by [`Agent::publish`].
    pub async fn accept(
        self: &Arc<Self>,
        topic: &str,
        payload: Payload,
    ) -> Result<(), crate::uplink::TooLarge> {
        self.check_up(topic, &payload)?;
        self.route_up(topic, &payload).await;
        self.echo_local(topic, &payload);
        let me = self.clone();
        let topic = topic.to_owned();
        tokio::spawn(async move {
            me.dispatch(&topic, payload, 0).await;
        });
        Ok(())
    }

    /// Queues `payload` for the cloud when a route of the active release sends `topic` up;
    /// returns once it is on disk.
    async fn route_up(&self, topic: &str, payload: &Payload) {
        self.queue_up(&[(topic, payload)]).await;
    }

    /// Queues, in one outbox commit, those of `messages` a route of the active release sends
    /// to the cloud; returns once they are on disk.
    async fn queue_up(&self, messages: &[(&str, &Payload)]) {
        let up: Vec<(String, Vec<u8>)> = match self.active.read().await.as_ref() {
            Some(release) => messages
                .iter()
                .filter(|(topic, _)| release.routes_up(topic))
                .map(|(topic, payload)| ((*topic).to_owned(), payload_bytes(payload)))
                .collect(),
            None => return,
        };
        if up.is_empty() {
            return;
        }
        if let Err(e) = self.outbox.push(up).await {
            tracing::error!("messages for the cloud could not be queued: {e}");
        }
    }

    /// Tells `hook` of every invocation from now on (once; a second hook is ignored).
    pub fn on_invocation(&self, hook: crate::InvocationHook) {
        let _ = self.invocations.set(hook);
    }

    fn dispatch<'a>(
        self: &'a Arc<Self>,
        topic: &'a str,
        payload: Payload,
        depth: u32,
    ) -> std::pin::Pin<Box<dyn std::future::Future<Output = Vec<Delivery>> + Send + 'a>> {
        Box::pin(async move {
            // The Arc is taken under the read lock: once a switch has swapped the release, no
            // new event reaches the old one, and the old one is stopped only after every event
            // that did reach it has finished.
            let Some(release) = self.active.read().await.clone() else {
                return Vec::new();
            };
            let event = Event {
                topic: topic.to_owned(),
                payload,
            };
            let bindings = release.matching(topic);
            let mut handles = Vec::new();
            for b in bindings {
                let (release, event) = (release.clone(), event.clone());
                let hook = self.invocations.get().cloned();
                handles.push(tokio::spawn(async move {
                    let started = std::time::Instant::now();
                    let outcome = release.invoke(&b, &event).await;
                    if let Some(hook) = hook {
                        hook(&crate::Invocation {
                            function: release.function_of(&b).unwrap_or_default(),
                            binding: b.clone(),
                            topic: event.topic.clone(),
                            outcome: outcome.as_ref().map(|_| ()).map_err(|e| e.to_string()),
                            duration: started.elapsed(),
                        });
                    }
                    Delivery {
                        binding: b,
                        outcome,
                    }
                }));
            }
            drop(release);
            let mut out = Vec::new();
            for h in handles {
                if let Ok(mut d) = h.await {
                    // A function's messages are published whole or not at all: one too large
                    // for the cloud fails the invocation.
                    let refused = d.outcome.as_ref().ok().and_then(|reply| {
                        reply
                            .publish
                            .iter()
                            .find_map(|m| self.check_up(&m.topic, &m.payload).err())
                    });
                    if let Some(e) = refused {
                        tracing::error!(binding = %d.binding, "{e}");
                        d.outcome = Err(InvokeError::Handler(edgefn_runtime::HandlerError {
                            kind: "MessageTooLarge".into(),
                            message: format!("nothing it published was sent: {e}"),
                            traceback: None,
                        }));
                    }
                    out.push(d);
                }
            }
            // What the functions published: queued for the cloud now, in order, then back on
            // the bus (bounded against loops).
            for d in &out {
                if let Ok(reply) = &d.outcome {
                    for m in &reply.publish {
                        self.route_up(&m.topic, &m.payload).await;
                        self.echo_local(&m.topic, &m.payload);
                        if depth < 8 {
                            let me = self.clone();
                            let (t, p) = (m.topic.clone(), m.payload.clone());
                            tokio::spawn(async move {
                                me.dispatch(&t, p, depth + 1).await;
                            });
                        }
                    }
                }
            }
            out
        })
    }

    /// Makes `next` the active release; returns the old one once no event is in flight on it.
    async fn swap(&self, next: RunningRelease) -> Option<RunningRelease> {
        self.set_up_filters(&next);
        let old = self.active.write().await.replace(Arc::new(next));
        let mut old = old?;
        loop {
            match Arc::try_unwrap(old) {
                Ok(r) => return Some(r),
                Err(still_shared) => {
                    old = still_shared;
                    tokio::time::sleep(Duration::from_millis(2)).await;
                }
            }
        }
    }

    /// Applies a desired state. Returns when the update reached a final state.
    /// Returns false when the update was interrupted (a download failed) and should be tried
    /// again later.
    ///
    /// A release still in its health window is superseded by the switch: its window ends without
    /// a verdict, and the release that last passed its window stays the one to roll back to.
    /// The new release's health window runs in a task of its own (the caller goes on polling);
    /// an empty desired state needs none.
    pub async fn update(self: &Arc<Self>, desired: DesiredResponse) -> bool {
        let _changing = self.changing.lock().await;
        let digest = desired.digest.clone();
        let revision = desired.revision;
        self.set_reported(
            DeviceState::Updating,
            Some(format!("updating to revision {revision}")),
            Some(digest.clone()),
        );

        // 1. Bundles: download what is missing, verify, extract.
        let mut wanted: Vec<String> = desired
            .state
            .functions
            .values()
            .filter_map(|f| f.bundle.clone())
            .collect();
        wanted.sort();
        wanted.dedup();
        let missing: Vec<String> = wanted
            .iter()
            .filter(|b| !self.layout.has_bundle(b))
            .cloned()
            .collect();
        if !missing.is_empty() {
            if let Err(e) = self.make_room(&wanted, &missing).await {
                return self.interrupted(revision, e);
            }
        }
        for b in &missing {
            if let Err(e) = self.cloud.download(&self.layout, b, &self.config).await {
                // The network or the disk failed: not this release's fault. Keep the old one,
                // try again later.
                let why = if e.is_full() {
                    self.storage_full(&wanted, &missing).await
                } else {
                    e.to_string()
                };
                return self.interrupted(revision, why);
            }
            let layout = self.layout.clone();
            let name = b.clone();
            let config = self.config.clone();
            let installed = tokio::task::spawn_blocking(move || {
                layout.install_bundle(&name, || crash_point(&config, "extract"))
            })
            .await;
            match installed {
                Ok(Ok(())) => {}
                Ok(Err(e)) if e.is_storage() => {
                    let why = if e.is_full() && !matches!(e, LayoutError::NoSpace { .. }) {
                        self.storage_full(&wanted, &missing).await
                    } else {
                        if e.is_full() {
                            let _ = self.layout.reclaim(&wanted);
                        }
                        e.to_string()
                    };
                    return self.interrupted(revision, why);
                }
                Ok(Err(e)) => {
                    self.fail(&digest, format!("revision {revision} refused: {e}"));
                    return true;
                }
                Err(e) => {
                    self.fail(
                        &digest,
                        format!("revision {revision}: extraction failed: {e}"),
                    );
                    return true;
                }
            }
        }

        // 2. The release, written whole.
        if let Err(e) = self.layout.write_release(&desired) {
            if e.is_storage() {
                if e.is_full() {
                    let _ = self.layout.reclaim(&wanted);
                }
                return self.interrupted(revision, e.to_string());
            }
            self.fail(&digest, format!("revision {revision}: {e}"));
            return true;
        }

        // 3. The new instances, warm, before anything is switched.
        let next =
            match RunningRelease::start(&self.layout, desired.clone(), &self.sandbox, &self.log)
                .await
            {
                Ok(r) => r,
                Err(e) => {
                    self.fail(&digest, format!("revision {revision} did not start: {e}"));
                    return true;
                }
            };

        // 4. The switch. A release still in its health window is superseded: the rollback
        // target stays the release that last passed its window (`previous` already points there).
        let superseded = lock(&self.state).pending.clone();
        let previous = match &superseded {
            Some(p) => p.previous.clone(),
            None => self.current_digest().await,
        };
        lock(&self.state).pending = Some(Pending {
            digest: digest.clone(),
            previous: previous.clone(),
        });
        // Without the pending update on disk, a crash after the switch would skip its health
        // window: no switch then (a full disk is retried later).
        if let Err(e) = self.try_save_state() {
            lock(&self.state).pending = superseded;
            next.stop().await;
            if crate::layout::is_full(&e) {
                let _ = self.layout.reclaim(&wanted);
            }
            return self.interrupted(
                revision,
                format!("cannot save the agent's state before the switch: {e}"),
            );
        }
        crash_point(&self.config, "before-switch");
        let switched = (|| {
            if let (Some(p), None) = (&previous, &superseded) {
                self.layout.point("previous", p)?;
            }
            self.layout.point("current", &digest)
        })();
        crash_point(&self.config, "after-switch");
        if let Err(e) = switched {
            next.stop().await;
            lock(&self.state).pending = superseded;
            self.save_state();
            {
                self.fail(&digest, format!("revision {revision}: cannot switch: {e}"));
                return true;
            }
        }
        // The window of a superseded release ends here, without a verdict.
        self.window.send_modify(|g| *g += 1);
        let old = self.swap(next).await;
        tracing::info!(revision, %digest, "switched to the new release");
        self.hand_over(old).await;

        // 5. The health window, while the caller goes on following the desired state; an empty
        // desired state runs nothing that could be unhealthy and is kept at once.
        if desired.state.functions.is_empty() {
            self.keep(revision);
        } else {
            self.start_health_window(Pending { digest, previous }).await;
        }
        true
    }

    /// Reports an update that stopped for a reason outside the release (the network, the
    /// disk), keeping the old release: it is tried again later, never marked failed.
    fn interrupted(&self, revision: u64, why: String) -> bool {
        self.set_reported(
            DeviceState::Running,
            Some(format!(
                "update to revision {revision} interrupted: {why}; will retry"
            )),
            None,
        );
        false
    }

    /// Bytes the `missing` bundles need on disk: what is left to download of each, plus at
    /// least as much again once extracted (the exact figure is checked before extraction).
    async fn space_needed(&self, missing: &[String]) -> Result<u64, CloudError> {
        let mut need = 0u64;
        for b in missing {
            let size = self.cloud.bundle_size(b).await?;
            need = need
                .saturating_add(size.saturating_sub(self.layout.partial_bytes(b)))
                .saturating_add(size);
        }
        Ok(need)
    }

    /// Checks, before downloading, that the missing bundles fit; when they do not, frees what
    /// no release needs (debris, stale downloads, unused bundles) and measures again.
    async fn make_room(&self, wanted: &[String], missing: &[String]) -> Result<(), String> {
        let need = self
            .space_needed(missing)
            .await
            .map_err(|e| e.to_string())?;
        let free = self.layout.free_bytes().map_err(|e| e.to_string())?;
        if free >= need {
            return Ok(());
        }
        let freed = self.layout.reclaim(wanted).map_err(|e| e.to_string())?;
        tracing::info!(
            "{}: freed {} of debris, stale downloads and unused bundles",
            crate::layout::need_free(need, free),
            crate::layout::human(freed),
        );
        let free = self.layout.free_bytes().map_err(|e| e.to_string())?;
        if free >= need {
            Ok(())
        } else {
            Err(LayoutError::NoSpace { need, free }.to_string())
        }
    }

    /// After a write failed on a full disk: frees what no release needs, and says how much
    /// room the bundles need and how much there is.
    async fn storage_full(&self, wanted: &[String], missing: &[String]) -> String {
        let _ = self.layout.reclaim(wanted);
        let free = self.layout.free_bytes().unwrap_or(0);
        match self.space_needed(missing).await {
            Ok(need) => LayoutError::NoSpace { need, free }.to_string(),
            Err(_) => format!(
                "no space left on the device: {} free",
                crate::layout::human(free)
            ),
        }
    }

    /// The active release passed its health window (or needs none): forgets the pending update
    /// and the release before it, collects garbage, reports `running`.
    fn keep(&self, revision: u64) {
        lock(&self.state).pending = None;
        self.save_state();
        if let Err(e) = self
            .layout
            .forget_previous()
            .and_then(|()| self.layout.collect_garbage())
        {
            tracing::warn!("garbage collection: {e}");
        }
        self.set_reported(
            DeviceState::Running,
            Some(format!("running revision {revision}")),
            None,
        );
    }

    /// Starts the health window of a freshly switched release, in a task of its own: it keeps
    /// the release or rolls it back, unless a newer switch (or shutdown) supersedes it first.
    async fn start_health_window(self: &Arc<Self>, pending: Pending) {
        let revision = self
            .active
            .read()
            .await
            .as_ref()
            .map_or(0, |r| r.desired.revision);
        self.set_reported(
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
            None => self.keep(revision),
            Some(reason) => {
                let Some(prev) = pending
                    .previous
                    .as_ref()
                    .and_then(|_| self.layout.previous())
                else {
                    return self.fail(&pending.digest, format!("revision {revision} is unhealthy ({reason}) and there is no previous release"));
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

    /// Watches the active release for the health window. Unhealthy: a continuous function in a
    /// crash loop, restarted more than twice, or not running when the window ends.
    async fn watch_health(&self) -> Option<String> {
        let release = self.active.read().await.clone()?;
        let deadline = tokio::time::Instant::now() + self.config.health_window;
        let restarts = |st: &ContinuousState| match st {
            ContinuousState::Starting { restarts }
            | ContinuousState::Running { restarts, .. }
            | ContinuousState::Backoff { restarts, .. }
            | ContinuousState::CrashLoop { restarts, .. } => *restarts,
            ContinuousState::Stopped { .. } => 0,
        };
        let at_start: std::collections::HashMap<String, u32> = release
            .continuous_states()
            .await
            .iter()
            .map(|(b, st)| (b.clone(), restarts(st)))
            .collect();
        // A continuous function that exits during the window (even once, even if it came back
        // since) makes the release unhealthy: the previous one did not do that.
        let mut last_reason: std::collections::HashMap<String, String> =
            std::collections::HashMap::new();
        loop {
            for (binding, st) in release.continuous_states().await {
                if let ContinuousState::Backoff { reason, .. }
                | ContinuousState::CrashLoop { reason, .. } = &st
                {
                    last_reason.insert(binding.clone(), reason.clone());
                }
                let exited =
                    restarts(&st).saturating_sub(at_start.get(&binding).copied().unwrap_or(0));
                if exited > 0
                    || matches!(
                        st,
                        ContinuousState::Backoff { .. } | ContinuousState::CrashLoop { .. }
                    )
                {
                    let why = last_reason
                        .get(&binding)
                        .cloned()
                        .unwrap_or_else(|| "it exited".to_owned());
                    return Some(format!(
                        "continuous function `{binding}` exited during the health window ({why})"
                    ));
                }
            }
            if tokio::time::Instant::now() >= deadline {
                return None;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Messages continuous functions publish go on the bus.
    fn message_sink(self: &Arc<Self>) -> MessageSink {
        let weak = Arc::downgrade(self);
        MessageSink::new(move |m| {
            if let Some(agent) = weak.upgrade() {
                tokio::spawn(async move {
                    if let Err(e) = agent.publish(&m.topic, m.payload).await {
                        tracing::error!("a continuous function's message was refused: {e}");
                    }
                });
            }
        })
    }

    /// After a switch: stops the outgoing release, and starts the active one's continuous
    /// functions once the outgoing ones stopped (they are singletons), except those that run
    /// exactly the same thing in both releases: those go on without a restart.
    async fn hand_over(self: &Arc<Self>, old: Option<RunningRelease>) {
        let active = self.active.read().await.clone();
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
                    &self.message_sink(),
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
        match RunningRelease::start(&self.layout, prev, &self.sandbox, &self.log).await {
            Ok(release) => {
                if let Err(e) = self.layout.point("current", &digest) {
                    release.stop().await;
                    return self.fail(failed, format!("{reason}; and the rollback failed: {e}"));
                }
                let bad = self.swap(release).await;
                self.hand_over(bad).await;
                {
                    let mut st = lock(&self.state);
                    st.pending = None;
                    st.failed.insert(failed.to_owned());
                }
                self.save_state();
                let _ = self.layout.forget_previous();
                self.set_reported(
                    DeviceState::RolledBack,
                    Some(reason),
                    Some(failed.to_owned()),
                );
            }
            Err(e) => self.fail(
                failed,
                format!("{reason}; the previous release did not start either: {e}"),
            ),
        }
    }

    fn fail(&self, digest: &str, reason: String) {
        {
            let mut st = lock(&self.state);
            st.failed.insert(digest.to_owned());
        }
        self.save_state();
        tracing::error!("{reason}");
        self.set_reported(DeviceState::Failed, Some(reason), Some(digest.to_owned()));
    }

    /// The status report as of now.
    async fn status(&self) -> StatusReport {
        let r = lock(&self.reported).clone();
        let active = self.active.read().await.clone();
        StatusReport {
            running_digest: active.as_ref().map(|a| a.digest().to_owned()),
            running_revision: active.as_ref().map(|a| a.desired.revision),
            state: r.state,
            target_digest: r.target,
            message: r.message,
            outbox: {
                let o = self.outbox.stats().await;
                Some(edgefn_schema::api::OutboxStatus {
                    pending: o.pending,
                    pending_bytes: o.pending_bytes,
                    dropped: o.dropped,
                    sent: o.sent,
                    rejected: o.rejected,
                })
            },
            functions: match &active {
                Some(a) => a.status().await,
                None => Vec::new(),
            },
            link: self.link.get().map(|l| l.snapshot()),
        }
    }

    /// Reports at once after an update's change of state, within a second of any other change
    /// (function counters and states, the outbox, the link), and every `report_interval` in
    /// any case (the cloud sees the device alive), until `stop`.
    pub async fn report_loop(self: Arc<Self>, mut stop: watch::Receiver<bool>) {
        let mut sent: Option<StatusReport> = None;
        let mut sent_at = tokio::time::Instant::now();
        loop {
            let report = self.status().await;
            let due = sent_at.elapsed() >= self.config.report_interval;
            if due || sent.as_ref() != Some(&report) {
                match self.cloud.report(&report).await {
                    Ok(()) => {
                        sent = Some(report);
                        sent_at = tokio::time::Instant::now();
                    }
                    Err(e) => tracing::debug!("status report not sent: {e}"),
                }
            }
            tokio::select! {
                () = self.report_now.notified() => {}
                () = tokio::time::sleep(CHANGE_CHECK.min(self.config.report_interval)) => {}
                _ = stop.wait_for(|s| *s) => return,
            }
        }
    }

    /// Follows the desired state until `stop`, or until the cloud refuses the token.
    pub async fn poll_loop(
        self: Arc<Self>,
        mut stop: watch::Receiver<bool>,
    ) -> Result<(), AgentError> {
        let mut attempt = 0u32;
        // A desired state this device refused: the next long-poll waits for one that differs
        // from it (not from the running release, which the cloud would answer at once with the
        // refused one again), so a fixed revision arrives the moment it is applied.
        let mut refused: Option<String> = None;
        loop {
            let running = self.current_digest().await;
            let known = refused.clone().or_else(|| running.clone());
            let polled = tokio::select! {
                r = self.cloud.desired(known.as_deref(), self.config.poll_wait) => r,
                _ = stop.wait_for(|s| *s) => return Ok(()),
            };
            match polled {
                Ok(None) => attempt = 0,
                Ok(Some(desired)) => {
                    refused = None;
                    if lock(&self.state).failed.contains(&desired.digest) {
                        // A revision asking again for what failed here (a rollback to a broken
                        // revision, say): not tried again, and said, so that the fleet's status
                        // does not show a device quietly running something else.
                        let already =
                            lock(&self.reported).target.as_deref() == Some(desired.digest.as_str());
                        if !already {
                            let revision = desired.revision;
                            self.set_reported(
                                DeviceState::Failed,
                                Some(format!(
                                    "revision {revision} asks for a desired state that already failed on this device; not tried again (the release before it keeps running): apply a fix"
                                )),
                                Some(desired.digest.clone()),
                            );
                        }
                        refused = Some(desired.digest);
                        continue;
                    }
                    if Some(&desired.digest) == running.as_ref() {
                        // Already running it (the revert of a release that rolled back): the
                        // device is converged, whatever it reported about an older target.
                        let stale = matches!(
                            lock(&self.reported).state,
                            DeviceState::RolledBack | DeviceState::Failed
                        );
                        if stale {
                            self.set_reported(
                                DeviceState::Running,
                                Some(format!("running revision {}", desired.revision)),
                                None,
                            );
                        }
                        continue;
                    }
                    let digest = desired.digest.clone();
                    if self.update(desired).await {
                        attempt = 0;
                        if lock(&self.state).failed.contains(&digest) {
                            refused = Some(digest);
                        }
                    } else {
                        // A download failed: wait before the next attempt, as for any outage.
                        let wait = backoff(attempt);
                        attempt = attempt.saturating_add(1);
                        tokio::select! {
                            () = tokio::time::sleep(wait) => {}
                            _ = stop.wait_for(|s| *s) => return Ok(()),
                        }
                    }
                }
                Err(CloudError::Rejected(code)) => {
                    return Err(AgentError::Rejected(CloudError::Rejected(code)));
                }
                Err(e) => {
                    let wait = backoff(attempt);
                    attempt = attempt.saturating_add(1);
                    tracing::warn!("{e}; retrying in {:.1} s", wait.as_secs_f64());
                    tokio::select! {
                        () = tokio::time::sleep(wait) => {}
                        _ = stop.wait_for(|s| *s) => return Ok(()),
                    }
                }
            }
        }
    }

    /// Stops the running release.
    pub async fn shutdown(&self) {
        // A health window in progress ends without a verdict (it is run again at the next
        // start) and lets go of the release.
        self.window.send_modify(|g| *g += 1);
        let active = self.active.write().await.take();
        if let Some(mut a) = active {
            loop {
                match Arc::try_unwrap(a) {
                    Ok(r) => {
                        r.stop().await;
                        break;
                    }
                    Err(shared) => {
                        a = shared;
                        tokio::time::sleep(Duration::from_millis(5)).await;
                    }
                }
            }
        }
    }
}

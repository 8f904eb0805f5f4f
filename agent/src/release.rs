//! A release running: one warm pool per triggered binding (and one supervised instance per
//! continuous binding), and the routing of events to them.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use edgefn_runtime::{
    Continuous, ContinuousOptions, ContinuousState, Event, FunctionSpec, InvokeError, LogSink,
    MessageSink, Pool, PoolOptions, Reply, Sandbox, StartError,
};
use edgefn_schema::api::{DesiredResponse, FunctionStatus};
use edgefn_schema::{Mode, ResolvedBinding};

use crate::layout::Layout;
use crate::secrets::SecretFolders;

/// Counters of one binding.
#[derive(Debug, Default)]
pub(crate) struct Counters {
    /// Invocations that failed.
    pub(crate) errors: AtomicU64,
    /// The last error.
    pub(crate) last_error: std::sync::Mutex<Option<String>>,
}

/// One triggered binding, running.
#[derive(Debug)]
struct Triggered {
    binding: ResolvedBinding,
    pool: Pool,
    counters: Counters,
}

/// A release's functions, running.
#[derive(Debug)]
pub(crate) struct RunningRelease {
    /// What it runs.
    pub(crate) desired: DesiredResponse,
    triggered: BTreeMap<String, Arc<Triggered>>,
    continuous: tokio::sync::Mutex<BTreeMap<String, Continuous>>,
    /// Where its bindings' secrets are.
    secrets: SecretFolders,
    /// Bindings not started because this device lacks device nodes they ask for: binding →
    /// why (`device node /dev/x is missing`). Its health window fails at once. An update never
    /// starts such a release ([`missing_devices`] refuses it first); this is for the release
    /// started again at boot, on a device that lost a node since.
    unavailable: BTreeMap<String, String>,
}

/// Why a release could not start.
#[derive(Debug, thiserror::Error)]
#[error("binding `{binding}`: {error}")]
pub(crate) struct ReleaseStartError {
    /// Which binding.
    pub(crate) binding: String,
    /// Why.
    pub(crate) error: StartError,
}

fn spec(
    layout: &Layout,
    desired: &DesiredResponse,
    b: &ResolvedBinding,
    secrets: &SecretFolders,
) -> Option<FunctionSpec> {
    let f = desired.state.functions.get(&b.function)?;
    // Only the models this binding names, and a folder of links to exactly those.
    let models = layout.binding_models(&desired.state, b);
    let models_dir = if models.is_empty() {
        None
    } else {
        match layout.model_links(&models) {
            Ok(dir) => Some(dir),
            Err(e) => {
                tracing::warn!(binding = %b.name, "the models folder: {e}");
                None
            }
        }
    };
    Some(FunctionSpec {
        binding: b.clone(),
        runtime: f.runtime,
        handler: f.handler.clone(),
        interface: f.interface,
        bundle_dir: layout.bundle_dir(f.bundle.as_deref()?),
        layer_dir: f.layer.as_deref().map(|l| layout.bundle_dir(l)),
        device: desired.state.device.clone(),
        revision: desired.revision,
        secrets_dir: secrets.folder(b),
        models: models.iter().cloned().collect(),
        models_dir,
    })
}

/// The bindings of `desired` asking for device nodes this device lacks, with why
/// (`device node /dev/x is missing`): they are not started.
fn unavailable_bindings(desired: &DesiredResponse) -> BTreeMap<String, String> {
    desired
        .state
        .bindings
        .iter()
        .filter_map(|b| {
            let missing = edgefn_runtime::missing_device_nodes(b);
            (!missing.is_empty())
                .then(|| (b.name.clone(), edgefn_runtime::missing_sentence(&missing)))
        })
        .collect()
}

/// Why `desired` cannot run on this device for want of device nodes its bindings ask for
/// (`deviceNodes:`, `gpu: nvidia`): `binding `b` cannot start: device node /dev/x is missing`,
/// one clause per such binding joined by `; `. `None` when every node is here.
///
/// The updater asks this before it downloads or switches anything: such a release is refused
/// and the running one goes on untouched.
pub(crate) fn missing_devices(desired: &DesiredResponse) -> Option<String> {
    let unavailable = unavailable_bindings(desired);
    (!unavailable.is_empty()).then(|| {
        unavailable
            .iter()
            .map(|(binding, why)| format!("binding `{binding}` cannot start: {why}"))
            .collect::<Vec<_>>()
            .join("; ")
    })
}

impl RunningRelease {
    /// Starts the triggered bindings of `desired`, each with one warm instance. Continuous
    /// bindings are started by [`RunningRelease::start_continuous`], once the previous release's
    /// have stopped (a continuous function is a singleton).
    pub(crate) async fn start(
        layout: &Layout,
        desired: DesiredResponse,
        sandbox: &Sandbox,
        log: &LogSink,
        secrets: &SecretFolders,
    ) -> Result<RunningRelease, ReleaseStartError> {
        let mut triggered = BTreeMap::new();
        let unavailable = unavailable_bindings(&desired);
        for b in desired
            .state
            .bindings
            .iter()
            .filter(|b| b.mode == Mode::Triggered && !unavailable.contains_key(&b.name))
        {
            let Some(spec) = spec(layout, &desired, b, secrets) else {
                return Err(ReleaseStartError {
                    binding: b.name.clone(),
                    error: StartError::Sandbox("its function has no bundle".into()),
                });
            };
            let pool = Pool::start(spec, PoolOptions::default(), sandbox, log.clone()).map_err(
                |error| ReleaseStartError {
                    binding: b.name.clone(),
                    error,
                },
            )?;
            if let Err(error) = pool.warm().await {
                pool.stop().await;
                for (_, t) in triggered {
                    let t: Arc<Triggered> = t;
                    t.pool.clone().stop().await;
                }
                return Err(ReleaseStartError {
                    binding: b.name.clone(),
                    error,
                });
            }
            triggered.insert(
                b.name.clone(),
                Arc::new(Triggered {
                    binding: b.clone(),
                    pool,
                    counters: Counters::default(),
                }),
            );
        }
        Ok(RunningRelease {
            desired,
            triggered,
            continuous: tokio::sync::Mutex::new(BTreeMap::new()),
            secrets: secrets.clone(),
            unavailable,
        })
    }

    /// Bindings this release did not start because the device lacks something they ask for,
    /// with why.
    pub(crate) fn unavailable(&self) -> &BTreeMap<String, String> {
        &self.unavailable
    }

    /// A release that runs nothing: its triggered bindings answer [`InvokeError::Stopped`]
    /// (tests of routing, which need no instances).
    #[cfg(test)]
    pub(crate) fn idle(desired: DesiredResponse) -> RunningRelease {
        RunningRelease {
            desired,
            triggered: BTreeMap::new(),
            continuous: tokio::sync::Mutex::new(BTreeMap::new()),
            secrets: SecretFolders::open(
                Some(std::path::Path::new("/dev/shm")),
                "/".as_ref(),
                None,
            ),
            unavailable: BTreeMap::new(),
        }
    }

    /// What identifies a continuous binding's instance: its settings and its function's code.
    /// Two releases with the same key run the very same thing.
    fn continuous_key(&self, b: &ResolvedBinding) -> String {
        serde_json::to_string(&(b, self.desired.state.functions.get(&b.function)))
            .unwrap_or_default()
    }

    /// Takes the continuous supervisors out of this (outgoing) release, with their keys.
    pub(crate) async fn take_continuous(&self) -> Vec<(String, String, Continuous)> {
        let taken = std::mem::take(&mut *self.continuous.lock().await);
        taken
            .into_iter()
            .map(|(name, c)| {
                let key = self
                    .desired
                    .state
                    .bindings
                    .iter()
                    .find(|b| b.name == name)
                    .map(|b| self.continuous_key(b))
                    .unwrap_or_default();
                (name, key, c)
            })
            .collect()
    }

    /// Of `outgoing` supervisors, those this release runs unchanged (same binding, same code).
    pub(crate) fn unchanged(&self, outgoing: &[(String, String, Continuous)]) -> Vec<String> {
        outgoing
            .iter()
            .filter(|(name, key, _)| {
                self.desired.state.bindings.iter().any(|b| {
                    b.mode == Mode::Continuous && &b.name == name && &self.continuous_key(b) == key
                })
            })
            .map(|(name, _, _)| name.clone())
            .collect()
    }

    /// Starts the continuous bindings (once the previous release's have stopped), taking over
    /// `kept`: supervisors of the previous release that run exactly the same thing, which go on
    /// running without a restart.
    pub(crate) async fn start_continuous(
        &self,
        layout: &Layout,
        sandbox: &Sandbox,
        log: &LogSink,
        publish: &MessageSink,
        mut kept: BTreeMap<String, Continuous>,
    ) -> Result<(), ReleaseStartError> {
        let mut running = self.continuous.lock().await;
        for b in self
            .desired
            .state
            .bindings
            .iter()
            .filter(|b| b.mode == Mode::Continuous && !self.unavailable.contains_key(&b.name))
        {
            if let Some(c) = kept.remove(&b.name) {
                running.insert(b.name.clone(), c);
                continue;
            }
            let Some(spec) = spec(layout, &self.desired, b, &self.secrets) else {
                return Err(ReleaseStartError {
                    binding: b.name.clone(),
                    error: StartError::Sandbox("its function has no bundle".into()),
                });
            };
            let c = Continuous::start(
                spec,
                ContinuousOptions::default(),
                sandbox,
                log.clone(),
                publish.clone(),
            )
            .map_err(|error| ReleaseStartError {
                binding: b.name.clone(),
                error,
            })?;
            running.insert(b.name.clone(), c);
        }
        for (_, c) in kept {
            c.stop().await;
        }
        Ok(())
    }

    /// The state of each continuous binding.
    pub(crate) async fn continuous_states(&self) -> Vec<(String, ContinuousState)> {
        self.continuous
            .lock()
            .await
            .iter()
            .map(|(n, c)| (n.clone(), c.state()))
            .collect()
    }

    /// A watch on each continuous binding's state, which changes with each of its starts,
    /// exits and restarts.
    pub(crate) async fn continuous_watches(
        &self,
    ) -> Vec<(String, tokio::sync::watch::Receiver<ContinuousState>)> {
        self.continuous
            .lock()
            .await
            .iter()
            .map(|(n, c)| (n.clone(), c.watch()))
            .collect()
    }

    /// Whether a route of this release brings messages on `topic` from the cloud down to the
    /// device bus (`from: "cloud:FILTER"`, `to: local`; the one matcher,
    /// [`edgefn_schema::DesiredState::brings_down`]).
    pub(crate) fn routes_down(&self, topic: &str) -> bool {
        self.desired.state.brings_down(topic)
    }

    /// The digest of what it runs.
    pub(crate) fn digest(&self) -> &str {
        &self.desired.digest
    }

    /// Whether a route of this release sends messages on `topic` to the cloud (the one
    /// matcher, [`edgefn_schema::DesiredState::sends_up`]).
    pub(crate) fn routes_up(&self, topic: &str) -> bool {
        self.desired.state.sends_up(topic)
    }

    /// The function a binding runs.
    pub(crate) fn function_of(&self, binding: &str) -> Option<String> {
        self.desired
            .state
            .bindings
            .iter()
            .find(|b| b.name == binding)
            .map(|b| b.function.clone())
    }

    /// The bindings whose triggers match `topic`.
    /// (the one matcher, [`edgefn_schema::DesiredState::triggered_by`]), by name.
    pub(crate) fn matching(&self, topic: &str) -> Vec<String> {
        self.desired
            .state
            .triggered_by(topic)
            .map(|b| b.name.clone())
            .collect()
    }

    /// Invokes one binding.
    pub(crate) async fn invoke(&self, binding: &str, event: &Event) -> Result<Reply, InvokeError> {
        let Some(t) = self.triggered.get(binding) else {
            return Err(InvokeError::Stopped);
        };
        let r = t.pool.invoke(event).await;
        if let Err(e) = &r {
            t.counters.errors.fetch_add(1, Ordering::Relaxed);
            if let Ok(mut last) = t.counters.last_error.lock() {
                *last = Some(e.to_string());
            }
        }
        r
    }

    /// Per-binding status.
    pub(crate) async fn status(&self) -> Vec<FunctionStatus> {
        let mut out: Vec<FunctionStatus> = self
            .continuous_states()
            .await
            .into_iter()
            .map(|(binding, st)| {
                let (restarts, last_error) = match &st {
                    ContinuousState::Starting { restarts }
                    | ContinuousState::Running { restarts, .. } => (*restarts, None),
                    ContinuousState::Backoff {
                        restarts, reason, ..
                    }
                    | ContinuousState::CrashLoop {
                        restarts, reason, ..
                    } => (*restarts, Some(reason.clone())),
                    ContinuousState::Stopped { .. } => (0, None),
                };
                FunctionStatus {
                    binding,
                    state: st.kind(),
                    restarts: u64::from(restarts),
                    invocations: 0,
                    errors: 0,
                    last_error,
                }
            })
            .collect();
        out.extend(self.triggered.values().map(|t| {
            let stats = t.pool.stats();
            FunctionStatus {
                binding: t.binding.name.clone(),
                state: if stats.instances > 0 {
                    edgefn_schema::api::FunctionState::Running
                } else {
                    edgefn_schema::api::FunctionState::Idle
                },
                restarts: stats.started.saturating_sub(1),
                invocations: stats.invocations,
                errors: t.counters.errors.load(Ordering::Relaxed),
                last_error: t.counters.last_error.lock().ok().and_then(|l| l.clone()),
            }
        }));
        out.extend(
            self.unavailable
                .iter()
                .map(|(binding, why)| FunctionStatus {
                    binding: binding.clone(),
                    state: edgefn_schema::api::FunctionState::Unavailable,
                    restarts: 0,
                    invocations: 0,
                    errors: 0,
                    last_error: Some(why.clone()),
                }),
        );
        out
    }

    /// Stops everything, letting in-flight invocations finish.
    pub(crate) async fn stop(self) {
        for (_, c) in std::mem::take(&mut *self.continuous.lock().await) {
            c.stop().await;
        }
        for (_, t) in self.triggered {
            t.pool.clone().stop().await;
        }
    }
}

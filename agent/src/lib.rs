//! The edgefn device agent: runs its release from local state, follows its desired state from
//! the control plane, and updates with an atomic switchover and a health-gated rollback.
//!
//! The binary calls [`run`] with a loaded [`AgentConfig`], its bound local [`Listeners`] and a
//! shutdown future.

mod bus;
mod cloud;
pub mod config;
mod error;
pub mod fault;
mod invoke;
mod layout;
mod live;
mod local;
mod local_mqtt;
pub mod outbox;
mod poll;
mod release;
mod report;
mod retry;
mod secrets;
mod state;
mod trust;
mod update;
pub mod uplink;

#[cfg(test)]
mod testfs;

use std::future::Future;
use std::sync::Arc;

pub use cloud::{CaError, CloudError};
pub use config::{AgentConfig, ConfigError};
use edgefn_runtime::{LogLine, LogSink, Sandbox, SandboxOptions};
use edgefn_schema::wire::LogRecord;
pub use error::AgentError;
pub use layout::{LayoutError, Refusal};
use tokio::net::TcpListener;
use tokio::sync::watch;

/// The sandbox the configuration asks for. Its instances are recorded in `DATA/instances` (see
/// [`Sandbox::sweep_leftovers`]).
fn sandbox(config: &AgentConfig) -> Result<Sandbox, AgentError> {
    let options =
        SandboxOptions {
            kind: config.sandbox,
            helper: std::env::current_exe().ok(),
            state_dir: config.data.join("containers"),
            records: Some(std::path::absolute(config.data.join("instances")).map_err(
                |source| AgentError::DataFolder {
                    path: config.data.clone(),
                    source,
                },
            )?),
            ..SandboxOptions::default()
        };
    Sandbox::new(options).map_err(AgentError::Sandbox)
}

/// Runs blocking work (fsync, rename, folder removal, a redb commit) on a blocking thread and
/// waits for it, so it never stalls the async threads. A panic in `f` goes on in the caller.
pub(crate) async fn blocking<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> T {
    match tokio::task::spawn_blocking(f).await {
        Ok(v) => v,
        Err(e) => match e.try_into_panic() {
            Ok(panic) => std::panic::resume_unwind(panic),
            // Only a runtime shutting down cancels a blocking task before it starts.
            Err(e) => panic!("blocking work cancelled: {e}"),
        },
    }
}

/// Function log lines waiting for the link to the cloud, at most: past it the oldest go, and
/// are counted and marked where the user reads the logs.
const LOG_QUEUE_LINES: usize = 4096;

/// Called with each line a function prints (besides the agent's log).
pub type LogHook = Arc<dyn Fn(&LogLine) + Send + Sync>;

/// Called after each invocation of a triggered function, with what happened.
pub type InvocationHook = Arc<dyn Fn(&Invocation) + Send + Sync>;

/// One invocation, as an [`InvocationHook`] sees it.
#[derive(Debug, Clone)]
pub struct Invocation {
    /// The binding.
    pub binding: String,
    /// Its function.
    pub function: String,
    /// The topic of the event.
    pub topic: String,
    /// `Ok`, or the error as the runtime words it (a handler's kind and message).
    pub outcome: Result<(), String>,
    /// How long it took.
    pub duration: std::time::Duration,
}

/// What a host embedding the agent (`edgefn dev`) is told besides the agent's log.
#[derive(Clone, Default)]
pub struct Hooks {
    /// Every line a function prints.
    pub log: Option<LogHook>,
    /// Every invocation of a triggered function.
    pub invocation: Option<InvocationHook>,
}

impl std::fmt::Debug for Hooks {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Hooks")
            .field("log", &self.log.is_some())
            .field("invocation", &self.invocation.is_some())
            .finish()
    }
}

/// The device-local listeners, bound by the caller (so it knows their addresses).
#[derive(Debug)]
pub struct Listeners {
    /// The local HTTP endpoint (`POST /v1/publish`, `GET /v1/logs`, `GET /healthz`), when
    /// there is one.
    pub http: Option<TcpListener>,
    /// The local MQTT listener, when there is one.
    pub mqtt: Option<TcpListener>,
}

/// Runs the agent until `shutdown` completes or the cloud refuses its token.
pub async fn run(
    config: AgentConfig,
    listeners: Listeners,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), AgentError> {
    run_with_hooks(config, listeners, shutdown, Hooks::default()).await
}

/// [`run`], telling `hooks` what the functions print and each invocation.
pub async fn run_with_hooks(
    config: AgentConfig,
    listeners: Listeners,
    shutdown: impl Future<Output = ()> + Send + 'static,
    hooks: Hooks,
) -> Result<(), AgentError> {
    let hook = hooks.log;
    // Choosing the sandbox may run a trial container, and the sweep of what a previous run left
    // may wait for containers to die: blocking work, off the async threads.
    let (sandbox, swept) = {
        let config = config.clone();
        tokio::task::spawn_blocking(move || {
            sandbox(&config).map(|s| {
                // Before any instance starts: a continuous binding runs once, not once more per
                // agent that died without stopping its instances.
                let swept = s.sweep_leftovers();
                (s, swept)
            })
        })
        .await
        .map_err(AgentError::Join)??
    };
    tracing::info!(sandbox = %sandbox.kind(), "{}", sandbox.reason());
    for line in swept {
        tracing::warn!("left by a previous run: {line}");
    }
    // Function output: the agent's log, and shipped up through a bounded queue that keeps the
    // newest lines and says how many went (see `uplink::LogQueue`).
    let log_queue = Arc::new(uplink::LogQueue::new(LOG_QUEUE_LINES));
    let log_tx = log_queue.clone();
    let ring = Arc::new(local::LogRing::new(1000));
    let keep = ring.clone();
    // Lines collected for invocations on request while they run.
    let captures = Arc::new(invoke::Captures::default());
    let capture = captures.clone();
    let log = LogSink::new(move |l: LogLine| {
        if let Some(h) = &hook {
            h(&l);
        }
        tracing::info!(target: "function", "[{}/{}#{}] {}", l.function, l.binding, l.instance, l.line);
        let ts_ms = edgefn_os::time::now_ms();
        capture.offer(&l, ts_ms);
        let record = LogRecord {
            ts_ms,
            binding: l.binding.to_string(),
            stream: l.stream,
            line: l.line,
            dropped: None,
        };
        log_tx.push(uplink::ShippedLog {
            binding: record.binding.clone(),
            json: record.to_json(),
        });
        keep.push(record);
    });
    let secret_folders = {
        let (dir, data, owner) = (
            config.secrets_dir.clone(),
            config.data.clone(),
            sandbox.options().run_as,
        );
        blocking(move || secrets::SecretFolders::open(dir.as_deref(), &data, owner)).await
    };
    let faults = fault::Faults::new(config.crash_at);
    let layout = layout::Layout::open(&config.data)?;
    let outbox = outbox::Outbox::open(&config.data.join("outbox.redb"), config.outbox)?;
    let cloud = cloud::CloudClient::new(
        &config.cloud,
        &config.device,
        &config.token,
        config.cloud_ca.as_deref(),
    )?;
    let limit = Arc::new(uplink::PacketLimit::new(
        &config.device,
        config.mqtt_max_packet,
    ));
    let bus = bus::Bus::new(Arc::new(live::Live::default()), outbox, limit);
    if let Some(h) = hooks.invocation {
        bus.on_invocation(h);
    }
    let reporter = Arc::new(report::Reporter::new(
        cloud.clone(),
        bus.clone(),
        config.report_interval,
    ));
    let updater = update::Updater::new(
        layout,
        cloud,
        sandbox,
        log,
        bus.clone(),
        reporter.clone(),
        state::StateFile::load(&config.data),
        faults,
        config.health_window,
        secret_folders,
    );
    let (stop_tx, stop_rx) = watch::channel(false);
    // The local MQTT listener is up before the release starts, so a continuous function can
    // connect to it at once.
    let local_mqtt = listeners.mqtt.map(|l| {
        let broker = local_mqtt::broker(&bus, config.local_mqtt_password.as_deref());
        let echo = broker.clone();
        bus.attach_local(Box::new(move |topic, payload| {
            local_mqtt::echo(&echo, topic, payload);
        }));
        tokio::spawn(broker.serve(l, stop_rx.clone()))
    });
    updater.boot().await;
    let reporting = tokio::spawn(reporter.clone().run(stop_rx.clone()));
    let local = listeners.http.map(|listener| {
        let app = local::router(bus.clone(), ring);
        let mut stop = stop_rx.clone();
        tokio::spawn(async move {
            let _ = axum::serve(listener, app)
                .with_graceful_shutdown(async move {
                    let _ = stop.wait_for(|s| *s).await;
                })
                .await;
        })
    });
    let link = config.mqtt.clone().map(|broker| {
        let state = Arc::new(uplink::LinkState::new(format!(
            "{}:{}",
            broker.host, broker.port
        )));
        reporter.attach_link(state.clone());
        tokio::spawn(uplink::run(
            broker,
            config.mqtt_protocol,
            config.device.clone(),
            config.token.clone(),
            bus.outbox().clone(),
            bus.limit().clone(),
            bus.downlink(),
            log_queue,
            state,
            Some(invoke::start(bus.clone(), captures)),
            stop_rx.clone(),
        ))
    });
    let poller = tokio::spawn(poll::run(
        updater.clone(),
        stop_rx,
        config.poll_wait,
        trust::Trust {
            device: config.device.clone(),
            keys: config.trusted_keys.clone(),
        },
    ));
    tokio::pin!(shutdown);
    let result = tokio::select! {
        () = &mut shutdown => Ok(()),
        r = poller => r.unwrap_or(Ok(())),
    };
    let _ = stop_tx.send(true);
    if let Some(l) = local {
        let _ = l.await;
    }
    if let Some(l) = local_mqtt {
        let _ = l.await;
    }
    let _ = reporting.await;
    if let Some(link) = link {
        let _ = link.await;
    }
    updater.shutdown().await;
    // The functions stopped: their secrets go with them.
    let secrets = updater.secrets.clone();
    blocking(move || secrets.clear()).await;
    result
}

#[cfg(test)]
mod tests {
    /// Blocking work runs beside the async threads, not on them: on a runtime of one thread,
    /// a blocking step that waits for an async task to act finishes (on that thread it would
    /// wait for ever).
    #[test]
    fn blocking_work_leaves_the_async_thread_free() {
        let rt = tokio::runtime::Builder::new_current_thread()
            .build()
            .expect("rt");
        rt.block_on(async {
            let (tx, rx) = std::sync::mpsc::channel::<()>();
            let step = super::blocking(move || rx.recv().is_ok());
            let other = async move {
                tokio::task::yield_now().await;
                tx.send(()).expect("send");
            };
            let (done, ()) = tokio::join!(step, other);
            assert!(done);
        });
    }
}

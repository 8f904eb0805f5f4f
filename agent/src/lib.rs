//! The edgefn device agent: runs its release from local state, follows its desired state from
//! the control plane, and updates with an atomic switchover and a health-gated rollback.
//!
//! The binary calls [`run`] with a loaded [`AgentConfig`], its bound local [`Listeners`] and a
//! shutdown future.

pub mod agent;
pub mod cloud;
pub mod config;
pub mod layout;
pub mod local;
pub mod local_mqtt;
pub mod outbox;
pub mod release;
pub mod state;
pub mod uplink;

#[cfg(test)]
mod testfs;

use std::future::Future;
use std::sync::Arc;

pub use agent::{Agent, AgentError};
pub use config::{AgentConfig, ConfigError};
use edgefn_runtime::{LogLine, LogSink, Sandbox, SandboxOptions};
use tokio::net::TcpListener;
use tokio::sync::watch;

/// The sandbox the configuration asks for. Its instances are recorded in `DATA/instances` (see
/// [`Sandbox::sweep_leftovers`]).
pub fn sandbox(config: &AgentConfig) -> Result<Sandbox, AgentError> {
    let options = SandboxOptions {
        kind: config.sandbox,
        helper: std::env::current_exe().ok(),
        state_dir: config.data.join("containers"),
        records: Some(
            std::path::absolute(config.data.join("instances"))
                .map_err(|e| AgentError::Sandbox(format!("{}: {e}", config.data.display())))?,
        ),
        ..SandboxOptions::default()
    };
    Sandbox::new(options).map_err(|e| AgentError::Sandbox(e.to_string()))
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
    run_with(config, listeners, shutdown, None).await
}

/// [`run`], with every function output line also passed to `hook` (`edgefn dev` prints them).
pub async fn run_with(
    config: AgentConfig,
    listeners: Listeners,
    shutdown: impl Future<Output = ()> + Send + 'static,
    hook: Option<LogHook>,
) -> Result<(), AgentError> {
    let hooks = Hooks {
        log: hook,
        invocation: None,
    };
    run_with_hooks(config, listeners, shutdown, hooks).await
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
        .map_err(|e| AgentError::Sandbox(e.to_string()))??
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
    let log = LogSink::new(move |l: LogLine| {
        if let Some(h) = &hook {
            h(&l);
        }
        tracing::info!(target: "function", "[{}/{}#{}] {}", l.function, l.binding, l.instance, l.line);
        let ts_ms = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as u64);
        let json = serde_json::json!({"ts_ms": ts_ms, "binding": &*l.binding, "stream": l.stream.as_str(), "line": l.line});
        keep.push(json.clone());
        log_tx.push(uplink::ShippedLog {
            binding: l.binding.to_string(),
            json: json.to_string().into_bytes(),
        });
    });
    let mqtt = config.mqtt.clone();
    let protocol = config.mqtt_protocol;
    let (device, token) = (config.device.clone(), config.token.clone());
    let local_password = config.local_mqtt_password.clone();
    let agent = Agent::new(config, sandbox, log)?;
    if let Some(h) = hooks.invocation {
        agent.on_invocation(h);
    }
    let (stop_tx, stop_rx) = watch::channel(false);
    // The local MQTT listener is up before the release starts, so a continuous function can
    // connect to it at once.
    let local_mqtt = listeners.mqtt.map(|l| {
        let broker = local_mqtt::broker(&agent, local_password.as_deref());
        agent.attach_local_mqtt(broker.clone());
        tokio::spawn(broker.serve(l, stop_rx.clone()))
    });
    agent.boot().await;
    let reporter = tokio::spawn(agent.clone().report_loop(stop_rx.clone()));
    let local = listeners.http.map(|listener| {
        let app = local::router(agent.clone(), ring);
        let mut stop = stop_rx.clone();
        tokio::spawn(async move {
            let _ = axum::serve(listener, app)
                .with_graceful_shutdown(async move {
                    let _ = stop.wait_for(|s| *s).await;
                })
                .await;
        })
    });
    let (down_tx, mut down_rx) = tokio::sync::mpsc::unbounded_channel::<uplink::Downlink>();
    let link = mqtt.map(|broker| {
        let state = Arc::new(uplink::LinkState::new(format!(
            "{}:{}",
            broker.host, broker.port
        )));
        let _ = agent.link.set(state.clone());
        tokio::spawn(uplink::run(
            broker,
            protocol,
            device,
            token,
            agent.outbox.clone(),
            agent.limit.clone(),
            down_tx,
            log_queue,
            state,
            stop_rx.clone(),
        ))
    });
    let downlink = tokio::spawn({
        let agent = agent.clone();
        async move {
            while let Some(m) = down_rx.recv().await {
                let agent = agent.clone();
                tokio::spawn(async move { agent.deliver_down(&m.topic, m.payload).await });
            }
        }
    });
    let poller = tokio::spawn(agent.clone().poll_loop(stop_rx));
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
    let _ = reporter.await;
    if let Some(link) = link {
        let _ = link.await;
    }
    downlink.abort();
    Arc::clone(&agent).shutdown().await;
    result
}

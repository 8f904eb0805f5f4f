//! The edgefn device agent: runs its release from local state, follows its desired state from
//! the control plane, and updates with an atomic switchover and a health-gated rollback.
//!
//! The binary calls [`run`] with a loaded [`AgentConfig`], a bound local listener and a shutdown
//! future.

pub mod agent;
pub mod cloud;
pub mod config;
pub mod layout;
pub mod local;
pub mod release;
pub mod state;

use std::future::Future;
use std::sync::Arc;

pub use agent::{Agent, AgentError};
pub use config::{AgentConfig, ConfigError};
use edgefn_runtime::{LogLine, LogSink, Sandbox, SandboxOptions};
use tokio::net::TcpListener;
use tokio::sync::watch;

/// The sandbox the configuration asks for.
pub fn sandbox(config: &AgentConfig) -> Result<Sandbox, AgentError> {
    let options = SandboxOptions {
        kind: config.sandbox,
        helper: std::env::current_exe().ok(),
        state_dir: config.data.join("containers"),
        ..SandboxOptions::default()
    };
    Sandbox::new(options).map_err(|e| AgentError::Sandbox(e.to_string()))
}

/// Runs the agent until `shutdown` completes or the cloud refuses its token.
pub async fn run(
    config: AgentConfig,
    listener: TcpListener,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), AgentError> {
    let sandbox = sandbox(&config)?;
    tracing::info!(sandbox = %sandbox.kind(), "{}", sandbox.reason());
    let log = LogSink::new(|l: LogLine| {
        tracing::info!(target: "function", "[{}/{}#{}] {}", l.function, l.binding, l.instance, l.line);
    });
    let agent = Agent::new(config, sandbox, log)?;
    agent.boot().await;
    let (stop_tx, stop_rx) = watch::channel(false);
    let reporter = tokio::spawn(agent.clone().report_loop(stop_rx.clone()));
    let local = tokio::spawn({
        let app = local::router(agent.clone());
        let mut stop = stop_rx.clone();
        async move {
            let _ = axum::serve(listener, app)
                .with_graceful_shutdown(async move {
                    let _ = stop.wait_for(|s| *s).await;
                })
                .await;
        }
    });
    let poller = tokio::spawn(agent.clone().poll_loop(stop_rx));
    tokio::pin!(shutdown);
    let result = tokio::select! {
        () = &mut shutdown => Ok(()),
        r = poller => r.unwrap_or(Ok(())),
    };
    let _ = stop_tx.send(true);
    let _ = local.await;
    let _ = reporter.await;
    Arc::clone(&agent).shutdown().await;
    result
}

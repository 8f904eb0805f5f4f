//! One agent per device of the session, each in this process with its own registration, local
//! endpoints and stop signal; its function output and invocations printed with its name.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::output::say;
use crate::client::Client;
use crate::error::CliError;
use crate::function_output::{is_shim_frame, project_paths};

/// What starting an agent needs.
pub(super) struct DevEnv<'a> {
    pub(super) rt: &'a tokio::runtime::Runtime,
    pub(super) client: &'a Client,
    pub(super) cloud_url: &'a str,
    pub(super) broker_addr: &'a str,
    pub(super) sandbox: &'a str,
    pub(super) state: &'a Path,
    /// Each function's folder in the project, by function name.
    pub(super) function_paths: Arc<BTreeMap<String, String>>,
    /// Errors shown in the last seconds, with the device that showed each first.
    pub(super) recent_errors: Arc<std::sync::Mutex<Vec<(String, String, Instant)>>>,
}

/// One device's agent, running in this process.
pub(super) struct DevAgent {
    pub(super) name: String,
    /// `  agent NAME local endpoint ... local MQTT ...`.
    pub(super) endpoints: String,
    pub(super) stop: tokio::sync::watch::Sender<bool>,
    pub(super) task: Option<tokio::task::JoinHandle<Result<(), edgefn_agent::AgentError>>>,
    /// Why it stopped, once it did.
    pub(super) stopped: Option<String>,
}

impl DevEnv<'_> {
    /// Registers `d` afresh and starts its agent.
    pub(super) fn start_agent(&self, d: &str) -> Result<DevAgent, CliError> {
        let _ = self.client.delete(&format!("/v1/devices/{d}"));
        let (_, reg): (_, edgefn_schema::api::DeviceRegistered) = self.client.post(
            "/v1/devices",
            &edgefn_schema::api::NewDevice { name: d.to_owned() },
        )?;
        let mut text = format!(
            "cloud: {}\ndevice: {d}\ntoken: {}\ndata: {}\nsandbox: {}\nmqtt: mqtt://{}\nhealthWindow: 1s\npollWait: 30s\nreportInterval: 2s\n",
            self.cloud_url,
            reg.token,
            self.state.join("agents").join(d).display(),
            self.sandbox,
            self.broker_addr,
        );
        // Secrets in memory, in a folder this session removes when it ends.
        if let Some(dir) = super::secrets_dir(d) {
            text.push_str(&format!("secretsDir: {}\n", dir.display()));
        }
        let config = edgefn_agent::AgentConfig::parse(&edgefn_schema::Source::new(
            format!("{d}.yaml"),
            text,
        ))
        .map_err(|e| CliError::failed("", "", e))?;
        let bind = || {
            self.rt
                .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
                .map_err(CliError::io("listen on", "127.0.0.1"))
        };
        let (local, local_mqtt) = (bind()?, bind()?);
        let addr_of =
            |l: &tokio::net::TcpListener| l.local_addr().map(|a| a.to_string()).unwrap_or_default();
        let endpoints = format!(
            "  agent {d:<8} local endpoint http://{}  local MQTT mqtt://{}",
            addr_of(&local),
            addr_of(&local_mqtt)
        );
        let name = d.to_owned();
        let paths = self.function_paths.clone();
        let log: edgefn_agent::LogHook = Arc::new(move |l| {
            if is_shim_frame(&l.line) {
                return;
            }
            let line = project_paths(&l.line, paths.get(&*l.function).map(String::as_str));
            let mut out = std::io::stdout().lock();
            let _ = writeln!(out, "[{name}] {}: {line}", l.binding);
        });
        let name = d.to_owned();
        let paths = self.function_paths.clone();
        let recent = self.recent_errors.clone();
        let invocation: edgefn_agent::InvocationHook = Arc::new(move |i| {
            let ms = i.duration.as_millis();
            let text = match &i.outcome {
                Ok(()) => format!("ok, {ms} ms"),
                Err(e) => {
                    let e = project_paths(e, paths.get(&i.function).map(String::as_str));
                    // The same error on several devices at once (one change, one mistake): the
                    // whole of it once, then a reference to it.
                    let mut recent = recent
                        .lock()
                        .unwrap_or_else(std::sync::PoisonError::into_inner);
                    recent.retain(|(_, _, at)| at.elapsed() < Duration::from_secs(5));
                    match recent.iter().find(|(text, _, _)| *text == e) {
                        Some((_, first, _)) => format!("error, {ms} ms (the same as on {first})"),
                        None => {
                            recent.push((e.clone(), name.clone(), Instant::now()));
                            format!("error, {ms} ms: {e}")
                        }
                    }
                }
            };
            say(format!("[{name}] {} ← {}: {text}", i.binding, i.topic));
        });
        let (stop, stop_rx) = tokio::sync::watch::channel(false);
        let task = self.rt.spawn(edgefn_agent::run_with_hooks(
            config,
            edgefn_agent::Listeners {
                http: Some(local),
                mqtt: Some(local_mqtt),
            },
            async move {
                let mut rx = stop_rx;
                let _ = rx.wait_for(|s| *s).await;
            },
            edgefn_agent::Hooks {
                log: Some(log),
                invocation: Some(invocation),
            },
        ));
        Ok(DevAgent {
            name: d.to_owned(),
            endpoints,
            stop,
            task: Some(task),
            stopped: None,
        })
    }
}

impl DevAgent {
    /// Says once why the agent stopped, if it did.
    pub(super) fn reap(&mut self, rt: &tokio::runtime::Runtime) {
        if self.task.as_ref().is_some_and(|t| t.is_finished()) {
            let why = match self.task.take().map(|t| rt.block_on(t)) {
                Some(Ok(Ok(()))) => "it stopped".to_owned(),
                Some(Ok(Err(e))) => e.to_string(),
                Some(Err(e)) => format!("it crashed: {e}"),
                None => return,
            };
            say(format!("  agent {} stopped: {why}", self.name));
            self.stopped = Some(why);
        }
    }

    /// Stops the agent and waits for it (its functions with it).
    pub(super) fn stop(mut self, rt: &tokio::runtime::Runtime) {
        let _ = self.stop.send(true);
        if let Some(t) = self.task.take() {
            let _ = rt.block_on(async { tokio::time::timeout(Duration::from_secs(20), t).await });
        }
    }
}

/// Ends the session: stops every agent (all asked first, then each waited for), then the control
/// plane, and removes the session file.
pub(super) fn stop_all(
    rt: &tokio::runtime::Runtime,
    cloud_stop: &tokio::sync::watch::Sender<bool>,
    agents: Vec<DevAgent>,
    cloud_task: tokio::task::JoinHandle<Result<(), edgefn_cloud::CloudError>>,
    session: &Path,
) {
    say("stopping…");
    for a in &agents {
        let _ = a.stop.send(true);
    }
    for a in agents {
        a.stop(rt);
    }
    let _ = cloud_stop.send(true);
    let _ = rt.block_on(async { tokio::time::timeout(Duration::from_secs(10), cloud_task).await });
    let _ = std::fs::remove_file(session);
    say("stopped");
}

//! `edgefn dev`: the whole product on this machine. An embedded control plane and broker, one
//! agent per device of the manifest, the project applied through the real path (package, upload,
//! revision, long-poll, download, switch), function logs streamed with their device's name, and
//! every change to the project re-applied as an over-the-air update.
//!
//! Other terminals in the project find the running session (`.edgefn/dev/session.json`), so
//! `edgefn publish`, `edgefn subscribe`, `edgefn status` and the rest talk to it with no flags.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant, SystemTime};

use edgefn_schema::api::{FleetStatus, Provenance};
use edgefn_schema::{Manifest, Mode};

use crate::args::{DevArgs, Output, SandboxArg};
use crate::client::Client;
use crate::error::{CliError, CliResult, Outcome};
use crate::project::{self, Project};

/// Where `edgefn dev` keeps its state, under the project.
pub const STATE_DIR: &str = ".edgefn/dev";

fn err(message: impl Into<String>) -> CliError {
    CliError::InvalidArgument {
        message: message.into(),
        help: "see the message above".into(),
    }
}

/// A fingerprint of the project's files: sizes and modification times.
fn fingerprint(
    root: &Path,
    manifest: &Path,
    functions: &[PathBuf],
) -> Vec<(PathBuf, u64, SystemTime)> {
    fn walk(dir: &Path, out: &mut Vec<(PathBuf, u64, SystemTime)>) {
        let Ok(entries) = std::fs::read_dir(dir) else {
            return;
        };
        for e in entries.flatten() {
            let path = e.path();
            let Ok(meta) = std::fs::symlink_metadata(&path) else {
                continue;
            };
            if meta.is_dir() {
                if e.file_name() != ".git" && e.file_name() != "node_modules" {
                    walk(&path, out);
                }
            } else {
                out.push((
                    path,
                    meta.len(),
                    meta.modified().unwrap_or(SystemTime::UNIX_EPOCH),
                ));
            }
        }
    }
    let mut out = Vec::new();
    if let Ok(m) = std::fs::metadata(manifest) {
        out.push((
            manifest.to_path_buf(),
            m.len(),
            m.modified().unwrap_or(SystemTime::UNIX_EPOCH),
        ));
    }
    for f in functions {
        walk(&root.join(f), &mut out);
    }
    out.sort();
    out
}

fn function_dirs(m: &Manifest) -> Vec<PathBuf> {
    m.functions
        .values()
        .map(|f| PathBuf::from(&f.path))
        .collect()
}

fn say(line: impl AsRef<str>) {
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "{}", line.as_ref());
    let _ = out.flush();
}

/// What each device runs, in a line each.
fn describe(m: &Manifest, devices: &[String]) {
    for d in devices {
        let Some(state) = edgefn_schema::resolve(m, d, &BTreeMap::new()) else {
            continue;
        };
        let parts: Vec<String> = state
            .bindings
            .iter()
            .map(|b| match b.mode {
                Mode::Continuous => format!("{} (continuous)", b.name),
                Mode::Triggered => format!("{} (on {})", b.name, b.triggers.join(", ")),
            })
            .collect();
        say(format!(
            "  {d}: {}",
            if parts.is_empty() {
                "nothing".to_owned()
            } else {
                parts.join("; ")
            }
        ));
    }
}

fn provenance() -> Provenance {
    Provenance {
        message: Some("edgefn dev".into()),
        dirty: true,
        tool: Some(format!("edgefn {}", env!("CARGO_PKG_VERSION"))),
        ..Provenance::default()
    }
}

/// Waits until every running device reports revision `rev` (or failed), printing each; stops
/// early on Ctrl-C.
#[allow(clippy::disallowed_methods)] // The synchronous main thread, polling between requests.
fn follow(client: &Client, devices: &[String], started: Instant, stop: &AtomicBool) {
    let mut done: Vec<String> = Vec::new();
    while done.len() < devices.len()
        && started.elapsed() < Duration::from_secs(60)
        && !stop.load(Ordering::Relaxed)
    {
        if let Ok(status) = client.get::<FleetStatus>("/v1/status") {
            for d in &status.devices {
                if !devices.contains(&d.name) || done.contains(&d.name) {
                    continue;
                }
                let Some(r) = &d.report else { continue };
                let state = serde_json::to_value(r.state)
                    .ok()
                    .and_then(|v| v.as_str().map(str::to_owned))
                    .unwrap_or_default();
                if d.converged {
                    say(format!(
                        "  {} runs revision {} ({} ms after the change)",
                        d.name,
                        r.running_revision.unwrap_or(0),
                        started.elapsed().as_millis()
                    ));
                    done.push(d.name.clone());
                } else if (state == "failed" || state == "rolled_back")
                    && r.target_digest.as_deref() == Some(d.desired_digest.as_str())
                {
                    say(format!(
                        "  {} {state}: {}",
                        d.name,
                        r.message.as_deref().unwrap_or("")
                    ));
                    done.push(d.name.clone());
                }
            }
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Runs `edgefn dev`.
#[allow(clippy::disallowed_methods)] // The synchronous main thread sleeps between polls.
pub fn run(args: &DevArgs) -> CliResult {
    let manifest_path = args.dir.join(project::MANIFEST);
    let project = Project::locate(Some(&manifest_path))?;
    let Some(loaded) = super::load_valid(&project)? else {
        return Ok(Outcome::Failed);
    };
    let devices: Vec<String> = if args.devices.is_empty() {
        loaded.manifest.devices.keys().cloned().collect()
    } else {
        for d in &args.devices {
            if !loaded.manifest.devices.contains_key(d) {
                return Err(CliError::InvalidArgument {
                    message: format!("no device `{d}` in the manifest"),
                    help: format!(
                        "devices: {}",
                        loaded
                            .manifest
                            .devices
                            .keys()
                            .cloned()
                            .collect::<Vec<_>>()
                            .join(", ")
                    ),
                });
            }
        }
        args.devices.clone()
    };
    let state = project.root.join(STATE_DIR);
    std::fs::create_dir_all(&state).map_err(CliError::io("create", &state))?;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .map_err(CliError::io("start the async runtime for", "edgefn dev"))?;

    // The control plane and its broker.
    let cloud_config = edgefn_cloud::Config {
        data: state.join("cloud"),
        admin_token_file: Some(state.join("admin.token")),
    };
    let prepared = edgefn_cloud::prepare(&cloud_config)
        .map_err(|e| err(format!("the local control plane: {e}")))?;
    let broker = std::net::TcpListener::bind("127.0.0.1:0")
        .map_err(CliError::io("listen for MQTT on", "127.0.0.1"))?;
    let broker_addr = broker
        .local_addr()
        .map_err(CliError::io("read the address of", "the broker"))?;
    let prepared = prepared.with_mqtt(edgefn_cloud::mqtt::MqttMode::Embedded(broker));
    let listener = rt
        .block_on(tokio::net::TcpListener::bind(&args.listen))
        .map_err(|e| err(format!("cannot listen on {}: {e}", args.listen)))?;
    let cloud_url = format!(
        "http://{}",
        listener
            .local_addr()
            .map_err(CliError::io("read the address of", "the control plane"))?
    );
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let stopped = |mut rx: tokio::sync::watch::Receiver<bool>| async move {
        let _ = rx.wait_for(|s| *s).await;
    };
    let cloud_task = rt.spawn(edgefn_cloud::serve(
        prepared,
        listener,
        stopped(stop_rx.clone()),
    ));
    let admin = std::fs::read_to_string(state.join("admin.token"))
        .map_err(CliError::io("read", state.join("admin.token")))?
        .trim()
        .to_owned();
    let client = Client::new(&cloud_url, &admin)?;
    let session = state.join("session.json");
    let session_json =
        serde_json::json!({"cloud": cloud_url, "token": admin, "pid": std::process::id()});
    project::write_atomic(&session, session_json.to_string().as_bytes())?;

    // Ctrl-C (or SIGTERM) ends the session.
    let interrupted = Arc::new(AtomicBool::new(false));
    rt.spawn({
        let flag = interrupted.clone();
        async move {
            let term = async {
                match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                    Ok(mut s) => {
                        s.recv().await;
                    }
                    Err(_) => std::future::pending::<()>().await,
                }
            };
            tokio::select! {
                _ = tokio::signal::ctrl_c() => {}
                () = term => {}
            }
            flag.store(true, Ordering::Relaxed);
        }
    });

    // One agent per device, each with a fresh registration.
    let sandbox = match args.sandbox {
        SandboxArg::Process => "process",
        SandboxArg::Container => "container",
        SandboxArg::Auto => "auto",
    };
    let mut agents = Vec::new();
    let mut endpoints = Vec::new();
    for d in &devices {
        let _ = client.delete(&format!("/v1/devices/{d}"));
        let (_, reg): (_, edgefn_schema::api::DeviceRegistered) = client.post(
            "/v1/devices",
            &edgefn_schema::api::NewDevice { name: d.clone() },
        )?;
        let text = format!(
            "cloud: {cloud_url}\ndevice: {d}\ntoken: {}\ndata: {}\nsandbox: {sandbox}\nmqtt: mqtt://{broker_addr}\nhealthWindow: 1s\npollWait: 30s\nreportInterval: 2s\n",
            reg.token,
            state.join("agents").join(d).display()
        );
        let config = edgefn_agent::AgentConfig::parse(&edgefn_schema::Source::new(
            format!("{d}.yaml"),
            text,
        ))
        .map_err(|e| err(e.to_string()))?;
        let local = rt
            .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
            .map_err(CliError::io("listen on", "127.0.0.1"))?;
        let local_mqtt = rt
            .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
            .map_err(CliError::io("listen on", "127.0.0.1"))?;
        let addr_of =
            |l: &tokio::net::TcpListener| l.local_addr().map(|a| a.to_string()).unwrap_or_default();
        endpoints.push((d.clone(), addr_of(&local), addr_of(&local_mqtt)));
        let name = d.clone();
        let hook: edgefn_agent::LogHook = Arc::new(move |l| {
            let mut out = std::io::stdout().lock();
            let _ = writeln!(out, "[{name}] {}: {}", l.binding, l.line);
        });
        agents.push(rt.spawn(edgefn_agent::run_with(
            config,
            edgefn_agent::Listeners {
                http: Some(local),
                mqtt: Some(local_mqtt),
            },
            stopped(stop_rx.clone()),
            Some(hook),
        )));
    }

    say(format!(
        "edgefn dev: project `{}` — {} function(s), {} device(s)",
        loaded.manifest.project,
        loaded.manifest.functions.len(),
        devices.len()
    ));
    say(format!(
        "  control plane  {cloud_url}  (state in {})",
        crate::project::display_path(&state)
    ));
    say(format!("  MQTT broker    mqtt://{broker_addr}"));
    for (d, addr, mqtt) in &endpoints {
        say(format!(
            "  agent {d:<8} local endpoint http://{addr}  local MQTT mqtt://{mqtt}"
        ));
    }
    let source = project.read_manifest()?;
    let submitted = crate::commands::apply::submit(
        &client,
        &project,
        &loaded.manifest,
        source.text(),
        provenance(),
        Output::Json,
    )?;
    say(format!(
        "applied revision {}; what runs where:",
        submitted.applied.revision
    ));
    describe(&loaded.manifest, &devices);
    follow(&client, &devices, Instant::now(), &interrupted);
    if let Some(d) = devices.first() {
        say("Try, in another terminal in this project:");
        say(format!(
            "  edgefn publish {d} commands/greet '{{\"name\": \"Ada\"}}'"
        ));
        say("  edgefn subscribe '#'");
        say("  edgefn status");
    }
    say("Watching for changes (Ctrl-C to stop)…");

    let mut manifest = loaded.manifest;
    let mut last = fingerprint(
        &project.root,
        &project.manifest_path,
        &function_dirs(&manifest),
    );
    while !args.once && !interrupted.load(Ordering::Relaxed) {
        std::thread::sleep(Duration::from_millis(300));
        let now = fingerprint(
            &project.root,
            &project.manifest_path,
            &function_dirs(&manifest),
        );
        if now == last {
            continue;
        }
        // Let a burst of writes settle.
        std::thread::sleep(Duration::from_millis(200));
        last = fingerprint(
            &project.root,
            &project.manifest_path,
            &function_dirs(&manifest),
        );
        let started = Instant::now();
        say("change detected: validating and re-applying…");
        let Some(reloaded) = super::load_valid(&project)? else {
            say("  not applied: fix the problems above (still watching)");
            continue;
        };
        let source = project.read_manifest()?;
        match crate::commands::apply::submit(
            &client,
            &project,
            &reloaded.manifest,
            source.text(),
            provenance(),
            Output::Json,
        ) {
            Ok(s) if s.applied.created => {
                say(format!(
                    "  revision {} applied (uploaded: {}); switching devices…",
                    s.applied.revision,
                    if s.uploaded.is_empty() {
                        "nothing".to_owned()
                    } else {
                        s.uploaded.join(", ")
                    }
                ));
                let running: Vec<String> = devices
                    .iter()
                    .filter(|d| reloaded.manifest.devices.contains_key(*d))
                    .cloned()
                    .collect();
                follow(&client, &running, started, &interrupted);
            }
            Ok(s) => say(format!(
                "  no change to what the devices run (revision {})",
                s.applied.revision
            )),
            Err(e) => say(format!("  not applied: {e}")),
        }
        manifest = reloaded.manifest;
        last = fingerprint(
            &project.root,
            &project.manifest_path,
            &function_dirs(&manifest),
        );
    }

    say("stopping…");
    let _ = stop_tx.send(true);
    rt.block_on(async {
        for a in agents {
            let _ = tokio::time::timeout(Duration::from_secs(20), a).await;
        }
        let _ = tokio::time::timeout(Duration::from_secs(10), cloud_task).await;
    });
    let _ = std::fs::remove_file(&session);
    say("stopped");
    Ok(Outcome::Success)
}

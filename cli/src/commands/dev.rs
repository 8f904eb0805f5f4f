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
        help: String::new(),
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

/// Waits until every running device converges (or fails), printing each as it does; returns
/// early on Ctrl-C, when `pending()` says a newer change waits, or after a minute, saying which
/// devices did not converge and what they last said. Agents that stop say why.
#[allow(clippy::disallowed_methods)] // The synchronous main thread, polling between requests.
fn follow(
    client: &Client,
    agents: &mut [DevAgent],
    rt: &tokio::runtime::Runtime,
    started: Instant,
    stop: &AtomicBool,
    pending: impl Fn() -> bool,
) {
    let mut done: Vec<String> = Vec::new();
    let mut last: Option<FleetStatus> = None;
    loop {
        for a in agents.iter_mut() {
            a.reap(rt);
            if a.stopped.is_some() && !done.contains(&a.name) {
                done.push(a.name.clone());
            }
        }
        if done.len() >= agents.len() || stop.load(Ordering::Relaxed) {
            return;
        }
        if pending() {
            say("  a newer change is waiting: applying it without waiting for the devices");
            return;
        }
        if started.elapsed() >= Duration::from_secs(60) {
            let status = last.as_ref();
            for a in agents.iter().filter(|a| !done.contains(&a.name)) {
                let line = status
                    .and_then(|s| {
                        s.devices
                            .iter()
                            .find(|d| d.name == a.name)
                            .map(|d| crate::rollout::progress_line(d, s.revision, true))
                    })
                    .unwrap_or_else(|| format!("{}: no report", a.name));
                say(format!("  not converged after 60 s: {line}"));
            }
            say("  (still watching: save again to re-apply, or see `edgefn status`)");
            return;
        }
        if let Ok(status) = client.get::<FleetStatus>("/v1/status") {
            for d in &status.devices {
                if !agents.iter().any(|a| a.name == d.name) || done.contains(&d.name) {
                    continue;
                }
                let Some(r) = &d.report else { continue };
                if d.converged {
                    say(format!(
                        "  {} runs revision {} ({} ms after the change)",
                        d.name,
                        super::fleet::running_revision(d, status.revision).unwrap_or(0),
                        started.elapsed().as_millis()
                    ));
                    done.push(d.name.clone());
                } else if crate::rollout::has_failed(d) {
                    let state = serde_json::to_value(r.state)
                        .ok()
                        .and_then(|v| v.as_str().map(str::to_owned))
                        .unwrap_or_default();
                    say(format!(
                        "  {} {state}: {}",
                        d.name,
                        r.message.as_deref().unwrap_or("")
                    ));
                    done.push(d.name.clone());
                }
            }
            last = Some(status);
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// What to try in another terminal, from the project itself: a publish that a route brings down
/// to a binding's trigger, and a subscribe to what routes send up.
fn hints(m: &Manifest, devices: &[String]) -> Vec<String> {
    let mut out = Vec::new();
    let mut publish = None;
    for d in devices {
        let Some(state) = edgefn_schema::resolve(m, d, &BTreeMap::new()) else {
            continue;
        };
        for b in state.bindings.iter().filter(|b| b.mode == Mode::Triggered) {
            for t in &b.triggers {
                // A concrete topic the trigger matches: wildcards filled in.
                let topic = t
                    .split('/')
                    .map(|l| match l {
                        "+" => "x",
                        "#" => "x",
                        other => other,
                    })
                    .collect::<Vec<_>>()
                    .join("/");
                let down = state.routes.iter().any(|r| {
                    r.to == edgefn_schema::RouteTarget::Local
                        && edgefn_schema::topic::matches(&r.filter, &topic)
                });
                if down && publish.is_none() {
                    publish = Some(format!(
                        "  edgefn publish {d} {topic} '{{}}'   # fires {}",
                        b.name
                    ));
                }
            }
        }
    }
    let up: Vec<&str> = m
        .routes
        .iter()
        .filter(|r| r.to == edgefn_schema::RouteTarget::Cloud)
        .map(|r| r.from.as_str())
        .collect();
    if publish.is_some() || !up.is_empty() {
        out.push("Try, in another terminal in this project:".to_owned());
    }
    if let Some(up) = up.first() {
        out.push(format!(
            "  edgefn subscribe '{up}'   # what the devices send up"
        ));
    }
    out.extend(publish);
    out.push("  edgefn status".to_owned());
    out
}

/// Runs `edgefn dev`.
#[allow(clippy::disallowed_methods)] // The synchronous main thread sleeps between polls.
pub fn run(args: &DevArgs) -> CliResult {
    // Like every command, the project is found from here upwards; a folder given names it.
    let project = if args.dir == Path::new(".") {
        Project::locate(None)
    } else {
        Project::locate(Some(&args.dir.join(project::MANIFEST)))
    }
    .map_err(|e| match e {
        CliError::NoManifest { searched } => CliError::InvalidArgument {
            message: format!(
                "no edgefn.yaml in {} or any parent folder",
                searched.display()
            ),
            help: "run `edgefn dev` in a project (or give its folder: `edgefn dev PATH`); `edgefn init NAME` creates one".into(),
        },
        other => other,
    })?;
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
    // It holds the admin token (and the session file that names it): the owner's alone.
    project::create_private_folder(&state)?;
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
    let prepared = prepared.with_mqtt(edgefn_cloud::MqttMode::Embedded(broker));
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
    project::write_secret(&session, session_json.to_string().as_bytes())?;

    // Ctrl-C, SIGTERM or SIGHUP (the terminal closed) ends the session: every agent and its
    // functions stop, and the session file goes.
    let interrupted = Arc::new(AtomicBool::new(false));
    rt.spawn({
        let flag = interrupted.clone();
        async move {
            let signal = |kind: tokio::signal::unix::SignalKind| async move {
                match tokio::signal::unix::signal(kind) {
                    Ok(mut s) => {
                        s.recv().await;
                    }
                    Err(_) => std::future::pending::<()>().await,
                }
            };
            tokio::select! {
                _ = tokio::signal::ctrl_c() => {}
                () = signal(tokio::signal::unix::SignalKind::terminate()) => {}
                () = signal(tokio::signal::unix::SignalKind::hangup()) => {}
            }
            flag.store(true, Ordering::Relaxed);
        }
    });

    // One agent per device, each with a fresh registration and a stop signal of its own (a
    // device removed from the manifest stops alone).
    let sandbox = match args.sandbox {
        SandboxArg::Process => "process",
        SandboxArg::Container => "container",
        SandboxArg::Auto => "auto",
    };
    let env = DevEnv {
        rt: &rt,
        client: &client,
        cloud_url: &cloud_url,
        broker_addr: &broker_addr.to_string(),
        sandbox,
        state: &state,
        function_paths: Arc::new(
            loaded
                .manifest
                .functions
                .iter()
                .map(|(n, f)| (n.clone(), f.path.clone()))
                .collect(),
        ),
        recent_errors: Arc::default(),
    };
    let mut agents: Vec<DevAgent> = Vec::new();
    for d in &devices {
        agents.push(env.start_agent(d)?);
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
    for a in &agents {
        say(a.endpoints.clone());
    }
    let source = project.read_manifest()?;
    let mut last = fingerprint(
        &project.root,
        &project.manifest_path,
        &function_dirs(&loaded.manifest),
    );
    let submitted = crate::rollout::submit(
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
    let changed = |last: &Vec<(PathBuf, u64, SystemTime)>, m: &Manifest| {
        fingerprint(&project.root, &project.manifest_path, &function_dirs(m)) != *last
    };
    follow(
        &client,
        &mut agents,
        &rt,
        Instant::now(),
        &interrupted,
        || changed(&last, &loaded.manifest),
    );
    if agents.iter().all(|a| a.stopped.is_some()) && !agents.is_empty() {
        stop_all(&rt, &stop_tx, agents, cloud_task, &session);
        return Err(CliError::InvalidArgument {
            message: "no agent could run: see why above".into(),
            help: "with --sandbox container, run as root on Linux; or use --sandbox process".into(),
        });
    }
    let alive: Vec<String> = agents
        .iter()
        .filter(|a| a.stopped.is_none())
        .map(|a| a.name.clone())
        .collect();
    for hint in hints(&loaded.manifest, &alive) {
        say(hint);
    }
    say("Watching for changes (Ctrl-C to stop)…");

    let mut manifest = loaded.manifest;
    while !args.once && !interrupted.load(Ordering::Relaxed) {
        std::thread::sleep(Duration::from_millis(300));
        for a in &mut agents {
            a.reap(&rt);
        }
        if !changed(&last, &manifest) {
            continue;
        }
        // Let a burst of writes settle, then take the fingerprint of what is applied: a save
        // after this point is seen by the next round, never lost.
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
        // The fingerprint of the functions the new manifest names.
        last = fingerprint(
            &project.root,
            &project.manifest_path,
            &function_dirs(&reloaded.manifest),
        );
        // Devices added to the manifest get an agent; removed ones stop (unless --device
        // chose the devices).
        if args.devices.is_empty() {
            for d in reloaded.manifest.devices.keys() {
                if !agents.iter().any(|a| &a.name == d) {
                    match env.start_agent(d) {
                        Ok(a) => {
                            say(format!("  new device {d}: started its agent"));
                            say(a.endpoints.clone());
                            agents.push(a);
                        }
                        Err(e) => say(format!("  new device {d}: its agent cannot start: {e}")),
                    }
                }
            }
            let (gone, kept): (Vec<DevAgent>, Vec<DevAgent>) = agents
                .into_iter()
                .partition(|a| !reloaded.manifest.devices.contains_key(&a.name));
            agents = kept;
            for a in gone {
                say(format!(
                    "  device {} left the manifest: stopping its agent",
                    a.name
                ));
                a.stop(&rt);
            }
        }
        let source = project.read_manifest()?;
        match crate::rollout::submit(
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
                follow(&client, &mut agents, &rt, started, &interrupted, || {
                    changed(&last, &reloaded.manifest)
                });
            }
            Ok(s) => say(format!(
                "  no change to what the devices run (revision {})",
                s.applied.revision
            )),
            Err(e) => say(format!("  not applied: {e}")),
        }
        manifest = reloaded.manifest;
    }

    stop_all(&rt, &stop_tx, agents, cloud_task, &session);
    Ok(Outcome::Success)
}

/// `text` with the paths of a function's installed bundle (`…/bundles/<sha256>/x.js`, or
/// `/fn/x.js` in a container) written as the project's (`functions/greeter/x.js`), so that an
/// error points at the file the user edits.
fn project_paths(text: &str, function_path: Option<&str>) -> String {
    let Some(dir) = function_path else {
        return text.to_owned();
    };
    let dir = dir.trim_end_matches('/');
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(at) = rest.find("/bundles/") {
        let after = &rest[at + "/bundles/".len()..];
        let digest_ok = after.len() > 64
            && after.as_bytes()[..64].iter().all(u8::is_ascii_hexdigit)
            && after.as_bytes()[64] == b'/';
        if !digest_ok {
            out.push_str(&rest[..at + 1]);
            rest = &rest[at + 1..];
            continue;
        }
        // The path starts after the last space, quote or bracket before `/bundles/`.
        let start = rest[..at]
            .rfind(|c: char| c.is_whitespace() || "\"'(<[".contains(c))
            .map_or(0, |i| i + 1);
        out.push_str(&rest[..start]);
        out.push_str(dir);
        out.push('/');
        rest = &after[65..];
    }
    out.push_str(rest);
    out.replace(" /fn/", &format!(" {dir}/"))
        .replace("\"/fn/", &format!("\"{dir}/"))
        .replace("(/fn/", &format!("({dir}/"))
}

/// Whether a traceback line is a frame of the language shim or of node's own internals (not the
/// user's code): python's shim is compiled as `edgefn-shim.py`, node's runs in `[eval]`.
pub(crate) fn is_shim_frame(line: &str) -> bool {
    let l = line.trim_start();
    l.starts_with("File \"edgefn-shim.py\"")
        || (l.starts_with("at ") && (l.contains("[eval]") || l.contains("(node:")))
}

/// What starting an agent needs.
struct DevEnv<'a> {
    rt: &'a tokio::runtime::Runtime,
    client: &'a Client,
    cloud_url: &'a str,
    broker_addr: &'a str,
    sandbox: &'a str,
    state: &'a Path,
    /// Each function's folder in the project, by function name.
    function_paths: Arc<BTreeMap<String, String>>,
    /// Errors shown in the last seconds, with the device that showed each first.
    recent_errors: Arc<std::sync::Mutex<Vec<(String, String, Instant)>>>,
}

/// One device's agent, running in this process.
struct DevAgent {
    name: String,
    /// `  agent NAME local endpoint ... local MQTT ...`.
    endpoints: String,
    stop: tokio::sync::watch::Sender<bool>,
    task: Option<tokio::task::JoinHandle<Result<(), edgefn_agent::AgentError>>>,
    /// Why it stopped, once it did.
    stopped: Option<String>,
}

impl DevEnv<'_> {
    /// Registers `d` afresh and starts its agent.
    fn start_agent(&self, d: &str) -> Result<DevAgent, CliError> {
        let _ = self.client.delete(&format!("/v1/devices/{d}"));
        let (_, reg): (_, edgefn_schema::api::DeviceRegistered) = self.client.post(
            "/v1/devices",
            &edgefn_schema::api::NewDevice { name: d.to_owned() },
        )?;
        let text = format!(
            "cloud: {}\ndevice: {d}\ntoken: {}\ndata: {}\nsandbox: {}\nmqtt: mqtt://{}\nhealthWindow: 1s\npollWait: 30s\nreportInterval: 2s\n",
            self.cloud_url,
            reg.token,
            self.state.join("agents").join(d).display(),
            self.sandbox,
            self.broker_addr,
        );
        let config = edgefn_agent::AgentConfig::parse(&edgefn_schema::Source::new(
            format!("{d}.yaml"),
            text,
        ))
        .map_err(|e| err(e.to_string()))?;
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
    fn reap(&mut self, rt: &tokio::runtime::Runtime) {
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
    fn stop(mut self, rt: &tokio::runtime::Runtime) {
        let _ = self.stop.send(true);
        if let Some(t) = self.task.take() {
            let _ = rt.block_on(async { tokio::time::timeout(Duration::from_secs(20), t).await });
        }
    }
}

fn stop_all(
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

#[cfg(test)]
mod tests {
    use super::{is_shim_frame, project_paths};

    #[test]
    fn shim_frames_are_recognised() {
        assert!(is_shim_frame(
            "  File \"edgefn-shim.py\", line 120, in _serve"
        ));
        assert!(is_shim_frame(
            "    at serve (eval at <anonymous> ([eval]:1:91), <anonymous>:150:20)"
        ));
        assert!(!is_shim_frame("  File \"/fn/main.py\", line 4, in handle"));
        assert!(is_shim_frame("    at Socket.emit (node:events:524:28)"));
        assert!(!is_shim_frame(
            "    at exports.handler (functions/greeter/index.js:2:31)"
        ));
    }

    #[test]
    fn bundle_paths_become_the_projects() {
        let d = "a".repeat(64);
        let line = format!(
            "TypeError: x is not a function\n    at exports.handler (/tmp/p/.edgefn/dev/agents/gw-01/bundles/{d}/index.js:11:3)"
        );
        assert_eq!(
            project_paths(&line, Some("functions/greeter")),
            "TypeError: x is not a function\n    at exports.handler (functions/greeter/index.js:11:3)"
        );
        assert_eq!(
            project_paths("File \"/fn/main.py\", line 4", Some("functions/f")),
            "File \"functions/f/main.py\", line 4"
        );
        assert_eq!(
            project_paths("/bundles/short/x", Some("f")),
            "/bundles/short/x"
        );
        assert_eq!(project_paths("nothing", None), "nothing");
    }
}

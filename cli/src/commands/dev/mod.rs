//! `edgefn dev`: the whole product on this machine. An embedded control plane and broker, one
//! agent per device of the manifest, the project applied through the real path (package, upload,
//! revision, long-poll, download, switch), function logs streamed with their device's name, and
//! every change to the project re-applied as an over-the-air update.
//!
//! Other terminals in the project find the running session (`.edgefn/dev/session.json`), so
//! `edgefn publish`, `edgefn subscribe`, `edgefn status` and the rest talk to it with no flags.

//!
//! The jobs, one module each: [`agents`] (one in-process agent per device), [`watch`] (seeing the
//! project change), [`follow`] (following a change to the devices), [`output`] (what the session
//! prints of itself) and [`interrupt`] (the session's end). Submitting a revision is
//! [`crate::rollout`]'s, shared with `edgefn apply`; the session file is [`crate::session`]'s.

mod agents;
mod follow;
mod interrupt;
mod output;
mod watch;

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use edgefn_schema::Manifest;
use edgefn_schema::api::Provenance;

use self::agents::{DevAgent, DevEnv, stop_all};
use self::follow::follow;
use self::interrupt::Interrupt;
use self::output::{describe, hints, say};
use self::watch::{Fingerprint, fingerprint, function_dirs};
use crate::args::{DevArgs, Output, SandboxArg};
use crate::client::Client;
use crate::error::{CliError, CliResult, Outcome};
use crate::project::{self, Project};
use crate::session::{self, DevSession, STATE_DIR};

/// What a revision applied by `edgefn dev` records: a dirty working tree, by this tool.
fn provenance() -> Provenance {
    Provenance {
        message: Some("edgefn dev".into()),
        dirty: true,
        tool: Some(format!("edgefn {}", env!("CARGO_PKG_VERSION"))),
        ..Provenance::default()
    }
}

/// Runs `edgefn dev`.
pub(crate) fn run(args: &DevArgs) -> CliResult {
    // Secrets folders an earlier, killed session left on /dev/shm.
    crate::local_secrets::sweep_stale();
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
    let Some(loaded) = project::load_valid(&project)? else {
        return Ok(Outcome::Failed);
    };
    let devices: Vec<String> = if args.devices.is_empty() {
        loaded.manifest.devices.keys().cloned().collect()
    } else {
        for d in &args.devices {
            if !loaded.manifest.devices.contains_key(d) {
                return Err(project::not_in_manifest(
                    "device",
                    d,
                    loaded.manifest.devices.keys(),
                ));
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
        // Beside the data folder, not in it (both git-ignored under `.edgefn/`).
        secret_key_file: Some(state.join("cloud.secret-key")),
        objects: None,
    };
    let prepared = edgefn_cloud::prepare(&cloud_config)
        .map_err(|e| CliError::failed("the local control plane", "", e))?;
    let broker = std::net::TcpListener::bind("127.0.0.1:0")
        .map_err(CliError::io("listen for MQTT on", "127.0.0.1"))?;
    let broker_addr = broker
        .local_addr()
        .map_err(CliError::io("read the address of", "the broker"))?;
    let prepared = prepared.with_mqtt(edgefn_cloud::MqttMode::Embedded(broker));
    let listener = rt
        .block_on(tokio::net::TcpListener::bind(&args.listen))
        .map_err(|e| CliError::failed(format!("cannot listen on {}", args.listen), "", e))?;
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
    let session = session::write(
        &state,
        &DevSession {
            cloud: cloud_url.clone(),
            token: admin,
            pid: std::process::id(),
        },
    )?;

    // Ctrl-C, SIGTERM or SIGHUP (the terminal closed) ends the session: every agent and its
    // functions stop, and the session file goes.
    let interrupted = Interrupt::default();
    // The handlers are installed here, before the agents start.
    let signalled = {
        let _in_runtime = rt.enter();
        edgefn_os::signal::shutdown_or_hangup()
    };
    rt.spawn({
        let flag = interrupted.clone();
        async move {
            signalled.await;
            flag.set();
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
    let mut secrets_sent = std::collections::BTreeMap::new();
    crate::local_secrets::push_changed(
        &client,
        &project.root,
        &loaded.manifest,
        &mut secrets_sent,
    )?;
    let submitted = crate::rollout::submit(
        &client,
        &project,
        &loaded.manifest,
        source.text(),
        provenance(),
        crate::rollout::How {
            output: Output::Json,
            host_layers: true,
            sign: None,
            rollout: None,
        },
    )?;
    say(format!(
        "applied revision {}; what runs where:",
        submitted.applied.revision
    ));
    describe(&loaded.manifest, &devices);
    let changed = |last: &Fingerprint, m: &Manifest| {
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
    // The project's files are polled (see `watch`); Ctrl-C ends a wait at once.
    while !args.once && !interrupted.wait(Duration::from_millis(300)) {
        for a in &mut agents {
            a.reap(&rt);
        }
        if !changed(&last, &manifest) {
            continue;
        }
        // Let a burst of writes settle, then take the fingerprint of what is applied: a save
        // after this point is seen by the next round, never lost. (A debounce: no event says
        // that an editor has finished saving.)
        if interrupted.wait(Duration::from_millis(200)) {
            break;
        }
        last = fingerprint(
            &project.root,
            &project.manifest_path,
            &function_dirs(&manifest),
        );
        let started = Instant::now();
        say("change detected: validating and re-applying…");
        let Some(reloaded) = project::load_valid(&project)? else {
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
        let submitted = crate::local_secrets::push_changed(
            &client,
            &project.root,
            &reloaded.manifest,
            &mut secrets_sent,
        )
        .and_then(|()| {
            crate::rollout::submit(
                &client,
                &project,
                &reloaded.manifest,
                source.text(),
                provenance(),
                crate::rollout::How {
                    output: Output::Json,
                    host_layers: true,
                    sign: None,
                    rollout: None,
                },
            )
        });
        match submitted {
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
    remove_secrets_dirs();
    Ok(Outcome::Success)
}

/// The prefix of this session's secrets folders on `/dev/shm`.
fn secrets_prefix() -> String {
    format!("edgefn-dev-{}-", std::process::id())
}

/// The folder where device `device`'s agent keeps its secrets in this session: on `/dev/shm`
/// (a memory file system), `None` without one (the agent then chooses, or refuses to run
/// secrets).
fn secrets_dir(device: &str) -> Option<std::path::PathBuf> {
    let shm = std::path::Path::new("/dev/shm");
    shm.is_dir()
        .then(|| shm.join(format!("{}{device}", secrets_prefix())))
}

/// Removes this session's secrets folders (their files are the local values).
fn remove_secrets_dirs() {
    let prefix = secrets_prefix();
    if let Ok(entries) = std::fs::read_dir("/dev/shm") {
        for e in entries.flatten() {
            if e.file_name().to_string_lossy().starts_with(&prefix) {
                let _ = std::fs::remove_dir_all(e.path());
            }
        }
    }
}

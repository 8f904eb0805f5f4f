//! How instances of one function are started: the command line, environment and limits worked
//! out once per pool or supervisor ([`Launch`]), and the running process ([`Running`]) whichever
//! sandbox holds it.

use std::os::fd::OwnedFd;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use edgefn_schema::{Interface, Mode, Runtime};
use nix::sys::signal::Signal;
use tokio::process::{Child, ChildStderr, ChildStdout};

use crate::error::{Exit, StartError};
use crate::function::FunctionSpec;
use crate::log::LogSink;
use crate::protocol::{PROTOCOL_VERSION, WireContext};
use crate::sandbox::container::{self, HelperConfig};
use crate::sandbox::devices;
use crate::sandbox::process::{self, ProcessCommand, Rlimits};
use crate::sandbox::record::{self, RecordGuard};
use crate::sandbox::{Sandbox, SandboxKind};
use crate::shim;

/// Address space a node instance may reserve beyond its memory limit: V8 reserves large virtual
/// regions up front (node 20 does not start under a 512 MiB RLIMIT_AS), so its heap is capped
/// with `--max-old-space-size` instead.
const NODE_ADDRESS_SPACE_EXTRA: u64 = 2 << 30;

/// Search path inside instances.
const PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// Everything needed to start instances of one function.
#[derive(Debug)]
pub(crate) struct Launch {
    pub(crate) spec: FunctionSpec,
    pub(crate) sandbox: Sandbox,
    pub(crate) log: LogSink,
    pub(crate) function: Arc<str>,
    pub(crate) binding: Arc<str>,
    pub(crate) context: WireContext,
    /// A triggered plain program (`interface: stdio` or `lines`): the channel is its stdin and
    /// stdout, and it never says hello. A continuous plain program needs nothing of the
    /// runtime: it simply runs, its stdout and stderr logs.
    pub(crate) plain: bool,
    program: PathBuf,
    args: Vec<String>,
    env: Vec<(String, String)>,
}

/// A started process and its output pipes.
#[derive(Debug)]
pub(crate) struct Started {
    pub(crate) running: Running,
    /// The instance's stdout, a log; absent for a plain program, whose stdout is the channel.
    pub(crate) stdout: Option<ChildStdout>,
    pub(crate) stderr: ChildStderr,
}

/// A running instance process.
#[derive(Debug)]
pub(crate) struct Running {
    child: Child,
    /// Leader of the instance's process group (the helper's, for a container).
    pid: i32,
    container: Option<ContainerHandle>,
    ended: Option<Ended>,
    /// The record of this process for the start-up sweep, removed when this is dropped.
    _record: Option<RecordGuard>,
}

/// The runtime's ends of a container helper's pipes.
#[derive(Debug)]
struct ContainerHandle {
    /// Closing it kills the container; a `TERM` line forwards SIGTERM.
    control: Arc<Mutex<Option<std::fs::File>>>,
    status: Option<OwnedFd>,
}

/// How an instance process ended.
#[derive(Debug, Clone)]
pub(crate) struct Ended {
    pub(crate) exit: Exit,
    /// The container's cgroup OOM killer struck.
    pub(crate) oom_killed: bool,
    /// The sandbox failed (container helper's report).
    pub(crate) error: Option<String>,
}

/// Kills an instance from anywhere (e.g. a task reading its channel).
#[derive(Debug, Clone)]
pub(crate) enum Killer {
    Group(i32),
    Container(Arc<Mutex<Option<std::fs::File>>>),
}

impl Killer {
    /// SIGKILLs the whole instance.
    pub(crate) fn kill(&self) {
        match self {
            Killer::Group(pid) => process::signal_group(*pid, Signal::SIGKILL),
            Killer::Container(control) => {
                control.lock().unwrap_or_else(|p| p.into_inner()).take();
            }
        }
    }
}

impl Running {
    /// A handle that kills this instance.
    pub(crate) fn killer(&self) -> Killer {
        match &self.container {
            Some(c) => Killer::Container(c.control.clone()),
            None => Killer::Group(self.pid),
        }
    }

    /// Sends SIGTERM or SIGKILL to the whole instance.
    pub(crate) fn signal(&self, signal: Signal) {
        match &self.container {
            None => process::signal_group(self.pid, signal),
            Some(c) => {
                let mut control = c.control.lock().unwrap_or_else(|p| p.into_inner());
                if signal == Signal::SIGKILL {
                    control.take();
                } else if let Some(f) = control.as_mut() {
                    let _ = std::io::Write::write_all(f, b"TERM\n");
                }
            }
        }
    }

    /// Waits for the process to end (cancel-safe; returns the same status when called again).
    pub(crate) async fn wait(&mut self) -> Ended {
        if let Some(e) = &self.ended {
            return e.clone();
        }
        let exit = match self.child.wait().await {
            Ok(s) => Exit::from_status(s),
            Err(_) => Exit {
                code: None,
                signal: None,
            },
        };
        let ended = match &mut self.container {
            None => Ended {
                exit,
                oom_killed: false,
                error: None,
            },
            Some(c) => {
                let report = c
                    .status
                    .take()
                    .map(container::read_report)
                    .unwrap_or_default();
                Ended {
                    exit: report.exit.unwrap_or(exit),
                    oom_killed: report.oom,
                    error: report.error,
                }
            }
        };
        self.ended = Some(ended.clone());
        ended
    }
}

/// Points the interpreter at a dependency layer through its own search path: `PYTHONPATH` for
/// python (after the function's folder, which the shim puts first on `sys.path`), `NODE_PATH`
/// at the layer's `node_modules/` for node (found by `require` after the function's own
/// `node_modules/`, if it has one). A value the binding set is kept, after the layer's.
fn layer_env(env: &mut Vec<(String, String)>, runtime: Runtime, layer: &std::path::Path) {
    let (var, dir) = match runtime {
        Runtime::Python3 => ("PYTHONPATH", layer.to_path_buf()),
        Runtime::Node => ("NODE_PATH", layer.join("node_modules")),
        Runtime::Exec => return,
    };
    let mut value = dir.display().to_string();
    if let Some(i) = env.iter().position(|(k, _)| k == var) {
        let (_, theirs) = env.remove(i);
        if !theirs.is_empty() {
            value = format!("{value}:{theirs}");
        }
    }
    env.push((var.into(), value));
}

impl Launch {
    pub(crate) fn new(
        spec: FunctionSpec,
        sandbox: Sandbox,
        log: LogSink,
    ) -> Result<Launch, StartError> {
        let bundle = match sandbox.kind() {
            SandboxKind::Container => PathBuf::from(container::BUNDLE_MOUNT),
            _ => spec.bundle_dir.clone(),
        };
        let (program, args, shim_env) =
            shim::command_line(&spec, &sandbox.options().interpreters, &bundle)
                .map_err(StartError::Sandbox)?;
        let mut env: Vec<(String, String)> = vec![
            ("PATH".into(), PATH.into()),
            ("LANG".into(), "C.UTF-8".into()),
            ("HOME".into(), "/tmp".into()),
        ];
        if spec.runtime == Runtime::Python3 {
            env.push(("PYTHONUNBUFFERED".into(), "1".into()));
            env.push(("PYTHONDONTWRITEBYTECODE".into(), "1".into()));
        }
        for (k, v) in &spec.binding.env {
            env.retain(|(ek, _)| ek != k);
            env.push((k.clone(), v.clone()));
        }
        env.retain(|(k, _)| !k.starts_with("EDGEFN_"));
        env.extend([
            ("EDGEFN_FUNCTION".into(), spec.binding.function.clone()),
            ("EDGEFN_BINDING".into(), spec.binding.name.clone()),
            ("EDGEFN_DEVICE".into(), spec.device.clone()),
            ("EDGEFN_REVISION".into(), spec.revision.to_string()),
            ("EDGEFN_MODE".into(), spec.binding.mode.as_str().into()),
            ("EDGEFN_PROTOCOL".into(), PROTOCOL_VERSION.to_string()),
        ]);
        if spec.secrets_dir.is_some() {
            let dir = match sandbox.kind() {
                SandboxKind::Container => container::SECRETS_MOUNT.to_owned(),
                _ => spec
                    .secrets_dir
                    .as_ref()
                    .map(|d| d.display().to_string())
                    .unwrap_or_default(),
            };
            env.push((crate::function::SECRETS_DIR_ENV.into(), dir));
        }
        // Models: the folder and one variable per model (in a container, where they are bound).
        if !spec.models.is_empty() {
            let container = sandbox.kind() == SandboxKind::Container;
            let dir = match (&spec.models_dir, container) {
                (_, true) => Some(crate::function::MODELS_MOUNT.to_owned()),
                (Some(d), false) => Some(d.display().to_string()),
                (None, false) => None,
            };
            if let Some(dir) = dir {
                env.push((crate::function::MODELS_DIR_ENV.into(), dir));
            }
            for (name, path) in &spec.models {
                let at = if container {
                    format!("{}/{name}", crate::function::MODELS_MOUNT)
                } else {
                    path.display().to_string()
                };
                env.push((edgefn_schema::Model::env_var(name), at));
            }
        }
        env.extend(shim_env);
        if let Some(layer) = &spec.layer_dir {
            let layer = match sandbox.kind() {
                SandboxKind::Container => PathBuf::from(container::LAYER_MOUNT),
                _ => layer.clone(),
            };
            layer_env(&mut env, spec.runtime, &layer);
        }
        let context = WireContext {
            function: spec.binding.function.clone(),
            binding: spec.binding.name.clone(),
            device: spec.device.clone(),
            revision: spec.revision,
        };
        Ok(Launch {
            plain: spec.runtime == Runtime::Exec
                && spec.interface != Interface::Protocol
                && spec.binding.mode == Mode::Triggered,
            function: spec.binding.function.as_str().into(),
            binding: spec.binding.name.as_str().into(),
            context,
            spec,
            sandbox,
            log,
            program,
            args,
            env,
        })
    }

    /// Whether each event gets a process of its own (`interface: stdio`).
    pub(crate) fn per_event(&self) -> bool {
        self.plain && self.spec.interface == Interface::Stdio
    }

    /// Starts instance number `instance` with `channel` as its fd 3 (or stdin and stdout, for a
    /// plain program) and `extra_env` added to its environment (a per-event program's
    /// `EDGEFN_TOPIC`).
    pub(crate) fn spawn(
        &self,
        instance: u64,
        channel: OwnedFd,
        extra_env: &[(String, String)],
    ) -> std::io::Result<Started> {
        if self.sandbox.kind() == SandboxKind::Container {
            return self.spawn_container(instance, channel, extra_env);
        }
        let bundle = &self.spec.bundle_dir;
        if !bundle.is_dir() {
            return Err(std::io::Error::new(
                std::io::ErrorKind::NotFound,
                format!("the bundle folder {} does not exist", bundle.display()),
            ));
        }
        // No isolation of devices here, but a node the binding asks for must be present.
        devices::grant(&self.spec.binding, false)
            .map_err(|e| std::io::Error::new(std::io::ErrorKind::NotFound, e))?;
        let mut env = self.env.clone();
        env.push(("EDGEFN_INSTANCE".into(), instance.to_string()));
        env.extend(extra_env.iter().cloned());
        let opts = self.sandbox.options();
        let memory = self.spec.binding.memory_bytes;
        let address_space = match self.spec.runtime {
            Runtime::Node => memory.saturating_add(NODE_ADDRESS_SPACE_EXTRA),
            Runtime::Python3 | Runtime::Exec => memory,
        };
        let cmd = ProcessCommand {
            program: self.program.clone(),
            args: self.args.clone(),
            env,
            cwd: self.spec.bundle_dir.clone(),
            rlimits: Some(Rlimits {
                address_space: Some(address_space),
                cpu_seconds: opts.cpu_time.map(|d| d.as_secs().max(1)),
                open_files: opts.max_open_files,
            }),
            stdin: None,
            channel_as_stdio: self.plain,
            extra_fds: Vec::new(),
            user: opts.run_as,
            kill_on_drop: true,
            parent_death: true,
        };
        let spawned = process::spawn(cmd, &channel)?;
        drop(channel);
        let record = self.record(spawned.pid, None)?;
        Ok(Started {
            running: Running {
                child: spawned.child,
                pid: spawned.pid,
                container: None,
                ended: None,
                _record: record,
            },
            stdout: spawned.stdout,
            stderr: spawned.stderr,
        })
    }

    /// Records process `pid` (and its container) for the start-up sweep, when the sandbox keeps
    /// records. Failing to record kills the process: an instance nothing could find after a
    /// crash is not started.
    fn record(
        &self,
        pid: i32,
        container: Option<(String, PathBuf)>,
    ) -> std::io::Result<Option<RecordGuard>> {
        let Some(dir) = &self.sandbox.options().records else {
            return Ok(None);
        };
        record::write(dir, pid, container)
            .map(Some)
            .inspect_err(|_| process::signal_group(pid, Signal::SIGKILL))
    }

    /// Starts the container helper for instance number `instance`.
    fn spawn_container(
        &self,
        instance: u64,
        channel: OwnedFd,
        extra_env: &[(String, String)],
    ) -> std::io::Result<Started> {
        let opts = self.sandbox.options();
        let Some(helper) = &opts.helper else {
            return Err(std::io::Error::other(
                "no sandbox helper program configured",
            ));
        };
        let granted = devices::grant(&self.spec.binding, true)
            .map_err(|e| std::io::Error::new(std::io::ErrorKind::NotFound, e))?;
        let mut env = self.env.clone();
        env.push(("EDGEFN_INSTANCE".into(), instance.to_string()));
        env.extend(extra_env.iter().cloned());
        let config = HelperConfig {
            id: container::container_id(&self.binding, instance),
            state_dir: opts.state_dir.clone(),
            bundle_dir: std::fs::canonicalize(&self.spec.bundle_dir)?,
            layer_dir: self
                .spec
                .layer_dir
                .as_ref()
                .map(std::fs::canonicalize)
                .transpose()?,
            models: self
                .spec
                .models
                .iter()
                .map(|(n, p)| Ok((n.clone(), std::fs::canonicalize(p)?)))
                .collect::<std::io::Result<_>>()?,
            program: self.program.clone(),
            args: self.args.clone(),
            env,
            memory_bytes: self.spec.binding.memory_bytes,
            cpu_millis: self.spec.binding.cpu_millis,
            max_pids: opts.max_pids,
            max_open_files: opts.max_open_files,
            user: opts.run_as,
            probe: false,
            channel_as_stdio: self.plain,
            secrets_dir: self.spec.secrets_dir.clone(),
            device_nodes: granted.nodes,
            read_only_files: granted.libraries,
        };
        let (control_read, control_write) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC)?;
        let (status_read, status_write) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC)?;
        let cmd = ProcessCommand {
            program: helper.clone(),
            args: vec![
                container::HELPER_MARKER.into(),
                serde_json::to_string(&config).map_err(std::io::Error::other)?,
            ],
            env: Vec::new(),
            cwd: PathBuf::from("/"),
            rlimits: None,
            stdin: Some(control_read),
            channel_as_stdio: false,
            extra_fds: vec![(status_write, container::STATUS_FD)],
            // The helper needs root; the container's process gets `run_as`.
            user: None,
            kill_on_drop: false,
            parent_death: false,
        };
        let id = config.id.clone();
        let spawned = process::spawn(cmd, &channel)?;
        drop(channel);
        let control = std::fs::File::from(control_write);
        let record = self.record(spawned.pid, Some((id, opts.state_dir.clone())))?;
        Ok(Started {
            running: Running {
                child: spawned.child,
                pid: spawned.pid,
                container: Some(ContainerHandle {
                    control: Arc::new(Mutex::new(Some(control))),
                    status: Some(status_read),
                }),
                ended: None,
                _record: record,
            },
            stdout: spawned.stdout,
            stderr: spawned.stderr,
        })
    }
}

//! Sandboxes: how an instance's process is isolated and limited.
//!
//! - `process`: a child process in its own session and process group, with rlimits, a clean
//!   environment and the bundle as working folder; stopping kills the whole group.
//! - `container` (Linux, root, cgroups): the instance runs in new pid/mount/ipc/uts namespaces
//!   via libcontainer, with cgroup limits; the fork happens in a single-threaded helper process.
//!
//! [`Sandbox::new`] resolves [`SandboxKind::Auto`] once and says why it picked what it picked.

pub(crate) mod container;
pub(crate) mod devices;
pub(crate) mod helper;
pub(crate) mod process;
pub(crate) mod record;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use crate::shim::Interpreters;

/// Which sandbox to run instances in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum SandboxKind {
    /// A process group with rlimits.
    Process,
    /// A libcontainer container with cgroup limits.
    Container,
    /// Container where it works, else process.
    Auto,
}

impl SandboxKind {
    /// `process`, `container` or `auto`.
    pub fn as_str(self) -> &'static str {
        match self {
            SandboxKind::Process => "process",
            SandboxKind::Container => "container",
            SandboxKind::Auto => "auto",
        }
    }
}

impl std::fmt::Display for SandboxKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::str::FromStr for SandboxKind {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "process" => Ok(SandboxKind::Process),
            "container" => Ok(SandboxKind::Container),
            "auto" => Ok(SandboxKind::Auto),
            _ => Err(format!(
                "unknown sandbox '{s}' (expected process, container or auto)"
            )),
        }
    }
}

/// How to set up sandboxes.
#[derive(Debug, Clone)]
pub struct SandboxOptions {
    /// The sandbox wanted.
    pub kind: SandboxKind,
    /// Interpreters for the python3 and node runtimes.
    pub interpreters: Interpreters,
    /// Open-file limit of an instance (RLIMIT_NOFILE).
    pub max_open_files: u64,
    /// CPU time an instance may use over its whole life (RLIMIT_CPU), after which it is
    /// killed and replaced; `None` for no limit. The CPU *rate* (the `cpu` setting) is enforced
    /// only by the container sandbox.
    pub cpu_time: Option<Duration>,
    /// Most processes in a container (cgroup pids limit).
    pub max_pids: u64,
    /// User and group (uid, gid) an instance runs as, in either sandbox. `None` keeps the
    /// runtime's own user (root on a device). In a container, root keeps only the CAP_AUDIT_WRITE,
    /// CAP_KILL and CAP_NET_BIND_SERVICE capabilities but can still read root-owned files of the
    /// host's `/etc`; with a user such as `(65534, 65534)` (nobody) it cannot. The bundle must be
    /// readable by that user.
    pub run_as: Option<(u32, u32)>,
    /// The program that runs the container helper: a binary that calls
    /// [`crate::sandbox_helper_main_if_requested`] first thing in `main`, or the
    /// `edgefn-sandbox-helper` binary of this crate. Required for containers.
    pub helper: Option<PathBuf>,
    /// Folder for container state and root filesystems (e.g. `/run/edgefn`).
    pub state_dir: PathBuf,
    /// Folder where every running instance process is recorded (pid, start time, container),
    /// so that a later runtime can kill what this one left if it dies without stopping them
    /// ([`Sandbox::sweep_leftovers`]); `None` (the default) keeps no records. Give a folder on
    /// disk that survives the runtime (a device agent uses its data folder).
    pub records: Option<PathBuf>,
}

impl Default for SandboxOptions {
    fn default() -> Self {
        SandboxOptions {
            kind: SandboxKind::Process,
            interpreters: Interpreters::default(),
            max_open_files: 1024,
            cpu_time: Some(Duration::from_secs(3600)),
            max_pids: 256,
            run_as: None,
            helper: None,
            state_dir: PathBuf::from("/run/edgefn"),
            records: None,
        }
    }
}

/// Why a sandbox could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum SandboxError {
    /// Containers were asked for but cannot work here.
    #[error("container sandbox unavailable: {0}")]
    ContainerUnavailable(String),
}

/// A resolved sandbox, shared by the pools and supervisors that use it.
#[derive(Debug, Clone)]
pub struct Sandbox {
    pub(crate) inner: Arc<SandboxInner>,
}

#[derive(Debug)]
pub(crate) struct SandboxInner {
    pub(crate) kind: SandboxKind,
    pub(crate) reason: String,
    pub(crate) options: SandboxOptions,
}

impl Sandbox {
    /// Resolves `options.kind`; for [`SandboxKind::Auto`] this probes whether containers work.
    pub fn new(options: SandboxOptions) -> Result<Sandbox, SandboxError> {
        let (kind, reason) = match options.kind {
            SandboxKind::Process => (SandboxKind::Process, "process sandbox requested".to_owned()),
            SandboxKind::Container => match container_unavailable(&options) {
                None => (
                    SandboxKind::Container,
                    "container sandbox requested".to_owned(),
                ),
                Some(why) => return Err(SandboxError::ContainerUnavailable(why)),
            },
            SandboxKind::Auto => match container_unavailable(&options) {
                None => (
                    SandboxKind::Container,
                    "running as root on Linux with cgroups: using containers".to_owned(),
                ),
                Some(why) => (SandboxKind::Process, format!("using processes: {why}")),
            },
        };
        Ok(Sandbox {
            inner: Arc::new(SandboxInner {
                kind,
                reason,
                options,
            }),
        })
    }

    /// A process sandbox with default options.
    pub fn process() -> Sandbox {
        Sandbox {
            inner: Arc::new(SandboxInner {
                kind: SandboxKind::Process,
                reason: "process sandbox requested".to_owned(),
                options: SandboxOptions::default(),
            }),
        }
    }

    /// What was picked: [`SandboxKind::Process`] or [`SandboxKind::Container`].
    pub fn kind(&self) -> SandboxKind {
        self.inner.kind
    }

    /// Why it was picked, in words.
    pub fn reason(&self) -> &str {
        &self.inner.reason
    }

    /// Kills the instances that a runtime which is gone left running, as recorded in
    /// [`SandboxOptions::records`] (nothing without records): each one's whole process group,
    /// and for a container every process of its cgroup, then its container state. Records of
    /// runtimes still alive, this one included, are kept; a recorded pid now used by another
    /// process (a different start time) is never signalled. Returns one line per instance that
    /// had something left, saying what was done. Call it once at start, before starting instances (the
    /// singleton promise of a continuous binding depends on it). Blocking (it may wait a few
    /// seconds for a killed container's cgroup to empty).
    pub fn sweep_leftovers(&self) -> Vec<String> {
        match &self.inner.options.records {
            Some(dir) => record::sweep(dir),
            None => Vec::new(),
        }
    }

    /// The options it was made from.
    pub fn options(&self) -> &SandboxOptions {
        &self.inner.options
    }
}

/// Why containers cannot be used here, or `None` when they can.
fn container_unavailable(options: &SandboxOptions) -> Option<String> {
    container::unavailable(options)
}

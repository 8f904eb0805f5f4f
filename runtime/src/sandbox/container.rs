//! The container sandbox, runtime side: the helper's configuration, starting the helper, and
//! probing whether containers work here.
//!
//! An instance in a container is a helper process (see [`crate::sandbox::helper`]) that creates
//! the container with libcontainer from a single thread, starts it, waits for it and cleans up.
//! The helper's descriptors: 0 = control pipe (a `TERM` line forwards SIGTERM; end of file kills
//! the container), 1 and 2 = the function's logs, 3 = the channel, 4 = status pipe (JSON lines:
//! `{"started": pid}`, then `{"exit": {...}, "oom": bool}` or `{"error": "..."}`).

use std::io::Read as _;
use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::error::Exit;
use crate::sandbox::SandboxOptions;
use crate::sandbox::devices::DeviceNode;

/// argv\[1\] that makes a binary act as the sandbox helper.
pub(crate) const HELPER_MARKER: &str = "__edgefn_sandbox_helper";

/// Descriptor of the helper's status pipe.
pub(crate) const STATUS_FD: i32 = 4;

/// Where the bundle is inside a container.
pub(crate) const BUNDLE_MOUNT: &str = "/fn";
pub(crate) use crate::function::SECRETS_MOUNT;

/// Where a function's dependency layer is inside a container (read-only).
pub(crate) const LAYER_MOUNT: &str = "/layer";

/// Everything the helper needs, passed as JSON in argv\[2\].
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct HelperConfig {
    /// Container id (also its cgroup's name under `edgefn/`).
    pub(crate) id: String,
    /// Folder for container state, OCI bundles and the shared root filesystem.
    pub(crate) state_dir: PathBuf,
    /// The function's bundle on the host, bound read-only at `/fn`.
    pub(crate) bundle_dir: PathBuf,
    /// The function's dependency layer on the host, bound read-only at [`LAYER_MOUNT`].
    #[serde(default)]
    pub(crate) layer_dir: Option<PathBuf>,
    pub(crate) program: PathBuf,
    pub(crate) args: Vec<String>,
    pub(crate) env: Vec<(String, String)>,
    pub(crate) memory_bytes: u64,
    pub(crate) cpu_millis: u32,
    pub(crate) max_pids: u64,
    pub(crate) max_open_files: u64,
    /// uid and gid of the container's process (default root).
    #[serde(default)]
    pub(crate) user: Option<(u32, u32)>,
    /// A trial run: status on stdout instead of fd 4, and no control pipe.
    #[serde(default)]
    pub(crate) probe: bool,
    /// The channel (the helper's fd 3) becomes the container process's stdin and stdout
    /// instead of its fd 3: a plain program.
    #[serde(default)]
    pub(crate) channel_as_stdio: bool,
    /// The function's secrets folder on the host, bound read-only at [`SECRETS_MOUNT`].
    #[serde(default)]
    pub(crate) secrets_dir: Option<PathBuf>,
    /// Device nodes bound into the container's `/dev` and allowed by its device cgroup.
    #[serde(default)]
    pub(crate) device_nodes: Vec<DeviceNode>,
    /// Files bound read-only at their own path (GPU driver libraries outside `/usr`).
    #[serde(default)]
    pub(crate) read_only_files: Vec<PathBuf>,
    /// The function's models on the host (name → file or folder), each bound read-only at
    /// `/models/NAME`.
    #[serde(default)]
    pub(crate) models: Vec<(String, PathBuf)>,
}

/// One line the helper writes on its status pipe.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub(crate) enum HelperStatus {
    /// The container runs; its init's pid on the host.
    Started(i32),
    /// The container ended.
    Exited {
        code: Option<i32>,
        signal: Option<i32>,
        oom: bool,
    },
    /// Setting up failed.
    Error(String),
}

/// What the helper reported, read after it exited.
#[derive(Debug, Clone, Default)]
pub(crate) struct HelperReport {
    pub(crate) exit: Option<Exit>,
    pub(crate) oom: bool,
    pub(crate) error: Option<String>,
}

/// Reads everything left on a status pipe (its writers are gone) into a report.
pub(crate) fn read_report(status: OwnedFd) -> HelperReport {
    let mut text = String::new();
    let _ = std::fs::File::from(status).read_to_string(&mut text);
    parse_report(&text)
}

pub(crate) fn parse_report(text: &str) -> HelperReport {
    let mut report = HelperReport::default();
    for line in text.lines() {
        match serde_json::from_str::<HelperStatus>(line) {
            Ok(HelperStatus::Exited { code, signal, oom }) => {
                report.exit = Some(Exit { code, signal });
                report.oom = oom;
            }
            Ok(HelperStatus::Error(e)) => report.error = Some(e),
            Ok(HelperStatus::Started(_)) | Err(_) => {}
        }
    }
    report
}

/// A container id for instance `instance` of `binding`: unique on this host while this process
/// lives (the pid), and valid as a cgroup and folder name.
pub(crate) fn container_id(binding: &str, instance: u64) -> String {
    let clean: String = binding
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' {
                c
            } else {
                '-'
            }
        })
        .take(40)
        .collect();
    let nonce = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.subsec_nanos());
    format!("{clean}-{}-{instance}-{nonce:08x}", std::process::id())
}

/// Why containers cannot be used here, or `None` when they can: root, Linux, a cgroup memory
/// controller, a helper program, and a trial container that runs `/usr/bin/true`.
pub(crate) fn unavailable(options: &SandboxOptions) -> Option<String> {
    if !cfg!(target_os = "linux") {
        return Some("containers need Linux".into());
    }
    if !nix::unistd::geteuid().is_root() {
        return Some("containers need root".into());
    }
    if !cgroup_memory_available() {
        return Some("no cgroup memory controller under /sys/fs/cgroup".into());
    }
    let Some(helper) = &options.helper else {
        return Some("no sandbox helper program configured".into());
    };
    if !helper.exists() {
        return Some(format!("sandbox helper {} not found", helper.display()));
    }
    probe(helper, options).err()
}

fn cgroup_memory_available() -> bool {
    let root = Path::new("/sys/fs/cgroup");
    root.join("memory").is_dir()
        || std::fs::read_to_string(root.join("cgroup.controllers"))
            .is_ok_and(|c| c.split_whitespace().any(|x| x == "memory"))
}

/// Runs `/usr/bin/true` in a container.
fn probe(helper: &Path, options: &SandboxOptions) -> Result<(), String> {
    let config = HelperConfig {
        id: container_id("probe", 0),
        state_dir: options.state_dir.clone(),
        bundle_dir: std::env::temp_dir(),
        layer_dir: None,
        program: PathBuf::from("/usr/bin/true"),
        args: vec![],
        env: vec![("PATH".into(), "/usr/bin:/bin".into())],
        memory_bytes: 64 << 20,
        cpu_millis: 1000,
        max_pids: 16,
        max_open_files: 64,
        user: options.run_as,
        probe: true,
        channel_as_stdio: false,
        secrets_dir: None,
        device_nodes: Vec::new(),
        read_only_files: Vec::new(),
        models: Vec::new(),
    };
    let json = serde_json::to_string(&config).map_err(|e| e.to_string())?;
    let out = std::process::Command::new(helper)
        .arg(HELPER_MARKER)
        .arg(json)
        .env_clear()
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .and_then(|c| c.wait_with_output())
        .map_err(|e| format!("cannot run the sandbox helper {}: {e}", helper.display()))?;
    let report = parse_report(&String::from_utf8_lossy(&out.stdout));
    match (report.error, report.exit) {
        (Some(e), _) => Err(format!("trial container failed: {e}")),
        (None, Some(exit)) if exit.success() => Ok(()),
        (None, Some(exit)) => Err(format!("trial container: /usr/bin/true ended with {exit}")),
        (None, None) => Err(format!(
            "trial container: {} ended with {} and said nothing (does it call \
             edgefn_runtime::sandbox_helper_main_if_requested() first thing in main?) {}",
            helper.display(),
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        )),
    }
}

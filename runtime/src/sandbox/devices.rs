//! Device nodes a binding asks for (`deviceNodes`, `gpu`): which nodes of this host they are,
//! whether they are all here, and the NVIDIA driver's user-space libraries.
//!
//! In the container sandbox exactly these nodes are bound into the container's `/dev` and
//! allowed (`rwm`) by its device cgroup, beside the standard set (`/dev/null`, `zero`, `full`,
//! `random`, `urandom`, `tty`); in the process sandbox nothing is isolated, but a missing node
//! still stops the instance from starting. Either way a missing node is found before anything
//! starts, never at the first open.

use std::os::unix::fs::FileTypeExt as _;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use edgefn_schema::{Gpu, ResolvedBinding};
use serde::{Deserialize, Serialize};

/// NVIDIA's nodes that must be present for `gpu: nvidia` (besides one `/dev/nvidia[0-9]*`).
const NVIDIA_REQUIRED: [&str; 2] = ["nvidiactl", "nvidia-uvm"];
/// NVIDIA's nodes mapped when present.
const NVIDIA_OPTIONAL: [&str; 2] = ["nvidia-uvm-tools", "nvidia-modeset"];

/// Most bytes of `ldconfig -p` output read.
const LDCONFIG_MAX: usize = 4 << 20;

/// One device node of the host, as a container gets it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct DeviceNode {
    /// Its path, the same on the host and in the container (under `/dev`).
    pub(crate) path: PathBuf,
    /// `c` (character) or `b` (block).
    pub(crate) kind: char,
    pub(crate) major: u64,
    pub(crate) minor: u64,
}

impl DeviceNode {
    /// The device cgroup's spelling of this node: `c 1:3`.
    pub(crate) fn rule(&self) -> String {
        format!("{} {}:{}", self.kind, self.major, self.minor)
    }
}

/// What a binding gets of this host's devices.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct Granted {
    pub(crate) nodes: Vec<DeviceNode>,
    /// Driver libraries to bind read-only at their own path (those outside `/usr`, which a
    /// container already sees read-only).
    pub(crate) libraries: Vec<PathBuf>,
}

/// The device nodes a binding asks for that this host lacks (or has as something other than
/// a device node), each as a short phrase naming the path, e.g. `/dev/dri/renderD128` or
/// `/dev/nvidiactl (gpu: nvidia)`. Empty when everything is here.
///
/// The agent calls this before starting a release's instances: a binding with a missing node
/// is not started and its release fails its health window.
pub fn missing_device_nodes(binding: &ResolvedBinding) -> Vec<String> {
    match grant_in(binding, Path::new("/dev"), false) {
        Ok(_) => Vec::new(),
        Err(missing) => missing,
    }
}

/// `missing` as one sentence: `device node /dev/x is missing` or `device nodes /dev/x, /dev/y
/// are missing`.
pub fn missing_sentence(missing: &[String]) -> String {
    match missing {
        [one] => format!("device node {one} is missing"),
        many => format!("device nodes {} are missing", many.join(", ")),
    }
}

/// The nodes (and, for a container, libraries) `binding` asks for, or what is missing.
pub(crate) fn grant(binding: &ResolvedBinding, libraries: bool) -> Result<Granted, String> {
    grant_in(binding, Path::new("/dev"), libraries).map_err(|m| missing_sentence(&m))
}

fn grant_in(
    binding: &ResolvedBinding,
    dev: &Path,
    libraries: bool,
) -> Result<Granted, Vec<String>> {
    let mut granted = Granted::default();
    let mut missing = Vec::new();
    for p in &binding.device_nodes {
        // The manifest's check (absolute, under /dev, no `..`) ran where it was loaded; a
        // desired state is checked again here, as it came over the network.
        if edgefn_schema::manifest::device_node_problem(p).is_some() {
            missing.push(format!("{p} (not a device path)"));
            continue;
        }
        let rel = p.trim_start_matches("/dev/");
        match node(&dev.join(rel), Path::new(p)) {
            Ok(n) => granted.nodes.push(n),
            Err(why) => missing.push(why),
        }
    }
    match binding.gpu {
        None => {}
        Some(Gpu::Nvidia) => {
            let (nodes, lacking) = nvidia_nodes(dev);
            granted.nodes.extend(nodes);
            missing.extend(lacking.into_iter().map(|m| format!("{m} (gpu: nvidia)")));
            if libraries {
                granted.libraries = nvidia_libraries()
                    .iter()
                    .filter(|l| !l.starts_with("/usr/"))
                    .cloned()
                    .collect();
            }
        }
    }
    granted.nodes.sort_by(|a, b| a.path.cmp(&b.path));
    granted.nodes.dedup_by(|a, b| a.path == b.path);
    if missing.is_empty() {
        Ok(granted)
    } else {
        Err(missing)
    }
}

/// The node at `at` (shown as `shown`), or why it cannot be one.
fn node(at: &Path, shown: &Path) -> Result<DeviceNode, String> {
    use std::os::unix::fs::MetadataExt as _;
    let meta = match std::fs::metadata(at) {
        Ok(m) => m,
        Err(_) => return Err(shown.display().to_string()),
    };
    let kind = if meta.file_type().is_char_device() {
        'c'
    } else if meta.file_type().is_block_device() {
        'b'
    } else {
        return Err(format!("{} (not a device node)", shown.display()));
    };
    let rdev = meta.rdev();
    Ok(DeviceNode {
        path: shown.to_path_buf(),
        kind,
        major: nix::sys::stat::major(rdev),
        minor: nix::sys::stat::minor(rdev),
    })
}

/// NVIDIA's nodes under `dev`, and those required that are missing.
fn nvidia_nodes(dev: &Path) -> (Vec<DeviceNode>, Vec<String>) {
    let shown = |name: &str| PathBuf::from("/dev").join(name);
    let mut nodes = Vec::new();
    let mut missing = Vec::new();
    for name in NVIDIA_REQUIRED {
        match node(&dev.join(name), &shown(name)) {
            Ok(n) => nodes.push(n),
            Err(why) => missing.push(why),
        }
    }
    for name in NVIDIA_OPTIONAL {
        if let Ok(n) = node(&dev.join(name), &shown(name)) {
            nodes.push(n);
        }
    }
    let mut gpus: Vec<String> = std::fs::read_dir(dev)
        .map(|entries| {
            entries
                .flatten()
                .filter_map(|e| e.file_name().into_string().ok())
                .filter(|n| {
                    n.strip_prefix("nvidia")
                        .is_some_and(|d| !d.is_empty() && d.bytes().all(|b| b.is_ascii_digit()))
                })
                .collect()
        })
        .unwrap_or_default();
    gpus.sort();
    let mut any = false;
    for g in &gpus {
        if let Ok(n) = node(&dev.join(g), &shown(g)) {
            nodes.push(n);
            any = true;
        }
    }
    if !any {
        missing.push("/dev/nvidia[0-9]*".to_owned());
    }
    (nodes, missing)
}

/// The NVIDIA driver's user-space libraries, found as nvidia-container-toolkit finds them: the
/// dynamic linker's cache (`ldconfig -p`), entries named `libcuda*`, `libnvidia-*`,
/// `libnvcuvid*`, `libnvoptix*` or `lib*_nvidia*` (GLX, EGL, VDPAU), each resolved to its file.
/// Looked up once per process.
pub(crate) fn nvidia_libraries() -> &'static [PathBuf] {
    static FOUND: OnceLock<Vec<PathBuf>> = OnceLock::new();
    FOUND.get_or_init(|| {
        let text = [
            "/sbin/ldconfig",
            "/usr/sbin/ldconfig",
            "/sbin/ldconfig.real",
        ]
        .iter()
        .find(|p| Path::new(p).exists())
        .and_then(|p| {
            std::process::Command::new(p)
                .arg("-p")
                .env_clear()
                .stdin(std::process::Stdio::null())
                .stderr(std::process::Stdio::null())
                .output()
                .ok()
        })
        .map(|o| {
            let end = o.stdout.len().min(LDCONFIG_MAX);
            String::from_utf8_lossy(&o.stdout[..end]).into_owned()
        })
        .unwrap_or_default();
        let mut libs: Vec<PathBuf> = parse_ldconfig(&text)
            .into_iter()
            .filter_map(|p| std::fs::canonicalize(&p).ok().map(|real| (p, real)))
            .flat_map(|(p, real)| if p == real { vec![p] } else { vec![p, real] })
            .collect();
        libs.sort();
        libs.dedup();
        libs
    })
}

/// The NVIDIA library paths of `ldconfig -p` output (`\tname (flags) => path` lines).
pub(crate) fn parse_ldconfig(text: &str) -> Vec<PathBuf> {
    text.lines()
        .filter_map(|l| {
            let (name, path) = l.trim().split_once(" => ")?;
            let name = name.split_whitespace().next()?;
            let nvidia = name.starts_with("libcuda")
                || name.starts_with("libnvidia-")
                || name.starts_with("libnvcuvid")
                || name.starts_with("libnvoptix")
                || name.contains("_nvidia.");
            (nvidia && path.starts_with('/')).then(|| PathBuf::from(path.trim()))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn binding(nodes: &[&str], gpu: Option<Gpu>) -> ResolvedBinding {
        ResolvedBinding {
            name: "b".into(),
            function: "f".into(),
            mode: edgefn_schema::Mode::Triggered,
            triggers: vec![],
            concurrency: 1,
            idle_timeout_ms: 0,
            memory_bytes: 1 << 20,
            cpu_millis: 1000,
            timeout_ms: 1000,
            env: Default::default(),
            secrets: Default::default(),
            device_nodes: nodes.iter().map(|s| s.to_string()).collect(),
            gpu,
            models: Vec::new(),
        }
    }

    #[test]
    fn ldconfig_entries_of_the_nvidia_driver() {
        let text = "1234 libs found in cache `/etc/ld.so.cache'\n\
            \tlibz.so.1 (libc6,x86-64) => /lib/x86_64-linux-gnu/libz.so.1\n\
            \tlibnvidia-ml.so.1 (libc6,x86-64) => /usr/lib/x86_64-linux-gnu/libnvidia-ml.so.1\n\
            \tlibcuda.so.1 (libc6,x86-64) => /usr/lib/x86_64-linux-gnu/libcuda.so.1\n\
            \tlibGLX_nvidia.so.0 (libc6,x86-64) => /opt/nv/libGLX_nvidia.so.0\n\
            \tlibcudart.so.12 (libc6,x86-64) => /usr/local/cuda/lib64/libcudart.so.12\n\
            Cache generated by: ldconfig (GNU libc) stable release version 2.36\n";
        assert_eq!(
            parse_ldconfig(text),
            [
                PathBuf::from("/usr/lib/x86_64-linux-gnu/libnvidia-ml.so.1"),
                PathBuf::from("/usr/lib/x86_64-linux-gnu/libcuda.so.1"),
                PathBuf::from("/opt/nv/libGLX_nvidia.so.0"),
                PathBuf::from("/usr/local/cuda/lib64/libcudart.so.12"),
            ]
        );
    }

    /// A fake `/dev` with NVIDIA's names made by mknod (root only; skipped otherwise).
    #[test]
    fn nvidia_nodes_are_the_control_uvm_and_every_gpu() {
        let dev = tempfile::tempdir().expect("tempdir");
        let mk = |name: &str| {
            nix::sys::stat::mknod(
                &dev.path().join(name),
                nix::sys::stat::SFlag::S_IFCHR,
                nix::sys::stat::Mode::from_bits_truncate(0o600),
                nix::sys::stat::makedev(1, 3),
            )
        };
        if mk("nvidiactl").is_err() {
            return; // not root
        }
        let b = binding(&[], Some(Gpu::Nvidia));
        assert_eq!(
            grant_in(&b, dev.path(), false).unwrap_err(),
            [
                "/dev/nvidia-uvm (gpu: nvidia)",
                "/dev/nvidia[0-9]* (gpu: nvidia)"
            ]
        );
        for n in ["nvidia-uvm", "nvidia0", "nvidia1", "nvidia-modeset"] {
            mk(n).expect("mknod");
        }
        std::fs::write(dev.path().join("nvidia-caps"), "").expect("file");
        let granted = grant_in(&b, dev.path(), false).expect("all here");
        let paths: Vec<String> = granted
            .nodes
            .iter()
            .map(|n| n.path.display().to_string())
            .collect();
        assert_eq!(
            paths,
            [
                "/dev/nvidia-modeset",
                "/dev/nvidia-uvm",
                "/dev/nvidia0",
                "/dev/nvidia1",
                "/dev/nvidiactl"
            ]
        );
        assert_eq!(granted.nodes[0].rule(), "c 1:3");
    }

    #[test]
    fn missing_and_non_device_paths_are_named() {
        let dev = tempfile::tempdir().expect("tempdir");
        std::fs::write(dev.path().join("plain"), "").expect("file");
        let b = binding(&["/dev/absent", "/dev/plain", "/dev/../etc/passwd"], None);
        assert_eq!(
            grant_in(&b, dev.path(), false).unwrap_err(),
            [
                "/dev/absent",
                "/dev/plain (not a device node)",
                "/dev/../etc/passwd (not a device path)"
            ]
        );
        assert_eq!(
            missing_sentence(&["/dev/a".into()]),
            "device node /dev/a is missing"
        );
        // This host has /dev/null.
        assert!(missing_device_nodes(&binding(&["/dev/null"], None)).is_empty());
    }
}

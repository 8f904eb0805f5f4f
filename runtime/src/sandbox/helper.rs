//! The container sandbox's helper process: creates one container with libcontainer, starts it,
//! relays SIGTERM/SIGKILL from its control pipe, waits for it, reports how it ended (including
//! a cgroup OOM kill) and deletes it, so that no container state or cgroup outlives it.
//!
//! This runs in its own process, single-threaded while libcontainer forks (a fork from inside a
//! multi-threaded tokio runtime could deadlock on locks held by other threads).

use std::io::{BufRead as _, Write as _};
use std::os::fd::{FromRawFd as _, OwnedFd};
use std::path::{Path, PathBuf};

use libcontainer::container::Container;
use libcontainer::container::builder::ContainerBuilder;
use libcontainer::syscall::syscall::SyscallType;
use nix::sys::signal::{Signal, kill};
use nix::sys::wait::{WaitStatus, waitpid};
use nix::unistd::Pid;
use serde_json::json;

use crate::sandbox::container::{
    BUNDLE_MOUNT, HELPER_MARKER, HelperConfig, HelperStatus, LAYER_MOUNT, SECRETS_MOUNT, STATUS_FD,
};

/// If this process was started as the sandbox helper (argv\[1\] is the helper marker), runs the
/// helper and exits; otherwise returns at once. Call it first thing in `main` of a binary that
/// is used as [`crate::SandboxOptions::helper`], before any thread (or tokio runtime) starts.
pub fn sandbox_helper_main_if_requested() {
    let mut args = std::env::args_os().skip(1);
    if args.next().as_deref() != Some(std::ffi::OsStr::new(HELPER_MARKER)) {
        return;
    }
    let config = args
        .next()
        .and_then(|a| a.into_string().ok())
        .and_then(|a| serde_json::from_str::<HelperConfig>(&a).ok());
    let Some(config) = config else {
        std::process::exit(2);
    };
    let mut status = StatusWriter::open(config.probe);
    let code = match run(&config, &mut status) {
        Ok(()) => 0,
        Err(e) => {
            status.send(&HelperStatus::Error(e));
            1
        }
    };
    std::process::exit(code);
}

struct StatusWriter(Box<dyn std::io::Write>);

impl StatusWriter {
    fn open(probe: bool) -> StatusWriter {
        if probe {
            return StatusWriter(Box::new(std::io::stdout()));
        }
        // Keep the status pipe out of the container.
        let _ = nix::fcntl::fcntl(
            STATUS_FD,
            nix::fcntl::FcntlArg::F_SETFD(nix::fcntl::FdFlag::FD_CLOEXEC),
        );
        #[allow(unsafe_code)]
        // SAFETY: the runtime starts the helper with its status pipe at fd 4, which nothing else
        // in this process owns; it is taken once, here.
        let fd = unsafe { OwnedFd::from_raw_fd(STATUS_FD) };
        StatusWriter(Box::new(std::fs::File::from(fd)))
    }

    fn send(&mut self, s: &HelperStatus) {
        if let Ok(line) = serde_json::to_string(s) {
            let _ = writeln!(self.0, "{line}");
            let _ = self.0.flush();
        }
    }
}

fn run(cfg: &HelperConfig, status: &mut StatusWriter) -> Result<(), String> {
    let rootfs = ensure_rootfs(&cfg.state_dir)?;
    // Mount points of the models: a file for a file, a folder for a folder (the root is
    // shared and read-only inside; an empty entry is all it holds).
    for (name, path) in &cfg.models {
        let point = rootfs.join("models").join(name);
        let made = if path.is_dir() {
            std::fs::create_dir_all(&point)
        } else if point.exists() {
            Ok(())
        } else {
            std::fs::File::create(&point).map(drop)
        };
        made.map_err(|e| format!("{}: {e}", point.display()))?;
    }
    let bundle = cfg.state_dir.join("bundles").join(&cfg.id);
    let state_root = cfg.state_dir.join("state");
    if cfg.probe {
        sweep_stale(&cfg.state_dir);
    }
    std::fs::create_dir_all(&bundle).map_err(|e| format!("{}: {e}", bundle.display()))?;
    std::fs::create_dir_all(&state_root).map_err(|e| format!("{}: {e}", state_root.display()))?;
    let result = create_and_run(cfg, &rootfs, &bundle, &state_root, status);
    // Whatever happened, leave nothing behind.
    if let Ok(mut c) = Container::load(state_root.join(&cfg.id)) {
        let _ = c.delete(true);
    }
    let _ = std::fs::remove_dir_all(state_root.join(&cfg.id));
    let _ = std::fs::remove_dir_all(&bundle);
    result
}

fn create_and_run(
    cfg: &HelperConfig,
    rootfs: &Path,
    bundle: &Path,
    state_root: &Path,
    status: &mut StatusWriter,
) -> Result<(), String> {
    let spec = oci_spec(cfg, rootfs);
    std::fs::write(bundle.join("config.json"), spec.to_string())
        .map_err(|e| format!("cannot write the container spec: {e}"))?;
    let fd = |n: i32| -> Result<OwnedFd, String> {
        let dup = nix::fcntl::fcntl(n, nix::fcntl::FcntlArg::F_DUPFD_CLOEXEC(10))
            .map_err(|e| format!("dup fd {n}: {e}"))?;
        #[allow(unsafe_code)]
        // SAFETY: `dup` was just returned by F_DUPFD_CLOEXEC and is owned by nobody else.
        Ok(unsafe { OwnedFd::from_raw_fd(dup) })
    };
    let (stdin, stdout, preserved): (OwnedFd, OwnedFd, i32) = if cfg.channel_as_stdio {
        (fd(3)?, fd(3)?, 0)
    } else {
        let devnull = std::fs::File::open("/dev/null").map_err(|e| e.to_string())?;
        (devnull.into(), fd(1)?, 1)
    };
    let mut container = ContainerBuilder::new(cfg.id.clone(), SyscallType::default())
        .with_root_path(state_root)
        .map_err(|e| format!("container state folder: {e}"))?
        .with_preserved_fds(preserved)
        .with_stdin(stdin)
        .with_stdout(stdout)
        .with_stderr(fd(2)?)
        .validate_id()
        .map_err(|e| format!("container id: {e}"))?
        .as_init(bundle)
        .with_systemd(false)
        .with_detach(true)
        .build()
        .map_err(|e| format!("cannot create the container: {e}"))?;
    // Created, not yet running the function: narrow the device cgroup before it does.
    if let Err(e) = narrow_device_cgroup(&cfg.id, &cfg.device_nodes) {
        let _ = container.delete(true);
        return Err(e);
    }
    container
        .start()
        .map_err(|e| format!("cannot start the container: {e}"))?;
    let pid = container
        .pid()
        .ok_or_else(|| "the container has no process".to_owned())?;
    status.send(&HelperStatus::Started(pid.as_raw()));
    if !cfg.probe {
        relay_control(pid);
    }
    let (code, signal) = loop {
        match waitpid(pid, None) {
            Ok(WaitStatus::Exited(_, c)) => break (Some(c), None),
            Ok(WaitStatus::Signaled(_, s, _)) => break (None, Some(s as i32)),
            Ok(_) => continue,
            Err(nix::errno::Errno::EINTR) => continue,
            Err(e) => return Err(format!("waiting for the container: {e}")),
        }
    };
    let oom = signal == Some(Signal::SIGKILL as i32) && oom_killed(&cfg.id);
    let _ = container.delete(true);
    status.send(&HelperStatus::Exited { code, signal, oom });
    Ok(())
}

/// Rules libcontainer's cgroup v1 devices controller always adds beyond the standard set
/// (`/dev/console`, `/dev/pts/*`, `/dev/ptmx`, `/dev/net/tun`, and mknod of any node): none of
/// them is in the container's `/dev`, and none may be opened or made there.
const EXTRA_V1_RULES: [&str; 6] = [
    "c 5:1 rwm",
    "c 136:* rwm",
    "c 5:2 rwm",
    "c 10:200 rwm",
    "c *:* m",
    "b *:* m",
];

/// Takes out of container `id`'s cgroup v1 device rules what libcontainer adds beyond the
/// standard set and the `asked` nodes, leaving exactly: `/dev/null`, `zero`, `full`, `random`,
/// `urandom`, `tty` and `asked`, each `rwm`. A cgroup v2 host keeps libcontainer's eBPF program
/// (the extra nodes are still absent from the container's `/dev`).
fn narrow_device_cgroup(
    id: &str,
    asked: &[crate::sandbox::devices::DeviceNode],
) -> Result<(), String> {
    let cgroup = Path::new("/sys/fs/cgroup/devices/edgefn").join(id);
    if !cgroup.is_dir() {
        return Ok(());
    }
    for rule in EXTRA_V1_RULES {
        let asked_too = asked.iter().any(|n| {
            let exact = n.rule() + " rwm";
            exact == rule || (rule == "c 136:* rwm" && n.kind == 'c' && n.major == 136)
        });
        if asked_too {
            continue;
        }
        std::fs::write(cgroup.join("devices.deny"), rule)
            .map_err(|e| format!("cannot narrow the device cgroup ({rule}): {e}"))?;
    }
    Ok(())
}

/// Deletes containers (state, cgroups, OCI bundle) left behind by runtimes that are gone: a
/// container id ends in `-<runtime pid>-<instance>-<nonce>`. This is for a runtime that was
/// SIGKILLed together with its helpers; normally the helper deletes its container itself.
fn sweep_stale(state_dir: &Path) {
    let Ok(entries) = std::fs::read_dir(state_dir.join("state")) else {
        return;
    };
    for e in entries.flatten() {
        let id = e.file_name().to_string_lossy().into_owned();
        let owner = id.rsplit('-').nth(2).and_then(|p| p.parse::<i32>().ok());
        let Some(owner) = owner else { continue };
        if Path::new("/proc").join(owner.to_string()).exists() {
            continue;
        }
        delete_container(state_dir, &id);
    }
}

/// Deletes container `id` of state folder `state_dir` (killing what runs in it), its state and
/// its OCI bundle; what is already gone is not an error.
pub(crate) fn delete_container(state_dir: &Path, id: &str) {
    let state = state_dir.join("state").join(id);
    if let Ok(mut c) = Container::load(state.clone()) {
        let _ = c.delete(true);
    }
    let _ = std::fs::remove_dir_all(state);
    let _ = std::fs::remove_dir_all(state_dir.join("bundles").join(id));
}

/// Forwards the control pipe (stdin) to the container: a `TERM` line sends SIGTERM; end of file
/// (the runtime let go of the instance, or died) sends SIGKILL, which ends the whole pid
/// namespace. Runs on a thread: the container exists by now, so forking is over.
fn relay_control(pid: Pid) {
    std::thread::spawn(move || {
        let stdin = std::io::stdin();
        let mut line = String::new();
        loop {
            line.clear();
            match stdin.lock().read_line(&mut line) {
                Ok(0) | Err(_) => {
                    let _ = kill(pid, Signal::SIGKILL);
                    return;
                }
                Ok(_) if line.trim() == "TERM" => {
                    let _ = kill(pid, Signal::SIGTERM);
                }
                Ok(_) => {}
            }
        }
    });
}

/// Whether the cgroup of container `id` saw its OOM killer strike (v1 or v2).
fn oom_killed(id: &str) -> bool {
    let v1 = Path::new("/sys/fs/cgroup/memory/edgefn").join(id);
    let v2 = Path::new("/sys/fs/cgroup/edgefn").join(id);
    let counter = |file: PathBuf| {
        std::fs::read_to_string(file).ok().and_then(|t| {
            t.lines().find_map(|l| {
                l.strip_prefix("oom_kill ")
                    .and_then(|n| n.trim().parse::<u64>().ok())
            })
        })
    };
    if let Some(n) = counter(v1.join("memory.oom_control")) {
        return n > 0;
    }
    if let Some(n) = counter(v2.join("memory.events")) {
        return n > 0;
    }
    // Old v1 kernels without an oom_kill counter: hitting the limit and being SIGKILLed.
    std::fs::read_to_string(v1.join("memory.failcnt"))
        .ok()
        .and_then(|t| t.trim().parse::<u64>().ok())
        .is_some_and(|n| n > 0)
}

/// The shared root filesystem: empty mount points and the usual links into `/usr`.
fn ensure_rootfs(state_dir: &Path) -> Result<PathBuf, String> {
    let rootfs = state_dir.join("rootfs");
    let fail = |p: &Path, e: std::io::Error| format!("{}: {e}", p.display());
    for dir in [
        "usr",
        "etc",
        "fn",
        "layer",
        "tmp",
        "proc",
        "dev",
        "run/secrets",
        "models",
    ] {
        let p = rootfs.join(dir);
        std::fs::create_dir_all(&p).map_err(|e| fail(&p, e))?;
    }
    for (link, target) in [
        ("bin", "usr/bin"),
        ("sbin", "usr/sbin"),
        ("lib", "usr/lib"),
        ("lib64", "usr/lib64"),
    ] {
        let p = rootfs.join(link);
        match std::os::unix::fs::symlink(target, &p) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
            Err(e) => return Err(fail(&p, e)),
        }
    }
    Ok(rootfs)
}

/// The OCI runtime spec of the container.
fn oci_spec(cfg: &HelperConfig, rootfs: &Path) -> serde_json::Value {
    let mut args = vec![cfg.program.display().to_string()];
    args.extend(cfg.args.iter().cloned());
    let env: Vec<String> = cfg.env.iter().map(|(k, v)| format!("{k}={v}")).collect();
    let caps = json!(["CAP_AUDIT_WRITE", "CAP_KILL", "CAP_NET_BIND_SERVICE"]);
    let ro_bind = |src: &Path, dst: &str| {
        json!({"destination": dst, "type": "bind", "source": src,
               "options": ["rbind", "ro", "nosuid", "nodev"]})
    };
    let (uid, gid) = cfg.user.unwrap_or((0, 0));
    let mut mounts = vec![
        json!({"destination": "/proc", "type": "proc", "source": "proc"}),
        json!({"destination": "/dev", "type": "tmpfs", "source": "tmpfs",
               "options": ["nosuid", "strictatime", "mode=755", "size=65536k"]}),
        json!({"destination": "/dev/shm", "type": "tmpfs", "source": "shm",
               "options": ["nosuid", "noexec", "nodev", "mode=1777", "size=65536k"]}),
        json!({"destination": "/tmp", "type": "tmpfs", "source": "tmpfs",
               "options": ["nosuid", "nodev", "mode=1777", "size=65536k"]}),
        ro_bind(Path::new("/usr"), "/usr"),
        ro_bind(Path::new("/etc"), "/etc"),
        ro_bind(&cfg.bundle_dir, BUNDLE_MOUNT),
    ];
    if let Some(layer) = &cfg.layer_dir {
        mounts.push(ro_bind(layer, LAYER_MOUNT));
    }
    // The function's secrets, read-only at /run/secrets (a memory file system on the host).
    if let Some(dir) = &cfg.secrets_dir {
        mounts.push(ro_bind(dir, SECRETS_MOUNT));
    }
    // The device nodes the binding asked for, bound at their own path in the container's /dev
    // (a tmpfs without `nodev`), and GPU driver libraries outside /usr, read-only.
    for n in &cfg.device_nodes {
        mounts.push(
            json!({"destination": n.path, "type": "bind", "source": n.path,
                           "options": ["bind", "nosuid", "noexec"]}),
        );
    }
    for f in &cfg.read_only_files {
        mounts.push(json!({"destination": f, "type": "bind", "source": f,
                           "options": ["bind", "ro", "nosuid", "nodev"]}));
    }
    // The device cgroup: nothing, then the asked nodes (libcontainer adds the standard set).
    let mut device_rules = vec![json!({"allow": false, "access": "rwm"})];
    device_rules.extend(cfg.device_nodes.iter().map(|n| {
        json!({"allow": true, "type": n.kind.to_string(), "major": n.major, "minor": n.minor,
               "access": "rwm"})
    }));
    // The binding's models, each read-only at /models/NAME; no other model is visible. The
    // container root is shared by every container, so /models is a small tmpfs of this
    // container's own, root's and read-only to others: the mount points made there for
    // one container's models do not show in the next.
    mounts.push(
        json!({"destination": crate::function::MODELS_MOUNT, "type": "tmpfs",
                       "source": "tmpfs",
                       "options": ["nosuid", "nodev", "noexec", "mode=755", "size=64k"]}),
    );
    for (name, path) in &cfg.models {
        mounts.push(ro_bind(
            path,
            &format!("{}/{name}", crate::function::MODELS_MOUNT),
        ));
    }
    json!({
        "ociVersion": "1.0.2",
        "process": {
            "terminal": false,
            "user": {"uid": uid, "gid": gid},
            "args": args,
            "env": env,
            "cwd": BUNDLE_MOUNT,
            "capabilities": {
                "bounding": caps, "effective": caps, "permitted": caps, "ambient": caps
            },
            "rlimits": [{"type": "RLIMIT_NOFILE", "hard": cfg.max_open_files, "soft": cfg.max_open_files}],
            "noNewPrivileges": true
        },
        "root": {"path": rootfs, "readonly": true},
        "hostname": "edgefn",
        "mounts": mounts,
        "linux": {
            "namespaces": [{"type": "pid"}, {"type": "ipc"}, {"type": "uts"}, {"type": "mount"}],
            "cgroupsPath": format!("/edgefn/{}", cfg.id),
            "resources": {
                "devices": device_rules,
                "memory": {"limit": cfg.memory_bytes},
                "cpu": {"quota": u64::from(cfg.cpu_millis) * 100, "period": 100_000},
                "pids": {"limit": cfg.max_pids}
            },
            "maskedPaths": ["/proc/kcore", "/proc/keys", "/proc/timer_list", "/proc/sched_debug",
                            "/proc/scsi", "/sys/firmware"],
            "readonlyPaths": ["/proc/asound", "/proc/bus", "/proc/fs", "/proc/irq", "/proc/sys",
                              "/proc/sysrq-trigger"]
        }
    })
}

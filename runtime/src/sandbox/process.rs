//! The process sandbox: spawns an instance as a child in its own session (so its process group
//! can be killed as a whole), with rlimits, a clean environment, the bundle as working folder and
//! the channel socket on fd 3.
//!
//! An instance must not outlive the runtime: it gets SIGKILL as its parent-death signal
//! (`PR_SET_PDEATHSIG`). That signal fires when the *thread* that forked it ends, not the
//! process, so every child is forked by one spawner thread that lives as long as the process
//! ([`spawn`] hands the work to it), never by a tokio worker or blocking-pool thread, which may
//! end while the instance runs.

use std::os::fd::{AsRawFd as _, OwnedFd, RawFd};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::{OnceLock, mpsc};

use nix::sys::resource::{Resource, setrlimit};
use nix::sys::signal::{Signal, killpg};
use nix::unistd::Pid;
use tokio::process::{Child, ChildStderr, ChildStdout, Command};

use crate::protocol::CHANNEL_FD;

/// Resource limits applied with setrlimit before exec.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Rlimits {
    /// RLIMIT_AS in bytes.
    pub(crate) address_space: Option<u64>,
    /// RLIMIT_CPU in seconds.
    pub(crate) cpu_seconds: Option<u64>,
    /// RLIMIT_NOFILE.
    pub(crate) open_files: u64,
}

/// What to run.
#[derive(Debug)]
pub(crate) struct ProcessCommand {
    pub(crate) program: PathBuf,
    pub(crate) args: Vec<String>,
    pub(crate) env: Vec<(String, String)>,
    pub(crate) cwd: PathBuf,
    pub(crate) rlimits: Option<Rlimits>,
    /// The child's stdin (default /dev/null).
    pub(crate) stdin: Option<OwnedFd>,
    /// The channel becomes the child's stdin and stdout instead of its fd 3 (a plain program:
    /// events in, results out); only stderr is then a log pipe.
    pub(crate) channel_as_stdio: bool,
    /// Descriptors the child gets at fixed numbers (after fd 3), e.g. the helper's status pipe.
    pub(crate) extra_fds: Vec<(OwnedFd, RawFd)>,
    /// uid and gid to run as.
    pub(crate) user: Option<(u32, u32)>,
    /// Kill the child when its handle is dropped (not for the container helper, which must
    /// clean up after itself).
    pub(crate) kill_on_drop: bool,
    /// SIGKILL the child when this process dies (not for the container helper: it kills its
    /// container and cleans up when its control pipe closes, which the runtime's death does).
    pub(crate) parent_death: bool,
}

/// A spawned child with its output pipes.
#[derive(Debug)]
pub(crate) struct Spawned {
    pub(crate) child: Child,
    pub(crate) pid: i32,
    /// Absent when the channel is the child's stdout.
    pub(crate) stdout: Option<ChildStdout>,
    pub(crate) stderr: ChildStderr,
}

/// Spawns `cmd` with `channel` as its fd 3 (or as its stdin and stdout: `channel_as_stdio`).
pub(crate) fn spawn(cmd: ProcessCommand, channel: &OwnedFd) -> std::io::Result<Spawned> {
    let mut c = Command::new(&cmd.program);
    c.args(&cmd.args)
        .env_clear()
        .envs(cmd.env.iter().map(|(k, v)| (k, v)))
        .current_dir(&cmd.cwd)
        .stderr(Stdio::piped())
        .kill_on_drop(cmd.kill_on_drop);
    if cmd.channel_as_stdio {
        c.stdin(Stdio::from(channel.try_clone()?))
            .stdout(Stdio::from(channel.try_clone()?));
    } else {
        c.stdin(match cmd.stdin {
            Some(fd) => Stdio::from(fd),
            None => Stdio::null(),
        })
        .stdout(Stdio::piped());
    }
    if let Some((uid, gid)) = cmd.user {
        c.uid(uid).gid(gid);
    }
    let mut fds = [(-1, -1); 2];
    for (slot, (fd, target)) in fds.iter_mut().zip(&cmd.extra_fds) {
        *slot = (fd.as_raw_fd(), *target);
    }
    if !cmd.channel_as_stdio {
        fds[fds.len() - 1] = (channel.as_raw_fd(), CHANNEL_FD);
    }
    if cmd.extra_fds.len() >= fds.len() {
        return Err(std::io::Error::other("too many descriptors for the child"));
    }
    install_pre_exec(&mut c, fds, cmd.rlimits, cmd.parent_death);
    let mut child = spawn_on_spawner_thread(c).map_err(|e| with_program(e, &cmd.program))?;
    let pid = child
        .id()
        .and_then(|p| i32::try_from(p).ok())
        .ok_or_else(|| std::io::Error::other("spawned child has no pid"))?;
    let stdout = child.stdout.take();
    let Some(stderr) = child.stderr.take() else {
        return Err(std::io::Error::other("child output pipes missing"));
    };
    Ok(Spawned {
        child,
        pid,
        stdout,
        stderr,
    })
}

/// A job for the spawner thread.
type Job = Box<dyn FnOnce() + Send>;

/// Spawns `c` from the spawner thread (see the module documentation), within the current tokio
/// runtime (its process driver reaps the child).
fn spawn_on_spawner_thread(mut c: Command) -> std::io::Result<Child> {
    static SPAWNER: OnceLock<Option<mpsc::Sender<Job>>> = OnceLock::new();
    let spawner = SPAWNER.get_or_init(|| {
        let (tx, rx) = mpsc::channel::<Job>();
        std::thread::Builder::new()
            .name("edgefn-spawner".into())
            .spawn(move || {
                for job in rx {
                    job();
                }
            })
            .ok()
            .map(|_| tx)
    });
    let Some(spawner) = spawner else {
        return Err(std::io::Error::other("cannot start the spawner thread"));
    };
    let handle = tokio::runtime::Handle::try_current().map_err(std::io::Error::other)?;
    let (reply, answer) = mpsc::sync_channel(1);
    spawner
        .send(Box::new(move || {
            let _runtime = handle.enter();
            let _ = reply.send(c.spawn());
        }))
        .map_err(|_| std::io::Error::other("the spawner thread is gone"))?;
    answer
        .recv()
        .map_err(|_| std::io::Error::other("the spawner thread is gone"))?
}

fn with_program(e: std::io::Error, program: &Path) -> std::io::Error {
    let hint = if e.kind() == std::io::ErrorKind::PermissionDenied {
        format!(
            " (is it executable? `chmod +x {}`, and commit the mode)",
            program.display()
        )
    } else {
        String::new()
    };
    std::io::Error::new(e.kind(), format!("{}: {e}{hint}", program.display()))
}

/// Sets up the child between fork and exec: new session, parent-death signal, descriptors at
/// their numbers (`(source, target)` pairs, `-1` for unused), rlimits.
#[allow(unsafe_code)]
fn install_pre_exec(
    c: &mut Command,
    fds: [(RawFd, RawFd); 2],
    rlimits: Option<Rlimits>,
    parent_death: bool,
) {
    let parent = nix::unistd::getpid();
    let hook = move || -> std::io::Result<()> {
        nix::unistd::setsid()?;
        if parent_death {
            // Set after the user change std does before this hook (a change of credentials
            // clears it).
            nix::sys::prctl::set_pdeathsig(Signal::SIGKILL)?;
            if nix::unistd::getppid() != parent {
                // The runtime died before the signal was armed (no allocation after fork).
                return Err(nix::errno::Errno::ESRCH.into());
            }
        }
        // Move every source out of the way first (a source may sit on another's target), then
        // dup2 into place; dup2 clears close-on-exec on the new descriptor.
        let mut moved = [(-1, -1); 2];
        for (m, (src, dst)) in moved.iter_mut().zip(fds) {
            if src >= 0 {
                let high = nix::fcntl::fcntl(src, nix::fcntl::FcntlArg::F_DUPFD_CLOEXEC(10))?;
                *m = (high, dst);
            }
        }
        for (high, dst) in moved {
            if high >= 0 {
                nix::unistd::dup2(high, dst)?;
            }
        }
        if let Some(r) = rlimits {
            if let Some(bytes) = r.address_space {
                setrlimit(Resource::RLIMIT_AS, bytes, bytes)?;
            }
            if let Some(secs) = r.cpu_seconds {
                // The soft limit sends SIGXCPU, the hard one a second later SIGKILL.
                setrlimit(Resource::RLIMIT_CPU, secs, secs.saturating_add(1))?;
            }
            setrlimit(Resource::RLIMIT_NOFILE, r.open_files, r.open_files)?;
        }
        Ok(())
    };
    // SAFETY: the hook runs in the forked child before exec. It only makes async-signal-safe
    // system calls (setsid, prctl, getppid, fcntl, dup2, setrlimit) on values captured by copy
    // (fixed-size arrays, a pid), and neither allocates nor takes locks.
    unsafe {
        c.pre_exec(hook);
    }
}

/// Sends `signal` to the process group led by `pid`; a group already gone is not an error.
pub(crate) fn signal_group(pid: i32, signal: Signal) {
    let _ = killpg(Pid::from_raw(pid), signal);
}

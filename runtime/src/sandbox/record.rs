//! Records of running instances, so that a runtime that died without cleaning up (SIGKILL,
//! power cut, crash) leaves nothing running for good: the next runtime given the same folder
//! ([`crate::SandboxOptions::records`]) kills what the dead one left ([`sweep`]).
//!
//! One small JSON file per instance process, `<pid>-<start>.json`: the process's pid (which is
//! also its process group and session, since every instance starts in a session of its own), its
//! start time (so a pid reused by an unrelated process is never killed), the runtime's own pid and
//! start time (records of a runtime that is still alive are left alone), and for a container the
//! container's id and state folder (to kill its cgroup and delete its state). A record is written
//! as soon as the process exists and removed once it ended and was waited for.

use std::path::{Path, PathBuf};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use nix::sys::signal::{Signal, kill, killpg};
use nix::unistd::Pid;
use serde::{Deserialize, Serialize};

/// What a record says.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Record {
    /// The runtime process that started the instance.
    pub(crate) owner: i32,
    /// Its start time (clock ticks since boot, `/proc/PID/stat` field 22).
    pub(crate) owner_start: u64,
    /// The instance process (the container helper, for a container): leader of its own session
    /// and process group.
    pub(crate) pid: i32,
    /// Its start time.
    pub(crate) start: u64,
    /// The container's id and state folder, for a container.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) container: Option<(String, PathBuf)>,
}

/// A written record, removed when dropped.
#[derive(Debug)]
pub(crate) struct RecordGuard {
    path: PathBuf,
}

impl Drop for RecordGuard {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

/// The start time of process `pid` (clock ticks after boot), or `None` when there is no such
/// process.
pub(crate) fn start_time(pid: i32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // `pid (comm) state ppid ...`: comm may hold spaces and parentheses, so split after the
    // last `)`; starttime is field 22, the 20th after comm.
    let (_, rest) = stat.rsplit_once(')')?;
    rest.split_whitespace().nth(19)?.parse().ok()
}

/// This process's pid and start time.
fn me() -> (i32, u64) {
    static ME: OnceLock<(i32, u64)> = OnceLock::new();
    *ME.get_or_init(|| {
        let pid = std::process::id() as i32;
        (pid, start_time(pid).unwrap_or(0))
    })
}

/// Records instance process `pid` (and its container) in folder `dir`, creating the folder.
pub(crate) fn write(
    dir: &Path,
    pid: i32,
    container: Option<(String, PathBuf)>,
) -> std::io::Result<RecordGuard> {
    let start = start_time(pid).ok_or_else(|| {
        std::io::Error::other(format!("process {pid} ended before it could be recorded"))
    })?;
    let (owner, owner_start) = me();
    let record = Record {
        owner,
        owner_start,
        pid,
        start,
        container,
    };
    std::fs::create_dir_all(dir)
        .map_err(|e| std::io::Error::new(e.kind(), format!("{}: {e}", dir.display())))?;
    let path = dir.join(format!("{pid}-{start}.json"));
    let tmp = dir.join(format!("{pid}-{start}.json.tmp"));
    let body = serde_json::to_vec(&record).map_err(std::io::Error::other)?;
    std::fs::write(&tmp, body)
        .and_then(|()| std::fs::rename(&tmp, &path))
        .map_err(|e| std::io::Error::new(e.kind(), format!("{}: {e}", path.display())))?;
    Ok(RecordGuard { path })
}

/// Kills whatever the records in `dir` say a runtime that is gone left running, deletes their
/// containers (cgroups and state) and removes the records. Records of runtimes still alive
/// (this one included) are kept. Returns one line per instance that had something left, saying
/// what was done.
/// Blocking: it may wait up to a few seconds for killed containers to empty their cgroups.
pub(crate) fn sweep(dir: &Path) -> Vec<String> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut swept = Vec::new();
    for e in entries.flatten() {
        let path = e.path();
        let name = e.file_name().to_string_lossy().into_owned();
        if name.ends_with(".tmp") {
            // Debris of a crash while writing one.
            let _ = std::fs::remove_file(&path);
            continue;
        }
        let Some(record) = std::fs::read(&path)
            .ok()
            .and_then(|b| serde_json::from_slice::<Record>(&b).ok())
        else {
            let _ = std::fs::remove_file(&path);
            continue;
        };
        if start_time(record.owner) == Some(record.owner_start) {
            continue;
        }
        swept.extend(sweep_one(&record));
        let _ = std::fs::remove_file(&path);
    }
    swept
}

/// Kills what record `r` names; says what was done, or `None` when nothing was left.
fn sweep_one(r: &Record) -> Option<String> {
    let mut done = Vec::new();
    match start_time(r.pid) {
        // The leader lives: the group is ours.
        Some(t) if t == r.start => match killpg(Pid::from_raw(r.pid), Signal::SIGKILL) {
            Ok(()) => done.push(format!("killed process group {}", r.pid)),
            Err(e) => done.push(format!("cannot kill process group {}: {e}", r.pid)),
        },
        // The pid now names another process: not ours, leave it.
        Some(_) => {}
        // The leader is gone. Its pid cannot be reused while its group has members, so any
        // process still in group `pid` is one the instance left.
        None => {
            if killpg(Pid::from_raw(r.pid), Signal::SIGKILL).is_ok() {
                done.push(format!("killed what was left of process group {}", r.pid));
            }
        }
    }
    if let Some((id, state_dir)) = &r.container {
        let killed = kill_cgroup(id);
        let existed = state_dir.join("state").join(id).exists()
            || state_dir.join("bundles").join(id).exists();
        crate::sandbox::helper::delete_container(state_dir, id);
        if killed > 0 || existed {
            done.push(format!(
                "deleted container {id} ({killed} processes in its cgroup killed)"
            ));
        }
    }
    (!done.is_empty()).then(|| done.join("; "))
}

/// The cgroup folders of container `id` (v2, or each v1 controller).
fn cgroup_dirs(id: &str) -> Vec<PathBuf> {
    let mut dirs = vec![Path::new("/sys/fs/cgroup/edgefn").join(id)];
    if let Ok(ctrls) = std::fs::read_dir("/sys/fs/cgroup") {
        for c in ctrls.flatten() {
            dirs.push(c.path().join("edgefn").join(id));
        }
    }
    dirs.retain(|d| d.join("cgroup.procs").is_file());
    dirs
}

fn cgroup_pids(dirs: &[PathBuf]) -> Vec<i32> {
    let mut pids: Vec<i32> = dirs
        .iter()
        .filter_map(|d| std::fs::read_to_string(d.join("cgroup.procs")).ok())
        .flat_map(|t| {
            t.lines()
                .filter_map(|l| l.trim().parse().ok())
                .collect::<Vec<i32>>()
        })
        .collect();
    pids.sort_unstable();
    pids.dedup();
    pids
}

/// SIGKILLs every process in container `id`'s cgroup and waits (up to 5 s) for them to go;
/// returns how many there were.
fn kill_cgroup(id: &str) -> usize {
    let dirs = cgroup_dirs(id);
    let first = cgroup_pids(&dirs);
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let pids = cgroup_pids(&dirs);
        if pids.is_empty() || Instant::now() > deadline {
            return first.len();
        }
        for p in pids {
            let _ = kill(Pid::from_raw(p), Signal::SIGKILL);
        }
        std::thread::park_timeout(Duration::from_millis(20));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn start_time_of_this_process_is_stable() {
        let me = std::process::id() as i32;
        let t = start_time(me).expect("our own stat");
        assert_eq!(start_time(me), Some(t));
        assert_eq!(start_time(i32::MAX), None);
    }

    #[test]
    fn records_of_a_live_runtime_are_kept() {
        let dir = tempfile::tempdir().expect("dir");
        let me = std::process::id() as i32;
        let guard = write(dir.path(), me, None).expect("record");
        assert!(sweep(dir.path()).is_empty(), "our own record is not swept");
        assert_eq!(std::fs::read_dir(dir.path()).expect("read").count(), 1);
        drop(guard);
        assert_eq!(std::fs::read_dir(dir.path()).expect("read").count(), 0);
    }

    #[test]
    fn a_dead_runtimes_process_group_is_killed_and_a_reused_pid_is_not() {
        use std::os::unix::process::CommandExt as _;
        let dir = tempfile::tempdir().expect("dir");
        let mut child = std::process::Command::new("sleep")
            .arg("100")
            .process_group(0)
            .spawn()
            .expect("sleep");
        let pid = child.id() as i32;
        let start = start_time(pid).expect("started");
        let record = |pid: i32, start: u64| Record {
            // No process has this pid: the runtime is gone.
            owner: i32::MAX,
            owner_start: 1,
            pid,
            start,
            container: None,
        };
        // A record whose start time does not match names another process: left alone.
        std::fs::write(
            dir.path().join("a.json"),
            serde_json::to_vec(&record(pid, start + 1)).expect("json"),
        )
        .expect("write");
        let swept = sweep(dir.path());
        assert!(swept.is_empty(), "{swept:?}");
        assert!(child.try_wait().expect("wait").is_none(), "still running");
        assert_eq!(std::fs::read_dir(dir.path()).expect("read").count(), 0);
        std::fs::write(
            dir.path().join("b.json"),
            serde_json::to_vec(&record(pid, start)).expect("json"),
        )
        .expect("write");
        let swept = sweep(dir.path());
        assert_eq!(swept, [format!("killed process group {pid}")]);
        let status = child.wait().expect("wait");
        assert_eq!(
            std::os::unix::process::ExitStatusExt::signal(&status),
            Some(9)
        );
        assert_eq!(std::fs::read_dir(dir.path()).expect("read").count(), 0);
    }
}

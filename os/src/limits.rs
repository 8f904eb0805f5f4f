//! Per-process resource limits the programs raise for themselves.
//!
//! A control plane holds one file descriptor per connected device (each long-poll is a TCP
//! connection), so it needs far more than the usual soft limit of 1,024 open files. Like Go's
//! runtime (since 1.19) and nginx's `worker_rlimit_nofile`, [`raise_open_files`] lifts the soft
//! limit to the hard one, which the administrator controls (`LimitNOFILE=` in a systemd unit,
//! `ulimit -Hn`, `/etc/security/limits.conf`).

use rustix::process::{Resource, Rlimit, getrlimit, setrlimit};

/// The open-files limit (`RLIMIT_NOFILE`) before and after a change.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OpenFiles {
    /// The soft limit before.
    pub before: u64,
    /// The soft limit now.
    pub now: u64,
    /// The hard limit now (the most the soft limit may be raised to without privileges).
    pub hard: u64,
}

/// Raises this process's soft limit on open files (`RLIMIT_NOFILE`, setrlimit(2)).
///
/// With `want` = `None`: to the hard limit. With `Some(n)`: to `n`, raising the hard limit too
/// when it is lower, which takes `CAP_SYS_RESOURCE` (root) and at most `/proc/sys/fs/nr_open`.
/// Never lowers a limit. Children inherit the limits.
///
/// # Errors
///
/// The error setrlimit(2) gives: `EPERM` when raising the hard limit without the privilege,
/// `EINVAL` above `nr_open`.
pub fn raise_open_files(want: Option<u64>) -> std::io::Result<OpenFiles> {
    let cur = getrlimit(Resource::Nofile);
    let before = cur.current.unwrap_or(u64::MAX);
    let was_hard = cur.maximum.unwrap_or(u64::MAX);
    let (soft, hard) = match want {
        None => (was_hard, was_hard),
        Some(n) => (n.max(before), was_hard.max(n)),
    };
    if soft > before || hard > was_hard {
        setrlimit(
            Resource::Nofile,
            Rlimit {
                current: Some(soft),
                maximum: Some(hard),
            },
        )?;
    }
    Ok(OpenFiles {
        before,
        now: soft.max(before),
        hard,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_soft_limit_rises_to_the_hard_one_and_never_falls() {
        let first = raise_open_files(None).expect("raise to the hard limit");
        assert_eq!(first.now, first.hard);
        assert!(first.now >= first.before);
        let lower = raise_open_files(Some(16)).expect("asking for less is a no-op");
        assert_eq!(lower.now, first.now, "never lowered");
        assert_eq!(lower.hard, first.hard);
    }
}

//! Fault injection for the crash tests: the points of an update where the agent can be made to
//! die by SIGKILL, so a test can check that a crash at each leaves exactly the old or the new
//! release (ARCHITECTURE.md, "The agent's switch is one rename").
//!
//! The binary reads the point from `EDGEFN_AGENT_CRASH_AT` (`tests/agent.rs` sets it); a name
//! it does not know stops it at start, rather than a test passing because nothing crashed.

use std::str::FromStr;

/// A point of an update where a crash test may kill the agent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CrashPoint {
    /// After each synced MiB of a bundle download (`download`).
    Download,
    /// Half-way through extracting a bundle (`extract`).
    Extract,
    /// After the pending update is saved, before `current` is switched (`before-switch`).
    BeforeSwitch,
    /// Right after `current` is switched (`after-switch`).
    AfterSwitch,
}

impl CrashPoint {
    /// Every point, in the order an update passes them.
    pub const ALL: [CrashPoint; 4] = [
        CrashPoint::Download,
        CrashPoint::Extract,
        CrashPoint::BeforeSwitch,
        CrashPoint::AfterSwitch,
    ];

    /// Its name in `EDGEFN_AGENT_CRASH_AT`.
    pub fn name(self) -> &'static str {
        match self {
            CrashPoint::Download => "download",
            CrashPoint::Extract => "extract",
            CrashPoint::BeforeSwitch => "before-switch",
            CrashPoint::AfterSwitch => "after-switch",
        }
    }
}

impl std::fmt::Display for CrashPoint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// A crash point name that is not one of [`CrashPoint::ALL`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown crash point `{0}`: one of download, extract, before-switch, after-switch")]
pub struct UnknownCrashPoint(pub String);

impl FromStr for CrashPoint {
    type Err = UnknownCrashPoint;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        CrashPoint::ALL
            .into_iter()
            .find(|p| p.name() == s)
            .ok_or_else(|| UnknownCrashPoint(s.to_owned()))
    }
}

/// Where this agent dies, if anywhere: a cheap copy handed to each step that has a crash point.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct Faults {
    crash_at: Option<CrashPoint>,
}

impl Faults {
    /// Dies at `crash_at`, when given.
    pub(crate) fn new(crash_at: Option<CrashPoint>) -> Faults {
        Faults { crash_at }
    }

    /// SIGKILLs this process when `point` is the chosen one; otherwise does nothing.
    pub(crate) fn at(self, point: CrashPoint) {
        if self.crash_at != Some(point) {
            return;
        }
        tracing::warn!("crash point `{point}`: killing myself with SIGKILL");
        let _ = std::process::Command::new("kill")
            .args(["-KILL", &std::process::id().to_string()])
            .status();
        // SIGKILL is delivered before `kill` returns; never go on.
        std::process::abort();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn crash_points_parse_by_their_names() {
        for p in CrashPoint::ALL {
            assert_eq!(p.name().parse::<CrashPoint>(), Ok(p));
        }
        assert!("switch".parse::<CrashPoint>().is_err());
    }
}

//! The agent's own small state, beside the releases: digests that failed (not retried until a
//! newer one arrives) and the update whose health window has not finished (checked again after
//! a restart). Written whole, atomically.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

/// An update that switched but has not passed its health window.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Pending {
    /// The new release.
    pub digest: String,
    /// The release to return to when it fails.
    pub previous: Option<String>,
}

/// What the agent remembers.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct AgentState {
    /// Desired-state digests that failed on this device.
    #[serde(default)]
    pub failed: BTreeSet<String>,
    /// The update in its health window.
    #[serde(default)]
    pub pending: Option<Pending>,
}

fn path(data: &Path) -> PathBuf {
    data.join("state.json")
}

impl AgentState {
    /// Reads the state (empty when there is none).
    pub fn load(data: &Path) -> AgentState {
        std::fs::read(path(data))
            .ok()
            .and_then(|b| serde_json::from_slice(&b).ok())
            .unwrap_or_default()
    }

    /// Writes the state: temporary file, fsync, rename, fsync of the folder.
    pub fn save(&self, data: &Path) -> std::io::Result<()> {
        let bytes = serde_json::to_vec_pretty(self).expect("state serializes");
        edgefn_os::file::write_atomic(&path(data), &bytes, edgefn_os::file::PUBLIC)
    }
}

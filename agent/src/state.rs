//! The agent's own small state, beside the releases: digests that failed (not retried until a
//! newer one arrives) and the update whose health window has not finished (checked again after
//! a restart). Written whole, atomically.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

/// An update that switched but has not passed its health window.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Pending {
    /// The new release.
    pub(crate) digest: String,
    /// The release to return to when it fails.
    pub(crate) previous: Option<String>,
}

/// What the agent remembers.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct AgentState {
    /// Desired-state digests that failed on this device.
    #[serde(default)]
    pub(crate) failed: BTreeSet<String>,
    /// The update in its health window.
    #[serde(default)]
    pub(crate) pending: Option<Pending>,
    /// The newest revision whose signed desired state this device accepted (with
    /// `trustedKeys`): an older one served later is a replay, and refused.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) accepted_revision: Option<u64>,
}

fn path(data: &Path) -> PathBuf {
    data.join("state.json")
}

impl AgentState {
    /// Reads the state (empty when there is none).
    pub(crate) fn load(data: &Path) -> AgentState {
        std::fs::read(path(data))
            .ok()
            .and_then(|b| serde_json::from_slice(&b).ok())
            .unwrap_or_default()
    }

    /// Writes the state: temporary file, fsync, rename, fsync of the folder.
    pub(crate) fn save(&self, data: &Path) -> std::io::Result<()> {
        let bytes = serde_json::to_vec_pretty(self).expect("state serializes");
        edgefn_os::file::write_atomic(&path(data), &bytes, edgefn_os::file::PUBLIC)
    }
}

/// The agent's state in memory, and its file: changed in memory, then written whole off the
/// async threads ([`StateFile::save`]).
#[derive(Debug)]
pub(crate) struct StateFile {
    data: PathBuf,
    state: std::sync::Mutex<AgentState>,
    /// Held while a snapshot is taken and written: the last write is of the newest state.
    writing: std::sync::Mutex<()>,
}

impl StateFile {
    /// Reads the state of the data folder `data`.
    pub(crate) fn load(data: &Path) -> std::sync::Arc<StateFile> {
        std::sync::Arc::new(StateFile {
            data: data.to_path_buf(),
            state: std::sync::Mutex::new(AgentState::load(data)),
            writing: std::sync::Mutex::new(()),
        })
    }

    /// The state, to read or change in memory (not held across an `await`).
    pub(crate) fn lock(&self) -> std::sync::MutexGuard<'_, AgentState> {
        self.state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Writes the state as it is now (temporary file, fsync, rename, fsync of the folder) on a
    /// blocking thread, and waits for it.
    pub(crate) async fn save(self: &std::sync::Arc<Self>) -> std::io::Result<()> {
        let me = self.clone();
        crate::blocking(move || {
            let _writing = me
                .writing
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            let snapshot = me.lock().clone();
            snapshot.save(&me.data)
        })
        .await
    }
}

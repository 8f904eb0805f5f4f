//! The `edgefn dev` session: where a running `edgefn dev` keeps its state under the project, and
//! the session file (`.edgefn/dev/session.json`, mode 0600) through which other terminals in the
//! project find its control plane and admin token.
//!
//! `edgefn dev` ([`crate::commands::dev`]) writes the file when its control plane is up and
//! removes it when it stops; [`crate::client::Client::from_args`] reads it.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::error::CliResult;

/// Where `edgefn dev` keeps its state, under the project root.
pub(crate) const STATE_DIR: &str = ".edgefn/dev";

/// The session file's name, in [`STATE_DIR`].
const FILE: &str = "session.json";

/// What a running session tells other terminals: `{"cloud": URL, "token": TOKEN, "pid": N}`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct Session {
    /// The embedded control plane's URL (`http://127.0.0.1:PORT`).
    pub(crate) cloud: String,
    /// Its admin token.
    pub(crate) token: String,
    /// The process id of the `edgefn dev` that runs it; a session whose process is gone is stale.
    pub(crate) pid: u32,
}

/// The session file of the state folder `state` (the project's [`STATE_DIR`]).
pub(crate) fn path(state: &Path) -> PathBuf {
    state.join(FILE)
}

/// Writes the session file into `state`, readable by its owner only.
pub(crate) fn write(state: &Path, session: &Session) -> CliResult<PathBuf> {
    let path = path(state);
    let text = serde_json::to_string(session).expect("a session serializes");
    crate::project::write_secret(&path, text.as_bytes())?;
    Ok(path)
}

/// The session of an `edgefn dev` running for the project around `dir`: the nearest
/// `.edgefn/dev/session.json` at or above `dir`, when its process still runs. `None` when there
/// is none, it does not parse, or its process is gone.
pub(crate) fn find(dir: &Path) -> Option<Session> {
    for dir in dir.ancestors() {
        let Ok(text) = std::fs::read_to_string(path(&dir.join(STATE_DIR))) else {
            continue;
        };
        let session: Session = serde_json::from_str(&text).ok()?;
        if !Path::new(&format!("/proc/{}", session.pid)).exists() {
            return None;
        }
        return Some(session);
    }
    None
}

//! The `edgefn dev` session file, as the CLI keeps it: written into the project's state folder
//! by `edgefn dev` ([`crate::commands::dev`]) when its control plane is up, removed when it
//! stops, and found by [`crate::client::Client::from_args`] from the current folder upwards.
//! Its format and place are the schema's ([`edgefn_schema::dev_session`]); the file's mode
//! (0600: it holds the admin token) and the liveness check of its process are this module's.

use std::path::{Path, PathBuf};

pub(crate) use edgefn_schema::dev_session::{DevSession, STATE_DIR};

use crate::error::CliResult;

/// The session file of the state folder `state` (the project's [`STATE_DIR`]).
fn path(state: &Path) -> PathBuf {
    state.join(edgefn_schema::dev_session::FILE)
}

/// Writes the session file into `state`, readable by its owner only; returns its path.
pub(crate) fn write(state: &Path, session: &DevSession) -> CliResult<PathBuf> {
    let path = path(state);
    crate::project::write_secret(&path, &session.to_json())?;
    Ok(path)
}

/// The session of an `edgefn dev` running for the project around `dir`: the nearest session
/// file at or above `dir`, when its process still runs. `None` when there is none, it does not
/// parse, or its process is gone.
pub(crate) fn find(dir: &Path) -> Option<DevSession> {
    for dir in dir.ancestors() {
        let Ok(bytes) = std::fs::read(path(&dir.join(STATE_DIR))) else {
            continue;
        };
        let session = DevSession::from_json(&bytes)?;
        if !Path::new(&format!("/proc/{}", session.pid)).exists() {
            return None;
        }
        return Some(session);
    }
    None
}

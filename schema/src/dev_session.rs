//! The session file of a running `edgefn dev`: how other terminals in the project (`edgefn
//! status`, `edgefn publish`, ...) find its local control plane.
//!
//! `edgefn dev` writes `<project>/.edgefn/dev/session.json` (mode 0600: it holds the admin
//! token) when its control plane is up and removes it when it stops. A reader looks for it in
//! the current folder and its ancestors, and uses it only while process `pid` lives.

use serde::{Deserialize, Serialize};

/// The folder of `edgefn dev`'s state, relative to the project's root.
pub const STATE_DIR: &str = ".edgefn/dev";
/// The session file's name, in [`STATE_DIR`].
pub const FILE: &str = "session.json";

/// The content of the session file: `{"cloud": "http://127.0.0.1:7070", "token": "...",
/// "pid": 1234}`.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DevSession {
    /// The local control plane's URL (`http://host:port`).
    pub cloud: String,
    /// Its admin token.
    pub token: String,
    /// The process id of the `edgefn dev` that runs it.
    pub pid: u32,
}

impl DevSession {
    /// The file's bytes.
    pub fn to_json(&self) -> Vec<u8> {
        serde_json::to_vec(self).expect("a session serializes")
    }

    /// Reads the file's bytes; `None` when they are not a session.
    pub fn from_json(bytes: &[u8]) -> Option<DevSession> {
        serde_json::from_slice(bytes).ok()
    }
}

/// The token is left out.
impl std::fmt::Debug for DevSession {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DevSession")
            .field("cloud", &self.cloud)
            .field("pid", &self.pid)
            .finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_file_keeps_its_shape() {
        let s = DevSession {
            cloud: "http://127.0.0.1:7070".into(),
            token: "edgefn_adm_x".into(),
            pid: 42,
        };
        assert_eq!(
            String::from_utf8(s.to_json()).unwrap(),
            r#"{"cloud":"http://127.0.0.1:7070","token":"edgefn_adm_x","pid":42}"#
        );
        assert_eq!(DevSession::from_json(&s.to_json()), Some(s.clone()));
        assert_eq!(DevSession::from_json(b"{}"), None);
        assert!(!format!("{s:?}").contains("edgefn_adm_x"));
    }
}

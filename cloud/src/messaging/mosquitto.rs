//! Confining devices on an external Mosquitto 2.x: its password file (hashes in Mosquitto's
//! own `$7$` format) and ACL file, written atomically, then a SIGHUP to reload them.
//!
//! A device's hash is computed when it registers (the only time the cloud sees its token) and
//! stored with the device record; `passwd` is rewritten from the registry on every change.

use std::path::{Path, PathBuf};

use base64::Engine;
use base64::engine::general_purpose::STANDARD;

use super::CLOUD_USER;

/// PBKDF2 iterations: Mosquitto's default for `$7$`. Tokens are 256 random bits, so the
/// work factor is not what protects them.
const ITERATIONS: u32 = 101;
/// Salt length of `mosquitto_passwd`.
const SALT_BYTES: usize = 12;

/// `$7$<iterations>$<base64 salt>$<base64 PBKDF2-HMAC-SHA512(password, salt)>`, as
/// `mosquitto_passwd` writes for Mosquitto 2.x.
pub(crate) fn hash(password: &str) -> Result<String, getrandom::Error> {
    let mut salt = [0u8; SALT_BYTES];
    getrandom::fill(&mut salt)?;
    Ok(hash_with_salt(password, &salt, ITERATIONS))
}

fn hash_with_salt(password: &str, salt: &[u8], iterations: u32) -> String {
    let mut out = [0u8; 64];
    pbkdf2::pbkdf2_hmac::<sha2::Sha512>(password.as_bytes(), salt, iterations, &mut out);
    format!(
        "$7${iterations}${}${}",
        STANDARD.encode(salt),
        STANDARD.encode(out)
    )
}

/// The ACL file: the cloud reads and writes everything under `edgefn/`; every other user
/// (a device, by its name) writes `edgefn/<name>/up/#`, `edgefn/<name>/logs/#` and
/// `edgefn/<name>/reply/+` and reads `edgefn/<name>/down/#` and `edgefn/<name>/invoke/+`,
/// nothing else.
pub(crate) fn acl() -> String {
    format!(
        "# Written by edgefn-cloud; changes are overwritten.\n\
         user {CLOUD_USER}\n\
         topic readwrite edgefn/#\n\
         \n\
         # Every device, by its user name (%u):\n\
         pattern write edgefn/%u/up/#\n\
         pattern write edgefn/%u/logs/#\n\
         pattern write edgefn/%u/reply/+\n\
         pattern read edgefn/%u/down/#\n\
         pattern read edgefn/%u/invoke/+\n"
    )
}

/// The password file for `users` (name, hash), sorted by name.
pub(crate) fn passwd(users: &[(String, String)]) -> String {
    let mut users: Vec<&(String, String)> = users.iter().collect();
    users.sort();
    let mut text = String::new();
    for (name, hash) in users {
        text.push_str(name);
        text.push(':');
        text.push_str(hash);
        text.push('\n');
    }
    text
}

/// Why Mosquitto's files could not be written, or Mosquitto not told to reload them.
#[derive(Debug, thiserror::Error)]
pub enum MosquittoError {
    /// A file operation failed.
    #[error("{action} {}: {source}", .path.display())]
    Io {
        /// What was being done.
        action: &'static str,
        /// Where.
        path: PathBuf,
        /// Why it failed.
        source: std::io::Error,
    },
    /// The pid file holds no process id.
    #[error("{} holds `{text}`, not a process id", .path.display())]
    BadPid {
        /// The pid file.
        path: PathBuf,
        /// What it holds, trimmed.
        text: String,
    },
    /// `kill -HUP` failed.
    #[error("kill -HUP {pid} failed ({status})")]
    Kill {
        /// The process signalled.
        pid: u32,
        /// How `kill` ended.
        status: std::process::ExitStatus,
    },
    /// The task writing the files panicked or was cancelled.
    #[error("the task writing Mosquitto's files failed: {0}")]
    Task(#[from] tokio::task::JoinError),
}

fn io(action: &'static str, path: &Path) -> impl FnOnce(std::io::Error) -> MosquittoError {
    let path = path.to_path_buf();
    move |source| MosquittoError::Io {
        action,
        path,
        source,
    }
}

/// Writes `passwd` and `acl` into `dir` atomically (temporary file, fsync, rename, fsync of the
/// folder).
pub(crate) fn write(dir: &Path, users: &[(String, String)]) -> Result<(), MosquittoError> {
    std::fs::create_dir_all(dir).map_err(io("create", dir))?;
    // The rules first, then the users they apply to: whoever sees the new users (Mosquitto
    // on reload, a test) finds the rules already there.
    write_atomic(&dir.join("acl"), acl().as_bytes(), 0o644)?;
    write_atomic(&dir.join("passwd"), passwd(users).as_bytes(), 0o640)
}

/// Sends SIGHUP to the pid written in `pid_file`.
pub(crate) fn reload(pid_file: &Path) -> Result<(), MosquittoError> {
    let text =
        std::fs::read_to_string(pid_file).map_err(io("read Mosquitto's pid file", pid_file))?;
    let pid: u32 = text.trim().parse().map_err(|_| MosquittoError::BadPid {
        path: pid_file.to_path_buf(),
        text: text.trim().to_owned(),
    })?;
    let status = std::process::Command::new("kill")
        .args(["-HUP", &pid.to_string()])
        .status()
        .map_err(io("run kill for", pid_file))?;
    if status.success() {
        Ok(())
    } else {
        Err(MosquittoError::Kill { pid, status })
    }
}

fn write_atomic(path: &Path, bytes: &[u8], mode: u32) -> Result<(), MosquittoError> {
    edgefn_os::file::write_atomic(path, bytes, mode).map_err(io("write", path))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hashes_have_mosquittos_layout() {
        // PBKDF2-HMAC-SHA512 test vector (RFC 6070 style inputs, SHA-512 output).
        let h = hash_with_salt("password", b"salt", 1);
        let parts: Vec<&str> = h.split('$').collect();
        assert_eq!(parts[..3], ["", "7", "1"]);
        assert_eq!(parts[3], "c2FsdA==");
        let raw = STANDARD.decode(parts[4]).unwrap();
        assert_eq!(edgefn_schema::resolve::hex(&raw[..8]), "867f70cf1ade02cf");
        let fresh = hash("tok").unwrap();
        assert!(fresh.starts_with("$7$101$"));
        assert_ne!(fresh, hash("tok").unwrap());
    }

    #[test]
    fn files_list_users_and_patterns() {
        let p = passwd(&[
            ("gw-02".into(), "$7$b".into()),
            ("gw-01".into(), "$7$a".into()),
        ]);
        assert_eq!(p, "gw-01:$7$a\ngw-02:$7$b\n");
        assert!(acl().contains("pattern read edgefn/%u/down/#"));
    }
}

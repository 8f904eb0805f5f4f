//! The functions' secrets on the device: fetched from the control plane (only those the desired
//! state names, at the versions it names), kept on a memory file system, handed to each binding
//! as a folder of files.
//!
//! The root is a private folder on tmpfs or ramfs: `secretsDir` from the configuration, or
//! `/dev/shm/edgefn-agent-<id>` (else `/run/edgefn-agent-<id>`), `<id>` derived from the data
//! folder so that two agents on one host keep apart. Nothing is written to the data folder, so
//! no value reaches a disk or a backup. The values live as long as the agent runs: a clean stop
//! removes the folders (and the agent's own root), and a start removes what a killed run left;
//! they are fetched again when the agent boots or updates with the cloud reachable. Without a memory file system
//! a release that names secrets does not start, and says why; one that names none is not
//! affected.
//!
//! Each binding's folder is named after the binding and a digest of its secrets' names and
//! versions (`<binding>-<12 hex>`), so releases with the same versions share it and a new
//! version is a new folder. A folder is written whole (files in a `.tmp-*` folder, then one
//! rename) and never changed; folders no kept release uses are removed.

use std::collections::BTreeMap;
use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use edgefn_schema::{DesiredState, ResolvedBinding};
use sha2::{Digest, Sha256};

use crate::cloud::CloudClient;

/// `f_type` of tmpfs (`TMPFS_MAGIC`, linux/magic.h).
const TMPFS_MAGIC: i64 = 0x0102_1994;
/// `f_type` of ramfs (`RAMFS_MAGIC`, linux/magic.h).
const RAMFS_MAGIC: i64 = 0x8584_58f6;

/// Where the secrets of this agent's functions are kept.
#[derive(Debug, Clone)]
pub(crate) struct SecretFolders {
    /// The root folder, or why there is none.
    root: Result<PathBuf, String>,
    /// Whether the root is the configured `secretsDir` (emptied, kept) rather than this agent's
    /// own folder under `/dev/shm` or `/run` (removed).
    configured: bool,
    /// Owner of the files (the sandbox's `run_as`), so the function can read them.
    owner: Option<(u32, u32)>,
}

/// Whether `path` is on a memory file system.
fn in_memory(path: &Path) -> bool {
    rustix::fs::statfs(path).is_ok_and(|s| {
        #[allow(clippy::unnecessary_cast)]
        let t = s.f_type as i64;
        t == TMPFS_MAGIC || t == RAMFS_MAGIC
    })
}

fn hex12(bytes: &[u8]) -> String {
    edgefn_schema::resolve::hex(&Sha256::digest(bytes))[..12].to_owned()
}

impl SecretFolders {
    /// The folders of the agent whose data folder is `data`, under `configured` when given.
    /// Never fails: a missing memory file system is reported when a release needs it.
    pub(crate) fn open(
        configured: Option<&Path>,
        data: &Path,
        owner: Option<(u32, u32)>,
    ) -> SecretFolders {
        let folders = SecretFolders {
            root: Self::choose(configured, data),
            configured: configured.is_some(),
            owner,
        };
        // What an earlier run left (it was killed, or the host lost power with /run kept):
        // the values live as long as the agent runs, and are fetched again at boot.
        folders.clear();
        folders
    }

    /// Removes every folder of secrets this agent wrote, and its own root (a configured
    /// `secretsDir` is emptied, not removed: it may be a mount point). Called when the agent
    /// starts (what a killed run left) and when it stops cleanly, once its functions stopped.
    pub(crate) fn clear(&self) {
        let Ok(root) = &self.root else { return };
        let Ok(entries) = std::fs::read_dir(root) else {
            return;
        };
        for e in entries.flatten().filter(|e| written_here(&e.file_name())) {
            if let Err(err) = remove_folder(&e.path()) {
                tracing::warn!(
                    "cannot remove the secrets folder {}: {err}",
                    e.path().display()
                );
            }
        }
        if !self.configured {
            if let Err(err) = std::fs::remove_dir(root) {
                tracing::warn!("cannot remove the secrets folder {}: {err}", root.display());
            }
        }
    }

    /// Creates the root (when a release first needs it): 0700, or 0711 when the functions run
    /// as another user, who may then pass through it to their own folders but not list it.
    fn create_root(root: &Path, owner: Option<(u32, u32)>) -> std::io::Result<()> {
        let mode = if owner.is_some() { 0o711 } else { 0o700 };
        match std::fs::DirBuilder::new().mode(mode).create(root) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
            Err(e) => return Err(e),
        }
        // Narrowed even when it existed: nobody else lists or reads it.
        std::fs::set_permissions(root, std::fs::Permissions::from_mode(mode))
    }

    fn choose(configured: Option<&Path>, data: &Path) -> Result<PathBuf, String> {
        if let Some(dir) = configured {
            let probe = if dir.exists() {
                dir
            } else {
                dir.parent().unwrap_or(Path::new("/"))
            };
            if !in_memory(probe) {
                return Err(format!(
                    "secretsDir {} is not on a memory file system (tmpfs or ramfs): secrets are kept only in memory; mount a tmpfs there or choose a folder under /dev/shm",
                    dir.display()
                ));
            }
            return Ok(dir.to_owned());
        }
        let data = std::path::absolute(data).unwrap_or_else(|_| data.to_owned());
        let id = hex12(data.as_os_str().as_encoded_bytes());
        for base in ["/dev/shm", "/run"] {
            if in_memory(Path::new(base)) {
                return Ok(Path::new(base).join(format!("edgefn-agent-{id}")));
            }
        }
        Err("neither /dev/shm nor /run is a memory file system, and no `secretsDir` is configured: secrets are kept only in memory; mount a tmpfs and name it with `secretsDir`".into())
    }

    /// Whether there is no memory file system to keep secrets in (a release naming secrets
    /// cannot run here; retrying does not help).
    pub(crate) fn unavailable(&self) -> bool {
        self.root.is_err()
    }

    /// The folder of `binding`'s secrets; `None` when it names none.
    pub(crate) fn folder(&self, binding: &ResolvedBinding) -> Option<PathBuf> {
        if binding.secrets.is_empty() {
            return None;
        }
        let root = self
            .root
            .clone()
            .unwrap_or_else(|_| PathBuf::from("/nonexistent-edgefn-secrets"));
        Some(root.join(Self::folder_name(binding)))
    }

    fn folder_name(binding: &ResolvedBinding) -> String {
        let pins: String = binding
            .secrets
            .iter()
            .map(|(n, v)| format!("{n}={v}\n"))
            .collect();
        format!("{}-{}", binding.name, hex12(pins.as_bytes()))
    }

    /// Makes sure every binding of `state` has its secrets folder, fetching what is missing
    /// from the control plane. The error says what failed, never a value.
    pub(crate) async fn ensure(
        &self,
        cloud: &CloudClient,
        state: &DesiredState,
    ) -> Result<(), String> {
        let wanted: Vec<&ResolvedBinding> = state
            .bindings
            .iter()
            .filter(|b| !b.secrets.is_empty())
            .collect();
        if wanted.is_empty() {
            return Ok(());
        }
        let root = self.root.clone()?;
        let mut fetched: BTreeMap<(String, u64), Vec<u8>> = BTreeMap::new();
        for b in wanted {
            let dir = root.join(Self::folder_name(b));
            if dir.is_dir() {
                continue;
            }
            let mut files = Vec::new();
            for (name, version) in &b.secrets {
                let key = (name.clone(), *version);
                if !fetched.contains_key(&key) {
                    let value = cloud.secret(name, *version).await.map_err(|e| {
                        format!("cannot fetch secret `{name}` version {version}: {e}")
                    })?;
                    fetched.insert(key.clone(), value);
                }
                files.push((name.clone(), fetched[&key].clone()));
            }
            let (root, owner) = (root.clone(), self.owner);
            crate::blocking(move || {
                Self::create_root(&root, owner)?;
                write_folder(&root, &dir, &files, owner)
            })
            .await
            .map_err(|e| format!("cannot write the secrets of `{}`: {e}", b.name))?;
        }
        Ok(())
    }

    /// Removes the folders no binding of `keep` uses.
    pub(crate) fn prune(&self, keep: &[&DesiredState]) {
        let Ok(root) = &self.root else { return };
        let used: Vec<String> = keep
            .iter()
            .flat_map(|s| s.bindings.iter())
            .filter(|b| !b.secrets.is_empty())
            .map(Self::folder_name)
            .collect();
        if let Ok(entries) = std::fs::read_dir(root) {
            for e in entries.flatten() {
                let name = e.file_name().to_string_lossy().into_owned();
                if !used.contains(&name)
                    && !name.starts_with(".tmp-")
                    && written_here(&e.file_name())
                {
                    let _ = remove_folder(&e.path());
                }
            }
        }
    }
}

/// Whether `name` is one the agent gives what it writes in the root: a binding's folder
/// (`<binding>-<12 hex>`) or one being written (`.tmp-<12 hex>`). Nothing else is removed, so a
/// configured `secretsDir` shared with other files (even `/dev/shm` itself, with other agents'
/// roots) keeps them.
fn written_here(name: &std::ffi::OsStr) -> bool {
    let Some(name) = name.to_str() else {
        return false;
    };
    // Another agent's root, or `edgefn dev`'s, when `secretsDir` is /dev/shm itself.
    if name.starts_with("edgefn-agent-") || name.starts_with("edgefn-dev-") {
        return false;
    }
    let hex12 =
        |h: &str| h.len() == 12 && h.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'));
    match name.strip_prefix(".tmp-") {
        Some(rest) => hex12(rest),
        None => name.rsplit_once('-').is_some_and(|(binding, h)| {
            hex12(h)
                && !binding.is_empty()
                && binding
                    .bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        }),
    }
}

/// Removes a binding's folder (0500, so made writable first: an agent not running as root may
/// not unlink what it holds otherwise), or a stray file.
fn remove_folder(path: &Path) -> std::io::Result<()> {
    let meta = std::fs::symlink_metadata(path)?;
    if !meta.is_dir() {
        return std::fs::remove_file(path);
    }
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o700))?;
    std::fs::remove_dir_all(path)
}

/// Writes `files` into a new folder and renames it to `dir`: the folder 0500 and each file
/// 0400, owned by `owner` when given, created with `O_EXCL|O_NOFOLLOW`.
fn write_folder(
    root: &Path,
    dir: &Path,
    files: &[(String, Vec<u8>)],
    owner: Option<(u32, u32)>,
) -> std::io::Result<()> {
    let mut suffix = [0u8; 6];
    getrandom::fill(&mut suffix).map_err(std::io::Error::other)?;
    let tmp = root.join(format!(".tmp-{}", edgefn_schema::resolve::hex(&suffix)));
    std::fs::DirBuilder::new().mode(0o700).create(&tmp)?;
    let written = (|| {
        for (name, value) in files {
            let path = tmp.join(name);
            let mut f = std::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o400)
                .custom_flags(rustix::fs::OFlags::NOFOLLOW.bits() as i32)
                .open(&path)?;
            f.write_all(value)?;
            if let Some((uid, gid)) = owner {
                std::os::unix::fs::chown(&path, Some(uid), Some(gid))?;
            }
        }
        if let Some((uid, gid)) = owner {
            std::os::unix::fs::chown(&tmp, Some(uid), Some(gid))?;
        }
        std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(0o500))?;
        match std::fs::rename(&tmp, dir) {
            // Another update wrote the same folder first: the same values.
            Err(_) if dir.is_dir() => Ok(()),
            other => other,
        }
    })();
    if tmp.exists() {
        let _ = std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(0o700));
        let _ = std::fs::remove_dir_all(&tmp);
    }
    written
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_names_the_agent_writes_are_removed() {
        for ours in [
            "reader-0123456789ab",
            "my-binding-2-abcdef012345",
            ".tmp-00aa11bb22cc",
        ] {
            assert!(written_here(ours.as_ref()), "{ours}");
        }
        for other in [
            "edgefn-agent-0123456789ab",
            "reader-0123456789AB",
            "reader-0123456789a",
            "-0123456789ab",
            ".tmp-x",
            "sem.lock",
            "Reader-0123456789ab",
        ] {
            assert!(!written_here(other.as_ref()), "{other}");
        }
    }

    /// A configured folder is emptied of what the agent wrote and kept, with everything else
    /// in it; the agent's own root is removed.
    #[test]
    fn clearing_removes_what_the_agent_wrote_and_nothing_else() {
        let shm = tempfile::tempdir_in("/dev/shm").expect("a memory file system at /dev/shm");
        let data = tempfile::tempdir().expect("data");
        let configured = shm.path().join("s");
        std::fs::create_dir(&configured).expect("mkdir");
        let folder = configured.join("reader-0123456789ab");
        write_folder(
            &configured,
            &folder,
            &[("token".into(), b"v".to_vec())],
            None,
        )
        .expect("write");
        std::fs::write(configured.join("someone-else.txt"), "kept").expect("write");
        // Opening clears what an earlier run left.
        let f = SecretFolders::open(Some(&configured), data.path(), None);
        assert!(!folder.exists());
        assert!(configured.join("someone-else.txt").exists());
        assert!(configured.is_dir(), "a configured folder is kept");
        write_folder(
            &configured,
            &folder,
            &[("token".into(), b"v".to_vec())],
            None,
        )
        .expect("write");
        f.clear();
        assert!(!folder.exists());
        assert!(configured.join("someone-else.txt").exists());
    }

    #[test]
    fn a_configured_folder_off_memory_is_refused_with_the_reason() {
        let data = tempfile::tempdir().expect("tmp");
        // The data folder's own file system is not where secrets go unless it is in memory.
        let dir = data.path().join("secrets");
        let f = SecretFolders::open(Some(&dir), data.path(), None);
        if !in_memory(data.path()) {
            let err = f.root.expect_err("refused");
            assert!(err.contains("not on a memory file system"), "{err}");
        }
    }

    #[test]
    fn folders_are_written_whole_and_private() {
        let Ok(base) = tempfile::tempdir_in("/dev/shm") else {
            return;
        };
        let data = tempfile::tempdir().expect("tmp");
        let f = SecretFolders::open(Some(&base.path().join("s")), data.path(), None);
        let root = f.root.clone().expect("in memory");
        assert!(!root.exists(), "made only when a release needs it");
        SecretFolders::create_root(&root, None).expect("root");
        let dir = root.join("b-0123456789ab");
        write_folder(&root, &dir, &[("db-password".into(), b"v1".to_vec())], None)
            .expect("written");
        let meta = std::fs::metadata(dir.join("db-password")).expect("file");
        assert_eq!(meta.permissions().mode() & 0o777, 0o400);
        assert_eq!(
            std::fs::metadata(&root).expect("root").permissions().mode() & 0o777,
            0o700
        );
        assert_eq!(std::fs::read(dir.join("db-password")).expect("read"), b"v1");
        f.prune(&[]);
        assert!(!dir.exists());
    }
}

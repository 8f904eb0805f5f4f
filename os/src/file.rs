//! Atomic, durable file writes.
//!
//! [`write_atomic`] writes a temporary file in the target's folder — created with its final mode
//! (`open(2)` with `O_CREAT|O_EXCL` and that mode, through `tempfile`), so a file holding a token
//! is never readable by others, not even for a moment — then `fsync`s it, renames it over the
//! target and `fsync`s the folder. A crash leaves the old file or the new one, never half of one,
//! and a rename that returned is durable.
//!
//! The temporary file is named `.<name>.tmp-<random>`: the agent removes `*.tmp-*` debris at
//! start.

use std::fs;
use std::io::{self, Write};
use std::path::Path;

/// Mode of files that hold a secret (a token, a login): read and write for the owner only.
pub const PRIVATE: u32 = 0o600;
/// Mode of ordinary files: readable by everyone, writable by the owner (before the umask).
pub const PUBLIC: u32 = 0o644;

/// Writes `contents` to `path`, whole or not at all, creating it with `mode` (e.g. [`PRIVATE`]).
///
/// An existing file at `path` is replaced, and the new one has `mode` whatever the old one had.
/// The folder must exist.
///
/// # Errors
///
/// Any I/O error creating, writing, syncing or renaming (`ENOSPC` for a full disk among them);
/// the temporary file is removed then and `path` is untouched.
pub fn write_atomic(path: &Path, contents: &[u8], mode: u32) -> io::Result<()> {
    let dir = folder_of(path);
    let name = path
        .file_name()
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "the path names no file"))?
        .to_string_lossy();
    #[cfg(unix)]
    let permissions = {
        use std::os::unix::fs::PermissionsExt;
        fs::Permissions::from_mode(mode)
    };
    #[cfg(not(unix))]
    let permissions = {
        let _ = mode;
        fs::metadata(dir)?.permissions()
    };
    let mut tmp = tempfile::Builder::new()
        .prefix(&format!(".{name}.tmp-"))
        .permissions(permissions)
        .tempfile_in(dir)?;
    tmp.write_all(contents)?;
    // Flush before sync: a buffered writer's error must not be lost (none here, but the
    // order is the rule).
    tmp.flush()?;
    tmp.as_file().sync_all()?;
    tmp.persist(path).map_err(|e| e.error)?;
    sync_folder(dir)
}

/// Like [`write_atomic`], but an existing file keeps its permission bits; a new one gets `mode`.
///
/// For files the user owns and may have made executable or private (a manifest, a script).
///
/// # Errors
///
/// As [`write_atomic`].
pub fn write_atomic_keeping_mode(path: &Path, contents: &[u8], mode: u32) -> io::Result<()> {
    #[cfg(unix)]
    let mode = {
        use std::os::unix::fs::PermissionsExt;
        fs::metadata(path).map_or(mode, |m| m.permissions().mode() & 0o7777)
    };
    write_atomic(path, contents, mode)
}

/// Creates `dir` and its missing parents; those it creates get `mode` (e.g. `0o700` for a
/// folder of secrets). Existing folders are left as they are.
///
/// # Errors
///
/// Any I/O error creating a folder.
pub fn create_folder(dir: &Path, mode: u32) -> io::Result<()> {
    let mut builder = fs::DirBuilder::new();
    builder.recursive(true);
    #[cfg(unix)]
    std::os::unix::fs::DirBuilderExt::mode(&mut builder, mode);
    #[cfg(not(unix))]
    let _ = mode;
    builder.create(dir)
}

/// `fsync`s a folder, so that a rename or a new entry in it survives a power cut.
///
/// # Errors
///
/// Opening or syncing the folder.
pub fn sync_folder(dir: &Path) -> io::Result<()> {
    #[cfg(unix)]
    {
        fs::File::open(dir)?.sync_all()
    }
    #[cfg(not(unix))]
    {
        let _ = dir;
        Ok(())
    }
}

fn folder_of(path: &Path) -> &Path {
    path.parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."))
}

#[cfg(all(test, unix))]
mod tests {
    use std::os::unix::fs::PermissionsExt;

    use super::*;

    fn mode_of(path: &Path) -> u32 {
        fs::metadata(path).expect("metadata").permissions().mode() & 0o777
    }

    #[test]
    fn a_new_file_has_its_mode_and_nothing_else_is_left() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("login.json");
        write_atomic(&path, b"secret", PRIVATE).unwrap();
        assert_eq!(fs::read(&path).unwrap(), b"secret");
        assert_eq!(mode_of(&path), 0o600);
        let names: Vec<_> = fs::read_dir(dir.path()).unwrap().flatten().collect();
        assert_eq!(names.len(), 1, "no temporary file is left");
    }

    #[test]
    fn replacing_a_readable_file_makes_it_private() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("agent.yaml");
        fs::write(&path, "old").unwrap();
        fs::set_permissions(&path, fs::Permissions::from_mode(0o644)).unwrap();
        write_atomic(&path, b"token: t", PRIVATE).unwrap();
        assert_eq!(mode_of(&path), 0o600);
        assert_eq!(fs::read(&path).unwrap(), b"token: t");
    }

    #[test]
    fn keeping_the_mode_keeps_an_executable_bit() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("run.sh");
        fs::write(&path, "old").unwrap();
        fs::set_permissions(&path, fs::Permissions::from_mode(0o755)).unwrap();
        write_atomic_keeping_mode(&path, b"new", PUBLIC).unwrap();
        assert_eq!(mode_of(&path), 0o755);
        let fresh = dir.path().join("fresh.txt");
        write_atomic_keeping_mode(&fresh, b"x", PRIVATE).unwrap();
        assert_eq!(mode_of(&fresh), 0o600);
    }

    #[test]
    fn a_failed_write_leaves_the_target_and_no_debris() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("missing-folder").join("file");
        assert!(write_atomic(&path, b"x", PRIVATE).is_err());
        // Renaming onto a folder fails after the temporary file was written: it is removed.
        let target = dir.path().join("a-folder");
        fs::create_dir(&target).unwrap();
        fs::write(target.join("keep"), "k").unwrap();
        assert!(write_atomic(&target, b"x", PRIVATE).is_err());
        let names: Vec<String> = fs::read_dir(dir.path())
            .unwrap()
            .flatten()
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .collect();
        assert_eq!(names, ["a-folder"], "no debris");
    }

    #[test]
    fn folders_for_secrets_are_created_private() {
        let dir = tempfile::tempdir().unwrap();
        let nested = dir.path().join("a").join("b");
        create_folder(&nested, 0o700).unwrap();
        assert_eq!(mode_of(&nested), 0o700);
        assert_eq!(mode_of(&dir.path().join("a")), 0o700);
    }
}

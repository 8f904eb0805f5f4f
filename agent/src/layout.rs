//! The agent's data folder, and the file-system steps of an update: each one either complete
//! or undone on restart, so a crash at any point leaves exactly the old or the new release.
//!
//! ```text
//! <data>/bundles/<sha256>/        extracted, verified, immutable (renamed into place whole)
//! <data>/downloads/<sha256>.part  a download in progress (resumed after a restart)
//! <data>/releases/<digest>.json   one desired state (written whole: temp file, fsync, rename)
//! <data>/current -> releases/<digest>.json   what runs; switched with one rename + fsync
//! <data>/previous -> releases/<digest>.json  kept until the new release passed its window
//! ```

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};

use edgefn_schema::api::DesiredResponse;
use edgefn_schema::bundle::{self, BundleFile, FileKind};

/// Largest size a bundle may inflate to.
pub const MAX_BUNDLE_BYTES: u64 = 1 << 30;

/// Why a step failed.
#[derive(Debug, thiserror::Error)]
pub enum LayoutError {
    /// A file operation failed.
    #[error("{action} {}: {source}", .path.display())]
    Io {
        /// What.
        action: &'static str,
        /// Where.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// A bundle was refused.
    #[error("bundle {digest}: {reason}")]
    Bundle {
        /// Which.
        digest: String,
        /// Why.
        reason: String,
    },
    /// A release file is unreadable.
    #[error("release {}: {reason}", .path.display())]
    Release {
        /// Which.
        path: PathBuf,
        /// Why.
        reason: String,
    },
}

fn io(action: &'static str, path: &Path) -> impl FnOnce(std::io::Error) -> LayoutError {
    let path = path.to_path_buf();
    move |source| LayoutError::Io {
        action,
        path,
        source,
    }
}

/// The data folder.
#[derive(Debug, Clone)]
pub struct Layout {
    root: PathBuf,
}

fn sync_dir(dir: &Path) -> Result<(), LayoutError> {
    fs::File::open(dir)
        .and_then(|f| f.sync_all())
        .map_err(io("sync", dir))
}

impl Layout {
    /// Opens (creating) the folder, and removes what a crash left half-done.
    pub fn open(root: &Path) -> Result<Layout, LayoutError> {
        // Functions run with their bundle as working folder: every path handed out is absolute.
        let root = &std::path::absolute(root).map_err(io("resolve", root))?;
        for sub in ["bundles", "downloads", "releases"] {
            let p = root.join(sub);
            fs::create_dir_all(&p).map_err(io("create", &p))?;
        }
        let layout = Layout {
            root: root.to_path_buf(),
        };
        // Extractions and release writes that did not finish: their final names never appeared.
        for dir in [
            layout.root.join("bundles"),
            layout.root.join("releases"),
            layout.root.clone(),
        ] {
            for e in fs::read_dir(&dir).map_err(io("read", &dir))?.flatten() {
                let name = e.file_name().to_string_lossy().into_owned();
                if name.contains(".tmp-") {
                    let p = e.path();
                    let _ = if p.is_dir() && !p.is_symlink() {
                        fs::remove_dir_all(&p)
                    } else {
                        fs::remove_file(&p)
                    };
                }
            }
        }
        Ok(layout)
    }

    /// The folder.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// Where an extracted bundle lives.
    pub fn bundle_dir(&self, digest: &str) -> PathBuf {
        self.root.join("bundles").join(digest)
    }

    /// Whether a bundle is extracted (and so verified).
    pub fn has_bundle(&self, digest: &str) -> bool {
        self.bundle_dir(digest).is_dir()
    }

    /// Where a download in progress is kept.
    pub fn download_path(&self, digest: &str) -> PathBuf {
        self.root.join("downloads").join(format!("{digest}.part"))
    }

    /// Verifies a downloaded archive against its digest and extracts it, safely, into place.
    /// The download is removed either way: a bad one is fetched again from the start.
    pub fn install_bundle(&self, digest: &str, halfway: impl Fn()) -> Result<(), LayoutError> {
        let part = self.download_path(digest);
        let bytes = fs::read(&part).map_err(io("read", &part))?;
        let _ = fs::remove_file(&part);
        let actual = bundle::digest(&bytes);
        if actual != digest {
            return Err(LayoutError::Bundle {
                digest: digest.to_owned(),
                reason: format!("the downloaded bytes have sha256 {actual}: refused"),
            });
        }
        let files = bundle::unpack(&bytes, MAX_BUNDLE_BYTES).map_err(|e| LayoutError::Bundle {
            digest: digest.to_owned(),
            reason: format!("unsafe or invalid archive: {e}"),
        })?;
        let final_dir = self.bundle_dir(digest);
        let tmp = self
            .root
            .join("bundles")
            .join(format!("{digest}.tmp-{}", std::process::id()));
        let _ = fs::remove_dir_all(&tmp);
        fs::create_dir_all(&tmp).map_err(io("create", &tmp))?;
        for (i, f) in files.iter().enumerate() {
            if i == files.len() / 2 {
                halfway();
            }
            write_entry(&tmp, f)?;
        }
        sync_dir(&tmp)?;
        fs::rename(&tmp, &final_dir).map_err(io("move into place", &final_dir))?;
        sync_dir(&self.root.join("bundles"))
    }

    fn release_path(&self, digest: &str) -> PathBuf {
        self.root.join("releases").join(format!("{digest}.json"))
    }

    /// Writes a release file, whole.
    pub fn write_release(&self, desired: &DesiredResponse) -> Result<(), LayoutError> {
        let path = self.release_path(&desired.digest);
        let tmp = self.root.join("releases").join(format!(
            "{}.tmp-{}",
            desired.digest,
            std::process::id()
        ));
        let bytes = serde_json::to_vec_pretty(desired).expect("release serializes");
        let mut f = fs::File::create(&tmp).map_err(io("create", &tmp))?;
        f.write_all(&bytes)
            .and_then(|()| f.sync_all())
            .map_err(io("write", &tmp))?;
        fs::rename(&tmp, &path).map_err(io("move into place", &path))?;
        sync_dir(&self.root.join("releases"))
    }

    fn read_link(&self, name: &str) -> Option<DesiredResponse> {
        let link = self.root.join(name);
        let target = fs::read_link(&link).ok()?;
        let text = fs::read(self.root.join(target)).ok()?;
        serde_json::from_slice(&text).ok()
    }

    /// The release `current` points to.
    pub fn current(&self) -> Option<DesiredResponse> {
        self.read_link("current")
    }

    /// The release `previous` points to.
    pub fn previous(&self) -> Option<DesiredResponse> {
        self.read_link("previous")
    }

    /// Points `name` (`current` or `previous`) at the release `digest`: a new symlink renamed
    /// over the old one (atomic), then an fsync of the folder (durable).
    pub fn point(&self, name: &str, digest: &str) -> Result<(), LayoutError> {
        let link = self.root.join(name);
        let tmp = self.root.join(format!("{name}.tmp-{}", std::process::id()));
        let _ = fs::remove_file(&tmp);
        std::os::unix::fs::symlink(Path::new("releases").join(format!("{digest}.json")), &tmp)
            .map_err(io("link", &tmp))?;
        fs::rename(&tmp, &link).map_err(io("switch", &link))?;
        sync_dir(&self.root)
    }

    /// Removes `previous`.
    pub fn forget_previous(&self) -> Result<(), LayoutError> {
        let link = self.root.join("previous");
        match fs::remove_file(&link) {
            Ok(()) => sync_dir(&self.root),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(io("remove", &link)(e)),
        }
    }

    /// Deletes releases other than current and previous, and bundles they do not use.
    pub fn collect_garbage(&self) -> Result<(), LayoutError> {
        let keep: Vec<DesiredResponse> = [self.current(), self.previous()]
            .into_iter()
            .flatten()
            .collect();
        let keep_releases: Vec<String> =
            keep.iter().map(|r| format!("{}.json", r.digest)).collect();
        let keep_bundles: Vec<String> = keep
            .iter()
            .flat_map(|r| r.state.functions.values().filter_map(|f| f.bundle.clone()))
            .collect();
        for e in fs::read_dir(self.root.join("releases"))
            .map_err(io("read", &self.root))?
            .flatten()
        {
            if !keep_releases.contains(&e.file_name().to_string_lossy().into_owned()) {
                let _ = fs::remove_file(e.path());
            }
        }
        for e in fs::read_dir(self.root.join("bundles"))
            .map_err(io("read", &self.root))?
            .flatten()
        {
            if !keep_bundles.contains(&e.file_name().to_string_lossy().into_owned()) {
                let _ = fs::remove_dir_all(e.path());
            }
        }
        Ok(())
    }
}

/// Writes one checked bundle entry under `dir`. Paths and link targets were checked by
/// [`bundle::unpack`] to stay inside the bundle.
fn write_entry(dir: &Path, f: &BundleFile) -> Result<(), LayoutError> {
    let path = dir.join(&f.path);
    if let Some(parent) = path.parent() {
        fs::create_dir_all(parent).map_err(io("create", parent))?;
    }
    match &f.kind {
        FileKind::Regular { data, executable } => {
            use std::os::unix::fs::OpenOptionsExt;
            let mode = if *executable { 0o755 } else { 0o644 };
            let mut file = fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(mode)
                .open(&path)
                .map_err(io("create", &path))?;
            file.write_all(data)
                .and_then(|()| file.sync_all())
                .map_err(io("write", &path))?;
        }
        FileKind::Symlink { target } => {
            std::os::unix::fs::symlink(target, &path).map_err(io("link", &path))?;
        }
    }
    Ok(())
}

//! The agent's data folder, and the file-system steps of an update: each one either complete
//! or undone on restart, so a crash at any point leaves exactly the old or the new release.
//!
//! ```text
//! <data>/bundles/<sha256>/        extracted, verified, immutable (renamed into place whole)
//! <data>/models/<sha256>          a file model, verified, read-only (renamed into place)
//! <data>/model-links/<key>/NAME   a binding's models by name (links), `EDGEFN_MODELS_DIR`
//! <data>/downloads/<sha256>.part  a download in progress (resumed after a restart)
//! <data>/releases/<digest>.json   one desired state (written whole: temp file, fsync, rename)
//! <data>/current -> releases/<digest>.json   what runs; switched with one rename + fsync
//! <data>/previous -> releases/<digest>.json  kept until the new release passed its window
//! ```
//!
//! A bundle is verified and extracted streaming, from its download, never held in memory; the
//! files are created through folder descriptors that never follow a link ([`Layout::install_bundle`]).
//! A full disk is a storage error ([`LayoutError::is_storage`]): the update is retried later,
//! after [`Layout::reclaim`] freed debris, stale downloads and bundles no release needs.

use std::fs;
use std::io::{Read, Write};
use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};

use edgefn_schema::api::DesiredResponse;
use edgefn_schema::bundle::{self, UnpackError};
use edgefn_schema::{DesiredState, ModelArtifact, ModelKind, ResolvedBinding};
use rustix::fs::{Mode, OFlags};
use sha2::{Digest, Sha256};

/// Largest size a bundle may inflate to.
pub(crate) const MAX_BUNDLE_BYTES: u64 = 1 << 30;

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
        #[source]
        reason: Refusal,
    },
    /// The data folder's file system has too little room, measured before writing.
    #[error("no space left on the device: {}", need_free(*.need, *.free))]
    NoSpace {
        /// Bytes needed.
        need: u64,
        /// Bytes free.
        free: u64,
    },
}

/// Why a downloaded bundle was refused.
#[derive(Debug, thiserror::Error)]
pub enum Refusal {
    /// Its bytes are not those its digest names.
    #[error("the downloaded bytes have sha256 {actual}: refused")]
    Digest {
        /// The sha256 of what was downloaded.
        actual: String,
    },
    /// The archive is unsafe or invalid (see `schema::bundle`).
    #[error("unsafe or invalid archive: {0}")]
    Archive(#[source] bundle::BundleError),
}

impl LayoutError {
    /// Whether this is the storage's problem (a full or failing disk), not the bundle's: the
    /// same step may succeed later, so it is retried rather than marked failed.
    pub fn is_storage(&self) -> bool {
        matches!(self, LayoutError::Io { .. } | LayoutError::NoSpace { .. })
    }

    /// Whether the file system is full (or the quota spent).
    pub fn is_full(&self) -> bool {
        match self {
            LayoutError::NoSpace { .. } => true,
            LayoutError::Io { source, .. } => is_full(source),
            _ => false,
        }
    }
}

/// Whether `e` says the file system is full (`ENOSPC`) or the quota spent (`EDQUOT`).
pub(crate) fn is_full(e: &std::io::Error) -> bool {
    e.kind() == std::io::ErrorKind::StorageFull || e.kind() == std::io::ErrorKind::QuotaExceeded
}

/// A byte count for people: `1.5 MiB`.
pub(crate) fn human(bytes: u64) -> String {
    const UNITS: [&str; 5] = ["bytes", "KiB", "MiB", "GiB", "TiB"];
    let mut v = bytes as f64;
    let mut u = 0;
    while v >= 1024.0 && u < UNITS.len() - 1 {
        v /= 1024.0;
        u += 1;
    }
    if u == 0 {
        format!("{bytes} bytes")
    } else {
        format!("{v:.1} {}", UNITS[u])
    }
}

/// "the bundles need X, Y free".
pub(crate) fn need_free(need: u64, free: u64) -> String {
    format!("the bundles need {}, {} free", human(need), human(free))
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
pub(crate) struct Layout {
    root: PathBuf,
}

fn sync_dir(dir: &Path) -> Result<(), LayoutError> {
    fs::File::open(dir)
        .and_then(|f| f.sync_all())
        .map_err(io("sync", dir))
}

impl Layout {
    /// Opens (creating) the folder, and removes what a crash left half-done.
    pub(crate) fn open(root: &Path) -> Result<Layout, LayoutError> {
        // Functions run with their bundle as working folder: every path handed out is absolute.
        let root = &std::path::absolute(root).map_err(io("resolve", root))?;
        for sub in ["bundles", "downloads", "releases", "models", "model-links"] {
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
            layout.root.join("models"),
            layout.root.join("model-links"),
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

    /// Where an extracted bundle lives.
    pub(crate) fn bundle_dir(&self, digest: &str) -> PathBuf {
        self.root.join("bundles").join(digest)
    }

    /// Whether a bundle is extracted (and so verified).
    pub(crate) fn has_bundle(&self, digest: &str) -> bool {
        self.bundle_dir(digest).is_dir()
    }

    /// Where a model is on the device: a file model under `models/`, a folder model's
    /// extracted bundle under `bundles/`. Shared read-only by every function and release that
    /// names it.
    pub(crate) fn model_path(&self, m: &ModelArtifact) -> PathBuf {
        match m.kind {
            ModelKind::File => self.root.join("models").join(&m.digest),
            ModelKind::Folder => self.bundle_dir(&m.digest),
        }
    }

    /// Whether an archive of a desired state is in place: a bundle extracted, or a file
    /// model verified.
    pub(crate) fn has_artifact(&self, digest: &str) -> bool {
        self.has_bundle(digest) || self.root.join("models").join(digest).is_file()
    }

    /// Verifies a downloaded file model against its digest and renames it into place,
    /// read-only. A file whose bytes are not its digest's is removed (so the next download
    /// starts from the first byte) and refused.
    pub(crate) fn install_model_file(&self, digest: &str) -> Result<(), LayoutError> {
        let part = self.download_path(digest);
        let mut file = fs::File::open(&part).map_err(io("read", &part))?;
        let actual = sha256_of(&mut file).map_err(io("read", &part))?;
        if actual != digest {
            let _ = fs::remove_file(&part);
            return Err(LayoutError::Bundle {
                digest: digest.to_owned(),
                reason: Refusal::Digest { actual },
            });
        }
        let dir = self.root.join("models");
        let final_path = dir.join(digest);
        fs::set_permissions(&part, std::os::unix::fs::PermissionsExt::from_mode(0o444))
            .map_err(io("protect", &part))?;
        fs::rename(&part, &final_path).map_err(io("move into place", &final_path))?;
        sync_dir(&dir)
    }

    /// The folder of links `EDGEFN_MODELS_DIR` names for a binding: one entry per model
    /// (`NAME` → the model's file or folder), nothing else. Content-addressed by the names and
    /// paths, so bindings and releases with the same models share one; made whole (temporary
    /// folder, rename) when missing.
    pub(crate) fn model_links(&self, models: &[(String, PathBuf)]) -> Result<PathBuf, LayoutError> {
        let key = self.model_links_key(models);
        let dir = self.root.join("model-links");
        let final_dir = dir.join(&key);
        if final_dir.is_dir() {
            return Ok(final_dir);
        }
        let tmp = dir.join(format!("{key}.tmp-{}", std::process::id()));
        let _ = fs::remove_dir_all(&tmp);
        let made = (|| {
            fs::create_dir(&tmp).map_err(io("create", &tmp))?;
            for (name, path) in models {
                let link = tmp.join(name);
                std::os::unix::fs::symlink(path, &link).map_err(io("link", &link))?;
            }
            sync_dir(&tmp)?;
            fs::rename(&tmp, &final_dir).map_err(io("move into place", &final_dir))?;
            sync_dir(&dir)
        })();
        if made.is_err() {
            let _ = fs::remove_dir_all(&tmp);
        }
        made.map(|()| final_dir)
    }

    /// The name of the links folder of `models`.
    fn model_links_key(&self, models: &[(String, PathBuf)]) -> String {
        let mut key = Sha256::new();
        for (name, path) in models {
            key.update(name.as_bytes());
            key.update([0]);
            key.update(path.as_os_str().as_encoded_bytes());
            key.update([0]);
        }
        key.finalize().iter().map(|b| format!("{b:02x}")).collect()
    }

    /// A binding's models on this device, name → file or folder, sorted by name (those
    /// `state` describes).
    pub(crate) fn binding_models(
        &self,
        state: &DesiredState,
        b: &ResolvedBinding,
    ) -> Vec<(String, PathBuf)> {
        b.models
            .iter()
            .filter_map(|n| state.models.get(n).map(|m| (n.clone(), self.model_path(m))))
            .collect()
    }

    /// Where a download in progress is kept.
    pub(crate) fn download_path(&self, digest: &str) -> PathBuf {
        self.root.join("downloads").join(format!("{digest}.part"))
    }

    /// Bytes free for the agent on the data folder's file system (`statvfs`, what an
    /// unprivileged writer may use).
    pub(crate) fn free_bytes(&self) -> Result<u64, LayoutError> {
        let st = rustix::fs::statvfs(&self.root).map_err(|e| LayoutError::Io {
            action: "measure the free space of",
            path: self.root.clone(),
            source: e.into(),
        })?;
        Ok(st.f_bavail.saturating_mul(st.f_frsize))
    }

    /// Bytes of a download in progress (0 when there is none).
    pub(crate) fn partial_bytes(&self, digest: &str) -> u64 {
        fs::metadata(self.download_path(digest)).map_or(0, |m| m.len())
    }

    /// Verifies a downloaded archive against its digest and extracts it, safely, into place,
    /// streaming: the archive is never held in memory. `halfway` runs once the first file is
    /// written (the crash tests' hook).
    ///
    /// The download is removed when the bytes or the archive are bad (a bad one is fetched
    /// again from the start) and once the bundle is in place; a storage error keeps it, and
    /// removes the half-extracted folder, so a retry starts clean.
    pub(crate) fn install_bundle(
        &self,
        digest: &str,
        halfway: impl Fn(),
    ) -> Result<(), LayoutError> {
        let part = self.download_path(digest);
        let refused = |reason: Refusal| {
            let _ = fs::remove_file(&part);
            LayoutError::Bundle {
                digest: digest.to_owned(),
                reason,
            }
        };
        let mut file = fs::File::open(&part).map_err(io("read", &part))?;
        let actual = sha256_of(&mut file).map_err(io("read", &part))?;
        if actual != digest {
            return Err(refused(Refusal::Digest { actual }));
        }
        // Room for the files, measured before writing any.
        let mut head = [0u8; 18];
        let mut file = fs::File::open(&part).map_err(io("read", &part))?;
        let n = read_up_to(&mut file, &mut head).map_err(io("read", &part))?;
        if let Some(size) = bundle::inflated_size(&head[..n]) {
            if size > MAX_BUNDLE_BYTES {
                return Err(refused(Refusal::Archive(bundle::BundleError::TooLarge(
                    MAX_BUNDLE_BYTES,
                ))));
            }
            let need = size;
            let free = self.free_bytes()?;
            if free < need {
                return Err(LayoutError::NoSpace { need, free });
            }
        }
        let file = fs::File::open(&part).map_err(io("read", &part))?;
        let final_dir = self.bundle_dir(digest);
        let tmp = self
            .root
            .join("bundles")
            .join(format!("{digest}.tmp-{}", std::process::id()));
        let _ = fs::remove_dir_all(&tmp);
        let extracted = (|| {
            fs::create_dir(&tmp).map_err(io("create", &tmp))?;
            let mut sink = Folder {
                root: open_dir(&tmp)?,
                path: &tmp,
                files: 0,
                halfway: &halfway,
            };
            bundle::unpack_into(
                std::io::BufReader::with_capacity(64 << 10, file),
                MAX_BUNDLE_BYTES,
                &mut sink,
            )
            .map_err(|e| match e {
                UnpackError::Bundle(e) => refused(Refusal::Archive(e)),
                UnpackError::Sink(e) => e,
            })?;
            sync_dir(&tmp)?;
            fs::rename(&tmp, &final_dir).map_err(io("move into place", &final_dir))?;
            sync_dir(&self.root.join("bundles"))
        })();
        if extracted.is_err() {
            let _ = fs::remove_dir_all(&tmp);
        } else {
            let _ = fs::remove_file(&part);
        }
        extracted
    }

    fn release_path(&self, digest: &str) -> PathBuf {
        self.root.join("releases").join(format!("{digest}.json"))
    }

    /// Writes a release file, whole.
    pub(crate) fn write_release(&self, desired: &DesiredResponse) -> Result<(), LayoutError> {
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
    pub(crate) fn current(&self) -> Option<DesiredResponse> {
        self.read_link("current")
    }

    /// The release `previous` points to.
    pub(crate) fn previous(&self) -> Option<DesiredResponse> {
        self.read_link("previous")
    }

    /// Points `name` (`current` or `previous`) at the release `digest`: a new symlink renamed
    /// over the old one (atomic), then an fsync of the folder (durable).
    pub(crate) fn point(&self, name: &str, digest: &str) -> Result<(), LayoutError> {
        let link = self.root.join(name);
        let tmp = self.root.join(format!("{name}.tmp-{}", std::process::id()));
        let _ = fs::remove_file(&tmp);
        std::os::unix::fs::symlink(Path::new("releases").join(format!("{digest}.json")), &tmp)
            .map_err(io("link", &tmp))?;
        fs::rename(&tmp, &link).map_err(io("switch", &link))?;
        sync_dir(&self.root)
    }

    /// Removes `previous`.
    pub(crate) fn forget_previous(&self) -> Result<(), LayoutError> {
        let link = self.root.join("previous");
        match fs::remove_file(&link) {
            Ok(()) => sync_dir(&self.root),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(io("remove", &link)(e)),
        }
    }

    /// Deletes releases other than current and previous, and bundles they do not use.
    pub(crate) fn collect_garbage(&self) -> Result<(), LayoutError> {
        self.reclaim(&[]).map(|_| ())
    }

    /// Frees what no release needs: releases other than current and previous, bundles that
    /// neither they nor `wanted` use, downloads of bundles not in `wanted`, and debris
    /// (`*.tmp-*`) of steps that failed. Returns the bytes freed.
    pub(crate) fn reclaim(&self, wanted: &[String]) -> Result<u64, LayoutError> {
        let keep: Vec<DesiredResponse> = [self.current(), self.previous()]
            .into_iter()
            .flatten()
            .collect();
        let keep_releases: Vec<String> =
            keep.iter().map(|r| format!("{}.json", r.digest)).collect();
        let mut keep_bundles: Vec<String> = keep.iter().flat_map(|r| r.state.artifacts()).collect();
        keep_bundles.extend(wanted.iter().cloned());
        // The links folders the kept releases' bindings use (made again when missing).
        let keep_links: Vec<String> = keep
            .iter()
            .flat_map(|r| {
                r.state.bindings.iter().filter_map(|b| {
                    let models = self.binding_models(&r.state, b);
                    (!models.is_empty()).then(|| self.model_links_key(&models))
                })
            })
            .collect();
        let keep_parts: Vec<String> = wanted.iter().map(|d| format!("{d}.part")).collect();
        let mut freed = 0;
        for (sub, keep) in [
            ("releases", &keep_releases),
            ("bundles", &keep_bundles),
            ("models", &keep_bundles),
            ("model-links", &keep_links),
            ("downloads", &keep_parts),
        ] {
            let dir = self.root.join(sub);
            for e in fs::read_dir(&dir).map_err(io("read", &dir))?.flatten() {
                if !keep.contains(&e.file_name().to_string_lossy().into_owned()) {
                    freed += remove_all(&e.path());
                }
            }
        }
        for e in fs::read_dir(&self.root)
            .map_err(io("read", &self.root))?
            .flatten()
        {
            if e.file_name().to_string_lossy().contains(".tmp-") {
                freed += remove_all(&e.path());
            }
        }
        Ok(freed)
    }
}

/// Removes a file, link or folder (without following links); returns the bytes it held.
fn remove_all(path: &Path) -> u64 {
    let Ok(meta) = fs::symlink_metadata(path) else {
        return 0;
    };
    if meta.is_dir() {
        let inside: u64 = fs::read_dir(path)
            .map(|d| d.flatten().map(|e| remove_all(&e.path())).sum())
            .unwrap_or(0);
        let _ = fs::remove_dir(path);
        inside
    } else {
        let _ = fs::remove_file(path);
        std::os::unix::fs::MetadataExt::blocks(&meta) * 512
    }
}

/// The sha256 of what `r` reads, in lowercase hex, read in 64 KiB pieces.
fn sha256_of(r: &mut impl Read) -> std::io::Result<String> {
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 64 << 10];
    loop {
        let n = r.read(&mut buf)?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
    }
    Ok(hasher
        .finalize()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect())
}

/// Reads until `buf` is full or the end; returns how much was read.
fn read_up_to(r: &mut impl Read, buf: &mut [u8]) -> std::io::Result<usize> {
    let mut n = 0;
    while n < buf.len() {
        match r.read(&mut buf[n..])? {
            0 => break,
            k => n += k,
        }
    }
    Ok(n)
}

/// Opens a folder by path, for the `*at` calls.
fn open_dir(path: &Path) -> Result<OwnedFd, LayoutError> {
    rustix::fs::open(
        path,
        OFlags::DIRECTORY | OFlags::RDONLY | OFlags::CLOEXEC,
        Mode::empty(),
    )
    .map_err(|e| io("open", path)(e.into()))
}

/// Where a bundle is extracted: a new, empty folder, reached only through descriptors. Every
/// parent is created and opened one component at a time with `O_NOFOLLOW | O_DIRECTORY`, and
/// every file created with `O_CREAT | O_EXCL | O_NOFOLLOW`, so nothing is ever written through
/// a symlink, whatever the archive holds (links come last anyway, and the unpacker refuses any
/// entry under one).
struct Folder<'a> {
    root: OwnedFd,
    path: &'a Path,
    files: usize,
    halfway: &'a dyn Fn(),
}

impl Folder<'_> {
    /// Opens (creating) the folder that will hold `path`; returns it and the last component.
    fn parent<'p>(&self, path: &'p str) -> Result<(OwnedFd, &'p str), LayoutError> {
        let full = self.path.join(path);
        let fail = |action| {
            let full = full.clone();
            move |e: rustix::io::Errno| io(action, &full)(e.into())
        };
        let (dirs, name) = match path.rsplit_once('/') {
            Some((dirs, name)) => (Some(dirs), name),
            None => (None, path),
        };
        let mut dir = rustix::io::fcntl_dupfd_cloexec(&self.root, 0).map_err(fail("open"))?;
        for part in dirs.into_iter().flat_map(|d| d.split('/')) {
            match rustix::fs::mkdirat(&dir, part, Mode::from_raw_mode(0o755)) {
                Ok(()) | Err(rustix::io::Errno::EXIST) => {}
                Err(e) => return Err(fail("create a folder for")(e)),
            }
            dir = rustix::fs::openat(
                &dir,
                part,
                OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::RDONLY | OFlags::CLOEXEC,
                Mode::empty(),
            )
            .map_err(fail("open a folder for"))?;
        }
        Ok((dir, name))
    }
}

impl bundle::Sink for Folder<'_> {
    type Error = LayoutError;

    fn file(
        &mut self,
        path: &str,
        executable: bool,
        _size: u64,
        data: &mut dyn Read,
    ) -> Result<(), LayoutError> {
        let full = self.path.join(path);
        let (dir, name) = self.parent(path)?;
        let fd = rustix::fs::openat(
            &dir,
            name,
            OFlags::WRONLY | OFlags::CREATE | OFlags::EXCL | OFlags::NOFOLLOW | OFlags::CLOEXEC,
            Mode::from_raw_mode(if executable { 0o755 } else { 0o644 }),
        )
        .map_err(|e| io("create", &full)(e.into()))?;
        let mut file = fs::File::from(fd);
        std::io::copy(data, &mut file)
            .and_then(|_| file.sync_all())
            .map_err(io("write", &full))?;
        self.files += 1;
        if self.files == 1 {
            (self.halfway)();
        }
        Ok(())
    }

    fn symlink(&mut self, path: &str, target: &str) -> Result<(), LayoutError> {
        let (dir, name) = self.parent(path)?;
        rustix::fs::symlinkat(target, &dir, name)
            .map_err(|e| io("link", &self.path.join(path))(e.into()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bundle::Sink;
    use tar::EntryType::{Link, Regular, Symlink};

    /// One crafted entry: path, type, link target, mode, contents.
    type Entry<'a> = (&'a str, tar::EntryType, Option<&'a str>, u32, &'a [u8]);

    /// An archive written by hand, as an attacker would: (path, type, link target, mode, data).
    fn crafted(entries: &[Entry<'_>]) -> Vec<u8> {
        let mut b = tar::Builder::new(Vec::new());
        for (path, kind, link, mode, data) in entries {
            let mut h = tar::Header::new_gnu();
            h.set_entry_type(*kind);
            h.set_size(data.len() as u64);
            h.set_mode(*mode);
            h.as_old_mut().name[..path.len()].copy_from_slice(path.as_bytes());
            if let Some(l) = link {
                h.as_old_mut().linkname[..l.len()].copy_from_slice(l.as_bytes());
            }
            h.set_cksum();
            b.append(&h, *data).expect("append");
        }
        zstd::bulk::compress(&b.into_inner().expect("tar"), 1).expect("zstd")
    }

    /// A data folder inside a scratch folder, with `bytes` downloaded as bundle; returns the
    /// layout and the bundle's digest.
    fn downloaded(root: &Path, bytes: &[u8]) -> (Layout, String) {
        let layout = Layout::open(&root.join("data")).expect("layout");
        let digest = bundle::digest(bytes);
        fs::write(layout.download_path(&digest), bytes).expect("write");
        (layout, digest)
    }

    /// Every path under `dir`, relative to it.
    fn tree(dir: &Path) -> Vec<String> {
        let mut out = Vec::new();
        let mut todo = vec![dir.to_path_buf()];
        while let Some(d) = todo.pop() {
            for e in fs::read_dir(&d).expect("read").flatten() {
                let p = e.path();
                out.push(p.strip_prefix(dir).expect("under").display().to_string());
                if p.is_dir() && !p.is_symlink() {
                    todo.push(p);
                }
            }
        }
        out.sort();
        out
    }

    #[test]
    fn a_chain_of_links_cannot_carry_a_file_out_of_the_bundle() {
        let scratch = tempfile::tempdir().expect("tempdir");
        let before = tree(scratch.path());
        for (what, entries) in [
            (
                "the issue's chain",
                vec![
                    ("main.py", Regular, None, 0o644, &b"x"[..]),
                    ("a/b", Symlink, Some(".."), 0o777, b""),
                    ("a/b/c", Symlink, Some(".."), 0o777, b""),
                    ("a/b/c/pwned", Regular, None, 0o644, b"x"),
                ],
            ),
            (
                "one more level",
                vec![
                    ("a/b", Symlink, Some(".."), 0o777, &b""[..]),
                    ("a/b/c", Symlink, Some(".."), 0o777, b""),
                    ("a/b/c/d", Symlink, Some(".."), 0o777, b""),
                    ("a/b/c/d/pwned", Regular, None, 0o644, b"x"),
                ],
            ),
            (
                "link to a link, then `..`",
                vec![
                    ("x/b", Symlink, Some(".."), 0o777, &b""[..]),
                    ("up", Symlink, Some("x/b/.."), 0o777, b""),
                    ("up/pwned", Regular, None, 0o644, b"x"),
                ],
            ),
            (
                "hard link to a link",
                vec![
                    ("l", Symlink, Some("."), 0o777, &b""[..]),
                    ("h", Link, Some("l"), 0o644, b""),
                ],
            ),
            (
                "a link replacing a folder already written",
                vec![
                    ("a/pwned", Regular, None, 0o644, &b"x"[..]),
                    ("a", Symlink, Some("."), 0o777, b""),
                ],
            ),
        ] {
            let (layout, digest) = downloaded(scratch.path(), &crafted(&entries));
            let err = layout.install_bundle(&digest, || {}).expect_err(what);
            assert!(
                matches!(err, LayoutError::Bundle { .. }) && !err.is_storage(),
                "{what}: {err}"
            );
            assert!(
                err.to_string().contains("unsafe or invalid archive"),
                "{what}: {err}"
            );
            assert!(!layout.has_bundle(&digest), "{what}");
            let after: Vec<String> = tree(scratch.path())
                .into_iter()
                .filter(|p| p.contains("pwned"))
                .collect();
            assert!(after.is_empty(), "{what}: {after:?}");
            // Nothing half-extracted is left, and the bad download is gone.
            assert!(
                tree(&layout.root.join("bundles")).is_empty(),
                "{what}: {:?}",
                tree(&layout.root.join("bundles"))
            );
            assert!(!layout.download_path(&digest).exists(), "{what}");
        }
        let _ = before;
    }

    #[test]
    fn the_folder_sink_never_writes_through_a_link_already_on_disk() {
        // Defence in depth: even if a link were there before the file (it never is), the file
        // is not created through it.
        let scratch = tempfile::tempdir().expect("tempdir");
        let outside = scratch.path().join("outside");
        fs::create_dir(&outside).expect("mkdir");
        let dir = scratch.path().join("bundle");
        fs::create_dir(&dir).expect("mkdir");
        std::os::unix::fs::symlink(&outside, dir.join("l")).expect("link");
        std::os::unix::fs::symlink(&outside, dir.join("f")).expect("link");
        let mut sink = Folder {
            root: open_dir(&dir).expect("open"),
            path: &dir,
            files: 0,
            halfway: &|| {},
        };
        assert!(sink.file("l/x", false, 1, &mut &b"x"[..]).is_err());
        assert!(sink.file("l/deeper/x", false, 1, &mut &b"x"[..]).is_err());
        assert!(sink.file("f", false, 1, &mut &b"x"[..]).is_err());
        assert!(sink.symlink("l/y", "z").is_err());
        assert!(tree(&outside).is_empty(), "{:?}", tree(&outside));
        // Ordinary nested files and links are written.
        sink.file("a/b/c.txt", true, 1, &mut &b"c"[..])
            .expect("file");
        sink.symlink("a/c", "b/c.txt").expect("link");
        assert_eq!(fs::read(dir.join("a/c")).expect("read"), b"c");
    }

    #[test]
    fn setuid_entries_are_refused_by_name() {
        let scratch = tempfile::tempdir().expect("tempdir");
        let bytes = crafted(&[("bin/tool", Regular, None, 0o4755, b"x")]);
        let (layout, digest) = downloaded(scratch.path(), &bytes);
        let err = layout.install_bundle(&digest, || {}).expect_err("refused");
        let text = err.to_string();
        assert!(
            text.contains("`bin/tool`") && text.contains("setuid"),
            "{text}"
        );
        assert!(!layout.has_bundle(&digest));
    }

    #[test]
    fn a_good_bundle_is_extracted_with_modes_and_links() {
        let scratch = tempfile::tempdir().expect("tempdir");
        let bytes = bundle::pack(vec![
            bundle::BundleFile {
                path: "bin/run.sh".into(),
                kind: bundle::FileKind::Regular {
                    data: b"#!/bin/sh\n".to_vec(),
                    executable: true,
                },
            },
            bundle::BundleFile {
                path: "run".into(),
                kind: bundle::FileKind::Symlink {
                    target: "bin/run.sh".into(),
                },
            },
        ])
        .expect("pack");
        let (layout, digest) = downloaded(scratch.path(), &bytes);
        layout.install_bundle(&digest, || {}).expect("installed");
        let dir = layout.bundle_dir(&digest);
        assert_eq!(tree(&dir), ["bin", "bin/run.sh", "run"]);
        use std::os::unix::fs::PermissionsExt;
        let mode = fs::metadata(dir.join("bin/run.sh"))
            .expect("meta")
            .permissions()
            .mode();
        assert_eq!(mode & 0o100, 0o100);
        assert!(!layout.download_path(&digest).exists());
    }

    #[test]
    fn reclaim_frees_debris_stale_downloads_and_unused_bundles_only() {
        let scratch = tempfile::tempdir().expect("tempdir");
        let layout = Layout::open(scratch.path()).expect("layout");
        let (keep, stale) = ("a".repeat(64), "b".repeat(64));
        fs::write(layout.download_path(&keep), vec![0u8; 10_000]).expect("write");
        fs::write(layout.download_path(&stale), vec![0u8; 10_000]).expect("write");
        fs::create_dir_all(layout.bundle_dir(&keep)).expect("mkdir");
        fs::create_dir_all(layout.bundle_dir(&stale).join("deep")).expect("mkdir");
        fs::write(layout.bundle_dir(&stale).join("deep/f"), vec![0u8; 10_000]).expect("write");
        let debris = layout.root.join("bundles").join(format!("{keep}.tmp-1"));
        fs::create_dir_all(&debris).expect("mkdir");
        fs::write(debris.join("half"), vec![0u8; 10_000]).expect("write");
        let freed = layout
            .reclaim(std::slice::from_ref(&keep))
            .expect("reclaim");
        assert!(freed >= 30_000, "{freed}");
        assert!(layout.download_path(&keep).exists() && layout.has_bundle(&keep));
        assert!(!layout.download_path(&stale).exists() && !layout.has_bundle(&stale));
        assert!(!debris.exists());
    }

    #[test]
    fn extraction_on_a_full_disk_is_a_storage_error_and_leaves_nothing_behind() {
        let Some(fs_) = crate::testfs::Tmpfs::mount("2m") else {
            return;
        };
        let layout = Layout::open(&fs_.path().join("data")).expect("layout");
        // 1.2 MiB of incompressible bytes: the download fits, the extraction does not.
        let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
        let blob: Vec<u8> = (0..1_200_000)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                x as u8
            })
            .collect();
        let bytes = bundle::pack(vec![bundle::BundleFile {
            path: "blob".into(),
            kind: bundle::FileKind::Regular {
                data: blob,
                executable: false,
            },
        }])
        .expect("pack");
        let digest = bundle::digest(&bytes);
        fs::write(layout.download_path(&digest), &bytes).expect("the download fits");
        let err = layout.install_bundle(&digest, || {}).expect_err("no room");
        assert!(err.is_storage() && err.is_full(), "{err}");
        assert!(
            err.to_string()
                .starts_with("no space left on the device: the bundles need"),
            "{err}"
        );
        // Measured before writing: nothing was written, the download is kept for later.
        assert!(tree(&layout.root.join("bundles")).is_empty());
        assert!(layout.download_path(&digest).exists());

        // Past the measurement (something else fills the disk meanwhile): the write fails,
        // is reported as the storage's, and the half-extracted folder is removed.
        fs::remove_file(layout.download_path(&digest)).expect("rm");
        let small = bundle::pack(vec![
            bundle::BundleFile {
                path: "a".into(),
                kind: bundle::FileKind::Regular {
                    data: vec![1u8; 10],
                    executable: false,
                },
            },
            bundle::BundleFile {
                path: "b".into(),
                kind: bundle::FileKind::Regular {
                    data: vec![7u8; 200_000],
                    executable: false,
                },
            },
        ])
        .expect("pack");
        let small_digest = bundle::digest(&small);
        fs::write(layout.download_path(&small_digest), &small).expect("fits");
        let filler = fs_.path().join("filler");
        let err = layout
            .install_bundle(&small_digest, || fs_.fill(&filler))
            .expect_err("full");
        assert!(err.is_storage() && err.is_full(), "{err}");
        assert!(!err.to_string().contains("invalid archive"), "{err}");
        assert!(tree(&layout.root.join("bundles")).is_empty());
    }
}

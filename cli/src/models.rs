//! Models (`models:` in the manifest): content-addressed artifacts, apart from the code.
//!
//! A file model's artifact is the file itself (its sha256 is its digest; nothing is compressed:
//! models rarely shrink, and a 200 MB model should not be re-encoded on every apply). A folder
//! model's artifact is a bundle of the folder (the function bundle format), written once into
//! the cache. Digests are kept in a cache (`$XDG_CACHE_HOME/edgefn/models`, else
//! `~/.cache/edgefn/models`) keyed by the file's path, size, modification time and inode, so
//! packaging an unchanged model again reads none of it. Files are hashed and uploaded
//! streaming, never held in memory; `rollout::submit` uploads only what the cloud lacks, so a
//! code-only change moves no model bytes.
//!
//! For `edgefn test`, `invoke` and `dev`, [`local_dir`] makes a folder of links named after
//! the models (pointing at the project's files) for `$EDGEFN_MODELS_DIR`.

use std::collections::BTreeMap;
use std::fs;
use std::io::Read;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use edgefn_schema::{ModelArtifact, ModelKind, Models};
use sha2::{Digest, Sha256};

use crate::error::CliError;

/// One model of the project, ready to upload.
#[derive(Debug, Clone)]
pub(crate) struct Prepared {
    /// The model's name.
    pub(crate) name: String,
    /// Its artifact (digest and kind).
    pub(crate) artifact: ModelArtifact,
    /// The file to upload: the model itself, or the folder's bundle in the cache.
    pub(crate) file: PathBuf,
    /// The artifact's size in bytes.
    pub(crate) bytes: u64,
}

/// The folder of the local cache.
fn cache_dir() -> Option<PathBuf> {
    let base = std::env::var_os("XDG_CACHE_HOME")
        .filter(|v| !v.is_empty())
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache")))?;
    Some(base.join("edgefn").join("models"))
}

/// The sha256 of a file, streamed in 1 MiB pieces.
pub(crate) fn sha256_file(path: &Path) -> Result<String, CliError> {
    let mut f = fs::File::open(path).map_err(CliError::io("read", path))?;
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = f.read(&mut buf).map_err(CliError::io("read", path))?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
    }
    Ok(edgefn_schema::resolve::hex(&hasher.finalize()))
}

/// The digest of a file model: from the cache when the file's path, size, modification time
/// and inode are those it was hashed with, else hashed (and remembered).
fn file_digest(path: &Path) -> Result<String, CliError> {
    let meta = fs::metadata(path).map_err(CliError::io("read", path))?;
    let key_text = format!(
        "{}\n{}\n{}.{}\n{}\n{}",
        path.display(),
        meta.len(),
        meta.mtime(),
        meta.mtime_nsec(),
        meta.ino(),
        meta.dev()
    );
    let key = edgefn_schema::resolve::hex(&Sha256::digest(key_text.as_bytes()));
    let cache = cache_dir();
    let entry = cache.as_ref().map(|c| c.join("digests").join(&key));
    if let Some(d) = entry.as_ref().and_then(|e| fs::read_to_string(e).ok()) {
        let d = d.trim();
        if edgefn_schema::bundle::is_digest(d) {
            return Ok(d.to_owned());
        }
    }
    let digest = sha256_file(path)?;
    if let Some(entry) = entry {
        // The cache only saves time: failing to write it is not the package's failure.
        if let Some(parent) = entry.parent() {
            let _ = fs::create_dir_all(parent);
        }
        let _ = edgefn_os::file::write_atomic(&entry, digest.as_bytes(), edgefn_os::file::PUBLIC);
    }
    Ok(digest)
}

/// Every model the manifest defines, hashed (or packed, for a folder), in manifest order.
///
/// # Errors
///
/// A model that cannot be read, or a folder the bundle format refuses (as `edgefn package`
/// does for a function).
pub(crate) fn prepare_all(
    root: &Path,
    manifest: &edgefn_schema::Manifest,
) -> Result<Vec<Prepared>, CliError> {
    let mut out = Vec::new();
    for m in &manifest.models {
        let path = root.join(&m.path);
        let meta = fs::metadata(&path).map_err(|e| CliError::InvalidArgument {
            message: format!(
                "model `{}`: cannot read `{}` (models[].path in edgefn.yaml): {e}",
                m.name, m.path
            ),
            help: "put the model's file there, or correct its path under `models:`".into(),
        })?;
        if meta.is_dir() {
            let bundle = crate::package::package(root, &m.name, &m.path)?;
            let cache = cache_dir()
                .unwrap_or_else(|| std::env::temp_dir().join("edgefn-models"))
                .join("folders");
            fs::create_dir_all(&cache).map_err(CliError::io("create", &cache))?;
            let file = cache.join(format!("{}.tar.zst", bundle.digest));
            if !file.is_file() {
                edgefn_os::file::write_atomic(&file, &bundle.bytes, edgefn_os::file::PUBLIC)
                    .map_err(CliError::io("write", &file))?;
            }
            out.push(Prepared {
                name: m.name.clone(),
                bytes: bundle.bytes.len() as u64,
                artifact: ModelArtifact {
                    digest: bundle.digest,
                    kind: ModelKind::Folder,
                },
                file,
            });
        } else {
            out.push(Prepared {
                name: m.name.clone(),
                artifact: ModelArtifact {
                    digest: file_digest(&path)?,
                    kind: ModelKind::File,
                },
                file: path,
                bytes: meta.len(),
            });
        }
    }
    Ok(out)
}

/// The artifacts by model name, as a revision names them.
pub(crate) fn artifacts(prepared: &[Prepared]) -> Models {
    prepared
        .iter()
        .map(|p| (p.name.clone(), p.artifact.clone()))
        .collect()
}

/// The project's models for `edgefn test` and `invoke`, read where they are: for each binding,
/// a temporary folder of links named after its models (`$EDGEFN_MODELS_DIR`), each to the
/// project's file or folder. The folders are removed on drop.
#[derive(Debug)]
pub(crate) struct LocalModels {
    /// Model name → the project's file or folder (absolute).
    paths: BTreeMap<String, PathBuf>,
    dirs: Vec<tempfile::TempDir>,
}

impl LocalModels {
    /// The models `manifest` defines, under the project folder `root`.
    pub(crate) fn new(root: &Path, manifest: &edgefn_schema::Manifest) -> Result<Self, CliError> {
        let mut paths = BTreeMap::new();
        for m in &manifest.models {
            let p = root.join(&m.path);
            let target = std::path::absolute(&p).map_err(CliError::io("resolve", &p))?;
            paths.insert(m.name.clone(), target);
        }
        Ok(LocalModels {
            paths,
            dirs: Vec::new(),
        })
    }

    /// The models of a binding that names `names`: name → path, and a folder of links to
    /// exactly those (`None` when there are none).
    pub(crate) fn for_binding(
        &mut self,
        names: &[String],
    ) -> Result<(BTreeMap<String, PathBuf>, Option<PathBuf>), CliError> {
        let models: BTreeMap<String, PathBuf> = names
            .iter()
            .filter_map(|n| self.paths.get(n).map(|p| (n.clone(), p.clone())))
            .collect();
        if models.is_empty() {
            return Ok((models, None));
        }
        let dir = tempfile::Builder::new()
            .prefix("edgefn-models-")
            .tempdir()
            .map_err(CliError::io("create", std::env::temp_dir()))?;
        for (name, target) in &models {
            let link = dir.path().join(name);
            std::os::unix::fs::symlink(target, &link).map_err(CliError::io("link", &link))?;
        }
        let path = dir.path().to_path_buf();
        self.dirs.push(dir);
        Ok((models, Some(path)))
    }
}

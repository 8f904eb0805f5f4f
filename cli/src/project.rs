//! The user's project on disk: finding `edgefn.yaml`, reading it, and writing files safely.

use std::fs;
use std::path::{Path, PathBuf};

use edgefn_schema::{EntryKind, ProjectFiles, Source};

use crate::error::{CliError, CliResult};

/// The manifest's file name.
pub(crate) const MANIFEST: &str = "edgefn.yaml";

/// A manifest file and the project folder holding it.
#[derive(Debug, Clone)]
pub(crate) struct Project {
    /// The project folder.
    pub(crate) root: PathBuf,
    /// The manifest file.
    pub(crate) manifest_path: PathBuf,
}

impl Project {
    /// The manifest at `file`, or `edgefn.yaml` in the current folder or the nearest parent.
    pub(crate) fn locate(file: Option<&Path>) -> CliResult<Self> {
        if let Some(file) = file {
            if !file.is_file() {
                return Err(CliError::InvalidArgument {
                    message: format!("{} is not a file", file.display()),
                    help: "pass the path of an edgefn.yaml with `-f`".into(),
                });
            }
            let root = file
                .parent()
                .filter(|p| !p.as_os_str().is_empty())
                .map_or_else(|| PathBuf::from("."), Path::to_path_buf);
            return Ok(Self {
                root,
                manifest_path: file.to_path_buf(),
            });
        }
        let cwd = std::env::current_dir().map_err(CliError::io("read the current folder", "."))?;
        let mut dir = cwd.as_path();
        loop {
            let candidate = dir.join(MANIFEST);
            if candidate.is_file() {
                return Ok(Self {
                    root: dir.to_path_buf(),
                    manifest_path: candidate,
                });
            }
            match dir.parent() {
                Some(parent) => dir = parent,
                None => return Err(CliError::NoManifest { searched: cwd }),
            }
        }
    }

    /// Reads the manifest into a [`Source`] named by its path as the user would type it.
    pub(crate) fn read_manifest(&self) -> CliResult<Source> {
        read_source(&self.manifest_path)
    }

    /// The project's files, for the manifest's file checks.
    pub(crate) fn files(&self) -> FsFiles {
        FsFiles::new(&self.root)
    }
}

/// Reads a YAML file (manifest, test case) into a [`Source`] named by its path as the user
/// would type it.
///
/// # Errors
/// [`CliError::Io`] when it cannot be read, [`CliError::Source`] (with line and column) when it
/// is not UTF-8.
pub(crate) fn read_source(path: &Path) -> CliResult<Source> {
    let bytes = fs::read(path).map_err(CliError::io("read", path))?;
    Source::from_utf8(display_path(path), bytes)
        .map_err(|d| CliError::Source(crate::error::SourceProblem(d)))
}

/// A path relative to the current folder when it is under it, for messages.
pub(crate) fn display_path(path: &Path) -> String {
    let shown = std::env::current_dir()
        .ok()
        .and_then(|cwd| path.strip_prefix(&cwd).ok().map(Path::to_path_buf))
        .unwrap_or_else(|| path.to_path_buf());
    shown.display().to_string()
}

/// [`ProjectFiles`] over the real file system.
#[derive(Debug)]
pub(crate) struct FsFiles {
    root: PathBuf,
    canonical_root: Option<PathBuf>,
}

impl FsFiles {
    /// The files under `root`.
    pub(crate) fn new(root: &Path) -> Self {
        Self {
            root: root.to_path_buf(),
            canonical_root: fs::canonicalize(root).ok(),
        }
    }
}

impl ProjectFiles for FsFiles {
    fn kind(&self, rel: &str) -> Option<EntryKind> {
        let meta = fs::metadata(self.root.join(rel)).ok()?;
        if meta.is_dir() {
            Some(EntryKind::Dir)
        } else if meta.is_file() {
            Some(EntryKind::File)
        } else {
            None
        }
    }

    fn is_inside(&self, rel: &str) -> bool {
        match (&self.canonical_root, fs::canonicalize(self.root.join(rel))) {
            (Some(root), Ok(path)) => path.starts_with(root),
            _ => false,
        }
    }
}

/// Writes `contents` to `path` atomically ([`edgefn_os::file::write_atomic`]): a crash leaves
/// the old file or the new one, never half of one. An existing file keeps its permissions; a new
/// one is created `0644` (before the umask). Files holding a secret use [`write_secret`].
pub(crate) fn write_atomic(path: &Path, contents: &[u8]) -> CliResult<()> {
    edgefn_os::file::write_atomic_keeping_mode(path, contents, edgefn_os::file::PUBLIC)
        .map_err(CliError::io("write", path))
}

/// Writes a file that holds a secret (a token): atomically, and created with mode `0600`, so it
/// is never readable by others, not even for a moment; a file it replaces becomes `0600` too.
pub(crate) fn write_secret(path: &Path, contents: &[u8]) -> CliResult<()> {
    edgefn_os::file::write_atomic(path, contents, edgefn_os::file::PRIVATE)
        .map_err(CliError::io("write", path))
}

/// Creates a folder that holds secrets (and its missing parents) with mode `0700`.
pub(crate) fn create_private_folder(dir: &Path) -> CliResult<()> {
    edgefn_os::file::create_folder(dir, 0o700).map_err(CliError::io("create the folder", dir))
}

/// A file to create, and whether it should be executable.
#[derive(Debug, Clone)]
pub(crate) struct NewFile {
    /// Where, relative to the base folder.
    pub(crate) path: PathBuf,
    /// What.
    pub(crate) contents: String,
    /// Mode 0755 rather than 0644.
    pub(crate) executable: bool,
}

impl NewFile {
    /// A regular file.
    pub(crate) fn new(path: impl Into<PathBuf>, contents: impl Into<String>) -> Self {
        Self {
            path: path.into(),
            contents: contents.into(),
            executable: false,
        }
    }

    /// An executable file.
    pub(crate) fn executable(path: impl Into<PathBuf>, contents: impl Into<String>) -> Self {
        Self {
            executable: true,
            ..Self::new(path, contents)
        }
    }
}

/// Creates `files` under `base`. Unless `force`, nothing is written when any of them exists, so
/// a refused command leaves the folder as it was.
pub(crate) fn create_files(
    base: &Path,
    files: &[NewFile],
    force: bool,
    hint: &str,
) -> CliResult<()> {
    if !force {
        if let Some(existing) = files
            .iter()
            .map(|f| base.join(&f.path))
            .find(|p| p.exists())
        {
            return Err(CliError::Exists {
                path: existing,
                hint: hint.to_owned(),
            });
        }
    }
    for f in files {
        let path = base.join(&f.path);
        if let Some(parent) = path.parent() {
            fs::create_dir_all(parent).map_err(CliError::io("create the folder", parent))?;
        }
        let mode = if f.executable {
            0o755
        } else {
            edgefn_os::file::PUBLIC
        };
        edgefn_os::file::write_atomic(&path, f.contents.as_bytes(), mode)
            .map_err(CliError::io("write", &path))?;
    }
    Ok(())
}

/// The test case files of each function: `<function path>/tests/*.yaml` (and `.yml`), sorted.
pub(crate) fn test_case_files(
    root: &Path,
    manifest: &edgefn_schema::Manifest,
) -> Vec<(String, PathBuf)> {
    let mut out = Vec::new();
    for (name, f) in &manifest.functions {
        let dir = root.join(&f.path).join("tests");
        let Ok(entries) = fs::read_dir(&dir) else {
            continue;
        };
        let mut files: Vec<PathBuf> = entries
            .filter_map(Result::ok)
            .map(|e| e.path())
            .filter(|p| p.is_file() && p.extension().is_some_and(|e| e == "yaml" || e == "yml"))
            .collect();
        files.sort();
        out.extend(files.into_iter().map(|p| (name.clone(), p)));
    }
    out
}

/// Loads and validates the project's manifest for a command that uses it; prints its warnings,
/// or all its diagnostics and `None` when it has errors (the command then fails with exit 1).
pub(crate) fn load_valid(project: &Project) -> CliResult<Option<edgefn_schema::Loaded>> {
    let source = project.read_manifest()?;
    match edgefn_schema::load(&source, Some(&project.files())) {
        Ok(loaded) => {
            crate::report::print(&loaded.warnings, crate::args::Format::Human);
            Ok(Some(loaded))
        }
        Err(diags) => {
            crate::report::print(&diags, crate::args::Format::Human);
            eprintln!(
                "error: {}: {}; nothing was done",
                source.name(),
                crate::report::counts(&diags)
            );
            Ok(None)
        }
    }
}

/// The error for a name the command line gives that the manifest does not have: `no {kind}
/// `{name}` in the manifest`, with the names it has (`kind`: `function`, `device`).
pub(crate) fn not_in_manifest<'a>(
    kind: &str,
    name: &str,
    names: impl Iterator<Item = &'a String>,
) -> CliError {
    CliError::InvalidArgument {
        message: format!("no {kind} `{name}` in the manifest"),
        help: format!(
            "{kind}s: {}",
            names.map(String::as_str).collect::<Vec<_>>().join(", ")
        ),
    }
}

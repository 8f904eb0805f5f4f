//! Seeing the project change: a fingerprint of the manifest and the files of the functions it
//! names (sizes and modification times), compared between polls. No file-system notification is
//! used (none works the same in every editor, container mount and network folder); the poll
//! interval is the main loop's.

use std::path::{Path, PathBuf};
use std::time::SystemTime;

use edgefn_schema::Manifest;

/// The project's files as last seen: each file's path, size and modification time, sorted.
pub(super) type Fingerprint = Vec<(PathBuf, u64, SystemTime)>;

/// A fingerprint of the project's files: sizes and modification times.
pub(super) fn fingerprint(root: &Path, manifest: &Path, functions: &[PathBuf]) -> Fingerprint {
    fn walk(dir: &Path, out: &mut Vec<(PathBuf, u64, SystemTime)>) {
        let Ok(entries) = std::fs::read_dir(dir) else {
            return;
        };
        for e in entries.flatten() {
            let path = e.path();
            let Ok(meta) = std::fs::symlink_metadata(&path) else {
                continue;
            };
            if meta.is_dir() {
                if e.file_name() != ".git" && e.file_name() != "node_modules" {
                    walk(&path, out);
                }
            } else {
                out.push((
                    path,
                    meta.len(),
                    meta.modified().unwrap_or(SystemTime::UNIX_EPOCH),
                ));
            }
        }
    }
    let mut out = Vec::new();
    if let Ok(m) = std::fs::metadata(manifest) {
        out.push((
            manifest.to_path_buf(),
            m.len(),
            m.modified().unwrap_or(SystemTime::UNIX_EPOCH),
        ));
    }
    for f in functions {
        walk(&root.join(f), &mut out);
    }
    out.sort();
    out
}

/// The folders of the manifest's functions, relative to the project root.
pub(super) fn function_dirs(m: &Manifest) -> Vec<PathBuf> {
    m.functions
        .values()
        .map(|f| PathBuf::from(&f.path))
        .collect()
}

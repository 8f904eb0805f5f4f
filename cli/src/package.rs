//! Packaging a function's folder into a bundle: which files go in, and the checks on them.
//!
//! Everything under the function's folder goes in, except `tests/` (at its top), `.git`, and
//! what `.edgefnignore` files exclude (gitignore syntax; one at the project's root and one in
//! the function's folder may both apply). Symlinks are kept as links when they point inside the
//! folder and refused when they point outside it, or through another link to outside it (the
//! bundle format's rules, [`bundle::pack`]). Files with the setuid or setgid bit are refused.
//! A folder with `package-lock.json` leaves its top `node_modules/` out: its dependencies travel
//! in a layer of their own (`crate::layers`).

use std::fs;
use std::path::{Path, PathBuf};

use edgefn_schema::bundle::{self, BundleFile, FileKind};
use ignore::gitignore::{Gitignore, GitignoreBuilder};

use crate::error::CliError;

/// Name of the ignore files.
pub(crate) const IGNORE_FILE: &str = ".edgefnignore";

/// A packaged function.
#[derive(Debug, Clone)]
pub(crate) struct Bundle {
    /// Function name.
    pub(crate) function: String,
    /// sha256 of `bytes`.
    pub(crate) digest: String,
    /// The archive.
    pub(crate) bytes: Vec<u8>,
    /// Number of files in it.
    pub(crate) files: usize,
}

fn ignore_matcher(dir: &Path) -> Result<Option<Gitignore>, CliError> {
    let file = dir.join(IGNORE_FILE);
    if !file.is_file() {
        return Ok(None);
    }
    let mut b = GitignoreBuilder::new(dir);
    if let Some(e) = b.add(&file) {
        return Err(CliError::failed(
            format!("{} has an invalid pattern", file.display()),
            "fix the pattern; the file uses gitignore syntax",
            e,
        ));
    }
    b.build().map(Some).map_err(|e| {
        CliError::failed(
            file.display().to_string(),
            "fix the pattern; the file uses gitignore syntax",
            e,
        )
    })
}

/// Packs the function `name` whose folder is `root/path`.
pub(crate) fn package(root: &Path, name: &str, path: &str) -> Result<Bundle, CliError> {
    let dir = root.join(path);
    let canonical =
        fs::canonicalize(&dir).map_err(CliError::io("open the function folder", &dir))?;
    let matchers: Vec<Gitignore> = [ignore_matcher(root)?, ignore_matcher(&dir)?]
        .into_iter()
        .flatten()
        .collect();
    let mut files = Vec::new();
    let skip_modules = crate::layers::has_node_lock(&dir);
    walk(&dir, &canonical, "", &matchers, skip_modules, &mut files)?;
    let count = files.len();
    let bytes = bundle::pack(files).map_err(|e| {
        CliError::failed(
            format!("cannot package function `{name}`"),
            "fix the file named above in the function's folder",
            e,
        )
    })?;
    Ok(Bundle {
        function: name.to_owned(),
        digest: bundle::digest(&bytes),
        bytes,
        files: count,
    })
}

fn ignored(matchers: &[Gitignore], path: &Path, is_dir: bool) -> bool {
    matchers
        .iter()
        .any(|m| m.matched_path_or_any_parents(path, is_dir).is_ignore())
}

fn walk(
    dir: &Path,
    top: &Path,
    rel: &str,
    matchers: &[Gitignore],
    skip_modules: bool,
    out: &mut Vec<BundleFile>,
) -> Result<(), CliError> {
    let mut entries: Vec<PathBuf> = fs::read_dir(dir)
        .map_err(CliError::io("read", dir))?
        .filter_map(Result::ok)
        .map(|e| e.path())
        .collect();
    entries.sort();
    for path in entries {
        let name = path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        let rel_path = if rel.is_empty() {
            name.clone()
        } else {
            format!("{rel}/{name}")
        };
        let meta = fs::symlink_metadata(&path).map_err(CliError::io("read", &path))?;
        let ft = meta.file_type();
        if name == ".git"
            || (rel.is_empty() && name == "tests" && ft.is_dir())
            || name == IGNORE_FILE
            || (rel.is_empty() && skip_modules && name == "node_modules")
        {
            continue;
        }
        if ignored(matchers, &path, ft.is_dir()) {
            continue;
        }
        if ft.is_symlink() {
            let target = fs::read_link(&path).map_err(CliError::io("read the link", &path))?;
            let target_text = target.to_string_lossy().into_owned();
            let resolved = fs::canonicalize(&path).ok();
            let inside = resolved.as_ref().is_some_and(|r| r.starts_with(top))
                && bundle::check_link(&rel_path, &target_text).is_ok();
            if !inside {
                return Err(CliError::InvalidArgument {
                    message: format!("symlink {} points to {}, outside the function folder", path.display(), target.display()),
                    help: "a bundle holds only the function's folder: copy the file in, or list the link in .edgefnignore".into(),
                });
            }
            out.push(BundleFile {
                path: rel_path,
                kind: FileKind::Symlink {
                    target: target_text,
                },
            });
        } else if ft.is_dir() {
            walk(&path, top, &rel_path, matchers, skip_modules, out)?;
        } else if ft.is_file() {
            #[cfg(unix)]
            let executable = {
                use std::os::unix::fs::PermissionsExt;
                let mode = meta.permissions().mode();
                if mode & 0o6000 != 0 {
                    return Err(CliError::InvalidArgument {
                        message: format!(
                            "{} has the setuid or setgid bit, which a function never needs",
                            path.display()
                        ),
                        help: format!(
                            "clear it: chmod u-s,g-s {}, or list the file in .edgefnignore",
                            path.display()
                        ),
                    });
                }
                mode & 0o111 != 0
            };
            let data = fs::read(&path).map_err(CliError::io("read", &path))?;
            #[cfg(not(unix))]
            let executable = false;
            out.push(BundleFile {
                path: rel_path,
                kind: FileKind::Regular { data, executable },
            });
        } else {
            return Err(CliError::InvalidArgument {
                message: format!(
                    "{} is not a regular file, folder or symlink",
                    path.display()
                ),
                help: "remove it from the function folder, or list it in .edgefnignore".into(),
            });
        }
    }
    Ok(())
}

/// Packs every function of a manifest, in name order.
pub(crate) fn package_all(
    root: &Path,
    manifest: &edgefn_schema::Manifest,
) -> Result<Vec<Bundle>, CliError> {
    manifest
        .functions
        .iter()
        .map(|(name, f)| package(root, name, &f.path))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::{PermissionsExt, symlink};

    fn folder() -> tempfile::TempDir {
        let root = tempfile::tempdir().expect("tempdir");
        fs::create_dir_all(root.path().join("f/x")).expect("mkdir");
        fs::write(root.path().join("f/main.py"), "x").expect("write");
        root
    }

    fn refused(root: &Path) -> String {
        match package(root, "f", "f") {
            Err(CliError::InvalidArgument { message, help }) => format!("{message}\n{help}"),
            other => panic!("not refused: {other:?}"),
        }
    }

    #[test]
    fn setuid_and_setgid_files_are_refused_by_name() {
        for mode in [0o4755, 0o2755] {
            let root = folder();
            let file = root.path().join("f/x/tool");
            fs::write(&file, "#!/bin/sh\n").expect("write");
            fs::set_permissions(&file, fs::Permissions::from_mode(mode)).expect("chmod");
            let err = refused(root.path());
            assert!(
                err.contains("x/tool") && err.contains("setuid") && err.contains("chmod u-s,g-s"),
                "{err}"
            );
        }
    }

    #[test]
    fn links_that_leave_through_other_links_are_refused_and_chains_inside_kept() {
        let root = folder();
        // `x/b` points at the function's folder; `a -> x/b/..` then names its parent.
        symlink("..", root.path().join("f/x/b")).expect("link");
        symlink("x/b/..", root.path().join("f/a")).expect("link");
        let err = refused(root.path());
        assert!(err.contains("outside the function folder"), "{err}");

        let root = folder();
        symlink("main.py", root.path().join("f/l1")).expect("link");
        symlink("l1", root.path().join("f/l2")).expect("link");
        symlink("../l2", root.path().join("f/x/l3")).expect("link");
        let b = package(root.path(), "f", "f").expect("packaged");
        let files = bundle::unpack(&b.bytes, 1 << 20).expect("unpacks");
        assert_eq!(files.len(), 4);
    }
}

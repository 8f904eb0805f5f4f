//! The bundle format: one function's folder as a reproducible `tar` + `zstd` archive, named by
//! the sha256 of its bytes.
//!
//! Reproducible means the same files give the same bytes on any machine: entries sorted by path,
//! modification times zero, owners root with empty names, modes normalised to `0644` or `0755`
//! (executable when any execute bit was set), no folder entries. [`unpack`] is the inverse, and
//! refuses anything unsafe: absolute paths, `..`, links that leave the bundle, device files, and
//! archives that inflate past a cap.
//!
//! Both work on bytes in memory: reading and writing files is the caller's job.

use std::io::Read;
use std::path::{Component, Path};

use sha2::{Digest, Sha256};

use crate::resolve::hex;

/// zstd level: a good ratio at a speed that keeps `edgefn apply` quick.
const ZSTD_LEVEL: i32 = 9;

/// One entry of a bundle.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BundleFile {
    /// `/`-separated path relative to the function folder.
    pub path: String,
    /// What it is.
    pub kind: FileKind,
}

/// A regular file or a symlink.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FileKind {
    /// File contents, and whether it is executable.
    Regular {
        /// Bytes.
        data: Vec<u8>,
        /// Mode 0755 rather than 0644.
        executable: bool,
    },
    /// A symlink to a path inside the bundle (relative to the link's folder).
    Symlink {
        /// Link target.
        target: String,
    },
}

/// Why a bundle cannot be made or opened.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum BundleError {
    /// A path that is absolute or climbs out with `..`.
    #[error("`{0}` is not a relative path inside the bundle")]
    UnsafePath(String),
    /// A symlink whose target is outside the bundle.
    #[error("symlink `{path}` points to `{target}`, outside the function folder")]
    LinkOutside {
        /// The link.
        path: String,
        /// Where it points.
        target: String,
    },
    /// A device, fifo, hard link or other special entry.
    #[error("`{0}` is not a regular file or a symlink")]
    SpecialFile(String),
    /// Two entries with one path.
    #[error("`{0}` appears twice")]
    Duplicate(String),
    /// Unpacked size past the cap.
    #[error("the bundle inflates past {0} bytes")]
    TooLarge(u64),
    /// The bytes are not a valid archive.
    #[error("not a valid bundle: {0}")]
    Corrupt(String),
}

/// The sha256 of `bytes`, in lowercase hex: a bundle's name.
pub fn digest(bytes: &[u8]) -> String {
    hex(&Sha256::digest(bytes))
}

/// Whether `s` looks like a sha256 digest in lowercase hex.
pub fn is_digest(s: &str) -> bool {
    s.len() == 64
        && s.bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

/// Checks that `path` is relative and stays inside the bundle.
fn check_path(path: &str) -> Result<(), BundleError> {
    let p = Path::new(path);
    if path.is_empty() || p.is_absolute() || path.contains('\\') {
        return Err(BundleError::UnsafePath(path.to_owned()));
    }
    for c in p.components() {
        match c {
            Component::Normal(_) | Component::CurDir => {}
            _ => return Err(BundleError::UnsafePath(path.to_owned())),
        }
    }
    Ok(())
}

/// Checks that the symlink at `path` pointing to `target` stays inside the bundle.
pub fn check_link(path: &str, target: &str) -> Result<(), BundleError> {
    let outside = || BundleError::LinkOutside {
        path: path.to_owned(),
        target: target.to_owned(),
    };
    if target.is_empty() || target.starts_with('/') {
        return Err(outside());
    }
    // Depth of the link's folder, then walk the target.
    let mut depth: i64 = path
        .split('/')
        .filter(|s| !s.is_empty() && *s != ".")
        .count() as i64
        - 1;
    for part in target.split('/') {
        match part {
            "" | "." => {}
            ".." => {
                depth -= 1;
                if depth < 0 {
                    return Err(outside());
                }
            }
            _ => depth += 1,
        }
    }
    Ok(())
}

/// Packs `files` into a reproducible bundle. The order of `files` does not matter.
pub fn pack(mut files: Vec<BundleFile>) -> Result<Vec<u8>, BundleError> {
    files.sort_by(|a, b| a.path.cmp(&b.path));
    for pair in files.windows(2) {
        if pair[0].path == pair[1].path {
            return Err(BundleError::Duplicate(pair[0].path.clone()));
        }
    }
    let mut builder = tar::Builder::new(Vec::new());
    let io = |e: std::io::Error| BundleError::Corrupt(e.to_string());
    for f in &files {
        check_path(&f.path)?;
        let mut header = tar::Header::new_gnu();
        header.set_mtime(0);
        header.set_uid(0);
        header.set_gid(0);
        let _ = header.set_username("");
        let _ = header.set_groupname("");
        match &f.kind {
            FileKind::Regular { data, executable } => {
                header.set_entry_type(tar::EntryType::Regular);
                header.set_mode(if *executable { 0o755 } else { 0o644 });
                header.set_size(data.len() as u64);
                builder
                    .append_data(&mut header, &f.path, data.as_slice())
                    .map_err(io)?;
            }
            FileKind::Symlink { target } => {
                check_link(&f.path, target)?;
                header.set_entry_type(tar::EntryType::Symlink);
                header.set_mode(0o777);
                header.set_size(0);
                builder
                    .append_link(&mut header, &f.path, target)
                    .map_err(io)?;
            }
        }
    }
    let tar = builder.into_inner().map_err(io)?;
    zstd::bulk::compress(&tar, ZSTD_LEVEL).map_err(io)
}

/// Opens a bundle, refusing unsafe entries and inflating at most `max_bytes`.
pub fn unpack(bytes: &[u8], max_bytes: u64) -> Result<Vec<BundleFile>, BundleError> {
    let decoder =
        zstd::stream::read::Decoder::new(bytes).map_err(|e| BundleError::Corrupt(e.to_string()))?;
    // One byte past the cap tells "too large" apart from "exactly the cap".
    let mut limited = decoder.take(max_bytes.saturating_add(1));
    let mut tar_bytes = Vec::new();
    limited
        .read_to_end(&mut tar_bytes)
        .map_err(|e| BundleError::Corrupt(e.to_string()))?;
    if tar_bytes.len() as u64 > max_bytes {
        return Err(BundleError::TooLarge(max_bytes));
    }
    let mut archive = tar::Archive::new(tar_bytes.as_slice());
    let entries = archive
        .entries()
        .map_err(|e| BundleError::Corrupt(e.to_string()))?;
    let mut out: Vec<BundleFile> = Vec::new();
    let mut total: u64 = 0;
    for entry in entries {
        let mut entry = entry.map_err(|e| BundleError::Corrupt(e.to_string()))?;
        let path = entry
            .path()
            .map_err(|e| BundleError::Corrupt(e.to_string()))?
            .to_string_lossy()
            .into_owned();
        check_path(&path)?;
        let kind = match entry.header().entry_type() {
            tar::EntryType::Regular | tar::EntryType::Continuous => {
                total = total.saturating_add(entry.header().size().unwrap_or(u64::MAX));
                if total > max_bytes {
                    return Err(BundleError::TooLarge(max_bytes));
                }
                let executable = entry.header().mode().unwrap_or(0) & 0o111 != 0;
                let mut data = Vec::new();
                entry
                    .read_to_end(&mut data)
                    .map_err(|e| BundleError::Corrupt(e.to_string()))?;
                FileKind::Regular { data, executable }
            }
            tar::EntryType::Symlink => {
                let target = entry
                    .link_name()
                    .map_err(|e| BundleError::Corrupt(e.to_string()))?
                    .map(|t| t.to_string_lossy().into_owned())
                    .unwrap_or_default();
                check_link(&path, &target)?;
                FileKind::Symlink { target }
            }
            tar::EntryType::Directory => continue,
            _ => return Err(BundleError::SpecialFile(path)),
        };
        if out.iter().any(|f| f.path == path) {
            return Err(BundleError::Duplicate(path));
        }
        out.push(BundleFile { path, kind });
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn file(path: &str, data: &str) -> BundleFile {
        BundleFile {
            path: path.into(),
            kind: FileKind::Regular {
                data: data.as_bytes().to_vec(),
                executable: false,
            },
        }
    }

    #[test]
    fn reproducible_whatever_the_order() {
        let a = vec![file("b.py", "x"), file("a/c.py", "y")];
        let b = vec![file("a/c.py", "y"), file("b.py", "x")];
        assert_eq!(digest(&pack(a).unwrap()), digest(&pack(b).unwrap()));
    }

    #[test]
    fn round_trip_with_modes_and_links() {
        let files = vec![
            BundleFile {
                path: "run.sh".into(),
                kind: FileKind::Regular {
                    data: b"#!/bin/sh\n".to_vec(),
                    executable: true,
                },
            },
            BundleFile {
                path: "lib/current".into(),
                kind: FileKind::Symlink {
                    target: "../run.sh".into(),
                },
            },
            file(&format!("{}/deep.txt", "d".repeat(150)), "long path"),
        ];
        let bytes = pack(files.clone()).unwrap();
        let mut back = unpack(&bytes, 1 << 20).unwrap();
        back.sort_by(|a, b| a.path.cmp(&b.path));
        let mut want = files;
        want.sort_by(|a, b| a.path.cmp(&b.path));
        assert_eq!(back, want);
    }

    #[test]
    fn links_out_are_refused() {
        assert!(check_link("a", "../x").is_err());
        assert!(check_link("a/b", "../../x").is_err());
        assert!(check_link("a/b", "/etc/passwd").is_err());
        assert!(check_link("a/b", "../c").is_ok());
        assert!(check_link("a/b", "c/../../d").is_ok());
    }

    #[test]
    fn unsafe_archives_are_refused() {
        // Build archives by hand, as an attacker would, bypassing `pack`'s checks.
        fn raw(path: &str, kind: tar::EntryType, link: Option<&str>) -> Vec<u8> {
            let mut b = tar::Builder::new(Vec::new());
            let mut h = tar::Header::new_gnu();
            h.set_entry_type(kind);
            h.set_size(if link.is_some() { 0 } else { 1 });
            h.set_mode(0o644);
            // set_path refuses `..`, so write the name bytes directly.
            let name = &mut h.as_old_mut().name;
            name[..path.len()].copy_from_slice(path.as_bytes());
            if let Some(l) = link {
                h.as_old_mut().linkname[..l.len()].copy_from_slice(l.as_bytes());
            }
            h.set_cksum();
            if link.is_some() || kind == tar::EntryType::Char {
                b.append(&h, &[][..]).unwrap();
            } else {
                b.append(&h, &b"x"[..]).unwrap();
            }
            zstd::bulk::compress(&b.into_inner().unwrap(), 1).unwrap()
        }
        assert!(matches!(
            unpack(&raw("../evil", tar::EntryType::Regular, None), 1 << 20),
            Err(BundleError::UnsafePath(_))
        ));
        assert!(matches!(
            unpack(&raw("/etc/evil", tar::EntryType::Regular, None), 1 << 20),
            Err(BundleError::UnsafePath(_))
        ));
        assert!(matches!(
            unpack(
                &raw("ln", tar::EntryType::Symlink, Some("../../etc")),
                1 << 20
            ),
            Err(BundleError::LinkOutside { .. })
        ));
        assert!(matches!(
            unpack(&raw("dev", tar::EntryType::Char, None), 1 << 20),
            Err(BundleError::SpecialFile(_))
        ));
        assert!(matches!(
            unpack(b"not zstd", 1 << 20),
            Err(BundleError::Corrupt(_))
        ));
    }

    #[test]
    fn inflation_is_capped() {
        let big = vec![file("zeros", &"0".repeat(1 << 20))];
        let bytes = pack(big).unwrap();
        assert!(bytes.len() < 10_000, "compresses well");
        assert_eq!(
            unpack(&bytes, 64 << 10),
            Err(BundleError::TooLarge(64 << 10))
        );
        assert!(unpack(&bytes, 2 << 20).is_ok());
    }
}

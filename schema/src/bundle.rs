//! The bundle format: one function's folder as a reproducible `tar` + `zstd` archive, named by
//! the sha256 of its bytes.
//!
//! Reproducible means the same files give the same bytes on any machine: entries sorted by path,
//! modification times zero, owners root with empty names, modes normalised to `0644` or `0755`
//! (executable when any execute bit was set), no folder entries.
//!
//! [`unpack_into`] is the inverse. It streams (zstd → tar → the caller's [`Sink`]) with bounded
//! memory, whatever the archive inflates to, and refuses anything unsafe: absolute paths, `..`,
//! device files, hard links, setuid/setgid bits, an entry that replaces or lies under an earlier
//! one (a file or a symlink), symlinks that leave the bundle once every link in the final tree is
//! followed, and archives that inflate past a cap. Regular files reach the sink as they are read;
//! symlinks only at the end, after every check against the final tree, so a sink that creates
//! links last never writes anything through one. [`pack`] applies the same checks.
//!
//! Neither touches the file system: bytes come from a reader and go to the sink.

use std::cell::Cell;
use std::collections::{BTreeMap, VecDeque};
use std::io::Read;
use std::path::{Component, Path};
use std::rc::Rc;

use sha2::{Digest, Sha256};

use crate::resolve::hex;

/// zstd level: a good ratio at a speed that keeps `edgefn apply` quick.
const ZSTD_LEVEL: i32 = 9;

/// Largest zstd window an unpacker accepts, as a power of two: 16 MiB. [`pack`]'s level uses
/// 4 MiB; a frame asking for more is refused rather than allowed to allocate it.
const WINDOW_LOG_MAX: u32 = 24;

/// Most entries a bundle may hold (folders included): what the unpacker remembers per entry
/// (its path) stays small.
pub const MAX_ENTRIES: usize = 200_000;

/// Most bytes of paths and link targets the unpacker remembers, folders included.
pub const MAX_PATH_BYTES: usize = 32 << 20;

/// Most path components a link's resolution may walk, links followed included.
const MAX_STEPS: usize = 4096;

/// Longest path or link target, in bytes (Linux's `PATH_MAX`).
const MAX_NAME: u64 = 4096;

/// How many symlinks a link target may go through before it is called a loop (Linux's limit).
const MAX_HOPS: usize = 40;

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
    /// A symlink whose target is outside the bundle, directly or through other links.
    #[error("symlink `{path}` points to `{target}`, outside the function folder")]
    LinkOutside {
        /// The link.
        path: String,
        /// Where it points.
        target: String,
    },
    /// A symlink whose target goes round in circles.
    #[error("symlink `{0}` is part of a loop of links")]
    LinkLoop(String),
    /// An entry whose path goes through a symlink entry: writing it would follow the link.
    #[error("`{path}` lies under the symlink `{link}`: nothing may be created through a link")]
    UnderLink {
        /// The entry.
        path: String,
        /// The link among its parents.
        link: String,
    },
    /// An entry whose path goes through a regular file entry.
    #[error("`{path}` lies under `{file}`, which is a file")]
    UnderFile {
        /// The entry.
        path: String,
        /// The file among its parents.
        file: String,
    },
    /// A device, fifo or other special entry.
    #[error("`{0}` is not a regular file or a symlink")]
    SpecialFile(String),
    /// A hard link.
    #[error("`{0}` is a hard link: a bundle holds only regular files and symlinks")]
    HardLink(String),
    /// An entry with the setuid or setgid bit.
    #[error(
        "`{0}` has the setuid or setgid bit, which a function never needs: clear it (`chmod u-s,g-s`) and package again"
    )]
    SetId(String),
    /// Two entries with one path (the second would replace the first).
    #[error("`{0}` appears twice: an entry may not replace an earlier one")]
    Duplicate(String),
    /// More entries than [`MAX_ENTRIES`], or more bytes of paths than [`MAX_PATH_BYTES`].
    #[error(
        "the bundle holds more than {MAX_ENTRIES} entries or more than {MAX_PATH_BYTES} bytes of paths"
    )]
    TooManyEntries,
    /// Unpacked size past the cap.
    #[error("the bundle inflates past {0} bytes")]
    TooLarge(u64),
    /// The bytes are not a valid archive.
    #[error("not a valid bundle: {0}")]
    Corrupt(String),
}

/// Why [`unpack_into`] stopped: the archive, or the sink.
#[derive(Debug, thiserror::Error)]
pub enum UnpackError<E> {
    /// The archive is unsafe or invalid.
    #[error(transparent)]
    Bundle(#[from] BundleError),
    /// The sink failed (while the archive was fine so far).
    #[error("{0}")]
    Sink(E),
}

/// Where [`unpack_into`] puts the entries it checked: a folder on disk, or memory.
///
/// Paths are normalised (`/`-separated, no `.`, no empty parts), relative, and never lie under
/// an earlier entry that is a file or a symlink. All regular files come first, in archive
/// order; then all symlinks, once the whole tree is known and checked.
pub trait Sink {
    /// What the sink's own failures are.
    type Error;
    /// A regular file at `path` of `size` bytes, read from `data`. A read error from `data`
    /// is the archive's fault: return it (wrapped as you like) and [`unpack_into`] reports the
    /// archive's problem instead.
    fn file(
        &mut self,
        path: &str,
        executable: bool,
        size: u64,
        data: &mut dyn Read,
    ) -> Result<(), Self::Error>;
    /// A symlink at `path` pointing to `target` (relative, inside the bundle whatever links it
    /// goes through).
    fn symlink(&mut self, path: &str, target: &str) -> Result<(), Self::Error>;
}

/// The sha256 of `bytes`, in lowercase hex: a bundle's name.
pub fn digest(bytes: &[u8]) -> String {
    hex(&Sha256::digest(bytes))
}

/// How many bytes a bundle inflates to (its tar stream), from the first bytes of its zstd
/// frame (18 are always enough), when the frame says ([`pack`]'s always do). The files take
/// about that much room once extracted.
pub fn inflated_size(head: &[u8]) -> Option<u64> {
    zstd::zstd_safe::get_frame_content_size(head).ok().flatten()
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
    if path.is_empty() || p.is_absolute() || path.contains('\\') || path.contains('\0') {
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

/// `path` (checked) without `.` and empty parts: `./a//b/` is `a/b`.
fn normalize(path: &str) -> String {
    path.split('/')
        .filter(|s| !s.is_empty() && *s != ".")
        .collect::<Vec<_>>()
        .join("/")
}

/// Checks that the symlink at `path` pointing to `target` stays inside the bundle, reading the
/// target as plain text (the links it may go through are checked by [`unpack_into`] and [`pack`],
/// which see the whole tree).
pub fn check_link(path: &str, target: &str) -> Result<(), BundleError> {
    let outside = || BundleError::LinkOutside {
        path: path.to_owned(),
        target: target.to_owned(),
    };
    if target.is_empty() || target.starts_with('/') || target.contains('\0') {
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

/// What an entry of the tree is.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Node {
    /// A folder (an entry's parent, or a folder entry).
    Dir,
    /// A regular file.
    File,
    /// A symlink, and its target.
    Link(String),
}

/// The entries seen so far, by normalised path, with the rules on how they may relate.
#[derive(Debug, Default)]
struct Tree {
    nodes: BTreeMap<String, Node>,
    /// Symlink paths, in archive order.
    links: Vec<String>,
    /// Bytes of paths and targets held.
    bytes: usize,
}

impl Tree {
    /// Adds an entry: refused when it replaces an earlier one, or lies under a file or a link.
    fn add(&mut self, path: &str, node: Node) -> Result<(), BundleError> {
        // Parents, deepest first: a folder already known has only folders above it.
        let mut new_dirs = Vec::new();
        let mut end = path.len();
        while let Some(i) = path[..end].rfind('/') {
            let parent = &path[..i];
            match self.nodes.get(parent) {
                Some(Node::Dir) => break,
                Some(Node::File) => {
                    return Err(BundleError::UnderFile {
                        path: path.to_owned(),
                        file: parent.to_owned(),
                    });
                }
                Some(Node::Link(_)) => {
                    return Err(BundleError::UnderLink {
                        path: path.to_owned(),
                        link: parent.to_owned(),
                    });
                }
                None => new_dirs.push(parent),
            }
            end = i;
        }
        match self.nodes.get(path) {
            None => {}
            Some(Node::Dir) if node == Node::Dir => return Ok(()),
            Some(_) => return Err(BundleError::Duplicate(path.to_owned())),
        }
        let target = match &node {
            Node::Link(t) => t.len(),
            _ => 0,
        };
        let bytes =
            self.bytes + path.len() + target + new_dirs.iter().map(|d| d.len()).sum::<usize>();
        if self.nodes.len() + 1 + new_dirs.len() > MAX_ENTRIES || bytes > MAX_PATH_BYTES {
            return Err(BundleError::TooManyEntries);
        }
        self.bytes = bytes;
        for d in new_dirs {
            self.nodes.insert(d.to_owned(), Node::Dir);
        }
        if matches!(node, Node::Link(_)) {
            self.links.push(path.to_owned());
        }
        self.nodes.insert(path.to_owned(), node);
        Ok(())
    }

    /// Checks every link against the final tree: followed through every link it meets, as the
    /// kernel would, it must never climb above the bundle's root.
    fn check_links(&self) -> Result<(), BundleError> {
        for link in &self.links {
            self.resolve(link)?;
        }
        Ok(())
    }

    fn resolve(&self, link: &str) -> Result<(), BundleError> {
        let Some(Node::Link(target)) = self.nodes.get(link) else {
            return Ok(());
        };
        let outside = || BundleError::LinkOutside {
            path: link.to_owned(),
            target: target.clone(),
        };
        // Where we are (a folder, as a path from the root), and what is left to walk.
        let mut here = link.rsplit_once('/').map_or("", |(d, _)| d).to_owned();
        let mut todo: VecDeque<&str> = VecDeque::new();
        let (mut hops, mut steps) = (0, 0);
        let mut next = Some(target.as_str());
        loop {
            if let Some(t) = next.take() {
                if t.is_empty() || t.starts_with('/') {
                    return Err(outside());
                }
                for part in t.rsplit('/') {
                    todo.push_front(part);
                }
            }
            let Some(part) = todo.pop_front() else {
                return Ok(());
            };
            steps += 1;
            if steps > MAX_STEPS {
                return Err(BundleError::LinkLoop(link.to_owned()));
            }
            match part {
                "" | "." => {}
                ".." => {
                    if here.is_empty() {
                        return Err(outside());
                    }
                    here.truncate(here.rfind('/').unwrap_or(0));
                }
                name => {
                    let len = here.len();
                    if len > 0 {
                        here.push('/');
                    }
                    here.push_str(name);
                    if let Some(Node::Link(t)) = self.nodes.get(&here) {
                        hops += 1;
                        if hops > MAX_HOPS {
                            return Err(BundleError::LinkLoop(link.to_owned()));
                        }
                        // A link's target is relative to the link's folder.
                        here.truncate(len);
                        next = Some(t.as_str());
                    }
                }
            }
        }
    }
}

/// Packs `files` into a reproducible bundle. The order of `files` does not matter. Refuses
/// what [`unpack_into`] would refuse.
pub fn pack(mut files: Vec<BundleFile>) -> Result<Vec<u8>, BundleError> {
    files.sort_by(|a, b| a.path.cmp(&b.path));
    let mut tree = Tree::default();
    for f in &files {
        check_path(&f.path)?;
        if normalize(&f.path) != f.path {
            return Err(BundleError::UnsafePath(f.path.clone()));
        }
        let node = match &f.kind {
            FileKind::Regular { .. } => Node::File,
            FileKind::Symlink { target } => {
                check_link(&f.path, target)?;
                Node::Link(target.clone())
            }
        };
        tree.add(&f.path, node)?;
    }
    tree.check_links()?;
    let mut builder = tar::Builder::new(Vec::new());
    let io = |e: std::io::Error| BundleError::Corrupt(e.to_string());
    for f in &files {
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

/// The first problem the archive's reader met: past the cap, or not valid zstd.
type Fault = Rc<Cell<Option<BundleError>>>;

/// The inflated stream, cut off (with a recorded fault) one byte past the cap.
struct Capped<R> {
    inner: R,
    left: u64,
    max: u64,
    fault: Fault,
}

impl<R: Read> Read for Capped<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        if self.left == 0 {
            // One byte more tells "too large" apart from "exactly the cap".
            let mut probe = [0u8; 1];
            let n = self.read_inner(&mut probe)?;
            if n == 0 {
                return Ok(0);
            }
            self.fault.set(Some(BundleError::TooLarge(self.max)));
            return Err(std::io::Error::other(BundleError::TooLarge(self.max)));
        }
        let want = buf
            .len()
            .min(usize::try_from(self.left).unwrap_or(usize::MAX));
        let n = self.read_inner(&mut buf[..want])?;
        self.left -= n as u64;
        Ok(n)
    }
}

impl<R: Read> Capped<R> {
    fn read_inner(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        self.inner.read(buf).inspect_err(|e| {
            let first = self.fault.take();
            self.fault
                .set(first.or_else(|| Some(BundleError::Corrupt(e.to_string()))));
        })
    }
}

/// Reads one GNU long name or long link entry, at most [`MAX_NAME`] bytes.
fn read_long(entry: &mut impl Read, size: u64) -> Result<Vec<u8>, BundleError> {
    if size > MAX_NAME + 1 {
        return Err(BundleError::Corrupt(format!(
            "a name of {size} bytes (at most {MAX_NAME})"
        )));
    }
    let mut v = Vec::new();
    entry
        .read_to_end(&mut v)
        .map_err(|e| BundleError::Corrupt(e.to_string()))?;
    while v.last() == Some(&0) {
        v.pop();
    }
    Ok(v)
}

fn text(bytes: Vec<u8>) -> Result<String, BundleError> {
    String::from_utf8(bytes)
        .map_err(|e| BundleError::UnsafePath(String::from_utf8_lossy(e.as_bytes()).into_owned()))
}

/// Opens a bundle read from `reader`, checking every entry, and hands the entries to `sink`:
/// regular files as they stream by, symlinks at the end once the whole tree is checked. Memory
/// stays bounded whatever the archive inflates to: at most `max_bytes` are inflated (the sum of
/// the files' sizes, and the tar stream itself), the zstd window is at most 16 MiB, and per
/// entry only its path is remembered (at most [`MAX_ENTRIES`] of them, [`MAX_PATH_BYTES`] in
/// all).
///
/// On an error the sink may have received some files already: it is the caller's job to throw
/// them away (extract into a temporary folder).
pub fn unpack_into<S: Sink>(
    reader: impl Read,
    max_bytes: u64,
    sink: &mut S,
) -> Result<(), UnpackError<S::Error>> {
    let corrupt = |e: std::io::Error| BundleError::Corrupt(e.to_string());
    let mut decoder = zstd::stream::read::Decoder::new(reader).map_err(corrupt)?;
    decoder.window_log_max(WINDOW_LOG_MAX).map_err(corrupt)?;
    let fault: Fault = Rc::default();
    let capped = Capped {
        inner: decoder,
        left: max_bytes,
        max: max_bytes,
        fault: fault.clone(),
    };
    // The reader's own fault, when there is one, says better what went wrong.
    let why = |e: std::io::Error| fault.take().unwrap_or_else(|| corrupt(e));
    let mut archive = tar::Archive::new(capped);
    let entries = archive.entries().map_err(why)?.raw(true);
    let mut tree = Tree::default();
    let mut total: u64 = 0;
    let (mut long_name, mut long_link) = (None, None);
    for entry in entries {
        let mut entry = entry.map_err(why)?;
        let kind = entry.header().entry_type();
        let size = entry.header().size().map_err(corrupt)?;
        if kind.is_gnu_longname() {
            long_name = Some(read_long(&mut entry, size).map_err(|e| fault.take().unwrap_or(e))?);
            continue;
        }
        if kind.is_gnu_longlink() {
            long_link = Some(read_long(&mut entry, size).map_err(|e| fault.take().unwrap_or(e))?);
            continue;
        }
        let raw = text(
            long_name
                .take()
                .unwrap_or_else(|| entry.path_bytes().into_owned()),
        )?;
        check_path(&raw)?;
        let path = normalize(&raw);
        if entry.header().mode().map_err(corrupt)? & 0o6000 != 0 {
            return Err(BundleError::SetId(raw).into());
        }
        match kind {
            tar::EntryType::Regular | tar::EntryType::Continuous => {
                if path.is_empty() {
                    return Err(BundleError::UnsafePath(raw).into());
                }
                total = total.saturating_add(size);
                if total > max_bytes {
                    return Err(BundleError::TooLarge(max_bytes).into());
                }
                tree.add(&path, Node::File)?;
                let executable = entry.header().mode().map_err(corrupt)? & 0o111 != 0;
                let written = sink.file(&path, executable, size, &mut entry);
                if let Some(f) = fault.take() {
                    return Err(f.into());
                }
                written.map_err(UnpackError::Sink)?;
            }
            tar::EntryType::Symlink => {
                let target = match long_link.take() {
                    Some(t) => text(t)?,
                    None => text(
                        entry
                            .link_name_bytes()
                            .map(std::borrow::Cow::into_owned)
                            .unwrap_or_default(),
                    )?,
                };
                if path.is_empty() {
                    return Err(BundleError::UnsafePath(raw).into());
                }
                check_link(&path, &target)?;
                tree.add(&path, Node::Link(target))?;
            }
            tar::EntryType::Directory => {
                if !path.is_empty() {
                    tree.add(&path, Node::Dir)?;
                }
            }
            tar::EntryType::Link => return Err(BundleError::HardLink(raw).into()),
            _ => return Err(BundleError::SpecialFile(raw).into()),
        }
    }
    if long_name.is_some() || long_link.is_some() {
        return Err(BundleError::Corrupt("a long name that names no entry".into()).into());
    }
    tree.check_links()?;
    for link in &tree.links {
        if let Some(Node::Link(target)) = tree.nodes.get(link) {
            sink.symlink(link, target).map_err(UnpackError::Sink)?;
        }
    }
    Ok(())
}

/// A sink that keeps the entries in memory.
#[derive(Debug, Default)]
struct Memory(Vec<BundleFile>);

impl Sink for Memory {
    type Error = std::io::Error;
    fn file(
        &mut self,
        path: &str,
        executable: bool,
        _size: u64,
        data: &mut dyn Read,
    ) -> Result<(), std::io::Error> {
        let mut bytes = Vec::new();
        data.read_to_end(&mut bytes)?;
        self.0.push(BundleFile {
            path: path.to_owned(),
            kind: FileKind::Regular {
                data: bytes,
                executable,
            },
        });
        Ok(())
    }
    fn symlink(&mut self, path: &str, target: &str) -> Result<(), std::io::Error> {
        self.0.push(BundleFile {
            path: path.to_owned(),
            kind: FileKind::Symlink {
                target: target.to_owned(),
            },
        });
        Ok(())
    }
}

/// Opens a bundle held in memory: [`unpack_into`] with a sink that keeps every entry (regular
/// files first, then symlinks), inflating at most `max_bytes`.
pub fn unpack(bytes: &[u8], max_bytes: u64) -> Result<Vec<BundleFile>, BundleError> {
    let mut memory = Memory::default();
    unpack_into(bytes, max_bytes, &mut memory).map_err(|e| match e {
        UnpackError::Bundle(b) => b,
        UnpackError::Sink(e) => BundleError::Corrupt(e.to_string()),
    })?;
    Ok(memory.0)
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

    /// One crafted entry: path, type, link target, mode, contents.
    type Entry<'a> = (&'a str, tar::EntryType, Option<&'a str>, u32, &'a [u8]);

    /// An archive written by hand, as an attacker would, bypassing `pack`'s checks: entries of
    /// (path, type, link target, mode, contents).
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
            b.append(&h, *data).unwrap();
        }
        zstd::bulk::compress(&b.into_inner().unwrap(), 1).unwrap()
    }

    use tar::EntryType::{Directory, Link, Regular, Symlink};

    #[test]
    fn nothing_is_created_through_a_link_the_archive_made() {
        // The issue's chain: each link alone stays inside; together they leave the root.
        let chain = crafted(&[
            ("main.py", Regular, None, 0o644, b"x"),
            ("a/b", Symlink, Some(".."), 0o777, b""),
            ("a/b/c", Symlink, Some(".."), 0o777, b""),
            ("a/b/c/pwned", Regular, None, 0o644, b"x"),
        ]);
        assert_eq!(
            unpack(&chain, 1 << 20),
            Err(BundleError::UnderLink {
                path: "a/b/c".into(),
                link: "a/b".into()
            })
        );
        // A file under a link, whatever the spelling of its path.
        for path in ["l/x", "./l/x", "l//x", "l/./x"] {
            let bytes = crafted(&[
                ("l", Symlink, Some("d"), 0o777, b""),
                (path, Regular, None, 0o644, b"x"),
            ]);
            assert!(
                matches!(unpack(&bytes, 1 << 20), Err(BundleError::UnderLink { .. })),
                "{path}"
            );
        }
        // The link after the file: it would replace the folder the file is in.
        let late = crafted(&[
            ("a/b/c/pwned", Regular, None, 0o644, b"x"),
            ("a/b", Symlink, Some(".."), 0o777, b""),
        ]);
        assert_eq!(
            unpack(&late, 1 << 20),
            Err(BundleError::Duplicate("a/b".into()))
        );
        // A folder entry under a link is refused too.
        let dir = crafted(&[
            ("l", Symlink, Some("."), 0o777, b""),
            ("l/d/", Directory, None, 0o755, b""),
        ]);
        assert!(matches!(
            unpack(&dir, 1 << 20),
            Err(BundleError::UnderLink { .. })
        ));
    }

    #[test]
    fn links_are_checked_against_the_final_tree_through_other_links() {
        // `a -> x/b/..` looks like `x`, but `x/b` is a link to the root: `..` leaves it.
        let through = crafted(&[
            ("x/b", Symlink, Some(".."), 0o777, b""),
            ("a", Symlink, Some("x/b/.."), 0o777, b""),
        ]);
        assert_eq!(
            unpack(&through, 1 << 20),
            Err(BundleError::LinkOutside {
                path: "a".into(),
                target: "x/b/..".into()
            })
        );
        // Whatever the order of the links.
        let reversed = crafted(&[
            ("a", Symlink, Some("x/b/.."), 0o777, b""),
            ("x/b", Symlink, Some(".."), 0o777, b""),
        ]);
        assert!(matches!(
            unpack(&reversed, 1 << 20),
            Err(BundleError::LinkOutside { .. })
        ));
        // Deeper chains: each link climbs from where the previous one landed.
        let deep = crafted(&[
            ("p/q/up", Symlink, Some("../.."), 0o777, b""),
            ("p/q/r", Symlink, Some("up/../x"), 0o777, b""),
        ]);
        assert!(matches!(
            unpack(&deep, 1 << 20),
            Err(BundleError::LinkOutside { .. })
        ));
        // Loops are refused rather than followed for ever.
        let looping = crafted(&[
            ("a", Symlink, Some("b"), 0o777, b""),
            ("b", Symlink, Some("a/x"), 0o777, b""),
        ]);
        assert!(matches!(
            unpack(&looping, 1 << 20),
            Err(BundleError::LinkLoop(_))
        ));
        // Links to links that stay inside are fine, and come after every file.
        let fine = crafted(&[
            ("lib/v1/x.py", Regular, None, 0o644, b"x"),
            ("lib/current", Symlink, Some("v1"), 0o777, b""),
            ("x.py", Symlink, Some("lib/current/x.py"), 0o777, b""),
            ("y.py", Regular, None, 0o644, b"y"),
        ]);
        let out = unpack(&fine, 1 << 20).unwrap();
        let order: Vec<&str> = out.iter().map(|f| f.path.as_str()).collect();
        assert_eq!(order, ["lib/v1/x.py", "y.py", "lib/current", "x.py"]);
    }

    #[test]
    fn hard_links_and_replacing_entries_are_refused() {
        for (what, bytes) in [
            (
                "hard link to a file",
                crafted(&[
                    ("f", Regular, None, 0o644, b"x"),
                    ("h", Link, Some("f"), 0o644, b""),
                ]),
            ),
            (
                "hard link to a link",
                crafted(&[
                    ("l", Symlink, Some("."), 0o777, b""),
                    ("h", Link, Some("l"), 0o644, b""),
                ]),
            ),
        ] {
            assert_eq!(
                unpack(&bytes, 1 << 20),
                Err(BundleError::HardLink("h".into())),
                "{what}"
            );
        }
        for (what, bytes, path) in [
            (
                "file twice",
                crafted(&[
                    ("f", Regular, None, 0o644, b"x"),
                    ("f", Regular, None, 0o644, b"y"),
                ]),
                "f",
            ),
            (
                "link over a file",
                crafted(&[
                    ("f", Regular, None, 0o644, b"x"),
                    ("./f", Symlink, Some("g"), 0o777, b""),
                ]),
                "f",
            ),
            (
                "file over a link",
                crafted(&[
                    ("f", Symlink, Some("g"), 0o777, b""),
                    ("f", Regular, None, 0o644, b"x"),
                ]),
                "f",
            ),
            (
                "file over a folder",
                crafted(&[
                    ("d/x", Regular, None, 0o644, b"x"),
                    ("d", Regular, None, 0o644, b"y"),
                ]),
                "d",
            ),
        ] {
            assert_eq!(
                unpack(&bytes, 1 << 20),
                Err(BundleError::Duplicate(path.into())),
                "{what}"
            );
        }
        let under_file = crafted(&[
            ("f", Regular, None, 0o644, b"x"),
            ("f/x", Regular, None, 0o644, b"y"),
        ]);
        assert!(matches!(
            unpack(&under_file, 1 << 20),
            Err(BundleError::UnderFile { .. })
        ));
    }

    #[test]
    fn setuid_and_setgid_entries_are_refused_by_name() {
        for (path, kind, link, mode) in [
            ("run.sh", Regular, None, 0o4755),
            ("run.sh", Regular, None, 0o2755),
            ("bin/", Directory, None, 0o2755),
            ("ln", Symlink, Some("run.sh"), 0o4777),
        ] {
            let bytes = crafted(&[(path, kind, link, mode, b"")]);
            let err = unpack(&bytes, 1 << 20).unwrap_err();
            assert_eq!(err, BundleError::SetId(path.into()), "{mode:o}");
            assert!(err.to_string().contains(path) && err.to_string().contains("setuid"));
        }
        // The sticky bit and ordinary modes are fine.
        assert!(unpack(&crafted(&[("ok", Regular, None, 0o1755, b"x")]), 1 << 20).is_ok());
    }

    #[test]
    fn pack_follows_the_same_rules() {
        let link = |path: &str, target: &str| BundleFile {
            path: path.into(),
            kind: FileKind::Symlink {
                target: target.into(),
            },
        };
        assert!(matches!(
            pack(vec![link("a/b", ".."), file("a/b/c", "x")]),
            Err(BundleError::UnderLink { .. })
        ));
        assert!(matches!(
            pack(vec![link("x/b", ".."), link("a", "x/b/..")]),
            Err(BundleError::LinkOutside { .. })
        ));
        assert!(matches!(
            pack(vec![file("f", "x"), file("f/g", "y")]),
            Err(BundleError::UnderFile { .. })
        ));
        assert!(matches!(
            pack(vec![file("./f", "x")]),
            Err(BundleError::UnsafePath(_))
        ));
        assert_eq!(
            pack(vec![file("f", "x"), link("f", "g")]),
            Err(BundleError::Duplicate("f".into()))
        );
    }

    #[test]
    fn a_bomb_is_refused_from_its_header_or_while_streaming() {
        // One header claiming 4 GiB: refused before anything is inflated.
        let mut h = tar::Header::new_gnu();
        h.set_entry_type(Regular);
        h.set_size(4 << 30);
        h.set_mode(0o644);
        h.set_path("big").unwrap();
        h.set_cksum();
        let bytes = zstd::bulk::compress(h.as_bytes(), 1).unwrap();
        assert_eq!(unpack(&bytes, 1 << 20), Err(BundleError::TooLarge(1 << 20)));
        // A tar stream longer than the cap (many small files): cut off while streaming.
        let many: Vec<BundleFile> = (0..400)
            .map(|i| file(&format!("f{i:03}"), "tiny"))
            .collect();
        assert_eq!(
            unpack(&pack(many).unwrap(), 64 << 10),
            Err(BundleError::TooLarge(64 << 10))
        );
        // Overlong GNU names are not read into memory.
        let mut b = tar::Builder::new(Vec::new());
        let mut h = tar::Header::new_gnu();
        h.set_entry_type(tar::EntryType::GNULongName);
        h.set_size(1 << 20);
        h.as_old_mut().name[..13].copy_from_slice(b"././@LongLink");
        h.set_cksum();
        b.append(&h, &vec![b'a'; 1 << 20][..]).unwrap();
        let long = zstd::bulk::compress(&b.into_inner().unwrap(), 1).unwrap();
        assert!(matches!(
            unpack(&long, 4 << 20),
            Err(BundleError::Corrupt(_))
        ));
    }

    #[test]
    fn a_sink_error_is_the_sinks_and_a_bad_stream_is_the_archives() {
        struct Refuse;
        impl Sink for Refuse {
            type Error = String;
            fn file(&mut self, p: &str, _: bool, _: u64, d: &mut dyn Read) -> Result<(), String> {
                let mut v = Vec::new();
                d.read_to_end(&mut v).map_err(|e| e.to_string())?;
                Err(format!("disk full at {p}"))
            }
            fn symlink(&mut self, _: &str, _: &str) -> Result<(), String> {
                Ok(())
            }
        }
        let good = pack(vec![file("a", "x")]).unwrap();
        assert!(matches!(
            unpack_into(good.as_slice(), 1 << 20, &mut Refuse),
            Err(UnpackError::Sink(m)) if m == "disk full at a"
        ));
        let big = pack(vec![file("zeros", &"0".repeat(1 << 20))]).unwrap();
        // Cut short: the reader's problem is the archive's, not the sink's.
        assert!(matches!(
            unpack_into(&big[..big.len() / 2], 4 << 20, &mut Refuse),
            Err(UnpackError::Bundle(BundleError::Corrupt(_)))
        ));
    }

    #[test]
    fn a_packed_bundle_says_how_large_it_inflates() {
        let bytes = pack(vec![file("zeros", &"0".repeat(100_000))]).unwrap();
        let size = inflated_size(&bytes[..18]).unwrap();
        assert!((100_000..110_000).contains(&size), "{size}");
        assert_eq!(inflated_size(b"not zstd"), None);
    }

    #[test]
    fn what_the_unpacker_remembers_is_bounded() {
        // Long, deep, distinct paths: refused once their bytes pass the cap.
        let mut tree = Tree::default();
        let segment = "d".repeat(200);
        let mut refused = None;
        for i in 0..10_000 {
            let path = format!("{i}/{}", vec![segment.as_str(); 19].join("/"));
            if let Err(e) = tree.add(&path, Node::File) {
                refused = Some((i, e));
                break;
            }
        }
        let (at, err) = refused.expect("refused");
        assert_eq!(err, BundleError::TooManyEntries);
        assert!(at < 10_000 && tree.bytes <= MAX_PATH_BYTES, "{at}");
        // A link target that walks too far is refused as a loop, not followed.
        let mut tree = Tree::default();
        let far = vec!["x/.."; 3000].join("/");
        tree.add("l", Node::Link(far)).unwrap();
        assert_eq!(tree.check_links(), Err(BundleError::LinkLoop("l".into())));
    }
}

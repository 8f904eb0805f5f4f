//! Where a revision comes from: the git commit, branch, author and whether the tree is dirty.

use std::path::Path;

use edgefn_schema::api::Provenance;

/// Reads the provenance of the project at `root`. `None` when it is not in a git repository.
pub(crate) fn read(root: &Path) -> Option<Provenance> {
    let repo = git2::Repository::discover(root).ok()?;
    let mut p = Provenance {
        tool: Some(format!("edgefn {}", env!("CARGO_PKG_VERSION"))),
        ..Provenance::default()
    };
    if let Ok(head) = repo.head() {
        if head.is_branch() {
            p.branch = head.shorthand().ok().map(str::to_owned);
        }
        if let Ok(commit) = head.peel_to_commit() {
            p.commit = Some(commit.id().to_string());
            let a = commit.author();
            p.author = Some(format!(
                "{} <{}>",
                a.name().unwrap_or("?"),
                a.email().unwrap_or("?")
            ));
            p.message = commit.summary().ok().flatten().map(str::to_owned);
        }
    }
    // Dirty: any change (staged, unstaged or untracked) under the project folder.
    let workdir = repo.workdir()?;
    let canonical_root = std::fs::canonicalize(root).ok()?;
    let canonical_workdir = std::fs::canonicalize(workdir).ok()?;
    let rel = canonical_root.strip_prefix(&canonical_workdir).ok()?;
    let mut opts = git2::StatusOptions::new();
    opts.include_untracked(true)
        .recurse_untracked_dirs(true)
        .include_ignored(false);
    let spec = rel.to_string_lossy().into_owned();
    if !spec.is_empty() {
        opts.pathspec(spec);
    }
    p.dirty = repo
        .statuses(Some(&mut opts))
        .map(|s| !s.is_empty())
        .unwrap_or(true)
        || p.commit.is_none();
    Some(p)
}

/// Makes git ignore `file` (which may not exist yet) when it lies in a git work tree and git does
/// not ignore it already: appends its path to the `.gitignore` of its folder's nearest project
/// (the folder holding `edgefn.yaml`), else of the work tree's root. Returns the `.gitignore`
/// written, `None` when there was nothing to do.
///
/// # Errors
///
/// Reading or writing the `.gitignore`.
pub(crate) fn ignore(file: &Path) -> std::io::Result<Option<std::path::PathBuf>> {
    let dir = match file.parent().filter(|d| !d.as_os_str().is_empty()) {
        Some(d) => d.to_path_buf(),
        None => std::path::PathBuf::from("."),
    };
    let Ok(dir) = std::fs::canonicalize(&dir) else {
        return Ok(None);
    };
    let Ok(repo) = git2::Repository::discover(&dir) else {
        return Ok(None);
    };
    let Some(workdir) = repo.workdir().and_then(|w| std::fs::canonicalize(w).ok()) else {
        return Ok(None);
    };
    let Some(name) = file.file_name() else {
        return Ok(None);
    };
    let full = dir.join(name);
    let Ok(in_repo) = full.strip_prefix(&workdir) else {
        return Ok(None);
    };
    if repo.is_path_ignored(in_repo).unwrap_or(false) {
        return Ok(None);
    }
    // The nearest folder with a manifest, between the file and the work tree's root.
    let base = dir
        .ancestors()
        .take_while(|d| d.starts_with(&workdir))
        .find(|d| d.join("edgefn.yaml").is_file())
        .unwrap_or(&workdir)
        .to_path_buf();
    let rel = full
        .strip_prefix(&base)
        .map_or_else(|_| in_repo.to_path_buf(), Path::to_path_buf);
    let gitignore = base.join(".gitignore");
    let mut text = std::fs::read_to_string(&gitignore).unwrap_or_default();
    if !text.is_empty() && !text.ends_with('\n') {
        text.push('\n');
    }
    text.push_str(&format!(
        "# an agent configuration: it holds a device token\n/{}\n",
        rel.to_string_lossy()
    ));
    edgefn_os::file::write_atomic_keeping_mode(
        &gitignore,
        text.as_bytes(),
        edgefn_os::file::PUBLIC,
    )?;
    Ok(Some(gitignore))
}

/// The files under the project folder `root` that make its work tree dirty (changed, staged,
/// untracked; not ignored), relative to the repository, sorted. Empty outside git.
pub(crate) fn dirty_files(root: &Path) -> Vec<String> {
    let Ok(repo) = git2::Repository::discover(root) else {
        return Vec::new();
    };
    let (Some(workdir), Ok(canonical_root)) = (
        repo.workdir().and_then(|w| std::fs::canonicalize(w).ok()),
        std::fs::canonicalize(root),
    ) else {
        return Vec::new();
    };
    let mut opts = git2::StatusOptions::new();
    opts.include_untracked(true)
        .recurse_untracked_dirs(true)
        .include_ignored(false);
    if let Ok(rel) = canonical_root.strip_prefix(&workdir) {
        let spec = rel.to_string_lossy().into_owned();
        if !spec.is_empty() {
            opts.pathspec(spec);
        }
    }
    let mut files: Vec<String> = repo
        .statuses(Some(&mut opts))
        .map(|s| {
            s.iter()
                .filter_map(|e| e.path().ok().map(str::to_owned))
                .collect()
        })
        .unwrap_or_default();
    files.sort();
    files
}

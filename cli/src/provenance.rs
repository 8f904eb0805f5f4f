//! Where a revision comes from: the git commit, branch, author and whether the tree is dirty.

use std::path::Path;

use edgefn_schema::api::Provenance;

/// Reads the provenance of the project at `root`. `None` when it is not in a git repository.
pub fn read(root: &Path) -> Option<Provenance> {
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

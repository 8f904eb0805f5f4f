//! Drift between git and the control plane: the latest revision was not made from git (today:
//! `edgefn rollback`), so the control plane runs something git's latest commit does not
//! describe, and the next `edgefn apply` from git could undo it without a word.
//!
//! The rule `apply` follows (and `status` and `diff` explain): after a rollback away from
//! revision P (made from commit B), applying a commit that does not come after B — B itself, as
//! when CI re-runs, or one of its ancestors — would undo the rollback, so `apply` refuses it
//! unless `--force`; a commit that comes after B (a fix, a `git revert B`) replaces the rollback,
//! and `apply` says so. When git cannot tell (B is unknown here, as in a shallow clone), `apply`
//! goes on and says that it could not check.

use std::path::Path;

use edgefn_schema::api::RevisionSummary;

use crate::client::Client;
use crate::error::CliError;

/// The control plane's latest revision, when git did not make it.
#[derive(Debug, Clone)]
pub(crate) struct Drift {
    /// The latest revision (a rollback).
    pub(crate) latest: RevisionSummary,
    /// The revision it rolled back to.
    pub(crate) to: u64,
    /// The revision it replaced: what was rolled back.
    pub(crate) rolled_back: Option<RevisionSummary>,
}

/// What applying a commit would do to the drift.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Verdict {
    /// The commit does not come after the rolled-back one: applying it undoes the rollback.
    Undoes(String),
    /// The commit comes after the rolled-back one: applying it replaces the rollback.
    Replaces(String),
    /// Git cannot tell; applying goes on.
    Unknown(String),
}

/// Reads the latest revisions; `Some` when the latest one is a rollback.
pub(crate) fn detect(client: &Client) -> Result<Option<Drift>, CliError> {
    let recent: Vec<RevisionSummary> = client.get("/v1/revisions?limit=2")?;
    let Some(latest) = recent.first().cloned() else {
        return Ok(None);
    };
    let Some(to) = latest.rollback_of else {
        return Ok(None);
    };
    let rolled_back = recent.into_iter().find(|r| r.number == latest.parent);
    Ok(Some(Drift {
        latest,
        to,
        rolled_back,
    }))
}

fn short(commit: &str) -> &str {
    &commit[..commit.len().min(12)]
}

impl Drift {
    /// One line saying what the control plane holds, e.g. `revision 5 is a rollback (from
    /// revision 4 to revision 3), made with edgefn rollback, not from git`.
    pub(crate) fn describe(&self) -> String {
        format!(
            "revision {} is a rollback from revision {} to revision {}, made with `edgefn rollback`, not from git",
            self.latest.number, self.latest.parent, self.to
        )
    }

    /// What applying `commit` (in the repository holding `root`) would do.
    pub(crate) fn verdict(&self, root: &Path, commit: Option<&str>) -> Verdict {
        let bad = self
            .rolled_back
            .as_ref()
            .and_then(|r| r.provenance.commit.clone());
        let (Some(commit), Some(bad)) = (commit, bad) else {
            return Verdict::Unknown(
                "the rolled-back revision or this checkout has no git commit to compare".into(),
            );
        };
        let rolled = self.latest.parent;
        if commit == bad {
            return Verdict::Undoes(format!(
                "this checkout is commit {}, the one revision {rolled} was made from and that was rolled back",
                short(commit)
            ));
        }
        let related = (|| {
            let repo = git2::Repository::discover(root).ok()?;
            let (c, b) = (
                git2::Oid::from_str(commit).ok()?,
                git2::Oid::from_str(&bad).ok()?,
            );
            repo.find_commit(b).ok()?;
            Some((
                repo.graph_descendant_of(c, b).ok()?,
                repo.graph_descendant_of(b, c).ok()?,
            ))
        })();
        match related {
            Some((true, _)) => Verdict::Replaces(format!(
                "commit {} comes after commit {} (revision {rolled}, rolled back)",
                short(commit),
                short(&bad)
            )),
            Some((false, true)) => Verdict::Undoes(format!(
                "commit {} comes before commit {} (revision {rolled}, rolled back)",
                short(commit),
                short(&bad)
            )),
            Some((false, false)) => Verdict::Unknown(format!(
                "commit {} is not on the same line of history as commit {} (revision {rolled}, rolled back)",
                short(commit),
                short(&bad)
            )),
            None => Verdict::Unknown(format!(
                "commit {} (revision {rolled}, rolled back) is not in this repository (a shallow clone?)",
                short(&bad)
            )),
        }
    }
}

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

/// The control plane's latest revision when it was made outside git (today: a binding made in
/// the web console, `provenance.tool: console`, or through `POST /v1/bindings`): no commit
/// describes it, so git does not have its change. Applying a checkout whose manifest lacks that
/// change would undo it: `apply` says what and refuses without `--force`; `status` and `diff`
/// say it.
#[derive(Debug, Clone)]
pub(crate) struct Outside {
    /// The latest revision.
    pub(crate) latest: RevisionSummary,
    /// Its manifest, when it still loads.
    pub(crate) manifest: Option<edgefn_schema::Manifest>,
}

/// Reads the latest revision; `Some` when it has no git commit and is not a rollback (which
/// [`detect`] covers) nor the first revision of a project applied outside git with
/// `--allow-dirty` by `edgefn` itself.
pub(crate) fn detect_outside_git(client: &Client) -> Result<Option<Outside>, CliError> {
    let recent: Vec<RevisionSummary> = client.get("/v1/revisions?limit=1")?;
    let Some(latest) = recent.into_iter().next() else {
        return Ok(None);
    };
    let p = &latest.provenance;
    let by_edgefn = p.tool.as_deref().is_some_and(|t| t.starts_with("edgefn"));
    if latest.rollback_of.is_some() || p.commit.is_some() || by_edgefn {
        return Ok(None);
    }
    let rev: edgefn_schema::api::Revision =
        client.get(&format!("/v1/revisions/{}", latest.number))?;
    let manifest = edgefn_schema::load(
        &edgefn_schema::Source::new("edgefn.yaml", rev.manifest.as_str()),
        None,
    )
    .ok()
    .map(|l| l.manifest);
    Ok(Some(Outside { latest, manifest }))
}

fn selector(s: &edgefn_schema::DeviceSelector) -> String {
    match s {
        edgefn_schema::DeviceSelector::Names(n) => n.join(", "),
        edgefn_schema::DeviceSelector::Labels(l) => l
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect::<Vec<_>>()
            .join(", "),
    }
}

impl Outside {
    /// One line: `revision 4 was made in the console by admin token `initial` (…): "bind f to
    /// gw-02", not from git`.
    pub(crate) fn describe(&self) -> String {
        let p = &self.latest.provenance;
        let place = match p.tool.as_deref() {
            Some("console") => "in the web console".to_owned(),
            Some("api") => "through the API".to_owned(),
            Some(t) => format!("by {t}"),
            None => "without provenance".to_owned(),
        };
        format!(
            "revision {} was made {place}{}{}, not from git",
            self.latest.number,
            p.author
                .as_deref()
                .map(|a| format!(" by {a}"))
                .unwrap_or_default(),
            p.message
                .as_deref()
                .map(|m| format!(" ({m:?})"))
                .unwrap_or_default()
        )
    }

    /// What applying `local` would undo: the bindings, functions, devices and routes of the
    /// latest revision that `local` lacks or has otherwise, one phrase each. Empty when `local`
    /// holds all of them (git has the change).
    pub(crate) fn undone_by(&self, local: &edgefn_schema::Manifest) -> Vec<String> {
        let Some(remote) = &self.manifest else {
            return vec!["a manifest this edgefn cannot read".into()];
        };
        let mut out = Vec::new();
        for b in &remote.bindings {
            let name = b.effective_name();
            match local.bindings.iter().find(|x| x.effective_name() == name) {
                None => out.push(format!(
                    "binding `{name}` ({} on {})",
                    b.function,
                    selector(&b.devices)
                )),
                Some(x) if x != b => out.push(format!("binding `{name}`'s settings")),
                Some(_) => {}
            }
        }
        for (name, f) in &remote.functions {
            match local.functions.get(name) {
                None => out.push(format!("function `{name}`")),
                Some(x) if x != f => out.push(format!("function `{name}`'s settings")),
                Some(_) => {}
            }
        }
        for (name, d) in &remote.devices {
            match local.devices.get(name) {
                None => out.push(format!("device `{name}`")),
                Some(x) if x != d => out.push(format!("device `{name}`'s labels or values")),
                Some(_) => {}
            }
        }
        for r in &remote.routes {
            if !local.routes.contains(r) {
                let to = match r.to {
                    edgefn_schema::RouteTarget::Cloud => "cloud",
                    edgefn_schema::RouteTarget::Local => "local",
                };
                out.push(format!("route {} → {to}", r.from));
            }
        }
        out
    }
}

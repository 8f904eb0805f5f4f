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

use std::collections::BTreeMap;
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
    let recent: Vec<RevisionSummary> = client.get("/v1/revisions?limit=20")?;
    let Some(latest) = recent.first().cloned() else {
        return Ok(None);
    };
    let Some(to) = latest.rollback_of else {
        return Ok(None);
    };
    // A revision the control plane made itself (a new secret version: the same manifest as its
    // parent) has no commit; what was rolled back is then the commit of the nearest revision
    // before it that has one, so re-applying that commit is seen to undo the rollback.
    let by_cloud = |r: &RevisionSummary| {
        r.provenance.commit.is_none()
            && r.rollback_of.is_none()
            && r.provenance
                .tool
                .as_deref()
                .is_some_and(|t| t.starts_with("edgefn-cloud"))
    };
    let mut rolled_back = recent.iter().find(|r| r.number == latest.parent).cloned();
    if let Some(r) = rolled_back.as_mut().filter(|r| by_cloud(r)) {
        let mut at = r.parent;
        while let Some(before) = recent.iter().find(|x| x.number == at) {
            if before.provenance.commit.is_some() {
                r.provenance.commit = before.provenance.commit.clone();
                break;
            }
            if !by_cloud(before) {
                break;
            }
            at = before.parent;
        }
    }
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
    /// The manifest of the revision it was made from (`None`: none, or it no longer loads),
    /// so that only what the change itself did counts as undone.
    pub(crate) parent: Option<edgefn_schema::Manifest>,
}

/// Reads the latest revision; `Some` when the control plane made it as an edit outside git (a
/// binding added in the web console, `provenance.tool: console`, or through `POST
/// /v1/bindings`, `api`) and no commit describes it. Revisions `edgefn` submitted (with or
/// without git), rollbacks (which [`detect`] covers) and revisions posted by other programs
/// without that mark are not such edits.
pub(crate) fn detect_outside_git(client: &Client) -> Result<Option<Outside>, CliError> {
    let recent: Vec<RevisionSummary> = client.get("/v1/revisions?limit=1")?;
    let Some(latest) = recent.into_iter().next() else {
        return Ok(None);
    };
    let p = &latest.provenance;
    let edited = matches!(p.tool.as_deref(), Some("console" | "api"));
    if !edited || latest.rollback_of.is_some() || p.commit.is_some() {
        return Ok(None);
    }
    let manifest_of = |number: u64| -> Result<Option<edgefn_schema::Manifest>, CliError> {
        let rev: edgefn_schema::api::Revision = client.get(&format!("/v1/revisions/{number}"))?;
        Ok(edgefn_schema::load(
            &edgefn_schema::Source::new("edgefn.yaml", rev.manifest.as_str()),
            None,
        )
        .ok()
        .map(|l| l.manifest))
    };
    let manifest = manifest_of(latest.number)?;
    let parent = match latest.parent {
        0 => None,
        n => manifest_of(n)?,
    };
    Ok(Some(Outside {
        latest,
        manifest,
        parent,
    }))
}

/// What an edit outside git changed (from `parent` to `remote`, by key) that `local` does not
/// have as the edit left it: one phrase per item, from `say(key, what the edit made it, whether
/// it existed before)`.
fn undone<V: PartialEq>(
    parent: &BTreeMap<String, &V>,
    remote: &BTreeMap<String, &V>,
    local: &BTreeMap<String, &V>,
    mut say: impl FnMut(&str, Option<&V>, bool) -> String,
    out: &mut Vec<String>,
) {
    let keys: std::collections::BTreeSet<&String> = parent.keys().chain(remote.keys()).collect();
    for key in keys {
        let (before, after) = (parent.get(key), remote.get(key));
        if before == after || local.get(key) == after {
            continue;
        }
        out.push(say(key, after.copied(), before.is_some()));
    }
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

    /// What applying `local` would undo: what the edit changed from the revision it was made
    /// from — bindings, functions, devices and routes added, changed or removed — that `local`
    /// lacks or has otherwise, one phrase each. Empty when `local` has the edit (or leaves
    /// alone everything it touched), so a checkout that moved on elsewhere is not refused.
    pub(crate) fn undone_by(&self, local: &edgefn_schema::Manifest) -> Vec<String> {
        let Some(remote) = &self.manifest else {
            return vec!["a manifest this edgefn cannot read".into()];
        };
        use edgefn_schema::Manifest;
        fn bindings(m: Option<&Manifest>) -> BTreeMap<String, &edgefn_schema::Binding> {
            m.map(|m| {
                m.bindings
                    .iter()
                    .map(|b| (b.effective_name().to_owned(), b))
                    .collect()
            })
            .unwrap_or_default()
        }
        fn functions(m: Option<&Manifest>) -> BTreeMap<String, &edgefn_schema::Function> {
            m.map(|m| m.functions.iter().map(|(k, v)| (k.clone(), v)).collect())
                .unwrap_or_default()
        }
        fn devices(m: Option<&Manifest>) -> BTreeMap<String, &edgefn_schema::Device> {
            m.map(|m| m.devices.iter().map(|(k, v)| (k.clone(), v)).collect())
                .unwrap_or_default()
        }
        fn routes(m: Option<&Manifest>) -> BTreeMap<String, &edgefn_schema::Route> {
            let name = |r: &edgefn_schema::Route| {
                let to = match r.to {
                    edgefn_schema::RouteTarget::Cloud => "cloud",
                    edgefn_schema::RouteTarget::Local => "local",
                };
                format!("route {} → {to}", r.from)
            };
            m.map(|m| m.routes.iter().map(|r| (name(r), r)).collect())
                .unwrap_or_default()
        }
        let mut out = Vec::new();
        let parent = self.parent.as_ref();
        undone(
            &bindings(parent),
            &bindings(Some(remote)),
            &bindings(Some(local)),
            |name, after, existed| match (after, existed) {
                (Some(b), false) => format!(
                    "binding `{name}` ({} on {})",
                    b.function,
                    selector(&b.devices)
                ),
                (Some(_), true) => format!("binding `{name}`'s settings"),
                (None, _) => format!("the removal of binding `{name}`"),
            },
            &mut out,
        );
        undone(
            &functions(parent),
            &functions(Some(remote)),
            &functions(Some(local)),
            |name, after, existed| match (after, existed) {
                (Some(_), false) => format!("function `{name}`"),
                (Some(_), true) => format!("function `{name}`'s settings"),
                (None, _) => format!("the removal of function `{name}`"),
            },
            &mut out,
        );
        undone(
            &devices(parent),
            &devices(Some(remote)),
            &devices(Some(local)),
            |name, after, existed| match (after, existed) {
                (Some(_), false) => format!("device `{name}`"),
                (Some(_), true) => format!("device `{name}`'s labels or values"),
                (None, _) => format!("the removal of device `{name}`"),
            },
            &mut out,
        );
        undone(
            &routes(parent),
            &routes(Some(remote)),
            &routes(Some(local)),
            |name, after, _| match after {
                Some(_) => name.to_owned(),
                None => format!("the removal of {name}"),
            },
            &mut out,
        );
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn manifest(text: &str) -> edgefn_schema::Manifest {
        edgefn_schema::load(&edgefn_schema::Source::new("edgefn.yaml", text), None)
            .unwrap_or_else(|_| panic!("valid: {text}"))
            .manifest
    }

    const BASE: &str = "apiVersion: edgefn/v1\nproject: p\nfunctions:\n  a: { path: fa, runtime: python3, handler: main.handle, env: { V: \"1\" } }\n  b: { path: fb, runtime: python3, handler: main.handle }\ndevices:\n  d1: {}\n  d2: {}\nbindings:\n  - function: a\n    devices: { names: [d1] }\n    triggers: [ { topic: \"x\" } ]\n";
    const BIND_B: &str = "  - function: b\n    name: b-1\n    devices: { names: [d2] }\n    triggers: [ { topic: \"y\" } ]\n";

    fn outside(parent: &str, edited: &str) -> Outside {
        Outside {
            latest: RevisionSummary {
                number: 2,
                parent: 1,
                created_ms: 0,
                provenance: edgefn_schema::api::Provenance {
                    tool: Some("console".into()),
                    ..Default::default()
                },
                rollback_of: None,
            },
            manifest: Some(manifest(edited)),
            parent: Some(manifest(parent)),
        }
    }

    /// Only what the edit itself changed counts: a checkout that lacks the console's binding
    /// undoes it; one that has it, or changed something else besides, does not; one that
    /// changed the very binding the edit added undoes it.
    #[test]
    fn only_the_edits_own_changes_are_undone() {
        let edited = format!("{BASE}{BIND_B}");
        let o = outside(BASE, &edited);
        assert_eq!(
            o.undone_by(&manifest(BASE)),
            ["binding `b-1` (b on d2)"],
            "a checkout without the edit"
        );
        assert!(o.undone_by(&manifest(&edited)).is_empty(), "git has it");
        let moved_on = edited.replace("V: \"1\"", "V: \"2\"");
        assert!(
            o.undone_by(&manifest(&moved_on)).is_empty(),
            "the checkout changed function a, which the edit did not touch"
        );
        let other = format!("{BASE}{}", BIND_B.replace("topic: \"y\"", "topic: \"z\""));
        assert_eq!(o.undone_by(&manifest(&other)), ["binding `b-1` (b on d2)"]);
        // An edit that removed a binding: a checkout that still has it undoes the removal.
        let removal = outside(&edited, BASE);
        assert_eq!(
            removal.undone_by(&manifest(&edited)),
            ["the removal of binding `b-1`"]
        );
    }
}

//! `edgefn diff`: per device, the functions a new apply would add, change or remove.
//! Exit 0 when nothing changes, 2 when something does, 1 on error (like `terraform plan
//! -detailed-exitcode`).

use std::collections::{BTreeMap, BTreeSet};
use std::io::Write;

use edgefn_schema::api::Revision;
use edgefn_schema::{DesiredState, Manifest, Source};

use crate::args::DiffArgs;
use crate::client::Client;
use crate::error::{CliResult, Outcome};
use crate::package;
use crate::project::{self, Project};

/// What changes on one device.
#[derive(Debug, Default, PartialEq, Eq)]
pub(crate) struct DeviceDiff {
    /// Functions newly run there.
    pub(crate) added: Vec<String>,
    /// Functions whose code, runtime, handler or binding settings change, each with what
    /// changes.
    pub(crate) changed: Vec<FunctionChange>,
    /// Functions no longer run there.
    pub(crate) removed: Vec<String>,
    /// Routes added (`+ ...`) and removed (`- ...`), as `FILTER → TARGET`.
    pub(crate) routes: Vec<String>,
}

/// One function that changes on a device, and how.
#[derive(Debug, Default, PartialEq, Eq)]
pub(crate) struct FunctionChange {
    /// Function name.
    pub(crate) function: String,
    /// One line per difference: `bundle OLD → NEW` (short digests), `model NAME OLD → NEW`,
    /// `runtime: "python3" → "node"`, `binding NAME: env.KEY: "1" → "2"`, `+ binding NAME`, `- binding NAME`.
    pub(crate) details: Vec<String>,
}

impl DeviceDiff {
    fn is_empty(&self) -> bool {
        self.added.is_empty()
            && self.changed.is_empty()
            && self.removed.is_empty()
            && self.routes.is_empty()
    }
}

fn state(
    m: Option<&Manifest>,
    device: &str,
    bundles: &BTreeMap<String, String>,
    layers: &edgefn_schema::Layers,
    models: &edgefn_schema::Models,
) -> Option<DesiredState> {
    m.and_then(|m| edgefn_schema::resolve_with_models(m, device, bundles, layers, models))
}

/// `value`'s leaves by dotted path (`env.THRESHOLD`); lists and scalars are leaves, as JSON.
fn leaves(prefix: &str, value: &serde_json::Value, out: &mut BTreeMap<String, String>) {
    match value {
        serde_json::Value::Object(map) => {
            for (k, v) in map {
                let path = if prefix.is_empty() {
                    k.clone()
                } else {
                    format!("{prefix}.{k}")
                };
                leaves(&path, v, out);
            }
        }
        other => {
            out.insert(prefix.to_owned(), other.to_string());
        }
    }
}

/// The keys whose values differ between two serialisable values, as `key: OLD → NEW` (an absent
/// side shows as `(none)`).
fn key_changes<T: serde::Serialize>(old: &T, new: &T, skip: &[&str]) -> Vec<String> {
    let flat = |v: &T| {
        let mut out = BTreeMap::new();
        leaves("", &serde_json::to_value(v).unwrap_or_default(), &mut out);
        out
    };
    let (a, b) = (flat(old), flat(new));
    let keys: BTreeSet<&String> = a.keys().chain(b.keys()).collect();
    keys.into_iter()
        .filter(|k| !skip.contains(&k.as_str()) && a.get(*k) != b.get(*k))
        .map(|k| {
            let show = |v: Option<&String>| v.cloned().unwrap_or_else(|| "(none)".into());
            format!("{k}: {} → {}", show(a.get(k)), show(b.get(k)))
        })
        .collect()
}

fn short(digest: Option<&String>) -> String {
    digest.map_or("(none)".into(), |d| d.chars().take(12).collect())
}

fn route_line(r: &edgefn_schema::ResolvedRoute) -> String {
    let to = serde_json::to_value(r.to)
        .ok()
        .and_then(|v| v.as_str().map(str::to_owned))
        .unwrap_or_default();
    match r.to {
        edgefn_schema::RouteTarget::Local => format!("cloud:{} → {to}", r.filter),
        _ => format!("{} → {to}", r.filter),
    }
}

/// Compares what a device runs under two desired states.
pub(crate) fn compare(old: Option<&DesiredState>, new: Option<&DesiredState>) -> DeviceDiff {
    let fns = |s: Option<&DesiredState>| -> BTreeSet<String> {
        s.map(|s| s.functions.keys().cloned().collect())
            .unwrap_or_default()
    };
    let (before, after) = (fns(old), fns(new));
    let mut d = DeviceDiff {
        added: after.difference(&before).cloned().collect(),
        removed: before.difference(&after).cloned().collect(),
        ..DeviceDiff::default()
    };
    let (Some(old), Some(new)) = (old, new) else {
        return d;
    };
    for f in before.intersection(&after) {
        let mut details = Vec::new();
        let (fo, fnew) = (&old.functions[f], &new.functions[f]);
        if fo.bundle != fnew.bundle {
            details.push(format!(
                "bundle {} → {}",
                short(fo.bundle.as_ref()),
                short(fnew.bundle.as_ref())
            ));
        }
        details.extend(key_changes(fo, fnew, &["bundle"]));
        let bindings = |s: &DesiredState| -> BTreeMap<String, edgefn_schema::ResolvedBinding> {
            s.bindings
                .iter()
                .filter(|b| &b.function == f)
                .map(|b| (b.name.clone(), b.clone()))
                .collect()
        };
        let (bo, bn) = (bindings(old), bindings(new));
        for name in bo.keys().chain(bn.keys()).collect::<BTreeSet<_>>() {
            match (bo.get(name), bn.get(name)) {
                (Some(a), Some(b)) => details.extend(
                    key_changes(a, b, &[])
                        .into_iter()
                        .map(|c| format!("binding {name}: {c}")),
                ),
                (None, Some(_)) => details.push(format!("+ binding {name}")),
                (Some(_), None) => details.push(format!("- binding {name}")),
                (None, None) => {}
            }
        }
        // A model its bindings read changes: a new artifact moves to the device.
        let read: BTreeSet<&String> = bn.values().flat_map(|b| b.models.iter()).collect();
        for m in read {
            if let (Some(a), Some(b)) = (old.models.get(m), new.models.get(m)) {
                if a.digest != b.digest {
                    details.push(format!(
                        "model {m} {} → {}",
                        short(Some(&a.digest)),
                        short(Some(&b.digest))
                    ));
                }
            }
        }
        if !details.is_empty() {
            d.changed.push(FunctionChange {
                function: f.clone(),
                details,
            });
        }
    }
    let (ro, rn): (Vec<String>, Vec<String>) = (
        old.routes.iter().map(route_line).collect(),
        new.routes.iter().map(route_line).collect(),
    );
    d.routes.extend(
        rn.iter()
            .filter(|r| !ro.contains(r))
            .map(|r| format!("+ {r}")),
    );
    d.routes.extend(
        ro.iter()
            .filter(|r| !rn.contains(r))
            .map(|r| format!("- {r}")),
    );
    d
}

/// Runs `edgefn diff`.
pub(crate) fn run(args: &DiffArgs) -> CliResult {
    let project = Project::locate(args.file.as_deref())?;
    let Some(loaded) = project::load_valid(&project)? else {
        return Ok(Outcome::Failed);
    };
    let bundles: BTreeMap<String, String> = package::package_all(&project.root, &loaded.manifest)?
        .into_iter()
        .map(|b| (b.function, b.digest))
        .collect();
    let layers = crate::layers::digests(&crate::layers::build_all(
        &project.root,
        &loaded.manifest,
        None,
    )?);
    let models = crate::models::artifacts(&crate::models::prepare_all(
        &project.root,
        &loaded.manifest,
    )?);
    let client = Client::from_args(args.cloud.cloud.as_deref(), args.cloud.token.as_deref())?;
    let newest = crate::rollout::latest_revision(&client)?;
    // A revision whose rollout halted or was aborted never reached the fleet: the devices run
    // its baseline, and an apply makes a new revision. Compared with what they run.
    let stopped = client
        .get::<edgefn_schema::api::RolloutStatus>("/v1/rollout")
        .ok()
        .filter(|r| {
            r.revision == newest
                && matches!(
                    r.state,
                    edgefn_schema::api::RolloutState::Halted
                        | edgefn_schema::api::RolloutState::Aborted
                )
        });
    let latest = stopped.as_ref().map_or(newest, |r| r.baseline);
    let (old_manifest, old_bundles, old_layers, old_models) = if latest == 0 {
        (
            None,
            BTreeMap::new(),
            edgefn_schema::Layers::new(),
            edgefn_schema::Models::new(),
        )
    } else {
        let rev: Revision = client.get(&format!("/v1/revisions/{latest}"))?;
        let m = edgefn_schema::load(&Source::new("edgefn.yaml", rev.manifest.as_str()), None)
            .ok()
            .map(|l| l.manifest);
        (m, rev.bundles, rev.layers, rev.models)
    };
    let new = &loaded.manifest;
    let mut devices: BTreeSet<&String> = new.devices.keys().collect();
    if let Some(m) = &old_manifest {
        devices.extend(m.devices.keys());
    }
    let mut out = std::io::stdout().lock();
    let mut any = false;
    let _ = writeln!(out, "against revision {latest} on {}", client.base());
    if let Some(r) = &stopped {
        let _ = writeln!(
            out,
            "revision {newest}'s rollout {}: the devices run revision {latest}, its baseline; `edgefn apply` makes a new revision that rolls out afresh",
            if r.state == edgefn_schema::api::RolloutState::Aborted {
                "was aborted"
            } else {
                "halted"
            }
        );
    }
    let drift = crate::drift::detect(&client)?;
    for device in devices {
        let before = state(
            old_manifest.as_ref(),
            device,
            &old_bundles,
            &old_layers,
            &old_models,
        );
        let after = state(Some(new), device, &bundles, &layers, &models);
        let d = compare(before.as_ref(), after.as_ref());
        match (&before, &after) {
            (None, Some(_)) => {
                let _ = writeln!(out, "{device}: new device");
            }
            (Some(_), None) => {
                let _ = writeln!(out, "{device}: removed from the manifest");
            }
            _ => {}
        }
        if d.is_empty() {
            if before.is_some() && after.is_some() {
                let _ = writeln!(out, "{device}: no changes");
            }
            continue;
        }
        any = true;
        if before.is_some() && after.is_some() {
            let _ = writeln!(out, "{device}:");
        }
        for f in &d.added {
            let _ = writeln!(out, "  + {f}");
        }
        for c in &d.changed {
            let _ = writeln!(out, "  ~ {}", c.function);
            for line in &c.details {
                let _ = writeln!(out, "      {line}");
            }
        }
        for f in &d.removed {
            let _ = writeln!(out, "  - {f}");
        }
        for r in &d.routes {
            let _ = writeln!(out, "  {} route {}", &r[..1], &r[2..]);
        }
    }
    if let Some(o) = crate::drift::detect_outside_git(&client)? {
        let undone = o.undone_by(new);
        let verdict = if undone.is_empty() {
            "this checkout has its change: `edgefn apply` replaces it".to_owned()
        } else {
            format!(
                "`edgefn apply` would undo {}, so it refuses without --force",
                undone.join("; ")
            )
        };
        let _ = writeln!(out, "drift: {}\n  {verdict}", o.describe());
    }
    if let Some(drift) = drift {
        let commit = crate::provenance::read(&project.root).and_then(|p| p.commit);
        let verdict = match drift.verdict(&project.root, commit.as_deref()) {
            _ if !any => "this checkout describes the same: nothing to apply".to_owned(),
            crate::drift::Verdict::Undoes(why) => {
                format!("`edgefn apply` would undo it, so it refuses without --force: {why}")
            }
            crate::drift::Verdict::Replaces(why) => format!("`edgefn apply` replaces it: {why}"),
            crate::drift::Verdict::Unknown(why) => format!(
                "`edgefn apply` replaces it; whether that undoes the rollback is unknown: {why}"
            ),
        };
        let _ = writeln!(out, "drift: {}\n  {verdict}", drift.describe());
    }
    Ok(if any {
        Outcome::Changes
    } else {
        Outcome::Success
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use edgefn_schema::resolve::{ModelArtifact, ModelKind};

    #[test]
    fn a_model_change_alone_is_a_change_of_the_functions_that_read_it() {
        let text = "apiVersion: edgefn/v1\nproject: p\nmodels:\n  - { name: digits, path: m.onnx }\nfunctions:\n  f: { path: f, runtime: python3, handler: main.handle, models: [digits] }\n  g: { path: g, runtime: python3, handler: main.handle }\ndevices:\n  d: {}\nbindings:\n  - { function: f, devices: { names: [d] }, mode: continuous }\n  - { function: g, devices: { names: [d] }, mode: continuous }\n";
        let manifest = edgefn_schema::load(&edgefn_schema::Source::new("edgefn.yaml", text), None)
            .expect("loads")
            .manifest;
        let bundles = BTreeMap::from([
            ("f".to_owned(), "a".repeat(64)),
            ("g".to_owned(), "b".repeat(64)),
        ]);
        let models = |digest: &str| {
            BTreeMap::from([(
                "digits".to_owned(),
                ModelArtifact {
                    digest: digest.repeat(64),
                    kind: ModelKind::File,
                },
            )])
        };
        let state = |m| {
            edgefn_schema::resolve_with_models(&manifest, "d", &bundles, &Default::default(), &m)
        };
        let (old, new) = (state(models("1")), state(models("2")));
        let d = compare(old.as_ref(), new.as_ref());
        assert_eq!(
            d.changed,
            [FunctionChange {
                function: "f".into(),
                details: vec![format!(
                    "model digits {} → {}",
                    short(Some(&"1".repeat(64))),
                    short(Some(&"2".repeat(64)))
                )],
            }]
        );
        assert!(d.added.is_empty() && d.removed.is_empty() && d.routes.is_empty());
        // The same model: no change.
        let same = compare(old.as_ref(), state(models("1")).as_ref());
        assert!(same.changed.is_empty(), "{same:?}");
    }
}

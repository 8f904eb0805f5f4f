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
use crate::project::Project;

/// What changes on one device.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct DeviceDiff {
    /// Functions newly run there.
    pub added: Vec<String>,
    /// Functions whose code, runtime, handler or binding settings change.
    pub changed: Vec<String>,
    /// Functions no longer run there.
    pub removed: Vec<String>,
    /// Routes differ.
    pub routes: bool,
}

impl DeviceDiff {
    fn is_empty(&self) -> bool {
        self.added.is_empty() && self.changed.is_empty() && self.removed.is_empty() && !self.routes
    }
}

fn state(
    m: Option<&Manifest>,
    device: &str,
    bundles: &BTreeMap<String, String>,
) -> Option<DesiredState> {
    m.and_then(|m| edgefn_schema::resolve(m, device, bundles))
}

/// Compares what a device runs under two desired states.
pub fn compare(old: Option<&DesiredState>, new: Option<&DesiredState>) -> DeviceDiff {
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
    for f in before.intersection(&after) {
        let view = |s: Option<&DesiredState>| {
            s.map(|s| {
                (
                    s.functions.get(f).cloned(),
                    s.bindings
                        .iter()
                        .filter(|b| &b.function == f)
                        .cloned()
                        .collect::<Vec<_>>(),
                )
            })
        };
        if view(old) != view(new) {
            d.changed.push(f.clone());
        }
    }
    d.routes = old.map(|s| &s.routes) != new.map(|s| &s.routes)
        && !(old.is_none_or(|s| s.routes.is_empty()) && new.is_none_or(|s| s.routes.is_empty()));
    d
}

/// Runs `edgefn diff`.
pub fn run(args: &DiffArgs) -> CliResult {
    let project = Project::locate(args.file.as_deref())?;
    let Some(loaded) = super::load_valid(&project)? else {
        return Ok(Outcome::Failed);
    };
    let bundles: BTreeMap<String, String> = package::package_all(&project.root, &loaded.manifest)?
        .into_iter()
        .map(|b| (b.function, b.digest))
        .collect();
    let client = Client::from_args(args.cloud.cloud.as_deref(), args.cloud.token.as_deref())?;
    let latest = super::apply::latest_revision(&client)?;
    let (old_manifest, old_bundles) = if latest == 0 {
        (None, BTreeMap::new())
    } else {
        let rev: Revision = client.get(&format!("/v1/revisions/{latest}"))?;
        let m = edgefn_schema::load(&Source::new("edgefn.yaml", rev.manifest.as_str()), None)
            .ok()
            .map(|l| l.manifest);
        (m, rev.bundles)
    };
    let new = &loaded.manifest;
    let mut devices: BTreeSet<&String> = new.devices.keys().collect();
    if let Some(m) = &old_manifest {
        devices.extend(m.devices.keys());
    }
    let mut out = std::io::stdout().lock();
    let mut any = false;
    let _ = writeln!(out, "against revision {latest} on {}", client.base());
    for device in devices {
        let before = state(old_manifest.as_ref(), device, &old_bundles);
        let after = state(Some(new), device, &bundles);
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
        for f in &d.changed {
            let _ = writeln!(out, "  ~ {f}");
        }
        for f in &d.removed {
            let _ = writeln!(out, "  - {f}");
        }
        if d.routes {
            let _ = writeln!(out, "  ~ routes");
        }
    }
    Ok(if any {
        Outcome::Changes
    } else {
        Outcome::Success
    })
}

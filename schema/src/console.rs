//! Request and response bodies of the API operations the web console uses beyond the core API
//! of [`crate::api`]: binding a function with a click (`POST /v1/bindings`), the per-device
//! difference between two revisions (`GET /v1/revisions/{from}/diff/{to}`), which devices run
//! which function (`GET /v1/functions`), a bundle's files (`GET /v1/bundles/{digest}/files`),
//! and one page of the fleet (`GET /v1/status/page`). Like every operation, the CLI or any
//! client may call them with an admin token; the OpenAPI document describes them.
//!
//! [`diff_states`] is the pure comparison behind the revision diff: it names what changes
//! (functions, bindings, routes, env keys) and never carries a value, so an env value (or a
//! secret's reference) never appears in a diff.

use std::collections::{BTreeMap, BTreeSet};

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::api::DeviceStatus;
use crate::manifest::{DeviceSelector, Mode};
use crate::resolve::{DesiredState, ResolvedRoute};

/// `POST /v1/bindings`: run `function` on the devices `devices` selects, as a new revision made
/// from the latest one (its manifest with this binding added).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct NewBinding {
    /// A function of the latest revision's manifest.
    pub function: String,
    /// `{"names": [DEVICE, ...]}` or `{"labels": {KEY: VALUE, ...}}`.
    pub devices: DeviceSelector,
    /// The binding's name (default: the function's name, or `FUNCTION-N` when that is taken).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// `triggered` or `continuous` (default: the mode of the function's first binding, else
    /// `triggered`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mode: Option<Mode>,
    /// Topic filters of a triggered binding (default: those of the function's first binding,
    /// if it has one).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub triggers: Option<Vec<String>>,
    /// The revision this was chosen against; when the latest differs, 409 and nothing changes
    /// (as `POST /v1/revisions`). Default: the latest when the request is read.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expected_parent: Option<u64>,
}

/// The answer to `POST /v1/bindings`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct BindingCreated {
    /// The new revision.
    pub revision: u64,
    /// The binding's name.
    pub binding: String,
    /// The devices it selects under the new revision, sorted.
    pub devices: Vec<String>,
}

/// `GET /v1/revisions/{from}/diff/{to}`: what changes on each device from one revision's
/// desired states to the other's. Devices that do not change are only counted.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct RevisionDiff {
    /// The revision compared from.
    pub from: u64,
    /// The revision compared to.
    pub to: u64,
    /// The devices whose desired state changes, by name.
    pub devices: Vec<DeviceChange>,
    /// How many devices of either revision do not change.
    pub unchanged: u64,
}

/// What changes on one device between two desired states. Names only, never values.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct DeviceChange {
    /// The device.
    pub device: String,
    /// `added` (only the second revision has it), `removed` (only the first), or `changed`.
    pub change: String,
    /// Functions it newly runs.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub functions_added: Vec<String>,
    /// Functions it no longer runs.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub functions_removed: Vec<String>,
    /// Functions whose code or settings change, with what changes.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub functions_changed: Vec<NamedChange>,
    /// Bindings newly on it.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub bindings_added: Vec<String>,
    /// Bindings no longer on it.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub bindings_removed: Vec<String>,
    /// Bindings whose settings change, with the fields that change (`timeoutMs`, `env.KEY`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub bindings_changed: Vec<NamedChange>,
    /// Routes added, as `FILTER → TARGET` (`cloud:FILTER → local` for routes down).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub routes_added: Vec<String>,
    /// Routes removed.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub routes_removed: Vec<String>,
}

/// A function or binding that changes, and the names of what changes in it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct NamedChange {
    /// The function's or binding's name.
    pub name: String,
    /// The fields that change (`bundle`, `handler`, `env.THRESHOLD`): names, never values.
    pub fields: Vec<String>,
}

/// `value`'s leaves by dotted path; lists and scalars are leaves.
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

/// The dotted paths whose values differ between two values (the values are not returned).
fn changed_fields<T: Serialize>(old: &T, new: &T) -> Vec<String> {
    let flat = |v: &T| {
        let mut out = BTreeMap::new();
        leaves("", &serde_json::to_value(v).unwrap_or_default(), &mut out);
        out
    };
    let (a, b) = (flat(old), flat(new));
    let keys: BTreeSet<&String> = a.keys().chain(b.keys()).collect();
    keys.into_iter()
        .filter(|k| a.get(*k) != b.get(*k))
        .cloned()
        .collect()
}

/// A route as a line: `FILTER → cloud`, or `cloud:FILTER → local`.
pub fn route_line(r: &ResolvedRoute) -> String {
    match r.to {
        crate::RouteTarget::Local => format!("cloud:{} → local", r.filter),
        crate::RouteTarget::Cloud => format!("{} → cloud", r.filter),
    }
}

/// What changes on `device` from desired state `old` to `new` (`None`: the device is not in
/// that revision's manifest); `None` when nothing changes.
pub fn diff_states(
    device: &str,
    old: Option<&DesiredState>,
    new: Option<&DesiredState>,
) -> Option<DeviceChange> {
    let change = match (old, new) {
        (None, None) => return None,
        (None, Some(_)) => "added",
        (Some(_), None) => "removed",
        (Some(a), Some(b)) if a == b => return None,
        (Some(_), Some(_)) => "changed",
    };
    let empty = DesiredState {
        project: String::new(),
        device: device.to_owned(),
        functions: BTreeMap::new(),
        bindings: Vec::new(),
        routes: Vec::new(),
        models: crate::Models::new(),
    };
    let (a, b) = (old.unwrap_or(&empty), new.unwrap_or(&empty));
    let mut d = DeviceChange {
        device: device.to_owned(),
        change: change.to_owned(),
        ..DeviceChange::default()
    };
    for (name, f) in &b.functions {
        match a.functions.get(name) {
            None => d.functions_added.push(name.clone()),
            Some(old) if old != f => d.functions_changed.push(NamedChange {
                name: name.clone(),
                fields: changed_fields(old, f),
            }),
            Some(_) => {}
        }
    }
    d.functions_removed = a
        .functions
        .keys()
        .filter(|n| !b.functions.contains_key(*n))
        .cloned()
        .collect();
    let by_name = |s: &DesiredState| -> BTreeMap<String, crate::ResolvedBinding> {
        s.bindings
            .iter()
            .map(|x| (x.name.clone(), x.clone()))
            .collect()
    };
    let (ba, bb) = (by_name(a), by_name(b));
    for (name, x) in &bb {
        match ba.get(name) {
            None => d.bindings_added.push(name.clone()),
            Some(old) if old != x => d.bindings_changed.push(NamedChange {
                name: name.clone(),
                fields: changed_fields(old, x),
            }),
            Some(_) => {}
        }
    }
    d.bindings_removed = ba
        .keys()
        .filter(|n| !bb.contains_key(*n))
        .cloned()
        .collect();
    let (ra, rb): (Vec<String>, Vec<String>) = (
        a.routes.iter().map(route_line).collect(),
        b.routes.iter().map(route_line).collect(),
    );
    d.routes_added = rb.iter().filter(|r| !ra.contains(r)).cloned().collect();
    d.routes_removed = ra.iter().filter(|r| !rb.contains(r)).cloned().collect();
    Some(d)
}

/// `GET /v1/functions`: one function of the latest revision and the devices that run it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct FunctionInfo {
    /// The function's name.
    pub name: String,
    /// Its runtime (`python3`, `node`, `exec`).
    pub runtime: String,
    /// Its bundle's digest.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bundle: Option<String>,
    /// The bindings that run it.
    pub bindings: Vec<String>,
    /// The devices whose desired state runs it, sorted.
    pub devices: Vec<String>,
}

/// `GET /v1/bundles/{digest}/files`: what a bundle holds.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct BundleListing {
    /// The bundle.
    pub digest: String,
    /// Its size, compressed, in bytes.
    pub bytes: u64,
    /// Its entries in archive order (files, then symlinks), at most the first 1,000.
    pub files: Vec<BundleEntry>,
    /// How many entries it holds in all.
    pub total: u64,
}

/// One entry of a bundle.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct BundleEntry {
    /// `/`-separated path in the function's folder.
    pub path: String,
    /// Size in bytes (0 for a symlink).
    pub size: u64,
    /// Mode 0755.
    #[serde(default)]
    pub executable: bool,
    /// A symlink's target.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target: Option<String>,
}

/// `GET /v1/bundles/{digest}/files/{path}`: the beginning of one file of a bundle.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct BundleFilePreview {
    /// The file.
    pub path: String,
    /// Its size in bytes.
    pub size: u64,
    /// Its first bytes (at most 64 KiB) as text, when they are UTF-8 text; absent for a binary
    /// file.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub text: Option<String>,
    /// True when the file is not text (it holds NUL bytes or is not UTF-8).
    pub binary: bool,
    /// True when the file is longer than what `text` shows.
    pub truncated: bool,
}

/// `GET /v1/status/page`: one page of the fleet, filtered, and the counts of the whole fleet.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct FleetPage {
    /// The latest revision.
    pub revision: u64,
    /// Counts over the whole fleet, filters ignored.
    pub counts: FleetCounts,
    /// How many devices the filters select.
    pub matching: u64,
    /// The page shown (from 0).
    pub page: u64,
    /// Devices per page.
    pub page_size: u64,
    /// The page's devices, by name.
    pub devices: Vec<DeviceStatus>,
}

/// How many devices are in each state.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct FleetCounts {
    /// All devices (registered or in the manifest).
    pub total: u64,
    /// Converged.
    pub converged: u64,
    /// Converged on the baseline while a running or paused rollout has not reached them yet
    /// (counted in `converged` too: they run what they are served).
    #[serde(default)]
    pub held: u64,
    /// Reporting state `running`, `updating`, `failed`, `rolled_back`, or `never seen` and
    /// `unregistered`, by that name.
    pub by_state: BTreeMap<String, u64>,
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Source, load, resolve};

    fn state(text: &str, device: &str) -> Option<DesiredState> {
        let m = load(&Source::new("edgefn.yaml", text), None)
            .expect("valid")
            .manifest;
        let bundles = m
            .functions
            .keys()
            .map(|k| (k.clone(), "a".repeat(64)))
            .collect();
        resolve(&m, device, &bundles)
    }

    const BASE: &str = "apiVersion: edgefn/v1\nproject: p\nfunctions:\n  f:\n    path: functions/f\n    runtime: python3\n    handler: main.handle\n    env:\n      SECRET_ISH: hunter2\ndevices:\n  gw-01: {}\n  gw-02: {}\nbindings:\n  - function: f\n    devices: { names: [gw-01] }\n    triggers: [{ topic: a/# }]\n";

    #[test]
    fn names_what_changes_and_never_a_value() {
        let changed = BASE.replace("hunter2", "hunter3")
            + "  - name: f-2\n    function: f\n    devices: { names: [gw-02] }\n    triggers: [{ topic: b/# }]\nroutes:\n  - { from: a/#, to: cloud }\n";
        let d1 = diff_states(
            "gw-01",
            state(BASE, "gw-01").as_ref(),
            state(&changed, "gw-01").as_ref(),
        )
        .expect("changes");
        assert_eq!(d1.change, "changed");
        assert_eq!(d1.bindings_changed[0].fields, vec!["env.SECRET_ISH"]);
        assert_eq!(d1.routes_added, vec!["a/# → cloud"]);
        let json = serde_json::to_string(&d1).expect("json");
        assert!(!json.contains("hunter"), "{json}");
        let d2 = diff_states(
            "gw-02",
            state(BASE, "gw-02").as_ref(),
            state(&changed, "gw-02").as_ref(),
        )
        .expect("changes");
        assert_eq!(d2.functions_added, vec!["f"]);
        assert_eq!(d2.bindings_added, vec!["f-2"]);
        assert!(
            diff_states(
                "gw-01",
                state(BASE, "gw-01").as_ref(),
                state(BASE, "gw-01").as_ref()
            )
            .is_none()
        );
        assert_eq!(
            diff_states("gw-09", None, state(BASE, "gw-01").as_ref()).map(|d| d.change),
            Some("added".to_owned())
        );
    }
}

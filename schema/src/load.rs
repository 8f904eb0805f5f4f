//! Loading `edgefn.yaml`: YAML → [`Manifest`], with every problem reported as a diagnostic.
//!
//! Three passes, each collecting diagnostics rather than stopping: YAML syntax
//! ([`crate::yaml`]), shape and values (this module's `decode_*` functions), and cross-references
//! and the project's files (`check_references`, `check_files`). Files are reached only
//! through [`ProjectFiles`], so this crate stays free of I/O.

use std::collections::BTreeMap;

use crate::decode::{Cx, Obj, first_line};
use crate::diagnostic::{Code, Diagnostics, did_you_mean};
use crate::manifest::{
    API_VERSION, Binding, CLOUD_PREFIX, Device, DeviceSelector, Function, Gpu, Handler, Interface,
    Manifest, Mode, Model, Platform, Rollout, RolloutStage, Route, RouteTarget, Runtime, Trigger,
    limits,
};
use crate::quantity::{Cpu, Duration, Memory};
use crate::source::{Source, Span};
use crate::topic;
use crate::yaml::{self, Node, NodeKind};

/// What exists at a path of the project.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EntryKind {
    /// A regular file (after following symlinks).
    File,
    /// A folder (after following symlinks).
    Dir,
}

/// Read-only access to the project's files, relative to the folder holding the manifest.
///
/// Paths are `/`-separated and relative. The CLI implements this over the real file system;
/// the cloud, which has no project tree, passes [`NoFiles`] and skips the file checks.
pub trait ProjectFiles {
    /// What is at `rel`, following symlinks; `None` when nothing is.
    fn kind(&self, rel: &str) -> Option<EntryKind>;
    /// Whether `rel`, with symlinks resolved, stays inside the project folder.
    fn is_inside(&self, rel: &str) -> bool;
}

/// No project files: file checks are skipped.
#[derive(Debug, Clone, Copy, Default)]
pub struct NoFiles;

/// A manifest that passed validation, and the warnings found on the way.
#[derive(Debug, Clone)]
pub struct Loaded {
    /// The manifest.
    pub manifest: Manifest,
    /// Warnings (no errors).
    pub warnings: Diagnostics,
}

/// Parses and validates a manifest. `files` is `None` to skip the checks of the project's files.
///
/// Returns the manifest and its warnings, or every diagnostic (errors and warnings) when there
/// is at least one error.
pub fn load(source: &Source, files: Option<&dyn ProjectFiles>) -> Result<Loaded, Diagnostics> {
    let (manifest, mut cx) = decode(source);
    if let Some(manifest) = &manifest {
        check_references(&mut cx, manifest);
        check_device_values(&mut cx, manifest);
        check_rollout(&mut cx, manifest);
        if let Some(files) = files {
            check_files(&mut cx, manifest, files);
        }
    }
    let mut diags = cx.diags;
    diags.sort();
    match manifest {
        Some(manifest) if !diags.has_errors() => Ok(Loaded {
            manifest,
            warnings: diags,
        }),
        _ => Err(diags),
    }
}

const TOP_KEYS: &[&str] = &[
    "apiVersion",
    "project",
    "functions",
    "devices",
    "bindings",
    "routes",
    "rollout",
    "models",
];
const FUNCTION_KEYS: &[&str] = &[
    "path",
    "runtime",
    "handler",
    "interface",
    "memory",
    "cpu",
    "timeout",
    "env",
    "secrets",
    "deviceNodes",
    "gpu",
    "models",
];
const DEVICE_KEYS: &[&str] = &["labels", "vars", "platform"];
const BINDING_KEYS: &[&str] = &[
    "name",
    "function",
    "devices",
    "mode",
    "triggers",
    "concurrency",
    "idleTimeout",
    "memory",
    "cpu",
    "timeout",
    "env",
    "secrets",
    "deviceNodes",
    "gpu",
    "models",
];
const SELECTOR_KEYS: &[&str] = &["names", "labels"];
const ROUTE_KEYS: &[&str] = &["from", "to", "devices"];

/// Shape-and-value pass. Returns a manifest whenever the file is a YAML mapping, with invalid
/// parts left at placeholders (the diagnostics say what they were).
fn decode(source: &Source) -> (Option<Manifest>, Cx<'_>) {
    let mut cx = Cx::new(source);
    let (root, diags) = yaml::parse(source);
    cx.diags.extend(diags);
    let Some(root) = root else {
        return (None, cx);
    };
    let anchor = Span::new(0, 0);
    if root.is_null() {
        cx.emit(
            cx.error(Code::MissingKey, anchor, "the manifest is empty")
                .help(
                    "start with `apiVersion: edgefn/v1` and `project: NAME`, or run `edgefn init`",
                ),
        );
        return (None, cx);
    }
    let Some(top) = cx.object(
        &root,
        "the manifest",
        TOP_KEYS,
        &["apiVersion", "project"],
        anchor,
    ) else {
        return (None, cx);
    };

    let api_version = top.get("apiVersion").and_then(|n| {
        cx.string(n, "`apiVersion`", "`edgefn/v1`")
            .map(|v| (v, n.span))
    });
    if let Some((v, span)) = &api_version {
        if v != API_VERSION {
            cx.emit(
                cx.error(Code::ApiVersion, *span, format!("unsupported apiVersion `{v}`"))
                    .label("not understood by this edgefn")
                    .help(format!(
                        "this edgefn reads `apiVersion: {API_VERSION}`; write that, or upgrade edgefn if the file was made by a newer one"
                    )),
            );
        }
    }
    let project = top
        .get("project")
        .and_then(|n| {
            let p = cx.string(n, "`project`", "`smart-factory`")?;
            check_name(&mut cx, &p, n.span, "project");
            Some(p)
        })
        .unwrap_or_default();

    let mut manifest = Manifest {
        api_version: api_version.map(|(v, _)| v).unwrap_or_default(),
        project,
        functions: BTreeMap::new(),
        devices: BTreeMap::new(),
        bindings: Vec::new(),
        routes: Vec::new(),
        rollout: None,
        models: Vec::new(),
    };

    if let Some(n) = top.get("functions") {
        for (k, v) in cx.named_map(n, "`functions`", "`functions: { temp-filter: { path: ..., runtime: python3, handler: main.handle } }`").unwrap_or(&[]) {
            let Some(name) = cx.string(k, "a function name", "`temp-filter`") else { continue };
            check_name(&mut cx, &name, k.span, "function");
            cx.locs.record(format!("functions.{name}"), k.span);
            if let Some(f) = decode_function(&mut cx, &name, k, v) {
                manifest.functions.insert(name, f);
            }
        }
    }
    if let Some(n) = top.get("devices") {
        for (k, v) in cx
            .named_map(
                n,
                "`devices`",
                "`devices: { gw-01: { labels: { site: lab } } }`",
            )
            .unwrap_or(&[])
        {
            let Some(name) = cx.string(k, "a device name", "`gw-01`") else {
                continue;
            };
            check_name(&mut cx, &name, k.span, "device");
            cx.locs.record(format!("devices.{name}"), k.span);
            let mut device = Device::default();
            if !v.is_null() {
                if let Some(obj) =
                    cx.object(v, &format!("device `{name}`"), DEVICE_KEYS, &[], k.span)
                {
                    if let Some(l) = obj.get("labels") {
                        device.labels = cx.string_map(
                            l,
                            &format!("the labels of device `{name}`"),
                            &format!("devices.{name}.labels"),
                        );
                    }
                    if let Some(v) = obj.get("vars") {
                        device.vars = cx.string_map(
                            v,
                            &format!("the vars of device `{name}`"),
                            &format!("devices.{name}.vars"),
                        );
                    }
                    if let Some(p) = obj.get("platform") {
                        let names: Vec<&str> = Platform::ALL.iter().map(|p| p.as_str()).collect();
                        device.platform =
                            cx.choice(p, "platform", &names).and_then(Platform::parse);
                    }
                }
            }
            manifest.devices.insert(name, device);
        }
    }
    if let Some(n) = top.get("bindings") {
        for (i, item) in cx.seq(n, "`bindings`", "`bindings: [ { function: f, devices: { names: [gw-01] }, triggers: [ { topic: \"a/#\" } ] } ]`").unwrap_or(&[]).iter().enumerate() {
            if let Some(b) = decode_binding(&mut cx, i, item) {
                manifest.bindings.push(b);
            }
        }
    }
    if let Some(n) = top.get("routes") {
        for (i, item) in cx
            .seq(
                n,
                "`routes`",
                "`routes: [ { from: \"alerts/#\", to: cloud } ]`",
            )
            .unwrap_or(&[])
            .iter()
            .enumerate()
        {
            if let Some(r) = decode_route(&mut cx, i, item) {
                manifest.routes.push(r);
            }
        }
    }
    if let Some(n) = top.get("models") {
        manifest.models = decode_models(&mut cx, n);
    }
    if let Some(n) = top.get("rollout") {
        if !n.is_null() {
            manifest.rollout = decode_rollout(&mut cx, n);
            if let Some((k, _)) = root.entry("rollout") {
                cx.locs.record("rollout", k.span);
            }
        }
    }
    (Some(manifest), cx)
}

const ROLLOUT_KEYS: &[&str] = &["stages", "deadline"];
const STAGE_KEYS: &[&str] = &["devices", "percent", "labels", "bake", "maxFailures"];
/// Longest bake time and report deadline of a rollout stage (one day).
const MAX_ROLLOUT_WAIT: crate::Duration = crate::Duration(86_400_000);
/// Most devices a stage may name by count.
const MAX_STAGE_DEVICES: u32 = 1_000_000;

/// The count and percentage a stage reached last, and the stage's index.
type StageReach = (Option<u32>, Option<u32>, usize);

/// `rollout:` — shapes and values; the checks against the devices are in [`check_rollout`].
fn decode_rollout(cx: &mut Cx<'_>, node: &Node) -> Option<Rollout> {
    let obj = cx.object(
        node,
        "`rollout`",
        ROLLOUT_KEYS,
        &["stages"],
        first_line(cx.source, node.span),
    )?;
    let deadline = obj.get("deadline").and_then(|n| {
        cx.quantity(
            n,
            "the rollout's report deadline",
            crate::Duration::secs(1),
            MAX_ROLLOUT_WAIT,
        )
    });
    let stages_node = obj.get("stages")?;
    let items = cx.seq(
        stages_node,
        "`rollout.stages`",
        "`stages: [ { devices: 1, bake: 5m }, { percent: 100 } ]`",
    )?;
    if items.is_empty() {
        cx.emit(
            cx.error(
                Code::InvalidRollout,
                first_line(cx.source, stages_node.span),
                "the rollout has no stages",
            )
            .label("no stage")
            .help("list the stages, e.g. `stages: [ { devices: 1, bake: 5m }, { percent: 100 } ]`"),
        );
        return None;
    }
    let mut stages = Vec::new();
    let mut ok = true;
    // The last count and percentage seen, by selector (labels), with the stage number: stages
    // are cumulative, so within one selector they only go up.
    let mut last: BTreeMap<Vec<(String, String)>, StageReach> = BTreeMap::new();
    for (i, item) in items.iter().enumerate() {
        let what = format!("rollout stage {}", i + 1);
        let path = format!("rollout.stages[{i}]");
        cx.locs.record(path.clone(), item.span);
        let Some(obj) = cx.object(
            item,
            &what,
            STAGE_KEYS,
            &[],
            first_line(cx.source, item.span),
        ) else {
            ok = false;
            continue;
        };
        let mut stage = RolloutStage::default();
        let devices_node = obj.get("devices");
        let percent_node = obj.get("percent");
        if let Some(n) = devices_node {
            stage.devices = cx.number(
                n,
                &format!("the device count of {what}"),
                1,
                MAX_STAGE_DEVICES,
            );
            ok &= stage.devices.is_some();
        }
        if let Some(n) = percent_node {
            stage.percent = cx.number(n, &format!("the percentage of {what}"), 1, 100);
            ok &= stage.percent.is_some();
        }
        if let Some(n) = obj.get("labels") {
            stage.labels = cx.string_map(
                n,
                &format!("the labels of {what}"),
                &format!("{path}.labels"),
            );
        }
        if let Some(n) = obj.get("bake") {
            stage.bake = cx.quantity(
                n,
                &format!("the bake time of {what}"),
                crate::Duration(0),
                MAX_ROLLOUT_WAIT,
            );
            ok &= stage.bake.is_some();
        }
        if let Some(n) = obj.get("maxFailures") {
            let text = match n.as_str() {
                Some(t) if !n.is_null() => t.to_owned(),
                _ => String::new(),
            };
            match text.parse::<crate::FailureThreshold>() {
                Ok(t) => stage.max_failures = Some(t),
                Err(e) => {
                    ok = false;
                    cx.emit(
                        cx.error(
                            Code::OutOfRange,
                            first_line(cx.source, n.span),
                            format!("invalid `maxFailures` in {what}: {}", e.message),
                        )
                        .label("not a failure threshold")
                        .help(e.help),
                    );
                }
            }
        }
        if devices_node.is_some() && percent_node.is_some() {
            ok = false;
            cx.emit(
                cx.error(Code::InvalidRollout, first_line(cx.source, item.span), format!("{what} gives both `devices` and `percent`"))
                    .label("one of `devices` or `percent`")
                    .help("a stage reaches a number of devices, `devices: 1`, or a share of them, `percent: 25`"),
            );
        }
        if devices_node.is_none() && percent_node.is_none() && obj.get("labels").is_none() {
            ok = false;
            cx.emit(
                cx.error(Code::InvalidRollout, first_line(cx.source, item.span), format!("{what} selects no devices"))
                    .label("no `devices`, `percent` or `labels`")
                    .help("say which devices the stage reaches: `devices: 1`, `percent: 25` or `labels: { ring: canary }`"),
            );
        }
        let key: Vec<(String, String)> = stage.labels.clone().into_iter().collect();
        let prev = last.get(&key).copied();
        if let Some((pd, pp, j)) = prev {
            let shrinks = match (stage.devices, stage.percent, pd, pp) {
                (Some(d), _, Some(p), _) => d < p,
                (_, Some(c), _, Some(p)) => c < p,
                _ => false,
            };
            if shrinks {
                ok = false;
                let (field, node) = if stage.devices.is_some() {
                    ("devices", devices_node)
                } else {
                    ("percent", percent_node)
                };
                let span = node.map_or(item.span, |n| n.span);
                cx.emit(
                    cx.error(Code::InvalidRollout, span, format!("{what} reaches fewer devices than stage {} (`{field}` goes down)", j + 1))
                        .label("smaller than an earlier stage")
                        .help("stages are cumulative: each reaches the earlier stages' devices and more, so `devices` and `percent` only go up (e.g. `percent: 5`, then `25`, then `100`)"),
                );
            }
        }
        let entry = last.entry(key).or_insert((None, None, i));
        if stage.devices.is_some() {
            entry.0 = stage.devices;
        }
        if stage.percent.is_some() {
            entry.1 = stage.percent;
        }
        entry.2 = i;
        stages.push(stage);
    }
    ok.then_some(Rollout { stages, deadline })
}

/// A rollout needs devices, and each stage's labels must select some.
fn check_rollout(cx: &mut Cx<'_>, m: &Manifest) {
    let Some(r) = &m.rollout else {
        return;
    };
    let span = cx.locs.get("rollout").unwrap_or_default();
    if m.devices.is_empty() {
        cx.emit(
            cx.error(
                Code::InvalidRollout,
                span,
                "a rollout on a manifest with no devices",
            )
            .label("nothing to roll out to")
            .help("add devices under `devices:`, or remove `rollout:`"),
        );
        return;
    }
    for (i, stage) in r.stages.iter().enumerate() {
        if stage.labels.is_empty() {
            continue;
        }
        if m.devices
            .values()
            .any(|d| stage.labels.iter().all(|(k, v)| d.labels.get(k) == Some(v)))
        {
            continue;
        }
        // Point at the first label no device has with that value.
        let (key, value) = stage
            .labels
            .iter()
            .find(|(k, v)| !m.devices.values().any(|d| d.labels.get(*k) == Some(*v)))
            .unwrap_or_else(|| stage.labels.iter().next().expect("labels is not empty"));
        let at = cx
            .locs
            .get(&format!("rollout.stages[{i}].labels.{key}"))
            .or_else(|| {
                cx.locs
                    .get(&format!("rollout.stages[{i}]"))
                    .map(|s| first_line(cx.source, s))
            })
            .unwrap_or(span);
        cx.emit(
            cx.error(
                Code::InvalidRollout,
                at,
                format!("rollout stage {} selects devices labelled `{key}: {value}`, and no device is", i + 1),
            )
            .label("no device has this label")
            .help("label devices under `devices:` (e.g. `labels: { ring: canary }`), or correct the stage's labels"),
        );
    }
}

/// Names end up in topics, folders and container ids: keep them to a safe alphabet.
fn check_name(cx: &mut Cx<'_>, name: &str, span: Span, kind: &str) {
    let ok = crate::manifest::valid_name(name);
    if !ok {
        let fixed = crate::manifest::suggest_name(name);
        let mut help = format!(
            "a {kind} name uses lowercase letters, digits, `-` and `_`, starts and ends with a letter or digit, and has at most 63 characters"
        );
        if !fixed.is_empty() {
            help.push_str(&format!(", e.g. `{fixed}`"));
        }
        cx.emit(
            cx.error(
                Code::InvalidName,
                span,
                format!("`{name}` is not a valid {kind} name"),
            )
            .label("invalid name")
            .help(help),
        );
    }
}

fn decode_limits(
    cx: &mut Cx<'_>,
    obj: &Obj<'_>,
    path: &str,
    owner: &str,
) -> (Option<Memory>, Option<Cpu>, Option<Duration>) {
    let memory = obj.get("memory").and_then(|n| {
        cx.locs.record(format!("{path}.memory"), n.span);
        cx.quantity(
            n,
            &format!("memory of {owner}"),
            limits::MIN_MEMORY,
            limits::MAX_MEMORY,
        )
    });
    let cpu = obj.get("cpu").and_then(|n| {
        cx.locs.record(format!("{path}.cpu"), n.span);
        cx.quantity(
            n,
            &format!("cpu of {owner}"),
            limits::MIN_CPU,
            limits::MAX_CPU,
        )
    });
    let timeout = obj.get("timeout").and_then(|n| {
        cx.locs.record(format!("{path}.timeout"), n.span);
        cx.quantity(
            n,
            &format!("timeout of {owner}"),
            limits::MIN_TIMEOUT,
            limits::MAX_TIMEOUT,
        )
    });
    (memory, cpu, timeout)
}

fn decode_env(cx: &mut Cx<'_>, obj: &Obj<'_>, path: &str, owner: &str) -> BTreeMap<String, String> {
    let Some(n) = obj.get("env") else {
        return BTreeMap::new();
    };
    let env = cx.string_map(n, &format!("the env of {owner}"), &format!("{path}.env"));
    if let NodeKind::Map(entries) = &n.kind {
        for (k, _) in entries {
            let Some(key) = k.as_str() else { continue };
            let valid = key.starts_with(|c: char| c.is_ascii_alphabetic() || c == '_')
                && key.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
            if !valid {
                cx.emit(
                    cx.error(
                        Code::InvalidName,
                        k.span,
                        format!("`{key}` is not a valid environment variable name"),
                    )
                    .label("invalid name")
                    .help(
                        "use letters, digits and `_`, not starting with a digit, e.g. `THRESHOLD`",
                    ),
                );
            } else if key.starts_with("EDGEFN_") {
                cx.emit(
                    cx.error(
                        Code::InvalidName,
                        k.span,
                        format!("`{key}` uses the reserved prefix `EDGEFN_`"),
                    )
                    .label("reserved")
                    .help("edgefn sets `EDGEFN_*` variables itself; choose another name"),
                );
            }
        }
    }
    env
}

/// `secrets: [db-password, api-key]`: names of secrets, each valid and listed once.
fn decode_secrets(cx: &mut Cx<'_>, obj: &Obj<'_>, path: &str, owner: &str) -> Vec<String> {
    let Some(n) = obj.get("secrets") else {
        return Vec::new();
    };
    let items = cx
        .seq(
            n,
            &format!("the secrets of {owner}"),
            "`secrets: [db-password]`",
        )
        .unwrap_or(&[]);
    let mut names: Vec<String> = Vec::new();
    for (j, item) in items.iter().enumerate() {
        let Some(name) = cx.string(item, "a secret name", "`db-password`") else {
            continue;
        };
        cx.locs.record(format!("{path}.secrets[{j}]"), item.span);
        if !crate::manifest::valid_secret_name(&name) {
            check_name(cx, &name, item.span, "secret");
            continue;
        }
        if names.contains(&name) {
            cx.emit(
                cx.error(
                    Code::DuplicateName,
                    item.span,
                    format!("{owner} lists the secret `{name}` twice"),
                )
                .label("listed before")
                .help("list each secret once"),
            );
            continue;
        }
        names.push(name);
    }
    names
}

/// `deviceNodes: [/dev/dri/renderD128]`: absolute paths under `/dev/`, each listed once; and
/// `gpu: nvidia`.
fn decode_device_nodes(
    cx: &mut Cx<'_>,
    obj: &Obj<'_>,
    path: &str,
    owner: &str,
) -> (Vec<String>, Option<Gpu>) {
    let gpu = obj.get("gpu").and_then(|n| {
        cx.locs.record(format!("{path}.gpu"), n.span);
        let names: Vec<&str> = Gpu::ALL.iter().map(|g| g.as_str()).collect();
        let chosen = cx.choice(n, "gpu", &names)?;
        Gpu::ALL.into_iter().find(|g| g.as_str() == chosen)
    });
    let Some(n) = obj.get("deviceNodes") else {
        return (Vec::new(), gpu);
    };
    let items = cx
        .seq(
            n,
            &format!("the device nodes of {owner}"),
            "`deviceNodes: [/dev/dri/renderD128]`",
        )
        .unwrap_or(&[]);
    let mut paths: Vec<String> = Vec::new();
    for (j, item) in items.iter().enumerate() {
        let Some(p) = cx.string(item, "a device node", "`/dev/dri/renderD128`") else {
            continue;
        };
        cx.locs
            .record(format!("{path}.deviceNodes[{j}]"), item.span);
        if let Some(why) = crate::manifest::device_node_problem(&p) {
            cx.emit(
                cx.error(
                    Code::InvalidDeviceNode,
                    item.span,
                    format!("{owner} asks for the device node `{p}`, but {why}"),
                )
                .label("not a device node under /dev")
                .help("name a node under `/dev` by its absolute path, e.g. `/dev/dri/renderD128`"),
            );
            continue;
        }
        if paths.contains(&p) {
            cx.emit(
                cx.error(
                    Code::DuplicateName,
                    item.span,
                    format!("{owner} lists the device node `{p}` twice"),
                )
                .label("listed before")
                .help("list each device node once"),
            );
            continue;
        }
        paths.push(p);
    }
    (paths, gpu)
}

const MODEL_KEYS: &[&str] = &["name", "path"];

/// `models: [ { name: digits, path: models/digits.onnx } ]`: each with a valid, unique name
/// and a path (checked against the project's files by [`check_files`]).
fn decode_models(cx: &mut Cx<'_>, node: &Node) -> Vec<Model> {
    let items = cx
        .seq(
            node,
            "`models`",
            "`models: [ { name: digits, path: models/digits.onnx } ]`",
        )
        .unwrap_or(&[]);
    let mut models: Vec<Model> = Vec::new();
    for (i, item) in items.iter().enumerate() {
        let path = format!("models[{i}]");
        let anchor = first_line(cx.source, item.span);
        cx.locs.record(path.clone(), anchor);
        let Some(obj) = cx.object(
            item,
            &format!("model #{}", i + 1),
            MODEL_KEYS,
            &["name", "path"],
            anchor,
        ) else {
            continue;
        };
        let name = obj.get("name").and_then(|n| {
            cx.locs.record(format!("{path}.name"), n.span);
            let name = cx.string(n, "a model name", "`digits`")?;
            if !crate::manifest::valid_name(&name) {
                check_name(cx, &name, n.span, "model");
                return None;
            }
            if name.contains('_') {
                cx.emit(
                    cx.error(Code::InvalidName, n.span, format!("`{name}` is not a valid model name"))
                        .label("`_` in a model name")
                        .help(format!("a model name uses lowercase letters, digits and `-` (its variable is `EDGEFN_MODEL_` + the name with `-` as `_`): e.g. `{}`", name.replace('_', "-"))),
                );
                return None;
            }
            if let Some(first) = models.iter().position(|m| m.name == name) {
                let at = cx.locs.get(&format!("models[{first}].name")).unwrap_or_default();
                cx.emit(
                    cx.error(Code::DuplicateName, n.span, format!("two models are named `{name}`"))
                        .label("second model with this name")
                        .with_label(at, "first one")
                        .help("give each model a name of its own"),
                );
                return None;
            }
            Some(name)
        });
        let file = obj.get("path").and_then(|n| {
            cx.locs.record(format!("{path}.path"), n.span);
            cx.string(
                n,
                &format!("the path of model #{}", i + 1),
                "`models/digits.onnx`",
            )
        });
        if let (Some(name), Some(path)) = (name, file) {
            cx.locs.record(format!("model:{name}"), anchor);
            models.push(Model { name, path });
        }
    }
    models
}

/// `models: [digits]` on a function or binding: names of models, each listed once (whether
/// `models:` defines them is checked by [`check_references`]).
fn decode_model_refs(cx: &mut Cx<'_>, obj: &Obj<'_>, path: &str, owner: &str) -> Vec<String> {
    let Some(n) = obj.get("models") else {
        return Vec::new();
    };
    let items = cx
        .seq(n, &format!("the models of {owner}"), "`models: [digits]`")
        .unwrap_or(&[]);
    let mut names: Vec<String> = Vec::new();
    for (j, item) in items.iter().enumerate() {
        let Some(name) = cx.string(item, "a model name", "`digits`") else {
            continue;
        };
        cx.locs.record(format!("{path}.models[{j}]"), item.span);
        if names.contains(&name) {
            cx.emit(
                cx.error(
                    Code::DuplicateName,
                    item.span,
                    format!("{owner} lists the model `{name}` twice"),
                )
                .label("listed before")
                .help("list each model once"),
            );
            continue;
        }
        names.push(name);
    }
    names
}

fn decode_function(cx: &mut Cx<'_>, name: &str, key: &Node, node: &Node) -> Option<Function> {
    let owner = format!("function `{name}`");
    let path_prefix = format!("functions.{name}");
    let obj = cx.object(
        node,
        &owner,
        FUNCTION_KEYS,
        &["path", "runtime", "handler"],
        key.span,
    )?;
    let path = obj.get("path").and_then(|n| {
        cx.locs.record(format!("{path_prefix}.path"), n.span);
        cx.string(
            n,
            &format!("the path of {owner}"),
            "`functions/temp-filter`",
        )
    });
    let runtime = obj.get("runtime").and_then(|n| {
        let names: Vec<&str> = Runtime::ALL.iter().map(|r| r.as_str()).collect();
        let chosen = cx.choice(n, "runtime", &names)?;
        Runtime::ALL.into_iter().find(|r| r.as_str() == chosen)
    });
    let handler = obj.get("handler").and_then(|n| {
        cx.locs.record(format!("{path_prefix}.handler"), n.span);
        decode_handler(cx, n, runtime, &owner)
    });
    let interface = match obj.get("interface") {
        None => Some(Interface::Protocol),
        Some(n) => {
            cx.locs.record(format!("{path_prefix}.interface"), n.span);
            let names: Vec<&str> = Interface::ALL.iter().map(|i| i.as_str()).collect();
            let chosen = cx.choice(n, "interface", &names);
            let chosen = chosen.and_then(|c| Interface::ALL.into_iter().find(|i| i.as_str() == c));
            match (chosen, runtime) {
                (Some(i), Some(rt)) if rt != Runtime::Exec && !i.is_protocol() => {
                    cx.emit(
                        cx.error(
                            Code::InvalidValue,
                            n.span,
                            format!("{owner} is a {rt} function: only exec functions choose an interface"),
                        )
                        .label("only for `runtime: exec`")
                        .help("remove `interface`; a python3 or node handler is called through its shim"),
                    );
                    None
                }
                (chosen, _) => chosen,
            }
        }
    };
    let (memory, cpu, timeout) = decode_limits(cx, &obj, &path_prefix, &owner);
    let env = decode_env(cx, &obj, &path_prefix, &owner);
    let secrets = decode_secrets(cx, &obj, &path_prefix, &owner);
    let (device_nodes, gpu) = decode_device_nodes(cx, &obj, &path_prefix, &owner);
    let models = decode_model_refs(cx, &obj, &path_prefix, &owner);
    Some(Function {
        path: path?,
        runtime: runtime?,
        handler: handler?,
        interface: interface?,
        memory,
        cpu,
        timeout,
        env,
        secrets,
        device_nodes,
        gpu,
        models,
    })
}

fn is_ident(s: &str) -> bool {
    s.starts_with(|c: char| c.is_alphabetic() || c == '_' || c == '$')
        && s.chars()
            .all(|c| c.is_alphanumeric() || c == '_' || c == '$')
}

fn decode_handler(
    cx: &mut Cx<'_>,
    node: &Node,
    runtime: Option<Runtime>,
    owner: &str,
) -> Option<Handler> {
    match (&node.kind, runtime) {
        (NodeKind::Seq(items), Some(Runtime::Exec) | None) => {
            let mut argv = Vec::new();
            for item in items {
                argv.push(cx.string(
                    item,
                    &format!("an argument of the handler of {owner}"),
                    "`\"./run.sh\"`",
                )?);
            }
            if argv.first().is_none_or(String::is_empty) {
                cx.emit(
                    cx.error(Code::InvalidHandler, node.span, format!("the handler of {owner} has no program"))
                        .label("empty")
                        .help("list the program first, then its arguments: `handler: [\"./collect.sh\", \"--fast\"]`"),
                );
                return None;
            }
            Some(Handler::Argv(argv))
        }
        (NodeKind::Seq(_), Some(rt)) => {
            cx.emit(
                cx.error(
                    Code::WrongType,
                    first_line(cx.source, node.span),
                    format!("a {rt} handler is one string, not a list"),
                )
                .label("a list")
                .help(match rt {
                    Runtime::Python3 => "write `handler: module.function`, e.g. `main.handle`",
                    _ => "write `handler: file.export`, e.g. `index.handler`",
                }),
            );
            None
        }
        _ => {
            let text = cx.string(node, &format!("the handler of {owner}"), "`main.handle`")?;
            let valid = match runtime {
                Some(Runtime::Python3) => text.rsplit_once('.').is_some_and(|(module, func)| {
                    module.split('.').all(is_ident) && is_ident(func)
                }),
                Some(Runtime::Node) => text.rsplit_once('.').is_some_and(|(file, export)| {
                    !file.is_empty() && !file.starts_with('/') && is_ident(export)
                }),
                Some(Runtime::Exec) | None => !text.trim().is_empty(),
            };
            if !valid {
                let help = match runtime {
                    Some(Runtime::Python3) => {
                        "a python3 handler is `module.function`: `main.handle` calls `handle(event, context)` in `main.py`"
                    }
                    Some(Runtime::Node) => {
                        "a node handler is `file.export`: `index.handler` calls the `handler` export of `index.js`"
                    }
                    _ => {
                        "an exec handler is the program to run: `./run.sh`, or a list `[\"./run.sh\", \"arg\"]`"
                    }
                };
                cx.emit(
                    cx.error(
                        Code::InvalidHandler,
                        node.span,
                        format!("`{text}` is not a valid handler for {owner}"),
                    )
                    .label("invalid handler")
                    .help(help),
                );
                return None;
            }
            Some(Handler::Entry(text))
        }
    }
}

fn decode_selector(
    cx: &mut Cx<'_>,
    node: &Node,
    path: &str,
    owner: &str,
    anchor: Span,
) -> Option<DeviceSelector> {
    cx.locs.record(path.to_owned(), node.span);
    let what = format!("the devices of {owner}");
    let obj = cx.object(node, &what, SELECTOR_KEYS, &[], anchor)?;
    match (obj.get_raw("names"), obj.get_raw("labels")) {
        (Some(names), None) => {
            let mut out = Vec::new();
            for (j, item) in cx
                .seq(
                    names,
                    &format!("the device names of {owner}"),
                    "`names: [gw-01, gw-02]`",
                )?
                .iter()
                .enumerate()
            {
                cx.locs.record(format!("{path}.names[{j}]"), item.span);
                out.push(cx.string(item, "a device name", "`gw-01`")?);
            }
            Some(DeviceSelector::Names(out))
        }
        (None, Some(labels)) => Some(DeviceSelector::Labels(cx.string_map(
            labels,
            &format!("the labels selected by {owner}"),
            &format!("{path}.labels"),
        ))),
        (Some(_), Some(_)) | (None, None) => {
            cx.emit(
                cx.error(Code::InvalidSelector, first_line(cx.source, node.span), format!("{what} must say either `names` or `labels`"))
                    .label("one of `names` or `labels`")
                    .help("select devices by name, `devices: { names: [gw-01] }`, or by labels, `devices: { labels: { role: gateway } }` (`labels: {}` selects every device)"),
            );
            None
        }
    }
}

/// The span of the text of a topic inside its scalar (skipping an opening quote).
fn topic_span(cx: &Cx<'_>, node: &Node, e: &topic::TopicError, skip: usize) -> Span {
    let quoted = cx.source.text()[node.span.offset..].starts_with(['"', '\'']);
    let start = node.span.offset + usize::from(quoted) + skip + e.offset;
    if e.len == 0 {
        node.span
    } else {
        Span::new(start, e.len)
    }
}

fn check_filter(cx: &mut Cx<'_>, node: &Node, filter: &str, what: &str, skip: usize) {
    if let Err(e) = topic::validate_filter(filter) {
        let span = topic_span(cx, node, &e, skip);
        cx.emit(
            cx.error(
                Code::InvalidTopic,
                span,
                format!("invalid topic filter `{filter}` in {what}: {}", e.message),
            )
            .label(e.message.clone())
            .help(e.help),
        );
    }
}

fn decode_binding(cx: &mut Cx<'_>, i: usize, node: &Node) -> Option<Binding> {
    let path = format!("bindings[{i}]");
    let anchor = first_line(cx.source, node.span);
    cx.locs.record(path.clone(), anchor);
    let fn_name = node.get("function").and_then(Node::as_str);
    if let Some(f) = fn_name {
        cx.referenced.insert(format!("function:{f}"));
    }
    let owner = match fn_name {
        Some(f) => format!("binding #{} (`{f}`)", i + 1),
        None => format!("binding #{}", i + 1),
    };
    let obj = cx.object(node, &owner, BINDING_KEYS, &["function", "devices"], anchor)?;
    let name = obj.get("name").and_then(|n| {
        let s = cx.string(n, &format!("the name of {owner}"), "`filter-hot`")?;
        check_name(cx, &s, n.span, "binding");
        cx.locs.record(format!("{path}.name"), n.span);
        Some(s)
    });
    let function = obj.get("function").and_then(|n| {
        cx.locs.record(format!("{path}.function"), n.span);
        cx.string(n, &format!("the function of {owner}"), "`temp-filter`")
    });
    let devices = obj
        .get("devices")
        .and_then(|n| decode_selector(cx, n, &format!("{path}.devices"), &owner, anchor));
    let mode = match obj.get("mode") {
        Some(n) => match cx.choice(n, "mode", &["triggered", "continuous"])? {
            "continuous" => Mode::Continuous,
            _ => Mode::Triggered,
        },
        None => Mode::Triggered,
    };
    let mut triggers = Vec::new();
    let triggers_node = obj.get_raw("triggers");
    if let Some(n) = obj.get("triggers") {
        for (j, item) in cx
            .seq(
                n,
                &format!("the triggers of {owner}"),
                "`triggers: [ { topic: \"sensors/#\" } ]`",
            )
            .unwrap_or(&[])
            .iter()
            .enumerate()
        {
            // `- "a/b"` is accepted as shorthand for `- topic: "a/b"`.
            let topic_node = match &item.kind {
                NodeKind::Scalar { .. } => Some(item),
                _ => cx
                    .object(
                        item,
                        &format!("trigger #{} of {owner}", j + 1),
                        &["topic"],
                        &["topic"],
                        first_line(cx.source, item.span),
                    )
                    .and_then(|o| o.get("topic")),
            };
            let Some(t) = topic_node else { continue };
            let Some(filter) = cx.string(t, "a trigger topic", "`sensors/+/temperature`") else {
                continue;
            };
            check_filter(cx, t, &filter, &format!("trigger #{} of {owner}", j + 1), 0);
            cx.locs.record(format!("{path}.triggers[{j}]"), t.span);
            triggers.push(Trigger { topic: filter });
        }
    }
    match (mode, triggers_node) {
        (Mode::Continuous, Some(n))
            if !n.is_null() && !matches!(&n.kind, NodeKind::Seq(v) if v.is_empty()) =>
        {
            let key = obj.node().entry("triggers").map_or(n.span, |(k, _)| k.span);
            cx.emit(
                cx.error(Code::ContinuousWithTriggers, key, format!("{owner} is continuous but lists triggers"))
                    .label("triggers are ignored in continuous mode")
                    .help("a continuous function runs all the time and is not invoked per message: remove `triggers`, or set `mode: triggered`"),
            );
        }
        (Mode::Triggered, _)
            if triggers.is_empty()
                && (triggers_node.is_none_or(|n| {
                    n.is_null() || matches!(&n.kind, NodeKind::Seq(v) if v.is_empty())
                })) =>
        {
            let span = obj.node().entry("triggers").map_or(anchor, |(k, _)| k.span);
            cx.emit(
                cx.error(Code::TriggeredWithoutTriggers, span, format!("{owner} is triggered but has no triggers"))
                    .label("nothing will ever invoke it")
                    .help("add `triggers: [ { topic: \"sensors/#\" } ]`, or set `mode: continuous` to keep it running"),
            );
        }
        _ => {}
    }
    let concurrency = obj.get("concurrency").and_then(|n| {
        cx.number(
            n,
            &format!("the concurrency of {owner}"),
            1,
            limits::MAX_CONCURRENCY,
        )
    });
    let idle_timeout = obj.get("idleTimeout").and_then(|n| {
        cx.quantity(
            n,
            &format!("idleTimeout of {owner}"),
            Duration(0),
            limits::MAX_IDLE_TIMEOUT,
        )
    });
    let (memory, cpu, timeout) = decode_limits(cx, &obj, &path, &owner);
    let env = decode_env(cx, &obj, &path, &owner);
    let secrets = decode_secrets(cx, &obj, &path, &owner);
    let (device_nodes, gpu) = decode_device_nodes(cx, &obj, &path, &owner);
    let models = decode_model_refs(cx, &obj, &path, &owner);
    Some(Binding {
        name,
        function: function?,
        devices: devices?,
        mode,
        triggers,
        concurrency,
        idle_timeout,
        memory,
        cpu,
        timeout,
        env,
        secrets,
        device_nodes,
        gpu,
        models,
    })
}

fn decode_route(cx: &mut Cx<'_>, i: usize, node: &Node) -> Option<Route> {
    let path = format!("routes[{i}]");
    let anchor = first_line(cx.source, node.span);
    let owner = format!("route #{}", i + 1);
    let obj = cx.object(node, &owner, ROUTE_KEYS, &["from", "to"], anchor)?;
    let from_node = obj.get("from");
    if let Some(n) = from_node {
        cx.locs.record(format!("{path}.from"), n.span);
    }
    let from =
        from_node.and_then(|n| cx.string(n, &format!("the source of {owner}"), "`\"alerts/#\"`"));
    let to =
        obj.get("to").and_then(
            |n| match cx.choice(n, "route target", &["cloud", "local"])? {
                "cloud" => Some(RouteTarget::Cloud),
                _ => Some(RouteTarget::Local),
            },
        );
    let devices = match obj.get("devices") {
        Some(n) => Some(decode_selector(
            cx,
            n,
            &format!("{path}.devices"),
            &owner,
            anchor,
        )?),
        None => None,
    };
    let (from, to, from_node) = (from?, to?, from_node?);
    let route = Route { from, to, devices };
    let from_cloud = route.from.starts_with(CLOUD_PREFIX);
    match (from_cloud, to) {
        (false, RouteTarget::Local) => {
            cx.emit(
                cx.error(Code::InvalidRoute, from_node.span, format!("{owner} goes from the local bus to the local bus"))
                    .label("a local topic")
                    .help(format!("to bring cloud messages down, write `from: \"{CLOUD_PREFIX}{}\"`; to send local messages up, write `to: cloud`", route.from)),
            );
            return None;
        }
        (true, RouteTarget::Cloud) => {
            cx.emit(
                cx.error(Code::InvalidRoute, from_node.span, format!("{owner} goes from the cloud to the cloud"))
                    .label("a cloud topic")
                    .help(format!("to bring cloud messages down, write `to: local`; to send local messages up, write `from: \"{}\"`", route.filter())),
            );
            return None;
        }
        _ => {}
    }
    let prefix = if from_cloud { CLOUD_PREFIX.len() } else { 0 };
    check_filter(cx, from_node, route.filter(), &owner, prefix);
    Some(route)
}

/// `${device.…}` placeholders in `env` (see [`crate::vars`]): each well formed, and each label or
/// value it names defined on every device that runs it — one diagnostic per placeholder, at its
/// value, listing the devices that lack it.
fn check_device_values(cx: &mut Cx<'_>, m: &Manifest) {
    use crate::vars::{self, Piece};
    let mut bad = BTreeMap::new();
    let envs = m
        .functions
        .iter()
        .flat_map(|(n, f)| {
            f.env
                .iter()
                .map(move |(k, v)| (format!("functions.{n}.env.{k}"), v))
        })
        .chain(m.bindings.iter().enumerate().flat_map(|(i, b)| {
            b.env
                .iter()
                .map(move |(k, v)| (format!("bindings[{i}].env.{k}"), v))
        }));
    for (path, value) in envs {
        if let Err(e) = vars::parse(value) {
            bad.insert(path, e);
        }
    }
    // Topics are matched as written: a placeholder there would never match anything.
    let topics = m
        .bindings
        .iter()
        .enumerate()
        .flat_map(|(i, b)| {
            b.triggers
                .iter()
                .enumerate()
                .map(move |(j, t)| (format!("bindings[{i}].triggers[{j}]"), t.topic.as_str()))
        })
        .chain(
            m.routes
                .iter()
                .enumerate()
                .map(|(i, r)| (format!("routes[{i}].from"), r.from.as_str())),
        );
    for (path, topic) in topics {
        if vars::has_placeholders(topic) {
            let span = cx.locs.get(&path).unwrap_or_default();
            cx.emit(
                cx.error(
                    Code::InvalidPlaceholder,
                    span,
                    format!("`{topic}`: `${{device.…}}` placeholders are expanded only in `env`, not in topics"),
                )
                .label("matched as written")
                .help("a device's own topics come from its function: read the value from an `env` variable (`LINE: \"${device.vars.LINE}\"`) and publish or filter on it there, or use `+` in the filter"),
            );
        }
    }
    for (path, e) in &bad {
        let span = cx.locs.get(path).unwrap_or_default();
        cx.emit(
            cx.error(Code::InvalidPlaceholder, span, e.why.clone())
                .label("invalid placeholder")
                .help("write `$${device.` for a literal `${device.`"),
        );
    }
    // (where, placeholder) → devices that run it without the label or value it names.
    // (where, `labels` or `vars`, key) → devices that run it without that label or value.
    let mut missing: BTreeMap<(String, &str, &str), Vec<&str>> = BTreeMap::new();
    for (i, b) in m.bindings.iter().enumerate() {
        let Some(f) = m.functions.get(&b.function) else {
            continue;
        };
        let values = f
            .env
            .iter()
            .filter(|(k, _)| !b.env.contains_key(*k))
            .map(|(k, v)| (format!("functions.{}.env.{k}", b.function), v))
            .chain(
                b.env
                    .iter()
                    .map(|(k, v)| (format!("bindings[{i}].env.{k}"), v)),
            );
        for (path, value) in values {
            if !vars::has_placeholders(value) || bad.contains_key(&path) {
                continue;
            }
            let Ok(pieces) = vars::parse(value) else {
                continue;
            };
            for piece in pieces {
                let (field, key) = match piece {
                    Piece::Label(k) => ("labels", k),
                    Piece::Var(k) => ("vars", k),
                    Piece::Text(_) | Piece::Name => continue,
                };
                for (name, d) in &m.devices {
                    let values = if field == "labels" {
                        &d.labels
                    } else {
                        &d.vars
                    };
                    if b.devices.matches(name, d) && !values.contains_key(key) {
                        let list = missing.entry((path.clone(), field, key)).or_default();
                        if !list.contains(&name.as_str()) {
                            list.push(name);
                        }
                    }
                }
            }
        }
    }
    for ((path, field, key), devices) in missing {
        let shown = format!("${{device.{field}.{key}}}");
        let span = cx.locs.get(&path).unwrap_or_default();
        let quoted: Vec<String> = devices.iter().map(|d| format!("`{d}`")).collect();
        let names = match quoted.split_last() {
            Some((last, rest)) if !rest.is_empty() => format!("{} and {last}", rest.join(", ")),
            _ => quoted.concat(),
        };
        let what = if field == "vars" { "value" } else { "label" };
        let fix = format!("`{field}: {{ {key}: ... }}`");
        cx.emit(
            cx.error(
                Code::UndefinedDeviceValue,
                span,
                format!("`{shown}` is used on {names}, which {} no such {what}", if devices.len() == 1 { "has" } else { "have" }),
            )
            .label(format!("undefined on {names}"))
            .help(format!("give each of these devices {fix} under `devices:`, or narrow the binding's `devices`")),
        );
    }
}

/// Cross-references: binding → function, selector → devices, unique binding names, unused
/// functions.
fn check_references(cx: &mut Cx<'_>, m: &Manifest) {
    // Function names as written, even those whose definition had errors, so that a broken
    // function does not also show up as "unknown" in every binding that uses it.
    let defined: Vec<String> = m.functions.keys().cloned().collect();
    let mut names: BTreeMap<String, Span> = BTreeMap::new();
    for (i, b) in m.bindings.iter().enumerate() {
        let path = format!("bindings[{i}]");
        let span = cx.locs.get(&format!("{path}.function")).unwrap_or_default();
        if cx.locs.get(&format!("functions.{}", b.function)).is_none() {
            let suggestion = did_you_mean(&b.function, defined.iter().map(String::as_str));
            cx.emit(
                cx.error(Code::UnknownFunction, span, format!("binding #{} runs `{}`, which is not defined", i + 1, b.function))
                    .label(match suggestion {
                        Some(s) => format!("did you mean `{s}`?"),
                        None => "no such function".to_owned(),
                    })
                    .help(if defined.is_empty() {
                        "define it under `functions:`, or create one with `edgefn new NAME --runtime python3`".to_owned()
                    } else {
                        format!("define it under `functions:`, or use one of {}", crate::decode::list(&defined.iter().map(String::as_str).collect::<Vec<_>>()))
                    }),
            );
        }

        let name = b.effective_name().to_owned();
        let name_span = cx.locs.get(&format!("{path}.name")).unwrap_or(span);
        if let Some(first) = names.get(&name) {
            cx.emit(
                cx.error(Code::DuplicateName, name_span, format!("two bindings are named `{name}`"))
                    .label("second binding with this name")
                    .with_label(*first, "first one")
                    .help("a binding is named after its function unless it says `name:`; give one of them a distinct `name:`"),
            );
        } else {
            names.insert(name, name_span);
        }
        check_selector(
            cx,
            m,
            &b.devices,
            &format!("{path}.devices"),
            &format!("binding #{}", i + 1),
        );
    }
    for (i, r) in m.routes.iter().enumerate() {
        if let Some(sel) = &r.devices {
            check_selector(
                cx,
                m,
                sel,
                &format!("routes[{i}].devices"),
                &format!("route #{}", i + 1),
            );
        }
    }
    check_model_refs(cx, m);
    for name in &defined {
        if !cx.referenced.contains(&format!("function:{name}")) {
            let span = cx
                .locs
                .get(&format!("functions.{name}"))
                .unwrap_or_default();
            cx.emit(
                cx.warning(
                    Code::UnusedFunction,
                    span,
                    format!("function `{name}` is not bound to any device"),
                )
                .label("never runs")
                .help(format!(
                    "add a binding with `function: {name}` to run it, or remove it"
                )),
            );
        }
    }
}

fn check_selector(cx: &mut Cx<'_>, m: &Manifest, sel: &DeviceSelector, path: &str, owner: &str) {
    let span = cx
        .locs
        .get(path)
        .map(|s| first_line(cx.source, s))
        .unwrap_or_default();
    if let DeviceSelector::Names(names) = sel {
        let mut unknown = false;
        for (j, name) in names.iter().enumerate() {
            if !m.devices.contains_key(name) {
                unknown = true;
                let at = cx.locs.get(&format!("{path}.names[{j}]")).unwrap_or(span);
                let suggestion = did_you_mean(name, m.devices.keys().map(String::as_str));
                cx.emit(
                    cx.error(
                        Code::UnknownDevice,
                        at,
                        format!("{owner} selects device `{name}`, which is not defined"),
                    )
                    .label(match suggestion {
                        Some(s) => format!("did you mean `{s}`?"),
                        None => "no such device".to_owned(),
                    })
                    .help("add it under `devices:`, or correct the name"),
                );
            }
        }
        if unknown {
            return;
        }
    }
    if !m.devices.iter().any(|(n, d)| sel.matches(n, d)) {
        cx.emit(
            cx.warning(Code::SelectorMatchesNothing, span, format!("{owner} selects no device"))
                .label("matches no device")
                .help("no device has all these labels: check the labels under `devices:`; this runs nowhere until one does"),
        );
    }
}

/// Normalises a relative path lexically; `None` when it climbs above its start.
fn normalise(rel: &str) -> Option<String> {
    let mut parts: Vec<&str> = Vec::new();
    for part in rel.split('/') {
        match part {
            "" | "." => {}
            ".." => {
                parts.pop()?;
            }
            p => parts.push(p),
        }
    }
    Some(parts.join("/"))
}

fn join(a: &str, b: &str) -> String {
    if a.is_empty() {
        b.to_owned()
    } else {
        format!("{a}/{b}")
    }
}

/// Every model a function or binding names is defined under `models:`.
fn check_model_refs(cx: &mut Cx<'_>, m: &Manifest) {
    let defined: Vec<&str> = m.models.iter().map(|m| m.name.as_str()).collect();
    let mut uses: Vec<(String, String, &Vec<String>)> = m
        .functions
        .iter()
        .map(|(n, f)| {
            (
                format!("functions.{n}"),
                format!("function `{n}`"),
                &f.models,
            )
        })
        .collect();
    uses.extend(m.bindings.iter().enumerate().map(|(i, b)| {
        (
            format!("bindings[{i}]"),
            format!("binding #{}", i + 1),
            &b.models,
        )
    }));
    for (path, owner, names) in uses {
        for (j, name) in names.iter().enumerate() {
            if defined.contains(&name.as_str()) {
                continue;
            }
            let span = cx
                .locs
                .get(&format!("{path}.models[{j}]"))
                .unwrap_or_default();
            let suggestion = did_you_mean(name, defined.iter().copied());
            cx.emit(
                cx.error(Code::UnknownModel, span, format!("{owner} names the model `{name}`, which is not defined"))
                    .label(match suggestion {
                        Some(s) => format!("did you mean `{s}`?"),
                        None => "no such model".to_owned(),
                    })
                    .help(if defined.is_empty() {
                        format!("define it under `models:` (`models: [ {{ name: {name}, path: models/FILE }} ]`), or remove it")
                    } else {
                        format!("define it under `models:`, or use one of {}", crate::decode::list(&defined))
                    }),
            );
        }
    }
}

/// Each model's file or folder exists and stays inside the project.
fn check_model_files(cx: &mut Cx<'_>, m: &Manifest, files: &dyn ProjectFiles) {
    for (i, model) in m.models.iter().enumerate() {
        let span = cx
            .locs
            .get(&format!("models[{i}].path"))
            .unwrap_or_default();
        let owner = format!("model `{}`", model.name);
        let outside = |cx: &mut Cx<'_>, why: &str| {
            cx.emit(
                cx.error(Code::PathOutsideProject, span, format!("the path of {owner} {why}"))
                    .label("outside the project")
                    .help("a model must live in the project, next to edgefn.yaml, so it can be uploaded: use a relative path such as `models/NAME.onnx`"),
            );
        };
        let p = &model.path;
        if p.starts_with('/') || p.contains('\\') || p.get(1..2) == Some(":") {
            outside(cx, "is absolute");
            continue;
        }
        let Some(rel) = normalise(p).filter(|r| !r.is_empty()) else {
            outside(cx, "leaves the project folder");
            continue;
        };
        if files.kind(&rel).is_none() {
            cx.emit(
                cx.error(
                    Code::PathMissing,
                    span,
                    format!("the file `{p}` of {owner} does not exist"),
                )
                .label("no such file or folder")
                .help("put the model's file (or folder) there, or correct the path; edgefn fetches nothing at run time"),
            );
            continue;
        }
        if !files.is_inside(&rel) {
            outside(
                cx,
                "resolves (through a symlink) to a path outside the project",
            );
        }
    }
}

/// The project's files: function folders and handler files exist and stay inside the project.
fn check_files(cx: &mut Cx<'_>, m: &Manifest, files: &dyn ProjectFiles) {
    check_model_files(cx, m, files);
    for (name, f) in &m.functions {
        let span = cx
            .locs
            .get(&format!("functions.{name}.path"))
            .unwrap_or_default();
        let owner = format!("function `{name}`");
        let outside = |cx: &mut Cx<'_>, why: &str| {
            cx.emit(
                cx.error(Code::PathOutsideProject, span, format!("the path of {owner} {why}"))
                    .label("outside the project")
                    .help("a function's code must live in the project, next to edgefn.yaml, so it can be packaged: use a relative path such as `functions/NAME`"),
            );
        };
        if f.path.starts_with('/') || f.path.contains('\\') || f.path.get(1..2) == Some(":") {
            outside(cx, "is absolute");
            continue;
        }
        let Some(dir) = normalise(&f.path) else {
            outside(cx, "leaves the project folder");
            continue;
        };
        if dir.is_empty() {
            outside(cx, "is the project folder itself");
            continue;
        }
        match files.kind(&dir) {
            None => {
                cx.emit(
                    cx.error(
                        Code::PathMissing,
                        span,
                        format!("the folder `{}` of {owner} does not exist", f.path),
                    )
                    .label("no such folder")
                    .help(format!(
                        "create it, or scaffold it with `edgefn new {name} --runtime {}`",
                        f.runtime
                    )),
                );
                continue;
            }
            Some(EntryKind::File) => {
                cx.emit(
                    cx.error(
                        Code::PathMissing,
                        span,
                        format!("the path `{}` of {owner} is a file, not a folder", f.path),
                    )
                    .label("a file")
                    .help("a function's path is the folder holding its code"),
                );
                continue;
            }
            Some(EntryKind::Dir) => {}
        }
        if !files.is_inside(&dir) {
            outside(
                cx,
                "resolves (through a symlink) to a folder outside the project",
            );
            continue;
        }
        check_handler_file(cx, name, f, &dir, files);
    }
}

fn check_handler_file(
    cx: &mut Cx<'_>,
    name: &str,
    f: &Function,
    dir: &str,
    files: &dyn ProjectFiles,
) {
    let span = cx
        .locs
        .get(&format!("functions.{name}.handler"))
        .unwrap_or_default();
    let (candidates, shown): (Vec<String>, String) = match (&f.runtime, &f.handler) {
        (Runtime::Python3, Handler::Entry(h)) => {
            let module = h
                .rsplit_once('.')
                .map_or(h.as_str(), |(m, _)| m)
                .replace('.', "/");
            (
                vec![format!("{module}.py"), format!("{module}/__init__.py")],
                format!("{module}.py"),
            )
        }
        (Runtime::Node, Handler::Entry(h)) => {
            let file = h.rsplit_once('.').map_or(h.as_str(), |(f, _)| f);
            (
                ["", ".js", ".mjs", ".cjs"]
                    .iter()
                    .map(|ext| format!("{file}{ext}"))
                    .collect(),
                format!("{file}.js"),
            )
        }
        (Runtime::Exec, h) => {
            let argv = h.argv();
            let program = argv.first().cloned().unwrap_or_default();
            // A bare command (`python3`) is looked up on the device's PATH, an absolute one is
            // the device's own: only a path relative to the function folder is checked here.
            if program.starts_with('/') || !program.contains('/') {
                return;
            }
            (vec![program.clone()], program)
        }
        _ => return,
    };
    let found = candidates.iter().any(|c| {
        normalise(&join(dir, c))
            .is_some_and(|p| files.kind(&p) == Some(EntryKind::File) && files.is_inside(&p))
    });
    if !found {
        cx.emit(
            cx.error(
                Code::HandlerMissing,
                span,
                format!(
                    "the handler of function `{name}` needs `{shown}`, which is not in `{dir}`"
                ),
            )
            .label(format!("{dir}/{shown} not found"))
            .help(format!(
                "create `{dir}/{shown}`, or point `handler` at a file that exists"
            )),
        );
    }
}

impl ProjectFiles for NoFiles {
    fn kind(&self, _: &str) -> Option<EntryKind> {
        None
    }
    fn is_inside(&self, _: &str) -> bool {
        true
    }
}

//! Desired-state resolution: what one device should run under a manifest.
//!
//! [`resolve`] is a pure function of the manifest, the device's name and the functions' bundle
//! digests. Its result holds only what concerns that device (its functions, bindings with
//! effective limits, routes), in a canonical order, so [`DesiredState::digest`] changes exactly
//! when something the device runs changes: a device a change does not touch keeps its digest.

use std::collections::BTreeMap;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::manifest::{
    Handler, Interface, Manifest, Mode, Platform, RouteTarget, Runtime, defaults,
};

/// Everything one device runs.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct DesiredState {
    /// Project name.
    pub project: String,
    /// Device name.
    pub device: String,
    /// The functions this device's bindings use, by name.
    pub functions: BTreeMap<String, ResolvedFunction>,
    /// The bindings that select this device, sorted by name.
    pub bindings: Vec<ResolvedBinding>,
    /// The routes that apply to this device, in manifest order.
    pub routes: Vec<ResolvedRoute>,
    /// The models this device's bindings name, by name, each with its artifact's digest;
    /// absent when there are none, so the digests of existing desired states do not change.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub models: Models,
}

/// A model as shipped: its artifact's sha256 and whether it is a file or a folder.
///
/// A file model's artifact is the file's bytes, unchanged (so its digest is what `sha256sum`
/// prints, and nothing is compressed); a folder model's is a bundle of the folder
/// ([`crate::bundle`] format).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ModelArtifact {
    /// sha256 (lowercase hex) of the artifact.
    pub digest: String,
    /// A file or a folder.
    pub kind: ModelKind,
}

/// What a model is on disk.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub enum ModelKind {
    /// One file, shipped as it is.
    File,
    /// A folder, shipped as a bundle.
    Folder,
}

/// Models: model name → artifact (see [`resolve_with_models`]).
pub type Models = BTreeMap<String, ModelArtifact>;

/// A function's code, as a device needs it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ResolvedFunction {
    /// Language runtime.
    pub runtime: Runtime,
    /// Entry point.
    pub handler: Handler,
    /// How an exec function takes its events; absent for the default (`protocol`), so the
    /// digests of existing desired states do not change.
    #[serde(default, skip_serializing_if = "Interface::is_protocol")]
    pub interface: Interface,
    /// sha256 of the function's bundle, when packaged.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bundle: Option<String>,
    /// sha256 of the function's dependency layer for this device's platform (a bundle of the
    /// same format: pip's `--target` folder for python3, a `node_modules/` folder for node);
    /// absent when the function has none, so the digests of existing desired states do not
    /// change.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub layer: Option<String>,
}

impl ResolvedFunction {
    /// The archives this function needs on the device, by digest: its bundle, then its layer.
    pub fn archives(&self) -> impl Iterator<Item = &String> {
        self.bundle.iter().chain(self.layer.iter())
    }
}

/// Dependency layers: function name → platform → layer digest (see [`resolve_with_layers`]).
pub type Layers = BTreeMap<String, BTreeMap<Platform, String>>;

/// A binding with every default and override applied.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ResolvedBinding {
    /// Binding name, unique on the device.
    pub name: String,
    /// Function it runs.
    pub function: String,
    /// Triggered or continuous.
    pub mode: Mode,
    /// Topic filters (triggered).
    pub triggers: Vec<String>,
    /// Most warm instances.
    pub concurrency: u32,
    /// Idle instances are stopped after this many milliseconds.
    pub idle_timeout_ms: u64,
    /// Memory limit in bytes.
    pub memory_bytes: u64,
    /// CPU limit in millicores.
    pub cpu_millis: u32,
    /// Invocation timeout in milliseconds.
    pub timeout_ms: u64,
    /// Environment: the function's, then the binding's overrides.
    pub env: BTreeMap<String, String>,
    /// The secrets handed to the function as files, by name, each with the version it runs
    /// with (see [`DesiredState::pin_secrets`]; 0 where none is pinned, as for `edgefn test`,
    /// which reads local values). Never a value: a new version moves the digest, so setting a
    /// secret is a rollout. Absent when there are none, so existing digests do not change.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub secrets: BTreeMap<String, u64>,
    /// Device nodes the function may open (`/dev/...`, sorted, each once): the function's
    /// `deviceNodes`, then the binding's. Absent when empty, so existing digests do not change.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub device_nodes: Vec<String>,
    /// The GPU whose nodes and driver libraries the function gets (expanded on the device,
    /// which knows how many GPUs it has). Absent when none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gpu: Option<crate::manifest::Gpu>,
    /// The models handed to the function (the function's and the binding's, sorted), each
    /// described in [`DesiredState::models`]. Absent when there are none.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub models: Vec<String>,
}

/// A route as it applies on a device.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ResolvedRoute {
    /// Topic filter on the source side (without `cloud:`).
    pub filter: String,
    /// Direction.
    pub to: RouteTarget,
}

impl DesiredState {
    /// A stable digest of the state: sha256 (hex) of its canonical JSON.
    ///
    /// Canonical because every map is a `BTreeMap`, every list is in a defined order, and
    /// serde_json writes struct fields in declaration order.
    pub fn digest(&self) -> String {
        self.json_and_digest().1
    }

    /// The state's canonical JSON and its [`digest`](Self::digest), from one serialization: a
    /// control plane that sends the JSON and the digest together (the body of
    /// `GET /v1/devices/{name}/desired` and its ETag) need not serialize the state twice.
    pub fn json_and_digest(&self) -> (Vec<u8>, String) {
        let json = serde_json::to_vec(self).expect("desired state serializes");
        let digest = hex(&Sha256::digest(&json));
        (json, digest)
    }

    /// Pins every secret the bindings name to its version in `versions` (name → version);
    /// names `versions` lacks keep the version they had. The control plane pins the versions a
    /// revision recorded when it was committed.
    pub fn pin_secrets(&mut self, versions: &BTreeMap<String, u64>) {
        for b in &mut self.bindings {
            for (name, version) in &mut b.secrets {
                if let Some(v) = versions.get(name) {
                    *version = *v;
                }
            }
        }
    }

    /// Every secret the bindings name, with its version, sorted by name.
    pub fn secrets(&self) -> BTreeMap<String, u64> {
        self.bindings
            .iter()
            .flat_map(|b| b.secrets.iter().map(|(n, v)| (n.clone(), *v)))
            .collect()
    }

    /// The state of a device that runs nothing: what the control plane serves a registered
    /// device its manifest does not list.
    pub fn empty(project: &str, device: &str) -> DesiredState {
        DesiredState {
            project: project.to_owned(),
            device: device.to_owned(),
            functions: BTreeMap::new(),
            bindings: Vec::new(),
            routes: Vec::new(),
            models: Models::new(),
        }
    }

    /// Every archive the device downloads, keeps and may read for this state, by digest,
    /// sorted and without repeats: the functions' bundles and layers, and the models.
    pub fn artifacts(&self) -> Vec<String> {
        let mut all: Vec<String> = self
            .functions
            .values()
            .flat_map(|f| f.archives().cloned())
            .chain(self.models.values().map(|m| m.digest.clone()))
            .collect();
        all.sort();
        all.dedup();
        all
    }

    /// True when the device runs nothing.
    pub fn is_empty(&self) -> bool {
        self.bindings.is_empty() && self.routes.is_empty()
    }

    /// The routes that carry a message on `topic` to `to`, in manifest order: with
    /// [`RouteTarget::Cloud`], those sending a message on the device's bus up to the cloud;
    /// with [`RouteTarget::Local`], those bringing a message the cloud sent down on `topic`
    /// onto the bus (the agent drops anything no route brings down).
    pub fn routes_to<'a>(
        &'a self,
        to: RouteTarget,
        topic: &'a str,
    ) -> impl Iterator<Item = &'a ResolvedRoute> + 'a {
        self.routes.iter().filter(move |r| r.carries(to, topic))
    }

    /// Whether a route sends a message on the device's bus on `topic` up to the cloud.
    pub fn sends_up(&self, topic: &str) -> bool {
        self.routes_to(RouteTarget::Cloud, topic).next().is_some()
    }

    /// Whether a route brings a message the cloud sent down on `topic` onto the device's bus.
    pub fn brings_down(&self, topic: &str) -> bool {
        self.routes_to(RouteTarget::Local, topic).next().is_some()
    }

    /// The bindings a message on the device's bus on `topic` invokes, sorted by name (the
    /// order of [`DesiredState::bindings`]).
    pub fn triggered_by<'a>(
        &'a self,
        topic: &'a str,
    ) -> impl Iterator<Item = &'a ResolvedBinding> + 'a {
        self.bindings
            .iter()
            .filter(move |b| b.is_triggered_by(topic))
    }

    /// The binding an invocation on request (`POST /v1/devices/{name}/invoke`, `edgefn invoke
    /// --device`) runs for `name`: the triggered binding of that name, else the one triggered
    /// binding of the function of that name. Continuous bindings have no invocations to give.
    ///
    /// # Errors
    ///
    /// [`NotInvocable`]: nothing of that name runs here as a triggered binding (with the
    /// closest name as a suggestion and the names that would do), or the function has several
    /// triggered bindings here (name one).
    pub fn binding_to_invoke(&self, name: &str) -> Result<&ResolvedBinding, NotInvocable> {
        let triggered = || self.bindings.iter().filter(|b| b.mode == Mode::Triggered);
        if let Some(b) = triggered().find(|b| b.name == name) {
            return Ok(b);
        }
        let of_function: Vec<&ResolvedBinding> =
            triggered().filter(|b| b.function == name).collect();
        match of_function.as_slice() {
            [one] => Ok(one),
            [] => {
                let mut names: Vec<String> = triggered()
                    .flat_map(|b| [b.name.clone(), b.function.clone()])
                    .collect();
                names.sort();
                names.dedup();
                let continuous = self
                    .bindings
                    .iter()
                    .any(|b| b.mode == Mode::Continuous && (b.name == name || b.function == name));
                let suggestion =
                    crate::diagnostic::did_you_mean(name, names.iter().map(String::as_str))
                        .map(str::to_owned);
                Err(NotInvocable::NotBound {
                    name: name.to_owned(),
                    device: self.device.clone(),
                    continuous,
                    suggestion,
                    names,
                })
            }
            several => Err(NotInvocable::Ambiguous {
                name: name.to_owned(),
                device: self.device.clone(),
                bindings: several.iter().map(|b| b.name.clone()).collect(),
            }),
        }
    }
}

/// Why [`DesiredState::binding_to_invoke`] found no binding to invoke.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NotInvocable {
    /// No triggered binding or function of that name on the device.
    #[error(
        "`{name}` is not a triggered binding or function of device `{device}`{}{}",
        if *.continuous { " (it runs there continuously: a continuous binding takes no invocations)" } else { "" },
        match (.suggestion, .names.is_empty()) {
            (Some(s), _) => format!("; did you mean `{s}`?"),
            (None, true) => "; it runs no triggered function (bind one in the manifest and apply it)".to_owned(),
            (None, false) => format!("; it runs {}", .names.iter().map(|n| format!("`{n}`")).collect::<Vec<_>>().join(", ")),
        }
    )]
    NotBound {
        /// The name asked for.
        name: String,
        /// The device.
        device: String,
        /// Whether a continuous binding has that name (or runs that function).
        continuous: bool,
        /// The closest name that would do, when one is close.
        suggestion: Option<String>,
        /// The bindings and functions that would do, sorted.
        names: Vec<String>,
    },
    /// The function has several triggered bindings on the device.
    #[error(
        "function `{name}` has several bindings on device `{device}`: name one of {}",
        .bindings.iter().map(|b| format!("`{b}`")).collect::<Vec<_>>().join(", ")
    )]
    Ambiguous {
        /// The function.
        name: String,
        /// The device.
        device: String,
        /// Its triggered bindings there.
        bindings: Vec<String>,
    },
}

impl ResolvedRoute {
    /// Whether this route carries a message on `topic` to `to`: the one rule of routing,
    /// behind [`DesiredState::routes_to`].
    pub fn carries(&self, to: RouteTarget, topic: &str) -> bool {
        self.to == to && crate::topic::matches(&self.filter, topic)
    }
}

impl ResolvedBinding {
    /// Whether a message on `topic` invokes this binding: it is triggered and one of its
    /// triggers matches. The one rule of triggering, behind [`DesiredState::triggered_by`].
    pub fn is_triggered_by(&self, topic: &str) -> bool {
        self.mode == Mode::Triggered
            && self
                .triggers
                .iter()
                .any(|f| crate::topic::matches(f, topic))
    }
}

/// Lowercase hex of bytes.
pub fn hex(bytes: &[u8]) -> String {
    use std::fmt::Write;
    bytes
        .iter()
        .fold(String::with_capacity(bytes.len() * 2), |mut s, b| {
            let _ = write!(s, "{b:02x}");
            s
        })
}

/// A binding of `function` with the function's settings and the defaults, as if a binding
/// named after it said nothing else (for running a function outside any binding, as
/// `edgefn invoke` does). `None` when there is no such function.
pub fn defaults_binding(manifest: &Manifest, function: &str) -> Option<ResolvedBinding> {
    let f = manifest.functions.get(function)?;
    Some(ResolvedBinding {
        name: function.to_owned(),
        function: function.to_owned(),
        mode: Mode::Triggered,
        triggers: Vec::new(),
        concurrency: defaults::CONCURRENCY,
        idle_timeout_ms: defaults::IDLE_TIMEOUT.millis(),
        memory_bytes: f.memory.unwrap_or(defaults::MEMORY).bytes(),
        cpu_millis: f.cpu.unwrap_or(defaults::CPU).millis(),
        timeout_ms: f.timeout.unwrap_or(defaults::TIMEOUT).millis(),
        env: f.env.clone(),
        secrets: f.secrets.iter().map(|n| (n.clone(), 0)).collect(),
        device_nodes: {
            let mut paths = f.device_nodes.clone();
            paths.sort();
            paths.dedup();
            paths
        },
        gpu: f.gpu,
        models: f.models.clone(),
    })
}

/// What `device` runs under `manifest`; `bundles` maps function names to bundle digests.
///
/// Returns `None` when the manifest has no such device. The functions have no dependency
/// layers: [`resolve_with_layers`] names them.
pub fn resolve(
    manifest: &Manifest,
    device: &str,
    bundles: &BTreeMap<String, String>,
) -> Option<DesiredState> {
    resolve_with_layers(manifest, device, bundles, &Layers::new())
}

/// [`resolve`], with each function's dependency layer for the device's platform
/// ([`crate::Device::platform`]) taken from `layers` (function → platform → digest). A function
/// without a layer for that platform gets none.
pub fn resolve_with_layers(
    manifest: &Manifest,
    device: &str,
    bundles: &BTreeMap<String, String>,
    layers: &Layers,
) -> Option<DesiredState> {
    resolve_with_models(manifest, device, bundles, layers, &Models::new())
}

/// [`resolve_with_layers`], with the artifacts of the models the device's bindings name taken
/// from `models` (model name → artifact). A model `models` lacks is left out of
/// [`DesiredState::models`] (the binding still names it).
pub fn resolve_with_models(
    manifest: &Manifest,
    device: &str,
    bundles: &BTreeMap<String, String>,
    layers: &Layers,
    models: &Models,
) -> Option<DesiredState> {
    let dev = manifest.devices.get(device)?;
    let platform = dev.platform();
    let mut functions = BTreeMap::new();
    let mut bindings = Vec::new();
    for b in manifest
        .bindings
        .iter()
        .filter(|b| b.devices.matches(device, dev))
    {
        let Some(f) = manifest.functions.get(&b.function) else {
            continue;
        };
        functions.insert(
            b.function.clone(),
            ResolvedFunction {
                runtime: f.runtime,
                handler: f.handler.clone(),
                interface: f.interface,
                bundle: bundles.get(&b.function).cloned(),
                layer: layers
                    .get(&b.function)
                    .and_then(|by| by.get(&platform))
                    .cloned(),
            },
        );
        let mut env = f.env.clone();
        env.extend(b.env.clone());
        // Per-device values; a validated manifest defines every one (a placeholder that cannot
        // be expanded is kept as written).
        for v in env.values_mut() {
            if let Ok(expanded) = crate::vars::expand(v, device, dev) {
                *v = expanded;
            }
        }
        let (triggers, concurrency, idle) = match b.mode {
            Mode::Triggered => (
                b.triggers.iter().map(|t| t.topic.clone()).collect(),
                b.concurrency.unwrap_or(defaults::CONCURRENCY),
                b.idle_timeout.unwrap_or(defaults::IDLE_TIMEOUT).millis(),
            ),
            // A continuous binding is one instance that never idles.
            Mode::Continuous => (Vec::new(), 1, 0),
        };
        bindings.push(ResolvedBinding {
            name: b.effective_name().to_owned(),
            function: b.function.clone(),
            mode: b.mode,
            triggers,
            concurrency,
            idle_timeout_ms: idle,
            memory_bytes: b.memory.or(f.memory).unwrap_or(defaults::MEMORY).bytes(),
            cpu_millis: b.cpu.or(f.cpu).unwrap_or(defaults::CPU).millis(),
            timeout_ms: b
                .timeout
                .or(f.timeout)
                .unwrap_or(defaults::TIMEOUT)
                .millis(),
            env,
            secrets: b
                .secret_names(Some(f))
                .into_iter()
                .map(|n| (n, 0))
                .collect(),
            device_nodes: b.device_node_paths(Some(f)),
            gpu: b.gpu.or(f.gpu),
            models: b.model_names(Some(f)),
        });
    }
    let used: Models = bindings
        .iter()
        .flat_map(|b| b.models.iter())
        .filter_map(|n| models.get(n).map(|a| (n.clone(), a.clone())))
        .collect();
    bindings.sort_by(|a, b| a.name.cmp(&b.name));
    let routes = manifest
        .routes
        .iter()
        .filter(|r| r.devices.as_ref().is_none_or(|s| s.matches(device, dev)))
        .map(|r| ResolvedRoute {
            filter: r.filter().to_owned(),
            to: r.to,
        })
        .collect();
    Some(DesiredState {
        project: manifest.project.clone(),
        device: device.to_owned(),
        functions,
        bindings,
        routes,
        models: used,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Source, load};

    const MANIFEST: &str = "apiVersion: edgefn/v1\nproject: p\nfunctions:\n  f: { path: f, runtime: python3, handler: main.handle }\n  g: { path: g, runtime: python3, handler: main.handle }\ndevices:\n  x86: {}\n  pi: { platform: linux/arm64 }\n  old-pi: { platform: linux/arm/v7 }\nbindings:\n  - { function: f, devices: { labels: {} }, triggers: [ { topic: a } ] }\n  - { function: g, devices: { names: [pi] }, triggers: [ { topic: b } ] }\n";

    #[test]
    fn each_device_gets_the_layer_of_its_platform_and_no_layer_changes_no_digest() {
        let m = load(&Source::new("edgefn.yaml", MANIFEST), None)
            .expect("valid")
            .manifest;
        let bundles: BTreeMap<String, String> = [
            ("f".to_owned(), "b".repeat(64)),
            ("g".to_owned(), "c".repeat(64)),
        ]
        .into();
        let layers: Layers = [(
            "f".to_owned(),
            [
                (Platform::LinuxAmd64, "1".repeat(64)),
                (Platform::LinuxArm64, "2".repeat(64)),
                (Platform::LinuxArmV7, "3".repeat(64)),
            ]
            .into(),
        )]
        .into();
        let layer = |d: &str, f: &str| {
            resolve_with_layers(&m, d, &bundles, &layers)
                .expect("device")
                .functions[f]
                .layer
                .clone()
        };
        assert_eq!(layer("x86", "f"), Some("1".repeat(64)), "default platform");
        assert_eq!(layer("pi", "f"), Some("2".repeat(64)));
        assert_eq!(layer("old-pi", "f"), Some("3".repeat(64)));
        assert_eq!(layer("pi", "g"), None, "g has no dependencies");
        let pi = resolve_with_layers(&m, "pi", &bundles, &layers).expect("device");
        let archives: Vec<&String> = pi.functions["f"].archives().collect();
        assert_eq!(archives, [&"b".repeat(64), &"2".repeat(64)]);
        // Without layers, a state is what it was before layers existed: no `layer` key.
        let plain = resolve(&m, "pi", &bundles).expect("device");
        let json = serde_json::to_string(&plain).expect("json");
        assert!(!json.contains("layer"), "{json}");
        // A new layer for one platform moves only the devices of that platform.
        let mut changed = layers.clone();
        changed
            .get_mut("f")
            .expect("f")
            .insert(Platform::LinuxArmV7, "4".repeat(64));
        let digest =
            |d: &str, l: &Layers| resolve_with_layers(&m, d, &bundles, l).expect("d").digest();
        assert_eq!(digest("x86", &layers), digest("x86", &changed));
        assert_eq!(digest("pi", &layers), digest("pi", &changed));
        assert_ne!(digest("old-pi", &layers), digest("old-pi", &changed));
    }

    #[test]
    fn a_device_gets_only_the_models_its_bindings_name_and_no_model_changes_no_digest() {
        let text = "apiVersion: edgefn/v1\nproject: p\nmodels:\n  - { name: digits, path: m/d.onnx }\n  - { name: words, path: m/w }\nfunctions:\n  f: { path: f, runtime: python3, handler: main.handle, models: [digits] }\n  g: { path: g, runtime: python3, handler: main.handle }\ndevices:\n  a: {}\n  b: {}\nbindings:\n  - { function: f, devices: { names: [a] }, triggers: [ { topic: x } ], models: [words] }\n  - { function: g, devices: { names: [b] }, triggers: [ { topic: y } ] }\n";
        let m = load(&Source::new("edgefn.yaml", text), None)
            .expect("valid")
            .manifest;
        let bundles: BTreeMap<String, String> = [
            ("f".to_owned(), "b".repeat(64)),
            ("g".to_owned(), "c".repeat(64)),
        ]
        .into();
        let artifact = |d: &str, kind| ModelArtifact {
            digest: d.repeat(64),
            kind,
        };
        let models: Models = [
            ("digits".to_owned(), artifact("1", ModelKind::File)),
            ("words".to_owned(), artifact("2", ModelKind::Folder)),
        ]
        .into();
        let a = resolve_with_models(&m, "a", &bundles, &Layers::new(), &models).expect("a");
        assert_eq!(a.bindings[0].models, ["digits", "words"]);
        assert_eq!(a.models, models);
        assert_eq!(
            a.artifacts(),
            ["1".repeat(64), "2".repeat(64), "b".repeat(64)]
        );
        // A device whose bindings name no model: the state it had before models existed.
        let b = resolve_with_models(&m, "b", &bundles, &Layers::new(), &models).expect("b");
        let json = serde_json::to_string(&b).expect("json");
        assert!(!json.contains("models"), "{json}");
        assert_eq!(b.digest(), resolve(&m, "b", &bundles).expect("b").digest());
        // A new model digest moves only the devices that use it; new code keeps the models.
        let mut changed = models.clone();
        changed.insert("digits".to_owned(), artifact("3", ModelKind::File));
        let digest = |d: &str, ms: &Models| {
            resolve_with_models(&m, d, &bundles, &Layers::new(), ms)
                .expect("d")
                .digest()
        };
        assert_ne!(digest("a", &models), digest("a", &changed));
        assert_eq!(digest("b", &models), digest("b", &changed));
    }
}

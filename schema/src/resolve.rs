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

use crate::manifest::{Handler, Interface, Manifest, Mode, RouteTarget, Runtime, defaults};

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
}

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
}

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
        let json = serde_json::to_vec(self).expect("desired state serializes");
        hex(&Sha256::digest(&json))
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
        }
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
    })
}

/// What `device` runs under `manifest`; `bundles` maps function names to bundle digests.
///
/// Returns `None` when the manifest has no such device.
pub fn resolve(
    manifest: &Manifest,
    device: &str,
    bundles: &BTreeMap<String, String>,
) -> Option<DesiredState> {
    let dev = manifest.devices.get(device)?;
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
        });
    }
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
    })
}

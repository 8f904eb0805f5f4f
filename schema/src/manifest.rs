//! The types of `edgefn.yaml`, version `edgefn/v1`.
//!
//! These types are the truth of the format: the JSON Schema is generated from them
//! (`schema/edgefn.schema.json`), [`crate::load()`] fills them from YAML with diagnostics, and
//! the control plane stores and serves them. Field names are camelCase, as in the file.

use std::collections::BTreeMap;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::quantity::{Cpu, Duration, FailureThreshold, Memory};

/// The only `apiVersion` this edgefn understands.
pub const API_VERSION: &str = "edgefn/v1";

/// Defaults applied where the manifest says nothing.
pub mod defaults {
    use super::*;
    /// Memory limit of a function instance.
    pub const MEMORY: Memory = Memory::mib(128);
    /// CPU limit of a function instance (one core).
    pub const CPU: Cpu = Cpu(1000);
    /// Time one invocation may take.
    pub const TIMEOUT: Duration = Duration::secs(10);
    /// Warm instances a triggered binding may run at once.
    pub const CONCURRENCY: u32 = 1;
    /// How long an idle warm instance is kept.
    pub const IDLE_TIMEOUT: Duration = Duration::secs(300);
}

/// Allowed ranges, checked by validation.
pub mod limits {
    use super::*;
    /// Smallest memory limit: below this no interpreter starts.
    pub const MIN_MEMORY: Memory = Memory::mib(4);
    /// Largest memory limit.
    pub const MAX_MEMORY: Memory = Memory(1 << 40);
    /// Smallest CPU limit (1 millicore).
    pub const MIN_CPU: Cpu = Cpu(1);
    /// Largest CPU limit (1024 cores).
    pub const MAX_CPU: Cpu = Cpu(1_024_000);
    /// Shortest invocation timeout.
    pub const MIN_TIMEOUT: Duration = Duration(1);
    /// Longest invocation timeout (one hour).
    pub const MAX_TIMEOUT: Duration = Duration(3_600_000);
    /// Longest idle timeout (one day).
    pub const MAX_IDLE_TIMEOUT: Duration = Duration(86_400_000);
    /// Most warm instances of one binding.
    pub const MAX_CONCURRENCY: u32 = 1024;
}

/// Whether `name` is a valid function, device, binding or project name: lowercase letters,
/// digits, `-` and `_`, starting and ending with a letter or digit, at most 63 characters. Names
/// end up in MQTT topics, folder names and container ids, so they keep to this safe alphabet.
pub fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 63
        && name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '_')
        && name.starts_with(|c: char| c.is_ascii_alphanumeric())
        && name.ends_with(|c: char| c.is_ascii_alphanumeric())
}

/// The closest valid name to `text` (lowercased, other characters made `-`, trimmed, cut at 63
/// characters); empty when nothing of it is usable.
pub fn suggest_name(text: &str) -> String {
    text.to_lowercase()
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' || c == '_' {
                c
            } else {
                '-'
            }
        })
        .collect::<String>()
        .trim_matches(['-', '_'])
        .chars()
        .take(63)
        .collect::<String>()
        .trim_end_matches(['-', '_'])
        .to_owned()
}

/// An edgefn project: its functions, its devices, and which functions run where.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
#[schemars(title = "edgefn manifest (edgefn.yaml)")]
pub struct Manifest {
    /// Format version; `edgefn/v1`.
    pub api_version: String,
    /// Project name (lowercase letters, digits and `-`).
    pub project: String,
    /// Functions by name. Each is one folder, packaged as one bundle.
    #[serde(default)]
    pub functions: BTreeMap<String, Function>,
    /// Devices by name.
    #[serde(default)]
    pub devices: BTreeMap<String, Device>,
    /// Which functions run on which devices, and how.
    #[serde(default)]
    pub bindings: Vec<Binding>,
    /// Message forwarding between each device's local bus and the cloud.
    #[serde(default)]
    pub routes: Vec<Route>,
    /// How each revision of this manifest reaches the fleet: in stages, each gated on the
    /// health of its devices (absent: every device at once).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rollout: Option<Rollout>,
    /// Machine-learning models (or any large read-only data): each a file or a folder of the
    /// project, shipped to the devices that run a function naming it as a content-addressed
    /// artifact (sha256), apart from the code, so a code-only change moves no model bytes.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub models: Vec<Model>,
}

/// A model: a file or a folder of the project that functions read at run time.
///
/// A function that names it (`models: [NAME]`, on the function or a binding) finds it at
/// `$EDGEFN_MODELS_DIR/NAME` (the file, or the folder, as in the project) and at
/// `$EDGEFN_MODEL_<NAME>` (the name upper-cased, `-` as `_`); read-only, at `/models/NAME` in a
/// container. It counts towards the memory limit of the instance that loads it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Model {
    /// The model's name (lowercase letters, digits and `-`), unique in the manifest.
    pub name: String,
    /// The file or folder, relative to the manifest (for example `models/digits.onnx`).
    pub path: String,
}

impl Model {
    /// The environment variable that holds the model's path: `EDGEFN_MODEL_` and the name
    /// upper-cased, `-` as `_` (`digits-v2` → `EDGEFN_MODEL_DIGITS_V2`).
    pub fn env_var(name: &str) -> String {
        format!(
            "EDGEFN_MODEL_{}",
            name.to_ascii_uppercase().replace('-', "_")
        )
    }
}

/// A progressive rollout: the control plane serves a new revision to one stage of devices at a
/// time, moves on when the stage's devices run it healthy for the stage's bake time, and halts
/// by itself — every device back on the previous revision — when a stage fails.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Rollout {
    /// The stages, in order. Each names the devices that run the new revision once it is
    /// reached (cumulative: a stage's devices include the earlier stages'); the last stage
    /// should reach every device (`percent: 100`), or the rollout completes with the rest on
    /// the new revision anyway.
    pub stages: Vec<RolloutStage>,
    /// How long a stage's devices have, from the stage's start, to report the new revision
    /// running; a device that has not by then halts the rollout (default `5m`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub deadline: Option<Duration>,
}

/// One stage of a [`Rollout`]: which devices it reaches, how long they must run healthy, and
/// how many may fail.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RolloutStage {
    /// Reach this many devices in all (the first in the rollout's stable order).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub devices: Option<u32>,
    /// Reach this percentage (1 to 100) of the devices in all, rounded up.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub percent: Option<u32>,
    /// Only devices with all these labels (with `devices` or `percent`: that many of them).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: BTreeMap<String, String>,
    /// How long the stage's devices must all run the revision converged before the next stage
    /// starts (default `0s`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bake: Option<Duration>,
    /// Failed devices the stage tolerates (default `0`): one more halts the rollout.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_failures: Option<FailureThreshold>,
}

impl Rollout {
    /// The default report deadline of a stage.
    pub const DEFAULT_DEADLINE: Duration = Duration::secs(300);

    /// The report deadline of each stage.
    pub fn deadline(&self) -> Duration {
        self.deadline.unwrap_or(Self::DEFAULT_DEADLINE)
    }
}

impl Manifest {
    /// Every secret the manifest names, with who names it (`function/NAME`, `binding/NAME`,
    /// sorted): what a revision of it needs set.
    pub fn secret_users(&self) -> BTreeMap<String, Vec<String>> {
        let mut users: BTreeMap<String, Vec<String>> = BTreeMap::new();
        for (name, f) in &self.functions {
            for s in &f.secrets {
                users
                    .entry(s.clone())
                    .or_default()
                    .push(format!("function/{name}"));
            }
        }
        for b in &self.bindings {
            for s in &b.secrets {
                users
                    .entry(s.clone())
                    .or_default()
                    .push(format!("binding/{}", b.effective_name()));
            }
        }
        for v in users.values_mut() {
            v.sort();
            v.dedup();
        }
        users
    }
}

/// A function: code in a folder, a runtime, a handler, and default limits.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Function {
    /// Folder of the function's code, relative to the manifest.
    pub path: String,
    /// Language runtime.
    pub runtime: Runtime,
    /// Entry point: `module.func` (python3), `file.export` (node), or an argv list (exec).
    pub handler: Handler,
    /// How an exec function takes its events (default `protocol`): see [`Interface`].
    #[serde(default, skip_serializing_if = "Interface::is_protocol")]
    pub interface: Interface,
    /// Memory limit per instance (default `128Mi`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub memory: Option<Memory>,
    /// CPU limit per instance in cores (default `1`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cpu: Option<Cpu>,
    /// Longest one invocation may take (default `10s`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout: Option<Duration>,
    /// Environment variables.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub env: BTreeMap<String, String>,
    /// Names of the secrets it needs (`edgefn secret set NAME`), each handed to it as a file:
    /// `/run/secrets/NAME` in a container, `$EDGEFN_SECRETS_DIR/NAME` in the process sandbox.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub secrets: Vec<String>,
    /// Names of the models it reads (defined under `models:`), found at
    /// `$EDGEFN_MODELS_DIR/NAME`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub models: Vec<String>,
    /// Device nodes its instances may open, absolute paths under `/dev` (for example
    /// `/dev/dri/renderD128`): bound into a container's `/dev` and allowed by its device cgroup
    /// (read, write, mknod), nothing else. A device that lacks one does not start the binding
    /// and rolls the release back. (`devices:` of a binding selects the fleet's devices, hence
    /// the name.)
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub device_nodes: Vec<String>,
    /// A GPU whose device nodes and driver libraries its instances get (see [`Gpu`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gpu: Option<Gpu>,
}

/// A GPU vendor whose device nodes and user-space driver a function gets: the shorthand for
/// listing them in `deviceNodes`.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize, JsonSchema,
)]
#[serde(rename_all = "lowercase")]
pub enum Gpu {
    /// NVIDIA: `/dev/nvidiactl`, `/dev/nvidia-uvm` and every `/dev/nvidia[0-9]*` (required),
    /// `/dev/nvidia-uvm-tools` and `/dev/nvidia-modeset` (when present), and the driver's
    /// user-space libraries (`libcuda`, `libnvidia-*`, ... as `ldconfig -p` lists them),
    /// read-only: what nvidia-container-toolkit maps for the `compute,utility` capabilities.
    Nvidia,
}

impl Gpu {
    /// Every vendor, in the order users see them.
    pub const ALL: [Gpu; 1] = [Gpu::Nvidia];

    /// The name used in the manifest.
    pub fn as_str(self) -> &'static str {
        match self {
            Gpu::Nvidia => "nvidia",
        }
    }
}

impl std::fmt::Display for Gpu {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Why `path` cannot be a device node a function asks for, or `None` when it can: an absolute
/// path under `/dev/`, without `.` or `..` components, empty components or a trailing `/`,
/// at most 255 bytes of printable ASCII without spaces.
pub fn device_node_problem(path: &str) -> Option<&'static str> {
    let Some(rest) = path.strip_prefix("/dev/") else {
        return Some("it is not an absolute path under `/dev/`");
    };
    if path.len() > 255 {
        return Some("it is longer than 255 bytes");
    }
    if !path.bytes().all(|b| b.is_ascii_graphic()) {
        return Some("it holds a space, a control character or a non-ASCII character");
    }
    if rest.split('/').any(|c| c.is_empty()) {
        return Some("it has an empty component (`//` or a trailing `/`)");
    }
    if rest.split('/').any(|c| c == "." || c == "..") {
        return Some("it has a `.` or `..` component");
    }
    None
}

/// Whether `name` is a valid secret name: the rule of [`valid_name`] (a secret's name is a file
/// name in the function's secrets folder, so it keeps to the same safe alphabet).
pub fn valid_secret_name(name: &str) -> bool {
    valid_name(name)
}

/// The language a function is written in.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize, JsonSchema,
)]
#[serde(rename_all = "lowercase")]
pub enum Runtime {
    /// Python 3; handler `module.func`, called as `func(event, context)`.
    Python3,
    /// Node.js; handler `file.export`, sync or async.
    Node,
    /// Any executable that speaks the invocation protocol; handler is its argv.
    Exec,
}

impl Runtime {
    /// Every runtime, in the order users see them.
    pub const ALL: [Runtime; 3] = [Runtime::Python3, Runtime::Node, Runtime::Exec];

    /// The name used in the manifest.
    pub fn as_str(self) -> &'static str {
        match self {
            Runtime::Python3 => "python3",
            Runtime::Node => "node",
            Runtime::Exec => "exec",
        }
    }
}

impl std::fmt::Display for Runtime {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// How an `exec` function takes events and gives results.
///
/// `stdio` is the contract of OpenFaaS's classic watchdog (one process per request, the request
/// on stdin, the response on stdout); `lines` is the same kept warm, one event per line, as the
/// serverless "line protocol" filters do. Python and node functions always use `protocol`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum Interface {
    /// The framed invocation protocol (`runtime/PROTOCOL.md`) on fd 3: warm instances,
    /// publishing, structured errors.
    #[default]
    Protocol,
    /// A plain program started once per event: the event's payload on stdin (closed after it),
    /// the result on stdout (one trailing newline removed), exit status 0 for success; stderr
    /// is its log.
    Stdio,
    /// A plain program kept warm that reads events in a loop: each event one line of JSON on
    /// stdin, each result one line on stdout (JSON, or else text), in order; stderr is its log.
    Lines,
}

impl Interface {
    /// Every interface, in the order users see them.
    pub const ALL: [Interface; 3] = [Interface::Protocol, Interface::Stdio, Interface::Lines];

    /// The name used in the manifest.
    pub fn as_str(self) -> &'static str {
        match self {
            Interface::Protocol => "protocol",
            Interface::Stdio => "stdio",
            Interface::Lines => "lines",
        }
    }

    /// Whether this is the default, framed protocol.
    pub fn is_protocol(&self) -> bool {
        *self == Interface::Protocol
    }
}

impl std::fmt::Display for Interface {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A function's entry point.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(untagged)]
pub enum Handler {
    /// `module.func` (python3), `file.export` (node), or a program path (exec).
    Entry(String),
    /// The argv of an exec function, program first.
    Argv(Vec<String>),
}

impl Handler {
    /// The handler as an argv list (an entry is a one-element list).
    pub fn argv(&self) -> Vec<String> {
        match self {
            Handler::Entry(e) => vec![e.clone()],
            Handler::Argv(v) => v.clone(),
        }
    }
}

/// A device of the fleet.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Device {
    /// Labels that bindings and routes select devices by.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: BTreeMap<String, String>,
    /// Values of this device that `env` can use: `${device.vars.KEY}` (see [`crate::vars`]).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub vars: BTreeMap<String, String>,
    /// The device's operating system and CPU, which its functions' dependency layers are built
    /// for (pip's wheels, npm's optional native packages): `linux/amd64` (the default, when
    /// absent), `linux/arm64` or `linux/arm/v7`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub platform: Option<Platform>,
}

impl Device {
    /// The platform the device's dependency layers are built for: its `platform:`, else
    /// [`Platform::DEFAULT`].
    pub fn platform(&self) -> Platform {
        self.platform.unwrap_or(Platform::DEFAULT)
    }
}

/// A device's operating system and CPU, in the OCI image index's spelling (`os/arch[/variant]`).
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize, JsonSchema,
)]
pub enum Platform {
    /// 64-bit x86 (`x86_64`).
    #[serde(rename = "linux/amd64")]
    LinuxAmd64,
    /// 64-bit ARM (`aarch64`: Raspberry Pi 3 and later with a 64-bit OS, Jetson, Graviton).
    #[serde(rename = "linux/arm64")]
    LinuxArm64,
    /// 32-bit ARMv7 with hard float (`armv7l`: Raspberry Pi OS 32-bit, many industrial boards).
    #[serde(rename = "linux/arm/v7")]
    LinuxArmV7,
}

impl Platform {
    /// Every platform, in the order users see them.
    pub const ALL: [Platform; 3] = [
        Platform::LinuxAmd64,
        Platform::LinuxArm64,
        Platform::LinuxArmV7,
    ];

    /// A device without `platform:`: `linux/amd64`, the same on every machine that reads the
    /// manifest (not the machine's own), so a manifest means one thing everywhere.
    pub const DEFAULT: Platform = Platform::LinuxAmd64;

    /// The name used in the manifest, e.g. `linux/arm/v7`.
    pub fn as_str(self) -> &'static str {
        match self {
            Platform::LinuxAmd64 => "linux/amd64",
            Platform::LinuxArm64 => "linux/arm64",
            Platform::LinuxArmV7 => "linux/arm/v7",
        }
    }

    /// The platform named `name` (as in the manifest).
    pub fn parse(name: &str) -> Option<Platform> {
        Platform::ALL.into_iter().find(|p| p.as_str() == name)
    }

    /// The platform of the machine this program was built for, when it is one of these.
    pub fn host() -> Option<Platform> {
        match std::env::consts::ARCH {
            "x86_64" => Some(Platform::LinuxAmd64),
            "aarch64" => Some(Platform::LinuxArm64),
            "arm" => Some(Platform::LinuxArmV7),
            _ => None,
        }
        .filter(|_| std::env::consts::OS == "linux")
    }
}

impl std::fmt::Display for Platform {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Which devices something applies to: by names, or by labels (all must match; `{}` matches
/// every device).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub enum DeviceSelector {
    /// These devices.
    Names(Vec<String>),
    /// Devices carrying all these labels.
    Labels(BTreeMap<String, String>),
}

impl DeviceSelector {
    /// Whether the selector picks the device `name` with `device`'s labels.
    pub fn matches(&self, name: &str, device: &Device) -> bool {
        match self {
            DeviceSelector::Names(names) => names.iter().any(|n| n == name),
            DeviceSelector::Labels(want) => {
                want.iter().all(|(k, v)| device.labels.get(k) == Some(v))
            }
        }
    }
}

/// How a function runs on a device.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    /// Invoked for each message matching a trigger, on warm instances.
    #[default]
    Triggered,
    /// One instance kept running, restarted with backoff when it exits.
    Continuous,
}

impl Mode {
    /// The name used in the manifest.
    pub fn as_str(self) -> &'static str {
        match self {
            Mode::Triggered => "triggered",
            Mode::Continuous => "continuous",
        }
    }
}

/// A message trigger.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Trigger {
    /// MQTT topic filter on the device bus (`+` one level, `#` the rest).
    pub topic: String,
}

/// Runs a function on the selected devices.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Binding {
    /// Name of the binding, unique in the manifest (default: the function's name).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// The function to run.
    pub function: String,
    /// Where to run it.
    pub devices: DeviceSelector,
    /// `triggered` (default) or `continuous`.
    #[serde(default)]
    pub mode: Mode,
    /// Topic filters that invoke a triggered function.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub triggers: Vec<Trigger>,
    /// Most warm instances at once (triggered; default 1).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub concurrency: Option<u32>,
    /// Stop a warm instance idle this long (triggered; default `5m`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub idle_timeout: Option<Duration>,
    /// Overrides the function's memory limit.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub memory: Option<Memory>,
    /// Overrides the function's CPU limit.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cpu: Option<Cpu>,
    /// Overrides the function's timeout.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout: Option<Duration>,
    /// Added to (and overriding) the function's environment.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub env: BTreeMap<String, String>,
    /// Secrets this binding needs besides its function's (see [`Function::secrets`]).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub secrets: Vec<String>,
    /// Device nodes this binding needs besides its function's (see [`Function::device_nodes`]).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub device_nodes: Vec<String>,
    /// Overrides the function's GPU (see [`Gpu`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gpu: Option<Gpu>,
    /// Models this binding hands its function besides the function's (see
    /// [`Function::models`]).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub models: Vec<String>,
}

impl Binding {
    /// The binding's name: its own, or its function's.
    pub fn effective_name(&self) -> &str {
        self.name.as_deref().unwrap_or(&self.function)
    }

    /// The secrets the binding hands its function: the function's, then its own, sorted and
    /// without repeats (`function` is the binding's function, when the manifest defines it).
    pub fn secret_names(&self, function: Option<&Function>) -> Vec<String> {
        let mut names: Vec<String> = function
            .map(|f| f.secrets.clone())
            .unwrap_or_default()
            .into_iter()
            .chain(self.secrets.iter().cloned())
            .collect();
        names.sort();
        names.dedup();
        names
    }

    /// The device nodes the binding hands its function: the function's, then its own, sorted
    /// and without repeats.
    pub fn device_node_paths(&self, function: Option<&Function>) -> Vec<String> {
        let mut paths: Vec<String> = function
            .map(|f| f.device_nodes.clone())
            .unwrap_or_default()
            .into_iter()
            .chain(self.device_nodes.iter().cloned())
            .collect();
        paths.sort();
        paths.dedup();
        paths
    }

    /// The models the binding hands its function: the function's, then its own, sorted and
    /// without repeats.
    pub fn model_names(&self, function: Option<&Function>) -> Vec<String> {
        let mut names: Vec<String> = function
            .map(|f| f.models.clone())
            .unwrap_or_default()
            .into_iter()
            .chain(self.models.iter().cloned())
            .collect();
        names.sort();
        names.dedup();
        names
    }
}

/// Forwards messages between a device's local bus and the cloud.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Route {
    /// Source topic filter: on the local bus (`alerts/#`), or on the cloud side with a
    /// `cloud:` prefix (`cloud:commands/#`).
    pub from: String,
    /// `cloud` (from the local bus up) or `local` (from the cloud down).
    pub to: RouteTarget,
    /// Devices the route applies to (default: all).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub devices: Option<DeviceSelector>,
}

/// Where a route delivers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum RouteTarget {
    /// Up to the cloud broker, under the device's namespace.
    Cloud,
    /// Onto the device's local bus.
    Local,
}

/// The prefix of a route source on the cloud side.
pub const CLOUD_PREFIX: &str = "cloud:";

impl Route {
    /// The source filter without its `cloud:` prefix.
    pub fn filter(&self) -> &str {
        self.from.strip_prefix(CLOUD_PREFIX).unwrap_or(&self.from)
    }
}

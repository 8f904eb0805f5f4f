//! The control plane's HTTP API: request and response bodies, shared by `edgefn-cloud`, the
//! CLI and the agent. The OpenAPI document (`cloud/openapi.json`) is generated from these types.

use std::collections::BTreeMap;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::resolve::DesiredState;

/// Every error response: `{"error": {"code": "...", "message": "..."}}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct ErrorBody {
    /// The error.
    pub error: ErrorDetail,
}

/// What went wrong.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct ErrorDetail {
    /// Stable machine-readable code, e.g. `conflict`, `digest_mismatch`, `unauthorized`.
    pub code: String,
    /// What is wrong and how to fix it.
    pub message: String,
    /// Details, e.g. the current revision on a conflict, or manifest diagnostics.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub details: Option<serde_json::Value>,
}

/// `POST /v1/bundles/missing`: which of these bundles the cloud lacks.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct MissingBundlesRequest {
    /// sha256 digests.
    pub digests: Vec<String>,
}

/// The answer to [`MissingBundlesRequest`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct MissingBundlesResponse {
    /// The digests the cloud does not have.
    pub missing: Vec<String>,
}

/// Where a revision came from.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Provenance {
    /// Git commit id.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub commit: Option<String>,
    /// Git branch.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub branch: Option<String>,
    /// Commit author, `Name <email>`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub author: Option<String>,
    /// First line of the commit message.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    /// Whether the work tree had uncommitted changes.
    #[serde(default)]
    pub dirty: bool,
    /// The tool that submitted it, e.g. `edgefn 0.1.0`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tool: Option<String>,
}

/// `POST /v1/revisions`: a manifest to apply.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct NewRevision {
    /// The manifest, as YAML text.
    pub manifest: String,
    /// Bundle digest of every function, by function name.
    pub bundles: BTreeMap<String, String>,
    /// Where it came from.
    #[serde(default)]
    pub provenance: Provenance,
    /// The revision this one was made against (`0` when there is none yet). When the latest
    /// revision differs, the cloud answers 409 and changes nothing.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expected_parent: Option<u64>,
}

/// A revision without its manifest.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct RevisionSummary {
    /// Revision number, from 1, with no gaps.
    pub number: u64,
    /// The revision it replaced (`0` for the first).
    pub parent: u64,
    /// When it was committed, in milliseconds since the Unix epoch.
    pub created_ms: u64,
    /// Where it came from.
    pub provenance: Provenance,
    /// Set when this revision is a rollback to an older one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rollback_of: Option<u64>,
}

/// A whole revision.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Revision {
    /// Number, parent, time, provenance.
    #[serde(flatten)]
    pub summary: RevisionSummary,
    /// The manifest, as YAML text.
    pub manifest: String,
    /// Bundle digest of every function.
    pub bundles: BTreeMap<String, String>,
}

/// The answer to `POST /v1/revisions` and `POST /v1/rollback`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ApplyResponse {
    /// The latest revision after the call.
    pub revision: u64,
    /// False when the submission equalled the latest revision: nothing was created.
    pub created: bool,
}

/// `POST /v1/rollback`.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct RollbackRequest {
    /// The revision to return to (default: the one before the latest).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub to: Option<u64>,
    /// As in [`NewRevision::expected_parent`].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expected_parent: Option<u64>,
}

/// `POST /v1/devices`: register a device.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct NewDevice {
    /// Device name, as in the manifest.
    pub name: String,
}

/// The answer to [`NewDevice`]. The token is shown this once; the cloud keeps only its hash.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct DeviceRegistered {
    /// Device name.
    pub name: String,
    /// The device's secret token.
    pub token: String,
    /// The broker URL devices are told to use (`edgefn-cloud --device-mqtt-url`), if set.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mqtt: Option<String>,
}

/// A registered device.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct DeviceInfo {
    /// Name.
    pub name: String,
    /// When it was registered (ms since the epoch).
    pub registered_ms: u64,
}

/// An admin token, as `GET /v1/tokens` lists it: never the token itself.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct AdminTokenInfo {
    /// Its id: the first 12 hex digits of the token's sha256 (`DELETE /v1/tokens/{id}`).
    pub id: String,
    /// What it is for, as given when it was created (`initial` for the first one).
    pub name: String,
    /// When it was created (ms since the epoch; `0` when unknown).
    pub created_ms: u64,
    /// Whether it is the token of this request.
    #[serde(default)]
    pub current: bool,
}

/// `POST /v1/tokens`: a new admin token.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct NewAdminToken {
    /// What it is for (`ci`, `alice`): 1 to 64 characters, letters, digits, `-`, `_`, `.`, `@`.
    pub name: String,
}

/// The answer to `POST /v1/tokens`: the token, shown this once (only its hash is kept).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct AdminTokenCreated {
    /// Its id.
    pub id: String,
    /// Its name.
    pub name: String,
    /// The token (`edgefn_adm_` + 64 hex digits).
    pub token: String,
}

/// `GET /v1/devices/{name}/desired`: what the device should run.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct DesiredResponse {
    /// The latest revision (`0` when nothing was applied yet).
    pub revision: u64,
    /// Digest of `state`; also the response's ETag.
    pub digest: String,
    /// What to run.
    pub state: DesiredState,
}

/// The state of a device's update.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum DeviceState {
    /// Downloading, staging or switching to a new release.
    Updating,
    /// Running its desired release.
    Running,
    /// A new release failed its health window; the previous one runs again.
    RolledBack,
    /// A release could not be applied (download, digest, extraction).
    Failed,
}

/// One binding's state on a device.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct FunctionStatus {
    /// Binding name.
    pub binding: String,
    /// e.g. `running`, `idle`, `backoff`, `crash_loop`.
    pub state: String,
    /// Restarts since the release started.
    #[serde(default)]
    pub restarts: u64,
    /// Invocations handled.
    #[serde(default)]
    pub invocations: u64,
    /// Invocations that failed.
    #[serde(default)]
    pub errors: u64,
    /// The last error.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_error: Option<String>,
}

/// `POST /v1/devices/{name}/status`: what a device runs.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct StatusReport {
    /// Digest of the desired state it runs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub running_digest: Option<String>,
    /// Revision it runs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub running_revision: Option<u64>,
    /// Update state.
    pub state: DeviceState,
    /// Digest of the desired state it was last asked to run (for `rolled_back` and `failed`:
    /// the one that failed).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target_digest: Option<String>,
    /// Why, for `rolled_back` and `failed`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    /// Per binding.
    #[serde(default)]
    pub functions: Vec<FunctionStatus>,
    /// The device's outbox of messages for the cloud.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub outbox: Option<OutboxStatus>,
    /// Its MQTT link to the cloud's broker, when it has one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub link: Option<LinkStatus>,
}

/// A device's MQTT link to the cloud's broker, as its agent sees it.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct LinkStatus {
    /// Connected now.
    pub up: bool,
    /// Since when it is up or down (ms since the epoch).
    pub since_ms: u64,
    /// The broker, `host:port`.
    pub broker: String,
    /// The last failure (refused login, unreachable broker, lost connection), kept after it
    /// recovered.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_error: Option<String>,
}

/// A device's outbox of messages for the cloud.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct OutboxStatus {
    /// Messages waiting to go up.
    pub pending: u64,
    /// Their payload bytes.
    pub pending_bytes: u64,
    /// Messages dropped for the outbox's size or age bound since it was created.
    pub dropped: u64,
    /// Messages the cloud's broker acknowledged since it was created.
    pub sent: u64,
    /// Messages set aside since it was created because the cloud's broker cannot take them
    /// (larger than it accepts, or refused), so that the messages behind them flow.
    #[serde(default)]
    pub rejected: u64,
}

/// One device in `GET /v1/status`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct DeviceStatus {
    /// Name.
    pub name: String,
    /// Has a token.
    pub registered: bool,
    /// Listed in the latest manifest.
    pub in_manifest: bool,
    /// Digest the device should run.
    pub desired_digest: String,
    /// Its last report.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub report: Option<StatusReport>,
    /// When it last reported (ms since the epoch).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_seen_ms: Option<u64>,
    /// Runs exactly its desired state.
    pub converged: bool,
}

/// `GET /v1/status`: the fleet.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct FleetStatus {
    /// The latest revision (`0` when none).
    pub revision: u64,
    /// Every device in the manifest or registered, by name.
    pub devices: Vec<DeviceStatus>,
}

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
    /// Stable machine-readable code, e.g. `conflict`, `digest_mismatch`, `unauthorized` (the
    /// codes of `ErrorCode`; a string, so that a client reads codes newer than itself).
    pub code: String,
    /// What is wrong and how to fix it.
    pub message: String,
    /// Details, e.g. the current revision on a conflict, or manifest diagnostics.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub details: Option<serde_json::Value>,
}

impl ErrorDetail {
    /// The code, when this edgefn knows it.
    pub fn code(&self) -> Option<ErrorCode> {
        ErrorCode::parse(&self.code)
    }
}

macro_rules! error_codes {
    ($($(#[$doc:meta])* $variant:ident => $name:literal, $status:literal;)*) => {
        /// The stable code of an API error ([`ErrorDetail::code`]), with the HTTP status it
        /// always comes with. Codes are part of the API: clients and scripts match them, so a
        /// code is never renamed or reused (like the manifest's [`crate::Code`]s).
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        pub enum ErrorCode {
            $($(#[$doc])* $variant,)*
        }

        impl ErrorCode {
            /// Every code, in declaration order.
            pub const ALL: &'static [ErrorCode] = &[$(ErrorCode::$variant,)*];

            /// The code on the wire, e.g. `digest_mismatch`.
            pub fn as_str(self) -> &'static str {
                match self {
                    $(ErrorCode::$variant => $name,)*
                }
            }

            /// The HTTP status of a response with this code.
            pub fn status(self) -> u16 {
                match self {
                    $(ErrorCode::$variant => $status,)*
                }
            }

            /// The code spelled `s`, if this edgefn knows it.
            pub fn parse(s: &str) -> Option<ErrorCode> {
                match s {
                    $($name => Some(ErrorCode::$variant),)*
                    _ => None,
                }
            }
        }
    };
}

error_codes! {
    /// A request the API cannot take (malformed JSON, a bad parameter).
    BadRequest => "bad_request", 400;
    /// No token, or one the control plane does not know.
    Unauthorized => "unauthorized", 401;
    /// A token without the right (a device's token on an admin endpoint).
    Forbidden => "forbidden", 403;
    /// No such resource.
    NotFound => "not_found", 404;
    /// The control plane failed; its log says why.
    Internal => "internal", 500;
    /// The latest revision is not the one the request was made against (details: `latest`).
    Conflict => "conflict", 409;
    /// The revision names bundles the control plane lacks (details: `missing`).
    MissingBundles => "missing_bundles", 422;
    /// A device of that name is registered already.
    DeviceExists => "device_exists", 409;
    /// A request body larger than the control plane takes.
    BodyTooLarge => "body_too_large", 413;
    /// The broker's queue for the message is full; try again.
    BrokerBusy => "broker_busy", 503;
    /// The control plane is not connected to its broker.
    BrokerUnreachable => "broker_unreachable", 503;
    /// The control plane's database cannot be reached: retry after the `Retry-After` header's
    /// seconds. A change it interrupted was not made, or (when the connection was lost while
    /// committing) was made whole: re-reading tells which.
    StoreUnavailable => "store_unavailable", 503;
    /// An uploaded bundle whose sha256 is not the digest it was sent under.
    DigestMismatch => "digest_mismatch", 400;
    /// A revision whose bundles do not match its functions.
    InvalidBundles => "invalid_bundles", 422;
    /// A manifest with errors (details: `diagnostics`).
    InvalidManifest => "invalid_manifest", 422;
    /// A topic or topic filter that is not valid MQTT (details: `help`).
    InvalidTopic => "invalid_topic", 400;
    /// Deleting the last admin token, which would lock everyone out.
    LastAdminToken => "last_admin_token", 409;
    /// A manifest larger than the control plane takes.
    ManifestTooLarge => "manifest_too_large", 413;
    /// The control plane runs without an MQTT broker.
    MessagesDisabled => "messages_disabled", 503;
    /// The broker could not store a message for its devices (`POST /v1/publish`): nothing
    /// was answered as sent; retrying may deliver it twice to a device that already got it.
    MessageNotStored => "message_not_stored", 503;
    /// The object store that keeps bundles (`edgefn-cloud --objects`) failed or cannot be
    /// reached (after retries): nothing was stored or committed; try again.
    ObjectStoreUnavailable => "object_store_unavailable", 503;
    /// A publish by labels that selects no device.
    NoDevices => "no_devices", 404;
    /// A rollback with no earlier revision to return to.
    NothingToRollBack => "nothing_to_roll_back", 409;
    /// A message payload larger than `POST /v1/publish` sends.
    PayloadTooLarge => "payload_too_large", 413;
    /// A device name that is not registered.
    UnknownDevice => "unknown_device", 404;
    /// A revision names secrets that are not set (details: `missing`, every one of them).
    SecretNotSet => "secret_not_set", 422;
    /// A secret value larger than [`MAX_SECRET_BYTES`].
    SecretTooLarge => "secret_too_large", 413;
    /// A secret name that is not valid, or an empty value.
    InvalidSecret => "invalid_secret", 400;
    /// Removing a secret the latest revision uses (details: `usedBy`).
    SecretInUse => "secret_in_use", 409;
    /// A rollback to a revision whose secret version is no longer kept (details: `missing`).
    SecretVersionGone => "secret_version_gone", 422;
    /// A signed revision whose signatures do not match the desired states the control plane
    /// computes (details: `devices`, each with why).
    InvalidSignatures => "invalid_signatures", 422;
    /// A change the control plane would make as a new revision (a bind, a rollback without
    /// signatures) on top of a signed revision: it holds no signing key, and devices with
    /// `trustedKeys` would refuse it. Make the change in git and apply it signed.
    SigningRequired => "signing_required", 409;
    /// An invocation of a function the device does not run as a triggered binding under its
    /// current desired state (`POST /v1/devices/{name}/invoke`; details: `suggestion`,
    /// `names`).
    NotInvocable => "not_invocable", 422;
    /// `POST /v1/rollout/pause|resume|abort` on a rollout that is not in a state to take it
    /// (none, or it has ended).
    RolloutNotRunning => "rollout_not_running", 409;
    /// No answer from the device by the invocation's deadline (it is offline, or busy): the
    /// request is forgotten and never runs later.
    DeviceTimeout => "device_timeout", 504;
    /// The device answered an invocation with something the control plane cannot read.
    InvalidReply => "invalid_reply", 502;
}

/// The largest secret value, in bytes (64 KiB): secrets are keys, passwords and certificates,
/// not data. Checked by `edgefn secret set` before sending and by the control plane.
pub const MAX_SECRET_BYTES: usize = 64 * 1024;

/// The versions of a secret the control plane keeps: the latest and the ones before it, so that
/// a rollback to a recent revision finds the value it ran with.
pub const SECRET_VERSIONS_KEPT: usize = 5;

/// One secret, as `GET /v1/secrets` lists it: never its value.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct SecretInfo {
    /// Its name.
    pub name: String,
    /// Its latest version (from 1; a name's versions are never reused, even after removal).
    pub version: u64,
    /// When the latest version was set, in milliseconds since the Unix epoch.
    pub updated_ms: u64,
    /// The versions kept, oldest first (at most [`SECRET_VERSIONS_KEPT`]).
    pub versions: Vec<u64>,
    /// The bindings and functions of the latest revision that use it (`binding/NAME`,
    /// `function/NAME`), sorted.
    pub used_by: Vec<String>,
}

/// The answer to `PUT /v1/secrets/{name}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct SecretSetResponse {
    /// The secret's name.
    pub name: String,
    /// The version just stored.
    pub version: u64,
    /// The revision made to roll the new version out (the latest revision's manifest and
    /// bundles with this version), when the latest revision uses the secret.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub revision: Option<u64>,
    /// The latest revision uses the secret but is signed: the control plane (which holds no
    /// signing key) made no revision, since devices with `trustedKeys` would refuse it. The
    /// version is stored; `edgefn apply --sign-key FILE` rolls it out (a signed apply pins the
    /// latest version of each secret).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub signing_required: bool,
}

impl std::fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// `POST /v1/publish`: a message for devices. Give `devices` or `labels`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct PublishRequest {
    /// The devices to send to, by name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub devices: Option<Vec<String>>,
    /// Or: every device of the latest manifest with all these labels.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub labels: Option<BTreeMap<String, String>>,
    /// The device-local topic (concrete, no wildcards), e.g. `commands/greet`; it is sent to
    /// `edgefn/<device>/down/<topic>`.
    pub topic: String,
    /// The payload: a JSON string is sent as its text, any other JSON value as JSON.
    pub payload: serde_json::Value,
}

/// The answer to `POST /v1/publish`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct PublishResponse {
    /// The devices the message was sent to.
    pub devices: Vec<String>,
    /// The device-local topic.
    pub topic: String,
    /// Those of `devices` where no route of their desired state brings `topic` down to the
    /// device's bus (`from: "cloud:FILTER"`, `to: local`): their agents drop the message, so
    /// nothing there sees it. Empty when every device routes it.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub unrouted: Vec<String>,
}

/// How long `POST /v1/devices/{name}/invoke` waits for the device when the request says not.
pub const INVOKE_DEFAULT_TIMEOUT_MS: u64 = 10_000;
/// The longest an invocation may wait for its device.
pub const INVOKE_MAX_TIMEOUT_MS: u64 = 60_000;

/// `POST /v1/devices/{name}/invoke`: run a function on that device now and wait for its answer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct InvokeRequest {
    /// A triggered binding of the device, or a function with one triggered binding there.
    pub function: String,
    /// The event's payload: a JSON string is sent as its text, any other JSON value as JSON
    /// (the function gets the text as JSON when it is a JSON document). Default `null`; at most
    /// 256 KiB.
    #[serde(default)]
    pub payload: serde_json::Value,
    /// The event's topic as the function sees it (default `invoke`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub topic: Option<String>,
    /// How long to wait for the device's answer, in ms: 1 to 60,000 (default 10,000). The
    /// function's own timeout still applies on the device.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout_ms: Option<u64>,
}

/// A function's answer to an invocation on request: the body of a 200 to
/// `POST /v1/devices/{name}/invoke`, and the reply the device publishes on
/// `edgefn/<d>/reply/<id>` (JSON). It succeeded when `error` is absent.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct InvokeResponse {
    /// The binding that ran.
    pub binding: String,
    /// Its function.
    pub function: String,
    /// What the function returned, when it succeeded: its JSON value, or its text; absent
    /// (or `null`) for nothing, and when it is not UTF-8 (see `resultBase64`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub result: Option<serde_json::Value>,
    /// The result in base64, only when it is not UTF-8.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub result_base64: Option<String>,
    /// Why it failed, when it did.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<InvokeFailure>,
    /// The messages it published (they went on the device's bus as usual).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub published: Vec<PublishedMessage>,
    /// The log lines its binding wrote during the invocation, oldest first.
    #[serde(default)]
    pub logs: Vec<crate::wire::LogRecord>,
    /// Set when lines, published messages or the result were left out to keep the reply
    /// within 512 KiB: what was left out.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub truncated: Option<String>,
    /// How long it took on the device, in ms.
    pub duration_ms: u64,
}

/// Why an invocation failed.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct InvokeFailure {
    /// The error's kind: the handler's exception (e.g. `ValueError`), or the runtime's
    /// (`TimeoutError`, `Crashed`, …), or the device's (`NotRunning`, `Expired`).
    pub kind: String,
    /// What went wrong.
    pub message: String,
    /// The handler's traceback, when it gave one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub traceback: Option<String>,
}

/// A message a function published during an invocation.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct PublishedMessage {
    /// Its device-local topic.
    pub topic: String,
    /// Its payload: JSON, or text; `null` when left out (see `truncated`) or not UTF-8.
    pub payload: serde_json::Value,
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
    /// Dependency layers: function name → platform (`linux/arm64`, ...) → layer digest, for
    /// each function with dependencies and each platform of the devices that run it. Layers are
    /// uploaded like bundles (`PUT /v1/bundles/{digest}`).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub layers: crate::Layers,
    /// The artifact of every model the manifest defines, by model name. Uploaded like bundles
    /// (`PUT /v1/bundles/{digest}`, streamed), only when the cloud lacks them.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub models: crate::Models,
    /// Where it came from.
    #[serde(default)]
    pub provenance: Provenance,
    /// The revision this one was made against (`0` when there is none yet). When the latest
    /// revision differs, the cloud answers 409 and changes nothing.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expected_parent: Option<u64>,
    /// The signatures of what each device will run under it (`edgefn apply --sign-key`).
    /// Requires `expectedParent`: the revision signed is `expectedParent + 1`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub signatures: Option<RevisionSignatures>,
    /// Overrides the manifest's `rollout:` for this revision: `none` reaches every device at
    /// once (absent: as the manifest says).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rollout: Option<RolloutOverride>,
}

/// The signatures of a revision's desired states, made by whoever applied it (the control
/// plane holds no private key). Each signs, with ed25519, the statement
/// `edgefn_schema::signing::statement(project, device, revision, digest)` of one device.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct RevisionSignatures {
    /// The public key that signed, `ed25519:` and the base64 of its 32 bytes.
    pub key: String,
    /// Each device's signature (standard base64 of 64 bytes), by device name: every device
    /// of the manifest, and any registered device it no longer lists (whose desired state is
    /// then empty).
    pub devices: BTreeMap<String, String>,
}

/// The signature served with a device's desired state.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct DesiredSignature {
    /// The public key that signed (`ed25519:BASE64`).
    pub key: String,
    /// The signature of the statement of the device, the revision and the state's digest
    /// (standard base64).
    pub signature: String,
}

/// How `POST /v1/revisions` overrides the manifest's `rollout:`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum RolloutOverride {
    /// No rollout: every device takes the revision at once.
    None,
}

/// Where a progressive rollout stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum RolloutState {
    /// Reaching its stages.
    Running,
    /// Held by an operator (`edgefn rollout pause`): no stage starts, none halts.
    Paused,
    /// Final: every device runs the revision.
    Completed,
    /// Final: a stage failed (its failures passed the threshold, or a device did not report
    /// in time); every device is back on the baseline.
    Halted,
    /// Final: an operator aborted it; every device is back on the baseline.
    Aborted,
    /// Final: a newer revision was applied; that one's rollout decides what devices run.
    Superseded,
}

impl RolloutState {
    /// Whether the rollout has ended.
    pub fn is_final(self) -> bool {
        !matches!(self, RolloutState::Running | RolloutState::Paused)
    }

    /// The state as users see it.
    pub fn as_str(self) -> &'static str {
        match self {
            RolloutState::Running => "running",
            RolloutState::Paused => "paused",
            RolloutState::Completed => "completed",
            RolloutState::Halted => "halted",
            RolloutState::Aborted => "aborted",
            RolloutState::Superseded => "superseded",
        }
    }
}

/// Where one device stands in a rollout.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum RolloutDeviceState {
    /// In a stage not reached yet: served the baseline.
    Waiting,
    /// Served the new revision, not yet running it.
    Pending,
    /// Runs the new revision (converged).
    Converged,
    /// Rolled back from, or failed to run, the new revision.
    Failed,
    /// Back on the baseline (the rollout halted or was aborted).
    Reverted,
}

/// One device of a rollout.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct RolloutDevice {
    /// Device name.
    pub name: String,
    /// The stage (from 1) that reaches it.
    pub stage: usize,
    /// Where it stands.
    pub state: RolloutDeviceState,
}

/// One stage of a rollout.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct RolloutStageStatus {
    /// The devices this stage adds (earlier stages' devices stay on the revision).
    pub devices: Vec<String>,
    /// How long its devices must run the revision converged, in milliseconds.
    pub bake_ms: u64,
    /// The failures it tolerates (`2`, `10%`).
    pub max_failures: String,
}

/// `GET /v1/rollout`: the latest revision's rollout.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct RolloutStatus {
    /// The revision being rolled out.
    pub revision: u64,
    /// The revision devices not reached (or reverted) run: the last one that reached the
    /// whole fleet.
    pub baseline: u64,
    /// Where it stands.
    pub state: RolloutState,
    /// Why it ended (final states), or why it is paused.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// The current stage, from 1 (the last reached one when final).
    pub stage: usize,
    /// Every stage.
    pub stages: Vec<RolloutStageStatus>,
    /// Each stage's report deadline, in milliseconds.
    pub deadline_ms: u64,
    /// When the current stage started, in milliseconds since the Unix epoch.
    pub stage_started_ms: u64,
    /// Since when every device of the current stage has run the revision converged (ms since
    /// the epoch).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub healthy_since_ms: Option<u64>,
    /// When it started and ended (ms since the epoch).
    pub started_ms: u64,
    /// When it reached its final state.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ended_ms: Option<u64>,
    /// Every device of the fleet, with its stage and state.
    pub devices: Vec<RolloutDevice>,
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
    /// The version of each secret its bindings name, pinned when it was committed (never a
    /// value).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub secrets: BTreeMap<String, u64>,
    /// The signatures of its desired states, when it was applied signed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub signatures: Option<RevisionSignatures>,
    /// Dependency layers, as in [`NewRevision::layers`].
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub layers: crate::Layers,
    /// Models, as in [`NewRevision::models`].
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub models: crate::Models,
}

/// The answer to `POST /v1/revisions` and `POST /v1/rollback`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ApplyResponse {
    /// The latest revision after the call.
    pub revision: u64,
    /// False when the submission equalled the latest revision: nothing was created.
    pub created: bool,
    /// True when the revision reaches the fleet through a progressive rollout (`GET
    /// /v1/rollout` follows it).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub rollout: bool,
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
    /// As in [`NewRevision::signatures`]: of the desired states under the revision made.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub signatures: Option<RevisionSignatures>,
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
    /// Without such a URL: the port the embedded broker listens on, which devices reach on the
    /// control plane's host (absent when the cloud has no embedded broker).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mqtt_port: Option<u16>,
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
    /// Its signature, when the revision was applied signed. An agent with `trustedKeys`
    /// refuses a state without a valid one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub signature: Option<DesiredSignature>,
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

/// Where one binding is on a device.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum FunctionState {
    /// Continuous: starting an instance.
    Starting,
    /// Continuous: an instance runs. Triggered: at least one instance is warm.
    Running,
    /// Triggered: no instance is warm (the next event starts one).
    Idle,
    /// Continuous: the instance ended; the next starts after a pause.
    Backoff,
    /// Continuous: like `backoff`, after several quick failures in a row (`crash-loop`, as
    /// older agents sent it, is read too).
    #[serde(alias = "crash-loop")]
    CrashLoop,
    /// Continuous: stopped on request.
    Stopped,
    /// Not started: the device lacks something the binding asks for, such as a device node
    /// (`lastError` names it). Its release fails its health window.
    Unavailable,
}

impl FunctionState {
    /// The state on the wire: `starting`, `running`, `idle`, `backoff`, `crash_loop`,
    /// `stopped` or `unavailable`.
    pub fn as_str(self) -> &'static str {
        match self {
            FunctionState::Starting => "starting",
            FunctionState::Running => "running",
            FunctionState::Idle => "idle",
            FunctionState::Backoff => "backoff",
            FunctionState::CrashLoop => "crash_loop",
            FunctionState::Stopped => "stopped",
            FunctionState::Unavailable => "unavailable",
        }
    }
}

impl std::fmt::Display for FunctionState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One binding's state on a device.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct FunctionStatus {
    /// Binding name.
    pub binding: String,
    /// Where it is.
    pub state: FunctionState,
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
    /// Runs exactly its desired state (`desiredDigest`). While [`DeviceStatus::held`] is set,
    /// that is the baseline's state, not the latest revision's.
    pub converged: bool,
    /// Its labels in the latest manifest.
    #[serde(default, skip_serializing_if = "std::collections::BTreeMap::is_empty")]
    pub labels: std::collections::BTreeMap<String, String>,
    /// Set when the rollout of the latest revision serves this device the baseline's desired
    /// state instead of the latest's: it is waiting for its stage (the rollout is `running` or
    /// `paused`), or the rollout ended `halted` or `aborted` and put it back. Absent otherwise
    /// (no rollout, a completed one, or a device the rollout reached).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub held: Option<Held>,
}

/// Why a device is served another revision than the latest (see [`DeviceStatus::held`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Held {
    /// The revision whose desired state it is served: the rollout's baseline.
    pub revision: u64,
    /// The revision being rolled out (the latest).
    pub rollout_revision: u64,
    /// The rollout's state: `running` or `paused` (the device waits for its stage), `halted` or
    /// `aborted` (it is back on the baseline for good).
    pub rollout: RolloutState,
}

impl Held {
    /// Whether the device waits for its stage of a rollout still going (running or paused).
    pub fn waiting(&self) -> bool {
        !self.rollout.is_final()
    }
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn error_codes_are_stable_and_unique() {
        let mut seen = std::collections::HashSet::new();
        for c in ErrorCode::ALL {
            assert!(seen.insert(c.as_str()), "{c} twice");
            assert_eq!(ErrorCode::parse(c.as_str()), Some(*c));
            assert!((400..600).contains(&c.status()));
        }
        assert_eq!(ErrorCode::DigestMismatch.as_str(), "digest_mismatch");
        assert_eq!(ErrorCode::parse("no_such_code"), None);
    }

    #[test]
    fn function_states_have_one_spelling_and_read_the_old_one() {
        let json = serde_json::to_string(&FunctionState::CrashLoop).unwrap();
        assert_eq!(json, "\"crash_loop\"");
        for s in ["\"crash_loop\"", "\"crash-loop\""] {
            assert_eq!(
                serde_json::from_str::<FunctionState>(s).unwrap(),
                FunctionState::CrashLoop
            );
        }
        for st in [
            FunctionState::Starting,
            FunctionState::Running,
            FunctionState::Idle,
            FunctionState::Backoff,
            FunctionState::CrashLoop,
            FunctionState::Stopped,
            FunctionState::Unavailable,
        ] {
            assert_eq!(
                serde_json::to_string(&st).unwrap(),
                format!("\"{}\"", st.as_str())
            );
        }
    }

    #[test]
    fn invoke_bodies_keep_their_shape() {
        let req: InvokeRequest =
            serde_json::from_str(r#"{"function":"temp-filter","timeoutMs":2000}"#).unwrap();
        assert_eq!(
            (req.payload, req.timeout_ms, req.topic),
            (serde_json::Value::Null, Some(2000), None)
        );
        assert!(serde_json::from_str::<InvokeRequest>(r#"{"function":"f","timeout":1}"#).is_err());
        let ok = InvokeResponse {
            binding: "temp-filter".into(),
            function: "temp-filter".into(),
            result: Some(serde_json::json!({"alert": true})),
            duration_ms: 3,
            ..InvokeResponse::default()
        };
        assert_eq!(
            serde_json::to_string(&ok).unwrap(),
            r#"{"binding":"temp-filter","function":"temp-filter","result":{"alert":true},"logs":[],"durationMs":3}"#
        );
        let failed: InvokeResponse = serde_json::from_str(
            r#"{"binding":"b","function":"f","error":{"kind":"ValueError","message":"no"},"durationMs":1}"#,
        )
        .unwrap();
        assert_eq!(failed.error.map(|e| e.kind).as_deref(), Some("ValueError"));
        assert_eq!(ErrorCode::DeviceTimeout.status(), 504);
        assert_eq!(
            ErrorCode::parse("not_invocable"),
            Some(ErrorCode::NotInvocable)
        );
    }

    #[test]
    fn publish_bodies_keep_their_shape() {
        let req: PublishRequest = serde_json::from_str(
            r#"{"devices":["gw-01"],"topic":"commands/greet","payload":{"name":"ada"}}"#,
        )
        .unwrap();
        assert_eq!(req.devices.as_deref(), Some(&["gw-01".to_owned()][..]));
        assert_eq!(
            serde_json::to_string(&req).unwrap(),
            r#"{"devices":["gw-01"],"topic":"commands/greet","payload":{"name":"ada"}}"#
        );
        assert!(
            serde_json::from_str::<PublishRequest>(r#"{"topic":"a","payload":1,"x":1}"#).is_err()
        );
        let resp = PublishResponse {
            devices: vec!["gw-01".into()],
            topic: "a".into(),
            unrouted: vec![],
        };
        assert_eq!(
            serde_json::to_string(&resp).unwrap(),
            r#"{"devices":["gw-01"],"topic":"a"}"#
        );
    }
}

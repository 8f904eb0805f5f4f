//! The API as an OpenAPI 3.1 document, generated from the route table below and the body types
//! in `edgefn_schema::api` (via schemars), and checked in at `cloud/openapi.json`.

use schemars::{JsonSchema, SchemaGenerator};
use serde_json::{Map, Value, json};

use edgefn_schema::api::{
    AdminTokenCreated, AdminTokenInfo, ApplyResponse, DesiredResponse, DeviceInfo,
    DeviceRegistered, ErrorBody, FleetStatus, MissingBundlesRequest, MissingBundlesResponse,
    NewAdminToken, NewDevice, NewRevision, Revision, RevisionSummary, RollbackRequest,
    RolloutStatus, StatusReport,
};

/// Who may call an operation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    /// Anyone.
    Open,
    /// An admin token.
    Admin,
    /// An admin token, or the token of the device named in the path.
    Device,
    /// An admin token, or a device token whose desired state names the bundle.
    DeviceBundle,
    /// Only the token of the device named in the path (never an admin token).
    DeviceOnly,
}

/// One documented operation.
#[derive(Debug, Clone, Copy)]
pub struct Operation {
    /// HTTP method, lowercase.
    pub method: &'static str,
    /// Path template.
    pub path: &'static str,
    /// Who may call it.
    pub access: Access,
    /// One line.
    pub summary: &'static str,
    /// Request body schema name, if any (`bytes` for a raw bundle).
    pub request: Option<&'static str>,
    /// Success status and response schema name (`bytes`, `text`, or none).
    pub response: (u16, Option<&'static str>),
}

/// Every operation of the API. The router in `crate::api` serves exactly these; a test
/// calls each of them on a running server.
pub const OPERATIONS: &[Operation] = &[
    Operation {
        method: "get",
        path: "/healthz",
        access: Access::Open,
        summary: "Liveness: answers `ok`.",
        request: None,
        response: (200, Some("text")),
    },
    Operation {
        method: "get",
        path: "/metrics",
        access: Access::Admin,
        summary: "Counters and gauges in the Prometheus text format.",
        request: None,
        response: (200, Some("text")),
    },
    Operation {
        method: "put",
        path: "/v1/bundles/{digest}",
        access: Access::Admin,
        summary: "Upload a bundle, dependency layer or model (a file model's bytes as they are); the body's sha256 must equal `digest`. Streamed to disk, at most 4 GiB (413 `body_too_large`). Idempotent: 201 when stored, 200 when already there.",
        request: Some("bytes"),
        response: (201, None),
    },
    Operation {
        method: "get",
        path: "/v1/bundles/{digest}",
        access: Access::DeviceBundle,
        summary: "Download a bundle, layer or model, streamed; `Range: bytes=N-` resumes from byte N (206, or 416 with `Content-Range: bytes */SIZE` when nothing is left).",
        request: None,
        response: (200, Some("bytes")),
    },
    Operation {
        method: "head",
        path: "/v1/bundles/{digest}",
        access: Access::DeviceBundle,
        summary: "Whether a bundle exists, and its size.",
        request: None,
        response: (200, None),
    },
    Operation {
        method: "post",
        path: "/v1/bundles/missing",
        access: Access::Admin,
        summary: "Which of these bundles the cloud lacks.",
        request: Some("MissingBundlesRequest"),
        response: (200, Some("MissingBundlesResponse")),
    },
    Operation {
        method: "post",
        path: "/v1/revisions",
        access: Access::Admin,
        summary: "Submit a manifest and its bundle digests as the next revision. 409 when `expectedParent` is not the latest; 200 with `created: false` when nothing changes. 422 with the manifest's diagnostics (the first 100); 413 for a body over 32 MiB or a manifest over 8 MiB.",
        request: Some("NewRevision"),
        response: (201, Some("ApplyResponse")),
    },
    Operation {
        method: "get",
        path: "/v1/revisions",
        access: Access::Admin,
        summary: "Revisions, newest first (`?limit=`, default 20).",
        request: None,
        response: (200, Some("RevisionList")),
    },
    Operation {
        method: "post",
        path: "/v1/bindings",
        access: Access::Admin,
        summary: "Bind a function to devices (by names or labels) as a new revision: the latest revision's manifest with one binding appended, validated as `POST /v1/revisions` does, its provenance `tool: console` (from a console session) or `api`, and the admin token's name as author. 409 when `expectedParent` is not the latest; 400 when the function already runs on a selected device; 404 for an unknown function; body at most 64 KiB.",
        request: Some("NewBinding"),
        response: (201, Some("BindingCreated")),
    },
    Operation {
        method: "get",
        path: "/v1/revisions/{from}/diff/{to}",
        access: Access::Admin,
        summary: "Per device, what changes from one revision's desired states to the other's: functions, bindings and routes added, removed or changed, with the names of the changed fields (env keys, never values).",
        request: None,
        response: (200, Some("RevisionDiff")),
    },
    Operation {
        method: "get",
        path: "/v1/functions",
        access: Access::Admin,
        summary: "The latest revision's functions: runtime, bundle, the bindings that run each and the devices they select.",
        request: None,
        response: (200, Some("FunctionList")),
    },
    Operation {
        method: "get",
        path: "/v1/bundles/{digest}/files",
        access: Access::Admin,
        summary: "A bundle's entries (path, size, mode, symlink target; the first 1,000 and the total), read with the devices' checked unpacker (inflating at most 1 GiB).",
        request: None,
        response: (200, Some("BundleListing")),
    },
    Operation {
        method: "get",
        path: "/v1/bundles/{digest}/files/{path}",
        access: Access::Admin,
        summary: "The first 64 KiB of one file of a bundle, as text when it is UTF-8 text (`binary: true` otherwise).",
        request: None,
        response: (200, Some("BundleFilePreview")),
    },
    Operation {
        method: "get",
        path: "/v1/status/page",
        access: Access::Admin,
        summary: "One page of the fleet (`?page=` from 0, `size=` 1 to 500, default 100), filtered by `q` (part of the name), `name` (exact), `label` (`KEY=VALUE[,…]`) and `state` (`running`, `updating`, `failed`, `rolled_back`, `never seen`, `unregistered`, `converged`, `not converged`), with the counts of the whole fleet.",
        request: None,
        response: (200, Some("FleetPage")),
    },
    Operation {
        method: "get",
        path: "/v1/revisions/{n}",
        access: Access::Admin,
        summary: "One revision with its manifest.",
        request: None,
        response: (200, Some("Revision")),
    },
    Operation {
        method: "post",
        path: "/v1/rollback",
        access: Access::Admin,
        summary: "Apply an earlier revision again as a new revision (default: the one before the latest).",
        request: Some("RollbackRequest"),
        response: (201, Some("ApplyResponse")),
    },
    Operation {
        method: "get",
        path: "/v1/rollout",
        access: Access::Admin,
        summary: "The latest revision's progressive rollout: state, stage, each device's stage and state (404 when it reached every device at once).",
        request: None,
        response: (200, Some("RolloutStatus")),
    },
    Operation {
        method: "post",
        path: "/v1/rollout/pause",
        access: Access::Admin,
        summary: "Hold the running rollout at its stage: no stage starts, none halts, until resumed (409 when it is not running).",
        request: None,
        response: (200, Some("RolloutStatus")),
    },
    Operation {
        method: "post",
        path: "/v1/rollout/resume",
        access: Access::Admin,
        summary: "Continue a paused rollout; its stage's deadline and bake time start again (409 when it is not paused).",
        request: None,
        response: (200, Some("RolloutStatus")),
    },
    Operation {
        method: "post",
        path: "/v1/rollout/abort",
        access: Access::Admin,
        summary: "End the rollout: every device is served the baseline revision again (409 when it has ended).",
        request: None,
        response: (200, Some("RolloutStatus")),
    },
    Operation {
        method: "get",
        path: "/v1/tokens",
        access: Access::Admin,
        summary: "The admin tokens not revoked: ids, names, creation times, and which one made this request; never a token.",
        request: None,
        response: (200, Some("AdminTokenList")),
    },
    Operation {
        method: "post",
        path: "/v1/tokens",
        access: Access::Admin,
        summary: "Create an admin token; the answer holds it, once (only its sha256 is stored).",
        request: Some("NewAdminToken"),
        response: (201, Some("AdminTokenCreated")),
    },
    Operation {
        method: "delete",
        path: "/v1/tokens/{id}",
        access: Access::Admin,
        summary: "Revoke an admin token, from the next request on. 409 for the last one (it would lock every admin out).",
        request: None,
        response: (204, None),
    },
    Operation {
        method: "post",
        path: "/v1/devices",
        access: Access::Admin,
        summary: "Register a device; its token is in the answer, this once.",
        request: Some("NewDevice"),
        response: (201, Some("DeviceRegistered")),
    },
    Operation {
        method: "get",
        path: "/v1/devices",
        access: Access::Admin,
        summary: "Registered devices.",
        request: None,
        response: (200, Some("DeviceList")),
    },
    Operation {
        method: "delete",
        path: "/v1/devices/{name}",
        access: Access::Admin,
        summary: "Remove a device and revoke its token.",
        request: None,
        response: (204, None),
    },
    Operation {
        method: "get",
        path: "/v1/devices/{name}/desired",
        access: Access::Device,
        summary: "The device's desired state. ETag is its digest; with `If-None-Match` and `?wait=SECONDS` (at most 300) the request waits for a change and answers 304 when there is none.",
        request: None,
        response: (200, Some("DesiredResponse")),
    },
    Operation {
        method: "post",
        path: "/v1/devices/{name}/status",
        access: Access::Device,
        summary: "Report what the device runs. Answered 204 once the report is stored (reports arriving together share one transaction); 503 with Retry-After when the store cannot take it (send it again).",
        request: Some("StatusReport"),
        response: (204, None),
    },
    Operation {
        method: "get",
        path: "/v1/status",
        access: Access::Admin,
        summary: "Fleet status: each device's desired and reported state.",
        request: None,
        response: (200, Some("FleetStatus")),
    },
    Operation {
        method: "post",
        path: "/v1/publish",
        access: Access::Admin,
        summary: "Send a message down to devices (by `devices` names, or `labels` of the latest manifest's devices) on their local `topic`, i.e. MQTT `edgefn/<device>/down/<topic>`, QoS 1. 400 for a topic with wildcards, 413 for a payload over 256 KiB (or a body over 1.6 MiB), 404 when no device matches, 503 without a broker.",
        request: Some("PublishRequest"),
        response: (200, Some("PublishResponse")),
    },
    Operation {
        method: "get",
        path: "/v1/messages",
        access: Access::Admin,
        summary: "Follow what devices send up (MQTT `edgefn/<device>/up/<topic>`) whose local topic matches the MQTT filter `?topic=`: newline-delimited JSON, one message a line, until the client disconnects.",
        request: None,
        response: (200, Some("ndjson:MessageLine")),
    },
    Operation {
        method: "get",
        path: "/v1/devices/{name}/logs",
        access: Access::Admin,
        summary: "The device's last function log lines (`?tail=`, default 100, at most the 1000 kept; `?binding=` to keep one function's), then with `?follow=true` new ones as they arrive: newline-delimited JSON.",
        request: None,
        response: (200, Some("ndjson:LogLine")),
    },
    Operation {
        method: "get",
        path: "/v1/secrets",
        access: Access::Admin,
        summary: "The secrets: names, versions kept, when last set, and which functions and bindings of the latest revision use each. Never a value.",
        request: None,
        response: (200, Some("SecretList")),
    },
    Operation {
        method: "put",
        path: "/v1/secrets/{name}",
        access: Access::Admin,
        summary: "Set a new version of a secret: the body is the value (1 byte to 64 KiB; 413 `secret_too_large`, 400 `invalid_secret` for an empty value or a bad name). Stored sealed (ChaCha20-Poly1305) under a key kept outside the data folder. When the latest revision uses the secret, a new revision with the new version is committed (a rollout).",
        request: Some("secret"),
        response: (201, Some("SecretSetResponse")),
    },
    Operation {
        method: "delete",
        path: "/v1/secrets/{name}",
        access: Access::Admin,
        summary: "Forget every value of a secret (its version numbers are never reused). 409 `secret_in_use` while the latest revision uses it.",
        request: None,
        response: (204, None),
    },
    Operation {
        method: "get",
        path: "/v1/devices/{name}/secrets/{secret}",
        access: Access::DeviceOnly,
        summary: "The value of a secret the device's desired state names (under the latest revision, or the revision it last reported running), at the version it names (`?version=` must equal it): raw bytes, `Cache-Control: no-store`, the version in `edgefn-secret-version`. 404 for a secret or version its desired state does not name.",
        request: None,
        response: (200, Some("secret")),
    },
    Operation {
        method: "post",
        path: "/v1/devices/{name}/invoke",
        access: Access::Admin,
        summary: "Run a function (a triggered binding, or a function with one triggered binding there) on the device now, with `payload` as the event, and wait up to `timeoutMs` (default 10 s, at most 60 s) for its answer: its result or error, the log lines it wrote, its time on the device. The request goes out at MQTT QoS 0 (`edgefn/<device>/invoke/<id>`) with its deadline and never runs later. 404 for a device not registered, 422 `not_invocable` for a function it does not run (with a suggestion), 413 for a payload over 256 KiB, 504 `device_timeout` when no answer came in time, 503 without a broker.",
        request: Some("InvokeRequest"),
        response: (200, Some("InvokeResponse")),
    },
];

fn add<T: JsonSchema>(
    generator: &mut SchemaGenerator,
    schemas: &mut Map<String, Value>,
    name: &str,
) {
    let schema = generator.subschema_for::<T>();
    let value = serde_json::to_value(schema).expect("schema serializes");
    // A referenced type is already in the definitions; keep the inline ones by name.
    if value.get("$ref").is_none() {
        schemas.insert(name.to_owned(), value);
    }
}

fn content(schema: Option<&str>) -> Option<Value> {
    match schema? {
        "bytes" => Some(
            json!({"application/octet-stream": {"schema": {"type": "string", "format": "binary"}}}),
        ),
        "text" => Some(json!({"text/plain": {"schema": {"type": "string"}}})),
        "secret" => Some(
            json!({"application/octet-stream": {"schema": {"type": "string", "format": "binary", "minLength": 1, "maxLength": edgefn_schema::api::MAX_SECRET_BYTES}}}),
        ),
        ndjson if ndjson.starts_with("ndjson:") => Some(
            json!({"application/x-ndjson": {"schema": {"$ref": format!("#/components/schemas/{}", &ndjson[7..])}}}),
        ),
        name => Some(
            json!({"application/json": {"schema": {"$ref": format!("#/components/schemas/{name}")}}}),
        ),
    }
}

/// The OpenAPI document, pretty-printed with a final newline.
pub fn document() -> String {
    let mut settings = schemars::generate::SchemaSettings::draft2020_12();
    settings.definitions_path = "/components/schemas/".into();
    let mut generator = settings.into_generator();
    let mut schemas = Map::new();
    add::<ErrorBody>(&mut generator, &mut schemas, "ErrorBody");
    add::<MissingBundlesRequest>(&mut generator, &mut schemas, "MissingBundlesRequest");
    add::<MissingBundlesResponse>(&mut generator, &mut schemas, "MissingBundlesResponse");
    add::<NewRevision>(&mut generator, &mut schemas, "NewRevision");
    add::<ApplyResponse>(&mut generator, &mut schemas, "ApplyResponse");
    add::<Vec<RevisionSummary>>(&mut generator, &mut schemas, "RevisionList");
    add::<Revision>(&mut generator, &mut schemas, "Revision");
    add::<RollbackRequest>(&mut generator, &mut schemas, "RollbackRequest");
    add::<RolloutStatus>(&mut generator, &mut schemas, "RolloutStatus");
    add::<NewDevice>(&mut generator, &mut schemas, "NewDevice");
    add::<Vec<AdminTokenInfo>>(&mut generator, &mut schemas, "AdminTokenList");
    add::<NewAdminToken>(&mut generator, &mut schemas, "NewAdminToken");
    add::<AdminTokenCreated>(&mut generator, &mut schemas, "AdminTokenCreated");
    add::<DeviceRegistered>(&mut generator, &mut schemas, "DeviceRegistered");
    add::<Vec<DeviceInfo>>(&mut generator, &mut schemas, "DeviceList");
    add::<DesiredResponse>(&mut generator, &mut schemas, "DesiredResponse");
    add::<StatusReport>(&mut generator, &mut schemas, "StatusReport");
    add::<FleetStatus>(&mut generator, &mut schemas, "FleetStatus");
    add::<edgefn_schema::api::PublishRequest>(&mut generator, &mut schemas, "PublishRequest");
    add::<edgefn_schema::api::PublishResponse>(&mut generator, &mut schemas, "PublishResponse");
    add::<crate::messaging::hub::MessageLine>(&mut generator, &mut schemas, "MessageLine");
    add::<edgefn_schema::wire::LogLine>(&mut generator, &mut schemas, "LogLine");
    add::<Vec<edgefn_schema::api::SecretInfo>>(&mut generator, &mut schemas, "SecretList");
    add::<edgefn_schema::api::SecretSetResponse>(&mut generator, &mut schemas, "SecretSetResponse");
    add::<edgefn_schema::api::InvokeRequest>(&mut generator, &mut schemas, "InvokeRequest");
    add::<edgefn_schema::api::InvokeResponse>(&mut generator, &mut schemas, "InvokeResponse");
    add::<edgefn_schema::console::FleetPage>(&mut generator, &mut schemas, "FleetPage");
    add::<edgefn_schema::console::NewBinding>(&mut generator, &mut schemas, "NewBinding");
    add::<edgefn_schema::console::BindingCreated>(&mut generator, &mut schemas, "BindingCreated");
    add::<edgefn_schema::console::RevisionDiff>(&mut generator, &mut schemas, "RevisionDiff");
    add::<Vec<edgefn_schema::console::FunctionInfo>>(&mut generator, &mut schemas, "FunctionList");
    add::<edgefn_schema::console::BundleListing>(&mut generator, &mut schemas, "BundleListing");
    add::<edgefn_schema::console::BundleFilePreview>(
        &mut generator,
        &mut schemas,
        "BundleFilePreview",
    );
    for (name, schema) in generator.take_definitions(true) {
        schemas.entry(name).or_insert(schema);
    }

    let mut paths = Map::new();
    for op in OPERATIONS {
        let mut o = Map::new();
        o.insert("summary".into(), json!(op.summary));
        let mut params = Vec::new();
        for segment in op.path.split('/') {
            if let Some(name) = segment.strip_prefix('{').and_then(|s| s.strip_suffix('}')) {
                params.push(json!({"name": name, "in": "path", "required": true, "schema": {"type": if matches!(name, "n" | "from" | "to") { "integer" } else { "string" }}}));
            }
        }
        if op.path.ends_with("/desired") {
            params.push(json!({"name": "wait", "in": "query", "schema": {"type": "integer", "minimum": 0, "maximum": 300}}));
            params.push(json!({"name": "after", "in": "query", "description": "Answer also when the latest revision is newer than this one, even with the same digest (an agent that refused a state for its signature waits for it signed anew)", "schema": {"type": "integer", "minimum": 0}}));
            params.push(json!({"name": "seen", "in": "query", "description": "The newest revision this device has been served (by any process of the control plane). A process serving an older one reads the latest revision again before it answers, so a device woken by one process is never sent back to an older revision by another that has not heard of the new one yet", "schema": {"type": "integer", "minimum": 0}}));
            params.push(
                json!({"name": "If-None-Match", "in": "header", "schema": {"type": "string"}}),
            );
        }
        if op.path == "/v1/messages" {
            params.push(json!({"name": "topic", "in": "query", "required": true, "description": "MQTT topic filter on the device-local topic (`#` for everything)", "schema": {"type": "string"}}));
        }
        if op.path.ends_with("/logs") {
            params.push(json!({"name": "binding", "in": "query", "description": "Only this binding's (function's) lines", "schema": {"type": "string"}}));
            params.push(json!({"name": "follow", "in": "query", "schema": {"type": "boolean", "default": false}}));
            params.push(json!({"name": "tail", "in": "query", "schema": {"type": "integer", "minimum": 0, "maximum": 1000, "default": 100}}));
        }
        if op.path.ends_with("/secrets/{secret}") {
            params.push(json!({"name": "version", "in": "query", "description": "The version the desired state names (default: that one)", "schema": {"type": "integer", "minimum": 1}}));
        }
        if op.path == "/v1/status/page" {
            for (name, ty) in [
                ("page", "integer"),
                ("size", "integer"),
                ("q", "string"),
                ("name", "string"),
                ("label", "string"),
                ("state", "string"),
            ] {
                params.push(json!({"name": name, "in": "query", "schema": {"type": ty}}));
            }
        }
        if op.path == "/v1/revisions" && op.method == "get" {
            params.push(json!({"name": "limit", "in": "query", "schema": {"type": "integer", "minimum": 1, "maximum": 1000}}));
        }
        if !params.is_empty() {
            o.insert("parameters".into(), Value::Array(params));
        }
        if let Some(body) = content(op.request) {
            o.insert(
                "requestBody".into(),
                json!({"required": true, "content": body}),
            );
        }
        let mut responses = Map::new();
        let mut ok = json!({"description": "Success"});
        if let Some(c) = content(op.response.1) {
            ok["content"] = c;
        }
        responses.insert(op.response.0.to_string(), ok);
        if op.path.ends_with("/desired") {
            responses.insert(
                "304".into(),
                json!({"description": "No change before the wait ended"}),
            );
        }
        let error =
            json!({"application/json": {"schema": {"$ref": "#/components/schemas/ErrorBody"}}});
        responses.insert("4XX".into(), json!({"description": "The request is wrong: bad input (400), no or unknown token (401), not allowed (403), not found (404), conflict (409), body or payload too large (413, also for JSON bodies over 16 MiB where no smaller limit is given), invalid manifest (422)", "content": error}));
        if op.path == "/v1/publish"
            || op.path == "/v1/messages"
            || op.path.ends_with("/logs")
            || op.path.ends_with("/invoke")
        {
            responses.insert("503".into(), json!({"description": "Messages are disabled (no broker), or the broker is unreachable", "content": error}));
        }
        if op.path.ends_with("/invoke") {
            responses.insert("504".into(), json!({"description": "`device_timeout`: the device did not answer by the deadline (offline or busy); the request is dropped and never runs later", "content": error}));
            responses.insert("502".into(), json!({"description": "`invalid_reply`: the device answered with something that is not an invocation reply", "content": error}));
        }
        o.insert("responses".into(), Value::Object(responses));
        match op.access {
            Access::Open => {
                o.insert("security".into(), json!([]));
            }
            Access::Admin => {
                o.insert("description".into(), json!("Needs an admin token."));
            }
            Access::Device => {
                o.insert(
                    "description".into(),
                    json!("Needs an admin token or the token of the device named in the path."),
                );
            }
            Access::DeviceOnly => {
                o.insert("description".into(), json!("Needs the token of the device named in the path; an admin token is refused (403)."));
            }
            Access::DeviceBundle => {
                o.insert("description".into(), json!("Needs an admin token, or a device token whose desired state names this bundle."));
            }
        }
        let entry = paths
            .entry(op.path.to_owned())
            .or_insert_with(|| Value::Object(Map::new()));
        entry[op.method] = Value::Object(o);
    }

    let doc = json!({
        "openapi": "3.1.0",
        "info": {
            "title": "edgefn control plane",
            "version": env!("CARGO_PKG_VERSION"),
            "description": "Revisions, bundles and devices of an edgefn fleet. Every endpoint but /healthz needs `Authorization: Bearer TOKEN`. Errors are JSON: {\"error\": {\"code\", \"message\", \"details\"}}."
        },
        "security": [{"bearer": []}],
        "paths": paths,
        "components": {
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
            "schemas": schemas
        }
    });
    let mut text = serde_json::to_string_pretty(&doc).expect("document serializes");
    text.push('\n');
    text
}

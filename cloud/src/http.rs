//! The HTTP API: routes, authentication and handlers.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex, OnceLock, RwLock};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use axum::body::{Body, Bytes};
use axum::extract::rejection::JsonRejection;
use axum::extract::{DefaultBodyLimit, FromRequestParts, Path, Query, Request, State};
use axum::http::request::Parts;
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post, put};
use axum::{Json, Router};
use edgefn_schema::api::{
    ApplyResponse, DeviceRegistered, DeviceStatus, FleetStatus, MissingBundlesRequest,
    MissingBundlesResponse, NewDevice, NewRevision, Provenance, RollbackRequest, StatusReport,
};
use edgefn_schema::{Source, bundle};
use serde::Deserialize;
use tokio::sync::watch;

use crate::auth;
use crate::error::ApiError;
use crate::fleet::FleetView;
use crate::metrics::Metrics;
use crate::store::{DeviceRecord, Draft, Store};

/// Largest bundle accepted.
pub const MAX_BUNDLE_BYTES: usize = 256 << 20;
/// Largest JSON body accepted, where a route sets no smaller limit.
pub const MAX_JSON_BYTES: usize = 16 << 20;
/// Largest manifest `POST /v1/revisions` accepts, in bytes of YAML. What reading it may cost
/// is proportional: the tree, and what aliases copy (the YAML reader's
/// `edgefn_schema::yaml::expansion_budget`).
pub const MAX_MANIFEST_BYTES: usize = 1 << 20;
/// Largest body of `POST /v1/revisions`: a manifest of [`MAX_MANIFEST_BYTES`] (which JSON
/// escaping at most doubles: YAML has no other control characters than tab and line breaks)
/// and its bundle map.
pub const MAX_REVISION_BYTES: usize = 4 * MAX_MANIFEST_BYTES;
/// Largest body of `POST /v1/publish`: a payload of [`crate::mqtt::MAX_PUBLISH_BYTES`], which
/// JSON escaping may grow six times (`\u0000`), and the rest of the request.
pub const MAX_PUBLISH_BODY_BYTES: usize = 6 * crate::mqtt::MAX_PUBLISH_BYTES + (64 << 10);
/// Most manifest diagnostics listed in a 422 answer (the message gives their number).
const MAX_LISTED_DIAGNOSTICS: usize = 100;
/// Longest long-poll.
pub const MAX_WAIT_SECS: u64 = 300;

/// Device reports, kept in memory and flushed to the store in batches.
#[derive(Debug, Default)]
struct Statuses {
    last: HashMap<String, (StatusReport, u64)>,
    dirty: HashSet<String>,
}

/// How often reports are written to the store. Reports are soft state that devices resend; one
/// transaction per interval, rather than one per report, keeps a fleet's reports off the disk's
/// critical path. At most this much is lost on a crash (a clean stop flushes).
pub const STATUS_FLUSH: Duration = Duration::from_secs(1);

/// Shared server state.
pub struct AppState {
    pub(crate) store: Arc<dyn Store>,
    /// Hashes of the admin tokens not revoked.
    pub(crate) admin: RwLock<Vec<[u8; 32]>>,
    devices: RwLock<HashMap<String, DeviceRecord>>,
    tokens: RwLock<HashMap<[u8; 32], String>>,
    fleet: watch::Sender<Arc<FleetView>>,
    commit: tokio::sync::Mutex<()>,
    shutdown: watch::Receiver<bool>,
    /// Last report of each device, and the names reported since the last flush to the store.
    statuses: Mutex<Statuses>,
    /// Counters for `/metrics`.
    pub metrics: Metrics,
    /// The broker connection and message endpoints, when messages are enabled.
    messaging: OnceLock<Arc<crate::messages::Messaging>>,
    /// The broker URL given to newly registered devices.
    device_mqtt_url: OnceLock<String>,
}

impl std::fmt::Debug for AppState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AppState").finish_non_exhaustive()
    }
}

pub(crate) fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// Runs blocking store work off the async threads.
pub(crate) async fn blocking<T, F>(f: F) -> Result<T, ApiError>
where
    F: FnOnce() -> Result<T, ApiError> + Send + 'static,
    T: Send + 'static,
{
    tokio::task::spawn_blocking(f)
        .await
        .map_err(ApiError::internal)?
}

impl AppState {
    /// State over `store`, with the admin token hashes allowed.
    pub fn new(
        store: Arc<dyn Store>,
        admin: Vec<[u8; 32]>,
        shutdown: watch::Receiver<bool>,
    ) -> Result<Arc<Self>, crate::store::StoreError> {
        let records = store.devices()?;
        let tokens = records
            .iter()
            .map(|r| (r.token_hash, r.name.clone()))
            .collect();
        let devices = records.into_iter().map(|r| (r.name.clone(), r)).collect();
        let view = FleetView::build(store.latest()?.as_ref());
        let statuses = Statuses {
            last: store.statuses()?.into_iter().collect(),
            dirty: HashSet::new(),
        };
        Ok(Arc::new(Self {
            store,
            admin: RwLock::new(admin),
            devices: RwLock::new(devices),
            tokens: RwLock::new(tokens),
            fleet: watch::Sender::new(Arc::new(view)),
            commit: tokio::sync::Mutex::new(()),
            shutdown,
            statuses: Mutex::new(statuses),
            metrics: Metrics::default(),
            messaging: OnceLock::new(),
            device_mqtt_url: OnceLock::new(),
        }))
    }

    /// Tells devices registered from now on to use the broker at `url`.
    pub fn set_device_mqtt_url(&self, url: String) {
        let _ = self.device_mqtt_url.set(url);
    }

    /// Writes the reports received since the last flush.
    pub async fn flush_statuses(&self) -> Result<(), ApiError> {
        let batch: Vec<(String, StatusReport, u64)> = {
            let mut st = self.statuses.lock().map_err(ApiError::internal)?;
            let names: Vec<String> = st.dirty.drain().collect();
            names
                .into_iter()
                .filter_map(|n| st.last.get(&n).map(|(r, at)| (n, r.clone(), *at)))
                .collect()
        };
        if batch.is_empty() {
            return Ok(());
        }
        let store = self.store.clone();
        blocking(move || Ok(store.put_statuses(&batch)?)).await
    }

    fn status_snapshot(&self) -> Result<HashMap<String, (StatusReport, u64)>, ApiError> {
        Ok(self
            .statuses
            .lock()
            .map_err(ApiError::internal)?
            .last
            .clone())
    }

    /// The fleet under the latest revision.
    pub(crate) fn view(&self) -> Arc<FleetView> {
        self.fleet.borrow().clone()
    }

    /// Enables the message endpoints (once).
    pub fn set_messaging(&self, m: Arc<crate::messages::Messaging>) {
        let _ = self.messaging.set(m);
    }

    /// The message machinery, when enabled.
    pub(crate) fn messaging(&self) -> Option<&Arc<crate::messages::Messaging>> {
        self.messaging.get()
    }

    /// Turns true when the server stops.
    pub(crate) fn shutdown_signal(&self) -> watch::Receiver<bool> {
        self.shutdown.clone()
    }

    /// Whether `presented` is the sha256 of registered device `name`'s token (constant time).
    pub(crate) fn device_token_matches(&self, name: &str, presented: &[u8; 32]) -> bool {
        let devices = self
            .devices
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        devices
            .get(name)
            .is_some_and(|r| auth::ct_eq(&r.token_hash, presented))
    }

    /// Each registered device's name and Mosquitto password hash.
    pub(crate) fn mqtt_users(&self) -> Vec<(String, String)> {
        let devices = self
            .devices
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let mut users = Vec::new();
        for r in devices.values() {
            match &r.mqtt_hash {
                Some(h) => users.push((r.name.clone(), h.clone())),
                None => {
                    tracing::warn!(device = %r.name, "device registered before messages existed: it has no MQTT password hash; remove and add it again to give it MQTT access on Mosquitto")
                }
            }
        }
        users
    }

    /// Whether `name` is registered or a device of the latest manifest.
    /// Whether `name` is a registered device (it has a token).
    pub(crate) fn is_registered(&self, name: &str) -> bool {
        self.devices
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .contains_key(name)
    }

    pub(crate) fn is_known_device(&self, name: &str) -> bool {
        self.view().devices.contains_key(name)
            || self
                .devices
                .read()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .contains_key(name)
    }

    /// Devices of the latest manifest having all of `labels`, sorted.
    pub(crate) fn devices_with_labels(
        &self,
        labels: &std::collections::BTreeMap<String, String>,
    ) -> Vec<String> {
        let view = self.view();
        let Some(m) = &view.manifest else {
            return Vec::new();
        };
        m.devices
            .iter()
            .filter(|(_, d)| labels.iter().all(|(k, v)| d.labels.get(k) == Some(v)))
            .map(|(n, _)| n.clone())
            .collect()
    }
}

/// Who is calling.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Caller {
    /// An admin token.
    Admin,
    /// A device's token.
    Device(String),
}

impl Caller {
    /// Fails unless this is an admin.
    pub(crate) fn require_admin(&self) -> Result<(), ApiError> {
        self.admin()
    }

    fn admin(&self) -> Result<(), ApiError> {
        match self {
            Caller::Admin => Ok(()),
            Caller::Device(_) => Err(ApiError::forbidden(
                "this needs an admin token; a device token cannot do it",
            )),
        }
    }

    fn device(&self, name: &str) -> Result<(), ApiError> {
        match self {
            Caller::Admin => Ok(()),
            Caller::Device(d) if d == name => Ok(()),
            Caller::Device(_) => Err(ApiError::forbidden(
                "a device token gives access to its own device only",
            )),
        }
    }
}

impl FromRequestParts<Arc<AppState>> for Caller {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &Arc<AppState>,
    ) -> Result<Self, Self::Rejection> {
        let value = parts.headers.get(header::AUTHORIZATION).ok_or_else(|| {
            ApiError::unauthorized("no token: send `Authorization: Bearer TOKEN`")
        })?;
        let token = value
            .to_str()
            .ok()
            .and_then(|v| v.strip_prefix("Bearer "))
            .map(str::trim)
            .ok_or_else(|| {
                ApiError::unauthorized("the Authorization header must be `Bearer TOKEN`")
            })?;
        let presented = auth::hash(token);
        // Check every admin hash, without stopping early.
        let is_admin = state
            .admin
            .read()
            .map_err(ApiError::internal)?
            .iter()
            .fold(false, |found, h| auth::ct_eq(h, &presented) | found);
        if is_admin {
            return Ok(Caller::Admin);
        }
        let tokens = state.tokens.read().map_err(ApiError::internal)?;
        match tokens.get(&presented) {
            Some(name) => Ok(Caller::Device(name.clone())),
            None => Err(ApiError::unauthorized("unknown or revoked token")),
        }
    }
}

fn json_body<T>(body: Result<Json<T>, JsonRejection>) -> Result<T, ApiError> {
    body.map(|Json(v)| v).map_err(body_error)
}

/// A rejected JSON body: 413 past the route's size limit, 400 otherwise (including JSON nested
/// deeper than serde_json's limit of 128).
pub(crate) fn body_error(e: JsonRejection) -> ApiError {
    if e.status() == StatusCode::PAYLOAD_TOO_LARGE {
        ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "body_too_large",
            "the request body is larger than this endpoint accepts; see the API document \
             (cloud/openapi.json) for its limit",
        )
    } else {
        ApiError::bad_request(format!("invalid request body: {}", e.body_text()))
    }
}

fn check_digest(digest: &str) -> Result<(), ApiError> {
    if bundle::is_digest(digest) {
        Ok(())
    } else {
        Err(ApiError::bad_request(format!(
            "`{digest}` is not a sha256 digest (64 lowercase hex digits)"
        )))
    }
}

/// The router.
pub fn router(state: Arc<AppState>) -> Router {
    let bundles = Router::new()
        .route(
            "/v1/bundles/{digest}",
            put(put_bundle).get(get_bundle).head(get_bundle),
        )
        .layer(DefaultBodyLimit::max(MAX_BUNDLE_BYTES));
    Router::new()
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/metrics", get(metrics))
        .route("/v1/bundles/missing", post(missing_bundles))
        .route(
            "/v1/revisions",
            post(create_revision)
                .layer(DefaultBodyLimit::max(MAX_REVISION_BYTES))
                .get(history),
        )
        .route("/v1/revisions/{n}", get(revision))
        .route("/v1/rollback", post(rollback))
        .route(
            "/v1/tokens",
            get(crate::tokens::list).post(crate::tokens::create),
        )
        .route(
            "/v1/tokens/{id}",
            axum::routing::delete(crate::tokens::revoke),
        )
        .route("/v1/devices", post(add_device).get(list_devices))
        .route("/v1/devices/{name}", axum::routing::delete(remove_device))
        .route("/v1/devices/{name}/desired", get(desired))
        .route("/v1/devices/{name}/status", post(report_status))
        .route("/v1/status", get(fleet_status))
        .route(
            "/v1/publish",
            post(crate::messages::publish).layer(DefaultBodyLimit::max(MAX_PUBLISH_BODY_BYTES)),
        )
        .route("/v1/messages", get(crate::messages::messages))
        .route("/v1/devices/{name}/logs", get(crate::messages::logs))
        .layer(DefaultBodyLimit::max(MAX_JSON_BYTES))
        .merge(bundles)
        .fallback(|method: Method| async move {
            ApiError::not_found(format!(
                "no such endpoint for {method}; see the API document (cloud/openapi.json)"
            ))
        })
        .layer(middleware::from_fn_with_state(state.clone(), count))
        .with_state(state)
}

async fn count(State(state): State<Arc<AppState>>, req: Request, next: Next) -> Response {
    let resp = next.run(req).await;
    state.metrics.response(resp.status().as_u16());
    resp
}

/// Whether a device whose last report is `r` runs exactly `desired`: it runs that digest, and
/// is not updating to something else. A failure it reports about another target (the revision
/// it rolled back from) does not count: a device already running the desired state — after a
/// `git revert` of a bad revision, say — is converged at once, whatever happened before.
fn converged(r: &StatusReport, desired: &str) -> bool {
    use edgefn_schema::api::DeviceState;
    r.running_digest.as_deref() == Some(desired)
        && match r.state {
            DeviceState::Running => true,
            DeviceState::RolledBack | DeviceState::Failed => {
                r.target_digest.as_deref() != Some(desired)
            }
            DeviceState::Updating => false,
        }
}

async fn metrics(State(state): State<Arc<AppState>>, caller: Caller) -> Result<Response, ApiError> {
    caller.admin()?;
    let view = state.view();
    let registered = state.devices.read().map_err(ApiError::internal)?.len();
    let statuses = state.status_snapshot()?;
    let converged = statuses
        .iter()
        .filter(|(name, (r, _))| converged(r, &view.desired_for(name).digest))
        .count();
    let mut text = state.metrics.render(view.revision, registered, converged);
    // The devices' outboxes, as they last reported them.
    let (mut pending, mut dropped, mut rejected) = (0u64, 0u64, 0u64);
    let mut links_down = 0u64;
    for (r, _) in statuses.values() {
        if let Some(o) = &r.outbox {
            pending += o.pending;
            dropped += o.dropped;
            rejected += o.rejected;
        }
        if r.link.as_ref().is_some_and(|l| !l.up) {
            links_down += 1;
        }
    }
    text.push_str(&format!(
        "# HELP edgefn_devices_link_down Devices whose MQTT link to the broker was down at their last report.\n# TYPE edgefn_devices_link_down gauge\nedgefn_devices_link_down {links_down}\n"
    ));
    text.push_str(&format!(
        "# HELP edgefn_outbox_pending Messages waiting in devices' outboxes, as last reported.\n# TYPE edgefn_outbox_pending gauge\nedgefn_outbox_pending {pending}\n# HELP edgefn_outbox_dropped Messages devices dropped for their outbox bounds, as last reported.\n# TYPE edgefn_outbox_dropped gauge\nedgefn_outbox_dropped {dropped}\n# HELP edgefn_outbox_rejected Messages devices set aside because the broker cannot take them (too large, or refused), as last reported.\n# TYPE edgefn_outbox_rejected gauge\nedgefn_outbox_rejected {rejected}\n"
    ));
    if let Some(m) = state.messaging() {
        text.push_str(
            &m.hub
                .render_metrics(m.broker.as_ref().map(|b| b.connected())),
        );
    }
    Ok(([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], text).into_response())
}

async fn put_bundle(
    State(state): State<Arc<AppState>>,
    caller: Caller,
    Path(digest): Path<String>,
    body: Bytes,
) -> Result<Response, ApiError> {
    caller.admin()?;
    check_digest(&digest)?;
    let actual = bundle::digest(&body);
    if actual != digest {
        return Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            "digest_mismatch",
            format!(
                "the body's sha256 is {actual}, not {digest}: the upload was corrupted or named wrongly"
            ),
        ));
    }
    state
        .metrics
        .bundle_bytes_in
        .fetch_add(body.len() as u64, std::sync::atomic::Ordering::Relaxed);
    let store = state.store.clone();
    let created = blocking(move || Ok(store.put_bundle(&digest, &body)?)).await?;
    Ok(if created {
        StatusCode::CREATED
    } else {
        StatusCode::OK
    }
    .into_response())
}

async fn get_bundle(
    State(state): State<Arc<AppState>>,
    caller: Caller,
    method: Method,
    Path(digest): Path<String>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    check_digest(&digest)?;
    if let Caller::Device(name) = &caller {
        if !state.view().desired_for(name).bundles.contains(&digest) {
            return Err(ApiError::forbidden(
                "a device may download only the bundles its desired state names",
            ));
        }
    }
    let store = state.store.clone();
    let bytes = blocking(move || Ok(store.bundle(&digest)?))
        .await?
        .ok_or_else(|| ApiError::not_found("no bundle with this digest"))?;
    let total = bytes.len();
    // `Range: bytes=N-` resumes an interrupted download.
    let start = headers
        .get(header::RANGE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("bytes="))
        .and_then(|v| v.strip_suffix('-'))
        .and_then(|v| v.parse::<usize>().ok());
    let mut out = HeaderMap::new();
    out.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/zstd"),
    );
    out.insert(header::ACCEPT_RANGES, HeaderValue::from_static("bytes"));
    let (status, body) = match start {
        Some(s) if s >= total && total > 0 => {
            out.insert(
                header::CONTENT_RANGE,
                HeaderValue::from_str(&format!("bytes */{total}")).map_err(ApiError::internal)?,
            );
            return Ok((StatusCode::RANGE_NOT_SATISFIABLE, out).into_response());
        }
        Some(s) if s > 0 => {
            out.insert(
                header::CONTENT_RANGE,
                HeaderValue::from_str(&format!("bytes {s}-{}/{total}", total - 1))
                    .map_err(ApiError::internal)?,
            );
            (StatusCode::PARTIAL_CONTENT, bytes[s..].to_vec())
        }
        _ => (StatusCode::OK, bytes),
    };
    out.insert(header::CONTENT_LENGTH, HeaderValue::from(body.len()));
    if method == Method::HEAD {
        return Ok((status, out, Body::empty()).into_response());
    }
    state
        .metrics
        .bundle_bytes_out
        .fetch_add(body.len() as u64, std::sync::atomic::Ordering::Relaxed);
    Ok((status, out, body).into_response())
}

async fn missing_bundles(
    State(state): State<Arc<AppState>>,
    caller: Caller,
    body: Result<Json<MissingBundlesRequest>, JsonRejection>,
) -> Result<Json<MissingBundlesResponse>, ApiError> {
    caller.admin()?;
    let req = json_body(body)?;
    for d in &req.digests {
        check_digest(d)?;
    }
    let store = state.store.clone();
    let missing = blocking(move || {
        let mut missing = Vec::new();
        for d in req.digests {
            if !store.has_bundle(&d)? {
                missing.push(d);
            }
        }
        Ok(missing)
    })
    .await?;
    Ok(Json(MissingBundlesResponse { missing }))
}

/// Validates a submitted manifest and its bundle map; returns the manifest's diagnostics as
/// a 422 when it has errors.
///
/// Runs in a blocking task: reading a manifest is bounded (by [`MAX_MANIFEST_BYTES`] and the
/// YAML reader's budgets) but not small.
fn validate_submission(req: &NewRevision) -> Result<edgefn_schema::Manifest, ApiError> {
    if req.manifest.len() > MAX_MANIFEST_BYTES {
        return Err(ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "manifest_too_large",
            format!(
                "the manifest is {} bytes; the control plane accepts manifests of at most {} \
                 bytes ({} MiB)",
                req.manifest.len(),
                MAX_MANIFEST_BYTES,
                MAX_MANIFEST_BYTES >> 20
            ),
        ));
    }
    let source = Source::new("edgefn.yaml", req.manifest.as_str());
    let manifest = match edgefn_schema::load(&source, None) {
        Ok(l) => l.manifest,
        Err(diags) => {
            let errors = diags.error_count();
            let lines: Vec<String> = diags
                .iter()
                .filter(|d| d.is_error())
                .take(MAX_LISTED_DIAGNOSTICS)
                .map(|d| {
                    let l = d.location();
                    format!(
                        "{}:{}: {}[{}]: {}",
                        l.line, l.column, "error", d.code, d.message
                    )
                })
                .collect();
            return Err(ApiError::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                "invalid_manifest",
                format!(
                    "the manifest has {errors} error(s){}; run `edgefn validate`",
                    if errors > lines.len() {
                        format!(" (the first {} are listed)", lines.len())
                    } else {
                        String::new()
                    }
                ),
            )
            .details(serde_json::json!({ "diagnostics": lines })));
        }
    };
    let mut problems = Vec::new();
    for name in manifest.functions.keys() {
        match req.bundles.get(name) {
            None => problems.push(format!("function `{name}` has no bundle digest")),
            Some(d) if !bundle::is_digest(d) => {
                problems.push(format!("the bundle of `{name}` is not a sha256 digest"))
            }
            Some(_) => {}
        }
    }
    for name in req.bundles.keys() {
        if !manifest.functions.contains_key(name) {
            problems.push(format!(
                "bundle for `{name}`, which the manifest does not define"
            ));
        }
    }
    if !problems.is_empty() {
        return Err(ApiError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_bundles",
            problems.join("; "),
        ));
    }
    Ok(manifest)
}

/// Commits a draft unless it equals the latest revision; publishes the new fleet view.
async fn commit(
    state: &Arc<AppState>,
    draft: Draft,
    manifest: &edgefn_schema::Manifest,
    expected_parent: Option<u64>,
) -> Result<(StatusCode, Json<ApplyResponse>), ApiError> {
    let _guard = state.commit.lock().await;
    let view = state.view();
    if view.manifest.as_ref() == Some(manifest) && view.bundles == draft.bundles {
        return Ok((
            StatusCode::OK,
            Json(ApplyResponse {
                revision: view.revision,
                created: false,
            }),
        ));
    }
    let store = state.store.clone();
    // The fleet view reads the manifest again and resolves every device: off the async threads.
    let (number, view) = blocking(move || {
        let revision = store.commit(draft, expected_parent)?;
        Ok((revision.summary.number, FleetView::build(Some(&revision))))
    })
    .await?;
    state.fleet.send_replace(Arc::new(view));
    tracing::info!(revision = number, "revision committed");
    Ok((
        StatusCode::CREATED,
        Json(ApplyResponse {
            revision: number,
            created: true,
        }),
    ))
}

async fn create_revision(
    State(state): State<Arc<AppState>>,
    caller: Caller,
    body: Result<Json<NewRevision>, JsonRejection>,
) -> Result<(StatusCode, Json<ApplyResponse>), ApiError> {
    caller.admin()?;
    let req = json_body(body)?;
    let (req, manifest) = blocking(move || {
        let manifest = validate_submission(&req)?;
        Ok((req, manifest))
    })
    .await?;
    let draft = Draft {
        manifest: req.manifest,
        bundles: req.bundles,
        provenance: req.provenance,
        rollback_of: None,
        created_ms: now_ms(),
    };
    commit(&state, draft, &manifest, req.expected_parent).await
}

#[derive(Debug, Deserialize)]
struct HistoryQuery {
    limit: Option<usize>,
}

async fn history(
    State(state): State<Arc<AppState>>,
    caller: Caller,
    query: Result<Query<HistoryQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Json<Vec<edgefn_schema::api::RevisionSummary>>, ApiError> {
    caller.admin()?;
    let Query(q) = query.map_err(|e| ApiError::bad_request(e.body_text()))?;
    let limit = q.limit.unwrap_or(20).min(1000);
    let store = state.store.clone();
    Ok(Json(blocking(move || Ok(store.history(limit)?)).await?))
}

async fn revision(
    State(state): State<Arc<AppState>>,
    caller: Caller,
    path: Result<Path<u64>, axum::extract::rejection::PathRejection>,
) -> Result<Json<edgefn_schema::api::Revision>, ApiError> {
    caller.admin()?;
    let Path(n) =
        path.map_err(|_| ApiError::bad_request("a revision number is a positive whole number"))?;
    let store = state.store.clone();
    blocking(move || Ok(store.revision(n)?))
        .await?
        .map(Json)
        .ok_or_else(|| ApiError::not_found(format!("no revision {n}")))
}

async fn rollback(
    State(state): State<Arc<AppState>>,
    caller: Caller,
    body: Result<Json<RollbackRequest>, JsonRejection>,
) -> Result<(StatusCode, Json<ApplyResponse>), ApiError> {
    caller.admin()?;
    let req = json_body(body)?;
    let latest = state.view().revision;
    let to = match req.to {
        Some(n) => n,
        None if latest >= 2 => latest - 1,
        None => {
            return Err(ApiError::new(
                StatusCode::CONFLICT,
                "nothing_to_roll_back",
                if latest == 0 {
                    "nothing has been applied yet, so there is nothing to roll back".to_owned()
                } else {
                    format!(
                        "revision {latest} is the only one: there is no earlier revision to go back to"
                    )
                },
            ));
        }
    };
    let store = state.store.clone();
    let old = blocking(move || Ok(store.revision(to)?))
        .await?
        .ok_or_else(|| ApiError::not_found(format!("no revision {to}")))?;
    let (old, manifest) = blocking(move || {
        let manifest =
            edgefn_schema::load(&Source::new("edgefn.yaml", old.manifest.as_str()), None)
                .map_err(|_| {
                    ApiError::new(
                        StatusCode::UNPROCESSABLE_ENTITY,
                        "invalid_manifest",
                        format!("revision {to}'s manifest no longer validates"),
                    )
                })?
                .manifest;
        Ok((old, manifest))
    })
    .await?;
    let draft = Draft {
        manifest: old.manifest,
        bundles: old.bundles,
        provenance: Provenance {
            message: Some(format!("rollback to revision {to}")),
            ..old.summary.provenance
        },
        rollback_of: Some(to),
        created_ms: now_ms(),
    };
    commit(&state, draft, &manifest, req.expected_parent).await
}

async fn add_device(
    State(state): State<Arc<AppState>>,
    caller: Caller,
    body: Result<Json<NewDevice>, JsonRejection>,
) -> Result<(StatusCode, Json<DeviceRegistered>), ApiError> {
    caller.admin()?;
    let req = json_body(body)?;
    if !edgefn_schema::manifest::valid_name(&req.name) {
        return Err(ApiError::bad_request(format!(
            "`{}` is not a valid device name: use lowercase letters, digits, `-` and `_`, at most 63 characters",
            req.name
        )));
    }
    if req.name == crate::mqtt::CLOUD_USER {
        return Err(ApiError::bad_request(format!(
            "`{}` is reserved: it is the control plane's own MQTT user; choose another name",
            req.name
        )));
    }
    let token = auth::generate(auth::DEVICE_PREFIX).map_err(ApiError::internal)?;
    let record = DeviceRecord {
        name: req.name.clone(),
        token_hash: auth::hash(&token),
        registered_ms: now_ms(),
        mqtt_hash: Some(crate::mqtt::mosquitto::hash(&token).map_err(ApiError::internal)?),
    };
    let store = state.store.clone();
    let stored = record.clone();
    blocking(move || Ok(store.add_device(&stored)?)).await?;
    state
        .tokens
        .write()
        .map_err(ApiError::internal)?
        .insert(record.token_hash, record.name.clone());
    state
        .devices
        .write()
        .map_err(ApiError::internal)?
        .insert(record.name.clone(), record);
    tracing::info!(device = %req.name, "device registered");
    if let Some(m) = state.messaging() {
        if let Err(e) = m.write_mosquitto(&state).await {
            tracing::error!(device = %req.name, "could not update Mosquitto's password file: {e}");
        }
    }
    Ok((
        StatusCode::CREATED,
        Json(DeviceRegistered {
            name: req.name,
            token,
            mqtt: state.device_mqtt_url.get().cloned(),
        }),
    ))
}

async fn list_devices(
    State(state): State<Arc<AppState>>,
    caller: Caller,
) -> Result<Json<Vec<edgefn_schema::api::DeviceInfo>>, ApiError> {
    caller.admin()?;
    let devices = state.devices.read().map_err(ApiError::internal)?;
    let mut list: Vec<_> = devices.values().map(DeviceRecord::info).collect();
    list.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(Json(list))
}

async fn remove_device(
    State(state): State<Arc<AppState>>,
    caller: Caller,
    Path(name): Path<String>,
) -> Result<StatusCode, ApiError> {
    caller.admin()?;
    let store = state.store.clone();
    let n = name.clone();
    if !blocking(move || Ok(store.remove_device(&n)?)).await? {
        return Err(ApiError::not_found(format!(
            "no device `{name}` is registered"
        )));
    }
    if let Some(record) = state
        .devices
        .write()
        .map_err(ApiError::internal)?
        .remove(&name)
    {
        state
            .tokens
            .write()
            .map_err(ApiError::internal)?
            .remove(&record.token_hash);
    }
    tracing::info!(device = %name, "device removed, token revoked");
    if let Some(m) = state.messaging() {
        if let Some(b) = &m.broker {
            b.revoke(&name).await;
        }
        m.hub.forget(&name);
        if let Err(e) = m.write_mosquitto(&state).await {
            tracing::error!(device = %name, "could not update Mosquitto's password file: {e}");
        }
    }
    Ok(StatusCode::NO_CONTENT)
}

#[derive(Debug, Deserialize)]
struct WaitQuery {
    wait: Option<u64>,
}

/// Strips quotes and a weak prefix from an `If-None-Match` value.
fn etag_value(headers: &HeaderMap) -> Option<String> {
    let v = headers.get(header::IF_NONE_MATCH)?.to_str().ok()?.trim();
    Some(v.trim_start_matches("W/").trim_matches('"').to_owned())
}

async fn desired(
    State(state): State<Arc<AppState>>,
    caller: Caller,
    Path(name): Path<String>,
    query: Result<Query<WaitQuery>, axum::extract::rejection::QueryRejection>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    caller.device(&name)?;
    let Query(q) = query.map_err(|e| {
        ApiError::bad_request(format!("{}; `wait` is a number of seconds", e.body_text()))
    })?;
    let wait = Duration::from_secs(q.wait.unwrap_or(0).min(MAX_WAIT_SECS));
    let known = etag_value(&headers);
    let deadline = tokio::time::Instant::now() + wait;
    let mut rx = state.fleet.subscribe();
    let mut shutdown = state.shutdown.clone();
    let waiting = WaitGuard::new(&state.metrics);
    loop {
        let d = rx.borrow_and_update().desired_for(&name);
        if known.as_deref() != Some(d.digest.as_str()) {
            drop(waiting);
            state
                .metrics
                .desired_served
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            let etag =
                HeaderValue::from_str(&format!("\"{}\"", d.digest)).map_err(ApiError::internal)?;
            return Ok((
                [
                    (header::ETAG, etag),
                    (
                        header::CONTENT_TYPE,
                        HeaderValue::from_static("application/json"),
                    ),
                ],
                d.body.clone(),
            )
                .into_response());
        }
        if wait.is_zero() {
            return Ok(StatusCode::NOT_MODIFIED.into_response());
        }
        tokio::select! {
            changed = rx.changed() => if changed.is_err() { return Ok(StatusCode::NOT_MODIFIED.into_response()) },
            () = tokio::time::sleep_until(deadline) => return Ok(StatusCode::NOT_MODIFIED.into_response()),
            _ = shutdown.wait_for(|s| *s) => return Ok(StatusCode::SERVICE_UNAVAILABLE.into_response()),
        }
    }
}

/// Counts a waiting long-poll for as long as it lives.
struct WaitGuard<'a>(&'a Metrics);

impl<'a> WaitGuard<'a> {
    fn new(m: &'a Metrics) -> Self {
        m.longpolls_waiting
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        Self(m)
    }
}

impl Drop for WaitGuard<'_> {
    fn drop(&mut self) {
        self.0
            .longpolls_waiting
            .fetch_sub(1, std::sync::atomic::Ordering::Relaxed);
    }
}

async fn report_status(
    State(state): State<Arc<AppState>>,
    caller: Caller,
    Path(name): Path<String>,
    body: Result<Json<StatusReport>, JsonRejection>,
) -> Result<StatusCode, ApiError> {
    caller.device(&name)?;
    if !state
        .devices
        .read()
        .map_err(ApiError::internal)?
        .contains_key(&name)
    {
        return Err(ApiError::not_found(format!(
            "no device `{name}` is registered"
        )));
    }
    let report = json_body(body)?;
    state
        .metrics
        .status_reports
        .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let mut st = state.statuses.lock().map_err(ApiError::internal)?;
    st.dirty.insert(name.clone());
    st.last.insert(name, (report, now_ms()));
    Ok(StatusCode::NO_CONTENT)
}

async fn fleet_status(
    State(state): State<Arc<AppState>>,
    caller: Caller,
) -> Result<Json<FleetStatus>, ApiError> {
    caller.admin()?;
    let view = state.view();
    let mut statuses = state.status_snapshot()?;
    let registered: HashSet<String> = state
        .devices
        .read()
        .map_err(ApiError::internal)?
        .keys()
        .cloned()
        .collect();
    let mut names: Vec<String> = registered.iter().cloned().collect();
    if let Some(m) = &view.manifest {
        names.extend(m.devices.keys().cloned());
    }
    names.sort();
    names.dedup();
    let devices = names
        .into_iter()
        .map(|name| {
            let desired = view.desired_for(&name);
            let report = statuses.remove(&name);
            let converged = report
                .as_ref()
                .is_some_and(|(r, _)| converged(r, &desired.digest));
            DeviceStatus {
                registered: registered.contains(&name),
                in_manifest: view.devices.contains_key(&name),
                desired_digest: desired.digest.clone(),
                last_seen_ms: report.as_ref().map(|(_, at)| *at),
                report: report.map(|(r, _)| r),
                converged,
                name,
            }
        })
        .collect();
    Ok(Json(FleetStatus {
        revision: view.revision,
        devices,
    }))
}

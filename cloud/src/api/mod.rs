//! The HTTP API: the router, who is calling, and one module of handlers per resource.
//!
//! | module | routes |
//! | --- | --- |
//! | [`bundles`] | `PUT`/`GET`/`HEAD /v1/bundles/{digest}`, `POST /v1/bundles/missing` |
//! | [`revisions`] | `POST`/`GET /v1/revisions`, `GET /v1/revisions/{n}`, `POST /v1/rollback` |
//! | [`devices`] | `POST`/`GET /v1/devices`, `DELETE /v1/devices/{name}`, `GET …/desired`, `POST …/status` |
//! | [`fleet_page`] | `GET /v1/status/page` (one page of the fleet, filtered, with its counts) |
//! | [`status`] | `GET /v1/status`, `GET /metrics` |
//! | [`tokens`] | `GET`/`POST /v1/tokens`, `DELETE /v1/tokens/{id}` |
//! | [`bindings`] | `POST /v1/bindings` (bind a function with a click) |
//! | [`views`] | `GET /v1/revisions/{from}/diff/{to}`, `GET /v1/functions`, `GET /v1/bundles/{digest}/files[/{path}]` |
//! | [`messages`] | `POST /v1/publish`, `GET /v1/messages`, `GET /v1/devices/{name}/logs` |
//! | [`secrets`] | `PUT`/`DELETE /v1/secrets/{name}`, `GET /v1/secrets`, `GET /v1/devices/{name}/secrets/{secret}` |
//! | [`invoke`] | `POST /v1/devices/{name}/invoke` |
//!
//! Handlers read and change [`AppState`]; the state knows nothing of them.

mod bindings;
mod bundles;
mod devices;
mod fleet_page;
mod invoke;
mod messages;
mod revisions;
mod rollouts;
mod secrets;
mod status;
mod tokens;
mod views;

pub(crate) use fleet_page::{PageQuery, fleet_page_of};
pub(crate) use rollouts::drive as drive_rollouts;
pub(crate) use status::{converged, fleet_status_of};

use std::sync::Arc;

use axum::extract::rejection::JsonRejection;
use axum::extract::{DefaultBodyLimit, FromRequestParts, Request, State};
use axum::http::request::Parts;
use axum::http::{Method, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::Response;
use axum::routing::{get, post, put};
use axum::{Json, Router};

use crate::auth;
use crate::error::ApiError;
use crate::registry::Caller;
use crate::state::AppState;
use edgefn_schema::api::ErrorCode;

/// Largest bundle accepted.
/// Largest bundle, dependency layer or model upload (streamed to the store's disk, never held
/// in memory): 4 GiB.
const MAX_BUNDLE_BYTES: u64 = 4 << 30;
/// Largest JSON body accepted, where a route sets no smaller limit.
const MAX_JSON_BYTES: usize = 16 << 20;
/// Largest manifest `POST /v1/revisions` accepts, in bytes of YAML. What reading it may cost
/// is proportional: the tree, and what aliases copy (the YAML reader's
/// `edgefn_schema::yaml::expansion_budget`). 8 MiB holds a fleet of 100,000 devices listed
/// with a label or two each (about 40–60 bytes a device).
const MAX_MANIFEST_BYTES: usize = 8 << 20;
/// Largest body of `POST /v1/revisions`: a manifest of [`MAX_MANIFEST_BYTES`] (which JSON
/// escaping at most doubles: YAML has no other control characters than tab and line breaks)
/// and its bundle map.
const MAX_REVISION_BYTES: usize = 4 * MAX_MANIFEST_BYTES;
/// Largest body of `POST /v1/publish`: a payload of [`crate::messaging::MAX_PUBLISH_BYTES`],
/// which JSON escaping may grow six times (`\u0000`), and the rest of the request.
const MAX_PUBLISH_BODY_BYTES: usize = 6 * crate::messaging::MAX_PUBLISH_BYTES + (64 << 10);
/// Longest long-poll, in seconds.
const MAX_WAIT_SECS: u64 = 300;

impl Caller {
    /// Fails unless this is an admin.
    pub(crate) fn require_admin(&self) -> Result<(), ApiError> {
        match self {
            Caller::Admin => Ok(()),
            Caller::Device(_) => Err(ApiError::forbidden(
                "this needs an admin token; a device token cannot do it",
            )),
        }
    }

    /// Fails unless this is an admin or device `name` itself.
    pub(crate) fn require_device(&self, name: &str) -> Result<(), ApiError> {
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
        if parts.headers.get(header::AUTHORIZATION).is_none() {
            // The web console's session cookie (CSRF-checked for changes) stands for an admin.
            if let Some(caller) =
                crate::console::session_caller(state, &parts.method, &parts.headers).await
            {
                return caller;
            }
        }
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
        state
            .registry
            .authenticate(&auth::hash(token))
            .ok_or_else(|| ApiError::unauthorized("unknown or revoked token"))
    }
}

/// Reads the latest revision and its rollout again when a device asks for something the
/// served view does not give it (a bundle, a secret), before refusing: with several processes
/// on one database, the device may have been served a revision by another process whose
/// notification has not reached this one yet — it was woken there and its download came here
/// a few milliseconds later. Whether the view changed. Serialised with commits, as a
/// notification's re-read is; one small read of the store.
async fn catch_up(state: &Arc<AppState>) -> Result<bool, ApiError> {
    let _serialised = state.commit.lock().await;
    let st = state.clone();
    crate::error::blocking(move || Ok(st.reload_latest()?)).await
}

fn json_body<T>(body: Result<Json<T>, JsonRejection>) -> Result<T, ApiError> {
    body.map(|Json(v)| v).map_err(body_error)
}

/// A rejected JSON body: 413 past the route's size limit, 400 otherwise (including JSON nested
/// deeper than serde_json's limit of 128).
fn body_error(e: JsonRejection) -> ApiError {
    if e.status() == StatusCode::PAYLOAD_TOO_LARGE {
        ApiError::new(
            ErrorCode::BodyTooLarge,
            "the request body is larger than this endpoint accepts; see the API document \
             (cloud/openapi.json) for its limit",
        )
    } else {
        ApiError::bad_request(format!("invalid request body: {}", e.body_text()))
    }
}

/// The router: every operation of [`crate::openapi::OPERATIONS`], counted for `/metrics`.
pub(crate) fn router(state: Arc<AppState>) -> Router {
    let bundles = Router::new()
        .route(
            "/v1/bundles/{digest}",
            put(bundles::put_bundle)
                .get(bundles::get_bundle)
                .head(bundles::get_bundle),
        )
        .layer(DefaultBodyLimit::disable());
    Router::new()
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/metrics", get(status::metrics))
        .route("/v1/bundles/missing", post(bundles::missing_bundles))
        .route(
            "/v1/revisions",
            post(revisions::create_revision)
                .layer(DefaultBodyLimit::max(MAX_REVISION_BYTES))
                .get(revisions::history),
        )
        .route("/v1/revisions/{n}", get(revisions::revision))
        .route("/v1/rollback", post(revisions::rollback))
        .route("/v1/rollout", get(rollouts::show))
        .route("/v1/rollout/pause", post(rollouts::pause))
        .route("/v1/rollout/resume", post(rollouts::resume))
        .route("/v1/rollout/abort", post(rollouts::abort))
        .route(
            "/v1/bindings",
            post(bindings::bind).layer(DefaultBodyLimit::max(bindings::MAX_BIND_BYTES)),
        )
        .route("/v1/revisions/{from}/diff/{to}", get(views::revision_diff))
        .route("/v1/functions", get(views::functions))
        .route("/v1/bundles/{digest}/files", get(views::bundle_files))
        .route(
            "/v1/bundles/{digest}/files/{*path}",
            get(views::bundle_file),
        )
        .route("/v1/tokens", get(tokens::list).post(tokens::create))
        .route("/v1/tokens/{id}", axum::routing::delete(tokens::revoke))
        .route(
            "/v1/devices",
            post(devices::add_device).get(devices::list_devices),
        )
        .route(
            "/v1/devices/{name}",
            axum::routing::delete(devices::remove_device),
        )
        .route("/v1/devices/{name}/desired", get(devices::desired))
        .route("/v1/devices/{name}/status", post(devices::report_status))
        .route("/v1/status", get(status::fleet_status))
        .route("/v1/secrets", get(secrets::list))
        .route(
            "/v1/secrets/{name}",
            put(secrets::set)
                .layer(DefaultBodyLimit::max(
                    edgefn_schema::api::MAX_SECRET_BYTES + 1,
                ))
                .delete(secrets::remove),
        )
        .route(
            "/v1/devices/{name}/secrets/{secret}",
            get(secrets::device_secret),
        )
        .route("/v1/status/page", get(fleet_page::fleet_page))
        .route(
            "/v1/publish",
            post(messages::publish).layer(DefaultBodyLimit::max(MAX_PUBLISH_BODY_BYTES)),
        )
        .route("/v1/messages", get(messages::messages))
        .route("/v1/devices/{name}/logs", get(messages::logs))
        .route(
            "/v1/devices/{name}/invoke",
            post(invoke::invoke).layer(DefaultBodyLimit::max(invoke::MAX_INVOKE_BODY_BYTES)),
        )
        .merge(crate::console::routes())
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

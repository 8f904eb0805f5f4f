//! The web console (`/`): a small single-page app embedded in the binary (`cloud/console/`:
//! one HTML page, one script, one style sheet; no build step, no CDN), over the control plane's
//! own API. Why a small SPA: the API already answers everything the pages show, so the console
//! adds no second way to read or change the fleet — every action goes through the same handlers
//! and checks as `edgefn` does.
//!
//! Signing in exchanges an admin token for a session: a random 256-bit id in a cookie
//! (`HttpOnly`, `SameSite=Strict`, `Path=/`, 12 h, `Secure` over https), stored here only as its
//! sha256, with the admin token it came from (revoking that token ends the session) and a CSRF
//! token the page sends as `X-CSRF-Token` with every request that changes something (compared in
//! constant time; the OWASP synchronizer-token pattern). Pages are served with a
//! Content-Security-Policy that allows scripts, styles and connections from this origin only, no
//! inline script, no framing.

use std::collections::HashMap;
use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use axum::Json;
use axum::extract::State;
use axum::http::header::{self, HeaderMap, HeaderValue};
use axum::http::{Method, StatusCode};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use serde::{Deserialize, Serialize};

use crate::auth;
use crate::error::{ApiError, blocking};
use crate::registry::Caller;
use crate::state::AppState;
use crate::store::ConsoleSession;

/// The session cookie's name.
pub(crate) const COOKIE: &str = "edgefn_session";
/// The header that carries the session's CSRF token.
pub(crate) const CSRF_HEADER: &str = "x-csrf-token";
/// How long a session lasts, in milliseconds (12 h).
const LIFETIME_MS: u64 = 12 * 3600 * 1000;
/// Most sessions kept at once (per store, across processes); past it the oldest ends (a bound on
/// what sign-ins can cost).
const MAX_SESSIONS: usize = 10_000;

const INDEX: &str = include_str!("../console/index.html");
const APP_JS: &str = include_str!("../console/app.js");
const APP_CSS: &str = include_str!("../console/app.css");

/// What every console page is served with (CSP Level 3; `frame-ancestors` replaces
/// X-Frame-Options).
const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'";

/// A new session for the admin token whose hash is `token`, stored: its cookie value (never
/// stored, never logged) and what the store keeps. Blocking (the store).
fn create(
    store: &dyn crate::store::Store,
    token: [u8; 32],
    now_ms: u64,
) -> Result<(String, ConsoleSession), ApiError> {
    let id = auth::generate("").map_err(|e| ApiError::internal(format!("no randomness: {e}")))?;
    let csrf = auth::generate("").map_err(|e| ApiError::internal(format!("no randomness: {e}")))?;
    let session = ConsoleSession {
        id_hash: auth::hash(&id),
        token_hash: token,
        csrf,
        created_ms: now_ms,
        expires_ms: now_ms + LIFETIME_MS,
    };
    store.put_console_session(&session, MAX_SESSIONS, now_ms)?;
    Ok((id, session))
}

/// The live session whose cookie value is `id`, if any. Async: the store is read on a blocking
/// thread.
async fn find(state: &AppState, id: &str) -> Result<Option<ConsoleSession>, ApiError> {
    let (store, key) = (state.store.clone(), auth::hash(id));
    blocking(move || Ok(store.console_session(&key, edgefn_os::time::now_ms())?)).await
}

/// Ends the session whose cookie value is `id` (if there is one).
async fn end(state: &AppState, id: &str) -> Result<(), ApiError> {
    let (store, key) = (state.store.clone(), auth::hash(id));
    blocking(move || Ok(store.remove_console_session(&key).map(|_| ())?)).await
}

/// The session cookie's value in `headers`, if any.
fn cookie(headers: &HeaderMap) -> Option<&str> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(k, _)| *k == COOKIE)
        .map(|(_, v)| v)
}

/// The caller a request's session cookie stands for, when it has one and no `Authorization`
/// header: an admin, while the session lasts and its admin token is not revoked. A request that
/// changes something (any method but GET and HEAD) must also carry the session's CSRF token.
///
/// `None` when the request has no session cookie (the caller then needs a token).
pub(crate) async fn session_caller(
    state: &AppState,
    method: &Method,
    headers: &HeaderMap,
) -> Option<Result<Caller, ApiError>> {
    let id = cookie(headers)?;
    let session = match find(state, id).await {
        Ok(Some(s)) => s,
        Ok(None) => {
            return Some(Err(ApiError::unauthorized(
                "your console session ended: sign in again",
            )));
        }
        Err(e) => return Some(Err(e)),
    };
    if state.registry.authenticate(&session.token_hash).is_none() {
        if let Err(e) = end(state, id).await {
            return Some(Err(e));
        }
        return Some(Err(ApiError::unauthorized(
            "the admin token this session was made with was revoked: sign in again",
        )));
    }
    if method != Method::GET && method != Method::HEAD {
        let sent = headers
            .get(CSRF_HEADER)
            .map(HeaderValue::as_bytes)
            .unwrap_or_default();
        if !edgefn_os::secret::ct_eq(sent, session.csrf.as_bytes()) {
            return Some(Err(ApiError::forbidden(
                "missing or wrong CSRF token: reload the console page",
            )));
        }
    }
    Some(Ok(Caller::Admin))
}

/// The sha256 of the admin token behind a request: its bearer token, or the token its console
/// session was made with. `None` when it has neither (the handler's `Caller` refused it then).
pub(crate) async fn admin_token_hash(state: &AppState, headers: &HeaderMap) -> Option<[u8; 32]> {
    if let Some(v) = headers.get(header::AUTHORIZATION) {
        return v
            .to_str()
            .ok()
            .and_then(|v| v.strip_prefix("Bearer "))
            .map(|t| auth::hash(t.trim()));
    }
    let id = cookie(headers)?;
    find(state, id).await.ok().flatten().map(|s| s.token_hash)
}

/// Whether a request comes from a console session (no `Authorization` header, a session cookie).
pub(crate) fn is_session(headers: &HeaderMap) -> bool {
    headers.get(header::AUTHORIZATION).is_none() && cookie(headers).is_some()
}

fn page(content_type: &'static str, body: &'static str) -> Response {
    (
        [
            (header::CONTENT_TYPE, content_type),
            (header::CONTENT_SECURITY_POLICY, CSP),
            (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
            (header::REFERRER_POLICY, "no-referrer"),
            (header::CACHE_CONTROL, "no-cache"),
        ],
        body,
    )
        .into_response()
}

async fn index() -> Response {
    page("text/html; charset=utf-8", INDEX)
}

async fn app_js() -> Response {
    page("text/javascript; charset=utf-8", APP_JS)
}

async fn app_css() -> Response {
    page("text/css; charset=utf-8", APP_CSS)
}

/// `GET /console/session`.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
struct SessionInfo {
    signed_in: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    csrf: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    expires_ms: Option<u64>,
}

async fn session_info(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let session = match cookie(&headers) {
        Some(id) => find(&state, id).await?,
        None => None,
    }
    .filter(|s| state.registry.authenticate(&s.token_hash).is_some());
    let info = match session {
        Some(s) => SessionInfo {
            signed_in: true,
            csrf: Some(s.csrf),
            expires_ms: Some(s.expires_ms),
        },
        None => SessionInfo {
            signed_in: false,
            csrf: None,
            expires_ms: None,
        },
    };
    Ok(([(header::CACHE_CONTROL, "no-store")], Json(info)).into_response())
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct SignIn {
    token: String,
}

/// `POST /console/session {"token": ADMIN_TOKEN}`: a session cookie for an admin token.
async fn sign_in(
    State(state): State<Arc<AppState>>,
    body: Result<Json<SignIn>, axum::extract::rejection::JsonRejection>,
) -> Result<Response, ApiError> {
    let Json(SignIn { token }) = body.map_err(|e| {
        if e.status() == StatusCode::PAYLOAD_TOO_LARGE {
            ApiError::new(
                edgefn_schema::api::ErrorCode::BodyTooLarge,
                "a sign-in body is at most 16 KiB: {\"token\": ADMIN_TOKEN}",
            )
        } else {
            ApiError::bad_request(format!("invalid request body: {}", e.body_text()))
        }
    })?;
    let hash = auth::hash(token.trim());
    match state.registry.authenticate(&hash) {
        Some(Caller::Admin) => {}
        _ => {
            return Err(ApiError::unauthorized(
                "not an admin token of this control plane",
            ));
        }
    }
    let store = state.store.clone();
    let (id, session) =
        blocking(move || create(store.as_ref(), hash, edgefn_os::time::now_ms())).await?;
    let secure = if state.https() { "; Secure" } else { "" };
    let cookie = format!(
        "{COOKIE}={id}; HttpOnly; SameSite=Strict; Path=/; Max-Age={}{secure}",
        LIFETIME_MS / 1000
    );
    Ok((
        StatusCode::CREATED,
        [
            (header::SET_COOKIE, cookie),
            (header::CACHE_CONTROL, "no-store".to_owned()),
        ],
        Json(SessionInfo {
            signed_in: true,
            csrf: Some(session.csrf),
            expires_ms: Some(session.expires_ms),
        }),
    )
        .into_response())
}

/// `DELETE /console/session`: signs out (the session ends here, not only in the browser).
async fn sign_out(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    if let Some(caller) = session_caller(&state, &Method::DELETE, &headers).await {
        caller?;
    }
    if let Some(id) = cookie(&headers) {
        end(&state, id).await?;
    }
    Ok((
        StatusCode::NO_CONTENT,
        [(
            header::SET_COOKIE,
            format!("{COOKIE}=; HttpOnly; SameSite=Strict; Path=/; Max-Age=0"),
        )],
    )
        .into_response())
}

/// `GET /console/events`: the fleet's status as server-sent events: `status` (the body of
/// `GET /v1/status`) at once, then `delta` (`{"revision", "devices": [changed], "removed":
/// [names]}`) after each change — a report, a revision, a device added or removed — at most
/// every 250 ms, so an open page costs the changed devices, not the fleet, per change.
///
/// With a page query (`?page=N&size=…&q=…&name=…&label=…&state=…`, as `GET /v1/status/page`),
/// the stream is of `page` events instead: that page of the fleet and the whole fleet's
/// counts, at once and again whenever they change — what an open overview needs at 10,000
/// devices.
async fn events(
    State(state): State<Arc<AppState>>,
    caller: Caller,
    query: Result<
        axum::extract::Query<crate::api::PageQuery>,
        axum::extract::rejection::QueryRejection,
    >,
    uri: axum::http::Uri,
) -> Result<Response, ApiError> {
    caller.require_admin()?;
    if uri.query().is_some_and(|q| !q.is_empty()) {
        let axum::extract::Query(q) = query.map_err(|e| ApiError::bad_request(e.body_text()))?;
        let labels = q.check()?;
        return Ok(page_events(state, q, labels));
    }
    let (tx, rx) = tokio::sync::mpsc::channel::<Result<Event, Infallible>>(4);
    let mut changes = state.subscribe_changes();
    let mut shutdown = state.shutdown_signal();
    tokio::spawn(async move {
        let mut sent: HashMap<String, String> = HashMap::new();
        let mut first = true;
        loop {
            let status = crate::api::fleet_status_of(&state);
            let event = if first {
                first = false;
                sent = status
                    .devices
                    .iter()
                    .map(|d| (d.name.clone(), serde_json::to_string(d).unwrap_or_default()))
                    .collect();
                Event::default().event("status").json_data(&status)
            } else {
                let mut now: HashMap<String, String> = HashMap::with_capacity(status.devices.len());
                let mut changed = Vec::new();
                for d in &status.devices {
                    let json = serde_json::to_string(d).unwrap_or_default();
                    if sent.get(&d.name) != Some(&json) {
                        changed.push(d);
                    }
                    now.insert(d.name.clone(), json);
                }
                let removed: Vec<&String> = sent.keys().filter(|n| !now.contains_key(*n)).collect();
                let delta = serde_json::json!({
                    "revision": status.revision,
                    "devices": changed,
                    "removed": removed,
                });
                let event = Event::default().event("delta").json_data(&delta);
                sent = now;
                event
            };
            let Ok(event) = event else { return };
            if tx.send(Ok(event)).await.is_err() {
                return; // the page went away
            }
            // The stream ends when the control plane stops, so that it can.
            tokio::select! {
                changed = changes.changed() => if changed.is_err() { return },
                () = crate::messaging::stopped(&mut shutdown) => return,
            }
            // Coalesce a burst of reports into one event.
            tokio::time::sleep(Duration::from_millis(250)).await;
            changes.borrow_and_update();
        }
    });
    let stream = tokio_stream::wrappers::ReceiverStream::new(rx);
    Ok((
        [(header::CACHE_CONTROL, "no-store")],
        Sse::new(stream).keep_alive(KeepAlive::new().interval(Duration::from_secs(15))),
    )
        .into_response())
}

/// The live stream of one page of the fleet: a `page` event at once, then again after a change
/// (coalesced over 250 ms) when the page or the counts differ from what was sent.
fn page_events(
    state: Arc<AppState>,
    query: crate::api::PageQuery,
    labels: std::collections::BTreeMap<String, String>,
) -> Response {
    let (tx, rx) = tokio::sync::mpsc::channel::<Result<Event, Infallible>>(4);
    let mut changes = state.subscribe_changes();
    let mut shutdown = state.shutdown_signal();
    tokio::spawn(async move {
        let mut sent = String::new();
        loop {
            let page = crate::api::fleet_page_of(&state, &query, &labels);
            let Ok(json) = serde_json::to_string(&page) else {
                return;
            };
            if json != sent {
                let event = Event::default().event("page").data(json.as_str());
                if tx.send(Ok(event)).await.is_err() {
                    return; // the page went away
                }
                sent = json;
            }
            tokio::select! {
                changed = changes.changed() => if changed.is_err() { return },
                () = crate::messaging::stopped(&mut shutdown) => return,
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
            changes.borrow_and_update();
        }
    });
    let stream = tokio_stream::wrappers::ReceiverStream::new(rx);
    (
        [(header::CACHE_CONTROL, "no-store")],
        Sse::new(stream).keep_alive(KeepAlive::new().interval(Duration::from_secs(15))),
    )
        .into_response()
}

/// The console's routes: the page and its assets, the session, the live status.
pub(crate) fn routes() -> axum::Router<Arc<AppState>> {
    axum::Router::new()
        .route("/", get(index))
        .route("/console/app.js", get(app_js))
        .route("/console/app.css", get(app_css))
        .route(
            "/console/session",
            get(session_info)
                .post(sign_in)
                .delete(sign_out)
                .layer(axum::extract::DefaultBodyLimit::max(16 << 10)),
        )
        .route("/console/events", get(events))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_cookie_is_read_among_others() {
        let mut h = HeaderMap::new();
        h.insert(
            header::COOKIE,
            HeaderValue::from_static("a=1; edgefn_session=abc; b=2"),
        );
        assert_eq!(cookie(&h), Some("abc"));
        h.insert(
            header::COOKIE,
            HeaderValue::from_static("edgefn_sessionx=abc"),
        );
        assert_eq!(cookie(&h), None);
    }
}

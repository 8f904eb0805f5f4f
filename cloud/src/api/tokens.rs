//! Admin tokens: `GET /v1/tokens` lists them (ids, names, times; never a token),
//! `POST /v1/tokens` creates one (shown once, stored hashed), `DELETE /v1/tokens/{id}` revokes
//! one at once, everywhere. The last admin token cannot be revoked: that would lock every admin
//! out (a lost token is replaced by starting `edgefn-cloud` once with a new `--admin-token-file`).

use std::sync::Arc;

use axum::Json;
use axum::extract::rejection::{JsonRejection, PathRejection};
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode, header};
use edgefn_schema::api::{AdminTokenCreated, AdminTokenInfo, NewAdminToken};

use crate::auth;
use crate::error::ApiError;
use crate::error::blocking;
use crate::registry::Caller;
use crate::state::AppState;
use crate::store::{AdminTokenRecord, Revoked};
use edgefn_os::time::now_ms;
use edgefn_schema::api::ErrorCode;

/// The hash of the request's bearer token (the caller is authenticated already).
fn presented(headers: &HeaderMap) -> Option<[u8; 32]> {
    let value = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    Some(auth::hash(value.strip_prefix("Bearer ")?.trim()))
}

fn valid_name(name: &str) -> bool {
    (1..=64).contains(&name.len())
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_.@".contains(c))
}

/// `GET /v1/tokens`: the admin tokens not revoked, oldest first.
pub(super) async fn list(
    State(state): State<Arc<AppState>>,
    caller: Caller,
    headers: HeaderMap,
) -> Result<Json<Vec<AdminTokenInfo>>, ApiError> {
    caller.require_admin()?;
    let current = presented(&headers);
    let store = state.store.clone();
    let mut records = blocking(move || Ok(store.admin_tokens()?)).await?;
    records.retain(|r| r.revoked_ms.is_none());
    records.sort_by_key(|r| (r.created_ms, r.id()));
    Ok(Json(
        records
            .into_iter()
            .map(|r| AdminTokenInfo {
                id: r.id(),
                current: current == Some(r.hash),
                name: r.name,
                created_ms: r.created_ms,
            })
            .collect(),
    ))
}

/// `POST /v1/tokens`: a new admin token, answered once.
pub(super) async fn create(
    State(state): State<Arc<AppState>>,
    caller: Caller,
    body: Result<Json<NewAdminToken>, JsonRejection>,
) -> Result<(StatusCode, Json<AdminTokenCreated>), ApiError> {
    caller.require_admin()?;
    let Json(req) = body
        .map_err(|e| ApiError::bad_request(format!("invalid request body: {}", e.body_text())))?;
    if !valid_name(&req.name) {
        return Err(ApiError::bad_request(format!(
            "`{}` is not a valid token name: 1 to 64 letters, digits, `-`, `_`, `.` or `@` (say what it is for: `ci`, `alice`)",
            req.name
        )));
    }
    let token = auth::generate(auth::ADMIN_PREFIX).map_err(ApiError::internal)?;
    let record = AdminTokenRecord {
        hash: auth::hash(&token),
        name: req.name,
        created_ms: now_ms(),
        revoked_ms: None,
    };
    let store = state.store.clone();
    let stored = record.clone();
    state
        .registry
        .change(
            move || Ok(store.add_admin_token(&stored)?),
            |entries, ()| entries.add_admin(record.hash),
        )
        .await?;
    tracing::info!(id = %record.id(), name = %record.name, "admin token created");
    Ok((
        StatusCode::CREATED,
        Json(AdminTokenCreated {
            id: record.id(),
            name: record.name,
            token,
        }),
    ))
}

/// `DELETE /v1/tokens/{id}`: revokes a token; it fails from the next request on.
pub(super) async fn revoke(
    State(state): State<Arc<AppState>>,
    caller: Caller,
    id: Result<Path<String>, PathRejection>,
) -> Result<StatusCode, ApiError> {
    caller.require_admin()?;
    let Path(id) = id.map_err(|e| ApiError::bad_request(e.body_text()))?;
    let store = state.store.clone();
    let key = id.clone();
    let revoked = state
        .registry
        .change(
            move || {
                let revoked = store.revoke_admin_token(&key, now_ms())?;
                if let Some(Revoked::Done(hash)) = &revoked {
                    // Its console sessions end with it. Were this to fail, they would still be
                    // refused (a session is checked against the live admin tokens each request).
                    if let Err(e) = store.remove_console_sessions_of(hash) {
                        tracing::warn!("ending the revoked token's console sessions: {e}");
                    }
                }
                Ok(revoked)
            },
            |entries, revoked| {
                if let Some(Revoked::Done(hash)) = revoked {
                    entries.revoke_admin(hash);
                }
            },
        )
        .await?;
    match revoked {
        None => Err(ApiError::not_found(format!(
            "no admin token `{id}` (see `edgefn token list`)"
        ))),
        Some(Revoked::Last) => Err(ApiError::new(
            ErrorCode::LastAdminToken,
            format!(
                "`{id}` is the last admin token: revoking it would lock every admin out; create another first (`edgefn token create NAME`)"
            ),
        )),
        Some(Revoked::Done(_)) => {
            tracing::info!(%id, "admin token revoked");
            Ok(StatusCode::NO_CONTENT)
        }
    }
}

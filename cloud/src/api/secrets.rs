//! Secrets: `PUT /v1/secrets/{name}` sets a new version (and rolls it out as a new revision
//! when the latest revision uses it), `GET /v1/secrets` lists names and versions (never
//! values), `DELETE /v1/secrets/{name}` forgets one the latest revision does not use, and
//! `GET /v1/devices/{name}/secrets/{secret}` gives a device the value its desired state names.
//!
//! A value leaves the control plane only there, only to the device whose desired state names
//! that secret at that version, only with that device's token (an admin token is refused), and
//! is never logged.

use std::sync::Arc;

use axum::Json;
use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use edgefn_schema::api::{
    ErrorCode, MAX_SECRET_BYTES, Provenance, SECRET_VERSIONS_KEPT, SecretInfo, SecretSetResponse,
};
use serde::Deserialize;

use super::revisions::{Pins, commit};
use crate::error::{ApiError, blocking};
use crate::registry::Caller;
use crate::state::AppState;
use crate::store::Draft;
use edgefn_os::time::now_ms;

/// The header that names the version of the value in a device's answer.
const VERSION_HEADER: &str = "edgefn-secret-version";

fn check_name(name: &str) -> Result<(), ApiError> {
    if edgefn_schema::manifest::valid_secret_name(name) {
        Ok(())
    } else {
        Err(ApiError::new(
            ErrorCode::InvalidSecret,
            format!(
                "`{}` is not a valid secret name: use lowercase letters, digits, `-` and `_`, \
                 starting and ending with a letter or digit, at most 63 characters",
                name.escape_debug()
            ),
        ))
    }
}

fn key_error(e: crate::secrets::KeyError) -> ApiError {
    tracing::error!("secrets key: {e}");
    ApiError::internal(e)
}

pub(super) async fn set(
    State(state): State<Arc<AppState>>,
    caller: Caller,
    Path(name): Path<String>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<(StatusCode, Json<SecretSetResponse>), ApiError> {
    caller.require_admin()?;
    check_name(&name)?;
    let too_large = || {
        ApiError::new(
            ErrorCode::SecretTooLarge,
            format!(
                "a secret value is at most {MAX_SECRET_BYTES} bytes ({} KiB)",
                MAX_SECRET_BYTES >> 10
            ),
        )
    };
    let value = match body {
        Ok(b) => b,
        Err(e) if e.status() == StatusCode::PAYLOAD_TOO_LARGE => return Err(too_large()),
        Err(e) => return Err(ApiError::bad_request(e.body_text())),
    };
    if value.len() > MAX_SECRET_BYTES {
        return Err(too_large());
    }
    if value.is_empty() {
        return Err(ApiError::new(
            ErrorCode::InvalidSecret,
            "a secret value cannot be empty",
        ));
    }
    // The rollout revision is the control plane's own (the same manifest as the latest, new
    // versions): named so, `edgefn apply`'s drift check never takes it for a change made
    // outside git, with the caller's user agent kept beside.
    let tool = Some(
        match headers
            .get(header::USER_AGENT)
            .and_then(|v| v.to_str().ok())
        {
            Some(ua) => format!(
                "edgefn-cloud secret set (from {})",
                ua.chars().take(100).collect::<String>()
            ),
            None => "edgefn-cloud secret set".to_owned(),
        },
    );
    let st = state.clone();
    let secret = name.clone();
    let version = blocking(move || {
        let store = st.store.as_ref();
        let key = st.keyring().key(store).map_err(key_error)?;
        let nonce = crate::secrets::nonce().map_err(key_error)?;
        Ok(
            store.put_secret(&secret, now_ms(), SECRET_VERSIONS_KEPT, &mut |v| {
                crate::secrets::seal(&key, &secret, v, &value, nonce)
            })?,
        )
    })
    .await?;
    tracing::info!(secret = %name, version, "secret set");
    // A new value is a rollout: the latest revision again, with this version. Made against
    // that revision (a concurrent apply wins, and the rollout is made on top of it instead).
    let mut revision = None;
    let mut signing_required = false;
    for _ in 0..3 {
        let store = state.store.clone();
        let latest = blocking(move || {
            let Some(rev) = store.latest()? else {
                return Ok(None);
            };
            let source = edgefn_schema::Source::new("edgefn.yaml", rev.manifest.as_str());
            Ok(edgefn_schema::load(&source, None)
                .ok()
                .map(|l| (rev, l.manifest)))
        })
        .await?;
        let Some((latest, manifest)) = latest else {
            break;
        };
        if !manifest.secret_users().contains_key(&name) {
            break;
        }
        // The control plane cannot sign: on top of a signed revision it makes none (devices
        // with trustedKeys would refuse it); a signed apply rolls the stored version out.
        if latest.signatures.is_some() {
            signing_required = true;
            break;
        }
        let draft = Draft {
            manifest: latest.manifest,
            bundles: latest.bundles,
            layers: latest.layers,
            models: latest.models,
            provenance: Provenance {
                message: Some(format!("secret set {name} (version {version})")),
                tool: tool.clone(),
                ..Provenance::default()
            },
            rollback_of: None,
            created_ms: now_ms(),
            secrets: Default::default(),
            // Unsigned, on top of an unsigned revision.
            signatures: None,
        };
        match commit(
            &state,
            draft,
            &manifest,
            Some(latest.summary.number),
            Pins::Latest,
        )
        .await
        {
            Ok((_, Json(applied))) => {
                revision = applied.created.then_some(applied.revision);
                break;
            }
            Err(e) if e.code() == ErrorCode::Conflict => continue,
            Err(e) => return Err(e),
        }
    }
    Ok((
        StatusCode::CREATED,
        Json(SecretSetResponse {
            name,
            version,
            revision,
            signing_required,
        }),
    ))
}

pub(super) async fn list(
    State(state): State<Arc<AppState>>,
    caller: Caller,
) -> Result<Json<Vec<SecretInfo>>, ApiError> {
    caller.require_admin()?;
    let users = state
        .view()
        .manifest
        .as_ref()
        .map(|m| m.secret_users())
        .unwrap_or_default();
    let store = state.store.clone();
    let records = blocking(move || Ok(store.secrets()?)).await?;
    Ok(Json(
        records
            .into_iter()
            .filter_map(|r| {
                let latest = r.latest()?;
                Some(SecretInfo {
                    version: latest.version,
                    updated_ms: latest.created_ms,
                    versions: r.versions.iter().map(|v| v.version).collect(),
                    used_by: users.get(&r.name).cloned().unwrap_or_default(),
                    name: r.name,
                })
            })
            .collect(),
    ))
}

pub(super) async fn remove(
    State(state): State<Arc<AppState>>,
    caller: Caller,
    Path(name): Path<String>,
) -> Result<StatusCode, ApiError> {
    caller.require_admin()?;
    check_name(&name)?;
    // Under the commit lock: no revision naming it is committed while it goes.
    let _guard = state.commit.lock().await;
    if let Some(users) = state
        .view()
        .manifest
        .as_ref()
        .and_then(|m| m.secret_users().remove(&name))
    {
        return Err(ApiError::new(
            ErrorCode::SecretInUse,
            format!(
                "the latest revision uses secret `{name}` ({}): remove it from the manifest and apply first",
                users.join(", ")
            ),
        )
        .details(serde_json::json!({ "usedBy": users })));
    }
    let store = state.store.clone();
    let secret = name.clone();
    if blocking(move || Ok(store.remove_secret(&secret)?)).await? {
        tracing::info!(secret = %name, "secret removed");
        Ok(StatusCode::NO_CONTENT)
    } else {
        Err(ApiError::not_found(format!("no secret `{name}` is set")))
    }
}

/// The version of `secret` that revision `n`'s desired state for `device` names, if any.
fn pinned_in(
    store: &dyn crate::store::Store,
    n: u64,
    device: &str,
    secret: &str,
) -> Result<Option<u64>, crate::store::StoreError> {
    let Some(rev) = store.revision(n)? else {
        return Ok(None);
    };
    let source = edgefn_schema::Source::new("edgefn.yaml", rev.manifest.as_str());
    let Ok(loaded) = edgefn_schema::load(&source, None) else {
        return Ok(None);
    };
    Ok(
        edgefn_schema::resolve(&loaded.manifest, device, &rev.bundles).and_then(|mut s| {
            s.pin_secrets(&rev.secrets);
            s.secrets().get(secret).copied()
        }),
    )
}

#[derive(Debug, Deserialize)]
pub(super) struct VersionQuery {
    version: Option<u64>,
}

pub(super) async fn device_secret(
    State(state): State<Arc<AppState>>,
    caller: Caller,
    Path((device, name)): Path<(String, String)>,
    query: Result<Query<VersionQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Response, ApiError> {
    match &caller {
        Caller::Device(d) if *d == device => {}
        Caller::Device(_) => {
            return Err(ApiError::forbidden(
                "a device token gives access to its own device only",
            ));
        }
        Caller::Admin => {
            return Err(ApiError::forbidden(
                "secret values go only to the devices that run them, never to an admin token",
            ));
        }
    }
    let Query(q) = query.map_err(|e| ApiError::bad_request(e.body_text()))?;
    let mut view = state.view();
    let mut pinned = view.desired_for(&device).secrets.get(&name).copied();
    let unmatched =
        |pinned: Option<u64>| pinned.is_none() || q.version.is_some_and(|v| Some(v) != pinned);
    if unmatched(pinned) && super::catch_up(&state).await? {
        view = state.view();
        pinned = view.desired_for(&device).secrets.get(&name).copied();
    }
    // A device that runs an older revision (rolled back on its own, then restarted) may fetch
    // what that revision's desired state names for it, as it reported.
    if unmatched(pinned) {
        if let Some(n) = state
            .running_revision(&device)
            .filter(|n| *n != view.revision)
        {
            let (st, d, secret) = (state.clone(), device.clone(), name.clone());
            if let Some(v) = blocking(move || Ok(pinned_in(&*st.store, n, &d, &secret)?)).await? {
                if q.version.is_none_or(|want| want == v) {
                    pinned = Some(v);
                }
            }
        }
    }
    let version = match (pinned, q.version) {
        (Some(p), None) => p,
        (Some(p), Some(v)) if p == v => p,
        _ => {
            return Err(ApiError::not_found(format!(
                "the desired state of `{device}` does not name secret `{}`{}",
                name.escape_debug(),
                q.version
                    .map(|v| format!(" version {v}"))
                    .unwrap_or_default()
            )));
        }
    };
    let st = state.clone();
    let secret = name.clone();
    let value = blocking(move || {
        use base64::Engine as _;
        let record = st.store.secret(&secret)?;
        let sealed = record
            .as_ref()
            .and_then(|r| r.version(version))
            .ok_or_else(|| {
                ApiError::not_found(format!("secret `{secret}` version {version} is not kept"))
            })?;
        let opened = st.keyring().existing().and_then(|key| {
            let bytes = base64::engine::general_purpose::STANDARD
                .decode(&sealed.sealed)
                .ok()?;
            crate::secrets::open(&key, &secret, version, &bytes)
        });
        opened.ok_or_else(|| {
            tracing::error!(secret = %secret, version, "a stored secret does not open with the control plane's key");
            ApiError::internal(format!(
                "secret `{secret}` version {version} does not open with the control plane's key"
            ))
        })
    })
    .await?;
    let mut resp = value.into_response();
    let headers = resp.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/octet-stream"),
    );
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    headers.insert(VERSION_HEADER, HeaderValue::from(version));
    Ok(resp)
}

//! Devices: `POST /v1/devices` registers one (its token answered once), `GET /v1/devices` lists
//! them, `DELETE /v1/devices/{name}` removes one and revokes its token, `GET
//! /v1/devices/{name}/desired` long-polls its desired state, `POST /v1/devices/{name}/status`
//! takes its report.

use std::sync::Arc;
use std::time::Duration;

use axum::Json;
use axum::extract::rejection::JsonRejection;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use edgefn_schema::api::{DeviceRegistered, NewDevice, StatusReport};
use serde::Deserialize;

use super::{MAX_WAIT_SECS, json_body};
use crate::auth;
use crate::error::ApiError;
use crate::messaging::mosquitto;
use crate::metrics::Metrics;
use crate::registry::Caller;
use crate::state::AppState;
use crate::store::DeviceRecord;
use edgefn_os::time::now_ms;

pub(super) async fn add_device(
    State(state): State<Arc<AppState>>,
    caller: Caller,
    body: Result<Json<NewDevice>, JsonRejection>,
) -> Result<(StatusCode, Json<DeviceRegistered>), ApiError> {
    caller.require_admin()?;
    let req = json_body(body)?;
    if !edgefn_schema::manifest::valid_name(&req.name) {
        return Err(ApiError::bad_request(format!(
            "`{}` is not a valid device name: use lowercase letters, digits, `-` and `_`, at most 63 characters",
            req.name
        )));
    }
    if req.name == crate::messaging::CLOUD_USER {
        return Err(ApiError::bad_request(format!(
            "`{}` is reserved: it is the control plane's own MQTT user; choose another name",
            req.name
        )));
    }
    let token = auth::generate(auth::DEVICE_PREFIX).map_err(ApiError::internal)?;
    let store = state.store.clone();
    let (name, secret) = (req.name.clone(), token.clone());
    // The device and its token appear together, once the store has them.
    state
        .registry
        .change(
            move || {
                let record = DeviceRecord {
                    name,
                    token_hash: auth::hash(&secret),
                    registered_ms: now_ms(),
                    // PBKDF2-SHA512: CPU work, done off the async threads with the store write.
                    mqtt_hash: Some(mosquitto::hash(&secret).map_err(ApiError::internal)?),
                };
                store.add_device(&record)?;
                Ok(record)
            },
            |entries, record| entries.insert_device(record.clone()),
        )
        .await?;
    tracing::info!(device = %req.name, "device registered");
    if let Some(m) = state.messaging() {
        if let Err(e) = m.write_mosquitto(&state.registry).await {
            tracing::error!(device = %req.name, "could not update Mosquitto's password file: {e}");
        }
    }
    Ok((
        StatusCode::CREATED,
        Json(DeviceRegistered {
            name: req.name,
            token,
            mqtt: state.device_mqtt_url().cloned(),
            mqtt_port: match state.device_mqtt_url() {
                Some(_) => None,
                None => state.broker_port(),
            },
        }),
    ))
}

pub(super) async fn list_devices(
    State(state): State<Arc<AppState>>,
    caller: Caller,
) -> Result<Json<Vec<edgefn_schema::api::DeviceInfo>>, ApiError> {
    caller.require_admin()?;
    Ok(Json(state.registry.device_infos()))
}

pub(super) async fn remove_device(
    State(state): State<Arc<AppState>>,
    caller: Caller,
    Path(name): Path<String>,
) -> Result<StatusCode, ApiError> {
    caller.require_admin()?;
    let store = state.store.clone();
    let n = name.clone();
    // The device and its token go together, once the store no longer has them.
    let removed = state
        .registry
        .change(
            move || Ok(store.remove_device(&n)?),
            |entries, removed| {
                if *removed {
                    entries.remove_device(&name);
                }
            },
        )
        .await?;
    if !removed {
        return Err(ApiError::not_found(format!(
            "no device `{name}` is registered"
        )));
    }
    tracing::info!(device = %name, "device removed, token revoked");
    if let Some(m) = state.messaging() {
        if let Some(b) = &m.broker {
            b.revoke(&name).await;
        }
        m.hub.forget(&name);
        if let Err(e) = m.write_mosquitto(&state.registry).await {
            tracing::error!(device = %name, "could not update Mosquitto's password file: {e}");
        }
    }
    Ok(StatusCode::NO_CONTENT)
}

#[derive(Debug, Deserialize)]
pub(super) struct WaitQuery {
    wait: Option<u64>,
    /// Answer also when the latest revision is newer than this one, even with the same
    /// digest: an agent that refused a state for its signature waits for it signed anew.
    after: Option<u64>,
    /// The newest revision this device has been served (by any process): a process serving an
    /// older one has not heard of it yet and catches up before it answers, so that it never
    /// sends the device back to an older revision.
    seen: Option<u64>,
}

/// Strips quotes and a weak prefix from an `If-None-Match` value.
fn etag_value(headers: &HeaderMap) -> Option<String> {
    let v = headers.get(header::IF_NONE_MATCH)?.to_str().ok()?.trim();
    Some(v.trim_start_matches("W/").trim_matches('"').to_owned())
}

pub(super) async fn desired(
    State(state): State<Arc<AppState>>,
    caller: Caller,
    Path(name): Path<String>,
    query: Result<Query<WaitQuery>, axum::extract::rejection::QueryRejection>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    caller.require_device(&name)?;
    let Query(q) = query.map_err(|e| {
        ApiError::bad_request(format!("{}; `wait` is a number of seconds", e.body_text()))
    })?;
    let wait = Duration::from_secs(q.wait.unwrap_or(0).min(MAX_WAIT_SECS));
    let after = q.after;
    if q.seen.is_some_and(|seen| seen > state.view().revision) {
        super::catch_up(&state).await?;
    }
    let known = etag_value(&headers);
    // A waiting long-poll keeps only what it compares: the request's headers share the
    // connection's read buffer, which is free to be reused once they are gone.
    drop((headers, caller, q));
    let deadline = tokio::time::Instant::now() + wait;
    let mut rx = state.subscribe_view();
    let mut shutdown = state.shutdown_signal();
    let waiting = WaitGuard::new(&state.metrics);
    loop {
        let (d, revision) = {
            let view = rx.borrow_and_update();
            (view.desired_for(&name), view.revision)
        };
        if known.as_deref() != Some(d.digest.as_str()) || after.is_some_and(|a| revision > a) {
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

pub(super) async fn report_status(
    State(state): State<Arc<AppState>>,
    caller: Caller,
    Path(name): Path<String>,
    body: Result<Json<StatusReport>, JsonRejection>,
) -> Result<StatusCode, ApiError> {
    caller.require_device(&name)?;
    if !state.registry.is_registered(&name) {
        return Err(ApiError::not_found(format!(
            "no device `{name}` is registered"
        )));
    }
    let report = json_body(body)?;
    state
        .metrics
        .status_reports
        .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    state.record_status(name, report, now_ms()).await?;
    Ok(StatusCode::NO_CONTENT)
}

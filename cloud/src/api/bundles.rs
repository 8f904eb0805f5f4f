//! Bundles: `PUT /v1/bundles/{digest}` uploads one (its sha256 checked), `GET`/`HEAD` download
//! it (resumable with `Range: bytes=N-`; a device only the bundles its desired state names),
//! `POST /v1/bundles/missing` says which of a list the cloud lacks.

use std::sync::Arc;

use axum::Json;
use axum::body::{Body, Bytes};
use axum::extract::rejection::JsonRejection;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use axum::response::{IntoResponse, Response};
use edgefn_schema::api::{MissingBundlesRequest, MissingBundlesResponse};
use edgefn_schema::bundle;

use super::json_body;
use crate::error::{ApiError, blocking};
use crate::registry::Caller;
use crate::state::AppState;
use edgefn_schema::api::ErrorCode;

fn check_digest(digest: &str) -> Result<(), ApiError> {
    if bundle::is_digest(digest) {
        Ok(())
    } else {
        Err(ApiError::bad_request(format!(
            "`{digest}` is not a sha256 digest (64 lowercase hex digits)"
        )))
    }
}

pub(super) async fn put_bundle(
    State(state): State<Arc<AppState>>,
    caller: Caller,
    Path(digest): Path<String>,
    body: Bytes,
) -> Result<Response, ApiError> {
    caller.require_admin()?;
    check_digest(&digest)?;
    let actual = bundle::digest(&body);
    if actual != digest {
        return Err(ApiError::new(
            ErrorCode::DigestMismatch,
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

pub(super) async fn get_bundle(
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
    // `Range: bytes=N-` resumes an interrupted download.
    let start = headers
        .get(header::RANGE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("bytes="))
        .and_then(|v| v.strip_suffix('-'))
        .and_then(|v| v.parse::<u64>().ok());
    let store = state.store.clone();
    // Streamed from the store (a file or an object store), never held whole in memory.
    let read = blocking(move || Ok(store.read_bundle(&digest, start.unwrap_or(0))?))
        .await?
        .ok_or_else(|| ApiError::not_found("no bundle with this digest"))?;
    let total = read.total;
    let mut out = HeaderMap::new();
    out.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/zstd"),
    );
    out.insert(header::ACCEPT_RANGES, HeaderValue::from_static("bytes"));
    let status = match start {
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
            StatusCode::PARTIAL_CONTENT
        }
        _ => StatusCode::OK,
    };
    let len = total - read.start;
    out.insert(header::CONTENT_LENGTH, HeaderValue::from(len));
    if method == Method::HEAD {
        return Ok((status, out, Body::empty()).into_response());
    }
    state
        .metrics
        .bundle_bytes_out
        .fetch_add(len, std::sync::atomic::Ordering::Relaxed);
    Ok((status, out, Body::from_stream(read.body)).into_response())
}

pub(super) async fn missing_bundles(
    State(state): State<Arc<AppState>>,
    caller: Caller,
    body: Result<Json<MissingBundlesRequest>, JsonRejection>,
) -> Result<Json<MissingBundlesResponse>, ApiError> {
    caller.require_admin()?;
    let req = json_body(body)?;
    for d in &req.digests {
        check_digest(d)?;
    }
    let store = state.store.clone();
    let missing = blocking(move || {
        let digests: Vec<&str> = req.digests.iter().map(String::as_str).collect();
        Ok(store.missing_bundles(&digests)?)
    })
    .await?;
    Ok(Json(MissingBundlesResponse { missing }))
}

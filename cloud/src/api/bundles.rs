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

/// The request body as a blocking reader (the store reads it on a blocking thread): chunks
/// arrive through a bounded channel, so at most a few are held in memory; it counts and hashes
/// what passes, fails a read past `max` bytes, and fails the last read when the sha256 is not
/// `digest` (so a store writes nothing under a wrong name).
struct Upload {
    chunks: tokio::sync::mpsc::Receiver<Result<Bytes, String>>,
    current: Bytes,
    hasher: sha2::Sha256,
    digest: String,
    max: u64,
    total: u64,
    /// Why the upload was refused, for the answer.
    refused: Option<ApiError>,
}

impl std::io::Read for Upload {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        use sha2::Digest;
        while self.current.is_empty() {
            match self.chunks.blocking_recv() {
                Some(Ok(chunk)) => {
                    self.total += chunk.len() as u64;
                    if self.total > self.max {
                        self.refused = Some(ApiError::new(
                            ErrorCode::BodyTooLarge,
                            format!("a bundle or model is at most {} bytes", self.max),
                        ));
                        return Err(std::io::Error::other("too large"));
                    }
                    self.hasher.update(&chunk);
                    self.current = chunk;
                }
                Some(Err(e)) => {
                    self.refused =
                        Some(ApiError::bad_request(format!("the upload broke off: {e}")));
                    return Err(std::io::Error::other(e));
                }
                None => {
                    // The end: the bytes must be what their name says.
                    let actual =
                        edgefn_schema::resolve::hex(&std::mem::take(&mut self.hasher).finalize());
                    if actual != self.digest {
                        self.refused = Some(ApiError::new(
                            ErrorCode::DigestMismatch,
                            format!(
                                "the body's sha256 is {actual}, not {}: the upload was corrupted or named wrongly",
                                self.digest
                            ),
                        ));
                        return Err(std::io::Error::new(
                            std::io::ErrorKind::InvalidData,
                            "digest mismatch",
                        ));
                    }
                    return Ok(0);
                }
            }
        }
        let n = buf.len().min(self.current.len());
        buf[..n].copy_from_slice(&self.current.split_to(n));
        Ok(n)
    }
}

pub(super) async fn put_bundle(
    State(state): State<Arc<AppState>>,
    caller: Caller,
    Path(digest): Path<String>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    use tokio_stream::StreamExt;
    caller.require_admin()?;
    check_digest(&digest)?;
    let max = super::MAX_BUNDLE_BYTES;
    let announced = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if announced.is_some_and(|n| n > max) {
        return Err(ApiError::new(
            ErrorCode::BodyTooLarge,
            format!("a bundle or model is at most {max} bytes"),
        ));
    }
    // Streamed to the store's disk: never held whole, whatever its size.
    let (tx, rx) = tokio::sync::mpsc::channel::<Result<Bytes, String>>(8);
    let mut upload = Upload {
        chunks: rx,
        current: Bytes::new(),
        hasher: sha2::Digest::new(),
        digest: digest.clone(),
        max,
        total: 0,
        refused: None,
    };
    let store = state.store.clone();
    let writer = tokio::task::spawn_blocking(move || {
        let stored = store.put_bundle_from(&digest, &mut upload);
        (stored, upload.refused.take(), upload.total)
    });
    let mut stream = body.into_data_stream();
    while let Some(chunk) = stream.next().await {
        let item = chunk.map_err(|e| e.to_string());
        let failed = item.is_err();
        // A send fails when the store stopped reading (an error it reports below).
        if tx.send(item).await.is_err() || failed {
            break;
        }
    }
    drop(tx);
    let (stored, refused, total) = writer.await.map_err(ApiError::internal)?;
    if let Some(refused) = refused {
        return Err(refused);
    }
    let created = stored?;
    state
        .metrics
        .bundle_bytes_in
        .fetch_add(total, std::sync::atomic::Ordering::Relaxed);
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
        let named = |state: &AppState| state.view().desired_for(name).bundles.contains(&digest);
        let allowed = named(&state) || (super::catch_up(&state).await? && named(&state));
        if !allowed {
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
        HeaderValue::from_static("application/octet-stream"),
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

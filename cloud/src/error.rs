//! The one place domain errors become HTTP responses: a status and a JSON [`ErrorBody`].

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use edgefn_schema::api::{ErrorBody, ErrorCode, ErrorDetail};

use crate::store::StoreError;

/// Seconds a client waits before retrying a request answered `store_unavailable`.
const STORE_RETRY_AFTER: &str = "2";

/// An API error.
#[derive(Debug)]
pub(crate) struct ApiError {
    code: ErrorCode,
    message: String,
    details: Option<serde_json::Value>,
}

impl ApiError {
    /// An error with a stable code (which gives its HTTP status) and a message.
    pub(crate) fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        Self {
            code,
            message: message.into(),
            details: None,
        }
    }

    /// Its code.
    pub(crate) fn code(&self) -> ErrorCode {
        self.code
    }

    /// Adds details.
    pub(crate) fn details(mut self, details: serde_json::Value) -> Self {
        self.details = Some(details);
        self
    }

    /// 400.
    pub(crate) fn bad_request(message: impl Into<String>) -> Self {
        Self::new(ErrorCode::BadRequest, message)
    }

    /// 401.
    pub(crate) fn unauthorized(message: impl Into<String>) -> Self {
        Self::new(ErrorCode::Unauthorized, message)
    }

    /// 403.
    pub(crate) fn forbidden(message: impl Into<String>) -> Self {
        Self::new(ErrorCode::Forbidden, message)
    }

    /// 404.
    pub(crate) fn not_found(message: impl Into<String>) -> Self {
        Self::new(ErrorCode::NotFound, message)
    }

    /// 500, for failures of the server itself. The message is logged, not sent.
    pub(crate) fn internal(message: impl std::fmt::Display) -> Self {
        tracing::error!("internal error: {message}");
        Self::new(ErrorCode::Internal, "the server failed; see its log")
    }
}

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::Conflict { latest, expected } => ApiError::new(
 ErrorCode::Conflict,
 format!("the latest revision is {latest}, not {expected}: someone applied in between; re-run to apply on top of revision {latest}"),
            )
            .details(serde_json::json!({ "latest": latest })),
            StoreError::MissingBundles(missing) => ApiError::new(
 ErrorCode::MissingBundles,
 format!("upload these bundles first: {}", missing.join(", ")),
            )
            .details(serde_json::json!({ "missing": missing })),
            StoreError::SecretsUnavailable { not_set, gone } if !not_set.is_empty() => ApiError::new(
 ErrorCode::SecretNotSet,
 format!("{} secret(s) named by the manifest are not set: {}; set each with `edgefn secret set NAME`, then apply again", not_set.len(), not_set.join(", ")),
            )
            .details(serde_json::json!({ "missing": not_set, "gone": gone })),
            StoreError::SecretsUnavailable { gone, .. } => ApiError::new(
 ErrorCode::SecretVersionGone,
 format!("these secret versions are no longer kept (the control plane keeps the last {}): {}; set the secret again, or apply instead of rolling back", edgefn_schema::api::SECRET_VERSIONS_KEPT, gone.join(", ")),
            )
            .details(serde_json::json!({ "missing": gone })),
            StoreError::DeviceExists(name) => ApiError::new(
 ErrorCode::DeviceExists,
 format!("device `{name}` is already registered; to issue it a new token, remove it first (`edgefn device remove {name}`), then add it again"),
            ),
            StoreError::Unavailable { store, reason } => {
                tracing::warn!("the database {store} is unavailable: {reason}");
                ApiError::new(
 ErrorCode::StoreUnavailable,
 format!("the control plane's database is unavailable ({reason}); retry in a few seconds"),
                )
            }
            StoreError::Objects(e @ crate::objects::ObjectsError::Unavailable { .. }) => {
                tracing::warn!("{e}");
                let store = match &e {
                    crate::objects::ObjectsError::Unavailable { store, .. } => store.clone(),
                    _ => String::new(),
                };
                ApiError::new(
                    ErrorCode::ObjectStoreUnavailable,
                    format!("the object store that keeps bundles ({store}) failed or is unreachable; nothing was stored or committed: try again later (the control plane's log says why)"),
                )
            }
            other => ApiError::internal(other),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status =
            StatusCode::from_u16(self.code.status()).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        let body = ErrorBody {
            error: ErrorDetail {
                code: self.code.as_str().to_owned(),
                message: self.message,
                details: self.details,
            },
        };
        let mut resp = (status, axum::Json(body)).into_response();
        if self.code == ErrorCode::StoreUnavailable {
            resp.headers_mut().insert(
                header::RETRY_AFTER,
                HeaderValue::from_static(STORE_RETRY_AFTER),
            );
        }
        if status == StatusCode::UNAUTHORIZED {
            resp.headers_mut()
                .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        }
        resp
    }
}

/// Runs blocking work (store reads and writes, file writes, parsing) off the async threads: a
/// task that panicked is an internal error.
pub(crate) async fn blocking<T, F>(f: F) -> Result<T, ApiError>
where
    F: FnOnce() -> Result<T, ApiError> + Send + 'static,
    T: Send + 'static,
{
    tokio::task::spawn_blocking(f)
        .await
        .map_err(ApiError::internal)?
}

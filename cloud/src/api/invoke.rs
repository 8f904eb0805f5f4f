//! `POST /v1/devices/{name}/invoke`: runs a function on a device now and answers with its
//! result, its error, the log lines it wrote and its time on the device — or 504
//! `device_timeout` when no answer came by the deadline. The request travels at QoS 0 with an
//! absolute deadline (see `edgefn_schema::wire`), and the hub forgets its waiter when this
//! answers, so an invocation never runs later on a device that comes back.

use std::sync::Arc;
use std::time::Duration;

use axum::Json;
use axum::extract::rejection::JsonRejection;
use axum::extract::{Path, State};

use edgefn_os::time::now_ms;
use edgefn_schema::api::{
    ErrorCode, INVOKE_DEFAULT_TIMEOUT_MS, INVOKE_MAX_TIMEOUT_MS, InvokeRequest, InvokeResponse,
};
use edgefn_schema::resolve::NotInvocable;
use edgefn_schema::wire::{self, MAX_INVOKE_PAYLOAD};

use super::json_body;
use crate::error::ApiError;
use crate::messaging::hub::InvokeWaitError;
use crate::registry::Caller;
use crate::state::AppState;

/// The event topic an invocation carries when the request names none.
const DEFAULT_TOPIC: &str = "invoke";

/// Largest body of `POST /v1/devices/{name}/invoke`: a payload of [`MAX_INVOKE_PAYLOAD`],
/// which JSON escaping may grow six times, and the rest.
pub(super) const MAX_INVOKE_BODY_BYTES: usize = 6 * MAX_INVOKE_PAYLOAD + (64 << 10);

/// `POST /v1/devices/{name}/invoke` (admin).
pub(super) async fn invoke(
    State(state): State<Arc<AppState>>,
    caller: Caller,
    Path(name): Path<String>,
    body: Result<Json<InvokeRequest>, JsonRejection>,
) -> Result<Json<InvokeResponse>, ApiError> {
    caller.require_admin()?;
    let m = super::messages::messaging(&state)?;
    let req = json_body(body)?;
    let timeout_ms = req.timeout_ms.unwrap_or(INVOKE_DEFAULT_TIMEOUT_MS);
    if !(1..=INVOKE_MAX_TIMEOUT_MS).contains(&timeout_ms) {
        return Err(ApiError::bad_request(format!(
            "`timeoutMs` is {timeout_ms}; give 1 to {INVOKE_MAX_TIMEOUT_MS} ms (default {INVOKE_DEFAULT_TIMEOUT_MS})"
        )));
    }
    let topic = req.topic.unwrap_or_else(|| DEFAULT_TOPIC.to_owned());
    if let Err(e) = edgefn_schema::topic::validate_topic(&topic) {
        return Err(ApiError::new(
            ErrorCode::InvalidTopic,
            format!(
                "`{topic}` is not a valid event topic (it must be concrete: no `+` or `#`): {}",
                e.message
            ),
        )
        .details(serde_json::json!({ "help": e.help })));
    }
    let size = match &req.payload {
        serde_json::Value::String(s) => s.len(),
        other => serde_json::to_vec(other).map_or(0, |b| b.len()),
    };
    if size > MAX_INVOKE_PAYLOAD {
        return Err(ApiError::new(
            ErrorCode::PayloadTooLarge,
            format!(
                "the payload is {size} bytes; an invocation carries at most {MAX_INVOKE_PAYLOAD} bytes ({} KiB)",
                MAX_INVOKE_PAYLOAD >> 10
            ),
        ));
    }
    if !state.registry.is_registered(&name) {
        return Err(ApiError::new(
            ErrorCode::UnknownDevice,
            format!("no device `{name}` is registered (see `edgefn device list`)"),
        ));
    }
    // What the device runs, as the cloud knows it: its desired state under the latest revision.
    let desired = state.view().desired_for(&name);
    let desired: edgefn_schema::api::DesiredResponse =
        serde_json::from_slice(&desired.body).map_err(ApiError::internal)?;
    let binding = desired
        .state
        .binding_to_invoke(&req.function)
        .map_err(not_invocable)?;
    let request = wire::InvokeRequest {
        binding: binding.name.clone(),
        topic,
        payload: req.payload,
        deadline_ms: now_ms() + timeout_ms,
        timeout_ms,
    };
    let wait = Duration::from_millis(timeout_ms);
    let started = std::time::Instant::now();
    if !m
        .hub
        .wait_ready(wait.min(super::messages::PUBLISH_WAIT))
        .await
    {
        return Err(super::messages::not_connected());
    }
    let bytes = serde_json::to_vec(&request).map_err(ApiError::internal)?;
    let reply = m
        .hub
        .invoke(&name, bytes, wait.saturating_sub(started.elapsed()))
        .await
        .map_err(|e| match e {
            InvokeWaitError::Busy => ApiError::new(
                ErrorCode::BrokerBusy,
                format!(
                    "{} invocations are waiting for their devices already; retry when some have answered",
                    crate::messaging::hub::MAX_WAITERS
                ),
            ),
            InvokeWaitError::NotSent(e) => ApiError::new(
                ErrorCode::BrokerBusy,
                format!("the connection to the broker is not keeping up ({e}); retry later"),
            ),
            InvokeWaitError::Timeout => timed_out(&state, &name, &request.binding, timeout_ms),
            InvokeWaitError::Random(e) => ApiError::internal(format!("no randomness: {e}")),
        })?;
    let answer: InvokeResponse = serde_json::from_slice(&reply).map_err(|e| {
        ApiError::new(
            ErrorCode::InvalidReply,
            format!("device `{name}` answered with something that is not an invocation reply ({e}); is its agent as new as the control plane?"),
        )
    })?;
    tracing::info!(device = %name, binding = %answer.binding, ok = answer.error.is_none(), "invoked on request");
    Ok(Json(answer))
}

/// 422 `not_invocable`, with the suggestion and the names that would do.
fn not_invocable(e: NotInvocable) -> ApiError {
    let details = match &e {
        NotInvocable::NotBound {
            suggestion, names, ..
        } => serde_json::json!({ "suggestion": suggestion, "names": names }),
        NotInvocable::Ambiguous { bindings, .. } => serde_json::json!({ "names": bindings }),
    };
    ApiError::new(ErrorCode::NotInvocable, e.to_string()).details(details)
}

/// 504 `device_timeout`, saying when the device last reported.
fn timed_out(state: &AppState, device: &str, binding: &str, timeout_ms: u64) -> ApiError {
    let seen = match state.last_report_ms(device) {
        Some(at) => format!(
            "its last status report was {} s ago",
            now_ms().saturating_sub(at) / 1000
        ),
        None => "it has not reported since the control plane started".to_owned(),
    };
    ApiError::new(
        ErrorCode::DeviceTimeout,
        format!(
            "device `{device}` did not answer the invocation of `{binding}` within {timeout_ms} ms ({seen}); it may be offline or busy. The request is dropped and will not run later; retry when the device is online, or wait longer (`timeoutMs`; `edgefn invoke --timeout`)"
        ),
    )
}

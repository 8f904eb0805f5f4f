//! The device's local message endpoint, on loopback by default: local sensors and programs put
//! messages on the device bus with `POST /v1/publish?topic=T` (the body is the payload: JSON, or
//! else bytes). With `&wait=true` the answer lists what each triggered binding returned. A
//! message a route sends to the cloud that is larger than the cloud's broker takes is refused
//! with 413 (nothing is queued or delivered).

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use edgefn_runtime::Payload;
use edgefn_schema::wire::LogRecord;
use serde::Deserialize;

use crate::bus::Bus;

#[derive(Debug, Deserialize)]
struct PublishQuery {
    topic: String,
    #[serde(default)]
    wait: bool,
}

fn payload_json(p: &Payload) -> serde_json::Value {
    match p {
        Payload::Json(v) => v.clone(),
        Payload::Bytes(b) => serde_json::Value::String(String::from_utf8_lossy(b).into_owned()),
    }
}

async fn publish(
    State((bus, _)): State<(Arc<Bus>, Arc<LogRing>)>,
    query: Result<Query<PublishQuery>, axum::extract::rejection::QueryRejection>,
    body: Bytes,
) -> Response {
    let Ok(Query(q)) = query else {
        return (StatusCode::BAD_REQUEST, Json(serde_json::json!({"error": "give the topic: /v1/publish?topic=sensors/line1/temperature"}))).into_response();
    };
    if let Err(e) = edgefn_schema::topic::validate_topic(&q.topic) {
        return (StatusCode::BAD_REQUEST, Json(serde_json::json!({"error": format!("topic `{}`: {}", q.topic, e.message), "help": e.help}))).into_response();
    }
    let payload = Payload::from_message(body.to_vec());
    let too_large = |e: crate::uplink::TooLarge| {
        (
            StatusCode::PAYLOAD_TOO_LARGE,
            Json(serde_json::json!({"error": e.to_string(), "maxPacketBytes": e.max})),
        )
            .into_response()
    };
    if !q.wait {
        // 202 once the message is accepted: queued on disk if it is bound for the cloud.
        return match bus.accept(&q.topic, payload).await {
            Ok(()) => StatusCode::ACCEPTED.into_response(),
            Err(e) => too_large(e),
        };
    }
    let deliveries = match bus.publish(&q.topic, payload).await {
        Ok(d) => d,
        Err(e) => return too_large(e),
    };
    let results: Vec<serde_json::Value> = deliveries
        .into_iter()
        .map(|d| match d.outcome {
            Ok(reply) => serde_json::json!({
                "binding": d.binding,
                "result": payload_json(&reply.result),
                "publish": reply.publish.iter().map(|m| serde_json::json!({"topic": m.topic, "payload": payload_json(&m.payload)})).collect::<Vec<_>>(),
            }),
            Err(e) => serde_json::json!({"binding": d.binding, "error": e.to_string()}),
        })
        .collect();
    Json(serde_json::json!({"deliveries": results})).into_response()
}

async fn health(State((bus, _)): State<(Arc<Bus>, Arc<LogRing>)>) -> Json<serde_json::Value> {
    Json(serde_json::json!({"running": bus.live().digest().await}))
}

/// The last lines the device's functions printed, kept in a bounded ring (the newest win).
#[derive(Debug)]
pub(crate) struct LogRing {
    lines: std::sync::Mutex<std::collections::VecDeque<LogRecord>>,
    capacity: usize,
}

impl LogRing {
    /// A ring of `capacity` lines.
    pub(crate) fn new(capacity: usize) -> LogRing {
        LogRing {
            lines: std::sync::Mutex::new(std::collections::VecDeque::with_capacity(capacity)),
            capacity,
        }
    }

    /// Keeps a line, dropping the oldest when full.
    pub(crate) fn push(&self, line: LogRecord) {
        let mut lines = self
            .lines
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if lines.len() == self.capacity {
            lines.pop_front();
        }
        lines.push_back(line);
    }

    /// The last `tail` lines, of one binding when given.
    pub(crate) fn tail(&self, binding: Option<&str>, tail: usize) -> Vec<LogRecord> {
        let lines = self
            .lines
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let mut out: Vec<LogRecord> = lines
            .iter()
            .rev()
            .filter(|l| binding.is_none_or(|b| l.binding == b))
            .take(tail)
            .cloned()
            .collect();
        out.reverse();
        out
    }
}

#[derive(Debug, Deserialize)]
struct LogsQuery {
    binding: Option<String>,
    tail: Option<usize>,
}

async fn logs(
    State((_, ring)): State<(Arc<Bus>, Arc<LogRing>)>,
    query: Result<Query<LogsQuery>, axum::extract::rejection::QueryRejection>,
) -> Response {
    let Ok(Query(q)) = query else {
        return (
            StatusCode::BAD_REQUEST,
            Json(serde_json::json!({"error": "use ?binding=NAME&tail=N"})),
        )
            .into_response();
    };
    Json(ring.tail(q.binding.as_deref(), q.tail.unwrap_or(100))).into_response()
}

/// The local endpoint's routes: `POST /v1/publish`, `GET /v1/logs`, `GET /healthz`.
pub(crate) fn router(bus: Arc<Bus>, ring: Arc<LogRing>) -> Router {
    Router::new()
        .route("/v1/publish", post(publish))
        .route("/v1/logs", get(logs))
        .route("/healthz", get(health))
        .with_state((bus, ring))
}

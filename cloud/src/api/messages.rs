//! The message endpoints (`POST /v1/publish`, `GET /v1/messages`, `GET /v1/devices/{name}/logs`):
//! requests checked and answered here, messages carried by [`crate::messaging`].

use std::sync::Arc;
use std::time::Duration;

use axum::Json;
use axum::body::{Body, Bytes};
use axum::extract::rejection::{JsonRejection, QueryRejection};
use axum::extract::{Path, Query, State};
use axum::http::header;
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};
use tokio::sync::{broadcast, mpsc};

use edgefn_schema::api::ErrorCode;
use edgefn_schema::api::{PublishRequest, PublishResponse};
use edgefn_schema::wire::{self, Kind};

use crate::error::ApiError;
use crate::messaging::{MAX_PUBLISH_BYTES, Messaging};
use crate::registry::Caller;
use crate::state::AppState;

pub(super) fn messaging(state: &AppState) -> Result<&Arc<Messaging>, ApiError> {
    state.messaging().ok_or_else(|| {
        ApiError::new(
 ErrorCode::MessagesDisabled,
 "this control plane runs without an MQTT broker (started with `--mqtt-listen none` and no `--mqtt-url`)",
        )
    })
}

fn invalid_topic(kind: &str, topic: &str, e: &edgefn_schema::topic::TopicError) -> ApiError {
    ApiError::new(
        ErrorCode::InvalidTopic,
        format!("`{topic}` is not a valid {kind}: {}", e.message),
    )
    .details(serde_json::json!({ "help": e.help }))
}

/// `POST /v1/publish`: sends a message down to devices.
pub(super) async fn publish(
    State(state): State<Arc<AppState>>,
    caller: Caller,
    body: Result<Json<PublishRequest>, JsonRejection>,
) -> Result<Json<PublishResponse>, ApiError> {
    caller.require_admin()?;
    let m = messaging(&state)?;
    let req = body.map(|Json(v)| v).map_err(super::body_error)?;
    if let Err(e) = edgefn_schema::topic::validate_topic(&req.topic) {
        return Err(invalid_topic(
            "topic to publish to (it must be concrete: no `+` or `#`)",
            &req.topic,
            &e,
        ));
    }
    let payload = match req.payload {
        serde_json::Value::String(s) => s.into_bytes(),
        other => serde_json::to_vec(&other).map_err(ApiError::internal)?,
    };
    if payload.len() > MAX_PUBLISH_BYTES {
        return Err(ApiError::new(
            ErrorCode::PayloadTooLarge,
            format!(
                "the payload is {} bytes; at most {} bytes ({} KiB) can be published",
                payload.len(),
                MAX_PUBLISH_BYTES,
                MAX_PUBLISH_BYTES >> 10
            ),
        ));
    }
    let devices = match (req.devices, req.labels) {
        (Some(names), None) => {
            if names.is_empty() {
                return Err(ApiError::bad_request(
                    "`devices` is empty: name at least one device",
                ));
            }
            let unknown: Vec<String> = names
                .iter()
                .filter(|n| !state.is_known_device(n))
                .cloned()
                .collect();
            if !unknown.is_empty() {
                return Err(ApiError::new(
                    ErrorCode::UnknownDevice,
                    format!(
                        "no device {} is registered or in the latest manifest",
                        unknown
                            .iter()
                            .map(|n| format!("`{n}`"))
                            .collect::<Vec<_>>()
                            .join(", ")
                    ),
                ));
            }
            let mut names = names;
            names.sort();
            names.dedup();
            names
        }
        (None, Some(labels)) => {
            let names = state.devices_with_labels(&labels);
            if names.is_empty() {
                let wanted: Vec<String> = labels.iter().map(|(k, v)| format!("{k}={v}")).collect();
                return Err(ApiError::new(
                    ErrorCode::NoDevices,
                    format!(
                        "no device of the latest manifest has the labels {}",
                        wanted.join(", ")
                    ),
                ));
            }
            names
        }
        _ => {
            return Err(ApiError::bad_request(
                "give either `devices` (names) or `labels` (key: value), not both",
            ));
        }
    };
    let view = state.view();
    let unrouted: Vec<String> = devices
        .iter()
        .filter(|d| !view.desired_for(d).brings_down(&req.topic))
        .cloned()
        .collect();
    if let Some(broker) = &m.broker {
        // The embedded broker: straight in, each message stored for a device with a
        // persistent session before this answers.
        let messages = devices
            .iter()
            .map(|d| {
                edgefn_broker::Message::new(
                    wire::topic(d, Kind::Down, &req.topic),
                    edgefn_broker::Bytes::from(payload.clone()),
                    edgefn_broker::QoS::AtLeastOnce,
                    false,
                )
            })
            .collect();
        broker.publish_many(messages).await.map_err(|e| {
            let cause = std::error::Error::source(&e).map_or(String::new(), |s| format!(": {s}"));
            ApiError::new(
                ErrorCode::MessageNotStored,
                format!("{e}{cause}: the message may not reach every device; retry later (a device may then get it twice)"),
            )
        })?;
        m.hub.count_down(devices.len() as u64);
        tracing::info!(topic = %req.topic, devices = devices.len(), "message sent down");
        return Ok(Json(PublishResponse {
            devices,
            topic: req.topic,
            unrouted,
        }));
    }
    if !m.hub.wait_ready(PUBLISH_WAIT).await {
        return Err(not_connected());
    }
    for d in &devices {
        m.hub
            .publish(wire::topic(d, Kind::Down, &req.topic), payload.clone())
            .map_err(|e| {
                ApiError::new(
                    ErrorCode::BrokerBusy,
                    format!("the connection to the broker is not keeping up ({e}); retry later"),
                )
            })?;
    }
    tracing::info!(topic = %req.topic, devices = devices.len(), "message sent down");
    Ok(Json(PublishResponse {
        devices,
        topic: req.topic,
        unrouted,
    }))
}

/// `GET /v1/messages` query.
#[derive(Debug, Deserialize)]
pub(super) struct MessagesQuery {
    topic: Option<String>,
}

/// How long a stream waits for the hub to be connected before answering 503.
const READY_WAIT: Duration = Duration::from_secs(10);
/// How long a publish waits for the hub to be connected before answering 503.
pub(super) const PUBLISH_WAIT: Duration = Duration::from_secs(5);

fn ndjson(rx: mpsc::Receiver<Result<Bytes, std::io::Error>>) -> Response {
    (
        [(header::CONTENT_TYPE, "application/x-ndjson")],
        Body::from_stream(tokio_stream::wrappers::ReceiverStream::new(rx)),
    )
        .into_response()
}

/// How often a live stream sends a keep-alive (a blank line), so that a client can tell a quiet
/// stream from a dead connection.
const KEEPALIVE: Duration = Duration::from_secs(15);

fn keepalive() -> tokio::time::Interval {
    let mut i = tokio::time::interval_at(tokio::time::Instant::now() + KEEPALIVE, KEEPALIVE);
    i.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    i
}

/// The line that marks a gap in a live stream: `{"dropped": N}` (N lines the stream skipped
/// because its reader fell behind).
fn dropped_line(n: u64) -> Bytes {
    json_line(&serde_json::json!({ "dropped": n }))
}

fn json_line<T: Serialize>(v: &T) -> Bytes {
    let mut line = serde_json::to_vec(v).unwrap_or_default();
    line.push(b'\n');
    line.into()
}

/// `GET /v1/messages?topic=FILTER`: what devices send up, as it arrives, one JSON object a line.
pub(super) async fn messages(
    State(state): State<Arc<AppState>>,
    caller: Caller,
    query: Result<Query<MessagesQuery>, QueryRejection>,
) -> Result<Response, ApiError> {
    caller.require_admin()?;
    let m = messaging(&state)?.clone();
    let Query(q) = query.map_err(|e| ApiError::bad_request(e.body_text()))?;
    let Some(filter) = q.topic else {
        return Err(ApiError::bad_request(
            "give the topic filter to follow: `?topic=FILTER` (`#` for everything)",
        ));
    };
    if let Err(e) = edgefn_schema::topic::validate_filter(&filter) {
        return Err(invalid_topic("topic filter", &filter, &e));
    }
    let mut up = m.hub.subscribe_up();
    if !m.hub.wait_ready(READY_WAIT).await {
        return Err(not_connected());
    }
    let (tx, rx) = mpsc::channel(256);
    let mut shutdown = state.shutdown_signal();
    tokio::spawn(async move {
        let mut keepalive = keepalive();
        loop {
            tokio::select! {
                msg = up.recv() => match msg {
                    Ok(msg) => {
                        if edgefn_schema::topic::matches(&filter, &msg.topic)
                            && tx.send(Ok(json_line(&msg.line()))).await.is_err()
                        {
                            return;
                        }
                    }
                    Err(broadcast::error::RecvError::Lagged(n)) => {
                        tracing::warn!("a /v1/messages stream fell behind and skipped {n} messages");
                        if tx.send(Ok(dropped_line(n))).await.is_err() {
                            return;
                        }
                    }
                    Err(broadcast::error::RecvError::Closed) => return,
                },
                _ = keepalive.tick() => {
                    if tx.send(Ok(Bytes::from_static(b"\n"))).await.is_err() {
                        return;
                    }
                }
                () = tx.closed() => return,
                () = crate::messaging::stopped(&mut shutdown) => return,
            }
        }
    });
    Ok(ndjson(rx))
}

pub(super) fn not_connected() -> ApiError {
    ApiError::new(
        ErrorCode::BrokerUnreachable,
        "the control plane is not connected to its MQTT broker; see its log",
    )
}

/// `GET /v1/devices/{name}/logs` query.
#[derive(Debug, Deserialize)]
pub(super) struct LogsQuery {
    binding: Option<String>,
    follow: Option<bool>,
    tail: Option<usize>,
}

/// `GET /v1/devices/{name}/logs`: the device's last log lines, then (with `follow=true`) new
/// ones as they arrive.
pub(super) async fn logs(
    State(state): State<Arc<AppState>>,
    caller: Caller,
    Path(name): Path<String>,
    query: Result<Query<LogsQuery>, QueryRejection>,
) -> Result<Response, ApiError> {
    caller.require_admin()?;
    let m = messaging(&state)?.clone();
    let Query(q) = query.map_err(|e| {
        ApiError::bad_request(format!(
            "{}; `follow` is true or false, `tail` a number of lines",
            e.body_text()
        ))
    })?;
    if !state.is_known_device(&name) {
        return Err(ApiError::not_found(format!(
            "no device `{name}` is registered or in the latest manifest"
        )));
    }
    // A function or binding the device does not run is a mistake worth saying, not an empty
    // answer (a line the device logged under an older revision is still found by its name).
    if let Some(b) = &q.binding {
        let runs = state.view().desired_for(&name).runs.clone();
        if !runs.contains(b) && m.hub.recent_logs(&name, Some(b), 1).is_empty() {
            return Err(ApiError::not_found(format!(
                "device `{name}` runs no function or binding `{b}` in the latest revision{}",
                if runs.is_empty() {
                    String::new()
                } else {
                    format!("; it runs: {}", runs.join(", "))
                }
            )));
        }
    }
    let tail = q.tail.unwrap_or(100).min(crate::messaging::hub::LOG_RING);
    let mut live = m.hub.subscribe_logs();
    let recent = m.hub.recent_logs(&name, q.binding.as_deref(), tail);
    let (tx, rx) = mpsc::channel(256);
    let follow = q.follow.unwrap_or(false);
    let binding = q.binding;
    let mut shutdown = state.shutdown_signal();
    tokio::spawn(async move {
        for l in recent {
            if tx.send(Ok(json_line(&l))).await.is_err() {
                return;
            }
        }
        if !follow {
            return;
        }
        let mut keepalive = keepalive();
        loop {
            tokio::select! {
                line = live.recv() => match line {
                    Ok(l) => {
                        if l.device == name
                            && binding.as_deref().is_none_or(|b| l.of(b))
                            && tx.send(Ok(json_line(&*l))).await.is_err()
                        {
                            return;
                        }
                    }
                    // Lines of every device pass through this channel, so `n` counts
                    // lines of other devices too: an upper bound, said as such.
                    Err(broadcast::error::RecvError::Lagged(n)) => {
                        if tx.send(Ok(dropped_line(n))).await.is_err() {
                            return;
                        }
                    }
                    Err(broadcast::error::RecvError::Closed) => return,
                },
                _ = keepalive.tick() => {
                    if tx.send(Ok(Bytes::from_static(b"\n"))).await.is_err() {
                        return;
                    }
                }
                () = tx.closed() => return,
                () = crate::messaging::stopped(&mut shutdown) => return,
            }
        }
    });
    Ok(ndjson(rx))
}

//! The device's local message endpoint, on loopback by default: local sensors and programs put
//! messages on the device bus with `POST /v1/publish?topic=T` (the body is the payload: JSON, or
//! else bytes). With `&wait=true` the answer lists what each triggered binding returned.

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use edgefn_runtime::Payload;
use serde::Deserialize;

use crate::agent::Agent;

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
    State(agent): State<Arc<Agent>>,
    query: Result<Query<PublishQuery>, axum::extract::rejection::QueryRejection>,
    body: Bytes,
) -> Response {
    let Ok(Query(q)) = query else {
        return (StatusCode::BAD_REQUEST, Json(serde_json::json!({"error": "give the topic: /v1/publish?topic=sensors/line1/temperature"}))).into_response();
    };
    if let Err(e) = edgefn_schema::topic::validate_topic(&q.topic) {
        return (StatusCode::BAD_REQUEST, Json(serde_json::json!({"error": format!("topic `{}`: {}", q.topic, e.message), "help": e.help}))).into_response();
    }
    let payload =
        serde_json::from_slice(&body).map_or_else(|_| Payload::Bytes(body.to_vec()), Payload::Json);
    if !q.wait {
        // 202 once the message is accepted: queued on disk if it is bound for the cloud.
        agent.accept(&q.topic, payload).await;
        return StatusCode::ACCEPTED.into_response();
    }
    let deliveries = agent.publish(&q.topic, payload).await;
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

async fn health(State(agent): State<Arc<Agent>>) -> Json<serde_json::Value> {
    Json(serde_json::json!({"running": agent.current_digest().await}))
}

/// The local endpoint's routes.
pub fn router(agent: Arc<Agent>) -> Router {
    Router::new()
        .route("/v1/publish", post(publish))
        .route("/healthz", get(health))
        .with_state(agent)
}

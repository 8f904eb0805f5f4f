//! Invocations on request from the cloud (`POST /v1/devices/{name}/invoke`, `edgefn invoke
//! --device`): a request arrives on the link (`edgefn/<d>/invoke/<id>`, QoS 0), runs the named
//! binding of the active release the way a triggered event does ([`Bus::invoke_binding`]: a
//! lease, the pool's concurrency and timeout, what it publishes on the bus), and its answer —
//! result or error, the log lines the binding wrote meanwhile, the time taken — goes back
//! on `edgefn/<d>/reply/<id>` at QoS 0, not through the outbox: a reply is only useful now.
//!
//! A request whose deadline has passed by this device's clock is not run (it answers
//! `Expired`), so a request delayed past the point where the cloud stopped waiting never runs.
//! The log lines are those of the binding's instances from the start of the invocation until
//! its lines have gone quiet for [`LOG_QUIET`] after its answer, [`LOG_SETTLE`] at most (the
//! readers of an instance's pipes may deliver a line written just before the answer a moment
//! after it); an invocation running beside it on the same binding may add its lines.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use edgefn_runtime::{Event, InvokeError, LogLine, Payload};
use edgefn_schema::api::{InvokeFailure, InvokeResponse, PublishedMessage};
use edgefn_schema::wire::{self, LogRecord, MAX_REPLY_BYTES};
use tokio::sync::mpsc;

use crate::bus::Bus;
use crate::uplink::{InvokeChannels, RawInvocation};

/// How long after a function's answer its log lines are still collected, at most.
const LOG_SETTLE: Duration = Duration::from_millis(100);
/// After the answer, collecting ends once no line came for this long.
const LOG_QUIET: Duration = Duration::from_millis(25);
/// Log lines a reply carries at most; past it they are counted.
const MAX_LINES: usize = 200;
/// Bytes of log text a reply carries at most.
const MAX_LOG_BYTES: usize = 128 << 10;
/// Requests waiting to start, at most; past it the link drops them (the cloud times out).
const QUEUE: usize = 64;

/// The log lines being collected for invocations in progress.
#[derive(Debug, Default)]
pub(crate) struct Captures {
    active: AtomicUsize,
    next: AtomicU64,
    by_id: std::sync::Mutex<HashMap<u64, Capture>>,
    /// Told of each line a capture kept.
    kept: tokio::sync::Notify,
}

#[derive(Debug, Default)]
struct Capture {
    binding: String,
    lines: Vec<LogRecord>,
    bytes: usize,
    left_out: usize,
}

impl Captures {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<u64, Capture>> {
        self.by_id
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Collects `binding`'s lines from now on, until [`Captures::finish`].
    fn start(&self, binding: &str) -> u64 {
        let id = self.next.fetch_add(1, Ordering::Relaxed);
        self.lock().insert(
            id,
            Capture {
                binding: binding.to_owned(),
                ..Capture::default()
            },
        );
        self.active.fetch_add(1, Ordering::Relaxed);
        id
    }

    /// The lines collected, and how many were left out past the bounds.
    fn finish(&self, id: u64) -> (Vec<LogRecord>, usize) {
        let c = self.lock().remove(&id).unwrap_or_default();
        self.active.fetch_sub(1, Ordering::Relaxed);
        (c.lines, c.left_out)
    }

    /// A line a function wrote, written at `ts_ms`: kept by every capture of its binding.
    pub(crate) fn offer(&self, line: &LogLine, ts_ms: u64) {
        if self.active.load(Ordering::Relaxed) == 0 {
            return;
        }
        let mut kept = false;
        for c in self.lock().values_mut() {
            if c.binding != *line.binding {
                continue;
            }
            kept = true;
            if c.lines.len() >= MAX_LINES || c.bytes + line.line.len() > MAX_LOG_BYTES {
                c.left_out += 1;
            } else {
                c.bytes += line.line.len();
                c.lines.push(line.to_record(ts_ms));
            }
        }
        if kept {
            self.kept.notify_waiters();
        }
    }

    /// Returns once no line was kept for [`LOG_QUIET`], or after [`LOG_SETTLE`].
    async fn settle(&self) {
        let _ = tokio::time::timeout(LOG_SETTLE, async {
            while tokio::time::timeout(LOG_QUIET, self.kept.notified())
                .await
                .is_ok()
            {}
        })
        .await;
    }
}

/// Starts the consumer of invocation requests: the link hands requests to the returned
/// channels' sender and publishes what comes out of their receiver.
pub(crate) fn start(bus: Arc<Bus>, captures: Arc<Captures>) -> InvokeChannels {
    let (requests, mut incoming) = mpsc::channel::<RawInvocation>(QUEUE);
    let (answers, replies) = mpsc::channel::<RawInvocation>(QUEUE);
    tokio::spawn(async move {
        while let Some(request) = incoming.recv().await {
            let (bus, captures, answers) = (bus.clone(), captures.clone(), answers.clone());
            // Each in its own task: a slow function does not hold up the next request (the
            // binding's pool bounds how many run at once).
            tokio::spawn(async move {
                let reply = answer(&bus, &captures, &request.payload).await;
                let bytes = serde_json::to_vec(&reply).expect("a reply serializes");
                // Only useful now: a reply the link cannot take (it is down, or that far
                // behind) is dropped, and the cloud's wait times out.
                if answers
                    .try_send(RawInvocation {
                        id: request.id,
                        payload: bytes,
                    })
                    .is_err()
                {
                    tracing::warn!(
                        "an invocation's reply was dropped: the link to the cloud is down or behind"
                    );
                }
            });
        }
    });
    InvokeChannels { requests, replies }
}

/// A reply that says the request was not run.
fn refused(binding: &str, kind: &str, message: String) -> InvokeResponse {
    InvokeResponse {
        binding: binding.to_owned(),
        error: Some(InvokeFailure {
            kind: kind.to_owned(),
            message,
            traceback: None,
        }),
        ..InvokeResponse::default()
    }
}

/// Runs one request and says what happened.
async fn answer(bus: &Arc<Bus>, captures: &Captures, request: &[u8]) -> InvokeResponse {
    let req: wire::InvokeRequest = match serde_json::from_slice(request) {
        Ok(r) => r,
        Err(e) => {
            return refused(
                "",
                "BadRequest",
                format!("the device cannot read the invocation request: {e}"),
            );
        }
    };
    let now = edgefn_os::time::now_ms();
    if now > req.deadline_ms {
        tracing::warn!(binding = %req.binding, late_ms = now - req.deadline_ms, "an invocation request arrived after its deadline: not run");
        return refused(
            &req.binding,
            "Expired",
            format!(
                "the request reached the device {} ms after its deadline by the device's clock, so it was not run; if the device's clock is ahead of the control plane's, set it right",
                now - req.deadline_ms
            ),
        );
    }
    let Some(release) = bus.live().get().await else {
        return refused(
            &req.binding,
            "NotRunning",
            "the device runs no release yet".to_owned(),
        );
    };
    let Some(function) = release
        .desired
        .state
        .bindings
        .iter()
        .find(|b| b.name == req.binding && b.mode == edgefn_schema::Mode::Triggered)
        .map(|b| b.function.clone())
    else {
        return refused(
            &req.binding,
            "NotRunning",
            format!(
                "the device runs revision {}, which has no triggered binding `{}`; it may not have taken the latest revision yet (see `edgefn status`)",
                release.desired.revision, req.binding
            ),
        );
    };
    let payload = match req.payload {
        serde_json::Value::String(s) => Payload::from_message(s.into_bytes()),
        other => Payload::Json(other),
    };
    let capture = captures.start(&req.binding);
    let started = Instant::now();
    let delivery = bus
        .invoke_binding(
            release,
            req.binding.clone(),
            Event {
                topic: req.topic,
                payload,
            },
        )
        .await;
    let duration_ms = started.elapsed().as_millis() as u64;
    captures.settle().await;
    let (logs, left_out) = captures.finish(capture);
    let mut reply = InvokeResponse {
        binding: req.binding,
        function,
        logs,
        duration_ms,
        ..InvokeResponse::default()
    };
    match delivery.map(|d| d.outcome) {
        Some(Ok(r)) => {
            let (result, base64) = payload_value(&r.result);
            reply.result = Some(result);
            reply.result_base64 = base64;
            reply.published = r
                .publish
                .iter()
                .map(|m| PublishedMessage {
                    topic: m.topic.clone(),
                    payload: payload_value(&m.payload).0,
                })
                .collect();
        }
        Some(Err(e)) => reply.error = Some(failure(e)),
        None => {
            reply.error = Some(InvokeFailure {
                kind: "Stopped".into(),
                message: "the invocation ended without an answer (the agent is stopping)".into(),
                traceback: None,
            })
        }
    }
    let mut notes = Vec::new();
    if left_out > 0 {
        notes.push(format!(
            "{left_out} log lines (past {MAX_LINES} lines or {} KiB)",
            MAX_LOG_BYTES >> 10
        ));
    }
    fit(&mut reply, &mut notes);
    if !notes.is_empty() {
        reply.truncated = Some(format!("left out: {}", notes.join("; ")));
    }
    reply
}

/// Leaves out, in turn, published payloads, log lines and the result until the reply fits in
/// [`MAX_REPLY_BYTES`] (with room for the note saying so).
fn fit(reply: &mut InvokeResponse, notes: &mut Vec<String>) {
    let size = |r: &InvokeResponse| serde_json::to_vec(r).map_or(usize::MAX, |b| b.len());
    let max = MAX_REPLY_BYTES - 1024;
    if size(reply) <= max {
        return;
    }
    if !reply.published.is_empty() {
        for m in &mut reply.published {
            m.payload = serde_json::Value::Null;
        }
        notes.push("the payloads of the messages it published".into());
        if size(reply) <= max {
            return;
        }
    }
    if !reply.logs.is_empty() {
        notes.push(format!("its {} log lines", reply.logs.len()));
        reply.logs.clear();
        if size(reply) <= max {
            return;
        }
    }
    reply.result = None;
    reply.result_base64 = None;
    notes.push(format!(
        "its result (over {} KiB as JSON)",
        MAX_REPLY_BYTES >> 10
    ));
}

/// A runtime error as the reply says it: the handler's own kind, or the runtime's.
fn failure(e: InvokeError) -> InvokeFailure {
    let kind = match &e {
        InvokeError::Handler(h) => {
            return InvokeFailure {
                kind: h.kind.clone(),
                message: h.message.clone(),
                traceback: h.traceback.clone(),
            };
        }
        InvokeError::Timeout { .. } => "TimeoutError",
        InvokeError::OutOfMemory { .. } => "OutOfMemoryError",
        InvokeError::Crashed { .. } => "Crashed",
        InvokeError::Overloaded { .. } => "Overloaded",
        InvokeError::Stopped => "Stopped",
        InvokeError::EventTooLarge(_) => "EventTooLarge",
        _ => "RuntimeError",
    };
    InvokeFailure {
        kind: kind.to_owned(),
        message: e.to_string(),
        traceback: None,
    }
}

/// A payload as JSON: its value, or its text; base64 beside `null` when it is not UTF-8.
fn payload_value(p: &Payload) -> (serde_json::Value, Option<String>) {
    match p {
        Payload::Json(v) => (v.clone(), None),
        Payload::Bytes(b) => match std::str::from_utf8(b) {
            Ok(s) => (serde_json::Value::String(s.to_owned()), None),
            Err(_) => {
                use base64::Engine;
                (
                    serde_json::Value::Null,
                    Some(base64::engine::general_purpose::STANDARD.encode(b)),
                )
            }
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn line(binding: &str, text: &str) -> LogLine {
        LogLine {
            function: "f".into(),
            binding: binding.into(),
            instance: 1,
            stream: edgefn_schema::wire::LogStream::Stdout,
            line: text.into(),
        }
    }

    #[test]
    fn captures_keep_their_bindings_lines_within_bounds() {
        let c = Captures::default();
        c.offer(&line("a", "before"), 1);
        let id = c.start("a");
        c.offer(&line("a", "one"), 2);
        c.offer(&line("b", "other"), 3);
        for _ in 0..MAX_LINES {
            c.offer(&line("a", "more"), 4);
        }
        let (lines, left_out) = c.finish(id);
        assert_eq!(lines.len(), MAX_LINES);
        assert_eq!(lines[0].line, "one");
        assert_eq!(left_out, 1);
        c.offer(&line("a", "after"), 5);
        assert_eq!(c.active.load(Ordering::Relaxed), 0);
    }

    /// Requests the device does not run say why: unreadable, past their deadline (never run),
    /// before any release, for a binding the release lacks or runs continuously.
    #[test]
    fn requests_that_cannot_run_are_answered_with_the_reason() {
        use crate::live::Live;
        use crate::outbox::{Outbox, OutboxLimits};
        use crate::release::RunningRelease;
        use crate::uplink::PacketLimit;
        use edgefn_schema::api::DesiredResponse;
        use edgefn_schema::conformance;

        let dir = tempfile::tempdir().expect("dir");
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("rt");
        rt.block_on(async {
            let outbox =
                Outbox::open(&dir.path().join("o.redb"), OutboxLimits::default()).expect("outbox");
            let live = Arc::new(Live::default());
            let bus = Bus::new(
                live.clone(),
                outbox,
                Arc::new(PacketLimit::new(conformance::DEVICE, 1 << 20)),
            );
            let captures = Captures::default();
            let request = |binding: &str, deadline_ms: u64| {
                serde_json::to_vec(&wire::InvokeRequest {
                    binding: binding.into(),
                    topic: "invoke".into(),
                    payload: serde_json::Value::Null,
                    deadline_ms,
                    timeout_ms: 1000,
                })
                .expect("json")
            };
            let later = edgefn_os::time::now_ms() + 60_000;
            let kind = |r: InvokeResponse| r.error.map(|e| (e.kind, e.message)).expect("an error");

            let (k, _) = kind(answer(&bus, &captures, b"{not json").await);
            assert_eq!(k, "BadRequest");
            let (k, m) = kind(answer(&bus, &captures, &request("x", 1)).await);
            assert_eq!(k, "Expired");
            assert!(m.contains("after its deadline"), "{m}");
            let (k, m) = kind(answer(&bus, &captures, &request("x", later)).await);
            assert_eq!(
                (k.as_str(), m.as_str()),
                ("NotRunning", "the device runs no release yet")
            );

            let state = conformance::desired_state();
            let continuous = state
                .bindings
                .iter()
                .find(|b| b.mode == edgefn_schema::Mode::Continuous)
                .map(|b| b.name.clone());
            let desired = DesiredResponse {
                revision: 7,
                digest: "conformance".into(),
                state,
                signature: None,
            };
            assert!(live.swap(RunningRelease::idle(desired)).await.is_none());
            let (k, m) = kind(answer(&bus, &captures, &request("nope", later)).await);
            assert_eq!(k, "NotRunning");
            assert!(m.contains("revision 7") && m.contains("`nope`"), "{m}");
            if let Some(c) = continuous {
                let (k, _) = kind(answer(&bus, &captures, &request(&c, later)).await);
                assert_eq!(k, "NotRunning", "a continuous binding takes no invocations");
            }
            assert_eq!(captures.active.load(Ordering::Relaxed), 0);
        });
    }

    #[test]
    fn a_reply_too_large_leaves_out_what_it_must_and_says_so() {
        let big = "x".repeat(MAX_REPLY_BYTES);
        let mut reply = InvokeResponse {
            result: Some(serde_json::Value::String(big.clone())),
            logs: vec![line("a", "kept?").to_record(1)],
            ..InvokeResponse::default()
        };
        let mut notes = Vec::new();
        fit(&mut reply, &mut notes);
        assert!(reply.result.is_none() && reply.logs.is_empty());
        assert_eq!(notes.len(), 2, "{notes:?}");
        let mut small = InvokeResponse {
            result: Some(serde_json::json!({"ok": true})),
            ..InvokeResponse::default()
        };
        let mut none = Vec::new();
        fit(&mut small, &mut none);
        assert!(none.is_empty() && small.result.is_some());
    }
}

//! What the agent and the cloud say to each other over MQTT, written once: the topic namespace
//! on the cloud's broker, the user properties a message from a device's outbox carries, and the
//! record of a function's log line.
//!
//! Topics on the cloud's broker, per device `<d>` (the broker's access rules follow them):
//!
//! | topic | what | device | cloud |
//! |---|---|---|---|
//! | `edgefn/<d>/up/<topic>` | what the device sends up (routes `to: cloud`) | write | read |
//! | `edgefn/<d>/logs/<binding>` | its functions' log lines, one [`LogRecord`] each | write | read |
//! | `edgefn/<d>/down/<topic>` | what the cloud sends it (`POST /v1/publish`) | read | write |
//! | `edgefn/<d>/invoke/<id>` | a request to run a function now, one [`InvokeRequest`] | read | write |
//! | `edgefn/<d>/reply/<id>` | its answer, one [`InvokeResponse`](crate::api::InvokeResponse) | write | read |
//!
//! `<topic>` is the device-local topic: what the device's bus and its routes see. `<id>` is the
//! request's random id (32 hex digits), which its reply repeats. Requests and replies travel at
//! QoS 0: a request is only worth running before its deadline, so no broker keeps one for an
//! absent device (a session's queue holds QoS 1 messages only), and the device also drops one
//! whose deadline has passed.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// The first level of every edgefn topic on the cloud's broker.
pub const NAMESPACE: &str = "edgefn";

/// MQTT 5 user property carrying a message's sequence number in its device's outbox (decimal
/// `u64`, increasing per outbox); the cloud drops a message whose number it has seen.
pub const PROP_ID: &str = "edgefn-id";
/// MQTT 5 user property naming the outbox a message comes from (16 hex digits, new when the
/// outbox is created again), so that a recreated outbox's numbers are not taken for repeats.
pub const PROP_OUTBOX: &str = "edgefn-outbox";

/// The kind of a device's topic, its third level.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Kind {
    /// `up`: from the device to the cloud.
    Up,
    /// `down`: from the cloud to the device.
    Down,
    /// `logs`: the device's functions' log lines, under the binding's name.
    Logs,
    /// `invoke`: requests from the cloud to run a function now, under the request's id.
    Invoke,
    /// `reply`: the device's answers to them, under the request's id.
    Reply,
}

impl Kind {
    /// `up`, `down`, `logs`, `invoke` or `reply`.
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Up => "up",
            Kind::Down => "down",
            Kind::Logs => "logs",
            Kind::Invoke => "invoke",
            Kind::Reply => "reply",
        }
    }

    /// The kind named `s`, if any.
    pub fn parse(s: &str) -> Option<Kind> {
        match s {
            "up" => Some(Kind::Up),
            "down" => Some(Kind::Down),
            "logs" => Some(Kind::Logs),
            "invoke" => Some(Kind::Invoke),
            "reply" => Some(Kind::Reply),
            _ => None,
        }
    }
}

impl std::fmt::Display for Kind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// `edgefn/<device>/<kind>/`: what goes before a device-local topic (or a binding's name, for
/// [`Kind::Logs`]) on the cloud's broker.
pub fn prefix(device: &str, kind: Kind) -> String {
    format!("{NAMESPACE}/{device}/{}/", kind.as_str())
}

/// `edgefn/<device>/<kind>/<rest>`: the cloud-side topic of `device`'s local topic `rest`.
pub fn topic(device: &str, kind: Kind, rest: &str) -> String {
    format!("{NAMESPACE}/{device}/{}/{rest}", kind.as_str())
}

/// `edgefn/<device>/down/#`: what a device subscribes to.
pub fn down_filter(device: &str) -> String {
    format!("{NAMESPACE}/{device}/down/#")
}

/// `edgefn/<device>/invoke/+`: what a device subscribes to for invocation requests (at QoS 0).
pub fn invoke_filter(device: &str) -> String {
    format!("{NAMESPACE}/{device}/invoke/+")
}

/// What the cloud subscribes to: every device's messages, log lines and invocation replies
/// (`edgefn/+/up/#`, `edgefn/+/logs/#`, `edgefn/+/reply/+`).
pub const CLOUD_FILTERS: [&str; 3] = ["edgefn/+/up/#", "edgefn/+/logs/#", "edgefn/+/reply/+"];

/// Longest payload of an invocation request, in bytes (as `POST /v1/publish`'s).
pub const MAX_INVOKE_PAYLOAD: usize = 256 << 10;

/// Largest reply a device sends, in bytes of JSON: past it the agent leaves out, in turn,
/// what the function published, its log lines and its result, and says so in the reply.
pub const MAX_REPLY_BYTES: usize = 512 << 10;

/// A request to run a function on a device now, published by the cloud on
/// `edgefn/<d>/invoke/<id>` (JSON, QoS 0); the device answers on `edgefn/<d>/reply/<id>`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct InvokeRequest {
    /// The triggered binding to run (the cloud resolved a function's name to it).
    pub binding: String,
    /// The event's topic, as the function sees it.
    pub topic: String,
    /// The event's payload: a JSON string is its text, any other value JSON (the one payload
    /// contract: the device reads the text as JSON when it is a JSON document).
    pub payload: serde_json::Value,
    /// When the cloud stops waiting (ms since the Unix epoch, by the cloud's clock): a device
    /// whose clock is past it does not run the request.
    pub deadline_ms: u64,
    /// How long the cloud waits from sending it, in ms (for messages about a late request).
    pub timeout_ms: u64,
}

/// A cloud-side topic taken apart by [`parse`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Topic<'a> {
    /// The device's name.
    pub device: &'a str,
    /// Up, down or logs.
    pub kind: Kind,
    /// The rest: the device-local topic, or the binding for [`Kind::Logs`]; never empty.
    pub rest: &'a str,
}

/// Takes `edgefn/<device>/<kind>/<rest>` apart; `None` for a topic outside the namespace, of
/// an unknown kind, or with an empty device or rest.
pub fn parse(topic: &str) -> Option<Topic<'_>> {
    let rest = topic.strip_prefix(NAMESPACE)?.strip_prefix('/')?;
    let (device, rest) = rest.split_once('/')?;
    let (kind, rest) = rest.split_once('/')?;
    if device.is_empty() || rest.is_empty() {
        return None;
    }
    Some(Topic {
        device,
        kind: Kind::parse(kind)?,
        rest,
    })
}

/// Whether `topic` (a topic or a topic filter) lies under `edgefn/<device>/<kind>/` with at
/// least one more level, the first three levels matched literally: a `+` or `#` there never
/// counts, so a filter passes only when every topic it matches is under the prefix. This is the
/// rule the cloud's broker confines devices with.
pub fn is_under(topic: &str, device: &str, kind: Kind) -> bool {
    let mut levels = topic.split('/');
    for p in [NAMESPACE, device, kind.as_str()] {
        if levels.next() != Some(p) {
            return false;
        }
    }
    levels.next().is_some()
}

/// Which stream of a function a log line comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum LogStream {
    /// Standard output.
    #[default]
    Stdout,
    /// Standard error (tracebacks land here).
    Stderr,
}

impl LogStream {
    /// `stdout` or `stderr`.
    pub fn as_str(self) -> &'static str {
        match self {
            LogStream::Stdout => "stdout",
            LogStream::Stderr => "stderr",
        }
    }
}

/// One log line of a function, as a device publishes it on `edgefn/<d>/logs/<binding>` (JSON,
/// QoS 0) and as its local endpoint serves it (`GET /logs` on the agent).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct LogRecord {
    /// When the line was written (ms since the Unix epoch), by the device's clock.
    pub ts_ms: u64,
    /// The binding that wrote it (or `<binding>#<instance>`-like names; see [`LogLine::of`]).
    pub binding: String,
    /// `stdout` or `stderr`.
    pub stream: LogStream,
    /// The line, without its line ending.
    pub line: String,
    /// Set on the marker a device ships in place of lines it dropped: how many.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dropped: Option<u64>,
}

impl LogRecord {
    /// Reads a payload published on `edgefn/<d>/logs/<binding>` leniently, as the cloud does:
    /// a missing field takes a default (`binding` from the topic, `stream` stdout, `ts_ms`
    /// `now_ms`), and a payload that is not a JSON object is one line of text.
    pub fn parse(binding: &str, payload: &[u8], now_ms: u64) -> LogRecord {
        let v: serde_json::Value = serde_json::from_slice(payload).unwrap_or_default();
        let field = |k: &str| v.get(k).and_then(|x| x.as_str()).map(str::to_owned);
        LogRecord {
            ts_ms: v
                .get("ts_ms")
                .and_then(serde_json::Value::as_u64)
                .unwrap_or(now_ms),
            binding: field("binding").unwrap_or_else(|| binding.to_owned()),
            stream: match field("stream").as_deref() {
                Some("stderr") => LogStream::Stderr,
                _ => LogStream::Stdout,
            },
            line: field("line")
                .unwrap_or_else(|| String::from_utf8_lossy(payload).trim_end().to_owned()),
            dropped: v.get("dropped").and_then(serde_json::Value::as_u64),
        }
    }

    /// The JSON payload published for it.
    pub fn to_json(&self) -> Vec<u8> {
        serde_json::to_vec(self).expect("a log record serializes")
    }
}

/// A function's log line as the cloud serves it (`GET /v1/devices/{name}/logs`, one JSON
/// object per line): a [`LogRecord`] with the device that shipped it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct LogLine {
    /// The device.
    pub device: String,
    /// When the line was written (ms since the Unix epoch), as the device says.
    pub ts_ms: u64,
    /// The binding (function) that wrote it.
    pub binding: String,
    /// `stdout` or `stderr`.
    pub stream: LogStream,
    /// The line.
    pub line: String,
}

impl LogLine {
    /// The line `device` shipped as `record`.
    pub fn new(device: &str, record: LogRecord) -> LogLine {
        LogLine {
            device: device.to_owned(),
            ts_ms: record.ts_ms,
            binding: record.binding,
            stream: record.stream,
            line: record.line,
        }
    }

    /// Whether this line is of `binding` (exactly, or `binding` followed by a character that
    /// no function name holds, such as `temp-filter#1`).
    pub fn of(&self, binding: &str) -> bool {
        match self.binding.strip_prefix(binding) {
            Some("") => true,
            Some(rest) => rest
                .chars()
                .next()
                .is_some_and(|c| !(c.is_ascii_alphanumeric() || c == '-' || c == '_')),
            None => false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn topics_are_built_and_taken_apart() {
        assert_eq!(
            topic("gw-01", Kind::Up, "alerts/l1"),
            "edgefn/gw-01/up/alerts/l1"
        );
        assert_eq!(prefix("gw-01", Kind::Down), "edgefn/gw-01/down/");
        assert_eq!(down_filter("gw-01"), "edgefn/gw-01/down/#");
        assert_eq!(
            parse("edgefn/gw-01/up/alerts/l1"),
            Some(Topic {
                device: "gw-01",
                kind: Kind::Up,
                rest: "alerts/l1"
            })
        );
        assert_eq!(
            parse("edgefn/gw-01/logs/temp").map(|t| t.kind),
            Some(Kind::Logs)
        );
        for bad in [
            "edgefn/gw-01/up",
            "edgefn/gw-01/up/",
            "edgefn//up/x",
            "edgefn/gw-01/sideways/x",
            "edgefnx/gw-01/up/x",
            "other/gw-01/up/x",
        ] {
            assert_eq!(parse(bad), None, "{bad}");
        }
        for kind in [Kind::Up, Kind::Down, Kind::Logs, Kind::Invoke, Kind::Reply] {
            let t = topic("d", kind, "a/b");
            assert_eq!(
                parse(&t).map(|t| (t.device, t.kind, t.rest)),
                Some(("d", kind, "a/b"))
            );
            assert!(is_under(&t, "d", kind));
        }
    }

    #[test]
    fn under_matches_the_prefix_literally() {
        assert!(is_under("edgefn/gw-01/down/#", "gw-01", Kind::Down));
        assert!(is_under(
            "edgefn/gw-01/down/commands/+",
            "gw-01",
            Kind::Down
        ));
        assert!(!is_under("edgefn/gw-01/#", "gw-01", Kind::Down));
        assert!(!is_under("edgefn/+/down/#", "gw-01", Kind::Down));
        assert!(!is_under("edgefn/gw-01/down", "gw-01", Kind::Down));
        assert!(!is_under("edgefn/gw-01x/down/a", "gw-01", Kind::Down));
        assert!(is_under(&invoke_filter("gw-01"), "gw-01", Kind::Invoke));
        assert!(!is_under(&invoke_filter("gw-01"), "gw-02", Kind::Invoke));
        assert!(!is_under("edgefn/gw-01/invoke", "gw-01", Kind::Invoke));
        assert!(!is_under("edgefn/+/invoke/+", "gw-01", Kind::Invoke));
    }

    #[test]
    fn log_records_round_trip_and_parse_leniently() {
        let r = LogRecord {
            ts_ms: 5,
            binding: "temp-filter#1".into(),
            stream: LogStream::Stderr,
            line: "hot".into(),
            dropped: None,
        };
        assert_eq!(
            String::from_utf8(r.to_json()).unwrap(),
            r#"{"ts_ms":5,"binding":"temp-filter#1","stream":"stderr","line":"hot"}"#
        );
        assert_eq!(LogRecord::parse("x", &r.to_json(), 9), r);
        let raw = LogRecord::parse("collector", b"plain text\n", 9);
        assert_eq!(
            (
                raw.ts_ms,
                raw.binding.as_str(),
                raw.stream,
                raw.line.as_str()
            ),
            (9, "collector", LogStream::Stdout, "plain text")
        );
        let line = LogLine::new("gw-01", r);
        assert!(line.of("temp-filter"));
        assert!(!line.of("temp"));
    }
}

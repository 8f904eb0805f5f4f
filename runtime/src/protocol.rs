//! The invocation protocol between the runtime and a function instance (see `PROTOCOL.md`).
//!
//! Frames are a 4-byte big-endian length followed by that many bytes of UTF-8 JSON, sent over a
//! socketpair that the instance sees as file descriptor 3. This module holds the wire types and
//! the frame codec, both blocking (for the sandbox helper and example functions) and async (for
//! the pool and the supervisor).

use base64::Engine as _;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use tokio::io::{AsyncRead, AsyncReadExt as _, AsyncWrite, AsyncWriteExt as _};

/// The protocol version this runtime speaks; an instance must announce the same in `hello`.
pub const PROTOCOL_VERSION: u32 = 1;

/// The file descriptor an instance reads events from and writes replies to.
pub const CHANNEL_FD: i32 = 3;

/// Largest frame either side may send (16 MiB), length prefix excluded.
pub const MAX_FRAME: usize = 16 << 20;

/// Exit status an instance uses to say it ran out of memory (the shims exit with it on a
/// `MemoryError`; the container helper uses it when the cgroup's OOM killer struck).
pub const EXIT_OUT_OF_MEMORY: i32 = 251;

/// How a payload is carried in JSON.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Encoding {
    /// The value is the payload itself.
    #[default]
    Json,
    /// The value is a base64 string of raw bytes.
    Base64,
}

impl Encoding {
    pub(crate) fn is_json(&self) -> bool {
        *self == Encoding::Json
    }
}

/// A message payload: a JSON value, or raw bytes.
#[derive(Debug, Clone, PartialEq)]
pub enum Payload {
    /// A JSON document.
    Json(Value),
    /// Bytes that are not (or not known to be) JSON.
    Bytes(Vec<u8>),
}

impl Default for Payload {
    fn default() -> Self {
        Payload::Json(Value::Null)
    }
}

impl Payload {
    /// A message's bytes as a handler receives them. The payload contract, the same on every
    /// path into a function (from the cloud, the local HTTP endpoint, the local MQTT listener,
    /// `edgefn test --topic` and `edgefn invoke`):
    ///
    /// - a JSON document arrives as its value (`{"celsius": 45}` → an object, `42` → a number,
    ///   `"hi"` → the string `hi`);
    /// - other UTF-8 text arrives as a string (`hello` → `"hello"`);
    /// - anything else arrives as bytes (`bytes` in python, a `Buffer` in node).
    ///
    /// So a sender chooses by what it sends: JSON for values, plain text for a string (or a
    /// JSON string, the same to the handler), anything not UTF-8 for bytes. A function's JSON
    /// result or published value goes out as JSON text, which reads back as the same value.
    pub fn from_message(bytes: Vec<u8>) -> Payload {
        if let Ok(v) = serde_json::from_slice(&bytes) {
            return Payload::Json(v);
        }
        match String::from_utf8(bytes) {
            Ok(text) => Payload::Json(Value::String(text)),
            Err(e) => Payload::Bytes(e.into_bytes()),
        }
    }

    /// The payload as it goes on the wire: a value and its encoding.
    pub fn to_wire(&self) -> (Value, Encoding) {
        match self {
            Payload::Json(v) => (v.clone(), Encoding::Json),
            Payload::Bytes(b) => (
                Value::String(base64::engine::general_purpose::STANDARD.encode(b)),
                Encoding::Base64,
            ),
        }
    }

    /// Reads a payload from the wire.
    pub fn from_wire(value: Value, encoding: Encoding) -> Result<Payload, ProtocolError> {
        match encoding {
            Encoding::Json => Ok(Payload::Json(value)),
            Encoding::Base64 => {
                let Value::String(s) = value else {
                    return Err(ProtocolError::Malformed(
                        "a base64 payload must be a string".into(),
                    ));
                };
                base64::engine::general_purpose::STANDARD
                    .decode(s)
                    .map(Payload::Bytes)
                    .map_err(|e| ProtocolError::Malformed(format!("bad base64 payload: {e}")))
            }
        }
    }
}

/// Who the event is for; sent with every event.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WireContext {
    /// Function name.
    pub function: String,
    /// Binding name.
    pub binding: String,
    /// Device name.
    pub device: String,
    /// Revision of the desired state the instance belongs to.
    pub revision: u64,
}

/// A message to publish, on the wire.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct WireMessage {
    /// Topic to publish to.
    pub topic: String,
    /// Payload value.
    #[serde(default)]
    pub payload: Value,
    /// How `payload` is encoded (default `json`).
    #[serde(default, skip_serializing_if = "Encoding::is_json")]
    pub encoding: Encoding,
}

/// A structured error: a handler's exception, or an instance's failure to load its handler.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WireError {
    /// The error's type, e.g. the exception class name (`ValueError`, `TypeError`).
    #[serde(rename = "type")]
    pub kind: String,
    /// Human-readable message.
    #[serde(default)]
    pub message: String,
    /// Traceback or stack, when the language has one (the shims also print it to stderr).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub traceback: Option<String>,
}

/// Frames the runtime sends to an instance.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum ToInstance {
    /// Handle one event and answer with a `result` of the same id.
    Invoke {
        /// Invocation id, echoed in the result.
        id: u64,
        /// Topic the message arrived on.
        topic: String,
        /// Payload value.
        payload: Value,
        /// How `payload` is encoded.
        #[serde(default, skip_serializing_if = "Encoding::is_json")]
        encoding: Encoding,
        /// When the runtime gives up on this event, in unix milliseconds.
        deadline_ms: u64,
        /// Function, binding, device, revision.
        context: WireContext,
    },
}

/// Frames an instance sends to the runtime.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum FromInstance {
    /// First frame: the instance is loaded and ready; names the protocol it speaks.
    Hello {
        /// Protocol version; must equal [`PROTOCOL_VERSION`].
        protocol: u32,
        /// What is answering (e.g. `python3 3.11.2`), for diagnostics.
        #[serde(default)]
        runtime: String,
    },
    /// Instead of `hello`: the handler could not be loaded; the instance exits after it.
    InitError {
        /// Protocol version the instance speaks.
        #[serde(default)]
        protocol: Option<u32>,
        /// Why loading failed.
        error: WireError,
    },
    /// The answer to one `invoke`.
    Result {
        /// The invocation's id.
        id: u64,
        /// The handler's return value (absent when `error` is set).
        #[serde(default)]
        result: Value,
        /// How `result` is encoded.
        #[serde(default, skip_serializing_if = "Encoding::is_json")]
        encoding: Encoding,
        /// Set when the handler failed.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        error: Option<WireError>,
        /// Messages the handler published.
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        publish: Vec<WireMessage>,
    },
    /// A message published outside of any invocation (continuous functions).
    Publish(WireMessage),
}

/// A frame that could not be read or does not follow the protocol.
#[derive(Debug, thiserror::Error)]
pub enum ProtocolError {
    /// The channel failed.
    #[error("channel I/O failed: {0}")]
    Io(#[from] std::io::Error),
    /// The peer closed the channel.
    #[error("the channel was closed")]
    Closed,
    /// A frame longer than [`MAX_FRAME`].
    #[error("frame of {len} bytes exceeds the limit of {max} bytes", max = MAX_FRAME)]
    TooLarge {
        /// Announced length.
        len: usize,
    },
    /// Not JSON, or not a known frame.
    #[error("malformed frame: {0}")]
    Malformed(String),
    /// The instance speaks another protocol version.
    #[error(
        "protocol version mismatch: the instance speaks version {instance}, this runtime speaks version {runtime}"
    )]
    VersionMismatch {
        /// The instance's version.
        instance: u32,
        /// Ours ([`PROTOCOL_VERSION`]).
        runtime: u32,
    },
    /// A frame that is valid but not expected now (e.g. a result before `hello`).
    #[error("unexpected frame: {0}")]
    Unexpected(String),
}

/// Encodes `msg` as one frame (length prefix included) into `out`, replacing its contents.
pub fn encode<T: Serialize>(msg: &T, out: &mut Vec<u8>) -> Result<(), ProtocolError> {
    out.clear();
    out.extend_from_slice(&[0; 4]);
    serde_json::to_writer(&mut *out, msg)
        .map_err(|e| ProtocolError::Malformed(format!("cannot encode frame: {e}")))?;
    let len = out.len() - 4;
    if len > MAX_FRAME {
        return Err(ProtocolError::TooLarge { len });
    }
    out[..4].copy_from_slice(&(len as u32).to_be_bytes());
    Ok(())
}

/// Decodes one frame body.
pub fn decode<'a, T: Deserialize<'a>>(body: &'a [u8]) -> Result<T, ProtocolError> {
    serde_json::from_slice(body).map_err(|e| ProtocolError::Malformed(e.to_string()))
}

/// Decodes one frame from an instance, forgiving what a handler's values can do to the text:
///
/// - bytes that are not UTF-8 are replaced with U+FFFD;
/// - `\uXXXX` escapes of lone UTF-16 surrogates (what `JSON.stringify` writes for a string
///   holding half of a surrogate pair) are replaced with `\ufffd`;
/// - a frame that still cannot be decoded but begins as the shims begin a result
///   (`{"type":"result","id":N`) becomes the handler error [`UNREADABLE_RESULT`] for event `N`
///   (e.g. a result nested deeper than the decoder's 128 levels), so that the event fails and
///   the instance stays.
///
/// Anything else that is not a frame is [`ProtocolError::Malformed`].
pub fn decode_from_instance(body: &[u8]) -> Result<FromInstance, ProtocolError> {
    let first = match serde_json::from_slice(body) {
        Ok(f) => return Ok(f),
        Err(e) => e,
    };
    let text = repair_surrogate_escapes(&String::from_utf8_lossy(body));
    if let Ok(f) = serde_json::from_str(&text) {
        return Ok(f);
    }
    if let Some(id) = result_id(body) {
        return Ok(FromInstance::Result {
            id,
            result: Value::Null,
            encoding: Encoding::Json,
            error: Some(WireError {
                kind: UNREADABLE_RESULT.into(),
                message: format!("the runtime cannot read the handler's result: {first}"),
                traceback: None,
            }),
            publish: Vec::new(),
        });
    }
    Err(ProtocolError::Malformed(first.to_string()))
}

/// The error type of a result the runtime could not read (see [`decode_from_instance`]).
pub const UNREADABLE_RESULT: &str = "UnreadableResult";

/// The id of a frame that begins `{"type":"result","id":N`.
fn result_id(body: &[u8]) -> Option<u64> {
    let rest = body.strip_prefix(br#"{"type":"result","id":"#)?;
    let digits = rest.iter().take_while(|b| b.is_ascii_digit()).count();
    std::str::from_utf8(&rest[..digits]).ok()?.parse().ok()
}

/// JSON text with every `\u` escape of a lone UTF-16 surrogate replaced by `\ufffd` (pairs are
/// kept).
fn repair_surrogate_escapes(text: &str) -> String {
    let b = text.as_bytes();
    let escape = |i: usize| -> Option<u16> {
        let hex = b.get(i..i + 6)?;
        if hex[0] != b'\\' || hex[1] != b'u' {
            return None;
        }
        u16::from_str_radix(std::str::from_utf8(&hex[2..]).ok()?, 16).ok()
    };
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] != b'\\' {
            out.push(b[i]);
            i += 1;
            continue;
        }
        match escape(i) {
            Some(0xD800..=0xDBFF) if matches!(escape(i + 6), Some(0xDC00..=0xDFFF)) => {
                out.extend_from_slice(&b[i..i + 12]);
                i += 12;
            }
            Some(0xD800..=0xDFFF) => {
                out.extend_from_slice(br"\ufffd");
                i += 6;
            }
            // Any other escape, `\\` included, is copied whole.
            _ => {
                let end = (i + 2).min(b.len());
                out.extend_from_slice(&b[i..end]);
                i = end;
            }
        }
    }
    // Only ASCII was replaced, by ASCII: still UTF-8.
    String::from_utf8_lossy(&out).into_owned()
}

fn check_len(header: [u8; 4]) -> Result<usize, ProtocolError> {
    let len = u32::from_be_bytes(header) as usize;
    if len > MAX_FRAME {
        return Err(ProtocolError::TooLarge { len });
    }
    Ok(len)
}

/// Reads one frame body into `body` (async). End of stream before a header is
/// [`ProtocolError::Closed`].
pub async fn read_frame<R: AsyncRead + Unpin>(
    r: &mut R,
    body: &mut Vec<u8>,
) -> Result<(), ProtocolError> {
    let mut header = [0u8; 4];
    match r.read_exact(&mut header).await {
        Ok(_) => {}
        Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => {
            return Err(ProtocolError::Closed);
        }
        Err(e) => return Err(e.into()),
    }
    let len = check_len(header)?;
    body.clear();
    body.resize(len, 0);
    match r.read_exact(body).await {
        Ok(_) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => Err(ProtocolError::Closed),
        Err(e) => Err(e.into()),
    }
}

/// Writes an encoded frame (async).
pub async fn write_frame<W: AsyncWrite + Unpin>(
    w: &mut W,
    frame: &[u8],
) -> Result<(), ProtocolError> {
    w.write_all(frame).await?;
    Ok(())
}

/// Reads one frame body into `body` (blocking).
pub fn read_frame_blocking<R: std::io::Read>(
    r: &mut R,
    body: &mut Vec<u8>,
) -> Result<(), ProtocolError> {
    let mut header = [0u8; 4];
    match r.read_exact(&mut header) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => {
            return Err(ProtocolError::Closed);
        }
        Err(e) => return Err(e.into()),
    }
    let len = check_len(header)?;
    body.clear();
    body.resize(len, 0);
    match r.read_exact(body) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => Err(ProtocolError::Closed),
        Err(e) => Err(e.into()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_round_trip() {
        let msg = ToInstance::Invoke {
            id: 7,
            topic: "a/b".into(),
            payload: serde_json::json!({"t": 41}),
            encoding: Encoding::Json,
            deadline_ms: 1,
            context: WireContext {
                function: "f".into(),
                binding: "b".into(),
                device: "d".into(),
                revision: 3,
            },
        };
        let mut out = Vec::new();
        encode(&msg, &mut out).expect("encodes");
        assert_eq!(
            u32::from_be_bytes([out[0], out[1], out[2], out[3]]) as usize,
            out.len() - 4
        );
        let mut body = Vec::new();
        read_frame_blocking(&mut &out[..], &mut body).expect("reads");
        let back: ToInstance = decode(&body).expect("decodes");
        assert_eq!(back, msg);
        let text = std::str::from_utf8(&body).expect("utf8");
        assert!(text.starts_with(r#"{"type":"invoke","id":7"#), "{text}");
        assert!(
            !text.contains("encoding"),
            "json encoding is implicit: {text}"
        );
    }

    #[test]
    fn oversized_frame_is_refused() {
        let header = ((MAX_FRAME + 1) as u32).to_be_bytes();
        let mut body = Vec::new();
        let err = read_frame_blocking(&mut &header[..], &mut body).expect_err("too large");
        assert!(matches!(err, ProtocolError::TooLarge { .. }), "{err}");
        assert!(err.to_string().contains("exceeds the limit"), "{err}");
    }

    #[test]
    fn eof_before_header_is_closed() {
        let mut body = Vec::new();
        let err = read_frame_blocking(&mut &[][..], &mut body).expect_err("closed");
        assert!(matches!(err, ProtocolError::Closed), "{err}");
    }

    #[test]
    fn bytes_payload_round_trips_as_base64() {
        let p = Payload::Bytes(vec![0, 1, 255]);
        let (v, enc) = p.to_wire();
        assert_eq!(enc, Encoding::Base64);
        assert_eq!(v, Value::String("AAH/".into()));
        assert_eq!(Payload::from_wire(v, enc).expect("decodes"), p);
        assert!(Payload::from_wire(Value::Bool(true), Encoding::Base64).is_err());
    }

    #[test]
    fn lone_surrogates_and_bad_bytes_become_replacement_characters() {
        let body = br#"{"type":"result","id":3,"result":{"a":"x\ud83d","b":"\ud83d\ude00","c":"\\ud83d","d":"\udc80\ud800"},"error":{"type":"Error","message":"m\udfff"}}"#;
        let FromInstance::Result { result, error, .. } = decode_from_instance(body).expect("ok")
        else {
            panic!("not a result")
        };
        assert_eq!(result["a"], "x\u{fffd}");
        assert_eq!(result["b"], "\u{1f600}", "a pair is kept");
        assert_eq!(
            result["c"], "\\ud83d",
            "an escaped backslash is not an escape"
        );
        assert_eq!(result["d"], "\u{fffd}\u{fffd}");
        assert_eq!(error.expect("error").message, "m\u{fffd}");
        let mut bad = br#"{"type":"publish","topic":"t","payload":"a"#.to_vec();
        bad.extend_from_slice(b"\xed\xa0\xbd\xff\"}");
        let FromInstance::Publish(m) = decode_from_instance(&bad).expect("ok") else {
            panic!("not a publish")
        };
        assert_eq!(m.payload, "a\u{fffd}\u{fffd}\u{fffd}\u{fffd}");
    }

    #[test]
    fn an_unreadable_result_fails_its_event_only() {
        let deep = format!(
            r#"{{"type":"result","id":9,"result":{}{}}}"#,
            "[".repeat(200),
            "]".repeat(200)
        );
        let FromInstance::Result { id, error, .. } =
            decode_from_instance(deep.as_bytes()).expect("a result")
        else {
            panic!("not a result")
        };
        assert_eq!(id, 9);
        let error = error.expect("error");
        assert_eq!(error.kind, UNREADABLE_RESULT);
        assert!(
            error.message.contains("recursion limit"),
            "{}",
            error.message
        );
        assert!(matches!(
            decode_from_instance(b"{\"type\":\"nonsense\"}"),
            Err(ProtocolError::Malformed(_))
        ));
    }

    #[test]
    fn result_frame_parses_error_and_publish() {
        let body = br#"{"type":"result","id":1,"error":{"type":"ValueError","message":"bad"},"publish":[{"topic":"x","payload":"AA==","encoding":"base64"}]}"#;
        let f: FromInstance = decode(body).expect("parses");
        let FromInstance::Result { error, publish, .. } = f else {
            panic!("not a result: {f:?}")
        };
        assert_eq!(error.expect("error").kind, "ValueError");
        assert_eq!(publish[0].encoding, Encoding::Base64);
    }
}

#[cfg(test)]
mod payload_contract {
    use super::*;

    #[test]
    fn json_text_and_bytes_arrive_as_such() {
        let p = |b: &[u8]| Payload::from_message(b.to_vec());
        assert_eq!(
            p(br#"{"a": 1}"#),
            Payload::Json(serde_json::json!({"a": 1}))
        );
        assert_eq!(p(b"42"), Payload::Json(serde_json::json!(42)));
        assert_eq!(p(br#""hi""#), Payload::Json(serde_json::json!("hi")));
        assert_eq!(
            p(b"hello world"),
            Payload::Json(serde_json::json!("hello world"))
        );
        assert_eq!(p(b""), Payload::Json(serde_json::json!("")));
        assert_eq!(p(b"\xff\x00"), Payload::Bytes(vec![0xff, 0]));
    }
}

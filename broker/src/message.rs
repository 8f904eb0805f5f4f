//! Messages, as the broker and its owner see them.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use bytes::Bytes;

/// Quality of service (MQTT 3.1.1 §4.3, MQTT 5 §4.3).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum QoS {
    /// 0: at most once.
    AtMostOnce,
    /// 1: at least once.
    AtLeastOnce,
    /// 2: exactly once.
    ExactlyOnce,
}

impl QoS {
    /// The QoS of its number on the wire (0, 1, 2); `None` for any other.
    pub fn from_u8(n: u8) -> Option<QoS> {
        match n {
            0 => Some(QoS::AtMostOnce),
            1 => Some(QoS::AtLeastOnce),
            2 => Some(QoS::ExactlyOnce),
            _ => None,
        }
    }

    /// Its number on the wire.
    pub fn as_u8(self) -> u8 {
        self as u8
    }
}

/// The MQTT 5 PUBLISH properties a message carries to its receivers unchanged (MQTT 5
/// §3.3.2.3), apart from the message expiry interval, which goes as [`Message::expires_at`].
/// MQTT 3.1.1 receivers get none of them.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PublishProperties {
    /// Payload Format Indicator (§3.3.2.3.2): 1 for UTF-8 text, 0 or `None` for bytes.
    pub payload_format_indicator: Option<u8>,
    /// Content Type (§3.3.2.3.9), a MIME type by convention.
    pub content_type: Option<String>,
    /// Response Topic (§3.3.2.3.5), for request/response.
    pub response_topic: Option<String>,
    /// Correlation Data (§3.3.2.3.6), for request/response.
    pub correlation_data: Option<Bytes>,
}

/// A message through the broker.
#[derive(Debug, Clone)]
pub struct Message {
    /// Its topic.
    pub topic: String,
    /// Its payload.
    pub payload: Bytes,
    /// QoS.
    pub qos: QoS,
    /// Retain flag.
    pub retain: bool,
    /// MQTT 5 user properties (dropped for MQTT 3.1.1 receivers).
    pub properties: Vec<(String, String)>,
    /// MQTT 5 properties carried to MQTT 5 receivers.
    pub v5: PublishProperties,
    /// When it expires (MQTT 5 Message Expiry Interval, §3.3.2.3.3, from when the broker took
    /// it): an expired message is not delivered, and receivers get the time left, in whole
    /// seconds. `None`: never.
    pub expires_at: Option<SystemTime>,
}

impl Message {
    /// A message with no MQTT 5 properties.
    pub fn new(
        topic: impl Into<String>,
        payload: impl Into<Bytes>,
        qos: QoS,
        retain: bool,
    ) -> Self {
        Message {
            topic: topic.into(),
            payload: payload.into(),
            qos,
            retain,
            properties: Vec::new(),
            v5: PublishProperties::default(),
            expires_at: None,
        }
    }

    /// The seconds it has left (rounded up), `Some(0)` once expired, `None` when it never
    /// expires.
    pub(crate) fn seconds_left(&self, now: SystemTime) -> Option<u32> {
        let at = self.expires_at?;
        Some(match at.duration_since(now) {
            Ok(d) if d > Duration::ZERO => {
                u32::try_from(d.as_secs() + u64::from(d.subsec_nanos() > 0)).unwrap_or(u32::MAX)
            }
            _ => 0,
        })
    }

    /// Whether it has expired.
    pub(crate) fn expired(&self, now: SystemTime) -> bool {
        self.seconds_left(now) == Some(0)
    }
}

/// A message on its way to one receiver.
#[derive(Debug, Clone)]
pub(crate) struct Out {
    pub(crate) msg: Arc<Message>,
    pub(crate) qos: QoS,
    pub(crate) retain: bool,
    pub(crate) dup: bool,
    /// Its number in the session's store (0: not stored).
    pub(crate) seq: u64,
    /// The identifiers of the receiver's subscriptions it matched (MQTT 5 §3.3.2.3.8).
    pub(crate) sub_ids: Vec<usize>,
    /// QoS 2: the receiver sent PUBREC, so PUBREL is what is resent (§4.4).
    pub(crate) released: bool,
    /// The packet id it was last sent under (0: not sent yet): a resend reuses it (§4.4).
    pub(crate) pkid: u16,
}

impl Out {
    /// `msg` on its way to one receiver at `qos`.
    pub(crate) fn new(msg: Arc<Message>, qos: QoS, retain: bool) -> Self {
        Out {
            msg,
            qos,
            retain,
            dup: false,
            seq: 0,
            sub_ids: Vec::new(),
            released: false,
            pkid: 0,
        }
    }
}

//! Messages, as the broker and its owner see them.

use std::sync::Arc;

use bytes::Bytes;

/// Quality of service: at most once or at least once.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum QoS {
    /// 0.
    AtMostOnce,
    /// 1.
    AtLeastOnce,
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
}

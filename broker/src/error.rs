//! Why a connection ended.

use edgefn_schema::topic::TopicError;

use crate::persist::PersistError;

/// Why a client's connection ended (logged; a client is told only what MQTT lets it be told).
#[derive(Debug, thiserror::Error)]
pub(crate) enum ConnError {
    #[error("connection closed")]
    Eof,
    #[error("the connection failed")]
    Io(#[source] std::io::Error),
    #[error("the client takes no data")]
    WriteTimeout,
    #[error("malformed MQTT 3.1.1 packet")]
    Malformed4(#[source] rumqttc::mqttbytes::Error),
    #[error("malformed MQTT 5 packet")]
    Malformed5(#[source] rumqttc::v5::mqttbytes::Error),
    #[error("an MQTT 3.1.1 packet could not be encoded")]
    Encode4(#[source] rumqttc::mqttbytes::Error),
    #[error("an MQTT 5 packet could not be encoded")]
    Encode5(#[source] rumqttc::v5::mqttbytes::Error),
    #[error("malformed packet length")]
    Length,
    #[error("protocol level {0} is not MQTT 3.1.1 or 5")]
    Level(u8),
    #[error("unexpected packet: {0}")]
    Unexpected(&'static str),
    #[error("protocol error: {0}")]
    Protocol(String),
    #[error("more QoS 1 and 2 messages awaiting acknowledgement than the Receive Maximum")]
    ReceiveMaximum,
    #[error("invalid topic alias: {0}")]
    TopicAlias(String),
    #[error("invalid topic `{topic}`")]
    Topic {
        topic: String,
        #[source]
        source: TopicError,
    },
    #[error("a topic that is not UTF-8")]
    TopicNotUtf8(#[source] std::string::FromUtf8Error),
    #[error("packet too large: {0}")]
    TooLarge(String),
    #[error("session taken over")]
    TakenOver,
    #[error("closed by the broker")]
    ClosedByBroker,
    #[error("keepalive expired")]
    KeepaliveExpired,
    #[error("shutting down")]
    ShuttingDown,
    #[error("could not store what the client sent")]
    Store(#[source] PersistError),
}

/// An error and its sources, for a log line: `outer: inner: innermost`.
pub(crate) fn chain(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        out.push_str(": ");
        out.push_str(&s.to_string());
        source = s.source();
    }
    out
}

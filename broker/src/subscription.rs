//! Subscriptions: a filter, its granted QoS and its MQTT 5 options, and shared subscriptions'
//! names (`$share/{group}/{filter}`, MQTT 5 §4.8.2).

use crate::message::QoS;

/// One subscription of a session.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Subscription {
    /// The filter as subscribed: a topic filter, or `$share/{group}/{filter}` for a shared
    /// subscription.
    pub filter: String,
    /// The QoS granted.
    pub qos: QoS,
    /// MQTT 5 No Local (§3.8.3.1): messages its own client publishes are not delivered to it.
    pub no_local: bool,
    /// MQTT 5 Retain As Published (§3.8.3.1): messages keep their retain flag when delivered
    /// live.
    pub retain_as_published: bool,
    /// MQTT 5 Subscription Identifier (§3.8.2.1.2), sent with each message it matches.
    pub id: Option<usize>,
}

impl Subscription {
    /// A subscription with no MQTT 5 options.
    pub fn new(filter: impl Into<String>, qos: QoS) -> Self {
        Subscription {
            filter: filter.into(),
            qos,
            no_local: false,
            retain_as_published: false,
            id: None,
        }
    }

    /// The shared subscription's group and filter, `None` for an ordinary one.
    pub(crate) fn shared(&self) -> Option<(&str, &str)> {
        shared(&self.filter)
    }

    /// The topic filter messages are matched against.
    pub(crate) fn topic_filter(&self) -> &str {
        self.shared().map_or(&self.filter, |(_, f)| f)
    }
}

/// `$share/{group}/{filter}` split into the group and the filter; `None` when `filter` is not
/// a shared subscription's (a malformed one, e.g. an empty group, is `Some` with an empty part).
pub(crate) fn shared(filter: &str) -> Option<(&str, &str)> {
    let rest = filter.strip_prefix("$share/")?;
    Some(rest.split_once('/').unwrap_or((rest, "")))
}

/// Checks a shared subscription's group name (MQTT 5 §4.8.2: at least one character, no `/`,
/// `+` or `#`) and filter.
pub(crate) fn valid_shared(group: &str, filter: &str) -> bool {
    !group.is_empty()
        && !group.contains(['+', '#'])
        && edgefn_schema::topic::validate_filter(filter).is_ok()
}

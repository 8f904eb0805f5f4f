//! The routing table every side must agree on: one manifest, and for each topic which routes
//! send it up, which bring it down, which bindings it invokes. The schema's own test checks
//! the answers of [`DesiredState::routes_to`] and [`DesiredState::triggered_by`] against it;
//! the agent (its message bus), the cloud (`POST /v1/publish`'s `unrouted`) and `edgefn test
//! --topic` run the same table through their own entry points, so that no side can drift from
//! the others.
//!
//! [`MATCHES`] is the table of bare filters and topics behind it (MQTT 3.1.1 §4.7), for
//! matchers of their own, such as the broker's subscription index.

use std::collections::BTreeMap;

use crate::resolve::DesiredState;
use crate::source::Source;

/// `(filter, topic, matches)`: how an MQTT topic filter matches topic names.
pub const MATCHES: &[(&str, &str, bool)] = &[
    ("a/b", "a/b", true),
    ("a/b", "a/b/c", false),
    ("a/b/c", "a/b", false),
    ("a/b", "a/c", false),
    ("+", "a", true),
    ("+", "a/b", false),
    ("+/+", "a/b", true),
    ("a/+/c", "a/b/c", true),
    ("a/+/c", "a/b/x/c", false),
    ("a/+", "a/", true),
    ("+/b", "/b", true),
    ("a/#", "a", true),
    ("a/#", "a/b", true),
    ("a/#", "a/b/c", true),
    ("a/#", "ab", false),
    ("#", "a", true),
    ("#", "a/b/c", true),
    ("a//b", "a//b", true),
    ("a//b", "a/b", false),
    ("sensors/+/temperature", "sensors/l1/temperature", true),
    ("sensors/+/temperature", "sensors/l1/x/temperature", false),
    ("A/b", "a/b", false),
];

/// The device whose desired state the table is about.
pub const DEVICE: &str = "gw-01";

/// The manifest of the table (functions at paths that need not exist: the table never runs
/// them).
pub const MANIFEST: &str = r##"apiVersion: edgefn/v1
project: conformance
functions:
  temp-filter: { path: functions/temp-filter, runtime: exec, handler: ["./run"], interface: stdio }
  greeter: { path: functions/greeter, runtime: exec, handler: ["./run"], interface: stdio }
  audit: { path: functions/audit, runtime: exec, handler: ["./run"], interface: stdio }
  collector: { path: functions/collector, runtime: exec, handler: ["./run"], interface: stdio }
devices:
  gw-01: { labels: { role: gateway } }
  gw-02: { labels: { role: gateway } }
bindings:
  - function: temp-filter
    devices: { labels: { role: gateway } }
    triggers: [ { topic: "sensors/+/temperature" } ]
  - function: greeter
    devices: { labels: { role: gateway } }
    triggers: [ { topic: "commands/greet" }, { topic: "greetings/+" } ]
  - function: audit
    devices: { names: [gw-01] }
    triggers: [ { topic: "#" } ]
  - name: audit-other
    function: audit
    devices: { names: [gw-02] }
    triggers: [ { topic: "commands/#" } ]
  - function: collector
    devices: { names: [gw-01] }
    mode: continuous
routes:
  - { from: "alerts/#", to: cloud }
  - { from: "greetings/+", to: cloud }
  - { from: "+/critical", to: cloud }
  - { from: "cloud:commands/#", to: local }
  - { from: "cloud:config/+/set", to: local }
  - { from: "cloud:alerts/#", to: local }
  - { from: "audit/#", to: cloud, devices: { names: [gw-02] } }
  - { from: "cloud:other/#", to: local, devices: { names: [gw-02] } }
"##;

/// One row of the table: a message on `topic`, and what [`DEVICE`] does with it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RouteCase {
    /// The device-local topic.
    pub topic: &'static str,
    /// The filters of the routes that send it up to the cloud, in manifest order.
    pub up: &'static [&'static str],
    /// The filters (without `cloud:`) of the routes that bring it down from the cloud, in
    /// manifest order.
    pub down: &'static [&'static str],
    /// The bindings it invokes when it is on the device's bus, by name, sorted.
    pub triggered: &'static [&'static str],
}

/// The table.
pub const ROUTES: &[RouteCase] = &[
    RouteCase {
        topic: "sensors/l1/temperature",
        up: &[],
        down: &[],
        triggered: &["audit", "temp-filter"],
    },
    RouteCase {
        topic: "sensors/l1/x/temperature",
        up: &[],
        down: &[],
        triggered: &["audit"],
    },
    RouteCase {
        topic: "alerts/line1",
        up: &["alerts/#"],
        down: &["alerts/#"],
        triggered: &["audit"],
    },
    RouteCase {
        topic: "alerts",
        up: &["alerts/#"],
        down: &["alerts/#"],
        triggered: &["audit"],
    },
    RouteCase {
        topic: "alerts/critical",
        up: &["alerts/#", "+/critical"],
        down: &["alerts/#"],
        triggered: &["audit"],
    },
    RouteCase {
        topic: "greetings/ada",
        up: &["greetings/+"],
        down: &[],
        triggered: &["audit", "greeter"],
    },
    RouteCase {
        topic: "greetings/ada/x",
        up: &[],
        down: &[],
        triggered: &["audit"],
    },
    RouteCase {
        topic: "commands/greet",
        up: &[],
        down: &["commands/#"],
        triggered: &["audit", "greeter"],
    },
    RouteCase {
        topic: "commands/reboot",
        up: &[],
        down: &["commands/#"],
        triggered: &["audit"],
    },
    RouteCase {
        topic: "config/a/set",
        up: &[],
        down: &["config/+/set"],
        triggered: &["audit"],
    },
    RouteCase {
        topic: "config/a/get",
        up: &[],
        down: &[],
        triggered: &["audit"],
    },
    RouteCase {
        topic: "audit/x",
        up: &[],
        down: &[],
        triggered: &["audit"],
    },
    RouteCase {
        topic: "other/x",
        up: &[],
        down: &[],
        triggered: &["audit"],
    },
];

/// [`MANIFEST`]'s desired state for [`DEVICE`], without bundles.
pub fn desired_state() -> DesiredState {
    let loaded = crate::load(&Source::new("edgefn.yaml", MANIFEST), None)
        .unwrap_or_else(|d| panic!("the conformance manifest is valid: {d:?}"));
    crate::resolve(&loaded.manifest, DEVICE, &BTreeMap::new()).expect("the device is defined")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::RouteTarget;

    #[test]
    fn the_matcher_follows_the_table() {
        for &(filter, topic, want) in MATCHES {
            assert_eq!(
                crate::topic::matches(filter, topic),
                want,
                "{filter} vs {topic}"
            );
        }
    }

    #[test]
    fn desired_states_answer_the_table() {
        let state = desired_state();
        for case in ROUTES {
            let filters = |to| {
                state
                    .routes_to(to, case.topic)
                    .map(|r| r.filter.as_str())
                    .collect::<Vec<_>>()
            };
            assert_eq!(filters(RouteTarget::Cloud), case.up, "up: {}", case.topic);
            assert_eq!(
                filters(RouteTarget::Local),
                case.down,
                "down: {}",
                case.topic
            );
            assert_eq!(state.sends_up(case.topic), !case.up.is_empty());
            assert_eq!(state.brings_down(case.topic), !case.down.is_empty());
            let triggered: Vec<&str> = state
                .triggered_by(case.topic)
                .map(|b| b.name.as_str())
                .collect();
            assert_eq!(triggered, case.triggered, "triggered: {}", case.topic);
        }
    }
}

//! Test cases for `edgefn test`: `functions/<name>/tests/*.yaml`.
//!
//! A case simulates one message arriving (or gives a raw event) and states what the function
//! should do with it:
//!
//! ```yaml
//! trigger:
//!   topic: sensors/line1/temperature     # a concrete topic: no wildcards
//!   payload: { celsius: 45 }             # any YAML value; a string stays a string
//! expect:
//!   result: { alert: true }              # equals
//!   resultContains: { alert: true }      # or: these keys (recursively) have these values
//!   error: true                          # or an error is expected: true, a substring of its
//!                                        #   message, or { type: X, message: "..." }
//!   publish:                             # messages the function publishes, in order
//!     - { topic: alerts/line1, payload: { celsius: 45 } }
//! ```

use serde_json::Value;

use crate::decode::{Cx, first_line};
use crate::diagnostic::{Code, Diagnostics};
use crate::source::Source;
use crate::topic;
use crate::yaml::{self, Node, NodeKind};

/// One test case.
#[derive(Debug, Clone, PartialEq)]
pub struct TestCase {
    /// Optional description.
    pub description: Option<String>,
    /// The binding whose settings apply (default: the function's first binding, or defaults).
    pub binding: Option<String>,
    /// The device context (default: the first device that runs the binding).
    pub device: Option<String>,
    /// What arrives.
    pub trigger: TestTrigger,
    /// What should come out.
    pub expect: Expectation,
}

/// What a test case sends to the function.
#[derive(Debug, Clone, PartialEq)]
pub enum TestTrigger {
    /// A message on the device bus.
    Message {
        /// Concrete topic.
        topic: String,
        /// Payload.
        payload: Value,
    },
    /// An event given as it is.
    Event(Value),
}

/// What a test case expects.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Expectation {
    /// The result equals this.
    pub result: Option<Value>,
    /// The result contains this (objects: these keys, recursively; else equal).
    pub result_contains: Option<Value>,
    /// An error is expected.
    pub error: Option<ErrorExpectation>,
    /// Messages the function publishes, in order (when given).
    pub publish: Option<Vec<ExpectedMessage>>,
}

/// An expected error.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct ErrorExpectation {
    /// The error's type, when given.
    pub kind: Option<String>,
    /// A substring of its message, when given.
    pub message: Option<String>,
}

/// An expected published message.
#[derive(Debug, Clone, PartialEq)]
pub struct ExpectedMessage {
    /// Its topic.
    pub topic: String,
    /// Its payload, when given.
    pub payload: Option<Value>,
}

/// Whether `actual` contains `expected`: objects by their keys, recursively; anything else by
/// equality.
pub fn contains(actual: &Value, expected: &Value) -> bool {
    match (actual, expected) {
        (Value::Object(a), Value::Object(e)) => e
            .iter()
            .all(|(k, v)| a.get(k).is_some_and(|av| contains(av, v))),
        _ => actual == expected,
    }
}

/// A YAML node as a JSON value: plain scalars keep their YAML type, quoted ones are strings.
pub fn to_json(node: &Node) -> Value {
    match &node.kind {
        _ if node.is_null() => Value::Null,
        NodeKind::Scalar { value, plain: true } => match value.as_str() {
            "true" | "True" | "TRUE" => Value::Bool(true),
            "false" | "False" | "FALSE" => Value::Bool(false),
            v => v
                .parse::<i64>()
                .map(Value::from)
                .ok()
                .or_else(|| {
                    v.parse::<f64>()
                        .ok()
                        .filter(|f| f.is_finite())
                        .and_then(serde_json::Number::from_f64)
                        .map(Value::Number)
                })
                .unwrap_or_else(|| Value::String(v.to_owned())),
        },
        NodeKind::Scalar { value, .. } => Value::String(value.clone()),
        NodeKind::Seq(items) => Value::Array(items.iter().map(to_json).collect()),
        NodeKind::Map(entries) => Value::Object(
            entries
                .iter()
                .map(|(k, v)| (k.as_str().unwrap_or_default().to_owned(), to_json(v)))
                .collect(),
        ),
    }
}

/// Parses a test case file, reporting every problem.
pub fn load_test_case(source: &Source) -> Result<TestCase, Diagnostics> {
    let mut cx = Cx::new(source);
    let (root, diags) = yaml::parse(source);
    cx.diags.extend(diags);
    let case = root.as_ref().and_then(|root| decode(&mut cx, root));
    match case {
        Some(case) if !cx.diags.has_errors() => Ok(case),
        _ => Err(cx.diags),
    }
}

fn decode(cx: &mut Cx<'_>, root: &Node) -> Option<TestCase> {
    let anchor = crate::source::Span::new(0, 0);
    let obj = cx.object(
        root,
        "the test case",
        &[
            "description",
            "binding",
            "device",
            "trigger",
            "event",
            "expect",
        ],
        &["expect"],
        anchor,
    )?;
    let description = obj
        .get("description")
        .and_then(|n| cx.string(n, "`description`", "`a hot reading`"));
    let binding = obj
        .get("binding")
        .and_then(|n| cx.string(n, "`binding`", "`temp-filter`"));
    let device = obj
        .get("device")
        .and_then(|n| cx.string(n, "`device`", "`gw-01`"));
    let trigger = match (obj.get("trigger"), obj.get("event")) {
        (Some(t), None) => {
            let tobj = cx.object(
                t,
                "the trigger",
                &["topic", "payload"],
                &["topic"],
                first_line(cx.source, t.span),
            )?;
            let topic_node = tobj.get("topic")?;
            let topic_text = cx.string(
                topic_node,
                "the trigger topic",
                "`sensors/line1/temperature`",
            )?;
            if let Err(e) = topic::validate_topic(&topic_text) {
                let code = if e.wildcard {
                    Code::WildcardNotAllowed
                } else {
                    Code::InvalidTopic
                };
                cx.emit(
                    cx.error(
                        code,
                        topic_node.span,
                        format!("invalid trigger topic `{topic_text}`: {}", e.message),
                    )
                    .label(e.message.clone())
                    .help(e.help),
                );
                return None;
            }
            TestTrigger::Message {
                topic: topic_text,
                payload: tobj.get_raw("payload").map_or(Value::Null, to_json),
            }
        }
        (None, Some(e)) => TestTrigger::Event(to_json(e)),
        _ => {
            cx.emit(
                cx.error(Code::InvalidTestCase, first_line(cx.source, root.span), "a test case needs exactly one of `trigger` or `event`")
                    .label("here")
                    .help("simulate a message with `trigger: { topic: a/b, payload: {...} }`, or give a raw `event:`"),
            );
            return None;
        }
    };
    let expect_node = obj.get("expect")?;
    let eobj = cx.object(
        expect_node,
        "`expect`",
        &["result", "resultContains", "error", "publish"],
        &[],
        first_line(cx.source, expect_node.span),
    )?;
    let mut expect = Expectation {
        result: eobj.get_raw("result").map(to_json),
        result_contains: eobj.get_raw("resultContains").map(to_json),
        ..Expectation::default()
    };
    if let Some(e) = eobj.get("error") {
        expect.error = match &e.kind {
            NodeKind::Scalar { value, plain: true } if value == "true" => {
                Some(ErrorExpectation::default())
            }
            NodeKind::Scalar { value, plain: true } if value == "false" => None,
            NodeKind::Scalar { value, .. } => Some(ErrorExpectation {
                kind: None,
                message: Some(value.clone()),
            }),
            NodeKind::Map(_) => {
                let o = cx.object(
                    e,
                    "the expected error",
                    &["type", "message"],
                    &[],
                    first_line(cx.source, e.span),
                )?;
                Some(ErrorExpectation {
                    kind: o
                        .get("type")
                        .and_then(|n| cx.string(n, "the error type", "`TimeoutError`")),
                    message: o
                        .get("message")
                        .and_then(|n| cx.string(n, "the error message", "`too hot`")),
                })
            }
            NodeKind::Seq(_) => {
                cx.emit(
                    cx.error(Code::WrongType, first_line(cx.source, e.span), "expected `true`, a message, or `{ type, message }` for `error`")
                        .label("a list")
                        .help("write `error: true`, `error: \"substring of the message\"`, or `error: { type: ValueError }`"),
                );
                return None;
            }
        };
    }
    if expect.error.is_some() && (expect.result.is_some() || expect.result_contains.is_some()) {
        cx.emit(
            cx.error(Code::InvalidTestCase, first_line(cx.source, expect_node.span), "a test case expects both an error and a result")
                .label("pick one")
                .help("an invocation either returns a result or fails: keep `error`, or `result`/`resultContains`"),
        );
    }
    if let Some(p) = eobj.get_raw("publish") {
        let mut msgs = Vec::new();
        for item in cx.seq(p, "`publish`", "`publish: [ { topic: alerts/x } ]`")? {
            let o = cx.object(
                item,
                "an expected message",
                &["topic", "payload"],
                &["topic"],
                first_line(cx.source, item.span),
            )?;
            let t = o.get("topic")?;
            let topic_text = cx.string(t, "the topic of an expected message", "`alerts/line1`")?;
            if let Err(e) = topic::validate_topic(&topic_text) {
                let code = if e.wildcard {
                    Code::WildcardNotAllowed
                } else {
                    Code::InvalidTopic
                };
                cx.emit(
                    cx.error(
                        code,
                        t.span,
                        format!("invalid topic `{topic_text}`: {}", e.message),
                    )
                    .label(e.message.clone())
                    .help(e.help),
                );
                continue;
            }
            msgs.push(ExpectedMessage {
                topic: topic_text,
                payload: o.get_raw("payload").map(to_json),
            });
        }
        expect.publish = Some(msgs);
    }
    if expect == Expectation::default() {
        cx.emit(
            cx.error(
                Code::InvalidTestCase,
                first_line(cx.source, expect_node.span),
                "`expect` says nothing to check",
            )
            .label("empty")
            .help("add `result`, `resultContains`, `error` or `publish`"),
        );
    }
    Some(TestCase {
        description,
        binding,
        device,
        trigger,
        expect,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn load(text: &str) -> Result<TestCase, Diagnostics> {
        load_test_case(&Source::new("t.yaml", text))
    }

    #[test]
    fn a_full_case() {
        let c = load("trigger:\n  topic: s/l1/t\n  payload: { celsius: 45.5, ok: true, name: \"x\", n: 3 }\nexpect:\n  resultContains: { alert: true }\n  publish:\n    - topic: alerts/l1\n").unwrap();
        let TestTrigger::Message { topic, payload } = &c.trigger else {
            panic!()
        };
        assert_eq!(topic, "s/l1/t");
        assert_eq!(
            payload,
            &serde_json::json!({"celsius": 45.5, "ok": true, "name": "x", "n": 3})
        );
        assert_eq!(c.expect.publish.unwrap()[0].topic, "alerts/l1");
    }

    #[test]
    fn wildcard_trigger_topic_is_refused_where_it_is() {
        let d = load("trigger:\n  topic: sensors/+/t\nexpect:\n  error: true\n").unwrap_err();
        assert_eq!(d.0[0].code, Code::WildcardNotAllowed);
        assert_eq!((d.0[0].location().line, d.0[0].location().column), (2, 10));
    }

    #[test]
    fn problems() {
        assert_eq!(
            load("expect: {}\n").unwrap_err().0[0].code,
            Code::InvalidTestCase
        );
        assert_eq!(
            load("trigger: { topic: a }\nexpect: {}\n").unwrap_err().0[0].code,
            Code::InvalidTestCase
        );
        assert_eq!(
            load("trigger: { topic: a }\nexpect: { reslt: 1 }\n")
                .unwrap_err()
                .0[0]
                .code,
            Code::UnknownKey
        );
    }

    #[test]
    fn containment() {
        let a = serde_json::json!({"a": 1, "b": {"c": 2, "d": 3}});
        assert!(contains(&a, &serde_json::json!({"b": {"c": 2}})));
        assert!(!contains(&a, &serde_json::json!({"b": {"c": 3}})));
        assert!(!contains(&a, &serde_json::json!({"z": 1})));
    }
}

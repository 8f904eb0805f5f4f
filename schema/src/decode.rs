//! Decoding the YAML tree into typed values, collecting every problem with its position.
//!
//! [`Cx`] is a small toolkit (mapping with known keys, string, number in range, quantity,
//! choice...) that records a diagnostic and returns `None` instead of stopping, so one run
//! reports all the problems of a file. The manifest-specific walk is in [`crate::load`](mod@crate::load).

use std::collections::{BTreeMap, HashMap};
use std::str::FromStr;

use crate::diagnostic::{Code, Diagnostic, Diagnostics, did_you_mean};
use crate::quantity::QuantityError;
use crate::source::{Source, Span};
use crate::yaml::{Node, NodeKind};

/// Spans of decoded values, by path (`functions.temp-filter.memory`, `bindings[0].function`).
#[derive(Debug, Clone, Default)]
pub(crate) struct Locations {
    spans: HashMap<String, Span>,
}

impl Locations {
    /// Records where the value at `path` is.
    pub(crate) fn record(&mut self, path: impl Into<String>, span: Span) {
        self.spans.insert(path.into(), span);
    }

    /// Where the value at `path` is, if recorded.
    pub(crate) fn get(&self, path: &str) -> Option<Span> {
        self.spans.get(path).copied()
    }
}

/// The first line of a span: a readable place to point at a whole mapping.
pub(crate) fn first_line(source: &Source, span: Span) -> Span {
    let text =
        &source.text()[span.offset.min(source.text().len())..span.end().min(source.text().len())];
    let len = text.find('\n').unwrap_or(text.len());
    Span::new(span.offset, len.max(usize::from(span.len > 0)))
}

/// A mapping whose keys have been checked against the keys it may have.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Obj<'n> {
    node: &'n Node,
}

impl<'n> Obj<'n> {
    /// The value under `key`, when present and not null.
    pub(crate) fn get(&self, key: &str) -> Option<&'n Node> {
        self.node.get(key).filter(|n| !n.is_null())
    }

    /// The value under `key`, even if null.
    pub(crate) fn get_raw(&self, key: &str) -> Option<&'n Node> {
        self.node.get(key)
    }

    /// The mapping node itself.
    pub(crate) fn node(&self) -> &'n Node {
        self.node
    }
}

/// Decoding context: the source, the diagnostics found so far and the locations recorded.
#[derive(Debug)]
pub(crate) struct Cx<'s> {
    /// The file being decoded.
    pub source: &'s Source,
    /// Problems found.
    pub diags: Diagnostics,
    /// Where things are.
    pub locs: Locations,
    /// Names referred to (e.g. functions named by bindings), even from parts that failed to
    /// decode, so that a broken binding does not make its function look unused.
    pub referenced: std::collections::BTreeSet<String>,
}

impl<'s> Cx<'s> {
    /// A fresh context for `source`.
    pub(crate) fn new(source: &'s Source) -> Self {
        Self {
            source,
            diags: Diagnostics::default(),
            locs: Locations::default(),
            referenced: std::collections::BTreeSet::new(),
        }
    }

    /// An error at `span`, to finish with `.label()`/`.help()` and [`Cx::emit`].
    pub(crate) fn error(&self, code: Code, span: Span, message: impl Into<String>) -> Diagnostic {
        Diagnostic::error(self.source, code, span, message)
    }

    /// A warning at `span`, to finish and [`Cx::emit`].
    pub(crate) fn warning(&self, code: Code, span: Span, message: impl Into<String>) -> Diagnostic {
        Diagnostic::warning(self.source, code, span, message)
    }

    /// Records a diagnostic.
    pub(crate) fn emit(&mut self, d: Diagnostic) {
        self.diags.push(d);
    }

    fn wrong_type(&mut self, node: &Node, expected: &str, what: &str, example: &str) {
        let found = node.type_name();
        let span = if node.span.len == 0 {
            node.span
        } else {
            first_line(self.source, node.span)
        };
        self.emit(
            self.error(
                Code::WrongType,
                span,
                format!("expected {expected} for {what}, found {found}"),
            )
            .label(format!("this is {found}"))
            .help(format!("write {what} as {expected}, e.g. {example}")),
        );
    }

    /// Checks that `node` is a mapping with only `keys` (reporting unknown keys, with a
    /// suggestion) and all of `required` (reported at `anchor`).
    pub(crate) fn object<'n>(
        &mut self,
        node: &'n Node,
        what: &str,
        keys: &[&str],
        required: &[&str],
        anchor: Span,
    ) -> Option<Obj<'n>> {
        let NodeKind::Map(entries) = &node.kind else {
            self.wrong_type(
                node,
                "a mapping",
                what,
                &format!("`{}: ...`", keys.first().copied().unwrap_or("key")),
            );
            return None;
        };
        for (k, _) in entries {
            match k.as_str() {
                Some(key) if keys.contains(&key) => {}
                Some(key) => {
                    let suggestion = did_you_mean(key, keys.iter().copied());
                    self.emit(
                        self.error(
                            Code::UnknownKey,
                            k.span,
                            format!("unknown key `{key}` in {what}"),
                        )
                        .label(match suggestion {
                            Some(s) => format!("did you mean `{s}`?"),
                            None => "not a known key".to_owned(),
                        })
                        .help(format!("{what} may have {}", list(keys))),
                    );
                }
                None => self.wrong_type(k, "a string", &format!("a key of {what}"), "`name:`"),
            }
        }
        for key in required {
            if node.get(key).is_none_or(Node::is_null) {
                let present = node.entry(key);
                let span = present.map_or(anchor, |(k, _)| k.span);
                self.emit(
                    self.error(Code::MissingKey, span, format!("{what} has no `{key}`"))
                        .label(format!("`{key}` is required here"))
                        .help(format!("add `{key}:` to {what}")),
                );
            }
        }
        Some(Obj { node })
    }

    /// A mapping with arbitrary keys (names of functions, devices, labels).
    pub(crate) fn named_map<'n>(
        &mut self,
        node: &'n Node,
        what: &str,
        example: &str,
    ) -> Option<&'n [(Node, Node)]> {
        if node.is_null() {
            return Some(&[]);
        }
        match &node.kind {
            NodeKind::Map(entries) => Some(entries),
            _ => {
                self.wrong_type(node, "a mapping", what, example);
                None
            }
        }
    }

    /// A sequence.
    pub(crate) fn seq<'n>(
        &mut self,
        node: &'n Node,
        what: &str,
        example: &str,
    ) -> Option<&'n [Node]> {
        if node.is_null() {
            return Some(&[]);
        }
        match &node.kind {
            NodeKind::Seq(items) => Some(items),
            _ => {
                self.wrong_type(node, "a list", what, example);
                None
            }
        }
    }

    /// Any scalar, as text.
    pub(crate) fn string(&mut self, node: &Node, what: &str, example: &str) -> Option<String> {
        match node.as_str() {
            Some(s) => Some(s.to_owned()),
            None => {
                self.wrong_type(node, "a string", what, example);
                None
            }
        }
    }

    /// A whole number within `min..=max`.
    pub(crate) fn number(&mut self, node: &Node, what: &str, min: u32, max: u32) -> Option<u32> {
        let text = match &node.kind {
            NodeKind::Scalar { value, plain: true } if !node.is_null() => value,
            _ => {
                self.wrong_type(node, "a whole number", what, &format!("`{min}`"));
                return None;
            }
        };
        match text.parse::<i64>() {
            Ok(n) if n >= i64::from(min) && n <= i64::from(max) => u32::try_from(n).ok(),
            Ok(n) => {
                self.emit(
                    self.error(
                        Code::OutOfRange,
                        node.span,
                        format!("{what} is {n}, outside {min}..={max}"),
                    )
                    .label("out of range")
                    .help(format!("use a value from {min} to {max}")),
                );
                None
            }
            Err(_) => {
                self.wrong_type(node, "a whole number", what, &format!("`{min}`"));
                None
            }
        }
    }

    /// A quantity (memory, cpu, duration) within `min..=max`.
    pub(crate) fn quantity<T>(&mut self, node: &Node, what: &str, min: T, max: T) -> Option<T>
    where
        T: FromStr<Err = QuantityError> + PartialOrd + std::fmt::Display,
    {
        let text = match &node.kind {
            NodeKind::Scalar { value, .. } if !node.is_null() => value,
            _ => {
                self.wrong_type(node, "a quantity", what, &format!("`{max}`"));
                return None;
            }
        };
        match text.parse::<T>() {
            Ok(v) if v >= min && v <= max => Some(v),
            Ok(v) => {
                let bound = if v < min {
                    format!("below the minimum `{min}`")
                } else {
                    format!("above the maximum `{max}`")
                };
                self.emit(
                    self.error(
                        Code::OutOfRange,
                        node.span,
                        format!("{what} `{text}` is {bound}"),
                    )
                    .label("out of range")
                    .help(format!("use a value from `{min}` to `{max}`")),
                );
                None
            }
            Err(e) => {
                self.emit(
                    self.error(
                        Code::InvalidQuantity,
                        node.span,
                        format!("invalid {what}: {}", e.message),
                    )
                    .label("not a valid quantity")
                    .help(e.help),
                );
                None
            }
        }
    }

    /// One of `choices`.
    pub(crate) fn choice<'c>(
        &mut self,
        node: &Node,
        what: &str,
        choices: &[&'c str],
    ) -> Option<&'c str> {
        let text = self.string(node, what, &format!("`{}`", choices[0]))?;
        if let Some(c) = choices.iter().find(|c| **c == text) {
            return Some(c);
        }
        let suggestion = did_you_mean(&text, choices.iter().copied());
        self.emit(
            self.error(
                Code::InvalidValue,
                node.span,
                format!("`{text}` is not a valid {what}"),
            )
            .label(match suggestion {
                Some(s) => format!("did you mean `{s}`?"),
                None => format!("expected one of {}", list(choices)),
            })
            .help(format!("{what} is one of {}", list(choices))),
        );
        None
    }

    /// A mapping of strings to strings (env, labels). Scalars of any YAML type are taken as
    /// their text, so `PORT: 8080` means `"8080"`.
    pub(crate) fn string_map(
        &mut self,
        node: &Node,
        what: &str,
        path: &str,
    ) -> BTreeMap<String, String> {
        let mut out = BTreeMap::new();
        let Some(entries) = self.named_map(node, what, "`{ KEY: value }`") else {
            return out;
        };
        for (k, v) in entries {
            let Some(key) = self.string(k, &format!("a key of {what}"), "`KEY`") else {
                continue;
            };
            if let Some(value) = self.string(v, &format!("`{key}` in {what}"), "`\"value\"`") {
                self.locs.record(format!("{path}.{key}"), v.span);
                out.insert(key, value);
            }
        }
        out
    }
}

/// `a`, `b` or `c` with backticks.
pub(crate) fn list(items: &[&str]) -> String {
    let quoted: Vec<String> = items.iter().map(|i| format!("`{i}`")).collect();
    match quoted.len() {
        0 => String::new(),
        1 => quoted[0].clone(),
        n => format!("{} or {}", quoted[..n - 1].join(", "), quoted[n - 1]),
    }
}

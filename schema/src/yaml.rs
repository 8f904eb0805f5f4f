//! A YAML tree that remembers where every node came from.
//!
//! serde-based YAML loaders stop at the first error and forget positions. edgefn wants every
//! problem of a file in one run, each pointing at its line and column, so it loads the document
//! into this small [`Node`] tree (built from saphyr-parser's spanned events) and decodes the tree
//! by hand in [`crate::decode`].

use std::collections::HashMap;

use saphyr_parser::{Event, Parser, ScalarStyle};

use crate::diagnostic::{Code, Diagnostic, Diagnostics};
use crate::source::{Source, Span};

/// One YAML node and its span in the source.
#[derive(Debug, Clone, PartialEq)]
pub struct Node {
    /// What the node is.
    pub kind: NodeKind,
    /// Where it is.
    pub span: Span,
}

/// The shape of a [`Node`].
#[derive(Debug, Clone, PartialEq)]
pub enum NodeKind {
    /// A scalar; `plain` is false for quoted and block scalars, which are always strings.
    Scalar {
        /// The scalar's text, after YAML unescaping.
        value: String,
        /// Unquoted, so `null`, `true` and `12` keep their YAML meaning.
        plain: bool,
    },
    /// A sequence.
    Seq(Vec<Node>),
    /// A mapping, in source order.
    Map(Vec<(Node, Node)>),
}

impl Node {
    /// True for an empty value, `~` or `null`.
    pub fn is_null(&self) -> bool {
        matches!(&self.kind, NodeKind::Scalar { value, plain: true }
            if matches!(value.as_str(), "" | "~" | "null" | "Null" | "NULL"))
    }

    /// A word for the node's YAML type, for "expected X, found Y" messages.
    pub fn type_name(&self) -> &'static str {
        match &self.kind {
            _ if self.is_null() => "nothing",
            NodeKind::Scalar { value, plain: true } => {
                if matches!(value.as_str(), "true" | "false" | "True" | "False") {
                    "a boolean"
                } else if value.parse::<f64>().is_ok() {
                    "a number"
                } else {
                    "a string"
                }
            }
            NodeKind::Scalar { .. } => "a string",
            NodeKind::Seq(_) => "a list",
            NodeKind::Map(_) => "a mapping",
        }
    }

    /// The scalar text, if this is a non-null scalar.
    pub fn as_str(&self) -> Option<&str> {
        match &self.kind {
            NodeKind::Scalar { value, .. } if !self.is_null() => Some(value),
            _ => None,
        }
    }

    /// The value under `key`, if this is a mapping that has it.
    pub fn get(&self, key: &str) -> Option<&Node> {
        match &self.kind {
            NodeKind::Map(entries) => entries
                .iter()
                .find(|(k, _)| k.as_str() == Some(key))
                .map(|(_, v)| v),
            _ => None,
        }
    }

    /// The entry (key node and value node) under `key`.
    pub fn entry(&self, key: &str) -> Option<(&Node, &Node)> {
        match &self.kind {
            NodeKind::Map(entries) => entries
                .iter()
                .find(|(k, _)| k.as_str() == Some(key))
                .map(|(k, v)| (k, v)),
            _ => None,
        }
    }
}

/// Parses `source` as a single YAML document.
///
/// Returns the root node (an empty file gives a null scalar) and the problems found on the way:
/// a syntax error (after which there is no tree), duplicate keys, several documents.
pub fn parse(source: &Source) -> (Option<Node>, Diagnostics) {
    let text = source.text();
    let offsets = CharOffsets::new(text);
    let mut diags = Diagnostics::default();
    let mut builder = Builder::default();
    let mut documents = 0usize;

    for event in Parser::new_from_str(text) {
        let (event, span) = match event {
            Ok(ok) => ok,
            Err(err) => {
                let at = offsets.byte(err.marker().index());
                let len = text[at..].chars().next().map_or(0, char::len_utf8);
                diags.push(
                    Diagnostic::error(
                        source,
                        Code::YamlSyntax,
                        Span::new(at, len),
                        format!("invalid YAML: {}", err.info()),
                    )
                    .label("here")
                    .help(
                        "check the indentation (spaces, not tabs) and the quoting around this \
                         point; values containing `: ` or starting with `{`, `[`, `*` or `&` \
                         need quotes",
                    ),
                );
                return (None, diags);
            }
        };
        let span = Span::new(
            offsets.byte(span.start.index()),
            offsets.byte(span.end.index()) - offsets.byte(span.start.index()),
        );
        match event {
            Event::DocumentStart(_) => {
                documents += 1;
                if documents > 1 {
                    diags.push(
                        Diagnostic::error(
                            source,
                            Code::YamlSyntax,
                            Span::new(span.offset, span.len.max(3)),
                            "a second YAML document in one file",
                        )
                        .label("the second document starts here")
                        .help("edgefn reads one document per file: remove this `---` and what follows, or merge it into the first"),
                    );
                    return (None, diags);
                }
            }
            Event::Scalar(value, style, anchor, _tag) => {
                let node = Node {
                    kind: NodeKind::Scalar {
                        value: value.into_owned(),
                        plain: style == ScalarStyle::Plain,
                    },
                    span,
                };
                builder.add(node, anchor, source, &mut diags);
            }
            Event::Alias(anchor) => {
                let node = builder.anchors.get(&anchor).cloned().unwrap_or(Node {
                    kind: NodeKind::Scalar {
                        value: String::new(),
                        plain: true,
                    },
                    span,
                });
                builder.add(node, 0, source, &mut diags);
            }
            Event::SequenceStart(anchor, _) => builder.open(Open::Seq(Vec::new()), span, anchor),
            Event::MappingStart(anchor, _) => {
                builder.open(Open::Map(Vec::new(), None, HashMap::new()), span, anchor)
            }
            Event::SequenceEnd | Event::MappingEnd => builder.close(span, source, &mut diags),
            Event::StreamStart | Event::StreamEnd | Event::DocumentEnd | Event::Nothing => {}
        }
    }
    let root = builder.root.unwrap_or(Node {
        kind: NodeKind::Scalar {
            value: String::new(),
            plain: true,
        },
        span: Span::new(0, 0),
    });
    (Some(root), diags)
}

/// Maps saphyr's character indexes to byte offsets.
struct CharOffsets {
    /// Byte offset of each character, plus the end; empty when the text is ASCII.
    table: Vec<usize>,
    len: usize,
}

impl CharOffsets {
    fn new(text: &str) -> Self {
        let table = if text.is_ascii() {
            Vec::new()
        } else {
            text.char_indices()
                .map(|(i, _)| i)
                .chain(std::iter::once(text.len()))
                .collect()
        };
        Self {
            table,
            len: text.len(),
        }
    }

    fn byte(&self, char_index: usize) -> usize {
        if self.table.is_empty() {
            char_index.min(self.len)
        } else {
            self.table.get(char_index).copied().unwrap_or(self.len)
        }
    }
}

enum Open {
    Seq(Vec<Node>),
    /// Entries so far, a key waiting for its value, and the keys seen (to find duplicates
    /// without a quadratic scan of large mappings).
    Map(Vec<(Node, Node)>, Option<Node>, HashMap<String, usize>),
}

#[derive(Default)]
struct Builder {
    stack: Vec<(Open, Span, usize)>,
    root: Option<Node>,
    anchors: HashMap<usize, Node>,
}

impl Builder {
    fn open(&mut self, open: Open, span: Span, anchor: usize) {
        self.stack.push((open, span, anchor));
    }

    fn close(&mut self, end: Span, source: &Source, diags: &mut Diagnostics) {
        let Some((open, start, anchor)) = self.stack.pop() else {
            return;
        };
        let (kind, last_end) = match open {
            Open::Seq(items) => {
                let last = items.last().map(|n| n.span.end());
                (NodeKind::Seq(items), last)
            }
            Open::Map(entries, _, _) => {
                let last = entries.last().map(|(k, v)| k.span.end().max(v.span.end()));
                (NodeKind::Map(entries), last)
            }
        };
        // Flow collections end at their closing bracket; block ones at their last child (the end
        // event of a block collection sits at the start of whatever follows it).
        let flow = source.text()[start.offset..].starts_with(['[', '{']);
        let end = if flow {
            // The end event may reach past the bracket (to the next token): end at the bracket.
            let text = source.text();
            let limit = end.end().min(text.len());
            text[..limit]
                .rfind([']', '}'])
                .filter(|i| *i >= start.offset)
                .map_or(limit, |i| i + 1)
        } else {
            last_end.unwrap_or(start.end())
        };
        let span = Span::new(start.offset, end.saturating_sub(start.offset));
        self.add(Node { kind, span }, anchor, source, diags);
    }

    fn add(&mut self, node: Node, anchor: usize, source: &Source, diags: &mut Diagnostics) {
        if anchor != 0 {
            self.anchors.insert(anchor, node.clone());
        }
        match self.stack.last_mut() {
            None => self.root = Some(node),
            Some((Open::Seq(items), _, _)) => items.push(node),
            Some((Open::Map(entries, pending, seen), _, _)) => match pending.take() {
                None => *pending = Some(node),
                Some(key) => {
                    if let Some(name) = key.as_str() {
                        if let Some((first, _)) = seen.get(name).map(|i| &entries[*i]) {
                            diags.push(
                                Diagnostic::error(
                                    source,
                                    Code::DuplicateKey,
                                    key.span,
                                    format!("`{name}` is defined twice in the same mapping"),
                                )
                                .label("defined again here")
                                .with_label(first.span, "first defined here")
                                .help(format!(
                                    "keys are unique within a mapping: rename or remove one of the two `{name}`"
                                )),
                            );
                            return;
                        }
                        seen.insert(name.to_owned(), entries.len());
                    }
                    entries.push((key, node));
                }
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn load(text: &str) -> (Option<Node>, Diagnostics) {
        parse(&Source::new("t.yaml", text))
    }

    #[test]
    fn spans_point_at_scalars() {
        let text = "a: 1\nb:\n  c: [x, \"y\"]\n";
        let (root, diags) = load(text);
        assert!(diags.is_empty());
        let root = root.unwrap();
        let c = root.get("b").unwrap().get("c").unwrap();
        let NodeKind::Seq(items) = &c.kind else {
            panic!("not a seq")
        };
        assert_eq!(&text[items[0].span.offset..items[0].span.end()], "x");
        assert_eq!(&text[c.span.offset..c.span.end()], "[x, \"y\"]");
        let (root, _) = load("a: { b: { c: 1 } , d: 2 }\n");
        let b = root.unwrap().get("a").unwrap().get("b").unwrap().span;
        assert_eq!(b.len, "{ c: 1 }".len());
    }

    #[test]
    fn non_ascii_offsets_are_bytes() {
        let text = "name: \"héllo wörld\"\nnext: v\n";
        let (root, _) = load(text);
        let v = root.unwrap().get("next").unwrap().span;
        assert_eq!(&text[v.offset..v.end()], "v");
    }

    #[test]
    fn duplicate_keys_are_reported_with_both_places() {
        let (_, diags) = load("a: 1\nb: 2\na: 3\n");
        assert_eq!(diags.len(), 1);
        let d = &diags.0[0];
        assert_eq!(d.code, Code::DuplicateKey);
        assert_eq!(d.location().line, 3);
        assert_eq!(d.labels.len(), 2);
    }

    #[test]
    fn syntax_error_has_position() {
        let (root, diags) = load("a: [1, 2\nb: 3\n");
        assert!(root.is_none());
        assert_eq!(diags.0[0].code, Code::YamlSyntax);
    }

    #[test]
    fn aliases_resolve() {
        let (root, diags) = load("a: &x {k: v}\nb: *x\n");
        assert!(diags.is_empty());
        assert_eq!(
            root.unwrap().get("b").unwrap().get("k").unwrap().as_str(),
            Some("v")
        );
    }
}

//! A YAML tree that remembers where every node came from.
//!
//! serde-based YAML loaders stop at the first error and forget positions. edgefn wants every
//! problem of a file in one run, each pointing at its line and column, so it loads the document
//! into this small [`Node`] tree (built from saphyr-parser's spanned events) and decodes the tree
//! by hand (the crate's decoder, behind [`crate::load()`]).
//!
//! Every file edgefn reads as YAML (the manifest, test cases, the agent's configuration) comes
//! through [`parse`], which bounds what a small input can cost: aliases may copy at most
//! [`expansion_budget`] of the input's length (an "alias bomb" of nine nested levels of nine
//! aliases is 716 bytes and would expand to 387 million nodes), and collections nest at most
//! [`MAX_DEPTH`] deep (the code that walks and drops trees is recursive).

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

/// Deepest nesting of collections [`parse`] accepts. It is below serde_json's limit of 128, so
/// every document accepted here survives a trip through JSON (test-case payloads, the agent's
/// configuration), and far below what would exhaust a thread's stack in the recursive code that
/// decodes, converts, compares and drops trees.
pub const MAX_DEPTH: usize = 100;

/// The least [`expansion_budget`], in bytes: ample for any hand-written use of anchors.
pub const MIN_EXPANSION_BYTES: usize = 16 << 20;

/// How many bytes of copies each byte of input may produce through aliases, above
/// [`MIN_EXPANSION_BYTES`].
pub const EXPANSION_PER_INPUT_BYTE: usize = 16;

/// What aliases may copy while parsing a document of `input_len` bytes, in bytes of tree
/// (each node counts its in-memory size, a scalar also its text):
/// `max(MIN_EXPANSION_BYTES, EXPANSION_PER_INPUT_BYTE × input_len)`.
pub fn expansion_budget(input_len: usize) -> usize {
    MIN_EXPANSION_BYTES.max(input_len.saturating_mul(EXPANSION_PER_INPUT_BYTE))
}

/// What one node costs against the expansion budget, before its text and children.
const NODE_COST: usize = std::mem::size_of::<Node>();

/// Parses `source` as a single YAML document.
///
/// Returns the root node (an empty file gives a null scalar) and the problems found on the way:
/// a syntax error, aliases expanding past [`expansion_budget`] or nesting deeper than
/// [`MAX_DEPTH`] (after any of which there is no tree), duplicate keys, several documents.
pub fn parse(source: &Source) -> (Option<Node>, Diagnostics) {
    let text = source.text();
    let offsets = CharOffsets::new(text);
    let mut diags = Diagnostics::default();
    let mut builder = Builder::new(expansion_budget(text.len()));
    let mut documents = 0usize;

    for event in Parser::new_from_str(text) {
        let (event, span) = match event {
            Ok(ok) => ok,
            Err(err) => {
                let at = offsets.byte(err.marker().index());
                let len = text[at..].chars().next().map_or(0, char::len_utf8);
                if err.info() == "recursion limit exceeded" {
                    // saphyr's scanner reads ahead and stops flow nesting at 256 levels, which
                    // it may reach before the parser hands over level 101.
                    diags.push(nesting_error(source, Span::new(at, len.max(1))));
                    return (None, diags);
                }
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
                let cost = NODE_COST + value.len();
                let node = Node {
                    kind: NodeKind::Scalar {
                        value: value.into_owned(),
                        plain: style == ScalarStyle::Plain,
                    },
                    span,
                };
                if let Err(stop) = builder.add(node, cost, anchor, source, &mut diags) {
                    diags.push(*stop);
                    return (None, diags);
                }
            }
            Event::Alias(anchor) => {
                let cost = builder.anchors.get(&anchor).map(|(_, cost)| *cost);
                let (node, cost) = match cost {
                    Some(cost) => {
                        // Count the copy before making it.
                        if !builder.charge(cost) {
                            diags.push(expansion_error(source, span, builder.budget, true));
                            return (None, diags);
                        }
                        (builder.anchors[&anchor].0.clone(), cost)
                    }
                    None => (
                        Node {
                            kind: NodeKind::Scalar {
                                value: String::new(),
                                plain: true,
                            },
                            span,
                        },
                        NODE_COST,
                    ),
                };
                if let Err(stop) = builder.add(node, cost, 0, source, &mut diags) {
                    diags.push(*stop);
                    return (None, diags);
                }
            }
            Event::SequenceStart(anchor, _) | Event::MappingStart(anchor, _) => {
                if builder.stack.len() >= MAX_DEPTH {
                    diags.push(nesting_error(
                        source,
                        Span::new(span.offset, span.len.max(1)),
                    ));
                    return (None, diags);
                }
                let open = if matches!(event, Event::SequenceStart(..)) {
                    Open::Seq(Vec::new())
                } else {
                    Open::Map(Vec::new(), None, HashMap::new())
                };
                builder.open(open, span, anchor);
            }
            Event::SequenceEnd | Event::MappingEnd => {
                if let Err(stop) = builder.close(span, source, &mut diags) {
                    diags.push(*stop);
                    return (None, diags);
                }
            }
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

/// The diagnostic for a collection nested past [`MAX_DEPTH`].
fn nesting_error(source: &Source, at: Span) -> Diagnostic {
    Diagnostic::error(
        source,
        Code::NestingDepth,
        at,
        format!("lists and mappings nested more than {MAX_DEPTH} deep"),
    )
    .label("too deep here")
    .help(format!(
        "edgefn reads YAML nested at most {MAX_DEPTH} levels deep: flatten this part of the \
         document"
    ))
}

/// The diagnostic for an alias (`alias`) or an anchored value whose copy would pass the
/// expansion budget.
fn expansion_error(source: &Source, at: Span, budget: usize, alias: bool) -> Diagnostic {
    let text = source.text();
    let limit = format!(
        "aliases may copy at most {} MiB into a file of {} bytes",
        budget >> 20,
        text.len()
    );
    let help = "each alias (`*name`) copies its anchor's whole value, and aliases of values \
                that contain aliases multiply: write the repeated values out, or anchor smaller \
                pieces";
    if alias {
        let shown = text
            .get(at.offset..at.end())
            .filter(|t| !t.is_empty() && t.len() <= 64)
            .map_or_else(|| "this alias".to_owned(), |t| format!("`{}`", t.trim()));
        Diagnostic::error(
            source,
            Code::AliasExpansion,
            Span::new(at.offset, at.len.max(1)),
            format!("{shown} expands the document past its limit: {limit}"),
        )
        .label("the expansion passes the limit here")
        .help(help)
    } else {
        // Point at the first line of the value, not all of it.
        let first_line = text
            .get(at.offset..at.end())
            .and_then(|t| t.find('\n'))
            .unwrap_or(at.len);
        Diagnostic::error(
            source,
            Code::AliasExpansion,
            Span::new(at.offset, first_line.max(1)),
            format!("the copy kept of this anchored value passes the document's limit: {limit}"),
        )
        .label("anchored here")
        .help(help)
    }
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

/// A collection being built.
struct Frame {
    open: Open,
    /// Its start event.
    start: Span,
    /// Its anchor id, 0 for none.
    anchor: usize,
    /// The cost of its children so far (see [`NODE_COST`]).
    cost: usize,
}

struct Builder {
    stack: Vec<Frame>,
    root: Option<Node>,
    /// Each anchored node with its cost.
    anchors: HashMap<usize, (Node, usize)>,
    /// What copies (of anchored nodes, for aliases and for [`Builder::anchors`]) have cost.
    copied: usize,
    /// The most they may cost.
    budget: usize,
}

/// An error that ends the parse.
type Stop = Box<Diagnostic>;

impl Builder {
    fn new(budget: usize) -> Self {
        Self {
            stack: Vec::new(),
            root: None,
            anchors: HashMap::new(),
            copied: 0,
            budget,
        }
    }

    /// Counts a copy of `cost`; false once the copies pass the budget.
    fn charge(&mut self, cost: usize) -> bool {
        self.copied = self.copied.saturating_add(cost);
        self.copied <= self.budget
    }

    fn open(&mut self, open: Open, start: Span, anchor: usize) {
        self.stack.push(Frame {
            open,
            start,
            anchor,
            cost: NODE_COST,
        });
    }

    fn close(&mut self, end: Span, source: &Source, diags: &mut Diagnostics) -> Result<(), Stop> {
        let Some(Frame {
            open,
            start,
            anchor,
            cost,
        }) = self.stack.pop()
        else {
            return Ok(());
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
        self.add(Node { kind, span }, cost, anchor, source, diags)
    }

    /// Adds a finished node costing `cost` to the collection being built (or makes it the root).
    fn add(
        &mut self,
        node: Node,
        cost: usize,
        anchor: usize,
        source: &Source,
        diags: &mut Diagnostics,
    ) -> Result<(), Stop> {
        if anchor != 0 {
            // The anchor keeps a copy, which counts like an alias's: nested anchors would
            // otherwise copy the same nodes once per level.
            if !self.charge(cost) {
                return Err(Box::new(expansion_error(
                    source,
                    node.span,
                    self.budget,
                    false,
                )));
            }
            self.anchors.insert(anchor, (node.clone(), cost));
        }
        let Some(frame) = self.stack.last_mut() else {
            self.root = Some(node);
            return Ok(());
        };
        frame.cost = frame.cost.saturating_add(cost);
        match &mut frame.open {
            Open::Seq(items) => items.push(node),
            Open::Map(entries, pending, seen) => match pending.take() {
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
                            return Ok(());
                        }
                        seen.insert(name.to_owned(), entries.len());
                    }
                    entries.push((key, node));
                }
            },
        }
        Ok(())
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

    /// The primary label's text, for diagnostics that point at an alias.
    fn primary_text(d: &Diagnostic) -> &str {
        let span = d.labels[0].span;
        &d.source().text()[span.offset..span.end()]
    }

    #[test]
    fn an_alias_bomb_stops_at_an_alias() {
        let bomb = include_str!("../tests/fixtures/alias-bomb.yaml");
        assert_eq!(bomb.len(), 716);
        let (root, diags) = load(bomb);
        assert!(root.is_none());
        assert_eq!(diags.len(), 1, "{diags:?}");
        let d = &diags.0[0];
        assert_eq!(d.code, Code::AliasExpansion);
        assert!(primary_text(d).starts_with('*'), "{:?}", primary_text(d));
        let line = d.location().line;
        assert!(
            bomb.lines().nth(line - 1).unwrap().contains(": &"),
            "line {line}"
        );
        assert!(d.message.contains("716 bytes"), "{}", d.message);
    }

    #[test]
    fn aliases_of_long_scalars_count_their_text() {
        // Few nodes, but each alias copies 64 KiB of text.
        let long = "x".repeat(64 << 10);
        let text = format!("a: &a {long}\nb: [{}]\n", vec!["*a"; 2000].join(", "));
        let (root, diags) = load(&text);
        assert!(root.is_none());
        assert_eq!(diags.0[0].code, Code::AliasExpansion);
        assert_eq!(primary_text(&diags.0[0]), "*a");
    }

    #[test]
    fn nested_anchors_count_their_copies() {
        // Each level is anchored, so keeping the anchors copies the deepest value once per
        // level; those copies count like aliases.
        let long = "x".repeat(1 << 20);
        let mut text = String::new();
        for i in 0..(MAX_DEPTH - 1) {
            text.push_str(&format!("{}- &a{i}\n", "  ".repeat(i)));
        }
        text.push_str(&format!("{}- {long}\n", "  ".repeat(MAX_DEPTH - 1)));
        let (root, diags) = load(&text);
        assert!(root.is_none());
        let d = &diags.0[0];
        assert_eq!(d.code, Code::AliasExpansion);
        assert!(d.message.contains("anchored value"), "{}", d.message);
        assert!(primary_text(d).len() < 64, "{:?}", primary_text(d));
    }

    #[test]
    fn ordinary_anchors_are_well_within_the_budget() {
        let mut text = String::from("defaults: &d {memory: 128Mi, timeout: 5s, env: {A: b}}\nf:\n");
        for i in 0..2000 {
            text.push_str(&format!("  f{i}: *d\n"));
        }
        let (root, diags) = load(&text);
        assert!(diags.is_empty(), "{diags:?}");
        let f = root.unwrap();
        let f = f.get("f").unwrap();
        assert_eq!(
            f.get("f1999").unwrap().get("timeout").unwrap().as_str(),
            Some("5s")
        );
    }

    #[test]
    fn deep_nesting_is_refused_not_overflowed() {
        let deep = 100_000;
        for text in [
            format!("{}{}", "[".repeat(deep), "]".repeat(deep)),
            format!("{}{}", "{a: ".repeat(deep), "}".repeat(deep)),
            // Compact block sequences: two bytes a level, and saphyr has no limit of its own
            // for block nesting (flow nesting it stops at 256 levels).
            format!("{}a\n", "- ".repeat(deep)),
            format!("k:\n{}a\n", "  - ".repeat(deep)),
        ] {
            let (root, diags) = load(&text);
            assert!(root.is_none());
            assert_eq!(diags.len(), 1, "{diags:?}");
            let d = &diags.0[0];
            assert_eq!(
                d.code,
                Code::NestingDepth,
                "{} {:?}",
                d.message,
                &text[..20]
            );
            let at = text.as_bytes()[d.labels[0].span.offset];
            assert!(matches!(at, b'[' | b'{' | b'-'), "{}", at as char);
        }
        // The limit itself is fine.
        let (root, diags) = load(&format!(
            "{}{}",
            "[".repeat(MAX_DEPTH),
            "]".repeat(MAX_DEPTH)
        ));
        assert!(root.is_some() && diags.is_empty(), "{diags:?}");
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

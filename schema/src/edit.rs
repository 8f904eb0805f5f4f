//! Span-preserving edits of `edgefn.yaml` text, shared by the CLI (`edgefn new`, `edgefn device
//! add`) and the control plane (the console's bind): an entry is added to a top-level mapping
//! ([`add_entry`]) or an item appended to a top-level sequence ([`append_item`]) in the style the
//! file already uses (block or flow, its indentation), keeping comments and order, rather than
//! re-serialising the manifest. No I/O.
//!
//! An edit is parsed again before it is returned, so it never yields text that does not parse;
//! callers that need a valid manifest load the result with [`crate::load`] as any other.

use crate::Source;
use crate::manifest::{DeviceSelector, Mode};
use crate::yaml::{self, Node, NodeKind};

/// Why the manifest text could not be edited.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EditError {
    /// The text does not parse, or is not a mapping, or the section is not a sequence.
    #[error(
        "edgefn.yaml is not a YAML mapping that can be edited; fix it first (`edgefn validate` says how)"
    )]
    Unparseable,
    /// The mapping already has an entry of that name.
    #[error("`{0}` is already in edgefn.yaml")]
    Exists(String),
    /// The edit did not give the expected result.
    #[error("could not add the item to edgefn.yaml automatically")]
    Failed,
}

/// The manifest's top-level sections, in the order a new one is placed.
const SECTIONS: [&str; 6] = [
    "apiVersion",
    "project",
    "functions",
    "devices",
    "bindings",
    "routes",
];

/// A YAML double-quoted scalar holding `s` exactly (JSON's escapes are a subset of YAML's).
pub fn quote(s: &str) -> String {
    serde_json::to_string(s).expect("a string serializes")
}

/// The fields of a binding of `function` to `devices`, in the order they are written, values
/// as YAML (strings double-quoted, so any text is safe): for [`append_item`] on `bindings`.
pub fn binding_fields(
    name: Option<&str>,
    function: &str,
    devices: &DeviceSelector,
    mode: Mode,
    triggers: &[String],
) -> Vec<(&'static str, String)> {
    let mut fields = Vec::new();
    if let Some(n) = name {
        fields.push(("name", quote(n)));
    }
    fields.push(("function", quote(function)));
    let selector = match devices {
        DeviceSelector::Names(names) => format!(
            "{{ names: [{}] }}",
            names
                .iter()
                .map(|n| quote(n))
                .collect::<Vec<_>>()
                .join(", ")
        ),
        DeviceSelector::Labels(labels) => format!(
            "{{ labels: {{ {} }} }}",
            labels
                .iter()
                .map(|(k, v)| format!("{}: {}", quote(k), quote(v)))
                .collect::<Vec<_>>()
                .join(", ")
        ),
    };
    fields.push(("devices", selector));
    if mode != Mode::Triggered {
        fields.push(("mode", mode.as_str().to_owned()));
    }
    if !triggers.is_empty() {
        fields.push((
            "triggers",
            format!(
                "[{}]",
                triggers
                    .iter()
                    .map(|t| format!("{{ topic: {} }}", quote(t)))
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
        ));
    }
    fields
}

/// Appends an item to the top-level sequence `section` (`bindings`, `routes`): `fields` (key and
/// YAML-formatted value, in order) as one mapping, in the style the sequence already uses; a
/// missing section is added before the sections that follow it.
///
/// # Errors
///
/// [`EditError::Unparseable`] when `text` is not a YAML mapping or `section` is not a sequence;
/// [`EditError::Failed`] when the edited text would not hold one more item.
pub fn append_item(
    text: &str,
    section: &str,
    fields: &[(&str, String)],
) -> Result<String, EditError> {
    let source = Source::new("edgefn.yaml", text);
    let (Some(root), _) = yaml::parse(&source) else {
        return Err(EditError::Unparseable);
    };
    let NodeKind::Map(top) = &root.kind else {
        return Err(EditError::Unparseable);
    };
    let count = |root: &Node| match root.get(section).map(|v| &v.kind) {
        Some(NodeKind::Seq(items)) => items.len(),
        _ => 0,
    };
    let before = count(&root);
    let item_block = |indent: &str| {
        let mut out = String::new();
        for (i, (k, v)) in fields.iter().enumerate() {
            let lead = if i == 0 {
                format!("{indent}- ")
            } else {
                format!("{indent}  ")
            };
            out.push_str(&format!("{lead}{k}: {v}\n"));
        }
        out
    };
    let inline = || {
        let parts: Vec<String> = fields.iter().map(|(k, v)| format!("{k}: {v}")).collect();
        format!("{{ {} }}", parts.join(", "))
    };
    let later: &[&str] = SECTIONS
        .iter()
        .position(|s| *s == section)
        .map_or(&[], |i| &SECTIONS[i + 1..]);
    let edited = match root.entry(section) {
        None => {
            let block = format!("{section}:\n{}", item_block("  "));
            let at = top
                .iter()
                .find(|(k, _)| k.as_str().is_some_and(|k| later.contains(&k)))
                .map(|(k, _)| line_start(text, k.span.offset));
            match at {
                Some(at) => splice(text, at, &format!("{block}\n")),
                None => insert_line(text, text.len(), &block),
            }
        }
        Some((key, value)) => match &value.kind {
            NodeKind::Seq(items) if flow(text, value) && !items.is_empty() => {
                let last = &items[items.len() - 1];
                splice(text, last.span.end(), &format!(", {}", inline()))
            }
            NodeKind::Seq(items) if !items.is_empty() => {
                // The dash is two columns left of the first item's content, by convention;
                // read it from the text rather than assume.
                let first = &items[0];
                let line = line_start(text, first.span.offset);
                let dash = text[line..first.span.offset]
                    .rfind('-')
                    .map_or(column(&source, key.span.offset) + 2, |i| i);
                let last = &items[items.len() - 1];
                let at = line_end(
                    text,
                    last.span.end().saturating_sub(1).max(last.span.offset),
                );
                insert_line(text, at, &item_block(&" ".repeat(dash)))
            }
            _ if value.is_null() || matches!(&value.kind, NodeKind::Seq(e) if e.is_empty()) => {
                let mut t = text.to_owned();
                if !value.is_null() {
                    // `bindings: []` → `bindings:` (the spaces before the value go too).
                    let from = text[..value.span.offset].trim_end_matches(' ').len();
                    t.replace_range(from..value.span.end(), "");
                }
                let at = line_end(&t, key.span.end());
                let indent = " ".repeat(column(&source, key.span.offset) + 2);
                insert_line(&t, at, &item_block(&indent))
            }
            _ => return Err(EditError::Unparseable),
        },
    };
    let check = Source::new("edgefn.yaml", edited.as_str());
    match yaml::parse(&check) {
        (Some(root), diags) if diags.is_empty() && count(&root) == before + 1 => Ok(edited),
        _ => Err(EditError::Failed),
    }
}

/// Inserts `name` with `fields` (key and YAML-formatted value, in order) into the top-level
/// mapping `section` (`functions`, `devices`), in the style the mapping already uses (block or
/// flow, its indentation); a missing section is added before the sections that follow it.
///
/// # Errors
///
/// [`EditError::Exists`] when `section` already has `name`; [`EditError::Unparseable`] when
/// `text` is not a YAML mapping or `section` is not a mapping; [`EditError::Failed`] when the
/// edited text would not hold the new entry.
pub fn add_entry(
    text: &str,
    section: &str,
    name: &str,
    fields: &[(&str, String)],
) -> Result<String, EditError> {
    let source = Source::new("edgefn.yaml", text);
    let (Some(root), _) = yaml::parse(&source) else {
        return Err(EditError::Unparseable);
    };
    let NodeKind::Map(top) = &root.kind else {
        return Err(EditError::Unparseable);
    };
    let later: &[&str] = SECTIONS
        .iter()
        .position(|s| *s == section)
        .map_or(&[], |i| &SECTIONS[i + 1..]);
    let edited = match root.entry(section) {
        None => {
            // No such section yet: add it before the first of the later sections, or at the end.
            let block = format!("{section}:\n{}", block_entry(name, fields, "  ", "  "));
            let before = top
                .iter()
                .find(|(k, _)| k.as_str().is_some_and(|k| later.contains(&k)))
                .map(|(k, _)| line_start(text, k.span.offset));
            match before {
                Some(at) => splice(text, at, &format!("{block}\n")),
                None => {
                    let mut out = text.to_owned();
                    if !out.is_empty() && !out.ends_with('\n') {
                        out.push('\n');
                    }
                    out.push_str(&block);
                    out
                }
            }
        }
        Some((key, value)) => {
            if value.get(name).is_some() {
                return Err(EditError::Exists(name.to_owned()));
            }
            let indent = " ".repeat(column(&source, key.span.offset) + 2);
            match &value.kind {
                NodeKind::Map(entries) if flow(text, value) && !entries.is_empty() => {
                    // `functions: { a: {...} }`: add `, name: {...}` after the last entry.
                    let (last_key, last_value) = &entries[entries.len() - 1];
                    let at = last_value.span.end().max(last_key.span.end());
                    let inline: Vec<String> =
                        fields.iter().map(|(k, v)| format!("{k}: {v}")).collect();
                    let value = if inline.is_empty() {
                        "{}".to_owned()
                    } else {
                        format!("{{ {} }}", inline.join(", "))
                    };
                    splice(text, at, &format!(", {name}: {value}"))
                }
                NodeKind::Map(entries) if !entries.is_empty() => {
                    let (first_key, first_value) = &entries[0];
                    let entry_indent = " ".repeat(column(&source, first_key.span.offset));
                    let step = match &first_value.kind {
                        NodeKind::Map(children)
                            if !children.is_empty() && !flow(text, first_value) =>
                        {
                            column(&source, children[0].0.span.offset)
                                .saturating_sub(column(&source, first_key.span.offset))
                                .max(1)
                        }
                        _ => 2,
                    };
                    let (last_key, last_value) = &entries[entries.len() - 1];
                    let end = last_value.span.end().max(last_key.span.end());
                    let at = line_end(text, end.saturating_sub(1).max(last_key.span.offset));
                    let block = block_entry(name, fields, &entry_indent, &" ".repeat(step));
                    insert_line(text, at, &block)
                }
                _ if value.is_null() || matches!(&value.kind, NodeKind::Map(e) if e.is_empty()) => {
                    // `functions:` or `functions: {}`: drop the empty value, add a block below.
                    let (text, key_end) = if value.is_null() {
                        (text.to_owned(), key.span.end())
                    } else {
                        let mut t = text.to_owned();
                        t.replace_range(value.span.offset..value.span.end(), "");
                        (t, key.span.end())
                    };
                    let at = line_end(&text, key_end);
                    insert_line(&text, at, &block_entry(name, fields, &indent, "  "))
                }
                _ => return Err(EditError::Unparseable),
            }
        }
    };
    // The edit must load and contain the new function.
    let check = Source::new("edgefn.yaml", edited.as_str());
    match yaml::parse(&check) {
        (Some(root), diags)
            if diags.is_empty() && root.get(section).and_then(|f| f.get(name)).is_some() =>
        {
            Ok(edited)
        }
        _ => Err(EditError::Failed),
    }
}

/// The YAML text of the entry `name` as it is added to a block mapping: `indent` before the
/// key, `indent` + `step` before each field.
pub fn block_entry(name: &str, fields: &[(&str, String)], indent: &str, step: &str) -> String {
    if fields.is_empty() {
        return format!("{indent}{name}: {{}}\n");
    }
    let mut out = format!("{indent}{name}:\n");
    for (k, v) in fields {
        out.push_str(&format!("{indent}{step}{k}: {v}\n"));
    }
    out
}

fn flow(text: &str, node: &Node) -> bool {
    text[node.span.offset..].starts_with(['{', '['])
}

/// 0-based column (in characters) of a byte offset.
fn column(source: &Source, offset: usize) -> usize {
    source.line_col(offset).1 - 1
}

fn line_start(text: &str, offset: usize) -> usize {
    text[..offset].rfind('\n').map_or(0, |i| i + 1)
}

/// Offset of the newline ending the line that holds `offset` (or the end of the text).
fn line_end(text: &str, offset: usize) -> usize {
    text[offset..].find('\n').map_or(text.len(), |i| offset + i)
}

/// Inserts `block` (whole lines ending in `\n`) after the line ending at `at`.
fn insert_line(text: &str, at: usize, block: &str) -> String {
    if at >= text.len() {
        let mut out = text.to_owned();
        if !out.ends_with('\n') {
            out.push('\n');
        }
        out.push_str(block);
        out
    } else {
        splice(text, at + 1, block)
    }
}

fn splice(text: &str, at: usize, insert: &str) -> String {
    let mut out = String::with_capacity(text.len() + insert.len());
    out.push_str(&text[..at]);
    out.push_str(insert);
    out.push_str(&text[at..]);
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

    const BINDING: [(&str, &str); 2] = [("function", "f"), ("mode", "continuous")];

    fn fields() -> Vec<(&'static str, String)> {
        BINDING.iter().map(|(k, v)| (*k, (*v).to_owned())).collect()
    }

    #[test]
    fn appends_in_each_style() {
        let empty = "functions: {}\nbindings: []\nroutes: []\n";
        assert_eq!(
            append_item(empty, "bindings", &fields()).unwrap(),
            "functions: {}\nbindings:\n  - function: f\n    mode: continuous\nroutes: []\n"
        );
        let block = "bindings:\n  # mine\n  - function: a\n    mode: continuous\nroutes: []\n";
        assert_eq!(
            append_item(block, "bindings", &fields()).unwrap(),
            "bindings:\n  # mine\n  - function: a\n    mode: continuous\n  - function: f\n    mode: continuous\nroutes: []\n"
        );
        let flow = "bindings: [ { function: a } ]\n";
        assert_eq!(
            append_item(flow, "bindings", &fields()).unwrap(),
            "bindings: [ { function: a }, { function: f, mode: continuous } ]\n"
        );
        let missing = "functions: {}\nroutes: []\n";
        assert_eq!(
            append_item(missing, "bindings", &fields()).unwrap(),
            "functions: {}\nbindings:\n  - function: f\n    mode: continuous\n\nroutes: []\n"
        );
        let null = "bindings:\n";
        assert_eq!(
            append_item(null, "bindings", &fields()).unwrap(),
            "bindings:\n  - function: f\n    mode: continuous\n"
        );
        assert_eq!(
            append_item("- 1\n", "bindings", &fields()),
            Err(EditError::Unparseable)
        );
        assert_eq!(
            append_item("bindings: 3\n", "bindings", &fields()),
            Err(EditError::Unparseable)
        );
    }

    /// Any text (markup, quotes, YAML syntax) in a name or label stays one scalar.
    #[test]
    fn binding_values_are_quoted_whatever_they_hold() {
        let hostile = "<script>\"x\": [1] # '";
        let mut labels = BTreeMap::new();
        labels.insert("site".to_owned(), hostile.to_owned());
        let f = binding_fields(
            Some("b"),
            "f",
            &DeviceSelector::Labels(labels),
            Mode::Triggered,
            &["a/#".to_owned()],
        );
        let text = append_item("bindings: []\n", "bindings", &f).unwrap();
        let src = Source::new("edgefn.yaml", text.as_str());
        let (Some(root), diags) = yaml::parse(&src) else {
            panic!("parses")
        };
        assert!(diags.is_empty());
        let item = match &root.get("bindings").unwrap().kind {
            NodeKind::Seq(items) => items[0].clone(),
            _ => panic!("a list"),
        };
        assert_eq!(
            item.get("devices")
                .and_then(|d| d.get("labels"))
                .and_then(|l| l.get("site"))
                .and_then(Node::as_str),
            Some(hostile)
        );
        assert_eq!(item.get("triggers").map(|t| t.type_name()), Some("a list"));
    }
}

#[cfg(test)]
mod entry_tests {
    use super::*;

    fn add_function(
        text: &str,
        name: &str,
        fields: &[(&str, String)],
    ) -> Result<String, EditError> {
        add_entry(text, "functions", name, fields)
    }

    fn fields() -> Vec<(&'static str, String)> {
        vec![
            ("path", "functions/avg".to_owned()),
            ("runtime", "python3".to_owned()),
            ("handler", "main.handle".to_owned()),
        ]
    }

    #[test]
    fn appends_to_a_block_mapping_keeping_comments_and_indent() {
        let text = "# top comment\napiVersion: edgefn/v1\nproject: p\nfunctions:\n    # first one\n    a:\n        path: functions/a   # trailing\n        runtime: exec\n        handler: [\"./run\"]\n# devices below\ndevices: {}\n";
        let out = add_function(text, "avg", &fields()).unwrap();
        assert_eq!(
            out,
            "# top comment\napiVersion: edgefn/v1\nproject: p\nfunctions:\n    # first one\n    a:\n        path: functions/a   # trailing\n        runtime: exec\n        handler: [\"./run\"]\n    avg:\n        path: functions/avg\n        runtime: python3\n        handler: main.handle\n# devices below\ndevices: {}\n"
        );
    }

    #[test]
    fn fills_an_empty_section() {
        let text =
            "apiVersion: edgefn/v1\nproject: p\nfunctions:   # add functions here\ndevices: {}\n";
        let out = add_function(text, "avg", &fields()).unwrap();
        assert!(out.starts_with("apiVersion: edgefn/v1\nproject: p\nfunctions:   # add functions here\n  avg:\n    path: functions/avg\n"), "{out}");
        let out = add_function("project: p\nfunctions: {}\n", "avg", &fields()).unwrap();
        assert_eq!(
            out,
            "project: p\nfunctions: \n  avg:\n    path: functions/avg\n    runtime: python3\n    handler: main.handle\n"
        );
    }

    #[test]
    fn adds_the_section_before_devices() {
        let text = "apiVersion: edgefn/v1\nproject: p\n\ndevices:\n  d: {}\n";
        let out = add_function(text, "avg", &fields()).unwrap();
        assert_eq!(
            out,
            "apiVersion: edgefn/v1\nproject: p\n\nfunctions:\n  avg:\n    path: functions/avg\n    runtime: python3\n    handler: main.handle\n\ndevices:\n  d: {}\n"
        );
    }

    #[test]
    fn keeps_flow_style() {
        let text =
            "project: p\nfunctions: { a: { path: functions/a, runtime: exec, handler: ./a } }\n";
        let out = add_function(text, "avg", &fields()).unwrap();
        assert_eq!(
            out,
            "project: p\nfunctions: { a: { path: functions/a, runtime: exec, handler: ./a }, avg: { path: functions/avg, runtime: python3, handler: main.handle } }\n"
        );
    }

    #[test]
    fn last_entry_at_end_of_file_without_newline() {
        let text = "project: p\nfunctions:\n  a:\n    path: functions/a";
        let out = add_function(text, "avg", &fields()).unwrap();
        assert!(out.ends_with("    path: functions/a\n  avg:\n    path: functions/avg\n    runtime: python3\n    handler: main.handle\n"), "{out}");
    }

    #[test]
    fn adds_devices_in_the_style_of_the_section() {
        let text = "project: p\ndevices:\n  gw-01: { labels: { a: b } }\nbindings: []\n";
        let out = add_entry(
            text,
            "devices",
            "gw-02",
            &[("labels", "{ site: lab }".to_owned())],
        )
        .unwrap();
        assert_eq!(
            out,
            "project: p\ndevices:\n  gw-01: { labels: { a: b } }\n  gw-02:\n    labels: { site: lab }\nbindings: []\n"
        );
        let out = add_entry("project: p\nbindings: []\n", "devices", "gw-02", &[]).unwrap();
        assert_eq!(out, "project: p\ndevices:\n  gw-02: {}\n\nbindings: []\n");
    }

    #[test]
    fn refuses_duplicates_and_broken_files() {
        let text = "project: p\nfunctions:\n  avg:\n    path: x\n";
        assert!(matches!(
            add_function(text, "avg", &fields()),
            Err(EditError::Exists(_))
        ));
        assert!(matches!(
            add_function("a: [1,\n", "avg", &fields()),
            Err(EditError::Unparseable)
        ));
        assert!(matches!(
            add_function("- 1\n", "avg", &fields()),
            Err(EditError::Unparseable)
        ));
    }
}

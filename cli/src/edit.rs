//! Editing `edgefn.yaml` in place, keeping the user's comments, order and layout.
//!
//! Rather than re-serialising the manifest (which would drop comments), an edit finds the span
//! of the `functions:` mapping in the YAML tree and inserts text there, in the style the file
//! already uses (block or flow, and its indentation). The result is parsed again before it is
//! returned, so an edit can never produce a file that does not load.

use edgefn_schema::Source;
use edgefn_schema::yaml::{self, Node, NodeKind};

/// Why the manifest could not be edited automatically.
#[derive(Debug, thiserror::Error)]
pub(crate) enum EditError {
    /// The manifest does not parse, or is not a mapping.
    #[error(
        "edgefn.yaml is not a YAML mapping that can be edited; fix it first (`edgefn validate` says how)"
    )]
    Unparseable,
    /// A function of that name exists.
    #[error("function `{0}` is already in edgefn.yaml")]
    Exists(String),
    /// The edit did not give the expected result.
    #[error("could not insert the function into edgefn.yaml automatically")]
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

/// Inserts a function entry `name` with `fields` (key and YAML-formatted value, in order).
pub(crate) fn add_function(
    text: &str,
    name: &str,
    fields: &[(&str, String)],
) -> Result<String, EditError> {
    add_entry(text, "functions", name, fields)
}

/// Inserts `name` with `fields` into the top-level mapping `section` (`functions`, `devices`).
pub(crate) fn add_entry(
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

/// Appends an item to the top-level sequence `section` (`bindings`, `routes`): `fields` (key and
/// YAML-formatted value, in order) as one mapping, in the style the sequence already uses. The
/// edit itself is the schema's ([`edgefn_schema::edit::append_item`]), which the control plane's
/// console uses too.
pub(crate) fn append_item(
    text: &str,
    section: &str,
    fields: &[(&str, String)],
) -> Result<String, EditError> {
    edgefn_schema::edit::append_item(text, section, fields).map_err(|e| match e {
        edgefn_schema::edit::EditError::Unparseable => EditError::Unparseable,
        edgefn_schema::edit::EditError::Failed => EditError::Failed,
    })
}

/// The YAML text of the entry as it is added to a block mapping.
pub(crate) fn block_entry(
    name: &str,
    fields: &[(&str, String)],
    indent: &str,
    step: &str,
) -> String {
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

#[cfg(test)]
mod append_tests {
    use super::*;

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
    }
}

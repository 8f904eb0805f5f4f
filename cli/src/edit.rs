//! Editing `edgefn.yaml` in place, keeping the user's comments, order and layout: the edits are
//! the schema's ([`edgefn_schema::edit`]), which the control plane's console uses too.

pub(crate) use edgefn_schema::edit::{EditError, add_entry, append_item, block_entry};

/// Inserts a function entry `name` with `fields` (key and YAML-formatted value, in order).
pub(crate) fn add_function(
    text: &str,
    name: &str,
    fields: &[(&str, String)],
) -> Result<String, EditError> {
    add_entry(text, "functions", name, fields)
}

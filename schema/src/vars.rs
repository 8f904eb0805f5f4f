//! Per-device values in environment variables: `${device.name}`, `${device.labels.KEY}` and
//! `${device.vars.KEY}` in a function's or binding's `env` are replaced, for each device, by
//! that device's name, label or value (`vars:` beside `labels:`) in its desired state — so a
//! change to one device's value changes only that device's digest. `$${device.` writes a literal
//! `${device.`; any other `$` is kept as it is (edgefn never runs a shell on `env`).

use crate::manifest::Device;

/// What marks a placeholder.
const OPEN: &str = "${device.";

/// One part of an `env` value.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Piece<'a> {
    /// Text kept as it is.
    Text(&'a str),
    /// `${device.name}`.
    Name,
    /// `${device.labels.KEY}`.
    Label(&'a str),
    /// `${device.vars.KEY}`.
    Var(&'a str),
}

/// A placeholder that is not one of the three forms: its byte range in the value and why.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{why}")]
pub struct BadPlaceholder {
    /// Byte offset of its `$` in the value.
    pub start: usize,
    /// Byte offset just past it (or the end of the value, when it is not closed).
    pub end: usize,
    /// What is wrong, for a diagnostic.
    pub why: String,
}

/// Splits `value` into text and placeholders.
///
/// # Errors
///
/// The first placeholder that is not closed or names no known field.
pub fn parse(value: &str) -> Result<Vec<Piece<'_>>, BadPlaceholder> {
    let mut pieces = Vec::new();
    let mut rest = 0;
    let mut text_from = 0;
    while let Some(found) = value[rest..].find(OPEN) {
        let at = rest + found;
        if at > 0 && value.as_bytes()[at - 1] == b'$' {
            // `$${device.` is a literal `${device.`: drop one `$`.
            pieces.push(Piece::Text(&value[text_from..at - 1]));
            text_from = at;
            rest = at + OPEN.len();
            continue;
        }
        pieces.push(Piece::Text(&value[text_from..at]));
        let inner_from = at + OPEN.len();
        let Some(close) = value[inner_from..].find('}') else {
            return Err(BadPlaceholder {
                start: at,
                end: value.len(),
                why: "this placeholder is not closed with `}`".into(),
            });
        };
        let inner = &value[inner_from..inner_from + close];
        let end = inner_from + close + 1;
        let piece = match inner.split_once('.') {
            None if inner == "name" => Piece::Name,
            Some(("labels", key)) if !key.is_empty() => Piece::Label(key),
            Some(("vars", key)) if !key.is_empty() => Piece::Var(key),
            _ => {
                return Err(BadPlaceholder {
                    start: at,
                    end,
                    why: format!(
                        "`${{device.{inner}}}` is not a device value: write `${{device.name}}`, `${{device.labels.KEY}}` or `${{device.vars.KEY}}`"
                    ),
                });
            }
        };
        pieces.push(piece);
        rest = end;
        text_from = end;
    }
    pieces.push(Piece::Text(&value[text_from..]));
    pieces.retain(|p| *p != Piece::Text(""));
    Ok(pieces)
}

/// Whether `value` has anything to expand (a placeholder or an escaped one).
pub fn has_placeholders(value: &str) -> bool {
    value.contains(OPEN)
}

/// What a placeholder needs of a device that it does not have.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Missing {
    /// The device has no such label.
    #[error("no label `{0}`")]
    Label(String),
    /// The device has no such value.
    #[error("no value `{0}` under `vars`")]
    Var(String),
}

/// `value` with every placeholder replaced by `device`'s (named `name`) name, labels and vars.
///
/// # Errors
///
/// A malformed placeholder, or one the device has no value for. A validated manifest has
/// neither ([`crate::load()`] reports both, with their locations).
pub fn expand(value: &str, name: &str, device: &Device) -> Result<String, ExpandError> {
    if !has_placeholders(value) {
        return Ok(value.to_owned());
    }
    let mut out = String::with_capacity(value.len());
    for piece in parse(value)? {
        match piece {
            Piece::Text(t) => out.push_str(t),
            Piece::Name => out.push_str(name),
            Piece::Label(k) => out.push_str(
                device
                    .labels
                    .get(k)
                    .ok_or_else(|| Missing::Label(k.to_owned()))?,
            ),
            Piece::Var(k) => out.push_str(
                device
                    .vars
                    .get(k)
                    .ok_or_else(|| Missing::Var(k.to_owned()))?,
            ),
        }
    }
    Ok(out)
}

/// Why [`expand`] failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ExpandError {
    /// A malformed placeholder.
    #[error(transparent)]
    Bad(#[from] BadPlaceholder),
    /// A value the device does not have.
    #[error("the device has {0}")]
    Missing(#[from] Missing),
}

#[cfg(test)]
mod tests {
    use super::*;

    fn device() -> Device {
        let mut d = Device::default();
        d.labels.insert("site".into(), "shanghai".into());
        d.vars.insert("LINE".into(), "7".into());
        d
    }

    #[test]
    fn expands_each_form_and_keeps_other_dollars() {
        let d = device();
        let x = |v: &str| expand(v, "gw-01", &d);
        assert_eq!(x("line-${device.vars.LINE}").as_deref(), Ok("line-7"));
        assert_eq!(
            x("${device.name}@${device.labels.site}").as_deref(),
            Ok("gw-01@shanghai")
        );
        assert_eq!(x("$HOME ${HOME} $5").as_deref(), Ok("$HOME ${HOME} $5"));
        assert_eq!(
            x("$${device.name} is ${device.name}").as_deref(),
            Ok("${device.name} is gw-01")
        );
        assert_eq!(x("plain").as_deref(), Ok("plain"));
    }

    #[test]
    fn bad_and_missing_placeholders_say_what_and_where() {
        let d = device();
        let e = parse("a ${device.vars.LINE").unwrap_err();
        assert_eq!((e.start, e.end), (2, 20));
        assert!(e.why.contains("not closed"), "{e}");
        let e = parse("x${device.color}y").unwrap_err();
        assert_eq!((e.start, e.end), (1, 16));
        assert!(e.why.contains("${device.vars.KEY}"), "{e}");
        assert!(parse("${device.vars.}").is_err());
        assert!(parse("${device.labels}").is_err());
        assert_eq!(
            expand("${device.vars.ZONE}", "gw-01", &d),
            Err(ExpandError::Missing(Missing::Var("ZONE".into())))
        );
        assert_eq!(
            expand("${device.labels.role}", "gw-01", &d),
            Err(ExpandError::Missing(Missing::Label("role".into())))
        );
    }
}

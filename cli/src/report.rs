//! Printing diagnostics: as source snippets for people, one line each for editors, or JSON.

use std::io::{IsTerminal, Write};

use edgefn_schema::{Diagnostic, Diagnostics, Severity};
use miette::{GraphicalReportHandler, GraphicalTheme};
use serde::Serialize;

use crate::args::Format;

/// Renders one diagnostic as a miette graphical report.
pub(crate) fn render_human(d: &Diagnostic, color: bool, width: usize) -> String {
    let theme = if color {
        GraphicalTheme::unicode()
    } else {
        GraphicalTheme::unicode_nocolor()
    };
    let handler = GraphicalReportHandler::new_themed(theme)
        .with_links(false)
        .with_width(width)
        .with_context_lines(1);
    let mut out = String::new();
    // Writing into a String cannot fail.
    let _ = handler.render_report(&mut out, d);
    out
}

/// `file:line:col: severity[code]: message`.
pub(crate) fn render_short(d: &Diagnostic) -> String {
    let loc = d.location();
    format!(
        "{}:{}:{}: {}[{}]: {}",
        loc.file,
        loc.line,
        loc.column,
        severity_word(d.severity),
        d.code,
        d.message
    )
}

fn severity_word(s: Severity) -> &'static str {
    match s {
        Severity::Error => "error",
        Severity::Warning => "warning",
    }
}

#[derive(Serialize)]
struct JsonDiagnostic<'a> {
    severity: &'static str,
    code: &'static str,
    message: &'a str,
    file: String,
    line: usize,
    column: usize,
    help: Option<&'a str>,
    labels: Vec<JsonLabel<'a>>,
}

#[derive(Serialize)]
struct JsonLabel<'a> {
    line: usize,
    column: usize,
    offset: usize,
    length: usize,
    text: &'a str,
}

#[derive(Serialize)]
struct JsonReport<'a> {
    errors: usize,
    warnings: usize,
    diagnostics: Vec<JsonDiagnostic<'a>>,
}

fn to_json(diags: &Diagnostics) -> String {
    let report = JsonReport {
        errors: diags.error_count(),
        warnings: diags.warning_count(),
        diagnostics: diags
            .iter()
            .map(|d| {
                let loc = d.location();
                JsonDiagnostic {
                    severity: severity_word(d.severity),
                    code: d.code.as_str(),
                    message: &d.message,
                    file: loc.file,
                    line: loc.line,
                    column: loc.column,
                    help: d.help.as_deref(),
                    labels: d
                        .labels
                        .iter()
                        .map(|l| {
                            let (line, column) = d.source().line_col(l.span.offset);
                            JsonLabel {
                                line,
                                column,
                                offset: l.span.offset,
                                length: l.span.len,
                                text: &l.text,
                            }
                        })
                        .collect(),
                }
            })
            .collect(),
    };
    serde_json::to_string_pretty(&report).expect("report serializes")
}

/// Whether to color output on stderr: a terminal, and `NO_COLOR` unset.
pub(crate) fn stderr_color() -> bool {
    std::io::stderr().is_terminal() && std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty())
}

/// Terminal width for wrapping, from `COLUMNS` or 100.
pub(crate) fn width() -> usize {
    std::env::var("COLUMNS")
        .ok()
        .and_then(|c| c.parse().ok())
        .filter(|w: &usize| *w >= 40)
        .unwrap_or(100)
}

/// Prints `diags` in `format`: human and short go to stderr, JSON to stdout.
pub(crate) fn print(diags: &Diagnostics, format: Format) {
    match format {
        Format::Json => {
            let mut out = std::io::stdout().lock();
            let _ = writeln!(out, "{}", to_json(diags));
        }
        Format::Short => {
            let mut err = std::io::stderr().lock();
            for d in diags.iter() {
                let _ = writeln!(err, "{}", render_short(d));
            }
        }
        Format::Human => {
            let (color, width) = (stderr_color(), width());
            let mut err = std::io::stderr().lock();
            for d in diags.iter() {
                let _ = write!(err, "{}", render_human(d, color, width));
                let _ = writeln!(err);
            }
        }
    }
}

/// "2 errors and 1 warning".
pub(crate) fn counts(diags: &Diagnostics) -> String {
    let plural = |n: usize, word: &str| format!("{n} {word}{}", if n == 1 { "" } else { "s" });
    match (diags.error_count(), diags.warning_count()) {
        (0, w) => plural(w, "warning"),
        (e, 0) => plural(e, "error"),
        (e, w) => format!("{} and {}", plural(e, "error"), plural(w, "warning")),
    }
}

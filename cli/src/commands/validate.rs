//! `edgefn validate`: every problem of the manifest, with positions, codes and help.

use std::io::Write;

use crate::args::{Format, ValidateArgs};
use crate::error::{CliResult, Outcome};
use crate::project::Project;
use crate::report;

/// Loads and checks the manifest; exit 1 on errors, 0 with only warnings.
pub fn run(args: &ValidateArgs) -> CliResult {
    let project = Project::locate(args.file.as_deref())?;
    let source = project.read_manifest()?;
    let files = project.files();
    let (diags, summary) = match edgefn_schema::load(&source, Some(&files)) {
        Ok(loaded) => {
            let m = &loaded.manifest;
            let summary = format!(
                "{}: ok — {} function{}, {} device{}, {} binding{}, {} route{}",
                source.name(),
                m.functions.len(),
                plural(m.functions.len()),
                m.devices.len(),
                plural(m.devices.len()),
                m.bindings.len(),
                plural(m.bindings.len()),
                m.routes.len(),
                plural(m.routes.len()),
            );
            (loaded.warnings, summary)
        }
        Err(diags) => {
            let summary = format!("{}: {}", source.name(), report::counts(&diags));
            (diags, summary)
        }
    };
    report::print(&diags, args.format);
    if args.format != Format::Json {
        let mut err = std::io::stderr().lock();
        let summary = if diags.warning_count() > 0 && !diags.has_errors() {
            format!("{summary} ({})", report::counts(&diags))
        } else {
            summary
        };
        let _ = writeln!(
            err,
            "{}{summary}",
            if diags.has_errors() { "error: " } else { "" }
        );
    }
    Ok(if diags.has_errors() {
        Outcome::Failed
    } else {
        Outcome::Success
    })
}

fn plural(n: usize) -> &'static str {
    if n == 1 { "" } else { "s" }
}

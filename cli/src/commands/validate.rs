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
        Ok(mut loaded) => {
            let cases = check_test_cases(&project, &loaded.manifest, &mut loaded.warnings)?;
            let m = &loaded.manifest;
            let summary = format!(
                "{}: {} — {} function{}, {} device{}, {} binding{}, {} route{}, {cases} test case{}",
                source.name(),
                if loaded.warnings.has_errors() {
                    "invalid test cases"
                } else {
                    "ok"
                },
                m.functions.len(),
                plural(m.functions.len()),
                m.devices.len(),
                plural(m.devices.len()),
                m.bindings.len(),
                plural(m.bindings.len()),
                m.routes.len(),
                plural(m.routes.len()),
                plural(cases),
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

/// Loads every test case of every function, adding their problems to `diags`; returns how many
/// there are.
fn check_test_cases(
    project: &Project,
    manifest: &edgefn_schema::Manifest,
    diags: &mut edgefn_schema::Diagnostics,
) -> CliResult<usize> {
    let files = crate::project::test_case_files(&project.root, manifest);
    for (_, path) in &files {
        let text =
            std::fs::read_to_string(path).map_err(crate::error::CliError::io("read", path))?;
        let source = edgefn_schema::Source::new(crate::project::display_path(path), text);
        if let Err(found) = edgefn_schema::testcase::load_test_case(&source) {
            diags.extend(found);
        }
    }
    Ok(files.len())
}

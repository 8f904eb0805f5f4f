//! `edgefn validate`: every problem of the manifest, with positions, codes and help.

use std::io::Write;

use crate::args::{Format, ValidateArgs};
use crate::error::{CliError, CliResult, Outcome};
use crate::project::Project;
use crate::report;

/// Loads and checks the manifest; exit 1 on errors, 0 with only warnings.
pub(crate) fn run(args: &ValidateArgs) -> CliResult {
    let project = Project::locate(args.file.as_deref())?;
    let source = match project.read_manifest() {
        Ok(source) => source,
        // A manifest that is not UTF-8 is reported like any other problem of its text.
        Err(CliError::Source(crate::error::SourceProblem(d))) => {
            let diags = edgefn_schema::Diagnostics(vec![*d]);
            let summary = format!(
                "{}: {}",
                crate::project::display_path(&project.manifest_path),
                report::counts(&diags)
            );
            return Ok(finish(&diags, &summary, args.format));
        }
        Err(e) => return Err(e),
    };
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
    Ok(finish(&diags, &summary, args.format))
}

/// Prints the diagnostics and the summary line; the outcome they make.
fn finish(diags: &edgefn_schema::Diagnostics, summary: &str, format: Format) -> Outcome {
    report::print(diags, format);
    if format != Format::Json {
        let mut err = std::io::stderr().lock();
        let summary = if diags.warning_count() > 0 && !diags.has_errors() {
            format!("{summary} ({})", report::counts(diags))
        } else {
            summary.to_owned()
        };
        let _ = writeln!(
            err,
            "{}{summary}",
            if diags.has_errors() { "error: " } else { "" }
        );
    }
    if diags.has_errors() {
        Outcome::Failed
    } else {
        Outcome::Success
    }
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
        let source = match crate::project::read_source(path) {
            Ok(source) => source,
            Err(CliError::Source(crate::error::SourceProblem(d))) => {
                diags.push(*d);
                continue;
            }
            Err(e) => return Err(e),
        };
        if let Err(found) = edgefn_schema::testcase::load_test_case(&source) {
            diags.extend(found);
        }
    }
    Ok(files.len())
}

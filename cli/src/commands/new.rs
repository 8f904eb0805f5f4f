//! `edgefn new NAME --runtime R`: a new function in the current project.

use std::io::Write;

use crate::args::NewArgs;
use crate::edit::{self, EditError};
use crate::error::{CliError, CliResult, Outcome};
use crate::project::{self, Project, display_path};
use crate::scaffold;

/// Checks a function or project name against the manifest's rules.
pub fn check_name(name: &str, kind: &str) -> CliResult<()> {
    let ok = edgefn_schema::manifest::valid_name(name);
    if ok {
        Ok(())
    } else {
        Err(CliError::InvalidArgument {
            message: format!("`{name}` is not a valid {kind} name"),
            help: format!(
                "a {kind} name uses lowercase letters, digits, `-` and `_`, starts and ends with a letter or digit, and has at most 63 characters"
            ),
        })
    }
}

/// Writes the function's files, then adds it to the manifest. The manifest is checked before
/// anything is written, so a refusal leaves the project untouched.
pub fn run(args: &NewArgs) -> CliResult {
    check_name(&args.name, "function")?;
    let project = Project::locate(args.file.as_deref())?;
    let runtime = args.runtime.into();
    let source = project.read_manifest()?;
    let fields = scaffold::function_fields(&args.name, runtime);
    let edited = match edit::add_function(source.text(), &args.name, &fields) {
        Ok(text) => Some(text),
        Err(EditError::Exists(_)) if args.force => None,
        Err(EditError::Exists(name)) => {
            return Err(CliError::Exists {
                path: project.manifest_path.clone(),
                hint: format!(
                    "function `{name}` is already defined there; choose another name, or pass --force to rewrite its files"
                ),
            });
        }
        Err(e) => {
            return Err(CliError::InvalidArgument {
                message: e.to_string(),
                help: format!(
                    "add it by hand under `functions:`:\n{}",
                    edit::block_entry(&args.name, &fields, "  ", "  ")
                ),
            });
        }
    };
    let files = scaffold::function(&args.name, runtime);
    project::create_files(
        &project.root,
        &files,
        args.force,
        "the function's folder already has this file; choose another name, or pass --force to overwrite",
    )?;
    if let Some(text) = edited {
        project::write_atomic(&project.manifest_path, text.as_bytes())?;
    }
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "Created function `{}` ({})", args.name, runtime);
    for f in &files {
        let _ = writeln!(out, "  {}", display_path(&project.root.join(&f.path)));
    }
    let _ = writeln!(out, "  added to {}", display_path(&project.manifest_path));
    let _ = writeln!(
        out,
        "\nBind it to devices in `bindings:` of edgefn.yaml, e.g.:\n  - function: {}\n    devices: {{ labels: {{}} }}\n    triggers: [ {{ topic: \"sensors/+/temperature\" }} ]",
        args.name
    );
    Ok(Outcome::Success)
}

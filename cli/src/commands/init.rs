//! `edgefn init [DIR]`: a new project.

use std::fs;
use std::io::Write;

use crate::args::InitArgs;
use crate::error::{CliError, CliResult, Outcome};
use crate::project::{self, display_path};
use crate::scaffold;

/// Creates the project's files; refuses to overwrite any without `--force`.
pub(crate) fn run(args: &InitArgs) -> CliResult {
    fs::create_dir_all(&args.dir).map_err(CliError::io("create the folder", &args.dir))?;
    let name = match &args.name {
        Some(n) => n.clone(),
        None => default_name(&args.dir),
    };
    scaffold::check_name(&name, "project")?;
    let files = scaffold::project(&name);
    project::create_files(
        &args.dir,
        &files,
        args.force,
        "this folder already has an edgefn project; pass --force to overwrite its files",
    )?;
    let shown = display_path(&args.dir);
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "Created edgefn project `{name}` in {shown}");
    for f in &files {
        let _ = writeln!(out, "  {}", f.path.display());
    }
    let _ = writeln!(out, "\nNext:");
    if shown != "." && !shown.is_empty() {
        let _ = writeln!(out, "  cd {shown}");
    }
    let _ = writeln!(out, "  edgefn new temp-filter --runtime python3");
    let _ = writeln!(out, "  edgefn validate");
    Ok(Outcome::Success)
}

/// The folder's name, made into a valid project name.
fn default_name(dir: &std::path::Path) -> String {
    let base = fs::canonicalize(dir)
        .ok()
        .and_then(|p| p.file_name().map(|n| n.to_string_lossy().into_owned()))
        .unwrap_or_default();
    let cleaned = edgefn_schema::manifest::suggest_name(&base);
    if cleaned.is_empty() {
        "edgefn-project".to_owned()
    } else {
        cleaned
    }
}

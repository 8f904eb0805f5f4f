//! `edgefn package`: one reproducible bundle per function.

use std::io::Write;

use crate::args::{Output, PackageArgs};
use crate::error::{CliError, CliResult, Outcome};
use crate::package;
use crate::project::{self, Project};

/// Packages the functions and prints function, digest and size.
pub(crate) fn run(args: &PackageArgs) -> CliResult {
    let project = Project::locate(args.file.as_deref())?;
    let Some(loaded) = project::load_valid(&project)? else {
        return Ok(Outcome::Failed);
    };
    for name in &args.functions {
        if !loaded.manifest.functions.contains_key(name) {
            return Err(project::not_in_manifest(
                "function",
                name,
                loaded.manifest.functions.keys(),
            ));
        }
    }
    let mut bundles = Vec::new();
    for (name, f) in &loaded.manifest.functions {
        if args.functions.is_empty() || args.functions.contains(name) {
            bundles.push(package::package(&project.root, name, &f.path)?);
        }
    }
    // Dependency layers, for the platforms of the devices that run each function.
    let mut layers = crate::layers::build_all(&project.root, &loaded.manifest, None)?;
    layers.retain(|l| args.functions.is_empty() || args.functions.contains(&l.function));
    if let Some(out) = &args.out {
        std::fs::create_dir_all(out).map_err(CliError::io("create", out))?;
        for b in &bundles {
            project::write_atomic(&out.join(format!("{}.tar.zst", b.digest)), &b.bytes)?;
        }
        for l in &layers {
            project::write_atomic(&out.join(format!("{}.tar.zst", l.digest)), &l.bytes)?;
        }
    }
    let mut stdout = std::io::stdout().lock();
    match args.output {
        Output::Json => {
            let mut list: Vec<serde_json::Value> = bundles
                .iter()
                .map(|b| serde_json::json!({"function": b.function, "digest": b.digest, "bytes": b.bytes.len(), "files": b.files}))
                .collect();
            list.extend(layers.iter().map(|l| serde_json::json!({"function": l.function, "layer": l.platform.as_str(), "digest": l.digest, "bytes": l.bytes.len(), "cached": l.cached})));
            let _ = writeln!(
                stdout,
                "{}",
                serde_json::to_string_pretty(&list).expect("json")
            );
        }
        Output::Text => {
            let width = bundles
                .iter()
                .map(|b| b.function.len())
                .max()
                .unwrap_or(8)
                .max(8);
            let _ = writeln!(
                stdout,
                "{:width$}  {:64}  {:>10}  FILES",
                "FUNCTION", "SHA256", "BYTES"
            );
            for b in &bundles {
                let _ = writeln!(
                    stdout,
                    "{:width$}  {}  {:>10}  {}",
                    b.function,
                    b.digest,
                    b.bytes.len(),
                    b.files
                );
            }
            for l in &layers {
                let _ = writeln!(
                    stdout,
                    "{:width$}  {}  {:>10}  dependencies for {}{}",
                    l.function,
                    l.digest,
                    l.bytes.len(),
                    l.platform,
                    if l.cached { " (cached)" } else { "" }
                );
            }
        }
    }
    Ok(Outcome::Success)
}

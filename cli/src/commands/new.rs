//! `edgefn new NAME --runtime R`: a new function in the current project.

use std::io::Write;

use crate::args::NewArgs;
use crate::edit::{self, EditError};
use crate::error::{CliError, CliResult, Outcome};
use crate::project::{self, Project, display_path};
use crate::scaffold;

/// Writes the function's files, then adds it to the manifest. The manifest is checked before
/// anything is written, so a refusal leaves the project untouched.
pub(crate) fn run(args: &NewArgs) -> CliResult {
    scaffold::check_name(&args.name, "function")?;
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
        Err(source) => {
            return Err(CliError::Edit {
                source,
                help: format!(
                    "add it by hand under `functions:`:\n{}",
                    edit::block_entry(&args.name, &fields, "  ", "  ")
                ),
            });
        }
    };
    // With --trigger or --continuous, a binding too, checked before anything is written.
    let bind = !args.triggers.is_empty() || args.continuous;
    if !bind && !args.labels.is_empty() {
        return Err(CliError::InvalidArgument {
            message:
                "--label chooses the devices of a binding: add --trigger TOPIC or --continuous"
                    .into(),
            help: format!(
                "edgefn new {} --runtime {runtime} --trigger 'sensors/+/temperature' --label role=gateway",
                args.name
            ),
        });
    }
    let edited = match (edited, bind) {
        (Some(text), true) => Some(
            edit::append_item(&text, "bindings", &binding_fields(args)?).map_err(|source| {
                CliError::Edit {
                    source,
                    help: "add the binding by hand under `bindings:`".into(),
                }
            })?,
        ),
        (edited, _) => edited,
    };
    let files = scaffold::function(
        &args.name,
        runtime,
        args.triggers.first().map(String::as_str),
    );
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
    if let Some(t) = args.triggers.first() {
        // A message from the cloud reaches the function only through a route: say which.
        let text = std::fs::read_to_string(&project.manifest_path).unwrap_or_default();
        let routed = edgefn_schema::load(&edgefn_schema::Source::new("edgefn.yaml", text), None)
            .ok()
            .is_some_and(|l| {
                // The routing rule, applied to the trigger's filter as a topic: a route's `+`
                // or `#` covers the trigger's wildcard level as it covers any other.
                l.manifest.routes.iter().any(|r| {
                    edgefn_schema::ResolvedRoute {
                        filter: r.filter().to_owned(),
                        to: r.to,
                    }
                    .carries(edgefn_schema::RouteTarget::Local, t)
                })
            });
        if !routed {
            let first = t.split('/').next().unwrap_or(t);
            let _ = writeln!(
                out,
                "  to send it messages from the cloud (`edgefn publish DEVICE {t} ...`), add a route under `routes:`:\n    - {{ from: \"cloud:{first}/#\", to: local }}"
            );
        }
    }
    if bind {
        let _ = writeln!(
            out,
            "  bound it in `bindings:` ({}, on {})",
            if args.continuous {
                "continuous".to_owned()
            } else {
                format!("triggered by {}", args.triggers.join(", "))
            },
            if args.labels.is_empty() {
                "every device".to_owned()
            } else {
                format!("devices with {}", args.labels.join(", "))
            }
        );
    } else {
        let _ = writeln!(
            out,
            "\nBind it to devices: `edgefn new` with --trigger TOPIC or --continuous does it, or in `bindings:` of edgefn.yaml, e.g.:\n  - function: {}\n    devices: {{ labels: {{}} }}\n    triggers: [ {{ topic: \"sensors/+/temperature\" }} ]",
            args.name
        );
    }
    Ok(Outcome::Success)
}

/// The binding `--trigger`/`--continuous`/`--label` ask for, as YAML fields.
fn binding_fields(args: &NewArgs) -> CliResult<Vec<(&'static str, String)>> {
    let mut labels = Vec::new();
    for l in &args.labels {
        match l.split_once('=') {
            Some((k, v)) if edgefn_schema::manifest::valid_name(k) && !v.is_empty() => {
                labels.push(format!(
                    "{k}: {}",
                    serde_json::to_string(v).expect("string")
                ));
            }
            _ => {
                return Err(CliError::InvalidArgument {
                    message: format!("`{l}` is not a label"),
                    help: "write labels as --label key=value".into(),
                });
            }
        }
    }
    let devices = format!("{{ labels: {{ {} }} }}", labels.join(", "));
    let mut fields = vec![
        ("function", args.name.clone()),
        ("devices", devices.replace("{  }", "{}")),
    ];
    if args.continuous {
        fields.push(("mode", "continuous".into()));
    } else {
        let mut triggers = Vec::new();
        for t in &args.triggers {
            edgefn_schema::topic::validate_filter(t)
                .map_err(|e| CliError::failed(format!("--trigger `{t}`"), e.help.clone(), e))?;
            triggers.push(format!(
                "{{ topic: {} }}",
                serde_json::to_string(t).expect("string")
            ));
        }
        fields.push(("triggers", format!("[ {} ]", triggers.join(", "))));
    }
    Ok(fields)
}

//! `edgefn apply`: validate → package → upload what the cloud lacks → submit a revision with its
//! provenance; `--wait` follows the rollout.

use std::io::Write;

use crate::args::{ApplyArgs, Output};
use crate::client::Client;
use crate::drift::{self, Verdict};
use crate::error::{CliError, CliResult, Outcome};
use crate::project::{self, Project};
use crate::{provenance, rollout};

fn say(output: Output, line: &str) {
    if output == Output::Text {
        eprintln!("{line}");
    }
}

/// Runs `edgefn apply`.
pub(crate) fn run(args: &ApplyArgs) -> CliResult {
    let timeout = rollout::parse_timeout(&args.timeout)?;
    let project = Project::locate(args.file.as_deref())?;
    let Some(loaded) = project::load_valid(&project)? else {
        return Ok(Outcome::Failed);
    };
    let source = project.read_manifest()?;
    let provenance = provenance::read(&project.root);
    match &provenance {
        Some(p) if p.dirty && !args.allow_dirty => {
            let files = provenance::dirty_files(&project.root);
            let shown: Vec<&str> = files.iter().take(10).map(String::as_str).collect();
            let more = files.len().saturating_sub(shown.len());
            return Err(CliError::InvalidArgument {
                message: format!(
                    "the project has uncommitted changes: {}{}",
                    shown.join(", "),
                    if more > 0 { format!(" and {more} more") } else { String::new() }
                ),
                help: "commit them so the revision records exactly what was applied (a file that holds a secret belongs in .gitignore, not in git), or pass --allow-dirty".into(),
            });
        }
        None if !args.allow_dirty => {
            return Err(CliError::InvalidArgument {
                message: "the project is not in a git repository, so there is no commit to record"
                    .into(),
                help: "apply from a git checkout (as CI does), or pass --allow-dirty".into(),
            });
        }
        _ => {}
    }
    let provenance = provenance.unwrap_or_else(|| edgefn_schema::api::Provenance {
        dirty: true,
        tool: Some(format!("edgefn {}", env!("CARGO_PKG_VERSION"))),
        ..Default::default()
    });
    let sign_key = crate::signing::load_key(args.sign_key.as_deref())?;
    let client = Client::from_args(args.cloud.cloud.as_deref(), args.cloud.token.as_deref())?;
    // After a rollback, applying what was rolled back (or older) would undo it: refused
    // without --force. Anything else replaces it, said once the new revision exists.
    let drift = drift::detect(&client)?
        .map(|d| (d.verdict(&project.root, provenance.commit.as_deref()), d));
    if let Some((Verdict::Undoes(why), d)) = &drift {
        if !args.force {
            return Err(CliError::InvalidArgument {
                message: format!("{}; applying this checkout would undo it: {why}", d.describe()),
                help: "commit a fix after the rolled-back commit (for example `git revert COMMIT`) and apply that, or pass --force to undo the rollback".into(),
            });
        }
    }
    // A change made outside git (a binding added in the console) that this checkout lacks
    // would be undone: refused without --force, and said.
    let outside = drift::detect_outside_git(&client)?.map(|o| {
        let undone = o.undone_by(&loaded.manifest);
        (o, undone)
    });
    if let Some((o, undone)) = &outside {
        if !undone.is_empty() && !args.force {
            return Err(CliError::InvalidArgument {
                message: format!(
                    "{}; applying this checkout would undo: {}",
                    o.describe(),
                    undone.join("; ")
                ),
                help: "add the change to edgefn.yaml in git (`edgefn diff` shows it) and apply that, or pass --force to undo it".into(),
            });
        }
    }
    // Said, not refused: devices the control plane does not know, and a project that is not
    // the one it runs.
    let warnings = fleet_warnings(&client, &loaded.manifest)?;
    for w in &warnings {
        say(args.output, &format!("warning: {w}"));
    }
    let submitted = rollout::submit(
        &client,
        &project,
        &loaded.manifest,
        source.text(),
        provenance,
        rollout::How {
            output: args.output,
            host_layers: false,
            sign: sign_key.as_ref(),
            rollout: args
                .rollout
                .map(|crate::args::RolloutMode::None| edgefn_schema::api::RolloutOverride::None),
        },
    )?;
    let uploaded_bytes = submitted.uploaded_bytes;
    let (applied, to_upload, request) = (submitted.applied, submitted.uploaded, submitted.request);
    if let (true, Some((verdict, d))) = (applied.created, &drift) {
        say(
            args.output,
            &match verdict {
                Verdict::Undoes(why) => {
                    format!("warning: {}; --force: undone ({why})", d.describe())
                }
                Verdict::Replaces(why) => format!("{}; replaced: {why}", d.describe()),
                Verdict::Unknown(why) => format!(
                    "warning: {}; replaced, without checking that this does not undo it: {why}",
                    d.describe()
                ),
            },
        );
    }
    if let (true, Some((o, undone))) = (applied.created, &outside) {
        say(
            args.output,
            &if undone.is_empty() {
                format!("{}; replaced: this checkout has its change", o.describe())
            } else {
                format!(
                    "warning: {}; --force: undone ({})",
                    o.describe(),
                    undone.join("; ")
                )
            },
        );
    }
    let outcome = if applied.created {
        say(
            args.output,
            &format!(
                "applied revision {} ({} archive{} uploaded, {} bytes)",
                applied.revision,
                to_upload.len(),
                if to_upload.len() == 1 { "" } else { "s" },
                uploaded_bytes
            ),
        );
        if args.wait && applied.rollout {
            crate::progressive::follow(&client, applied.revision, timeout, args.output)?
        } else if args.wait {
            rollout::wait_for_rollout(&client, timeout, args.output)?
        } else {
            Outcome::Success
        }
    } else {
        say(
            args.output,
            &format!(
                "no changes: revision {} is already what this project describes",
                applied.revision
            ),
        );
        Outcome::Success
    };
    if args.output == Output::Json {
        let json = serde_json::json!({
            "revision": applied.revision,
            "created": applied.created,
            "uploaded": to_upload,
            "uploadedBytes": uploaded_bytes,
            "bundles": request.bundles,
            "layers": request.layers,
            "models": request.models,
            "converged": outcome == Outcome::Success && args.wait,
            "warnings": warnings,
        });
        let _ = writeln!(
            std::io::stdout().lock(),
            "{}",
            serde_json::to_string_pretty(&json).expect("json")
        );
    }
    Ok(outcome)
}

/// What an apply goes on with but should say: the devices `manifest` names that are not
/// registered with the control plane (they have no token, so they never fetch what it asks of
/// them), and a `project:` that differs from the current revision's (a rename, or the wrong
/// folder). One sentence each, without the `warning: ` prefix; empty when all is well.
fn fleet_warnings(
    client: &Client,
    manifest: &edgefn_schema::Manifest,
) -> Result<Vec<String>, CliError> {
    let mut warnings = Vec::new();
    let registered: Vec<edgefn_schema::api::DeviceInfo> = client.get("/v1/devices")?;
    let unknown: Vec<&str> = manifest
        .devices
        .keys()
        .filter(|name| !registered.iter().any(|d| &d.name == *name))
        .map(String::as_str)
        .collect();
    if !unknown.is_empty() {
        let (noun, them) = if unknown.len() == 1 {
            ("device", "it")
        } else {
            ("devices", "each")
        };
        warnings.push(format!(
            "the manifest names {noun} not registered with the control plane: {}; {} will never \
             run this revision until registered: `edgefn device add NAME` for {them} (`edgefn \
             device add {}`), then start its agent with the configuration that prints",
            unknown.join(", "),
            if unknown.len() == 1 { "it" } else { "they" },
            unknown[0]
        ));
    }
    let recent: Vec<edgefn_schema::api::RevisionSummary> = client.get("/v1/revisions?limit=1")?;
    if let Some(latest) = recent.first() {
        let rev: edgefn_schema::api::Revision =
            client.get(&format!("/v1/revisions/{}", latest.number))?;
        let current = edgefn_schema::load(
            &edgefn_schema::Source::new("edgefn.yaml", rev.manifest.as_str()),
            None,
        )
        .ok()
        .map(|l| l.manifest.project);
        if let Some(current) = current.filter(|p| *p != manifest.project) {
            warnings.push(format!(
                "this manifest is project `{}`, but the current revision ({}) is project \
                 `{current}`: applying replaces it (a rename, or the wrong folder?)",
                manifest.project, latest.number
            ));
        }
    }
    Ok(warnings)
}

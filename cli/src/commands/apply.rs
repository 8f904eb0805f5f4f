//! `edgefn apply`: validate → package → upload what the cloud lacks → submit a revision with its
//! provenance; `--wait` follows the rollout.

use std::io::{IsTerminal, Write};
use std::time::{Duration, Instant};

use edgefn_schema::api::{
    ApplyResponse, DeviceState, FleetStatus, MissingBundlesRequest, MissingBundlesResponse,
    NewRevision, RevisionSummary,
};

use crate::args::{ApplyArgs, Output};
use crate::client::Client;
use crate::error::{CliError, CliResult, Outcome};
use crate::project::Project;
use crate::{package, provenance};

/// Parses a `--timeout` value.
pub fn parse_timeout(text: &str) -> Result<Duration, CliError> {
    text.parse::<edgefn_schema::Duration>()
        .map(|d| d.to_std())
        .map_err(|e| CliError::InvalidArgument {
            message: format!("--timeout: {e}"),
            help: e.help.into(),
        })
}

/// The latest revision number (0 when none).
pub fn latest_revision(client: &Client) -> Result<u64, CliError> {
    let history: Vec<RevisionSummary> = client.get("/v1/revisions?limit=1")?;
    Ok(history.first().map_or(0, |r| r.number))
}

fn say(output: Output, line: &str) {
    if output == Output::Text {
        eprintln!("{line}");
    }
}

/// What [`submit`] did.
#[derive(Debug)]
pub struct Submitted {
    /// The cloud's answer.
    pub applied: ApplyResponse,
    /// Functions whose bundles were uploaded.
    pub uploaded: Vec<String>,
    /// What was submitted.
    pub request: NewRevision,
}

/// Packages the project, uploads the bundles the cloud lacks, and submits the revision against
/// the latest one.
pub fn submit(
    client: &Client,
    project: &Project,
    manifest: &edgefn_schema::Manifest,
    manifest_text: &str,
    provenance: edgefn_schema::api::Provenance,
    output: Output,
) -> Result<Submitted, CliError> {
    let bundles = package::package_all(&project.root, manifest)?;
    let parent = latest_revision(client)?;
    let digests: Vec<String> = bundles.iter().map(|b| b.digest.clone()).collect();
    let (_, missing): (_, MissingBundlesResponse) =
        client.post("/v1/bundles/missing", &MissingBundlesRequest { digests })?;
    let to_upload: Vec<&package::Bundle> = bundles
        .iter()
        .filter(|b| missing.missing.contains(&b.digest))
        .collect();
    let total: u64 = to_upload.iter().map(|b| b.bytes.len() as u64).sum();
    let bar = (output == Output::Text && std::io::stderr().is_terminal() && !to_upload.is_empty())
        .then(|| {
            let bar = indicatif::ProgressBar::new(total);
            bar.set_style(
                indicatif::ProgressStyle::with_template(
                    "uploading {bar:30} {bytes}/{total_bytes} {msg}",
                )
                .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
            );
            bar
        });
    for b in &to_upload {
        match &bar {
            Some(bar) => bar.set_message(b.function.clone()),
            None => say(
                output,
                &format!(
                    "uploading {} ({} bytes, {})",
                    b.function,
                    b.bytes.len(),
                    &b.digest[..12]
                ),
            ),
        }
        client.put_bytes(&format!("/v1/bundles/{}", b.digest), b.bytes.clone())?;
        if let Some(bar) = &bar {
            bar.inc(b.bytes.len() as u64);
        }
    }
    if let Some(bar) = bar {
        bar.finish_and_clear();
    }
    let request = NewRevision {
        manifest: manifest_text.to_owned(),
        bundles: bundles
            .iter()
            .map(|b| (b.function.clone(), b.digest.clone()))
            .collect(),
        provenance,
        expected_parent: Some(parent),
    };
    let (_, applied): (_, ApplyResponse) = client.post("/v1/revisions", &request)?;
    Ok(Submitted {
        applied,
        uploaded: to_upload.iter().map(|b| b.function.clone()).collect(),
        request,
    })
}

/// Runs `edgefn apply`.
pub fn run(args: &ApplyArgs) -> CliResult {
    let timeout = parse_timeout(&args.timeout)?;
    let project = Project::locate(args.file.as_deref())?;
    let Some(loaded) = super::load_valid(&project)? else {
        return Ok(Outcome::Failed);
    };
    let source = project.read_manifest()?;
    let provenance = provenance::read(&project.root);
    match &provenance {
        Some(p) if p.dirty && !args.allow_dirty => {
            return Err(CliError::InvalidArgument {
                message: "the project has uncommitted changes".into(),
                help: "commit them so the revision records exactly what was applied, or pass --allow-dirty".into(),
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
    let client = Client::from_args(args.cloud.cloud.as_deref(), args.cloud.token.as_deref())?;
    let submitted = submit(
        &client,
        &project,
        &loaded.manifest,
        source.text(),
        provenance,
        args.output,
    )?;
    let (applied, to_upload, request) = (submitted.applied, submitted.uploaded, submitted.request);
    let outcome = if applied.created {
        say(
            args.output,
            &format!(
                "applied revision {} ({} bundle{} uploaded)",
                applied.revision,
                to_upload.len(),
                if to_upload.len() == 1 { "" } else { "s" }
            ),
        );
        if args.wait {
            wait_for_rollout(&client, timeout, args.output)?
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
            "bundles": request.bundles,
            "converged": outcome == Outcome::Success && args.wait,
        });
        let _ = writeln!(
            std::io::stdout().lock(),
            "{}",
            serde_json::to_string_pretty(&json).expect("json")
        );
    }
    Ok(outcome)
}

/// Follows the rollout until every registered device of the manifest runs its desired state;
/// fails when a device reports that the update failed or rolled back, or at the deadline.
#[allow(clippy::disallowed_methods)] // A synchronous command polling between requests.
pub fn wait_for_rollout(client: &Client, timeout: Duration, output: Output) -> CliResult {
    let deadline = Instant::now() + timeout;
    let mut bar: Option<indicatif::ProgressBar> = None;
    let mut warned = false;
    loop {
        let status: FleetStatus = client.get("/v1/status")?;
        let targets: Vec<_> = status
            .devices
            .iter()
            .filter(|d| d.in_manifest && d.registered)
            .collect();
        if !warned {
            warned = true;
            for d in status
                .devices
                .iter()
                .filter(|d| d.in_manifest && !d.registered)
            {
                say(
                    output,
                    &format!(
                        "warning: {} is in the manifest but not registered (`edgefn device add {}`); not waiting for it",
                        d.name, d.name
                    ),
                );
            }
            if output == Output::Text && std::io::stderr().is_terminal() {
                let b = indicatif::ProgressBar::new(targets.len() as u64);
                b.set_style(
                    indicatif::ProgressStyle::with_template(
                        "rolling out {bar:30} {pos}/{len} devices converged {msg}",
                    )
                    .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
                );
                bar = Some(b);
            }
        }
        let converged = targets.iter().filter(|d| d.converged).count();
        let failed: Vec<_> = targets
            .iter()
            .filter(|d| {
                d.report.as_ref().is_some_and(|r| {
                    matches!(r.state, DeviceState::Failed | DeviceState::RolledBack)
                        && r.target_digest.as_deref() == Some(d.desired_digest.as_str())
                })
            })
            .collect();
        if let Some(b) = &bar {
            b.set_position(converged as u64);
        }
        if !failed.is_empty() {
            if let Some(b) = &bar {
                b.abandon();
            }
            for d in &failed {
                let r = d.report.as_ref().expect("filtered on a report");
                eprintln!(
                    "{}: {:?}: {}",
                    d.name,
                    r.state,
                    r.message.as_deref().unwrap_or("no reason given")
                );
            }
            return Err(CliError::Cloud {
                message: format!("{} device(s) failed to run revision {}", failed.len(), status.revision),
                help: "see `edgefn status` for details; `edgefn rollback` returns to the previous revision".into(),
                api_code: None,
            });
        }
        if converged == targets.len() {
            if let Some(b) = &bar {
                b.finish_and_clear();
            }
            say(
                output,
                &format!(
                    "revision {}: {converged}/{} devices converged",
                    status.revision,
                    targets.len()
                ),
            );
            return Ok(Outcome::Success);
        }
        if Instant::now() >= deadline {
            if let Some(b) = &bar {
                b.abandon();
            }
            let pending: Vec<&str> = targets
                .iter()
                .filter(|d| !d.converged)
                .map(|d| d.name.as_str())
                .collect();
            return Err(CliError::Cloud {
                message: format!("timed out: {} of {} devices have not converged: {}", pending.len(), targets.len(), pending.join(", ")),
                help: "check that their agents are running and online (`edgefn status`), or wait longer with --timeout".into(),
                api_code: None,
            });
        }
        if bar.is_none() && output == Output::Text {
            eprintln!("waiting: {converged}/{} devices converged", targets.len());
        }
        std::thread::sleep(Duration::from_millis(500));
    }
}

//! What `edgefn apply`, `edgefn rollback` and `edgefn dev` share: submitting a revision (package,
//! upload what the control plane lacks, submit against the latest revision) and following its
//! rollout device by device.

use std::io::IsTerminal;
use std::time::{Duration, Instant};

use edgefn_schema::api::{
    ApplyResponse, DeviceState, DeviceStatus, FleetStatus, MissingBundlesRequest,
    MissingBundlesResponse, NewRevision, RevisionSummary,
};

use crate::args::Output;
use crate::client::Client;
use crate::error::{CliError, CliResult, Outcome};
use crate::package;
use crate::project::Project;

fn say(output: Output, line: &str) {
    if output == Output::Text {
        eprintln!("{line}");
    }
}

/// Parses a `--timeout` value.
pub(crate) fn parse_timeout(text: &str) -> Result<Duration, CliError> {
    parse_duration("--timeout", text)
}

/// Parses the value of a duration flag (`30s`, `5m`), naming `flag` in the error.
pub(crate) fn parse_duration(flag: &str, text: &str) -> Result<Duration, CliError> {
    text.parse::<edgefn_schema::Duration>()
        .map(|d| d.to_std())
        .map_err(|e| CliError::failed(flag, e.help, e))
}

/// The latest revision number (0 when none).
pub(crate) fn latest_revision(client: &Client) -> Result<u64, CliError> {
    let history: Vec<RevisionSummary> = client.get("/v1/revisions?limit=1")?;
    Ok(history.first().map_or(0, |r| r.number))
}

/// What [`submit`] did.
#[derive(Debug)]
pub(crate) struct Submitted {
    /// The cloud's answer.
    pub(crate) applied: ApplyResponse,
    /// Functions whose bundles were uploaded, and dependency layers (`NAME (dependencies,
    /// PLATFORM)`).
    pub(crate) uploaded: Vec<String>,
    /// Bytes uploaded.
    pub(crate) uploaded_bytes: u64,
    /// What was submitted.
    pub(crate) request: NewRevision,
}

/// Checks that every secret `manifest` names is set on the control plane; otherwise an error
/// listing every missing one, with who uses it (nothing is uploaded before this check).
pub(crate) fn check_secrets_set(
    client: &Client,
    manifest: &edgefn_schema::Manifest,
) -> Result<(), CliError> {
    let users = manifest.secret_users();
    if users.is_empty() {
        return Ok(());
    }
    let set: Vec<edgefn_schema::api::SecretInfo> = client.get("/v1/secrets")?;
    let missing: Vec<String> = users
        .iter()
        .filter(|(name, _)| !set.iter().any(|s| &s.name == *name))
        .map(|(name, who)| format!("`{name}` (used by {})", who.join(", ")))
        .collect();
    if missing.is_empty() {
        return Ok(());
    }
    Err(CliError::InvalidArgument {
        message: format!(
            "{} secret(s) the manifest names are not set on the control plane: {}; nothing was uploaded",
            missing.len(),
            missing.join(", ")
        ),
        help: "set each with `printf %s \"$VALUE\" | edgefn secret set NAME` (or `--from-file PATH`), then apply again".into(),
    })
}

/// How [`submit`] reports, builds layers and signs.
pub(crate) struct How<'a> {
    /// Progress as text (a bar on a terminal) or nothing but the result (JSON).
    pub(crate) output: Output,
    /// Layers built for this machine's platform and named for every platform (`edgefn dev`:
    /// its agents run here), instead of one per device platform.
    pub(crate) host_layers: bool,
    /// The key that signs each device's desired state (`--sign-key`), if any.
    pub(crate) sign: Option<&'a edgefn_schema::signing::SigningKey>,
    /// Overrides the manifest's `rollout:` (`apply --rollout none`).
    pub(crate) rollout: Option<edgefn_schema::api::RolloutOverride>,
}

/// Packages the project (bundles and dependency layers), uploads the archives the cloud lacks,
/// and submits the revision against the latest one, as `how` says.
pub(crate) fn submit(
    client: &Client,
    project: &Project,
    manifest: &edgefn_schema::Manifest,
    manifest_text: &str,
    provenance: edgefn_schema::api::Provenance,
    how: How<'_>,
) -> Result<Submitted, CliError> {
    let How {
        output,
        host_layers,
        sign,
        rollout,
    } = how;
    check_secrets_set(client, manifest)?;
    let bundles = package::package_all(&project.root, manifest)?;
    // Dependency layers: for each device's platform, or (`edgefn dev`, whose agents run here)
    // built for this machine and named for every platform.
    let host = if host_layers {
        Some(crate::layers::host_platform())
    } else {
        None
    };
    let layers = crate::layers::build_all(&project.root, manifest, host.transpose()?)?;
    let models = crate::models::prepare_all(&project.root, manifest)?;
    let parent = latest_revision(client)?;
    // Everything the revision names, each archive once: (what it is, digest, bytes).
    let mut archives: Vec<(String, &str, &[u8])> = bundles
        .iter()
        .map(|b| (b.function.clone(), b.digest.as_str(), b.bytes.as_slice()))
        .collect();
    for l in &layers {
        if !archives.iter().any(|(_, d, _)| *d == l.digest) {
            archives.push((
                format!("{} (dependencies, {})", l.function, l.platform),
                l.digest.as_str(),
                l.bytes.as_slice(),
            ));
        }
    }
    let mut digests: Vec<String> = archives.iter().map(|(_, d, _)| (*d).to_owned()).collect();
    digests.extend(models.iter().map(|m| m.artifact.digest.clone()));
    let (_, missing): (_, MissingBundlesResponse) =
        client.post("/v1/bundles/missing", &MissingBundlesRequest { digests })?;
    let to_upload: Vec<&(String, &str, &[u8])> = archives
        .iter()
        .filter(|(_, d, _)| missing.missing.iter().any(|m| m == d))
        .collect();
    // Models the cloud lacks, each once (two models may be the same file).
    let mut models_to_upload: Vec<&crate::models::Prepared> = Vec::new();
    for m in &models {
        if missing.missing.contains(&m.artifact.digest)
            && !models_to_upload
                .iter()
                .any(|u| u.artifact.digest == m.artifact.digest)
        {
            models_to_upload.push(m);
        }
    }
    let total: u64 = to_upload
        .iter()
        .map(|(_, _, b)| b.len() as u64)
        .sum::<u64>()
        + models_to_upload.iter().map(|m| m.bytes).sum::<u64>();
    let bar = (output == Output::Text
        && std::io::stderr().is_terminal()
        && (!to_upload.is_empty() || !models_to_upload.is_empty()))
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
    for (what, digest, bytes) in &to_upload {
        match &bar {
            Some(bar) => bar.set_message(what.clone()),
            None => say(
                output,
                &format!(
                    "uploading {what} ({} bytes, {})",
                    bytes.len(),
                    &digest[..12]
                ),
            ),
        }
        client.put_bytes(&format!("/v1/bundles/{digest}"), bytes.to_vec())?;
        if let Some(bar) = &bar {
            bar.inc(bytes.len() as u64);
        }
    }
    for m in &models_to_upload {
        let what = format!("model {}", m.name);
        match &bar {
            Some(bar) => bar.set_message(what.clone()),
            None => say(
                output,
                &format!(
                    "uploading {what} ({} bytes, {})",
                    m.bytes,
                    &m.artifact.digest[..12]
                ),
            ),
        }
        client.put_file(&format!("/v1/bundles/{}", m.artifact.digest), &m.file)?;
        if let Some(bar) = &bar {
            bar.inc(m.bytes);
        }
    }
    if let Some(bar) = bar {
        bar.finish_and_clear();
    }
    let bundles: std::collections::BTreeMap<String, String> = bundles
        .iter()
        .map(|b| (b.function.clone(), b.digest.clone()))
        .collect();
    let layers = crate::layers::digests(&layers);
    let model_artifacts = crate::models::artifacts(&models);
    let signatures = match sign {
        None => None,
        Some(key) => {
            let pins = crate::signing::latest_secret_versions(client, manifest)?;
            Some(crate::signing::sign_revision(
                client,
                key,
                manifest,
                &crate::signing::Artifacts {
                    bundles: &bundles,
                    layers: &layers,
                    models: &model_artifacts,
                },
                &pins,
                parent + 1,
            )?)
        }
    };
    let request = NewRevision {
        manifest: manifest_text.to_owned(),
        bundles,
        layers,
        models: model_artifacts,
        provenance,
        expected_parent: Some(parent),
        signatures,
        rollout,
    };
    let (_, applied): (_, ApplyResponse) = client.post("/v1/revisions", &request)?;
    Ok(Submitted {
        applied,
        uploaded: to_upload
            .iter()
            .map(|(what, _, _)| what.clone())
            .chain(models_to_upload.iter().map(|m| format!("model {}", m.name)))
            .collect(),
        uploaded_bytes: total,
        request,
    })
}

/// The revision a device runs, as a user reads it: a converged device runs what the latest
/// revision asks of it, even when it took that desired state at an older revision (one that
/// did not change it is not re-sent); otherwise the revision it reported.
pub(crate) fn running_revision(d: &DeviceStatus, latest: u64) -> Option<u64> {
    if d.converged {
        // Held at a rollout's baseline: it runs the baseline's state.
        Some(d.held.map_or(latest, |h| h.revision))
    } else {
        d.report.as_ref().and_then(|r| r.running_revision)
    }
}

/// One device's progress, as a line: its state and what it says, what its functions report
/// when they fail, and (with `seen`) when it last reported.
pub(crate) fn progress_line(d: &DeviceStatus, revision: u64, seen: bool) -> String {
    let Some(r) = &d.report else {
        return format!("{}: never seen (is its agent running and online?)", d.name);
    };
    let seen = d
        .last_seen_ms
        .filter(|_| seen)
        .map(|ms| format!(" (reported {})", crate::human::ago(ms)))
        .unwrap_or_default();
    if d.converged {
        return match d.held {
            Some(h) => format!("{}: {}", d.name, held_words(&h)),
            None => format!("{}: converged, runs revision {revision}", d.name),
        };
    }
    let state = serde_json::to_value(r.state)
        .ok()
        .and_then(|v| v.as_str().map(str::to_owned))
        .unwrap_or_default();
    let mut line = format!("{}: {state}", d.name);
    if let Some(m) = r.message.as_deref().filter(|m| !m.is_empty()) {
        line.push_str(": ");
        line.push_str(m);
    }
    let failing: Vec<String> = r
        .functions
        .iter()
        .filter(|f| f.last_error.is_some() || f.restarts > 0)
        .map(|f| {
            format!(
                "{} {} ({} restarts{})",
                f.binding,
                f.state,
                f.restarts,
                f.last_error
                    .as_deref()
                    .map(|e| format!(", last error: {e}"))
                    .unwrap_or_default()
            )
        })
        .collect();
    if !failing.is_empty() {
        line.push_str("; ");
        line.push_str(&failing.join("; "));
    }
    line.push_str(&seen);
    line
}

/// What a device converged on a rollout's baseline does, in words: `held at revision 1: the
/// rollout of revision 2 has not reached its stage yet`, or `back on revision 1: the rollout of
/// revision 2 was aborted`.
pub(crate) fn held_words(h: &edgefn_schema::api::Held) -> String {
    if h.waiting() {
        format!(
            "held at revision {}: the rollout of revision {} ({}) has not reached its stage yet (`edgefn rollout status`)",
            h.revision,
            h.rollout_revision,
            h.rollout.as_str()
        )
    } else {
        format!(
            "back on revision {}: the rollout of revision {} {}",
            h.revision,
            h.rollout_revision,
            match h.rollout {
                edgefn_schema::api::RolloutState::Aborted => "was aborted",
                _ => "halted",
            }
        )
    }
}

/// Whether a device's report says the update to its desired state failed.
pub(crate) fn has_failed(d: &DeviceStatus) -> bool {
    d.report.as_ref().is_some_and(|r| {
        matches!(r.state, DeviceState::Failed | DeviceState::RolledBack)
            && r.target_digest.as_deref() == Some(d.desired_digest.as_str())
    })
}

/// Where the rollout's progress goes: one live line per device on a terminal; elsewhere a plain
/// line each time a device's line changes (never the same line twice).
enum Progress {
    Live(
        indicatif::MultiProgress,
        Vec<(String, indicatif::ProgressBar)>,
    ),
    Plain(std::collections::HashMap<String, String>),
    Quiet,
}

impl Progress {
    fn new(output: Output) -> Self {
        match output {
            Output::Text if std::io::stderr().is_terminal() => {
                Progress::Live(indicatif::MultiProgress::new(), Vec::new())
            }
            Output::Text => Progress::Plain(Default::default()),
            Output::Json => Progress::Quiet,
        }
    }

    /// Shows a device's line; `d` and `revision` make it.
    fn show(&mut self, d: &DeviceStatus, revision: u64) {
        let name = d.name.as_str();
        match self {
            Progress::Live(multi, bars) => {
                let bar = match bars.iter().find(|(n, _)| n == name) {
                    Some((_, b)) => b.clone(),
                    None => {
                        let b = multi.add(indicatif::ProgressBar::new_spinner());
                        b.set_style(
                            indicatif::ProgressStyle::with_template("{spinner} {wide_msg}")
                                .unwrap_or_else(|_| indicatif::ProgressStyle::default_spinner()),
                        );
                        b.enable_steady_tick(Duration::from_millis(120));
                        bars.push((name.to_owned(), b.clone()));
                        b
                    }
                };
                bar.set_message(progress_line(d, revision, true));
            }
            Progress::Plain(last) => {
                // Without the time since its report, which changes at every poll.
                let line = progress_line(d, revision, false);
                if last.get(name) != Some(&line) {
                    eprintln!("{line}");
                    last.insert(name.to_owned(), line);
                }
            }
            Progress::Quiet => {}
        }
    }

    /// Ends the live display, leaving each device's last line on the screen.
    fn finish(&mut self) {
        if let Progress::Live(_, bars) = self {
            for (_, b) in bars.iter() {
                b.finish();
            }
        }
    }
}

/// Follows the rollout until every registered device of the manifest runs its desired state;
/// fails when a device reports that the update failed or rolled back, or at the deadline, naming
/// each device that did not converge and what it last said.
#[allow(clippy::disallowed_methods)] // A synchronous command polling between requests.
pub(crate) fn wait_for_rollout(client: &Client, timeout: Duration, output: Output) -> CliResult {
    let deadline = Instant::now() + timeout;
    let mut progress: Option<Progress> = None;
    loop {
        let status: FleetStatus = client.get("/v1/status")?;
        let targets: Vec<&DeviceStatus> = status
            .devices
            .iter()
            .filter(|d| d.in_manifest && d.registered)
            .collect();
        let progress = progress.get_or_insert_with(|| {
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
            Progress::new(output)
        });
        for d in &targets {
            progress.show(d, status.revision);
        }
        let converged = targets.iter().filter(|d| d.converged).count();
        let failed: Vec<&&DeviceStatus> = targets.iter().filter(|d| has_failed(d)).collect();
        if !failed.is_empty() {
            progress.finish();
            return Err(CliError::Cloud {
                message: format!(
                    "{} of {} devices failed to run revision {}: {}",
                    failed.len(),
                    targets.len(),
                    status.revision,
                    failed.iter().map(|d| d.name.as_str()).collect::<Vec<_>>().join(", ")
                ),
                help: "see what each device said above, or `edgefn status DEVICE`; `edgefn rollback` returns to the previous revision".into(),
            });
        }
        if converged == targets.len() {
            progress.finish();
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
            progress.finish();
            let pending: Vec<String> = targets
                .iter()
                .filter(|d| !d.converged)
                .map(|d| format!("\n  {}", progress_line(d, status.revision, true)))
                .collect();
            return Err(CliError::Cloud {
                message: format!(
                    "timed out after {}s: {} of {} devices have not converged:{}",
                    timeout.as_secs(),
                    pending.len(),
                    targets.len(),
                    pending.concat()
                ),
                help: "a device never seen or not reporting for long is offline or its agent is not running; otherwise wait longer with --timeout".into(),
            });
        }
        std::thread::sleep(Duration::from_millis(500));
    }
}

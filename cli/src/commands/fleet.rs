//! `edgefn status`, `edgefn history` and `edgefn rollback`.

use std::io::Write;

use edgefn_schema::api::{ApplyResponse, FleetStatus, RevisionSummary, RollbackRequest};

use crate::args::{HistoryArgs, Output, RollbackArgs, StatusArgs};
use crate::client::Client;
use crate::error::{CliError, CliResult, Outcome};

fn json_out<T: serde::Serialize>(v: &T) {
    let _ = writeln!(
        std::io::stdout().lock(),
        "{}",
        serde_json::to_string_pretty(v).expect("json")
    );
}

/// `edgefn status [DEVICE]`.
pub(crate) fn status(args: &StatusArgs) -> CliResult {
    let client = Client::from_args(args.cloud.cloud.as_deref(), args.cloud.token.as_deref())?;
    let mut fleet: FleetStatus = client.get("/v1/status")?;
    if let Some(name) = &args.device {
        fleet.devices.retain(|d| &d.name == name);
        if fleet.devices.is_empty() {
            return Err(CliError::InvalidArgument {
                message: format!("no device `{name}` is registered or in the latest manifest"),
                help: "see `edgefn status` for the fleet".into(),
            });
        }
    }
    if args.output == Output::Json {
        json_out(&fleet);
        return Ok(Outcome::Success);
    }
    let drift = crate::drift::detect(&client)?;
    if fleet.devices.is_empty() {
        eprintln!(
            "{}, and no device is registered: `edgefn apply` in the project applies it, `edgefn device add NAME` registers a device",
            if fleet.revision == 0 {
                "nothing is applied yet".to_owned()
            } else {
                format!("revision {} names no device", fleet.revision)
            }
        );
        return Ok(Outcome::Success);
    }
    // A change made outside git: said, with what this checkout (if run in one) lacks of it.
    let outside = crate::drift::detect_outside_git(&client)?.and_then(|o| {
        let local = crate::project::Project::locate(None)
            .ok()
            .and_then(|p| p.read_manifest().ok())
            .and_then(|s| edgefn_schema::load(&s, None).ok())
            .map(|l| l.manifest);
        match local {
            Some(m) => {
                let undone = o.undone_by(&m);
                (!undone.is_empty()).then(|| {
                    format!(
                        "note: {}; git does not have it: this checkout lacks {}; `edgefn diff` says what an apply would do",
                        o.describe(),
                        undone.join("; ")
                    )
                })
            }
            None => Some(format!(
                "note: {}; git does not have it unless someone committed the same change",
                o.describe()
            )),
        }
    });
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "revision {}", fleet.revision);
    if let Some(line) = outside {
        let _ = writeln!(out, "{line}");
    }
    if let Some(d) = drift {
        let _ = writeln!(
            out,
            "note: {}; `edgefn diff` in the project says whether git describes it and what an apply would do",
            d.describe()
        );
    }
    let _ = writeln!(
        out,
        "{:<20} {:<10} {:<10} {:<12} {:<10} MESSAGE",
        "DEVICE", "DESIRED", "RUNNING", "STATE", "SEEN"
    );
    for d in &fleet.devices {
        let running = crate::rollout::running_revision(d, fleet.revision)
            .map_or("-".to_owned(), |r| r.to_string());
        let state = match (&d.report, d.registered) {
            (_, false) => "unregistered".to_owned(),
            (None, true) => "never seen".to_owned(),
            // Converged on the baseline while a rollout has not reached it: not "running" the
            // latest, but waiting for its stage.
            (Some(_), _) if d.converged && d.held.is_some_and(|h| h.waiting()) => "held".to_owned(),
            (Some(r), _) => serde_json::to_value(r.state)
                .ok()
                .and_then(|v| v.as_str().map(str::to_owned))
                .unwrap_or_default(),
        };
        let desired = if d.in_manifest {
            fleet.revision.to_string()
        } else {
            "-".to_owned()
        };
        let seen = d.last_seen_ms.map_or("-".to_owned(), crate::human::ago);
        let mut message = d
            .report
            .as_ref()
            .and_then(|r| r.message.clone())
            .unwrap_or_default();
        if let (true, Some(h)) = (d.converged, d.held) {
            message = crate::rollout::held_words(&h);
        } else if d.converged {
            let took = d.report.as_ref().and_then(|r| r.running_revision);
            message = match took {
                // The agent's own words name the revision it took the state at.
                Some(r) if r < fleet.revision => {
                    format!("converged (its desired state is unchanged since revision {r})")
                }
                // The agent's own "running revision N" says less than "converged".
                _ if message.is_empty() || message.starts_with("running revision") => {
                    "converged".into()
                }
                _ => format!("converged; {message}"),
            };
        }
        // A dead link is news even on a converged device: routes to and from the cloud stop.
        if let Some(l) = d
            .report
            .as_ref()
            .and_then(|r| r.link.as_ref())
            .filter(|l| !l.up)
        {
            message = format!(
                "MQTT link down since {}: {}{}{message}",
                crate::human::ago(l.since_ms),
                l.last_error.as_deref().unwrap_or("not connected yet"),
                if message.is_empty() { "" } else { "; " }
            );
        }
        let _ = writeln!(
            out,
            "{:<20} {:<10} {:<10} {:<12} {:<10} {message}",
            d.name, desired, running, state, seen
        );
        if args.device.is_some() {
            if let Some(l) = d.report.as_ref().and_then(|r| r.link.as_ref()) {
                let _ = writeln!(
                    out,
                    "  link to {}: {} since {}{}",
                    l.broker,
                    if l.up { "up" } else { "DOWN" },
                    crate::human::ago(l.since_ms),
                    l.last_error
                        .as_deref()
                        .map(|e| format!(" (last error: {e})"))
                        .unwrap_or_default()
                );
            }
            if let Some(o) = d.report.as_ref().and_then(|r| r.outbox) {
                let _ = writeln!(
                    out,
                    "  outbox: {} pending ({} bytes), {} sent, {} dropped for its bounds, {} set aside (too large for the broker, or refused)",
                    o.pending, o.pending_bytes, o.sent, o.dropped, o.rejected
                );
            }
            if let Some(r) = &d.report {
                for f in &r.functions {
                    let _ = writeln!(
                        out,
                        "  {:<18} {:<12} restarts {:<4} invocations {:<8} errors {:<6} {}",
                        f.binding,
                        f.state,
                        f.restarts,
                        f.invocations,
                        f.errors,
                        f.last_error.as_deref().unwrap_or("")
                    );
                }
            }
        }
    }
    Ok(Outcome::Success)
}

/// `edgefn history`.
pub(crate) fn history(args: &HistoryArgs) -> CliResult {
    let client = Client::from_args(args.cloud.cloud.as_deref(), args.cloud.token.as_deref())?;
    let list: Vec<RevisionSummary> = client.get(&format!("/v1/revisions?limit={}", args.limit))?;
    if args.output == Output::Json {
        json_out(&list);
        return Ok(Outcome::Success);
    }
    if list.is_empty() {
        eprintln!("no revision yet: `edgefn apply` in the project creates the first");
        return Ok(Outcome::Success);
    }
    let mut out = std::io::stdout().lock();
    let _ = writeln!(
        out,
        "{:<6} {:<10} {:<10} {:<14} {:<24} NOTE",
        "REV", "WHEN", "COMMIT", "BRANCH", "AUTHOR"
    );
    for r in &list {
        let p = &r.provenance;
        let commit = p.commit.as_deref().map_or("-".to_owned(), |c| {
            c.chars().take(8).collect::<String>() + if p.dirty { "+" } else { "" }
        });
        let note = match r.rollback_of {
            Some(n) => format!("rollback to {n}"),
            None => p.message.clone().unwrap_or_default(),
        };
        let author: String = p
            .author
            .as_deref()
            .unwrap_or("-")
            .chars()
            .take(24)
            .collect();
        let _ = writeln!(
            out,
            "{:<6} {:<10} {:<10} {:<14} {:<24} {note}",
            r.number,
            crate::human::ago(r.created_ms),
            commit,
            p.branch.as_deref().unwrap_or("-"),
            author
        );
    }
    Ok(Outcome::Success)
}

/// `edgefn rollback [REV]`.
pub(crate) fn rollback(args: &RollbackArgs) -> CliResult {
    let timeout = crate::rollout::parse_timeout(&args.timeout)?;
    let client = Client::from_args(args.cloud.cloud.as_deref(), args.cloud.token.as_deref())?;
    let sign_key = crate::signing::load_key(args.sign_key.as_deref())?;
    let parent = crate::rollout::latest_revision(&client)?;
    let to = args.revision.unwrap_or(parent.saturating_sub(1));
    let signatures = match &sign_key {
        // Nothing to sign: the control plane says why there is nothing to roll back to.
        Some(key) if to >= 1 => sign_rollback(&client, key, to, parent)?,
        _ => None,
    };
    let (_, applied): (_, ApplyResponse) = client.post(
        "/v1/rollback",
        &RollbackRequest {
            to: args.revision,
            expected_parent: Some(parent),
            signatures,
        },
    )?;
    if args.output == Output::Json {
        json_out(&applied);
    } else if applied.created {
        eprintln!(
            "rolled back: revision {} applies revision {} again",
            applied.revision,
            args.revision.unwrap_or(parent.saturating_sub(1))
        );
    } else {
        eprintln!(
            "no changes: revision {} already has that content",
            applied.revision
        );
    }
    if applied.created && args.wait {
        return crate::rollout::wait_for_rollout(&client, timeout, args.output);
    }
    Ok(Outcome::Success)
}

/// The signatures of a rollback to revision `to`, made as revision `parent + 1`: `to`'s
/// manifest, bundles and layers, with the secret versions it ran with (the latest for any it lacks),
/// as the control plane pins them. `None` when `to` does not exist or no longer validates (the
/// control plane then says so).
fn sign_rollback(
    client: &Client,
    key: &edgefn_schema::signing::SigningKey,
    to: u64,
    parent: u64,
) -> Result<Option<edgefn_schema::api::RevisionSignatures>, crate::error::CliError> {
    let old: edgefn_schema::api::Revision = match client.get(&format!("/v1/revisions/{to}")) {
        Ok(r) => r,
        Err(_) => return Ok(None),
    };
    let source = edgefn_schema::Source::new("edgefn.yaml", old.manifest.as_str());
    let Ok(loaded) = edgefn_schema::load(&source, None) else {
        return Ok(None);
    };
    let mut pins = crate::signing::latest_secret_versions(client, &loaded.manifest)?;
    pins.extend(old.secrets.clone());
    crate::signing::sign_revision(
        client,
        key,
        &loaded.manifest,
        &crate::signing::Artifacts {
            bundles: &old.bundles,
            layers: &old.layers,
            models: &old.models,
        },
        &pins,
        parent + 1,
    )
    .map(Some)
}

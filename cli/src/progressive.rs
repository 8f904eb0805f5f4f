//! Following a progressive rollout to its end, and saying where it stands: shared by `edgefn
//! rollout`, `apply --wait` and `secret set --wait`.

use std::io::Write;
use std::time::{Duration, Instant};

use edgefn_schema::api::{RolloutDeviceState, RolloutState, RolloutStatus};

use crate::args::Output;
use crate::client::Client;
use crate::error::{CliError, CliResult, Outcome};

/// Prints the rollout: JSON, or [`describe`]'s text.
pub(crate) fn print(status: &RolloutStatus, output: Output) {
    let mut out = std::io::stdout().lock();
    let _ = match output {
        Output::Json => writeln!(
            out,
            "{}",
            serde_json::to_string_pretty(status).expect("json")
        ),
        Output::Text => write!(out, "{}", describe(status)),
    };
}

/// The rollout as text: a headline, the reason, then each stage's devices by state.
pub(crate) fn describe(s: &RolloutStatus) -> String {
    let mut text = format!(
        "revision {}: rollout {} at stage {}/{} (baseline revision {})\n",
        s.revision,
        s.state.as_str(),
        s.stage,
        s.stages.len(),
        s.baseline
    );
    if let Some(r) = &s.reason {
        text.push_str(&format!("  {r}\n"));
    }
    for (i, stage) in s.stages.iter().enumerate() {
        let mut by_state: std::collections::BTreeMap<&str, Vec<&str>> = Default::default();
        for d in s.devices.iter().filter(|d| d.stage == i + 1) {
            by_state
                .entry(state_name(d.state))
                .or_default()
                .push(d.name.as_str());
        }
        let states: Vec<String> = by_state
            .iter()
            .map(|(k, v)| format!("{k}: {}", v.join(", ")))
            .collect();
        text.push_str(&format!(
            "  stage {} ({} device{}, bake {}, maxFailures {}){}{}\n",
            i + 1,
            stage.devices.len(),
            if stage.devices.len() == 1 { "" } else { "s" },
            crate::human::duration(stage.bake_ms),
            stage.max_failures,
            if states.is_empty() { "" } else { ": " },
            states.join("; ")
        ));
    }
    text
}

fn state_name(s: RolloutDeviceState) -> &'static str {
    match s {
        RolloutDeviceState::Waiting => "waiting",
        RolloutDeviceState::Pending => "pending",
        RolloutDeviceState::Converged => "converged",
        RolloutDeviceState::Failed => "failed",
        RolloutDeviceState::Reverted => "reverted",
    }
}

/// Follows the rollout of `revision` until it ends: success when it completes, an error
/// when it halts, is aborted or superseded, or `timeout` passes.
#[allow(clippy::disallowed_methods)] // A synchronous command polling between requests.
pub(crate) fn follow(
    client: &Client,
    revision: u64,
    timeout: Duration,
    output: Output,
) -> CliResult {
    let deadline = Instant::now() + timeout;
    let mut last = (0, None);
    loop {
        let status: RolloutStatus = client.get("/v1/rollout")?;
        if status.revision != revision {
            return Err(CliError::Cloud {
                message: format!(
                    "the rollout of revision {revision} was superseded by revision {}",
                    status.revision
                ),
                help: "`edgefn rollout status` shows the newer rollout".into(),
            });
        }
        if output == Output::Text && last != (status.stage, Some(status.state)) {
            eprintln!(
                "revision {revision}: stage {}/{} {}",
                status.stage,
                status.stages.len(),
                status.state.as_str()
            );
            last = (status.stage, Some(status.state));
        }
        if status.state.is_final() {
            if output == Output::Json {
                print(&status, output);
            } else {
                eprint!("{}", describe(&status));
            }
            if status.state == RolloutState::Completed {
                return Ok(Outcome::Success);
            }
            return Err(CliError::Cloud {
                message: format!(
                    "the rollout of revision {revision} {}: {}",
                    status.state.as_str(),
                    status.reason.as_deref().unwrap_or("no reason given")
                ),
                help: format!(
                    "every device is back on revision {}; fix the release and apply again (`edgefn status DEVICE` shows what each device said)",
                    status.baseline
                ),
            });
        }
        if Instant::now() >= deadline {
            return Err(CliError::Cloud {
                message: format!(
                    "timed out after {}s following the rollout of revision {revision} (still {} at stage {}/{})",
                    timeout.as_secs(),
                    status.state.as_str(),
                    status.stage,
                    status.stages.len()
                ),
                help:
                    "the rollout goes on in the control plane; `edgefn rollout status` follows it"
                        .into(),
            });
        }
        std::thread::sleep(Duration::from_millis(500));
    }
}

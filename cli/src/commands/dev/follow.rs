//! Following a change to the devices of the session: which converged, which failed, and when.

use std::time::{Duration, Instant};

use edgefn_schema::api::FleetStatus;

use super::agents::DevAgent;
use super::interrupt::Interrupt;
use super::output::say;
use crate::client::Client;

/// Waits until every running device converges (or fails), printing each as it does; returns
/// early on Ctrl-C, when `pending()` says a newer change waits, or after a minute, saying which
/// devices did not converge and what they last said. Agents that stop say why.
///
/// The control plane's status is polled every 100 ms (a remote poll: it offers no change
/// stream); Ctrl-C ends the wait at once.
pub(super) fn follow(
    client: &Client,
    agents: &mut [DevAgent],
    rt: &tokio::runtime::Runtime,
    started: Instant,
    interrupt: &Interrupt,
    pending: impl Fn() -> bool,
) {
    let mut done: Vec<String> = Vec::new();
    let mut last: Option<FleetStatus> = None;
    loop {
        for a in agents.iter_mut() {
            a.reap(rt);
            if a.stopped.is_some() && !done.contains(&a.name) {
                done.push(a.name.clone());
            }
        }
        if done.len() >= agents.len() || interrupt.is_set() {
            return;
        }
        if pending() {
            say("  a newer change is waiting: applying it without waiting for the devices");
            return;
        }
        if started.elapsed() >= Duration::from_secs(60) {
            let status = last.as_ref();
            for a in agents.iter().filter(|a| !done.contains(&a.name)) {
                let line = status
                    .and_then(|s| {
                        s.devices
                            .iter()
                            .find(|d| d.name == a.name)
                            .map(|d| crate::rollout::progress_line(d, s.revision, true))
                    })
                    .unwrap_or_else(|| format!("{}: no report", a.name));
                say(format!("  not converged after 60 s: {line}"));
            }
            say("  (still watching: save again to re-apply, or see `edgefn status`)");
            return;
        }
        if let Ok(status) = client.get::<FleetStatus>("/v1/status") {
            for d in &status.devices {
                if !agents.iter().any(|a| a.name == d.name) || done.contains(&d.name) {
                    continue;
                }
                let Some(r) = &d.report else { continue };
                if d.converged {
                    say(format!(
                        "  {} runs revision {} ({} ms after the change)",
                        d.name,
                        crate::rollout::running_revision(d, status.revision).unwrap_or(0),
                        started.elapsed().as_millis()
                    ));
                    done.push(d.name.clone());
                } else if crate::rollout::has_failed(d) {
                    let state = serde_json::to_value(r.state)
                        .ok()
                        .and_then(|v| v.as_str().map(str::to_owned))
                        .unwrap_or_default();
                    say(format!(
                        "  {} {state}: {}",
                        d.name,
                        r.message.as_deref().unwrap_or("")
                    ));
                    done.push(d.name.clone());
                }
            }
            last = Some(status);
        }
        interrupt.wait(Duration::from_millis(100));
    }
}

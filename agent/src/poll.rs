//! Polling: following the desired state with a long-poll, and starting an update when it
//! changes. After a refused revision the agent long-polls again at once, for a desired state
//! other than the refused one; after a failure it waits (exponential backoff with jitter,
//! [`crate::retry::POLL`]).

use std::sync::Arc;

use edgefn_schema::api::DeviceState;
use tokio::sync::watch;

use crate::AgentError;
use crate::cloud::CloudError;
use crate::update::{Outcome, Updater};

/// Follows the desired state until `stop`, or until the cloud refuses the token.
pub(crate) async fn run(
    updater: Arc<Updater>,
    mut stop: watch::Receiver<bool>,
    poll_wait: std::time::Duration,
    trust: crate::trust::Trust,
) -> Result<(), AgentError> {
    let u = &updater;
    let mut attempt = 0u32;
    // A desired state this device refused: the next long-poll waits for one that differs
    // from it (not from the running release, which the cloud would answer at once with the
    // refused one again), so a fixed revision arrives the moment it is applied.
    let mut refused: Option<String> = None;
    // The revision of a state refused for its signature: the next long-poll also ends when a
    // newer revision exists, which may serve the same state signed anew.
    let mut refused_revision: Option<u64> = None;
    // The newest revision served to this run: a control-plane process behind a balancer that
    // has not heard of it yet catches up rather than answer an older one.
    let mut seen: Option<u64> = None;
    loop {
        let running = u.bus.live().digest().await;
        let known = refused.clone().or_else(|| running.clone());
        let polled = tokio::select! {
            r = u.cloud.desired(known.as_deref(), refused_revision, seen, poll_wait) => r,
            _ = stop.wait_for(|s| *s) => return Ok(()),
        };
        let wait = match polled {
            Ok(None) => {
                attempt = 0;
                continue;
            }
            Ok(Some(desired)) => {
                seen = seen.max(Some(desired.revision));
                refused = None;
                refused_revision = None;
                if trust.checks() {
                    let accepted = u.state.lock().accepted_revision;
                    if let Some(reason) = trust.refusal(&desired, accepted) {
                        // Said once per state; the running release is left alone.
                        let already = u.reporter.get().target.as_deref()
                            == Some(desired.digest.as_str())
                            && u.reporter.get().message.as_deref() == Some(reason.as_str());
                        if !already {
                            tracing::warn!("{reason}");
                            u.reporter.set(
                                DeviceState::Failed,
                                Some(reason),
                                Some(desired.digest.clone()),
                            );
                        }
                        refused_revision = Some(desired.revision);
                        refused = Some(desired.digest);
                        continue;
                    }
                    if accepted.is_none_or(|n| desired.revision > n) {
                        u.state.lock().accepted_revision = Some(desired.revision);
                        if let Err(e) = u.state.save().await {
                            tracing::warn!("could not write the agent's state: {e}");
                        }
                    }
                }
                if u.state.lock().failed.contains(&desired.digest) {
                    // A revision asking again for what failed here (a rollback to a broken
                    // revision, say): not tried again, and said, so that the fleet's status
                    // does not show a device quietly running something else.
                    let already =
                        u.reporter.get().target.as_deref() == Some(desired.digest.as_str());
                    if !already {
                        let revision = desired.revision;
                        u.reporter.set(
                            DeviceState::Failed,
                            Some(format!(
                                "revision {revision} asks for a desired state that already failed on this device; not tried again (the release before it keeps running): apply a fix"
                            )),
                            Some(desired.digest.clone()),
                        );
                    }
                    refused = Some(desired.digest);
                    continue;
                }
                if Some(&desired.digest) == running.as_ref() {
                    // Already running it (the revert of a release that rolled back): the
                    // device is converged, whatever it reported about an older target.
                    let stale = matches!(
                        u.reporter.get().state,
                        DeviceState::RolledBack | DeviceState::Failed
                    );
                    if stale {
                        u.reporter.set(
                            DeviceState::Running,
                            Some(format!("running revision {}", desired.revision)),
                            None,
                        );
                    }
                    continue;
                }
                let (digest, revision) = (desired.digest.clone(), desired.revision);
                match u.update(desired).await {
                    Outcome::Done => {
                        attempt = 0;
                        if u.state.lock().failed.contains(&digest) {
                            refused = Some(digest);
                        }
                        continue;
                    }
                    // Not for good (a device node that may come): the next long-poll waits
                    // for another state or a newer revision; a restart tries it again.
                    Outcome::Refused => {
                        attempt = 0;
                        refused = Some(digest);
                        refused_revision = Some(revision);
                        continue;
                    }
                    // A download failed: wait before the next attempt, as for any outage.
                    Outcome::Interrupted => crate::retry::POLL.delay(attempt),
                }
            }
            Err(CloudError::Rejected(code)) => {
                return Err(AgentError::Rejected(CloudError::Rejected(code)));
            }
            Err(e) => {
                let wait = crate::retry::POLL.delay(attempt);
                tracing::warn!("{e}; retrying in {:.1} s", wait.as_secs_f64());
                wait
            }
        };
        attempt = attempt.saturating_add(1);
        tokio::select! {
            () = tokio::time::sleep(wait) => {}
            _ = stop.wait_for(|s| *s) => return Ok(()),
        }
    }
}

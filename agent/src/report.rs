//! Reporting: what the agent tells the control plane about itself. The update and the poll set
//! the state ([`Reporter::set`]); the report loop sends a status report at once after such a
//! change, within a second of any other change (function counters and states, the outbox, the
//! link), and every `reportInterval` in any case (the cloud sees the device alive).

use std::sync::{Arc, OnceLock};
use std::time::Duration;

use edgefn_schema::api::{DeviceState, StatusReport};
use tokio::sync::{Notify, watch};

use crate::bus::Bus;
use crate::cloud::CloudClient;
use crate::uplink::LinkState;

/// How often the report loop looks for a change to report: a status change reaches the cloud
/// within this long, not a whole `reportInterval` later.
const CHANGE_CHECK: Duration = Duration::from_secs(1);

/// What the agent last reported, or will.
#[derive(Debug, Clone)]
pub(crate) struct Reported {
    pub(crate) state: DeviceState,
    pub(crate) message: Option<String>,
    /// The digest the state is about (the update's target), when not the running one.
    pub(crate) target: Option<String>,
}

/// The device's reported state, and the loop that sends it.
#[derive(Debug)]
pub(crate) struct Reporter {
    cloud: CloudClient,
    bus: Arc<Bus>,
    reported: std::sync::Mutex<Reported>,
    now: Notify,
    /// The MQTT link's state, once the link is started.
    link: OnceLock<Arc<LinkState>>,
    interval: Duration,
}

impl Reporter {
    /// Reports `running` until told otherwise, every `interval` at least.
    pub(crate) fn new(cloud: CloudClient, bus: Arc<Bus>, interval: Duration) -> Reporter {
        Reporter {
            cloud,
            bus,
            reported: std::sync::Mutex::new(Reported {
                state: DeviceState::Running,
                message: None,
                target: None,
            }),
            now: Notify::new(),
            link: OnceLock::new(),
            interval,
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Reported> {
        self.reported
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Reports the link's state from now on.
    pub(crate) fn attach_link(&self, link: Arc<LinkState>) {
        let _ = self.link.set(link);
    }

    /// What will be reported.
    pub(crate) fn get(&self) -> Reported {
        self.lock().clone()
    }

    /// Sets the reported state (logged), and has it reported at once.
    pub(crate) fn set(&self, state: DeviceState, message: Option<String>, target: Option<String>) {
        match &message {
            Some(m) => tracing::info!(state = ?state, "{m}"),
            None => tracing::info!(state = ?state, "state"),
        }
        *self.lock() = Reported {
            state,
            message,
            target,
        };
        self.now.notify_one();
    }

    /// The status report as of now.
    async fn status(&self) -> StatusReport {
        let r = self.get();
        let active = self.bus.live().get().await;
        let o = self.bus.outbox().stats().await;
        StatusReport {
            running_digest: active.as_ref().map(|a| a.digest().to_owned()),
            running_revision: active.as_ref().map(|a| a.desired.revision),
            state: r.state,
            target_digest: r.target,
            message: r.message,
            outbox: Some(edgefn_schema::api::OutboxStatus {
                pending: o.pending,
                pending_bytes: o.pending_bytes,
                dropped: o.dropped,
                sent: o.sent,
                rejected: o.rejected,
            }),
            functions: match &active {
                Some(a) => a.status().await,
                None => Vec::new(),
            },
            link: self.link.get().map(|l| l.snapshot()),
        }
    }

    /// Reports until `stop` (see the module's documentation for when).
    pub(crate) async fn run(self: Arc<Self>, mut stop: watch::Receiver<bool>) {
        let mut sent: Option<StatusReport> = None;
        let mut sent_at = tokio::time::Instant::now();
        loop {
            let report = self.status().await;
            let due = sent_at.elapsed() >= self.interval;
            if due || sent.as_ref() != Some(&report) {
                match self.cloud.report(&report).await {
                    Ok(()) => {
                        sent = Some(report);
                        sent_at = tokio::time::Instant::now();
                    }
                    Err(e) => tracing::debug!("status report not sent: {e}"),
                }
            }
            tokio::select! {
                () = self.now.notified() => {}
                () = tokio::time::sleep(CHANGE_CHECK.min(self.interval)) => {}
                _ = stop.wait_for(|s| *s) => return,
            }
        }
    }
}

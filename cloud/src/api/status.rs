//! `GET /v1/status` and `GET /metrics`: how the fleet is doing, for people and for Prometheus.

use std::collections::HashSet;
use std::sync::Arc;

use axum::Json;
use axum::extract::State;
use axum::http::header;
use axum::response::{IntoResponse, Response};
use edgefn_schema::api::{DeviceStatus, FleetStatus, StatusReport};

use crate::error::ApiError;
use crate::registry::Caller;
use crate::state::AppState;

/// Whether a device whose last report is `r` runs exactly `desired`: it runs that digest, and
/// is not updating to something else. A failure it reports about another target (the revision
/// it rolled back from) does not count: a device already running the desired state — after a
/// `git revert` of a bad revision, say — is converged at once, whatever happened before.
pub(crate) fn converged(r: &StatusReport, desired: &str) -> bool {
    use edgefn_schema::api::DeviceState;
    r.running_digest.as_deref() == Some(desired)
        && match r.state {
            DeviceState::Running => true,
            DeviceState::RolledBack | DeviceState::Failed => {
                r.target_digest.as_deref() != Some(desired)
            }
            DeviceState::Updating => false,
        }
}

pub(super) async fn metrics(
    State(state): State<Arc<AppState>>,
    caller: Caller,
) -> Result<Response, ApiError> {
    caller.require_admin()?;
    let view = state.view();
    let registered = state.registry.device_count();
    let statuses = state.status_snapshot();
    let converged = statuses
        .iter()
        .filter(|(name, (r, _))| converged(r, &view.desired_for(name).digest))
        .count();
    let mut text = state.metrics.render(view.revision, registered, converged);
    // The devices' outboxes, as they last reported them.
    let (mut pending, mut dropped, mut rejected) = (0u64, 0u64, 0u64);
    let mut links_down = 0u64;
    for (r, _) in statuses.values() {
        if let Some(o) = &r.outbox {
            pending += o.pending;
            dropped += o.dropped;
            rejected += o.rejected;
        }
        if r.link.as_ref().is_some_and(|l| !l.up) {
            links_down += 1;
        }
    }
    text.push_str(&format!(
        "# HELP edgefn_devices_link_down Devices whose MQTT link to the broker was down at their last report.\n# TYPE edgefn_devices_link_down gauge\nedgefn_devices_link_down {links_down}\n"
    ));
    text.push_str(&format!(
        "# HELP edgefn_outbox_pending Messages waiting in devices' outboxes, as last reported.\n# TYPE edgefn_outbox_pending gauge\nedgefn_outbox_pending {pending}\n# HELP edgefn_outbox_dropped Messages devices dropped for their outbox bounds, as last reported.\n# TYPE edgefn_outbox_dropped gauge\nedgefn_outbox_dropped {dropped}\n# HELP edgefn_outbox_rejected Messages devices set aside because the broker cannot take them (too large, or refused), as last reported.\n# TYPE edgefn_outbox_rejected gauge\nedgefn_outbox_rejected {rejected}\n"
    ));
    if let Some(m) = state.messaging() {
        text.push_str(
            &m.hub
                .render_metrics(m.broker.as_ref().map(|b| b.connected())),
        );
    }
    Ok(([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], text).into_response())
}

pub(super) async fn fleet_status(
    State(state): State<Arc<AppState>>,
    caller: Caller,
) -> Result<Json<FleetStatus>, ApiError> {
    caller.require_admin()?;
    Ok(Json(fleet_status_of(&state)))
}

/// The fleet's status: every device of the latest manifest or registered, by name.
pub(crate) fn fleet_status_of(state: &AppState) -> FleetStatus {
    let view = state.view();
    let mut statuses = state.status_snapshot();
    let registered: HashSet<String> = state.registry.device_names().into_iter().collect();
    let mut names: Vec<String> = registered.iter().cloned().collect();
    if let Some(m) = &view.manifest {
        names.extend(m.devices.keys().cloned());
    }
    names.sort();
    names.dedup();
    let devices = names
        .into_iter()
        .map(|name| {
            let desired = view.desired_for(&name);
            let report = statuses.remove(&name);
            let converged = report
                .as_ref()
                .is_some_and(|(r, _)| converged(r, &desired.digest));
            DeviceStatus {
                registered: registered.contains(&name),
                in_manifest: view.devices.contains_key(&name),
                desired_digest: desired.digest.clone(),
                last_seen_ms: report.as_ref().map(|(_, at)| *at),
                report: report.map(|(r, _)| r),
                converged,
                labels: view
                    .manifest
                    .as_ref()
                    .and_then(|m| m.devices.get(&name))
                    .map(|d| d.labels.clone())
                    .unwrap_or_default(),
                held: view.held(&name),
                name,
            }
        })
        .collect();
    FleetStatus {
        revision: view.revision,
        devices,
    }
}

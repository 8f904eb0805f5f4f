//! `GET /v1/status/page`: one page of the fleet, filtered on the server, with the counts of the
//! whole fleet — what the console's overview shows, so that an open page costs one page of
//! devices at 10,000 devices, not the fleet. The console's live stream sends the same page again
//! when it changes (`/console/events?page=…`).

use std::collections::{BTreeMap, HashSet};
use std::sync::Arc;

use axum::Json;
use axum::extract::{Query, State};
use edgefn_schema::api::{DeviceState, DeviceStatus, StatusReport};
use edgefn_schema::console::{FleetCounts, FleetPage};
use serde::Deserialize;

use super::status::converged;
use crate::error::ApiError;
use crate::registry::Caller;
use crate::state::AppState;

/// Devices per page when the query names none.
const DEFAULT_PAGE_SIZE: u64 = 100;
/// Most devices per page.
const MAX_PAGE_SIZE: u64 = 500;
/// Longest filter text, in bytes.
const MAX_FILTER_BYTES: usize = 1024;

/// Which page, and the filters (all optional; all must match).
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct PageQuery {
    /// The page, from 0.
    #[serde(default)]
    pub(crate) page: u64,
    /// Devices per page (default 100, at most 500).
    pub(crate) size: Option<u64>,
    /// Part of the device's name.
    #[serde(default)]
    pub(crate) q: String,
    /// This device only (exact name).
    #[serde(default)]
    pub(crate) name: String,
    /// `KEY=VALUE[,KEY=VALUE…]`: devices with all these labels.
    #[serde(default)]
    pub(crate) label: String,
    /// `running`, `updating`, `failed`, `rolled_back`, `never seen`, `unregistered`,
    /// `converged` or `not converged`.
    #[serde(default)]
    pub(crate) state: String,
}

impl PageQuery {
    /// Checks the query's bounds; the labels it asks for.
    pub(crate) fn check(&self) -> Result<BTreeMap<String, String>, ApiError> {
        if [&self.q, &self.name, &self.label, &self.state]
            .iter()
            .any(|s| s.len() > MAX_FILTER_BYTES)
        {
            return Err(ApiError::bad_request(format!(
                "a filter is at most {MAX_FILTER_BYTES} bytes"
            )));
        }
        if self.size == Some(0) || self.size.is_some_and(|s| s > MAX_PAGE_SIZE) {
            return Err(ApiError::bad_request(format!(
                "a page holds 1 to {MAX_PAGE_SIZE} devices (`size`)"
            )));
        }
        const STATES: [&str; 8] = [
            "running",
            "updating",
            "failed",
            "rolled_back",
            "never seen",
            "unregistered",
            "converged",
            "not converged",
        ];
        if !self.state.is_empty() && !STATES.contains(&self.state.as_str()) {
            return Err(ApiError::bad_request(format!(
                "`state` is one of: {}",
                STATES.join(", ")
            )));
        }
        let mut labels = BTreeMap::new();
        for part in self
            .label
            .split(',')
            .map(str::trim)
            .filter(|p| !p.is_empty())
        {
            let Some((k, v)) = part.split_once('=') else {
                return Err(ApiError::bad_request(
                    "`label` is KEY=VALUE, or several separated by commas",
                ));
            };
            labels.insert(k.trim().to_owned(), v.trim().to_owned());
        }
        Ok(labels)
    }
}

/// The states [`state_name`] gives, in the order the counts are kept.
const STATE_NAMES: [&str; 6] = [
    "running",
    "updating",
    "failed",
    "rolled_back",
    "never seen",
    "unregistered",
];

/// A device's state as the overview names it.
fn state_name(registered: bool, report: Option<&StatusReport>) -> &'static str {
    match (registered, report) {
        (false, _) => "unregistered",
        (true, None) => "never seen",
        (true, Some(r)) => match r.state {
            DeviceState::Running => "running",
            DeviceState::Updating => "updating",
            DeviceState::Failed => "failed",
            DeviceState::RolledBack => "rolled_back",
        },
    }
}

/// One page of the fleet under `query` (checked by [`PageQuery::check`], giving `labels`).
pub(crate) fn fleet_page_of(
    state: &AppState,
    query: &PageQuery,
    labels: &BTreeMap<String, String>,
) -> FleetPage {
    let view = state.view();
    let registered: HashSet<String> = state.registry.device_names().into_iter().collect();
    let mut names: Vec<&String> = registered.iter().collect();
    if let Some(m) = &view.manifest {
        names.extend(m.devices.keys());
    }
    names.sort();
    names.dedup();
    let size = query.size.unwrap_or(DEFAULT_PAGE_SIZE);
    let no_labels = BTreeMap::new();
    state.with_statuses(|statuses| {
        let mut counts = FleetCounts::default();
        let mut by_state = [0u64; STATE_NAMES.len()];
        let mut matching = 0u64;
        let mut page = Vec::new();
        let skip = query.page.saturating_mul(size);
        for name in names {
            let report = statuses.get(name.as_str());
            // A device's desired state is looked up only when it is needed (a device that is
            // registered but not in the manifest has one computed on the spot).
            let is_converged =
                report.is_some_and(|(r, _)| converged(r, &view.desired_for(name).digest));
            let st = state_name(registered.contains(name), report.map(|(r, _)| r));
            counts.total += 1;
            counts.converged += u64::from(is_converged);
            let held = view.held(name);
            counts.held += u64::from(is_converged && held.is_some_and(|h| h.waiting()));
            by_state[STATE_NAMES.iter().position(|n| *n == st).unwrap_or(0)] += 1;
            let device_labels = view
                .manifest
                .as_ref()
                .and_then(|m| m.devices.get(name))
                .map_or(&no_labels, |d| &d.labels);
            let selected = (query.name.is_empty() || *name == query.name)
                && (query.q.is_empty() || name.contains(&query.q))
                && labels.iter().all(|(k, v)| device_labels.get(k) == Some(v))
                && match query.state.as_str() {
                    "" => true,
                    "converged" => is_converged,
                    "not converged" => !is_converged,
                    s => s == st,
                };
            if !selected {
                continue;
            }
            if matching >= skip && (page.len() as u64) < size {
                page.push(DeviceStatus {
                    registered: registered.contains(name),
                    in_manifest: view.devices.contains_key(name),
                    desired_digest: view.desired_for(name).digest.clone(),
                    last_seen_ms: report.map(|(_, at)| *at),
                    report: report.map(|(r, _)| r.clone()),
                    converged: is_converged,
                    labels: device_labels.clone(),
                    held,
                    name: name.clone(),
                });
            }
            matching += 1;
        }
        counts.by_state = STATE_NAMES
            .iter()
            .zip(by_state)
            .filter(|(_, n)| *n > 0)
            .map(|(s, n)| ((*s).to_owned(), n))
            .collect();
        FleetPage {
            revision: view.revision,
            counts,
            matching,
            page: query.page,
            page_size: size,
            devices: page,
        }
    })
}

pub(super) async fn fleet_page(
    State(state): State<Arc<AppState>>,
    caller: Caller,
    query: Result<Query<PageQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Json<FleetPage>, ApiError> {
    caller.require_admin()?;
    let Query(q) = query.map_err(|e| ApiError::bad_request(e.body_text()))?;
    let labels = q.check()?;
    Ok(Json(fleet_page_of(&state, &q, &labels)))
}

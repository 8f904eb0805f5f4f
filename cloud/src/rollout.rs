//! Progressive rollouts: a revision whose manifest has `rollout:` reaches the fleet stage by
//! stage.
//!
//! The rollout of the latest revision is one [`RolloutRecord`], stored in the store's `meta`
//! table (written in the same transaction as the revision it belongs to, then at each
//! transition) and held in [`crate::state::AppState`]. It decides which devices the fleet view
//! serves the new revision to ([`crate::fleet::Overlay`]); every other device is served the
//! *baseline*: the last revision that reached the whole fleet.
//!
//! [`drive`] runs every [`TICK`]: it advances a stage whose devices all ran the revision
//! converged for the stage's bake time, and halts the rollout — every device back on the
//! baseline — when a stage's failures pass its threshold, when a device has not reported the
//! revision running within the report deadline, or when the stage has not stayed healthy for
//! its bake time within deadline + bake. So a running rollout ends, with a reason, within
//! Σ (deadline + bake) of its start, paused time aside (a pause is an operator's hold).

use std::collections::{BTreeMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use edgefn_schema::api::{
    DeviceState, RolloutDevice, RolloutDeviceState, RolloutStageStatus, RolloutState,
    RolloutStatus, StatusReport,
};
use edgefn_schema::{Manifest, Rollout};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::fleet::FleetView;

/// How often the driver looks at the reports.
pub(crate) const TICK: Duration = Duration::from_millis(250);

/// The stored state of one revision's rollout.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct RolloutRecord {
    /// The revision rolled out.
    pub(crate) revision: u64,
    /// The revision everyone else runs.
    pub(crate) baseline: u64,
    /// The manifest's `rollout:` (as it was at apply time).
    pub(crate) spec: Rollout,
    /// The devices each stage adds, in the stable order.
    pub(crate) stages: Vec<Vec<String>>,
    /// Index of the current stage.
    pub(crate) stage: usize,
    pub(crate) state: RolloutState,
    pub(crate) reason: Option<String>,
    /// When the current stage started (ms since the epoch).
    pub(crate) stage_started_ms: u64,
    /// Since when every device of the current stage has run the revision converged.
    pub(crate) healthy_since_ms: Option<u64>,
    pub(crate) started_ms: u64,
    pub(crate) ended_ms: Option<u64>,
}

/// The stable order of a project's devices for rollouts: by sha256 of `project/name`. It does
/// not depend on the revision, so the same selector picks the same canaries each time, and it
/// spreads canaries across names rather than taking the alphabetically first.
fn stable_order(project: &str, names: impl Iterator<Item = String>) -> Vec<String> {
    let mut keyed: Vec<([u8; 32], String)> = names
        .map(|n| {
            let mut h = Sha256::new();
            h.update(project.as_bytes());
            h.update(b"/");
            h.update(n.as_bytes());
            (h.finalize().into(), n)
        })
        .collect();
    keyed.sort();
    keyed.into_iter().map(|(_, n)| n).collect()
}

/// Plans the stages of `spec` over `manifest`'s devices: the devices each stage adds.
pub(crate) fn plan(manifest: &Manifest, spec: &Rollout) -> Vec<Vec<String>> {
    let order = stable_order(&manifest.project, manifest.devices.keys().cloned());
    let mut reached: HashSet<String> = HashSet::new();
    let mut stages = Vec::new();
    for stage in &spec.stages {
        let candidates: Vec<&String> = order
            .iter()
            .filter(|n| {
                let d = &manifest.devices[*n];
                stage.labels.iter().all(|(k, v)| d.labels.get(k) == Some(v))
            })
            .collect();
        let want = match (stage.devices, stage.percent) {
            (Some(n), _) => (n as usize).min(candidates.len()),
            (None, Some(p)) => (candidates.len() * p as usize).div_ceil(100),
            (None, None) => candidates.len(),
        };
        let added: Vec<String> = candidates
            .into_iter()
            .take(want)
            .filter(|n| reached.insert((*n).clone()))
            .cloned()
            .collect();
        stages.push(added);
    }
    stages
}

impl RolloutRecord {
    /// A new rollout of `revision` over `baseline`, starting now.
    pub(crate) fn start(
        revision: u64,
        baseline: u64,
        manifest: &Manifest,
        spec: &Rollout,
        now_ms: u64,
    ) -> Self {
        Self {
            revision,
            baseline,
            stages: plan(manifest, spec),
            spec: spec.clone(),
            stage: 0,
            state: RolloutState::Running,
            reason: None,
            stage_started_ms: now_ms,
            healthy_since_ms: None,
            started_ms: now_ms,
            ended_ms: None,
        }
    }

    /// The devices served the new revision: every stage reached while it runs; none once it
    /// halted or was aborted; `None` (everyone) once completed.
    pub(crate) fn reached(&self) -> Option<HashSet<String>> {
        match self.state {
            RolloutState::Running | RolloutState::Paused => Some(
                self.stages[..=self.stage.min(self.stages.len().saturating_sub(1))]
                    .iter()
                    .flatten()
                    .cloned()
                    .collect(),
            ),
            RolloutState::Halted | RolloutState::Aborted => Some(HashSet::new()),
            RolloutState::Completed | RolloutState::Superseded => None,
        }
    }

    /// Ends the rollout in `state` for `reason`.
    pub(crate) fn end(&mut self, state: RolloutState, reason: String, now_ms: u64) {
        self.state = state;
        self.reason = Some(reason);
        self.ended_ms = Some(now_ms);
        self.healthy_since_ms = None;
    }

    /// The stage index of each device.
    fn stage_of(&self) -> BTreeMap<&str, usize> {
        self.stages
            .iter()
            .enumerate()
            .flat_map(|(i, s)| s.iter().map(move |n| (n.as_str(), i)))
            .collect()
    }

    /// The rollout as `GET /v1/rollout` answers it.
    pub(crate) fn status(
        &self,
        view: &FleetView,
        reports: &std::collections::HashMap<String, (StatusReport, u64)>,
    ) -> RolloutStatus {
        let mut devices: Vec<RolloutDevice> = self
            .stage_of()
            .into_iter()
            .map(|(name, stage)| {
                let state = match self.state {
                    RolloutState::Halted | RolloutState::Aborted if stage <= self.stage => {
                        RolloutDeviceState::Reverted
                    }
                    _ if stage > self.stage && self.state != RolloutState::Completed => {
                        RolloutDeviceState::Waiting
                    }
                    _ => judge(view, name, reports.get(name).map(|(r, _)| r)).0,
                };
                RolloutDevice {
                    name: name.to_owned(),
                    stage: stage + 1,
                    state,
                }
            })
            .collect();
        devices.sort_by(|a, b| a.stage.cmp(&b.stage).then(a.name.cmp(&b.name)));
        RolloutStatus {
            revision: self.revision,
            baseline: self.baseline,
            state: self.state,
            reason: self.reason.clone(),
            stage: self.stage + 1,
            stages: self
                .stages
                .iter()
                .zip(&self.spec.stages)
                .map(|(d, s)| RolloutStageStatus {
                    devices: d.clone(),
                    bake_ms: s.bake.map_or(0, |b| b.millis()),
                    max_failures: s.max_failures.unwrap_or_default().to_string(),
                })
                .collect(),
            deadline_ms: self.spec.deadline().millis(),
            stage_started_ms: self.stage_started_ms,
            healthy_since_ms: self.healthy_since_ms,
            started_ms: self.started_ms,
            ended_ms: self.ended_ms,
            devices,
        }
    }
}

/// How device `name` does on the revision of `view` (its own state, not the overlay's), and
/// why when it failed.
fn judge(
    view: &FleetView,
    name: &str,
    report: Option<&StatusReport>,
) -> (RolloutDeviceState, Option<String>) {
    let digest = view.own_desired_for(name).digest.clone();
    let Some(r) = report else {
        return (RolloutDeviceState::Pending, None);
    };
    if crate::api::converged(r, &digest) {
        return (RolloutDeviceState::Converged, None);
    }
    if matches!(r.state, DeviceState::RolledBack | DeviceState::Failed)
        && r.target_digest.as_deref() == Some(digest.as_str())
    {
        let what = match r.state {
            DeviceState::RolledBack => "rolled back",
            _ => "failed",
        };
        let why = r.message.clone().unwrap_or_default();
        return (
            RolloutDeviceState::Failed,
            Some(if why.is_empty() {
                format!("{name} {what}")
            } else {
                format!("{name} {what}: {why}")
            }),
        );
    }
    (RolloutDeviceState::Pending, None)
}

/// One step of the driver: the record after looking at the reports at `now_ms` (unchanged
/// when nothing happened). `view` is the fleet view of the rolled-out revision.
pub(crate) fn step(
    record: &RolloutRecord,
    view: &FleetView,
    reports: &std::collections::HashMap<String, (StatusReport, u64)>,
    now_ms: u64,
) -> RolloutRecord {
    let mut r = record.clone();
    if r.state != RolloutState::Running {
        return r;
    }
    // Stages that add no device pass at once.
    while r.stages.get(r.stage).is_some_and(Vec::is_empty) && r.stage + 1 < r.stages.len() {
        r.stage += 1;
        r.stage_started_ms = now_ms;
        r.healthy_since_ms = None;
    }
    let i = r.stage;
    let spec = &r.spec.stages[i];
    let devices = &r.stages[i];
    let (mut failed, mut pending) = (Vec::new(), Vec::new());
    for name in devices {
        match judge(view, name, reports.get(name).map(|(rep, _)| rep)) {
            (RolloutDeviceState::Failed, why) => failed.push(why.unwrap_or_else(|| name.clone())),
            (RolloutDeviceState::Converged, _) => {}
            _ => pending.push(name.clone()),
        }
    }
    let threshold = spec.max_failures.unwrap_or_default();
    let allowed = threshold.allowed(devices.len());
    if failed.len() > allowed {
        let reason = format!(
            "stage {} of {}: {} of {} device(s) failed, more than maxFailures {} allows ({})",
            i + 1,
            r.stages.len(),
            failed.len(),
            devices.len(),
            threshold,
            failed.join("; ")
        );
        r.end(RolloutState::Halted, reason, now_ms);
        return r;
    }
    let deadline = r.spec.deadline().millis();
    let bake = spec.bake.map_or(0, |b| b.millis());
    let elapsed = now_ms.saturating_sub(r.stage_started_ms);
    // Failed devices within the threshold count as done: they run the baseline by their own
    // rollback and do not hold the stage.
    if !pending.is_empty() {
        r.healthy_since_ms = None;
        if elapsed >= deadline {
            pending.truncate(5);
            let reason = format!(
                "stage {} of {}: {} did not report revision {} running within the deadline of {}",
                i + 1,
                r.stages.len(),
                pending.join(", "),
                r.revision,
                r.spec.deadline()
            );
            r.end(RolloutState::Halted, reason, now_ms);
        }
        return r;
    }
    let since = *r.healthy_since_ms.get_or_insert(now_ms);
    if now_ms.saturating_sub(since) >= bake {
        if i + 1 >= r.stages.len() {
            let reason = format!(
                "all {} stage(s) ran revision {} healthy for their bake time",
                r.stages.len(),
                r.revision
            );
            r.end(RolloutState::Completed, reason, now_ms);
        } else {
            r.stage += 1;
            r.stage_started_ms = now_ms;
            r.healthy_since_ms = None;
        }
    } else if elapsed >= deadline + bake {
        let reason = format!(
            "stage {} of {}: its devices did not stay converged for the bake time of {} within {} of the stage's start",
            i + 1,
            r.stages.len(),
            spec.bake.unwrap_or(edgefn_schema::Duration(0)),
            edgefn_schema::Duration(deadline + bake)
        );
        r.end(RolloutState::Halted, reason, now_ms);
    }
    r
}

/// The fleet view `view` (of the rolled-out revision) with `record`'s overlay over `baseline`.
pub(crate) fn overlaid(
    view: &FleetView,
    record: &RolloutRecord,
    baseline: Option<&Arc<FleetView>>,
) -> FleetView {
    let mut v = view.without_overlay();
    if let (Some(reached), Some(base)) = (record.reached(), baseline) {
        v.overlay = Some(Arc::new(crate::fleet::Overlay {
            baseline: Arc::clone(base),
            reached,
            rollout: record.state,
        }));
    }
    v
}

#[cfg(test)]
mod tests {
    use super::*;

    fn manifest(n: usize) -> Manifest {
        let mut text = String::from("apiVersion: edgefn/v1\nproject: p\ndevices:\n");
        for i in 0..n {
            let ring = if i % 10 == 0 { "canary" } else { "main" };
            text.push_str(&format!("  d{i}: {{ labels: {{ ring: {ring} }} }}\n"));
        }
        text.push_str(
            "rollout:\n  stages: [ { devices: 1 }, { percent: 25 }, { labels: { ring: canary } }, { percent: 100 } ]\n",
        );
        edgefn_schema::load(&edgefn_schema::Source::new("m", text.as_str()), None)
            .unwrap()
            .manifest
    }

    /// Stages are cumulative, disjoint, cover what they select, and the same each time.
    #[test]
    fn plans_are_stable_cumulative_and_disjoint() {
        let m = manifest(40);
        let spec = m.rollout.clone().unwrap();
        let p = plan(&m, &spec);
        assert_eq!(p, plan(&m, &spec));
        assert_eq!(p[0].len(), 1);
        assert_eq!(p[0].len() + p[1].len(), 10);
        let all: Vec<&String> = p.iter().flatten().collect();
        let set: HashSet<&String> = all.iter().copied().collect();
        assert_eq!(all.len(), set.len());
        assert_eq!(set.len(), 40);
        // After stage 3 every canary-labelled device is reached.
        let reached: HashSet<&String> = p[..3].iter().flatten().collect();
        for (name, d) in &m.devices {
            if d.labels["ring"] == "canary" {
                assert!(reached.contains(name), "{name}");
            }
        }
        // The canary of a larger fleet is the same device when it still sorts first.
        let order = stable_order("p", m.devices.keys().cloned());
        assert_eq!(p[0][0], order[0]);
    }

    /// The view of revision 2 of a four-device manifest with `rollout`.
    fn view(rollout: &str) -> (FleetView, RolloutRecord) {
        let text = format!(
            "apiVersion: edgefn/v1\nproject: p\ndevices:\n  a: {{}}\n  b: {{}}\n  c: {{}}\n  d: {{}}\n{rollout}"
        );
        let rev = edgefn_schema::api::Revision {
            summary: edgefn_schema::api::RevisionSummary {
                number: 2,
                parent: 1,
                created_ms: 0,
                provenance: Default::default(),
                rollback_of: None,
            },
            manifest: text.clone(),
            bundles: BTreeMap::new(),
            layers: BTreeMap::new(),
            models: BTreeMap::new(),
            secrets: BTreeMap::new(),
            signatures: None,
        };
        let view = FleetView::build(Some(&rev));
        let m = view.manifest.clone().unwrap();
        let record = RolloutRecord::start(2, 1, &m, m.rollout.as_ref().unwrap(), 1_000);
        (view, record)
    }

    fn report(view: &FleetView, name: &str, state: DeviceState) -> StatusReport {
        let digest = view.own_desired_for(name).digest.clone();
        StatusReport {
            running_digest: Some(if state == DeviceState::Running {
                digest.clone()
            } else {
                "old".into()
            }),
            running_revision: Some(2),
            state,
            target_digest: Some(digest),
            message: Some("boom".into()),
            functions: Vec::new(),
            outbox: None,
            link: None,
        }
    }

    const TWO: &str = "rollout:\n  deadline: 10s\n  stages: [ { devices: 1, bake: 2s }, { percent: 100, maxFailures: 1 } ]\n";

    /// Converged for the bake time: the next stage; then the last stage completes.
    #[test]
    fn a_stage_advances_after_its_bake_time_and_the_last_completes() {
        let (view, r) = view(TWO);
        let canary = r.stages[0][0].clone();
        let mut reports = std::collections::HashMap::new();
        assert_eq!(
            step(&r, &view, &reports, 2_000),
            r,
            "nothing reported: waits"
        );
        reports.insert(
            canary.clone(),
            (report(&view, &canary, DeviceState::Running), 0),
        );
        let r = step(&r, &view, &reports, 3_000);
        assert_eq!((r.stage, r.healthy_since_ms), (0, Some(3_000)));
        assert_eq!(step(&r, &view, &reports, 4_999).stage, 0, "still baking");
        let r = step(&r, &view, &reports, 5_000);
        assert_eq!((r.stage, r.stage_started_ms), (1, 5_000));
        assert_eq!(r.reached().unwrap().len(), 4);
        // One failure is within `maxFailures: 1`; the others converge: completed.
        for (i, name) in r.stages[1].clone().iter().enumerate() {
            let state = if i == 0 {
                DeviceState::RolledBack
            } else {
                DeviceState::Running
            };
            reports.insert(name.clone(), (report(&view, name, state), 0));
        }
        let r = step(&r, &view, &reports, 6_000);
        assert_eq!(r.state, RolloutState::Completed, "{:?}", r.reason);
        assert_eq!(r.reached(), None, "everyone on the revision");
    }

    /// Failures past the threshold, or silence past the deadline, halt: nobody is reached.
    #[test]
    fn failures_or_a_missed_deadline_halt_with_a_reason() {
        let (view, r) = view(TWO);
        let canary = r.stages[0][0].clone();
        let mut reports = std::collections::HashMap::new();
        reports.insert(
            canary.clone(),
            (report(&view, &canary, DeviceState::RolledBack), 0),
        );
        let halted = step(&r, &view, &reports, 2_000);
        assert_eq!(halted.state, RolloutState::Halted);
        let reason = halted.reason.clone().unwrap();
        assert!(
            reason.contains(&format!("{canary} rolled back: boom")),
            "{reason}"
        );
        assert_eq!(halted.reached(), Some(HashSet::new()));
        assert_eq!(step(&halted, &view, &reports, 99_000), halted, "final");

        let silent = step(&r, &view, &std::collections::HashMap::new(), 11_000);
        assert_eq!(silent.state, RolloutState::Halted);
        assert!(
            silent
                .reason
                .unwrap()
                .contains("within the deadline of 10s")
        );

        let mut paused = r.clone();
        paused.state = RolloutState::Paused;
        assert_eq!(
            step(&paused, &view, &std::collections::HashMap::new(), 99_000),
            paused
        );
    }
}

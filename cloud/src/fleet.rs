//! What every device should run under the latest revision, computed once per revision.
//!
//! A [`FleetView`] is rebuilt when a revision is committed and published on a `watch` channel:
//! a long-polling device waits on that channel and, when it changes, looks its own entry up in a
//! hash map. Serving 10,000 waiting devices is then 10,000 lookups, not 10,000 resolutions.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;

use edgefn_schema::api::{DesiredResponse, Revision};
use edgefn_schema::{DesiredState, Manifest, ResolvedRoute, RouteTarget, Source};

/// One device's desired state, ready to send.
#[derive(Debug, Clone)]
pub(crate) struct DeviceDesired {
    /// The state's digest (the ETag).
    pub(crate) digest: String,
    /// The JSON response body (cheap to clone).
    pub(crate) body: axum::body::Bytes,
    /// Bundles the device may download.
    pub(crate) bundles: HashSet<String>,
    /// The routes that bring messages from the cloud down to its bus (`from: "cloud:FILTER"`,
    /// `to: local`): the agent drops anything else sent down.
    pub(crate) down_routes: Vec<ResolvedRoute>,
    /// The names of the bindings and functions it runs, sorted.
    pub(crate) runs: Vec<String>,
    /// The secrets its bindings name, with their versions: all it may fetch.
    pub(crate) secrets: BTreeMap<String, u64>,
}

impl DeviceDesired {
    /// Whether a message sent down on `topic` reaches the device's bus (a route brings it
    /// down), by the rule the agent applies (`ResolvedRoute::carries`, the schema's one
    /// routing rule).
    pub(crate) fn brings_down(&self, topic: &str) -> bool {
        self.down_routes
            .iter()
            .any(|r| r.carries(RouteTarget::Local, topic))
    }
}

/// A rollout's hold on a view: the devices it has not reached are served the baseline's state.
#[derive(Debug)]
pub(crate) struct Overlay {
    /// The view of the baseline revision.
    pub(crate) baseline: Arc<FleetView>,
    /// The devices served the view's own revision.
    pub(crate) reached: HashSet<String>,
}

/// The fleet under one revision.
#[derive(Debug, Default, Clone)]
pub(crate) struct FleetView {
    /// Latest revision (0: none).
    pub(crate) revision: u64,
    /// Its manifest, parsed.
    pub(crate) manifest: Option<Manifest>,
    /// Its bundles.
    pub(crate) bundles: BTreeMap<String, String>,
    /// The secret versions it pinned.
    pub(crate) secrets: BTreeMap<String, u64>,
    /// Desired state of each device in the manifest.
    pub(crate) devices: HashMap<String, Arc<DeviceDesired>>,
    /// While the revision rolls out (or after it halted): the devices still served the
    /// baseline ([`crate::rollout`]).
    pub(crate) overlay: Option<Arc<Overlay>>,
}

fn desired(revision: u64, state: DesiredState) -> Arc<DeviceDesired> {
    let bundles = state
        .functions
        .values()
        .filter_map(|f| f.bundle.clone())
        .collect();
    let down_routes = state
        .routes
        .iter()
        .filter(|r| r.to == RouteTarget::Local)
        .cloned()
        .collect();
    let mut runs: Vec<String> = state.bindings.iter().map(|b| b.name.clone()).collect();
    runs.extend(state.functions.keys().cloned());
    runs.sort();
    runs.dedup();
    let secrets = state.secrets();
    let digest = state.digest();
    let body = serde_json::to_vec(&DesiredResponse {
        revision,
        digest: digest.clone(),
        state,
    })
    .expect("desired state serializes");
    Arc::new(DeviceDesired {
        digest,
        body: body.into(),
        bundles,
        down_routes,
        runs,
        secrets,
    })
}

impl FleetView {
    /// The view of `revision` (`None`: nothing applied yet).
    pub(crate) fn build(revision: Option<&Revision>) -> Self {
        let Some(rev) = revision else {
            return Self::default();
        };
        // Revisions are validated before they are stored; a manifest that no longer loads (an
        // older edgefn's) serves empty states rather than failing every request.
        let manifest =
            edgefn_schema::load(&Source::new("edgefn.yaml", rev.manifest.as_str()), None)
                .ok()
                .map(|l| l.manifest);
        let mut devices = HashMap::new();
        if let Some(m) = &manifest {
            for name in m.devices.keys() {
                if let Some(mut state) = edgefn_schema::resolve(m, name, &rev.bundles) {
                    state.pin_secrets(&rev.secrets);
                    devices.insert(name.clone(), desired(rev.summary.number, state));
                }
            }
        }
        Self {
            revision: rev.summary.number,
            manifest,
            bundles: rev.bundles.clone(),
            secrets: rev.secrets.clone(),
            devices,
            overlay: None,
        }
    }

    /// The same view without a rollout's overlay.
    pub(crate) fn without_overlay(&self) -> Self {
        Self {
            overlay: None,
            ..self.clone()
        }
    }

    /// What `device` should run: the baseline's state while a rollout has not reached it, else
    /// [`Self::own_desired_for`].
    pub(crate) fn desired_for(&self, device: &str) -> Arc<DeviceDesired> {
        if let Some(o) = &self.overlay {
            if !o.reached.contains(device) {
                return o.baseline.desired_for(device);
            }
        }
        self.own_desired_for(device)
    }

    /// What `device` runs under this view's revision: its entry, or an empty state when the
    /// manifest does not list it.
    pub(crate) fn own_desired_for(&self, device: &str) -> Arc<DeviceDesired> {
        if let Some(d) = self.devices.get(device) {
            return Arc::clone(d);
        }
        let empty = DesiredState {
            project: self
                .manifest
                .as_ref()
                .map(|m| m.project.clone())
                .unwrap_or_default(),
            device: device.to_owned(),
            functions: BTreeMap::new(),
            bindings: Vec::new(),
            routes: Vec::new(),
        };
        desired(self.revision, empty)
    }
}

#[cfg(test)]
mod tests {
    use edgefn_schema::conformance;

    /// The shared matcher table through the cloud's entry point: what `POST /v1/publish`
    /// reports as `unrouted` is exactly what the table says no route brings down.
    #[test]
    fn the_cloud_answers_the_shared_routing_table() {
        let d = super::desired(1, conformance::desired_state());
        for case in conformance::ROUTES {
            assert_eq!(
                d.brings_down(case.topic),
                !case.down.is_empty(),
                "{}: routes down {:?}",
                case.topic,
                case.down
            );
        }
    }
}

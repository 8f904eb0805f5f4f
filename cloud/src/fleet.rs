//! What every device should run under the latest revision, computed once per revision.
//!
//! A [`FleetView`] is rebuilt when a revision is committed and published on a `watch` channel:
//! a long-polling device waits on that channel and, when it changes, looks its own entry up in a
//! hash map. Serving 10,000 waiting devices is then 10,000 lookups, not 10,000 resolutions.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;

use edgefn_schema::api::{DesiredSignature, Revision, RevisionSignatures};
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
    /// The rollout's state: running or paused (the others wait for their stage), halted or
    /// aborted (everyone is back on the baseline).
    pub(crate) rollout: edgefn_schema::api::RolloutState,
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
    /// Its dependency layers.
    pub(crate) layers: edgefn_schema::Layers,
    /// Its models' artifacts.
    pub(crate) models: edgefn_schema::Models,
    /// Desired state of each device in the manifest.
    pub(crate) devices: HashMap<String, Arc<DeviceDesired>>,
    /// The signatures its applier made, when it was applied signed.
    pub(crate) signatures: Option<RevisionSignatures>,
    /// While the revision rolls out (or after it halted): the devices still served the
    /// baseline ([`crate::rollout`]).
    pub(crate) overlay: Option<Arc<Overlay>>,
}

/// `device`'s signature in `signatures`, as served.
fn signature_of(signatures: Option<&RevisionSignatures>, device: &str) -> Option<DesiredSignature> {
    let s = signatures?;
    s.devices.get(device).map(|sig| DesiredSignature {
        key: s.key.clone(),
        signature: sig.clone(),
    })
}

fn desired(
    revision: u64,
    state: DesiredState,
    signature: Option<DesiredSignature>,
) -> Arc<DeviceDesired> {
    // A device may download its functions' bundles and dependency layers, and its models.
    let bundles = state.artifacts().into_iter().collect();
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
    let (json, digest) = state.json_and_digest();
    let body = response_body(revision, &digest, &json, signature.as_ref());
    Arc::new(DeviceDesired {
        digest,
        body: body.into(),
        bundles,
        down_routes,
        runs,
        secrets,
    })
}

/// The JSON of a [`DesiredResponse`](edgefn_schema::api::DesiredResponse) whose state is
/// already serialized (`state_json`, the bytes `digest` hashes): the same bytes
/// `serde_json::to_vec(&DesiredResponse { .. })` gives (fields in declaration order,
/// `signature` left out when absent), without serializing the state a second time. Building a
/// view is most of an apply's CPU on every replica at 100,000 devices.
fn response_body(
    revision: u64,
    digest: &str,
    state_json: &[u8],
    signature: Option<&DesiredSignature>,
) -> Vec<u8> {
    let mut body = Vec::with_capacity(state_json.len() + 128);
    body.extend_from_slice(b"{\"revision\":");
    body.extend_from_slice(revision.to_string().as_bytes());
    body.extend_from_slice(b",\"digest\":");
    serde_json::to_writer(&mut body, digest).expect("a string serializes");
    body.extend_from_slice(b",\"state\":");
    body.extend_from_slice(state_json);
    if let Some(sig) = signature {
        body.extend_from_slice(b",\"signature\":");
        serde_json::to_writer(&mut body, sig).expect("a signature serializes");
    }
    body.push(b'}');
    body
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
                if let Some(mut state) = edgefn_schema::resolve_with_models(
                    m,
                    name,
                    &rev.bundles,
                    &rev.layers,
                    &rev.models,
                ) {
                    state.pin_secrets(&rev.secrets);
                    let signature = signature_of(rev.signatures.as_ref(), name);
                    devices.insert(name.clone(), desired(rev.summary.number, state, signature));
                }
            }
        }
        Self {
            revision: rev.summary.number,
            manifest,
            bundles: rev.bundles.clone(),
            secrets: rev.secrets.clone(),
            layers: rev.layers.clone(),
            models: rev.models.clone(),
            devices,
            signatures: rev.signatures.clone(),
            overlay: None,
        }
    }

    /// Checks that `signatures` sign, with their key, what each device runs under this view:
    /// every device of the manifest has a signature of its statement, and a signature for a
    /// device the manifest does not list signs its empty state. The problems, one per device,
    /// sorted; empty when all is well.
    pub(crate) fn signature_problems(&self, signatures: &RevisionSignatures) -> Vec<String> {
        let key: edgefn_schema::signing::PublicKey = match signatures.key.parse() {
            Ok(k) => k,
            Err(e) => return vec![format!("key: {e}")],
        };
        let project = self
            .manifest
            .as_ref()
            .map(|m| m.project.as_str())
            .unwrap_or_default();
        let mut problems = Vec::new();
        let mut names: Vec<&String> = self.devices.keys().collect();
        names.sort();
        for name in names {
            if !signatures.devices.contains_key(name) {
                problems.push(format!("{name}: no signature"));
            }
        }
        for (name, sig) in &signatures.devices {
            let digest = self.own_desired_for(name).digest.clone();
            let statement =
                edgefn_schema::signing::statement(project, name, self.revision, &digest);
            if !key.verifies(&statement, sig) {
                problems.push(format!(
                    "{name}: the signature does not match revision {} with desired state {}",
                    self.revision,
                    &digest[..12]
                ));
            }
        }
        problems.sort();
        problems
    }

    /// The same view without a rollout's overlay.
    pub(crate) fn without_overlay(&self) -> Self {
        Self {
            overlay: None,
            ..self.clone()
        }
    }

    /// Why `device` is served the baseline's state rather than this view's revision: a
    /// rollout has not reached it (or ended halted or aborted). `None` when it is served this
    /// revision, or the baseline's state for it is the same. The one rule `GET /v1/status` and
    /// the console's fleet page both show.
    pub(crate) fn held(&self, device: &str) -> Option<edgefn_schema::api::Held> {
        let o = self.overlay.as_ref()?;
        if o.reached.contains(device) || o.baseline.revision == self.revision {
            return None;
        }
        if o.baseline.own_desired_for(device).digest == self.own_desired_for(device).digest {
            return None;
        }
        Some(edgefn_schema::api::Held {
            revision: o.baseline.revision,
            rollout_revision: self.revision,
            rollout: o.rollout,
        })
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
        let empty = DesiredState::empty(
            self.manifest
                .as_ref()
                .map(|m| m.project.as_str())
                .unwrap_or_default(),
            device,
        );
        desired(
            self.revision,
            empty,
            signature_of(self.signatures.as_ref(), device),
        )
    }
}

#[cfg(test)]
mod tests {
    use edgefn_schema::api::{DesiredResponse, DesiredSignature};
    use edgefn_schema::conformance;

    /// The body put together from the state's JSON is byte for byte what serde writes for the
    /// whole response (agents verify the digest against the state they parse, and signed
    /// revisions sign it), with and without a signature, and reads back as the same response.
    #[test]
    fn a_body_from_the_states_json_is_what_serde_writes() {
        let state = conformance::desired_state();
        for signature in [
            None,
            Some(DesiredSignature {
                key: "ed25519:k\"ey".into(),
                signature: "sig/+=".into(),
            }),
        ] {
            let d = super::desired(u64::MAX, state.clone(), signature.clone());
            let want = DesiredResponse {
                revision: u64::MAX,
                digest: state.digest(),
                state: state.clone(),
                signature,
            };
            assert_eq!(
                String::from_utf8_lossy(&d.body),
                String::from_utf8_lossy(&serde_json::to_vec(&want).unwrap())
            );
            assert_eq!(d.digest, want.digest);
            let back: DesiredResponse = serde_json::from_slice(&d.body).unwrap();
            assert_eq!(back, want);
        }
    }

    /// The shared matcher table through the cloud's entry point: what `POST /v1/publish`
    /// reports as `unrouted` is exactly what the table says no route brings down.
    #[test]
    fn the_cloud_answers_the_shared_routing_table() {
        let d = super::desired(1, conformance::desired_state(), None);
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

//! Revisions: `POST /v1/revisions` validates and commits a manifest with its bundle map,
//! `GET /v1/revisions` lists them, `GET /v1/revisions/{n}` shows one, `POST /v1/rollback`
//! applies an earlier one again as a new revision. Each commit publishes a new fleet view.

use std::collections::BTreeMap;
use std::sync::Arc;

use axum::Json;
use axum::extract::rejection::JsonRejection;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use edgefn_schema::api::{ApplyResponse, NewRevision, Provenance, RollbackRequest};
use edgefn_schema::{Source, bundle};
use serde::Deserialize;

use super::{MAX_MANIFEST_BYTES, json_body};
use crate::error::{ApiError, blocking};
use crate::fleet::FleetView;
use crate::registry::Caller;
use crate::rollout::RolloutRecord;
use crate::state::AppState;
use crate::store::{Draft, Store, StoreError};
use edgefn_os::time::now_ms;
use edgefn_schema::api::ErrorCode;
use edgefn_schema::api::RolloutState;

/// Most manifest diagnostics listed in a 422 answer (the message gives their number).
const MAX_LISTED_DIAGNOSTICS: usize = 100;

/// Validates a submitted manifest and its bundle map; returns the manifest's diagnostics as
/// a 422 when it has errors.
///
/// Runs in a blocking task: reading a manifest is bounded (by [`MAX_MANIFEST_BYTES`] and the
/// YAML reader's budgets) but not small.
pub(super) fn validate_submission(req: &NewRevision) -> Result<edgefn_schema::Manifest, ApiError> {
    if req.manifest.len() > MAX_MANIFEST_BYTES {
        return Err(ApiError::new(
            ErrorCode::ManifestTooLarge,
            format!(
                "the manifest is {} bytes; the control plane accepts manifests of at most {} \
                 bytes ({} MiB)",
                req.manifest.len(),
                MAX_MANIFEST_BYTES,
                MAX_MANIFEST_BYTES >> 20
            ),
        ));
    }
    let source = Source::new("edgefn.yaml", req.manifest.as_str());
    let manifest = match edgefn_schema::load(&source, None) {
        Ok(l) => l.manifest,
        Err(diags) => {
            let errors = diags.error_count();
            let lines: Vec<String> = diags
                .iter()
                .filter(|d| d.is_error())
                .take(MAX_LISTED_DIAGNOSTICS)
                .map(|d| {
                    let l = d.location();
                    format!(
                        "{}:{}: {}[{}]: {}",
                        l.line, l.column, "error", d.code, d.message
                    )
                })
                .collect();
            return Err(ApiError::new(
                ErrorCode::InvalidManifest,
                format!(
                    "the manifest has {errors} error(s){}; run `edgefn validate`",
                    if errors > lines.len() {
                        format!(" (the first {} are listed)", lines.len())
                    } else {
                        String::new()
                    }
                ),
            )
            .details(serde_json::json!({ "diagnostics": lines })));
        }
    };
    let mut problems = Vec::new();
    for name in manifest.functions.keys() {
        match req.bundles.get(name) {
            None => problems.push(format!("function `{name}` has no bundle digest")),
            Some(d) if !bundle::is_digest(d) => {
                problems.push(format!("the bundle of `{name}` is not a sha256 digest"))
            }
            Some(_) => {}
        }
    }
    for name in req.bundles.keys() {
        if !manifest.functions.contains_key(name) {
            problems.push(format!(
                "bundle for `{name}`, which the manifest does not define"
            ));
        }
    }
    layer_problems(&manifest, &req.layers, &mut problems);
    model_problems(&manifest, &req.models, &mut problems);
    if !problems.is_empty() {
        return Err(ApiError::new(
            ErrorCode::InvalidBundles,
            problems.join("; "),
        ));
    }
    Ok(manifest)
}

/// What is wrong with a revision's dependency layers: a layer of a function the manifest does
/// not define, a digest that is not one, or a function with layers that lacks one for the
/// platform of a device that runs it (that device would run without its dependencies).
fn layer_problems(
    manifest: &edgefn_schema::Manifest,
    layers: &edgefn_schema::Layers,
    problems: &mut Vec<String>,
) {
    for (name, by_platform) in layers {
        if !manifest.functions.contains_key(name) {
            problems.push(format!(
                "layers for `{name}`, which the manifest does not define"
            ));
            continue;
        }
        for (platform, digest) in by_platform {
            if !bundle::is_digest(digest) {
                problems.push(format!(
                    "the {platform} layer of `{name}` is not a sha256 digest"
                ));
            }
        }
        for (device_name, device) in &manifest.devices {
            let platform = device.platform();
            let runs = manifest
                .bindings
                .iter()
                .any(|b| &b.function == name && b.devices.matches(device_name, device));
            if runs && !by_platform.contains_key(&platform) {
                problems.push(format!(
                    "`{name}` has dependency layers but none for {platform}, the platform of device `{device_name}` that runs it"
                ));
            }
        }
    }
}

/// What is wrong with a revision's models: an artifact for a model the manifest does not
/// define, a digest that is not one, or a model the manifest defines without an artifact.
fn model_problems(
    manifest: &edgefn_schema::Manifest,
    models: &edgefn_schema::Models,
    problems: &mut Vec<String>,
) {
    for (name, artifact) in models {
        if !manifest.models.iter().any(|m| &m.name == name) {
            problems.push(format!(
                "an artifact for model `{name}`, which the manifest does not define"
            ));
        } else if !bundle::is_digest(&artifact.digest) {
            problems.push(format!(
                "the artifact of model `{name}` is not a sha256 digest"
            ));
        }
    }
    for m in &manifest.models {
        if !models.contains_key(&m.name) {
            problems.push(format!("model `{}` has no artifact digest", m.name));
        }
    }
}

/// Which secret versions a revision runs with.
#[derive(Debug)]
pub(super) enum Pins {
    /// The latest version of each (an apply, a secret set).
    Latest,
    /// These (a rollback: the versions the older revision ran with); a name they lack gets
    /// its latest version.
    Kept(BTreeMap<String, u64>),
}

/// The latest version of each secret in `names`; every name without a value is listed in one
/// [`StoreError::SecretsUnavailable`].
pub(super) fn latest_versions(
    store: &dyn Store,
    names: &[String],
) -> Result<BTreeMap<String, u64>, StoreError> {
    let mut versions = BTreeMap::new();
    let mut not_set = Vec::new();
    for name in names {
        match store.secret(name)?.as_ref().and_then(|r| r.latest()) {
            Some(v) => {
                versions.insert(name.clone(), v.version);
            }
            None => not_set.push(name.clone()),
        }
    }
    if not_set.is_empty() {
        Ok(versions)
    } else {
        Err(StoreError::SecretsUnavailable {
            not_set,
            gone: Vec::new(),
        })
    }
}

/// Commits a draft unless it equals the latest revision; publishes the new fleet view. The
/// draft's secret versions are chosen here, under the commit lock, by `pins`. The revision
/// rolls out as its manifest's `rollout:` says, except for a rollback (every device at once).
pub(super) async fn commit(
    state: &Arc<AppState>,
    draft: Draft,
    manifest: &edgefn_schema::Manifest,
    expected_parent: Option<u64>,
    pins: Pins,
) -> Result<(StatusCode, Json<ApplyResponse>), ApiError> {
    commit_with(state, draft, manifest, expected_parent, pins, None).await
}

/// [`commit`], with the apply's override of the manifest's `rollout:`.
///
/// A rollout starts from the *baseline*: the latest revision, or — when the latest one's own
/// rollout has not completed (running, paused, halted or aborted) — that rollout's baseline,
/// the last revision that reached the whole fleet. A rollout still running is superseded:
/// its record ends `superseded`, and the new revision's stages decide what every device runs.
/// The first revision has nothing to roll out from and reaches every device at once.
pub(super) async fn commit_with(
    state: &Arc<AppState>,
    mut draft: Draft,
    manifest: &edgefn_schema::Manifest,
    expected_parent: Option<u64>,
    pins: Pins,
    rollout: Option<edgefn_schema::api::RolloutOverride>,
) -> Result<(StatusCode, Json<ApplyResponse>), ApiError> {
    let spec = match (&pins, rollout) {
        (Pins::Kept(_), _) | (_, Some(edgefn_schema::api::RolloutOverride::None)) => None,
        _ => manifest.rollout.clone(),
    };
    let _guard = state.commit.lock().await;
    let names: Vec<String> = manifest.secret_users().into_keys().collect();
    let store = state.store.clone();
    draft.secrets = blocking(move || {
        let mut latest_needed = names.clone();
        let mut pinned = BTreeMap::new();
        if let Pins::Kept(kept) = &pins {
            latest_needed.retain(|n| !kept.contains_key(n));
            pinned.extend(
                names
                    .iter()
                    .filter_map(|n| kept.get(n).map(|v| (n.clone(), *v))),
            );
        }
        pinned.extend(latest_versions(store.as_ref(), &latest_needed)?);
        Ok(pinned)
    })
    .await?;
    let view = state.view();
    // Unchanged when it runs the same thing signed the same way: applying signed what runs
    // unsigned (after `edgefn secret set`, say) makes a signed revision.
    let signer = |s: Option<&edgefn_schema::api::RevisionSignatures>| s.map(|s| s.key.clone());
    // A revision whose rollout halted or was aborted never reached the fleet: applying it
    // again makes a new revision that rolls out afresh (from the same baseline), instead of
    // "no changes" while devices stay on the baseline.
    let stopped = state.rollout_record().is_some_and(|r| {
        r.revision == view.revision
            && matches!(r.state, RolloutState::Halted | RolloutState::Aborted)
    });
    if !stopped
        && view.manifest.as_ref() == Some(manifest)
        && view.bundles == draft.bundles
        && view.secrets == draft.secrets
        && view.layers == draft.layers
        && view.models == draft.models
        && (draft.signatures.is_none()
            || signer(view.signatures.as_ref()) == signer(draft.signatures.as_ref()))
    {
        return Ok((
            StatusCode::OK,
            Json(ApplyResponse {
                revision: view.revision,
                created: false,
                rollout: false,
            }),
        ));
    }
    // A signed draft's view is built once: to check its signatures, then served as is.
    let checked = match &draft.signatures {
        Some(signatures) => {
            Some(check_signatures(&draft, signatures, view.revision, expected_parent).await?)
        }
        None => None,
    };
    let store = state.store.clone();
    let previous = state
        .rollout_record()
        .filter(|r| r.revision == view.revision);
    let baseline = match &previous {
        Some(r) if r.state != RolloutState::Completed => r.baseline,
        _ => view.revision,
    };
    let spec = spec.filter(|_| baseline > 0);
    let baseline_view: Option<Arc<FleetView>> = match &view.overlay {
        _ if spec.is_none() => None,
        Some(o) if o.baseline.revision == baseline => Some(Arc::clone(&o.baseline)),
        _ if view.revision == baseline => Some(Arc::new(view.without_overlay())),
        _ => None,
    };
    let manifest_for_plan = manifest.clone();
    let st = state.clone();
    // The fleet view reads the manifest again and resolves every device: off the async threads.
    let (number, new_view, record, baseline_view) = blocking(move || {
        let now = now_ms();
        let mut record = None;
        let committed = store.commit_rollout(draft, expected_parent, &mut |rev| match &spec {
            Some(spec) => {
                let r = RolloutRecord::start(
                    rev.summary.number,
                    baseline,
                    &manifest_for_plan,
                    spec,
                    now,
                );
                let bytes = serde_json::to_vec(&r).expect("a rollout record serializes");
                record = Some(r);
                Some(bytes)
            }
            None => previous
                .clone()
                .filter(|p| !p.state.is_final())
                .map(|mut p| {
                    p.end(
                        RolloutState::Superseded,
                        format!(
                            "revision {} was applied without a rollout",
                            rev.summary.number
                        ),
                        now,
                    );
                    serde_json::to_vec(&p).expect("a rollout record serializes")
                }),
        });
        let revision = match committed {
            Ok(r) => r,
            // Another process sharing the database committed (a conflict), or the outcome is
            // unknown (the connection was lost): serve what the database holds.
            Err(e @ (StoreError::Conflict { .. } | StoreError::Unavailable { .. })) => {
                if let Err(again) = st.reload_latest() {
                    tracing::debug!("could not read the latest revision again: {again}");
                }
                return Err(e.into());
            }
            Err(e) => return Err(e.into()),
        };
        let baseline_view = match (&record, baseline_view) {
            (Some(_), Some(b)) => Some(b),
            (Some(_), None) => Some(Arc::new(FleetView::build(
                store.revision(baseline)?.as_ref(),
            ))),
            (None, _) => None,
        };
        // The view the signatures were checked against is this revision's, unless the commit
        // pinned or numbered it otherwise.
        let new_view = match checked {
            Some(v)
                if v.revision == revision.summary.number
                    && v.secrets == revision.secrets
                    && v.bundles == revision.bundles
                    && v.layers == revision.layers
                    && v.models == revision.models =>
            {
                v
            }
            _ => FleetView::build(Some(&revision)),
        };
        Ok((revision.summary.number, new_view, record, baseline_view))
    })
    .await?;
    let rolling = record.is_some();
    state.publish_rollout_view(new_view, record, baseline_view);
    tracing::info!(revision = number, rollout = rolling, "revision committed");
    Ok((
        StatusCode::CREATED,
        Json(ApplyResponse {
            revision: number,
            created: true,
            rollout: rolling,
        }),
    ))
}

/// Refuses `what` (`a bind`, `a rollback without signatures`), a revision the control plane
/// would make unsigned on top of the signed revision `latest`: it holds no signing key, so
/// devices with `trustedKeys` would refuse it. 409 `signing_required`, saying `how` to make it
/// signed instead.
pub(super) fn refuse_unsigned_after_signed(
    latest: &edgefn_schema::api::Revision,
    what: &str,
    how: &str,
) -> Result<(), ApiError> {
    if latest.signatures.is_none() {
        return Ok(());
    }
    Err(ApiError::new(
        ErrorCode::SigningRequired,
        format!(
            "revision {} is signed, and the control plane cannot sign (it holds no signing key): \
             devices with trustedKeys would refuse the unsigned revision {what} makes here, so \
             nothing was changed; {how}",
            latest.summary.number
        ),
    ))
}

/// Checks a signed draft's signatures against the desired states the control plane computes
/// for it as revision `expected_parent + 1` (the number the commit gives it, or it fails with
/// 409): a 422 naming every device whose signature does not match. The view it checked (with
/// the signatures, as served) when they all match.
async fn check_signatures(
    draft: &Draft,
    signatures: &edgefn_schema::api::RevisionSignatures,
    latest: u64,
    expected_parent: Option<u64>,
) -> Result<FleetView, ApiError> {
    let Some(parent) = expected_parent else {
        return Err(ApiError::bad_request(
            "a signed revision needs `expectedParent`: the revision signed is the one after it",
        ));
    };
    if parent != latest {
        return Err(StoreError::Conflict {
            latest,
            expected: parent,
        }
        .into());
    }
    let revision = edgefn_schema::api::Revision {
        summary: edgefn_schema::api::RevisionSummary {
            number: parent + 1,
            parent,
            created_ms: draft.created_ms,
            provenance: draft.provenance.clone(),
            rollback_of: draft.rollback_of,
        },
        manifest: draft.manifest.clone(),
        bundles: draft.bundles.clone(),
        layers: draft.layers.clone(),
        models: draft.models.clone(),
        secrets: draft.secrets.clone(),
        signatures: Some(signatures.clone()),
    };
    let signatures = signatures.clone();
    let (view, problems) = blocking(move || {
        let view = FleetView::build(Some(&revision));
        let problems = view.signature_problems(&signatures);
        Ok((view, problems))
    })
    .await?;
    if problems.is_empty() {
        return Ok(view);
    }
    Err(ApiError::new(
        ErrorCode::InvalidSignatures,
        format!(
            "the signatures do not match what {} device(s) would run under revision {}: {}; \
             sign with `edgefn apply --sign-key` against the latest revision (a secret set in \
             between changes what devices run: apply again)",
            problems.len(),
            parent + 1,
            problems.join("; ")
        ),
    )
    .details(serde_json::json!({ "devices": problems })))
}

pub(super) async fn create_revision(
    State(state): State<Arc<AppState>>,
    caller: Caller,
    body: Result<Json<NewRevision>, JsonRejection>,
) -> Result<(StatusCode, Json<ApplyResponse>), ApiError> {
    caller.require_admin()?;
    let req = json_body(body)?;
    let (req, manifest) = blocking(move || {
        let manifest = validate_submission(&req)?;
        Ok((req, manifest))
    })
    .await?;
    let draft = Draft {
        manifest: req.manifest,
        bundles: req.bundles,
        layers: req.layers,
        models: req.models,
        provenance: req.provenance,
        rollback_of: None,
        created_ms: now_ms(),
        secrets: BTreeMap::new(),
        signatures: req.signatures,
    };
    commit_with(
        &state,
        draft,
        &manifest,
        req.expected_parent,
        Pins::Latest,
        req.rollout,
    )
    .await
}

#[derive(Debug, Deserialize)]
pub(super) struct HistoryQuery {
    limit: Option<usize>,
}

pub(super) async fn history(
    State(state): State<Arc<AppState>>,
    caller: Caller,
    query: Result<Query<HistoryQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Json<Vec<edgefn_schema::api::RevisionSummary>>, ApiError> {
    caller.require_admin()?;
    let Query(q) = query.map_err(|e| ApiError::bad_request(e.body_text()))?;
    let limit = q.limit.unwrap_or(20).min(1000);
    let store = state.store.clone();
    Ok(Json(blocking(move || Ok(store.history(limit)?)).await?))
}

pub(super) async fn revision(
    State(state): State<Arc<AppState>>,
    caller: Caller,
    path: Result<Path<u64>, axum::extract::rejection::PathRejection>,
) -> Result<Json<edgefn_schema::api::Revision>, ApiError> {
    caller.require_admin()?;
    let Path(n) =
        path.map_err(|_| ApiError::bad_request("a revision number is a positive whole number"))?;
    let store = state.store.clone();
    blocking(move || Ok(store.revision(n)?))
        .await?
        .map(Json)
        .ok_or_else(|| ApiError::not_found(format!("no revision {n}")))
}

pub(super) async fn rollback(
    State(state): State<Arc<AppState>>,
    caller: Caller,
    body: Result<Json<RollbackRequest>, JsonRejection>,
) -> Result<(StatusCode, Json<ApplyResponse>), ApiError> {
    caller.require_admin()?;
    let req = json_body(body)?;
    let latest = state.view().revision;
    let to = match req.to {
        Some(n) => n,
        None if latest >= 2 => latest - 1,
        None => {
            return Err(ApiError::new(
                ErrorCode::NothingToRollBack,
                if latest == 0 {
                    "nothing has been applied yet, so there is nothing to roll back".to_owned()
                } else {
                    format!(
                        "revision {latest} is the only one: there is no earlier revision to go back to"
                    )
                },
            ));
        }
    };
    let store = state.store.clone();
    let old = blocking(move || Ok(store.revision(to)?))
        .await?
        .ok_or_else(|| ApiError::not_found(format!("no revision {to}")))?;
    if req.signatures.is_none() {
        let store = state.store.clone();
        if let Some(current) = blocking(move || Ok(store.latest()?)).await? {
            refuse_unsigned_after_signed(
                &current,
                "a rollback",
                &format!("roll back signed: `edgefn rollback {to} --sign-key FILE`"),
            )?;
        }
    }
    let (old, manifest) = blocking(move || {
        let manifest =
            edgefn_schema::load(&Source::new("edgefn.yaml", old.manifest.as_str()), None)
                .map_err(|_| {
                    ApiError::new(
                        ErrorCode::InvalidManifest,
                        format!("revision {to}'s manifest no longer validates"),
                    )
                })?
                .manifest;
        Ok((old, manifest))
    })
    .await?;
    let draft = Draft {
        manifest: old.manifest.clone(),
        bundles: old.bundles.clone(),
        layers: old.layers.clone(),
        models: old.models.clone(),
        provenance: Provenance {
            message: Some(format!("rollback to revision {to}")),
            ..old.summary.provenance.clone()
        },
        rollback_of: Some(to),
        created_ms: now_ms(),
        secrets: BTreeMap::new(),
        signatures: req.signatures,
    };
    commit(
        &state,
        draft,
        &manifest,
        req.expected_parent,
        Pins::Kept(old.secrets),
    )
    .await
}

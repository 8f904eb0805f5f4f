//! `POST /v1/bindings`: bind a function to devices with a click. The new revision is the latest
//! one's manifest text with one binding appended (`edgefn_schema::edit`, keeping the text as git
//! wrote it), validated again by the loader `POST /v1/revisions` uses, and committed through the
//! same code path: the expected parent is checked in the committing transaction (409 when an
//! apply got there first). Its provenance says it came from the console (or the API) and which
//! admin token made it, never a git commit: `edgefn status`, `diff` and `apply` show the drift.

use std::collections::BTreeSet;
use std::sync::Arc;

use axum::Json;
use axum::extract::State;
use axum::extract::rejection::JsonRejection;
use axum::http::{HeaderMap, StatusCode};
use edgefn_schema::api::{ErrorCode, NewRevision, Provenance};
use edgefn_schema::console::{BindingCreated, NewBinding};
use edgefn_schema::{DeviceSelector, Mode, Source};

use super::json_body;
use super::revisions::{Pins, commit, validate_submission};
use crate::error::{ApiError, blocking};
use crate::registry::Caller;
use crate::state::AppState;
use crate::store::Draft;

/// Largest body of `POST /v1/bindings`.
pub(super) const MAX_BIND_BYTES: usize = 64 << 10;
/// Most devices one click may name.
const MAX_NAMES: usize = 1000;

/// The `provenance.tool` of revisions the console made.
pub(crate) const CONSOLE_TOOL: &str = "console";

pub(super) async fn bind(
    State(state): State<Arc<AppState>>,
    caller: Caller,
    headers: HeaderMap,
    body: Result<Json<NewBinding>, JsonRejection>,
) -> Result<(StatusCode, Json<BindingCreated>), ApiError> {
    caller.require_admin()?;
    let req = json_body(body)?;
    if let DeviceSelector::Names(n) = &req.devices {
        if n.is_empty() || n.len() > MAX_NAMES {
            return Err(ApiError::bad_request(format!(
                "name between 1 and {MAX_NAMES} devices, or select them by labels"
            )));
        }
    }
    let hash = crate::console::admin_token_hash(&state, &headers).await;
    let via = if crate::console::is_session(&headers) {
        CONSOLE_TOOL
    } else {
        "api"
    };
    let store = state.store.clone();
    let (latest, who) = blocking(move || {
        let who = hash.and_then(|h| {
            store
                .admin_tokens()
                .ok()?
                .into_iter()
                .find(|r| r.hash == h)
                .map(|r| format!("admin token `{}` ({})", r.name, r.id()))
        });
        Ok((store.latest()?, who))
    })
    .await?;
    let Some(latest) = latest else {
        return Err(ApiError::new(
            ErrorCode::Conflict,
            "nothing has been applied yet: `edgefn apply` the project first, then bind its functions",
        ));
    };
    super::revisions::refuse_unsigned_after_signed(
        &latest,
        "a bind",
        "add the binding to edgefn.yaml, commit it and apply it signed: `edgefn apply --sign-key FILE`",
    )?;
    let parent = latest.summary.number;
    // A choice made against an older revision is refused before anything is read from the
    // newer one (the commit checks it again, in its transaction).
    if let Some(expected) = req.expected_parent.filter(|e| *e != parent) {
        return Err(crate::store::StoreError::Conflict {
            latest: parent,
            expected,
        }
        .into());
    }
    let (request, manifest, binding, devices) = blocking(move || {
        let base = edgefn_schema::load(&Source::new("edgefn.yaml", latest.manifest.as_str()), None)
            .map_err(|_| {
                ApiError::new(
                    ErrorCode::InvalidManifest,
                    format!("revision {parent}'s manifest no longer validates"),
                )
            })?
            .manifest;
        let Some(_) = base.functions.get(&req.function) else {
            let known: Vec<&str> = base.functions.keys().map(String::as_str).collect();
            return Err(ApiError::not_found(format!(
                "revision {parent} has no function `{}`; it has: {}",
                req.function,
                if known.is_empty() { "none".to_owned() } else { known.join(", ") }
            )));
        };
        let selected: BTreeSet<String> = base
            .devices
            .iter()
            .filter(|(n, d)| req.devices.matches(n, d))
            .map(|(n, _)| n.clone())
            .collect();
        if let DeviceSelector::Names(names) = &req.devices {
            let unknown: Vec<&str> = names
                .iter()
                .filter(|n| !base.devices.contains_key(*n))
                .map(String::as_str)
                .collect();
            if !unknown.is_empty() {
                return Err(ApiError::bad_request(format!(
                    "not a device of revision {parent}'s manifest: {}; a device is added under `devices:` in git",
                    unknown.join(", ")
                )));
            }
        }
        if selected.is_empty() {
            return Err(ApiError::new(
                ErrorCode::NoDevices,
                format!("the labels select no device of revision {parent}'s manifest"),
            ));
        }
        let already: Vec<&str> = selected
            .iter()
            .filter(|n| {
                base.bindings.iter().any(|b| {
                    b.function == req.function && b.devices.matches(n, &base.devices[*n])
                })
            })
            .map(String::as_str)
            .collect();
        if !already.is_empty() {
            return Err(ApiError::bad_request(format!(
                "`{}` already runs on {}",
                req.function,
                already.join(", ")
            )));
        }
        let taken = |n: &str| base.bindings.iter().any(|b| b.effective_name() == n);
        let name = match &req.name {
            Some(n) if taken(n) => {
                return Err(ApiError::bad_request(format!(
                    "a binding named `{n}` exists already"
                )));
            }
            Some(n) => n.clone(),
            None if !taken(&req.function) => req.function.clone(),
            None => (2..)
                .map(|i| format!("{}-{i}", req.function))
                .find(|n| !taken(n))
                .unwrap_or_default(),
        };
        let first = base.bindings.iter().find(|b| b.function == req.function);
        let mode = req
            .mode
            .unwrap_or_else(|| first.map_or(Mode::Triggered, |b| b.mode));
        let triggers = match (&req.triggers, mode) {
            (Some(t), _) => t.clone(),
            (None, Mode::Continuous) => Vec::new(),
            (None, Mode::Triggered) => first
                .map(|b| b.triggers.iter().map(|t| t.topic.clone()).collect())
                .unwrap_or_default(),
        };
        let own_name = (name != req.function).then_some(name.as_str());
        let fields = edgefn_schema::edit::binding_fields(
            own_name,
            &req.function,
            &req.devices,
            mode,
            &triggers,
        );
        let text = edgefn_schema::edit::append_item(&latest.manifest, "bindings", &fields)
            .map_err(|e| ApiError::new(ErrorCode::InvalidManifest, e.to_string()))?;
        let request = NewRevision {
            manifest: text,
            bundles: latest.bundles,
            layers: latest.layers,
            models: latest.models,
            provenance: Provenance {
                author: who,
                message: Some(format!(
                    "bind {} to {}",
                    req.function,
                    selected.iter().cloned().collect::<Vec<_>>().join(", ")
                )),
                tool: Some(via.to_owned()),
                ..Provenance::default()
            },
            expected_parent: Some(req.expected_parent.unwrap_or(parent)),
            // The latest revision is unsigned (a signed one refuses the bind above).
            signatures: None,
            rollout: None,
        };
        // The same checks as any submitted revision.
        let manifest = validate_submission(&request)?;
        Ok((request, manifest, name, selected.into_iter().collect()))
    })
    .await?;
    let draft = Draft {
        manifest: request.manifest,
        bundles: request.bundles,
        layers: request.layers,
        models: request.models,
        signatures: None,
        provenance: request.provenance,
        rollback_of: None,
        created_ms: edgefn_os::time::now_ms(),
        secrets: std::collections::BTreeMap::new(),
    };
    let (_, Json(applied)) = commit(
        &state,
        draft,
        &manifest,
        request.expected_parent,
        Pins::Latest,
    )
    .await?;
    tracing::info!(revision = applied.revision, binding = %binding, "binding added");
    Ok((
        StatusCode::CREATED,
        Json(BindingCreated {
            revision: applied.revision,
            binding,
            devices,
        }),
    ))
}

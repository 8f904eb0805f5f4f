//! Read-only views for the console (and any admin client): `GET /v1/revisions/{from}/diff/{to}`
//! (per device, what changes between two revisions' desired states — names, never values),
//! `GET /v1/functions` (which devices run which function under the latest revision), and a
//! bundle's files (`GET /v1/bundles/{digest}/files`, `…/files/{path}`), read with the agent's
//! checked, bounded unpacker (`edgefn_schema::bundle::unpack_into`).

use std::collections::{BTreeMap, BTreeSet};
use std::io::Read;
use std::sync::Arc;

use axum::Json;
use axum::extract::rejection::PathRejection;
use axum::extract::{Path, State};
use edgefn_schema::bundle;
use edgefn_schema::console::{
    BundleEntry, BundleFilePreview, BundleListing, FunctionInfo, RevisionDiff, diff_states,
};
use edgefn_schema::{Manifest, Source};

use crate::error::{ApiError, blocking};
use crate::registry::Caller;
use crate::state::AppState;

/// Most bytes a bundle may inflate to when it is read for a view (it is read streaming; what
/// it inflates to is capped here, as on a device).
const MAX_INFLATED: u64 = 1 << 30;
/// Most entries a listing shows (the total is counted).
const MAX_LISTED: usize = 1000;
/// Most bytes of a file a preview shows.
const PREVIEW_BYTES: usize = 64 << 10;

fn manifest_of(text: &str, n: u64) -> Result<Manifest, ApiError> {
    edgefn_schema::load(&Source::new("edgefn.yaml", text), None)
        .map(|l| l.manifest)
        .map_err(|_| {
            ApiError::new(
                edgefn_schema::api::ErrorCode::InvalidManifest,
                format!("revision {n}'s manifest no longer validates"),
            )
        })
}

pub(super) async fn revision_diff(
    State(state): State<Arc<AppState>>,
    caller: Caller,
    path: Result<Path<(u64, u64)>, PathRejection>,
) -> Result<Json<RevisionDiff>, ApiError> {
    caller.require_admin()?;
    let Path((from, to)) = path.map_err(|_| {
        ApiError::bad_request("revision numbers are positive whole numbers: /v1/revisions/3/diff/5")
    })?;
    let store = state.store.clone();
    let diff = blocking(move || {
        let get = |n: u64| {
            store
                .revision(n)?
                .ok_or_else(|| ApiError::not_found(format!("no revision {n}")))
        };
        let (a, b) = (get(from)?, get(to)?);
        let (ma, mb) = (
            manifest_of(&a.manifest, from)?,
            manifest_of(&b.manifest, to)?,
        );
        let names: BTreeSet<&String> = ma.devices.keys().chain(mb.devices.keys()).collect();
        let mut devices = Vec::new();
        let mut unchanged = 0u64;
        for name in names {
            let sa = edgefn_schema::resolve(&ma, name, &a.bundles);
            let sb = edgefn_schema::resolve(&mb, name, &b.bundles);
            match diff_states(name, sa.as_ref(), sb.as_ref()) {
                Some(d) => devices.push(d),
                None => unchanged += 1,
            }
        }
        Ok(RevisionDiff {
            from,
            to,
            devices,
            unchanged,
        })
    })
    .await?;
    Ok(Json(diff))
}

pub(super) async fn functions(
    State(state): State<Arc<AppState>>,
    caller: Caller,
) -> Result<Json<Vec<FunctionInfo>>, ApiError> {
    caller.require_admin()?;
    let view = state.view();
    let Some(m) = &view.manifest else {
        return Ok(Json(Vec::new()));
    };
    let mut out: BTreeMap<&String, FunctionInfo> = m
        .functions
        .iter()
        .map(|(name, f)| {
            (
                name,
                FunctionInfo {
                    name: name.clone(),
                    runtime: f.runtime.as_str().to_owned(),
                    bundle: view.bundles.get(name).cloned(),
                    bindings: Vec::new(),
                    devices: Vec::new(),
                },
            )
        })
        .collect();
    for b in &m.bindings {
        if let Some(f) = out.get_mut(&b.function) {
            f.bindings.push(b.effective_name().to_owned());
            for (name, d) in &m.devices {
                if b.devices.matches(name, d) && !f.devices.contains(name) {
                    f.devices.push(name.clone());
                }
            }
        }
    }
    let mut list: Vec<FunctionInfo> = out.into_values().collect();
    for f in &mut list {
        f.devices.sort();
    }
    Ok(Json(list))
}

/// Records a bundle's entries as they stream by, and the first bytes of one file.
#[derive(Debug, Default)]
struct Lister {
    entries: Vec<BundleEntry>,
    total: u64,
    want: Option<String>,
    preview: Option<(Vec<u8>, u64)>,
}

impl bundle::Sink for Lister {
    type Error = std::io::Error;
    fn file(
        &mut self,
        path: &str,
        executable: bool,
        size: u64,
        data: &mut dyn Read,
    ) -> Result<(), Self::Error> {
        self.total += 1;
        if self.want.as_deref() == Some(path) {
            let mut head = Vec::new();
            data.take(PREVIEW_BYTES as u64).read_to_end(&mut head)?;
            self.preview = Some((head, size));
        }
        std::io::copy(data, &mut std::io::sink())?;
        if self.entries.len() < MAX_LISTED {
            self.entries.push(BundleEntry {
                path: path.to_owned(),
                size,
                executable,
                target: None,
            });
        }
        Ok(())
    }
    fn symlink(&mut self, path: &str, target: &str) -> Result<(), Self::Error> {
        self.total += 1;
        if self.entries.len() < MAX_LISTED {
            self.entries.push(BundleEntry {
                path: path.to_owned(),
                size: 0,
                executable: false,
                target: Some(target.to_owned()),
            });
        }
        Ok(())
    }
}

/// Reads the stored bundle `digest` through the checked unpacker.
async fn read_bundle(
    state: &AppState,
    digest: String,
    want: Option<String>,
) -> Result<(Lister, u64), ApiError> {
    if !bundle::is_digest(&digest) {
        return Err(ApiError::bad_request(format!(
            "`{digest}` is not a sha256 digest (64 lowercase hex digits)"
        )));
    }
    let store = state.store.clone();
    blocking(move || {
        // Streamed from the store: a stored model of hundreds of MB is never held whole.
        let read = store
            .read_bundle(&digest, 0)?
            .ok_or_else(|| ApiError::not_found("no bundle with this digest"))?;
        let size = read.total;
        let mut lister = Lister {
            want,
            ..Lister::default()
        };
        let reader =
            std::io::BufReader::with_capacity(64 << 10, crate::objects::BlockingRead::new(read));
        bundle::unpack_into(reader, MAX_INFLATED, &mut lister).map_err(|e| {
            ApiError::new(
                edgefn_schema::api::ErrorCode::Internal,
                format!("the stored bundle cannot be read: {e}"),
            )
        })?;
        Ok((lister, size))
    })
    .await
}

pub(super) async fn bundle_files(
    State(state): State<Arc<AppState>>,
    caller: Caller,
    Path(digest): Path<String>,
) -> Result<Json<BundleListing>, ApiError> {
    caller.require_admin()?;
    let (lister, bytes) = read_bundle(&state, digest.clone(), None).await?;
    Ok(Json(BundleListing {
        digest,
        bytes,
        files: lister.entries,
        total: lister.total,
    }))
}

pub(super) async fn bundle_file(
    State(state): State<Arc<AppState>>,
    caller: Caller,
    Path((digest, path)): Path<(String, String)>,
) -> Result<Json<BundleFilePreview>, ApiError> {
    caller.require_admin()?;
    let (lister, _) = read_bundle(&state, digest, Some(path.clone())).await?;
    let Some((head, size)) = lister.preview else {
        return Err(ApiError::not_found(format!(
            "the bundle holds no regular file `{path}`"
        )));
    };
    let truncated = size > head.len() as u64;
    // A cut may split a UTF-8 sequence: up to 3 bytes at the end may be dropped.
    let text = if head.contains(&0) {
        None
    } else {
        match std::str::from_utf8(&head) {
            Ok(t) => Some(t.to_owned()),
            Err(e) if truncated && e.error_len().is_none() => {
                Some(String::from_utf8_lossy(&head[..e.valid_up_to()]).into_owned())
            }
            Err(_) => None,
        }
    };
    Ok(Json(BundleFilePreview {
        path,
        size,
        binary: text.is_none(),
        text,
        truncated,
    }))
}

//! `edgefn-cloud move-store`: moves the state of a cloud that ran on the embedded store (redb
//! in `DATA/cloud.redb`, bundles in `DATA/bundles`) into an empty PostgreSQL database, so that
//! it can run on with `--store postgres://…`.
//!
//! Order, so that nothing is half moved: the database is checked to be empty; the bundles
//! (and layers and models) are copied first — content-addressed, so copies left by a move that
//! failed later are harmless, and a second attempt skips them; every object a revision names
//! is checked to be in the target; then everything else (revisions with their history,
//! devices and their token hashes, admin token hashes, device reports, sealed secrets and the
//! key check, the rollout record) is written in one transaction, which checks again, under
//! table locks, that the database is empty.
//!
//! The old cloud must be stopped: the redb file is opened exclusively, so a running cloud
//! makes the move refuse (and the move keeps a cloud from starting on the folder meanwhile).
//! The source is only read.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::store::postgres::{Retry, Snapshot};
use crate::store::{LocalStore, PgStore, Store as _, StoreError};

/// What [`move_store`] copied.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Moved {
    /// Revisions.
    pub revisions: usize,
    /// Devices.
    pub devices: usize,
    /// Admin tokens (revoked ones included).
    pub admin_tokens: usize,
    /// Secrets.
    pub secrets: usize,
    /// Objects (bundles, layers, models) copied.
    pub objects_copied: usize,
    /// Objects already in the target.
    pub objects_present: usize,
    /// Where the objects are now.
    pub objects_in: String,
    /// The database, without its password.
    pub database: String,
}

/// Why [`move_store`] failed: what is wrong and how to fix it. Nothing of the metadata was
/// written (objects copied before the failure may remain in the target; they are harmless).
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct MoveError(String);

impl From<StoreError> for MoveError {
    fn from(e: StoreError) -> Self {
        MoveError(e.to_string())
    }
}

/// How long connecting to the target may be retried (a move is run by hand: an unreachable
/// database is said within seconds rather than waited for).
const CONNECT: Retry = Retry {
    first: std::time::Duration::from_millis(500),
    max: std::time::Duration::from_secs(2),
    attempts: Some(3),
};

/// Moves the embedded store in `data` into the PostgreSQL database at `to`, its objects into
/// `objects` (an `--objects` URL) or, when `None`, into the database.
///
/// Errors: `data` has no `cloud.redb`; the redb file is in use (a cloud is running on it);
/// the database is unreachable, refuses the connection, or already holds a control plane's
/// state; an object a revision names is missing; any read or write failing.
pub fn move_store(data: &Path, to: &str, objects: Option<&str>) -> Result<Moved, MoveError> {
    let redb = data.join("cloud.redb");
    if !redb.is_file() {
        return Err(MoveError(format!(
            "{}: no such file, so {} is not the data folder of a cloud on the embedded store: give --data the folder the old cloud ran with (`edgefn-cloud --data DATA`)",
            redb.display(),
            data.display()
        )));
    }
    let folder = data.join("bundles");
    let source = LocalStore::open_with(
        data,
        Arc::new(crate::objects::Folder::open(&folder).map_err(|e| MoveError(e.to_string()))?),
    )
    .map_err(|e| match e {
        StoreError::Database(redb::Error::DatabaseAlreadyOpen) => MoveError(format!(
            "{} is in use by a running edgefn-cloud: stop it first (its state must not change while it is moved), then run move-store again",
            redb.display()
        )),
        other => MoveError(format!("{}: {other}", redb.display())),
    })?;
    let snapshot = Snapshot::read(&source)?;

    let pg = PgStore::connect(to, CONNECT)?;
    let database = pg.shown().to_owned();
    if let Some(table) = pg.first_non_empty()? {
        return Err(MoveError(format!(
            "{database} already holds a control plane's state (table `{table}` is not empty), and move-store only fills an empty database: create a new one (CREATE DATABASE …) and give its URL to --to"
        )));
    }
    let target = match objects {
        Some(url) => {
            let objects =
                crate::objects::open(Some(url), &folder).map_err(|e| MoveError(e.to_string()))?;
            pg.with_objects(objects, data.join("uploads"))?
        }
        None => pg,
    };
    let objects_in = objects.map_or_else(
        || format!("{database} (table bundles)"),
        |u| u.split('?').next().unwrap_or_default().to_owned(),
    );

    let (mut copied, mut present) = (0, 0);
    for (digest, path) in stored_objects(&folder)? {
        let mut file = std::fs::File::open(&path)
            .map_err(|e| MoveError(format!("cannot read {}: {e}", path.display())))?;
        if target.put_bundle_from(&digest, &mut file)? {
            copied += 1;
        } else {
            present += 1;
        }
    }
    let named: Vec<&str> = snapshot
        .revisions
        .iter()
        .flat_map(|r| {
            r.bundles
                .values()
                .chain(r.layers.values().flat_map(|by| by.values()))
                .chain(r.models.values().map(|m| &m.digest))
        })
        .map(String::as_str)
        .collect::<std::collections::BTreeSet<_>>()
        .into_iter()
        .collect();
    let missing = target.missing_bundles(&named)?;
    if !missing.is_empty() {
        return Err(MoveError(format!(
            "revisions name {} object(s) that are neither in {} nor in {objects_in}: {}; if the old cloud kept them elsewhere, give move-store the same --objects it ran with (nothing else was moved)",
            missing.len(),
            folder.display(),
            missing.join(", ")
        )));
    }
    target.import(&snapshot)?;
    Ok(Moved {
        revisions: snapshot.revisions.len(),
        devices: snapshot.devices.len(),
        admin_tokens: snapshot.admin_tokens.len(),
        secrets: snapshot.secrets.len(),
        objects_copied: copied,
        objects_present: present,
        objects_in,
        database,
    })
}

/// The objects in the folder `dir` (each file named by its digest), sorted.
fn stored_objects(dir: &Path) -> Result<Vec<(String, PathBuf)>, MoveError> {
    let entries = std::fs::read_dir(dir)
        .map_err(|e| MoveError(format!("cannot list {}: {e}", dir.display())))?;
    let mut out = Vec::new();
    for e in entries {
        let e = e.map_err(|e| MoveError(format!("cannot list {}: {e}", dir.display())))?;
        let name = e.file_name().to_string_lossy().into_owned();
        if edgefn_schema::bundle::is_digest(&name) && e.path().is_file() {
            out.push((name, e.path()));
        }
    }
    out.sort();
    Ok(out)
}

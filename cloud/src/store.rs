//! Storage for the control plane, behind the [`Store`] trait so that a PostgreSQL or
//! object-store backend can come later without touching the HTTP handlers.
//!
//! [`LocalStore`] is the embedded default: metadata in redb (ACID, crash-safe), bundles as files
//! named by their digest, written atomically (temporary file, fsync, rename, fsync of the folder).
//! A revision is committed in one redb transaction after checking that all its bundles exist, so
//! after a crash it is either there whole or absent.

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};

use edgefn_schema::api::{DeviceInfo, Provenance, Revision, RevisionSummary, StatusReport};
use redb::{Database, ReadableDatabase, ReadableTable, TableDefinition};
use serde::{Deserialize, Serialize};

/// What can go wrong in a store.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The latest revision is not the expected parent.
    #[error("the latest revision is {latest}, not {expected}")]
    Conflict {
        /// The latest revision.
        latest: u64,
        /// What the caller expected.
        expected: u64,
    },
    /// Bundles named by a revision are not stored.
    #[error("missing bundles: {}", .0.join(", "))]
    MissingBundles(Vec<String>),
    /// A device of that name is already registered.
    #[error("device `{0}` is already registered")]
    DeviceExists(String),
    /// The database failed.
    #[error("database: {0}")]
    Database(String),
    /// A file operation failed.
    #[error("{action} {}: {source}", .path.display())]
    Io {
        /// What was being done.
        action: &'static str,
        /// Where.
        path: PathBuf,
        /// Why it failed.
        source: std::io::Error,
    },
}

impl From<redb::Error> for StoreError {
    fn from(e: redb::Error) -> Self {
        StoreError::Database(e.to_string())
    }
}

macro_rules! from_redb {
    ($($t:ty),*) => {$(
        impl From<$t> for StoreError {
            fn from(e: $t) -> Self {
                StoreError::Database(redb::Error::from(e).to_string())
            }
        }
    )*};
}
from_redb!(
    redb::TransactionError,
    redb::TableError,
    redb::StorageError,
    redb::CommitError,
    redb::DatabaseError,
    redb::SetDurabilityError
);

/// A revision about to be committed.
#[derive(Debug, Clone)]
pub struct Draft {
    /// Manifest text.
    pub manifest: String,
    /// Bundle digests by function.
    pub bundles: BTreeMap<String, String>,
    /// Where it came from.
    pub provenance: Provenance,
    /// Set for rollbacks.
    pub rollback_of: Option<u64>,
    /// Commit time.
    pub created_ms: u64,
}

/// A registered device.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeviceRecord {
    /// Name.
    pub name: String,
    /// sha256 of its token.
    pub token_hash: [u8; 32],
    /// Registration time.
    pub registered_ms: u64,
    /// Mosquitto's `$7$` hash of its token, computed at registration (when the token is
    /// known) so that the cloud can write Mosquitto's password file; absent for devices
    /// registered before the cloud had messages.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mqtt_hash: Option<String>,
}

impl DeviceRecord {
    /// The public part.
    pub fn info(&self) -> DeviceInfo {
        DeviceInfo {
            name: self.name.clone(),
            registered_ms: self.registered_ms,
        }
    }
}

/// The control plane's persistent state.
pub trait Store: Send + Sync + 'static {
    /// Whether the bundle is stored.
    fn has_bundle(&self, digest: &str) -> Result<bool, StoreError>;
    /// Stores a bundle whose digest the caller verified; `false` when it was already there.
    fn put_bundle(&self, digest: &str, bytes: &[u8]) -> Result<bool, StoreError>;
    /// A bundle's bytes.
    fn bundle(&self, digest: &str) -> Result<Option<Vec<u8>>, StoreError>;
    /// The latest revision.
    fn latest(&self) -> Result<Option<Revision>, StoreError>;
    /// Revision `n`.
    fn revision(&self, n: u64) -> Result<Option<Revision>, StoreError>;
    /// The newest `limit` revisions, newest first.
    fn history(&self, limit: usize) -> Result<Vec<RevisionSummary>, StoreError>;
    /// Commits `draft` as the next revision, if the latest is `expected_parent` (when given)
    /// and every bundle it names is stored; both checked in the committing transaction.
    fn commit(&self, draft: Draft, expected_parent: Option<u64>) -> Result<Revision, StoreError>;
    /// Registers a device.
    fn add_device(&self, record: &DeviceRecord) -> Result<(), StoreError>;
    /// Removes a device and its token; `false` when there was none.
    fn remove_device(&self, name: &str) -> Result<bool, StoreError>;
    /// All registered devices.
    fn devices(&self) -> Result<Vec<DeviceRecord>, StoreError>;
    /// Records devices' status reports (name, report, time), in one transaction.
    fn put_statuses(&self, batch: &[(String, StatusReport, u64)]) -> Result<(), StoreError>;
    /// Every device's last report and its time.
    fn statuses(&self) -> Result<BTreeMap<String, (StatusReport, u64)>, StoreError>;
    /// sha256 hashes of the admin tokens.
    fn admin_token_hashes(&self) -> Result<Vec<[u8; 32]>, StoreError>;
    /// Adds an admin token hash.
    fn add_admin_token_hash(&self, hash: [u8; 32]) -> Result<(), StoreError>;
}

const REVISIONS: TableDefinition<u64, &[u8]> = TableDefinition::new("revisions");
const DEVICES: TableDefinition<&str, &[u8]> = TableDefinition::new("devices");
const STATUS: TableDefinition<&str, &[u8]> = TableDefinition::new("status");
const ADMIN: TableDefinition<&[u8], u64> = TableDefinition::new("admin_tokens");

/// redb metadata plus bundle files under one data folder.
#[derive(Debug)]
pub struct LocalStore {
    db: Database,
    bundles: PathBuf,
}

fn io(action: &'static str, path: &Path) -> impl FnOnce(std::io::Error) -> StoreError {
    let path = path.to_path_buf();
    move |source| StoreError::Io {
        action,
        path,
        source,
    }
}

fn json<T: Serialize>(v: &T) -> Vec<u8> {
    serde_json::to_vec(v).expect("store records serialize")
}

fn parse<T: for<'de> Deserialize<'de>>(bytes: &[u8]) -> Result<T, StoreError> {
    serde_json::from_slice(bytes).map_err(|e| StoreError::Database(format!("corrupt record: {e}")))
}

impl LocalStore {
    /// Opens (creating if needed) the store in `dir`.
    pub fn open(dir: &Path) -> Result<Self, StoreError> {
        let bundles = dir.join("bundles");
        fs::create_dir_all(&bundles).map_err(io("create", &bundles))?;
        let db = Database::create(dir.join("cloud.redb"))?;
        let tx = db.begin_write()?;
        tx.open_table(REVISIONS)?;
        tx.open_table(DEVICES)?;
        tx.open_table(STATUS)?;
        tx.open_table(ADMIN)?;
        tx.commit()?;
        // Temporary files of bundle writes a crash interrupted.
        if let Ok(entries) = fs::read_dir(&bundles) {
            for e in entries.flatten() {
                if e.file_name().to_string_lossy().starts_with(".tmp-") {
                    let _ = fs::remove_file(e.path());
                }
            }
        }
        Ok(Self { db, bundles })
    }

    fn bundle_path(&self, digest: &str) -> PathBuf {
        self.bundles.join(digest)
    }

    fn read_revision(
        table: &impl ReadableTable<u64, &'static [u8]>,
        n: u64,
    ) -> Result<Option<Revision>, StoreError> {
        match table.get(n)? {
            Some(v) => Ok(Some(parse(v.value())?)),
            None => Ok(None),
        }
    }
}

impl Store for LocalStore {
    fn has_bundle(&self, digest: &str) -> Result<bool, StoreError> {
        Ok(self.bundle_path(digest).is_file())
    }

    fn put_bundle(&self, digest: &str, bytes: &[u8]) -> Result<bool, StoreError> {
        let path = self.bundle_path(digest);
        if path.is_file() {
            return Ok(false);
        }
        edgefn_os::file::write_atomic(&path, bytes, edgefn_os::file::PUBLIC).map_err(|e| {
            StoreError::Io {
                action: "write bundle",
                path: path.clone(),
                source: e,
            }
        })?;
        Ok(true)
    }

    fn bundle(&self, digest: &str) -> Result<Option<Vec<u8>>, StoreError> {
        let path = self.bundle_path(digest);
        match fs::read(&path) {
            Ok(b) => Ok(Some(b)),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(io("read", &path)(e)),
        }
    }

    fn latest(&self) -> Result<Option<Revision>, StoreError> {
        let tx = self.db.begin_read()?;
        let t = tx.open_table(REVISIONS)?;
        match t.last()? {
            Some((_, v)) => Ok(Some(parse(v.value())?)),
            None => Ok(None),
        }
    }

    fn revision(&self, n: u64) -> Result<Option<Revision>, StoreError> {
        let tx = self.db.begin_read()?;
        let t = tx.open_table(REVISIONS)?;
        Self::read_revision(&t, n)
    }

    fn history(&self, limit: usize) -> Result<Vec<RevisionSummary>, StoreError> {
        let tx = self.db.begin_read()?;
        let t = tx.open_table(REVISIONS)?;
        let mut out = Vec::new();
        for entry in t.iter()?.rev().take(limit) {
            let (_, v) = entry?;
            let r: Revision = parse(v.value())?;
            out.push(r.summary);
        }
        Ok(out)
    }

    fn commit(&self, draft: Draft, expected_parent: Option<u64>) -> Result<Revision, StoreError> {
        let missing: Vec<String> = draft
            .bundles
            .values()
            .filter(|d| !self.bundle_path(d).is_file())
            .cloned()
            .collect();
        if !missing.is_empty() {
            return Err(StoreError::MissingBundles(missing));
        }
        let tx = self.db.begin_write()?;
        let revision = {
            let mut t = tx.open_table(REVISIONS)?;
            let latest = t.last()?.map_or(0, |(k, _)| k.value());
            if let Some(expected) = expected_parent {
                if expected != latest {
                    return Err(StoreError::Conflict { latest, expected });
                }
            }
            let revision = Revision {
                summary: RevisionSummary {
                    number: latest + 1,
                    parent: latest,
                    created_ms: draft.created_ms,
                    provenance: draft.provenance,
                    rollback_of: draft.rollback_of,
                },
                manifest: draft.manifest,
                bundles: draft.bundles,
            };
            t.insert(latest + 1, json(&revision).as_slice())?;
            revision
        };
        tx.commit()?;
        Ok(revision)
    }

    fn add_device(&self, record: &DeviceRecord) -> Result<(), StoreError> {
        let tx = self.db.begin_write()?;
        {
            let mut t = tx.open_table(DEVICES)?;
            if t.get(record.name.as_str())?.is_some() {
                return Err(StoreError::DeviceExists(record.name.clone()));
            }
            t.insert(record.name.as_str(), json(record).as_slice())?;
        }
        tx.commit()?;
        Ok(())
    }

    fn remove_device(&self, name: &str) -> Result<bool, StoreError> {
        let tx = self.db.begin_write()?;
        let removed = {
            let mut t = tx.open_table(DEVICES)?;
            let removed = t.remove(name)?.is_some();
            tx.open_table(STATUS)?.remove(name)?;
            removed
        };
        tx.commit()?;
        Ok(removed)
    }

    fn devices(&self) -> Result<Vec<DeviceRecord>, StoreError> {
        let tx = self.db.begin_read()?;
        let t = tx.open_table(DEVICES)?;
        let mut out = Vec::new();
        for entry in t.iter()? {
            let (_, v) = entry?;
            out.push(parse(v.value())?);
        }
        Ok(out)
    }

    fn put_statuses(&self, batch: &[(String, StatusReport, u64)]) -> Result<(), StoreError> {
        let tx = self.db.begin_write()?;
        {
            let mut t = tx.open_table(STATUS)?;
            for (name, report, at_ms) in batch {
                t.insert(name.as_str(), json(&(report, at_ms)).as_slice())?;
            }
        }
        tx.commit()?;
        Ok(())
    }

    fn statuses(&self) -> Result<BTreeMap<String, (StatusReport, u64)>, StoreError> {
        let tx = self.db.begin_read()?;
        let t = tx.open_table(STATUS)?;
        let mut out = BTreeMap::new();
        for entry in t.iter()? {
            let (k, v) = entry?;
            out.insert(k.value().to_owned(), parse(v.value())?);
        }
        Ok(out)
    }

    fn admin_token_hashes(&self) -> Result<Vec<[u8; 32]>, StoreError> {
        let tx = self.db.begin_read()?;
        let t = tx.open_table(ADMIN)?;
        let mut out = Vec::new();
        for entry in t.iter()? {
            let (k, _) = entry?;
            if let Ok(h) = <[u8; 32]>::try_from(k.value()) {
                out.push(h);
            }
        }
        Ok(out)
    }

    fn add_admin_token_hash(&self, hash: [u8; 32]) -> Result<(), StoreError> {
        let tx = self.db.begin_write()?;
        tx.open_table(ADMIN)?.insert(hash.as_slice(), 0)?;
        tx.commit()?;
        Ok(())
    }
}

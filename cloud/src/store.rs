//! Storage for the control plane, behind the [`Store`] trait, so that the HTTP handlers do not
//! know where state lives.
//!
//! [`PgStore`] (`--store postgres://…`, in [`postgres`]) keeps it in PostgreSQL.
//! [`LocalStore`] is the embedded default: metadata in redb (ACID, crash-safe), bundles in the
//! configured [`Objects`] (files named by their digest in `DATA/bundles`, written atomically, or an
//! S3-compatible object store). A revision is committed in one redb transaction after checking
//! that all its bundles exist (in S3: a HEAD each), so after a crash it is either there whole or
//! absent, and no revision names a bundle that is not stored.

use std::collections::BTreeMap;
use std::fs;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::objects::{ObjectRead, Objects, ObjectsError};
use edgefn_schema::api::{DeviceInfo, Provenance, Revision, RevisionSummary, StatusReport};
use redb::{Database, ReadableDatabase, ReadableTable, TableDefinition};
use serde::{Deserialize, Serialize};

#[cfg(test)]
mod contract;
pub(crate) mod postgres;
pub(crate) use postgres::PgStore;

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
    /// Secret versions a revision names are not stored: never set (or removed), or no longer
    /// kept (older than the last [`edgefn_schema::api::SECRET_VERSIONS_KEPT`]).
    #[error("secrets not set: {}; versions no longer kept: {}", .not_set.join(", "), .gone.join(", "))]
    SecretsUnavailable {
        /// Names with no value at all.
        not_set: Vec<String>,
        /// `NAME@VERSION`s set once but no longer kept.
        gone: Vec<String>,
    },
    /// A device of that name is already registered.
    #[error("device `{0}` is already registered")]
    DeviceExists(String),
    /// The database failed.
    #[error("database: {0}")]
    Database(#[source] redb::Error),
    /// The database cannot be reached (down, restarting, the connection lost): retrying later
    /// may succeed. A write it interrupted was rolled back whole, or (when the connection was
    /// lost while committing) may have been committed.
    #[error("the database {store} is unavailable: {reason}")]
    Unavailable {
        /// The database, without its password.
        store: String,
        /// Why.
        reason: String,
    },
    /// PostgreSQL refused a request (what retrying does not fix).
    #[error("PostgreSQL: {0}")]
    Postgres(String),
    /// A `--store` value that is not a usable database URL.
    #[error("--store: {0}")]
    BadUrl(String),
    /// The database's schema is not one this program can use.
    #[error("{0}")]
    Schema(String),
    /// A stored record does not decode.
    #[error("database: corrupt record: {0}")]
    Corrupt(#[source] serde_json::Error),
    /// The object store holding bundles failed (see [`ObjectsError`]).
    #[error(transparent)]
    Objects(#[from] ObjectsError),
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
        StoreError::Database(e)
    }
}

macro_rules! from_redb {
    ($($t:ty),*) => {$(
        impl From<$t> for StoreError {
            fn from(e: $t) -> Self {
                StoreError::Database(redb::Error::from(e))
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
pub(crate) struct Draft {
    /// Manifest text.
    pub(crate) manifest: String,
    /// Bundle digests by function.
    pub(crate) bundles: BTreeMap<String, String>,
    /// Dependency layer digests by function and platform.
    pub(crate) layers: edgefn_schema::Layers,
    /// Model artifacts by model name.
    pub(crate) models: edgefn_schema::Models,
    /// Where it came from.
    pub(crate) provenance: Provenance,
    /// Set for rollbacks.
    pub(crate) rollback_of: Option<u64>,
    /// Commit time.
    pub(crate) created_ms: u64,
    /// The version of each secret its bindings name, checked to be stored in the commit's
    /// transaction.
    pub(crate) secrets: BTreeMap<String, u64>,
    /// The signatures of its desired states, checked against them before the commit.
    pub(crate) signatures: Option<edgefn_schema::api::RevisionSignatures>,
}

/// A secret's sealed versions (values encrypted by `crate::secrets`), stored by name.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct SecretRecord {
    /// Its name.
    pub(crate) name: String,
    /// The last version issued (from 1); never decreases, even when the secret is removed, so
    /// a version number names one value forever.
    pub(crate) last: u64,
    /// The versions kept, oldest first; empty once removed.
    pub(crate) versions: Vec<SealedVersion>,
}

impl SecretRecord {
    /// The sealed value of `version`, when kept.
    pub(crate) fn version(&self, version: u64) -> Option<&SealedVersion> {
        self.versions.iter().find(|v| v.version == version)
    }

    /// The latest version kept.
    pub(crate) fn latest(&self) -> Option<&SealedVersion> {
        self.versions.last()
    }
}

/// One version of a secret, sealed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct SealedVersion {
    /// Its number.
    pub(crate) version: u64,
    /// When it was set, ms since the Unix epoch.
    pub(crate) created_ms: u64,
    /// Nonce, ciphertext and tag (`crate::secrets::seal`), base64.
    pub(crate) sealed: String,
}

/// A registered device.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct DeviceRecord {
    /// Name.
    pub(crate) name: String,
    /// sha256 of its token.
    pub(crate) token_hash: [u8; 32],
    /// Registration time.
    pub(crate) registered_ms: u64,
    /// Mosquitto's `$7$` hash of its token, computed at registration (when the token is
    /// known) so that the cloud can write Mosquitto's password file; absent for devices
    /// registered before the cloud had messages.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) mqtt_hash: Option<String>,
}

impl DeviceRecord {
    /// The public part.
    pub(crate) fn info(&self) -> DeviceInfo {
        DeviceInfo {
            name: self.name.clone(),
            registered_ms: self.registered_ms,
        }
    }
}

/// The control plane's persistent state.
pub(crate) trait Store: Send + Sync + 'static {
    /// Whether the bundle is stored.
    fn has_bundle(&self, digest: &str) -> Result<bool, StoreError>;
    /// Which of `digests` are not stored, in their order, each once.
    fn missing_bundles(&self, digests: &[&str]) -> Result<Vec<String>, StoreError> {
        let mut out: Vec<String> = Vec::new();
        for d in digests {
            if !out.iter().any(|m| m == d) && !self.has_bundle(d)? {
                out.push((*d).to_owned());
            }
        }
        Ok(out)
    }
    /// Stores a bundle whose digest the caller verified; `false` when it was already there.
    fn put_bundle(&self, digest: &str, bytes: &[u8]) -> Result<bool, StoreError>;
    /// A bundle's bytes.
    fn bundle(&self, digest: &str) -> Result<Option<Vec<u8>>, StoreError>;
    /// Stores a bundle read from `body` to its end, streaming (a model of hundreds of MB is
    /// never held whole); `false` when it was already there. `body` checks the digest itself
    /// and fails its last read when it is wrong: a failed read stores nothing.
    ///
    /// The default reads `body` whole and calls [`Store::put_bundle`]; stores override it to
    /// stream.
    fn put_bundle_from(&self, digest: &str, body: &mut dyn Read) -> Result<bool, StoreError> {
        let mut bytes = Vec::new();
        body.read_to_end(&mut bytes)
            .map_err(|e| io("receive bundle", Path::new(digest))(e))?;
        self.put_bundle(digest, &bytes)
    }
    /// A bundle from byte `start` on, streamed (its size, and its bytes from `start`); `None`
    /// when absent. The default reads it whole with [`Store::bundle`].
    fn read_bundle(&self, digest: &str, start: u64) -> Result<Option<ObjectRead>, StoreError> {
        Ok(self.bundle(digest)?.map(|b| {
            let total = b.len() as u64;
            let start = start.min(total);
            let rest = bytes::Bytes::from(b).slice(usize::try_from(start).unwrap_or(0)..);
            ObjectRead {
                total,
                start,
                body: Box::pin(futures_util::stream::iter([Ok(rest)])),
            }
        }))
    }
    /// The latest revision.
    fn latest(&self) -> Result<Option<Revision>, StoreError>;
    /// Revision `n`.
    fn revision(&self, n: u64) -> Result<Option<Revision>, StoreError>;
    /// The newest `limit` revisions, newest first.
    fn history(&self, limit: usize) -> Result<Vec<RevisionSummary>, StoreError>;
    /// Commits `draft` as the next revision (refused with [`StoreError::Conflict`] when
    /// `expected_parent` is given and is not the latest), storing what `rollout` makes of the new revision (when it makes
    /// something) as the rollout record in the same transaction: a revision and its rollout
    /// are committed together or not at all.
    fn commit_rollout(
        &self,
        draft: Draft,
        expected_parent: Option<u64>,
        rollout: &mut dyn FnMut(&Revision) -> Option<Vec<u8>>,
    ) -> Result<Revision, StoreError>;
    /// The rollout record (JSON, see `crate::rollout::RolloutRecord`), if one was stored.
    fn rollout(&self) -> Result<Option<Vec<u8>>, StoreError>;
    /// Replaces the rollout record.
    fn put_rollout(&self, record: &[u8]) -> Result<(), StoreError>;
    /// Registers a device.
    fn add_device(&self, record: &DeviceRecord) -> Result<(), StoreError>;
    /// Removes a device and its token; `false` when there was none.
    fn remove_device(&self, name: &str) -> Result<bool, StoreError>;
    /// All registered devices.
    fn devices(&self) -> Result<Vec<DeviceRecord>, StoreError>;
    /// The registered device `name`, if it is.
    fn device(&self, name: &str) -> Result<Option<DeviceRecord>, StoreError> {
        Ok(self.devices()?.into_iter().find(|d| d.name == name))
    }
    /// Records devices' status reports (name, report, time), in one transaction.
    fn put_statuses(&self, batch: &[(String, StatusReport, u64)]) -> Result<(), StoreError>;
    /// Every device's last report and its time.
    fn statuses(&self) -> Result<BTreeMap<String, (StatusReport, u64)>, StoreError>;
    /// The reports written (by any process sharing the store) after position `seq` of the
    /// store's sequence of report writes (0: from the start), and the position to ask from
    /// next. A store no other process writes to (the default) has nothing to add.
    fn statuses_since(&self, seq: u64) -> Result<StatusesSince, StoreError> {
        Ok(StatusesSince {
            reports: Vec::new(),
            last: seq,
        })
    }
    /// The admin tokens, revoked ones included (their hashes, names, times).
    fn admin_tokens(&self) -> Result<Vec<AdminTokenRecord>, StoreError>;
    /// Adds an admin token (by its hash); an existing record with that hash is kept as it is.
    fn add_admin_token(&self, record: &AdminTokenRecord) -> Result<(), StoreError>;
    /// Revokes the admin token whose id is `id` at `when_ms`, unless it is the last one not
    /// revoked. `Ok(None)` when no token not revoked has that id.
    fn revoke_admin_token(&self, id: &str, when_ms: u64) -> Result<Option<Revoked>, StoreError>;
    /// Every secret record (removed ones too: they keep their last version number).
    fn secrets(&self) -> Result<Vec<SecretRecord>, StoreError>;
    /// One secret record.
    fn secret(&self, name: &str) -> Result<Option<SecretRecord>, StoreError>;
    /// Stores a new version of secret `name`, sealed by `seal` (given the new version's
    /// number), keeping the last `keep` versions; returns the new version.
    fn put_secret(
        &self,
        name: &str,
        created_ms: u64,
        keep: usize,
        seal: &mut dyn FnMut(u64) -> Vec<u8>,
    ) -> Result<u64, StoreError>;
    /// Forgets every value of secret `name` (its version counter stays); false when it had none.
    fn remove_secret(&self, name: &str) -> Result<bool, StoreError>;
    /// A value sealed with the secrets key when it was first used, to recognise that key.
    fn key_check(&self) -> Result<Option<Vec<u8>>, StoreError>;
    /// Stores [`Store::key_check`].
    fn set_key_check(&self, sealed: &[u8]) -> Result<(), StoreError>;
    /// Calls `changed`, on a thread of its own, whenever another process sharing this store may
    /// have changed something this process keeps in memory, and with [`Changed::Everything`]
    /// after each (re)connection (so what was missed meanwhile is read again), until `stop`
    /// turns true. A store no other process shares (the default) never calls it.
    fn watch_changes(
        &self,
        changed: Box<dyn Fn(Changed) + Send>,
        stop: tokio::sync::watch::Receiver<bool>,
    ) {
        let _ = (changed, stop);
    }
    /// Whether this process is the one that drives running rollouts, kept current until `stop`
    /// turns true: of all the processes sharing the store, at most one holds it at a time (the
    /// PostgreSQL store: a session-level advisory lock on a connection of its own, so it moves
    /// to another process when the holder dies). A store no other process shares (the default):
    /// always true.
    fn rollout_driver(
        &self,
        stop: tokio::sync::watch::Receiver<bool>,
    ) -> Arc<std::sync::atomic::AtomicBool> {
        let _ = stop;
        Arc::new(std::sync::atomic::AtomicBool::new(true))
    }
    /// Whether other processes may share this store (then messages from devices reach one
    /// process each through an MQTT 5 shared subscription, and [`Store::mark_message`]
    /// decides which are new). Default: false.
    fn shared(&self) -> bool {
        false
    }
    /// Marks message `id` of outbox `outbox` from `device` as handled: `Some(true)` when no
    /// process sharing the store marked it before (handle it), `Some(false)` when one did (a
    /// resend: drop it); `None` for a store no other process shares (the caller decides in
    /// memory). Marks expire after the outbox's resend window.
    fn mark_message(
        &self,
        device: &str,
        outbox: &str,
        id: u64,
        now_ms: u64,
    ) -> Result<Option<bool>, StoreError> {
        let _ = (device, outbox, id, now_ms);
        Ok(None)
    }
    /// Passes message `m`, sent up and handled by this process, to the live streams of every
    /// process sharing the store (each reads it through [`Store::messages_since`] when told
    /// [`Changed::Messages`]): true when it did (then this process, too, streams it from
    /// there, not directly). Default (a store no other process shares): false.
    fn share_message(&self, m: &SharedMessage) -> Result<bool, StoreError> {
        let _ = m;
        Ok(false)
    }
    /// The messages [`Store::share_message`] passed after position `seq` (a page of them), and
    /// the position to ask from next. Default: none.
    fn messages_since(&self, seq: u64) -> Result<(Vec<SharedMessage>, u64), StoreError> {
        Ok((Vec::new(), seq))
    }
    /// Replaces the rollout record only if it still is `expected` (a JSON document compared by
    /// value); false when another process changed it meanwhile (nothing written). The default,
    /// for a store no other process shares: [`Store::put_rollout`] (the caller's commit lock
    /// already rules out a change meanwhile).
    fn replace_rollout(&self, expected: &[u8], record: &[u8]) -> Result<bool, StoreError> {
        let _ = expected;
        self.put_rollout(record).map(|()| true)
    }
    /// Stores a new console session, first deleting the sessions expired at `now_ms`, then, when
    /// `max` are still kept, the ones closest to expiring (the oldest: every session lasts as
    /// long), so that at most `max` are kept with the new one. Sessions live in the store so
    /// that any process sharing it accepts a session another made, and a restart keeps them.
    fn put_console_session(
        &self,
        session: &ConsoleSession,
        max: usize,
        now_ms: u64,
    ) -> Result<(), StoreError>;
    /// The console session whose cookie value has sha256 `id_hash`, unless it expired by
    /// `now_ms` (an expired one is `None`, and deleted by the next
    /// [`Store::put_console_session`]).
    fn console_session(
        &self,
        id_hash: &[u8; 32],
        now_ms: u64,
    ) -> Result<Option<ConsoleSession>, StoreError>;
    /// Ends the console session whose cookie value has sha256 `id_hash` (signing out); false
    /// when there was none.
    fn remove_console_session(&self, id_hash: &[u8; 32]) -> Result<bool, StoreError>;
    /// Ends every console session made with the admin token whose sha256 is `token_hash` (it
    /// was revoked); how many there were.
    fn remove_console_sessions_of(&self, token_hash: &[u8; 32]) -> Result<usize, StoreError>;
}

/// A signed-in console browser, as stored ([`Store::put_console_session`]).
///
/// Never the cookie's value: only its sha256, so that what the store holds (a backup, a
/// replica of the database) cannot be replayed as a cookie. The CSRF token is kept as it is:
/// the console page reads it back (`GET /console/session`) after a reload, so it cannot be a
/// hash; it is not a credential by itself — a request is accepted only with the session
/// cookie too, whose value the store does not have.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct ConsoleSession {
    /// sha256 of the session cookie's value (a random 256-bit id).
    pub(crate) id_hash: [u8; 32],
    /// sha256 of the admin token it was made with (revoking that token ends the session).
    pub(crate) token_hash: [u8; 32],
    /// The token the page sends as `X-CSRF-Token` with every change.
    pub(crate) csrf: String,
    /// When it was made, ms since the Unix epoch.
    pub(crate) created_ms: u64,
    /// When it ends, ms since the Unix epoch.
    pub(crate) expires_ms: u64,
}

impl std::fmt::Debug for ConsoleSession {
    /// Without the CSRF token or the hashes, so that no log line can carry them.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ConsoleSession")
            .field("created_ms", &self.created_ms)
            .field("expires_ms", &self.expires_ms)
            .finish_non_exhaustive()
    }
}

/// What [`Store::statuses_since`] found.
#[derive(Debug, Clone)]
pub(crate) struct StatusesSince {
    /// Device name, report, and when it was received (ms since the Unix epoch).
    pub(crate) reports: Vec<(String, StatusReport, u64)>,
    /// The position to ask from next.
    pub(crate) last: u64,
}

/// A message sent up, passed to every process's streams ([`Store::share_message`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct SharedMessage {
    /// The device that sent it.
    pub(crate) device: String,
    /// Its local topic (without `edgefn/<device>/up/`).
    pub(crate) topic: String,
    /// The payload, raw.
    pub(crate) payload: Vec<u8>,
    /// When it was received (ms since the Unix epoch).
    pub(crate) ts_ms: u64,
    /// Its number in the device's outbox, when it came from one.
    pub(crate) id: Option<u64>,
}

/// What another process sharing the store changed ([`Store::watch_changes`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Changed {
    /// Messages were passed to every process's streams ([`Store::share_message`]).
    Messages,
    /// The latest revision or its rollout record.
    Revisions,
    /// These devices were registered or removed.
    Devices(Vec<String>),
    /// Admin tokens were added or revoked.
    AdminTokens,
    /// Anything (read everything again).
    Everything,
}

/// What [`Store::revoke_admin_token`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Revoked {
    /// Revoked: its hash.
    Done([u8; 32]),
    /// Refused: it is the last admin token, and revoking it would lock every admin out.
    Last,
}

/// An admin token as stored: its sha256, never the token.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct AdminTokenRecord {
    /// sha256 of the token.
    pub(crate) hash: [u8; 32],
    /// What it is for.
    pub(crate) name: String,
    /// When it was created (ms since the epoch; 0 when unknown).
    pub(crate) created_ms: u64,
    /// When it was revoked: a revoked token never authenticates again, even when a token file
    /// still holds it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) revoked_ms: Option<u64>,
}

impl AdminTokenRecord {
    /// Its id: the first 12 hex digits of its hash.
    pub(crate) fn id(&self) -> String {
        edgefn_schema::resolve::hex(&self.hash)[..12].to_owned()
    }
}

const REVISIONS: TableDefinition<u64, &[u8]> = TableDefinition::new("revisions");
const DEVICES: TableDefinition<&str, &[u8]> = TableDefinition::new("devices");
const STATUS: TableDefinition<&str, &[u8]> = TableDefinition::new("status");
/// Secrets: name → JSON [`SecretRecord`] (values sealed, never in plain text).
const SECRETS: TableDefinition<&str, &[u8]> = TableDefinition::new("secrets");
/// Small facts about the store: `secret_key_check` (see [`Store::key_check`]).
const META: TableDefinition<&str, &[u8]> = TableDefinition::new("meta");
const KEY_CHECK: &str = "secret_key_check";
/// The latest revision's rollout record, in [`META`].
const ROLLOUT: &str = "rollout";
/// The first format of the admin tokens: hash → 0. Migrated into [`ADMIN_TOKENS`] at open.
const ADMIN_V1: TableDefinition<&[u8], u64> = TableDefinition::new("admin_tokens");
/// Admin tokens: hash → JSON [`AdminTokenRecord`].
const ADMIN_TOKENS: TableDefinition<&[u8], &[u8]> = TableDefinition::new("admin_tokens_v2");
/// Console sessions: sha256 of the cookie's value → JSON [`ConsoleSession`].
const CONSOLE_SESSIONS: TableDefinition<&[u8], &[u8]> = TableDefinition::new("console_sessions");

/// redb metadata under one data folder, bundles in [`Objects`].
#[derive(Debug)]
pub(crate) struct LocalStore {
    db: Database,
    objects: std::sync::Arc<dyn Objects>,
    /// `DATA/uploads`: bundles being received, before they go to `objects` (emptied at open:
    /// what a crash left there was never stored).
    uploads: PathBuf,
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
    serde_json::from_slice(bytes).map_err(StoreError::Corrupt)
}

impl LocalStore {
    /// Opens (creating if needed) the store in `dir`, its bundles in `dir/bundles`.
    #[cfg(test)]
    pub(crate) fn open(dir: &Path) -> Result<Self, StoreError> {
        let objects = crate::objects::Folder::open(&dir.join("bundles"))?;
        Self::open_with(dir, std::sync::Arc::new(objects))
    }

    /// Opens (creating if needed) the store in `dir`, its bundles in `objects`.
    pub(crate) fn open_with(
        dir: &Path,
        objects: std::sync::Arc<dyn Objects>,
    ) -> Result<Self, StoreError> {
        fs::create_dir_all(dir).map_err(io("create", dir))?;
        let uploads = dir.join("uploads");
        let _ = fs::remove_dir_all(&uploads);
        fs::create_dir_all(&uploads).map_err(io("create", &uploads))?;
        let db = Database::create(dir.join("cloud.redb"))?;
        let tx = db.begin_write()?;
        tx.open_table(REVISIONS)?;
        tx.open_table(DEVICES)?;
        tx.open_table(STATUS)?;
        tx.open_table(SECRETS)?;
        tx.open_table(META)?;
        tx.open_table(CONSOLE_SESSIONS)?;
        {
            // Tokens of the first format become records named `initial`, in the same
            // transaction that empties the old table: whole or not at all.
            let mut old = tx.open_table(ADMIN_V1)?;
            let mut new = tx.open_table(ADMIN_TOKENS)?;
            let hashes: Vec<Vec<u8>> = old
                .iter()?
                .map(|e| e.map(|(k, _)| k.value().to_vec()))
                .collect::<Result<_, _>>()?;
            for h in hashes {
                if let Ok(hash) = <[u8; 32]>::try_from(h.as_slice()) {
                    if new.get(hash.as_slice())?.is_none() {
                        let record = AdminTokenRecord {
                            hash,
                            name: "initial".into(),
                            created_ms: 0,
                            revoked_ms: None,
                        };
                        new.insert(hash.as_slice(), json(&record).as_slice())?;
                    }
                }
                old.remove(h.as_slice())?;
            }
        }
        tx.commit()?;
        Ok(Self {
            db,
            objects,
            uploads,
        })
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
        Ok(self.objects.has(digest)?)
    }

    fn missing_bundles(&self, digests: &[&str]) -> Result<Vec<String>, StoreError> {
        Ok(self.objects.missing(digests)?)
    }

    fn put_bundle(&self, digest: &str, bytes: &[u8]) -> Result<bool, StoreError> {
        Ok(self.objects.put(digest, bytes)?)
    }

    fn bundle(&self, digest: &str) -> Result<Option<Vec<u8>>, StoreError> {
        Ok(self.objects.get(digest)?)
    }

    fn read_bundle(&self, digest: &str, start: u64) -> Result<Option<ObjectRead>, StoreError> {
        Ok(self.objects.read(digest, start)?)
    }

    fn put_bundle_from(&self, digest: &str, body: &mut dyn Read) -> Result<bool, StoreError> {
        if self.objects.has(digest)? {
            // Still read to the end: the caller's digest check and the client's upload finish.
            std::io::copy(body, &mut std::io::sink())
                .map_err(io("receive bundle", Path::new(digest)))?;
            return Ok(false);
        }
        // Spooled to a file in the data folder (never whole in memory), then handed to the
        // objects, which copy it into place (or upload it in parts); removed either way.
        let tmp = self.uploads.join(format!(
            "{digest}-{}-{}",
            std::process::id(),
            edgefn_os::time::now_ms()
        ));
        let spooled = (|| {
            let mut f = fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .open(&tmp)?;
            std::io::copy(body, &mut f)?;
            Ok(())
        })();
        let stored = spooled
            .map_err(io("receive bundle", &tmp))
            .and_then(|()| Ok(self.objects.put_file(digest, &tmp)?));
        let _ = fs::remove_file(&tmp);
        stored
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

    fn rollout(&self) -> Result<Option<Vec<u8>>, StoreError> {
        let tx = self.db.begin_read()?;
        let t = tx.open_table(META)?;
        Ok(t.get(ROLLOUT)?.map(|v| v.value().to_vec()))
    }

    fn put_rollout(&self, record: &[u8]) -> Result<(), StoreError> {
        let tx = self.db.begin_write()?;
        tx.open_table(META)?.insert(ROLLOUT, record)?;
        tx.commit()?;
        Ok(())
    }

    fn commit_rollout(
        &self,
        draft: Draft,
        expected_parent: Option<u64>,
        rollout: &mut dyn FnMut(&Revision) -> Option<Vec<u8>>,
    ) -> Result<Revision, StoreError> {
        let named: Vec<&str> = draft
            .bundles
            .values()
            .chain(draft.layers.values().flat_map(|by| by.values()))
            .chain(draft.models.values().map(|m| &m.digest))
            .map(String::as_str)
            .collect();
        let missing = self.objects.missing(&named)?;
        if !missing.is_empty() {
            return Err(StoreError::MissingBundles(missing));
        }
        let tx = self.db.begin_write()?;
        {
            // Every pinned secret version is stored, checked in the commit's transaction.
            let t = tx.open_table(SECRETS)?;
            let (mut not_set, mut gone) = (Vec::new(), Vec::new());
            for (name, version) in &draft.secrets {
                let record: Option<SecretRecord> = match t.get(name.as_str())? {
                    Some(v) => Some(parse(v.value())?),
                    None => None,
                };
                match record {
                    Some(r) if r.version(*version).is_some() => {}
                    Some(r) if !r.versions.is_empty() => gone.push(format!("{name}@{version}")),
                    _ => not_set.push(name.clone()),
                }
            }
            if !not_set.is_empty() || !gone.is_empty() {
                return Err(StoreError::SecretsUnavailable { not_set, gone });
            }
        }
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
                secrets: draft.secrets,
                signatures: draft.signatures,
                layers: draft.layers,
                models: draft.models,
            };
            t.insert(latest + 1, json(&revision).as_slice())?;
            revision
        };
        if let Some(record) = rollout(&revision) {
            tx.open_table(META)?.insert(ROLLOUT, record.as_slice())?;
        }
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

    fn admin_tokens(&self) -> Result<Vec<AdminTokenRecord>, StoreError> {
        let tx = self.db.begin_read()?;
        let t = tx.open_table(ADMIN_TOKENS)?;
        let mut out = Vec::new();
        for entry in t.iter()? {
            let (_, v) = entry?;
            out.push(parse(v.value())?);
        }
        Ok(out)
    }

    fn add_admin_token(&self, record: &AdminTokenRecord) -> Result<(), StoreError> {
        let tx = self.db.begin_write()?;
        {
            let mut t = tx.open_table(ADMIN_TOKENS)?;
            if t.get(record.hash.as_slice())?.is_none() {
                t.insert(record.hash.as_slice(), json(record).as_slice())?;
            }
        }
        tx.commit()?;
        Ok(())
    }

    fn revoke_admin_token(&self, id: &str, when_ms: u64) -> Result<Option<Revoked>, StoreError> {
        let tx = self.db.begin_write()?;
        let outcome = {
            let mut t = tx.open_table(ADMIN_TOKENS)?;
            let mut live: Vec<AdminTokenRecord> = Vec::new();
            for entry in t.iter()? {
                let (_, v) = entry?;
                let r: AdminTokenRecord = parse(v.value())?;
                if r.revoked_ms.is_none() {
                    live.push(r);
                }
            }
            match live.iter().find(|r| r.id() == id) {
                None => None,
                Some(_) if live.len() == 1 => Some(Revoked::Last),
                Some(r) => {
                    let revoked = AdminTokenRecord {
                        revoked_ms: Some(when_ms),
                        ..r.clone()
                    };
                    t.insert(r.hash.as_slice(), json(&revoked).as_slice())?;
                    Some(Revoked::Done(r.hash))
                }
            }
        };
        tx.commit()?;
        Ok(outcome)
    }

    fn secrets(&self) -> Result<Vec<SecretRecord>, StoreError> {
        let tx = self.db.begin_read()?;
        let t = tx.open_table(SECRETS)?;
        let mut out = Vec::new();
        for entry in t.iter()? {
            let (_, v) = entry?;
            out.push(parse(v.value())?);
        }
        Ok(out)
    }

    fn secret(&self, name: &str) -> Result<Option<SecretRecord>, StoreError> {
        let tx = self.db.begin_read()?;
        let t = tx.open_table(SECRETS)?;
        match t.get(name)? {
            Some(v) => Ok(Some(parse(v.value())?)),
            None => Ok(None),
        }
    }

    fn put_secret(
        &self,
        name: &str,
        created_ms: u64,
        keep: usize,
        seal: &mut dyn FnMut(u64) -> Vec<u8>,
    ) -> Result<u64, StoreError> {
        use base64::Engine as _;
        let tx = self.db.begin_write()?;
        let version = {
            let mut t = tx.open_table(SECRETS)?;
            let mut record: SecretRecord = match t.get(name)? {
                Some(v) => parse(v.value())?,
                None => SecretRecord {
                    name: name.to_owned(),
                    last: 0,
                    versions: Vec::new(),
                },
            };
            record.last += 1;
            let version = record.last;
            record.versions.push(SealedVersion {
                version,
                created_ms,
                sealed: base64::engine::general_purpose::STANDARD.encode(seal(version)),
            });
            let excess = record.versions.len().saturating_sub(keep.max(1));
            record.versions.drain(..excess);
            t.insert(name, json(&record).as_slice())?;
            version
        };
        tx.commit()?;
        Ok(version)
    }

    fn remove_secret(&self, name: &str) -> Result<bool, StoreError> {
        let tx = self.db.begin_write()?;
        let had = {
            let mut t = tx.open_table(SECRETS)?;
            let record: Option<SecretRecord> = match t.get(name)? {
                Some(v) => Some(parse(v.value())?),
                None => None,
            };
            match record {
                Some(mut r) if !r.versions.is_empty() => {
                    r.versions.clear();
                    t.insert(name, json(&r).as_slice())?;
                    true
                }
                _ => false,
            }
        };
        tx.commit()?;
        Ok(had)
    }

    fn key_check(&self) -> Result<Option<Vec<u8>>, StoreError> {
        let tx = self.db.begin_read()?;
        let t = tx.open_table(META)?;
        Ok(t.get(KEY_CHECK)?.map(|v| v.value().to_vec()))
    }

    fn set_key_check(&self, sealed: &[u8]) -> Result<(), StoreError> {
        let tx = self.db.begin_write()?;
        tx.open_table(META)?.insert(KEY_CHECK, sealed)?;
        tx.commit()?;
        Ok(())
    }

    fn put_console_session(
        &self,
        session: &ConsoleSession,
        max: usize,
        now_ms: u64,
    ) -> Result<(), StoreError> {
        let tx = self.db.begin_write()?;
        {
            let mut t = tx.open_table(CONSOLE_SESSIONS)?;
            let mut kept: Vec<(u64, Vec<u8>)> = Vec::new();
            let mut expired: Vec<Vec<u8>> = Vec::new();
            for entry in t.iter()? {
                let (k, v) = entry?;
                let s: ConsoleSession = parse(v.value())?;
                if s.expires_ms <= now_ms {
                    expired.push(k.value().to_vec());
                } else {
                    kept.push((s.expires_ms, k.value().to_vec()));
                }
            }
            // The oldest first, past what leaves room for the new one.
            kept.sort_unstable();
            let excess = (kept.len() + 1).saturating_sub(max.max(1));
            for k in expired
                .iter()
                .chain(kept.iter().take(excess).map(|(_, k)| k))
            {
                t.remove(k.as_slice())?;
            }
            t.insert(session.id_hash.as_slice(), json(session).as_slice())?;
        }
        tx.commit()?;
        Ok(())
    }

    fn console_session(
        &self,
        id_hash: &[u8; 32],
        now_ms: u64,
    ) -> Result<Option<ConsoleSession>, StoreError> {
        let tx = self.db.begin_read()?;
        let t = tx.open_table(CONSOLE_SESSIONS)?;
        let Some(v) = t.get(id_hash.as_slice())? else {
            return Ok(None);
        };
        let s: ConsoleSession = parse(v.value())?;
        Ok((s.expires_ms > now_ms).then_some(s))
    }

    fn remove_console_session(&self, id_hash: &[u8; 32]) -> Result<bool, StoreError> {
        let tx = self.db.begin_write()?;
        let removed = tx
            .open_table(CONSOLE_SESSIONS)?
            .remove(id_hash.as_slice())?
            .is_some();
        tx.commit()?;
        Ok(removed)
    }

    fn remove_console_sessions_of(&self, token_hash: &[u8; 32]) -> Result<usize, StoreError> {
        let tx = self.db.begin_write()?;
        let n = {
            let mut t = tx.open_table(CONSOLE_SESSIONS)?;
            let mut of: Vec<Vec<u8>> = Vec::new();
            for entry in t.iter()? {
                let (k, v) = entry?;
                let s: ConsoleSession = parse(v.value())?;
                if s.token_hash == *token_hash {
                    of.push(k.value().to_vec());
                }
            }
            for k in &of {
                t.remove(k.as_slice())?;
            }
            of.len()
        };
        tx.commit()?;
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use redb::ReadableTableMetadata;

    use super::*;

    /// A data folder from before named admin tokens (table `admin_tokens`: hash → 0) opens with
    /// its tokens kept, named `initial`, in the new table; the old table is emptied.
    #[test]
    fn admin_tokens_of_the_first_format_are_migrated() {
        let dir = tempfile::tempdir().expect("dir");
        let hash = [7u8; 32];
        {
            let db = Database::create(dir.path().join("cloud.redb")).expect("db");
            let tx = db.begin_write().expect("tx");
            tx.open_table(ADMIN_V1)
                .expect("table")
                .insert(hash.as_slice(), 0)
                .expect("insert");
            tx.commit().expect("commit");
        }
        let store = LocalStore::open(dir.path()).expect("open");
        let tokens = store.admin_tokens().expect("tokens");
        assert_eq!(tokens.len(), 1);
        assert_eq!(tokens[0].hash, hash);
        assert_eq!(tokens[0].name, "initial");
        assert_eq!(tokens[0].revoked_ms, None);
        drop(store);
        // Opening again changes nothing.
        let store = LocalStore::open(dir.path()).expect("open again");
        assert_eq!(store.admin_tokens().expect("tokens").len(), 1);
        let tx = store.db.begin_read().expect("tx");
        assert_eq!(tx.open_table(ADMIN_V1).expect("old").len().expect("len"), 0);
    }

    #[test]
    fn the_last_admin_token_cannot_be_revoked() {
        let dir = tempfile::tempdir().expect("dir");
        let store = LocalStore::open(dir.path()).expect("open");
        let record = |b: u8, name: &str| AdminTokenRecord {
            hash: [b; 32],
            name: name.into(),
            created_ms: 1,
            revoked_ms: None,
        };
        store.add_admin_token(&record(1, "a")).expect("add");
        store.add_admin_token(&record(2, "b")).expect("add");
        let a = record(1, "a").id();
        assert_eq!(
            store.revoke_admin_token(&a, 5).expect("revoke"),
            Some(Revoked::Done([1; 32]))
        );
        assert_eq!(store.revoke_admin_token(&a, 6).expect("again"), None);
        let b = record(2, "b").id();
        assert_eq!(
            store.revoke_admin_token(&b, 7).expect("last"),
            Some(Revoked::Last)
        );
        let tokens = store.admin_tokens().expect("tokens");
        assert_eq!(tokens.iter().filter(|r| r.revoked_ms.is_none()).count(), 1);
    }
}

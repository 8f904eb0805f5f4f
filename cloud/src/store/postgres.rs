//! [`PgStore`]: the control plane's state in PostgreSQL (`edgefn-cloud --store postgres://…`),
//! so that it lives in a database operators already run, back up and fail over, and so that
//! several control-plane processes can share it.
//!
//! The [`Store`] trait is synchronous: handlers call it on blocking threads
//! (`crate::error::blocking`), and start-up calls it before the async runtime exists. So this
//! uses the synchronous `postgres` client (tokio-postgres underneath, each connection driven by
//! a small runtime of its own) with the `r2d2` pool, rather than tokio-postgres and an async
//! pool bridged back into blocking calls.
//!
//! Every write that must be whole is one transaction. Revisions are committed under a table
//! lock (`SHARE ROW EXCLUSIVE` on `revisions`, which only commits take: readers never wait),
//! so that the check of the expected parent and the insert see the same latest revision: of
//! two commits racing on one parent — from one process or two — one succeeds and the other
//! gets [`StoreError::Conflict`].
//!
//! Losing the database mid-request gives [`StoreError::Unavailable`] (the API answers 503 with
//! `Retry-After`); an interrupted transaction is rolled back by PostgreSQL, so nothing half
//! written stays. The schema is versioned: [`MIGRATIONS`] run at start (see [`migrate`]).

use std::collections::BTreeMap;
use std::time::Duration;

use edgefn_schema::api::{Revision, RevisionSummary, StatusReport};
use r2d2_postgres::PostgresConnectionManager;

use tls::Tls;

pub(crate) use import::Snapshot;

mod import;
mod tls;

use super::{
    AdminTokenRecord, Changed, ConsoleSession, DeviceRecord, Draft, Revoked, SealedVersion,
    SecretRecord, SharedMessage, StatusesSince, Store, StoreError, json, parse,
};

/// The schema's migrations: version, name, SQL. Applied in order, each once, at start; never
/// edited once released (their checksums are kept and checked), only added to.
pub(crate) const MIGRATIONS: &[(i32, &str, &str)] = &[
    (1, "initial", include_str!("migrations/0001_initial.sql")),
    (
        2,
        "revision_summaries",
        include_str!("migrations/0002_revision_summaries.sql"),
    ),
    (
        3,
        "status_sequence",
        include_str!("migrations/0003_status_sequence.sql"),
    ),
    (
        4,
        "message_marks",
        include_str!("migrations/0004_message_marks.sql"),
    ),
    (
        5,
        "shared_messages",
        include_str!("migrations/0005_shared_messages.sql"),
    ),
    (
        6,
        "console_sessions",
        include_str!("migrations/0006_console_sessions.sql"),
    ),
];

/// How long a message passed to the other processes' streams is kept (they read it within
/// milliseconds; a process that was not listening reads what it missed, up to this old).
const SHARED_MESSAGE_TTL_MS: u64 = 5 * 60 * 1000;
/// The payload of a [`CHANGES`] notification for messages passed to every process's streams.
const MESSAGES: &str = "messages";
/// Messages read at once by [`Store::messages_since`].
const MESSAGES_PAGE: i64 = 1000;

/// How long a message's de-duplication mark is kept: longer than an agent's outbox keeps
/// resending a message (its messages expire within a day).
const MARK_TTL_MS: u64 = 2 * 24 * 3600 * 1000;
/// Expired marks are deleted by every this many-th mark written.
const MARK_SWEEP_EVERY: u64 = 1024;

/// How long a request waits for a pooled connection before it is answered 503.
const CHECKOUT_TIMEOUT: Duration = Duration::from_secs(5);
/// How long connecting to PostgreSQL may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// Connections in the pool, at most.
const POOL_SIZE: u32 = 16;
/// The key of the advisory lock held while migrating (any constant; "edgefn" in ASCII).
const MIGRATION_LOCK: i64 = 0x6564_6765_666e;
/// The keys of [`META`]-like rows in table `meta`.
const KEY_CHECK: &str = "secret_key_check";
const ROLLOUT: &str = "rollout";
/// The channel every process sharing the database LISTENs on: a NOTIFY on it (sent by the
/// transaction that commits a revision or changes the rollout record, delivered when it
/// commits) says "read the latest revision and rollout again". A hint only: the database is
/// the truth, and a listener that lost its connection reads again when it is back.
const CHANGES: &str = "edgefn_changes";
/// The payload of a [`CHANGES`] notification for a device registered or removed: this, then
/// its name. Admin tokens: [`ADMIN_TOKENS`]. Others carry a revision number or `rollout`.
const DEVICE: &str = "device:";
/// The payload of a [`CHANGES`] notification for admin tokens added or revoked.
const ADMIN_TOKENS: &str = "admin-tokens";
/// The session-level advisory lock held by the process that drives rollouts
/// ([`Store::rollout_driver`]): "edgefn-rollout" in ASCII, distinct from [`MIGRATION_LOCK`].
pub(crate) const DRIVER_LOCK: i64 = 0x0065_6466_6e72_6f6c;

type Pool = r2d2::Pool<PostgresConnectionManager<Tls>>;

/// The store in a PostgreSQL database.
pub(crate) struct PgStore {
    /// Always `Some` until dropped (see the `Drop` impl).
    pool: Option<Pool>,
    /// How to connect (the listener of [`Store::watch_changes`] has a connection of its own).
    config: postgres::Config,
    /// TLS for every connection: the pool's, the listener's and the rollout driver's.
    tls: Tls,
    /// The database as shown in messages: its URL without the password.
    shown: String,
    /// Messages marked by this process ([`Store::mark_message`]), to sweep expired marks now
    /// and then.
    marks: std::sync::atomic::AtomicU64,
    /// Where bundles live when an object store is configured (`--objects`), with the folder
    /// uploads are spooled to; `None`: in the `bundles` table.
    objects: Option<(
        std::sync::Arc<dyn crate::objects::Objects>,
        std::path::PathBuf,
    )>,
}

impl std::fmt::Debug for PgStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PgStore")
            .field("database", &self.shown)
            .finish_non_exhaustive()
    }
}

/// How [`PgStore::connect`] waits for a database that is not up yet.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Retry {
    /// The first wait.
    pub(crate) first: Duration,
    /// The longest wait (each wait doubles up to this).
    pub(crate) max: Duration,
    /// Attempts before giving up; `None`: until it comes up.
    pub(crate) attempts: Option<u32>,
}

impl Retry {
    /// Until it comes up, waiting 0.5 s, 1 s, 2 s, … at most 10 s between attempts.
    pub(crate) const FOREVER: Retry = Retry {
        first: Duration::from_millis(500),
        max: Duration::from_secs(10),
        attempts: None,
    };
}

/// `url` parsed, with the password from `$PGPASSWORD` when the URL has none, and its TLS
/// settings (`sslmode`, `sslrootcert`: [`tls`]).
fn config(url: &str) -> Result<(postgres::Config, tls::Settings), StoreError> {
    if !(url.starts_with("postgres://") || url.starts_with("postgresql://")) {
        return Err(StoreError::BadUrl(format!(
            "`{}` is not a PostgreSQL URL: give postgres://USER[:PASSWORD]@HOST[:PORT]/DATABASE",
            url.split('@').next_back().unwrap_or_default()
        )));
    }
    let (rest, mut settings) = tls::split_url(url)
        .map_err(|e| StoreError::BadUrl(format!("{}: {e}", shown_url(None, url))))?;
    let mut config: postgres::Config = rest.parse().map_err(|e: postgres::Error| {
        StoreError::BadUrl(format!(
            "{}: {e}; give postgres://USER[:PASSWORD]@HOST[:PORT]/DATABASE",
            shown_url(None, url)
        ))
    })?;
    if config.get_password().is_none() {
        if let Some(p) = std::env::var_os("PGPASSWORD") {
            config.password(p.as_encoded_bytes());
        }
    }
    if config.get_connect_timeout().is_none() {
        config.connect_timeout(CONNECT_TIMEOUT);
    }
    // A peer that vanished (a crashed host, a cut network) is noticed within about a minute
    // rather than the system's two hours.
    config
        .keepalives(true)
        .keepalives_idle(Duration::from_secs(30))
        .keepalives_interval(Duration::from_secs(10))
        .keepalives_retries(3);
    if config.get_application_name().is_none() {
        config.application_name("edgefn-cloud");
    }
    // As libpq: `sslmode` does not apply to unix sockets (PostgreSQL serves no TLS on them).
    if !config.get_hosts().is_empty()
        && config
            .get_hosts()
            .iter()
            .all(|h| matches!(h, postgres::config::Host::Unix(_)))
    {
        settings.mode = tls::SslMode::Disable;
    }
    config.ssl_mode(settings.client_mode());
    Ok((config, settings))
}

/// The database as shown in messages and logs: `postgres://USER@HOST:PORT/DATABASE`, never a
/// password (from the parsed configuration when there is one, else only the URL's host part).
pub(crate) fn shown_url(config: Option<&postgres::Config>, url: &str) -> String {
    let Some(c) = config else {
        let rest = url.rsplit('@').next().unwrap_or_default();
        let rest = rest.split('?').next().unwrap_or_default();
        let rest = rest
            .trim_start_matches("postgres://")
            .trim_start_matches("postgresql://");
        return format!("postgres://{rest}");
    };
    let host = c
        .get_hosts()
        .iter()
        .zip(c.get_ports().iter().chain(std::iter::repeat(&5432)))
        .map(|(h, port)| match h {
            postgres::config::Host::Tcp(h) if h.contains(':') => format!("[{h}]:{port}"),
            postgres::config::Host::Tcp(h) => format!("{h}:{port}"),
            postgres::config::Host::Unix(p) => {
                format!("{}:{port}", p.display()).replace('/', "%2F")
            }
        })
        .collect::<Vec<_>>()
        .join(",");
    format!(
        "postgres://{}@{host}/{}",
        c.get_user().unwrap_or_default(),
        c.get_dbname().or(c.get_user()).unwrap_or_default()
    )
}

/// Whether `e` is about reaching the database (retrying can help) rather than the request or
/// the configuration (a wrong password, a missing database: said at once).
fn transient(e: &postgres::Error) -> bool {
    if let Some(code) = e.code() {
        let c = code.code();
        // Connection exceptions, shutdowns and restarts, too many connections, and the
        // transaction conflicts PostgreSQL asks to retry.
        return c.starts_with("08")
            || c.starts_with("57P")
            || c == "53300"
            || c == "40001"
            || c == "40P01";
    }
    if e.is_closed() {
        return true;
    }
    // The client's own errors, by kind (their messages are the kinds' names): I/O, connecting,
    // timeouts and a garbled connection are; TLS, authentication, configuration and type
    // errors are not.
    let m = e.to_string();
    [
        "error communicating with the server",
        "error connecting to server",
        "timeout waiting for server",
        "unexpected message from server",
        "error parsing response from server",
    ]
    .iter()
    .any(|k| m.starts_with(k))
}

/// `u64` as PostgreSQL's `bigint` (every number the store keeps is far below 2^63).
fn big(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}

/// `bigint` as `u64`.
fn unbig(v: i64) -> u64 {
    u64::try_from(v).unwrap_or(0)
}

fn hash32(bytes: &[u8]) -> Result<[u8; 32], StoreError> {
    <[u8; 32]>::try_from(bytes).map_err(|_| {
        StoreError::Postgres(format!("a stored hash is {} bytes, not 32", bytes.len()))
    })
}

/// Applies the migrations not applied yet, up to version `target`, in one transaction under an
/// advisory lock (so replicas starting at once migrate once); returns the schema's version.
///
/// Refuses a database whose schema is newer than this program knows (an older edgefn-cloud
/// must not write to it) or whose applied migrations differ from this program's (edited).
pub(crate) fn migrate(
    client: &mut postgres::Client,
    target: i32,
    shown: &str,
) -> Result<i32, MigrateError> {
    let mut tx = client.transaction()?;
    tx.execute("SELECT pg_advisory_xact_lock($1)", &[&MIGRATION_LOCK])?;
    tx.batch_execute(
        "CREATE TABLE IF NOT EXISTS schema_migrations (
            version integer PRIMARY KEY,
            name text NOT NULL,
            checksum text NOT NULL,
            applied_at timestamptz NOT NULL DEFAULT now()
        )",
    )?;
    let applied: BTreeMap<i32, String> = tx
        .query("SELECT version, checksum FROM schema_migrations", &[])?
        .iter()
        .map(|r| (r.get(0), r.get(1)))
        .collect();
    let known = MIGRATIONS.last().map_or(0, |m| m.0);
    if let Some((&newest, _)) = applied.last_key_value() {
        if newest > known {
            return Err(MigrateError::Schema(format!(
                "the schema of {shown} is at version {newest}, newer than this edgefn-cloud knows ({known}): run the edgefn-cloud that upgraded it, or a newer one"
            )));
        }
    }
    let mut version = applied.last_key_value().map_or(0, |(v, _)| *v);
    for (v, name, sql) in MIGRATIONS.iter().filter(|m| m.0 <= target) {
        let checksum =
            edgefn_schema::resolve::hex(&<sha2::Sha256 as sha2::Digest>::digest(sql.as_bytes()));
        match applied.get(v) {
            Some(c) if *c == checksum => continue,
            Some(_) => {
                return Err(MigrateError::Schema(format!(
                    "migration {v} ({name}) applied to {shown} is not the one this edgefn-cloud has: its SQL was changed after release"
                )));
            }
            None => {}
        }
        tx.batch_execute(sql)?;
        tx.execute(
            "INSERT INTO schema_migrations (version, name, checksum) VALUES ($1, $2, $3)",
            &[v, name, &checksum],
        )?;
        tracing::info!(version = v, name, "PostgreSQL schema migrated");
        version = *v;
    }
    tx.commit()?;
    Ok(version)
}

/// Why [`migrate`] failed.
#[derive(Debug)]
pub(crate) enum MigrateError {
    /// The database failed.
    Db(postgres::Error),
    /// The schema is not one this program can bring up to date.
    Schema(String),
}

impl From<postgres::Error> for MigrateError {
    fn from(e: postgres::Error) -> Self {
        MigrateError::Db(e)
    }
}

impl PgStore {
    /// Connects to the database at `url` (`postgres://USER[:PASSWORD]@HOST[:PORT]/DATABASE`;
    /// the password may come from `$PGPASSWORD` instead), waiting for it to come up as `retry`
    /// says, and brings its schema up to date.
    ///
    /// Errors: [`StoreError::BadUrl`]; [`StoreError::Unavailable`] once `retry` gives up;
    /// [`StoreError::Postgres`] for what retrying cannot fix (a wrong password, a missing
    /// database, a schema newer than this program's). No message holds the password.
    pub(crate) fn connect(url: &str, retry: Retry) -> Result<Self, StoreError> {
        Self::connect_to(url, retry, MIGRATIONS.last().map_or(0, |m| m.0))
    }

    /// [`PgStore::connect`], migrating only up to version `target` (tests of upgrades).
    #[allow(clippy::disallowed_methods)] // Runs before the async runtime, or on a blocking thread.
    pub(crate) fn connect_to(url: &str, retry: Retry, target: i32) -> Result<Self, StoreError> {
        let (config, tls_settings) = config(url)?;
        let shown = shown_url(Some(&config), url);
        let tls = tls_settings
            .connector()
            .map_err(|e| StoreError::BadUrl(format!("{shown}: {e}")))?;
        let mut wait = retry.first;
        let mut attempt = 0u32;
        let mut client = loop {
            attempt += 1;
            match config.connect(tls.clone()) {
                Ok(c) => break c,
                Err(e) if transient(&e) && retry.attempts.is_none_or(|n| attempt < n) => {
                    tracing::warn!(
                        "PostgreSQL at {shown} is not reachable ({}); retrying in {:.1} s",
                        db_message(&e),
                        wait.as_secs_f64()
                    );
                    std::thread::sleep(wait);
                    wait = (wait * 2).min(retry.max);
                }
                Err(e) if transient(&e) => {
                    return Err(StoreError::Unavailable {
                        store: shown,
                        reason: db_message(&e),
                    });
                }
                Err(e) => {
                    return Err(StoreError::Postgres(format!(
                        "cannot use PostgreSQL at {shown}: {}",
                        connect_message(&e, &tls_settings, &config)
                    )));
                }
            }
        };
        if attempt > 1 {
            tracing::warn!("PostgreSQL at {shown} is reachable");
        }
        match migrate(&mut client, target, &shown) {
            Ok(version) => tracing::debug!(version, "PostgreSQL schema up to date"),
            Err(MigrateError::Schema(m)) => return Err(StoreError::Schema(m)),
            Err(MigrateError::Db(e)) => {
                return Err(StoreError::Postgres(format!(
                    "migrating the schema of {shown}: {}",
                    db_message(&e)
                )));
            }
        }
        drop(client);
        let pool = r2d2::Pool::builder()
            .max_size(POOL_SIZE)
            .min_idle(Some(1))
            .connection_timeout(CHECKOUT_TIMEOUT)
            // A connection PostgreSQL closed (a restart, a failover) is replaced before use.
            .test_on_check_out(true)
            .build_unchecked(PostgresConnectionManager::new(config.clone(), tls.clone()));
        Ok(Self {
            objects: None,
            pool: Some(pool),
            config,
            tls,
            shown,
            marks: std::sync::atomic::AtomicU64::new(0),
        })
    }

    /// Tells the other processes sharing the database, when `tx` commits, that what `payload`
    /// names changed (see [`CHANGES`]).
    fn notify(&self, tx: &mut postgres::Transaction<'_>, payload: &str) -> Result<(), StoreError> {
        tx.execute("SELECT pg_notify($1, $2)", &[&CHANGES, &payload])
            .map_err(|e| self.err(e))?;
        Ok(())
    }

    /// The database as shown in messages (no password).
    pub(crate) fn shown(&self) -> &str {
        &self.shown
    }

    /// Keeps bundles (and layers and models) in `objects` rather than in the database; an
    /// upload is spooled to a file in `uploads` (emptied now) on its way there.
    pub(crate) fn with_objects(
        mut self,
        objects: std::sync::Arc<dyn crate::objects::Objects>,
        uploads: std::path::PathBuf,
    ) -> Result<Self, StoreError> {
        let _ = std::fs::remove_dir_all(&uploads);
        std::fs::create_dir_all(&uploads).map_err(|source| StoreError::Io {
            action: "create",
            path: uploads.clone(),
            source,
        })?;
        self.objects = Some((objects, uploads));
        Ok(self)
    }

    fn conn(&self) -> Result<r2d2::PooledConnection<PostgresConnectionManager<Tls>>, StoreError> {
        let pool = self
            .pool
            .as_ref()
            .expect("the pool lives until the store is dropped");
        pool.get().map_err(|e| StoreError::Unavailable {
            store: self.shown.clone(),
            reason: e.to_string(),
        })
    }

    /// A client error as a store error: [`StoreError::Unavailable`] when it is about reaching
    /// the database.
    fn err(&self, e: postgres::Error) -> StoreError {
        if transient(&e) {
            StoreError::Unavailable {
                store: self.shown.clone(),
                reason: db_message(&e),
            }
        } else {
            StoreError::Postgres(db_message(&e))
        }
    }

    fn meta(&self, key: &str) -> Result<Option<Vec<u8>>, StoreError> {
        let row = self
            .conn()?
            .query_opt("SELECT value FROM meta WHERE key = $1", &[&key])
            .map_err(|e| self.err(e))?;
        Ok(row.map(|r| r.get(0)))
    }

    fn set_meta(&self, key: &str, value: &[u8]) -> Result<(), StoreError> {
        self.conn()?
            .execute(
                "INSERT INTO meta (key, value) VALUES ($1, $2)
                 ON CONFLICT (key) DO UPDATE SET value = EXCLUDED.value",
                &[&key, &value],
            )
            .map_err(|e| self.err(e))?;
        Ok(())
    }

    // Bundles: everything about where bundle bytes live is in these three methods and
    // `missing_bundles`, so that another home for them (an object store) replaces only these.

    /// The digests among `digests` whose bundles are not stored.
    fn missing_bundles(&self, digests: &[String]) -> Result<Vec<String>, StoreError> {
        if digests.is_empty() {
            return Ok(Vec::new());
        }
        if let Some((objects, _)) = &self.objects {
            let named: Vec<&str> = digests.iter().map(String::as_str).collect();
            return Ok(objects.missing(&named)?);
        }
        let stored: std::collections::HashSet<String> = self
            .conn()?
            .query(
                "SELECT digest FROM bundles WHERE digest = ANY($1)",
                &[&digests],
            )
            .map_err(|e| self.err(e))?
            .iter()
            .map(|r| r.get(0))
            .collect();
        let mut missing: Vec<String> = digests
            .iter()
            .filter(|d| !stored.contains(*d))
            .cloned()
            .collect();
        missing.dedup();
        Ok(missing)
    }
}

impl Drop for PgStore {
    /// Closes the connections on a thread of its own: closing a synchronous connection blocks
    /// on its runtime, which must not happen on a thread of the async runtime (where the
    /// control plane's state is dropped when it stops).
    fn drop(&mut self) {
        if let Some(pool) = self.pool.take() {
            let closing = std::thread::Builder::new()
                .name("pg-close".into())
                .spawn(move || drop(pool));
            if let Ok(t) = closing {
                let _ = t.join();
            }
        }
    }
}

/// A client error's message, with the database's own detail and hint when it sent them.
/// Why connecting failed, for an operator: TLS failures explained ([`tls::explain`]), and a
/// server that accepts this client only over TLS said so; else [`db_message`].
fn connect_message(
    e: &postgres::Error,
    settings: &tls::Settings,
    config: &postgres::Config,
) -> String {
    let host = shown_url(Some(config), "")
        .trim_start_matches("postgres://")
        .split('@')
        .nth(1)
        .and_then(|h| h.split('/').next())
        .unwrap_or_default()
        .to_owned();
    if let Some(m) = tls::explain(e, settings, &host) {
        return m;
    }
    let m = db_message(e);
    match e.as_db_error() {
        // "no pg_hba.conf entry for host …, no encryption": only `hostssl` lines match.
        Some(db) if db.code().code() == "28000" && db.message().contains("no encryption") => {
            format!(
                "{m}; the server accepts this connection only over TLS, and sslmode={} does not use it: use sslmode=verify-full with sslrootcert=PATH (or require)",
                settings.mode.name()
            )
        }
        // invalid_password (PostgreSQL's errcodes, class 28).
        Some(db) if db.code().code() == "28P01" => format!(
            "{m}: check the password in $PGPASSWORD (or in the URL, postgres://USER:PASSWORD@HOST/DB) against the role's (ALTER ROLE {} PASSWORD '…')",
            config.get_user().unwrap_or("USER")
        ),
        // The server asked for a password and none was given: the client's own error.
        None if m.contains("password missing") => format!(
            "{m}: the server asks for a password; set $PGPASSWORD (as the README shows) or put it in the URL (postgres://USER:PASSWORD@HOST/DB)"
        ),
        _ => m,
    }
}

fn db_message(e: &postgres::Error) -> String {
    match e.as_db_error() {
        Some(db) => {
            let mut m = format!("{} ({})", db.message(), db.code().code());
            if let Some(d) = db.detail() {
                m.push_str(&format!("; {d}"));
            }
            if let Some(h) = db.hint() {
                m.push_str(&format!("; {h}"));
            }
            m
        }
        None => {
            // The kind, then what caused it ("error connecting to server: Connection refused").
            let mut m = e.to_string();
            let mut source = std::error::Error::source(e);
            while let Some(s) = source {
                let text = s.to_string();
                if !m.contains(&text) {
                    m.push_str(&format!(": {text}"));
                }
                source = s.source();
            }
            m
        }
    }
}

impl Store for PgStore {
    fn has_bundle(&self, digest: &str) -> Result<bool, StoreError> {
        Ok(self.missing_bundles(&[digest.to_owned()])?.is_empty())
    }

    fn put_bundle(&self, digest: &str, bytes: &[u8]) -> Result<bool, StoreError> {
        if let Some((objects, _)) = &self.objects {
            return Ok(objects.put(digest, bytes)?);
        }
        let n = self
            .conn()?
            .execute(
                "INSERT INTO bundles (digest, bytes) VALUES ($1, $2) ON CONFLICT (digest) DO NOTHING",
                &[&digest, &bytes],
            )
            .map_err(|e| self.err(e))?;
        Ok(n == 1)
    }

    fn put_bundle_from(
        &self,
        digest: &str,
        body: &mut dyn std::io::Read,
    ) -> Result<bool, StoreError> {
        let Some((objects, uploads)) = &self.objects else {
            // Into the `bundles` table: held whole (bytea), as `put_bundle` does.
            let mut bytes = Vec::new();
            body.read_to_end(&mut bytes)
                .map_err(|source| StoreError::Io {
                    action: "receive bundle",
                    path: digest.into(),
                    source,
                })?;
            return self.put_bundle(digest, &bytes);
        };
        if objects.has(digest)? {
            // Still read to the end: the caller's digest check and the client's upload finish.
            std::io::copy(body, &mut std::io::sink()).map_err(|source| StoreError::Io {
                action: "receive bundle",
                path: digest.into(),
                source,
            })?;
            return Ok(false);
        }
        let tmp = uploads.join(format!(
            "{digest}-{}-{}",
            std::process::id(),
            edgefn_os::time::now_ms()
        ));
        let spooled = (|| {
            let mut f = std::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .open(&tmp)?;
            std::io::copy(body, &mut f).map(|_| ())
        })();
        let stored = spooled
            .map_err(|source| StoreError::Io {
                action: "receive bundle",
                path: tmp.clone(),
                source,
            })
            .and_then(|()| Ok(objects.put_file(digest, &tmp)?));
        let _ = std::fs::remove_file(&tmp);
        stored
    }

    fn read_bundle(
        &self,
        digest: &str,
        start: u64,
    ) -> Result<Option<crate::objects::ObjectRead>, StoreError> {
        match &self.objects {
            Some((objects, _)) => Ok(objects.read(digest, start)?),
            None => {
                // The default: the bytea, whole.
                Ok(self.bundle(digest)?.map(|b| {
                    let total = b.len() as u64;
                    let start = start.min(total);
                    let rest = bytes::Bytes::from(b).slice(usize::try_from(start).unwrap_or(0)..);
                    crate::objects::ObjectRead {
                        total,
                        start,
                        body: Box::pin(futures_util::stream::iter([Ok(rest)])),
                    }
                }))
            }
        }
    }

    fn bundle(&self, digest: &str) -> Result<Option<Vec<u8>>, StoreError> {
        if let Some((objects, _)) = &self.objects {
            return Ok(objects.get(digest)?);
        }
        let row = self
            .conn()?
            .query_opt("SELECT bytes FROM bundles WHERE digest = $1", &[&digest])
            .map_err(|e| self.err(e))?;
        Ok(row.map(|r| r.get(0)))
    }

    fn latest(&self) -> Result<Option<Revision>, StoreError> {
        let row = self
            .conn()?
            .query_opt(
                "SELECT body::text FROM revisions ORDER BY number DESC LIMIT 1",
                &[],
            )
            .map_err(|e| self.err(e))?;
        row.map(|r| parse(r.get::<_, &str>(0).as_bytes()))
            .transpose()
    }

    fn revision(&self, n: u64) -> Result<Option<Revision>, StoreError> {
        let row = self
            .conn()?
            .query_opt(
                "SELECT body::text FROM revisions WHERE number = $1",
                &[&big(n)],
            )
            .map_err(|e| self.err(e))?;
        row.map(|r| parse(r.get::<_, &str>(0).as_bytes()))
            .transpose()
    }

    fn history(&self, limit: usize) -> Result<Vec<RevisionSummary>, StoreError> {
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        self.conn()?
            .query(
                "SELECT summary::text FROM revisions ORDER BY number DESC LIMIT $1",
                &[&limit],
            )
            .map_err(|e| self.err(e))?
            .iter()
            .map(|r| parse(r.get::<_, &str>(0).as_bytes()))
            .collect()
    }

    fn commit_rollout(
        &self,
        draft: Draft,
        expected_parent: Option<u64>,
        rollout: &mut dyn FnMut(&Revision) -> Option<Vec<u8>>,
    ) -> Result<Revision, StoreError> {
        let digests: Vec<String> = draft
            .bundles
            .values()
            .chain(draft.layers.values().flat_map(|by| by.values()))
            .chain(draft.models.values().map(|m| &m.digest))
            .cloned()
            .collect();
        let missing = self.missing_bundles(&digests)?;
        if !missing.is_empty() {
            return Err(StoreError::MissingBundles(missing));
        }
        let mut conn = self.conn()?;
        let mut tx = conn.transaction().map_err(|e| self.err(e))?;
        // Commits one at a time, across every process sharing the database; reads go on.
        tx.batch_execute("LOCK TABLE revisions IN SHARE ROW EXCLUSIVE MODE")
            .map_err(|e| self.err(e))?;
        if !draft.secrets.is_empty() {
            // Every pinned secret version is stored, and stays so until the commit (FOR SHARE
            // holds off a removal).
            let names: Vec<&str> = draft.secrets.keys().map(String::as_str).collect();
            let mut kept: BTreeMap<String, Vec<u64>> = BTreeMap::new();
            for r in tx
                .query(
                    "SELECT name, version FROM secret_versions WHERE name = ANY($1) FOR SHARE",
                    &[&names],
                )
                .map_err(|e| self.err(e))?
            {
                kept.entry(r.get(0))
                    .or_default()
                    .push(unbig(r.get::<_, i64>(1)));
            }
            let (mut not_set, mut gone) = (Vec::new(), Vec::new());
            for (name, version) in &draft.secrets {
                match kept.get(name) {
                    Some(v) if v.contains(version) => {}
                    Some(_) => gone.push(format!("{name}@{version}")),
                    None => not_set.push(name.clone()),
                }
            }
            if !not_set.is_empty() || !gone.is_empty() {
                return Err(StoreError::SecretsUnavailable { not_set, gone });
            }
        }
        let latest = unbig(
            tx.query_one("SELECT coalesce(max(number), 0) FROM revisions", &[])
                .map_err(|e| self.err(e))?
                .get::<_, i64>(0),
        );
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
        let body = String::from_utf8(json(&revision)).expect("JSON is UTF-8");
        let summary = String::from_utf8(json(&revision.summary)).expect("JSON is UTF-8");
        tx.execute(
            "INSERT INTO revisions (number, created_ms, body, summary)
             VALUES ($1, $2, $3::text::jsonb, $4::text::jsonb)",
            &[
                &big(revision.summary.number),
                &big(revision.summary.created_ms),
                &body,
                &summary,
            ],
        )
        .map_err(|e| self.err(e))?;
        if let Some(record) = rollout(&revision) {
            tx.execute(
                "INSERT INTO meta (key, value) VALUES ($1, $2)
                 ON CONFLICT (key) DO UPDATE SET value = EXCLUDED.value",
                &[&ROLLOUT, &record],
            )
            .map_err(|e| self.err(e))?;
        }
        tx.execute(
            "SELECT pg_notify($1, $2)",
            &[&CHANGES, &revision.summary.number.to_string()],
        )
        .map_err(|e| self.err(e))?;
        tx.commit().map_err(|e| self.err(e))?;
        Ok(revision)
    }

    fn rollout(&self) -> Result<Option<Vec<u8>>, StoreError> {
        self.meta(ROLLOUT)
    }

    fn put_rollout(&self, record: &[u8]) -> Result<(), StoreError> {
        let mut conn = self.conn()?;
        let mut tx = conn.transaction().map_err(|e| self.err(e))?;
        tx.execute(
            "INSERT INTO meta (key, value) VALUES ($1, $2)
             ON CONFLICT (key) DO UPDATE SET value = EXCLUDED.value",
            &[&ROLLOUT, &record],
        )
        .map_err(|e| self.err(e))?;
        tx.execute("SELECT pg_notify($1, 'rollout')", &[&CHANGES])
            .map_err(|e| self.err(e))?;
        tx.commit().map_err(|e| self.err(e))
    }

    fn add_device(&self, record: &DeviceRecord) -> Result<(), StoreError> {
        let mut conn = self.conn()?;
        let mut tx = conn.transaction().map_err(|e| self.err(e))?;
        let n = tx
            .execute(
                "INSERT INTO devices (name, token_hash, registered_ms, mqtt_hash)
                 VALUES ($1, $2, $3, $4) ON CONFLICT (name) DO NOTHING",
                &[
                    &record.name,
                    &record.token_hash.as_slice(),
                    &big(record.registered_ms),
                    &record.mqtt_hash,
                ],
            )
            .map_err(|e| self.err(e))?;
        if n == 0 {
            return Err(StoreError::DeviceExists(record.name.clone()));
        }
        self.notify(&mut tx, &format!("{DEVICE}{}", record.name))?;
        tx.commit().map_err(|e| self.err(e))
    }

    fn remove_device(&self, name: &str) -> Result<bool, StoreError> {
        let mut conn = self.conn()?;
        let mut tx = conn.transaction().map_err(|e| self.err(e))?;
        let n = tx
            .execute("DELETE FROM devices WHERE name = $1", &[&name])
            .map_err(|e| self.err(e))?;
        tx.execute("DELETE FROM device_status WHERE name = $1", &[&name])
            .map_err(|e| self.err(e))?;
        self.notify(&mut tx, &format!("{DEVICE}{name}"))?;
        tx.commit().map_err(|e| self.err(e))?;
        Ok(n == 1)
    }

    fn devices(&self) -> Result<Vec<DeviceRecord>, StoreError> {
        self.conn()?
            .query(
                "SELECT name, token_hash, registered_ms, mqtt_hash FROM devices ORDER BY name",
                &[],
            )
            .map_err(|e| self.err(e))?
            .iter()
            .map(|r| {
                Ok(DeviceRecord {
                    name: r.get(0),
                    token_hash: hash32(r.get(1))?,
                    registered_ms: unbig(r.get(2)),
                    mqtt_hash: r.get(3),
                })
            })
            .collect()
    }

    fn device(&self, name: &str) -> Result<Option<DeviceRecord>, StoreError> {
        self.conn()?
            .query_opt(
                "SELECT name, token_hash, registered_ms, mqtt_hash FROM devices WHERE name = $1",
                &[&name],
            )
            .map_err(|e| self.err(e))?
            .map(|r| {
                Ok(DeviceRecord {
                    name: r.get(0),
                    token_hash: hash32(r.get(1))?,
                    registered_ms: unbig(r.get(2)),
                    mqtt_hash: r.get(3),
                })
            })
            .transpose()
    }

    fn put_statuses(&self, batch: &[(String, StatusReport, u64)]) -> Result<(), StoreError> {
        // One statement for the whole batch; the last report of a device named twice wins.
        let mut last: BTreeMap<&str, (&StatusReport, u64)> = BTreeMap::new();
        for (name, report, at) in batch {
            last.insert(name, (report, *at));
        }
        let names: Vec<&str> = last.keys().copied().collect();
        let reports: Vec<String> = last
            .values()
            .map(|(r, _)| String::from_utf8(json(r)).expect("JSON is UTF-8"))
            .collect();
        let times: Vec<i64> = last.values().map(|(_, at)| big(*at)).collect();
        let mut conn = self.conn()?;
        let mut tx = conn.transaction().map_err(|e| self.err(e))?;
        // Batches one at a time across every process, so that sequence numbers commit in
        // order: a reader's `seq > last` (`statuses_since`) would otherwise pass over a batch
        // that drew lower numbers and committed after a later one — and never see it. EXCLUSIVE
        // lets readers go on; each process writes one batch at a time, so the wait is short.
        tx.batch_execute("LOCK TABLE device_status IN EXCLUSIVE MODE")
            .map_err(|e| self.err(e))?;
        tx.execute(
            "INSERT INTO device_status (name, report, at_ms)
             SELECT * FROM unnest($1::text[], $2::text[]::jsonb[], $3::bigint[])
             ON CONFLICT (name) DO UPDATE SET report = EXCLUDED.report, at_ms = EXCLUDED.at_ms,
                 seq = nextval('device_status_seq')",
            &[&names, &reports, &times],
        )
        .map_err(|e| self.err(e))?;
        tx.commit().map_err(|e| self.err(e))
    }

    fn statuses(&self) -> Result<BTreeMap<String, (StatusReport, u64)>, StoreError> {
        self.conn()?
            .query("SELECT name, report::text, at_ms FROM device_status", &[])
            .map_err(|e| self.err(e))?
            .iter()
            .map(|r| {
                let report: StatusReport = parse(r.get::<_, &str>(1).as_bytes())?;
                Ok((r.get(0), (report, unbig(r.get(2)))))
            })
            .collect()
    }

    fn statuses_since(&self, seq: u64) -> Result<StatusesSince, StoreError> {
        let rows = self
            .conn()?
            .query(
                "SELECT name, report::text, at_ms, seq FROM device_status WHERE seq > $1 ORDER BY seq",
                &[&big(seq)],
            )
            .map_err(|e| self.err(e))?;
        let mut last = seq;
        let mut reports = Vec::with_capacity(rows.len());
        for r in &rows {
            let report: StatusReport = parse(r.get::<_, &str>(1).as_bytes())?;
            reports.push((r.get(0), report, unbig(r.get(2))));
            last = last.max(unbig(r.get(3)));
        }
        Ok(StatusesSince { reports, last })
    }

    fn admin_tokens(&self) -> Result<Vec<AdminTokenRecord>, StoreError> {
        self.conn()?
            .query(
                "SELECT hash, name, created_ms, revoked_ms FROM admin_tokens ORDER BY hash",
                &[],
            )
            .map_err(|e| self.err(e))?
            .iter()
            .map(admin_record)
            .collect()
    }

    fn add_admin_token(&self, record: &AdminTokenRecord) -> Result<(), StoreError> {
        let mut conn = self.conn()?;
        let mut tx = conn.transaction().map_err(|e| self.err(e))?;
        tx.execute(
            "INSERT INTO admin_tokens (hash, name, created_ms, revoked_ms)
                 VALUES ($1, $2, $3, $4) ON CONFLICT (hash) DO NOTHING",
            &[
                &record.hash.as_slice(),
                &record.name,
                &big(record.created_ms),
                &record.revoked_ms.map(big),
            ],
        )
        .map_err(|e| self.err(e))?;
        self.notify(&mut tx, ADMIN_TOKENS)?;
        tx.commit().map_err(|e| self.err(e))
    }

    fn revoke_admin_token(&self, id: &str, when_ms: u64) -> Result<Option<Revoked>, StoreError> {
        let mut conn = self.conn()?;
        let mut tx = conn.transaction().map_err(|e| self.err(e))?;
        // Revocations one at a time, so that two never revoke the last two tokens together.
        tx.batch_execute("LOCK TABLE admin_tokens IN SHARE ROW EXCLUSIVE MODE")
            .map_err(|e| self.err(e))?;
        let live: Vec<AdminTokenRecord> = tx
            .query(
                "SELECT hash, name, created_ms, revoked_ms FROM admin_tokens WHERE revoked_ms IS NULL",
                &[],
            )
            .map_err(|e| self.err(e))?
            .iter()
            .map(admin_record)
            .collect::<Result<_, _>>()?;
        let outcome = match live.iter().find(|r| r.id() == id) {
            None => None,
            Some(_) if live.len() == 1 => Some(Revoked::Last),
            Some(r) => {
                tx.execute(
                    "UPDATE admin_tokens SET revoked_ms = $2 WHERE hash = $1",
                    &[&r.hash.as_slice(), &big(when_ms)],
                )
                .map_err(|e| self.err(e))?;
                Some(Revoked::Done(r.hash))
            }
        };
        self.notify(&mut tx, ADMIN_TOKENS)?;
        tx.commit().map_err(|e| self.err(e))?;
        Ok(outcome)
    }

    fn secrets(&self) -> Result<Vec<SecretRecord>, StoreError> {
        let rows = self
            .conn()?
            .query(
                "SELECT s.name, s.last_version, v.version, v.created_ms, v.sealed
                 FROM secrets s LEFT JOIN secret_versions v ON v.name = s.name
                 ORDER BY s.name, v.version",
                &[],
            )
            .map_err(|e| self.err(e))?;
        Ok(secret_records(&rows))
    }

    fn secret(&self, name: &str) -> Result<Option<SecretRecord>, StoreError> {
        let rows = self
            .conn()?
            .query(
                "SELECT s.name, s.last_version, v.version, v.created_ms, v.sealed
                 FROM secrets s LEFT JOIN secret_versions v ON v.name = s.name
                 WHERE s.name = $1 ORDER BY v.version",
                &[&name],
            )
            .map_err(|e| self.err(e))?;
        Ok(secret_records(&rows).pop())
    }

    fn put_secret(
        &self,
        name: &str,
        created_ms: u64,
        keep: usize,
        seal: &mut dyn FnMut(u64) -> Vec<u8>,
    ) -> Result<u64, StoreError> {
        let mut conn = self.conn()?;
        let mut tx = conn.transaction().map_err(|e| self.err(e))?;
        tx.execute(
            "INSERT INTO secrets (name, last_version) VALUES ($1, 0) ON CONFLICT (name) DO NOTHING",
            &[&name],
        )
        .map_err(|e| self.err(e))?;
        // The row stays locked until the commit: versions of one secret are issued one at a time.
        let version = unbig(
            tx.query_one(
                "UPDATE secrets SET last_version = last_version + 1 WHERE name = $1 RETURNING last_version",
                &[&name],
            )
            .map_err(|e| self.err(e))?
            .get(0),
        );
        tx.execute(
            "INSERT INTO secret_versions (name, version, created_ms, sealed) VALUES ($1, $2, $3, $4)",
            &[&name, &big(version), &big(created_ms), &seal(version)],
        )
        .map_err(|e| self.err(e))?;
        // The last `keep` versions stay.
        let oldest_dropped = big(version.saturating_sub(keep.max(1) as u64));
        tx.execute(
            "DELETE FROM secret_versions WHERE name = $1 AND version <= $2",
            &[&name, &oldest_dropped],
        )
        .map_err(|e| self.err(e))?;
        tx.commit().map_err(|e| self.err(e))?;
        Ok(version)
    }

    fn remove_secret(&self, name: &str) -> Result<bool, StoreError> {
        let n = self
            .conn()?
            .execute("DELETE FROM secret_versions WHERE name = $1", &[&name])
            .map_err(|e| self.err(e))?;
        Ok(n > 0)
    }

    fn key_check(&self) -> Result<Option<Vec<u8>>, StoreError> {
        self.meta(KEY_CHECK)
    }

    fn set_key_check(&self, sealed: &[u8]) -> Result<(), StoreError> {
        self.set_meta(KEY_CHECK, sealed)
    }

    fn shared(&self) -> bool {
        true
    }

    fn mark_message(
        &self,
        device: &str,
        outbox: &str,
        id: u64,
        now_ms: u64,
    ) -> Result<Option<bool>, StoreError> {
        let mut conn = self.conn()?;
        let n = conn
            .execute(
                "INSERT INTO message_marks (device, outbox, id, expires_ms) VALUES ($1, $2, $3, $4)
                 ON CONFLICT DO NOTHING",
                &[&device, &outbox, &big(id), &big(now_ms + MARK_TTL_MS)],
            )
            .map_err(|e| self.err(e))?;
        let written = self
            .marks
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        if written % MARK_SWEEP_EVERY == MARK_SWEEP_EVERY - 1 {
            conn.execute(
                "DELETE FROM message_marks WHERE expires_ms < $1",
                &[&big(now_ms)],
            )
            .map_err(|e| self.err(e))?;
        }
        Ok(Some(n == 1))
    }

    fn share_message(&self, m: &SharedMessage) -> Result<bool, StoreError> {
        let mut conn = self.conn()?;
        let mut tx = conn.transaction().map_err(|e| self.err(e))?;
        // Inserts queue (readers never wait), so sequence numbers are committed in order and a
        // reader that saw N never misses a smaller one committed later.
        tx.batch_execute("LOCK TABLE up_messages IN EXCLUSIVE MODE")
            .map_err(|e| self.err(e))?;
        tx.execute(
            "INSERT INTO up_messages (device, topic, payload, ts_ms, id) VALUES ($1, $2, $3, $4, $5)",
            &[
                &m.device,
                &m.topic,
                &m.payload.as_slice(),
                &big(m.ts_ms),
                &m.id.map(big),
            ],
        )
        .map_err(|e| self.err(e))?;
        tx.execute("SELECT pg_notify($1, $2)", &[&CHANGES, &MESSAGES])
            .map_err(|e| self.err(e))?;
        tx.commit().map_err(|e| self.err(e))?;
        let written = self
            .marks
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        if written % MARK_SWEEP_EVERY == MARK_SWEEP_EVERY - 1 {
            conn.execute(
                "DELETE FROM up_messages WHERE ts_ms < $1",
                &[&big(m.ts_ms.saturating_sub(SHARED_MESSAGE_TTL_MS))],
            )
            .map_err(|e| self.err(e))?;
        }
        Ok(true)
    }

    fn messages_since(&self, seq: u64) -> Result<(Vec<SharedMessage>, u64), StoreError> {
        let mut conn = self.conn()?;
        let rows = conn
            .query(
                "SELECT seq, device, topic, payload, ts_ms, id FROM up_messages
                 WHERE seq > $1 ORDER BY seq LIMIT $2",
                &[&big(seq), &MESSAGES_PAGE],
            )
            .map_err(|e| self.err(e))?;
        let mut last = seq;
        let mut out = Vec::with_capacity(rows.len());
        for r in rows {
            last = unbig(r.get(0));
            out.push(SharedMessage {
                device: r.get(1),
                topic: r.get(2),
                payload: r.get(3),
                ts_ms: unbig(r.get(4)),
                id: r.get::<_, Option<i64>>(5).map(unbig),
            });
        }
        Ok((out, last))
    }

    fn replace_rollout(&self, expected: &[u8], record: &[u8]) -> Result<bool, StoreError> {
        let mut conn = self.conn()?;
        let mut tx = conn.transaction().map_err(|e| self.err(e))?;
        // Compared as jsonb: by value, whatever the key order or spacing of either encoding.
        let n = tx
            .execute(
                "UPDATE meta SET value = $2 WHERE key = $1
                 AND convert_from(value, 'UTF8')::jsonb = convert_from($3, 'UTF8')::jsonb",
                &[&ROLLOUT, &record, &expected],
            )
            .map_err(|e| self.err(e))?;
        if n == 0 {
            return Ok(false);
        }
        tx.execute("SELECT pg_notify($1, 'rollout')", &[&CHANGES])
            .map_err(|e| self.err(e))?;
        tx.commit().map_err(|e| self.err(e))?;
        Ok(true)
    }

    fn rollout_driver(
        &self,
        stop: tokio::sync::watch::Receiver<bool>,
    ) -> std::sync::Arc<std::sync::atomic::AtomicBool> {
        let held = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let (config, shown, flag) = (self.config.clone(), self.shown.clone(), held.clone());
        let tls = self.tls.clone();
        let thread = std::thread::Builder::new()
            .name("pg-driver".into())
            .spawn(move || hold_driver_lock(config, &tls, &shown, &flag, &stop));
        if let Err(e) = thread {
            tracing::error!(
                "cannot start the rollout driver's election: {e}; this process will not drive rollouts"
            );
        }
        held
    }

    fn watch_changes(
        &self,
        changed: Box<dyn Fn(Changed) + Send>,
        stop: tokio::sync::watch::Receiver<bool>,
    ) {
        let (config, tls, shown) = (self.config.clone(), self.tls.clone(), self.shown.clone());
        let listener = std::thread::Builder::new()
            .name("pg-listen".into())
            .spawn(move || listen(&config, &tls, &shown, changed.as_ref(), &stop));
        if let Err(e) = listener {
            tracing::error!(
                "cannot start the PostgreSQL listener: {e}; revisions committed by other processes are served after a restart"
            );
        }
    }

    fn put_console_session(
        &self,
        session: &ConsoleSession,
        max: usize,
        now_ms: u64,
    ) -> Result<(), StoreError> {
        let mut conn = self.conn()?;
        let mut tx = conn.transaction().map_err(|e| self.err(e))?;
        // Sign-ins one at a time across processes, so that two never both find room for one.
        tx.batch_execute("LOCK TABLE console_sessions IN SHARE ROW EXCLUSIVE MODE")
            .map_err(|e| self.err(e))?;
        tx.execute(
            "DELETE FROM console_sessions WHERE expires_ms <= $1",
            &[&big(now_ms)],
        )
        .map_err(|e| self.err(e))?;
        // The newest `max - 1` stay; the new one makes `max`.
        let keep = i64::try_from(max.max(1) - 1).unwrap_or(i64::MAX);
        tx.execute(
            "DELETE FROM console_sessions WHERE id_hash IN (
                 SELECT id_hash FROM console_sessions
                 ORDER BY expires_ms DESC, id_hash OFFSET $1)",
            &[&keep],
        )
        .map_err(|e| self.err(e))?;
        tx.execute(
            "INSERT INTO console_sessions (id_hash, token_hash, csrf, created_ms, expires_ms)
             VALUES ($1, $2, $3, $4, $5)",
            &[
                &session.id_hash.as_slice(),
                &session.token_hash.as_slice(),
                &session.csrf,
                &big(session.created_ms),
                &big(session.expires_ms),
            ],
        )
        .map_err(|e| self.err(e))?;
        tx.commit().map_err(|e| self.err(e))
    }

    fn console_session(
        &self,
        id_hash: &[u8; 32],
        now_ms: u64,
    ) -> Result<Option<ConsoleSession>, StoreError> {
        let row = self
            .conn()?
            .query_opt(
                "SELECT id_hash, token_hash, csrf, created_ms, expires_ms FROM console_sessions
                 WHERE id_hash = $1 AND expires_ms > $2",
                &[&id_hash.as_slice(), &big(now_ms)],
            )
            .map_err(|e| self.err(e))?;
        row.map(|r| {
            Ok(ConsoleSession {
                id_hash: hash32(r.get(0))?,
                token_hash: hash32(r.get(1))?,
                csrf: r.get(2),
                created_ms: unbig(r.get(3)),
                expires_ms: unbig(r.get(4)),
            })
        })
        .transpose()
    }

    fn remove_console_session(&self, id_hash: &[u8; 32]) -> Result<bool, StoreError> {
        let n = self
            .conn()?
            .execute(
                "DELETE FROM console_sessions WHERE id_hash = $1",
                &[&id_hash.as_slice()],
            )
            .map_err(|e| self.err(e))?;
        Ok(n > 0)
    }

    fn remove_console_sessions_of(&self, token_hash: &[u8; 32]) -> Result<usize, StoreError> {
        let n = self
            .conn()?
            .execute(
                "DELETE FROM console_sessions WHERE token_hash = $1",
                &[&token_hash.as_slice()],
            )
            .map_err(|e| self.err(e))?;
        Ok(usize::try_from(n).unwrap_or(usize::MAX))
    }
}

/// The listener of [`Store::watch_changes`]: LISTEN on [`CHANGES`] over a connection of its
/// own, `changed` on each notification and after each (re)connection; reconnects with backoff.
/// Checks `stop` every second.
#[allow(clippy::disallowed_methods)] // A thread of its own, not an async worker.
fn listen(
    config: &postgres::Config,
    tls: &Tls,
    shown: &str,
    changed: &dyn Fn(Changed),
    stop: &tokio::sync::watch::Receiver<bool>,
) {
    use postgres::fallible_iterator::FallibleIterator as _;
    const TICK: Duration = Duration::from_secs(1);
    let mut wait = Retry::FOREVER.first;
    while !*stop.borrow() {
        let connected = config
            .connect(tls.clone())
            .and_then(|mut c| c.batch_execute(&format!("LISTEN {CHANGES}")).map(|()| c));
        let mut client = match connected {
            Ok(c) => c,
            Err(e) => {
                tracing::warn!(
                    "PostgreSQL at {shown}: cannot listen for changes ({}); retrying in {:.1} s",
                    db_message(&e),
                    wait.as_secs_f64()
                );
                let until = std::time::Instant::now() + wait;
                while std::time::Instant::now() < until && !*stop.borrow() {
                    std::thread::sleep(Duration::from_millis(100));
                }
                wait = (wait * 2).min(Retry::FOREVER.max);
                continue;
            }
        };
        wait = Retry::FOREVER.first;
        // What was committed while not listening.
        changed(Changed::Everything);
        loop {
            if *stop.borrow() {
                return;
            }
            let next = client.notifications().timeout_iter(TICK).next();
            match next {
                Ok(Some(first)) => {
                    // Those that came meanwhile are covered by one reading of each kind.
                    let mut payloads = vec![first.payload().to_owned()];
                    while let Ok(Some(n)) = client.notifications().iter().next() {
                        payloads.push(n.payload().to_owned());
                    }
                    let mut devices: Vec<String> = payloads
                        .iter()
                        .filter_map(|p| p.strip_prefix(DEVICE))
                        .map(str::to_owned)
                        .collect();
                    devices.sort();
                    devices.dedup();
                    if !devices.is_empty() {
                        changed(Changed::Devices(devices));
                    }
                    if payloads.iter().any(|p| p == ADMIN_TOKENS) {
                        changed(Changed::AdminTokens);
                    }
                    if payloads.iter().any(|p| p == MESSAGES) {
                        changed(Changed::Messages);
                    }
                    if payloads
                        .iter()
                        .any(|p| p != ADMIN_TOKENS && p != MESSAGES && !p.starts_with(DEVICE))
                    {
                        changed(Changed::Revisions);
                    }
                }
                Ok(None) if client.is_closed() => break,
                Ok(None) => {}
                Err(e) => {
                    tracing::warn!(
                        "PostgreSQL at {shown}: the connection listening for changes was lost ({}); reconnecting",
                        db_message(&e)
                    );
                    break;
                }
            }
        }
    }
}

/// The election of [`Store::rollout_driver`]: on a connection of its own (named
/// `edgefn-cloud pid N` in `pg_stat_activity`), tries `pg_try_advisory_lock(DRIVER_LOCK)` every
/// second until it gets it, then checks every second that the connection is alive (the lock is
/// the session's: PostgreSQL releases it when the session ends — the process died or the
/// connection was lost — and another process takes it on its next try). `held` is true only
/// while the lock is known held; false on any error (the connection is then dropped, so the
/// lock is released too) and when `stop` turns true.
#[allow(clippy::disallowed_methods)] // A thread of its own, not an async worker.
fn hold_driver_lock(
    mut config: postgres::Config,
    tls: &Tls,
    shown: &str,
    held: &std::sync::atomic::AtomicBool,
    stop: &tokio::sync::watch::Receiver<bool>,
) {
    use std::sync::atomic::Ordering;
    const TICK: Duration = Duration::from_secs(1);
    config.application_name(&format!("edgefn-cloud pid {}", std::process::id()));
    let pause = |d: Duration| {
        let until = std::time::Instant::now() + d;
        while std::time::Instant::now() < until && !*stop.borrow() {
            std::thread::sleep(Duration::from_millis(100));
        }
    };
    let mut wait = Retry::FOREVER.first;
    while !*stop.borrow() {
        let mut client = match config.connect(tls.clone()) {
            Ok(c) => c,
            Err(e) => {
                tracing::warn!(
                    "PostgreSQL at {shown}: cannot take part in the rollout driver's election ({}); retrying in {:.1} s",
                    db_message(&e),
                    wait.as_secs_f64()
                );
                pause(wait);
                wait = (wait * 2).min(Retry::FOREVER.max);
                continue;
            }
        };
        wait = Retry::FOREVER.first;
        while !*stop.borrow() {
            let checked = if held.load(Ordering::SeqCst) {
                client.simple_query("SELECT 1").map(|_| true)
            } else {
                client
                    .query_one("SELECT pg_try_advisory_lock($1)", &[&DRIVER_LOCK])
                    .map(|row| row.get::<_, bool>(0))
            };
            match checked {
                Ok(now) => {
                    if now && !held.swap(true, Ordering::SeqCst) {
                        tracing::info!("this process drives rollouts now");
                    }
                }
                Err(e) => {
                    if held.swap(false, Ordering::SeqCst) {
                        tracing::warn!(
                            "PostgreSQL at {shown}: lost the rollout driver's connection ({}); another process may drive rollouts now",
                            db_message(&e)
                        );
                    }
                    break;
                }
            }
            pause(TICK);
        }
    }
    held.store(false, Ordering::SeqCst);
}

fn admin_record(r: &postgres::Row) -> Result<AdminTokenRecord, StoreError> {
    Ok(AdminTokenRecord {
        hash: hash32(r.get(0))?,
        name: r.get(1),
        created_ms: unbig(r.get(2)),
        revoked_ms: r.get::<_, Option<i64>>(3).map(unbig),
    })
}

/// Rows of `secrets LEFT JOIN secret_versions`, ordered by name then version, as records.
fn secret_records(rows: &[postgres::Row]) -> Vec<SecretRecord> {
    use base64::Engine as _;
    let mut out: Vec<SecretRecord> = Vec::new();
    for r in rows {
        let name: String = r.get(0);
        if out.last().is_none_or(|s| s.name != name) {
            out.push(SecretRecord {
                name: name.clone(),
                last: unbig(r.get(1)),
                versions: Vec::new(),
            });
        }
        if let (Some(version), Some(created_ms), Some(sealed)) = (
            r.get::<_, Option<i64>>(2),
            r.get::<_, Option<i64>>(3),
            r.get::<_, Option<Vec<u8>>>(4),
        ) {
            if let Some(s) = out.last_mut() {
                s.versions.push(SealedVersion {
                    version: unbig(version),
                    created_ms: unbig(created_ms),
                    sealed: base64::engine::general_purpose::STANDARD.encode(sealed),
                });
            }
        }
    }
    out
}

#[cfg(test)]
#[path = "../../../tests/common/postgres.rs"]
mod test_server;

#[cfg(test)]
#[allow(clippy::disallowed_methods)] // Synchronous tests polling the database.
mod tests {
    use std::sync::{Arc, Barrier};

    use super::test_server::{PG_PASSWORD, PgServer};
    use super::*;
    use crate::store::contract::{check, draft};

    const QUICK: Retry = Retry {
        first: Duration::from_millis(10),
        max: Duration::from_millis(50),
        attempts: Some(3),
    };

    #[test]
    fn sslmode_goes_to_the_client_and_not_over_unix_sockets() {
        let (c, s) =
            config("postgres://u@db.example.com/d?sslmode=verify-full&sslrootcert=/ca.pem")
                .expect("config");
        assert_eq!(c.get_ssl_mode(), postgres::config::SslMode::Require);
        assert_eq!(s.mode, tls::SslMode::VerifyFull);
        let (c, _) = config("postgres://u@db.example.com/d?sslmode=disable").expect("config");
        assert_eq!(c.get_ssl_mode(), postgres::config::SslMode::Disable);
        let (c, s) =
            config("postgres://u@%2Frun%2Fpostgresql/d?sslmode=verify-full").expect("config");
        assert_eq!(c.get_ssl_mode(), postgres::config::SslMode::Disable);
        assert_eq!(s.mode, tls::SslMode::Disable);
        assert!(s.connector().is_ok(), "no CA needed on a unix socket");
    }

    #[test]
    fn the_postgres_store_keeps_the_contract() {
        let mut server = PgServer::start();
        let db = server.create_db();
        let store = PgStore::connect(&server.url(&db), QUICK).expect("connect");
        check(&store);
        // Reports as a sequence of writes: what was written since a position, once.
        let since = store.statuses_since(0).expect("since");
        let names: Vec<&str> = since.reports.iter().map(|r| r.0.as_str()).collect();
        assert_eq!(names, vec!["gw-02"], "the removed device's report is gone");
        assert!(
            store
                .statuses_since(since.last)
                .expect("since")
                .reports
                .is_empty()
        );
        // Starting again on a migrated database changes nothing.
        drop(store);
        let store = PgStore::connect(&server.url(&db), QUICK).expect("again");
        assert_eq!(
            server.psql(
                &db,
                "SELECT string_agg(version::text, ',' ORDER BY version) FROM schema_migrations"
            ),
            "1,2,3,4,5,6"
        );
        // Message marks: the first mark of a message says "first", a second says "seen".
        assert_eq!(
            store.mark_message("d", "o", 7, 1).expect("mark"),
            Some(true)
        );
        assert_eq!(
            store.mark_message("d", "o", 7, 2).expect("mark"),
            Some(false)
        );
        assert_eq!(
            store.mark_message("d", "o2", 7, 2).expect("mark"),
            Some(true)
        );
        assert_eq!(store.history(10).expect("history").len(), 4);
    }

    /// Two processes sharing the database (two pools, as two replicas have) commit on the same
    /// parent at once, round after round: one succeeds and the other gets a conflict naming the
    /// new latest revision; no number is taken twice or skipped.
    /// Two stores on one database: exactly one is the rollout driver; when it stops (its
    /// session ends) the other takes over. A rollout step written over a record that changed
    /// Reports committed out of the order of their sequence numbers would be passed over by a
    /// reader's `statuses_since(last)`: a batch in flight (here an open transaction writing a
    /// report, standing for another process's batch) holds back every later batch, so a reader
    /// sees it before anything that comes after it.
    #[test]
    fn a_report_batch_in_flight_is_never_passed_over_by_a_reader() {
        let mut server = PgServer::start();
        let db = server.create_db();
        let url = server.url(&db);
        let store = Arc::new(PgStore::connect(&url, QUICK).expect("connect"));
        let report: StatusReport =
            serde_json::from_str(r#"{"state":"running","runningRevision":1}"#).expect("report");
        let mut raw = postgres::Client::connect(&url, postgres::NoTls).expect("raw");
        let mut slow = raw.transaction().expect("begin");
        slow.execute(
            "INSERT INTO device_status (name, report, at_ms) VALUES ('slow', $1::text::jsonb, 1)",
            &[&String::from_utf8(json(&report)).expect("utf-8")],
        )
        .expect("the slow batch draws its number");
        let writer = {
            let (store, report) = (store.clone(), report.clone());
            std::thread::spawn(move || {
                store
                    .put_statuses(&[("fast".to_string(), report, 2)])
                    .expect("the later batch")
            })
        };
        // Wait until the later batch has either committed or is waiting on a lock.
        let deadline = std::time::Instant::now() + Duration::from_secs(30);
        while !writer.is_finished()
            && server.psql(
                &db,
                "SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock'",
            ) == "0"
        {
            assert!(std::time::Instant::now() < deadline, "the writer never ran");
            std::thread::sleep(Duration::from_millis(20));
        }
        let first = store.statuses_since(0).expect("since");
        slow.commit().expect("the slow batch commits");
        writer.join().expect("writer");
        let rest = store.statuses_since(first.last).expect("since");
        let mut seen: Vec<String> = first
            .reports
            .iter()
            .chain(&rest.reports)
            .map(|r| r.0.clone())
            .collect();
        seen.sort();
        assert_eq!(
            seen,
            ["fast", "slow"],
            "every report read once, none passed over"
        );
    }

    /// meanwhile is refused and writes nothing.
    #[test]
    fn one_rollout_driver_and_steps_only_over_the_record_they_came_from() {
        use std::sync::atomic::Ordering;
        let mut server = PgServer::start();
        let db = server.create_db();
        let url = server.url(&db);
        let a = PgStore::connect(&url, QUICK).expect("a");
        let b = PgStore::connect(&url, QUICK).expect("b");
        let (stop_a, stop_rx_a) = tokio::sync::watch::channel(false);
        let (_stop_b, stop_rx_b) = tokio::sync::watch::channel(false);
        let (da, db_) = (a.rollout_driver(stop_rx_a), b.rollout_driver(stop_rx_b));
        let held = || (da.load(Ordering::SeqCst), db_.load(Ordering::SeqCst));
        let deadline = std::time::Instant::now() + Duration::from_secs(30);
        while held() != (true, false) && held() != (false, true) {
            assert!(
                std::time::Instant::now() < deadline,
                "no driver: {:?}",
                held()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        // Never both, over a few election rounds.
        for _ in 0..30 {
            assert_ne!(held(), (true, true));
            std::thread::sleep(Duration::from_millis(100));
        }
        if held() == (true, false) {
            stop_a.send(true).expect("stop");
            let deadline = std::time::Instant::now() + Duration::from_secs(30);
            while held() != (false, true) {
                assert!(
                    std::time::Instant::now() < deadline,
                    "no takeover: {:?}",
                    held()
                );
                std::thread::sleep(Duration::from_millis(50));
            }
        }

        a.put_rollout(br#"{"stage": 0, "state": "running"}"#)
            .expect("put");
        // The same document, encoded differently: replaced.
        assert!(
            b.replace_rollout(
                br#"{ "state":"running","stage":0 }"#,
                br#"{"stage": 1, "state": "running"}"#
            )
            .expect("replace")
        );
        // Stepped from the old record: refused, nothing written.
        assert!(
            !a.replace_rollout(
                br#"{"stage": 0, "state": "running"}"#,
                br#"{"stage": 1, "state": "halted"}"#
            )
            .expect("replace")
        );
        assert_eq!(
            a.rollout().expect("read").as_deref(),
            Some(&br#"{"stage": 1, "state": "running"}"#[..])
        );
    }

    #[test]
    fn racing_commits_give_one_revision_and_one_conflict() {
        let mut server = PgServer::start();
        let db = server.create_db();
        let url = server.url(&db);
        let a = Arc::new(PgStore::connect(&url, QUICK).expect("a"));
        let b = Arc::new(PgStore::connect(&url, QUICK).expect("b"));
        let digest = "d".repeat(64);
        a.put_bundle(&digest, b"x").expect("bundle");
        for parent in 0..10u64 {
            let barrier = Arc::new(Barrier::new(2));
            let results: Vec<Result<Revision, StoreError>> = [a.clone(), b.clone()]
                .into_iter()
                .enumerate()
                .map(|(i, store)| {
                    let (barrier, digest) = (barrier.clone(), digest.clone());
                    std::thread::spawn(move || {
                        barrier.wait();
                        store.commit_rollout(
                            draft(&[("f", &digest)], &[], parent * 10 + i as u64),
                            Some(parent),
                            &mut |_| None,
                        )
                    })
                })
                .collect::<Vec<_>>()
                .into_iter()
                .map(|t| t.join().expect("thread"))
                .collect();
            let ok: Vec<&Revision> = results.iter().filter_map(|r| r.as_ref().ok()).collect();
            assert_eq!(ok.len(), 1, "round {parent}: {results:?}");
            assert_eq!(ok[0].summary.number, parent + 1);
            let conflict = results.iter().find_map(|r| r.as_ref().err());
            assert!(
                matches!(conflict, Some(StoreError::Conflict { latest, expected }) if *latest == parent + 1 && *expected == parent),
                "round {parent}: {conflict:?}"
            );
        }
        let numbers: Vec<u64> = a
            .history(100)
            .expect("history")
            .iter()
            .map(|s| s.number)
            .collect();
        assert_eq!(numbers, (1..=10).rev().collect::<Vec<_>>());
    }

    /// A database written by the first release of the schema (version 1: revisions without
    /// their summary column) is brought to the latest version at start, its data kept and
    /// readable, the tables added since usable.
    #[test]
    fn an_upgrade_from_schema_version_1_keeps_the_data() {
        let mut server = PgServer::start();
        let db = server.create_db();
        let url = server.url(&db);
        drop(PgStore::connect_to(&url, QUICK, 1).expect("version 1"));
        assert_eq!(
            server.psql(&db, "SELECT max(version) FROM schema_migrations"),
            "1"
        );
        // What version 1 stored: a revision as one JSON body, a device, a secret, a token.
        let old = Revision {
            summary: RevisionSummary {
                number: 1,
                parent: 0,
                created_ms: 1_700_000_000_000,
                provenance: edgefn_schema::api::Provenance {
                    commit: Some("abc123".into()),
                    ..Default::default()
                },
                rollback_of: None,
            },
            manifest: "name: old\n".into(),
            bundles: BTreeMap::from([("f".to_owned(), "e".repeat(64))]),
            secrets: BTreeMap::from([("db".to_owned(), 1)]),
            signatures: None,
            layers: Default::default(),
            models: Default::default(),
        };
        let body = String::from_utf8(json(&old))
            .expect("utf-8")
            .replace('\'', "''");
        server.psql(
            &db,
            &format!(
                "INSERT INTO revisions (number, created_ms, body) VALUES (1, 1700000000000, '{body}');
                 INSERT INTO bundles VALUES ('{e}', '\\x00');
                 INSERT INTO devices VALUES ('gw-01', '\\x{h}', 5, NULL);
                 INSERT INTO secrets VALUES ('db', 1);
                 INSERT INTO secret_versions VALUES ('db', 1, 6, '\\x0102');
                 INSERT INTO admin_tokens VALUES ('\\x{h}', 'initial', 0, NULL);",
                e = "e".repeat(64),
                h = "07".repeat(32),
            ),
        );
        let store = PgStore::connect(&url, QUICK).expect("upgrade");
        assert_eq!(
            server.psql(
                &db,
                "SELECT string_agg(version::text, ',' ORDER BY version) FROM schema_migrations"
            ),
            "1,2,3,4,5,6"
        );
        assert_eq!(
            store.history(10).expect("history"),
            vec![old.summary.clone()]
        );
        assert_eq!(store.latest().expect("latest"), Some(old.clone()));
        assert_eq!(store.devices().expect("devices")[0].token_hash, [7; 32]);
        assert_eq!(store.admin_tokens().expect("tokens")[0].hash, [7; 32]);
        let next = store
            .commit_rollout(
                draft(&[("f", &"e".repeat(64))], &[("db", 1)], 2),
                Some(1),
                &mut |_| None,
            )
            .expect("commit on the upgraded schema");
        assert_eq!(next.summary.number, 2);
        assert_eq!(store.history(10).expect("history").len(), 2);
        // Version 6's console sessions, on the upgraded schema.
        let session = ConsoleSession {
            id_hash: [1; 32],
            token_hash: [7; 32],
            csrf: "c".into(),
            created_ms: 1,
            expires_ms: 10,
        };
        store
            .put_console_session(&session, 10, 1)
            .expect("a session");
        assert_eq!(
            store.console_session(&[1; 32], 2).expect("read"),
            Some(session)
        );
    }

    /// A schema newer than this program, or a released migration edited since, is refused
    /// with what to do; nothing is written.
    #[test]
    fn a_schema_this_program_does_not_know_is_refused() {
        let mut server = PgServer::start();
        let db = server.create_db();
        let url = server.url(&db);
        drop(PgStore::connect(&url, QUICK).expect("migrate"));
        server.psql(
            &db,
            "INSERT INTO schema_migrations (version, name, checksum) VALUES (99, 'future', 'x')",
        );
        let e = PgStore::connect(&url, QUICK).expect_err("newer");
        let m = e.to_string();
        assert!(matches!(e, StoreError::Schema(_)), "{e:?}");
        assert!(m.contains("version 99") && m.contains("newer"), "{m}");
        server.psql(&db, "DELETE FROM schema_migrations WHERE version = 99");
        server.psql(
            &db,
            "UPDATE schema_migrations SET checksum = 'edited' WHERE version = 2",
        );
        let m = PgStore::connect(&url, QUICK)
            .expect_err("edited")
            .to_string();
        assert!(m.contains("migration 2") && m.contains("changed"), "{m}");
    }

    /// A database that is down at start: a clear error naming it (never the password) once
    /// retrying gives up, and a connection as soon as it comes up while retrying. Errors that
    /// retrying cannot fix (a wrong password, no such database) are said at once.
    #[test]
    fn a_database_down_at_start_is_waited_for_and_named_without_its_password() {
        let mut server = PgServer::start();
        let db = server.create_db();
        let url = server.url(&db);
        server.stop();
        let e = PgStore::connect(&url, QUICK).expect_err("down");
        let m = e.to_string();
        assert!(matches!(e, StoreError::Unavailable { .. }), "{e:?}");
        assert!(
            m.contains(&format!("postgres://edgefn@127.0.0.1:{}/{db}", server.port)),
            "{m}"
        );
        assert!(!m.contains(PG_PASSWORD), "{m}");
        // Waiting: it connects once the server is up.
        let waiting = std::thread::spawn({
            let url = url.clone();
            move || PgStore::connect(&url, Retry::FOREVER)
        });
        server.start_again();
        let store = waiting.join().expect("thread").expect("connected once up");
        assert_eq!(store.latest().expect("latest"), None);

        let wrong = url.replace(PG_PASSWORD, "not-the-password");
        let m = PgStore::connect(&wrong, Retry::FOREVER)
            .expect_err("wrong password")
            .to_string();
        assert!(m.contains("password authentication failed"), "{m}");
        assert!(m.contains("check the password in $PGPASSWORD"), "{m}");
        assert!(!m.contains("not-the-password"), "{m}");
        if std::env::var_os("PGPASSWORD").is_none() {
            // No password at all, where the server asks for one: said at once, not retried.
            let none = url.replace(&format!(":{PG_PASSWORD}@"), "@");
            let m = PgStore::connect(&none, Retry::FOREVER)
                .expect_err("no password")
                .to_string();
            assert!(m.contains("password missing"), "{m}");
            assert!(m.contains("set $PGPASSWORD"), "{m}");
        }
        let missing = url.replace(&db, "no_such_db");
        let m = PgStore::connect(&missing, Retry::FOREVER)
            .expect_err("no database")
            .to_string();
        assert!(
            m.contains("no_such_db") && m.contains("does not exist"),
            "{m}"
        );
        let m = PgStore::connect("mysql://x@y/z", QUICK)
            .expect_err("not postgres")
            .to_string();
        assert!(m.contains("postgres://USER"), "{m}");
    }

    /// PostgreSQL crashes while a revision is being committed (its insert done, the rollout
    /// record waiting on a lock): the commit fails as unavailable, and after the restart the
    /// database holds neither the revision nor its rollout; the store carries on.
    #[test]
    fn a_crash_mid_commit_leaves_no_partial_revision() {
        let mut server = PgServer::start();
        let db = server.create_db();
        let store = Arc::new(PgStore::connect(&server.url(&db), QUICK).expect("connect"));
        let digest = "d".repeat(64);
        store.put_bundle(&digest, b"x").expect("bundle");
        store
            .commit_rollout(draft(&[("f", &digest)], &[], 1), Some(0), &mut |_| None)
            .expect("first");
        let mut holder = server.session(&db);
        {
            use std::io::Write as _;
            let stdin = holder.stdin.as_mut().expect("stdin");
            writeln!(stdin, "BEGIN; LOCK TABLE meta IN ACCESS EXCLUSIVE MODE;").expect("lock");
            stdin.flush().expect("flush");
        }
        let deadline = std::time::Instant::now() + Duration::from_secs(30);
        while server.psql(
            &db,
            "SELECT count(*) FROM pg_locks l JOIN pg_class c ON c.oid = l.relation WHERE c.relname = 'meta' AND l.mode = 'AccessExclusiveLock' AND l.granted",
        ) != "1"
        {
            assert!(std::time::Instant::now() < deadline, "the lock was never taken");
            std::thread::sleep(Duration::from_millis(20));
        }
        let committing = std::thread::spawn({
            let (store, digest) = (store.clone(), digest.clone());
            move || {
                store.commit_rollout(draft(&[("f", &digest)], &[], 2), Some(1), &mut |_| {
                    Some(b"{\"revision\":2}".to_vec())
                })
            }
        });
        // Until the commit waits on the lock, its revision inserted.
        let deadline = std::time::Instant::now() + Duration::from_secs(15);
        while server.psql(
            &db,
            "SELECT count(*) FROM pg_stat_activity WHERE application_name = 'edgefn-cloud' AND wait_event_type = 'Lock'",
        ) != "1"
        {
            assert!(
                std::time::Instant::now() < deadline,
                "the commit never waited: {}",
                server.psql(&db, "SELECT application_name, state, wait_event_type, query FROM pg_stat_activity")
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        server.crash();
        let result = committing.join().expect("thread");
        assert!(
            matches!(result, Err(StoreError::Unavailable { .. })),
            "{result:?}"
        );
        let _ = holder.kill();
        let _ = holder.wait();
        server.start_again();
        assert_eq!(server.psql(&db, "SELECT max(number) FROM revisions"), "1");
        assert_eq!(
            server.psql(&db, "SELECT count(*) FROM meta WHERE key = 'rollout'"),
            "0"
        );
        assert_eq!(
            store.latest().expect("latest").map(|r| r.summary.number),
            Some(1)
        );
        let again = store
            .commit_rollout(draft(&[("f", &digest)], &[], 3), Some(1), &mut |_| None)
            .expect("after the restart");
        assert_eq!(again.summary.number, 2);
    }
}

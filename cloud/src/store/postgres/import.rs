//! Filling an empty database with the state of another store, in one transaction
//! (`edgefn-cloud move-store`, `crate::move_store`).

use edgefn_schema::api::Revision;

use super::{KEY_CHECK, PgStore, ROLLOUT, big};
use crate::store::{Store, StoreError, json};

/// Everything the [`crate::store::Store`] trait keeps besides bundle bytes, read from one store
/// to be written into another.
#[derive(Debug, Default)]
pub(crate) struct Snapshot {
    /// Every revision, oldest first (numbers and parents as they were).
    pub(crate) revisions: Vec<Revision>,
    /// Devices with their token hashes.
    pub(crate) devices: Vec<crate::store::DeviceRecord>,
    /// The last report of each device, with when it was received (ms since the Unix epoch).
    pub(crate) statuses: Vec<(String, edgefn_schema::api::StatusReport, u64)>,
    /// Admin tokens (hashes), revoked ones included.
    pub(crate) admin_tokens: Vec<crate::store::AdminTokenRecord>,
    /// Sealed secrets.
    pub(crate) secrets: Vec<crate::store::SecretRecord>,
    /// The sealed check value of the secrets' key.
    pub(crate) key_check: Option<Vec<u8>>,
    /// The latest revision's rollout record.
    pub(crate) rollout: Option<Vec<u8>>,
}

impl Snapshot {
    /// Everything `source` keeps besides object bytes.
    ///
    /// Errors: the store's; a revision missing below the latest (a damaged store):
    /// [`StoreError::Schema`].
    pub(crate) fn read(source: &dyn Store) -> Result<Snapshot, StoreError> {
        let latest = source.latest()?.map_or(0, |r| r.summary.number);
        let mut revisions = Vec::new();
        for n in 1..=latest {
            match source.revision(n)? {
                Some(r) => revisions.push(r),
                None => {
                    return Err(StoreError::Schema(format!(
                        "revision {n} of {latest} is missing from the store: it is damaged; restore it from a backup first"
                    )));
                }
            }
        }
        Ok(Snapshot {
            revisions,
            devices: source.devices()?,
            statuses: source
                .statuses()?
                .into_iter()
                .map(|(name, (report, at))| (name, report, at))
                .collect(),
            admin_tokens: source.admin_tokens()?,
            secrets: source.secrets()?,
            key_check: source.key_check()?,
            rollout: source.rollout()?,
        })
    }
}

/// The tables that must be empty for [`PgStore::import`]: the control plane's state. Not
/// `bundles` (content-addressed: a move that failed after copying them may be run again),
/// nor `message_marks`, `up_messages` and `console_sessions` (short-lived; console sessions are
/// not moved, so users sign in to the console again after a move).
const TABLES: &[&str] = &[
    "revisions",
    "devices",
    "device_status",
    "admin_tokens",
    "secrets",
    "meta",
];

impl PgStore {
    /// The first table of the control plane's state that holds a row, if any.
    pub(crate) fn first_non_empty(&self) -> Result<Option<&'static str>, StoreError> {
        let mut conn = self.conn()?;
        first_non_empty(&mut *conn).map_err(|e| self.err(e))
    }

    /// Writes `snapshot` into the database in one transaction, which first checks (under
    /// exclusive locks on the tables, so no control plane writes meanwhile) that the database
    /// holds no state: all or nothing.
    ///
    /// Errors: [`StoreError::Postgres`] naming the table that is not empty; the database's
    /// errors (nothing is then written).
    pub(crate) fn import(&self, snapshot: &Snapshot) -> Result<(), StoreError> {
        use base64::Engine as _;
        let mut conn = self.conn()?;
        let mut tx = conn.transaction().map_err(|e| self.err(e))?;
        tx.batch_execute(&format!(
            "LOCK TABLE {} IN ACCESS EXCLUSIVE MODE",
            TABLES.join(", ")
        ))
        .map_err(|e| self.err(e))?;
        if let Some(table) = first_non_empty(&mut tx).map_err(|e| self.err(e))? {
            return Err(StoreError::Postgres(format!(
                "{} already holds a control plane's state (table `{table}` is not empty): move into an empty database (CREATE DATABASE …)",
                self.shown
            )));
        }
        for r in &snapshot.revisions {
            let body = String::from_utf8(json(r)).expect("JSON is UTF-8");
            let summary = String::from_utf8(json(&r.summary)).expect("JSON is UTF-8");
            tx.execute(
                "INSERT INTO revisions (number, created_ms, body, summary)
                 VALUES ($1, $2, $3::text::jsonb, $4::text::jsonb)",
                &[
                    &big(r.summary.number),
                    &big(r.summary.created_ms),
                    &body,
                    &summary,
                ],
            )
            .map_err(|e| self.err(e))?;
        }
        for d in &snapshot.devices {
            tx.execute(
                "INSERT INTO devices (name, token_hash, registered_ms, mqtt_hash)
                 VALUES ($1, $2, $3, $4)",
                &[
                    &d.name,
                    &d.token_hash.as_slice(),
                    &big(d.registered_ms),
                    &d.mqtt_hash,
                ],
            )
            .map_err(|e| self.err(e))?;
        }
        for (name, report, at_ms) in &snapshot.statuses {
            let report = String::from_utf8(json(report)).expect("JSON is UTF-8");
            tx.execute(
                "INSERT INTO device_status (name, report, at_ms) VALUES ($1, $2::text::jsonb, $3)",
                &[name, &report, &big(*at_ms)],
            )
            .map_err(|e| self.err(e))?;
        }
        for t in &snapshot.admin_tokens {
            tx.execute(
                "INSERT INTO admin_tokens (hash, name, created_ms, revoked_ms) VALUES ($1, $2, $3, $4)",
                &[
                    &t.hash.as_slice(),
                    &t.name,
                    &big(t.created_ms),
                    &t.revoked_ms.map(big),
                ],
            )
            .map_err(|e| self.err(e))?;
        }
        for s in &snapshot.secrets {
            tx.execute(
                "INSERT INTO secrets (name, last_version) VALUES ($1, $2)",
                &[&s.name, &big(s.last)],
            )
            .map_err(|e| self.err(e))?;
            for v in &s.versions {
                let sealed = base64::engine::general_purpose::STANDARD
                    .decode(&v.sealed)
                    .map_err(|e| {
                        StoreError::Postgres(format!(
                            "secret `{}` version {}: its sealed value is not base64 ({e})",
                            s.name, v.version
                        ))
                    })?;
                tx.execute(
                    "INSERT INTO secret_versions (name, version, created_ms, sealed) VALUES ($1, $2, $3, $4)",
                    &[&s.name, &big(v.version), &big(v.created_ms), &sealed],
                )
                .map_err(|e| self.err(e))?;
            }
        }
        for (key, value) in [
            (KEY_CHECK, &snapshot.key_check),
            (ROLLOUT, &snapshot.rollout),
        ] {
            if let Some(value) = value {
                tx.execute(
                    "INSERT INTO meta (key, value) VALUES ($1, $2)",
                    &[&key, value],
                )
                .map_err(|e| self.err(e))?;
            }
        }
        // Processes already on this database read everything again when this commits.
        self.notify(&mut tx, "rollout")?;
        tx.commit().map_err(|e| self.err(e))?;
        Ok(())
    }
}

/// The first of [`TABLES`] that holds a row.
fn first_non_empty(
    client: &mut impl postgres::GenericClient,
) -> Result<Option<&'static str>, postgres::Error> {
    for table in TABLES {
        if client
            .query_opt(&format!("SELECT 1 FROM {table} LIMIT 1"), &[])?
            .is_some()
        {
            return Ok(Some(table));
        }
    }
    Ok(None)
}

#[cfg(test)]
mod tests {
    use super::super::test_server::PgServer;
    use super::super::{PgStore, Retry};
    use super::Snapshot;
    use crate::store::contract::check;
    use crate::store::{LocalStore, Store};

    const QUICK: Retry = Retry {
        first: std::time::Duration::from_millis(10),
        max: std::time::Duration::from_millis(50),
        attempts: Some(3),
    };

    /// What `store` answers through the trait, as text (to compare two stores).
    fn everything(store: &dyn Store) -> String {
        let s = Snapshot::read(store).expect("read");
        let mut devices = s.devices.clone();
        devices.sort_by(|a, b| a.name.cmp(&b.name));
        let mut tokens = s.admin_tokens.clone();
        tokens.sort_by_key(|t| t.hash);
        format!(
            "{:?}\n{devices:?}\n{:?}\n{tokens:?}\n{:?}\n{:?}\n{:?}\n{:?}",
            s.revisions,
            s.statuses,
            s.secrets,
            s.key_check,
            s.rollout,
            store.history(100).expect("history")
        )
    }

    /// The embedded store after the store contract's writes (revisions, devices and reports,
    /// tokens, secrets, the key check, the rollout), imported into PostgreSQL: every read
    /// through the trait answers the same.
    #[test]
    fn an_import_answers_every_read_as_the_embedded_store_did() {
        let dir = tempfile::tempdir().expect("dir");
        let local = LocalStore::open(dir.path()).expect("open");
        check(&local);
        local.set_key_check(b"sealed check").expect("key check");
        local.put_rollout(b"{\"rollout\":1}").expect("rollout");
        let mut server = PgServer::start();
        let db = server.create_db();
        let pg = PgStore::connect(&server.url(&db), QUICK).expect("connect");
        let snapshot = Snapshot::read(&local).expect("snapshot");
        assert!(snapshot.revisions.len() > 1 && !snapshot.secrets.is_empty());
        pg.import(&snapshot).expect("import");
        assert_eq!(everything(&pg), everything(&local));
        // The next revision follows on the imported history.
        let next = pg
            .commit_rollout(
                crate::store::contract::draft(&[], &[], 9),
                Some(snapshot.revisions.len() as u64),
                &mut |_| None,
            )
            .expect("commit");
        assert_eq!(next.summary.number, snapshot.revisions.len() as u64 + 1);
    }

    /// An import that fails part-way (a device twice: the second insert is refused) leaves the
    /// database as empty as it was, and a second import into a filled one is refused.
    #[test]
    fn an_import_is_whole_or_nothing() {
        let dir = tempfile::tempdir().expect("dir");
        let local = LocalStore::open(dir.path()).expect("open");
        check(&local);
        let mut server = PgServer::start();
        let db = server.create_db();
        let pg = PgStore::connect(&server.url(&db), QUICK).expect("connect");
        let mut snapshot = Snapshot::read(&local).expect("snapshot");
        let twice = snapshot.devices[0].clone();
        snapshot.devices.push(twice);
        let err = pg.import(&snapshot).expect_err("a device twice");
        assert!(err.to_string().contains("duplicate key"), "{err}");
        for table in ["revisions", "devices", "secrets", "admin_tokens", "meta"] {
            assert_eq!(
                server.psql(&db, &format!("SELECT count(*) FROM {table}")),
                "0",
                "{table}"
            );
        }
        snapshot.devices.pop();
        pg.import(&snapshot).expect("import");
        let err = pg.import(&snapshot).expect_err("into a filled database");
        assert!(
            err.to_string().contains("table `revisions` is not empty"),
            "{err}"
        );
    }
}

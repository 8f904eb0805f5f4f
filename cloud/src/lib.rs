//! The edgefn control plane: stores revisions and bundles, and serves each device its desired
//! state over HTTP.
//!
//! The binary is a thin shell: it parses arguments, calls [`prepare`] (open the store, set up
//! the admin token) and [`serve`] with a bound listener and a shutdown future.

mod api;
mod auth;
mod console;
mod error;
mod fleet;
mod messaging;
mod metrics;
pub mod move_store;
mod objects;
pub mod openapi;
mod registry;
mod rollout;
mod secrets;
mod serve;
mod state;
mod store;
pub mod tls;

pub use messaging::mosquitto::MosquittoError;
pub use messaging::{BrokerUrlError, MosquittoFiles, MqttMode, parse_url as parse_mqtt_url};
pub use objects::ObjectsError;
pub use secrets::KeyError;
pub use store::StoreError;

use std::future::Future;
use std::path::PathBuf;
use std::sync::Arc;

use tokio::net::TcpListener;
use tokio::sync::watch;

use crate::messaging as mqtt;
use crate::state::AppState;
use crate::store::{AdminTokenRecord, LocalStore, PgStore, Store};

/// How to run the control plane.
#[derive(Debug, Clone)]
pub struct Config {
    /// Folder for the database and bundles.
    pub data: PathBuf,
    /// Read the admin token from this file, or write a new one there on first start.
    pub admin_token_file: Option<PathBuf>,
    /// The key that seals secrets at rest (64 hex digits), created there, mode 0600, when the
    /// first secret is set. Must be outside `data`. Default: `DATA.secret-key`, beside the
    /// data folder.
    pub secret_key_file: Option<PathBuf>,
    /// Where bundles (and dependency layers) are kept: `s3://BUCKET[/PREFIX]`, an
    /// S3-compatible object store configured by the `AWS_*` variables (see the README), or
    /// `None` for files in `DATA/bundles`.
    pub objects: Option<String>,
}

/// Why the control plane could not start.
#[derive(Debug, thiserror::Error)]
pub enum CloudError {
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The object store cannot be used (`--objects`).
    #[error(transparent)]
    Objects(#[from] ObjectsError),
    /// The admin token file could not be used.
    #[error("admin token file {}: {source}", .path.display())]
    TokenFile {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The admin token file holds a token that was revoked.
    #[error("admin token file {}: its token was revoked (`edgefn token revoke`); delete the file, or name a new one, to have a new token created", .0.display())]
    RevokedTokenFile(PathBuf),
    /// The admin token file holds no usable token.
    #[error("admin token file {} is empty or too short (at least 16 characters)", .0.display())]
    BadTokenFile(PathBuf),
    /// No randomness.
    #[error("could not generate a token: {0}")]
    Random(#[source] getrandom::Error),
    /// Serving failed.
    #[error("server: {0}")]
    Serve(#[source] std::io::Error),
    /// A start-up task off the async threads panicked.
    #[error("start-up task failed: {0}")]
    Task(#[from] tokio::task::JoinError),
    /// The embedded broker's store cannot be used.
    #[error("the embedded broker's store {}: {source}", .path.display())]
    Broker {
        /// The store's file.
        path: PathBuf,
        /// Why.
        source: redb::Error,
    },
    /// Mosquitto's files could not be written or reloaded.
    #[error("mosquitto: {0}")]
    Mosquitto(#[source] MosquittoError),
    /// The secrets key cannot be used.
    #[error(transparent)]
    SecretKey(#[from] KeyError),
}

/// A store ready to serve, and an admin token to show the operator if one was just created.
pub struct Prepared {
    store: Arc<dyn Store>,
    keyring: secrets::Keyring,
    admin: Vec<[u8; 32]>,
    data: PathBuf,
    mqtt: mqtt::MqttMode,
    tls: Option<tls::ServerConfig>,
    mqtts: Option<std::net::TcpListener>,
    device_mqtt_url: Option<String>,
    /// A newly created admin token (first start without a token file): show it once.
    pub new_admin_token: Option<String>,
    /// The token file this start wrote a new admin token to, if it did: say so.
    pub admin_token_written: Option<PathBuf>,
}

impl std::fmt::Debug for Prepared {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Prepared")
            .field("data", &self.data)
            .field("admin_token_written", &self.admin_token_written)
            .finish_non_exhaustive()
    }
}

/// Opens the store in `config.data` and makes sure an admin token exists.
///
/// With `admin_token_file`: a file that does not exist yet gets a new token (its folder is
/// created, mode 0700); the file's token is added to the store unless it was revoked, which is
/// an error (a revoked token never comes back through its file). A lost token is replaced by
/// starting once with a new file path. Without: the first start creates a token and shows it once.
pub fn prepare(config: &Config) -> Result<Prepared, CloudError> {
    prepare_with_store(config, None)
}

/// Says (in the log) which archives the latest revision names that the store lacks: after a
/// move to another object store (`--objects`) without copying the bundles, devices would get
/// 404s for them until they are uploaded again.
fn warn_of_missing_archives(store: &dyn Store) -> Result<(), StoreError> {
    let Some(latest) = store.latest()? else {
        return Ok(());
    };
    let named: Vec<&str> = latest
        .bundles
        .values()
        .chain(latest.layers.values().flat_map(|by| by.values()))
        .chain(latest.models.values().map(|m| &m.digest))
        .map(String::as_str)
        .collect();
    let missing = store.missing_bundles(&named)?;
    if !missing.is_empty() {
        tracing::warn!(
            "revision {} names {} archive(s) that are not stored here ({}…): devices cannot download them; if the bundles moved (another --objects or data folder), copy them over, or run `edgefn apply` in the project again to upload them",
            latest.summary.number,
            missing.len(),
            missing
                .iter()
                .map(|d| &d[..12.min(d.len())])
                .collect::<Vec<_>>()
                .join("…, ")
        );
    }
    Ok(())
}

/// [`prepare`], with the state in the PostgreSQL database at `store` when given
/// (`postgres://USER[:PASSWORD]@HOST[:PORT]/DATABASE`; the password may come from
/// `$PGPASSWORD` instead) rather than in `config.data`: waits for the database to come up
/// (saying so in the log at every attempt, never with the password), then brings its schema up
/// to date. `config.data` still holds what is local to this process: the embedded broker's
/// sessions (`mqtt.redb`) and the cloud's MQTT password (`mqtt-cloud.secret`).
pub fn prepare_with_store(config: &Config, store: Option<&str>) -> Result<Prepared, CloudError> {
    let store: Arc<dyn Store> = match store {
        None => {
            let objects = objects::open(config.objects.as_deref(), &config.data.join("bundles"))?;
            tracing::info!("bundles in {}", objects.describe());
            Arc::new(LocalStore::open_with(&config.data, objects)?)
        }
        Some(url) => {
            std::fs::create_dir_all(&config.data).map_err(|source| StoreError::Io {
                action: "create",
                path: config.data.clone(),
                source,
            })?;
            let pg = PgStore::connect(url, store::postgres::Retry::FOREVER)?;
            tracing::info!("state in PostgreSQL at {}", pg.shown());
            match config.objects.as_deref() {
                // Bundles in the object store, the rest in the database.
                Some(url) => {
                    let objects = objects::open(Some(url), &config.data.join("bundles"))?;
                    tracing::info!("bundles in {}", objects.describe());
                    Arc::new(pg.with_objects(objects, config.data.join("uploads"))?)
                }
                None => {
                    tracing::info!("bundles in PostgreSQL");
                    Arc::new(pg)
                }
            }
        }
    };
    warn_of_missing_archives(store.as_ref())?;
    let mut new_admin_token = None;
    let mut admin_token_written = None;
    if let Some(path) = &config.admin_token_file {
        let file_error = |source| CloudError::TokenFile {
            path: path.clone(),
            source,
        };
        let token = match std::fs::read_to_string(path) {
            Ok(text) => text.trim().to_owned(),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                let token = auth::generate(auth::ADMIN_PREFIX).map_err(CloudError::Random)?;
                if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
                    if !dir.exists() {
                        edgefn_os::file::create_folder(dir, 0o700).map_err(file_error)?;
                    }
                }
                write_secret(path, &token).map_err(file_error)?;
                admin_token_written = Some(path.clone());
                token
            }
            Err(source) => return Err(file_error(source)),
        };
        if token.len() < 16 {
            return Err(CloudError::BadTokenFile(path.clone()));
        }
        let h = auth::hash(&token);
        match store.admin_tokens()?.iter().find(|r| r.hash == h) {
            Some(r) if r.revoked_ms.is_some() => {
                return Err(CloudError::RevokedTokenFile(path.clone()));
            }
            Some(_) => {}
            None => store.add_admin_token(&AdminTokenRecord {
                hash: h,
                name: if admin_token_written.is_some() {
                    "token-file".into()
                } else {
                    "initial".into()
                },
                created_ms: edgefn_os::time::now_ms(),
                revoked_ms: None,
            })?,
        }
    } else if store.admin_tokens()?.iter().all(|r| r.revoked_ms.is_some()) {
        let token = auth::generate(auth::ADMIN_PREFIX).map_err(CloudError::Random)?;
        store.add_admin_token(&AdminTokenRecord {
            hash: auth::hash(&token),
            name: "initial".into(),
            created_ms: edgefn_os::time::now_ms(),
            revoked_ms: None,
        })?;
        new_admin_token = Some(token);
    }
    let admin = live_admin_hashes(store.as_ref())?;
    let key_file = config
        .secret_key_file
        .clone()
        .unwrap_or_else(|| secrets::default_key_file(&config.data));
    let keyring = secrets::Keyring::open(&key_file, &config.data, store.as_ref())?;
    Ok(Prepared {
        store,
        keyring,
        admin,
        data: config.data.clone(),
        mqtt: mqtt::MqttMode::Disabled,
        tls: None,
        mqtts: None,
        device_mqtt_url: None,
        new_admin_token,
        admin_token_written,
    })
}

/// The hashes of the admin tokens not revoked.
pub(crate) fn live_admin_hashes(store: &dyn Store) -> Result<Vec<[u8; 32]>, StoreError> {
    Ok(store
        .admin_tokens()?
        .into_iter()
        .filter(|r| r.revoked_ms.is_none())
        .map(|r| r.hash)
        .collect())
}

impl Prepared {
    /// Serves messages through this broker (the default is none: the message endpoints
    /// answer 503).
    pub fn with_mqtt(mut self, mode: mqtt::MqttMode) -> Self {
        self.mqtt = mode;
        self
    }

    /// Gives newly registered devices this broker URL (`mqtt://` or `mqtts://`), which
    /// `edgefn device add` writes into their configuration.
    pub fn with_device_mqtt_url(mut self, url: String) -> Self {
        self.device_mqtt_url = Some(url);
        self
    }

    /// Serves the API over TLS (https) with these settings, and the embedded broker also over
    /// TLS (mqtts) on `mqtts` when given.
    pub fn with_tls(
        mut self,
        config: tls::ServerConfig,
        mqtts: Option<std::net::TcpListener>,
    ) -> Self {
        self.tls = Some(config);
        self.mqtts = mqtts;
        self
    }
}

/// The cloud's own MQTT password, created in the data folder on first use.
fn cloud_secret(data: &std::path::Path) -> Result<String, CloudError> {
    let path = data.join(mqtt::CLOUD_SECRET_FILE);
    match std::fs::read_to_string(&path) {
        Ok(text) if text.trim().len() >= 16 => Ok(text.trim().to_owned()),
        Ok(_) => Err(CloudError::BadTokenFile(path)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let secret = auth::generate("edgefn_mqtt_").map_err(CloudError::Random)?;
            write_secret(&path, &secret).map_err(|source| CloudError::TokenFile {
                path: path.clone(),
                source,
            })?;
            Ok(secret)
        }
        Err(source) => Err(CloudError::TokenFile { path, source }),
    }
}

/// Starts the broker (if embedded), writes Mosquitto's files (if external Mosquitto), and
/// connects the cloud's client.
async fn start_messaging(
    state: &Arc<AppState>,
    data: &std::path::Path,
    mode: mqtt::MqttMode,
    mqtts: Option<(std::net::TcpListener, tls::ServerConfig)>,
    stop: watch::Receiver<bool>,
) -> Result<(), CloudError> {
    use crate::messaging::{Messaging, RegistryAuth};
    // A file read (and, the first time, a synced write) and a PBKDF2 hash: off the async threads.
    let secret_in = data.to_path_buf();
    let (secret, cloud_hash) = tokio::task::spawn_blocking(move || {
        let secret = cloud_secret(&secret_in)?;
        let hash = mqtt::mosquitto::hash(&secret).map_err(CloudError::Random)?;
        Ok::<_, CloudError>((secret, hash))
    })
    .await??;
    let (opts, broker, mosquitto) = match mode {
        mqtt::MqttMode::Disabled => return Ok(()),
        mqtt::MqttMode::Embedded(listener) => {
            let addr = listener.local_addr().map_err(CloudError::Serve)?;
            state.set_broker_port(addr.port());
            listener.set_nonblocking(true).map_err(CloudError::Serve)?;
            let listener = TcpListener::from_std(listener).map_err(CloudError::Serve)?;
            let path = data.join("mqtt.redb");
            // Opening and reading the store is file work: off the async threads.
            let (persist, stored) = tokio::task::spawn_blocking(move || {
                let broker_error = |source| CloudError::Broker {
                    path: path.clone(),
                    source,
                };
                let persist = mqtt::persist::BrokerStore::open(&path).map_err(broker_error)?;
                let stored = persist.load().map_err(broker_error)?;
                Ok::<_, CloudError>((persist, stored))
            })
            .await??;
            let broker = edgefn_broker::Broker::with_options(
                RegistryAuth {
                    registry: Arc::downgrade(&state.registry),
                    cloud: auth::hash(&secret),
                },
                edgefn_broker::BrokerOptions {
                    max_packet: mqtt::MAX_PACKET_BYTES,
                    too_large: None,
                    on_publish: None,
                    persistence: Some(Arc::new(persist)),
                    // A device's session lasts as long as it asks (the agent: 7 days), and is
                    // forgotten when the device is removed.
                    session_expiry_limit: None,
                    // Each client's own keep alive (the agent's: 30 s).
                    max_keep_alive: None,
                },
            );
            let (sessions, queued) = (
                stored.sessions.len(),
                stored.sessions.iter().map(|s| s.queue.len()).sum::<usize>(),
            );
            broker.restore(stored);
            if sessions > 0 {
                tracing::info!(sessions, queued, "mqtt: persistent sessions restored");
            }
            tokio::spawn(broker.clone().serve(listener, stop.clone()));
            if let Some((l, config)) = mqtts {
                l.set_nonblocking(true).map_err(CloudError::Serve)?;
                let l = TcpListener::from_std(l).map_err(CloudError::Serve)?;
                let mut streams = tls::accept(l, config, stop.clone());
                let (broker, stop) = (broker.clone(), stop.clone());
                tokio::spawn(async move {
                    while let Some((stream, peer)) = streams.recv().await {
                        let b = broker.clone();
                        tokio::spawn(b.serve_stream(stream, peer.to_string(), stop.clone()));
                    }
                });
            }
            let at = mqtt::local_connect_addr(addr);
            let opts = mqtt::hub::HubOptions {
                host: at.ip().to_string(),
                port: at.port(),
                username: mqtt::CLOUD_USER.to_owned(),
                password: secret.clone(),
                shared: None,
            };
            (opts, Some(broker), None)
        }
        mqtt::MqttMode::External {
            host,
            port,
            username,
            password,
            mosquitto,
        } => {
            let opts = mqtt::hub::HubOptions {
                host,
                port,
                username: username.unwrap_or_else(|| mqtt::CLOUD_USER.to_owned()),
                password: password.unwrap_or_else(|| secret.clone()),
                // Replicas on one store and one broker: each message sent up reaches one.
                shared: state
                    .store
                    .shared()
                    .then(|| mqtt::hub::SharedMarks(state.store.clone())),
            };
            (opts, None, mosquitto)
        }
    };
    let hub = mqtt::hub::Hub::start(opts, stop);
    let m = Arc::new(Messaging {
        hub,
        broker,
        mosquitto,
        cloud_hash,
        writing: tokio::sync::Mutex::new(()),
    });
    state.set_messaging(m.clone());
    if m.mosquitto.is_some() {
        m.write_mosquitto(&state.registry)
            .await
            .map_err(CloudError::Mosquitto)?;
    }
    Ok(())
}

fn write_secret(path: &std::path::Path, token: &str) -> std::io::Result<()> {
    use std::io::Write;
    let mut opts = std::fs::OpenOptions::new();
    opts.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut opts, 0o600);
    let mut f = opts.open(path)?;
    writeln!(f, "{token}")?;
    f.sync_all()
}

/// Serves the API on `listener` until `shutdown` completes; in-flight requests finish and
/// waiting long-polls are answered 503 so devices retry elsewhere.
pub async fn serve(
    prepared: Prepared,
    listener: TcpListener,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), CloudError> {
    let (stop_tx, stop_rx) = watch::channel(false);
    let store: Arc<dyn Store> = prepared.store;
    let admin = prepared.admin;
    let shutdown_rx = stop_rx.clone();
    // Reads the whole registry, the latest revision and the reports: off the async threads.
    let state =
        tokio::task::spawn_blocking(move || AppState::load(store, admin, shutdown_rx)).await??;
    state.set_keyring(prepared.keyring);
    // Another process sharing the store committed or changed a rollout: serve it (and wake the
    // long-polls it concerns).
    let weak = Arc::downgrade(&state);
    state.store.watch_changes(
        Box::new(move |what| {
            let Some(state) = weak.upgrade() else {
                return;
            };
            let (store, registry) = (state.store.as_ref(), &state.registry);
            let read = match &what {
                store::Changed::Devices(names) => registry.reload(
                    || {
                        names
                            .iter()
                            .map(|n| Ok((n.clone(), store.device(n)?)))
                            .collect::<Result<Vec<_>, StoreError>>()
                    },
                    |entries, found| {
                        for (name, record) in found {
                            match record {
                                Some(r) => entries.insert_device(r),
                                None => entries.remove_device(&name),
                            }
                        }
                    },
                ),
                store::Changed::AdminTokens => registry.reload(
                    || live_admin_hashes(store),
                    |entries, hashes| entries.set_admins(hashes),
                ),
                store::Changed::Everything => registry.reload(
                    || Ok((store.devices()?, live_admin_hashes(store)?)),
                    |entries, (devices, hashes)| {
                        entries.set_devices(devices);
                        entries.set_admins(hashes);
                    },
                ),
                store::Changed::Revisions | store::Changed::Messages => Ok(()),
            };
            if matches!(what, store::Changed::Messages | store::Changed::Everything) {
                if let Some(m) = state.messaging() {
                    m.hub.stream_shared();
                }
            }
            if let Err(e) = read {
                tracing::warn!("could not read the devices and admin tokens again: {e}");
            }
            if matches!(what, store::Changed::Revisions | store::Changed::Everything) {
                let _serialised = state.commit.blocking_lock();
                if let Err(e) = state.reload_latest() {
                    tracing::warn!("could not read the latest revision again: {e}");
                }
            }
        }),
        stop_rx.clone(),
    );
    if let Some(url) = prepared.device_mqtt_url {
        state.set_device_mqtt_url(url);
    }
    let mqtts = match (prepared.mqtts, &prepared.tls) {
        (Some(l), Some(config)) => Some((l, config.clone())),
        _ => None,
    };
    start_messaging(
        &state,
        &prepared.data,
        prepared.mqtt,
        mqtts,
        stop_rx.clone(),
    )
    .await?;
    let tls_stop = stop_rx.clone();
    // Writes reports as they come (group commits) and reads other processes' every second.
    // It runs until the server has stopped: a report being answered waits for it.
    let (served_tx, mut served_rx) = tokio::sync::oneshot::channel::<()>();
    let flusher = tokio::spawn({
        let state = state.clone();
        async move {
            let mut tick = tokio::time::interval(state::STATUS_FLUSH);
            loop {
                let read_others = tokio::select! {
                    () = state.status_recorded.notified() => false,
                    _ = tick.tick() => true,
                    _ = &mut served_rx => break,
                };
                if let Err(e) = state.flush_statuses(read_others).await {
                    tracing::warn!("could not save device reports: {e:?}");
                }
            }
        }
    });
    let driver = tokio::spawn(api::drive_rollouts(state.clone(), stop_rx.clone()));
    if prepared.tls.is_some() {
        state.set_https();
    }
    let app = api::router(state.clone());
    let stopping = async move {
        shutdown.await;
        let _ = stop_tx.send(true);
    };
    let served: Result<(), CloudError> = match prepared.tls {
        None => {
            serve::serve(listener, app, stopping).await;
            Ok(())
        }
        Some(config) => {
            let listener =
                tls::TlsListener::new(listener, config, tls_stop).map_err(CloudError::Serve)?;
            serve::serve(listener, app, stopping).await;
            Ok(())
        }
    };
    let _ = served_tx.send(());
    let _ = flusher.await;
    let _ = driver.await;
    // Reports received since the last tick.
    if let Err(e) = state.flush_statuses(false).await {
        tracing::warn!("could not save device reports: {e:?}");
    }
    served
}

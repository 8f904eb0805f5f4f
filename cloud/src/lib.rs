//! The edgefn control plane: stores revisions and bundles, and serves each device its desired
//! state over HTTP.
//!
//! The binary is a thin shell: it parses arguments, calls [`prepare`] (open the store, set up
//! the admin token) and [`serve`] with a bound listener and a shutdown future.

pub mod auth;
pub mod error;
pub mod fleet;
pub mod http;
pub mod metrics;
pub mod openapi;
pub mod store;

use std::future::Future;
use std::path::PathBuf;
use std::sync::Arc;

use tokio::net::TcpListener;
use tokio::sync::watch;

use crate::store::{LocalStore, Store, StoreError};

/// How to run the control plane.
#[derive(Debug, Clone)]
pub struct Config {
    /// Folder for the database and bundles.
    pub data: PathBuf,
    /// Read the admin token from this file, or write a new one there on first start.
    pub admin_token_file: Option<PathBuf>,
}

/// Why the control plane could not start.
#[derive(Debug, thiserror::Error)]
pub enum CloudError {
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The admin token file could not be used.
    #[error("admin token file {}: {source}", .path.display())]
    TokenFile {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The admin token file holds no usable token.
    #[error("admin token file {} is empty or too short (at least 16 characters)", .0.display())]
    BadTokenFile(PathBuf),
    /// No randomness.
    #[error("could not generate a token: {0}")]
    Random(getrandom::Error),
    /// Serving failed.
    #[error("server: {0}")]
    Serve(std::io::Error),
}

/// A store ready to serve, and an admin token to show the operator if one was just created.
#[derive(Debug)]
pub struct Prepared {
    store: Arc<LocalStore>,
    admin: Vec<[u8; 32]>,
    /// A newly created admin token (first start without a token file): show it once.
    pub new_admin_token: Option<String>,
}

/// Opens the store in `config.data` and makes sure an admin token exists.
pub fn prepare(config: &Config) -> Result<Prepared, CloudError> {
    let store = Arc::new(LocalStore::open(&config.data)?);
    let mut new_admin_token = None;
    if let Some(path) = &config.admin_token_file {
        let token = match std::fs::read_to_string(path) {
            Ok(text) => text.trim().to_owned(),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                let token = auth::generate(auth::ADMIN_PREFIX).map_err(CloudError::Random)?;
                write_secret(path, &token).map_err(|source| CloudError::TokenFile {
                    path: path.clone(),
                    source,
                })?;
                token
            }
            Err(source) => {
                return Err(CloudError::TokenFile {
                    path: path.clone(),
                    source,
                });
            }
        };
        if token.len() < 16 {
            return Err(CloudError::BadTokenFile(path.clone()));
        }
        let h = auth::hash(&token);
        if !store.admin_token_hashes()?.contains(&h) {
            store.add_admin_token_hash(h)?;
        }
    } else if store.admin_token_hashes()?.is_empty() {
        let token = auth::generate(auth::ADMIN_PREFIX).map_err(CloudError::Random)?;
        store.add_admin_token_hash(auth::hash(&token))?;
        new_admin_token = Some(token);
    }
    let admin = store.admin_token_hashes()?;
    Ok(Prepared {
        store,
        admin,
        new_admin_token,
    })
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
    let state = http::AppState::new(store, prepared.admin, stop_rx.clone())?;
    let flusher = tokio::spawn({
        let state = state.clone();
        let mut stop = stop_rx;
        async move {
            let mut tick = tokio::time::interval(http::STATUS_FLUSH);
            loop {
                tokio::select! {
                    _ = tick.tick() => {}
                    _ = stop.wait_for(|s| *s) => break,
                }
                if let Err(e) = state.flush_statuses().await {
                    tracing::warn!("could not save device reports: {e:?}");
                }
            }
        }
    });
    let app = http::router(state.clone());
    let served = axum::serve(listener, app)
        .with_graceful_shutdown(async move {
            shutdown.await;
            let _ = stop_tx.send(true);
        })
        .await
        .map_err(CloudError::Serve);
    let _ = flusher.await;
    // Reports received since the last tick.
    if let Err(e) = state.flush_statuses().await {
        tracing::warn!("could not save device reports: {e:?}");
    }
    served
}

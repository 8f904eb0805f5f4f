//! Serving the API: HTTP/1.1 connections through hyper's own connection builder, tuned for a
//! fleet of devices that each hold one long-poll open.
//!
//! `axum::serve` works, but each connection goes through hyper-util's protocol-detecting
//! builder (HTTP/1 or 2 with upgrades: a preface buffer, a rewind wrapper) and keeps hyper's
//! defaults. The control plane speaks HTTP/1.1 only (devices, the CLI and the console do), so
//! each accepted stream gets `hyper::server::conn::http1` directly with:
//!
//! - `max_buf_size` = hyper's minimum (8 KiB): a request head is at most that (the API's
//!   requests are small; bodies are streamed, not buffered, so uploads are unaffected);
//! - `writev`: the response body is queued beside its head rather than copied behind it;
//! - a header read timeout (30 s), so a client that never finishes its request head does not
//!   hold a connection for ever.
//!
//! Graceful shutdown as `axum::serve` does it: stop accepting, let each connection finish the
//! request it serves (a waiting long-poll is answered 503 by its handler), then return.

use std::future::Future;
use std::time::Duration;

use axum::Router;
use axum::serve::Listener;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use tokio::sync::watch;

/// hyper's smallest allowed read buffer limit: the longest request head the API accepts.
pub(crate) const MAX_BUF_SIZE: usize = 8 * 1024;

/// Longest a client may take to send a request head; hyper runs it also while a kept-alive
/// connection waits for its next request, so it is the idle timeout of kept-alive connections
/// too (edgefn's clients drop idle connections sooner: `edgefn_os::http::POOL_IDLE_TIMEOUT`).
pub(crate) const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(30);

/// Serves `app` on `listener` until `shutdown` completes, then waits for the connections to
/// finish their requests.
pub(crate) async fn serve<L>(mut listener: L, app: Router, shutdown: impl Future<Output = ()>)
where
    L: Listener,
{
    let mut builder = hyper::server::conn::http1::Builder::new();
    builder
        .max_buf_size(MAX_BUF_SIZE)
        .writev(true)
        .timer(TokioTimer::new())
        .header_read_timeout(HEADER_READ_TIMEOUT);
    // Every connection holds a receiver of `stop`; `open` counts them.
    let (stop_tx, stop_rx) = watch::channel(false);
    let (open_tx, open_rx) = watch::channel(());
    tokio::pin!(shutdown);
    loop {
        let (io, _peer) = tokio::select! {
            accepted = listener.accept() => accepted,
            () = &mut shutdown => break,
        };
        let conn =
            builder.serve_connection(TokioIo::new(io), TowerToHyperService::new(app.clone()));
        let mut stop = stop_rx.clone();
        let open = open_rx.clone();
        tokio::spawn(async move {
            tokio::pin!(conn);
            tokio::select! {
                _ = conn.as_mut() => {}
                () = async { let _ = stop.wait_for(|s| *s).await; } => {
                    conn.as_mut().graceful_shutdown();
                    let _ = conn.await;
                }
            }
            drop(open);
        });
    }
    drop(listener);
    drop(open_rx);
    let _ = stop_tx.send(true);
    open_tx.closed().await;
}

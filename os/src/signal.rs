//! The signals that stop an edgefn program.

use std::future::Future;

/// A future that completes on SIGINT (Ctrl-C) or SIGTERM: the cue for a clean stop.
///
/// The handlers are installed when this is called, not when the future is first polled, so a
/// signal that arrives while the program is still starting is a clean stop too, not the
/// default action that kills it with its work half done. Call it inside a Tokio runtime. Where
/// a handler cannot be installed, that signal is never seen (the other still is).
pub fn shutdown() -> impl Future<Output = ()> + Send + 'static {
    signals(false)
}

/// Like [`shutdown`], and also on SIGHUP: for a program tied to its terminal (`edgefn dev`),
/// which ends when the terminal closes.
pub fn shutdown_or_hangup() -> impl Future<Output = ()> + Send + 'static {
    signals(true)
}

fn signals(hangup: bool) -> impl Future<Output = ()> + Send + 'static {
    use tokio::signal::unix::{SignalKind, signal};
    let int = signal(SignalKind::interrupt()).ok();
    let term = signal(SignalKind::terminate()).ok();
    let hup = if hangup {
        signal(SignalKind::hangup()).ok()
    } else {
        None
    };
    async move {
        let recv = |s: Option<tokio::signal::unix::Signal>| async move {
            match s {
                Some(mut s) => {
                    s.recv().await;
                }
                None => std::future::pending::<()>().await,
            }
        };
        tokio::select! {
            () = recv(int) => {}
            () = recv(term) => {}
            () = recv(hup) => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    /// A real SIGTERM sent to this process ends the future (the handler, installed at the
    /// call, keeps the default action from killing the test).
    #[tokio::test]
    async fn sigterm_completes_it() {
        let stop = super::shutdown();
        let pid = std::process::id();
        let status = std::process::Command::new("kill")
            .args(["-TERM", &pid.to_string()])
            .status()
            .expect("kill runs");
        assert!(status.success());
        tokio::time::timeout(Duration::from_secs(60), stop)
            .await
            .expect("SIGTERM ends the shutdown future");
    }
}

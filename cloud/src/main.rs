//! `edgefn-cloud`: parse arguments, open the store, serve until Ctrl-C or SIGTERM.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::Parser;

/// The edgefn control plane: stores revisions and bundles and serves each device its desired state.
#[derive(Debug, Parser)]
#[command(
    name = "edgefn-cloud",
    version,
    after_help = "Example:\n  edgefn-cloud --data /var/lib/edgefn --listen 0.0.0.0:7070 --admin-token-file /etc/edgefn/admin.token"
)]
struct Args {
    /// Folder for the database and bundles (created if missing)
    #[arg(long, default_value = "edgefn-data")]
    data: PathBuf,
    /// Address to listen on (port 0 picks a free one)
    #[arg(long, default_value = "127.0.0.1:7070")]
    listen: SocketAddr,
    /// Read the admin token from this file; on first start, write a new one there (mode 0600)
    #[arg(long)]
    admin_token_file: Option<PathBuf>,
    /// Log level: error, warn, info, debug, trace
    #[arg(long, default_value = "info")]
    log_level: tracing::Level,
}

#[allow(clippy::print_stdout, clippy::print_stderr)]
fn main() -> ExitCode {
    let args = Args::parse();
    tracing_subscriber::fmt()
        .with_max_level(args.log_level)
        .with_writer(std::io::stderr)
        .with_ansi(false)
        .init();
    let config = edgefn_cloud::Config {
        data: args.data,
        admin_token_file: args.admin_token_file,
    };
    let prepared = match edgefn_cloud::prepare(&config) {
        Ok(p) => p,
        Err(e) => {
            eprintln!("edgefn-cloud: {e}");
            return ExitCode::from(1);
        }
    };
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("edgefn-cloud: cannot start the async runtime: {e}");
            return ExitCode::from(1);
        }
    };
    runtime.block_on(async move {
        let listener = match tokio::net::TcpListener::bind(args.listen).await {
            Ok(l) => l,
            Err(e) => {
                eprintln!("edgefn-cloud: cannot listen on {}: {e}", args.listen);
                return ExitCode::from(1);
            }
        };
        let addr = listener
            .local_addr()
            .map_or_else(|_| args.listen.to_string(), |a| a.to_string());
        if let Some(token) = &prepared.new_admin_token {
            println!("admin token (shown once; keep it secret): {token}");
        }
        println!("edgefn-cloud listening on http://{addr}");
        match edgefn_cloud::serve(prepared, listener, shutdown_signal()).await {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("edgefn-cloud: {e}");
                ExitCode::from(1)
            }
        }
    })
}

async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {},
        () = term => {},
    }
}

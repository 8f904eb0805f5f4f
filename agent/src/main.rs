//! `edgefn-agent`: load the configuration, run the agent until SIGTERM or Ctrl-C.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Parser;

/// The edgefn device agent: runs this device's functions and keeps them at their desired state.
#[derive(Debug, Parser)]
#[command(
    name = "edgefn-agent",
    version,
    after_help = "Example:\n  edgefn-agent --config /etc/edgefn/agent.yaml"
)]
struct Args {
    /// The configuration file (`edgefn device add --out FILE` writes one)
    #[arg(long, value_name = "FILE")]
    config: PathBuf,
    /// Data folder (overrides `data:` of the configuration)
    #[arg(long, value_name = "DIR")]
    data: Option<PathBuf>,
    /// Sandbox: container, process or auto (overrides `sandbox:`)
    #[arg(long)]
    sandbox: Option<String>,
    /// Local message endpoint address (overrides `localListen:`)
    #[arg(long, value_name = "ADDR")]
    local_listen: Option<std::net::SocketAddr>,
    /// Local MQTT listener address, or `none` (overrides `localMqtt:`)
    #[arg(long, value_name = "ADDR")]
    local_mqtt: Option<String>,
    /// Log level: error, warn, info, debug, trace
    #[arg(long, default_value = "info")]
    log_level: tracing::Level,
}

#[allow(clippy::print_stdout, clippy::print_stderr)]
fn main() -> ExitCode {
    // When started as the container helper, this runs it and exits (before any thread starts).
    edgefn_runtime::sandbox_helper_main_if_requested();
    let args = Args::parse();
    tracing_subscriber::fmt()
        .with_max_level(args.log_level)
        .with_writer(std::io::stderr)
        .with_ansi(false)
        .init();
    let mut config = match edgefn_agent::AgentConfig::load(&args.config) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("edgefn-agent: {e}");
            return ExitCode::from(2);
        }
    };
    if let Some(d) = args.data {
        config.data = d;
    }
    if let Some(s) = args.sandbox {
        match s.parse() {
            Ok(k) => config.sandbox = k,
            Err(e) => {
                eprintln!("edgefn-agent: --sandbox: {e}");
                return ExitCode::from(2);
            }
        }
    }
    if let Some(a) = args.local_listen {
        config.local_listen = a;
    }
    if let Some(a) = &args.local_mqtt {
        let password = config.local_mqtt_password.is_some();
        match edgefn_agent::config::parse_local_mqtt(a, password) {
            Ok(addr) => {
                config.local_mqtt = addr;
                config.local_mqtt_configured = true;
            }
            Err((message, help)) => {
                eprintln!("edgefn-agent: --local-mqtt: {message}\n  help: {help}");
                return ExitCode::from(2);
            }
        }
    }
    // The crash tests' hook: die by SIGKILL at a chosen point of an update.
    config.crash_at = std::env::var("EDGEFN_AGENT_CRASH_AT")
        .ok()
        .filter(|s| !s.is_empty());
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("edgefn-agent: cannot start the async runtime: {e}");
            return ExitCode::from(1);
        }
    };
    runtime.block_on(async move {
        let listener = match tokio::net::TcpListener::bind(config.local_listen).await {
            Ok(l) => l,
            Err(e) => {
                eprintln!(
                    "edgefn-agent: cannot listen on {}: {e}",
                    config.local_listen
                );
                return ExitCode::from(1);
            }
        };
        let mqtt = match config.local_mqtt {
            None => None,
            Some(at) => match tokio::net::TcpListener::bind(at).await {
                Ok(l) => Some(l),
                Err(e) if config.local_mqtt_configured => {
                    eprintln!("edgefn-agent: cannot listen for local MQTT clients on {at}: {e} (set localMqtt: to a free address, or `none`)");
                    return ExitCode::from(1);
                }
                Err(e) => {
                    // The default port may belong to a broker already on this device: the
                    // agent's job goes on without its local listener.
                    tracing::warn!("no local MQTT listener: cannot listen on {at}: {e} (set localMqtt: to a free address, or `none`)");
                    None
                }
            },
        };
        let addr = listener
            .local_addr()
            .map_or_else(|_| config.local_listen.to_string(), |a| a.to_string());
        let mqtt_note = mqtt
            .as_ref()
            .and_then(|l| l.local_addr().ok())
            .map(|a| format!(" and mqtt://{a}"))
            .unwrap_or_default();
        println!(
            "edgefn-agent {} for device {} listening on http://{addr}{mqtt_note}",
            env!("CARGO_PKG_VERSION"),
            config.device
        );
        let listeners = edgefn_agent::Listeners {
            http: listener,
            mqtt,
        };
        match edgefn_agent::run(config, listeners, shutdown_signal()).await {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("edgefn-agent: {e}");
                ExitCode::from(1)
            }
        }
    })
}

/// Completes on SIGTERM or Ctrl-C. The SIGTERM handler is installed at once, not when the future
/// is first polled (after boot): a SIGTERM while the agent starts is a clean stop too, not the
/// default action that kills it with its work half done.
fn shutdown_signal() -> impl std::future::Future<Output = ()> {
    let term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).ok();
    async move {
        let term = async {
            match term {
                Some(mut s) => {
                    s.recv().await;
                }
                None => std::future::pending::<()>().await,
            }
        };
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {},
            () = term => {},
        }
    }
}

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
        config.local_listen_configured = true;
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
    if let Some(point) = std::env::var("EDGEFN_AGENT_CRASH_AT")
        .ok()
        .filter(|s| !s.is_empty())
    {
        match point.parse() {
            Ok(p) => config.crash_at = Some(p),
            Err(e) => {
                eprintln!("edgefn-agent: EDGEFN_AGENT_CRASH_AT: {e}");
                return ExitCode::from(2);
            }
        }
    }
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
        let http = match bind_local(
            "the local message endpoint",
            config.local_listen,
            config.local_listen_configured,
            "localListen: to a free address, e.g. 127.0.0.1:7072",
        )
        .await
        {
            Ok(l) => l,
            Err(e) => {
                eprintln!("edgefn-agent: {e}");
                return ExitCode::from(1);
            }
        };
        // The uplink must never reach this device's own listener as if it were the cloud's
        // broker: on one host, with the cloud's broker at the local listener's address, the
        // local listener would take the messages meant for the cloud.
        let local_mqtt = match (config.local_mqtt, &config.mqtt) {
            (Some(at), Some(broker)) if is_own_address(&broker.host, broker.port, at) => {
                let why = format!(
                    "the cloud's broker (mqtt: {}:{}) is this device's local MQTT address {at}: its messages for the cloud would go to its own listener",
                    broker.host, broker.port
                );
                if config.local_mqtt_configured {
                    eprintln!(
                        "edgefn-agent: {why}; set localMqtt: to another address (e.g. 127.0.0.1:1884) or `none`"
                    );
                    return ExitCode::from(1);
                }
                tracing::warn!(
                    "no listener for local MQTT clients: {why} (set localMqtt: to another address, e.g. 127.0.0.1:1884)"
                );
                None
            }
            (at, _) => at,
        };
        let mqtt = match local_mqtt {
            None => None,
            Some(at) => match bind_local(
                "local MQTT clients",
                at,
                config.local_mqtt_configured,
                "localMqtt: to a free address, e.g. 127.0.0.1:1884, or `none`",
            )
            .await
            {
                Ok(l) => l,
                Err(e) => {
                    eprintln!("edgefn-agent: {e}");
                    return ExitCode::from(1);
                }
            },
        };
        let bound = |l: &Option<tokio::net::TcpListener>, scheme: &str| {
            l.as_ref()
                .and_then(|l| l.local_addr().ok())
                .map(|a| format!("{scheme}://{a}"))
        };
        let addrs: Vec<String> = [bound(&http, "http"), bound(&mqtt, "mqtt")]
            .into_iter()
            .flatten()
            .collect();
        let listening = if addrs.is_empty() {
            "with no local listener".to_owned()
        } else {
            format!("listening on {}", addrs.join(" and "))
        };
        println!(
            "edgefn-agent {} for device {} {listening}",
            env!("CARGO_PKG_VERSION"),
            config.device
        );
        let listeners = edgefn_agent::Listeners { http, mqtt };
        match edgefn_agent::run(
            config,
            listeners,
            // SIGTERM or Ctrl-C. The handlers are installed here, at once, not when the future
            // is first polled (after boot): a SIGTERM while the agent starts is a clean stop too.
            edgefn_os::signal::shutdown(),
        ).await {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("edgefn-agent: {e}");
                // A token the cloud refuses (the device was removed) does not get better by
                // restarting: its own status, which the systemd unit does not restart on.
                if matches!(e, edgefn_agent::AgentError::Rejected(_)) {
                    ExitCode::from(REJECTED_EXIT)
                } else {
                    ExitCode::from(1)
                }
            }
        }
    })
}

/// The exit status when the cloud refuses the device's token: `EX_CONFIG` of BSD's
/// `sysexits.h`; `examples/systemd/edgefn-agent.service` does not restart on it
/// (`RestartPreventExitStatus=78`).
const REJECTED_EXIT: u8 = 78;

/// Whether `host:port` (the cloud's broker) names `at` (this device's local listener): the same
/// port on a loopback, unspecified or identical address, or `localhost`.
fn is_own_address(host: &str, port: u16, at: std::net::SocketAddr) -> bool {
    if port != at.port() {
        return false;
    }
    let host = host.trim_start_matches('[').trim_end_matches(']');
    match host.parse::<std::net::IpAddr>() {
        Ok(ip) => {
            ip == at.ip()
                || ((ip.is_loopback() || ip.is_unspecified())
                    && (at.ip().is_loopback() || at.ip().is_unspecified()))
        }
        Err(_) => {
            host.eq_ignore_ascii_case("localhost")
                && (at.ip().is_loopback() || at.ip().is_unspecified())
        }
    }
}

/// Binds a local listener, by the one rule of both: an address the configuration or a flag
/// names must be free, or the agent stops (the error says so); the default address may belong
/// to something else on this device (a second agent, a broker), so there the agent warns and
/// runs without that listener.
async fn bind_local(
    what: &str,
    at: std::net::SocketAddr,
    configured: bool,
    fix: &str,
) -> Result<Option<tokio::net::TcpListener>, String> {
    match tokio::net::TcpListener::bind(at).await {
        Ok(l) => Ok(Some(l)),
        Err(e) if configured => Err(format!("cannot listen for {what} on {at}: {e} (set {fix})")),
        Err(e) => {
            tracing::warn!(
                "no listener for {what}: cannot listen on its default address {at}: {e} (set {fix})"
            );
            Ok(None)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::is_own_address;

    #[test]
    fn the_cloud_broker_at_the_local_listener_is_recognised() {
        let at: std::net::SocketAddr = "127.0.0.1:1883".parse().expect("addr");
        let any: std::net::SocketAddr = "0.0.0.0:1883".parse().expect("addr");
        assert!(is_own_address("127.0.0.1", 1883, at));
        assert!(is_own_address("localhost", 1883, at));
        assert!(is_own_address("127.0.0.2", 1883, at));
        assert!(is_own_address("::1", 1883, any));
        assert!(is_own_address("[::1]", 1883, at));
        assert!(!is_own_address("127.0.0.1", 1884, at));
        assert!(!is_own_address("cloud.example.com", 1883, at));
        assert!(!is_own_address("10.0.0.5", 1883, at));
    }
}

//! `edgefn-cloud`: parse arguments, open the store, serve until Ctrl-C or SIGTERM.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::Parser;

/// jemalloc: a waiting long-poll's connection buffers cost only the pages written (see
/// `cloud/benches/longpoll.rs` and `serve.rs`).
#[cfg(all(target_os = "linux", not(target_env = "musl")))]
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

/// The edgefn control plane: stores revisions and bundles and serves each device its desired state.
#[derive(Debug, Parser)]
#[command(
    name = "edgefn-cloud",
    version,
    args_conflicts_with_subcommands = true,
    after_help = "Example:\n  edgefn-cloud --data /var/lib/edgefn --listen 0.0.0.0:7070 --admin-token-file /etc/edgefn/admin.token"
)]
struct Args {
    /// Folder for the database and bundles (created if missing); with --store, for what stays
    /// local to this process: the embedded broker's sessions and the cloud's MQTT password
    #[arg(long, default_value = "edgefn-data")]
    data: PathBuf,
    /// Keep the control plane's state in this PostgreSQL database instead of the data folder:
    /// postgres://USER[:PASSWORD]@HOST[:PORT]/DATABASE[?sslmode=MODE&sslrootcert=CA.pem] (the
    /// password may come from $PGPASSWORD instead; sslmode is libpq's: disable, prefer (the
    /// default), require, verify-ca, verify-full; also from $PGSSLMODE, $PGSSLROOTCERT). Waits
    /// for the database to come up; migrates its schema at start. To move an existing data
    /// folder's state there: `edgefn-cloud move-store`
    #[arg(long, value_name = "URL")]
    store: Option<String>,
    /// Address to listen on (port 0 picks a free one)
    #[arg(long, default_value = "127.0.0.1:7070")]
    listen: SocketAddr,
    /// Read the admin token from this file; on first start, write a new one there (mode 0600)
    #[arg(long)]
    admin_token_file: Option<PathBuf>,
    /// The key that seals secrets at rest (64 hex digits), created there (mode 0600) when the
    /// first secret is set; keep it outside the data folder and its backups [default:
    /// DATA.secret-key, beside the data folder; also from $EDGEFN_SECRET_KEY_FILE]
    #[arg(long, value_name = "PATH")]
    secret_key_file: Option<PathBuf>,
    /// Address of the embedded MQTT broker, or `none` [default: 127.0.0.1:1883; if that address
    /// is taken and none was given, the cloud runs without messages and says so]
    #[arg(long, value_name = "ADDR|none", conflicts_with = "mqtt_url")]
    mqtt_listen: Option<String>,
    /// Use this external MQTT broker instead of the embedded one: mqtt://[USER[:PASSWORD]@]HOST[:PORT]
    /// (default user `edgefn-cloud`, password: the secret in DATA/mqtt-cloud.secret)
    #[arg(long, value_name = "URL")]
    mqtt_url: Option<String>,
    /// With --mqtt-url on Mosquitto 2.x: write its `passwd` and `acl` files into this folder
    /// whenever devices change
    #[arg(long, value_name = "DIR", requires = "mqtt_url")]
    mosquitto_dir: Option<PathBuf>,
    /// Send SIGHUP to the pid in this file after writing Mosquitto's files, so it reloads them
    #[arg(long, value_name = "FILE", requires = "mosquitto_dir")]
    mosquitto_pid_file: Option<PathBuf>,
    /// Serve the API over https with this certificate chain (PEM; the server's certificate first)
    #[arg(long, value_name = "FILE", requires = "tls_key")]
    tls_cert: Option<PathBuf>,
    /// The private key of --tls-cert (PEM)
    #[arg(long, value_name = "FILE", requires = "tls_cert")]
    tls_key: Option<PathBuf>,
    /// Also serve the embedded broker over TLS (mqtts) on this address, with --tls-cert (the
    /// plain listener stays for the cloud's own connection: keep it on 127.0.0.1)
    #[arg(
        long,
        value_name = "ADDR",
        requires = "tls_cert",
        conflicts_with = "mqtt_url"
    )]
    mqtts_listen: Option<SocketAddr>,
    /// The broker URL devices should use (e.g. mqtts://edge.example.com:8883): `edgefn device
    /// add` writes it into each new device's configuration [default: none; agents then use the
    /// control plane's host on port 1883]
    #[arg(long, value_name = "URL")]
    device_mqtt_url: Option<String>,
    /// Keep bundles, dependency layers and models in an S3-compatible object store:
    /// s3://BUCKET[/PREFIX]; endpoint, region and credentials from AWS_ENDPOINT_URL,
    /// AWS_REGION, AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY (AWS_ALLOW_HTTP=true for a plain-http
    /// endpoint) [default: files in DATA/bundles]
    #[arg(long, value_name = "URL")]
    objects: Option<String>,
    /// Log level: error, warn, info, debug, trace
    #[arg(long, default_value = "info")]
    log_level: tracing::Level,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Debug, clap::Subcommand)]
enum Command {
    /// Move the state of a cloud on the embedded store (DATA/cloud.redb, DATA/bundles) into an
    /// empty PostgreSQL database, whole or not at all; run it while that cloud is stopped, then
    /// start the cloud with --store
    #[command(
        after_help = "Example:\n  systemctl stop edgefn-cloud\n  PGPASSWORD=… edgefn-cloud move-store --data /var/lib/edgefn --to 'postgres://edgefn@db.example.com/edgefn?sslmode=verify-full&sslrootcert=/etc/edgefn/db-ca.pem'\n  edgefn-cloud --data /var/lib/edgefn --store 'postgres://edgefn@db.example.com/edgefn?sslmode=verify-full&sslrootcert=/etc/edgefn/db-ca.pem'"
    )]
    MoveStore(MoveStore),
}

#[derive(Debug, clap::Args)]
struct MoveStore {
    /// The data folder the cloud ran with (holding cloud.redb and bundles/); its state is only
    /// read
    #[arg(long, value_name = "DATA")]
    data: PathBuf,
    /// The empty PostgreSQL database to move into:
    /// postgres://USER[:PASSWORD]@HOST[:PORT]/DATABASE[?sslmode=…&sslrootcert=…] (the password
    /// may come from $PGPASSWORD instead)
    #[arg(long, value_name = "URL")]
    to: String,
    /// Put the bundles, dependency layers and models into this S3-compatible object store
    /// (s3://BUCKET[/PREFIX], configured as the cloud's --objects) [default: into the database]
    #[arg(long, value_name = "URL")]
    objects: Option<String>,
}

/// `edgefn-cloud move-store`.
#[allow(clippy::print_stdout, clippy::print_stderr)]
fn move_store(args: &MoveStore) -> ExitCode {
    match edgefn_cloud::move_store::move_store(&args.data, &args.to, args.objects.as_deref()) {
        Ok(m) => {
            println!(
                "moved {} revision(s), {} device(s), {} admin token(s) and {} secret(s) into {}; {} object(s) copied into {} ({} already there)",
                m.revisions,
                m.devices,
                m.admin_tokens,
                m.secrets,
                m.database,
                m.objects_copied,
                m.objects_in,
                m.objects_present
            );
            let objects = args
                .objects
                .as_deref()
                .map(|o| format!(" --objects {o}"))
                .unwrap_or_default();
            println!(
                "start the cloud on it with the --to URL (and $PGPASSWORD, as here, when the URL has no password), the same data folder (its MQTT password stays there) and the same --secret-key-file if it had one; the admin tokens moved too, so existing logins keep working:\n  edgefn-cloud --data {} --store URL{objects}",
                args.data.display()
            );
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("edgefn-cloud move-store: {e}");
            ExitCode::from(1)
        }
    }
}

#[allow(clippy::print_stdout, clippy::print_stderr)]
fn main() -> ExitCode {
    let args = Args::parse();
    tracing_subscriber::fmt()
        .with_max_level(args.log_level)
        .with_writer(std::io::stderr)
        .with_ansi(false)
        .init();
    if let Some(Command::MoveStore(m)) = &args.command {
        return move_store(m);
    }
    // One descriptor per connected device: lift the soft limit to the hard one.
    match edgefn_os::limits::raise_open_files(None) {
        Ok(l) if l.now > l.before => {
            tracing::debug!(
                before = l.before,
                now = l.now,
                "raised the open-files limit"
            );
        }
        Ok(_) => {}
        Err(e) => tracing::warn!(
            "cannot raise the open-files limit ({e}): each connected device holds one"
        ),
    }
    let config = edgefn_cloud::Config {
        data: args.data.clone(),
        admin_token_file: args.admin_token_file.clone(),
        secret_key_file: args
            .secret_key_file
            .clone()
            .or_else(|| std::env::var_os("EDGEFN_SECRET_KEY_FILE").map(PathBuf::from)),
        objects: args.objects.clone(),
    };
    let prepared = match edgefn_cloud::prepare_with_store(&config, args.store.as_deref()) {
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
    let mqtt = match mqtt_mode(&args) {
        Ok(m) => m,
        Err(e) => {
            eprintln!("edgefn-cloud: {e}");
            return ExitCode::from(1);
        }
    };
    if let edgefn_cloud::MqttMode::Embedded(l) = &mqtt {
        if let Ok(a) = l.local_addr() {
            println!("edgefn-cloud MQTT broker on mqtt://{a}");
        }
    } else if args.mqtts_listen.is_some() {
        eprintln!(
            "edgefn-cloud: --mqtts-listen needs the embedded broker's plain listener for the cloud's own connection: drop --mqtt-listen none (it listens on 127.0.0.1:1883 by default)"
        );
        return ExitCode::from(2);
    }
    let mut prepared = prepared.with_mqtt(mqtt);
    if let Some(url) = &args.device_mqtt_url {
        if let Err(e) = edgefn_schema::MqttUrl::parse(url) {
            eprintln!("edgefn-cloud: --device-mqtt-url: {e}");
            return ExitCode::from(2);
        }
        prepared = prepared.with_device_mqtt_url(url.clone());
    }
    let mut scheme = "http";
    if let (Some(cert), Some(key)) = (&args.tls_cert, &args.tls_key) {
        let config = match edgefn_cloud::tls::load(cert, key) {
            Ok(c) => c,
            Err(e) => {
                eprintln!("edgefn-cloud: {e}");
                return ExitCode::from(2);
            }
        };
        let mqtts = match args.mqtts_listen.map(edgefn_os::net::listen) {
            None => None,
            Some(Ok(l)) => Some(l),
            Some(Err(e)) => {
                eprintln!(
                    "edgefn-cloud: the embedded MQTT broker cannot listen on {} (--mqtts-listen): {e}",
                    args.mqtts_listen.map(|a| a.to_string()).unwrap_or_default()
                );
                return ExitCode::from(1);
            }
        };
        if let Some(a) = mqtts.as_ref().and_then(|l| l.local_addr().ok()) {
            println!("edgefn-cloud MQTT broker on mqtts://{a}");
        }
        prepared = prepared.with_tls(config, mqtts);
        scheme = "https";
    }
    runtime.block_on(async move {
        let listener = match edgefn_os::net::listen(args.listen)
            .and_then(|l| l.set_nonblocking(true).map(|()| l))
            .and_then(tokio::net::TcpListener::from_std)
        {
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
        if let Some(path) = &prepared.admin_token_written {
            println!(
                "wrote a new admin token to {} (mode 0600): `edgefn login --cloud URL < {}`",
                path.display(),
                path.display()
            );
        }
        println!("edgefn-cloud listening on {scheme}://{addr}");
        match edgefn_cloud::serve(prepared, listener, edgefn_os::signal::shutdown()).await {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("edgefn-cloud: {e}");
                ExitCode::from(1)
            }
        }
    })
}

/// The broker to use, from the arguments; binds the embedded broker's listener.
#[allow(clippy::print_stderr)]
fn mqtt_mode(args: &Args) -> Result<edgefn_cloud::MqttMode, String> {
    use edgefn_cloud::{MosquittoFiles, MqttMode};
    if let Some(url) = &args.mqtt_url {
        let mut mode = edgefn_cloud::parse_mqtt_url(url).map_err(|e| e.to_string())?;
        if let (MqttMode::External { mosquitto, .. }, Some(dir)) = (&mut mode, &args.mosquitto_dir)
        {
            *mosquitto = Some(MosquittoFiles {
                dir: dir.clone(),
                pid_file: args.mosquitto_pid_file.clone(),
            });
        }
        return Ok(mode);
    }
    let (addr, explicit) = match args.mqtt_listen.as_deref() {
        Some("none") => return Ok(MqttMode::Disabled),
        Some(a) => (a, true),
        None => ("127.0.0.1:1883", false),
    };
    let parsed: SocketAddr = addr.parse().map_err(|_| {
        format!("--mqtt-listen `{addr}` is not an address such as 127.0.0.1:1883 (or `none`)")
    })?;
    match edgefn_os::net::listen(parsed) {
        Ok(l) => Ok(MqttMode::Embedded(l)),
        Err(e) if !explicit => {
            eprintln!(
                "edgefn-cloud: warning: the embedded MQTT broker cannot listen on {addr} ({e}); running without messages (give --mqtt-listen ADDR, or --mqtt-url)"
            );
            Ok(MqttMode::Disabled)
        }
        Err(e) => Err(format!(
            "the embedded MQTT broker cannot listen on {addr}: {e}"
        )),
    }
}

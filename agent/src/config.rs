//! The agent's configuration file: the one `edgefn device add` writes, plus local settings.
//!
//! ```yaml
//! cloud: https://edgefn.example.com     # the control plane
//! device: gw-01                          # this device's name
//! token: edgefn_dev_...                  # its token (keep the file mode 0600)
//! data: /var/lib/edgefn-agent            # releases, bundles and state
//! sandbox: auto                          # container, process or auto
//! healthWindow: 10s                      # how long a new release must stay healthy
//! localListen: 127.0.0.1:7071            # the local message endpoint (loopback by default)
//! localMqtt: 127.0.0.1:1883              # the local MQTT listener, or `none`
//! localMqttPassword: ...                 # required when localMqtt is not a loopback address
//! mqttMaxPacketSize: 1088Ki              # the largest MQTT packet the cloud's broker takes
//! secretsDir: /run/edgefn-secrets        # where secrets are kept: a memory file system
//! trustedKeys: [ed25519:BASE64...]       # run only revisions signed by one of these keys
//! ```

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use edgefn_schema::{Source, yaml};
use serde::Deserialize;

/// The local MQTT listener's address when the configuration names none.
pub(crate) const DEFAULT_LOCAL_MQTT: &str = "127.0.0.1:1883";

/// Reads a local MQTT listener address (`none`: no listener); one beyond loopback needs a
/// password. The error is (what is wrong, how to fix it).
pub fn parse_local_mqtt(
    text: &str,
    has_password: bool,
) -> Result<Option<SocketAddr>, (String, &'static str)> {
    if text == "none" {
        return Ok(None);
    }
    let addr: SocketAddr = text.parse().map_err(|e| {
        (
            format!("localMqtt `{text}`: {e}"),
            "an address such as 127.0.0.1:1883, or `none`",
        )
    })?;
    if !addr.ip().is_loopback() && !has_password {
        return Err((
            format!("localMqtt listens on {addr}, beyond this machine, without a password"),
            "set localMqttPassword (clients then log in with it), or listen on 127.0.0.1",
        ));
    }
    Ok(Some(addr))
}

/// Why the configuration cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file cannot be read.
    #[error("cannot read the configuration {}: {source}", .path.display())]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The file is not valid.
    #[error("{file}:{line}:{column}: {message}\n  help: {help}")]
    Invalid {
        /// The file.
        file: String,
        /// 1-based line.
        line: usize,
        /// 1-based column.
        column: usize,
        /// What is wrong.
        message: String,
        /// How to fix it.
        help: String,
    },
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct Raw {
    cloud: String,
    device: String,
    token: String,
    data: Option<PathBuf>,
    sandbox: Option<String>,
    health_window: Option<String>,
    local_listen: Option<String>,
    local_mqtt: Option<String>,
    local_mqtt_password: Option<String>,
    poll_wait: Option<String>,
    report_interval: Option<String>,
    mqtt: Option<String>,
    mqtt_protocol: Option<String>,
    mqtt_ca: Option<PathBuf>,
    cloud_ca: Option<PathBuf>,
    outbox_max_bytes: Option<String>,
    outbox_max_age: Option<String>,
    mqtt_max_packet_size: Option<String>,
    secrets_dir: Option<PathBuf>,
    trusted_keys: Option<Vec<String>>,
}

/// The agent's settings.
#[derive(Debug, Clone)]
pub struct AgentConfig {
    /// Control plane URL.
    pub cloud: String,
    /// A private CA (PEM) trusted for an https control plane, besides the system's roots; also
    /// for an mqtts broker when `mqttCa` is not set.
    pub cloud_ca: Option<Vec<u8>>,
    /// Device name.
    pub device: String,
    /// Device token.
    pub token: String,
    /// Data folder.
    pub data: PathBuf,
    /// `process`, `container` or `auto`.
    pub sandbox: edgefn_runtime::SandboxKind,
    /// How long a new release must stay healthy before it is kept.
    pub health_window: Duration,
    /// Loopback address of the local message endpoint.
    pub local_listen: SocketAddr,
    /// Whether `local_listen` was configured. The rule of both local listeners: one that
    /// cannot listen on a configured address stops the agent; on its default address (which
    /// may belong to another agent or a broker on this device) it is only a warning, and the
    /// agent runs without it.
    pub local_listen_configured: bool,
    /// Where the local MQTT listener listens (`None`: no listener).
    pub local_mqtt: Option<SocketAddr>,
    /// Whether `local_mqtt` was configured (the same rule as `local_listen_configured`).
    pub local_mqtt_configured: bool,
    /// The password local MQTT clients must give, if any.
    pub local_mqtt_password: Option<String>,
    /// Where the functions' secrets are kept: a folder on a memory file system (tmpfs or
    /// ramfs), never the data folder. Default: a private folder under `/dev/shm`, else `/run`.
    pub secrets_dir: Option<PathBuf>,
    /// Long-poll wait per request.
    pub poll_wait: Duration,
    /// How often the agent reports its status when nothing changes.
    pub report_interval: Duration,
    /// The cloud's MQTT broker (`mqtt://host:port`); without it, messages for the cloud wait
    /// in the outbox.
    pub mqtt: Option<crate::uplink::BrokerAddr>,
    /// MQTT version to speak.
    pub mqtt_protocol: crate::uplink::Protocol,
    /// Bounds of the outbox.
    pub outbox: crate::outbox::OutboxLimits,
    /// The largest MQTT packet the cloud's broker is known to take, in bytes
    /// (`mqttMaxPacketSize`, default [`crate::uplink::DEFAULT_MAX_PACKET`]); a smaller Maximum
    /// Packet Size announced by the broker (MQTT 5) wins.
    pub mqtt_max_packet: u32,
    /// Testing hook: SIGKILL the agent at this point of an update. The binary sets it from
    /// `EDGEFN_AGENT_CRASH_AT` (see [`crate::fault`]).
    pub crash_at: Option<crate::fault::CrashPoint>,
    /// The public keys whose signatures it trusts (`trustedKeys`, `ed25519:BASE64` each, as
    /// `edgefn keygen` prints them; several for rotation). When set, the agent runs only
    /// desired states signed by one of them for this device and a revision no older than the
    /// newest it accepted; empty: every state is accepted.
    pub trusted_keys: Vec<edgefn_schema::signing::PublicKey>,
}

/// The YAML reader's diagnostic (syntax, alias expansion, nesting, not UTF-8) as an error.
fn from_diagnostic(d: &edgefn_schema::Diagnostic) -> ConfigError {
    let loc = d.location();
    ConfigError::Invalid {
        file: loc.file,
        line: loc.line,
        column: loc.column,
        message: d.message.clone(),
        help: d.help.clone().unwrap_or_default(),
    }
}

fn invalid(source: &Source, offset: usize, message: String, help: &str) -> ConfigError {
    let (line, column) = source.line_col(offset);
    ConfigError::Invalid {
        file: source.name().to_owned(),
        line,
        column,
        message,
        help: help.to_owned(),
    }
}

fn duration(
    text: Option<&str>,
    default: Duration,
    what: &str,
    source: &Source,
) -> Result<Duration, ConfigError> {
    match text {
        None => Ok(default),
        Some(t) => t
            .parse::<edgefn_schema::Duration>()
            .map(|d| d.to_std())
            .map_err(|e| {
                invalid(
                    source,
                    source.text().find(t).unwrap_or(0),
                    format!("{what}: {e}"),
                    e.help,
                )
            }),
    }
}

impl AgentConfig {
    /// Reads and checks the file at `path`.
    pub fn load(path: &Path) -> Result<AgentConfig, ConfigError> {
        let bytes = std::fs::read(path).map_err(|source| ConfigError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        let source = Source::from_utf8(path.display().to_string(), bytes)
            .map_err(|d| from_diagnostic(&d))?;
        Self::parse(&source)
    }

    /// Checks a configuration text.
    pub fn parse(source: &Source) -> Result<AgentConfig, ConfigError> {
        let (root, diags) = yaml::parse(source);
        if let Some(d) = diags.iter().next() {
            return Err(from_diagnostic(d));
        }
        let root = root.ok_or_else(|| {
            invalid(
                source,
                0,
                "empty configuration".into(),
                "write `cloud`, `device` and `token`, as `edgefn device add` does",
            )
        })?;
        let value = edgefn_schema::testcase::to_json(&root);
        let raw: Raw = serde_json::from_value(value).map_err(|e| {
            // Point at the key serde names, when it names one.
            let msg = e.to_string();
            let key = msg.split('`').nth(1).unwrap_or("");
            let at = if key.is_empty() { 0 } else { source.text().find(&format!("{key}:")).unwrap_or(0) };
            invalid(source, at, msg, "the keys are cloud, device, token, data, sandbox, healthWindow, localListen, localMqtt, localMqttPassword, pollWait, reportInterval, mqtt, mqttProtocol, mqttCa, cloudCa, outboxMaxBytes, outboxMaxAge, mqttMaxPacketSize, secretsDir, trustedKeys")
        })?;
        let at = |key: &str| source.text().find(&format!("{key}:")).unwrap_or(0);
        if !raw.cloud.starts_with("http://") && !raw.cloud.starts_with("https://") {
            return Err(invalid(
                source,
                at("cloud"),
                format!("`{}` is not an http:// or https:// URL", raw.cloud),
                "write the control plane's URL, e.g. https://edgefn.example.com",
            ));
        }
        if !edgefn_schema::manifest::valid_name(&raw.device) {
            return Err(invalid(
                source,
                at("device"),
                format!("`{}` is not a valid device name", raw.device),
                "use the name the device was registered with",
            ));
        }
        if raw.token.trim().is_empty() {
            return Err(invalid(
                source,
                at("token"),
                "the token is empty".into(),
                "use the file `edgefn device add` wrote",
            ));
        }
        let sandbox = match raw.sandbox.as_deref() {
            None => edgefn_runtime::SandboxKind::Auto,
            Some(s) => s.parse().map_err(|e: String| {
                invalid(source, at("sandbox"), e, "container, process or auto")
            })?,
        };
        let local_listen: SocketAddr = raw
            .local_listen
            .as_deref()
            .unwrap_or("127.0.0.1:7071")
            .parse()
            .map_err(|e| {
                invalid(
                    source,
                    at("localListen"),
                    format!("localListen: {e}"),
                    "an address such as 127.0.0.1:7071",
                )
            })?;
        let local_mqtt_password = raw.local_mqtt_password.filter(|p| !p.is_empty());
        let local_mqtt = parse_local_mqtt(
            raw.local_mqtt.as_deref().unwrap_or(DEFAULT_LOCAL_MQTT),
            local_mqtt_password.is_some(),
        )
        .map_err(|(message, help)| invalid(source, at("localMqtt"), message, help))?;
        // Default: the broker beside the control plane, on the standard port.
        let cloud_host = raw
            .cloud
            .split("://")
            .nth(1)
            .unwrap_or("")
            .split(['/', ':'])
            .next()
            .unwrap_or("")
            .to_owned();
        let mqtt = match raw.mqtt.as_deref() {
            Some("none") => None,
            None if cloud_host.is_empty() => None,
            None => Some(crate::uplink::BrokerAddr {
                host: cloud_host,
                port: 1883,
                tls: None,
            }),
            Some(url) => Some(crate::uplink::BrokerAddr::parse(url).map_err(|e| {
                invalid(
                    source,
                    at("mqtt"),
                    e.to_string(),
                    "write the broker as mqtt://host:1883, or `none`",
                )
            })?),
        };
        let mut mqtt = mqtt;
        let cloud_ca = match &raw.cloud_ca {
            None => None,
            Some(path) => {
                let pem = std::fs::read(path).map_err(|e| {
                    invalid(
                        source,
                        at("cloudCa"),
                        format!("cannot read {}: {e}", path.display()),
                        "the CA certificate (PEM) that signed the control plane's certificate",
                    )
                })?;
                if !String::from_utf8_lossy(&pem).contains("-----BEGIN CERTIFICATE-----") {
                    return Err(invalid(
                        source,
                        at("cloudCa"),
                        format!("{} holds no PEM certificate", path.display()),
                        "the CA certificate (PEM: -----BEGIN CERTIFICATE-----)",
                    ));
                }
                Some(pem)
            }
        };
        if let (None, Some(ca), Some(b)) = (&raw.mqtt_ca, &cloud_ca, mqtt.as_mut()) {
            if b.tls.is_some() {
                b.tls = Some(Some(ca.clone()));
            }
        }
        if let Some(ca_path) = &raw.mqtt_ca {
            let ca = std::fs::read(ca_path).map_err(|e| {
                invalid(
                    source,
                    at("mqttCa"),
                    format!("cannot read {}: {e}", ca_path.display()),
                    "the CA certificate (PEM) that signed the broker's certificate",
                )
            })?;
            match mqtt.as_mut() {
                Some(b) if b.tls.is_some() => b.tls = Some(Some(ca)),
                _ => {
                    return Err(invalid(
                        source,
                        at("mqttCa"),
                        "mqttCa is set but the broker is not mqtts://".into(),
                        "write `mqtt: mqtts://HOST:8883`, or remove mqttCa",
                    ));
                }
            }
        }
        let mqtt_protocol = match raw.mqtt_protocol.as_deref() {
            None | Some("auto") => crate::uplink::Protocol::Auto,
            Some("4" | "3.1.1") => crate::uplink::Protocol::V4,
            Some("5") => crate::uplink::Protocol::V5,
            Some(other) => {
                return Err(invalid(
                    source,
                    at("mqttProtocol"),
                    format!("`{other}` is not an MQTT version"),
                    "auto, 5 or 3.1.1",
                ));
            }
        };
        let mut outbox = crate::outbox::OutboxLimits::default();
        if let Some(b) = raw.outbox_max_bytes.as_deref() {
            outbox.max_bytes = b
                .parse::<edgefn_schema::Memory>()
                .map_err(|e| {
                    invalid(
                        source,
                        at("outboxMaxBytes"),
                        format!("outboxMaxBytes: {e}"),
                        e.help,
                    )
                })?
                .bytes();
        }
        let mqtt_max_packet = match raw.mqtt_max_packet_size.as_deref() {
            None => crate::uplink::DEFAULT_MAX_PACKET,
            Some(text) => {
                let bytes = text
                    .parse::<edgefn_schema::Memory>()
                    .map_err(|e| {
                        invalid(
                            source,
                            at("mqttMaxPacketSize"),
                            format!("mqttMaxPacketSize: {e}"),
                            e.help,
                        )
                    })?
                    .bytes();
                u32::try_from(bytes)
                    .ok()
                    .filter(|b| *b >= 1024)
                    .ok_or_else(|| {
                        invalid(
                            source,
                            at("mqttMaxPacketSize"),
                            format!("mqttMaxPacketSize: {text} is not between 1Ki and 4Gi bytes"),
                            "the largest MQTT packet the cloud's broker takes, e.g. 256Ki or 1Mi",
                        )
                    })?
            }
        };
        outbox.max_age = duration(
            raw.outbox_max_age.as_deref(),
            outbox.max_age,
            "outboxMaxAge",
            source,
        )?;
        let mut trusted_keys = Vec::new();
        for (i, text) in raw.trusted_keys.iter().flatten().enumerate() {
            let key = text.parse().map_err(|e: edgefn_schema::signing::PublicKeyError| {
                let offset = source
                    .text()
                    .find(text.as_str())
                    .unwrap_or_else(|| at("trustedKeys"));
                invalid(
                    source,
                    offset,
                    format!("trustedKeys[{i}]: {e}"),
                    "paste the line `edgefn keygen` printed, e.g. `trustedKeys: [\"ed25519:...\"]`",
                )
            })?;
            trusted_keys.push(key);
        }
        Ok(AgentConfig {
            trusted_keys,
            secrets_dir: raw.secrets_dir,
            cloud_ca,
            mqtt,
            mqtt_protocol,
            outbox,
            mqtt_max_packet,
            crash_at: None,
            cloud: raw.cloud.trim_end_matches('/').to_owned(),
            device: raw.device,
            token: raw.token.trim().to_owned(),
            data: raw
                .data
                .unwrap_or_else(|| PathBuf::from("/var/lib/edgefn-agent")),
            sandbox,
            health_window: duration(
                raw.health_window.as_deref(),
                Duration::from_secs(10),
                "healthWindow",
                source,
            )?,
            local_listen,
            local_listen_configured: raw.local_listen.is_some(),
            local_mqtt,
            local_mqtt_configured: raw.local_mqtt.is_some(),
            local_mqtt_password,
            poll_wait: duration(
                raw.poll_wait.as_deref(),
                Duration::from_secs(60),
                "pollWait",
                source,
            )?,
            report_interval: duration(
                raw.report_interval.as_deref(),
                Duration::from_secs(30),
                "reportInterval",
                source,
            )?,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<AgentConfig, ConfigError> {
        AgentConfig::parse(&Source::new("agent.yaml", text))
    }

    #[test]
    fn trusted_keys_are_read_and_a_malformed_one_is_located() {
        let base = "cloud: http://c\ndevice: gw-01\ntoken: t\n";
        let key = "ed25519:AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=";
        let c = parse(&format!("{base}trustedKeys:\n  - {key}\n")).unwrap();
        assert_eq!(c.trusted_keys.len(), 1);
        assert_eq!(c.trusted_keys[0].to_string(), key);
        assert!(parse(base).unwrap().trusted_keys.is_empty());
        let e = parse(&format!(
            "{base}trustedKeys:\n  - {key}\n  - ed25519:nope\n"
        ))
        .unwrap_err()
        .to_string();
        assert!(e.starts_with("agent.yaml:6:5: trustedKeys[1]:"), "{e}");
        assert!(e.contains("ed25519:nope") && e.contains("help:"), "{e}");
    }

    /// Writes `bytes` as a configuration file and loads it.
    fn load_bytes(bytes: &[u8]) -> Result<AgentConfig, ConfigError> {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("agent.yaml");
        std::fs::write(&path, bytes).expect("write");
        AgentConfig::load(&path)
    }

    #[test]
    fn an_alias_bomb_is_refused_at_its_alias() {
        let bomb = include_str!("../../schema/tests/fixtures/alias-bomb.yaml");
        let e = load_bytes(bomb.as_bytes()).unwrap_err();
        let ConfigError::Invalid {
            line, ref message, ..
        } = e
        else {
            panic!("{e}")
        };
        assert!(message.contains("expands the document"), "{e}");
        assert!(bomb.lines().nth(line - 1).unwrap().contains("*"), "{e}");
    }

    #[test]
    fn deep_nesting_is_refused() {
        for deep in [
            format!("cloud: {}{}\n", "[".repeat(50_000), "]".repeat(50_000)),
            format!("cloud:\n  {}x\n", "- ".repeat(100_000)),
        ] {
            let e = load_bytes(deep.as_bytes()).unwrap_err().to_string();
            assert!(e.contains("nested more than"), "{e}");
        }
    }

    #[test]
    fn a_file_that_is_not_utf8_is_refused_with_where() {
        let e = load_bytes(b"cloud: http://c\ndevice: gw-\xE9\ntoken: t\n")
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("agent.yaml:2:12:") && e.contains("not UTF-8"),
            "{e}"
        );
    }

    #[test]
    fn a_full_config() {
        let c = parse(
            "cloud: http://c:7070/\ndevice: gw-01\ntoken: t\nhealthWindow: 2s\nsandbox: process\n",
        )
        .unwrap();
        assert_eq!(c.cloud, "http://c:7070");
        assert_eq!(c.health_window, Duration::from_secs(2));
        assert_eq!(c.sandbox, edgefn_runtime::SandboxKind::Process);
    }

    #[test]
    fn errors_say_where() {
        let e = parse("cloud: http://c\ndevice: gw-01\ntoken: t\nhealtWindow: 2s\n")
            .unwrap_err()
            .to_string();
        assert!(e.starts_with("agent.yaml:4:1:"), "{e}");
        let e = parse("cloud: ftp://c\ndevice: gw-01\ntoken: t\n")
            .unwrap_err()
            .to_string();
        assert!(
            e.starts_with("agent.yaml:1:1:") && e.contains("not an http"),
            "{e}"
        );
        let e = parse("cloud: http://c\ndevice: gw-01\n")
            .unwrap_err()
            .to_string();
        assert!(e.contains("token"), "{e}");
        let e = parse("cloud: [http://c\n").unwrap_err().to_string();
        assert!(e.contains("invalid YAML"), "{e}");
        let e = parse("cloud: http://c\ndevice: gw-01\ntoken: t\nlocalMqtt: 0.0.0.0:1883\n")
            .unwrap_err()
            .to_string();
        assert!(
            e.starts_with("agent.yaml:4:1:") && e.contains("without a password"),
            "{e}"
        );
        let e = parse("cloud: http://c\ndevice: gw-01\ntoken: t\nlocalMqtt: port 1883\n")
            .unwrap_err()
            .to_string();
        assert!(e.contains("localMqtt"), "{e}");
        let c = parse(
            "cloud: http://c\ndevice: gw-01\ntoken: t\nlocalMqtt: 0.0.0.0:1884\nlocalMqttPassword: pw\n",
        )
        .unwrap();
        assert_eq!(c.local_mqtt, Some("0.0.0.0:1884".parse().unwrap()));
        let e = parse("cloud: https://c\ndevice: gw-01\ntoken: t\ncloudCa: /nonexistent/ca.pem\n")
            .unwrap_err()
            .to_string();
        assert!(
            e.starts_with("agent.yaml:4:1:") && e.contains("/nonexistent/ca.pem"),
            "{e}"
        );
        let c = parse("cloud: http://c\ndevice: gw-01\ntoken: t\nlocalMqtt: none\n").unwrap();
        assert!(c.local_mqtt.is_none());
        let e = parse("cloud: http://c\ndevice: gw-01\ntoken: t\nhealthWindow: soon\n")
            .unwrap_err()
            .to_string();
        assert!(e.contains("agent.yaml:4:15"), "{e}");
    }
}

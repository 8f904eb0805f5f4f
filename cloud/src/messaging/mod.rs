//! Messages between the cloud and its devices over MQTT: the topic namespace and its access
//! rules (enforced by the embedded broker, the `edgefn-broker` crate), the files that confine
//! devices on Mosquitto ([`mosquitto`]), the embedded broker's store ([`persist`]), the cloud's
//! own client of whichever broker is used ([`hub`]), and what ties them to the device registry
//! ([`Messaging`], [`RegistryAuth`]): credentials checked against it, files for Mosquitto
//! rewritten when it changes. The HTTP endpoints are in `crate::api::messages`.
//!
//! Cloud-side topics, per device `<d>`:
//! - `edgefn/<d>/up/<topic>`: what the device sends up (device: write; cloud: read);
//! - `edgefn/<d>/logs/<binding>`: its functions' log lines (device: write; cloud: read);
//! - `edgefn/<d>/down/<topic>`: what the cloud sends it (device: read; cloud: write);
//! - `edgefn/<d>/invoke/<id>`: requests to run a function now (device: read; cloud: write);
//! - `edgefn/<d>/reply/<id>`: the device's answers to them (device: write; cloud: read).
//!
//! MQTT credentials: user name = device name, password = the device's token. The cloud itself
//! connects as [`CLOUD_USER`] with a secret kept in its data folder, with full access.

pub(crate) mod hub;
pub(crate) mod mosquitto;
pub(crate) mod persist;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, Weak};

use edgefn_broker::{Authenticator, Broker};
use edgefn_schema::wire::{self, Kind};

use crate::auth;
use crate::registry::Registry;
use hub::Hub;
use mosquitto::MosquittoError;

/// The MQTT user name of the cloud itself; no device may be registered under it.
pub(crate) const CLOUD_USER: &str = "edgefn-cloud";
/// The file, in the data folder, holding the cloud's own MQTT password.
pub(crate) const CLOUD_SECRET_FILE: &str = "mqtt-cloud.secret";
/// Largest payload `POST /v1/publish` sends.
pub(crate) const MAX_PUBLISH_BYTES: usize = 256 << 10;
/// Largest MQTT packet the embedded broker accepts (a payload of up to 1 MiB plus its topic).
pub(crate) const MAX_PACKET_BYTES: usize = (1 << 20) + (64 << 10);

/// Where the cloud's broker is.
#[derive(Debug)]
pub enum MqttMode {
    /// No broker: the message endpoints answer 503.
    Disabled,
    /// The embedded broker, on this bound listener.
    Embedded(std::net::TcpListener),
    /// An external broker.
    External {
        /// `host:port`.
        host: String,
        /// Port.
        port: u16,
        /// User name to connect with (default `edgefn-cloud`).
        username: Option<String>,
        /// Password (default: the secret in the data folder).
        password: Option<String>,
        /// For Mosquitto: write `passwd` and `acl` into this folder.
        mosquitto: Option<MosquittoFiles>,
    },
}

/// Where to write Mosquitto's files and how to make it reload them.
#[derive(Debug, Clone)]
pub struct MosquittoFiles {
    /// Folder of `passwd` and `acl`.
    pub dir: PathBuf,
    /// A file holding Mosquitto's pid, sent SIGHUP after each change.
    pub pid_file: Option<PathBuf>,
}

/// Why `--mqtt-url` cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum BrokerUrlError {
    /// Not a broker URL.
    #[error(transparent)]
    Url(#[from] edgefn_schema::MqttUrlError),
    /// `mqtts://`: the cloud's own client has no TLS yet.
    #[error(
        "`{0}`: TLS to the broker (mqtts://) is not supported by edgefn-cloud yet; use mqtt:// on a trusted network or a local TLS-terminating proxy"
    )]
    Tls(String),
}

/// The external broker at `url`: `mqtt://[user[:password]@]host[:port]` (port 1883 by
/// default; the schema's one parser, `edgefn_schema::MqttUrl`). `mqtts://` is refused: the
/// cloud's own client has no TLS yet.
pub fn parse_url(url: &str) -> Result<MqttMode, BrokerUrlError> {
    let parsed = edgefn_schema::MqttUrl::parse(url)?;
    if parsed.tls {
        return Err(BrokerUrlError::Tls(url.to_owned()));
    }
    Ok(MqttMode::External {
        host: parsed.host,
        port: parsed.port,
        username: parsed.username,
        password: parsed.password,
        mosquitto: None,
    })
}

/// The message machinery of a running control plane.
#[derive(Debug)]
pub(crate) struct Messaging {
    /// The cloud's client of its broker.
    pub(crate) hub: Arc<Hub>,
    /// The embedded broker, when it is used.
    pub(crate) broker: Option<Arc<Broker<RegistryAuth>>>,
    /// Mosquitto's files, when an external Mosquitto is used.
    pub(crate) mosquitto: Option<MosquittoFiles>,
    /// The cloud's own entry of Mosquitto's password file.
    pub(crate) cloud_hash: String,
    /// Serialises rewrites of Mosquitto's files.
    pub(crate) writing: tokio::sync::Mutex<()>,
}

impl Messaging {
    /// Rewrites Mosquitto's password and ACL files from the registry and has it reload them
    /// (a failed reload is logged: Mosquitto may not be running yet, and reads them at start).
    pub(crate) async fn write_mosquitto(&self, registry: &Registry) -> Result<(), MosquittoError> {
        let Some(files) = self.mosquitto.clone() else {
            return Ok(());
        };
        let _guard = self.writing.lock().await;
        let mut users = registry.mqtt_users();
        users.push((CLOUD_USER.to_owned(), self.cloud_hash.clone()));
        tokio::task::spawn_blocking(move || {
            mosquitto::write(&files.dir, &users)?;
            if let Some(pid_file) = &files.pid_file {
                match mosquitto::reload(pid_file) {
                    Ok(()) => tracing::info!(
                        "Mosquitto's password and ACL files rewritten; reload signalled"
                    ),
                    Err(e) => {
                        tracing::warn!("Mosquitto's files rewritten but it was not reloaded: {e}")
                    }
                }
            }
            Ok(())
        })
        .await?
    }
}

/// Credentials of the embedded broker: the cloud's secret, or a device's name and token.
#[derive(Debug)]
pub(crate) struct RegistryAuth {
    /// The registry (weak: the broker must not keep the state alive).
    pub(crate) registry: Weak<Registry>,
    /// sha256 of the cloud's own MQTT secret.
    pub(crate) cloud: [u8; 32],
}

impl Authenticator for RegistryAuth {
    type Client = Identity;
    fn authenticate(&self, username: Option<&str>, password: Option<&str>) -> Option<Identity> {
        let (username, password) = (username?, password?);
        let presented = auth::hash(password);
        if username == CLOUD_USER {
            return edgefn_os::secret::ct_eq(&self.cloud, &presented).then_some(Identity::Cloud);
        }
        let registry = self.registry.upgrade()?;
        registry
            .device_token_matches(username, &presented)
            .then(|| Identity::Device(username.to_owned()))
    }

    /// A stored session is kept while its device is registered.
    fn restore(&self, name: &str) -> Option<Identity> {
        if name == CLOUD_USER {
            return Some(Identity::Cloud);
        }
        let registry = self.registry.upgrade()?;
        registry
            .is_registered(name)
            .then(|| Identity::Device(name.to_owned()))
    }
}

/// Who is connected to the broker.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub(crate) enum Identity {
    /// The control plane itself: full access.
    Cloud,
    /// A device, by name.
    Device(String),
}

impl Identity {
    /// The MQTT user name.
    pub(crate) fn username(&self) -> &str {
        match self {
            Identity::Cloud => CLOUD_USER,
            Identity::Device(d) => d,
        }
    }

    /// Whether this client may publish to `topic` (a concrete topic).
    pub(crate) fn may_publish(&self, topic: &str) -> bool {
        match self {
            Identity::Cloud => !topic.starts_with('$'),
            Identity::Device(d) => [Kind::Up, Kind::Logs, Kind::Reply]
                .into_iter()
                .any(|k| wire::is_under(topic, d, k)),
        }
    }

    /// Whether this client may subscribe to `filter`: a device only to filters whose every
    /// match lies under `edgefn/<its name>/down/` or `edgefn/<its name>/invoke/`.
    pub(crate) fn may_subscribe(&self, filter: &str) -> bool {
        match self {
            Identity::Cloud => !filter.starts_with('$'),
            Identity::Device(d) => {
                wire::is_under(filter, d, Kind::Down) || wire::is_under(filter, d, Kind::Invoke)
            }
        }
    }

    /// Whether a message on `topic` may be delivered to this client (checked again at delivery,
    /// whatever it subscribed to).
    pub(crate) fn may_receive(&self, topic: &str) -> bool {
        match self {
            Identity::Cloud => true,
            Identity::Device(d) => {
                wire::is_under(topic, d, Kind::Down) || wire::is_under(topic, d, Kind::Invoke)
            }
        }
    }
}

impl edgefn_broker::Client for Identity {
    fn name(&self) -> &str {
        self.username()
    }
    /// A device's client id is its name, or `<name>.<suffix>`; the cloud's is free.
    fn may_use_client_id(&self, id: &str) -> bool {
        match self {
            Identity::Cloud => true,
            Identity::Device(d) => {
                id == d
                    || id
                        .strip_prefix(d.as_str())
                        .is_some_and(|r| r.starts_with('.'))
            }
        }
    }
    fn may_publish(&self, topic: &str) -> bool {
        Identity::may_publish(self, topic)
    }
    fn may_subscribe(&self, filter: &str) -> bool {
        Identity::may_subscribe(self, filter)
    }
    fn may_receive(&self, topic: &str) -> bool {
        Identity::may_receive(self, topic)
    }
}

pub(crate) use edgefn_broker::stopped;

/// The address a client on this machine reaches a listener bound to `addr` at.
pub(crate) fn local_connect_addr(addr: SocketAddr) -> SocketAddr {
    let mut a = addr;
    if a.ip().is_unspecified() {
        a.set_ip(match a {
            SocketAddr::V4(_) => std::net::Ipv4Addr::LOCALHOST.into(),
            SocketAddr::V6(_) => std::net::Ipv6Addr::LOCALHOST.into(),
        });
    }
    a
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn devices_are_confined_to_their_namespace() {
        let d = Identity::Device("gw-01".into());
        assert!(d.may_publish("edgefn/gw-01/up/alerts/line1"));
        assert!(d.may_publish("edgefn/gw-01/logs/temp-filter"));
        assert!(!d.may_publish("edgefn/gw-01/up"));
        assert!(!d.may_publish("edgefn/gw-01/down/commands"));
        assert!(!d.may_publish("edgefn/gw-02/up/alerts"));
        assert!(!d.may_publish("edgefn/gw-01x/up/alerts"));
        assert!(!d.may_publish("other/topic"));
        assert!(d.may_subscribe("edgefn/gw-01/down/#"));
        assert!(d.may_subscribe("edgefn/gw-01/down/commands/+"));
        assert!(!d.may_subscribe("edgefn/gw-01/#"));
        assert!(!d.may_subscribe("edgefn/+/down/#"));
        assert!(!d.may_subscribe("edgefn/#"));
        assert!(!d.may_subscribe("#"));
        assert!(!d.may_subscribe("edgefn/gw-02/down/#"));
        assert!(!d.may_subscribe("edgefn/gw-01/+/x"));
        assert!(!d.may_subscribe("edgefn/gw-01/up/#"));
        assert!(d.may_receive("edgefn/gw-01/down/a"));
        assert!(!d.may_receive("edgefn/gw-02/down/a"));
        // Invocations: a device reads only its own requests and answers only for itself.
        assert!(d.may_subscribe("edgefn/gw-01/invoke/+"));
        assert!(!d.may_subscribe("edgefn/gw-02/invoke/+"));
        assert!(!d.may_subscribe("edgefn/+/invoke/+"));
        assert!(d.may_receive("edgefn/gw-01/invoke/abc"));
        assert!(!d.may_receive("edgefn/gw-02/invoke/abc"));
        assert!(d.may_publish("edgefn/gw-01/reply/abc"));
        assert!(!d.may_publish("edgefn/gw-02/reply/abc"));
        assert!(!d.may_publish("edgefn/gw-01/invoke/abc"));
        assert!(!d.may_subscribe("edgefn/gw-01/reply/+"));
        assert!(!d.may_receive("edgefn/gw-01/reply/abc"));
        assert!(Identity::Cloud.may_subscribe("edgefn/+/up/#"));
        assert!(!Identity::Cloud.may_subscribe("$SYS/#"));
    }

    #[test]
    fn urls_parse() {
        let MqttMode::External {
            host,
            port,
            username,
            password,
            ..
        } = parse_url("mqtt://cloud:s3cret@broker.lan:1884").unwrap()
        else {
            panic!()
        };
        assert_eq!(
            (
                host.as_str(),
                port,
                username.as_deref(),
                password.as_deref()
            ),
            ("broker.lan", 1884, Some("cloud"), Some("s3cret"))
        );
        let MqttMode::External { host, port, .. } = parse_url("mqtt://127.0.0.1").unwrap() else {
            panic!()
        };
        assert_eq!((host.as_str(), port), ("127.0.0.1", 1883));
        assert!(parse_url("mqtts://x").is_err());
        assert!(parse_url("http://x").is_err());
    }
}

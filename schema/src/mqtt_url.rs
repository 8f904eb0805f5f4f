//! MQTT broker URLs, parsed one way everywhere (the agent's `mqtt:` key, `edgefn-cloud
//! --mqtt-url` and `--device-mqtt-url`, what `edgefn device add` writes):
//!
//! `mqtt://[user[:password]@]host[:port]` (plain TCP, port 1883 by default) or
//! `mqtts://[user[:password]@]host[:port]` (TLS, port 8883 by default). An IPv6 host is written
//! in brackets, `mqtt://[::1]:1883`. A trailing `/` is allowed; a path, query or whitespace is
//! not.

use std::fmt;

/// Port of `mqtt://` when the URL names none (IANA).
pub const MQTT_PORT: u16 = 1883;
/// Port of `mqtts://` when the URL names none (IANA).
pub const MQTTS_PORT: u16 = 8883;

/// A parsed broker URL.
#[derive(Clone, PartialEq, Eq)]
pub struct MqttUrl {
    /// `mqtts://`: TLS to the broker.
    pub tls: bool,
    /// Host name or address, without brackets (`::1`, not `[::1]`).
    pub host: String,
    /// Port.
    pub port: u16,
    /// User name, when the URL gives one.
    pub username: Option<String>,
    /// Password, when the URL gives one (never shown by `Debug` or `Display`).
    pub password: Option<String>,
}

/// Why a URL is not a broker URL. Each message names the URL and says how to write it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MqttUrlError {
    /// Not `mqtt://` or `mqtts://`.
    #[error("`{0}` is not an MQTT URL: write mqtt://HOST[:PORT] or mqtts://HOST[:PORT]")]
    Scheme(String),
    /// No host after the scheme.
    #[error("`{0}` names no host: write mqtt://HOST[:PORT]")]
    NoHost(String),
    /// A port that is not a number from 1 to 65535.
    #[error("`{url}`: `{port}` is not a port number (1 to 65535)")]
    Port {
        /// The URL.
        url: String,
        /// What stood where the port goes.
        port: String,
    },
    /// An IPv6 address without its closing `]`, or text after it other than `:PORT`.
    #[error("`{0}`: write an IPv6 address in brackets, e.g. mqtt://[::1]:1883")]
    Ipv6(String),
    /// A path, query, fragment or whitespace after the host.
    #[error("`{0}`: a broker URL has only a host and a port, e.g. mqtt://broker.lan:1883")]
    Extra(String),
}

impl MqttUrl {
    /// Parses a broker URL (see the [module](self) docs for the forms).
    pub fn parse(url: &str) -> Result<MqttUrl, MqttUrlError> {
        let (rest, tls) = if let Some(r) = url.strip_prefix("mqtt://") {
            (r, false)
        } else if let Some(r) = url.strip_prefix("mqtts://") {
            (r, true)
        } else {
            return Err(MqttUrlError::Scheme(url.to_owned()));
        };
        let rest = rest.strip_suffix('/').unwrap_or(rest);
        let (userinfo, hostport) = match rest.rsplit_once('@') {
            Some((u, h)) => (Some(u), h),
            None => (None, rest),
        };
        if hostport.contains(['/', '?', '#']) || hostport.contains(char::is_whitespace) {
            return Err(MqttUrlError::Extra(url.to_owned()));
        }
        let (username, password) = match userinfo {
            Some(u) => match u.split_once(':') {
                Some((n, p)) => (Some(n.to_owned()), Some(p.to_owned())),
                None => (Some(u.to_owned()), None),
            },
            None => (None, None),
        };
        let (host, port) = if let Some(v6) = hostport.strip_prefix('[') {
            let (host, after) = v6
                .split_once(']')
                .ok_or_else(|| MqttUrlError::Ipv6(url.to_owned()))?;
            match after {
                "" => (host, None),
                p => (
                    host,
                    Some(
                        p.strip_prefix(':')
                            .ok_or_else(|| MqttUrlError::Ipv6(url.to_owned()))?,
                    ),
                ),
            }
        } else {
            match hostport.split_once(':') {
                Some((h, p)) if !p.contains(':') => (h, Some(p)),
                // More than one `:`: an IPv6 address without brackets.
                Some(_) => return Err(MqttUrlError::Ipv6(url.to_owned())),
                None => (hostport, None),
            }
        };
        if host.is_empty() {
            return Err(MqttUrlError::NoHost(url.to_owned()));
        }
        let port = match port {
            None => {
                if tls {
                    MQTTS_PORT
                } else {
                    MQTT_PORT
                }
            }
            Some(p) => {
                p.parse::<u16>()
                    .ok()
                    .filter(|p| *p != 0)
                    .ok_or_else(|| MqttUrlError::Port {
                        url: url.to_owned(),
                        port: p.to_owned(),
                    })?
            }
        };
        Ok(MqttUrl {
            tls,
            host: host.to_owned(),
            port,
            username,
            password,
        })
    }

    /// `host:port`, with an IPv6 host in brackets (`[::1]:1883`): what a socket connects to.
    pub fn host_port(&self) -> String {
        if self.host.contains(':') {
            format!("[{}]:{}", self.host, self.port)
        } else {
            format!("{}:{}", self.host, self.port)
        }
    }

    /// `mqtt` or `mqtts`.
    pub fn scheme(&self) -> &'static str {
        if self.tls { "mqtts" } else { "mqtt" }
    }
}

impl std::str::FromStr for MqttUrl {
    type Err = MqttUrlError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        MqttUrl::parse(s)
    }
}

/// `mqtt://[user@]host:port`: the password is left out.
impl fmt::Display for MqttUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}://", self.scheme())?;
        if let Some(u) = &self.username {
            write!(f, "{u}@")?;
        }
        f.write_str(&self.host_port())
    }
}

impl fmt::Debug for MqttUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MqttUrl")
            .field("tls", &self.tls)
            .field("host", &self.host)
            .field("port", &self.port)
            .field("username", &self.username)
            .field("password", &self.password.as_ref().map(|_| "…"))
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(url: &str) -> (bool, String, u16, Option<String>, Option<String>) {
        let u = MqttUrl::parse(url).unwrap_or_else(|e| panic!("{url}: {e}"));
        (u.tls, u.host, u.port, u.username, u.password)
    }

    #[test]
    fn plain_and_tls_with_default_ports() {
        assert_eq!(
            p("mqtt://broker.lan"),
            (false, "broker.lan".into(), 1883, None, None)
        );
        assert_eq!(
            p("mqtt://broker.lan/"),
            (false, "broker.lan".into(), 1883, None, None)
        );
        assert_eq!(
            p("mqtt://127.0.0.1:1884"),
            (false, "127.0.0.1".into(), 1884, None, None)
        );
        assert_eq!(p("mqtts://cloud"), (true, "cloud".into(), 8883, None, None));
        assert_eq!(
            p("mqtts://cloud:9883"),
            (true, "cloud".into(), 9883, None, None)
        );
    }

    #[test]
    fn ipv6_in_brackets() {
        assert_eq!(
            p("mqtt://[::1]:1883"),
            (false, "::1".into(), 1883, None, None)
        );
        assert_eq!(p("mqtt://[::1]"), (false, "::1".into(), 1883, None, None));
        assert_eq!(
            p("mqtts://[fe80::1]"),
            (true, "fe80::1".into(), 8883, None, None)
        );
        let u = MqttUrl::parse("mqtts://[2001:db8::2]:9000").unwrap();
        assert_eq!(u.host_port(), "[2001:db8::2]:9000");
        assert_eq!(u.to_string(), "mqtts://[2001:db8::2]:9000");
        for bad in [
            "mqtt://[::1",
            "mqtt://[::1]x",
            "mqtt://::1",
            "mqtt://[::1]:",
        ] {
            assert!(MqttUrl::parse(bad).is_err(), "{bad}");
        }
        assert!(matches!(
            MqttUrl::parse("mqtt://::1:1883"),
            Err(MqttUrlError::Ipv6(_))
        ));
    }

    #[test]
    fn credentials() {
        assert_eq!(
            p("mqtt://cloud:s3cret@broker.lan:1884"),
            (
                false,
                "broker.lan".into(),
                1884,
                Some("cloud".into()),
                Some("s3cret".into())
            )
        );
        let u = MqttUrl::parse("mqtt://cloud:s3cret@[::1]").unwrap();
        assert_eq!(
            (u.host.as_str(), u.username.as_deref()),
            ("::1", Some("cloud"))
        );
        assert!(!u.to_string().contains("s3cret"));
        assert!(!format!("{u:?}").contains("s3cret"));
    }

    #[test]
    fn clear_errors() {
        let e = MqttUrl::parse("http://x").unwrap_err();
        assert!(matches!(e, MqttUrlError::Scheme(_)));
        assert!(e.to_string().contains("mqtt://HOST"));
        assert!(matches!(
            MqttUrl::parse("mqtt://"),
            Err(MqttUrlError::NoHost(_))
        ));
        assert!(matches!(
            MqttUrl::parse("mqtt://:1883"),
            Err(MqttUrlError::NoHost(_))
        ));
        let e = MqttUrl::parse("mqtt://x:port").unwrap_err();
        assert_eq!(
            e,
            MqttUrlError::Port {
                url: "mqtt://x:port".into(),
                port: "port".into()
            }
        );
        assert!(matches!(
            MqttUrl::parse("mqtt://x:0"),
            Err(MqttUrlError::Port { .. })
        ));
        assert!(matches!(
            MqttUrl::parse("mqtt://x:70000"),
            Err(MqttUrlError::Port { .. })
        ));
        assert!(matches!(
            MqttUrl::parse("mqtt://x/path"),
            Err(MqttUrlError::Extra(_))
        ));
        assert!(matches!(
            MqttUrl::parse("mqtt://a b"),
            Err(MqttUrlError::Extra(_))
        ));
    }
}

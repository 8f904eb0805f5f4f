//! Talking to the control plane: where it is, which token to send, and its errors turned into
//! messages that say what to do.
//!
//! The cloud's address and token come from flags, else `EDGEFN_CLOUD` / `EDGEFN_TOKEN`, else the
//! file `edgefn login` writes (`$XDG_CONFIG_HOME/edgefn/credentials.json`, mode 0600).

use std::path::PathBuf;
use std::time::Duration;

use edgefn_schema::api::{ErrorBody, ErrorCode};
use reqwest::StatusCode;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use crate::error::CliError;

/// Saved credentials.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct Credentials {
    /// Control plane URL.
    pub(crate) cloud: String,
    /// Admin token.
    pub(crate) token: String,
}

/// edgefn's folder of the user's configuration: `$XDG_CONFIG_HOME/edgefn`, else
/// `~/.config/edgefn`.
pub(crate) fn config_dir() -> Option<PathBuf> {
    let base = std::env::var_os("XDG_CONFIG_HOME")
        .filter(|v| !v.is_empty())
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".config")))?;
    Some(base.join("edgefn"))
}

/// Where `edgefn login` keeps credentials: `EDGEFN_CONFIG`, else `credentials.json` in
/// [`config_dir`].
pub(crate) fn credentials_path() -> Option<PathBuf> {
    if let Some(p) = std::env::var_os("EDGEFN_CONFIG") {
        return Some(PathBuf::from(p));
    }
    Some(config_dir()?.join("credentials.json"))
}

/// Reads saved credentials, if any.
pub(crate) fn saved() -> Option<Credentials> {
    let text = std::fs::read_to_string(credentials_path()?).ok()?;
    serde_json::from_str(&text).ok()
}

/// The session of an `edgefn dev` running for the project around the current folder.
fn dev_session() -> Option<Credentials> {
    let session = crate::session::find(&std::env::current_dir().ok()?)?;
    Some(Credentials {
        cloud: session.cloud,
        token: session.token,
    })
}

/// Saves credentials with mode 0600.
pub(crate) fn save(creds: &Credentials) -> Result<PathBuf, CliError> {
    let path = credentials_path().ok_or_else(|| CliError::InvalidArgument {
        message: "no place to save credentials: neither XDG_CONFIG_HOME nor HOME is set".into(),
        help: "set EDGEFN_CONFIG to a file path".into(),
    })?;
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        crate::project::create_private_folder(dir)?;
    }
    let text = serde_json::to_string_pretty(creds).expect("credentials serialize");
    crate::project::write_secret(&path, text.as_bytes())?;
    Ok(path)
}

/// How long a stream may stay silent before it counts as lost: the control plane sends a
/// keep-alive (a blank line) every 15 s.
const STREAM_IDLE: Duration = Duration::from_secs(45);

/// How a stream of lines ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum StreamEnd {
    /// The caller had what it wanted.
    Stopped,
    /// The control plane closed it, went away, or fell silent; why.
    Lost(String),
}

/// A connection to the control plane.
#[derive(Debug)]
pub(crate) struct Client {
    base: String,
    token: String,
    http: reqwest::Client,
    rt: tokio::runtime::Runtime,
}

impl Client {
    /// From flags, else the environment, else a running `edgefn dev` session of the project
    /// here, else saved credentials. Says on stderr which control plane it uses and why, and
    /// when a dev session is chosen over a saved login, that it did: a command that can change
    /// a real fleet never talks to the dev session (or the reverse) without saying so.
    pub(crate) fn from_args(cloud: Option<&str>, token: Option<&str>) -> Result<Self, CliError> {
        let env_cloud = std::env::var("EDGEFN_CLOUD").ok().filter(|s| !s.is_empty());
        let login = saved();
        let dev = if cloud.is_none() && env_cloud.is_none() {
            dev_session()
        } else {
            None
        };
        let (cloud, origin) = match (cloud, env_cloud, &dev, &login) {
            (Some(c), _, _, _) => (c.to_owned(), "--cloud".to_owned()),
            (None, Some(c), _, _) => (c, "EDGEFN_CLOUD".to_owned()),
            (None, None, Some(d), Some(l)) if l.cloud != d.cloud => (
                d.cloud.clone(),
                format!(
                    "the `edgefn dev` session running in this project, not the control plane `edgefn login` saved ({}); pass --cloud to choose",
                    l.cloud
                ),
            ),
            (None, None, Some(d), _) => (
                d.cloud.clone(),
                "the `edgefn dev` session running in this project".to_owned(),
            ),
            (None, None, None, Some(l)) => (l.cloud.clone(), "saved by `edgefn login`".to_owned()),
            (None, None, None, None) => {
                return Err(CliError::InvalidArgument {
                    message: "no control plane given".into(),
                    help: "pass --cloud URL, set EDGEFN_CLOUD, or run `edgefn login --cloud URL`"
                        .into(),
                });
            }
        };
        // A saved token goes only to the control plane it was saved for.
        let same = |c: &Credentials| c.cloud.trim_end_matches('/') == cloud.trim_end_matches('/');
        let saved = dev.into_iter().chain(login).find(|c| same(c));
        let token = token
            .map(str::to_owned)
            .or_else(|| std::env::var("EDGEFN_TOKEN").ok().filter(|s| !s.is_empty()))
            .or_else(|| saved.as_ref().map(|c| c.token.clone()))
            .ok_or_else(|| CliError::InvalidArgument {
                message: "no token given".into(),
                help: "pass --token, set EDGEFN_TOKEN, or run `edgefn login` (edgefn-cloud prints an admin token on first start)".into(),
            })?;
        let client = Self::new(&cloud, &token)?;
        eprintln!("control plane: {} ({origin})", client.base);
        Ok(client)
    }

    /// A client for `cloud` with `token`.
    pub(crate) fn new(cloud: &str, token: &str) -> Result<Self, CliError> {
        let base = cloud.trim_end_matches('/').to_owned();
        if !base.starts_with("http://") && !base.starts_with("https://") {
            return Err(CliError::InvalidArgument {
                message: format!("`{cloud}` is not an http:// or https:// URL"),
                help: "give the control plane's URL, e.g. http://127.0.0.1:7070".into(),
            });
        }
        // A private CA, trusted besides the system's roots.
        let ca = match std::env::var_os("EDGEFN_CA_CERT").filter(|p| !p.is_empty()) {
            Some(path) => {
                let path = PathBuf::from(path);
                let pem =
                    std::fs::read(&path).map_err(CliError::io("read EDGEFN_CA_CERT", &path))?;
                Some((path, pem))
            }
            None => None,
        };
        let http = edgefn_os::http::client(ca.as_ref().map(|(_, pem)| pem.as_slice())).map_err(
            |e| match (e, &ca) {
                (
                    e @ (edgefn_os::http::ClientError::NoCertificate
                    | edgefn_os::http::ClientError::Pem(_)),
                    Some((path, _)),
                ) => CliError::failed(
                    format!("EDGEFN_CA_CERT={}", path.display()),
                    "give the CA's certificate (-----BEGIN CERTIFICATE-----)",
                    e,
                ),
                (e, _) => CliError::failed("", "", e),
            },
        )?;
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(CliError::io(
                "start the async runtime for",
                "the HTTP client",
            ))?;
        Ok(Self {
            base,
            token: token.to_owned(),
            http,
            rt,
        })
    }

    /// The control plane's URL.
    pub(crate) fn base(&self) -> &str {
        &self.base
    }

    fn unreachable(&self, source: reqwest::Error) -> CliError {
        CliError::Unreachable {
            base: self.base.clone(),
            source,
        }
    }

    fn send(&self, req: reqwest::RequestBuilder) -> Result<(StatusCode, Vec<u8>), CliError> {
        self.rt.block_on(async {
            let resp = req
                .bearer_auth(&self.token)
                .send()
                .await
                .map_err(|e| self.unreachable(e))?;
            let status = resp.status();
            let body = resp
                .bytes()
                .await
                .map_err(|e| self.unreachable(e))?
                .to_vec();
            Ok((status, body))
        })
    }

    fn error(&self, status: StatusCode, body: &[u8]) -> CliError {
        let parsed: Option<ErrorBody> = serde_json::from_slice(body).ok();
        let (code, message, details) = match parsed {
            Some(b) => (b.error.code(), b.error.message, b.error.details),
            None => (None, format!("the control plane answered {status}"), None),
        };
        // By the API's error code; by the status when the answer has none (not the cloud's).
        let code = code.or(match status {
            StatusCode::UNAUTHORIZED => Some(ErrorCode::Unauthorized),
            StatusCode::FORBIDDEN => Some(ErrorCode::Forbidden),
            _ => None,
        });
        let help = match code {
            Some(ErrorCode::Unauthorized) => {
                "the token was refused: check EDGEFN_TOKEN or `edgefn login`".to_owned()
            }
            Some(ErrorCode::Forbidden) => "this needs an admin token".to_owned(),
            Some(ErrorCode::DeviceTimeout) => {
                "see whether the device is online with `edgefn status`".to_owned()
            }
            Some(ErrorCode::NotInvocable) => details
                .and_then(|d| d.get("names").cloned())
                .and_then(|d| serde_json::from_value::<Vec<String>>(d).ok())
                .filter(|n| !n.is_empty())
                .map(|n| format!("it runs: {}", n.join(", ")))
                .unwrap_or_else(|| {
                    "bind the function to the device in edgefn.yaml and run `edgefn apply`"
                        .to_owned()
                }),
            _ => details
                .and_then(|d| d.get("diagnostics").cloned())
                .and_then(|d| serde_json::from_value::<Vec<String>>(d).ok())
                .map(|lines| lines.join("\n"))
                .unwrap_or_default(),
        };
        CliError::Cloud {
            message: format!("{message} (HTTP {})", status.as_u16()),
            help,
        }
    }

    fn decode<T: DeserializeOwned>(&self, status: StatusCode, body: &[u8]) -> Result<T, CliError> {
        if !status.is_success() {
            return Err(self.error(status, body));
        }
        serde_json::from_slice(body).map_err(|source| CliError::BadAnswer { source })
    }

    /// GET a JSON resource.
    pub(crate) fn get<T: DeserializeOwned>(&self, path: &str) -> Result<T, CliError> {
        let (status, body) = self.send(self.http.get(format!("{}{path}", self.base)))?;
        self.decode(status, &body)
    }

    /// POST JSON, returning the status and the decoded answer.
    pub(crate) fn post<B: Serialize, T: DeserializeOwned>(
        &self,
        path: &str,
        body: &B,
    ) -> Result<(StatusCode, T), CliError> {
        let (status, bytes) =
            self.send(self.http.post(format!("{}{path}", self.base)).json(body))?;
        Ok((status, self.decode(status, &bytes)?))
    }

    /// PUT raw bytes.
    pub(crate) fn put_bytes(&self, path: &str, bytes: Vec<u8>) -> Result<StatusCode, CliError> {
        let (status, body) = self.send(
            self.http
                .put(format!("{}{path}", self.base))
                .header("content-type", "application/zstd")
                .body(bytes),
        )?;
        if status.is_success() {
            Ok(status)
        } else {
            Err(self.error(status, &body))
        }
    }

    /// PUT a file's bytes, streamed from disk (a model of hundreds of MB is never held in
    /// memory).
    pub(crate) fn put_file(
        &self,
        path: &str,
        file: &std::path::Path,
    ) -> Result<StatusCode, CliError> {
        let (status, body) = self.rt.block_on(async {
            let f = tokio::fs::File::open(file)
                .await
                .map_err(CliError::io("read", file))?;
            let len = f
                .metadata()
                .await
                .map_err(CliError::io("read", file))?
                .len();
            let resp = self
                .http
                .put(format!("{}{path}", self.base))
                .header("content-type", "application/octet-stream")
                .header("content-length", len)
                .body(reqwest::Body::from(f))
                .bearer_auth(&self.token)
                .send()
                .await
                .map_err(|e| self.unreachable(e))?;
            let status = resp.status();
            let body = resp
                .bytes()
                .await
                .map_err(|e| self.unreachable(e))?
                .to_vec();
            Ok::<_, CliError>((status, body))
        })?;
        if status.is_success() {
            Ok(status)
        } else {
            Err(self.error(status, &body))
        }
    }

    /// PUT raw bytes (`application/octet-stream`), returning the decoded JSON answer.
    pub(crate) fn put_raw<T: DeserializeOwned>(
        &self,
        path: &str,
        bytes: Vec<u8>,
    ) -> Result<T, CliError> {
        let (status, body) = self.send(
            self.http
                .put(format!("{}{path}", self.base))
                .header("content-type", "application/octet-stream")
                .header(
                    "user-agent",
                    format!("edgefn {}", env!("CARGO_PKG_VERSION")),
                )
                .body(bytes),
        )?;
        self.decode(status, &body)
    }

    /// DELETE.
    pub(crate) fn delete(&self, path: &str) -> Result<(), CliError> {
        let (status, body) = self.send(self.http.delete(format!("{}{path}", self.base)))?;
        if status.is_success() {
            Ok(())
        } else {
            Err(self.error(status, &body))
        }
    }

    /// `GET path` as a stream of lines (NDJSON), each handed to `line` until it returns false.
    /// `opened` runs once the server has answered 2xx. Blank lines are the server's keep-alives.
    ///
    /// # Errors
    ///
    /// When the request cannot be made or the server refuses it; once the stream is open, a
    /// failure is not an error but [`StreamEnd::Lost`] (the caller decides whether to reconnect).
    pub(crate) fn get_lines(
        &self,
        path: &str,
        opened: impl FnOnce(),
        mut line: impl FnMut(&str) -> Result<bool, CliError>,
    ) -> Result<StreamEnd, CliError> {
        self.rt.block_on(async {
            let mut resp = self
                .http
                .get(format!("{}{path}", self.base))
                .bearer_auth(&self.token)
                .send()
                .await
                .map_err(|e| self.unreachable(e))?;
            let status = resp.status();
            if !status.is_success() {
                let body = resp.bytes().await.map_err(|e| self.unreachable(e))?;
                return Err(self.error(status, &body));
            }
            opened();
            let mut pending: Vec<u8> = Vec::new();
            loop {
                let chunk = match tokio::time::timeout(STREAM_IDLE, resp.chunk()).await {
                    Err(_) => {
                        return Ok(StreamEnd::Lost(format!(
                            "nothing from it for {}s (not even a keep-alive)",
                            STREAM_IDLE.as_secs()
                        )));
                    }
                    Ok(Err(e)) => return Ok(StreamEnd::Lost(e.to_string())),
                    Ok(Ok(None)) => return Ok(StreamEnd::Lost("it closed the stream".into())),
                    Ok(Ok(Some(chunk))) => chunk,
                };
                pending.extend_from_slice(&chunk);
                while let Some(end) = pending.iter().position(|b| *b == b'\n') {
                    let text = String::from_utf8_lossy(&pending[..end]).into_owned();
                    pending.drain(..=end);
                    if !text.trim().is_empty() && !line(&text)? {
                        return Ok(StreamEnd::Stopped);
                    }
                }
            }
        })
    }
}

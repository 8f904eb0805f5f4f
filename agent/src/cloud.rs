//! The agent's side of the control plane API: its desired state (long-poll), its bundles
//! (streamed to disk, resumed after an interruption) and its status reports.

use std::time::Duration;

use edgefn_schema::api::{DesiredResponse, StatusReport};
use reqwest::StatusCode;
use tokio::io::AsyncWriteExt;

use crate::layout::Layout;

/// Why a call to the cloud failed.
#[derive(Debug, thiserror::Error)]
pub enum CloudError {
    /// No answer (network down, cloud down), or an answer cut short.
    #[error("cannot reach the cloud: {0}")]
    Unreachable(#[source] reqwest::Error),
    /// A download ended before the length the cloud announced.
    #[error("bundle {digest}: the download ended after {written} of {expected} bytes")]
    Short {
        /// Which bundle.
        digest: String,
        /// Bytes received.
        written: u64,
        /// Bytes announced.
        expected: u64,
    },
    /// The control plane does not have a bundle (or layer, or model) the desired state names:
    /// 404, to `HEAD` (no body to say why) or `GET`.
    #[error(
        "bundle {digest}: the control plane does not have it (HTTP 404), although the desired state names it: apply again (`edgefn apply` uploads what the control plane lacks); retrying"
    )]
    BundleMissing {
        /// Which bundle.
        digest: String,
    },
    /// The token was refused: retrying will not help.
    #[error(
        "the cloud refused this device's token (HTTP {0}): re-register it with `edgefn device add NAME --force` (a new token, written over its file), or remove this agent"
    )]
    Rejected(u16),
    /// Any other answer (or a `HEAD` without the length it asked for).
    #[error("the cloud answered HTTP {status}: {body}")]
    Status {
        /// Status code.
        status: u16,
        /// Body.
        body: String,
    },
    /// Writing the download failed.
    #[error("saving bundle {digest}: {source}")]
    Disk {
        /// Which bundle.
        digest: String,
        /// Why.
        source: std::io::Error,
    },
}

/// The private CA of an https control plane (`cloudCa`) cannot be used.
#[derive(Debug, thiserror::Error)]
#[error("cloudCa: {0}")]
pub struct CaError(#[source] pub edgefn_os::http::ClientError);

impl CloudError {
    /// Whether the data folder's file system is full (or the quota spent).
    pub(crate) fn is_full(&self) -> bool {
        matches!(self, CloudError::Disk { source, .. } if crate::layout::is_full(source))
    }
}

/// Flushes what `file` still holds in its buffer, then syncs it to disk. Tokio's `sync_all`
/// alone waits for a write in flight but drops its error: a full disk would pass as a short
/// (even empty) file.
pub(crate) async fn flush_and_sync(file: &mut tokio::fs::File) -> std::io::Result<()> {
    file.flush().await?;
    file.sync_all().await
}

/// A connection to the cloud as this device.
#[derive(Debug, Clone)]
pub(crate) struct CloudClient {
    base: String,
    device: String,
    token: String,
    http: reqwest::Client,
}

fn unreachable(e: reqwest::Error) -> CloudError {
    CloudError::Unreachable(e)
}

async fn check(resp: reqwest::Response) -> Result<reqwest::Response, CloudError> {
    let status = resp.status();
    // 401 is the token refused (unknown or revoked). A 403 refuses one request of a known
    // device (a bundle or secret its desired state does not name): it says why in its body,
    // and re-registering would not help.
    if status == StatusCode::UNAUTHORIZED {
        return Err(CloudError::Rejected(status.as_u16()));
    }
    if !status.is_success()
        && status != StatusCode::NOT_MODIFIED
        && status != StatusCode::PARTIAL_CONTENT
    {
        let body = resp.text().await.unwrap_or_default();
        return Err(CloudError::Status {
            status: status.as_u16(),
            body,
        });
    }
    Ok(resp)
}

/// A 404 to a bundle's `HEAD` or `GET`, as [`CloudError::BundleMissing`] naming `digest`.
fn missing(e: CloudError, digest: &str) -> CloudError {
    match e {
        CloudError::Status { status: 404, .. } => CloudError::BundleMissing {
            digest: digest.to_owned(),
        },
        other => other,
    }
}

impl CloudClient {
    /// A client for `device` at `base`.
    pub(crate) fn new(
        base: &str,
        device: &str,
        token: &str,
        ca: Option<&[u8]>,
    ) -> Result<CloudClient, CaError> {
        // https:// clouds: rustls with the ring provider, the system's roots and `cloudCa`.
        let http = edgefn_os::http::client(ca).map_err(CaError)?;
        Ok(CloudClient {
            base: base.trim_end_matches('/').to_owned(),
            device: device.to_owned(),
            token: token.to_owned(),
            http,
        })
    }

    /// The desired state; with `known`, waits up to `wait` for it to differ and returns `None`
    /// when it does not.
    ///
    /// With `after`, also answers when the latest revision is newer than `after`, even with the
    /// digest `known` (an agent that refused a state for its signature waits for it signed anew).
    ///
    /// `seen`, the newest revision this device has been served, keeps a control-plane process
    /// that has not heard of it yet (several behind a balancer) from answering an older one.
    pub(crate) async fn desired(
        &self,
        known: Option<&str>,
        after: Option<u64>,
        seen: Option<u64>,
        wait: Duration,
    ) -> Result<Option<DesiredResponse>, CloudError> {
        let seen = seen.map(|s| format!("seen={s}"));
        let url = match known {
            Some(_) => format!(
                "{}/v1/devices/{}/desired?wait={}{}{}",
                self.base,
                self.device,
                wait.as_secs(),
                after.map(|a| format!("&after={a}")).unwrap_or_default(),
                seen.map(|s| format!("&{s}")).unwrap_or_default()
            ),
            None => format!(
                "{}/v1/devices/{}/desired{}",
                self.base,
                self.device,
                seen.map(|s| format!("?{s}")).unwrap_or_default()
            ),
        };
        let mut req = self
            .http
            .get(url)
            .bearer_auth(&self.token)
            .timeout(wait + Duration::from_secs(30));
        if let Some(digest) = known {
            req = req.header("If-None-Match", format!("\"{digest}\""));
        }
        let resp = check(req.send().await.map_err(unreachable)?).await?;
        if resp.status() == StatusCode::NOT_MODIFIED {
            return Ok(None);
        }
        let desired: DesiredResponse = resp.json().await.map_err(unreachable)?;
        Ok(Some(desired))
    }

    /// The size of a bundle, in bytes (a `HEAD` request).
    pub(crate) async fn bundle_size(&self, digest: &str) -> Result<u64, CloudError> {
        let resp = self
            .http
            .head(format!("{}/v1/bundles/{digest}", self.base))
            .bearer_auth(&self.token)
            .timeout(Duration::from_secs(30))
            .send()
            .await
            .map_err(unreachable)?;
        let resp = check(resp).await.map_err(|e| missing(e, digest))?;
        resp.headers()
            .get(reqwest::header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse().ok())
            .ok_or_else(|| CloudError::Status {
                status: resp.status().as_u16(),
                body: format!("bundle {digest}: no Content-Length in the answer to HEAD"),
            })
    }

    /// Downloads a bundle to its `.part` file, resuming what an earlier attempt saved. Every
    /// write is checked, and the file is flushed and synced before this returns: `Ok` means
    /// every byte the cloud announced is on disk.
    pub(crate) async fn download(
        &self,
        layout: &Layout,
        digest: &str,
        faults: crate::fault::Faults,
    ) -> Result<(), CloudError> {
        let path = layout.download_path(digest);
        let disk = |source| CloudError::Disk {
            digest: digest.to_owned(),
            source,
        };
        let have = tokio::fs::metadata(&path)
            .await
            .map(|m| m.len())
            .unwrap_or(0);
        let mut req = self
            .http
            .get(format!("{}/v1/bundles/{digest}", self.base))
            .bearer_auth(&self.token)
            .timeout(Duration::from_secs(600));
        if have > 0 {
            req = req.header("Range", format!("bytes={have}-"));
        }
        let resp = req.send().await.map_err(unreachable)?;
        // Everything was saved before an interruption: nothing left to fetch.
        if have > 0 && resp.status() == StatusCode::RANGE_NOT_SATISFIABLE {
            let total = resp
                .headers()
                .get(reqwest::header::CONTENT_RANGE)
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.strip_prefix("bytes */"))
                .and_then(|v| v.parse::<u64>().ok());
            if total == Some(have) {
                return Ok(());
            }
            // A stale or overlong partial file: start again.
            let _ = tokio::fs::remove_file(&path).await;
        }
        let mut resp = check(resp).await.map_err(|e| missing(e, digest))?;
        let expected = resp.content_length();
        // A server that ignores Range sends the whole body: start over.
        let append = have > 0 && resp.status() == StatusCode::PARTIAL_CONTENT;
        let mut file = tokio::fs::OpenOptions::new()
            .create(true)
            .write(true)
            .append(append)
            .truncate(!append)
            .open(&path)
            .await
            .map_err(disk)?;
        let mut written = 0u64;
        let mut synced = 0u64;
        while let Some(chunk) = resp.chunk().await.map_err(unreachable)? {
            file.write_all(&chunk).await.map_err(disk)?;
            written += chunk.len() as u64;
            if written - synced >= 1 << 20 {
                flush_and_sync(&mut file).await.map_err(disk)?;
                synced = written;
                faults.at(crate::fault::CrashPoint::Download);
            }
        }
        flush_and_sync(&mut file).await.map_err(disk)?;
        if let Some(expected) = expected.filter(|e| *e != written) {
            return Err(CloudError::Short {
                digest: digest.to_owned(),
                written,
                expected,
            });
        }
        Ok(())
    }

    /// The value of secret `name` at `version`, as this device's desired state names it: at
    /// most [`edgefn_schema::api::MAX_SECRET_BYTES`], read in chunks (a longer answer is an
    /// error, never truncated). The value is held only by the caller, never logged.
    pub(crate) async fn secret(&self, name: &str, version: u64) -> Result<Vec<u8>, CloudError> {
        let max = edgefn_schema::api::MAX_SECRET_BYTES;
        let resp = self
            .http
            .get(format!(
                "{}/v1/devices/{}/secrets/{name}?version={version}",
                self.base, self.device
            ))
            .bearer_auth(&self.token)
            .timeout(Duration::from_secs(60))
            .send()
            .await
            .map_err(unreachable)?;
        let mut resp = check(resp).await?;
        let mut value = Vec::new();
        while let Some(chunk) = resp.chunk().await.map_err(unreachable)? {
            if value.len() + chunk.len() > max {
                return Err(CloudError::Status {
                    status: resp.status().as_u16(),
                    body: format!("secret `{name}` version {version}: more than {max} bytes"),
                });
            }
            value.extend_from_slice(&chunk);
        }
        Ok(value)
    }

    /// Sends a status report.
    pub(crate) async fn report(&self, report: &StatusReport) -> Result<(), CloudError> {
        let resp = self
            .http
            .post(format!("{}/v1/devices/{}/status", self.base, self.device))
            .bearer_auth(&self.token)
            .timeout(Duration::from_secs(30))
            .json(report)
            .send()
            .await
            .map_err(unreachable)?;
        check(resp).await.map(|_| ())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_write_to_a_full_disk_is_an_error_not_a_short_file() {
        let Some(fs_) = crate::testfs::Tmpfs::mount("1m") else {
            return;
        };
        fs_.fill(&fs_.path().join("filler"));
        let path = fs_.path().join("bundle.part");
        let mut file = tokio::fs::File::create(&path).await.expect("create");
        // Tokio's file buffers the write and answers Ok: the error comes with the flush.
        let written = file.write_all(&[1u8; 64 << 10]).await;
        let saved = match written {
            Ok(()) => flush_and_sync(&mut file).await,
            Err(e) => Err(e),
        };
        let err = saved.expect_err("a full disk must fail the download");
        assert!(crate::layout::is_full(&err), "{err}");
        let e = CloudError::Disk {
            digest: "d".into(),
            source: err,
        };
        assert!(e.is_full());
    }
}

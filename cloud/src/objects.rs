//! Where the bytes of bundles live (and of dependency layers, which travel as bundles; models
//! will travel the same way): content-addressed objects, each named by the sha256 digest of its
//! bytes (64 lowercase hex digits), behind the [`Objects`] trait.
//!
//! Two implementations:
//! - [`Folder`], the embedded default: one file per object in `DATA/bundles`, written
//!   atomically (temporary file, fsync, rename, fsync of the folder).
//! - [`S3`], an S3-compatible object store (`edgefn-cloud --objects s3://BUCKET[/PREFIX]`),
//!   through the `object_store` crate: object `PREFIX/DIGEST`. Its endpoint, region and
//!   credentials come from the usual `AWS_*` variables (see [`open`]). A PUT is atomic in S3:
//!   an interrupted upload leaves no object, so an object is there whole or not at all.
//!
//! Objects are immutable: [`Objects::put`] of a digest already stored does nothing (content
//! addressing makes a second write of the same name a write of the same bytes).
//!
//! Every method blocks: call it off the async threads (the store's callers use
//! `crate::error::blocking`). [`S3`] drives its requests on a runtime of its own, so its
//! methods also work before the server's runtime exists (at start) and panic if called on an
//! async thread. Each S3 request is bounded in time ([`S3_TIMEOUT`], [`S3_CONNECT_TIMEOUT`],
//! [`S3_READ_TIMEOUT`]; a streamed read by [`S3_STREAM_TIMEOUT`]) and
//! transient failures (connection errors, 5xx, throttling) are retried [`S3_RETRIES`] times with
//! exponential backoff, within [`S3_RETRY_TIMEOUT`].

use std::fmt;
use std::io::{Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures_util::{Stream, StreamExt, TryStreamExt};

/// How long one S3 request may take, body included, unless `AWS_TIMEOUT` says otherwise
/// (e.g. `AWS_TIMEOUT=600s` for large uploads over a slow link). Not for the streamed reads of
/// [`Objects::read`], which go at the pace of the device downloading: [`S3_READ_TIMEOUT`]
/// bounds each of their reads, and [`S3_STREAM_TIMEOUT`] the whole.
pub(crate) const S3_TIMEOUT: Duration = Duration::from_secs(120);
/// How long one read of a response may wait for bytes from S3 (`AWS_READ_TIMEOUT`).
pub(crate) const S3_READ_TIMEOUT: Duration = Duration::from_secs(30);
/// How long a streamed read ([`Objects::read`]) may last in all.
pub(crate) const S3_STREAM_TIMEOUT: &str = "6h";
/// How long connecting to the S3 endpoint may take (`AWS_CONNECT_TIMEOUT` overrides it).
pub(crate) const S3_CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// How many times a failed S3 request is retried when the failure may be transient.
pub(crate) const S3_RETRIES: usize = 3;
/// No retry starts this long after the first attempt.
pub(crate) const S3_RETRY_TIMEOUT: Duration = Duration::from_secs(30);
/// How many HEAD requests [`Objects::missing`] has in flight at once.
pub(crate) const S3_CHECKS_IN_FLIGHT: usize = 16;
/// The size of the chunks [`Folder`] streams a file in.
const CHUNK: usize = 256 * 1024;
/// The part size of [`Objects::put_file`]'s multipart uploads to S3 (S3 takes 5 MiB to 5 GiB
/// per part, at most 10,000 parts: objects up to 80 GiB); a smaller file is one PUT.
#[cfg_attr(not(test), allow(dead_code))]
pub(crate) const S3_PART: usize = 8 * 1024 * 1024;
/// How many parts of one upload are in flight at once (memory: this many × [`S3_PART`]).
#[cfg_attr(not(test), allow(dead_code))]
const S3_PARTS_IN_FLIGHT: usize = 2;

/// Why an object operation failed.
#[derive(Debug, thiserror::Error)]
pub enum ObjectsError {
    /// The object store could not be reached or refused the request (after retries): the
    /// operation may succeed later. The API answers 503 `object_store_unavailable`.
    #[error("the object store {store} failed to {action} {key}: {source}")]
    Unavailable {
        /// Which store (`s3://bucket/prefix`).
        store: String,
        /// What was being done (`store`, `check`, `read`).
        action: &'static str,
        /// The object's key.
        key: String,
        /// Why (`object_store`'s error: the request and the server's answer; never credentials).
        source: Box<object_store::Error>,
    },
    /// A file operation of [`Folder`] failed.
    #[error("{action} {}: {source}", .path.display())]
    Io {
        /// What was being done.
        action: &'static str,
        /// Where.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// `--objects` cannot be used; the message names what to fix.
    #[error("--objects {url}: {message}")]
    Config {
        /// The value given (credentials never appear in it: they come from the environment).
        url: String,
        /// What is wrong and how to fix it.
        message: String,
    },
}

/// A ranged read of an object: its total size and a stream of its bytes from `start`.
pub(crate) struct ObjectRead {
    /// The object's size in bytes.
    pub(crate) total: u64,
    /// The first byte the stream yields (`0..=total`).
    pub(crate) start: u64,
    /// The bytes `start..total`, in chunks; an error ends it (the object store failed
    /// mid-read). Pollable on any tokio runtime.
    pub(crate) body: Pin<Box<dyn Stream<Item = std::io::Result<Bytes>> + Send>>,
}

impl fmt::Debug for ObjectRead {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ObjectRead")
            .field("total", &self.total)
            .field("start", &self.start)
            .finish_non_exhaustive()
    }
}

/// An [`ObjectRead`] as a blocking [`std::io::Read`], for code on a blocking thread of the
/// tokio runtime (`spawn_blocking`) that reads an object with a synchronous parser.
pub(crate) struct BlockingRead {
    body: Pin<Box<dyn Stream<Item = std::io::Result<Bytes>> + Send>>,
    current: Bytes,
    runtime: tokio::runtime::Handle,
}

impl BlockingRead {
    /// Reads `read`'s bytes. Panics outside a tokio runtime's context.
    pub(crate) fn new(read: ObjectRead) -> Self {
        BlockingRead {
            body: read.body,
            current: Bytes::new(),
            runtime: tokio::runtime::Handle::current(),
        }
    }
}

impl std::io::Read for BlockingRead {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        use futures_util::StreamExt;
        while self.current.is_empty() {
            match self.runtime.block_on(self.body.next()) {
                Some(chunk) => self.current = chunk?,
                None => return Ok(0),
            }
        }
        let n = buf.len().min(self.current.len());
        buf[..n].copy_from_slice(&self.current.split_to(n));
        Ok(n)
    }
}

/// A store of immutable objects named by their sha256 digest. The caller checks digests (a
/// name is always 64 lowercase hex digits, and `put` gets bytes whose sha256 it is).
pub(crate) trait Objects: Send + Sync + fmt::Debug + 'static {
    /// Where the objects are, for messages: `folder /var/lib/edgefn/bundles` or
    /// `s3://bucket/prefix`.
    fn describe(&self) -> String;
    /// Whether `digest` is stored (S3: a HEAD request).
    fn has(&self, digest: &str) -> Result<bool, ObjectsError>;
    /// Which of `digests` are not stored, in their order, each once (S3: up to
    /// [`S3_CHECKS_IN_FLIGHT`] HEAD requests at once).
    fn missing(&self, digests: &[&str]) -> Result<Vec<String>, ObjectsError> {
        let mut out: Vec<String> = Vec::new();
        for d in digests {
            if !out.iter().any(|m| m == d) && !self.has(d)? {
                out.push((*d).to_owned());
            }
        }
        Ok(out)
    }
    /// Stores `bytes` as `digest` unless already stored: `true` when it stored them, `false`
    /// when they were there. Atomic: after a failure, the object is absent or whole. (S3
    /// copies the bytes into its request: use [`Objects::put_file`] for large objects.)
    fn put(&self, digest: &str, bytes: &[u8]) -> Result<bool, ObjectsError>;
    /// Stores the file at `path` as `digest` unless already stored, without reading it into
    /// memory (for large objects: models): `true` when it stored it. The caller checked that
    /// the file's sha256 is `digest` and keeps the file unchanged meanwhile. Atomic like
    /// [`Objects::put`]: S3 gets a multipart upload in parts of [`S3_PART`] bytes, aborted on
    /// failure, so the object appears only when complete.
    #[cfg_attr(not(test), allow(dead_code))] // For models' uploads (streamed to a file first).
    fn put_file(&self, digest: &str, path: &Path) -> Result<bool, ObjectsError>;
    /// The whole object, read into memory (bundles are small: use [`Objects::read`] for
    /// anything that may be large).
    fn get(&self, digest: &str) -> Result<Option<Vec<u8>>, ObjectsError>;
    /// The object from byte `start` on, streamed; `None` when absent. A `start` at or beyond
    /// the end gives an empty body (and `start` = `total`), for the caller to answer 416.
    fn read(&self, digest: &str, start: u64) -> Result<Option<ObjectRead>, ObjectsError>;
}

/// Opens the object store `--objects` names, or the folder `default` when none is given.
///
/// `url` is `s3://BUCKET[/PREFIX]` (objects `PREFIX/DIGEST` in bucket `BUCKET`). The rest
/// comes from the environment, as `object_store`'s `AmazonS3Builder::from_env` reads it:
/// `AWS_ACCESS_KEY_ID`, `AWS_SECRET_ACCESS_KEY` (and `AWS_SESSION_TOKEN`); `AWS_REGION` or
/// `AWS_DEFAULT_REGION` (default `us-east-1`); `AWS_ENDPOINT_URL` or `AWS_ENDPOINT` for a
/// server other than AWS (path-style requests unless `AWS_VIRTUAL_HOSTED_STYLE_REQUEST=true`);
/// `AWS_ALLOW_HTTP=true` for a plain-http endpoint; `AWS_TIMEOUT`, `AWS_CONNECT_TIMEOUT`
/// (e.g. `600s`) to change [`S3_TIMEOUT`], [`S3_CONNECT_TIMEOUT`]. Without keys, credentials
/// come from a web identity token, the container's or the instance's metadata, like the AWS
/// tools.
///
/// At start the bucket is listed once (under the prefix): a missing bucket, refused
/// credentials or an unreachable endpoint is a [`ObjectsError::Config`] naming what to fix,
/// never showing a secret. Blocks (a runtime of its own drives S3's requests).
pub(crate) fn open(url: Option<&str>, default: &Path) -> Result<Arc<dyn Objects>, ObjectsError> {
    match url {
        None => Ok(Arc::new(Folder::open(default)?)),
        Some(url) => Ok(Arc::new(S3::open(url, std::env::vars_os())?)),
    }
}

/// Objects as files in one folder, named by digest.
#[derive(Debug)]
pub(crate) struct Folder {
    dir: PathBuf,
}

fn io(action: &'static str, path: &Path) -> impl FnOnce(std::io::Error) -> ObjectsError {
    let path = path.to_path_buf();
    move |source| ObjectsError::Io {
        action,
        path,
        source,
    }
}

impl Folder {
    /// Opens (creating) the folder `dir` and removes the temporary files of writes a crash
    /// interrupted.
    pub(crate) fn open(dir: &Path) -> Result<Self, ObjectsError> {
        std::fs::create_dir_all(dir).map_err(io("create", dir))?;
        if let Ok(entries) = std::fs::read_dir(dir) {
            for e in entries.flatten() {
                // `edgefn_os::file::write_atomic`'s `.NAME.tmp-…`, and `.tmp-…` of older versions.
                let name = e.file_name().to_string_lossy().into_owned();
                if name.starts_with('.') && name.contains(".tmp-") {
                    let _ = std::fs::remove_file(e.path());
                }
            }
        }
        Ok(Self {
            dir: dir.to_path_buf(),
        })
    }

    fn path(&self, digest: &str) -> PathBuf {
        self.dir.join(digest)
    }
}

impl Objects for Folder {
    fn describe(&self) -> String {
        format!("folder {}", self.dir.display())
    }

    fn has(&self, digest: &str) -> Result<bool, ObjectsError> {
        Ok(self.path(digest).is_file())
    }

    fn put(&self, digest: &str, bytes: &[u8]) -> Result<bool, ObjectsError> {
        let path = self.path(digest);
        if path.is_file() {
            return Ok(false);
        }
        edgefn_os::file::write_atomic(&path, bytes, edgefn_os::file::PUBLIC)
            .map_err(io("write bundle", &path))?;
        Ok(true)
    }

    fn put_file(&self, digest: &str, from: &Path) -> Result<bool, ObjectsError> {
        use std::os::unix::fs::OpenOptionsExt;
        let path = self.path(digest);
        if path.is_file() {
            return Ok(false);
        }
        let tmp = self
            .dir
            .join(format!(".{digest}.tmp-{}", std::process::id()));
        let copy = || -> std::io::Result<()> {
            let mut src = std::fs::File::open(from)?;
            let mut dst = std::fs::OpenOptions::new()
                .write(true)
                .create(true)
                .truncate(true)
                .mode(edgefn_os::file::PUBLIC)
                .open(&tmp)?;
            std::io::copy(&mut src, &mut dst)?;
            dst.sync_all()?;
            std::fs::rename(&tmp, &path)?;
            edgefn_os::file::sync_folder(&self.dir)
        };
        copy().map_err(|e| {
            let _ = std::fs::remove_file(&tmp);
            io("write bundle", &path)(e)
        })?;
        Ok(true)
    }

    fn get(&self, digest: &str) -> Result<Option<Vec<u8>>, ObjectsError> {
        let path = self.path(digest);
        match std::fs::read(&path) {
            Ok(b) => Ok(Some(b)),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(io("read", &path)(e)),
        }
    }

    fn read(&self, digest: &str, start: u64) -> Result<Option<ObjectRead>, ObjectsError> {
        let path = self.path(digest);
        let mut file = match std::fs::File::open(&path) {
            Ok(f) => f,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(io("open", &path)(e)),
        };
        let total = file.metadata().map_err(io("stat", &path))?.len();
        let start = start.min(total);
        file.seek(SeekFrom::Start(start))
            .map_err(io("seek", &path))?;
        // Each chunk is read on the blocking pool of the runtime that polls the stream.
        let body = futures_util::stream::try_unfold(
            (file, total - start),
            |(mut file, left)| async move {
                if left == 0 {
                    return Ok(None);
                }
                let (file, chunk) = tokio::task::spawn_blocking(move || {
                    let mut buf = vec![0; CHUNK.min(usize::try_from(left).unwrap_or(CHUNK))];
                    let n = file.read(&mut buf)?;
                    buf.truncate(n);
                    Ok::<_, std::io::Error>((file, buf))
                })
                .await
                .map_err(std::io::Error::other)??;
                if chunk.is_empty() {
                    return Err(std::io::Error::new(
                        std::io::ErrorKind::UnexpectedEof,
                        "the bundle file shrank while it was read",
                    ));
                }
                let left = left - chunk.len() as u64;
                Ok(Some((Bytes::from(chunk), (file, left))))
            },
        );
        Ok(Some(ObjectRead {
            total,
            start,
            body: Box::pin(body),
        }))
    }
}

/// Objects in an S3-compatible object store, through `object_store`.
pub(crate) struct S3 {
    store: object_store::aws::AmazonS3,
    /// The same store, for streamed reads (see [`S3_STREAM_TIMEOUT`]).
    streams: object_store::aws::AmazonS3,
    /// `PREFIX/` or empty.
    prefix: String,
    /// `s3://bucket/prefix`, for messages.
    url: String,
    /// Drives the requests; taken (and shut down without waiting) on drop, which may happen on
    /// an async thread.
    runtime: Option<tokio::runtime::Runtime>,
}

impl fmt::Debug for S3 {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("S3").field("url", &self.url).finish()
    }
}

impl Drop for S3 {
    fn drop(&mut self) {
        if let Some(rt) = self.runtime.take() {
            rt.shutdown_background();
        }
    }
}

/// Whether `name` follows S3's bucket naming rules (3–63 lowercase letters, digits, dots and
/// hyphens, starting and ending with a letter or digit).
fn valid_bucket(name: &str) -> bool {
    (3..=63).contains(&name.len())
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'.' || b == b'-')
        && name.starts_with(|c: char| c.is_ascii_alphanumeric())
        && name.ends_with(|c: char| c.is_ascii_alphanumeric())
}

/// `url` with what a user part (`USER:PASSWORD@`) would hold replaced by `***`, for messages.
fn redacted(url: &str) -> String {
    let (scheme, rest) = url.split_once("://").unwrap_or(("", url));
    let authority_end = rest.find('/').unwrap_or(rest.len());
    match rest[..authority_end].rfind('@') {
        Some(at) if !scheme.is_empty() => format!("{scheme}://***{}", &rest[at..]),
        _ => url.to_owned(),
    }
}

/// `s3://BUCKET[/PREFIX]` → (bucket, prefix without slashes at either end).
fn parse_url(url: &str) -> Result<(String, String), ObjectsError> {
    let config = |message: String| ObjectsError::Config {
        url: redacted(url),
        message,
    };
    let Some(rest) = url.strip_prefix("s3://") else {
        let scheme = url.split_once("://").map_or("", |(s, _)| s);
        return Err(config(if scheme.is_empty() {
            "not a URL: give s3://BUCKET[/PREFIX] (an S3-compatible object store), or leave --objects out to keep bundles in DATA/bundles".into()
        } else {
            format!(
                "unknown scheme `{scheme}`: edgefn-cloud takes s3://BUCKET[/PREFIX] (an S3-compatible object store: AWS S3, MinIO, Garage, …), or leave --objects out to keep bundles in DATA/bundles"
            )
        }));
    };
    let (bucket, prefix) = rest.split_once('/').unwrap_or((rest, ""));
    if bucket.is_empty() {
        return Err(config(
            "no bucket: give s3://BUCKET[/PREFIX], e.g. s3://edgefn-bundles/prod".into(),
        ));
    }
    if bucket.contains(['@', ':', '?', '#']) {
        return Err(config(
            "the bucket part holds `@`, `:`, `?` or `#`: credentials and endpoints do not go into --objects; set AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY and AWS_ENDPOINT_URL instead"
                .into(),
        ));
    }
    if !valid_bucket(bucket) {
        return Err(config(format!(
            "`{bucket}` is not a valid bucket name (3–63 lowercase letters, digits, dots and hyphens, starting and ending with a letter or digit)"
        )));
    }
    let prefix = prefix.trim_matches('/');
    if prefix.split('/').any(|p| p == "." || p == "..") || prefix.contains("//") {
        return Err(config(format!(
            "the prefix `{prefix}` has an empty, `.` or `..` part"
        )));
    }
    Ok((bucket.to_owned(), prefix.to_owned()))
}

impl S3 {
    /// Opens `url` configured by the `AWS_*` variables among `env`.
    fn open(
        url: &str,
        env: impl IntoIterator<Item = (std::ffi::OsString, std::ffi::OsString)>,
    ) -> Result<Self, ObjectsError> {
        use object_store::aws::AmazonS3Builder;
        use object_store::{BackoffConfig, ClientOptions, RetryConfig};

        let (bucket, prefix) = parse_url(url)?;
        let config = |message: String| ObjectsError::Config {
            url: redacted(url),
            message,
        };
        // reqwest is built without a default TLS provider: the tree's is ring.
        let _ = rustls::crypto::ring::default_provider().install_default();
        let mut builder = AmazonS3Builder::new()
            .with_client_options(
                ClientOptions::new()
                    .with_timeout(S3_TIMEOUT)
                    .with_read_timeout(S3_READ_TIMEOUT)
                    .with_connect_timeout(S3_CONNECT_TIMEOUT),
            )
            .with_retry(RetryConfig {
                backoff: BackoffConfig::default(),
                max_retries: S3_RETRIES,
                retry_timeout: S3_RETRY_TIMEOUT,
            });
        // What `AmazonS3Builder::from_env` does, over the defaults above (so that
        // AWS_TIMEOUT and AWS_CONNECT_TIMEOUT override them).
        let mut endpoint = None;
        let mut allow_http = false;
        // Where credentials come from: keys, or another source `object_store` reads (a web
        // identity token, a container's credentials endpoint); else it asks the instance
        // metadata service, which answers only on a cloud instance with a role.
        let (mut key_id, mut secret_key, mut other_source) = (false, false, false);
        for (key, value) in env {
            let (Some(key), Some(value)) = (key.to_str(), value.to_str()) else {
                continue;
            };
            if !key.starts_with("AWS_") {
                continue;
            }
            if let Ok(k) = key.to_ascii_lowercase().parse() {
                builder = builder.with_config(k, value);
            }
            match key {
                "AWS_ENDPOINT" | "AWS_ENDPOINT_URL" | "AWS_ENDPOINT_URL_S3" => {
                    endpoint = Some(value.to_owned());
                }
                "AWS_ALLOW_HTTP" => allow_http = value.eq_ignore_ascii_case("true"),
                "AWS_ACCESS_KEY_ID" => key_id = !value.is_empty(),
                "AWS_SECRET_ACCESS_KEY" => secret_key = !value.is_empty(),
                "AWS_WEB_IDENTITY_TOKEN_FILE"
                | "AWS_CONTAINER_CREDENTIALS_RELATIVE_URI"
                | "AWS_CONTAINER_CREDENTIALS_FULL_URI"
                | "AWS_SKIP_SIGNATURE" => other_source |= !value.is_empty(),
                _ => {}
            }
        }
        if key_id != secret_key {
            return Err(config(format!(
                "{} is set but {} is not: set both (and AWS_SESSION_TOKEN for temporary credentials)",
                if key_id {
                    "AWS_ACCESS_KEY_ID"
                } else {
                    "AWS_SECRET_ACCESS_KEY"
                },
                if key_id {
                    "AWS_SECRET_ACCESS_KEY"
                } else {
                    "AWS_ACCESS_KEY_ID"
                },
            )));
        }
        let no_credentials = !key_id && !other_source;
        // The endpoint is a URL with a scheme: object_store panics on one it cannot parse.
        let scheme = match endpoint.as_deref() {
            None => None,
            Some(e) => match reqwest::Url::parse(e) {
                Ok(u) if matches!(u.scheme(), "http" | "https") && u.host().is_some() => {
                    Some(u.scheme().to_owned())
                }
                _ => {
                    return Err(config(format!(
                        "the endpoint `{}` is not an http:// or https:// URL: set AWS_ENDPOINT_URL to the S3 server's address with its scheme, e.g. https://s3.example.com or http://127.0.0.1:8014",
                        redacted(e)
                    )));
                }
            },
        };
        if scheme.as_deref() == Some("http") && !allow_http {
            return Err(config(format!(
                "the endpoint {} is plain http: set AWS_ALLOW_HTTP=true to allow it (the bundles and the request signatures then travel unencrypted), or use https",
                redacted(&endpoint.unwrap_or_default())
            )));
        }
        let builder = builder.with_bucket_name(&bucket);
        let streams = builder
            .clone()
            .with_config(
                object_store::aws::AmazonS3ConfigKey::Client(
                    object_store::ClientConfigKey::Timeout,
                ),
                S3_STREAM_TIMEOUT,
            )
            .build()
            .map_err(|e| config(format!("cannot be used: {e}")))?;
        let store = builder
            .build()
            .map_err(|e| config(format!("cannot be used: {e}")))?;
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .thread_name("edgefn-objects")
            .enable_all()
            .build()
            .map_err(|e| config(format!("cannot start the object store's runtime: {e}")))?;
        let shown = if prefix.is_empty() {
            format!("s3://{bucket}")
        } else {
            format!("s3://{bucket}/{prefix}")
        };
        let s3 = Self {
            store,
            streams,
            prefix: if prefix.is_empty() {
                String::new()
            } else {
                format!("{prefix}/")
            },
            url: shown,
            runtime: Some(runtime),
        };
        s3.check(&bucket, endpoint.as_deref())
            .map_err(|why| {
                if no_credentials {
                    format!(
                        "no credentials: set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY (and AWS_SESSION_TOKEN for temporary credentials) in the environment of edgefn-cloud; without them it asked the instance metadata service (on AWS, an instance or container role), which failed: {why}"
                    )
                } else {
                    why
                }
            })
            .map_err(config)?;
        Ok(s3)
    }

    /// Lists the prefix once: the bucket exists, the credentials are accepted, the endpoint
    /// answers.
    fn check(&self, bucket: &str, endpoint: Option<&str>) -> Result<(), String> {
        use object_store::{Error, ObjectStore};
        let prefix = object_store::path::Path::from(self.prefix.trim_end_matches('/'));
        let at = endpoint.map_or_else(|| "AWS".to_owned(), redacted);
        // A list answers S3's error codes (in the error's text: `object_store` keeps them
        // there, its kinds only for single-object requests).
        let code = |e: &Error, codes: &[&str]| {
            let text = e.to_string();
            codes
                .iter()
                .any(|c| text.contains(&format!("<Code>{c}</Code>")))
        };
        match self.block_on(self.store.list_with_delimiter(Some(&prefix))) {
            Ok(_) => Ok(()),
            Err(e) if code(&e, &["NoSuchBucket"]) => Err(format!(
                "the bucket `{bucket}` does not exist at {at}: create it, or fix the bucket name (and AWS_ENDPOINT_URL, AWS_REGION)"
            )),
            Err(e)
                if code(
                    &e,
                    &[
                        "AccessDenied",
                        "InvalidAccessKeyId",
                        "SignatureDoesNotMatch",
                        "InvalidToken",
                        "ExpiredToken",
                        "AuthorizationHeaderMalformed",
                    ],
                ) =>
            {
                Err(format!(
                    "{at} refused the credentials for bucket `{bucket}`: check AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY (and AWS_SESSION_TOKEN, AWS_REGION), and that they may list, read and write the bucket"
                ))
            }
            Err(Error::NotFound { .. }) => Err(format!(
                "the bucket `{bucket}` does not exist at {at}: create it, or fix the bucket name (and AWS_ENDPOINT_URL, AWS_REGION)"
            )),
            Err(Error::PermissionDenied { .. } | Error::Unauthenticated { .. }) => Err(format!(
                "{at} refused the credentials for bucket `{bucket}`: check AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY (and AWS_SESSION_TOKEN, AWS_REGION), and that they may list, read and write the bucket"
            )),
            Err(e) => Err(format!(
                "cannot list bucket `{bucket}` at {at}: {e}; check that the object store runs and AWS_ENDPOINT_URL, AWS_REGION and the credentials (AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY)"
            )),
        }
    }

    fn block_on<F: std::future::Future>(&self, f: F) -> F::Output {
        self.runtime
            .as_ref()
            .expect("the runtime lives as long as the store")
            .block_on(f)
    }

    fn location(&self, digest: &str) -> object_store::path::Path {
        object_store::path::Path::from(format!("{}{digest}", self.prefix))
    }

    fn failed(&self, action: &'static str, digest: &str, e: object_store::Error) -> ObjectsError {
        ObjectsError::Unavailable {
            store: self.url.clone(),
            action,
            key: format!("{}{digest}", self.prefix),
            source: Box::new(e),
        }
    }
}

impl Objects for S3 {
    fn describe(&self) -> String {
        self.url.clone()
    }

    fn has(&self, digest: &str) -> Result<bool, ObjectsError> {
        use object_store::ObjectStoreExt;
        match self.block_on(self.store.head(&self.location(digest))) {
            Ok(_) => Ok(true),
            Err(object_store::Error::NotFound { .. }) => Ok(false),
            Err(e) => Err(self.failed("check", digest, e)),
        }
    }

    fn missing(&self, digests: &[&str]) -> Result<Vec<String>, ObjectsError> {
        use object_store::ObjectStoreExt;
        let mut unique: Vec<&str> = Vec::new();
        for d in digests {
            if !unique.contains(d) {
                unique.push(d);
            }
        }
        let found: Vec<(usize, Result<bool, object_store::Error>)> = self.block_on(
            futures_util::stream::iter(unique.iter().enumerate())
                .map(|(i, d)| async move {
                    let r = match self.store.head(&self.location(d)).await {
                        Ok(_) => Ok(true),
                        Err(object_store::Error::NotFound { .. }) => Ok(false),
                        Err(e) => Err(e),
                    };
                    (i, r)
                })
                .buffer_unordered(S3_CHECKS_IN_FLIGHT)
                .collect(),
        );
        let mut present = vec![false; unique.len()];
        for (i, r) in found {
            present[i] = r.map_err(|e| self.failed("check", unique[i], e))?;
        }
        Ok(unique
            .iter()
            .zip(present)
            .filter(|(_, p)| !p)
            .map(|(d, _)| (*d).to_owned())
            .collect())
    }

    fn put(&self, digest: &str, bytes: &[u8]) -> Result<bool, ObjectsError> {
        use object_store::ObjectStoreExt;
        if self.has(digest)? {
            return Ok(false);
        }
        let payload = Bytes::copy_from_slice(bytes).into();
        self.block_on(self.store.put(&self.location(digest), payload))
            .map_err(|e| self.failed("store", digest, e))?;
        Ok(true)
    }

    fn put_file(&self, digest: &str, path: &Path) -> Result<bool, ObjectsError> {
        use object_store::{ObjectStoreExt, WriteMultipart};
        if self.has(digest)? {
            return Ok(false);
        }
        let mut file = std::fs::File::open(path).map_err(io("open", path))?;
        let size = file.metadata().map_err(io("stat", path))?.len();
        if size <= S3_PART as u64 {
            let mut bytes = Vec::new();
            file.read_to_end(&mut bytes).map_err(io("read", path))?;
            return self.put(digest, &bytes);
        }
        let location = self.location(digest);
        let done = self.block_on(async {
            let upload = self.store.put_multipart(&location).await.map_err(Ok)?;
            let mut writer = WriteMultipart::new_with_chunk_size(upload, S3_PART);
            let mut buf = vec![0; S3_PART];
            loop {
                // A bounded number of parts in flight: the file is never held whole.
                if let Err(e) = writer.wait_for_capacity(S3_PARTS_IN_FLIGHT).await {
                    let _ = writer.abort().await;
                    return Err(Ok(e));
                }
                let n = match file.read(&mut buf) {
                    Ok(n) => n,
                    Err(e) => {
                        let _ = writer.abort().await;
                        return Err(Err(e));
                    }
                };
                if n == 0 {
                    break;
                }
                writer.write(&buf[..n]);
            }
            // On failure `finish` aborts the upload: no object appears.
            writer.finish().await.map_err(Ok)
        });
        match done {
            Ok(_) => Ok(true),
            Err(Ok(e)) => Err(self.failed("store", digest, e)),
            Err(Err(e)) => Err(io("read", path)(e)),
        }
    }

    fn get(&self, digest: &str) -> Result<Option<Vec<u8>>, ObjectsError> {
        use object_store::ObjectStoreExt;
        let got = self.block_on(async {
            let r = self.store.get(&self.location(digest)).await?;
            r.bytes().await
        });
        match got {
            Ok(b) => Ok(Some(b.to_vec())),
            Err(object_store::Error::NotFound { .. }) => Ok(None),
            Err(e) => Err(self.failed("read", digest, e)),
        }
    }

    fn read(&self, digest: &str, start: u64) -> Result<Option<ObjectRead>, ObjectsError> {
        use object_store::{GetOptions, GetRange, ObjectStore, ObjectStoreExt};
        let location = self.location(digest);
        let got = self.block_on(async {
            let meta = self.store.head(&location).await?;
            if start >= meta.size {
                return Ok((meta.size, None));
            }
            let options = GetOptions {
                range: (start > 0).then_some(GetRange::Offset(start)),
                ..GetOptions::default()
            };
            let r = self.streams.get_opts(&location, options).await?;
            Ok((meta.size, Some(r)))
        });
        match got {
            Ok((total, None)) => Ok(Some(ObjectRead {
                total,
                start: total,
                body: Box::pin(futures_util::stream::empty()),
            })),
            Ok((total, Some(r))) => {
                // The body's bytes arrive over a connection the objects runtime drives.
                let body = r.into_stream().map_err(std::io::Error::other).boxed();
                Ok(Some(ObjectRead { total, start, body }))
            }
            Err(object_store::Error::NotFound { .. }) => Ok(None),
            Err(e) => Err(self.failed("read", digest, e)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Without keys (or another credential source) the error names the variables to set,
    /// not only what the metadata service answered; one key without the other is refused
    /// before any request.
    #[test]
    fn s3_without_credentials_says_which_variables_to_set() {
        let closed = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let at = format!("http://{}", closed.local_addr().expect("addr"));
        drop(closed);
        let env = |extra: &[(&str, &str)]| -> Vec<(std::ffi::OsString, std::ffi::OsString)> {
            [
                ("AWS_ENDPOINT_URL", at.as_str()),
                ("AWS_ALLOW_HTTP", "true"),
                // Where the metadata service is asked (here: nothing listens).
                ("AWS_METADATA_ENDPOINT", at.as_str()),
            ]
            .iter()
            .chain(extra)
            .map(|(k, v)| ((*k).into(), (*v).into()))
            .collect()
        };
        let Err(e) = S3::open("s3://edgefn-bundles", env(&[])) else {
            panic!("no credentials: opened");
        };
        let e = e.to_string();
        assert!(
            e.contains("no credentials: set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY"),
            "{e}"
        );
        let Err(e) = S3::open("s3://edgefn-bundles", env(&[("AWS_ACCESS_KEY_ID", "ak")])) else {
            panic!("half the keys: opened");
        };
        let e = e.to_string();
        assert!(
            e.contains("AWS_ACCESS_KEY_ID is set but AWS_SECRET_ACCESS_KEY is not"),
            "{e}"
        );
    }

    #[test]
    fn urls_that_are_refused_say_why() {
        for (url, says) in [
            ("gs://bucket", "unknown scheme `gs`"),
            ("/srv/bundles", "not a URL"),
            ("s3://", "no bucket"),
            ("s3:///prefix", "no bucket"),
            (
                "s3://key:secret@bucket",
                "credentials and endpoints do not go",
            ),
            ("s3://Bad_Bucket", "not a valid bucket name"),
            ("s3://ab", "not a valid bucket name"),
            ("s3://bucket/a/../b", "`..` part"),
        ] {
            let e = parse_url(url).expect_err(url).to_string();
            assert!(e.contains(says), "{url}: {e}");
            assert!(!e.contains("secret@"), "{url}: {e}");
        }
        assert_eq!(
            redacted("http://user:pass@minio:9000/x"),
            "http://***@minio:9000/x"
        );
        assert_eq!(redacted("http://minio:9000/a@b"), "http://minio:9000/a@b");
        assert_eq!(
            parse_url("s3://edgefn-bundles").expect("ok"),
            ("edgefn-bundles".into(), String::new())
        );
        assert_eq!(
            parse_url("s3://edgefn.bundles/prod/eu/").expect("ok"),
            ("edgefn.bundles".into(), "prod/eu".into())
        );
    }

    #[test]
    fn a_folder_streams_from_an_offset_and_keeps_objects_once() {
        let dir = tempfile::tempdir().expect("tmp");
        let folder = Folder::open(&dir.path().join("bundles")).expect("open");
        let bytes: Vec<u8> = (0..(CHUNK * 2 + 17)).map(|i| (i % 251) as u8).collect();
        let digest = edgefn_schema::bundle::digest(&bytes);
        assert!(!folder.has(&digest).expect("has"));
        assert!(folder.put(&digest, &bytes).expect("put"));
        assert!(!folder.put(&digest, &bytes).expect("again"));
        assert!(folder.has(&digest).expect("has"));
        assert_eq!(folder.get(&digest).expect("get"), Some(bytes.clone()));
        let rt = tokio::runtime::Builder::new_current_thread()
            .build()
            .expect("rt");
        for start in [
            0u64,
            5,
            CHUNK as u64,
            bytes.len() as u64,
            bytes.len() as u64 + 9,
        ] {
            let read = folder.read(&digest, start).expect("read").expect("there");
            assert_eq!(read.total, bytes.len() as u64);
            let got: Vec<u8> = rt.block_on(async {
                read.body
                    .try_fold(Vec::new(), |mut all, b| async move {
                        all.extend_from_slice(&b);
                        Ok(all)
                    })
                    .await
                    .expect("stream")
            });
            let from = (start as usize).min(bytes.len());
            assert_eq!(read.start as usize, from);
            assert_eq!(got, bytes[from..], "from {start}");
        }
        let absent = "0".repeat(64);
        assert_eq!(
            folder
                .missing(&[&absent, &digest, &absent])
                .expect("missing"),
            vec![absent.clone()]
        );
        assert!(folder.read(&"0".repeat(64), 0).expect("read").is_none());
        assert!(folder.get(&"0".repeat(64)).expect("get").is_none());

        // A file is stored by copy, once.
        let other: Vec<u8> = bytes.iter().rev().copied().collect();
        let other_digest = edgefn_schema::bundle::digest(&other);
        let file = dir.path().join("upload");
        std::fs::write(&file, &other).expect("write");
        assert!(folder.put_file(&other_digest, &file).expect("put_file"));
        assert!(!folder.put_file(&other_digest, &file).expect("again"));
        assert_eq!(folder.get(&other_digest).expect("get"), Some(other));
        let names: Vec<String> = std::fs::read_dir(dir.path().join("bundles"))
            .expect("list")
            .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
            .collect();
        assert_eq!(names.len(), 2, "no temporary file is left: {names:?}");
    }

    /// `s3s-fs` (crates.io; scripts/test.sh installs it) on a free port, serving `root`.
    struct S3sFs(std::process::Child, u16);

    impl Drop for S3sFs {
        fn drop(&mut self) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }

    fn s3s_fs(root: &Path) -> S3sFs {
        let bin = std::env::var_os("PATH")
            .and_then(|paths| {
                std::env::split_paths(&paths)
                    .map(|d| d.join("s3s-fs"))
                    .find(|p| p.is_file())
            })
            .or_else(|| {
                std::env::var_os("HOME")
                    .map(|h| PathBuf::from(h).join(".cache/edgefn-tools/bin/s3s-fs"))
                    .filter(|p| p.is_file())
            })
            .expect("s3s-fs is not installed: scripts/test.sh installs it");
        for _ in 0..20 {
            let port = std::net::TcpListener::bind("127.0.0.1:0")
                .and_then(|l| l.local_addr())
                .expect("a free port")
                .port();
            let mut child = std::process::Command::new(&bin)
                .args(["--host", "127.0.0.1", "--port", &port.to_string()])
                .args(["--access-key", "ak-unit", "--secret-key", "sk-unit"])
                .arg(root)
                .stdout(std::process::Stdio::null())
                .spawn()
                .expect("start s3s-fs");
            for _ in 0..500 {
                if let Ok(Some(_)) = child.try_wait() {
                    break; // The port was taken meanwhile: another one.
                }
                if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
                    return S3sFs(child, port);
                }
                #[allow(clippy::disallowed_methods)] // A synchronous test.
                std::thread::sleep(Duration::from_millis(10));
            }
            let _ = child.kill();
            let _ = child.wait();
        }
        panic!("s3s-fs did not start")
    }

    #[test]
    fn s3_stores_large_files_in_parts_and_streams_them_from_an_offset() {
        let root = tempfile::tempdir().expect("tmp");
        std::fs::create_dir_all(root.path().join("unit")).expect("bucket");
        let server = s3s_fs(root.path());
        let env = [
            ("AWS_ACCESS_KEY_ID", "ak-unit".to_owned()),
            ("AWS_SECRET_ACCESS_KEY", "sk-unit".to_owned()),
            ("AWS_ENDPOINT_URL", format!("http://127.0.0.1:{}", server.1)),
            ("AWS_ALLOW_HTTP", "true".to_owned()),
            ("HOME", "/nonexistent".to_owned()),
        ]
        .map(|(k, v)| (k.into(), v.into()));
        let s3 = S3::open("s3://unit/models/", env).expect("open");
        assert_eq!(s3.describe(), "s3://unit/models");

        // Three parts and a bit, never in memory whole on the way up.
        let len = S3_PART * 3 + 12_345;
        let bytes: Vec<u8> = (0..len).map(|i| (i % 253) as u8).collect();
        let digest = edgefn_schema::bundle::digest(&bytes);
        let file = root.path().join("model.bin");
        std::fs::write(&file, &bytes).expect("write");
        assert!(!s3.has(&digest).expect("has"));
        assert!(s3.put_file(&digest, &file).expect("put_file"));
        assert!(!s3.put_file(&digest, &file).expect("again"));
        assert!(s3.has(&digest).expect("has"));
        assert_eq!(
            std::fs::read(root.path().join("unit/models").join(&digest)).expect("object"),
            bytes
        );
        // A small file is one PUT.
        let small = b"a small bundle".to_vec();
        let small_digest = edgefn_schema::bundle::digest(&small);
        std::fs::write(&file, &small).expect("write");
        assert!(s3.put_file(&small_digest, &file).expect("put_file"));
        assert_eq!(s3.get(&small_digest).expect("get"), Some(small));

        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .expect("rt");
        for start in [0, 1, S3_PART as u64 + 7, len as u64 - 1, len as u64] {
            let read = s3.read(&digest, start).expect("read").expect("there");
            assert_eq!((read.total, read.start), (len as u64, start));
            let got = rt.block_on(async {
                read.body
                    .try_fold(Vec::new(), |mut all, b| async move {
                        all.extend_from_slice(&b);
                        Ok(all)
                    })
                    .await
                    .expect("stream")
            });
            assert!(got == bytes[start as usize..], "from {start}");
        }
        let absent = "0".repeat(64);
        assert_eq!(
            s3.missing(&[&absent, &digest, &small_digest, &absent])
                .expect("missing"),
            vec![absent.clone()]
        );
        assert!(s3.read(&"0".repeat(64), 0).expect("read").is_none());
        assert!(s3.get(&"0".repeat(64)).expect("get").is_none());

        // The server gone: a clear error naming the store, in bounded time (retries).
        drop(server);
        let e = s3.has(&digest).expect_err("down").to_string();
        assert!(
            e.contains("the object store s3://unit/models failed to check"),
            "{e}"
        );
        assert!(!e.contains("sk-unit"), "{e}");
        drop(s3);
    }
}

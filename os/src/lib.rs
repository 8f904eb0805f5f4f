//! What edgefn's programs (the CLI, the control plane, the agent) ask of the operating system,
//! written once so that every side follows the same rules. This crate depends on no other
//! edgefn crate.
//!
//! - [`file`](mod@file): whole-or-nothing writes with the file's mode set when it is created.
//! - [`time`]: the current time in milliseconds since the Unix epoch.
//! - [`signal`]: the shutdown signal (SIGINT or SIGTERM) as a future.
//! - [`backoff`]: exponential backoff with a cap and jitter, for retries.
//! - [`secret`]: comparison of secrets in constant time.
//! - [`limits`]: raising the open-files limit (one descriptor per connected device).
//! - [`net`]: listening sockets with a backlog for thousands of devices reconnecting at once.
//! - `http` (cargo feature `http`): the HTTP client, trusting a private CA besides the system's
//!   roots.

pub mod backoff;
pub mod file;
#[cfg(feature = "http")]
pub mod http;
pub mod limits;
pub mod net;
pub mod secret;
pub mod signal;
pub mod time;

//! Runs edgefn functions the same way on a device (`edgefn-agent`) and on a laptop
//! (`edgefn test`, `edgefn invoke`): the invocation protocol, the python3 and node shims, the
//! process and container sandboxes, the warm pool and the continuous supervisor.
//!
//! # Using it
//!
//! 1. Pick a sandbox once: [`Sandbox::new`] with [`SandboxOptions`] (`kind`: process, container
//!    or auto; for containers the `helper` program, see below). [`Sandbox::kind`] and
//!    [`Sandbox::reason`] say what was picked and why. `Sandbox::new` may run a trial container
//!    (blocking, tens of milliseconds): call it before or outside the async hot path.
//! 2. Describe the function: [`FunctionSpec`] = the schema's `ResolvedBinding` (limits, env,
//!    concurrency, timeouts) + runtime + handler + bundle folder + device + revision.
//! 3. Triggered binding: [`Pool::start`] → [`Pool::invoke`]`(&Event) -> Result<Reply, InvokeError>`,
//!    [`Pool::stats`], [`Pool::stop`]. Continuous binding: [`Continuous::start`] →
//!    [`Continuous::state`] / [`Continuous::watch`], [`Continuous::stop`]; what it publishes goes
//!    to a [`MessageSink`].
//! 4. Function output arrives line by line in the [`LogSink`] given to either.
//! 5. On a device, give [`SandboxOptions::records`] a folder that survives a crash and call
//!    [`Sandbox::sweep_leftovers`] once at start: what a runtime that died left running is
//!    killed before anything starts again.
//!
//! No instance outlives the runtime: each one is SIGKILLed by the kernel when the runtime's
//! process dies (a parent-death signal; a container's helper kills its container when its
//! control pipe closes), and what an instance started itself is found at the next start through
//! the records.
//!
//! `Pool::start` and `Continuous::start` spawn tasks: call them inside a tokio runtime (with
//! the `time`, `net`, `process` drivers enabled, i.e. `enable_all`).
//!
//! ```no_run
//! # async fn demo(spec: edgefn_runtime::FunctionSpec) -> Result<(), Box<dyn std::error::Error>> {
//! use edgefn_runtime::{Event, LogSink, Pool, PoolOptions, Sandbox};
//! let pool = Pool::start(spec, PoolOptions::default(), &Sandbox::process(), LogSink::discard())?;
//! let reply = pool.invoke(&Event::json("sensors/t", serde_json::json!({"t": 41}))).await?;
//! println!("{:?} and {} messages to publish", reply.result, reply.publish.len());
//! pool.stop().await;
//! # Ok(()) }
//! ```
//!
//! # Containers
//!
//! libcontainer forks, which is unsafe from a multi-threaded (tokio) process, so each container
//! is created by a helper process: either the `edgefn-sandbox-helper` binary of this crate, or
//! any binary that calls [`sandbox_helper_main_if_requested`] first thing in `main` (then pass
//! its own path, e.g. `std::env::current_exe()`, as [`SandboxOptions::helper`]).
//!
//! # Errors
//!
//! [`InvokeError`] says what happened to an invocation: the handler's own error (instance kept),
//! timeout, crash, out of memory (instance replaced), overload, failure to start
//! ([`StartError`]: init error, handshake/version mismatch, sandbox failure), or stop.
//!
//! This crate never prints and never reads the environment; only the helper reads its
//! arguments.

mod continuous;
mod error;
mod function;
mod instance;
mod launch;
mod log;
mod pool;
pub mod protocol;
mod sandbox;
pub mod shim;

pub use continuous::{Continuous, ContinuousOptions, ContinuousState, MessageSink};
pub use error::{Exit, HandlerError, InvokeError, StartError};
pub use function::{Event, FunctionSpec, Message, Reply, SECRETS_DIR_ENV, SECRETS_MOUNT};
pub use log::{LogLine, LogSink, Stream};
pub use pool::{Pool, PoolOptions, PoolStats};
pub use protocol::{PROTOCOL_VERSION, Payload};
pub use sandbox::devices::{missing_device_nodes, missing_sentence};
pub use sandbox::helper::sandbox_helper_main_if_requested;
pub use sandbox::{Sandbox, SandboxError, SandboxKind, SandboxOptions};
pub use shim::Interpreters;

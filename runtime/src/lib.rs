//! Runs edgefn functions: the invocation protocol, the python3 and node shims, the process and
//! container sandboxes, the warm pool and the continuous supervisor.

pub mod continuous;
pub mod error;
pub mod function;
mod instance;
mod launch;
pub mod log;
pub mod pool;
pub mod protocol;
pub mod sandbox;
pub mod shim;

pub use continuous::{Continuous, ContinuousOptions, ContinuousState, MessageSink};
pub use error::{Exit, HandlerError, InvokeError, StartError};
pub use function::{Event, FunctionSpec, Message, Reply};
pub use log::{LogLine, LogSink, Stream};
pub use pool::{Pool, PoolOptions, PoolStats};
pub use protocol::{PROTOCOL_VERSION, Payload};
pub use sandbox::helper::sandbox_helper_main_if_requested;
pub use sandbox::{Sandbox, SandboxError, SandboxKind, SandboxOptions};
pub use shim::Interpreters;

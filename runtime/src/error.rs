//! Why an invocation or an instance failed.

use crate::protocol::{ProtocolError, WireError};

/// How a process ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Exit {
    /// Exit code, when it exited.
    pub code: Option<i32>,
    /// Signal number, when a signal killed it.
    pub signal: Option<i32>,
}

impl Exit {
    pub(crate) fn from_status(s: std::process::ExitStatus) -> Exit {
        use std::os::unix::process::ExitStatusExt as _;
        Exit {
            code: s.code(),
            signal: s.signal(),
        }
    }

    /// Whether it exited with status 0.
    pub fn success(&self) -> bool {
        self.code == Some(0)
    }
}

impl std::fmt::Display for Exit {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match (self.code, self.signal) {
            (Some(c), _) => write!(f, "exit code {c}"),
            (None, Some(s)) => match nix::sys::signal::Signal::try_from(s) {
                Ok(sig) => write!(f, "killed by signal {s} ({})", sig.as_str()),
                Err(_) => write!(f, "killed by signal {s}"),
            },
            (None, None) => f.write_str("unknown exit status"),
        }
    }
}

/// A handler's failure, as the function reported it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{kind}: {message}")]
pub struct HandlerError {
    /// Error type, e.g. the exception class (`ValueError`).
    pub kind: String,
    /// Its message.
    pub message: String,
    /// Traceback, when the language has one (also written to the logs).
    pub traceback: Option<String>,
}

impl From<WireError> for HandlerError {
    fn from(e: WireError) -> Self {
        HandlerError {
            kind: e.kind,
            message: e.message,
            traceback: e.traceback,
        }
    }
}

/// Why an invocation failed.
#[derive(Debug, thiserror::Error)]
pub enum InvokeError {
    /// The handler raised or returned an error; the instance stays warm.
    #[error("the handler failed: {0}")]
    Handler(HandlerError),
    /// The invocation outlived its timeout; the instance was killed.
    #[error("timed out after {timeout_ms} ms; the instance was killed")]
    Timeout {
        /// The timeout that applied.
        timeout_ms: u64,
    },
    /// The instance died while handling the event; it will be replaced.
    #[error("the instance crashed ({exit})")]
    Crashed {
        /// How it ended.
        exit: Exit,
    },
    /// The instance ran out of memory; it will be replaced.
    #[error("the instance ran out of memory (limit {limit_bytes} bytes; {exit})")]
    OutOfMemory {
        /// The memory limit.
        limit_bytes: u64,
        /// How it ended.
        exit: Exit,
    },
    /// The event does not fit in one frame ([`crate::protocol::MAX_FRAME`]); nothing was sent.
    #[error("the event is too large: {0}")]
    EventTooLarge(ProtocolError),
    /// Every instance is busy and the queue is full.
    #[error("overloaded: {concurrency} instances busy and {queued} invocations queued (the limit)")]
    Overloaded {
        /// Instances allowed.
        concurrency: u32,
        /// Invocations waiting.
        queued: usize,
    },
    /// An instance could not be started.
    #[error(transparent)]
    Start(#[from] StartError),
    /// The instance broke the protocol; it was killed.
    #[error("the instance broke the protocol: {0}")]
    Protocol(ProtocolError),
    /// The pool is stopping.
    #[error("the function is stopping")]
    Stopped,
}

/// Why an instance could not be started.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// The handler could not be loaded (an import error, a missing export...).
    #[error("the function failed to initialize: {0}")]
    Init(HandlerError),
    /// The sandbox could not be set up or the program not run.
    #[error("cannot start the function: {0}")]
    Sandbox(String),
    /// The instance exited before saying hello.
    #[error("the instance exited before it was ready ({exit})")]
    ExitedEarly {
        /// How it ended.
        exit: Exit,
    },
    /// The instance did not say hello in time.
    #[error("the instance did not become ready within {timeout_ms} ms")]
    Timeout {
        /// The start timeout.
        timeout_ms: u64,
    },
    /// Handshake failure, such as a protocol version mismatch.
    #[error("handshake failed: {0}")]
    Handshake(ProtocolError),
    /// Ran out of memory while starting.
    #[error("the instance ran out of memory while starting (limit {limit_bytes} bytes; {exit})")]
    OutOfMemory {
        /// The memory limit.
        limit_bytes: u64,
        /// How it ended.
        exit: Exit,
    },
}

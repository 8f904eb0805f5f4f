//! Function output: every line an instance writes to stdout or stderr becomes a [`LogLine`]
//! delivered to the caller's [`LogSink`]. The runtime itself never prints.

use std::sync::Arc;

/// Which stream a line came from: the schema's [`LogStream`](edgefn_schema::wire::LogStream),
/// so that a line keeps one spelling (`stdout`, `stderr`) from the instance to the cloud.
pub use edgefn_schema::wire::LogStream as Stream;

/// One line of a function's output, without its line ending.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogLine {
    /// Function name.
    pub function: Arc<str>,
    /// Binding name.
    pub binding: Arc<str>,
    /// Instance number, unique within a pool or supervisor.
    pub instance: u64,
    /// Where the line was written.
    pub stream: Stream,
    /// The text (invalid UTF-8 replaced; lines longer than 64 KiB are split).
    pub line: String,
}

/// Longest line delivered in one piece (64 KiB).
pub(crate) const MAX_LINE: usize = 64 * 1024;

/// Receives log lines; called from the runtime's tasks, so it must not block for long.
#[derive(Clone)]
pub struct LogSink(Arc<dyn Fn(LogLine) + Send + Sync>);

impl LogSink {
    /// A sink calling `f` for each line.
    pub fn new(f: impl Fn(LogLine) + Send + Sync + 'static) -> LogSink {
        LogSink(Arc::new(f))
    }

    /// A sink that drops everything.
    pub fn discard() -> LogSink {
        LogSink::new(|_| {})
    }

    /// A sink sending lines into an unbounded channel (dropped once the receiver is gone).
    pub fn channel() -> (LogSink, tokio::sync::mpsc::UnboundedReceiver<LogLine>) {
        let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
        (
            LogSink::new(move |l| {
                let _ = tx.send(l);
            }),
            rx,
        )
    }

    pub(crate) fn emit(&self, line: LogLine) {
        (self.0)(line)
    }
}

impl std::fmt::Debug for LogSink {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("LogSink")
    }
}

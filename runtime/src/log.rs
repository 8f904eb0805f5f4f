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

impl LogLine {
    /// The record a device ships and serves for this line (`edgefn/<d>/logs/<binding>`),
    /// written at `ts_ms` (ms since the Unix epoch, e.g. `edgefn_os::time::now_ms()`).
    pub fn to_record(&self, ts_ms: u64) -> edgefn_schema::wire::LogRecord {
        edgefn_schema::wire::LogRecord {
            ts_ms,
            binding: self.binding.to_string(),
            stream: self.stream,
            line: self.line.clone(),
            dropped: None,
        }
    }
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_line_becomes_the_record_a_device_ships() {
        let line = LogLine {
            function: "temp-filter".into(),
            binding: "temp-filter".into(),
            instance: 3,
            stream: Stream::Stderr,
            line: "hot".into(),
        };
        assert_eq!(
            String::from_utf8(line.to_record(5).to_json()).unwrap(),
            r#"{"ts_ms":5,"binding":"temp-filter","stream":"stderr","line":"hot"}"#
        );
    }
}

//! One running instance of a function: its sandboxed process, its channel, and its log readers.
//!
//! An instance handles one event at a time ([`Instance::call`]). Any failure other than the
//! handler's own error leaves the instance dead: `call` kills it, collects its exit status and
//! says why in the returned error.

use std::os::unix::net::UnixStream as StdUnixStream;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use nix::sys::signal::Signal;
use tokio::io::{AsyncBufReadExt as _, AsyncRead, BufReader};
use tokio::net::UnixStream;
use tokio::task::JoinHandle;

use crate::error::{Exit, InvokeError, StartError};
use crate::function::{Event, Message, Reply};
use crate::launch::Launch;
use crate::log::{LogLine, LogSink, MAX_LINE, Stream};
use crate::protocol::{
    self, EXIT_OUT_OF_MEMORY, Encoding, FromInstance, PROTOCOL_VERSION, Payload, ProtocolError,
    WireContext,
};

/// How long a crashed instance's log readers get to deliver its last lines.
const LOG_DRAIN: Duration = Duration::from_millis(500);
/// How long to wait for a process that closed its channel to exit by itself.
const EXIT_WAIT: Duration = Duration::from_millis(500);

/// A running instance.
#[derive(Debug)]
pub(crate) struct Instance {
    process: crate::launch::Running,
    chan: UnixStream,
    frame: Vec<u8>,
    body: Vec<u8>,
    logs: Vec<JoinHandle<()>>,
    oom_hint: Arc<AtomicBool>,
    next_call: u64,
    memory_limit: u64,
    dead: bool,
}

impl Instance {
    /// Starts an instance and waits for its `hello`.
    pub(crate) async fn start(
        launch: &Launch,
        id: u64,
        start_timeout: Duration,
    ) -> Result<Instance, StartError> {
        let (ours, theirs) = StdUnixStream::pair()
            .map_err(|e| StartError::Sandbox(format!("cannot create the channel: {e}")))?;
        let spawned = launch
            .spawn(id, theirs.into())
            .map_err(|e| StartError::Sandbox(e.to_string()))?;
        ours.set_nonblocking(true)
            .map_err(|e| StartError::Sandbox(e.to_string()))?;
        let chan = UnixStream::from_std(ours).map_err(|e| StartError::Sandbox(e.to_string()))?;
        let oom_hint = Arc::new(AtomicBool::new(false));
        let logs = vec![
            spawn_log_reader(spawned.stdout, launch, id, Stream::Stdout, oom_hint.clone()),
            spawn_log_reader(spawned.stderr, launch, id, Stream::Stderr, oom_hint.clone()),
        ];
        let mut inst = Instance {
            process: spawned.running,
            chan,
            frame: Vec::with_capacity(1024),
            body: Vec::with_capacity(1024),
            logs,
            oom_hint,
            next_call: 1,
            memory_limit: launch.spec.binding.memory_bytes,
            dead: false,
        };
        let first = tokio::time::timeout(
            start_timeout,
            protocol::read_frame(&mut inst.chan, &mut inst.body),
        )
        .await;
        let failure = match first {
            Err(_) => StartError::Timeout {
                timeout_ms: start_timeout.as_millis() as u64,
            },
            Ok(Err(ProtocolError::Closed)) => {
                let (exit, oom, error) = inst.reap().await;
                if let Some(e) = error {
                    StartError::Sandbox(e)
                } else if oom {
                    StartError::OutOfMemory {
                        limit_bytes: inst.memory_limit,
                        exit,
                    }
                } else {
                    StartError::ExitedEarly { exit }
                }
            }
            Ok(Err(e)) => StartError::Handshake(e),
            Ok(Ok(())) => match protocol::decode_from_instance(&inst.body) {
                Ok(FromInstance::Hello { protocol, .. }) if protocol == PROTOCOL_VERSION => {
                    return Ok(inst);
                }
                Ok(FromInstance::Hello { protocol, .. })
                | Ok(FromInstance::InitError {
                    protocol: Some(protocol),
                    ..
                }) if protocol != PROTOCOL_VERSION => {
                    StartError::Handshake(ProtocolError::VersionMismatch {
                        instance: protocol,
                        runtime: PROTOCOL_VERSION,
                    })
                }
                Ok(FromInstance::InitError { error, .. }) => StartError::Init(error.into()),
                Ok(other) => StartError::Handshake(ProtocolError::Unexpected(format!(
                    "expected hello, got {}",
                    frame_name(&other)
                ))),
                Err(e) => StartError::Handshake(e),
            },
        };
        inst.kill().await;
        Err(failure)
    }

    /// Handles one event. `Err(InvokeError::Handler)` and `Err(InvokeError::EventTooLarge)`
    /// leave the instance warm; any other error means it was killed.
    pub(crate) async fn call(
        &mut self,
        event: &Event,
        launch: &Launch,
        timeout: Duration,
    ) -> Result<Reply, InvokeError> {
        let id = self.next_call;
        self.next_call += 1;
        let deadline_ms = edgefn_os::time::now_ms()
            .saturating_add(u64::try_from(timeout.as_millis()).unwrap_or(u64::MAX));
        let encoded;
        let (payload, encoding) = match &event.payload {
            Payload::Json(v) => (v, Encoding::Json),
            Payload::Bytes(_) => {
                encoded = event.payload.to_wire().0;
                (&encoded, Encoding::Base64)
            }
        };
        let msg = InvokeFrame {
            kind: "invoke",
            id,
            topic: &event.topic,
            payload,
            encoding,
            deadline_ms,
            context: &launch.context,
        };
        if let Err(e) = protocol::encode(&msg, &mut self.frame) {
            // Our own frame is bad (too large): the instance is untouched.
            return Err(InvokeError::EventTooLarge(e));
        }
        let round_trip = async {
            protocol::write_frame(&mut self.chan, &self.frame).await?;
            protocol::read_frame(&mut self.chan, &mut self.body).await
        };
        match tokio::time::timeout(timeout, round_trip).await {
            Err(_) => {
                self.kill().await;
                Err(InvokeError::Timeout {
                    timeout_ms: timeout.as_millis() as u64,
                })
            }
            Ok(Err(ProtocolError::Closed)) => Err(self.crashed().await),
            Ok(Err(ProtocolError::Io(e))) if e.kind() == std::io::ErrorKind::BrokenPipe => {
                Err(self.crashed().await)
            }
            Ok(Err(e)) => {
                self.kill().await;
                Err(InvokeError::Protocol(e))
            }
            Ok(Ok(())) => match self.reply(id) {
                Ok(r) => r,
                Err(e) => {
                    self.kill().await;
                    Err(InvokeError::Protocol(e))
                }
            },
        }
    }

    fn reply(&self, id: u64) -> Result<Result<Reply, InvokeError>, ProtocolError> {
        match protocol::decode_from_instance(&self.body)? {
            FromInstance::Result {
                id: got,
                result,
                encoding,
                error,
                publish,
            } => {
                if got != id {
                    return Err(ProtocolError::Unexpected(format!(
                        "result for invocation {got}, expected {id}"
                    )));
                }
                if let Some(e) = error {
                    return Ok(Err(InvokeError::Handler(e.into())));
                }
                let publish = publish
                    .into_iter()
                    .map(Message::from_wire)
                    .collect::<Result<Vec<_>, _>>()?;
                Ok(Ok(Reply {
                    result: Payload::from_wire(result, encoding)?,
                    publish,
                }))
            }
            other => Err(ProtocolError::Unexpected(format!(
                "expected a result, got {}",
                frame_name(&other)
            ))),
        }
    }

    async fn crashed(&mut self) -> InvokeError {
        let (exit, oom, _) = self.reap().await;
        if oom {
            InvokeError::OutOfMemory {
                limit_bytes: self.memory_limit,
                exit,
            }
        } else {
            InvokeError::Crashed { exit }
        }
    }

    /// Waits briefly for a process that closed its channel, kills what remains of its group,
    /// drains its logs; returns its exit, whether it ran out of memory, and the sandbox's error.
    async fn reap(&mut self) -> (Exit, bool, Option<String>) {
        let exit = match tokio::time::timeout(EXIT_WAIT, self.process.wait()).await {
            Ok(exit) => {
                self.process.signal(Signal::SIGKILL);
                exit
            }
            Err(_) => {
                self.process.signal(Signal::SIGKILL);
                self.process.wait().await
            }
        };
        self.dead = true;
        self.drain_logs().await;
        let oom = exit.exit.code == Some(EXIT_OUT_OF_MEMORY)
            || exit.oom_killed
            || self.oom_hint.load(Ordering::Relaxed);
        (exit.exit, oom, exit.error)
    }

    async fn drain_logs(&mut self) {
        for h in self.logs.drain(..) {
            let abort = h.abort_handle();
            if tokio::time::timeout(LOG_DRAIN, h).await.is_err() {
                abort.abort();
            }
        }
    }

    /// Kills the instance's process group and waits for it.
    pub(crate) async fn kill(&mut self) -> Exit {
        self.process.signal(Signal::SIGKILL);
        let exit = self.process.wait().await;
        self.dead = true;
        self.drain_logs().await;
        exit.exit
    }
}

impl Drop for Instance {
    fn drop(&mut self) {
        if !self.dead {
            self.process.signal(Signal::SIGKILL);
        }
        for h in &self.logs {
            h.abort();
        }
    }
}

/// [`protocol::ToInstance::Invoke`] serialized from borrowed parts (the hot path clones nothing).
#[derive(serde::Serialize)]
struct InvokeFrame<'a> {
    #[serde(rename = "type")]
    kind: &'static str,
    id: u64,
    topic: &'a str,
    payload: &'a serde_json::Value,
    #[serde(skip_serializing_if = "Encoding::is_json")]
    encoding: Encoding,
    deadline_ms: u64,
    context: &'a WireContext,
}

fn frame_name(f: &FromInstance) -> &'static str {
    match f {
        FromInstance::Hello { .. } => "hello",
        FromInstance::InitError { .. } => "init_error",
        FromInstance::Result { .. } => "result",
        FromInstance::Publish(_) => "publish",
    }
}

/// Reads `stream` line by line into the launch's log sink; notes lines that say the process ran
/// out of memory.
pub(crate) fn spawn_log_reader<R: AsyncRead + Unpin + Send + 'static>(
    pipe: R,
    launch: &Launch,
    instance: u64,
    stream: Stream,
    oom_hint: Arc<AtomicBool>,
) -> JoinHandle<()> {
    let sink: LogSink = launch.log.clone();
    let function = launch.function.clone();
    let binding = launch.binding.clone();
    tokio::spawn(async move {
        let mut reader = BufReader::with_capacity(8192, pipe);
        let mut line = Vec::new();
        loop {
            line.clear();
            match read_line_capped(&mut reader, &mut line).await {
                Ok(0) | Err(_) => return,
                Ok(_) => {}
            }
            while line.last().is_some_and(|b| *b == b'\n' || *b == b'\r') {
                line.pop();
            }
            let text = String::from_utf8_lossy(&line).into_owned();
            if stream == Stream::Stderr && says_out_of_memory(&text) {
                oom_hint.store(true, Ordering::Relaxed);
            }
            sink.emit(LogLine {
                function: function.clone(),
                binding: binding.clone(),
                instance,
                stream,
                line: text,
            });
        }
    })
}

async fn read_line_capped<R: AsyncRead + Unpin>(
    r: &mut BufReader<R>,
    line: &mut Vec<u8>,
) -> std::io::Result<usize> {
    loop {
        let buf = r.fill_buf().await?;
        if buf.is_empty() {
            return Ok(line.len());
        }
        let room = MAX_LINE - line.len();
        let (take, done) = match buf.iter().take(room).position(|b| *b == b'\n') {
            Some(i) => (i + 1, true),
            None if buf.len() >= room => (room, true),
            None => (buf.len(), false),
        };
        line.extend_from_slice(&buf[..take]);
        r.consume(take);
        if done {
            return Ok(line.len());
        }
    }
}

/// Whether a line of stderr is a runtime's out-of-memory report: python's `MemoryError`, V8's
/// heap exhaustion, Rust's allocation failure.
fn says_out_of_memory(line: &str) -> bool {
    line == "MemoryError"
        || line.starts_with("MemoryError:")
        || line.contains("JavaScript heap out of memory")
        || (line.starts_with("memory allocation of ") && line.ends_with(" failed"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn borrowed_invoke_frame_is_a_to_instance_invoke() {
        let context = WireContext {
            function: "f".into(),
            binding: "b".into(),
            device: "d".into(),
            revision: 2,
        };
        let payload = serde_json::json!({"x": [1, 2]});
        let frame = InvokeFrame {
            kind: "invoke",
            id: 5,
            topic: "a/b",
            payload: &payload,
            encoding: Encoding::Json,
            deadline_ms: 9,
            context: &context,
        };
        let json = serde_json::to_vec(&frame).expect("encodes");
        let back: protocol::ToInstance = protocol::decode(&json).expect("decodes");
        assert_eq!(
            back,
            protocol::ToInstance::Invoke {
                id: 5,
                topic: "a/b".into(),
                payload,
                encoding: Encoding::Json,
                deadline_ms: 9,
                context,
            }
        );
    }

    #[test]
    fn recognises_out_of_memory_lines() {
        assert!(says_out_of_memory("MemoryError"));
        assert!(says_out_of_memory(
            "FATAL ERROR: Reached heap limit Allocation failed - JavaScript heap out of memory"
        ));
        assert!(says_out_of_memory(
            "memory allocation of 1048576 bytes failed"
        ));
        assert!(!says_out_of_memory("handling MemoryError gracefully"));
    }
}

//! One running instance of a function: its sandboxed process, its channel, and its log readers.
//!
//! An instance handles one event at a time ([`Instance::call`]). Any failure other than the
//! handler's own error leaves the instance dead: `call` kills it, collects its exit status and
//! says why in the returned error.
//!
//! A plain program (`interface: stdio` or `lines`, an exec function that does not speak the
//! framed protocol) has the channel as its stdin and stdout and never says hello. With `stdio` it
//! gets one event — the payload's bytes, then end of file — and its stdout up to end of file is
//! the result, its exit status 0 the success (OpenFaaS's classic watchdog contract); the instance
//! is then spent, and the next event starts another (with the event's topic in `EDGEFN_TOPIC`).
//! With `lines` it stays warm: each event is one line of JSON, `{"topic": …, "payload": …}` as
//! the python and node handlers see it, and each result one line.

use std::os::unix::net::UnixStream as StdUnixStream;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use edgefn_schema::Interface;
use nix::sys::signal::Signal;
use tokio::io::{
    AsyncBufReadExt as _, AsyncRead, AsyncReadExt as _, AsyncWriteExt as _, BufReader,
};
use tokio::net::UnixStream;
use tokio::task::JoinHandle;

use crate::error::{Exit, HandlerError, InvokeError, StartError};
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
    /// `Protocol`, or how a plain program takes events.
    interface: Interface,
    /// Bytes a `lines` program wrote after the end of its last result line.
    pending: Vec<u8>,
    /// A `stdio` program that handled its one event.
    spent: bool,
    /// Its instance number.
    id: u64,
}

impl Instance {
    /// Starts an instance and waits for its `hello` (a plain program says none); `extra_env`
    /// is added to its environment.
    pub(crate) async fn start(
        launch: &Launch,
        id: u64,
        start_timeout: Duration,
        extra_env: &[(String, String)],
    ) -> Result<Instance, StartError> {
        let (ours, theirs) = StdUnixStream::pair()
            .map_err(|e| StartError::Sandbox(format!("cannot create the channel: {e}")))?;
        let spawned = launch
            .spawn(id, theirs.into(), extra_env)
            .map_err(|e| StartError::Sandbox(e.to_string()))?;
        ours.set_nonblocking(true)
            .map_err(|e| StartError::Sandbox(e.to_string()))?;
        let chan = UnixStream::from_std(ours).map_err(|e| StartError::Sandbox(e.to_string()))?;
        let oom_hint = Arc::new(AtomicBool::new(false));
        let mut logs = vec![spawn_log_reader(
            spawned.stderr,
            launch,
            id,
            Stream::Stderr,
            oom_hint.clone(),
        )];
        if let Some(stdout) = spawned.stdout {
            logs.push(spawn_log_reader(
                stdout,
                launch,
                id,
                Stream::Stdout,
                oom_hint.clone(),
            ));
        }
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
            interface: if launch.plain {
                launch.spec.interface
            } else {
                Interface::Protocol
            },
            pending: Vec::new(),
            spent: false,
            id,
        };
        if launch.plain {
            // A plain program is ready once started; one that cannot start failed in `spawn`.
            return Ok(inst);
        }
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
        if self.interface != Interface::Protocol {
            return self.call_plain(event, timeout).await;
        }
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
            Err(_) => Err(self.broken(None, timeout).await),
            Ok(Err(e)) => Err(self.broken(Some(e), timeout).await),
            Ok(Ok(())) => match self.reply(id) {
                Ok(r) => r,
                Err(e) => {
                    self.kill().await;
                    Err(InvokeError::Protocol(e))
                }
            },
        }
    }

    /// What a failed exchange with the instance means: past `timeout` (`None`) or a broken
    /// protocol it is killed; a channel it closed is a crash (with its exit status).
    async fn broken(&mut self, failure: Option<ProtocolError>, timeout: Duration) -> InvokeError {
        match failure {
            None => {
                self.kill().await;
                InvokeError::Timeout {
                    timeout_ms: timeout.as_millis() as u64,
                }
            }
            Some(ProtocolError::Closed) => self.crashed().await,
            Some(ProtocolError::Io(e)) if e.kind() == std::io::ErrorKind::BrokenPipe => {
                self.crashed().await
            }
            Some(e) => {
                self.kill().await;
                InvokeError::Protocol(e)
            }
        }
    }

    /// Whether the instance can take another event (a `stdio` program takes one).
    pub(crate) fn reusable(&self) -> bool {
        !self.spent && !self.dead
    }

    /// Checks a warm instance before it is given an event: a `lines` program's output since its
    /// last answer is logged (a banner, a stray line: never taken for the next event's result),
    /// and one that has exited is reported dead, so that the event goes to a fresh instance
    /// instead of failing.
    pub(crate) fn still_warm(&mut self, launch: &Launch) -> bool {
        if self.interface != Interface::Lines {
            return true;
        }
        let mut chunk = [0u8; 8192];
        let alive = loop {
            match self.chan.try_read(&mut chunk) {
                Ok(0) => break false,
                Ok(n) => self.pending.extend_from_slice(&chunk[..n]),
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => break true,
                Err(_) => break false,
            }
        };
        if !self.pending.is_empty() {
            let text = String::from_utf8_lossy(&self.pending).into_owned();
            self.pending.clear();
            for line in text.lines() {
                launch.log.emit(LogLine {
                    function: launch.function.clone(),
                    binding: launch.binding.clone(),
                    instance: self.id,
                    stream: Stream::Stdout,
                    line: format!("(not an answer: printed between events) {line}"),
                });
            }
        }
        alive
    }

    /// One event through a plain program (see the module documentation).
    async fn call_plain(&mut self, event: &Event, timeout: Duration) -> Result<Reply, InvokeError> {
        let input = plain_input(event, self.interface)?;
        let stdio = self.interface == Interface::Stdio;
        let (mut rx, mut tx) = self.chan.split();
        let body = &mut self.body;
        let pending = &mut self.pending;
        body.clear();
        let exchange = async {
            let write = async {
                // A program may exit without reading its input (`echo hi`): what it wrote
                // still counts, so a failed write is not the event's failure.
                let written = tx.write_all(&input).await;
                if stdio {
                    let _ = tx.shutdown().await;
                }
                written
            };
            let read = async {
                if stdio {
                    read_to_end_capped(&mut rx, body).await
                } else {
                    read_line_into(&mut rx, pending, body).await
                }
            };
            let (written, read) = tokio::join!(write, read);
            match (stdio, written, read) {
                (_, _, Err(e)) => Err(e),
                (false, Err(e), _) => Err(ProtocolError::Io(e)),
                _ => Ok(()),
            }
        };
        match tokio::time::timeout(timeout, exchange).await {
            Err(_) => Err(self.broken(None, timeout).await),
            Ok(Err(ProtocolError::TooLarge { len })) => {
                self.kill().await;
                Err(InvokeError::Handler(HandlerError {
                    kind: "ResultTooLarge".into(),
                    message: format!(
                        "the program wrote {len} bytes or more for one result; a result is at most {} bytes (16 MiB). The program was stopped.",
                        protocol::MAX_FRAME
                    ),
                    traceback: None,
                }))
            }
            Ok(Err(e)) => Err(self.broken(Some(e), timeout).await),
            Ok(Ok(())) if stdio => {
                self.spent = true;
                let (exit, oom, error) = self.reap().await;
                if oom {
                    return Err(InvokeError::OutOfMemory {
                        limit_bytes: self.memory_limit,
                        exit,
                    });
                }
                if let Some(error) = error {
                    return Err(InvokeError::Protocol(ProtocolError::Unexpected(error)));
                }
                if !exit.success() {
                    return Err(InvokeError::Handler(HandlerError {
                        kind: "ExitStatus".into(),
                        message: format!(
                            "the program ended unsuccessfully ({exit}); its stderr is in the logs"
                        ),
                        traceback: None,
                    }));
                }
                Ok(plain_reply(std::mem::take(&mut self.body)))
            }
            Ok(Ok(())) => Ok(plain_reply(std::mem::take(&mut self.body))),
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

/// What a plain program reads for one event: with `stdio` the payload's bytes (a string as its
/// text, other JSON compact, bytes as they are); with `lines` the event `{"topic", "payload"}`
/// as one line of compact JSON (which never holds a raw newline). Bytes cannot be a line: that
/// event fails, the instance stays.
fn plain_input(event: &Event, interface: Interface) -> Result<Vec<u8>, InvokeError> {
    match (&event.payload, interface) {
        (Payload::Json(serde_json::Value::String(s)), Interface::Stdio) => Ok(s.clone().into()),
        (Payload::Json(v), Interface::Stdio) => Ok(serde_json::to_vec(v).unwrap_or_default()),
        (Payload::Bytes(b), Interface::Stdio) => Ok(b.clone()),
        (Payload::Json(v), _) => {
            let mut line =
                serde_json::to_vec(&serde_json::json!({"topic": event.topic, "payload": v}))
                    .unwrap_or_default();
            line.push(b'\n');
            Ok(line)
        }
        (Payload::Bytes(_), _) => Err(InvokeError::Handler(HandlerError {
            kind: "UnsupportedPayload".into(),
            message: "this event's payload is binary, and a `lines` program reads one line of \
                      JSON per event: send JSON or text, or use `interface: stdio`"
                .into(),
            traceback: None,
        })),
    }
}

/// A plain program's output as the result: by the payload contract (JSON when it is a JSON
/// document, else text, else bytes), one trailing newline removed.
fn plain_reply(mut out: Vec<u8>) -> Reply {
    if out.last() == Some(&b'\n') {
        out.pop();
        if out.last() == Some(&b'\r') {
            out.pop();
        }
    }
    Reply {
        result: Payload::from_message(out),
        publish: Vec::new(),
    }
}

/// Reads a `stdio` program's stdout to its end, at most [`protocol::MAX_FRAME`] bytes. A reset
/// (the program exited leaving input unread) is an end like any other.
async fn read_to_end_capped<R: AsyncRead + Unpin>(
    r: &mut R,
    out: &mut Vec<u8>,
) -> Result<(), ProtocolError> {
    let mut chunk = [0u8; 8192];
    loop {
        let n = match r.read(&mut chunk).await {
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => 0,
            Err(e) => return Err(ProtocolError::Io(e)),
        };
        if n == 0 {
            return Ok(());
        }
        if out.len() + n > protocol::MAX_FRAME {
            return Err(ProtocolError::TooLarge { len: out.len() + n });
        }
        out.extend_from_slice(&chunk[..n]);
    }
}

/// Reads one line of a `lines` program into `line` (without its newline), keeping what follows
/// it in `pending`; at most [`protocol::MAX_FRAME`] bytes. End of file first is `Closed`.
async fn read_line_into<R: AsyncRead + Unpin>(
    r: &mut R,
    pending: &mut Vec<u8>,
    line: &mut Vec<u8>,
) -> Result<(), ProtocolError> {
    let mut chunk = [0u8; 8192];
    loop {
        if let Some(i) = pending.iter().position(|b| *b == b'\n') {
            line.extend_from_slice(&pending[..i]);
            pending.drain(..=i);
            return Ok(());
        }
        if pending.len() > protocol::MAX_FRAME {
            return Err(ProtocolError::TooLarge { len: pending.len() });
        }
        let n = match r.read(&mut chunk).await {
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => 0,
            Err(e) => return Err(ProtocolError::Io(e)),
        };
        if n == 0 {
            return Err(ProtocolError::Closed);
        }
        pending.extend_from_slice(&chunk[..n]);
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

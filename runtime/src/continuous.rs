//! The supervisor of a continuous binding: exactly one instance, restarted whenever it exits,
//! after an exponential backoff (1 s doubling to 5 min by default, reset once an instance stayed
//! up long enough). Its [`ContinuousState`] is visible at any time; several quick failures in a
//! row show as [`ContinuousState::CrashLoop`] (it keeps retrying at the maximum pace the backoff
//! allows). Stopping sends SIGTERM, then SIGKILL after a grace period.
//!
//! A continuous instance gets the same channel on fd 3 as a triggered one, but nothing is asked
//! of it: it may say `hello` (checked) and send `publish` frames at any time, which go to the
//! caller's [`MessageSink`]. The python and node shims call the handler once as
//! `handler(context)`; when it returns, the instance exits and is restarted.

use std::os::unix::net::UnixStream as StdUnixStream;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use nix::sys::signal::Signal;
use tokio::net::UnixStream;
use tokio::sync::{oneshot, watch};
use tokio::task::JoinHandle;
use tokio::time::Instant;

use edgefn_schema::api::FunctionState;

use crate::error::{Exit, StartError};
use crate::function::{FunctionSpec, Message};
use crate::instance::spawn_log_reader;
use crate::launch::{Killer, Launch};
use crate::log::{LogSink, Stream};
use crate::protocol::{self, EXIT_OUT_OF_MEMORY, FromInstance, PROTOCOL_VERSION, ProtocolError};
use crate::sandbox::Sandbox;

/// Timings of a supervisor.
#[derive(Debug, Clone)]
pub struct ContinuousOptions {
    /// First delay before a restart (default 1 s).
    pub backoff_initial: Duration,
    /// Longest delay (default 5 min).
    pub backoff_max: Duration,
    /// An instance that stayed up this long resets the backoff (default 60 s).
    pub reset_after: Duration,
    /// Consecutive quick failures after which the state says `CrashLoop` (default 5).
    pub crash_loop_after: u32,
    /// Time between SIGTERM and SIGKILL on stop (default 10 s).
    pub stop_grace: Duration,
}

impl Default for ContinuousOptions {
    fn default() -> Self {
        ContinuousOptions {
            backoff_initial: Duration::from_secs(1),
            backoff_max: Duration::from_secs(300),
            reset_after: Duration::from_secs(60),
            crash_loop_after: 5,
            stop_grace: Duration::from_secs(10),
        }
    }
}

/// Where a supervisor's state is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ContinuousState {
    /// Starting an instance.
    Starting {
        /// Restarts so far.
        restarts: u32,
    },
    /// An instance is running.
    Running {
        /// Since when.
        since: Instant,
        /// Restarts so far.
        restarts: u32,
    },
    /// The instance ended; the next one starts at `until`.
    Backoff {
        /// When the next instance starts.
        until: Instant,
        /// Restarts so far, this one included.
        restarts: u32,
        /// Why the last instance ended.
        reason: String,
    },
    /// Like `Backoff`, after several quick failures in a row.
    CrashLoop {
        /// When the next instance starts.
        until: Instant,
        /// Restarts so far, this one included.
        restarts: u32,
        /// Failures in a row.
        failures: u32,
        /// Why the last instance ended.
        reason: String,
    },
    /// Stopped on request.
    Stopped {
        /// How the last instance ended, if one ran.
        last_exit: Option<Exit>,
    },
}

impl ContinuousState {
    /// The state as a device reports it (`FunctionStatus::state`).
    pub fn kind(&self) -> FunctionState {
        match self {
            ContinuousState::Starting { .. } => FunctionState::Starting,
            ContinuousState::Running { .. } => FunctionState::Running,
            ContinuousState::Backoff { .. } => FunctionState::Backoff,
            ContinuousState::CrashLoop { .. } => FunctionState::CrashLoop,
            ContinuousState::Stopped { .. } => FunctionState::Stopped,
        }
    }

    /// `starting`, `running`, `backoff`, `crash_loop` or `stopped`: [`Self::kind`] as text.
    pub fn name(&self) -> &'static str {
        self.kind().as_str()
    }
}

/// Receives messages a continuous function publishes.
#[derive(Clone)]
pub struct MessageSink(Arc<dyn Fn(Message) + Send + Sync>);

impl MessageSink {
    /// A sink calling `f` for each message.
    pub fn new(f: impl Fn(Message) + Send + Sync + 'static) -> MessageSink {
        MessageSink(Arc::new(f))
    }

    /// A sink sending messages into an unbounded channel.
    pub fn channel() -> (MessageSink, tokio::sync::mpsc::UnboundedReceiver<Message>) {
        let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
        (
            MessageSink::new(move |m| {
                let _ = tx.send(m);
            }),
            rx,
        )
    }
}

impl std::fmt::Debug for MessageSink {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("MessageSink")
    }
}

/// The supervisor of one continuous binding. Dropping it stops the instance too (without
/// waiting); [`Continuous::stop`] waits.
#[derive(Debug)]
pub struct Continuous {
    state: watch::Receiver<ContinuousState>,
    stop: Option<oneshot::Sender<()>>,
    task: JoinHandle<Option<Exit>>,
}

impl Continuous {
    /// Starts supervising `spec` (a continuous binding).
    pub fn start(
        spec: FunctionSpec,
        options: ContinuousOptions,
        sandbox: &Sandbox,
        log: LogSink,
        publish: MessageSink,
    ) -> Result<Continuous, StartError> {
        let launch = Launch::new(spec, sandbox.clone(), log)?;
        let (state_tx, state) = watch::channel(ContinuousState::Starting { restarts: 0 });
        let (stop, stop_rx) = oneshot::channel();
        let task = tokio::spawn(supervise(launch, options, state_tx, stop_rx, publish));
        Ok(Continuous {
            state,
            stop: Some(stop),
            task,
        })
    }

    /// The current state.
    pub fn state(&self) -> ContinuousState {
        self.state.borrow().clone()
    }

    /// A receiver that sees every state change.
    pub fn watch(&self) -> watch::Receiver<ContinuousState> {
        self.state.clone()
    }

    /// Stops the instance (SIGTERM, then SIGKILL after the grace period) and the supervisor;
    /// returns how the last instance ended.
    pub async fn stop(mut self) -> Option<Exit> {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
        (&mut self.task).await.ok().flatten()
    }
}

async fn supervise(
    launch: Launch,
    opts: ContinuousOptions,
    state: watch::Sender<ContinuousState>,
    mut stop: oneshot::Receiver<()>,
    publish: MessageSink,
) -> Option<Exit> {
    let mut restarts = 0u32;
    let mut failures = 0u32;
    let mut last_exit = None;
    let mut instance_id = 0u64;
    loop {
        instance_id += 1;
        state.send_replace(ContinuousState::Starting { restarts });
        let since = Instant::now();
        let reason = match run_once(
            &launch,
            instance_id,
            &publish,
            &state,
            restarts,
            &mut stop,
            &opts,
        )
        .await
        {
            Run::Stopped(exit) => {
                let last = exit.or(last_exit);
                state.send_replace(ContinuousState::Stopped { last_exit: last });
                return last;
            }
            Run::Ended { exit, reason } => {
                last_exit = exit.or(last_exit);
                reason
            }
        };
        if since.elapsed() >= opts.reset_after {
            failures = 0;
        }
        failures = failures.saturating_add(1);
        restarts = restarts.saturating_add(1);
        let delay = opts
            .backoff_initial
            .saturating_mul(1u32 << (failures - 1).min(20))
            .min(opts.backoff_max);
        let until = Instant::now() + delay;
        state.send_replace(if failures >= opts.crash_loop_after {
            ContinuousState::CrashLoop {
                until,
                restarts,
                failures,
                reason,
            }
        } else {
            ContinuousState::Backoff {
                until,
                restarts,
                reason,
            }
        });
        tokio::select! {
            _ = tokio::time::sleep_until(until) => {}
            _ = &mut stop => {
                state.send_replace(ContinuousState::Stopped { last_exit });
                return last_exit;
            }
        }
    }
}

enum Run {
    Stopped(Option<Exit>),
    Ended { exit: Option<Exit>, reason: String },
}

async fn run_once(
    launch: &Launch,
    id: u64,
    publish: &MessageSink,
    state: &watch::Sender<ContinuousState>,
    restarts: u32,
    stop: &mut oneshot::Receiver<()>,
    opts: &ContinuousOptions,
) -> Run {
    let failed = |e: String| Run::Ended {
        exit: None,
        reason: format!("cannot start: {e}"),
    };
    let (ours, theirs) = match StdUnixStream::pair() {
        Ok(p) => p,
        Err(e) => return failed(e.to_string()),
    };
    let started = match launch.spawn(id, theirs.into()) {
        Ok(s) => s,
        Err(e) => return failed(e.to_string()),
    };
    let mut running = started.running;
    let oom_hint = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let logs = [
        spawn_log_reader(started.stdout, launch, id, Stream::Stdout, oom_hint.clone()),
        spawn_log_reader(started.stderr, launch, id, Stream::Stderr, oom_hint.clone()),
    ];
    let problem = Arc::new(Mutex::new(None::<String>));
    let frames = match ours
        .set_nonblocking(true)
        .and_then(|()| UnixStream::from_std(ours))
    {
        Ok(chan) => Some(tokio::spawn(read_frames(
            chan,
            publish.clone(),
            running.killer(),
            problem.clone(),
        ))),
        Err(e) => {
            *problem.lock().unwrap_or_else(|p| p.into_inner()) = Some(e.to_string());
            running.killer().kill();
            None
        }
    };
    state.send_replace(ContinuousState::Running {
        since: Instant::now(),
        restarts,
    });
    let stopped;
    let ended = tokio::select! {
        ended = running.wait() => { stopped = false; ended }
        _ = &mut *stop => {
            stopped = true;
            running.signal(Signal::SIGTERM);
            match tokio::time::timeout(opts.stop_grace, running.wait()).await {
                Ok(ended) => { running.signal(Signal::SIGKILL); ended }
                Err(_) => { running.signal(Signal::SIGKILL); running.wait().await }
            }
        }
    };
    // Whatever else the instance started goes with it.
    running.signal(Signal::SIGKILL);
    for h in logs {
        let abort = h.abort_handle();
        if tokio::time::timeout(Duration::from_millis(500), h)
            .await
            .is_err()
        {
            abort.abort();
        }
    }
    if let Some(f) = frames {
        f.abort();
    }
    if stopped {
        return Run::Stopped(Some(ended.exit));
    }
    let problem = problem.lock().unwrap_or_else(|p| p.into_inner()).take();
    let oom = ended.oom_killed
        || ended.exit.code == Some(EXIT_OUT_OF_MEMORY)
        || oom_hint.load(std::sync::atomic::Ordering::Relaxed);
    let reason = match problem.or(ended.error) {
        Some(p) => p,
        None if oom => format!(
            "ran out of memory (limit {} bytes; {})",
            launch.spec.binding.memory_bytes, ended.exit
        ),
        None => format!("exited ({})", ended.exit),
    };
    Run::Ended {
        exit: Some(ended.exit),
        reason,
    }
}

/// Reads a continuous instance's frames: checks `hello`, forwards `publish`, records an
/// `init_error`; a protocol violation kills the instance.
async fn read_frames(
    mut chan: UnixStream,
    publish: MessageSink,
    killer: Killer,
    problem: Arc<Mutex<Option<String>>>,
) {
    let mut body = Vec::new();
    let fail = |why: String| {
        *problem.lock().unwrap_or_else(|p| p.into_inner()) = Some(why);
        killer.kill();
    };
    loop {
        match protocol::read_frame(&mut chan, &mut body).await {
            Ok(()) => {}
            Err(ProtocolError::Closed) => return,
            Err(e) => return fail(e.to_string()),
        }
        match protocol::decode_from_instance(&body) {
            Ok(FromInstance::Hello { protocol, .. }) if protocol != PROTOCOL_VERSION => {
                return fail(
                    ProtocolError::VersionMismatch {
                        instance: protocol,
                        runtime: PROTOCOL_VERSION,
                    }
                    .to_string(),
                );
            }
            Ok(FromInstance::Hello { .. }) => {}
            Ok(FromInstance::InitError { error, .. }) => {
                return fail(format!(
                    "the function failed to initialize: {}: {}",
                    error.kind, error.message
                ));
            }
            Ok(FromInstance::Publish(m)) => match Message::from_wire(m) {
                Ok(m) => (publish.0)(m),
                Err(e) => return fail(e.to_string()),
            },
            Ok(FromInstance::Result { .. }) => {
                return fail("unexpected result frame from a continuous instance".into());
            }
            Err(e) => return fail(e.to_string()),
        }
    }
}

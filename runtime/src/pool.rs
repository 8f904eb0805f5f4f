//! The warm pool of one triggered binding.
//!
//! An invocation takes an idle instance (most recently used first, so surplus instances age out),
//! or starts one while fewer than `concurrency` exist, or waits in a bounded queue; past the
//! queue bound it fails with [`InvokeError::Overloaded`]. A background task stops instances idle
//! longer than the binding's idle timeout. An instance that times out, crashes or runs out of
//! memory is killed and its slot handed to the next waiter, which starts a replacement.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, Weak};
use std::time::{Duration, Instant};

use tokio::sync::{Notify, oneshot};

use crate::error::{InvokeError, StartError};
use crate::function::{Event, FunctionSpec, Reply};
use crate::instance::Instance;
use crate::launch::Launch;
use crate::log::LogSink;
use crate::sandbox::Sandbox;

/// Tuning of a pool; limits come from the binding.
#[derive(Debug, Clone)]
pub struct PoolOptions {
    /// Invocations that may wait for an instance, per unit of concurrency (default 64).
    pub queue_per_instance: usize,
    /// How long a new instance may take to say hello (default 30 s).
    pub start_timeout: Duration,
    /// Override of the binding's idle timeout (tests use small values).
    pub idle_timeout: Option<Duration>,
}

impl Default for PoolOptions {
    fn default() -> Self {
        PoolOptions {
            queue_per_instance: 64,
            start_timeout: Duration::from_secs(30),
            idle_timeout: None,
        }
    }
}

/// A snapshot of a pool.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct PoolStats {
    /// Instances alive or starting.
    pub instances: usize,
    /// Of which idle.
    pub idle: usize,
    /// Invocations waiting for an instance.
    pub queued: usize,
    /// Instances started since the pool began.
    pub started: u64,
    /// Instances stopped for being idle.
    pub idled_out: u64,
    /// Invocations completed (successfully or not).
    pub invocations: u64,
}

/// The warm instances of one triggered binding. Cheap to clone; all clones share the pool.
#[derive(Debug, Clone)]
pub struct Pool {
    inner: Arc<PoolInner>,
}

#[derive(Debug)]
struct PoolInner {
    launch: Launch,
    concurrency: usize,
    queue_limit: usize,
    timeout: Duration,
    idle_timeout: Duration,
    start_timeout: Duration,
    state: Mutex<PoolState>,
    next_instance: AtomicU64,
    started: AtomicU64,
    idled_out: AtomicU64,
    invocations: AtomicU64,
    drained: Notify,
}

#[derive(Debug, Default)]
struct PoolState {
    /// Idle instances and since when; the most recently used last.
    idle: Vec<(Instance, Instant)>,
    /// Instances alive or starting (idle ones included).
    live: usize,
    waiters: VecDeque<oneshot::Sender<Lease>>,
    stopping: bool,
}

/// The right to use one instance slot: with an instance, or to start one. Dropping it returns
/// the slot (and the instance, if any) to the pool.
#[derive(Debug)]
struct Lease {
    pool: Arc<PoolInner>,
    instance: Option<Instance>,
    armed: bool,
}

impl Drop for Lease {
    fn drop(&mut self) {
        if self.armed {
            release(&self.pool, self.instance.take());
        }
    }
}

fn lock(m: &Mutex<PoolState>) -> MutexGuard<'_, PoolState> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// Gives a slot back: to the first waiter still waiting, else to the idle list (or frees it).
fn release(pool: &Arc<PoolInner>, mut instance: Option<Instance>) {
    loop {
        let waiter = {
            let mut st = lock(&pool.state);
            match st.waiters.pop_front() {
                Some(w) if !st.stopping => w,
                _ => {
                    match instance {
                        Some(i) if !st.stopping => st.idle.push((i, Instant::now())),
                        other => {
                            st.live -= 1;
                            let empty = st.live == 0;
                            drop(st);
                            drop(other);
                            if empty {
                                pool.drained.notify_waiters();
                            }
                        }
                    }
                    return;
                }
            }
        };
        let lease = Lease {
            pool: pool.clone(),
            instance,
            armed: true,
        };
        match waiter.send(lease) {
            Ok(()) => return,
            Err(mut back) => {
                // That waiter gave up; try the next one.
                back.armed = false;
                instance = back.instance.take();
            }
        }
    }
}

impl Pool {
    /// Starts a pool for `spec` (a triggered binding). No instance is started until the first
    /// invocation; call [`Pool::warm`] to start one now.
    pub fn start(
        spec: FunctionSpec,
        options: PoolOptions,
        sandbox: &Sandbox,
        log: LogSink,
    ) -> Result<Pool, StartError> {
        let concurrency = spec.binding.concurrency.max(1) as usize;
        let timeout = Duration::from_millis(spec.binding.timeout_ms.max(1));
        let idle_timeout = options
            .idle_timeout
            .unwrap_or(Duration::from_millis(spec.binding.idle_timeout_ms));
        let launch = Launch::new(spec, sandbox.clone(), log)?;
        let inner = Arc::new(PoolInner {
            launch,
            concurrency,
            queue_limit: options.queue_per_instance.saturating_mul(concurrency),
            timeout,
            idle_timeout,
            start_timeout: options.start_timeout,
            state: Mutex::new(PoolState::default()),
            next_instance: AtomicU64::new(1),
            started: AtomicU64::new(0),
            idled_out: AtomicU64::new(0),
            invocations: AtomicU64::new(0),
            drained: Notify::new(),
        });
        if !idle_timeout.is_zero() {
            tokio::spawn(reap_idle(Arc::downgrade(&inner)));
        }
        Ok(Pool { inner })
    }

    /// Handles one event on a warm instance, starting one if needed.
    pub async fn invoke(&self, event: &Event) -> Result<Reply, InvokeError> {
        let mut lease = self.acquire().await?;
        let inner = &self.inner;
        let warm = lease
            .instance
            .take()
            .and_then(|mut i| i.still_warm(&inner.launch).then_some(i));
        let mut instance = match warm {
            Some(i) => i,
            None => {
                let id = inner.next_instance.fetch_add(1, Ordering::Relaxed);
                // A program started for this one event learns its topic from the environment.
                let env = if inner.launch.per_event() {
                    vec![("EDGEFN_TOPIC".to_owned(), event.topic.clone())]
                } else {
                    Vec::new()
                };
                let i = Instance::start(&inner.launch, id, inner.start_timeout, &env).await?;
                inner.started.fetch_add(1, Ordering::Relaxed);
                i
            }
        };
        let outcome = instance.call(event, &inner.launch, inner.timeout).await;
        inner.invocations.fetch_add(1, Ordering::Relaxed);
        if instance.reusable()
            && matches!(
                outcome,
                Ok(_) | Err(InvokeError::Handler(_) | InvokeError::EventTooLarge(_))
            )
        {
            lease.instance = Some(instance);
        }
        drop(lease);
        outcome
    }

    async fn acquire(&self) -> Result<Lease, InvokeError> {
        let inner = &self.inner;
        let rx = {
            let mut st = lock(&inner.state);
            if st.stopping {
                return Err(InvokeError::Stopped);
            }
            if let Some((i, _)) = st.idle.pop() {
                return Ok(Lease {
                    pool: inner.clone(),
                    instance: Some(i),
                    armed: true,
                });
            }
            if st.live < inner.concurrency {
                st.live += 1;
                return Ok(Lease {
                    pool: inner.clone(),
                    instance: None,
                    armed: true,
                });
            }
            if st.waiters.len() >= inner.queue_limit {
                // Waiters that gave up still hold a place; drop them before refusing.
                st.waiters.retain(|w| !w.is_closed());
                if st.waiters.len() >= inner.queue_limit {
                    return Err(InvokeError::Overloaded {
                        concurrency: inner.concurrency as u32,
                        queued: st.waiters.len(),
                    });
                }
            }
            let (tx, rx) = oneshot::channel();
            st.waiters.push_back(tx);
            rx
        };
        rx.await.map_err(|_| InvokeError::Stopped)
    }

    /// Starts one instance now (if below concurrency) so that the first event finds it warm.
    /// A per-event program (`interface: stdio`) has nothing to warm: each event starts one.
    pub async fn warm(&self) -> Result<(), StartError> {
        let inner = &self.inner;
        if inner.launch.per_event() {
            return Ok(());
        }
        {
            let mut st = lock(&inner.state);
            if st.stopping || st.live >= inner.concurrency {
                return Ok(());
            }
            st.live += 1;
        }
        let mut lease = Lease {
            pool: inner.clone(),
            instance: None,
            armed: true,
        };
        let id = inner.next_instance.fetch_add(1, Ordering::Relaxed);
        let i = Instance::start(&inner.launch, id, inner.start_timeout, &[]).await?;
        inner.started.fetch_add(1, Ordering::Relaxed);
        lease.instance = Some(i);
        Ok(())
    }

    /// A snapshot of the pool's instances and counters.
    pub fn stats(&self) -> PoolStats {
        let inner = &self.inner;
        let st = lock(&inner.state);
        PoolStats {
            instances: st.live,
            idle: st.idle.len(),
            queued: st.waiters.iter().filter(|w| !w.is_closed()).count(),
            started: inner.started.load(Ordering::Relaxed),
            idled_out: inner.idled_out.load(Ordering::Relaxed),
            invocations: inner.invocations.load(Ordering::Relaxed),
        }
    }

    /// Stops the pool: refuses new invocations, fails queued ones with
    /// [`InvokeError::Stopped`], kills idle instances, and waits for in-flight invocations to
    /// finish (each is bounded by the timeout), killing their instances afterwards.
    pub async fn stop(self) {
        let inner = &self.inner;
        let (idle, waiters) = {
            let mut st = lock(&inner.state);
            st.stopping = true;
            st.live -= st.idle.len();
            (
                std::mem::take(&mut st.idle),
                std::mem::take(&mut st.waiters),
            )
        };
        drop(waiters);
        for (mut i, _) in idle {
            i.kill().await;
        }
        loop {
            let drained = inner.drained.notified();
            if lock(&inner.state).live == 0 {
                return;
            }
            drained.await;
        }
    }
}

/// Stops instances idle longer than the idle timeout, until the pool is gone or stopping.
async fn reap_idle(pool: Weak<PoolInner>) {
    let period = {
        let Some(p) = pool.upgrade() else { return };
        (p.idle_timeout / 4).clamp(Duration::from_millis(5), Duration::from_secs(1))
    };
    loop {
        tokio::time::sleep(period).await;
        let Some(p) = pool.upgrade() else { return };
        let expired: Vec<Instance> = {
            let mut st = lock(&p.state);
            if st.stopping {
                return;
            }
            let now = Instant::now();
            let (keep, expired): (Vec<_>, Vec<_>) = std::mem::take(&mut st.idle)
                .into_iter()
                .partition(|(_, since)| now.duration_since(*since) < p.idle_timeout);
            st.idle = keep;
            st.live -= expired.len();
            expired.into_iter().map(|(i, _)| i).collect()
        };
        if !expired.is_empty() {
            p.idled_out
                .fetch_add(expired.len() as u64, Ordering::Relaxed);
            if lock(&p.state).live == 0 {
                p.drained.notify_waiters();
            }
            drop(p);
            for mut i in expired {
                i.kill().await;
            }
        }
    }
}

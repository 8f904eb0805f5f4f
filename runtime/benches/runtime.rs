//! Runtime benchmarks: cold start to first reply, warm round trip (p50/p99) and throughput.
//!
//! Run (release; builds the Rust `echo` example it uses as the exec function):
//!
//! ```sh
//! cargo build --release -p edgefn-runtime --example echo && cargo bench -p edgefn-runtime --bench runtime
//! ```
//!
//! Targets (2-core machine): exec echo warm round trip p50 <= 50 us and p99 <= 250 us;
//! python3 echo >= 10,000 invocations/s at concurrency 2; container cold start to first reply
//! <= 60 ms for the exec echo. Container figures are printed only when running as root with
//! cgroups. Each figure is printed with its target and `ok` or `MISSED`.
#![allow(clippy::print_stdout, clippy::print_stderr, unreachable_pub)]

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use edgefn_runtime::{
    Event, FunctionSpec, LogSink, Pool, PoolOptions, Sandbox, SandboxKind, SandboxOptions,
};
use edgefn_schema::{Handler, Mode, ResolvedBinding, Runtime};
use serde_json::json;

const PY: &str = "def echo(event, context):\n    return event['payload']\n";
const JS: &str = "exports.echo = (event) => event.payload;\n";

fn echo_exe() -> PathBuf {
    let exe = std::env::current_exe().expect("bench exe");
    let dir = exe.parent().and_then(Path::parent).expect("target dir");
    let echo = dir.join("examples").join("echo");
    if !echo.exists() {
        eprintln!(
            "{} is missing: run `cargo build --release -p edgefn-runtime --example echo` first",
            echo.display()
        );
        std::process::exit(1);
    }
    echo
}

fn spec(runtime: Runtime, dir: &Path, concurrency: u32) -> FunctionSpec {
    let handler = match runtime {
        Runtime::Exec => Handler::Argv(vec!["./echo".into()]),
        Runtime::Python3 => Handler::Entry("main.echo".into()),
        Runtime::Node => Handler::Entry("index.echo".into()),
    };
    FunctionSpec {
        binding: ResolvedBinding {
            name: "bench".into(),
            function: "bench".into(),
            mode: Mode::Triggered,
            triggers: vec![],
            concurrency,
            idle_timeout_ms: 600_000,
            memory_bytes: 256 << 20,
            cpu_millis: 2000,
            timeout_ms: 10_000,
            env: BTreeMap::new(),
            secrets: BTreeMap::new(),
            device_nodes: Vec::new(),
            gpu: None,
            models: Vec::new(),
        },
        runtime,
        handler,
        interface: edgefn_schema::Interface::Protocol,
        bundle_dir: dir.to_path_buf(),
        layer_dir: None,
        device: "bench".into(),
        revision: 1,
        secrets_dir: None,
        models: Default::default(),
        models_dir: None,
    }
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i]
}

fn us(d: Duration) -> f64 {
    d.as_secs_f64() * 1e6
}

fn verdict(ok: bool) -> &'static str {
    if ok { "ok" } else { "MISSED" }
}

async fn cold_start(runtime: Runtime, dir: &Path, sandbox: &Sandbox, runs: usize) -> Duration {
    let event = Event::json("bench", json!({"n": 1}));
    let mut times = Vec::with_capacity(runs);
    for _ in 0..runs {
        let pool = Pool::start(
            spec(runtime, dir, 1),
            PoolOptions::default(),
            sandbox,
            LogSink::discard(),
        )
        .expect("pool");
        let t = Instant::now();
        pool.invoke(&event).await.expect("first reply");
        times.push(t.elapsed());
        pool.stop().await;
    }
    times.sort();
    percentile(&times, 0.5)
}

async fn round_trips(runtime: Runtime, dir: &Path, sandbox: &Sandbox, n: usize) -> Vec<Duration> {
    let pool = Pool::start(
        spec(runtime, dir, 1),
        PoolOptions::default(),
        sandbox,
        LogSink::discard(),
    )
    .expect("pool");
    let event = Event::json("bench/t", json!({"temperature": 21.5, "unit": "C"}));
    for _ in 0..1000 {
        pool.invoke(&event).await.expect("warm-up");
    }
    let mut times = Vec::with_capacity(n);
    for _ in 0..n {
        let t = Instant::now();
        pool.invoke(&event).await.expect("reply");
        times.push(t.elapsed());
    }
    pool.stop().await;
    times.sort();
    times
}

async fn throughput(runtime: Runtime, dir: &Path, concurrency: u32, window: Duration) -> f64 {
    let pool = Pool::start(
        spec(runtime, dir, concurrency),
        PoolOptions::default(),
        &Sandbox::process(),
        LogSink::discard(),
    )
    .expect("pool");
    let event = Event::json("bench/t", json!({"temperature": 21.5, "unit": "C"}));
    // Warm every instance.
    let warm: Vec<_> = (0..concurrency)
        .map(|_| {
            let (p, e) = (pool.clone(), event.clone());
            tokio::spawn(async move { p.invoke(&e).await.map(|_| ()) })
        })
        .collect();
    for w in warm {
        w.await.expect("join").expect("warm");
    }
    let start = Instant::now();
    let clients: Vec<_> = (0..concurrency)
        .map(|_| {
            let (p, e) = (pool.clone(), event.clone());
            tokio::spawn(async move {
                let mut n = 0u64;
                while start.elapsed() < window {
                    p.invoke(&e).await.expect("reply");
                    n += 1;
                }
                n
            })
        })
        .collect();
    let mut total = 0;
    for c in clients {
        total += c.await.expect("join");
    }
    let rate = total as f64 / start.elapsed().as_secs_f64();
    pool.stop().await;
    rate
}

fn container_sandbox() -> Option<Sandbox> {
    let state = tempfile::tempdir().expect("tempdir").keep();
    let options = SandboxOptions {
        kind: SandboxKind::Container,
        helper: Some(PathBuf::from(env!("CARGO_BIN_EXE_edgefn-sandbox-helper"))),
        state_dir: state,
        ..SandboxOptions::default()
    };
    match Sandbox::new(options) {
        Ok(s) => Some(s),
        Err(e) => {
            println!("container: skipped ({e})");
            None
        }
    }
}

fn main() {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("tokio runtime");
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::write(dir.path().join("main.py"), PY).expect("write");
    std::fs::write(dir.path().join("index.js"), JS).expect("write");
    // In the bundle, so that a container (which sees only the bundle at /fn) can run it too.
    std::fs::copy(echo_exe(), dir.path().join("echo")).expect("copy echo");
    let process = Sandbox::process();
    rt.block_on(async {
        println!("edgefn-runtime benchmarks (process sandbox unless noted)");
        for runtime in Runtime::ALL {
            let d = cold_start(runtime, dir.path(), &process, 10).await;
            println!(
                "cold start to first reply  {:<8} process    p50 {:>8.2} ms",
                runtime.as_str(),
                us(d) / 1e3
            );
        }
        let exec = round_trips(Runtime::Exec, dir.path(), &process, 20_000).await;
        let (p50, p99) = (percentile(&exec, 0.5), percentile(&exec, 0.99));
        println!(
            "warm round trip            exec     process    p50 {:>8.1} us  p99 {:>8.1} us  (targets 50 / 250 us: {} / {})",
            us(p50),
            us(p99),
            verdict(p50 <= Duration::from_micros(50)),
            verdict(p99 <= Duration::from_micros(250)),
        );
        for runtime in [Runtime::Python3, Runtime::Node] {
            let t = round_trips(runtime, dir.path(), &process, 5_000).await;
            println!(
                "warm round trip            {:<8} process    p50 {:>8.1} us  p99 {:>8.1} us",
                runtime.as_str(),
                us(percentile(&t, 0.5)),
                us(percentile(&t, 0.99)),
            );
        }
        for runtime in Runtime::ALL {
            for concurrency in [1, 2] {
                let rate = throughput(runtime, dir.path(), concurrency, Duration::from_secs(2)).await;
                let target = if runtime == Runtime::Python3 && concurrency == 2 {
                    format!("  (target 10000/s: {})", verdict(rate >= 10_000.0))
                } else {
                    String::new()
                };
                println!(
                    "throughput                 {:<8} concurrency {concurrency}  {rate:>9.0} /s{target}",
                    runtime.as_str()
                );
            }
        }
        if let Some(container) = container_sandbox() {
            println!("container sandbox: {}", container.reason());
            for runtime in Runtime::ALL {
                let d = cold_start(runtime, dir.path(), &container, 10).await;
                let target = if runtime == Runtime::Exec {
                    format!("  (target 60 ms: {})", verdict(d <= Duration::from_millis(60)))
                } else {
                    String::new()
                };
                println!(
                    "cold start to first reply  {:<8} container  p50 {:>8.2} ms{target}",
                    runtime.as_str(),
                    us(d) / 1e3
                );
            }
            let t = round_trips(Runtime::Exec, dir.path(), &container, 5_000).await;
            println!(
                "warm round trip            exec     container  p50 {:>8.1} us  p99 {:>8.1} us",
                us(percentile(&t, 0.5)),
                us(percentile(&t, 0.99)),
            );
        }
    });
}

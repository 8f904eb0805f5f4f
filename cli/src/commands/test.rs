//! `edgefn test` and `edgefn invoke`: functions run by the same runtime the agent uses, on this
//! machine, against simulated messages.

use crate::local_secrets::LocalSecrets;
use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use edgefn_runtime::{
    Event, InvokeError, LogLine, LogSink, Payload, Pool, PoolOptions, Reply, Sandbox, SandboxKind,
    SandboxOptions,
};
use edgefn_schema::testcase::{self, TestCase, TestTrigger};
use edgefn_schema::{Manifest, Mode, ResolvedBinding, RouteTarget, defaults_binding};

use crate::args::{InvokeArgs, SandboxArg, TestArgs};
use crate::error::{CliError, CliResult, Outcome};
use crate::project::{self, Project, display_path};
use crate::report;

fn sandbox(arg: SandboxArg) -> Result<Sandbox, CliError> {
    let kind = match arg {
        SandboxArg::Process => SandboxKind::Process,
        SandboxArg::Container => SandboxKind::Container,
        SandboxArg::Auto => SandboxKind::Auto,
    };
    let options = SandboxOptions {
        kind,
        helper: std::env::current_exe().ok(),
        state_dir: std::env::temp_dir().join(format!("edgefn-test-{}", std::process::id())),
        ..SandboxOptions::default()
    };
    Sandbox::new(options).map_err(|e| {
        CliError::failed(
            "",
            "use --sandbox process, or run as root on Linux for containers",
            e,
        )
    })
}

fn runtime() -> Result<tokio::runtime::Runtime, CliError> {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .map_err(CliError::io("start the async runtime for", "the functions"))
}

/// The binding a function runs under on a device: the test's, else its first binding in the
/// manifest, else the defaults. Always triggered: a test invokes it.
fn binding_for(
    m: &Manifest,
    function: &str,
    binding: Option<&str>,
    device: Option<&str>,
) -> Result<(ResolvedBinding, String), CliError> {
    let bindings: Vec<_> = m
        .bindings
        .iter()
        .filter(|b| b.function == function)
        .collect();
    if let Some(d) = device {
        if !m.devices.contains_key(d) {
            return Err(project::not_in_manifest("device", d, m.devices.keys()));
        }
    }
    let chosen = match binding {
        Some(name) => Some(
            *bindings
                .iter()
                .find(|b| b.effective_name() == name)
                .ok_or_else(|| CliError::InvalidArgument {
                    message: format!("function `{function}` has no binding named `{name}`"),
                    help: "fix `binding:` in the test case".into(),
                })?,
        ),
        // On a given device: the function's first binding that runs there.
        None => match device {
            Some(d) if !bindings.is_empty() => Some(
                *bindings
                    .iter()
                    .find(|b| b.devices.matches(d, &m.devices[d]))
                    .ok_or_else(|| CliError::InvalidArgument {
                        message: format!("function `{function}` does not run on device `{d}`: none of its bindings selects it"),
                        help: "choose a device its bindings select, or add one to a binding's `devices`".into(),
                    })?,
            ),
            _ => bindings.first().copied(),
        },
    };
    if let (Some(d), Some(b)) = (device, chosen) {
        if !b.devices.matches(d, &m.devices[d]) {
            return Err(CliError::InvalidArgument {
                message: format!(
                    "binding `{}` does not run on device `{d}`",
                    b.effective_name()
                ),
                help: "choose a device the binding's `devices` selects".into(),
            });
        }
    }
    let device = match (device, chosen) {
        (Some(d), _) => d.to_owned(),
        (None, Some(b)) => m
            .devices
            .iter()
            .find(|(n, d)| b.devices.matches(n, d))
            .map_or_else(|| "local".to_owned(), |(n, _)| n.clone()),
        (None, None) => "local".to_owned(),
    };
    let resolved = chosen.and_then(|b| {
        edgefn_schema::resolve(m, &device, &BTreeMap::new()).and_then(|s| {
            s.bindings
                .into_iter()
                .find(|r| r.name == b.effective_name())
        })
    });
    let mut resolved = match resolved {
        Some(r) => r,
        None => {
            let mut r = defaults_binding(m, function).ok_or_else(|| CliError::InvalidArgument {
                message: format!("no function `{function}` in the manifest"),
                help: "see `edgefn validate`".into(),
            })?;
            // An unbound function run as on a device still sees that device's values.
            if let Some(dev) = m.devices.get(&device) {
                for v in r.env.values_mut() {
                    if let Ok(x) = edgefn_schema::vars::expand(v, &device, dev) {
                        *v = x;
                    }
                }
            }
            r
        }
    };
    resolved.mode = Mode::Triggered;
    resolved.concurrency = resolved.concurrency.max(1);
    Ok((resolved, device))
}

fn spec(
    m: &Manifest,
    root: &Path,
    function: &str,
    binding: ResolvedBinding,
    device: &str,
    secrets: &mut LocalSecrets,
    models: &mut crate::models::LocalModels,
) -> Result<edgefn_runtime::FunctionSpec, CliError> {
    let f = &m.functions[function];
    let secrets_dir = secrets.folder_for(&binding)?;
    // The binding's models, read from the project where they are (no copy).
    let (models, models_dir) = models.for_binding(&binding.models)?;
    // The function's dependencies, as devices get them, built for this machine.
    let layer_dir = crate::layers::for_host(root, function, f)?;
    Ok(edgefn_runtime::FunctionSpec {
        binding,
        runtime: f.runtime,
        handler: f.handler.clone(),
        interface: f.interface,
        bundle_dir: root.join(&f.path),
        layer_dir,
        device: device.to_owned(),
        revision: 0,
        secrets_dir,
        models,
        models_dir,
    })
}

fn payload_json(p: &Payload) -> serde_json::Value {
    match p {
        Payload::Json(v) => v.clone(),
        Payload::Bytes(b) => serde_json::Value::String(String::from_utf8_lossy(b).into_owned()),
    }
}

/// A payload typed on the command line, by the payload contract
/// ([`Payload::from_message`]): JSON when it parses, else the text as a string.
fn parse_payload(text: &str) -> Payload {
    Payload::from_message(text.as_bytes().to_vec())
}

/// What one case found.
struct CaseResult {
    function: String,
    name: String,
    file: PathBuf,
    elapsed: Duration,
    failures: Vec<String>,
    logs: Vec<LogLine>,
}

/// Checks a reply (or error) against a case's expectations; returns the mismatches.
fn check(case: &TestCase, outcome: &Result<Reply, InvokeError>) -> Vec<String> {
    let e = &case.expect;
    let mut failures = Vec::new();
    match (outcome, &e.error) {
        (Ok(reply), None) => {
            let got = payload_json(&reply.result);
            if let Some(want) = &e.result {
                if &got != want {
                    failures.push(format!("result: expected {want}, got {got}"));
                }
            }
            if let Some(want) = &e.result_contains {
                if !testcase::contains(&got, want) {
                    failures.push(format!("result: expected it to contain {want}, got {got}"));
                }
            }
        }
        (Ok(reply), Some(_)) => failures.push(format!(
            "expected an error, got the result {}",
            payload_json(&reply.result)
        )),
        (Err(err), None) => failures.push(format!("expected a result, got an error: {err}")),
        (Err(err), Some(want)) => {
            let (kind, message) = match err {
                InvokeError::Handler(h) => (h.kind.clone(), h.message.clone()),
                InvokeError::Timeout { .. } => ("TimeoutError".to_owned(), err.to_string()),
                InvokeError::OutOfMemory { .. } => ("OutOfMemoryError".to_owned(), err.to_string()),
                other => ("Error".to_owned(), other.to_string()),
            };
            if let Some(k) = &want.kind {
                if *k != kind {
                    failures.push(format!("error type: expected {k}, got {kind} ({message})"));
                }
            }
            if let Some(m) = &want.message {
                if !message.contains(m.as_str()) {
                    failures.push(format!(
                        "error message: expected it to contain {m:?}, got {message:?}"
                    ));
                }
            }
        }
    }
    if let (Some(want), Ok(reply)) = (&e.publish, outcome) {
        let got: Vec<(String, serde_json::Value)> = reply
            .publish
            .iter()
            .map(|m| (m.topic.clone(), payload_json(&m.payload)))
            .collect();
        if got.len() != want.len() {
            failures.push(format!(
                "published {} message(s), expected {}: {:?}",
                got.len(),
                want.len(),
                got.iter().map(|g| &g.0).collect::<Vec<_>>()
            ));
        }
        for (i, (w, g)) in want.iter().zip(&got).enumerate() {
            if w.topic != g.0 {
                failures.push(format!(
                    "message #{}: expected topic {}, got {}",
                    i + 1,
                    w.topic,
                    g.0
                ));
            }
            if let Some(p) = &w.payload {
                if p != &g.1 {
                    failures.push(format!(
                        "message #{} on {}: expected payload {p}, got {}",
                        i + 1,
                        w.topic,
                        g.1
                    ));
                }
            }
        }
    }
    failures
}

/// Runs `edgefn test`.
pub(crate) fn run(args: &TestArgs) -> CliResult {
    let project = Project::locate(args.file.as_deref())?;
    let Some(loaded) = project::load_valid(&project)? else {
        return Ok(Outcome::Failed);
    };
    let m = &loaded.manifest;
    if let Some(topic) = &args.topic {
        return simulate(args, &project, m, topic);
    }
    for f in &args.functions {
        if !m.functions.contains_key(f) {
            return Err(project::not_in_manifest("function", f, m.functions.keys()));
        }
    }
    // Load every case first: a broken case file fails the run before anything starts.
    let mut cases: Vec<(String, PathBuf, TestCase)> = Vec::new();
    let mut diags = edgefn_schema::Diagnostics::default();
    for (function, path) in project::test_case_files(&project.root, m) {
        if !args.functions.is_empty() && !args.functions.contains(&function) {
            continue;
        }
        let source = match project::read_source(&path) {
            Ok(source) => source,
            Err(CliError::Source(crate::error::SourceProblem(d))) => {
                diags.push(*d);
                continue;
            }
            Err(e) => return Err(e),
        };
        match testcase::load_test_case(&source) {
            Ok(case) => cases.push((function, path, case)),
            Err(d) => diags.extend(d),
        }
    }
    if diags.has_errors() {
        report::print(&diags, crate::args::Format::Human);
        eprintln!(
            "error: the test cases have {}; nothing was run",
            report::counts(&diags)
        );
        return Ok(Outcome::Failed);
    }
    if cases.is_empty() {
        eprintln!("no test cases found (functions/<name>/tests/*.yaml)");
        return Ok(Outcome::Success);
    }
    let sandbox = sandbox(args.sandbox)?;
    eprintln!("sandbox: {} ({})", sandbox.kind(), sandbox.reason());
    let rt = runtime()?;
    let mut secrets = LocalSecrets::load(&project.root)?;
    let mut models = crate::models::LocalModels::new(&project.root, m)?;
    let results = rt.block_on(run_cases(
        &sandbox,
        &project.root,
        m,
        cases,
        &mut secrets,
        &mut models,
    ))?;

    let mut out = std::io::stdout().lock();
    let failed = results.iter().filter(|r| !r.failures.is_empty()).count();
    for r in &results {
        let ms = r.elapsed.as_millis();
        if r.failures.is_empty() {
            let _ = writeln!(out, "PASS {}/{} ({ms} ms)", r.function, r.name);
        } else {
            let _ = writeln!(
                out,
                "FAIL {}/{} ({ms} ms) {}",
                r.function,
                r.name,
                display_path(&r.file)
            );
            for f in &r.failures {
                let _ = writeln!(out, "     {f}");
            }
            if !r.logs.is_empty() {
                let _ = writeln!(out, "     logs:");
                for l in &r.logs {
                    let _ = writeln!(out, "     | [{}] {}", l.stream.as_str(), l.line);
                }
            }
        }
    }
    let _ = writeln!(out, "\n{} passed, {failed} failed", results.len() - failed);
    if let Some(path) = &args.junit {
        project::write_atomic(path, junit(&results).as_bytes())?;
    }
    Ok(if failed == 0 {
        Outcome::Success
    } else {
        Outcome::Failed
    })
}

/// Runs each case on an instance of its own, and takes the logs it wrote.
///
/// A case's log lines are all of its instance's output: the pool is stopped once the case has
/// its answer, which ends the instance, and the channel of lines closes only when the runtime's
/// readers of its stdout and stderr have reached their end. No line arrives after that, and none
/// is waited for by the clock. (An instance per case also means that no case sees what an
/// earlier one left in its process.)
async fn run_cases(
    sandbox: &Sandbox,
    root: &Path,
    m: &Manifest,
    cases: Vec<(String, PathBuf, TestCase)>,
    secrets: &mut LocalSecrets,
    models: &mut crate::models::LocalModels,
) -> Result<Vec<CaseResult>, CliError> {
    let mut results = Vec::new();
    for (function, file, case) in cases {
        let (binding, device) = binding_for(
            m,
            &function,
            case.binding.as_deref(),
            case.device.as_deref(),
        )?;
        let (sink, mut logs) = LogSink::channel();
        let pool = Pool::start(
            spec(m, root, &function, binding, &device, secrets, models)?,
            PoolOptions::default(),
            sandbox,
            sink,
        )
        .map_err(|e| {
            CliError::failed(
                format!("cannot start `{function}`"),
                "see the function's logs",
                e,
            )
        })?;
        let event = match &case.trigger {
            TestTrigger::Message { topic, payload } => Event {
                topic: topic.clone(),
                payload: Payload::Json(payload.clone()),
            },
            TestTrigger::Event(v) => Event {
                topic: v
                    .get("topic")
                    .and_then(|t| t.as_str())
                    .unwrap_or("test")
                    .to_owned(),
                payload: Payload::Json(
                    v.get("payload").cloned().unwrap_or(serde_json::Value::Null),
                ),
            },
        };
        // The instance starts before the clock does: a case's time is its handler's.
        let mut started = Instant::now();
        let outcome = match pool.warm().await {
            Ok(()) => {
                started = Instant::now();
                pool.invoke(&event).await
            }
            Err(e) => Err(e.into()),
        };
        let elapsed = started.elapsed();
        pool.stop().await;
        let mut lines = Vec::new();
        while let Some(l) = logs.recv().await {
            lines.push(l);
        }
        let name = file
            .file_stem()
            .map(|s| s.to_string_lossy().into_owned())
            .unwrap_or_default();
        results.push(CaseResult {
            function,
            name,
            file,
            elapsed,
            failures: check(&case, &outcome),
            logs: lines,
        });
    }
    Ok(results)
}

fn xml(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

/// The results as JUnit XML: one suite per function.
fn junit(results: &[CaseResult]) -> String {
    let mut by_function: BTreeMap<&str, Vec<&CaseResult>> = BTreeMap::new();
    for r in results {
        by_function.entry(&r.function).or_default().push(r);
    }
    let failures = results.iter().filter(|r| !r.failures.is_empty()).count();
    let mut x = String::from("<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n");
    let _ = writeln!(
        x,
        "<testsuites name=\"edgefn\" tests=\"{}\" failures=\"{failures}\">",
        results.len()
    );
    for (function, cases) in by_function {
        let f = cases.iter().filter(|r| !r.failures.is_empty()).count();
        let time: f64 = cases.iter().map(|r| r.elapsed.as_secs_f64()).sum();
        let _ = writeln!(
            x,
            "  <testsuite name=\"{}\" tests=\"{}\" failures=\"{f}\" time=\"{time:.3}\">",
            xml(function),
            cases.len()
        );
        for r in cases {
            let _ = write!(
                x,
                "    <testcase classname=\"{}\" name=\"{}\" file=\"{}\" time=\"{:.3}\"",
                xml(function),
                xml(&r.name),
                xml(&display_path(&r.file)),
                r.elapsed.as_secs_f64()
            );
            if r.failures.is_empty() {
                x.push_str("/>\n");
            } else {
                x.push_str(">\n");
                let _ = writeln!(
                    x,
                    "      <failure message=\"{}\">{}</failure>",
                    xml(&r.failures[0]),
                    xml(&r.failures.join("\n"))
                );
                let logs: Vec<String> = r
                    .logs
                    .iter()
                    .map(|l| format!("[{}] {}", l.stream.as_str(), l.line))
                    .collect();
                let _ = writeln!(
                    x,
                    "      <system-out>{}</system-out>",
                    xml(&logs.join("\n"))
                );
                x.push_str("    </testcase>\n");
            }
        }
        x.push_str("  </testsuite>\n");
    }
    x.push_str("</testsuites>\n");
    x
}

/// `edgefn test --topic T --payload P [--device D]`: which bindings fire on each device, what
/// they return and publish, and where the routes send it.
fn simulate(args: &TestArgs, project: &Project, m: &Manifest, topic: &str) -> CliResult {
    edgefn_schema::topic::validate_topic(topic)
        .map_err(|e| CliError::failed(format!("--topic `{topic}`"), e.help.clone(), e))?;
    let devices: Vec<String> = match &args.device {
        Some(d) if !m.devices.contains_key(d) => {
            return Err(project::not_in_manifest("device", d, m.devices.keys()));
        }
        Some(d) => vec![d.clone()],
        None => m.devices.keys().cloned().collect(),
    };
    let payload = parse_payload(args.payload.as_deref().unwrap_or("null"));
    let mut secrets = LocalSecrets::load(&project.root)?;
    let mut models = crate::models::LocalModels::new(&project.root, m)?;
    let sandbox = sandbox(args.sandbox)?;
    let rt = runtime()?;
    let mut out = std::io::stdout().lock();
    let mut failed = false;
    for device in devices {
        let state = edgefn_schema::resolve(m, &device, &BTreeMap::new()).expect("device exists");
        let firing: Vec<&ResolvedBinding> = state.triggered_by(topic).collect();
        let _ = writeln!(
            out,
            "{device}: {topic} fires {} binding{}",
            firing.len(),
            if firing.len() == 1 { "" } else { "s" }
        );
        for r in state.routes_to(RouteTarget::Cloud, topic) {
            let _ = writeln!(out, "  the message itself → cloud (route {})", r.filter);
        }
        for b in firing {
            let spec = spec(
                m,
                &project.root,
                &b.function,
                b.clone(),
                &device,
                &mut secrets,
                &mut models,
            )?;
            let (sink, mut logs) = LogSink::channel();
            let event = Event {
                topic: topic.to_owned(),
                payload: payload.clone(),
            };
            // The binding's output is all in once the channel closes: the pool stopped, its
            // instance ended, and the runtime's readers reached the end of its output.
            let (outcome, lines) = rt.block_on(async {
                let r = async {
                    let pool = Pool::start(spec, PoolOptions::default(), &sandbox, sink)?;
                    let r = pool.invoke(&event).await;
                    pool.stop().await;
                    r
                }
                .await;
                let mut lines = Vec::new();
                while let Some(l) = logs.recv().await {
                    lines.push(l);
                }
                (r, lines)
            });
            match outcome {
                Ok(reply) => {
                    let _ = writeln!(out, "  {} → {}", b.name, payload_json(&reply.result));
                    for msg in &reply.publish {
                        let dest: Vec<String> = state
                            .routes_to(RouteTarget::Cloud, &msg.topic)
                            .map(|r| format!("cloud (route {})", r.filter))
                            .collect();
                        let local: Vec<&str> = state
                            .triggered_by(&msg.topic)
                            .map(|o| o.name.as_str())
                            .collect();
                        let mut to = dest;
                        if !local.is_empty() {
                            to.push(format!("local: {}", local.join(", ")));
                        }
                        if to.is_empty() {
                            to.push("the local bus only (no route, no binding)".into());
                        }
                        let _ = writeln!(
                            out,
                            "    publishes {} {} → {}",
                            msg.topic,
                            payload_json(&msg.payload),
                            to.join("; ")
                        );
                    }
                }
                Err(e) => {
                    failed = true;
                    let _ = writeln!(out, "  {} ✗ {e}", b.name);
                }
            }
            for l in lines {
                let _ = writeln!(out, "    | {}", l.line);
            }
        }
    }
    Ok(if failed {
        Outcome::Failed
    } else {
        Outcome::Success
    })
}

/// Runs `edgefn invoke`.
pub(crate) fn invoke(args: &InvokeArgs) -> CliResult {
    let project = Project::locate(args.file.as_deref())?;
    let Some(loaded) = project::load_valid(&project)? else {
        return Ok(Outcome::Failed);
    };
    let m = &loaded.manifest;
    if !m.functions.contains_key(&args.function) {
        return Err(project::not_in_manifest(
            "function",
            &args.function,
            m.functions.keys(),
        ));
    }
    let (binding, device) = binding_for(m, &args.function, None, args.as_device.as_deref())?;
    let sandbox = sandbox(args.sandbox)?;
    let rt = runtime()?;
    let mut secrets = LocalSecrets::load(&project.root)?;
    let mut models = crate::models::LocalModels::new(&project.root, m)?;
    let spec = spec(
        m,
        &project.root,
        &args.function,
        binding,
        &device,
        &mut secrets,
        &mut models,
    )?;
    let event = Event {
        topic: args.topic.clone(),
        payload: Payload::from_message(crate::payload::bytes(
            &args.event,
            edgefn_runtime::protocol::MAX_FRAME as u64,
        )?),
    };
    // Printed as they come; the pool's stop returns once the runtime has read the instance's
    // output to its end, so the last lines are out before the result.
    let sink = LogSink::new(|l: LogLine| {
        if !crate::function_output::is_shim_frame(&l.line) {
            eprintln!("[{}] {}", l.stream.as_str(), l.line);
        }
    });
    let outcome = rt.block_on(async {
        let pool = Pool::start(spec, PoolOptions::default(), &sandbox, sink)?;
        let r = pool.invoke(&event).await;
        pool.stop().await;
        r
    });
    let mut out = std::io::stdout().lock();
    match outcome {
        Ok(reply) => {
            let _ = writeln!(
                out,
                "{}",
                serde_json::to_string_pretty(&payload_json(&reply.result)).expect("json")
            );
            for msg in reply.publish {
                let _ = writeln!(
                    out,
                    "published {} {}",
                    msg.topic,
                    payload_json(&msg.payload)
                );
            }
            Ok(Outcome::Success)
        }
        Err(e) => {
            eprintln!("error: {e}");
            Ok(Outcome::Failed)
        }
    }
}

//! End-to-end tests of the `edgefn` binary: init, new, validate and completions, run as a user
//! would, in temporary folders with a cleared environment.

use std::fs;
use std::path::{Path, PathBuf};

use std::process::{Command, Output};

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// `edgefn ARGS` in `dir`, with a clean environment and a temporary HOME.
fn edgefn(dir: &Path, args: &[&str]) -> Output {
    let home = tempfile::tempdir().expect("home");
    Command::new(env!("CARGO_BIN_EXE_edgefn"))
        .args(args)
        .current_dir(dir)
        .env_clear()
        .env("HOME", home.path())
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .env("NO_COLOR", "1")
        .env("COLUMNS", "100")
        .output()
        .expect("run edgefn")
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

#[track_caller]
fn ok(out: &Output) -> String {
    assert!(
        out.status.success(),
        "failed: {:?}\nstdout:\n{}\nstderr:\n{}",
        out.status,
        text(&out.stdout),
        text(&out.stderr)
    );
    text(&out.stdout)
}

/// Compares `actual` with the checked-in file, or rewrites it when EDGEFN_BLESS is set.
#[track_caller]
fn snapshot(path: &Path, actual: &str) {
    if std::env::var_os("EDGEFN_BLESS").is_some() {
        fs::write(path, actual).expect("write snapshot");
    }
    let expected = fs::read_to_string(path).unwrap_or_default();
    assert!(
        expected == actual,
        "{} is stale; regenerate with `EDGEFN_BLESS=1 cargo test -p edgefn --test cli`.\n--- expected\n{expected}\n--- actual\n{actual}",
        path.display()
    );
}

#[test]
fn init_creates_a_project_that_validates() {
    let tmp = tempfile::tempdir().expect("tmp");
    let out = ok(&edgefn(tmp.path(), &["init", "my-fleet"]));
    assert!(out.contains("Created edgefn project `my-fleet`"), "{out}");
    let root = tmp.path().join("my-fleet");
    for f in [
        "edgefn.yaml",
        "functions/.gitkeep",
        ".gitignore",
        ".edgefnignore",
        ".github/workflows/edgefn.yml",
    ] {
        assert!(root.join(f).is_file(), "{f} missing");
    }
    let manifest = fs::read_to_string(root.join("edgefn.yaml")).expect("manifest");
    assert!(
        manifest.starts_with("# yaml-language-server: $schema="),
        "{manifest}"
    );
    let workflow = fs::read_to_string(root.join(".github/workflows/edgefn.yml")).expect("workflow");
    assert!(workflow.contains("edgefn test") && workflow.contains("edgefn apply"));
    // The edgefn that wrote it, installed once and cached.
    assert!(
        workflow.contains(&format!(
            "cargo install --locked edgefn --version {}",
            env!("CARGO_PKG_VERSION")
        )) && workflow.contains("actions/cache@v4")
            && workflow.contains("path: ~/.cargo/bin/edgefn"),
        "{workflow}"
    );
    let v = edgefn(&root, &["validate"]);
    assert!(v.status.success(), "{}", text(&v.stderr));
}

#[test]
fn init_never_overwrites_without_force() {
    let tmp = tempfile::tempdir().expect("tmp");
    ok(&edgefn(tmp.path(), &["init", "."]));
    let manifest = tmp.path().join("edgefn.yaml");
    fs::write(&manifest, "# mine\n").expect("write");
    let again = edgefn(tmp.path(), &["init", "."]);
    assert_eq!(again.status.code(), Some(1));
    let err = text(&again.stderr);
    assert!(
        err.contains("already exists") && err.contains("--force"),
        "{err}"
    );
    assert_eq!(
        fs::read_to_string(&manifest).expect("read"),
        "# mine\n",
        "untouched"
    );
    ok(&edgefn(tmp.path(), &["init", ".", "--force"]));
    assert!(
        fs::read_to_string(&manifest)
            .expect("read")
            .contains("apiVersion: edgefn/v1")
    );
}

#[test]
fn init_rejects_a_bad_project_name() {
    let tmp = tempfile::tempdir().expect("tmp");
    let out = edgefn(tmp.path(), &["init", "x", "--name", "My Fleet"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(text(&out.stderr).contains("not a valid project name"));
    assert!(!tmp.path().join("x/edgefn.yaml").exists());
}

#[test]
fn new_adds_working_functions_and_keeps_the_manifest_layout() {
    let tmp = tempfile::tempdir().expect("tmp");
    ok(&edgefn(tmp.path(), &["init", "."]));
    let manifest = tmp.path().join("edgefn.yaml");
    let before = fs::read_to_string(&manifest).expect("read");
    for (name, runtime, file) in [
        ("filter", "python3", "main.py"),
        ("greeter", "node", "index.js"),
        ("collector", "exec", "handler.sh"),
    ] {
        let out = ok(&edgefn(tmp.path(), &["new", name, "--runtime", runtime]));
        assert!(out.contains(&format!("Created function `{name}`")), "{out}");
        assert!(
            tmp.path()
                .join(format!("functions/{name}/{file}"))
                .is_file()
        );
        assert!(
            tmp.path()
                .join(format!("functions/{name}/tests/example.yaml"))
                .is_file()
        );
    }
    let after = fs::read_to_string(&manifest).expect("read");
    // Every line the user had is still there, in order: comments and layout are kept.
    let mut rest = after.lines();
    for line in before.lines() {
        assert!(rest.any(|l| l == line), "lost line {line:?} in\n{after}");
    }
    assert!(after.contains("  filter:\n    path: functions/filter\n    runtime: python3\n    handler: main.handle\n"), "{after}");
    // A new exec function is a plain program: the payload on stdin, the result on stdout.
    assert!(
        after.contains("    handler: [\"./handler.sh\"]\n    interface: stdio\n"),
        "{after}"
    );
    // Valid, with a warning per unbound function.
    let v = edgefn(tmp.path(), &["validate", "--format", "short"]);
    assert!(v.status.success(), "{}", text(&v.stderr));
    assert_eq!(text(&v.stderr).matches("unused_function").count(), 3);
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = fs::metadata(tmp.path().join("functions/collector/handler.sh"))
            .expect("meta")
            .permissions()
            .mode();
        assert_eq!(mode & 0o111, 0o111, "exec handler is executable");
    }
}

#[test]
fn new_refuses_duplicates_bad_names_and_missing_projects() {
    let tmp = tempfile::tempdir().expect("tmp");
    let none = edgefn(tmp.path(), &["new", "f", "--runtime", "python3"]);
    assert_eq!(none.status.code(), Some(1));
    assert!(
        text(&none.stderr).contains("edgefn init"),
        "{}",
        text(&none.stderr)
    );

    ok(&edgefn(tmp.path(), &["init", "."]));
    ok(&edgefn(tmp.path(), &["new", "f", "--runtime", "python3"]));
    let manifest = fs::read_to_string(tmp.path().join("edgefn.yaml")).expect("read");
    let again = edgefn(tmp.path(), &["new", "f", "--runtime", "node"]);
    assert_eq!(again.status.code(), Some(1));
    assert!(
        text(&again.stderr).contains("already defined"),
        "{}",
        text(&again.stderr)
    );
    assert_eq!(
        fs::read_to_string(tmp.path().join("edgefn.yaml")).expect("read"),
        manifest
    );
    assert!(
        !tmp.path().join("functions/f/index.js").exists(),
        "nothing half-written"
    );

    let bad = edgefn(tmp.path(), &["new", "Bad/Name", "--runtime", "node"]);
    assert_eq!(bad.status.code(), Some(1));
    assert!(text(&bad.stderr).contains("not a valid function name"));

    // An existing folder with the scaffold's file is not overwritten without --force.
    fs::create_dir_all(tmp.path().join("functions/g")).expect("mkdir");
    fs::write(tmp.path().join("functions/g/index.js"), "// mine\n").expect("write");
    let clash = edgefn(tmp.path(), &["new", "g", "--runtime", "node"]);
    assert_eq!(clash.status.code(), Some(1));
    assert_eq!(
        fs::read_to_string(tmp.path().join("functions/g/index.js")).expect("read"),
        "// mine\n"
    );
    assert!(
        !fs::read_to_string(tmp.path().join("edgefn.yaml"))
            .expect("read")
            .contains("  g:"),
        "manifest untouched"
    );
}

/// Five different mistakes → five diagnostics at the right places, exit 1.
const FIVE_MISTAKES: &str = r#"apiVersion: edgefn/v1
project: demo
functions:
  filter:
    path: functions/filter
    runtime: pyhton3
    handler: main.handle
    memory: 64MB
devices:
  gw-01: { labels: { role: gateway } }
bindings:
  - function: filter
    devices: { names: [gw-01] }
    triggers: [ { topic: "sensors/#/temperature" } ]
  - function: fliter
    devices: { labels: { role: gateway } }
    mode: continuous
    triggers: [ { topic: "x" } ]
"#;

fn five_mistakes_project() -> tempfile::TempDir {
    let tmp = tempfile::tempdir().expect("tmp");
    fs::create_dir_all(tmp.path().join("functions/filter")).expect("mkdir");
    fs::write(
        tmp.path().join("functions/filter/main.py"),
        "def handle(e, c):\n    return e\n",
    )
    .expect("write");
    fs::write(tmp.path().join("edgefn.yaml"), FIVE_MISTAKES).expect("write");
    tmp
}

#[test]
fn validate_reports_five_mistakes_at_their_positions() {
    let tmp = five_mistakes_project();
    let out = edgefn(tmp.path(), &["validate", "--format", "short"]);
    assert_eq!(out.status.code(), Some(1));
    let err = text(&out.stderr);
    let lines: Vec<&str> = err
        .lines()
        .filter(|l| l.starts_with("edgefn.yaml:"))
        .collect();
    assert_eq!(
        lines,
        [
            "edgefn.yaml:6:14: error[edgefn::manifest::invalid_value]: `pyhton3` is not a valid runtime",
            "edgefn.yaml:8:13: error[edgefn::manifest::invalid_quantity]: invalid memory of function `filter`: `MB` is not a memory unit",
            "edgefn.yaml:14:35: error[edgefn::manifest::invalid_topic]: invalid topic filter `sensors/#/temperature` in trigger #1 of binding #1 (`filter`): `#` must be the last level of a topic filter",
            "edgefn.yaml:15:15: error[edgefn::manifest::unknown_function]: binding #2 runs `fliter`, which is not defined",
            "edgefn.yaml:18:5: error[edgefn::manifest::continuous_with_triggers]: binding #2 (`fliter`) is continuous but lists triggers",
        ],
        "{err}"
    );
    assert!(err.contains("5 errors"), "{err}");
}

#[test]
fn validate_human_report_snapshot() {
    let tmp = five_mistakes_project();
    let out = edgefn(tmp.path(), &["validate"]);
    assert_eq!(out.status.code(), Some(1));
    snapshot(
        &repo().join("tests/snapshots/validate_five_mistakes.txt"),
        &text(&out.stderr),
    );
}

#[test]
fn validate_json_is_machine_readable() {
    let tmp = five_mistakes_project();
    let out = edgefn(tmp.path(), &["validate", "--format", "json"]);
    assert_eq!(out.status.code(), Some(1));
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json on stdout");
    assert_eq!(report["errors"], 5);
    let first = &report["diagnostics"][0];
    assert_eq!(first["code"], "edgefn::manifest::invalid_value");
    assert_eq!(
        (first["line"].as_u64(), first["column"].as_u64()),
        (Some(6), Some(14))
    );
    assert!(
        first["help"]
            .as_str()
            .is_some_and(|h| h.contains("python3"))
    );
}

#[test]
fn validate_with_a_file_argument_and_a_missing_file() {
    let tmp = five_mistakes_project();
    let sub = tmp.path().join("sub");
    fs::create_dir_all(&sub).expect("mkdir");
    // Found from a subfolder, like cargo finds Cargo.toml.
    assert_eq!(edgefn(&sub, &["validate"]).status.code(), Some(1));
    let missing = edgefn(tmp.path(), &["validate", "-f", "nope.yaml"]);
    assert_eq!(missing.status.code(), Some(1));
    assert!(text(&missing.stderr).contains("nope.yaml is not a file"));
}

#[test]
fn validate_accepts_warnings_with_exit_zero() {
    let tmp = five_mistakes_project();
    let fixed = "apiVersion: edgefn/v1\nproject: demo\nfunctions:\n  filter:\n    path: functions/filter\n    runtime: python3\n    handler: main.handle\ndevices:\n  gw-01: {}\nbindings:\n  - function: filter\n    devices: { labels: { role: router } }\n    triggers: [ a/b ]\n";
    fs::write(tmp.path().join("edgefn.yaml"), fixed).expect("write");
    let out = edgefn(tmp.path(), &["validate", "--format", "short"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert!(text(&out.stderr).contains("warning[edgefn::manifest::selector_matches_nothing]"));
}

#[test]
fn the_examples_validate_cleanly() {
    for example in ["quickstart", "dependencies", "vision"] {
        let out = edgefn(
            &repo().join("examples").join(example),
            &["validate", "--format", "short"],
        );
        let err = text(&out.stderr);
        assert!(out.status.success(), "{example}: {err}");
        assert!(!err.contains("warning"), "{example}: {err}");
    }
}

#[test]
fn checked_in_completions_are_current() {
    let dir = repo().join("completions");
    for (shell, file) in [
        ("bash", "edgefn.bash"),
        ("zsh", "_edgefn"),
        ("fish", "edgefn.fish"),
        ("powershell", "_edgefn.ps1"),
        ("elvish", "edgefn.elv"),
    ] {
        let out = ok(&edgefn(&dir, &["completions", shell]));
        assert!(
            out.contains("validate"),
            "{shell} completion mentions the subcommands"
        );
        snapshot(&dir.join(file), &out);
    }
}

#[test]
fn every_command_has_a_summary_and_an_example() {
    let tmp = tempfile::tempdir().expect("tmp");
    for cmd in [
        &[][..],
        &["init"],
        &["new"],
        &["validate"],
        &["publish"],
        &["subscribe"],
        &["logs"],
        &["completions"],
    ] {
        let mut args: Vec<&str> = cmd.to_vec();
        args.push("--help");
        let out = ok(&edgefn(tmp.path(), &args));
        assert!(
            out.contains("Example:"),
            "{args:?} --help has no example:\n{out}"
        );
    }
}

#[test]
fn validate_checks_the_functions_test_cases() {
    let tmp = tempfile::tempdir().expect("tmp");
    ok(&edgefn(tmp.path(), &["init", "."]));
    ok(&edgefn(tmp.path(), &["new", "f", "--runtime", "python3"]));
    fs::write(
        tmp.path().join("functions/f/tests/bad.yaml"),
        "trigger:\n  topic: sensors/+/temperature\nexpect:\n  result: 1\n",
    )
    .expect("write");
    let out = edgefn(tmp.path(), &["validate", "--format", "short"]);
    assert_eq!(out.status.code(), Some(1));
    let err = text(&out.stderr);
    assert!(
        err.contains(
            "functions/f/tests/bad.yaml:2:10: error[edgefn::manifest::wildcard_not_allowed]"
        ),
        "{err}"
    );
}

fn copy_dir(from: &Path, to: &Path) {
    fs::create_dir_all(to).expect("mkdir");
    for e in fs::read_dir(from).expect("read").flatten() {
        let target = to.join(e.file_name());
        if e.file_type().expect("type").is_dir() {
            copy_dir(&e.path(), &target);
        } else {
            fs::copy(e.path(), &target).expect("copy");
        }
    }
}

#[test]
fn edgefn_test_passes_on_the_quickstart_and_writes_junit() {
    let tmp = tempfile::tempdir().expect("tmp");
    copy_dir(&repo().join("examples/quickstart"), tmp.path());
    let out = edgefn(tmp.path(), &["test", "--junit", "results.xml"]);
    let stdout = ok(&out);
    assert!(stdout.contains("PASS temp-filter/hot"), "{stdout}");
    assert!(stdout.contains("PASS greeter/hello"), "{stdout}");
    assert!(
        stdout.trim_end().ends_with("4 passed, 0 failed"),
        "{stdout}"
    );
    let junit = fs::read_to_string(tmp.path().join("results.xml")).expect("junit");
    assert!(
        junit.contains("<testsuites name=\"edgefn\" tests=\"4\" failures=\"0\">"),
        "{junit}"
    );
    assert!(
        junit.contains("<testcase classname=\"temp-filter\" name=\"hot\""),
        "{junit}"
    );
}

#[test]
fn edgefn_test_fails_with_the_logs_of_the_failure() {
    let tmp = tempfile::tempdir().expect("tmp");
    copy_dir(&repo().join("examples/quickstart"), tmp.path());
    // The function now prints and computes the wrong thing.
    let main = tmp.path().join("functions/temp-filter/main.py");
    let code = fs::read_to_string(&main).expect("read");
    fs::write(
        &main,
        code.replace(
            "alert = celsius > THRESHOLD",
            "print('threshold is', THRESHOLD)\n    alert = celsius < THRESHOLD",
        ),
    )
    .expect("write");
    let out = edgefn(
        tmp.path(),
        &["test", "temp-filter", "--junit", "results.xml"],
    );
    assert_eq!(out.status.code(), Some(1));
    let stdout = text(&out.stdout);
    assert!(stdout.contains("FAIL temp-filter/hot"), "{stdout}");
    assert!(
        stdout.contains("| [stdout] threshold is 40.0"),
        "the failing case's logs are shown:\n{stdout}"
    );
    assert!(stdout.contains("PASS temp-filter/bad-payload"), "{stdout}");
    assert!(
        !stdout.contains("greeter"),
        "only the named function ran: {stdout}"
    );
    assert!(
        stdout.trim_end().ends_with("1 passed, 2 failed"),
        "{stdout}"
    );
    let junit = fs::read_to_string(tmp.path().join("results.xml")).expect("junit");
    assert!(
        junit.contains("failures=\"2\"") && junit.contains("<failure message="),
        "{junit}"
    );
}

#[test]
fn edgefn_test_simulates_a_message_and_invoke_calls_once() {
    let dir = repo().join("examples/quickstart");
    let out = ok(&edgefn(
        &dir,
        &[
            "test",
            "--topic",
            "sensors/line7/temperature",
            "--payload",
            "{\"celsius\": 80}",
            "--device",
            "gw-02",
        ],
    ));
    assert!(
        out.contains("gw-02: sensors/line7/temperature fires 1 binding"),
        "{out}"
    );
    assert!(out.contains("publishes alerts/line7 {\"celsius\":80.0,\"device\":\"gw-02\",\"line\":\"line7\"} → cloud (route alerts/#)"), "{out}");
    let bad = edgefn(
        &dir,
        &["test", "--topic", "sensors/+/temperature", "--payload", "1"],
    );
    assert_eq!(bad.status.code(), Some(1));
    assert!(
        text(&bad.stderr).contains("concrete topic"),
        "{}",
        text(&bad.stderr)
    );
    let out = ok(&edgefn(
        &dir,
        &["invoke", "greeter", "--event", "{\"name\": \"Ada\"}"],
    ));
    assert!(out.contains("\"greeting\": \"Hello, Ada!\""), "{out}");
}

#[test]
fn new_functions_pass_their_own_tests_in_every_runtime() {
    let tmp = tempfile::tempdir().expect("tmp");
    ok(&edgefn(tmp.path(), &["init", "."]));
    for runtime in ["python3", "node", "exec"] {
        ok(&edgefn(
            tmp.path(),
            &["new", &format!("fn-{runtime}"), "--runtime", runtime],
        ));
    }
    let out = ok(&edgefn(tmp.path(), &["test"]));
    assert!(out.trim_end().ends_with("3 passed, 0 failed"), "{out}");
}

/// Every line a case prints is shown with its failure, the last ones too: a handler that prints
/// thousands of lines right before it returns loses none of them, on either stream, in any run
/// (`edgefn test` waits for the end of the instance's output, not for a moment).
#[test]
fn edgefn_test_shows_every_line_printed_right_before_returning() {
    const LINES: usize = 40_000;
    let tmp = tempfile::tempdir().expect("tmp");
    ok(&edgefn(tmp.path(), &["init", "."]));
    for runtime in ["python3", "node"] {
        ok(&edgefn(
            tmp.path(),
            &["new", &format!("chatty-{runtime}"), "--runtime", runtime],
        ));
    }
    // Each prints LINES lines on stdout and one last line on stderr, then returns what its
    // test case does not expect. The python one first makes its stdout pipe hold a megabyte
    // (F_SETPIPE_SZ), so that it returns with most of its output not yet read.
    fs::write(
        tmp.path().join("functions/chatty-python3/main.py"),
        format!(
            "import fcntl, sys\n\ndef handle(event, context):\n    try:\n        fcntl.fcntl(1, 1031, 1 << 20)\n    except OSError:\n        pass\n    for i in range({LINES}):\n        print(f'line {{i}} of {LINES}')\n    print('the last word', file=sys.stderr)\n    return 'wrong'\n"
        ),
    )
    .expect("write");
    fs::write(
        tmp.path().join("functions/chatty-node/index.js"),
        format!(
            "exports.handler = async () => {{\n  for (let i = 0; i < {LINES}; i++) console.log(`line ${{i}} of {LINES}`);\n  console.error('the last word');\n  return 'wrong';\n}};\n"
        ),
    )
    .expect("write");
    for run in 0..3 {
        let out = edgefn(tmp.path(), &["test"]);
        assert_eq!(
            out.status.code(),
            Some(1),
            "run {run}: {}",
            text(&out.stderr)
        );
        let stdout = text(&out.stdout);
        assert!(
            stdout.trim_end().ends_with("0 passed, 2 failed"),
            "{stdout}"
        );
        for function in ["chatty-python3", "chatty-node"] {
            let at = stdout
                .find(&format!("FAIL {function}/example"))
                .unwrap_or_else(|| panic!("run {run}: no FAIL {function}:\n{stdout}"));
            // The case's block ends at the next case (or the summary).
            let block = &stdout[at..];
            let end = block[1..].find("FAIL ").map_or(block.len(), |e| e + 1);
            let logs: Vec<&str> = block[..end]
                .lines()
                .filter_map(|l| l.strip_prefix("     | "))
                .collect();
            let expected: Vec<String> = (0..LINES)
                .map(|i| format!("[stdout] line {i} of {LINES}"))
                .collect();
            let stdout_lines: Vec<&str> = logs
                .iter()
                .copied()
                .filter(|l| l.starts_with("[stdout]"))
                .collect();
            assert_eq!(
                stdout_lines.len(),
                LINES,
                "run {run}, {function}: {} of {LINES} lines shown; the last: {:?}",
                stdout_lines.len(),
                stdout_lines.last()
            );
            assert!(
                stdout_lines
                    .iter()
                    .zip(&expected)
                    .all(|(got, want)| got == want),
                "run {run}, {function}: lines out of order or changed"
            );
            assert!(
                logs.contains(&"[stderr] the last word"),
                "run {run}, {function}: the last line on stderr is missing"
            );
        }
    }
}

/// `edgefn test --topic` answers the shared routing table (`edgefn_schema::conformance`) as the
/// agent and the cloud do: for each topic, the bindings it fires on the device and the routes
/// that send it up.
#[test]
fn edgefn_test_topic_answers_the_shared_routing_table() {
    use edgefn_schema::conformance::{DEVICE, MANIFEST, ROUTES};
    // The plain (stdio) program `edgefn new --runtime exec` writes; the table's functions are
    // declared `interface: stdio`.
    let scratch = tempfile::tempdir().expect("tmp");
    ok(&edgefn(scratch.path(), &["init", "."]));
    ok(&edgefn(
        scratch.path(),
        &["new", "echo", "--runtime", "exec"],
    ));
    let handler = fs::read(scratch.path().join("functions/echo/handler.sh")).expect("handler");
    let tmp = tempfile::tempdir().expect("tmp");
    fs::write(tmp.path().join("edgefn.yaml"), MANIFEST).expect("manifest");
    for f in ["temp-filter", "greeter", "audit", "collector"] {
        let dir = tmp.path().join("functions").join(f);
        fs::create_dir_all(&dir).expect("mkdir");
        let run = dir.join("run");
        fs::write(&run, &handler).expect("run");
        let mut perms = fs::metadata(&run).expect("meta").permissions();
        std::os::unix::fs::PermissionsExt::set_mode(&mut perms, 0o755);
        fs::set_permissions(&run, perms).expect("chmod");
    }
    for case in ROUTES {
        let out = ok(&edgefn(
            tmp.path(),
            &["test", "--topic", case.topic, "--device", DEVICE],
        ));
        let n = case.triggered.len();
        assert!(
            out.contains(&format!(
                "{DEVICE}: {} fires {n} binding{}",
                case.topic,
                if n == 1 { "" } else { "s" }
            )),
            "{}: {out}",
            case.topic
        );
        let up: Vec<&str> = out
            .lines()
            .filter_map(|l| l.strip_prefix("  the message itself → cloud (route "))
            .map(|r| r.trim_end_matches(')'))
            .collect();
        assert_eq!(up, case.up, "{}: routes up\n{out}", case.topic);
        let fired: Vec<&str> = out
            .lines()
            .filter_map(|l| l.strip_prefix("  "))
            .filter(|l| !l.starts_with(' ') && !l.starts_with("the message itself"))
            .filter_map(|l| l.split_once(" → ").map(|(name, _)| name))
            .collect();
        assert_eq!(
            fired, case.triggered,
            "{}: bindings fired\n{out}",
            case.topic
        );
    }
}

#[test]
fn edgefn_test_runs_the_quickstart_in_containers_as_root() {
    let uid = Command::new("id").arg("-u").output().expect("id");
    if text(&uid.stdout).trim() != "0" || !Path::new("/sys/fs/cgroup").is_dir() {
        eprintln!("skipped: containers need root and cgroups");
        return;
    }
    let tmp = tempfile::tempdir().expect("tmp");
    copy_dir(&repo().join("examples/quickstart"), tmp.path());
    let out = edgefn(tmp.path(), &["test", "--sandbox", "container"]);
    let stdout = ok(&out);
    assert!(
        text(&out.stderr).contains("sandbox: container"),
        "{}",
        text(&out.stderr)
    );
    assert!(
        stdout.trim_end().ends_with("4 passed, 0 failed"),
        "{stdout}"
    );
}

/// `cargo install edgefn` (what the CI workflow of `edgefn init` runs) needs every crate it
/// depends on to be packageable: each path dependency also names a version, and each crate has
/// the metadata crates.io asks for.
#[test]
fn every_crate_can_be_packaged() {
    let root = repo();
    let workspace = fs::read_to_string(root.join("Cargo.toml")).expect("workspace");
    let members: Vec<String> = workspace
        .lines()
        .find(|l| l.starts_with("members"))
        .expect("members")
        .split('"')
        .skip(1)
        .step_by(2)
        .map(str::to_owned)
        .collect();
    assert!(members.len() >= 6, "{members:?}");
    let mut problems = Vec::new();
    let check_deps = |file: &str, text: &str, problems: &mut Vec<String>| {
        let mut section = String::new();
        for line in text.lines() {
            if line.starts_with('[') {
                section = line.to_owned();
                continue;
            }
            let dev = section.contains("dev-dependencies");
            if line.contains("path = ") && line.contains('{') && !dev && !line.contains("version") {
                problems.push(format!("{file}: `{line}` has a path and no version"));
            }
        }
    };
    check_deps("Cargo.toml", &workspace, &mut problems);
    for m in &members {
        let file = format!("{m}/Cargo.toml");
        let text = fs::read_to_string(root.join(&file)).expect("crate manifest");
        check_deps(&file, &text, &mut problems);
        for key in ["description", "license", "repository"] {
            if !text.lines().any(|l| l.starts_with(key)) {
                problems.push(format!("{file}: no `{key}`"));
            }
        }
    }
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}

/// `edgefn new --trigger/--continuous` also writes the binding (in the file's own style, the
/// result validated); a bad topic or a --label without a binding writes nothing.
#[test]
fn new_can_bind_the_function_it_creates() {
    let tmp = tempfile::tempdir().expect("tmp");
    ok(&edgefn(tmp.path(), &["init", "."]));
    let manifest = tmp.path().join("edgefn.yaml");
    ok(&edgefn(
        tmp.path(),
        &[
            "new",
            "temp-filter",
            "--runtime",
            "python3",
            "--trigger",
            "sensors/+/temperature",
        ],
    ));
    ok(&edgefn(
        tmp.path(),
        &[
            "new",
            "collector",
            "--runtime",
            "exec",
            "--continuous",
            "--label",
            "role=gateway",
        ],
    ));
    let written = fs::read_to_string(&manifest).expect("read");
    assert!(
        written.contains("bindings:\n  - function: temp-filter\n    devices: { labels: {} }\n    triggers: [ { topic: \"sensors/+/temperature\" } ]\n  - function: collector\n    devices: { labels: { role: \"gateway\" } }\n    mode: continuous\n"),
        "{written}"
    );
    let v = edgefn(tmp.path(), &["validate"]);
    ok(&v);
    assert!(
        text(&v.stderr).contains("2 bindings"),
        "{}",
        text(&v.stderr)
    );
    for bad in [
        &["new", "x", "--runtime", "node", "--trigger", "a/#/b"][..],
        &["new", "y", "--runtime", "node", "--label", "role=gateway"],
    ] {
        let out = edgefn(tmp.path(), bad);
        assert_eq!(out.status.code(), Some(1), "{bad:?}");
        assert_eq!(
            fs::read_to_string(&manifest).expect("read"),
            written,
            "untouched"
        );
        assert!(
            !tmp.path().join("functions/x").exists() && !tmp.path().join("functions/y").exists()
        );
    }
}

/// The 716-byte alias bomb of issue 11: nine levels of nine aliases.
const ALIAS_BOMB: &str = include_str!("../schema/tests/fixtures/alias-bomb.yaml");

/// The `file:line:col: error[CODE]` lines of a short report.
fn short_errors(out: &Output) -> Vec<String> {
    text(&out.stderr)
        .lines()
        .filter(|l| l.contains(": error["))
        .map(str::to_owned)
        .collect()
}

/// Asserts that `line` (`file:L:C: ...`) points at a `*` (an alias) of `yaml`.
#[track_caller]
fn assert_points_at_an_alias(line: &str, yaml: &str) {
    let mut parts = line.split(':').skip(1).map(|n| n.parse::<usize>().ok());
    let (Some(Some(l)), Some(Some(c))) = (parts.next(), parts.next()) else {
        panic!("no line and column in {line}")
    };
    let at = yaml
        .lines()
        .nth(l - 1)
        .and_then(|text| text.chars().nth(c - 1));
    assert_eq!(at, Some('*'), "{line}");
}

#[test]
fn validate_refuses_an_alias_bomb_at_its_alias() {
    let tmp = tempfile::tempdir().expect("tmp");
    fs::write(tmp.path().join("edgefn.yaml"), ALIAS_BOMB).expect("write");
    let out = edgefn(tmp.path(), &["validate", "--format", "short"]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out.stderr));
    let errors = short_errors(&out);
    assert_eq!(errors.len(), 1, "{errors:?}");
    assert!(
        errors[0].contains("error[edgefn::manifest::alias_expansion]"),
        "{errors:?}"
    );
    assert_points_at_an_alias(&errors[0], ALIAS_BOMB);
}

#[test]
fn validate_refuses_deep_nesting_without_overflowing() {
    let tmp = tempfile::tempdir().expect("tmp");
    // 100 000 levels of compact block sequences: 200 KB.
    let deep = format!(
        "apiVersion: edgefn/v1\nproject: deep\nx:\n  {}a\n",
        "- ".repeat(100_000)
    );
    fs::write(tmp.path().join("edgefn.yaml"), deep).expect("write");
    let out = edgefn(tmp.path(), &["validate", "--format", "short"]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out.stderr));
    let errors = short_errors(&out);
    assert_eq!(
        errors,
        vec![
            // The mapping is level 1, so the 100th `-` (column 201) starts level 101.
            "edgefn.yaml:4:201: error[edgefn::manifest::nesting_depth]: lists and mappings \
             nested more than 100 deep"
        ],
    );
}

#[test]
fn a_manifest_that_is_not_utf8_is_reported_at_its_first_bad_byte() {
    let tmp = tempfile::tempdir().expect("tmp");
    // "café" in Latin-1: the é is the one byte 0xE9, at line 2, column 13.
    fs::write(
        tmp.path().join("edgefn.yaml"),
        b"apiVersion: edgefn/v1\nproject: caf\xE9\n",
    )
    .expect("write");
    let out = edgefn(tmp.path(), &["validate", "--format", "short"]);
    assert_eq!(out.status.code(), Some(1));
    let errors = short_errors(&out);
    assert_eq!(errors.len(), 1, "{}", text(&out.stderr));
    assert!(
        errors[0].starts_with("edgefn.yaml:2:13: error[edgefn::manifest::not_utf8]: "),
        "{errors:?}"
    );
    // JSON, for editors and CI.
    let out = edgefn(tmp.path(), &["validate", "--format", "json"]);
    assert_eq!(out.status.code(), Some(1));
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json");
    let d = &report["diagnostics"][0];
    assert_eq!(
        (d["code"].as_str(), d["line"].as_u64(), d["column"].as_u64()),
        (Some("edgefn::manifest::not_utf8"), Some(2), Some(13)),
        "{report}"
    );
    // Every other command that reads the manifest says the same, with the place.
    let out = edgefn(tmp.path(), &["new", "g", "--runtime", "python3"]);
    assert_eq!(out.status.code(), Some(1));
    let err = text(&out.stderr);
    assert!(
        err.contains("edgefn::manifest::not_utf8") && err.contains("edgefn.yaml:2:13"),
        "{err}"
    );
}

#[test]
fn test_cases_are_read_with_the_same_bounds() {
    let tmp = tempfile::tempdir().expect("tmp");
    ok(&edgefn(tmp.path(), &["init", "."]));
    ok(&edgefn(tmp.path(), &["new", "f", "--runtime", "python3"]));
    let tests = tmp.path().join("functions/f/tests");
    fs::write(tests.join("bomb.yaml"), ALIAS_BOMB).expect("write");
    fs::write(
        tests.join("deep.yaml"),
        format!(
            "trigger:\n  topic: a/b\n  payload:\n    {}1\n",
            "- ".repeat(100_000)
        ),
    )
    .expect("write");
    fs::write(
        tests.join("latin1.yaml"),
        b"description: caf\xE9\ntrigger:\n  topic: a/b\n",
    )
    .expect("write");
    // `validate` reports all three, each at its place.
    let out = edgefn(tmp.path(), &["validate", "--format", "short"]);
    assert_eq!(out.status.code(), Some(1));
    let errors = short_errors(&out);
    assert_eq!(errors.len(), 3, "{}", text(&out.stderr));
    let bomb = errors
        .iter()
        .find(|e| e.contains("bomb.yaml:"))
        .expect("bomb");
    assert!(
        bomb.contains("error[edgefn::manifest::alias_expansion]"),
        "{bomb}"
    );
    assert_points_at_an_alias(bomb.split_once("tests/").expect("a path").1, ALIAS_BOMB);
    assert!(
        errors
            .iter()
            .any(|e| e.contains("deep.yaml:4:201: error[edgefn::manifest::nesting_depth]")),
        "{errors:?}"
    );
    assert!(
        errors
            .iter()
            .any(|e| e.contains("latin1.yaml:1:17: error[edgefn::manifest::not_utf8]")),
        "{errors:?}"
    );
    // `test` refuses to run, saying why.
    let out = edgefn(tmp.path(), &["test"]);
    assert_eq!(out.status.code(), Some(1));
    let err = text(&out.stderr);
    for code in ["alias_expansion", "nesting_depth", "not_utf8"] {
        assert!(err.contains(&format!("edgefn::manifest::{code}")), "{err}");
    }
    assert!(err.contains("nothing was run"), "{err}");
}

/// `edgefn invoke --as-device` and a test case's `device:` run a function as on that device (its
/// binding, its values in `env`), and refuse a device that does not run it; `--event @FILE`
/// reads the payload from a file, up to a limit.
#[test]
fn invoke_and_test_run_a_function_as_on_a_device_that_runs_it() {
    let tmp = tempfile::tempdir().expect("tmp");
    let dir = tmp.path().join("functions/line");
    fs::create_dir_all(dir.join("tests")).expect("mkdir");
    fs::write(
        dir.join("main.py"),
        "import os\n\ndef handle(event, context):\n    return {\"line\": os.environ[\"LINE\"], \"got\": event[\"payload\"]}\n",
    )
    .expect("write");
    fs::write(
        tmp.path().join("edgefn.yaml"),
        "apiVersion: edgefn/v1\nproject: lines\nfunctions:\n  line: { path: functions/line, runtime: python3, handler: main.handle }\ndevices:\n  gw-01: { labels: { role: gateway }, vars: { LINE: \"7\" } }\n  gw-02: { labels: { role: gateway }, vars: { LINE: \"9\" } }\n  vm-01: { labels: { role: vm } }\nbindings:\n  - function: line\n    devices: { labels: { role: gateway } }\n    triggers: [ \"lines/#\" ]\n    env: { LINE: \"line-${device.vars.LINE}\" }\n",
    )
    .expect("manifest");
    let out = ok(&edgefn(
        tmp.path(),
        &["invoke", "line", "--as-device", "gw-02", "--event", "1"],
    ));
    assert!(out.contains("\"line\": \"line-9\""), "{out}");
    let out = ok(&edgefn(tmp.path(), &["invoke", "line"]));
    assert!(
        out.contains("\"line\": \"line-7\""),
        "the first device by default: {out}"
    );

    let wrong = edgefn(tmp.path(), &["invoke", "line", "--as-device", "vm-01"]);
    assert_eq!(wrong.status.code(), Some(1));
    assert!(
        text(&wrong.stderr).contains("does not run on device `vm-01`"),
        "{}",
        text(&wrong.stderr)
    );
    let typo = edgefn(tmp.path(), &["invoke", "line", "--as-device", "gw-03"]);
    assert_eq!(typo.status.code(), Some(1));
    assert!(
        text(&typo.stderr).contains("gw-03"),
        "{}",
        text(&typo.stderr)
    );

    // The payload from a file; a file past the limit is refused before anything runs.
    fs::write(tmp.path().join("event.json"), "{\"from\": \"a file\"}").expect("write");
    let out = ok(&edgefn(
        tmp.path(),
        &["invoke", "line", "--event", "@event.json"],
    ));
    assert!(out.contains("\"from\": \"a file\""), "{out}");
    let big = tmp.path().join("big.bin");
    let f = fs::File::create(&big).expect("create");
    f.set_len(17 << 20).expect("grow");
    let refused = edgefn(tmp.path(), &["invoke", "line", "--event", "@big.bin"]);
    assert_eq!(refused.status.code(), Some(1));
    assert!(
        text(&refused.stderr).contains("larger than a payload may be"),
        "{}",
        text(&refused.stderr)
    );

    // A test case on a device the function does not run on is an error, not a run without
    // that device's values.
    fs::write(
        dir.join("tests/on-vm.yaml"),
        "device: vm-01\ntrigger: { topic: lines/a, payload: 1 }\nexpect: { result: { line: x, got: 1 } }\n",
    )
    .expect("case");
    let out = edgefn(tmp.path(), &["test"]);
    assert_eq!(out.status.code(), Some(1));
    let all = format!("{}{}", text(&out.stdout), text(&out.stderr));
    assert!(all.contains("does not run on device `vm-01`"), "{all}");
    fs::write(
        dir.join("tests/on-vm.yaml"),
        "device: gw-02\ntrigger: { topic: lines/a, payload: 1 }\nexpect: { result: { line: line-9, got: 1 } }\n",
    )
    .expect("case");
    let out = ok(&edgefn(tmp.path(), &["test"]));
    assert!(out.contains("1 passed, 0 failed"), "{out}");
}

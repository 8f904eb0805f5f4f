//! The files `edgefn init` and `edgefn new` write.

use edgefn_schema::{Interface, Runtime, SCHEMA_URL};

use crate::error::{CliError, CliResult};
use crate::project::NewFile;

/// Checks a function or project name against the manifest's rules.
pub(crate) fn check_name(name: &str, kind: &str) -> CliResult<()> {
    let ok = edgefn_schema::manifest::valid_name(name);
    if ok {
        Ok(())
    } else {
        Err(CliError::InvalidArgument {
            message: format!("`{name}` is not a valid {kind} name"),
            help: format!(
                "a {kind} name uses lowercase letters, digits, `-` and `_`, starts and ends with a letter or digit, and has at most 63 characters"
            ),
        })
    }
}

/// The first line of every scaffolded manifest, so editors with the YAML language server
/// complete and check it against the JSON Schema.
pub(crate) fn schema_comment() -> String {
    format!("# yaml-language-server: $schema={SCHEMA_URL}")
}

/// The files of a new project.
pub(crate) fn project(name: &str) -> Vec<NewFile> {
    vec![
        NewFile::new("edgefn.yaml", manifest(name)),
        NewFile::new("functions/.gitkeep", ""),
        NewFile::new(
            ".gitignore",
            "# edgefn dev state (local control plane and agents)\n.edgefn/\n# local values of secrets for `edgefn test` and `edgefn dev` (never in git)\nsecrets.local.yaml\n",
        ),
        NewFile::new(
            ".edgefnignore",
            "# Files left out of function bundles (gitignore syntax). `tests/` is always left out.\n__pycache__/\n*.pyc\nnode_modules/.cache/\n",
        ),
        NewFile::new(".github/workflows/edgefn.yml", ci_workflow()),
    ]
}

fn manifest(name: &str) -> String {
    format!(
        r#"{schema}
apiVersion: edgefn/v1
project: {name}

# Functions, one folder each under functions/. Add one with:
#   edgefn new NAME --runtime python3|node|exec
functions:

# The devices of the fleet, with labels that bindings and routes select them by.
devices:
  dev-01:
    labels: {{ role: gateway }}

# Which functions run on which devices, and how:
#   - function: NAME
#     devices: {{ labels: {{ role: gateway }} }}   # or {{ names: [dev-01] }}
#     mode: triggered                              # or continuous
#     triggers: [ {{ topic: "sensors/+/temperature" }} ]
bindings: []

# Message forwarding between each device's local bus and the cloud:
#   - {{ from: "alerts/#", to: cloud }}
#   - {{ from: "cloud:commands/#", to: local }}
routes: []
"#,
        schema = schema_comment()
    )
}

/// The CI workflow `edgefn init` writes: the edgefn that wrote it, installed once and cached.
fn ci_workflow() -> String {
    CI_WORKFLOW.replace("{version}", env!("CARGO_PKG_VERSION"))
}

const CI_WORKFLOW: &str = r#"# Runs the functions' tests on every push, and applies the manifest to the control plane from the
# default branch (main or master).
# Set the repository variable EDGEFN_CLOUD (the control plane's URL) and the secret EDGEFN_TOKEN
# (an admin token of edgefn-cloud).
name: edgefn

on:
  push:
    branches: [main, master]
  pull_request:

jobs:
  test:
    runs-on: ubuntu-latest
    steps:
      - uses: actions/checkout@v4
      - name: Cache edgefn
        uses: actions/cache@v4
        with:
          path: ~/.cargo/bin/edgefn
          key: edgefn-{version}-${{ runner.os }}-${{ runner.arch }}
      - name: Install edgefn {version} (once; the cache keeps it)
        run: command -v edgefn >/dev/null || cargo install --locked edgefn --version {version}
      - name: Validate the manifest
        run: edgefn validate --format short
      - name: Run the functions' tests
        run: edgefn test --junit edgefn-tests.xml

  apply:
    if: github.event_name == 'push' && (github.ref == 'refs/heads/main' || github.ref == 'refs/heads/master')
    needs: test
    runs-on: ubuntu-latest
    # One apply at a time; the control plane also refuses a stale parent revision.
    concurrency: edgefn-apply
    env:
      EDGEFN_CLOUD: ${{ vars.EDGEFN_CLOUD }}
      EDGEFN_TOKEN: ${{ secrets.EDGEFN_TOKEN }}
    steps:
      - uses: actions/checkout@v4
      - name: Cache edgefn
        uses: actions/cache@v4
        with:
          path: ~/.cargo/bin/edgefn
          key: edgefn-{version}-${{ runner.os }}-${{ runner.arch }}
      - name: Install edgefn {version} (once; the cache keeps it)
        run: command -v edgefn >/dev/null || cargo install --locked edgefn --version {version}
      - name: Apply, and wait for the fleet to converge
        run: edgefn apply --wait --output json
"#;

/// The manifest fields of a new function, as YAML text.
pub(crate) fn function_fields(name: &str, runtime: Runtime) -> Vec<(&'static str, String)> {
    let handler = match runtime {
        Runtime::Python3 => "main.handle".to_owned(),
        Runtime::Node => "index.handler".to_owned(),
        Runtime::Exec => "[\"./handler.sh\"]".to_owned(),
    };
    let mut fields = vec![
        ("path", format!("functions/{name}")),
        ("runtime", runtime.as_str().to_owned()),
        ("handler", handler),
    ];
    if runtime == Runtime::Exec {
        // A plain program is what "any executable" means to most: the framed protocol is there
        // for those who need publishing or warm instances (`interface: protocol`).
        fields.push(("interface", Interface::Stdio.as_str().to_owned()));
    }
    fields
}

/// The files of a new function, relative to the project folder.
///
/// `trigger`, the binding's first topic filter when it has one, gives the test case its topic
/// (wildcards filled in with `demo`); the default is `sensors/demo/temperature`.
pub(crate) fn function(name: &str, runtime: Runtime, trigger: Option<&str>) -> Vec<NewFile> {
    let dir = format!("functions/{name}");
    let topic = trigger.map_or_else(
        || "sensors/demo/temperature".to_owned(),
        |t| {
            t.split('/')
                .map(|l| if l == "+" || l == "#" { "demo" } else { l })
                .collect::<Vec<_>>()
                .join("/")
        },
    );
    let code = match runtime {
        Runtime::Python3 => NewFile::new(format!("{dir}/main.py"), python(name)),
        Runtime::Node => NewFile::new(format!("{dir}/index.js"), node(name)),
        Runtime::Exec => NewFile::executable(format!("{dir}/handler.sh"), exec(name)),
    };
    vec![
        code,
        NewFile::new(
            format!("{dir}/tests/example.yaml"),
            test_case(name, runtime, &topic),
        ),
    ]
}

fn python(name: &str) -> String {
    format!(
        r#""""{name}: an edgefn function.

edgefn calls `handle(event, context)` once per message matching one of the binding's triggers:
event["topic"] is the message's topic and event["payload"] its payload: the JSON value when the
message is JSON, a str when it is other text, bytes otherwise. What the function returns is its
result; context.publish(topic, value) puts a message on the device's bus (routes may send it up).
"""


def handle(event, context):
    return {{"topic": event["topic"], "received": event["payload"]}}
"#
    )
}

fn node(name: &str) -> String {
    format!(
        r#"// {name}: an edgefn function.
//
// edgefn calls `handler(event, context)` once per message matching one of the binding's
// triggers: event.topic is the message's topic and event.payload its payload: the JSON value
// when the message is JSON, a string when it is other text, a Buffer otherwise. What the function
// returns (or its promise resolves to) is its result; context.publish(topic, value) puts a message
// on the device's bus (routes may send it up).

exports.handler = async (event, context) => {{
  return {{ topic: event.topic, received: event.payload }};
}};
"#
    )
}

fn exec(name: &str) -> String {
    format!(
        r#"#!/bin/sh
# {name}: an edgefn function run as a plain program (runtime: exec, interface: stdio).
#
# edgefn starts this program once per message matching one of the binding's triggers: the
# message's payload arrives on stdin (JSON as JSON text, other text as it is, then end of file),
# its topic in $EDGEFN_TOPIC. What it prints on stdout is its result (a JSON value when it is
# JSON, else text; one trailing newline removed); exit status 0 means success. stderr is its log.
# To keep one process warm that reads events in a loop, one line of JSON each, write
# `interface: lines`; to publish messages, speak the invocation protocol (runtime/PROTOCOL.md).
payload=$(cat)
echo "called on $EDGEFN_TOPIC with $payload" >&2
# The result: here the payload itself, which reads back as the same value (JSON as JSON, text
# as text). Print only the result on stdout; log on stderr.
printf '%s\n' "$payload"
"#
    )
}

fn test_case(name: &str, runtime: Runtime, topic: &str) -> String {
    let quoted = serde_json::to_string(topic).expect("string");
    let result = match runtime {
        // The stdio template answers with its payload.
        Runtime::Exec => "{ celsius: 21.5 }".to_owned(),
        _ => format!("{{ topic: {quoted}, received: {{ celsius: 21.5 }} }}"),
    };
    format!(
        r#"# A test case for `edgefn test`: a simulated message, and what {name} should do with it.
trigger:
  topic: {quoted}
  payload: {{ celsius: 21.5 }}
expect:
  result: {result}
"#
    )
}

//! The manifest's diagnostics, one test per problem, each asserting the code and the line:column
//! it points at; plus desired-state resolution and the JSON Schema.

use std::collections::{BTreeMap, BTreeSet};

use edgefn_schema::{
    Code, Diagnostics, EntryKind, Mode, ProjectFiles, Severity, Source, load, resolve,
};

/// A project tree in memory: the file checks are what is tested, not the file system.
#[derive(Default)]
struct Tree {
    files: BTreeSet<&'static str>,
    dirs: BTreeSet<&'static str>,
    escaping: BTreeSet<&'static str>,
}

impl ProjectFiles for Tree {
    fn kind(&self, rel: &str) -> Option<EntryKind> {
        if self.files.contains(rel) {
            Some(EntryKind::File)
        } else if self.dirs.contains(rel) {
            Some(EntryKind::Dir)
        } else {
            None
        }
    }
    fn is_inside(&self, rel: &str) -> bool {
        !self.escaping.iter().any(|e| rel.starts_with(e))
    }
}

fn tree() -> Tree {
    Tree {
        files: [
            "functions/filter/main.py",
            "functions/hello/index.js",
            "functions/collect/run.sh",
        ]
        .into(),
        dirs: [
            "functions",
            "functions/filter",
            "functions/hello",
            "functions/collect",
            "functions/linked",
        ]
        .into(),
        escaping: ["functions/linked"].into(),
    }
}

const VALID: &str = r#"apiVersion: edgefn/v1
project: demo
functions:
  filter:
    path: functions/filter
    runtime: python3
    handler: main.handle
    memory: 64Mi
    cpu: 500m
    timeout: 3s
    env: { THRESHOLD: 40 }
  hello:
    path: functions/hello
    runtime: node
    handler: index.handler
  collect:
    path: functions/collect
    runtime: exec
    handler: ["./run.sh", "--fast"]
devices:
  gw-01: { labels: { site: sh, role: gateway } }
  gw-02: { labels: { site: bj, role: gateway } }
  vm-01: {}
bindings:
  - function: filter
    devices: { labels: { role: gateway } }
    triggers: [ { topic: "sensors/+/temperature" } ]
    concurrency: 4
    idleTimeout: 60s
  - function: hello
    devices: { names: [vm-01] }
    triggers: [ "hello/#" ]
    memory: 32Mi
    env: { GREETING: hi }
  - function: collect
    devices: { names: [gw-01] }
    mode: continuous
routes:
  - { from: "alerts/#", to: cloud }
  - { from: "cloud:commands/#", to: local, devices: { labels: { site: sh } } }
"#;

fn check(text: &str) -> Result<edgefn_schema::Loaded, Diagnostics> {
    load(&Source::new("edgefn.yaml", text), Some(&tree()))
}

/// Every diagnostic as (code, line, column), errors and warnings.
fn problems(text: &str) -> Vec<(Code, usize, usize)> {
    let diags = match check(text) {
        Ok(l) => l.warnings,
        Err(d) => d,
    };
    diags
        .iter()
        .map(|d| {
            let loc = d.location();
            (d.code, loc.line, loc.column)
        })
        .collect()
}

/// `VALID` with `from` replaced by `to` (which must occur).
fn with(from: &str, to: &str) -> String {
    assert!(VALID.contains(from), "{from:?} not in the valid manifest");
    VALID.replacen(from, to, 1)
}

#[test]
fn the_valid_manifest_loads_without_problems() {
    let loaded = check(VALID).unwrap_or_else(|d| panic!("{:#?}", problems_of(&d)));
    assert!(loaded.warnings.is_empty(), "{:?}", problems(VALID));
    let m = loaded.manifest;
    assert_eq!(m.functions.len(), 3);
    assert_eq!(m.functions["filter"].env["THRESHOLD"], "40");
    assert_eq!(m.bindings[1].triggers[0].topic, "hello/#");
    assert_eq!(m.bindings[2].mode, Mode::Continuous);
}

fn problems_of(d: &Diagnostics) -> Vec<String> {
    d.iter()
        .map(|d| format!("{} {:?} {}", d.code, d.location(), d.message))
        .collect()
}

#[test]
fn yaml_syntax_error() {
    assert_eq!(
        problems(&with("project: demo\n", "project: [demo\n")),
        vec![(Code::YamlSyntax, 3, 10)]
    );
}

#[test]
fn tabs_are_a_syntax_error() {
    let p = problems(&with("  hello:\n", "\thello:\n"));
    assert_eq!(p.len(), 1);
    assert_eq!(p[0].0, Code::YamlSyntax);
    assert_eq!(p[0].1, 12);
}

#[test]
fn unknown_key_with_suggestion() {
    let text = with("    memory: 64Mi\n", "    memroy: 64Mi\n");
    assert_eq!(problems(&text), vec![(Code::UnknownKey, 8, 5)]);
    let d = check(&text).unwrap_err();
    assert_eq!(d.0[0].labels[0].text, "did you mean `memory`?");
}

#[test]
fn unknown_top_level_key() {
    assert_eq!(
        problems(&with("project: demo\n", "project: demo\nfunction: {}\n")),
        vec![(Code::UnknownKey, 3, 1)]
    );
}

#[test]
fn wrong_types() {
    assert_eq!(
        problems(&with("    concurrency: 4\n", "    concurrency: four\n")),
        vec![(Code::WrongType, 28, 18)]
    );
    assert_eq!(
        problems(&with(
            "  - { from: \"alerts/#\", to: cloud }\n",
            "  - alerts\n"
        )),
        vec![(Code::WrongType, 39, 5)]
    );
    assert_eq!(
        problems(&with(
            "    triggers: [ \"hello/#\" ]\n",
            "    triggers: \"hello/#\"\n"
        )),
        vec![(Code::WrongType, 32, 15)]
    );
}

#[test]
fn missing_required_key() {
    assert_eq!(
        problems(&with("    runtime: node\n", "")),
        vec![(Code::MissingKey, 12, 3)]
    );
    assert_eq!(
        problems(&with("project: demo\n", "")),
        vec![(Code::MissingKey, 1, 1)]
    );
}

#[test]
fn duplicate_function_names() {
    let text = with("  collect:\n", "  hello:\n");
    let p = problems(&text);
    // `collect` is now undefined, so its binding is reported too.
    assert_eq!(
        p,
        vec![(Code::DuplicateKey, 16, 3), (Code::UnknownFunction, 35, 15)]
    );
    let d = check(&text).unwrap_err();
    let first = d.0[0].source().line_col(d.0[0].labels[1].span.offset);
    assert_eq!(
        first,
        (12, 3),
        "the second label points at the first definition"
    );
}

#[test]
fn duplicate_binding_names() {
    let text = with(
        "  - function: collect\n",
        "  - function: collect\n    name: hello\n",
    );
    assert_eq!(problems(&text), vec![(Code::DuplicateName, 36, 11)]);
}

#[test]
fn binding_with_unknown_function() {
    let text = with("  - function: hello\n", "  - function: helo\n");
    assert_eq!(
        problems(&text),
        vec![
            (Code::UnusedFunction, 12, 3),
            (Code::UnknownFunction, 30, 15)
        ]
    );
    let d = check(&text).unwrap_err();
    assert!(
        d.0.iter()
            .any(|d| d.labels[0].text == "did you mean `hello`?")
    );
}

#[test]
fn selector_naming_unknown_device() {
    assert_eq!(
        problems(&with("names: [vm-01]", "names: [vm-1]")),
        vec![(Code::UnknownDevice, 31, 24)]
    );
}

#[test]
fn selector_matching_nothing_is_a_warning() {
    let text = with(
        "{ labels: { role: gateway } }",
        "{ labels: { role: router } }",
    );
    assert_eq!(
        problems(&text),
        vec![(Code::SelectorMatchesNothing, 26, 14)]
    );
    let loaded = check(&text).expect("only a warning");
    assert_eq!(loaded.warnings.0[0].severity, Severity::Warning);
}

#[test]
fn selector_with_both_or_neither() {
    let text = with("{ names: [vm-01] }", "{ names: [vm-01], labels: {} }");
    assert_eq!(problems(&text), vec![(Code::InvalidSelector, 31, 14)]);
}

#[test]
fn topic_filter_hash_not_last() {
    assert_eq!(
        problems(&with("sensors/+/temperature", "sensors/#/temperature")),
        vec![(Code::InvalidTopic, 27, 35)]
    );
}

#[test]
fn topic_filter_plus_not_whole_level() {
    assert_eq!(
        problems(&with("sensors/+/temperature", "sensors/s+/temperature")),
        vec![(Code::InvalidTopic, 27, 36)]
    );
    assert_eq!(
        problems(&with("\"alerts/#\"", "\"alerts/x#\"")),
        vec![(Code::InvalidTopic, 39, 22)]
    );
}

#[test]
fn route_topic_errors_point_past_the_cloud_prefix() {
    assert_eq!(
        problems(&with("cloud:commands/#", "cloud:commands/+x")),
        vec![(Code::InvalidTopic, 40, 29)]
    );
}

#[test]
fn route_direction_mismatch() {
    assert_eq!(
        problems(&with(
            "{ from: \"alerts/#\", to: cloud }",
            "{ from: \"alerts/#\", to: local }"
        )),
        vec![(Code::InvalidRoute, 39, 13)]
    );
}

#[test]
fn bad_quantities() {
    assert_eq!(
        problems(&with("memory: 64Mi", "memory: 64MB")),
        vec![(Code::InvalidQuantity, 8, 13)]
    );
    assert_eq!(
        problems(&with("cpu: 500m", "cpu: half")),
        vec![(Code::InvalidQuantity, 9, 10)]
    );
    assert_eq!(
        problems(&with("timeout: 3s", "timeout: 3")),
        vec![(Code::InvalidQuantity, 10, 14)]
    );
    assert_eq!(
        problems(&with("idleTimeout: 60s", "idleTimeout: 1y")),
        vec![(Code::InvalidQuantity, 29, 18)]
    );
}

#[test]
fn out_of_range_quantities() {
    assert_eq!(
        problems(&with("memory: 64Mi", "memory: 1Mi")),
        vec![(Code::OutOfRange, 8, 13)]
    );
    assert_eq!(
        problems(&with("timeout: 3s", "timeout: 2h")),
        vec![(Code::OutOfRange, 10, 14)]
    );
    assert_eq!(
        problems(&with("concurrency: 4", "concurrency: 0")),
        vec![(Code::OutOfRange, 28, 18)]
    );
}

#[test]
fn continuous_binding_with_triggers() {
    let text = with(
        "    mode: continuous\n",
        "    mode: continuous\n    triggers: [ a/b ]\n",
    );
    assert_eq!(problems(&text), vec![(Code::ContinuousWithTriggers, 38, 5)]);
}

#[test]
fn triggered_binding_without_triggers() {
    assert_eq!(
        problems(&with("    mode: continuous\n", "")),
        vec![(Code::TriggeredWithoutTriggers, 35, 5)]
    );
}

#[test]
fn function_path_missing() {
    assert_eq!(
        problems(&with("path: functions/hello", "path: functions/gone")),
        vec![(Code::PathMissing, 13, 11)]
    );
}

#[test]
fn function_path_outside_project() {
    assert_eq!(
        problems(&with("path: functions/hello", "path: ../elsewhere")),
        vec![(Code::PathOutsideProject, 13, 11)]
    );
    assert_eq!(
        problems(&with("path: functions/hello", "path: /opt/hello")),
        vec![(Code::PathOutsideProject, 13, 11)]
    );
    // A folder inside the project that is a symlink to somewhere outside it.
    assert_eq!(
        problems(&with("path: functions/hello", "path: functions/linked")),
        vec![(Code::PathOutsideProject, 13, 11)]
    );
}

#[test]
fn handler_file_missing() {
    assert_eq!(
        problems(&with("handler: main.handle", "handler: app.handle")),
        vec![(Code::HandlerMissing, 7, 14)]
    );
    assert_eq!(
        problems(&with("handler: index.handler", "handler: server.handler")),
        vec![(Code::HandlerMissing, 15, 14)]
    );
    assert_eq!(
        problems(&with("[\"./run.sh\", \"--fast\"]", "[\"./go.sh\"]")),
        vec![(Code::HandlerMissing, 19, 14)]
    );
}

#[test]
fn handler_of_the_wrong_form() {
    assert_eq!(
        problems(&with("handler: main.handle", "handler: main")),
        vec![(Code::InvalidHandler, 7, 14)]
    );
    assert_eq!(
        problems(&with("handler: index.handler", "handler: [index.js]")),
        vec![(Code::WrongType, 15, 14)]
    );
}

#[test]
fn unsupported_api_version() {
    assert_eq!(
        problems(&with("edgefn/v1", "edgefn/v2")),
        vec![(Code::ApiVersion, 1, 13)]
    );
}

#[test]
fn invalid_names() {
    assert_eq!(
        problems(&with("  vm-01: {}\n", "  VM_01!: {}\n")),
        vec![(Code::InvalidName, 23, 3), (Code::UnknownDevice, 31, 24)]
    );
    assert_eq!(
        problems(&with("THRESHOLD: 40", "1THRESHOLD: 40")),
        vec![(Code::InvalidName, 11, 12)]
    );
}

#[test]
fn every_problem_is_reported_in_one_run() {
    let text = VALID
        .replacen("edgefn/v1", "edgefn/v9", 1)
        .replacen("memory: 64Mi", "memory: lots", 1)
        .replacen("runtime: node", "runtime: nodejs", 1)
        .replacen("sensors/+/temperature", "sensors/#/x", 1)
        .replacen("names: [gw-01]", "names: [gw-09]", 1);
    let codes: Vec<Code> = problems(&text).into_iter().map(|p| p.0).collect();
    assert_eq!(
        codes,
        vec![
            Code::ApiVersion,
            Code::InvalidQuantity,
            Code::InvalidValue,
            Code::InvalidTopic,
            Code::UnknownDevice
        ]
    );
}

#[test]
fn empty_and_non_mapping_files() {
    assert_eq!(problems(""), vec![(Code::MissingKey, 1, 1)]);
    assert_eq!(problems("- a\n- b\n"), vec![(Code::WrongType, 1, 1)]);
    assert_eq!(
        problems("a: 1\n---\nb: 2\n"),
        vec![(Code::YamlSyntax, 2, 1)]
    );
}

#[test]
fn every_code_is_namespaced_and_unique() {
    let mut seen = BTreeSet::new();
    for code in Code::ALL {
        assert!(code.as_str().starts_with("edgefn::manifest::"));
        assert!(seen.insert(code.as_str()), "{code} twice");
    }
}

// ---- desired-state resolution ----

fn manifest(text: &str) -> edgefn_schema::Manifest {
    check(text)
        .unwrap_or_else(|d| panic!("{:#?}", problems_of(&d)))
        .manifest
}

#[test]
fn resolution_picks_what_each_device_runs() {
    let m = manifest(VALID);
    let none = BTreeMap::new();
    let gw1 = resolve(&m, "gw-01", &none).expect("device exists");
    let names: Vec<&str> = gw1.bindings.iter().map(|b| b.name.as_str()).collect();
    assert_eq!(names, ["collect", "filter"]);
    assert_eq!(
        gw1.functions.keys().collect::<Vec<_>>(),
        ["collect", "filter"]
    );
    assert_eq!(gw1.routes.len(), 2);
    let filter = &gw1.bindings[1];
    assert_eq!(
        (filter.memory_bytes, filter.cpu_millis, filter.timeout_ms),
        (64 << 20, 500, 3000)
    );
    assert_eq!((filter.concurrency, filter.idle_timeout_ms), (4, 60_000));
    assert_eq!(filter.env["THRESHOLD"], "40");

    let gw2 = resolve(&m, "gw-02", &none).expect("device exists");
    assert_eq!(gw2.bindings.len(), 1);
    assert_eq!(
        gw2.routes.len(),
        1,
        "the cloud→local route is only for site sh"
    );

    let vm = resolve(&m, "vm-01", &none).expect("device exists");
    let hello = &vm.bindings[0];
    assert_eq!(hello.memory_bytes, 32 << 20, "binding override");
    assert_eq!(hello.timeout_ms, 10_000, "default");
    assert_eq!(hello.env["GREETING"], "hi");
    assert!(resolve(&m, "nope", &none).is_none());
}

#[test]
fn digest_is_stable_and_changes_only_for_touched_devices() {
    let before = manifest(VALID);
    let none = BTreeMap::new();
    let digest =
        |m: &edgefn_schema::Manifest, d: &str| resolve(m, d, &none).expect("device").digest();
    assert_eq!(
        digest(&before, "gw-01"),
        digest(&manifest(VALID), "gw-01"),
        "same input, same digest"
    );
    assert_eq!(digest(&before, "gw-01").len(), 64);

    // Change only what vm-01 runs.
    let after = manifest(&with("    memory: 32Mi\n", "    memory: 48Mi\n"));
    assert_ne!(digest(&before, "vm-01"), digest(&after, "vm-01"));
    assert_eq!(digest(&before, "gw-01"), digest(&after, "gw-01"));
    assert_eq!(digest(&before, "gw-02"), digest(&after, "gw-02"));

    // Reordering devices and comments changes nothing.
    let reordered = with(
        "  gw-01: { labels: { site: sh, role: gateway } }\n",
        "  # first\n  gw-01: { labels: { role: gateway, site: sh } }\n",
    );
    for d in ["gw-01", "gw-02", "vm-01"] {
        assert_eq!(digest(&before, d), digest(&manifest(&reordered), d));
    }

    // A new bundle digest for `filter` touches the gateways only.
    let bundles: BTreeMap<String, String> = [("filter".to_owned(), "ab".repeat(32))].into();
    let with_bundle = |d: &str| resolve(&before, d, &bundles).expect("device").digest();
    assert_ne!(digest(&before, "gw-02"), with_bundle("gw-02"));
    assert_eq!(digest(&before, "vm-01"), with_bundle("vm-01"));
}

#[test]
fn manifest_round_trips_through_json() {
    let m = manifest(VALID);
    let json = serde_json::to_string(&m).expect("serializes");
    let back: edgefn_schema::Manifest = serde_json::from_str(&json).expect("deserializes");
    assert_eq!(m, back);
}

// ---- JSON Schema ----

#[test]
fn checked_in_json_schema_is_current() {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/edgefn.schema.json");
    let fresh = edgefn_schema::json_schema();
    if std::env::var_os("EDGEFN_BLESS").is_some() {
        std::fs::write(path, &fresh).expect("write schema");
    }
    let on_disk = std::fs::read_to_string(path).unwrap_or_default();
    assert!(
        on_disk == fresh,
        "schema/edgefn.schema.json is stale: regenerate it with `EDGEFN_BLESS=1 cargo test -p edgefn-schema --test manifest`"
    );
}

#[test]
fn json_schema_describes_the_format() {
    let schema: serde_json::Value =
        serde_json::from_str(&edgefn_schema::json_schema()).expect("json");
    let props = &schema["properties"];
    for key in [
        "apiVersion",
        "project",
        "functions",
        "devices",
        "bindings",
        "routes",
    ] {
        assert!(props.get(key).is_some(), "{key} missing");
    }
    assert_eq!(schema["additionalProperties"], false);
    let required: Vec<&str> = schema["required"]
        .as_array()
        .expect("required")
        .iter()
        .filter_map(|v| v.as_str())
        .collect();
    assert_eq!(required, ["apiVersion", "project"]);
}

#[test]
fn exec_functions_choose_an_interface() {
    let text = with(
        "    handler: [\"./run.sh\", \"--fast\"]\n",
        "    handler: [\"./run.sh\", \"--fast\"]\n    interface: lines\n",
    );
    let m = check(&text)
        .unwrap_or_else(|d| panic!("{:#?}", problems_of(&d)))
        .manifest;
    assert_eq!(
        m.functions["collect"].interface,
        edgefn_schema::Interface::Lines
    );
    assert_eq!(
        check(VALID).expect("valid").manifest.functions["collect"].interface,
        edgefn_schema::Interface::Protocol,
        "the framed protocol is the default"
    );
    // A typo gets a suggestion, at the value.
    let typo = with(
        "    handler: [\"./run.sh\", \"--fast\"]\n",
        "    handler: [\"./run.sh\", \"--fast\"]\n    interface: stdi\n",
    );
    assert_eq!(problems(&typo), vec![(Code::InvalidValue, 20, 16)]);
    let d = check(&typo).unwrap_err();
    assert!(d.0[0].labels[0].text.contains("`stdio`"), "{:?}", d.0[0]);
    // Only exec functions have one: a python handler is always called through its shim.
    let python = with(
        "    handler: main.handle\n",
        "    handler: main.handle\n    interface: stdio\n",
    );
    assert_eq!(problems(&python), vec![(Code::InvalidValue, 8, 16)]);
    assert!(
        check(&python).unwrap_err().0[0]
            .message
            .contains("only exec functions")
    );
}

#[test]
fn the_interface_changes_the_desired_state_only_when_chosen() {
    let device = |text: &str| {
        let m = check(text).expect("valid").manifest;
        resolve(&m, "gw-01", &BTreeMap::new()).expect("gw-01")
    };
    let plain = device(VALID);
    let json = serde_json::to_string(&plain).expect("json");
    assert!(!json.contains("interface"), "default left out: {json}");
    let lines = device(&with(
        "    handler: [\"./run.sh\", \"--fast\"]\n",
        "    handler: [\"./run.sh\", \"--fast\"]\n    interface: lines\n",
    ));
    assert_ne!(plain.digest(), lines.digest());
    assert_eq!(
        lines.functions["collect"].interface,
        edgefn_schema::Interface::Lines
    );
}

#[test]
fn device_values_reach_env_per_device_and_move_only_that_devices_digest() {
    let text = with(
        "  gw-01: { labels: { site: sh, role: gateway } }\n  gw-02: { labels: { site: bj, role: gateway } }\n",
        "  gw-01: { labels: { site: sh, role: gateway }, vars: { LINE: \"7\" } }\n  gw-02: { labels: { site: bj, role: gateway }, vars: { LINE: \"9\" } }\n",
    )
    .replacen(
        "    concurrency: 4\n",
        "    concurrency: 4\n    env: { LINE: \"line-${device.vars.LINE}\", WHERE: \"${device.name}@${device.labels.site}\", LITERAL: \"$${device.name} $HOME\" }\n",
        1,
    );
    let m = check(&text)
        .unwrap_or_else(|d| panic!("{:#?}", problems_of(&d)))
        .manifest;
    let none = BTreeMap::new();
    let env = |m: &edgefn_schema::Manifest, device: &str| {
        let s = resolve(m, device, &none).expect("device");
        let b = s
            .bindings
            .iter()
            .find(|b| b.name == "filter")
            .expect("filter");
        (b.env.clone(), s.digest())
    };
    let (gw1, d1) = env(&m, "gw-01");
    let (gw2, d2) = env(&m, "gw-02");
    assert_eq!(gw1["LINE"], "line-7");
    assert_eq!(gw2["LINE"], "line-9");
    assert_eq!(gw1["WHERE"], "gw-01@sh");
    assert_eq!(gw1["LITERAL"], "${device.name} $HOME");
    assert_eq!(gw1["THRESHOLD"], "40", "the function's own env is kept");
    // One device's value changes: only its digest moves.
    let changed = check(&text.replace("LINE: \"9\"", "LINE: \"10\""))
        .expect("valid")
        .manifest;
    let (gw2b, d2b) = env(&changed, "gw-02");
    assert_eq!(gw2b["LINE"], "line-10");
    assert_ne!(d2, d2b);
    assert_eq!(env(&changed, "gw-01").1, d1);
}

#[test]
fn undefined_and_malformed_device_values_are_reported_where_they_are_used() {
    // gw-02 has no LINE; vm-01 does not run `filter`, so it needs none.
    let text = with(
        "  gw-01: { labels: { site: sh, role: gateway } }\n",
        "  gw-01: { labels: { site: sh, role: gateway }, vars: { LINE: \"7\" } }\n",
    )
    .replacen(
        "    concurrency: 4\n",
        "    concurrency: 4\n    env: { LINE: \"${device.vars.LINE}\", ROLE: \"${device.labels.zone}\" }\n",
        1,
    );
    let d = check(&text).unwrap_err();
    let p = problems(&text);
    assert_eq!(
        p,
        vec![
            (Code::UndefinedDeviceValue, 29, 18),
            (Code::UndefinedDeviceValue, 29, 47),
        ],
        "{:#?}",
        problems_of(&d)
    );
    let messages = problems_of(&d).join("\n");
    assert!(
        messages.contains("`${device.vars.LINE}` is used on `gw-02`, which has no such value"),
        "{messages}"
    );
    assert!(
        messages.contains(
            "`${device.labels.zone}` is used on `gw-01` and `gw-02`, which have no such label"
        ),
        "{messages}"
    );

    let bad = with(
        "    env: { THRESHOLD: 40 }\n",
        "    env: { THRESHOLD: \"${device.colour}\" }\n",
    );
    assert_eq!(problems(&bad), vec![(Code::InvalidPlaceholder, 11, 23)]);
    let unclosed = with(
        "    env: { THRESHOLD: 40 }\n",
        "    env: { THRESHOLD: \"${device.name\" }\n",
    );
    let d = check(&unclosed).unwrap_err();
    assert!(
        problems_of(&d)[0].contains("not closed"),
        "{:?}",
        problems_of(&d)
    );
}

/// The manifest the README shows is valid, as printed (its file checks aside: it has no project).
#[test]
fn the_readmes_manifest_is_valid() {
    let readme = include_str!("../../README.md");
    let section = &readme[readme.find("## The manifest").expect("section")..];
    let start = section.find("```yaml\n").expect("yaml block") + "```yaml\n".len();
    let yaml = &section[start..start + section[start..].find("```").expect("end")];
    let loaded = load(&Source::new("README.md", yaml), None)
        .unwrap_or_else(|d| panic!("{:#?}", problems_of(&d)));
    let s = resolve(&loaded.manifest, "gw-01", &BTreeMap::new()).expect("gw-01");
    assert_eq!(s.bindings[0].env["LINE"], "7");
}

#[test]
fn placeholders_in_topics_are_refused_where_they_are() {
    let text = with(
        "    triggers: [ { topic: \"sensors/+/temperature\" } ]\n",
        "    triggers: [ { topic: \"sensors/${device.vars.LINE}/temperature\" } ]\n",
    );
    assert_eq!(problems(&text), vec![(Code::InvalidPlaceholder, 27, 26)]);
    let route = with(
        "  - { from: \"alerts/#\", to: cloud }\n",
        "  - { from: \"alerts/${device.name}\", to: cloud }\n",
    );
    let d = check(&route).unwrap_err();
    assert_eq!(d.0.len(), 1, "{:#?}", problems_of(&d));
    assert_eq!(d.0[0].code, Code::InvalidPlaceholder);
    assert!(
        d.0[0].message.contains("only in `env`"),
        "{:?}",
        d.0[0].message
    );
}

#[test]
fn secrets_are_names_each_valid_and_listed_once() {
    let text = with(
        "    env: { THRESHOLD: 40 }\n",
        "    env: { THRESHOLD: 40 }\n    secrets: [db-password, api-key]\n",
    );
    let text = text.replacen(
        "    concurrency: 4\n",
        "    concurrency: 4\n    secrets: [api-key, tls-cert]\n",
        1,
    );
    let m = check(&text)
        .unwrap_or_else(|d| panic!("{:#?}", problems_of(&d)))
        .manifest;
    assert_eq!(m.functions["filter"].secrets, ["db-password", "api-key"]);
    assert_eq!(
        m.bindings[0].secret_names(m.functions.get("filter")),
        ["api-key", "db-password", "tls-cert"],
        "the function's and the binding's, sorted, once"
    );
    let users = m.secret_users();
    assert_eq!(users["api-key"], ["binding/filter", "function/filter"]);
    assert_eq!(users["tls-cert"], ["binding/filter"]);

    // A bad name, a repeated one, and not a list: each at its place.
    let bad = with(
        "    env: { THRESHOLD: 40 }\n",
        "    env: { THRESHOLD: 40 }\n    secrets: [db-password, DB Password, db-password]\n",
    );
    assert_eq!(
        problems(&bad),
        [(Code::InvalidName, 12, 28), (Code::DuplicateName, 12, 41)]
    );
    let not_list = with(
        "    env: { THRESHOLD: 40 }\n",
        "    env: { THRESHOLD: 40 }\n    secrets: db-password\n",
    );
    assert_eq!(problems(&not_list), [(Code::WrongType, 12, 14)]);
}

#[test]
fn a_secret_version_moves_only_the_digests_of_devices_that_use_it() {
    let text = with(
        "    env: { GREETING: hi }\n",
        "    env: { GREETING: hi }\n    secrets: [api-key]\n",
    );
    let m = manifest(&text);
    let none = BTreeMap::new();
    let state = |d: &str, v: u64| {
        let mut s = resolve(&m, d, &none).expect("device");
        s.pin_secrets(&[("api-key".to_owned(), v)].into());
        s
    };
    let vm = state("vm-01", 3);
    let hello = vm
        .bindings
        .iter()
        .find(|b| b.name == "hello")
        .expect("hello");
    assert_eq!(hello.secrets, [("api-key".to_owned(), 3)].into());
    assert_eq!(vm.secrets(), [("api-key".to_owned(), 3)].into());
    assert_ne!(state("vm-01", 3).digest(), state("vm-01", 4).digest());
    assert_eq!(state("gw-01", 3).digest(), state("gw-01", 4).digest());
    // A device whose bindings name no secret keeps the digest it had before secrets existed.
    assert_eq!(
        state("gw-01", 3).digest(),
        resolve(&manifest(VALID), "gw-01", &none)
            .expect("device")
            .digest()
    );
    // The desired state names versions, never values.
    let json = serde_json::to_string(&vm).expect("json");
    assert!(json.contains(r#""secrets":{"api-key":3}"#), "{json}");
}

/// The binding an invocation on request runs: a triggered binding by its name, or the one
/// triggered binding of a function; a continuous one, a typo, an unbound function and a
/// function with several bindings are refused with what would do.
#[test]
fn the_binding_to_invoke_is_found_by_binding_or_function() {
    use edgefn_schema::resolve::NotInvocable;
    let text = with(
        "  - function: collect\n",
        "  - function: filter\n    name: filter-sh\n    devices: { names: [gw-01] }\n    triggers: [ \"sh/#\" ]\n  - function: collect\n",
    );
    let m = manifest(&text);
    let none = BTreeMap::new();
    let gw1 = resolve(&m, "gw-01", &none).expect("device exists");
    assert_eq!(
        gw1.binding_to_invoke("filter-sh").map(|b| b.name.as_str()),
        Ok("filter-sh")
    );
    assert_eq!(
        gw1.binding_to_invoke("filter").map(|b| b.name.as_str()),
        Ok("filter"),
        "a binding's name wins over its function's"
    );
    let gw2 = resolve(&m, "gw-02", &none).expect("device exists");
    assert_eq!(
        gw2.binding_to_invoke("filter").map(|b| b.mode),
        Ok(Mode::Triggered)
    );
    let typo = gw1.binding_to_invoke("filtr").expect_err("a typo");
    assert!(
        matches!(&typo, NotInvocable::NotBound { suggestion: Some(s), .. } if s == "filter"),
        "{typo:?}"
    );
    assert!(
        typo.to_string().contains("did you mean `filter`?"),
        "{typo}"
    );
    let continuous = gw1.binding_to_invoke("collect").expect_err("continuous");
    assert!(
        continuous
            .to_string()
            .contains("continuous binding takes no invocations"),
        "{continuous}"
    );
    let unbound = gw2.binding_to_invoke("hello").expect_err("not on gw-02");
    assert!(
        matches!(&unbound, NotInvocable::NotBound { names, .. } if names == &["filter".to_owned()]),
        "{unbound:?}"
    );
    // Two triggered bindings of one function, neither named after it: name one.
    let two = with(
        "  - function: hello\n",
        "  - function: hello\n    name: hello-b\n    devices: { names: [vm-01] }\n    triggers: [ \"x/#\" ]\n  - function: hello\n    name: hello-a\n",
    );
    let m = manifest(&two);
    let vm = resolve(&m, "vm-01", &none).expect("device exists");
    let ambiguous = vm.binding_to_invoke("hello").expect_err("two bindings");
    assert_eq!(
        ambiguous,
        NotInvocable::Ambiguous {
            name: "hello".into(),
            device: "vm-01".into(),
            bindings: vec!["hello-a".into(), "hello-b".into()],
        }
    );
    assert_eq!(
        vm.binding_to_invoke("hello-b").map(|b| b.name.as_str()),
        Ok("hello-b")
    );
}

/// `VALID` with `rollout` appended (top level).
fn with_rollout(rollout: &str) -> String {
    format!("{VALID}rollout:\n{rollout}")
}

#[test]
fn a_rollout_loads_with_its_stages() {
    let text = with_rollout(
        "  deadline: 2m\n  stages:\n    - { labels: { site: sh }, bake: 30s }\n    - { percent: 25, bake: 1m, maxFailures: 10% }\n    - { percent: 100, maxFailures: 1 }\n",
    );
    let m = check(&text)
        .unwrap_or_else(|d| panic!("{:#?}", problems_of(&d)))
        .manifest;
    let r = m.rollout.expect("a rollout");
    assert_eq!(r.deadline(), edgefn_schema::Duration::secs(120));
    assert_eq!(r.stages.len(), 3);
    assert_eq!(r.stages[0].labels["site"], "sh");
    assert_eq!(r.stages[0].bake, Some(edgefn_schema::Duration::secs(30)));
    assert_eq!(
        r.stages[1].max_failures,
        Some(edgefn_schema::FailureThreshold::Percent(10))
    );
    assert_eq!(r.stages[2].percent, Some(100));
    // A manifest without `rollout:` has none: every device at once, as before.
    assert!(check(VALID).unwrap().manifest.rollout.is_none());
}

#[test]
fn rollout_percentages_that_go_down_or_pass_100_are_errors_with_locations() {
    // Line 41 is `rollout:`; stages start on line 43.
    let down = with_rollout("  stages:\n    - { percent: 25 }\n    - { percent: 10 }\n");
    assert_eq!(problems(&down), vec![(Code::InvalidRollout, 44, 18)]);
    let over = with_rollout("  stages:\n    - { percent: 150 }\n");
    assert_eq!(problems(&over), vec![(Code::OutOfRange, 43, 18)]);
    let counts = with_rollout("  stages:\n    - { devices: 2 }\n    - { devices: 1 }\n");
    assert_eq!(problems(&counts), vec![(Code::InvalidRollout, 44, 18)]);
    let msg = problems_of(&check(&down).unwrap_err()).join("\n");
    assert!(
        msg.contains("rollout stage 2 reaches fewer devices than stage 1"),
        "{msg}"
    );
}

#[test]
fn rollout_thresholds_out_of_range_are_errors() {
    let pct = with_rollout("  stages:\n    - { percent: 100, maxFailures: 120% }\n");
    assert_eq!(problems(&pct), vec![(Code::OutOfRange, 43, 36)]);
    let msg = problems_of(&check(&pct).unwrap_err()).join("\n");
    assert!(msg.contains("more than 100%"), "{msg}");
    let neg = with_rollout("  stages:\n    - { percent: 100, maxFailures: -1 }\n");
    assert_eq!(problems(&neg), vec![(Code::OutOfRange, 43, 36)]);
    let bake = with_rollout("  stages:\n    - { percent: 100, bake: 2d }\n");
    assert_eq!(problems(&bake), vec![(Code::OutOfRange, 43, 29)]);
}

#[test]
fn rollout_stages_that_select_nothing_or_unknown_labels_are_errors() {
    let unknown =
        with_rollout("  stages:\n    - { labels: { ring: canary } }\n    - { percent: 100 }\n");
    assert_eq!(problems(&unknown), vec![(Code::InvalidRollout, 43, 25)]);
    let msg = problems_of(&check(&unknown).unwrap_err()).join("\n");
    assert!(msg.contains("`ring: canary`, and no device is"), "{msg}");
    let empty = with_rollout("  stages:\n    - { bake: 1m }\n");
    assert_eq!(problems(&empty), vec![(Code::InvalidRollout, 43, 7)]);
    let both = with_rollout("  stages:\n    - { devices: 1, percent: 5 }\n");
    assert_eq!(problems(&both), vec![(Code::InvalidRollout, 43, 7)]);
    let none = with_rollout("  stages: []\n");
    assert_eq!(problems(&none), vec![(Code::InvalidRollout, 42, 11)]);
    let typo = with_rollout("  stages:\n    - { percent: 100, bakes: 1m }\n");
    assert_eq!(problems(&typo), vec![(Code::UnknownKey, 43, 23)]);
}

#[test]
fn a_rollout_without_devices_is_an_error() {
    let text = "apiVersion: edgefn/v1\nproject: demo\nrollout:\n  stages: [ { percent: 100 } ]\n";
    assert_eq!(problems(text), vec![(Code::InvalidRollout, 3, 1)]);
    let msg = problems_of(&check(text).unwrap_err()).join("\n");
    assert!(msg.contains("no devices"), "{msg}");
}

#[test]
fn device_nodes_are_absolute_paths_under_dev_each_listed_once() {
    let text = with(
        "    env: { THRESHOLD: 40 }\n",
        "    env: { THRESHOLD: 40 }\n    deviceNodes: [/dev/dri/renderD128]\n    gpu: nvidia\n",
    );
    let text = text.replacen(
        "    concurrency: 4\n",
        "    concurrency: 4\n    deviceNodes: [/dev/ttyUSB0, /dev/dri/renderD128]\n",
        1,
    );
    let m = check(&text)
        .unwrap_or_else(|d| panic!("{:#?}", problems_of(&d)))
        .manifest;
    assert_eq!(m.functions["filter"].gpu, Some(edgefn_schema::Gpu::Nvidia));
    let s = resolve(&m, "gw-01", &BTreeMap::new()).expect("gw-01");
    let b = s
        .bindings
        .iter()
        .find(|b| b.name == "filter")
        .expect("filter");
    assert_eq!(
        b.device_nodes,
        ["/dev/dri/renderD128", "/dev/ttyUSB0"],
        "the function's and the binding's, sorted, once"
    );
    assert_eq!(b.gpu, Some(edgefn_schema::Gpu::Nvidia));
    let json = serde_json::to_string(&b).expect("json");
    assert!(
        json.contains(r#""deviceNodes":["/dev/dri/renderD128","/dev/ttyUSB0"],"gpu":"nvidia""#),
        "{json}"
    );
    // A binding without any keeps the digest it had before device nodes existed.
    let plain = resolve(&manifest(VALID), "gw-01", &BTreeMap::new()).expect("gw-01");
    assert!(
        !serde_json::to_string(&plain)
            .expect("json")
            .contains("deviceNodes")
    );

    // Relative, outside /dev, `..`, an empty component, a repeat, an unknown GPU: each at its
    // place, with what is wrong.
    let bad = with(
        "    env: { THRESHOLD: 40 }\n",
        "    env: { THRESHOLD: 40 }\n    deviceNodes: [dev/null, /etc/passwd, /dev/../etc/shadow, /dev//null, /dev/null, /dev/null]\n    gpu: amd\n",
    );
    let found = problems(&bad);
    let codes: Vec<Code> = found.iter().map(|p| p.0).collect();
    assert_eq!(
        codes,
        [
            Code::InvalidDeviceNode,
            Code::InvalidDeviceNode,
            Code::InvalidDeviceNode,
            Code::InvalidDeviceNode,
            Code::DuplicateName,
            Code::InvalidValue,
        ],
        "{found:?}"
    );
    let d = check(&bad).unwrap_err();
    let messages: Vec<&str> = d.0.iter().map(|d| d.message.as_str()).collect();
    assert!(
        messages[2].contains("`/dev/../etc/shadow`") && messages[2].contains("`..`"),
        "{messages:?}"
    );
    assert!(
        messages[0].contains("not an absolute path under `/dev/`"),
        "{messages:?}"
    );
    let not_list = with(
        "    env: { THRESHOLD: 40 }\n",
        "    env: { THRESHOLD: 40 }\n    deviceNodes: /dev/null\n",
    );
    assert_eq!(problems(&not_list), [(Code::WrongType, 12, 18)]);
}

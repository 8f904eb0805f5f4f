//! What `edgefn dev` prints of itself (function output is the agents' hooks'): what runs where,
//! and what to try next.

use std::collections::BTreeMap;
use std::io::Write;

use edgefn_schema::{Manifest, Mode};

/// Prints one line on stdout, flushed at once (the session is watched live).
pub(super) fn say(line: impl AsRef<str>) {
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "{}", line.as_ref());
    let _ = out.flush();
}

/// What each device runs, in a line each.
pub(super) fn describe(m: &Manifest, devices: &[String]) {
    for d in devices {
        let Some(state) = edgefn_schema::resolve(m, d, &BTreeMap::new()) else {
            continue;
        };
        let parts: Vec<String> = state
            .bindings
            .iter()
            .map(|b| match b.mode {
                Mode::Continuous => format!("{} (continuous)", b.name),
                Mode::Triggered => format!("{} (on {})", b.name, b.triggers.join(", ")),
            })
            .collect();
        say(format!(
            "  {d}: {}",
            if parts.is_empty() {
                "nothing".to_owned()
            } else {
                parts.join("; ")
            }
        ));
    }
}

/// What to try in another terminal, from the project itself: a publish that a route brings down
/// to a binding's trigger, and a subscribe to what routes send up.
pub(super) fn hints(m: &Manifest, devices: &[String]) -> Vec<String> {
    let mut out = Vec::new();
    let mut publish = None;
    for d in devices {
        let Some(state) = edgefn_schema::resolve(m, d, &BTreeMap::new()) else {
            continue;
        };
        for b in state.bindings.iter().filter(|b| b.mode == Mode::Triggered) {
            for t in &b.triggers {
                // A concrete topic the trigger matches: wildcards filled in.
                let topic = t
                    .split('/')
                    .map(|l| match l {
                        "+" => "x",
                        "#" => "x",
                        other => other,
                    })
                    .collect::<Vec<_>>()
                    .join("/");
                let down = state.brings_down(&topic);
                if down && publish.is_none() {
                    publish = Some(format!(
                        "  edgefn publish {d} {topic} '{{}}'   # fires {}",
                        b.name
                    ));
                }
            }
        }
    }
    let up: Vec<&str> = m
        .routes
        .iter()
        .filter(|r| r.to == edgefn_schema::RouteTarget::Cloud)
        .map(|r| r.from.as_str())
        .collect();
    if publish.is_some() || !up.is_empty() {
        out.push("Try, in another terminal in this project:".to_owned());
    }
    if let Some(up) = up.first() {
        out.push(format!(
            "  edgefn subscribe '{up}'   # what the devices send up"
        ));
    }
    out.extend(publish);
    out.push("  edgefn status".to_owned());
    out
}

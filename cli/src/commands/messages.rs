//! `edgefn publish`, `edgefn subscribe` and `edgefn logs`: messages and log lines between the
//! cloud and the devices, through the control plane's message endpoints.

use std::collections::BTreeMap;
use std::io::Write;

use edgefn_os::backoff::Backoff;
use edgefn_schema::api::{PublishRequest, PublishResponse};
use edgefn_schema::wire;

use crate::args::{LogsArgs, PublishArgs, SubscribeArgs};
use crate::client::{Client, StreamEnd};
use crate::error::{CliError, CliResult, Outcome};

fn label_map(labels: &[String]) -> Result<BTreeMap<String, String>, CliError> {
    let mut map = BTreeMap::new();
    for l in labels {
        match l.split_once('=') {
            Some((k, v)) if !k.is_empty() && !k.contains(char::is_whitespace) => {
                map.insert(k.to_owned(), v.to_owned());
            }
            _ => {
                return Err(CliError::InvalidArgument {
                    message: format!("`{l}` is not a label"),
                    help: "write labels as --label key=value".into(),
                });
            }
        }
    }
    Ok(map)
}

/// The payload as typed: JSON when it parses, else the text itself.
fn payload(text: &str) -> serde_json::Value {
    serde_json::from_str(text).unwrap_or_else(|_| serde_json::Value::String(text.to_owned()))
}

/// The payload argument, or with `@FILE` the file's content (at most 2 MiB: the cloud refuses
/// more than about 1 MiB with its own error).
fn payload_arg(arg: &str) -> Result<serde_json::Value, CliError> {
    let bytes = crate::payload::bytes(arg, 2 << 20)?;
    let text = String::from_utf8(bytes).map_err(|_| CliError::InvalidArgument {
        message: format!("{arg}: the payload is not UTF-8 text"),
        help: "`edgefn publish` sends JSON or text; encode binary data (base64) first".into(),
    })?;
    Ok(payload(&text))
}

fn check_topic(topic: &str, filter: bool) -> Result<(), CliError> {
    let checked = if filter {
        edgefn_schema::topic::validate_filter(topic)
    } else {
        edgefn_schema::topic::validate_topic(topic)
    };
    checked.map_err(|e| {
        CliError::failed(
            format!(
                "`{topic}` is not a valid {}",
                if filter { "topic filter" } else { "topic" }
            ),
            e.help.clone(),
            e,
        )
    })
}

/// `edgefn publish`.
pub(crate) fn publish(args: &PublishArgs) -> CliResult {
    // With --label, the positionals are TOPIC PAYLOAD; without, DEVICE TOPIC PAYLOAD.
    let (device, topic, text) = match (args.labels.is_empty(), args.positional.as_slice()) {
        (true, [d, t, p]) => (Some(d.as_str()), t.as_str(), p.as_str()),
        (false, [t, p]) => (None, t.as_str(), p.as_str()),
        (true, _) => {
            return Err(CliError::InvalidArgument {
                message: "give a device, a topic and a payload".into(),
                help: "edgefn publish gw-01 commands/greet '{\"name\": \"ada\"}', or select devices with --label key=value".into(),
            });
        }
        (false, _) => {
            return Err(CliError::InvalidArgument {
                message: "with --label, give a topic and a payload (no device name)".into(),
                help: "edgefn publish --label site=lab commands/greet hello".into(),
            });
        }
    };
    check_topic(topic, false)?;
    let (devices, labels) = match device {
        Some(d) => (Some(vec![d.to_owned()]), None),
        None => (None, Some(label_map(&args.labels)?)),
    };
    let body = PublishRequest {
        devices,
        labels,
        topic: topic.to_owned(),
        payload: payload_arg(text)?,
    };
    let client = Client::from_args(args.cloud.cloud.as_deref(), args.cloud.token.as_deref())?;
    let (_, answer): (_, PublishResponse) = client.post("/v1/publish", &body)?;
    let (devices, unrouted) = (answer.devices, answer.unrouted);
    println!(
        "sent `{topic}` to {} device{}: {}",
        devices.len(),
        if devices.len() == 1 { "" } else { "s" },
        devices.join(", ")
    );
    if !unrouted.is_empty() {
        eprintln!(
            "warning: no route brings `{topic}` down on {}: the agent{} drop{} it, so nothing there will see it\n  help: add a route to edgefn.yaml and apply it, e.g. `- {{ from: \"cloud:{}\", to: local }}`",
            unrouted.join(", "),
            if unrouted.len() == 1 { "" } else { "s" },
            if unrouted.len() == 1 { "s" } else { "" },
            route_for(topic)
        );
    }
    Ok(Outcome::Success)
}

/// A route filter that would bring `topic` down: its first level and everything under it
/// (`sensors/l1/temperature` → `sensors/#`), or the topic itself when it has one level.
fn route_for(topic: &str) -> String {
    match topic.split_once('/') {
        Some((first, _)) => format!("{first}/#"),
        None => topic.to_owned(),
    }
}

/// Query-string encoding of one value.
fn encode(v: &str) -> String {
    let mut out = String::new();
    for b in v.bytes() {
        if b.is_ascii_alphanumeric() || b"-_.~".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

fn payload_text(line: &serde_json::Value) -> String {
    if let Some(b64) = line.get("payload_base64").and_then(|v| v.as_str()) {
        return format!("base64:{b64}");
    }
    match line.get("payload") {
        Some(serde_json::Value::String(s)) => s.clone(),
        Some(v) => v.to_string(),
        None => String::new(),
    }
}

/// Follows a stream of lines until `line` has enough, reconnecting when the control plane goes
/// away: it says so, tries again with backoff for `reconnect_for`, says when it is back (what
/// was sent meanwhile is not shown: these streams are live), and fails when it does not come
/// back in time. `path` gives the path of the first and of later connections.
///
/// The waits between attempts are a retry backoff (250 ms doubling to 5 s, no jitter: one
/// client): nothing signals that the control plane is back but a connection that succeeds.
#[allow(clippy::disallowed_methods)] // A synchronous command waiting between attempts.
fn follow(
    client: &Client,
    path: impl Fn(bool) -> String,
    reconnect_for: std::time::Duration,
    opened: impl Fn(bool),
    mut line: impl FnMut(&str) -> Result<bool, CliError>,
) -> CliResult {
    // Since when the stream is lost, and the wait before the next attempt.
    let mut lost: Option<std::time::Instant> = None;
    const BACKOFF: Backoff = Backoff::new(
        std::time::Duration::from_millis(250),
        std::time::Duration::from_secs(5),
    );
    let mut attempt = 0;
    let mut first = true;
    loop {
        let reopened = std::cell::Cell::new(false);
        let end = client.get_lines(
            &path(!first),
            || {
                reopened.set(true);
                opened(!first);
            },
            &mut line,
        );
        if reopened.get() {
            lost = None;
            attempt = 0;
        }
        match end {
            Ok(StreamEnd::Stopped) => return Ok(Outcome::Success),
            // The first connection's errors are the command's.
            Err(e) if first => return Err(e),
            Err(_) => {}
            Ok(StreamEnd::Lost(why)) => {
                eprintln!(
                    "lost the stream from the control plane at {}: {why}; reconnecting",
                    client.base()
                );
                lost = Some(std::time::Instant::now());
            }
        }
        first = false;
        let since = *lost.get_or_insert_with(std::time::Instant::now);
        let left = reconnect_for.saturating_sub(since.elapsed());
        if left.is_zero() {
            return Err(CliError::Cloud {
                message: format!(
                    "the control plane at {} did not come back within {}s",
                    client.base(),
                    reconnect_for.as_secs()
                ),
                help: "check that edgefn-cloud is running; --reconnect-for sets how long to keep trying".into(),
            });
        }
        std::thread::sleep(BACKOFF.base(attempt).min(left));
        attempt += 1;
    }
}

/// A marker line the control plane sends in a stream when it had to skip lines for a slow
/// reader, e.g. `{"dropped": 2012}`: shown as `… 2012 lines dropped …`.
fn dropped_marker(v: &serde_json::Value, what: &str) -> Option<String> {
    let n = v.get("dropped")?.as_u64()?;
    Some(format!("… {n} {what} dropped (this stream fell behind) …"))
}

/// `edgefn subscribe`.
pub(crate) fn subscribe(args: &SubscribeArgs) -> CliResult {
    check_topic(&args.topic, true)?;
    let reconnect = crate::rollout::parse_duration("--reconnect-for", &args.reconnect_for)?;
    let client = Client::from_args(args.cloud.cloud.as_deref(), args.cloud.token.as_deref())?;
    let mut seen = 0usize;
    let stdout = std::io::stdout();
    let path = format!("/v1/messages?topic={}", encode(&args.topic));
    follow(
        &client,
        |_| path.clone(),
        reconnect,
        |again| {
            if again {
                eprintln!(
                    "subscribed again to `{}` (messages sent while it was away are not shown)",
                    args.topic
                );
            } else {
                eprintln!("subscribed to `{}` (Ctrl-C to stop)", args.topic);
            }
        },
        |line| {
            let v: serde_json::Value = serde_json::from_str(line).unwrap_or_default();
            let mut out = stdout.lock();
            if let Some(marker) = dropped_marker(&v, "messages") {
                let _ = if args.json {
                    writeln!(out, "{line}")
                } else {
                    writeln!(out, "{marker}")
                };
                return Ok(true);
            }
            let _ = if args.json {
                writeln!(out, "{line}")
            } else {
                writeln!(
                    out,
                    "{} {} {}",
                    v["device"].as_str().unwrap_or("?"),
                    v["topic"].as_str().unwrap_or("?"),
                    payload_text(&v)
                )
            };
            let _ = out.flush();
            seen += 1;
            Ok(args.count.is_none_or(|n| seen < n))
        },
    )
}

/// `2026-01-02T03:04:05.678Z` for a time in ms since the Unix epoch.
fn utc(ms: u64) -> String {
    let secs = ms / 1000;
    let days = (secs / 86_400) as i64;
    let rem = secs % 86_400;
    // Civil date from days since 1970-01-01 (H. Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}.{:03}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60,
        ms % 1000
    )
}

/// `edgefn logs`.
pub(crate) fn logs(args: &LogsArgs) -> CliResult {
    let reconnect = crate::rollout::parse_duration("--reconnect-for", &args.reconnect_for)?;
    let client = Client::from_args(args.cloud.cloud.as_deref(), args.cloud.token.as_deref())?;
    let path = |again: bool| {
        // After a reconnection, only new lines: the tail was shown already.
        let mut p = format!(
            "/v1/devices/{}/logs?tail={}&follow={}",
            encode(&args.device),
            if again { 0 } else { args.tail },
            args.follow
        );
        if let Some(f) = &args.function {
            p.push_str(&format!("&binding={}", encode(f)));
        }
        p
    };
    let stdout = std::io::stdout();
    let mut shown = 0usize;
    let print = |text: &str, shown: &mut usize| {
        let mut out = stdout.lock();
        let (ts_ms, binding, stream, line) = match serde_json::from_str::<wire::LogLine>(text) {
            Ok(l) => (l.ts_ms, l.binding, l.stream.as_str().to_owned(), l.line),
            Err(_) => {
                let v: serde_json::Value = serde_json::from_str(text).unwrap_or_default();
                // The control plane's marker (a stream that fell behind) has no line of its
                // own; the agent's (lines it could not ship) is a line, shown like the others.
                if v.get("line").is_none() {
                    if let Some(marker) = dropped_marker(&v, "lines") {
                        let _ = writeln!(out, "{marker}");
                        return;
                    }
                }
                let field = |k: &str, or: &str| v[k].as_str().unwrap_or(or).to_owned();
                (
                    v["ts_ms"].as_u64().unwrap_or(0),
                    field("binding", "?"),
                    field("stream", "?"),
                    field("line", ""),
                )
            }
        };
        *shown += 1;
        let _ = writeln!(out, "{} {binding} {stream}: {line}", utc(ts_ms));
        let _ = out.flush();
    };
    if args.follow {
        follow(
            &client,
            path,
            reconnect,
            |again| {
                if again {
                    eprintln!(
                        "following the logs of `{}` again (lines written while the control plane was away may be missing)",
                        args.device
                    );
                } else {
                    eprintln!("following the logs of `{}` (Ctrl-C to stop)", args.device);
                }
            },
            |line| {
                print(line, &mut shown);
                Ok(true)
            },
        )?;
        return Ok(Outcome::Success);
    }
    let end = client.get_lines(
        &path(false),
        || {},
        |line| {
            print(line, &mut shown);
            Ok(true)
        },
    )?;
    if let StreamEnd::Lost(why) = end {
        // Without --follow the server ends the stream after the tail: only an error is news.
        if why != "it closed the stream" {
            return Err(CliError::Cloud {
                message: format!("the logs were cut short: {why}"),
                help: "try again".into(),
            });
        }
    }
    if shown == 0 {
        eprintln!(
            "no log lines from `{}`{} yet (the cloud keeps those its agent shipped since the cloud started)",
            args.device,
            args.function
                .as_deref()
                .map(|f| format!(" for `{f}`"))
                .unwrap_or_default()
        );
    }
    Ok(Outcome::Success)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_and_payloads_format() {
        assert_eq!(utc(0), "1970-01-01T00:00:00.000Z");
        assert_eq!(utc(1_709_251_200_123), "2024-03-01T00:00:00.123Z");
        assert_eq!(payload("{\"a\": 1}"), serde_json::json!({"a": 1}));
        assert_eq!(payload("hello"), serde_json::json!("hello"));
        assert_eq!(encode("a/+/#"), "a%2F%2B%2F%23");
    }
}

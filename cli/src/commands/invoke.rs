//! `edgefn invoke FUNCTION --device NAME`: runs a function on a registered device now, through
//! the control plane (`POST /v1/devices/{name}/invoke`), and prints its answer as `edgefn
//! invoke` prints a local one: the result (JSON) and what it published on stdout, the log lines
//! it wrote on stderr. A function error or no answer by the deadline exits 1. (Without
//! `--device`, `edgefn invoke` runs the function here: `commands/test.rs`.)

use std::io::Write;

use edgefn_schema::api::{INVOKE_MAX_TIMEOUT_MS, InvokeRequest, InvokeResponse};

use crate::args::InvokeArgs;
use crate::client::Client;
use crate::error::{CliError, CliResult, Outcome};
use crate::function_output::is_shim_frame;

/// Runs `edgefn invoke --device NAME`.
pub(crate) fn on_device(args: &InvokeArgs) -> CliResult {
    let device = args.device.as_deref().unwrap_or_default();
    let timeout = crate::rollout::parse_duration("--timeout", &args.timeout)?;
    let timeout_ms = u64::try_from(timeout.as_millis()).unwrap_or(u64::MAX);
    if !(1..=INVOKE_MAX_TIMEOUT_MS).contains(&timeout_ms) {
        return Err(CliError::InvalidArgument {
            message: format!(
                "--timeout {}: a device is waited for 1ms to 60s",
                args.timeout
            ),
            help: "give e.g. --timeout 30s".into(),
        });
    }
    let bytes = crate::payload::bytes(&args.event, edgefn_schema::wire::MAX_INVOKE_PAYLOAD as u64)?;
    let text = String::from_utf8(bytes).map_err(|_| CliError::InvalidArgument {
        message: format!("--event {}: the payload is not UTF-8 text", args.event),
        help: "an invocation on a device carries JSON or text; encode binary data (base64) first"
            .into(),
    })?;
    let payload =
        serde_json::from_str(&text).unwrap_or_else(|_| serde_json::Value::String(text.clone()));
    let client = Client::from_args(args.cloud.cloud.as_deref(), args.cloud.token.as_deref())?;
    let request = InvokeRequest {
        function: args.function.clone(),
        payload,
        topic: Some(args.topic.clone()),
        timeout_ms: Some(timeout_ms),
    };
    let (_, reply): (_, InvokeResponse) =
        client.post(&format!("/v1/devices/{device}/invoke"), &request)?;
    Ok(print(device, &reply))
}

/// Prints an answer: logs on stderr, the result and published messages on stdout.
fn print(device: &str, reply: &InvokeResponse) -> Outcome {
    for l in &reply.logs {
        if !is_shim_frame(&l.line) {
            eprintln!("[{}] {}", l.stream.as_str(), l.line);
        }
    }
    if let Some(note) = &reply.truncated {
        eprintln!("note: the device's reply was cut to fit: {note}");
    }
    let mut out = std::io::stdout().lock();
    let outcome = match &reply.error {
        None => {
            let result = match (&reply.result, &reply.result_base64) {
                (_, Some(b64)) => serde_json::json!({ "base64": b64 }),
                (Some(v), None) => v.clone(),
                (None, None) => serde_json::Value::Null,
            };
            let _ = writeln!(
                out,
                "{}",
                serde_json::to_string_pretty(&result).expect("json")
            );
            for m in &reply.published {
                let _ = writeln!(out, "published {} {}", m.topic, m.payload);
            }
            Outcome::Success
        }
        Some(e) => {
            eprintln!(
                "error: `{}` on {device} failed: {}: {}",
                reply.binding, e.kind, e.message
            );
            if let Some(tb) = &e.traceback {
                for line in tb.lines().filter(|l| !is_shim_frame(l)) {
                    eprintln!("  {line}");
                }
            }
            Outcome::Failed
        }
    };
    if !reply.function.is_empty() {
        eprintln!(
            "ran `{}` (function `{}`) on {device} in {} ms",
            reply.binding, reply.function, reply.duration_ms
        );
    }
    outcome
}

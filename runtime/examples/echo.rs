//! An exec function written in Rust that speaks the invocation protocol (`runtime/PROTOCOL.md`)
//! with nothing but `serde_json`: it answers every event with its payload.
//!
//! Build: `cargo build --release -p edgefn-runtime --example echo`, then bind it with
//! `runtime: exec` and `handler: ["./echo"]` (copy the binary into the function's folder).
//!
//! It doubles as the runtime's test function: a JSON object payload with one of these keys
//! makes it misbehave on purpose:
//! `{"sleep_ms": N}` sleeps before answering, `{"spin_ms": N}` burns CPU for N ms,
//! `{"exit": N}` exits with code N,
//! `{"abort": true}` aborts, `{"alloc_mb": N}` allocates and touches N MiB,
//! `{"fail": "message"}` answers with an error, `{"publish": [[topic, payload], ...]}` publishes.
//! Arguments: `--protocol N` announces protocol N (to test the handshake), `--init-error`
//! fails to initialize, `--print` writes each payload to stdout (a log line).

// A binary: printing is its job (stdout lines are the function's logs).
#![allow(clippy::print_stdout)]

use std::io::{Read, Write};
use std::os::fd::FromRawFd;
use std::os::unix::net::UnixStream;

use serde_json::{Value, json};

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let protocol: u64 = args
        .iter()
        .position(|a| a == "--protocol")
        .and_then(|i| args.get(i + 1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(1);
    let print = args.iter().any(|a| a == "--print");
    // fd 3 is the channel the runtime gave us; nothing else owns it.
    #[allow(unsafe_code)]
    // SAFETY: fd 3 is open (the runtime passes the channel there) and owned by nobody else.
    let mut chan = unsafe { UnixStream::from_raw_fd(3) };
    if args.iter().any(|a| a == "--init-error") {
        send(
            &mut chan,
            &json!({"type": "init_error", "protocol": protocol,
                    "error": {"type": "ConfigError", "message": "missing setting"}}),
        );
        std::process::exit(1);
    }
    send(
        &mut chan,
        &json!({"type": "hello", "protocol": protocol, "runtime": "rust echo example"}),
    );
    let mut buf = Vec::new();
    loop {
        let mut header = [0u8; 4];
        if chan.read_exact(&mut header).is_err() {
            return; // the runtime closed the channel: stop
        }
        buf.resize(u32::from_be_bytes(header) as usize, 0);
        if chan.read_exact(&mut buf).is_err() {
            return;
        }
        let Ok(event) = serde_json::from_slice::<Value>(&buf) else {
            std::process::exit(2);
        };
        let id = event["id"].clone();
        let payload = &event["payload"];
        if print {
            println!("payload {payload}");
        }
        let mut reply = json!({"type": "result", "id": id});
        if let Some(ms) = payload.get("sleep_ms").and_then(Value::as_u64) {
            // Not async code: this process handles one event at a time, blocking is the point.
            #[allow(clippy::disallowed_methods)]
            std::thread::sleep(std::time::Duration::from_millis(ms));
        }
        if let Some(ms) = payload.get("spin_ms").and_then(Value::as_u64) {
            let start = std::time::Instant::now();
            let mut x = 0u64;
            while start.elapsed().as_millis() < u128::from(ms) {
                x = std::hint::black_box(x.wrapping_mul(31).wrapping_add(7));
            }
        }
        if let Some(code) = payload.get("exit").and_then(Value::as_i64) {
            std::process::exit(code as i32);
        }
        if payload.get("abort").is_some() {
            std::process::abort();
        }
        if let Some(mb) = payload.get("alloc_mb").and_then(Value::as_u64) {
            let mut v: Vec<u8> = Vec::new();
            for _ in 0..mb {
                let mut chunk = vec![1u8; 1 << 20];
                chunk[0] = 2;
                v.extend_from_slice(&chunk);
            }
            reply["result"] = json!(v.len());
        } else if let Some(msg) = payload.get("fail") {
            reply["error"] = json!({"type": "EchoError", "message": msg});
        } else {
            reply["result"] = payload.clone();
            if let Some(encoding) = event.get("encoding") {
                reply["encoding"] = encoding.clone();
            }
        }
        if let Some(list) = payload.get("publish").and_then(Value::as_array) {
            reply["publish"] = list
                .iter()
                .map(|m| json!({"topic": m[0], "payload": m[1]}))
                .collect();
        }
        send(&mut chan, &reply);
    }
}

fn send(chan: &mut UnixStream, msg: &Value) {
    let body = serde_json::to_vec(msg).unwrap_or_default();
    let mut frame = (body.len() as u32).to_be_bytes().to_vec();
    frame.extend_from_slice(&body);
    if chan.write_all(&frame).is_err() {
        std::process::exit(0);
    }
}

//! What checking a signed desired state costs an agent with `trustedKeys` (the agent's
//! `trust::Trust::refusal` runs exactly these `edgefn_schema` calls): the state's digest
//! (sha256 of its canonical JSON), the statement, and one ed25519 verification — per desired
//! state received, before any download. Measured on the shared conformance state (two
//! functions, bindings with secrets and routes) and on a state of 50 bindings.
//!
//! ```sh
//! cargo bench -p edgefn-schema --features signing --bench signing
//! ```

#![allow(
    clippy::print_stdout,
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::disallowed_methods
)]

use std::time::Instant;

use edgefn_schema::DesiredState;
use edgefn_schema::signing::{SigningKey, statement};

fn measure(label: &str, state: &DesiredState) {
    let (key, _) = SigningKey::generate().unwrap();
    let public = key.public();
    let sig = key.sign(&statement(
        &state.project,
        &state.device,
        7,
        &state.digest(),
    ));
    let bytes = serde_json::to_vec(state).unwrap().len();
    let rounds = 2_000u32;
    // Warm up.
    for _ in 0..100 {
        assert!(public.verifies(
            &statement(&state.project, &state.device, 7, &state.digest()),
            &sig
        ));
    }
    let start = Instant::now();
    for _ in 0..rounds {
        let digest = state.digest();
        let message = statement(&state.project, &state.device, 7, &digest);
        assert!(public.verifies(&message, &sig));
    }
    let whole = start.elapsed() / rounds;
    let message = statement(&state.project, &state.device, 7, &state.digest());
    let start = Instant::now();
    for _ in 0..rounds {
        assert!(public.verifies(&message, &sig));
    }
    let verify = start.elapsed() / rounds;
    println!(
        "{label} ({bytes} bytes of JSON): digest + statement + verify {:.1} µs per state; ed25519 verify alone {:.1} µs",
        whole.as_secs_f64() * 1e6,
        verify.as_secs_f64() * 1e6
    );
}

fn main() {
    let small = edgefn_schema::conformance::desired_state();
    measure("conformance state", &small);
    let mut large = small.clone();
    let template = large.bindings[0].clone();
    for i in 0..50 {
        let mut b = template.clone();
        b.name = format!("binding-{i:02}");
        large.bindings.push(b);
    }
    large.bindings.sort_by(|a, b| a.name.cmp(&b.name));
    measure("50 more bindings", &large);
}

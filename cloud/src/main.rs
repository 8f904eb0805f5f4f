//! `edgefn-cloud`: the control plane. Not implemented yet (issue #4): it says so and exits 2.

use std::process::ExitCode;

fn main() -> ExitCode {
    #[allow(clippy::print_stderr)]
    {
        eprintln!(
            "edgefn-cloud {}: the control plane is not implemented yet (tracked in issue #4)",
            env!("CARGO_PKG_VERSION")
        );
    }
    ExitCode::from(2)
}

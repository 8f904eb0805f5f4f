//! `edgefn-agent`: the device daemon. Not implemented yet (issue #5): it says so and exits 2.

use std::process::ExitCode;

fn main() -> ExitCode {
    #[allow(clippy::print_stderr)]
    {
        eprintln!(
            "edgefn-agent {}: the device agent is not implemented yet (tracked in issue #5)",
            env!("CARGO_PKG_VERSION")
        );
    }
    ExitCode::from(2)
}

//! `edgefn`: parse the command line, run it, exit with its code.

use clap::Parser;

fn main() -> std::process::ExitCode {
    // When started as the container helper, this runs it and exits (before any thread starts).
    edgefn_runtime::sandbox_helper_main_if_requested();
    edgefn::run(edgefn::Cli::parse())
}

//! `edgefn`: parse the command line, run it, exit with its code.

use clap::Parser;

fn main() -> std::process::ExitCode {
    edgefn::run(edgefn::Cli::parse())
}

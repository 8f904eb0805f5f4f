//! `edgefn`: parse the command line, run it, exit with its code.

use clap::Parser;

fn main() -> std::process::ExitCode {
    // When started as the container helper, this runs it and exits (before any thread starts).
    edgefn_runtime::sandbox_helper_main_if_requested();
    match edgefn::Cli::try_parse() {
        Ok(cli) => edgefn::run(cli),
        // `--help` and `--version` print and succeed; a usage error gets its own exit code, so
        // that it is never mistaken for `edgefn diff`'s "there are changes" (2).
        Err(e) => {
            let _ = e.print();
            if e.use_stderr() {
                edgefn::USAGE_EXIT_CODE.into()
            } else {
                std::process::ExitCode::SUCCESS
            }
        }
    }
}

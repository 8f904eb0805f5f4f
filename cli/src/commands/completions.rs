//! `edgefn completions SHELL`: prints a completion script generated from the clap definition.

use std::io::Write;

use clap::CommandFactory;

use crate::args::{Cli, CompletionsArgs};
use crate::error::{CliError, CliResult, Outcome};

/// The completion script for `shell`.
pub(crate) fn script(shell: clap_complete::Shell) -> Vec<u8> {
    let mut out = Vec::new();
    clap_complete::generate(shell, &mut Cli::command(), "edgefn", &mut out);
    out
}

/// Prints the script to stdout.
pub(crate) fn run(args: &CompletionsArgs) -> CliResult {
    std::io::stdout()
        .write_all(&script(args.shell))
        .map_err(CliError::io("write to", "stdout"))?;
    Ok(Outcome::Success)
}

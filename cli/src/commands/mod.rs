//! One module per subcommand. Each takes its parsed arguments and returns an [`Outcome`]; none
//! calls `process::exit`.

pub mod completions;
pub mod init;
pub mod new;
pub mod validate;

use crate::args::{Cli, Command};
use crate::error::{CliResult, Outcome};

/// Runs the parsed command line.
pub fn run(cli: Cli) -> CliResult<Outcome> {
    match cli.command {
        Command::Init(args) => init::run(&args),
        Command::New(args) => new::run(&args),
        Command::Validate(args) => validate::run(&args),
        Command::Completions(args) => completions::run(&args),
    }
}

//! One module per subcommand. Each takes its parsed arguments and returns an [`Outcome`]; none
//! calls `process::exit`.

pub mod apply;
pub mod completions;
pub mod dev;
pub mod device;
pub mod diff;
pub mod fleet;
pub mod init;
pub mod login;
pub mod messages;
pub mod new;
pub mod package;
pub mod test;
pub mod token;
pub mod validate;

use crate::args::{Cli, Command};
use crate::error::{CliResult, Outcome};

/// Runs the parsed command line.
pub fn run(cli: Cli) -> CliResult<Outcome> {
    match cli.command {
        Command::Init(args) => init::run(&args),
        Command::New(args) => new::run(&args),
        Command::Dev(args) => dev::run(&args),
        Command::Validate(args) => validate::run(&args),
        Command::Test(args) => test::run(&args),
        Command::Invoke(args) => test::invoke(&args),
        Command::Package(args) => package::run(&args),
        Command::Apply(args) => apply::run(&args),
        Command::Diff(args) => diff::run(&args),
        Command::Status(args) => fleet::status(&args),
        Command::History(args) => fleet::history(&args),
        Command::Rollback(args) => fleet::rollback(&args),
        Command::Device(cmd) => device::run(&cmd),
        Command::Token(cmd) => token::run(&cmd),
        Command::Login(args) => login::run(&args),
        Command::Publish(args) => messages::publish(&args),
        Command::Subscribe(args) => messages::subscribe(&args),
        Command::Logs(args) => messages::logs(&args),
        Command::Completions(args) => completions::run(&args),
    }
}

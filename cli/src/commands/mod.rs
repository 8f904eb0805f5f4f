//! One module per subcommand. Each takes its parsed arguments and returns an [`Outcome`]; none
//! calls `process::exit`, and none uses another: what commands share lives in the modules beside
//! `commands/` (`client`, `rollout`, `session`, `project`, `function_output`, ...).

pub(crate) mod apply;
pub(crate) mod completions;
pub(crate) mod dev;
pub(crate) mod device;
pub(crate) mod diff;
pub(crate) mod fleet;
pub(crate) mod init;
pub(crate) mod invoke;
pub(crate) mod keygen;
pub(crate) mod login;
pub(crate) mod messages;
pub(crate) mod new;
pub(crate) mod package;
pub(crate) mod rollout;
pub(crate) mod secret;
pub(crate) mod test;
pub(crate) mod token;
pub(crate) mod validate;

use crate::args::{Cli, Command};
use crate::error::{CliResult, Outcome};

/// Runs the parsed command line.
pub(crate) fn run(cli: Cli) -> CliResult<Outcome> {
    match cli.command {
        Command::Init(args) => init::run(&args),
        Command::New(args) => new::run(&args),
        Command::Dev(args) => dev::run(&args),
        Command::Validate(args) => validate::run(&args),
        Command::Test(args) => test::run(&args),
        Command::Invoke(args) if args.device.is_some() => invoke::on_device(&args),
        Command::Invoke(args) => test::invoke(&args),
        Command::Package(args) => package::run(&args),
        Command::Apply(args) => apply::run(&args),
        Command::Diff(args) => diff::run(&args),
        Command::Status(args) => fleet::status(&args),
        Command::History(args) => fleet::history(&args),
        Command::Rollback(args) => fleet::rollback(&args),
        Command::Keygen(args) => keygen::run(&args),
        Command::Device(cmd) => device::run(&cmd),
        Command::Token(cmd) => token::run(&cmd),
        Command::Secret(cmd) => secret::run(&cmd),
        Command::Rollout(cmd) => rollout::run(&cmd),
        Command::Login(args) => login::run(&args),
        Command::Publish(args) => messages::publish(&args),
        Command::Subscribe(args) => messages::subscribe(&args),
        Command::Logs(args) => messages::logs(&args),
        Command::Completions(args) => completions::run(&args),
    }
}

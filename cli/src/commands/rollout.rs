//! `edgefn rollout status|pause|resume|abort` (following a rollout is shared with `apply
//! --wait` and `secret set --wait`: [`crate::progressive`]).

use edgefn_schema::api::{RolloutState, RolloutStatus};

use crate::args::{Output, RolloutCommand};
use crate::client::Client;
use crate::error::{CliResult, Outcome};
use crate::progressive::{describe, follow, print};

/// Runs a `rollout` subcommand.
pub(crate) fn run(cmd: &RolloutCommand) -> CliResult {
    let (args, action) = match cmd {
        RolloutCommand::Status(a) => (a, None),
        RolloutCommand::Pause(a) => (a, Some("pause")),
        RolloutCommand::Resume(a) => (a, Some("resume")),
        RolloutCommand::Abort(a) => (a, Some("abort")),
    };
    let timeout = crate::rollout::parse_timeout(&args.timeout)?;
    let client = Client::from_args(args.cloud.cloud.as_deref(), args.cloud.token.as_deref())?;
    let status: RolloutStatus = match action {
        None => client.get("/v1/rollout")?,
        Some(a) => client
            .post(&format!("/v1/rollout/{a}"), &())
            .map(|(_, s)| s)?,
    };
    if args.wait {
        if args.output == Output::Text {
            eprint!("{}", describe(&status));
        }
        return follow(&client, status.revision, timeout, args.output);
    }
    print(&status, args.output);
    Ok(match status.state {
        RolloutState::Halted | RolloutState::Aborted if action.is_none() => Outcome::Failed,
        _ => Outcome::Success,
    })
}

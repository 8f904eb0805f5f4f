//! `edgefn login`: check an admin token against the control plane, then save both.

use std::io::{BufRead, Write};

use edgefn_schema::api::FleetStatus;

use crate::args::LoginArgs;
use crate::client::{self, Client, Credentials};
use crate::error::{CliError, CliResult, Outcome};

/// Runs `edgefn login`.
pub(crate) fn run(args: &LoginArgs) -> CliResult {
    let token = match &args.token {
        Some(t) => t.trim().to_owned(),
        None => {
            let mut line = String::new();
            std::io::stdin()
                .lock()
                .read_line(&mut line)
                .map_err(CliError::io("read the token from", "stdin"))?;
            line.trim().to_owned()
        }
    };
    if token.is_empty() {
        return Err(CliError::InvalidArgument {
            message: "no token given".into(),
            help: "pipe the admin token on standard input, or pass --token".into(),
        });
    }
    let client = Client::new(&args.cloud, &token)?;
    let status: FleetStatus = client.get("/v1/status")?;
    let path = client::save(&Credentials {
        cloud: client.base().to_owned(),
        token,
    })?;
    let _ = writeln!(
        std::io::stdout().lock(),
        "logged in to {} (revision {}, {} devices); credentials saved in {}",
        client.base(),
        status.revision,
        status.devices.len(),
        path.display()
    );
    Ok(Outcome::Success)
}

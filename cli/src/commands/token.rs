//! `edgefn token create|list|revoke`: the control plane's admin tokens.

use std::io::Write;

use edgefn_schema::api::{AdminTokenCreated, AdminTokenInfo, NewAdminToken};

use crate::args::{Output, TokenCommand, TokenCreateArgs, TokenListArgs, TokenRevokeArgs};
use crate::client::Client;
use crate::error::{CliResult, Outcome};

/// Runs a `token` subcommand.
pub(crate) fn run(cmd: &TokenCommand) -> CliResult {
    match cmd {
        TokenCommand::Create(a) => create(a),
        TokenCommand::List(a) => list(a),
        TokenCommand::Revoke(a) => revoke(a),
    }
}

fn create(args: &TokenCreateArgs) -> CliResult {
    let client = Client::from_args(args.cloud.cloud.as_deref(), args.cloud.token.as_deref())?;
    let (_, created): (_, AdminTokenCreated) = client.post(
        "/v1/tokens",
        &NewAdminToken {
            name: args.name.clone(),
        },
    )?;
    let mut out = std::io::stdout().lock();
    match args.output {
        Output::Json => {
            let _ = writeln!(
                out,
                "{}",
                serde_json::to_string_pretty(&created).expect("json")
            );
        }
        Output::Text => {
            // The token alone on stdout, so that `> file` or a secret store takes it as is.
            let _ = writeln!(out, "{}", created.token);
            eprintln!(
                "created admin token `{}` (id {}); it is shown this once: keep it secret",
                created.name, created.id
            );
        }
    }
    Ok(Outcome::Success)
}

fn list(args: &TokenListArgs) -> CliResult {
    let client = Client::from_args(args.cloud.cloud.as_deref(), args.cloud.token.as_deref())?;
    let tokens: Vec<AdminTokenInfo> = client.get("/v1/tokens")?;
    let mut out = std::io::stdout().lock();
    if args.output == Output::Json {
        let _ = writeln!(
            out,
            "{}",
            serde_json::to_string_pretty(&tokens).expect("json")
        );
        return Ok(Outcome::Success);
    }
    let _ = writeln!(out, "{:<14} {:<24} {:<10}", "ID", "NAME", "CREATED");
    for t in &tokens {
        let created = if t.created_ms == 0 {
            "-".to_owned()
        } else {
            crate::human::ago(t.created_ms)
        };
        let _ = writeln!(
            out,
            "{:<14} {:<24} {:<10}{}",
            t.id,
            t.name,
            created,
            if t.current { " (this one)" } else { "" }
        );
    }
    Ok(Outcome::Success)
}

fn revoke(args: &TokenRevokeArgs) -> CliResult {
    let client = Client::from_args(args.cloud.cloud.as_deref(), args.cloud.token.as_deref())?;
    client.delete(&format!("/v1/tokens/{}", args.id))?;
    eprintln!(
        "revoked admin token {}: it no longer works, from the next request on",
        args.id
    );
    Ok(Outcome::Success)
}

//! `edgefn secret set|list|rm`: the control plane's secrets. A value goes from stdin or a file
//! to the control plane and nowhere else: it is never printed, and the answers name versions
//! only.

use std::io::{Read, Write};

use edgefn_schema::api::{MAX_SECRET_BYTES, SecretInfo, SecretSetResponse};

use crate::args::{Output, SecretCommand, SecretListArgs, SecretRmArgs, SecretSetArgs};
use crate::client::Client;
use crate::error::{CliError, CliResult, Outcome};
use crate::rollout;

/// Runs a `secret` subcommand.
pub(crate) fn run(cmd: &SecretCommand) -> CliResult {
    match cmd {
        SecretCommand::Set(a) => set(a),
        SecretCommand::List(a) => list(a),
        SecretCommand::Rm(a) => rm(a),
    }
}

fn check_name(name: &str) -> Result<(), CliError> {
    if edgefn_schema::manifest::valid_secret_name(name) {
        return Ok(());
    }
    let fixed = edgefn_schema::manifest::suggest_name(name);
    Err(CliError::InvalidArgument {
        message: format!("`{name}` is not a valid secret name"),
        help: format!(
            "a secret name uses lowercase letters, digits, `-` and `_`, starts and ends with a letter or digit, and has at most 63 characters{}",
            if fixed.is_empty() {
                String::new()
            } else {
                format!(", e.g. `{fixed}`")
            }
        ),
    })
}

/// The value to set: the file's bytes, or stdin's without one trailing newline; at most
/// [`MAX_SECRET_BYTES`] (one byte more is read to tell), and not empty.
fn read_value(args: &SecretSetArgs) -> Result<Vec<u8>, CliError> {
    let too_large = |from: &str| {
        CliError::InvalidArgument {
        message: format!(
            "{from} holds more than {MAX_SECRET_BYTES} bytes ({} KiB), the largest secret",
            MAX_SECRET_BYTES >> 10
        ),
        help: "a secret is a key, a password or a certificate; keep larger data in the function's bundle or fetch it at run time".into(),
    }
    };
    let mut value = Vec::new();
    let from = match &args.from_file {
        Some(path) => {
            let file = std::fs::File::open(path).map_err(|e| CliError::InvalidArgument {
                message: format!("cannot read {}: {e}", path.display()),
                help: "name a readable file with --from-file, or pipe the value to stdin".into(),
            })?;
            file.take(MAX_SECRET_BYTES as u64 + 1)
                .read_to_end(&mut value)
                .map_err(|e| CliError::InvalidArgument {
                    message: format!("cannot read {}: {e}", path.display()),
                    help: "name a readable file with --from-file".into(),
                })?;
            path.display().to_string()
        }
        None => {
            std::io::stdin()
                .lock()
                .take(MAX_SECRET_BYTES as u64 + 2)
                .read_to_end(&mut value)
                .map_err(|e| CliError::InvalidArgument {
                    message: format!("cannot read the value from stdin: {e}"),
                    help: "pipe the value in: `printf %s \"$VALUE\" | edgefn secret set NAME`"
                        .into(),
                })?;
            if value.ends_with(b"\r\n") {
                value.truncate(value.len() - 2);
            } else if value.ends_with(b"\n") {
                value.pop();
            }
            "stdin".to_owned()
        }
    };
    if value.len() > MAX_SECRET_BYTES {
        return Err(too_large(&from));
    }
    if value.is_empty() {
        return Err(CliError::InvalidArgument {
            message: format!("the value from {from} is empty"),
            help: "pipe the value in (`printf %s \"$VALUE\" | edgefn secret set NAME`) or name a file with --from-file; to stop using a secret, remove it from the manifest and run `edgefn secret rm NAME`".into(),
        });
    }
    Ok(value)
}

fn set(args: &SecretSetArgs) -> CliResult {
    check_name(&args.name)?;
    let timeout = rollout::parse_timeout(&args.timeout)?;
    let value = read_value(args)?;
    let client = Client::from_args(args.cloud.cloud.as_deref(), args.cloud.token.as_deref())?;
    let set: SecretSetResponse = client.put_raw(&format!("/v1/secrets/{}", args.name), value)?;
    let outcome = match set.revision {
        Some(revision) => {
            if args.output == Output::Text {
                eprintln!(
                    "set secret `{}` version {}; revision {revision} rolls it out",
                    set.name, set.version
                );
                // The control plane cannot sign: after a signed revision, say how to sign this one.
                let before: Option<edgefn_schema::api::Revision> = client
                    .get(&format!("/v1/revisions/{}", revision.saturating_sub(1)))
                    .ok();
                if before.is_some_and(|r| r.signatures.is_some()) {
                    eprintln!(
                        "warning: revision {revision} is not signed (the control plane cannot sign), so agents with trustedKeys refuse it and keep the old value: sign it with `edgefn apply --sign-key FILE`"
                    );
                }
            }
            // A manifest with `rollout:` rolls the new version out in stages: follow those.
            let staged = args.wait
                && client
                    .get::<edgefn_schema::api::RolloutStatus>("/v1/rollout")
                    .is_ok_and(|r| r.revision == revision);
            if staged {
                crate::progressive::follow(&client, revision, timeout, args.output)?
            } else if args.wait {
                rollout::wait_for_rollout(&client, timeout, args.output)?
            } else {
                Outcome::Success
            }
        }
        None if set.signing_required => {
            if args.output == Output::Text {
                eprintln!(
                    "set secret `{}` version {}; the latest revision is signed and the control plane cannot sign, so it made no revision (agents with trustedKeys would refuse it): roll the new version out with `edgefn apply --sign-key FILE`",
                    set.name, set.version
                );
            }
            Outcome::Success
        }
        None => {
            if args.output == Output::Text {
                eprintln!(
                    "set secret `{}` version {}; the latest revision does not use it, so nothing rolls out until one does",
                    set.name, set.version
                );
            }
            Outcome::Success
        }
    };
    if args.output == Output::Json {
        let _ = writeln!(
            std::io::stdout().lock(),
            "{}",
            serde_json::to_string_pretty(&set).expect("json")
        );
    }
    Ok(outcome)
}

fn list(args: &SecretListArgs) -> CliResult {
    let client = Client::from_args(args.cloud.cloud.as_deref(), args.cloud.token.as_deref())?;
    let secrets: Vec<SecretInfo> = client.get("/v1/secrets")?;
    let mut out = std::io::stdout().lock();
    if args.output == Output::Json {
        let _ = writeln!(
            out,
            "{}",
            serde_json::to_string_pretty(&secrets).expect("json")
        );
        return Ok(Outcome::Success);
    }
    let _ = writeln!(out, "{:<24} {:<8} {:<10} USED BY", "NAME", "VERSION", "SET");
    for s in &secrets {
        let _ = writeln!(
            out,
            "{:<24} {:<8} {:<10} {}",
            s.name,
            s.version,
            crate::human::ago(s.updated_ms),
            if s.used_by.is_empty() {
                "-".to_owned()
            } else {
                s.used_by.join(", ")
            }
        );
    }
    Ok(Outcome::Success)
}

fn rm(args: &SecretRmArgs) -> CliResult {
    check_name(&args.name)?;
    let client = Client::from_args(args.cloud.cloud.as_deref(), args.cloud.token.as_deref())?;
    client.delete(&format!("/v1/secrets/{}", args.name))?;
    eprintln!("removed secret `{}`: its values are gone", args.name);
    Ok(Outcome::Success)
}

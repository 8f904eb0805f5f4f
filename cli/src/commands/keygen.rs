//! `edgefn keygen`: a new ed25519 signing key, written 0600 from creation; its public key is
//! printed on stdout, one line, for agents' `trustedKeys:`.

use std::path::PathBuf;

use edgefn_schema::signing::SigningKey;

use crate::args::KeygenArgs;
use crate::error::{CliError, CliResult, Outcome};

pub(crate) fn run(args: &KeygenArgs) -> CliResult<Outcome> {
    let path: PathBuf = match &args.out {
        Some(p) => p.clone(),
        None => crate::client::config_dir()
            .ok_or_else(|| CliError::InvalidArgument {
                message: "no home folder to keep the key in".into(),
                help: "name the file with --out FILE".into(),
            })?
            .join("signing.key"),
    };
    if path.exists() && !args.force {
        return Err(CliError::Exists {
            path,
            hint: "keep the existing key (its public key is already in agents' trustedKeys), name another file with --out, or pass --force to replace it".into(),
        });
    }
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).map_err(CliError::io("create", dir))?;
    }
    let (key, pem) = SigningKey::generate().map_err(|e| CliError::InvalidArgument {
        message: format!("could not make a key: {e}"),
        help: "check that the system's random number generator is available".into(),
    })?;
    edgefn_os::file::write_atomic(&path, pem.as_bytes(), edgefn_os::file::PRIVATE)
        .map_err(CliError::io("write", &path))?;
    eprintln!(
        "wrote the private key to {} (mode 0600: keep it secret, e.g. as a CI secret named by EDGEFN_SIGN_KEY_FILE)\nput this public key in each agent's `trustedKeys:`, and sign with `edgefn apply --sign-key {}`:",
        path.display(),
        path.display()
    );
    println!("{}", key.public());
    Ok(Outcome::Success)
}

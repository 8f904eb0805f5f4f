//! Signed revisions on the applying side: reading the signing key, and signing what each
//! device will run under a revision (`edgefn apply --sign-key`, `edgefn rollback --sign-key`).
//!
//! The CLI computes every device's desired state itself, with the same pure
//! [`edgefn_schema::resolve`] the control plane uses, from the manifest, the bundle digests and
//! the secret versions the control plane will pin (the latest of each, or those a rollback
//! keeps). The control plane checks the signatures against the states it computes and refuses
//! a revision whose signatures do not match (422 `invalid_signatures`).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use edgefn_schema::api::{DeviceInfo, RevisionSignatures, SecretInfo};
use edgefn_schema::signing::{SigningKey, statement};
use edgefn_schema::{DesiredState, Manifest};

use crate::client::Client;
use crate::error::CliError;

/// The environment variable naming the signing key file when `--sign-key` is not given.
pub(crate) const KEY_FILE_ENV: &str = "EDGEFN_SIGN_KEY_FILE";

/// The largest key file read, in bytes (a PEM ed25519 key is about 120).
const MAX_KEY_FILE_BYTES: u64 = 16 * 1024;

/// The signing key named by `flag`, else by `EDGEFN_SIGN_KEY_FILE`; `None` when neither is set.
pub(crate) fn load_key(flag: Option<&Path>) -> Result<Option<SigningKey>, CliError> {
    let path: PathBuf = match flag {
        Some(p) => p.to_owned(),
        None => match std::env::var_os(KEY_FILE_ENV).filter(|v| !v.is_empty()) {
            Some(v) => PathBuf::from(v),
            None => return Ok(None),
        },
    };
    read_key(&path).map(Some)
}

fn read_key(path: &Path) -> Result<SigningKey, CliError> {
    use std::io::Read;
    let file = std::fs::File::open(path).map_err(CliError::io("read the signing key", path))?;
    let mut text = String::new();
    file.take(MAX_KEY_FILE_BYTES + 1)
        .read_to_string(&mut text)
        .map_err(|_| CliError::InvalidArgument {
            message: format!("signing key {}: it is not a text file", path.display()),
            help: "name the file `edgefn keygen` wrote (PKCS#8 PEM)".into(),
        })?;
    if text.len() as u64 > MAX_KEY_FILE_BYTES {
        return Err(CliError::InvalidArgument {
            message: format!(
                "signing key {}: larger than {MAX_KEY_FILE_BYTES} bytes, so not a key",
                path.display()
            ),
            help: "name the file `edgefn keygen` wrote (PKCS#8 PEM)".into(),
        });
    }
    SigningKey::from_pem(&text).map_err(|e| CliError::InvalidArgument {
        message: format!("signing key {}: {e}", path.display()),
        help: "write a key with `edgefn keygen --out FILE` and put the public key it prints in each agent's `trustedKeys:`".into(),
    })
}

/// The latest version of each secret the control plane holds, by name (empty when
/// `manifest` names none, without asking).
pub(crate) fn latest_secret_versions(
    client: &Client,
    manifest: &Manifest,
) -> Result<BTreeMap<String, u64>, CliError> {
    if manifest.secret_users().is_empty() {
        return Ok(BTreeMap::new());
    }
    let set: Vec<SecretInfo> = client.get("/v1/secrets")?;
    Ok(set.into_iter().map(|s| (s.name, s.version)).collect())
}

/// What a revision's desired states name by digest: the functions' bundles, their dependency
/// layers and their models.
pub(crate) struct Artifacts<'a> {
    /// Bundle digest by function.
    pub(crate) bundles: &'a BTreeMap<String, String>,
    /// Dependency layer digests by function and platform.
    pub(crate) layers: &'a edgefn_schema::Layers,
    /// Model artifacts by name.
    pub(crate) models: &'a edgefn_schema::Models,
}

/// Signs, for revision `revision`, the desired state of every device of `manifest` (with the
/// `artifacts` and the secret versions `pins`), and the empty state of every registered device
/// the manifest does not list (so that removing a device from the manifest also reaches a
/// device that checks signatures).
#[allow(clippy::too_many_arguments)]
pub(crate) fn sign_revision(
    client: &Client,
    key: &SigningKey,
    manifest: &Manifest,
    artifacts: &Artifacts<'_>,
    pins: &BTreeMap<String, u64>,
    revision: u64,
) -> Result<RevisionSignatures, CliError> {
    let registered: Vec<DeviceInfo> = client.get("/v1/devices")?;
    let mut devices = BTreeMap::new();
    for name in manifest.devices.keys() {
        if let Some(mut state) = edgefn_schema::resolve_with_models(
            manifest,
            name,
            artifacts.bundles,
            artifacts.layers,
            artifacts.models,
        ) {
            state.pin_secrets(pins);
            devices.insert(name.clone(), sign_state(key, &state, revision));
        }
    }
    for d in registered {
        if !devices.contains_key(&d.name) {
            let state = DesiredState::empty(&manifest.project, &d.name);
            devices.insert(d.name.clone(), sign_state(key, &state, revision));
        }
    }
    Ok(RevisionSignatures {
        key: key.public().to_string(),
        devices,
    })
}

fn sign_state(key: &SigningKey, state: &DesiredState, revision: u64) -> String {
    key.sign(&statement(
        &state.project,
        &state.device,
        revision,
        &state.digest(),
    ))
}

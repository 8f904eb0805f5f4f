//! Local values of secrets, for `edgefn test`, `edgefn invoke` and `edgefn dev`: the
//! git-ignored `secrets.local.yaml` beside `edgefn.yaml` (`edgefn init` lists it in
//! `.gitignore`), a map of secret names to values:
//!
//! ```yaml
//! db-password: "local-only"
//! tls-key: |
//!   -----BEGIN PRIVATE KEY-----
//!   ...
//! ```
//!
//! A function gets them as a device does, as files in a private folder (`EDGEFN_SECRETS_DIR`,
//! `/run/secrets` in a container), made under `/dev/shm` when it exists and removed when the
//! command ends. A secret the function needs that the file lacks is an error naming the file.

use std::collections::BTreeMap;
use std::io::Read;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use edgefn_schema::api::MAX_SECRET_BYTES;
use edgefn_schema::{ResolvedBinding, Source};

use crate::error::CliError;

/// The file's name, beside the manifest.
pub(crate) const FILE: &str = "secrets.local.yaml";

/// The local values, and the folders made for the functions (removed on drop).
#[derive(Debug)]
pub(crate) struct LocalSecrets {
    file: PathBuf,
    values: BTreeMap<String, Vec<u8>>,
    dir: Option<PathBuf>,
}

fn invalid(file: &Path, line: usize, message: String) -> CliError {
    CliError::InvalidArgument {
        message: format!("{}:{line}: {message}", file.display()),
        help: format!("{FILE} maps secret names to values, e.g. `db-password: \"local-only\"`"),
    }
}

impl LocalSecrets {
    /// Reads `ROOT/secrets.local.yaml` (no file: no values). At most 1 MiB is read.
    pub(crate) fn load(root: &Path) -> Result<LocalSecrets, CliError> {
        let file = root.join(FILE);
        let mut values = BTreeMap::new();
        let mut bytes = Vec::new();
        match std::fs::File::open(&file) {
            Ok(f) => {
                f.take((1 << 20) + 1)
                    .read_to_end(&mut bytes)
                    .map_err(CliError::io("read", &file))?;
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Ok(LocalSecrets {
                    file,
                    values,
                    dir: None,
                });
            }
            Err(e) => return Err(CliError::io("read", &file)(e)),
        }
        if bytes.len() > 1 << 20 {
            return Err(invalid(&file, 1, "larger than 1 MiB".into()));
        }
        let source = Source::from_utf8(file.display().to_string(), bytes)
            .map_err(|d| invalid(&file, d.location().line, d.message.clone()))?;
        let (root_node, diags) = edgefn_schema::yaml::parse(&source);
        if let Some(d) = diags.iter().next() {
            return Err(invalid(&file, d.location().line, d.message.clone()));
        }
        let json = root_node
            .as_ref()
            .map(edgefn_schema::testcase::to_json)
            .unwrap_or(serde_json::Value::Null);
        let map = match json {
            serde_json::Value::Object(map) => map,
            serde_json::Value::Null => serde_json::Map::new(),
            _ => return Err(invalid(&file, 1, "not a map of names to values".into())),
        };
        for (name, value) in map {
            let line = source
                .text()
                .lines()
                .position(|l| l.trim_start().starts_with(&format!("{name}:")))
                .map_or(1, |i| i + 1);
            if !edgefn_schema::manifest::valid_secret_name(&name) {
                return Err(invalid(
                    &file,
                    line,
                    format!(
                        "`{name}` is not a valid secret name (lowercase letters, digits, `-`, `_`)"
                    ),
                ));
            }
            let value = match value {
                serde_json::Value::String(s) => s.into_bytes(),
                serde_json::Value::Number(n) => n.to_string().into_bytes(),
                serde_json::Value::Bool(b) => b.to_string().into_bytes(),
                _ => {
                    return Err(invalid(
                        &file,
                        line,
                        format!("the value of `{name}` is not text"),
                    ));
                }
            };
            if value.is_empty() || value.len() > MAX_SECRET_BYTES {
                return Err(invalid(
                    &file,
                    line,
                    format!(
                        "the value of `{name}` is {} bytes: a secret has 1 to {MAX_SECRET_BYTES}",
                        value.len()
                    ),
                ));
            }
            values.insert(name, value);
        }
        Ok(LocalSecrets {
            file,
            values,
            dir: None,
        })
    }

    /// The local value of `name`, or an error naming the file to add it to.
    pub(crate) fn value(&self, name: &str, used_by: &str) -> Result<&[u8], CliError> {
        self.values
            .get(name)
            .map(Vec::as_slice)
            .ok_or_else(|| CliError::InvalidArgument {
                message: format!("{used_by} needs secret `{name}`, which has no local value"),
                help: format!(
                    "add it to {} (git-ignored): `{name}: \"VALUE\"`",
                    self.file.display()
                ),
            })
    }

    /// An error naming every secret of `names` (each with who needs it) that has no local
    /// value, and the file to add them to; `Ok` when all have one.
    fn check_all<'a>(
        &self,
        names: impl IntoIterator<Item = (&'a String, String)>,
    ) -> Result<(), CliError> {
        let missing: Vec<String> = names
            .into_iter()
            .filter(|(name, _)| !self.values.contains_key(*name))
            .map(|(name, who)| format!("secret `{name}` (needed by {who})"))
            .collect();
        if missing.is_empty() {
            return Ok(());
        }
        Err(CliError::InvalidArgument {
            message: format!("no local value for {}", missing.join(", ")),
            help: format!(
                "add each to {} (git-ignored), one `NAME: \"VALUE\"` a line",
                self.file.display()
            ),
        })
    }

    /// The folder of `binding`'s secrets, written now (0700, files 0400); `None` when it
    /// names none. Every value is checked first, so a missing one leaves no partial folder.
    pub(crate) fn folder_for(
        &mut self,
        binding: &ResolvedBinding,
    ) -> Result<Option<PathBuf>, CliError> {
        if binding.secrets.is_empty() {
            return Ok(None);
        }
        let who = format!("`{}`", binding.name);
        self.check_all(binding.secrets.keys().map(|n| (n, who.clone())))?;
        let base = match &self.dir {
            Some(d) => d.clone(),
            None => {
                let parent = if Path::new("/dev/shm").is_dir() {
                    PathBuf::from("/dev/shm")
                } else {
                    std::env::temp_dir()
                };
                let nanos = std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map(|d| d.subsec_nanos())
                    .unwrap_or(0);
                // What a killed run left there first.
                sweep_stale_in(&parent);
                let d = parent.join(format!("edgefn-secrets-{}-{nanos}", std::process::id()));
                std::fs::DirBuilder::new()
                    .mode(0o700)
                    .create(&d)
                    .map_err(CliError::io("create the folder", &d))?;
                self.dir = Some(d.clone());
                d
            }
        };
        let dir = base.join(&binding.name);
        if dir.is_dir() {
            return Ok(Some(dir));
        }
        std::fs::DirBuilder::new()
            .mode(0o700)
            .create(&dir)
            .map_err(CliError::io("create the folder", &dir))?;
        for name in binding.secrets.keys() {
            let value = self.value(name, &format!("`{}`", binding.name))?.to_vec();
            let path = dir.join(name);
            let mut f = std::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o400)
                .open(&path)
                .map_err(CliError::io("write", &path))?;
            std::io::Write::write_all(&mut f, &value).map_err(CliError::io("write", &path))?;
        }
        Ok(Some(dir))
    }

    /// The local values of the secrets in `names`, each `(name, value)`; an error names every
    /// one missing and the file to add them to.
    pub(crate) fn values_of<'a>(
        &self,
        names: impl IntoIterator<Item = (&'a String, &'a Vec<String>)>,
    ) -> Result<Vec<(String, Vec<u8>)>, CliError> {
        let names: Vec<(&String, &Vec<String>)> = names.into_iter().collect();
        self.check_all(names.iter().map(|(n, users)| (*n, users.join(", "))))?;
        names
            .into_iter()
            .map(|(name, users)| {
                self.value(name, &users.join(", "))
                    .map(|v| (name.clone(), v.to_vec()))
            })
            .collect()
    }
}

/// `edgefn dev`: sets on the local control plane each secret `manifest` names whose local
/// value is new or changed since `sent` (so an unchanged value starts no rollout).
pub(crate) fn push_changed(
    client: &crate::client::Client,
    root: &Path,
    manifest: &edgefn_schema::Manifest,
    sent: &mut BTreeMap<String, Vec<u8>>,
) -> Result<(), CliError> {
    let users = manifest.secret_users();
    if users.is_empty() {
        return Ok(());
    }
    let local = LocalSecrets::load(root)?;
    for (name, value) in local.values_of(users.iter())? {
        if sent.get(&name) != Some(&value) {
            let _: edgefn_schema::api::SecretSetResponse =
                client.put_raw(&format!("/v1/secrets/{name}"), value.clone())?;
            sent.insert(name, value);
        }
    }
    Ok(())
}

/// Removes the folders of local secret values on `/dev/shm` that an `edgefn test`, `invoke` or
/// `dev` killed before its own cleanup left behind (see [`sweep_stale_in`]).
pub(crate) fn sweep_stale() {
    sweep_stale_in(Path::new("/dev/shm"));
}

/// Removes, in `dir`, the folders `edgefn-secrets-PID-…` (`test`, `invoke`) and
/// `edgefn-dev-PID-…` (`dev`'s agents) whose process `PID` no longer runs (`/proc/PID` is
/// gone). A running one's, or another user's, are left alone.
pub(crate) fn sweep_stale_in(dir: &Path) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for e in entries.flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        let Some(rest) = name
            .strip_prefix("edgefn-secrets-")
            .or_else(|| name.strip_prefix("edgefn-dev-"))
        else {
            continue;
        };
        let Some(pid) = rest.split('-').next().and_then(|p| p.parse::<u32>().ok()) else {
            continue;
        };
        if pid == std::process::id() || Path::new("/proc").join(pid.to_string()).exists() {
            continue;
        }
        writable(&e.path());
        let _ = std::fs::remove_dir_all(e.path());
    }
}

/// Makes the folders under `dir` (itself included) writable by their owner, so that what they
/// hold can be removed: an agent writes its secrets folders 0500. Symbolic links are not
/// followed.
fn writable(dir: &Path) {
    use std::os::unix::fs::PermissionsExt as _;
    let Ok(meta) = std::fs::symlink_metadata(dir) else {
        return;
    };
    if !meta.is_dir() {
        return;
    }
    let _ = std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700));
    if let Ok(entries) = std::fs::read_dir(dir) {
        for e in entries.flatten() {
            writable(&e.path());
        }
    }
}

impl Drop for LocalSecrets {
    fn drop(&mut self) {
        if let Some(d) = self.dir.take() {
            let _ = std::fs::remove_dir_all(d);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt as _;

    /// A killed run's folders go, a running process's and unrelated ones stay.
    #[test]
    fn folders_of_processes_that_are_gone_are_swept() {
        let dir = tempfile::tempdir().expect("tmp");
        let mut child = std::process::Command::new("true").spawn().expect("spawn");
        let gone = child.id();
        child.wait().expect("wait");
        let stale = dir.path().join(format!("edgefn-secrets-{gone}-123"));
        let stale_dev = dir.path().join(format!("edgefn-dev-{gone}-dev-a"));
        let ours = dir
            .path()
            .join(format!("edgefn-secrets-{}-1", std::process::id()));
        let other = dir.path().join("edgefn-secrets-notapid");
        for d in [&stale, &stale_dev, &ours, &other] {
            std::fs::create_dir(d).expect("mkdir");
        }
        // As an agent writes them: a 0500 folder with a 0400 file.
        let held = stale_dev.join("reader-0123456789ab");
        std::fs::create_dir(&held).expect("mkdir");
        std::fs::write(held.join("token"), "v").expect("write");
        std::fs::set_permissions(&held, std::fs::Permissions::from_mode(0o500)).expect("chmod");
        sweep_stale_in(dir.path());
        assert!(!stale.exists() && !stale_dev.exists());
        assert!(ours.exists() && other.exists());
    }
}

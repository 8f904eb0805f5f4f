//! Dependency layers: a function's third-party packages, installed for a device's platform and
//! packed apart from its code, so that a code change moves only the code.
//!
//! A python3 function whose folder holds `requirements.txt`, and a node function whose folder
//! holds `package.json` and `package-lock.json`, get one layer per platform its devices use
//! ([`platforms`]). The layer is installed by the language's own tool into a temporary folder:
//!
//! - pip: `python3 -m pip install --target DIR --only-binary=:all: --platform TAG…
//!   --implementation cp --python-version X.Y --no-compile -r requirements.txt` (binary wheels
//!   only, for the target's CPU with glibc 2.28 or older, for the CPython version of the
//!   `python3` on this machine; hashes in the file turn on pip's hash checking). The layer is
//!   the `--target` folder, without `bin/` (console scripts whose first line names this
//!   machine's interpreter).
//! - npm: `npm ci --omit=dev --ignore-scripts --os=linux --cpu=ARCH` in a copy of
//!   `package.json`, `package-lock.json` (and `.npmrc`, if any); the layer is `node_modules/`.
//!
//! and packed with [`bundle::pack`] (sorted entries, zero times, root owners, normalised modes),
//! so the same lock and platform give the same digest on any run. Indexes and their credentials
//! come from pip's and npm's own configuration (`pip.conf`, `PIP_INDEX_URL`, `.npmrc`), which
//! the tools read as usual; the manifest has no place for them.
//!
//! A local cache (`$XDG_CACHE_HOME/edgefn/layers`, else `~/.cache/edgefn/layers`) keeps each
//! layer under a key: sha256 of the lock file's bytes, the platform, the interpreter's version
//! and the installer's version. A re-package with an unchanged lock reads the layer from there.

use std::collections::BTreeSet;
use std::fmt::Write as _;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::OnceLock;

use edgefn_schema::bundle::{self, BundleFile, FileKind};
use edgefn_schema::{Function, Layers, Manifest, Platform, Runtime};
use sha2::{Digest, Sha256};

use crate::error::CliError;

/// pip's input.
pub(crate) const REQUIREMENTS: &str = "requirements.txt";
/// npm's inputs.
pub(crate) const PACKAGE_JSON: &str = "package.json";
/// npm's lock.
pub(crate) const PACKAGE_LOCK: &str = "package-lock.json";

/// Largest lock file read, in bytes.
const MAX_LOCK_BYTES: u64 = 16 << 20;

/// Most bytes of an installer's error output kept for the message.
const MAX_TOOL_OUTPUT: usize = 64 << 10;

/// Oldest glibc a layer's wheels may need, as manylinux tags list it (PEP 600): 2.28 is
/// Debian 10, Ubuntu 18.10, RHEL 8, Raspberry Pi OS 10 and later.
const GLIBC_MINORS: [u32; 12] = [28, 27, 26, 25, 24, 23, 22, 21, 20, 19, 18, 17];

/// A function's layer for one platform.
#[derive(Debug, Clone)]
pub(crate) struct Layer {
    /// Function name.
    pub(crate) function: String,
    /// The platform it is built for.
    pub(crate) platform: Platform,
    /// sha256 of `bytes`.
    pub(crate) digest: String,
    /// The archive (the bundle format).
    pub(crate) bytes: Vec<u8>,
    /// Whether it came from the local cache.
    pub(crate) cached: bool,
}

/// How a function's dependencies are installed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Tool {
    Pip,
    Npm,
}

/// The tool that installs `f`'s dependencies, when it has any (see the module's docs). A node
/// function whose `package.json` lists dependencies without a `package-lock.json` is refused:
/// a layer is built only from a lock.
fn tool(root: &Path, f: &Function) -> Result<Option<Tool>, CliError> {
    let dir = root.join(&f.path);
    match f.runtime {
        Runtime::Python3 if dir.join(REQUIREMENTS).is_file() => Ok(Some(Tool::Pip)),
        Runtime::Node if dir.join(PACKAGE_JSON).is_file() => {
            if dir.join(PACKAGE_LOCK).is_file() {
                return Ok(Some(Tool::Npm));
            }
            let text = read_bounded(&dir.join(PACKAGE_JSON))?;
            let json: serde_json::Value =
                serde_json::from_slice(&text).map_err(|e| CliError::InvalidArgument {
                    message: format!(
                        "{} is not valid JSON: {e}",
                        dir.join(PACKAGE_JSON).display()
                    ),
                    help: "fix the file; npm reads it as JSON".into(),
                })?;
            if json
                .get("dependencies")
                .and_then(|d| d.as_object())
                .is_some_and(|d| !d.is_empty())
            {
                return Err(CliError::InvalidArgument {
                    message: format!(
                        "{} lists dependencies but there is no {PACKAGE_LOCK} beside it",
                        dir.join(PACKAGE_JSON).display()
                    ),
                    help: format!(
                        "a layer is built from the lock: run `npm install --package-lock-only` in {} and commit {PACKAGE_LOCK}",
                        dir.display()
                    ),
                });
            }
            Ok(None)
        }
        _ => Ok(None),
    }
}

/// Whether `f`'s folder holds a lock that makes a layer (the code bundle then leaves out its
/// `node_modules/`).
pub(crate) fn has_node_lock(dir: &Path) -> bool {
    dir.join(PACKAGE_LOCK).is_file()
}

/// The platforms of the devices that run `function` (some binding of it selects them).
pub(crate) fn platforms(manifest: &Manifest, function: &str) -> BTreeSet<Platform> {
    manifest
        .devices
        .iter()
        .filter(|(name, d)| {
            manifest
                .bindings
                .iter()
                .any(|b| b.function == function && b.devices.matches(name, d))
        })
        .map(|(_, d)| d.platform())
        .collect()
}

/// The platform of this machine, which `edgefn test`, `invoke` and `dev` build layers for.
pub(crate) fn host_platform() -> Result<Platform, CliError> {
    Platform::host().ok_or_else(|| CliError::InvalidArgument {
        message: format!(
            "this machine ({}/{}) is not a platform dependency layers are built for",
            std::env::consts::OS,
            std::env::consts::ARCH
        ),
        help: format!(
            "run functions with dependencies on one of {}",
            Platform::ALL.map(|p| p.as_str()).join(", ")
        ),
    })
}

/// Builds (or reads from the cache) the layers of every function with dependencies, for each
/// platform its devices use, in function then platform order. With `host`, one layer per
/// function for that platform instead (what runs on this machine), named for every platform
/// its devices use, so the desired states are the ones devices of any platform would get.
pub(crate) fn build_all(
    root: &Path,
    manifest: &Manifest,
    host: Option<Platform>,
) -> Result<Vec<Layer>, CliError> {
    let mut out = Vec::new();
    for (name, f) in &manifest.functions {
        let Some(tool) = tool(root, f)? else { continue };
        let wanted = platforms(manifest, name);
        match host {
            None => {
                for p in wanted {
                    out.extend(build(root, name, f, tool, p)?);
                }
            }
            Some(h) => {
                if let Some(layer) = build(root, name, f, tool, h)? {
                    for p in wanted {
                        out.push(Layer {
                            platform: p,
                            ..layer.clone()
                        });
                    }
                }
            }
        }
    }
    Ok(out)
}

/// The extracted layer of `f` built for this machine, for running it here (`edgefn test`,
/// `invoke`); `None` when it has no dependencies.
pub(crate) fn for_host(root: &Path, name: &str, f: &Function) -> Result<Option<PathBuf>, CliError> {
    let Some(tool) = tool(root, f)? else {
        return Ok(None);
    };
    match build(root, name, f, tool, host_platform()?)? {
        Some(layer) => extracted(&layer).map(Some),
        None => Ok(None),
    }
}

/// The revision request's `layers`: function → platform → digest.
pub(crate) fn digests(layers: &[Layer]) -> Layers {
    let mut out = Layers::new();
    for l in layers {
        out.entry(l.function.clone())
            .or_default()
            .insert(l.platform, l.digest.clone());
    }
    out
}

/// The folder of the local cache.
fn cache_dir() -> Option<PathBuf> {
    let base = std::env::var_os("XDG_CACHE_HOME")
        .filter(|v| !v.is_empty())
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache")))?;
    Some(base.join("edgefn").join("layers"))
}

fn read_bounded(path: &Path) -> Result<Vec<u8>, CliError> {
    let meta = fs::metadata(path).map_err(CliError::io("read", path))?;
    if meta.len() > MAX_LOCK_BYTES {
        return Err(CliError::InvalidArgument {
            message: format!(
                "{} is {} bytes, more than a lock file may be ({MAX_LOCK_BYTES})",
                path.display(),
                meta.len()
            ),
            help: "list only the function's own dependencies".into(),
        });
    }
    fs::read(path).map_err(CliError::io("read", path))
}

/// (interpreter version, installer version), or why they could not be asked.
type Versions = Result<(String, String), String>;

/// The interpreter and installer versions a layer depends on, asked once per run.
fn versions(tool: Tool) -> Result<&'static (String, String), CliError> {
    static PIP: OnceLock<Versions> = OnceLock::new();
    static NPM: OnceLock<Versions> = OnceLock::new();
    let (cell, ask): (_, fn() -> Versions) = match tool {
        Tool::Pip => (&PIP, || {
            let python = output(
                Command::new("python3")
                    .args(["-c", "import sys; print('%d.%d' % sys.version_info[:2])"]),
            )?;
            let pip = output(Command::new("python3").args(["-m", "pip", "--version"]))?;
            let pip = pip.split_whitespace().nth(1).unwrap_or_default().to_owned();
            Ok((python, pip))
        }),
        Tool::Npm => (&NPM, || {
            let node = output(Command::new("node").arg("--version"))?;
            let npm = output(Command::new("npm").arg("--version"))?;
            Ok((node, npm))
        }),
    };
    cell.get_or_init(ask)
        .as_ref()
        .map_err(|e| CliError::InvalidArgument {
            message: e.clone(),
            help: match tool {
                Tool::Pip => "functions with requirements.txt are packaged with pip: install python3 and pip (Debian: `apt-get install python3-pip`)".into(),
                Tool::Npm => "functions with package-lock.json are packaged with npm: install node and npm".into(),
            },
        })
}

/// A command's trimmed stdout, or why it failed.
fn output(cmd: &mut Command) -> Result<String, String> {
    let shown = format!("{cmd:?}").replace('"', "");
    let out = cmd
        .stdin(Stdio::null())
        .output()
        .map_err(|e| format!("cannot run {shown}: {e}"))?;
    if !out.status.success() {
        return Err(format!(
            "{shown} failed: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        ));
    }
    Ok(String::from_utf8_lossy(&out.stdout).trim().to_owned())
}

fn build(
    root: &Path,
    name: &str,
    f: &Function,
    tool: Tool,
    platform: Platform,
) -> Result<Option<Layer>, CliError> {
    let dir = root.join(&f.path);
    let inputs: Vec<PathBuf> = match tool {
        Tool::Pip => vec![dir.join(REQUIREMENTS)],
        Tool::Npm => vec![dir.join(PACKAGE_JSON), dir.join(PACKAGE_LOCK)],
    };
    let mut texts = Vec::new();
    for p in &inputs {
        texts.push(read_bounded(p)?);
    }
    if tool == Tool::Pip {
        check_requirements(&inputs[0], &texts[0])?;
    }
    let (interpreter, installer) = versions(tool)?;
    let mut h = Sha256::new();
    h.update(b"edgefn-layer-1\0");
    h.update(format!("{tool:?}\0{platform}\0{interpreter}\0{installer}\0").as_bytes());
    for t in &texts {
        h.update((t.len() as u64).to_le_bytes());
        h.update(t);
    }
    let key = edgefn_schema::resolve::hex(&h.finalize());
    let cache = cache_dir();
    if let Some(hit) = cache.as_deref().and_then(|c| cached(c, &key)) {
        return Ok(hit.map(|(digest, bytes)| Layer {
            function: name.to_owned(),
            platform,
            digest,
            bytes,
            cached: true,
        }));
    }
    // A miss takes as long as pip or npm does (half a minute is common): said before, and
    // how long it took after, on stderr (stdout may be JSON).
    let (lock, installer_name) = match tool {
        Tool::Pip => (REQUIREMENTS, "pip"),
        Tool::Npm => (PACKAGE_LOCK, "npm"),
    };
    eprintln!(
        "building the dependency layer of function `{name}` for {platform} from {lock} with {installer_name} (once: it is cached afterwards{})",
        cache
            .as_deref()
            .map(|c| format!(" in {}", c.display()))
            .unwrap_or_default()
    );
    let started = std::time::Instant::now();
    let work = tempfile::Builder::new()
        .prefix("edgefn-layer-")
        .tempdir()
        .map_err(CliError::io(
            "create a temporary folder",
            std::env::temp_dir(),
        ))?;
    let (tree, prefix) = match tool {
        Tool::Pip => (
            pip(&dir, &inputs[0], work.path(), platform, interpreter)?,
            "",
        ),
        Tool::Npm => (npm(&dir, work.path(), platform)?, "node_modules"),
    };
    let mut files = Vec::new();
    if tree.is_dir() {
        walk(&tree, prefix, tool, &mut files)?;
    }
    let bytes = if files.is_empty() {
        Vec::new()
    } else {
        bundle::pack(files).map_err(|e| CliError::InvalidArgument {
            message: format!(
                "the dependencies of function `{name}` for {platform} cannot be packed into a layer: {e}"
            ),
            help: "a layer holds only what its installer wrote into its folder: remove the dependency that links or writes outside it (a `file:` or `link:` dependency, an absolute symlink)".into(),
        })?
    };
    let digest = (!bytes.is_empty()).then(|| bundle::digest(&bytes));
    eprintln!(
        "built the dependency layer of function `{name}` for {platform} in {:.1} s ({} bytes)",
        started.elapsed().as_secs_f64(),
        bytes.len()
    );
    if let Some(c) = &cache {
        // The cache only saves time: failing to write it is not the package's failure.
        let _ = store(c, &key, digest.as_deref(), &bytes);
    }
    Ok(digest.map(|digest| Layer {
        function: name.to_owned(),
        platform,
        digest,
        bytes,
        cached: false,
    }))
}

/// A cached layer: (digest, bytes), or `None` for a lock that installs nothing. The entry
/// records the archive's digest and length; the file is checked against the length only (the
/// control plane and the agent check every archive's sha256 again, and hashing a large layer on
/// every package is what the cache saves).
fn cached(cache: &Path, key: &str) -> Option<Option<(String, Vec<u8>)>> {
    let entry = fs::read_to_string(cache.join("keys").join(key)).ok()?;
    let mut words = entry.split_whitespace();
    let digest = words.next()?;
    if digest == "empty" {
        return Some(None);
    }
    let len: u64 = words.next()?.parse().ok()?;
    if !bundle::is_digest(digest) {
        return None;
    }
    let bytes = fs::read(cache.join(format!("{digest}.tar.zst"))).ok()?;
    (bytes.len() as u64 == len).then(|| Some((digest.to_owned(), bytes)))
}

fn store(cache: &Path, key: &str, digest: Option<&str>, bytes: &[u8]) -> Result<(), CliError> {
    let keys = cache.join("keys");
    fs::create_dir_all(&keys).map_err(CliError::io("create", &keys))?;
    let entry = match digest {
        None => "empty".to_owned(),
        Some(d) => {
            edgefn_os::file::write_atomic(&cache.join(format!("{d}.tar.zst")), bytes, 0o644)
                .map_err(CliError::io("write", cache))?;
            format!("{d} {}", bytes.len())
        }
    };
    edgefn_os::file::write_atomic(&keys.join(key), entry.as_bytes(), 0o644)
        .map_err(CliError::io("write", &keys))
}

/// The manylinux tags a wheel for `platform` may carry (PEP 600 and the older aliases).
fn wheel_tags(platform: Platform) -> Vec<String> {
    let arch = match platform {
        Platform::LinuxAmd64 => "x86_64",
        Platform::LinuxArm64 => "aarch64",
        Platform::LinuxArmV7 => "armv7l",
    };
    let mut tags: Vec<String> = GLIBC_MINORS
        .iter()
        .map(|m| format!("manylinux_2_{m}_{arch}"))
        .collect();
    tags.push(format!("manylinux2014_{arch}"));
    if platform == Platform::LinuxAmd64 {
        tags.push(format!("manylinux2010_{arch}"));
        tags.push(format!("manylinux1_{arch}"));
    }
    tags
}

/// Refuses what pip would build from source or install outside the layer, naming the line.
fn check_requirements(path: &Path, text: &[u8]) -> Result<(), CliError> {
    let text = String::from_utf8_lossy(text);
    // Continuation lines join the next one (pip's rule).
    let joined = text.replace("\\\r\n", " ").replace("\\\n", " ");
    for (i, raw) in joined.lines().enumerate() {
        let line = match raw.find(" #") {
            Some(at) => &raw[..at],
            None if raw.trim_start().starts_with('#') => "",
            None => raw,
        }
        .trim();
        if line.is_empty() {
            continue;
        }
        let refuse = |why: &str, help: &str| {
            Err(CliError::InvalidArgument {
                message: format!("{}:{}: `{line}` {why}", path.display(), i + 1),
                help: help.into(),
            })
        };
        let first = line.split([' ', '=']).next().unwrap_or_default();
        match first {
            "-e" | "--editable" => {
                return refuse(
                    "is an editable install, built from source",
                    "a layer holds binary wheels only: publish the package as a wheel (to PyPI or your own index) and require it by name and version",
                );
            }
            "--no-binary" => {
                return refuse(
                    "asks for a source build",
                    "a layer holds binary wheels only, built for the device's platform: remove the line",
                );
            }
            "--prefix" | "--root" | "--target" | "-t" | "--user" | "--src" => {
                return refuse(
                    "would install outside the function's layer",
                    "remove the line: edgefn chooses where a layer is installed",
                );
            }
            "-r" | "--requirement" | "-c" | "--constraint" => {
                return refuse(
                    "reads another file, which the layer's cache key would not cover",
                    "copy its lines into requirements.txt",
                );
            }
            _ => {}
        }
        if first.starts_with('-') {
            // Index and trust options (`-i`, `--extra-index-url`, `--find-links`,
            // `--trusted-host`, `--pre`, `--hash` lines...) are pip's business.
            continue;
        }
        let lower = line.to_ascii_lowercase();
        if ["git+", "hg+", "svn+", "bzr+"]
            .iter()
            .any(|v| lower.contains(v))
        {
            return refuse(
                "installs from a version control repository, built from source",
                "a layer holds binary wheels only: require a published version by name",
            );
        }
        let url = line
            .split_once(" @ ")
            .map(|(_, u)| u.trim())
            .unwrap_or(line);
        if lower.starts_with('.')
            || lower.starts_with('/')
            || lower.starts_with('~')
            || url.starts_with("file:")
        {
            return refuse(
                "installs from a local path",
                "a layer holds published wheels only: require the package by name and version from an index",
            );
        }
        if url.contains("://")
            && !url
                .split(['#', ';'])
                .next()
                .unwrap_or("")
                .trim()
                .ends_with(".whl")
        {
            return refuse(
                "names an archive that is not a wheel, built from source",
                "require a published version by name, or point at a `.whl` built for the device's platform",
            );
        }
    }
    Ok(())
}

/// Runs pip into `work/layer`; returns that folder.
fn pip(
    dir: &Path,
    requirements: &Path,
    work: &Path,
    platform: Platform,
    python: &str,
) -> Result<PathBuf, CliError> {
    let target = work.join("layer");
    let mut cmd = Command::new("python3");
    cmd.args([
        "-m",
        "pip",
        "install",
        "--disable-pip-version-check",
        "--no-input",
    ])
    .args([
        "--root-user-action=ignore",
        "--no-compile",
        "--no-warn-script-location",
    ])
    .arg("--target")
    .arg(&target)
    .args(["--only-binary=:all:", "--implementation", "cp"])
    .args(["--python-version", python]);
    for tag in wheel_tags(platform) {
        cmd.args(["--platform", &tag]);
    }
    cmd.args(["-r", REQUIREMENTS]).current_dir(dir);
    let out = run_tool(&mut cmd, "pip")?;
    if !out.0 {
        let stderr = &out.1;
        if let Some(pkg) = stderr.lines().find_map(|l| {
            l.trim()
                .strip_prefix("ERROR: No matching distribution found for ")
                .map(str::trim)
        }) {
            let bare = pkg
                .split(['=', '<', '>', '!', '~', ';', '[', ' '])
                .next()
                .unwrap_or(pkg);
            return Err(CliError::InvalidArgument {
                message: format!(
                    "`{pkg}` (in {}) has no binary wheel for {platform} and CPython {python}",
                    requirements.display()
                ),
                help: format!(
                    "a device runs wheels, never builds them: pick a version of `{bare}` that publishes a wheel for {platform} (see its files on its index), use another package, or run the function on devices of another platform"
                ),
            });
        }
        return Err(CliError::InvalidArgument {
            message: format!(
                "pip could not install {} for {platform}:\n{}",
                requirements.display(),
                tail(stderr)
            ),
            help: "fix requirements.txt as pip says above; pip reads its index and credentials from its own configuration (pip.conf, PIP_INDEX_URL)".into(),
        });
    }
    // Console scripts name this machine's interpreter: of no use on a device.
    let _ = fs::remove_dir_all(target.join("bin"));
    Ok(target)
}

/// Runs `npm ci` in a copy of the lock; returns the `node_modules` folder.
fn npm(dir: &Path, work: &Path, platform: Platform) -> Result<PathBuf, CliError> {
    for name in [PACKAGE_JSON, PACKAGE_LOCK, ".npmrc"] {
        let from = dir.join(name);
        if from.is_file() {
            fs::copy(&from, work.join(name)).map_err(CliError::io("copy", &from))?;
        }
    }
    let cpu = match platform {
        Platform::LinuxAmd64 => "x64",
        Platform::LinuxArm64 => "arm64",
        Platform::LinuxArmV7 => "arm",
    };
    let mut cmd = Command::new("npm");
    cmd.args([
        "ci",
        "--omit=dev",
        "--ignore-scripts",
        "--no-audit",
        "--no-fund",
    ])
    .args(["--os=linux", &format!("--cpu={cpu}"), "--loglevel=error"])
    .current_dir(work);
    let (ok, stderr) = run_tool(&mut cmd, "npm")?;
    if !ok {
        if stderr.contains("in sync") || stderr.contains("EUSAGE") {
            return Err(CliError::InvalidArgument {
                message: format!(
                    "{} disagrees with {}: npm ci refuses a lock that does not match its package.json",
                    dir.join(PACKAGE_LOCK).display(),
                    dir.join(PACKAGE_JSON).display()
                ),
                help: format!(
                    "update the lock: run `npm install` in {}, then package again",
                    dir.display()
                ),
            });
        }
        return Err(CliError::InvalidArgument {
            message: format!(
                "npm could not install the dependencies in {} for {platform}:\n{}",
                dir.display(),
                tail(&stderr)
            ),
            help: "fix package.json or package-lock.json as npm says above; npm reads its registry and credentials from its own configuration (.npmrc)".into(),
        });
    }
    Ok(work.join("node_modules"))
}

/// Runs an installer with its output captured: (success, stderr and stdout, bounded).
fn run_tool(cmd: &mut Command, name: &str) -> Result<(bool, String), CliError> {
    let out = cmd
        .stdin(Stdio::null())
        .output()
        .map_err(|e| CliError::InvalidArgument {
            message: format!("cannot run {name}: {e}"),
            help: format!("install {name}; dependency layers are built with it"),
        })?;
    let mut text = String::from_utf8_lossy(&out.stderr).into_owned();
    if !out.status.success() {
        let _ = write!(text, "\n{}", String::from_utf8_lossy(&out.stdout));
    }
    Ok((out.status.success(), text))
}

/// The last lines of a tool's output, at most [`MAX_TOOL_OUTPUT`] bytes.
fn tail(text: &str) -> String {
    let lines: Vec<&str> = text.lines().filter(|l| !l.trim().is_empty()).collect();
    let mut shown = lines[lines.len().saturating_sub(20)..].join("\n");
    if shown.len() > MAX_TOOL_OUTPUT {
        let mut cut = shown.len() - MAX_TOOL_OUTPUT;
        while !shown.is_char_boundary(cut) {
            cut += 1;
        }
        shown = shown[cut..].to_owned();
    }
    shown
}

/// Every file and link under `dir`, named `prefix/…`.
fn walk(dir: &Path, prefix: &str, tool: Tool, out: &mut Vec<BundleFile>) -> Result<(), CliError> {
    let mut entries: Vec<PathBuf> = fs::read_dir(dir)
        .map_err(CliError::io("read", dir))?
        .filter_map(Result::ok)
        .map(|e| e.path())
        .collect();
    entries.sort();
    for path in entries {
        let name = path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        let rel = if prefix.is_empty() {
            name
        } else {
            format!("{prefix}/{name}")
        };
        let meta = fs::symlink_metadata(&path).map_err(CliError::io("read", &path))?;
        let ft = meta.file_type();
        if ft.is_symlink() {
            let target = fs::read_link(&path).map_err(CliError::io("read the link", &path))?;
            out.push(BundleFile {
                path: rel,
                kind: FileKind::Symlink {
                    target: target.to_string_lossy().into_owned(),
                },
            });
        } else if ft.is_dir() {
            walk(&path, &rel, tool, out)?;
        } else if ft.is_file() {
            use std::os::unix::fs::PermissionsExt;
            let executable = meta.permissions().mode() & 0o111 != 0;
            let data = fs::read(&path).map_err(CliError::io("read", &path))?;
            out.push(BundleFile {
                path: rel,
                kind: FileKind::Regular { data, executable },
            });
        } else {
            return Err(CliError::InvalidArgument {
                message: format!(
                    "the {} install wrote {rel}, which is not a regular file, folder or symlink",
                    if tool == Tool::Pip { "pip" } else { "npm" }
                ),
                help: "remove the dependency that creates it".into(),
            });
        }
    }
    Ok(())
}

/// Where `layer` is extracted for running on this machine (`edgefn test`, `invoke`): a folder
/// of the cache named by its digest, extracted once (in a temporary folder renamed into place).
pub(crate) fn extracted(layer: &Layer) -> Result<PathBuf, CliError> {
    let base = match cache_dir() {
        Some(c) => c.join("extracted"),
        None => std::env::temp_dir().join("edgefn-layers"),
    };
    let dir = base.join(&layer.digest);
    if dir.is_dir() {
        return Ok(dir);
    }
    fs::create_dir_all(&base).map_err(CliError::io("create", &base))?;
    let tmp = tempfile::Builder::new()
        .prefix(".tmp-")
        .tempdir_in(&base)
        .map_err(CliError::io("create a temporary folder in", &base))?;
    let files = bundle::unpack(&layer.bytes, 1 << 30).map_err(|e| {
        CliError::failed(
            format!("cannot extract the layer {}", layer.digest),
            "remove the cache folder and package again",
            e,
        )
    })?;
    let mut links = Vec::new();
    for f in files {
        let path = tmp.path().join(&f.path);
        if let Some(parent) = path.parent() {
            fs::create_dir_all(parent).map_err(CliError::io("create", parent))?;
        }
        match f.kind {
            FileKind::Regular { data, executable } => {
                use std::os::unix::fs::PermissionsExt;
                fs::write(&path, data).map_err(CliError::io("write", &path))?;
                let mode = if executable { 0o755 } else { 0o644 };
                fs::set_permissions(&path, fs::Permissions::from_mode(mode))
                    .map_err(CliError::io("write", &path))?;
            }
            // Links last: `unpack` checked each against the final tree.
            FileKind::Symlink { target } => links.push((path, target)),
        }
    }
    for (path, target) in links {
        std::os::unix::fs::symlink(&target, &path).map_err(CliError::io("link", &path))?;
    }
    let tmp = tmp.keep();
    match fs::rename(&tmp, &dir) {
        Ok(()) => Ok(dir),
        // Another run extracted it first: the same digest, the same files.
        Err(_) if dir.is_dir() => {
            let _ = fs::remove_dir_all(&tmp);
            Ok(dir)
        }
        Err(e) => Err(CliError::io("rename", &dir)(e)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn refused(text: &str) -> String {
        match check_requirements(Path::new("requirements.txt"), text.as_bytes()) {
            Err(CliError::InvalidArgument { message, help }) => format!("{message}\n{help}"),
            other => panic!("not refused: {text}: {other:?}"),
        }
    }

    #[test]
    fn source_builds_and_installs_elsewhere_are_refused_with_their_line() {
        let cases = [
            ("-e ./lib\n", "editable"),
            ("requests==2.32.3\n--no-binary :all:\n", "source build"),
            ("--prefix /usr\n", "outside the function's layer"),
            ("--target=/tmp/x\n", "outside the function's layer"),
            ("-r other.txt\n", "copy its lines"),
            ("git+https://github.com/psf/requests\n", "version control"),
            ("pkg @ git+https://example.com/pkg.git\n", "version control"),
            ("./vendor/pkg\n", "local path"),
            ("pkg @ file:///tmp/pkg.whl\n", "local path"),
            ("pkg @ https://example.com/pkg-1.0.tar.gz\n", "not a wheel"),
        ];
        for (text, want) in cases {
            let err = refused(text);
            assert!(err.contains(want), "{text}: {err}");
            assert!(err.contains("requirements.txt:"), "{err}");
        }
        let line = refused("# pinned\nsix==1.16.0\n\n-e .\n");
        assert!(line.contains("requirements.txt:4:"), "{line}");
    }

    #[test]
    fn pinned_hashed_and_index_lines_are_accepted() {
        let text = "--index-url https://pypi.org/simple  # ours\n\
                    six==1.16.0 \\\n    --hash=sha256:8abb2f1d86890a2dfb989f9a77cfcfd3e47c2a354b01111771326f8aa26e0254\n\
                    pkg @ https://example.com/pkg-1.0-py3-none-any.whl#sha256=00\n";
        check_requirements(Path::new("requirements.txt"), text.as_bytes()).expect("accepted");
    }

    #[test]
    fn wheel_tags_name_the_cpu() {
        assert!(
            wheel_tags(Platform::LinuxArmV7)
                .iter()
                .all(|t| t.ends_with("_armv7l"))
        );
        assert!(wheel_tags(Platform::LinuxAmd64).contains(&"manylinux2014_x86_64".to_owned()));
        assert!(wheel_tags(Platform::LinuxArm64).contains(&"manylinux_2_17_aarch64".to_owned()));
    }
}

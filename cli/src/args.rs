//! The command line, as clap types. Kept apart from the commands so that completions and help
//! can be generated from it alone.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand, ValueEnum};

/// Edge functions on your own fleet, described by a manifest in git.
#[derive(Debug, Parser)]
#[command(
    name = "edgefn",
    version,
    about = "Edge functions on your own fleet, described by a manifest in git",
    long_about = None,
    propagate_version = true,
    after_help = "Example:\n  edgefn init my-fleet && cd my-fleet && edgefn new temp-filter --runtime python3 && edgefn validate"
)]
pub struct Cli {
    /// What to do.
    #[command(subcommand)]
    pub(crate) command: Command,
}

/// The subcommands.
#[derive(Debug, Subcommand)]
pub(crate) enum Command {
    /// Create a new edgefn project: manifest, functions/, .gitignore and a CI workflow
    #[command(
        after_help = "Example:\n  edgefn init my-fleet\n  edgefn init . --name smart-factory"
    )]
    Init(InitArgs),
    /// Add a function: a working handler, a sample test case, and its entry in edgefn.yaml
    #[command(
        after_help = "Example:\n  edgefn new temp-filter --runtime python3\n  edgefn new collector --runtime exec"
    )]
    New(NewArgs),
    /// Run the project locally: a control plane, a broker and one agent per device, re-applied on every change
    #[command(
        after_help = "Example:\n  edgefn dev examples/quickstart\n  # then, in another terminal in the project:\n  edgefn publish gw-01 commands/greet '{\"name\": \"Ada\"}'\n  edgefn subscribe 'greetings/#'"
    )]
    Dev(DevArgs),
    /// Check edgefn.yaml (and the functions' test cases) and report every problem found
    #[command(
        after_help = "Example:\n  edgefn validate\n  edgefn validate -f deploy/edgefn.yaml --format json"
    )]
    Validate(ValidateArgs),
    /// Run the functions' test cases (functions/*/tests/*.yaml), or simulate one message on a device
    #[command(
        after_help = "Example:\n  edgefn test\n  edgefn test temp-filter --junit results.xml\n  edgefn test --topic sensors/line1/temperature --payload '{\"celsius\": 45}' --device gw-01"
    )]
    Test(TestArgs),
    /// Call a function once with an event, and print its result: here, or on a device
    #[command(
        after_help = "Example:\n  edgefn invoke temp-filter --topic sensors/l1/temperature --event '{\"celsius\": 45}'\n  edgefn invoke temp-filter --as-device gw-01 --event '{\"celsius\": 45}'\n  edgefn invoke temp-filter --device gw-01 --event '{\"celsius\": 45}'"
    )]
    Invoke(InvokeArgs),
    /// Package each function into a reproducible bundle named by its sha256
    #[command(after_help = "Example:\n  edgefn package\n  edgefn package temp-filter --out dist/")]
    Package(PackageArgs),
    /// Validate, package, upload what the cloud lacks, and submit a new revision
    #[command(
        after_help = "Example:\n  EDGEFN_CLOUD=https://edgefn.example.com EDGEFN_TOKEN=... edgefn apply --wait\n  edgefn apply --output json"
    )]
    Apply(ApplyArgs),
    /// Show what applying would change on each device (exit 0: none, 2: changes, 1: error)
    #[command(
        after_help = "Example:\n  edgefn diff\n  edgefn diff || [ $? -eq 2 ]\n\nExit codes: 0 no changes, 2 changes, 1 failure, 64 usage error."
    )]
    Diff(DiffArgs),
    /// Show the fleet: desired and running revision, state and errors of each device
    #[command(after_help = "Example:\n  edgefn status\n  edgefn status gw-01 --output json")]
    Status(StatusArgs),
    /// List the revisions applied, newest first, with where they came from
    #[command(after_help = "Example:\n  edgefn history --limit 5")]
    History(HistoryArgs),
    /// Apply an earlier revision again, as a new revision (default: the one before the latest)
    #[command(after_help = "Example:\n  edgefn rollback\n  edgefn rollback 12 --wait")]
    Rollback(RollbackArgs),
    /// Make an ed25519 key to sign revisions with; prints the public key for agents' trustedKeys
    #[command(
        after_help = "Example:\n  edgefn keygen --out ~/.config/edgefn/signing.key\n  edgefn apply --sign-key ~/.config/edgefn/signing.key"
    )]
    Keygen(KeygenArgs),
    /// Register, list and remove devices
    #[command(
        subcommand,
        after_help = "Example:\n  edgefn device add gw-03 --label site=lab\n  edgefn device list"
    )]
    Device(DeviceCommand),
    /// Create, list and revoke admin tokens (one per person or CI job; revoke a leaked one)
    #[command(
        subcommand,
        after_help = "Example:\n  edgefn token create ci\n  edgefn token list\n  edgefn token revoke 3f9a0c1d2e4b"
    )]
    Token(TokenCommand),
    /// Set, list and remove secrets: values functions read as files, kept encrypted by the
    /// control plane, never in git
    #[command(
        subcommand,
        after_help = "Example:\n  printf %s \"$DB_PASSWORD\" | edgefn secret set db-password\n  edgefn secret list\n  edgefn secret rm db-password"
    )]
    Secret(SecretCommand),
    /// Follow and steer the latest revision's progressive rollout (`rollout:` in the manifest)
    #[command(
        subcommand,
        after_help = "Example:\n  edgefn rollout status\n  edgefn rollout pause\n  edgefn rollout resume --wait\n  edgefn rollout abort"
    )]
    Rollout(RolloutCommand),
    /// Save the control plane's URL and an admin token for later commands
    #[command(after_help = "Example:\n  edgefn login --cloud http://127.0.0.1:7070 < admin.token")]
    Login(LoginArgs),
    /// Send a message to devices, on their local topic (through the cloud's MQTT broker)
    #[command(
        after_help = "Example:\n  edgefn publish gw-01 commands/greet '{\"name\": \"ada\"}'\n  edgefn publish --label site=shanghai commands/reload now"
    )]
    Publish(PublishArgs),
    /// Print what devices send up to the cloud (`device topic payload` lines) until Ctrl-C
    #[command(
        after_help = "Example:\n  edgefn subscribe 'alerts/#'\n  edgefn subscribe '#' --count 10 --json"
    )]
    Subscribe(SubscribeArgs),
    /// Show a device's function log lines (the last ones kept by the cloud), and follow new ones
    #[command(
        after_help = "Example:\n  edgefn logs gw-01\n  edgefn logs gw-01 temp-filter --follow"
    )]
    Logs(LogsArgs),
    /// Print a shell completion script
    #[command(
        after_help = "Example:\n  edgefn completions bash > ~/.local/share/bash-completion/completions/edgefn\n  edgefn completions zsh > \"${fpath[1]}/_edgefn\""
    )]
    Completions(CompletionsArgs),
}

/// `edgefn init`.
#[derive(Debug, Args)]
pub(crate) struct InitArgs {
    /// Folder to create the project in (created if missing)
    #[arg(default_value = ".")]
    pub(crate) dir: PathBuf,
    /// Project name (default: the folder's name)
    #[arg(long)]
    pub(crate) name: Option<String>,
    /// Overwrite files that already exist
    #[arg(long)]
    pub(crate) force: bool,
}

/// `edgefn new`.
#[derive(Debug, Args)]
pub(crate) struct NewArgs {
    /// Function name: lowercase letters, digits, `-` and `_`
    pub(crate) name: String,
    /// Language runtime of the function
    #[arg(long, short, value_enum)]
    pub(crate) runtime: RuntimeArg,
    /// The manifest to add the function to (default: edgefn.yaml here or in a parent folder)
    #[arg(long, short)]
    pub(crate) file: Option<PathBuf>,
    /// Overwrite the function's files if they exist
    #[arg(long)]
    pub(crate) force: bool,
    /// Also bind it, triggered by messages on this topic filter (repeatable)
    #[arg(long = "trigger", value_name = "TOPIC", conflicts_with = "continuous")]
    pub(crate) triggers: Vec<String>,
    /// Also bind it as a continuous function (one instance, restarted when it exits)
    #[arg(long)]
    pub(crate) continuous: bool,
    /// With --trigger or --continuous: bind it to the devices with this label `key=value`
    /// (repeatable; default: every device)
    #[arg(long = "label", value_name = "KEY=VALUE")]
    pub(crate) labels: Vec<String>,
}

/// `edgefn validate`.
#[derive(Debug, Args)]
pub(crate) struct ValidateArgs {
    /// The manifest (default: edgefn.yaml here or in a parent folder)
    #[arg(long, short)]
    pub(crate) file: Option<PathBuf>,
    /// How to print problems
    #[arg(long, value_enum, default_value_t = Format::Human)]
    pub(crate) format: Format,
}

/// Where the control plane is.
#[derive(Debug, Args)]
pub(crate) struct CloudArgs {
    /// Control plane URL [default: $EDGEFN_CLOUD, or the one saved by `edgefn login`]
    #[arg(long, value_name = "URL")]
    pub(crate) cloud: Option<String>,
    /// Admin token [default: $EDGEFN_TOKEN, or the one saved by `edgefn login`]
    #[arg(long, value_name = "TOKEN")]
    pub(crate) token: Option<String>,
}

/// Output format of commands that report.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub(crate) enum Output {
    /// For people
    Text,
    /// For programs
    Json,
}

/// `edgefn package`.
#[derive(Debug, Args)]
pub(crate) struct PackageArgs {
    /// Functions to package (default: all)
    pub(crate) functions: Vec<String>,
    /// The manifest (default: edgefn.yaml here or in a parent folder)
    #[arg(long, short)]
    pub(crate) file: Option<PathBuf>,
    /// Write the bundles to this folder as `<sha256>.tar.zst`
    #[arg(long)]
    pub(crate) out: Option<PathBuf>,
    /// Output format
    #[arg(long, value_enum, default_value_t = Output::Text)]
    pub(crate) output: Output,
}

/// `edgefn apply`.
#[derive(Debug, Args)]
pub(crate) struct ApplyArgs {
    /// The manifest (default: edgefn.yaml here or in a parent folder)
    #[arg(long, short)]
    pub(crate) file: Option<PathBuf>,
    #[command(flatten)]
    pub(crate) cloud: CloudArgs,
    /// Apply even with uncommitted changes (the revision records that it was dirty)
    #[arg(long)]
    pub(crate) allow_dirty: bool,
    /// Apply even when it undoes a rollback made with `edgefn rollback` (by applying the commit
    /// that was rolled back, or an older one)
    #[arg(long)]
    pub(crate) force: bool,
    /// Follow the rollout until every registered device runs the new revision (with a
    /// progressive rollout: through its stages; exit 1 when it halts or is aborted)
    #[arg(long)]
    pub(crate) wait: bool,
    /// How long `--wait` waits before failing
    #[arg(long, default_value = "5m", value_name = "DURATION")]
    pub(crate) timeout: String,
    /// Sign what each device will run with this ed25519 key (PKCS#8 PEM, from `edgefn
    /// keygen`); default: the file named by EDGEFN_SIGN_KEY_FILE, if set
    #[arg(long, value_name = "FILE")]
    pub(crate) sign_key: Option<PathBuf>,
    /// `none`: every device takes the revision at once, whatever the manifest's `rollout:`
    /// says (default: as the manifest says)
    #[arg(long, value_enum, value_name = "MODE")]
    pub(crate) rollout: Option<RolloutMode>,
    /// Output format
    #[arg(long, value_enum, default_value_t = Output::Text)]
    pub(crate) output: Output,
}

/// `edgefn keygen`.
#[derive(Debug, Args)]
pub(crate) struct KeygenArgs {
    /// Where to write the private key (mode 0600; default: ~/.config/edgefn/signing.key)
    #[arg(long, value_name = "FILE")]
    pub(crate) out: Option<PathBuf>,
    /// Overwrite the file if it exists (the old key is lost)
    #[arg(long)]
    pub(crate) force: bool,
}

/// `edgefn apply --rollout`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub(crate) enum RolloutMode {
    /// No rollout: every device at once
    None,
}

/// `edgefn diff`.
#[derive(Debug, Args)]
pub(crate) struct DiffArgs {
    /// The manifest (default: edgefn.yaml here or in a parent folder)
    #[arg(long, short)]
    pub(crate) file: Option<PathBuf>,
    #[command(flatten)]
    pub(crate) cloud: CloudArgs,
}

/// `edgefn status`.
#[derive(Debug, Args)]
pub(crate) struct StatusArgs {
    /// One device, in detail
    pub(crate) device: Option<String>,
    #[command(flatten)]
    pub(crate) cloud: CloudArgs,
    /// Output format
    #[arg(long, value_enum, default_value_t = Output::Text)]
    pub(crate) output: Output,
}

/// `edgefn history`.
#[derive(Debug, Args)]
pub(crate) struct HistoryArgs {
    /// How many revisions
    #[arg(long, default_value_t = 20)]
    pub(crate) limit: usize,
    #[command(flatten)]
    pub(crate) cloud: CloudArgs,
    /// Output format
    #[arg(long, value_enum, default_value_t = Output::Text)]
    pub(crate) output: Output,
}

/// `edgefn rollback`.
#[derive(Debug, Args)]
pub(crate) struct RollbackArgs {
    /// The revision to return to (default: the one before the latest)
    pub(crate) revision: Option<u64>,
    #[command(flatten)]
    pub(crate) cloud: CloudArgs,
    /// Follow the rollout until every registered device runs it
    #[arg(long)]
    pub(crate) wait: bool,
    /// How long `--wait` waits before failing
    #[arg(long, default_value = "5m", value_name = "DURATION")]
    pub(crate) timeout: String,
    /// Sign the new revision's desired states with this ed25519 key (as `edgefn apply
    /// --sign-key`); default: the file named by EDGEFN_SIGN_KEY_FILE, if set
    #[arg(long, value_name = "FILE")]
    pub(crate) sign_key: Option<PathBuf>,
    /// Output format
    #[arg(long, value_enum, default_value_t = Output::Text)]
    pub(crate) output: Output,
}

/// `edgefn device ...`.
#[derive(Debug, Subcommand)]
pub(crate) enum DeviceCommand {
    /// Register a device and write the one file its agent needs (cloud URL, name, token)
    #[command(
        after_help = "Example:\n  edgefn device add gw-03 --label site=lab --label role=gateway   # writes ~/.config/edgefn/devices/gw-03.yaml"
    )]
    Add(DeviceAddArgs),
    /// List registered devices
    #[command(after_help = "Example:\n  edgefn device list --output json")]
    List(DeviceListArgs),
    /// Remove a device and revoke its token
    #[command(after_help = "Example:\n  edgefn device remove gw-03")]
    Remove(DeviceRemoveArgs),
}

/// `edgefn device add`.
#[derive(Debug, Args)]
pub(crate) struct DeviceAddArgs {
    /// Device name
    pub(crate) name: String,
    /// A label `key=value`, added with the device to edgefn.yaml (repeatable)
    #[arg(long = "label", value_name = "KEY=VALUE")]
    pub(crate) labels: Vec<String>,
    /// Where to write the agent's configuration (it holds the token: mode 0600). Default:
    /// `devices/NAME.yaml` beside the saved login (`~/.config/edgefn/`), outside the project;
    /// a file inside a git work tree is added to its `.gitignore`
    #[arg(long, value_name = "FILE")]
    pub(crate) out: Option<PathBuf>,
    /// The manifest to add the device to (default: edgefn.yaml here or in a parent folder, if any)
    #[arg(long, short)]
    pub(crate) file: Option<PathBuf>,
    /// Overwrite the output file
    #[arg(long)]
    pub(crate) force: bool,
    #[command(flatten)]
    pub(crate) cloud: CloudArgs,
}

/// `edgefn token ...`.
#[derive(Debug, Subcommand)]
pub(crate) enum TokenCommand {
    /// Create an admin token and print it, once (the control plane keeps only its hash)
    #[command(after_help = "Example:\n  edgefn token create ci > ci.token")]
    Create(TokenCreateArgs),
    /// List the admin tokens: ids, names, when created, and which one you use; never a token
    #[command(after_help = "Example:\n  edgefn token list --output json")]
    List(TokenListArgs),
    /// Revoke an admin token at once (not the last one: create another first)
    #[command(after_help = "Example:\n  edgefn token revoke 3f9a0c1d2e4b")]
    Revoke(TokenRevokeArgs),
}

/// `edgefn rollout ...`.
#[derive(Debug, Subcommand)]
pub(crate) enum RolloutCommand {
    /// Show the rollout: state, stage, and each device's stage and state
    #[command(after_help = "Example:\n  edgefn rollout status --output json")]
    Status(RolloutArgs),
    /// Hold the rollout at its stage until resumed (nothing advances, nothing halts)
    #[command(after_help = "Example:\n  edgefn rollout pause")]
    Pause(RolloutArgs),
    /// Continue a paused rollout (its stage's deadline and bake time start again)
    #[command(after_help = "Example:\n  edgefn rollout resume --wait")]
    Resume(RolloutArgs),
    /// End the rollout: every device goes back to the baseline revision
    #[command(after_help = "Example:\n  edgefn rollout abort")]
    Abort(RolloutArgs),
}

/// The arguments of every `edgefn rollout` subcommand.
#[derive(Debug, Args)]
pub(crate) struct RolloutArgs {
    #[command(flatten)]
    pub(crate) cloud: CloudArgs,
    /// Then follow the rollout to its end (exit 1 unless it completes)
    #[arg(long)]
    pub(crate) wait: bool,
    /// How long `--wait` waits before failing
    #[arg(long, default_value = "30m", value_name = "DURATION")]
    pub(crate) timeout: String,
    /// Output format
    #[arg(long, value_enum, default_value_t = Output::Text)]
    pub(crate) output: Output,
}

/// `edgefn secret ...`.
#[derive(Debug, Subcommand)]
pub(crate) enum SecretCommand {
    /// Set a new version of a secret (the value from stdin, or --from-file); when the latest
    /// revision uses it, a new revision rolls it out
    #[command(
        after_help = "The value is at most 64 KiB and not empty. From stdin one trailing newline is removed (what `echo` adds); --from-file takes the file's bytes as they are.\n\nExample:\n  printf %s \"$DB_PASSWORD\" | edgefn secret set db-password --wait\n  edgefn secret set tls-key --from-file key.pem"
    )]
    Set(SecretSetArgs),
    /// List the secrets: names, versions, when set, which functions and bindings use them; never
    /// a value
    #[command(after_help = "Example:\n  edgefn secret list --output json")]
    List(SecretListArgs),
    /// Remove a secret's values (refused while the latest revision uses it)
    #[command(after_help = "Example:\n  edgefn secret rm db-password")]
    Rm(SecretRmArgs),
}

/// `edgefn secret set`.
#[derive(Debug, Args)]
pub(crate) struct SecretSetArgs {
    /// The secret's name (lowercase letters, digits, `-`, `_`), as listed under `secrets:`
    pub(crate) name: String,
    /// Read the value from this file (its exact bytes) instead of stdin
    #[arg(long, value_name = "PATH")]
    pub(crate) from_file: Option<PathBuf>,
    #[command(flatten)]
    pub(crate) cloud: CloudArgs,
    /// Follow the rollout the new version starts until every registered device runs it
    #[arg(long)]
    pub(crate) wait: bool,
    /// How long `--wait` waits before failing
    #[arg(long, default_value = "5m", value_name = "DURATION")]
    pub(crate) timeout: String,
    /// Output format
    #[arg(long, value_enum, default_value_t = Output::Text)]
    pub(crate) output: Output,
}

/// `edgefn secret list`.
#[derive(Debug, Args)]
pub(crate) struct SecretListArgs {
    #[command(flatten)]
    pub(crate) cloud: CloudArgs,
    /// Output format
    #[arg(long, value_enum, default_value_t = Output::Text)]
    pub(crate) output: Output,
}

/// `edgefn secret rm`.
#[derive(Debug, Args)]
pub(crate) struct SecretRmArgs {
    /// The secret's name
    pub(crate) name: String,
    #[command(flatten)]
    pub(crate) cloud: CloudArgs,
}

/// `edgefn token create`.
#[derive(Debug, Args)]
pub(crate) struct TokenCreateArgs {
    /// What it is for (`ci`, `alice`)
    pub(crate) name: String,
    #[command(flatten)]
    pub(crate) cloud: CloudArgs,
    /// Output format
    #[arg(long, value_enum, default_value_t = Output::Text)]
    pub(crate) output: Output,
}

/// `edgefn token list`.
#[derive(Debug, Args)]
pub(crate) struct TokenListArgs {
    #[command(flatten)]
    pub(crate) cloud: CloudArgs,
    /// Output format
    #[arg(long, value_enum, default_value_t = Output::Text)]
    pub(crate) output: Output,
}

/// `edgefn token revoke`.
#[derive(Debug, Args)]
pub(crate) struct TokenRevokeArgs {
    /// The token's id (from `edgefn token list`)
    pub(crate) id: String,
    #[command(flatten)]
    pub(crate) cloud: CloudArgs,
}

/// `edgefn device list`.
#[derive(Debug, Args)]
pub(crate) struct DeviceListArgs {
    #[command(flatten)]
    pub(crate) cloud: CloudArgs,
    /// Output format
    #[arg(long, value_enum, default_value_t = Output::Text)]
    pub(crate) output: Output,
}

/// `edgefn device remove`.
#[derive(Debug, Args)]
pub(crate) struct DeviceRemoveArgs {
    /// Device name
    pub(crate) name: String,
    #[command(flatten)]
    pub(crate) cloud: CloudArgs,
}

/// `edgefn login`.
#[derive(Debug, Args)]
pub(crate) struct LoginArgs {
    /// Control plane URL
    #[arg(long, value_name = "URL")]
    pub(crate) cloud: String,
    /// Admin token (default: read from standard input, so it stays out of the shell history)
    #[arg(long, value_name = "TOKEN")]
    pub(crate) token: Option<String>,
}

/// Sandbox choice, as typed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub(crate) enum SandboxArg {
    /// A process group with rlimits
    Process,
    /// A container with cgroup limits (root on Linux)
    Container,
    /// Container where possible, else process
    Auto,
}

/// `edgefn dev`.
#[derive(Debug, Args)]
pub(crate) struct DevArgs {
    /// The project folder
    #[arg(default_value = ".")]
    pub(crate) dir: PathBuf,
    /// Run only these devices of the manifest (default: all)
    #[arg(long = "device", value_name = "NAME")]
    pub(crate) devices: Vec<String>,
    /// Where functions run
    #[arg(long, value_enum, default_value_t = SandboxArg::Process)]
    pub(crate) sandbox: SandboxArg,
    /// Address of the local control plane
    #[arg(long, default_value = "127.0.0.1:0", value_name = "ADDR")]
    pub(crate) listen: String,
    /// Stop after applying and starting the devices once (for scripts and checks)
    #[arg(long, hide = true)]
    pub(crate) once: bool,
}

/// `edgefn test`.
#[derive(Debug, Args)]
pub(crate) struct TestArgs {
    /// Functions whose cases to run (default: all)
    pub(crate) functions: Vec<String>,
    /// The manifest (default: edgefn.yaml here or in a parent folder)
    #[arg(long, short)]
    pub(crate) file: Option<PathBuf>,
    /// Where functions run
    #[arg(long, value_enum, default_value_t = SandboxArg::Process)]
    pub(crate) sandbox: SandboxArg,
    /// Also write the results as JUnit XML to this file
    #[arg(long, value_name = "FILE")]
    pub(crate) junit: Option<PathBuf>,
    /// Simulate one message on this topic instead of running the cases
    #[arg(long, value_name = "TOPIC", conflicts_with = "functions")]
    pub(crate) topic: Option<String>,
    /// The simulated message's payload (JSON, or else text)
    #[arg(long, value_name = "PAYLOAD", requires = "topic")]
    pub(crate) payload: Option<String>,
    /// The device the simulated message arrives on (default: every device)
    #[arg(long, value_name = "DEVICE", requires = "topic")]
    pub(crate) device: Option<String>,
}

/// `edgefn invoke`.
#[derive(Debug, Args)]
pub(crate) struct InvokeArgs {
    /// The function
    pub(crate) function: String,
    /// The event's payload (JSON, or else text; `@FILE` reads it from a file)
    #[arg(long, value_name = "JSON", default_value = "null")]
    pub(crate) event: String,
    /// The event's topic
    #[arg(long, default_value = "invoke")]
    pub(crate) topic: String,
    /// Run it on this registered device, through the control plane: the function (or binding)
    /// its current desired state runs there, with the logs it wrote
    #[arg(long, value_name = "NAME", conflicts_with_all = ["as_device", "file", "sandbox"])]
    pub(crate) device: Option<String>,
    /// With --device: how long to wait for the device's answer (at most 60s)
    #[arg(
        long,
        value_name = "DURATION",
        default_value = "10s",
        requires = "device"
    )]
    pub(crate) timeout: String,
    /// Run it here as on this device of the manifest (its binding's settings and its values in
    /// `env`; default: the first device its first binding selects)
    #[arg(long, value_name = "NAME")]
    pub(crate) as_device: Option<String>,
    /// The manifest (default: edgefn.yaml here or in a parent folder)
    #[arg(long, short)]
    pub(crate) file: Option<PathBuf>,
    /// Where the function runs
    #[arg(long, value_enum, default_value_t = SandboxArg::Process)]
    pub(crate) sandbox: SandboxArg,
    #[command(flatten)]
    pub(crate) cloud: CloudArgs,
}

/// `edgefn publish`.
#[derive(Debug, Args)]
pub(crate) struct PublishArgs {
    /// DEVICE TOPIC PAYLOAD, or with --label: TOPIC PAYLOAD. The payload is sent as JSON when
    /// it parses as JSON, else as text; `@FILE` reads it from a file
    #[arg(value_name = "DEVICE|TOPIC|PAYLOAD", num_args = 2..=3, required = true)]
    pub(crate) positional: Vec<String>,
    /// Send to every device of the latest manifest with this label `key=value` (repeatable:
    /// all must match) instead of one device
    #[arg(long = "label", value_name = "KEY=VALUE")]
    pub(crate) labels: Vec<String>,
    #[command(flatten)]
    pub(crate) cloud: CloudArgs,
}

/// `edgefn subscribe`.
#[derive(Debug, Args)]
pub(crate) struct SubscribeArgs {
    /// MQTT topic filter on the devices' local topics (`#` for everything)
    pub(crate) topic: String,
    /// Exit after this many messages
    #[arg(long, value_name = "N")]
    pub(crate) count: Option<usize>,
    /// Print each message as a JSON object (device, topic, payload, ts_ms)
    #[arg(long)]
    pub(crate) json: bool,
    /// When the control plane goes away, how long to keep trying to reconnect before failing
    #[arg(long, default_value = "60s", value_name = "DURATION")]
    pub(crate) reconnect_for: String,
    #[command(flatten)]
    pub(crate) cloud: CloudArgs,
}

/// `edgefn logs`.
#[derive(Debug, Args)]
pub(crate) struct LogsArgs {
    /// The device
    pub(crate) device: String,
    /// Only this function's (binding's) lines
    pub(crate) function: Option<String>,
    /// Keep printing new lines as they arrive, until Ctrl-C
    #[arg(long, short)]
    pub(crate) follow: bool,
    /// How many of the last lines to show first (the cloud keeps 1000 per device)
    #[arg(long, default_value_t = 100, value_name = "N")]
    pub(crate) tail: usize,
    /// With --follow: when the control plane goes away, how long to keep trying to reconnect
    #[arg(long, default_value = "60s", value_name = "DURATION")]
    pub(crate) reconnect_for: String,
    #[command(flatten)]
    pub(crate) cloud: CloudArgs,
}

/// `edgefn completions`.
#[derive(Debug, Args)]
pub(crate) struct CompletionsArgs {
    /// The shell to complete for
    #[arg(value_enum)]
    pub(crate) shell: clap_complete::Shell,
}

/// A function runtime, as typed on the command line.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub(crate) enum RuntimeArg {
    /// Python 3: `handle(event, context)` in main.py
    Python3,
    /// Node.js: `exports.handler` in index.js
    Node,
    /// Any executable that speaks the invocation protocol
    Exec,
}

impl From<RuntimeArg> for edgefn_schema::Runtime {
    fn from(r: RuntimeArg) -> Self {
        match r {
            RuntimeArg::Python3 => Self::Python3,
            RuntimeArg::Node => Self::Node,
            RuntimeArg::Exec => Self::Exec,
        }
    }
}

/// Output format of diagnostics.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub(crate) enum Format {
    /// Source snippets with labels, for people
    Human,
    /// One `file:line:col: severity[code]: message` line each, for editors and grep
    Short,
    /// A JSON document, for programs
    Json,
}

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
    pub command: Command,
}

/// The subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
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
    /// Check edgefn.yaml (and the functions' test cases) and report every problem found
    #[command(
        after_help = "Example:\n  edgefn validate\n  edgefn validate -f deploy/edgefn.yaml --format json"
    )]
    Validate(ValidateArgs),
    /// Print a shell completion script
    #[command(
        after_help = "Example:\n  edgefn completions bash > ~/.local/share/bash-completion/completions/edgefn\n  edgefn completions zsh > \"${fpath[1]}/_edgefn\""
    )]
    Completions(CompletionsArgs),
}

/// `edgefn init`.
#[derive(Debug, Args)]
pub struct InitArgs {
    /// Folder to create the project in (created if missing)
    #[arg(default_value = ".")]
    pub dir: PathBuf,
    /// Project name (default: the folder's name)
    #[arg(long)]
    pub name: Option<String>,
    /// Overwrite files that already exist
    #[arg(long)]
    pub force: bool,
}

/// `edgefn new`.
#[derive(Debug, Args)]
pub struct NewArgs {
    /// Function name: lowercase letters, digits, `-` and `_`
    pub name: String,
    /// Language runtime of the function
    #[arg(long, short, value_enum)]
    pub runtime: RuntimeArg,
    /// The manifest to add the function to (default: edgefn.yaml here or in a parent folder)
    #[arg(long, short)]
    pub file: Option<PathBuf>,
    /// Overwrite the function's files if they exist
    #[arg(long)]
    pub force: bool,
}

/// `edgefn validate`.
#[derive(Debug, Args)]
pub struct ValidateArgs {
    /// The manifest (default: edgefn.yaml here or in a parent folder)
    #[arg(long, short)]
    pub file: Option<PathBuf>,
    /// How to print problems
    #[arg(long, value_enum, default_value_t = Format::Human)]
    pub format: Format,
}

/// `edgefn completions`.
#[derive(Debug, Args)]
pub struct CompletionsArgs {
    /// The shell to complete for
    #[arg(value_enum)]
    pub shell: clap_complete::Shell,
}

/// A function runtime, as typed on the command line.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum RuntimeArg {
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
pub enum Format {
    /// Source snippets with labels, for people
    Human,
    /// One `file:line:col: severity[code]: message` line each, for editors and grep
    Short,
    /// A JSON document, for programs
    Json,
}

//! The CLI's errors and the one place that maps them to exit codes.

use std::path::PathBuf;
use std::process::ExitCode;

/// Something a command could not do. Problems in a manifest are not errors of this kind: they
/// are diagnostics, rendered by [`crate::report`], and give [`Outcome::Failed`].
#[derive(Debug, thiserror::Error, miette::Diagnostic)]
pub enum CliError {
    /// No manifest found.
    #[error("no edgefn.yaml in {} or any parent folder", .searched.display())]
    #[diagnostic(
        code(edgefn::cli::no_manifest),
        help("create a project with `edgefn init`, or name the manifest with `-f FILE`")
    )]
    NoManifest {
        /// Where the search started.
        searched: PathBuf,
    },
    /// A file that would be overwritten.
    #[error("{} already exists", .path.display())]
    #[diagnostic(code(edgefn::cli::exists), help("{hint}"))]
    Exists {
        /// The file.
        path: PathBuf,
        /// How to go on.
        hint: String,
    },
    /// A bad argument.
    #[error("{message}")]
    #[diagnostic(code(edgefn::cli::invalid_argument), help("{help}"))]
    InvalidArgument {
        /// What is wrong.
        message: String,
        /// How to fix it.
        help: String,
    },
    /// The control plane refused a request or could not be reached.
    #[error("{message}")]
    #[diagnostic(code(edgefn::cli::cloud), help("{help}"))]
    Cloud {
        /// What went wrong.
        message: String,
        /// How to go on.
        help: String,
        /// The API's error code, when it answered.
        api_code: Option<String>,
    },
    /// A file that is not text edgefn can read (not UTF-8), with where.
    #[error(transparent)]
    #[diagnostic(transparent)]
    Source(SourceProblem),
    /// A file-system operation failed.
    #[error("could not {action} {}", .path.display())]
    #[diagnostic(code(edgefn::cli::io))]
    Io {
        /// What was being done.
        action: &'static str,
        /// To which path.
        path: PathBuf,
        /// Why it failed.
        #[source]
        source: std::io::Error,
    },
}

/// A problem of a file's text ([`edgefn_schema::Diagnostic`]), as an error: rendered with its
/// snippet like any diagnostic.
#[derive(Debug)]
pub struct SourceProblem(pub Box<edgefn_schema::Diagnostic>);

impl std::fmt::Display for SourceProblem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.0.fmt(f)
    }
}

impl std::error::Error for SourceProblem {}

// By hand: `edgefn_schema::Diagnostic` has inherent builder methods (`help`, `labels`' kin)
// that shadow the trait's in derived code.
impl miette::Diagnostic for SourceProblem {
    fn code<'a>(&'a self) -> Option<Box<dyn std::fmt::Display + 'a>> {
        miette::Diagnostic::code(&*self.0)
    }
    fn severity(&self) -> Option<miette::Severity> {
        miette::Diagnostic::severity(&*self.0)
    }
    fn help<'a>(&'a self) -> Option<Box<dyn std::fmt::Display + 'a>> {
        miette::Diagnostic::help(&*self.0)
    }
    fn source_code(&self) -> Option<&dyn miette::SourceCode> {
        miette::Diagnostic::source_code(&*self.0)
    }
    fn labels(&self) -> Option<Box<dyn Iterator<Item = miette::LabeledSpan> + '_>> {
        miette::Diagnostic::labels(&*self.0)
    }
}

impl CliError {
    /// Wraps an I/O error with what was being done.
    pub fn io(
        action: &'static str,
        path: impl Into<PathBuf>,
    ) -> impl FnOnce(std::io::Error) -> Self {
        let path = path.into();
        move |source| CliError::Io {
            action,
            path,
            source,
        }
    }
}

/// The exit code of a command line that does not parse (unknown command or flag, missing
/// argument): `EX_USAGE` from BSD's `sysexits.h`, distinct from every code a command returns.
///
/// | code | meaning |
/// |---|---|
/// | 0 | success |
/// | 1 | failure: invalid input, failed tests, a refused or failed apply, an unreachable control plane |
/// | 2 | `edgefn diff` only: there are changes |
/// | 64 | usage error: the command line itself is wrong |
pub const USAGE_EXIT_CODE: u8 = 64;

/// How a command ended, when it did not fail outright.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// Done.
    Success,
    /// Ran, and found problems (invalid manifest, failed tests).
    Failed,
    /// Ran, and found changes (`edgefn diff`).
    Changes,
}

impl Outcome {
    /// The process exit code.
    pub fn exit_code(self) -> ExitCode {
        match self {
            Outcome::Success => ExitCode::SUCCESS,
            Outcome::Failed => ExitCode::from(1),
            Outcome::Changes => ExitCode::from(2),
        }
    }
}

/// Result of a command.
pub type CliResult<T = Outcome> = Result<T, CliError>;

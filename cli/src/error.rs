//! The CLI's errors and the one place that maps them to exit codes.

use std::path::PathBuf;
use std::process::ExitCode;

/// Something a command could not do. Problems in a manifest are not errors of this kind: they
/// are diagnostics, rendered by [`crate::report`], and give [`Outcome::Failed`].
#[derive(Debug, thiserror::Error, miette::Diagnostic)]
pub(crate) enum CliError {
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
    },
    /// The control plane could not be reached, or did not answer in time. The message names its
    /// cause: the last link of `source`'s chain (the earlier ones repeat the URL and layer names).
    #[error("cannot reach the control plane at {base}: {}", unreachable_cause(.source))]
    #[diagnostic(code(edgefn::cli::cloud), help("{}", unreachable_help(.source)))]
    Unreachable {
        /// The control plane's URL.
        base: String,
        /// Why.
        #[source]
        source: reqwest::Error,
    },
    /// The control plane answered 2xx with a body this edgefn cannot read.
    #[error("the control plane sent an answer this edgefn does not understand: {source}")]
    #[diagnostic(
        code(edgefn::cli::cloud),
        help("use an edgefn of the same version as edgefn-cloud")
    )]
    BadAnswer {
        /// Why the body does not decode.
        #[source]
        source: serde_json::Error,
    },
    /// The manifest could not be edited automatically (`edgefn new`, `edgefn device add`).
    #[error("{source}")]
    #[diagnostic(code(edgefn::cli::invalid_argument), help("{help}"))]
    Edit {
        /// Why.
        #[source]
        source: crate::edit::EditError,
        /// How to make the edit by hand.
        help: String,
    },
    /// Something could not be done for a reason another error gives: `CONTEXT: SOURCE`, or
    /// `SOURCE` alone when there is no context.
    #[error("{}", with_context(.context, .source))]
    #[diagnostic(code(edgefn::cli::invalid_argument), help("{help}"))]
    Failed {
        /// What was being done, or what was wrong (may be empty).
        context: String,
        /// How to go on (may be empty).
        help: String,
        /// Why.
        #[source]
        source: Cause,
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
pub(crate) struct SourceProblem(pub Box<edgefn_schema::Diagnostic>);

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

/// Any error kept as a cause, whole: its own sources with it.
pub(crate) type Cause = Box<dyn std::error::Error + Send + Sync + 'static>;

fn with_context(context: &str, source: &Cause) -> String {
    if context.is_empty() {
        source.to_string()
    } else {
        format!("{context}: {source}")
    }
}

/// The last link of an HTTP error's chain (the refused connection, the certificate problem), or
/// that it timed out.
fn unreachable_cause(e: &reqwest::Error) -> String {
    if e.is_timeout() {
        return "it did not answer in time".to_owned();
    }
    let mut root: &dyn std::error::Error = e;
    while let Some(s) = root.source() {
        root = s;
    }
    root.to_string()
}

fn unreachable_help(e: &reqwest::Error) -> &'static str {
    if unreachable_cause(e).contains("certificate") {
        "if the control plane's certificate comes from a private CA, set EDGEFN_CA_CERT to that CA's certificate (PEM)"
    } else {
        "check the URL (--cloud, EDGEFN_CLOUD) and that edgefn-cloud is running"
    }
}

/// What a report shows below an error's message: the rest of its chain of causes, from the
/// first link whose text the message does not already contain (a message that ends
/// `…: {source}` has said its cause; one like [`CliError::Io`]'s has not).
pub(crate) fn unsaid_causes<'a>(
    err: &'a (dyn std::error::Error + 'static),
) -> Option<&'a (dyn std::error::Error + 'static)> {
    let message = err.to_string();
    let mut rest = err.source();
    let mut link = rest;
    while let Some(cause) = link {
        let text = cause.to_string();
        if !text.is_empty() && message.contains(&text) {
            rest = cause.source();
        }
        link = cause.source();
    }
    rest
}

impl CliError {
    /// Wraps another error as [`CliError::Failed`].
    pub(crate) fn failed(
        context: impl Into<String>,
        help: impl Into<String>,
        source: impl Into<Cause>,
    ) -> Self {
        CliError::Failed {
            context: context.into(),
            help: help.into(),
            source: source.into(),
        }
    }

    /// Wraps an I/O error with what was being done.
    pub(crate) fn io(
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
pub(crate) enum Outcome {
    /// Done.
    Success,
    /// Ran, and found problems (invalid manifest, failed tests).
    Failed,
    /// Ran, and found changes (`edgefn diff`).
    Changes,
}

impl Outcome {
    /// The process exit code.
    pub(crate) fn exit_code(self) -> ExitCode {
        match self {
            Outcome::Success => ExitCode::SUCCESS,
            Outcome::Failed => ExitCode::from(1),
            Outcome::Changes => ExitCode::from(2),
        }
    }
}

/// Result of a command.
pub(crate) type CliResult<T = Outcome> = Result<T, CliError>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_cause_the_message_says_is_not_repeated_but_kept() {
        // `Io` says what was being done; its cause is shown below it.
        let io = CliError::Io {
            action: "read",
            path: "x".into(),
            source: std::io::Error::other("disk on fire"),
        };
        let shown = unsaid_causes(&io).map(ToString::to_string);
        assert_eq!(shown.as_deref(), Some("disk on fire"));
        // `Failed` says its cause in its message: nothing is repeated, and the chain is kept.
        let failed = CliError::failed("cannot start `f`", "", std::io::Error::other("no python"));
        assert_eq!(failed.to_string(), "cannot start `f`: no python");
        assert!(unsaid_causes(&failed).is_none());
        let source = std::error::Error::source(&failed).expect("kept");
        assert_eq!(source.to_string(), "no python");
        // A cause of the cause that the message does not say is still shown.
        let nested = CliError::failed(
            "outer",
            "",
            CliError::Io {
                action: "open",
                path: "y".into(),
                source: std::io::Error::other("gone"),
            },
        );
        assert_eq!(nested.to_string(), "outer: could not open y");
        assert_eq!(
            unsaid_causes(&nested).map(ToString::to_string).as_deref(),
            Some("gone")
        );
    }
}

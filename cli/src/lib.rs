//! The `edgefn` command line: scaffolding, validation and (as later issues land) testing,
//! packaging and applying projects.
//!
//! `main.rs` only parses arguments and calls [`run`]; each subcommand lives in `commands/`, one
//! module per command, and no command uses another: what several share is a module beside
//! `commands/` (the control-plane client, submitting and following a revision, the `edgefn dev`
//! session file, the project on disk, packaging, function output, reports). Nothing but [`Cli`],
//! [`run`] and [`USAGE_EXIT_CODE`] is public: the binary is this library's only user.

// The CLI's job is to print.
#![allow(clippy::print_stdout, clippy::print_stderr)]

pub(crate) mod args;
pub(crate) mod client;
pub(crate) mod commands;
pub(crate) mod drift;
pub(crate) mod edit;
pub(crate) mod error;
pub(crate) mod function_output;
pub(crate) mod human;
pub(crate) mod layers;
pub(crate) mod local_secrets;
pub(crate) mod models;
pub(crate) mod package;
pub(crate) mod payload;
pub(crate) mod progressive;
pub(crate) mod project;
pub(crate) mod provenance;
pub(crate) mod report;
pub(crate) mod rollout;
pub(crate) mod scaffold;
pub(crate) mod session;
pub(crate) mod signing;

pub use args::Cli;
pub use error::USAGE_EXIT_CODE;

/// Runs a parsed command line, printing errors; returns the process exit code.
pub fn run(cli: Cli) -> std::process::ExitCode {
    match commands::run(cli) {
        Ok(outcome) => outcome.exit_code(),
        Err(err) => {
            let handler = miette::GraphicalReportHandler::new_themed(if report::stderr_color() {
                miette::GraphicalTheme::unicode()
            } else {
                miette::GraphicalTheme::unicode_nocolor()
            })
            .with_links(false)
            .with_width(report::width());
            let mut out = String::new();
            let _ = handler.render_report(&mut out, &Shown(&err));
            eprint!("{out}");
            std::process::ExitCode::from(1)
        }
    }
}

/// An error as shown: a help that says nothing (empty) is left out rather than printed as an
/// empty `help:` line, and causes its message already says are not repeated below it
/// ([`error::unsaid_causes`]).
struct Shown<'a>(&'a error::CliError);

impl std::fmt::Debug for Shown<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        std::fmt::Debug::fmt(self.0, f)
    }
}

impl std::fmt::Display for Shown<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        std::fmt::Display::fmt(self.0, f)
    }
}

impl std::error::Error for Shown<'_> {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        error::unsaid_causes(self.0)
    }
}

impl miette::Diagnostic for Shown<'_> {
    fn code<'b>(&'b self) -> Option<Box<dyn std::fmt::Display + 'b>> {
        self.0.code()
    }

    fn help<'b>(&'b self) -> Option<Box<dyn std::fmt::Display + 'b>> {
        let help = self.0.help()?;
        if help.to_string().trim().is_empty() {
            None
        } else {
            Some(help)
        }
    }

    fn severity(&self) -> Option<miette::Severity> {
        self.0.severity()
    }

    fn url<'b>(&'b self) -> Option<Box<dyn std::fmt::Display + 'b>> {
        self.0.url()
    }

    fn source_code(&self) -> Option<&dyn miette::SourceCode> {
        self.0.source_code()
    }

    fn labels(&self) -> Option<Box<dyn Iterator<Item = miette::LabeledSpan> + '_>> {
        self.0.labels()
    }

    fn related<'b>(&'b self) -> Option<Box<dyn Iterator<Item = &'b dyn miette::Diagnostic> + 'b>> {
        self.0.related()
    }

    fn diagnostic_source(&self) -> Option<&dyn miette::Diagnostic> {
        self.0.diagnostic_source()
    }
}

//! The `edgefn` command line: scaffolding, validation and (as later issues land) testing,
//! packaging and applying projects.
//!
//! `main.rs` only parses arguments and calls [`run`]; each subcommand lives in [`commands`].

// The CLI's job is to print.
#![allow(clippy::print_stdout, clippy::print_stderr)]

pub mod args;
pub mod client;
pub mod commands;
pub mod drift;
pub mod edit;
pub mod error;
pub mod package;
pub mod project;
pub mod provenance;
pub mod report;
pub mod rollout;
pub mod scaffold;

pub use args::Cli;
pub use error::{CliError, Outcome};

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
            let _ = handler.render_report(&mut out, &err);
            eprint!("{out}");
            std::process::ExitCode::from(1)
        }
    }
}

//! What edgefn's programs (the CLI, the control plane, the agent) ask of the operating system,
//! written once so that every side follows the same rules.
//!
//! - [`file`]: whole-or-nothing writes with the file's mode set when it is created.

pub mod file;

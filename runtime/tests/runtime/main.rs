//! End-to-end tests of the runtime with real processes (and, as root, real containers).

mod common;
mod continuous;
mod pool;
mod shims;

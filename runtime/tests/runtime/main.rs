//! End-to-end tests of the runtime with real processes (and, as root, real containers).

mod common;
mod container;
mod continuous;
mod hostile;
mod layers;
mod models;
mod plain;
mod pool;
mod shims;

//! The edgefn device agent: polls the control plane, updates itself with an atomic switchover and
//! health-gated rollback, runs functions through `edgefn-runtime`, and routes messages.
//!
//! Not built yet: this crate is filled by issue #5.

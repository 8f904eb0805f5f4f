//! Runs edgefn functions: the invocation protocol, the python3 and node shims, the process and
//! container sandboxes, the warm pool and the continuous supervisor.
//!
//! Not built yet: this crate is filled by issue #3. It exports nothing, so nothing can mistake it
//! for a working runtime.

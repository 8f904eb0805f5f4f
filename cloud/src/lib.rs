//! The edgefn control plane: stores revisions and bundles, serves each device its desired state,
//! and embeds an MQTT broker for single-machine use.
//!
//! Not built yet: this crate is filled by issue #4.

//! The edgefn manifest (`edgefn.yaml`): its types, parsing with source positions, validation
//! with compiler-grade diagnostics, and per-device desired-state resolution.
//!
//! This crate does no I/O beyond reading the bytes it is given: the project's files are reached
//! through [`ProjectFiles`], implemented by the caller.
//!
//! ```
//! use edgefn_schema::{Source, load};
//! let src = Source::new("edgefn.yaml", "apiVersion: edgefn/v1\nproject: demo\n");
//! let loaded = load(&src, None).expect("valid");
//! assert_eq!(loaded.manifest.project, "demo");
//! ```

pub mod api;
pub mod bundle;
pub mod conformance;
pub mod console;
mod decode;
pub mod dev_session;
pub mod diagnostic;
pub mod edit;
pub mod load;
pub mod manifest;
pub mod mqtt_url;
pub mod quantity;
pub mod resolve;
#[cfg(feature = "signing")]
pub mod signing;
pub mod source;
pub mod testcase;
pub mod topic;
pub mod vars;
pub mod wire;
pub mod yaml;

pub use diagnostic::{Code, Diagnostic, Diagnostics, Severity};
pub use load::{EntryKind, Loaded, NoFiles, ProjectFiles, load};
pub use manifest::{
    API_VERSION, Binding, Device, DeviceSelector, Function, Gpu, Handler, Interface, Manifest,
    Mode, Model, Platform, Rollout, RolloutStage, Route, RouteTarget, Runtime, Trigger,
};
pub use mqtt_url::{MqttUrl, MqttUrlError};
pub use quantity::{Cpu, Duration, FailureThreshold, Memory};
pub use resolve::{
    DesiredState, Layers, ModelArtifact, ModelKind, Models, ResolvedBinding, ResolvedFunction,
    ResolvedRoute, defaults_binding, resolve, resolve_with_layers, resolve_with_models,
};
pub use source::{Source, Span};

/// The manifest's JSON Schema, generated from [`Manifest`].
pub fn json_schema() -> String {
    let mut schema = schemars::schema_for!(Manifest);
    schema.insert("$id".into(), serde_json::Value::String(SCHEMA_URL.into()));
    let mut text = serde_json::to_string_pretty(&schema).expect("schema serializes");
    text.push('\n');
    text
}

/// Where editors find the schema (the checked-in `schema/edgefn.schema.json`).
pub const SCHEMA_URL: &str =
    "https://raw.githubusercontent.com/edgefn/edgefn/main/schema/edgefn.schema.json";

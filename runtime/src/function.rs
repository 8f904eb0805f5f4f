//! What the runtime runs ([`FunctionSpec`]) and what crosses it ([`Event`], [`Reply`],
//! [`Message`]).

use std::collections::BTreeMap;
use std::path::PathBuf;

use edgefn_schema::{Handler, Interface, ResolvedBinding, Runtime};

use crate::protocol::{Payload, WireMessage};

/// One function as bound on one device: everything needed to start its instances.
#[derive(Debug, Clone)]
pub struct FunctionSpec {
    /// The binding with effective limits (concurrency, timeout, memory, CPU, env).
    pub binding: ResolvedBinding,
    /// Language runtime.
    pub runtime: Runtime,
    /// Entry point (`module.func`, `file.export`, or an argv).
    pub handler: Handler,
    /// How an exec function takes events: the framed protocol, or a plain program (stdin and
    /// stdout, per event or in lines).
    pub interface: Interface,
    /// The function's extracted bundle: the instance's working folder (`/fn` in a container).
    pub bundle_dir: PathBuf,
    /// The function's extracted dependency layer, when it has one: on python's search path
    /// (`PYTHONPATH`, after the bundle) or node's (`NODE_PATH`, its `node_modules/`); bound
    /// read-only at `/layer` in a container.
    pub layer_dir: Option<PathBuf>,
    /// Device name, passed to the function.
    pub device: String,
    /// Revision of the desired state, passed to the function.
    pub revision: u64,
    /// The folder holding the binding's secrets, one file per secret (a private folder on a
    /// memory file system): bound read-only at `/run/secrets` in a container, named by
    /// `EDGEFN_SECRETS_DIR` in the process sandbox. Never passed as environment values.
    pub secrets_dir: Option<PathBuf>,
    /// The models the binding names: name → the model's file or folder on the host. Each is
    /// named by `EDGEFN_MODEL_<NAME>` ([`edgefn_schema::Model::env_var`]); in a container it
    /// is bound read-only at `/models/NAME` and the variables point there. Only these are
    /// visible in a container.
    pub models: BTreeMap<String, PathBuf>,
    /// A folder whose entries, named after the models, are (links to) exactly the models in
    /// [`FunctionSpec::models`]: `EDGEFN_MODELS_DIR` in the process sandbox (a container gets
    /// `/models`). `None` when there are no models.
    pub models_dir: Option<PathBuf>,
}

/// Where a function's models are inside a container: one entry per model, read-only.
pub(crate) const MODELS_MOUNT: &str = "/models";

/// The environment variable naming the folder of a function's models.
pub(crate) const MODELS_DIR_ENV: &str = "EDGEFN_MODELS_DIR";

/// Where a function's secrets are inside a container: one file per secret, read-only.
pub const SECRETS_MOUNT: &str = "/run/secrets";

/// The environment variable naming the folder of a function's secrets.
pub const SECRETS_DIR_ENV: &str = "EDGEFN_SECRETS_DIR";

impl FunctionSpec {
    /// The function's name.
    pub fn function(&self) -> &str {
        &self.binding.function
    }
}

/// A message arriving for a function.
#[derive(Debug, Clone, PartialEq)]
pub struct Event {
    /// Topic it arrived on.
    pub topic: String,
    /// Its payload.
    pub payload: Payload,
}

impl Event {
    /// An event with a JSON payload.
    pub fn json(topic: impl Into<String>, payload: serde_json::Value) -> Event {
        Event {
            topic: topic.into(),
            payload: Payload::Json(payload),
        }
    }
}

/// A message a function publishes.
#[derive(Debug, Clone, PartialEq)]
pub struct Message {
    /// Topic to publish to.
    pub topic: String,
    /// Its payload.
    pub payload: Payload,
}

impl Message {
    pub(crate) fn from_wire(m: WireMessage) -> Result<Message, crate::protocol::ProtocolError> {
        Ok(Message {
            topic: m.topic,
            payload: Payload::from_wire(m.payload, m.encoding)?,
        })
    }
}

/// A successful invocation's outcome.
#[derive(Debug, Clone, PartialEq)]
pub struct Reply {
    /// What the handler returned.
    pub result: Payload,
    /// Messages it published, in order.
    pub publish: Vec<Message>,
}

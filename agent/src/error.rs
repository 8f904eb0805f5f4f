//! Why the agent stops: each cause keeps its source error.

use crate::cloud::CloudError;

/// Why the agent stopped.
#[derive(Debug, thiserror::Error)]
pub enum AgentError {
    /// The data folder is unusable.
    #[error(transparent)]
    Layout(#[from] crate::layout::LayoutError),
    /// The data folder's path cannot be made absolute.
    #[error("data folder {}: {source}", .path.display())]
    DataFolder {
        /// The configured folder.
        path: std::path::PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The cloud refused the token.
    #[error(transparent)]
    Rejected(CloudError),
    /// The sandbox cannot be set up.
    #[error("sandbox: {0}")]
    Sandbox(#[source] edgefn_runtime::SandboxError),
    /// The sandbox's setup did not finish (it panicked).
    #[error("sandbox setup: {0}")]
    Join(#[source] tokio::task::JoinError),
    /// The control plane's CA cannot be used.
    #[error(transparent)]
    Tls(#[from] crate::cloud::CaError),
    /// The outbox cannot be opened.
    #[error(transparent)]
    Outbox(#[from] crate::outbox::OutboxError),
}

//! What the agent benchmarks share.

/// The agent binary measured: this build's, or the one `EDGEFN_AGENT_BIN` names (e.g. the
/// static build `scripts/package-agent.sh` makes).
pub(crate) fn agent_bin() -> std::path::PathBuf {
    std::env::var_os("EDGEFN_AGENT_BIN")
        .filter(|b| !b.is_empty())
        .map_or_else(
            || env!("CARGO_BIN_EXE_edgefn-agent").into(),
            std::path::PathBuf::from,
        )
}

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

/// One HTTP/1.1 request on a fresh connection: the status and the body.
#[allow(clippy::unwrap_used, dead_code)] // A bench: a failure is a panic; not every bench uses it.
pub(crate) fn http(
    addr: &str,
    method: &str,
    path: &str,
    token: Option<&str>,
    body: &[u8],
) -> (u16, Vec<u8>) {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(addr).unwrap();
    let mut req = format!(
        "{method} {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\nContent-Type: application/json\r\nContent-Length: {}\r\n",
        body.len()
    );
    if let Some(t) = token {
        req.push_str(&format!("Authorization: Bearer {t}\r\n"));
    }
    req.push_str("\r\n");
    s.write_all(req.as_bytes()).unwrap();
    s.write_all(body).unwrap();
    let mut raw = Vec::new();
    s.read_to_end(&mut raw).unwrap();
    let split = raw.windows(4).position(|w| w == b"\r\n\r\n").unwrap();
    let status = String::from_utf8_lossy(&raw[9..12]).parse().unwrap();
    (status, raw[split + 4..].to_vec())
}

/// A control plane served by `rt` with its data under `data`: its `host:port` and admin token.
#[allow(clippy::unwrap_used, dead_code)] // A bench: a failure is a panic; not every bench uses it.
pub(crate) fn control_plane(
    rt: &tokio::runtime::Runtime,
    data: &std::path::Path,
) -> (String, String) {
    let config = edgefn_cloud::Config {
        data: data.join("cloud"),
        admin_token_file: Some(data.join("admin.token")),
        secret_key_file: None,
        objects: None,
    };
    let prepared = edgefn_cloud::prepare(&config).unwrap();
    let listener = rt
        .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
        .unwrap();
    let cloud = listener.local_addr().unwrap().to_string();
    rt.spawn(edgefn_cloud::serve(
        prepared,
        listener,
        std::future::pending(),
    ));
    let admin = std::fs::read_to_string(data.join("admin.token"))
        .unwrap()
        .trim()
        .to_owned();
    (cloud, admin)
}

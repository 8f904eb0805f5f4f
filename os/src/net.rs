//! Listening sockets for servers that hold many connections.
//!
//! `std::net::TcpListener::bind` and tokio's `TcpListener::bind` call listen(2) with a backlog
//! of 128, so when thousands of devices reconnect at once (a control-plane replica restarts or
//! fails over) the kernel's accept queue overflows and SYNs are dropped: each dropped device
//! waits a TCP retransmission timeout (1 s, then 3 s) before trying again. [`listen`] asks for
//! [`BACKLOG`] as nginx (511), Go (`somaxconn`) and HAProxy (`maxconn`) do; Linux caps it at
//! `/proc/sys/net/core/somaxconn` (4,096 by default since Linux 5.4).

use std::net::SocketAddr;

use socket2::{Domain, Socket, Type};

/// The accept-queue length asked of listen(2): connections the kernel completes before the
/// server accepts them. The kernel lowers it to `net.core.somaxconn`.
pub const BACKLOG: i32 = 4096;

/// A TCP listener on `addr` with `SO_REUSEADDR` (as std sets it on Unix, so a restarted server
/// binds again at once) and a backlog of [`BACKLOG`]. The listener is blocking, as std's is;
/// set it non-blocking before handing it to an async runtime.
///
/// # Errors
///
/// What socket(2), bind(2) or listen(2) give, e.g. `AddrInUse` or `PermissionDenied` (a port
/// below 1024 without `CAP_NET_BIND_SERVICE`).
pub fn listen(addr: SocketAddr) -> std::io::Result<std::net::TcpListener> {
    let socket = Socket::new(Domain::for_address(addr), Type::STREAM, None)?;
    socket.set_reuse_address(true)?;
    socket.bind(&addr.into())?;
    socket.listen(BACKLOG)?;
    Ok(socket.into())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{Read, Write};

    #[test]
    fn a_listener_accepts_and_reports_the_port_it_got() {
        let l = listen("127.0.0.1:0".parse().unwrap()).unwrap();
        let addr = l.local_addr().unwrap();
        assert_ne!(addr.port(), 0);
        let mut c = std::net::TcpStream::connect(addr).unwrap();
        c.write_all(b"hi").unwrap();
        let (mut s, _) = l.accept().unwrap();
        let mut got = [0u8; 2];
        s.read_exact(&mut got).unwrap();
        assert_eq!(&got, b"hi");
    }

    #[test]
    fn more_connections_than_stds_backlog_wait_in_the_queue() {
        // Nobody accepts: std's backlog of 128 would leave the rest in SYN retransmission, so
        // connect() with a short timeout fails for them. With BACKLOG they all complete.
        let l = listen("127.0.0.1:0".parse().unwrap()).unwrap();
        let addr = l.local_addr().unwrap();
        let held: Vec<_> = (0..300)
            .map(|i| {
                std::net::TcpStream::connect_timeout(&addr, std::time::Duration::from_millis(500))
                    .unwrap_or_else(|e| panic!("connection {i} not queued: {e}"))
            })
            .collect();
        assert_eq!(held.len(), 300);
    }

    #[test]
    fn an_address_in_use_is_an_error() {
        let l = listen("127.0.0.1:0".parse().unwrap()).unwrap();
        let err = listen(l.local_addr().unwrap()).unwrap_err();
        assert_eq!(err.kind(), std::io::ErrorKind::AddrInUse);
    }
}

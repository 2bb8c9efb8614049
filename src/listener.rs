//! Listening sockets: bound from `server.listeners`, or adopted from systemd
//! when a passed socket's `FileDescriptorName` equals a listener id.

use crate::config::{Config, Listener, Protocol, SocketSettings};
use crate::systemd::PassedSocket;
use socket2::{Domain, Socket, Type};
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::Duration;

/// One listening socket of one listener.
pub struct Open {
    pub id: String,
    pub protocol: Protocol,
    pub local: SocketAddr,
    pub socket: std::net::TcpListener,
    /// Whether systemd passed it (then it is not ours to bind again on reload).
    pub adopted: bool,
}

/// Opens every listener: adopts passed sockets by name, binds the rest.
pub fn open_all(config: &Config, passed: Vec<PassedSocket>) -> Result<Vec<Open>, String> {
    let listeners = &config.server.listeners;
    let mut by_name: BTreeMap<String, Vec<PassedSocket>> = BTreeMap::new();
    for p in passed {
        by_name.entry(p.name.clone()).or_default().push(p);
    }
    if let Some(unknown) = by_name.keys().find(|n| !listeners.contains_key(*n)) {
        let known: Vec<&str> = listeners.keys().map(String::as_str).collect();
        return Err(format!(
            "systemd passed a socket named '{unknown}', but no listener has that id (listeners: {}); set FileDescriptorName= to a listener id",
            known.join(", ")
        ));
    }
    let mut out = Vec::new();
    for (id, l) in listeners {
        let socket_opts = l.socket.over(&config.server.socket);
        match by_name.remove(id) {
            Some(passed) => {
                for p in passed {
                    out.push(adopt(id, l, p, &socket_opts)?);
                }
            }
            None => {
                for addr in &l.bind.0 {
                    let socket = bind(*addr, &socket_opts).map_err(|e| {
                        format!("server.listeners.{id}: cannot listen on {addr}: {e}")
                    })?;
                    out.push(Open {
                        id: id.clone(),
                        protocol: l.protocol,
                        local: socket.local_addr().unwrap_or(*addr),
                        socket,
                        adopted: false,
                    });
                }
            }
        }
    }
    Ok(out)
}

fn adopt(id: &str, l: &Listener, p: PassedSocket, opts: &SocketSettings) -> Result<Open, String> {
    let socket = Socket::from(p.fd);
    let kind = socket
        .r#type()
        .map_err(|e| format!("socket '{id}' from systemd: {e}"))?;
    if kind != Type::STREAM {
        return Err(format!(
            "socket '{id}' from systemd is not a stream socket (ListenStream=)"
        ));
    }
    let listening = socket.is_listener().unwrap_or(true);
    if !listening {
        return Err(format!(
            "socket '{id}' from systemd is not listening (Accept=no is required)"
        ));
    }
    // Options that make sense after bind; address reuse and backlog were
    // systemd's to set (ReuseAddress=, Backlog=).
    apply_common(&socket, opts).map_err(|e| format!("socket '{id}' from systemd: {e}"))?;
    let local = socket
        .local_addr()
        .ok()
        .and_then(|a| a.as_socket())
        .ok_or_else(|| format!("socket '{id}' from systemd is not an IP socket"))?;
    tracing::info!(listener = id, %local, "adopted socket from systemd");
    Ok(Open {
        id: id.to_string(),
        protocol: l.protocol,
        local,
        socket: socket.into(),
        adopted: true,
    })
}

fn bind(addr: SocketAddr, opts: &SocketSettings) -> std::io::Result<std::net::TcpListener> {
    let socket = Socket::new(Domain::for_address(addr), Type::STREAM, None)?;
    if addr.is_ipv6() {
        // "[::]:25" should mean IPv6 only; IPv4 gets its own bind address.
        socket.set_only_v6(true)?;
    }
    socket.set_reuse_address(opts.reuse_addr.unwrap_or(true))?;
    if opts.reuse_port.unwrap_or(false) {
        socket.set_reuse_port(true)?;
    }
    apply_common(&socket, opts)?;
    socket.bind(&addr.into())?;
    socket.listen(opts.backlog.unwrap_or(1024).min(i32::MAX as u32) as i32)?;
    Ok(socket.into())
}

/// Options inherited by accepted connections.
fn apply_common(socket: &Socket, opts: &SocketSettings) -> std::io::Result<()> {
    if let Some(ttl) = opts.ttl {
        socket
            .set_ttl_v4(ttl)
            .or_else(|_| socket.set_unicast_hops_v6(ttl))?;
    }
    if let Some(tos) = opts.tos {
        // Only meaningful for IPv4; ignore on IPv6 sockets.
        let _ = socket.set_tos_v4(tos);
    }
    if let Some(linger) = opts.linger {
        socket.set_linger(Some(linger.as_std()))?;
    }
    if let Some(size) = opts.send_buffer_size {
        socket.set_send_buffer_size(size)?;
    }
    if let Some(size) = opts.recv_buffer_size {
        socket.set_recv_buffer_size(size)?;
    }
    Ok(())
}

/// Per-connection options on an accepted stream.
pub fn tune_accepted(stream: &tokio::net::TcpStream, opts: &SocketSettings) {
    let _ = stream.set_nodelay(opts.nodelay.unwrap_or(true));
    if let Some(linger) = opts.linger {
        let _ = socket2::SockRef::from(stream).set_linger(Some(Duration::from(linger.as_std())));
    }
}

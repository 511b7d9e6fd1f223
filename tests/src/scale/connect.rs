//! Opening a thousand connections between the namespaces without overflowing
//! B's listen queues, and the process and namespace limits that takes.

use std::collections::HashMap;
use std::io;
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::thread;
use std::time::Instant;

use socket2::SockRef;

use crate::netns::Netns;
use crate::sockets::{Conn, Family};
use crate::timing::{ACCEPT_TIMEOUT, POLL_INTERVAL};

/// Backlog requested for the listeners (the kernel caps it at
/// `net.core.somaxconn` of B, 4096 by default).
pub const LISTEN_BACKLOG: u32 = 1024;
/// Connections opened before their server ends are accepted. Must fit in
/// the listen backlog, or SYNs are dropped and connects stall for seconds.
pub const CONNECT_BATCH: usize = 100;

/// Raises RLIMIT_NOFILE of this process to at least `min` (root may raise
/// the hard limit too).
pub fn ensure_nofile_limit(min: u64) {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit(2) writes into the live `lim`.
    let rc = unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) };
    assert!(rc == 0, "getrlimit: {}", io::Error::last_os_error());
    if lim.rlim_cur >= min as libc::rlim_t {
        return;
    }
    let raised = libc::rlimit {
        rlim_cur: min as libc::rlim_t,
        rlim_max: lim.rlim_max.max(min as libc::rlim_t),
    };
    // SAFETY: setrlimit(2) reads the live `raised`.
    let rc = unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &raised) };
    assert!(
        rc == 0,
        "setrlimit(RLIMIT_NOFILE, {min}) from {}/{}: {}",
        lim.rlim_cur,
        lim.rlim_max,
        io::Error::last_os_error()
    );
}

/// A sysctl of the namespace (`net.core.somaxconn` as `net/core/somaxconn`).
pub fn sysctl(ns: &Netns, path: &str) -> u64 {
    let out = ns.cmd(&["cat", &format!("/proc/sys/{path}")]);
    out.trim()
        .parse()
        .unwrap_or_else(|e| panic!("{path} in {}: {out:?}: {e}", ns.name()))
}

fn relisten(l: &TcpListener, backlog: u32) {
    let backlog = i32::try_from(backlog).expect("backlog fits in c_int");
    // listen(2) again on a listening socket only updates its backlog.
    SockRef::from(l)
        .listen(backlog)
        .unwrap_or_else(|e| panic!("listen({backlog}): {e}"));
}

/// Accepts `n` connections from `listeners` (non-blocking), keyed by peer.
fn accept_n(listeners: &[(Family, TcpListener)], n: usize) -> HashMap<SocketAddr, TcpStream> {
    let mut accepted = HashMap::with_capacity(n);
    let deadline = Instant::now() + ACCEPT_TIMEOUT;
    while accepted.len() < n {
        let mut progress = false;
        for (_, l) in listeners {
            match l.accept() {
                Ok((stream, peer)) => {
                    stream
                        .set_nonblocking(false)
                        .expect("blocking server socket");
                    assert!(accepted.insert(peer, stream).is_none(), "peer {peer} twice");
                    progress = true;
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                Err(e) => panic!("accept: {e}"),
            }
        }
        if !progress {
            assert!(
                Instant::now() < deadline,
                "accepted only {} of {n} connections of a batch within {ACCEPT_TIMEOUT:?}",
                accepted.len()
            );
            thread::sleep(POLL_INTERVAL);
        }
    }
    accepted
}

/// Opens `v4` IPv4 then `v6` IPv6 connections from A to listeners in B,
/// [`CONNECT_BATCH`] at a time, accepting each batch before the next, so the
/// listen queues never overflow.
pub fn open_many(a: &Netns, b: &Netns, v4: usize, v6: usize) -> Vec<Conn> {
    let somaxconn = sysctl(b, "net/core/somaxconn");
    let backlog = u64::from(LISTEN_BACKLOG).min(somaxconn);
    assert!(
        CONNECT_BATCH as u64 <= backlog,
        "a batch of {CONNECT_BATCH} connections does not fit in the listen backlog \
         (min({LISTEN_BACKLOG}, net.core.somaxconn {somaxconn}))"
    );
    let listeners: Vec<(Family, TcpListener)> = b.run_in(|| {
        Family::ALL
            .iter()
            .map(|&f| {
                let l = TcpListener::bind(SocketAddr::new(f.b_addr(), 0))
                    .unwrap_or_else(|e| panic!("bind {f} listener: {e}"));
                relisten(&l, LISTEN_BACKLOG);
                l.set_nonblocking(true).expect("nonblocking listener");
                (f, l)
            })
            .collect()
    });
    let target = |f: Family| -> SocketAddr {
        let (_, l) = listeners.iter().find(|(lf, _)| *lf == f).expect("listener");
        l.local_addr().expect("listener address")
    };
    let families: Vec<Family> = std::iter::repeat_n(Family::Ipv4, v4)
        .chain(std::iter::repeat_n(Family::Ipv6, v6))
        .collect();
    // Sockets keep the namespace they were created in: connect from a thread
    // in A, accept (on B's listeners) from the same thread.
    a.run_in(|| {
        let mut conns = Vec::with_capacity(families.len());
        for batch in families.chunks(CONNECT_BATCH) {
            let clients: Vec<(Family, TcpStream)> = batch
                .iter()
                .map(|&f| (f, crate::sockets::connect_with_retry(target(f))))
                .collect();
            let mut servers = accept_n(&listeners, clients.len());
            for (family, client) in clients {
                let local = client.local_addr().expect("client address");
                let server = servers
                    .remove(&local)
                    .unwrap_or_else(|| panic!("no accepted socket for client {local}"));
                conns.push(Conn {
                    family,
                    client,
                    server: Some(server),
                });
            }
            assert!(
                servers.is_empty(),
                "accepted connections nobody opened: {:?}",
                servers.keys().collect::<Vec<_>>()
            );
        }
        conns
    })
}

//! Applications whose connections go idle behind a middlebox ([`crate::middlebox`]),
//! then write: clients in A, their server in B, each connection with its own keepalive
//! setting and a TCP_USER_TIMEOUT so that a failure takes seconds, not the default
//! fifteen minutes of retransmissions. What each application saw (an echo, ECONNRESET,
//! ETIMEDOUT) and how long it had been idle are the oracle the daemon is compared with.

use std::io::{self, ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::thread;
use std::time::{Duration, Instant};

use socket2::{Domain, SockAddr, Socket, Type};

use crate::middlebox::{B_ADDR, Middlebox};
use crate::sockets::{KeepaliveParams, enable_keepalive};
use crate::timing::{ACCEPT_TIMEOUT, CONNECT_TIMEOUT, EXCHANGE_TIMEOUT, POLL_INTERVAL};

/// How a connection is configured relative to the middlebox's idle timeout.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    /// SO_KEEPALIVE off.
    Off,
    /// Keepalive on, first probe after the middlebox forgot the flow.
    Above(KeepaliveParams),
    /// Keepalive on, probing before the middlebox forgets: kept alive.
    Below(KeepaliveParams),
}

impl Kind {
    /// The `keepalive` label value the daemon gives such a connection.
    pub fn keepalive_label(self) -> &'static str {
        match self {
            Kind::Off => "off",
            Kind::Above(_) | Kind::Below(_) => "on",
        }
    }
}

/// One connection from A to B through M.
#[derive(Debug)]
pub struct IdleConn {
    pub kind: Kind,
    pub client: TcpStream,
    pub server: TcpStream,
    /// When the client last received a segment: right after it read the server's byte.
    pub last_received: Instant,
}

/// What the client application saw when it wrote after the idle time.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// Its byte came back.
    Echoed,
    /// ECONNRESET.
    Reset,
    /// ETIMEDOUT (the kernel gave up retransmitting).
    TimedOut,
    /// Anything else (a test failure).
    Other(String),
}

/// The outcome and how long the client had been idle when it learned it.
#[derive(Clone, Debug)]
pub struct Seen {
    pub kind: Kind,
    /// The client's local port (A's side of the connection).
    pub port: u16,
    pub outcome: Outcome,
    /// From [`IdleConn::last_received`] to the moment the application saw the outcome.
    pub idle: Duration,
}

/// Opens one connection per entry of `kinds` from A to a listener in B, each with
/// TCP_USER_TIMEOUT `user_timeout` and its keepalive setting, and exchanges one byte
/// each way on each so that every flow is established in M's conntrack table.
pub fn open(mb: &Middlebox, kinds: &[Kind], user_timeout: Duration) -> Vec<IdleConn> {
    let listener: TcpListener = mb.b.run_in(|| {
        let l = TcpListener::bind(SocketAddr::new(B_ADDR.into(), 0))
            .unwrap_or_else(|e| panic!("bind listener in B: {e}"));
        l.set_nonblocking(true).expect("nonblocking listener");
        l
    });
    let target = listener.local_addr().expect("listener address");
    let clients: Vec<TcpStream> = mb.a.run_in(|| {
        kinds
            .iter()
            .map(|&kind| connect(target, kind, user_timeout))
            .collect()
    });
    let mut accepted = accept_all(&listener, clients.len());
    kinds
        .iter()
        .zip(clients)
        .map(|(&kind, client)| {
            // B sees M's address (masquerade) with the client's port: conntrack keeps
            // ports unless they clash, and nothing else goes through M.
            let port = client.local_addr().expect("client address").port();
            let idx = accepted
                .iter()
                .position(|s| s.peer_addr().expect("peer address").port() == port)
                .unwrap_or_else(|| panic!("no accepted socket for client port {port}"));
            let server = accepted.swap_remove(idx);
            let last_received = exchange(&client, &server);
            IdleConn {
                kind,
                client,
                server,
                last_received,
            }
        })
        .collect()
}

/// A client socket with `kind`'s keepalive setting and TCP_USER_TIMEOUT, connected.
/// The options are set before connect(2) so that the keepalive timer starts with
/// the connection (socket2 would switch SO_KEEPALIVE on before the timing).
fn connect(target: SocketAddr, kind: Kind, user_timeout: Duration) -> TcpStream {
    let sock = Socket::new(Domain::IPV4, Type::STREAM, None).expect("socket(AF_INET)");
    sock.set_tcp_user_timeout(Some(user_timeout))
        .unwrap_or_else(|e| panic!("setsockopt(TCP_USER_TIMEOUT): {e}"));
    match kind {
        Kind::Off => {}
        Kind::Above(p) | Kind::Below(p) => enable_keepalive(&sock, p),
    }
    sock.connect_timeout(&SockAddr::from(target), CONNECT_TIMEOUT)
        .unwrap_or_else(|e| panic!("connecting to {target} through M: {e}"));
    sock.into()
}

/// Accepts exactly `n` connections, bounded by [`ACCEPT_TIMEOUT`].
fn accept_all(listener: &TcpListener, n: usize) -> Vec<TcpStream> {
    let deadline = Instant::now() + ACCEPT_TIMEOUT;
    let mut accepted = Vec::with_capacity(n);
    while accepted.len() < n {
        match listener.accept() {
            Ok((stream, _)) => {
                stream
                    .set_nonblocking(false)
                    .expect("blocking accepted socket");
                accepted.push(stream);
            }
            Err(e) if e.kind() == ErrorKind::WouldBlock => {
                assert!(
                    Instant::now() < deadline,
                    "accepted only {} of {n} connections within {ACCEPT_TIMEOUT:?}",
                    accepted.len()
                );
                thread::sleep(POLL_INTERVAL);
            }
            Err(e) => panic!("accept in B: {e}"),
        }
    }
    accepted
}

/// One byte A -> B, one byte B -> A; returns when the client got its byte.
fn exchange(client: &TcpStream, server: &TcpStream) -> Instant {
    for s in [client, server] {
        s.set_read_timeout(Some(EXCHANGE_TIMEOUT))
            .expect("SO_RCVTIMEO");
    }
    let mut byte = [0u8; 1];
    (&*client).write_all(b"?").expect("client write");
    (&*server).read_exact(&mut byte).expect("server read");
    (&*server).write_all(b"!").expect("server write");
    (&*client).read_exact(&mut byte).expect("client read");
    Instant::now()
}

/// Every client writes one byte (all of them first, so that the failures run
/// concurrently); the server echoes on the connections whose byte arrives; each client
/// then reads with `read_timeout`. Returns what each application saw, in order.
pub fn write_then_read(conns: &[IdleConn], read_timeout: Duration) -> Vec<Seen> {
    // Read while every socket is still connected.
    let ports: Vec<u16> = conns
        .iter()
        .map(|c| c.client.local_addr().expect("client address").port())
        .collect();
    let written: Vec<Result<(), io::Error>> =
        conns.iter().map(|c| (&c.client).write_all(b"x")).collect();
    for (c, w) in conns.iter().zip(&written) {
        if w.is_ok() && matches!(c.kind, Kind::Below(_)) {
            echo_one(&c.server);
        }
    }
    conns
        .iter()
        .zip(written)
        .zip(ports)
        .map(|((c, w), port)| {
            let outcome = match w {
                Err(e) => outcome_of(&e),
                Ok(()) => read_one(&c.client, read_timeout),
            };
            Seen {
                kind: c.kind,
                port,
                outcome,
                idle: c.last_received.elapsed(),
            }
        })
        .collect()
}

/// The server side of a kept-alive connection reads the client's byte and sends it back.
fn echo_one(server: &TcpStream) {
    let mut byte = [0u8; 1];
    (&*server)
        .read_exact(&mut byte)
        .unwrap_or_else(|e| panic!("server read of a kept-alive connection: {e}"));
    (&*server)
        .write_all(&byte)
        .unwrap_or_else(|e| panic!("server echo on a kept-alive connection: {e}"));
}

fn read_one(client: &TcpStream, timeout: Duration) -> Outcome {
    client.set_read_timeout(Some(timeout)).expect("SO_RCVTIMEO");
    let mut byte = [0u8; 1];
    match (&*client).read(&mut byte) {
        Ok(1) if byte == *b"x" => Outcome::Echoed,
        Ok(n) => Outcome::Other(format!("read {n} bytes {byte:?}")),
        Err(e) => outcome_of(&e),
    }
}

fn outcome_of(e: &io::Error) -> Outcome {
    match e.raw_os_error() {
        Some(libc::ECONNRESET) => Outcome::Reset,
        Some(libc::ETIMEDOUT) => Outcome::TimedOut,
        _ => Outcome::Other(e.to_string()),
    }
}

//! TCP connections between namespace A (clients) and namespace B (listener),
//! and the socket options the scenarios play with.

use std::fmt;
use std::io::{self, Read, Write};
use std::net::{IpAddr, SocketAddr, TcpListener, TcpStream};
use std::os::fd::{AsFd, AsRawFd};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use socket2::SockRef;

use crate::netns::{A_V4, A_V6, B_V4, B_V6, Netns};
use crate::timing::{
    ACCEPT_TIMEOUT, CONNECT_ATTEMPTS, CONNECT_RETRY_PAUSE, CONNECT_TIMEOUT, EXCHANGE_TIMEOUT,
    FILL_MAX_BYTES, FILL_ROUND_PAUSE, FILL_TIMEOUT, KEEPCNT, KEEPIDLE_SECS, KEEPINTVL_SECS,
    POLL_INTERVAL,
};

/// Address family, with the label value the daemon uses for it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Family {
    Ipv4,
    Ipv6,
}

impl Family {
    pub const ALL: [Family; 2] = [Family::Ipv4, Family::Ipv6];

    /// Value of the `family` label.
    pub fn label(self) -> &'static str {
        match self {
            Family::Ipv4 => "ipv4",
            Family::Ipv6 => "ipv6",
        }
    }

    /// Side A's address on the veth pair.
    pub fn a_addr(self) -> IpAddr {
        match self {
            Family::Ipv4 => A_V4.into(),
            Family::Ipv6 => A_V6.into(),
        }
    }

    /// Side B's address on the veth pair.
    pub fn b_addr(self) -> IpAddr {
        match self {
            Family::Ipv4 => B_V4.into(),
            Family::Ipv6 => B_V6.into(),
        }
    }
}

impl fmt::Display for Family {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.label())
    }
}

/// Keepalive timing of one socket (TCP_KEEPIDLE, TCP_KEEPINTVL, TCP_KEEPCNT).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct KeepaliveParams {
    pub idle_secs: u32,
    pub intvl_secs: u32,
    pub cnt: u32,
}

/// The aggressive setting every scenario uses: 1 s, 1 s, 3.
pub const FAST_KEEPALIVE: KeepaliveParams = KeepaliveParams {
    idle_secs: KEEPIDLE_SECS,
    intvl_secs: KEEPINTVL_SECS,
    cnt: KEEPCNT,
};

/// TCP_KEEPIDLE, TCP_KEEPINTVL or TCP_KEEPCNT alone. socket2 sets these only all
/// together with SO_KEEPALIVE, and turns SO_KEEPALIVE on first: on a socket with
/// keepalive on, setting TCP_KEEPIDLE re-arms the timer at (last receive + idle)
/// instead of (now + idle), which would move the first probe of every scenario. So
/// these three stay a plain setsockopt(2), made before SO_KEEPALIVE goes on.
fn set_keepalive_param(sock: &impl AsRawFd, name: libc::c_int, value: u32) {
    let value = libc::c_int::try_from(value).expect("socket option value fits in c_int");
    // SAFETY: setsockopt(2) with a pointer to a live c_int and its size.
    let rc = unsafe {
        libc::setsockopt(
            sock.as_raw_fd(),
            libc::IPPROTO_TCP,
            name,
            (&raw const value).cast(),
            size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    if rc != 0 {
        panic!(
            "setsockopt(IPPROTO_TCP, {name}, {value}): {}",
            io::Error::last_os_error()
        );
    }
}

/// Sets the keepalive timing, then turns SO_KEEPALIVE on (the timer starts now).
pub fn enable_keepalive<S: AsRawFd + AsFd>(sock: &S, p: KeepaliveParams) {
    set_keepalive_param(sock, libc::TCP_KEEPIDLE, p.idle_secs);
    set_keepalive_param(sock, libc::TCP_KEEPINTVL, p.intvl_secs);
    set_keepalive_param(sock, libc::TCP_KEEPCNT, p.cnt);
    SockRef::from(sock)
        .set_keepalive(true)
        .unwrap_or_else(|e| panic!("setsockopt(SO_KEEPALIVE, 1): {e}"));
}

/// SO_KEEPALIVE=0: the kernel stops its keepalive timer, no more probes.
pub fn disable_keepalive(sock: &impl AsFd) {
    SockRef::from(sock)
        .set_keepalive(false)
        .unwrap_or_else(|e| panic!("setsockopt(SO_KEEPALIVE, 0): {e}"));
}

/// TCP_QUICKACK: an ACK the delayed-ACK timer holds goes out now, and the
/// next ones are not delayed (until the kernel's heuristics switch back).
pub fn set_quickack(sock: &impl AsFd) {
    SockRef::from(sock)
        .set_tcp_quickack(true)
        .unwrap_or_else(|e| panic!("setsockopt(TCP_QUICKACK, 1): {e}"));
}

/// SO_LINGER {on, 0}: close() aborts the connection with a RST.
pub fn set_linger_zero(sock: &impl AsFd) {
    SockRef::from(sock)
        .set_linger(Some(Duration::ZERO))
        .unwrap_or_else(|e| panic!("setsockopt(SO_LINGER, {{1, 0}}): {e}"));
}

/// One established connection: `client` lives in namespace A, `server` (the
/// accepted socket) in namespace B. `server` is an option so that a scenario
/// can close it early.
#[derive(Debug)]
pub struct Conn {
    pub family: Family,
    pub client: TcpStream,
    pub server: Option<TcpStream>,
}

impl Conn {
    pub fn server(&self) -> &TcpStream {
        self.server.as_ref().expect("server side already closed")
    }
}

/// Connects, retrying a bounded number of times (a fresh veth may drop the first SYN).
pub fn connect_with_retry(addr: SocketAddr) -> TcpStream {
    let mut last_err = None;
    for _ in 0..CONNECT_ATTEMPTS {
        match TcpStream::connect_timeout(&addr, CONNECT_TIMEOUT) {
            Ok(stream) => return stream,
            Err(e) => last_err = Some(e),
        }
        thread::sleep(CONNECT_RETRY_PAUSE);
    }
    panic!("connecting to {addr}: {last_err:?} after {CONNECT_ATTEMPTS} attempts");
}

/// Opens `v4` IPv4 and `v6` IPv6 connections from namespace A to a listener
/// in namespace B (across the veth pair), in that order.
pub fn open_connections(a: &Netns, b: &Netns, v4: usize, v6: usize) -> Vec<Conn> {
    let families: Vec<Family> = std::iter::repeat_n(Family::Ipv4, v4)
        .chain(std::iter::repeat_n(Family::Ipv6, v6))
        .collect();
    let listeners: Vec<(Family, TcpListener)> = b.run_in(|| {
        Family::ALL
            .iter()
            .map(|&f| {
                let l = TcpListener::bind(SocketAddr::new(f.b_addr(), 0))
                    .unwrap_or_else(|e| panic!("bind {f} listener: {e}"));
                l.set_nonblocking(true).expect("nonblocking listener");
                (f, l)
            })
            .collect()
    });
    let listener_addr = |f: Family| {
        let (_, l) = listeners.iter().find(|(lf, _)| *lf == f).expect("listener");
        l.local_addr().expect("listener address")
    };
    let targets: Vec<SocketAddr> = families.iter().map(|&f| listener_addr(f)).collect();
    let clients: Vec<TcpStream> = a.run_in(|| {
        targets
            .iter()
            .map(|&addr| connect_with_retry(addr))
            .collect()
    });

    let mut accepted: Vec<(SocketAddr, TcpStream)> = Vec::new();
    let deadline = Instant::now() + ACCEPT_TIMEOUT;
    while accepted.len() < clients.len() {
        let mut progress = false;
        for (_, l) in &listeners {
            match l.accept() {
                Ok((stream, peer)) => {
                    stream
                        .set_nonblocking(false)
                        .expect("blocking accepted socket");
                    accepted.push((peer, stream));
                    progress = true;
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                Err(e) => panic!("accept: {e}"),
            }
        }
        if !progress {
            assert!(
                Instant::now() < deadline,
                "accepted only {} of {} connections within {ACCEPT_TIMEOUT:?}",
                accepted.len(),
                clients.len()
            );
            thread::sleep(POLL_INTERVAL);
        }
    }

    families
        .into_iter()
        .zip(clients)
        .map(|(family, client)| {
            let local = client.local_addr().expect("client address");
            let idx = accepted
                .iter()
                .position(|(peer, _)| *peer == local)
                .unwrap_or_else(|| panic!("no accepted socket for client {local}"));
            let (_, server) = accepted.swap_remove(idx);
            Conn {
                family,
                client,
                server: Some(server),
            }
        })
        .collect()
}

/// Sends one byte each way on every connection (A -> B, then B -> A) and
/// waits for it. Afterwards both ends have sent ordinary segments carrying
/// their current (scaled) window, so a capture analyser does not mistake
/// the first answer to a keepalive probe for a window update.
pub fn exchange_byte(conns: &[Conn]) {
    for c in conns {
        let (mut client, mut server) = (&c.client, c.server());
        let mut byte = [0u8; 1];
        for s in [client, server] {
            s.set_read_timeout(Some(EXCHANGE_TIMEOUT))
                .expect("SO_RCVTIMEO");
        }
        client.write_all(b"?").expect("client write");
        server.read_exact(&mut byte).expect("server read");
        server.write_all(b"!").expect("server write");
        client.read_exact(&mut byte).expect("client read");
        for s in [client, server] {
            s.set_read_timeout(None).expect("SO_RCVTIMEO");
        }
    }
}

/// How a blocked read() on a connection ended.
#[derive(Debug)]
pub enum ReadOutcome {
    /// Orderly shutdown by the peer.
    Eof,
    /// Unexpected data.
    Data(usize),
    /// read() failed; ETIMEDOUT, ECONNRESET, or EAGAIN when SO_RCVTIMEO expired.
    Error(io::Error),
}

impl ReadOutcome {
    pub fn raw_os_error(&self) -> Option<i32> {
        match self {
            ReadOutcome::Error(e) => e.raw_os_error(),
            _ => None,
        }
    }

    /// The kernel gave up on the connection (keepalive timeout).
    pub fn is_etimedout(&self) -> bool {
        matches!(self, ReadOutcome::Error(e)
            if e.kind() == io::ErrorKind::TimedOut && e.raw_os_error() == Some(libc::ETIMEDOUT))
    }

    /// The peer reset the connection.
    pub fn is_econnreset(&self) -> bool {
        matches!(self, ReadOutcome::Error(e)
            if e.kind() == io::ErrorKind::ConnectionReset
                && e.raw_os_error() == Some(libc::ECONNRESET))
    }
}

/// Threads blocked in read() on the client side of connections.
#[derive(Debug)]
pub struct Readers {
    handles: Vec<(Family, JoinHandle<ReadOutcome>)>,
}

/// Starts one reader per connection, each blocking in read() on (a clone of)
/// the client socket for at most `timeout` (SO_RCVTIMEO).
pub fn spawn_readers(conns: &[Conn], timeout: Duration) -> Readers {
    let handles = conns
        .iter()
        .map(|c| {
            let mut stream = c.client.try_clone().expect("clone client socket");
            stream.set_read_timeout(Some(timeout)).expect("SO_RCVTIMEO");
            let handle = thread::spawn(move || {
                let mut buf = [0u8; 512];
                match stream.read(&mut buf) {
                    Ok(0) => ReadOutcome::Eof,
                    Ok(n) => ReadOutcome::Data(n),
                    Err(e) => ReadOutcome::Error(e),
                }
            });
            (c.family, handle)
        })
        .collect();
    Readers { handles }
}

impl Readers {
    /// Waits for every reader (each is bounded by its SO_RCVTIMEO).
    pub fn join(self) -> Vec<(Family, ReadOutcome)> {
        self.handles
            .into_iter()
            .map(|(f, h)| (f, h.join().expect("reader thread panicked")))
            .collect()
    }
}

/// Writes to `sock` (non-blocking) until the peer's receive window is closed
/// and the local send buffer is full: several rounds in a row make no
/// progress. Returns the number of bytes queued. Bounded in time and bytes.
pub fn fill_until_blocked(mut sock: &TcpStream) -> usize {
    static CHUNK: [u8; 65536] = [0x5a; 65536];
    const IDLE_ROUNDS: u32 = 3;
    sock.set_nonblocking(true).expect("nonblocking");
    let deadline = Instant::now() + FILL_TIMEOUT;
    let mut total = 0usize;
    let mut idle_rounds = 0;
    while idle_rounds < IDLE_ROUNDS {
        let mut round = 0usize;
        loop {
            assert!(
                total < FILL_MAX_BYTES,
                "wrote {total} bytes without blocking"
            );
            match sock.write(&CHUNK) {
                Ok(0) => panic!("write returned 0"),
                Ok(n) => {
                    round += n;
                    total += n;
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) => panic!("write: {e}"),
            }
        }
        idle_rounds = if round == 0 { idle_rounds + 1 } else { 0 };
        assert!(
            Instant::now() < deadline,
            "send path still draining after {FILL_TIMEOUT:?} ({total} bytes)"
        );
        thread::sleep(FILL_ROUND_PAUSE);
    }
    total
}

/// Fast keepalive on every client end, then, [`crate::timing::KEEPALIVE_STAGGER`] later,
/// on every server end: timers that fire together make tshark label answers as
/// duplicate ACKs (the probes test's oracle).
pub fn enable_keepalive_staggered(conns: &[Conn]) {
    for c in conns {
        enable_keepalive(&c.client, FAST_KEEPALIVE);
    }
    std::thread::sleep(crate::timing::KEEPALIVE_STAGGER);
    for c in conns {
        enable_keepalive(c.server(), FAST_KEEPALIVE);
    }
}

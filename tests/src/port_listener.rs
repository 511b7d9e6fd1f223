//! A dual-stack listener in a test namespace whose port is given to the daemon with
//! `--metrics.local-port`, and the traffic the per-port series are tested with.

use std::io;
use std::net::{Ipv6Addr, SocketAddr, TcpListener, TcpStream};
use std::thread;
use std::time::{Duration, Instant};

use crate::scenarios::Setup;
use crate::sockets::{enable_keepalive_staggered, exchange_byte, set_linger_zero};
use crate::timing::{ACCEPT_TIMEOUT, CONNECT_TIMEOUT, POLL_INTERVAL, READ_TIMEOUT, SETTLE};
use crate::{Conn, Family, Netns, disable_keepalive, spawn_readers};

/// How long keepalive probes run both ways on the per-port connections.
const PORT_PROBE_PHASE: Duration = Duration::from_secs(4);

/// A dual-stack listener in namespace A whose port is given to the daemon
/// with --metrics.local-port: connections to it have that local port on A.
pub struct PortListener {
    listener: TcpListener,
    pub port: u16,
}

impl PortListener {
    pub fn bind(a: &Netns) -> PortListener {
        let listener = a.run_in(|| {
            TcpListener::bind((Ipv6Addr::UNSPECIFIED, 0)).expect("bind [::]:0 in namespace A")
        });
        listener
            .set_nonblocking(true)
            .expect("nonblocking listener");
        let port = listener.local_addr().expect("listener address").port();
        PortListener { listener, port }
    }

    /// One IPv4 and one IPv6 connection from B to this port. In the returned
    /// [`Conn`]s, `client` is A's (accepted) end and `server` B's end.
    pub fn connect(&self, setup: &Setup) -> Vec<Conn> {
        let port = self.port;
        let clients: Vec<(Family, TcpStream)> = setup.b.run_in(|| {
            Family::ALL
                .iter()
                .map(|&f| {
                    let addr = SocketAddr::new(f.a_addr(), port);
                    let stream = (0..10)
                        .find_map(
                            |_| match TcpStream::connect_timeout(&addr, CONNECT_TIMEOUT) {
                                Ok(s) => Some(s),
                                Err(_) => {
                                    thread::sleep(Duration::from_millis(200));
                                    None
                                }
                            },
                        )
                        .unwrap_or_else(|| panic!("connecting to {addr} from B"));
                    (f, stream)
                })
                .collect()
        });
        let deadline = Instant::now() + ACCEPT_TIMEOUT;
        let mut accepted = Vec::new();
        while accepted.len() < clients.len() {
            match self.listener.accept() {
                Ok((stream, peer)) => {
                    stream.set_nonblocking(false).expect("blocking socket");
                    accepted.push((peer, stream));
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    assert!(
                        Instant::now() < deadline,
                        "accepted {} of {} connections on port {port}",
                        accepted.len(),
                        clients.len()
                    );
                    thread::sleep(POLL_INTERVAL);
                }
                Err(e) => panic!("accept on port {port}: {e}"),
            }
        }
        clients
            .into_iter()
            .map(|(family, b_end)| {
                let local = b_end.local_addr().expect("B address");
                let idx = accepted
                    .iter()
                    .position(|(peer, _)| {
                        peer.port() == local.port()
                            && peer.ip().to_canonical() == local.ip().to_canonical()
                    })
                    .unwrap_or_else(|| panic!("no accepted socket for {local}"));
                let (_, a_end) = accepted.swap_remove(idx);
                Conn {
                    family,
                    client: a_end,
                    server: Some(b_end),
                }
            })
            .collect()
    }

    /// Keepalive probes both ways on connections to this port, then B drops
    /// its ends without telling A (its RSTs are dropped), so A's next probe
    /// is answered by a RST: a peer reset on this local port.
    pub fn probes_then_peer_reset(&self, setup: &Setup) {
        let mut conns = self.connect(setup);
        exchange_byte(&conns);
        enable_keepalive_staggered(&conns);
        thread::sleep(PORT_PROBE_PHASE);
        for c in &conns {
            disable_keepalive(c.server());
        }
        setup.b.nft(
            "table inet katport {\n\
             \tchain output {\n\
             \t\ttype filter hook output priority 0; policy accept;\n\
             \t\ttcp flags & rst == rst counter drop\n\
             \t}\n\
             }\n",
        );
        let readers = spawn_readers(&conns, READ_TIMEOUT);
        for c in &mut conns {
            let b_end = c.server.take().expect("B's end");
            set_linger_zero(&b_end);
            drop(b_end);
        }
        setup.b.cmd(&["nft", "delete", "table", "inet", "katport"]);
        let outcomes = readers.join();
        assert!(
            outcomes.iter().all(|(_, o)| o.is_econnreset()),
            "harness: A's ends on port {} were not all reset by B: {outcomes:?}",
            self.port
        );
        thread::sleep(SETTLE);
    }
}

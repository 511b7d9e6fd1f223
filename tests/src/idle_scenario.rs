//! The idle-death scenario behind a real middlebox, and its oracles: connections from A
//! with keepalive off, with a first probe after M's conntrack timeout ("above") and
//! before it ("below") go idle past the timeout, then write. M's conntrack table, M's
//! rule counters, A's `nstat` and what each application saw are recorded here,
//! independently of the daemon; `tests/tests/idle_middlebox.rs` compares the daemon
//! with them.

use std::collections::BTreeMap;
use std::collections::BTreeSet;
use std::thread;
use std::time::{Duration, Instant};

use crate::idle_apps::{self, IdleConn, Kind, Outcome, Seen};
use crate::middlebox::{A_ADDR, B_ADDR, ConntrackFlow, Forgotten, Middlebox};
use crate::scale::{nstat_all, nstat_delta};
use crate::sockets::KeepaliveParams;

/// net.netfilter.nf_conntrack_tcp_timeout_established in M.
pub const CT_TIMEOUT_SECS: u32 = 6;
/// TCP_USER_TIMEOUT of every client: a silently dropped write fails after this.
pub const USER_TIMEOUT: Duration = Duration::from_millis(3000);
/// First probe long after M forgot the flow, and after the write (IDLE + USER_TIMEOUT
/// + margin): these connections never probe during the test.
pub const ABOVE: KeepaliveParams = KeepaliveParams {
    idle_secs: 40,
    intvl_secs: 5,
    cnt: 3,
};
/// Probes every 2 s of idleness, answered: M's entry never gets older than ~2 s.
pub const BELOW: KeepaliveParams = KeepaliveParams {
    idle_secs: 2,
    intvl_secs: 1,
    cnt: 3,
};
/// Connections of each kind; different counts so that a swapped label shows.
pub const N_OFF: usize = 3;
pub const N_ABOVE: usize = 2;
pub const N_BELOW: usize = 2;
/// Idle time before the write: M's timeout is long past (6 s), and every failure's idle
/// age lands well inside the (10, 30] s bucket: about 15 s for a reset, about 18.5 s for
/// a retransmission timeout (15 s + 3 s user timeout + the RTO rounding).
pub const IDLE: Duration = Duration::from_secs(15);
/// Bound on a client's read after its write (USER_TIMEOUT plus generous slack).
pub const READ_TIMEOUT: Duration = Duration::from_secs(15);

/// The connection kinds, in the order they are opened.
pub fn kinds() -> Vec<Kind> {
    let mut kinds = vec![Kind::Off; N_OFF];
    kinds.extend(std::iter::repeat_n(Kind::Above(ABOVE), N_ABOVE));
    kinds.extend(std::iter::repeat_n(Kind::Below(BELOW), N_BELOW));
    kinds
}

/// Everything the scenario observed without the daemon.
#[derive(Debug)]
pub struct Played {
    /// What each application saw, in the order of [`kinds`].
    pub seen: Vec<Seen>,
    /// Client ports of each kind's connections ("off", "above", "below").
    pub ports: BTreeMap<&'static str, BTreeSet<u16>>,
    /// M's conntrack entries for A's flows right after the connections opened and
    /// right before the writes.
    pub ct_opened: Vec<ConntrackFlow>,
    pub ct_before_write: Vec<ConntrackFlow>,
    /// M's forward-filter counters at the end: forgotten (invalid) and other drops.
    pub invalid_packets: u64,
    pub other_dropped: u64,
    /// nstat deltas of A over the whole scenario.
    pub aborts_on_timeout: u64,
    pub estab_resets: u64,
    pub retrans_segs: u64,
}

fn group(kind: Kind) -> &'static str {
    match kind {
        Kind::Off => "off",
        Kind::Above(_) => "above",
        Kind::Below(_) => "below",
    }
}

/// Opens the connections, calls `established` with them (the daemon test checks the
/// inventory there), lets them idle [`IDLE`], writes, and records the oracles.
pub fn play(mb: &Middlebox, established: impl FnOnce(&[IdleConn])) -> Played {
    let nstat0 = nstat_all(&mb.a);
    let conns = idle_apps::open(mb, &kinds(), USER_TIMEOUT);
    let ct_opened = a_flows(mb);
    established(&conns);
    let latest = conns
        .iter()
        .map(|c| c.last_received)
        .max()
        .expect("at least one connection");
    thread::sleep((latest + IDLE).saturating_duration_since(Instant::now()));
    let ct_before_write = a_flows(mb);
    let seen = idle_apps::write_then_read(&conns, READ_TIMEOUT);
    let nstat1 = nstat_all(&mb.a);
    let mut ports: BTreeMap<&'static str, BTreeSet<u16>> = BTreeMap::new();
    for c in &conns {
        let port = c.client.local_addr().expect("client address").port();
        ports.entry(group(c.kind)).or_default().insert(port);
    }
    Played {
        seen,
        ports,
        ct_opened,
        ct_before_write,
        invalid_packets: mb.invalid_packets(),
        other_dropped: mb.other_dropped_packets(),
        aborts_on_timeout: nstat_delta(&nstat0, &nstat1, "TcpExtTCPAbortOnTimeout"),
        estab_resets: nstat_delta(&nstat0, &nstat1, "TcpEstabResets"),
        retrans_segs: nstat_delta(&nstat0, &nstat1, "TcpRetransSegs"),
    }
}

/// M's conntrack entries of flows from A to B.
fn a_flows(mb: &Middlebox) -> Vec<ConntrackFlow> {
    mb.conntrack_flows()
        .into_iter()
        .filter(|f| f.src == A_ADDR && f.dst == B_ADDR)
        .collect()
}

/// Client ports of the established entries among `flows`.
fn established_ports(flows: &[ConntrackFlow]) -> BTreeSet<u16> {
    flows
        .iter()
        .filter(|f| f.state == "ESTABLISHED")
        .map(|f| f.sport)
        .collect()
}

impl Played {
    /// The outcome the applications of the at-risk connections must see in `variant`.
    pub fn expected_failure(variant: Forgotten) -> Outcome {
        match variant {
            Forgotten::Drop => Outcome::TimedOut,
            Forgotten::Reset => Outcome::Reset,
        }
    }

    /// Panics unless the oracles agree with each other and with the setup: M held every
    /// flow when opened and only the kept-alive ones before the writes; the off and
    /// above connections failed as `variant` makes them, the below ones echoed; the
    /// kernel counters of A and M's rule counters account for exactly that.
    pub fn assert_consistent(&self, variant: Forgotten) {
        let ports = |g: &str| self.ports.get(g).cloned().unwrap_or_default();
        let all: BTreeSet<u16> = self.ports.values().flatten().copied().collect();
        assert_eq!(
            established_ports(&self.ct_opened),
            all,
            "M's conntrack after opening: {:?}",
            self.ct_opened
        );
        assert_eq!(
            established_ports(&self.ct_before_write),
            ports("below"),
            "M's conntrack after {IDLE:?} idle keeps exactly the kept-alive flows: {:?}",
            self.ct_before_write
        );
        assert_eq!(
            self.ct_before_write.len(),
            N_BELOW,
            "M's entries before the writes: {:?}",
            self.ct_before_write
        );
        let failure = Played::expected_failure(variant);
        for s in &self.seen {
            let want = match s.kind {
                Kind::Below(_) => Outcome::Echoed,
                Kind::Off | Kind::Above(_) => failure.clone(),
            };
            assert_eq!(s.outcome, want, "{s:?} ({variant:?})");
        }
        self.assert_counters(variant);
    }

    fn assert_counters(&self, variant: Forgotten) {
        let failed = (N_OFF + N_ABOVE) as u64;
        let ctx = format!("{self:?}");
        assert_eq!(self.other_dropped, 0, "M dropped unexpected packets; {ctx}");
        match variant {
            Forgotten::Drop => {
                assert_eq!(self.aborts_on_timeout, failed, "A's aborts; {ctx}");
                // TcpEstabResets counts every abort of an established connection,
                // the retransmission timeouts included.
                assert_eq!(
                    self.estab_resets, failed,
                    "A's aborts from established; {ctx}"
                );
                // Each failed write's first transmission and every retransmission
                // of it were forgotten packets; nothing else was retransmitted.
                assert_eq!(
                    self.invalid_packets,
                    failed + self.retrans_segs,
                    "M's forgotten packets; {ctx}"
                );
            }
            Forgotten::Reset => {
                assert_eq!(
                    self.estab_resets, failed,
                    "A's aborts from established; {ctx}"
                );
                assert_eq!(self.aborts_on_timeout, 0, "A's aborts; {ctx}");
                assert_eq!(self.retrans_segs, 0, "A's retransmissions; {ctx}");
                assert_eq!(self.invalid_packets, failed, "M's forgotten packets; {ctx}");
            }
        }
    }
}

//! The traffic scenarios, with the oracles they produce independently of
//! the daemon. Each scenario calls `snapshot` (typically a scrape of the
//! daemon, or nothing for the harness self-test) exactly when it samples its
//! baseline and final oracle values, so deltas line up.

use std::collections::BTreeMap;
use std::io::{self, Read};
use std::thread;
use std::time::Instant;

use crate::answers::Answers;
use crate::capture::Capture;
use crate::netns::{A_V4, A_V6, B_V4, B_V6, Netns, VethPair};
use crate::nstat::{KEEPALIVE, WIN_PROBE};
use crate::sockets::{
    FAST_KEEPALIVE, Family, ReadOutcome, disable_keepalive, enable_keepalive,
    enable_keepalive_staggered, exchange_byte, fill_until_blocked, open_connections,
    set_linger_zero, spawn_readers,
};
use crate::timing::{DRAIN_TIMEOUT, PROBE_PHASE, READ_TIMEOUT, SETTLE, ZERO_WINDOW_WAIT};

/// Two namespaces joined by a veth pair. A is the daemon's side.
/// Fields drop in order: A, then B (the veth goes with them).
#[derive(Debug)]
pub struct Setup {
    pub a: Netns,
    pub b: Netns,
    pub veth: VethPair,
}

impl Setup {
    /// `test` is a short tag naming the namespaces (`kat-<test>-<pid>-a|b`).
    pub fn new(test: &str) -> Setup {
        let a = Netns::new(test, "a");
        let b = Netns::new(test, "b");
        let veth = VethPair::new(&a, &b);
        Setup { a, b, veth }
    }
}

/// The two ends of the veth pair.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Side {
    A,
    B,
}

/// Display filter matching packets whose source is `side`'s address in `family`.
pub fn src_filter(side: Side, family: Family) -> String {
    match (side, family) {
        (Side::A, Family::Ipv4) => format!("ip.src == {A_V4}"),
        (Side::B, Family::Ipv4) => format!("ip.src == {B_V4}"),
        (Side::A, Family::Ipv6) => format!("ipv6.src == {A_V6}"),
        (Side::B, Family::Ipv6) => format!("ipv6.src == {B_V6}"),
    }
}

/// Per-(side, family) frame counts from a capture.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct WireCounts(pub BTreeMap<(Side, Family), u64>);

impl WireCounts {
    /// Counts the frames matching `filter`, split by sender and family.
    fn from_capture(capture: &Capture<'_>, filter: &str) -> WireCounts {
        let mut counts = BTreeMap::new();
        for side in [Side::A, Side::B] {
            for family in Family::ALL {
                let f = format!("{filter} && {}", src_filter(side, family));
                counts.insert((side, family), capture.count(&f));
            }
        }
        WireCounts(counts)
    }

    pub fn get(&self, side: Side, family: Family) -> u64 {
        self.0.get(&(side, family)).copied().unwrap_or(0)
    }

    /// Sum over both families of what `side` sent.
    pub fn from(&self, side: Side) -> u64 {
        Family::ALL.iter().map(|&f| self.get(side, f)).sum()
    }
}

/// A scenario's oracle plus the snapshots taken at baseline and at the end.
#[derive(Debug)]
pub struct Observed<O, T> {
    pub oracle: O,
    pub before: T,
    pub after: T,
}

/// Oracle of the probe-counting scenario.
#[derive(Debug)]
pub struct ProbeOracle {
    /// Delta of TcpExtTCPKeepAlive in namespace A (probes A's timer sent).
    pub kernel_probes_a: u64,
    /// Delta of TcpExtTCPKeepAlive in namespace B.
    pub kernel_probes_b: u64,
    /// tshark `tcp.analysis.keep_alive` frames, by sender and family.
    pub wire_probes: WireCounts,
    /// tshark `tcp.analysis.keep_alive_ack` frames, by sender and family. Right
    /// only because the probes never cross here (staggered keepalive): kept to
    /// cross-check `answers`.
    pub wire_acks: WireCounts,
    /// Probes and answers matched from the TCP rules on the same capture, by
    /// prober and family: the oracle for answers.
    pub answers: Answers,
    /// Keep-alive related frames of the capture, for messages.
    pub capture_listing: String,
}

impl ProbeOracle {
    /// Panics unless the oracles agree with each other: nstat, tshark's
    /// keep_alive and the matcher on probes; tshark's keep_alive_ack and the
    /// matcher on answers (tshark is right here because the probes never
    /// cross: the matcher must see no crossing either); on this lossless link,
    /// every probe answered by exactly one ACK. `ctx` is appended to messages.
    pub fn assert_consistent(&self, ctx: &dyn Fn() -> String) {
        let m = &self.answers;
        assert!(
            self.kernel_probes_a > 0 && self.kernel_probes_b > 0,
            "harness: no probes at all; {}",
            ctx()
        );
        for (side, kernel) in [
            (Side::A, self.kernel_probes_a),
            (Side::B, self.kernel_probes_b),
        ] {
            assert_eq!(
                (
                    self.wire_probes.from(side),
                    m.counts(|t| t.probes).from(side)
                ),
                (kernel, kernel),
                "harness: probes sent by {side:?}: (tshark keep_alive, matcher) vs nstat; {}",
                ctx()
            );
        }
        for family in Family::ALL {
            for (prober, answerer) in [(Side::A, Side::B), (Side::B, Side::A)] {
                let t = m.get(prober, family);
                assert!(
                    t.probes > 0,
                    "harness: no {family} probe from {prober:?}; {}",
                    ctx()
                );
                assert_eq!(
                    t.probes,
                    self.wire_probes.get(prober, family),
                    "harness: {family} probes of {prober:?}, matcher vs tshark keep_alive; {}",
                    ctx()
                );
                assert_eq!(
                    t.answered,
                    self.wire_acks.get(answerer, family),
                    "harness: {family} answers to {prober:?}'s probes, matcher vs tshark \
                     keep_alive_ack (probes do not cross here); {}",
                    ctx()
                );
                assert_eq!(
                    (t.answered, t.reset, t.crossed, t.one_byte, t.zero_window),
                    (t.probes, 0, 0, 0, 0),
                    "harness: on this lossless link with staggered keepalive every {family} \
                     probe of {prober:?} is answered by exactly one ACK, none crosses; {}\n{}",
                    ctx(),
                    m.describe_unanswered(3)
                );
            }
        }
    }
}

/// Probe-counting scenario: `v4` + `v6` connections A -> B with fast
/// keepalive on both ends (B's enabled [`KEEPALIVE_STAGGER`] after A's), for
/// [`PROBE_PHASE`]; then keepalive is turned off
/// everywhere and, after [`SETTLE`], everything is sampled. A byte goes each
/// way first (see [`exchange_byte`]). B's end is
/// captured from before the connections exist, so tshark sees whole flows.
pub fn keepalive_probes<T>(
    setup: &Setup,
    v4: usize,
    v6: usize,
    mut snapshot: impl FnMut() -> T,
) -> Observed<ProbeOracle, T> {
    let mut capture = Capture::start(&setup.b, &setup.veth.b_if);
    let (ka_a0, ka_b0) = (setup.a.nstat(KEEPALIVE), setup.b.nstat(KEEPALIVE));
    let before = snapshot();

    let conns = open_connections(&setup.a, &setup.b, v4, v6);
    exchange_byte(&conns);
    enable_keepalive_staggered(&conns);
    thread::sleep(PROBE_PHASE);
    for c in &conns {
        disable_keepalive(&c.client);
        disable_keepalive(c.server());
    }
    thread::sleep(SETTLE);

    let (ka_a1, ka_b1) = (setup.a.nstat(KEEPALIVE), setup.b.nstat(KEEPALIVE));
    let after = snapshot();
    capture.stop();
    drop(conns);

    let oracle = ProbeOracle {
        kernel_probes_a: ka_a1 - ka_a0,
        kernel_probes_b: ka_b1 - ka_b0,
        wire_probes: WireCounts::from_capture(&capture, "tcp.analysis.keep_alive"),
        wire_acks: WireCounts::from_capture(&capture, "tcp.analysis.keep_alive_ack"),
        answers: capture.answers(),
        capture_listing: capture.summary("tcp.analysis.keep_alive || tcp.analysis.keep_alive_ack"),
    };
    Observed {
        oracle,
        before,
        after,
    }
}

/// Oracle of the scenarios where the kernel kills the connections.
#[derive(Debug)]
pub struct ResetOracle {
    /// How each client's blocked read() ended, in connection order.
    pub outcomes: Vec<(Family, ReadOutcome)>,
    /// Packets the temporary nftables rule dropped (peer-reset scenario: the
    /// RSTs of B's aborts; must equal the number of connections).
    pub dropped_by_rule: u64,
}

impl ResetOracle {
    /// Connections (of `family`, or all) whose read ended as `pred` says.
    pub fn count(&self, family: Option<Family>, pred: impl Fn(&ReadOutcome) -> bool) -> u64 {
        self.outcomes
            .iter()
            .filter(|(f, o)| family.is_none_or(|want| want == *f) && pred(o))
            .count() as u64
    }

    pub fn connections(&self, family: Option<Family>) -> u64 {
        self.count(family, |_| true)
    }
}

/// nftables table the scenarios install in namespace B.
pub const NFT_TABLE: &str = "inet kat";

/// Keepalive timeout scenario: fast keepalive on A's ends, then B silently
/// drops everything from A, so A's kernel gives up (ETIMEDOUT).
pub fn keepalive_timeout<T>(
    setup: &Setup,
    v4: usize,
    v6: usize,
    mut snapshot: impl FnMut() -> T,
) -> Observed<ResetOracle, T> {
    let before = snapshot();
    let conns = open_connections(&setup.a, &setup.b, v4, v6);
    for c in &conns {
        enable_keepalive(&c.client, FAST_KEEPALIVE);
    }
    setup.b.nft(&format!(
        "table {NFT_TABLE} {{\n\
         \tchain input {{\n\
         \t\ttype filter hook input priority 0; policy accept;\n\
         \t\tip saddr {A_V4} counter drop\n\
         \t\tip6 saddr {A_V6} counter drop\n\
         \t}}\n\
         }}\n"
    ));
    let outcomes = spawn_readers(&conns, READ_TIMEOUT).join();
    thread::sleep(SETTLE);
    let after = snapshot();
    let dropped_by_rule = nft_dropped(&setup.b);
    drop(conns);
    Observed {
        oracle: ResetOracle {
            outcomes,
            dropped_by_rule,
        },
        before,
        after,
    }
}

/// Peer-reset scenario: fast keepalive on A's ends; B aborts its ends
/// (SO_LINGER 0) while its RSTs are dropped, so A does not notice; then the
/// rule goes away and A's next probe is answered by a RST (ECONNRESET).
pub fn peer_reset<T>(
    setup: &Setup,
    v4: usize,
    v6: usize,
    mut snapshot: impl FnMut() -> T,
) -> Observed<ResetOracle, T> {
    let before = snapshot();
    let mut conns = open_connections(&setup.a, &setup.b, v4, v6);
    for c in &conns {
        enable_keepalive(&c.client, FAST_KEEPALIVE);
    }
    setup.b.nft(&format!(
        "table {NFT_TABLE} {{\n\
         \tchain output {{\n\
         \t\ttype filter hook output priority 0; policy accept;\n\
         \t\ttcp flags & rst == rst counter drop\n\
         \t}}\n\
         }}\n"
    ));
    let readers = spawn_readers(&conns, READ_TIMEOUT);
    for c in &mut conns {
        let server = c.server.take().expect("server socket");
        set_linger_zero(&server);
        drop(server);
    }
    let dropped_by_rule = nft_dropped(&setup.b);
    setup.b.cmd(&["nft", "delete", "table", "inet", "kat"]);
    let outcomes = readers.join();
    thread::sleep(SETTLE);
    let after = snapshot();
    drop(conns);
    Observed {
        oracle: ResetOracle {
            outcomes,
            dropped_by_rule,
        },
        before,
        after,
    }
}

/// Sum of the packet counters of the rules in [`NFT_TABLE`].
fn nft_dropped(ns: &Netns) -> u64 {
    let listing = ns.cmd(&["nft", "list", "table", "inet", "kat"]);
    listing
        .lines()
        .filter_map(|line| {
            let mut tokens = line.split_whitespace();
            tokens.by_ref().find(|t| *t == "packets")?;
            tokens.next()?.parse::<u64>().ok()
        })
        .sum()
}

/// Oracle of the zero-window scenario.
#[derive(Debug)]
pub struct ZeroWindowOracle {
    /// Delta of TcpExtTCPWinProbe in A (zero-window probes A sent).
    pub win_probes_a: u64,
    /// Delta of TcpExtTCPWinProbe in B.
    pub win_probes_b: u64,
    /// Deltas of TcpExtTCPKeepAlive (no keepalive is enabled: must be 0).
    pub keepalive_a: u64,
    pub keepalive_b: u64,
    /// Bytes A queued before its send path blocked, all read by B at the end.
    pub queued: usize,
}

/// Zero-window scenario: one IPv4 connection without keepalive; B does not
/// read, A writes until its send path blocks, then waits [`ZERO_WINDOW_WAIT`]
/// while its kernel probes the closed window. B then drains everything, so
/// probing stops before the final sample.
pub fn zero_window<T>(
    setup: &Setup,
    mut snapshot: impl FnMut() -> T,
) -> Observed<ZeroWindowOracle, T> {
    let sample = |ns: &Netns| (ns.nstat(WIN_PROBE), ns.nstat(KEEPALIVE));
    let (wp_a0, ka_a0) = sample(&setup.a);
    let (wp_b0, ka_b0) = sample(&setup.b);
    let before = snapshot();

    let conns = open_connections(&setup.a, &setup.b, 1, 0);
    let conn = &conns[0];
    let queued = fill_until_blocked(&conn.client);
    thread::sleep(ZERO_WINDOW_WAIT);
    drain(conn.server(), queued);
    thread::sleep(SETTLE);

    let (wp_a1, ka_a1) = sample(&setup.a);
    let (wp_b1, ka_b1) = sample(&setup.b);
    let after = snapshot();
    drop(conns);
    let oracle = ZeroWindowOracle {
        win_probes_a: wp_a1 - wp_a0,
        win_probes_b: wp_b1 - wp_b0,
        keepalive_a: ka_a1 - ka_a0,
        keepalive_b: ka_b1 - ka_b0,
        queued,
    };
    Observed {
        oracle,
        before,
        after,
    }
}

/// Reads exactly `expected` bytes from `sock`, bounded by [`DRAIN_TIMEOUT`].
fn drain(mut sock: &std::net::TcpStream, expected: usize) {
    let deadline = Instant::now() + DRAIN_TIMEOUT;
    sock.set_read_timeout(Some(DRAIN_TIMEOUT))
        .expect("SO_RCVTIMEO");
    let mut buf = vec![0u8; 1 << 16];
    let mut total = 0usize;
    while total < expected {
        assert!(
            Instant::now() < deadline,
            "drained {total} of {expected} bytes in time"
        );
        match sock.read(&mut buf) {
            Ok(0) => panic!("EOF after {total} of {expected} bytes"),
            Ok(n) => total += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => panic!("draining after {total} of {expected} bytes: {e}"),
        }
    }
    assert_eq!(total, expected, "receiver got more than was sent");
}

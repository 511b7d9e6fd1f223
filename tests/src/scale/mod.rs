//! Real traffic at scale: a thousand connections at once between the
//! namespaces, with keepalive on both ends, and exact oracles that do not
//! depend on the daemon and stay cheap at that size:
//!
//! - `TcpExtTCPKeepAlive` in each namespace: probes each kernel sent;
//! - `TCP_INFO` of every socket (`tcpi_segs_out`, `tcpi_segs_in`): segments
//!   each end sent and received, per family. With keepalive as the only
//!   traffic, what a side sent is its own probes plus its answers to the
//!   other side's probes, so answers = segments - probes, exactly;
//! - `TcpOutSegs`/`TcpInSegs` of B (B has no other TCP traffic),
//!   `TcpExtTCPACKSkippedSeq` (answers the kernel suppressed) and the listen
//!   queue counters, to check that the premises hold;
//! - optionally (`KAT_SCALE_CAPTURE=1`) a capture, which splits probes and
//!   answers by family with tshark's analysis and with our matcher
//!   (`crate::answers`): a capture process and a few seconds of tshark CPU.

use std::collections::BTreeMap;
use std::io;
use std::net::IpAddr;
use std::os::fd::AsRawFd;
use std::thread;
use std::time::{Duration, Instant};

use crate::answers::Answers;
use crate::capture::Capture;
use crate::netns::{A_V4, A_V6, B_V4, B_V6, Netns, parse_nstat};
use crate::scenarios::{Observed, Setup, Side, WireCounts};
use crate::sockets::{Conn, FAST_KEEPALIVE, Family, disable_keepalive, enable_keepalive};
use crate::timing::KEEPALIVE_STAGGER;

pub mod connect;

pub use connect::{CONNECT_BATCH, LISTEN_BACKLOG, ensure_nofile_limit, open_many, sysctl};

/// Environment variable that adds a tshark capture to the scale scenario.
pub const CAPTURE_ENV: &str = "KAT_SCALE_CAPTURE";

/// Keepalive is switched on in this many groups of connections,
/// [`GROUP_SPACING`] apart (B's ends [`KEEPALIVE_STAGGER`] after A's, as in
/// the probe scenario). Keepalive timers set within the same tens of
/// milliseconds share a timer-wheel bucket (32 ms at HZ=250, 64 ms at
/// HZ=1000 for a 1 s timeout) and fire in one softirq run; every probe of
/// such a burst then waits in one CPU's backlog queue
/// (`net.core.netdev_max_backlog`, 1000 by default) before the receiving
/// side runs. A burst of all 1000 connections would fill it to its limit,
/// so that anything else queued on that CPU meanwhile would be dropped. Ten
/// groups keep bursts at a few hundred packets.
pub const KEEPALIVE_GROUPS: usize = 10;
pub const GROUP_SPACING: Duration = Duration::from_millis(100);
/// From the first group's keepalive on to keepalive off everywhere.
pub const SCALE_PROBE_PHASE: Duration = Duration::from_secs(6);
/// Quiet time after connecting and priming, before the baseline: delayed
/// ACKs (at most 200 ms) are out, even on a busy machine.
pub const SCALE_QUIET: Duration = Duration::from_millis(1000);
/// Quiet time after keepalive is off everywhere, before the final sample:
/// answers to the last probes are in, even on a busy machine.
pub const SCALE_SETTLE: Duration = Duration::from_millis(1500);

/// Period of the daemon's flow-map refresh (`keepalive_daemon_flow_map_entries`), set
/// with --flows.sweep-interval so the test need not wait for the 60 s default.
pub const FLOW_MAP_REFRESH: Duration = Duration::from_secs(2);
/// The flag value matching [`FLOW_MAP_REFRESH`].
pub const FLOW_MAP_REFRESH_FLAG: &str = "2s";
/// Bound on waiting for a refresh that sees every connection, counted from
/// the moment they were all open.
pub const FLOW_MAP_WAIT: Duration = Duration::from_secs(25);
pub const FLOW_MAP_POLL: Duration = Duration::from_millis(500);

/// Every `nstat` counter of the namespace, absolute values, in one call.
pub fn nstat_all(ns: &Netns) -> BTreeMap<String, u64> {
    let out = ns.cmd(&["nstat", "-asz"]);
    out.lines()
        .filter_map(|line| {
            let name = line.split_whitespace().next()?;
            Some((name.to_owned(), parse_nstat(line, name)?))
        })
        .collect()
}

/// `after[name] - before[name]`; the counter must exist and not go backwards.
pub fn nstat_delta(
    before: &BTreeMap<String, u64>,
    after: &BTreeMap<String, u64>,
    name: &str,
) -> u64 {
    let get =
        |m: &BTreeMap<String, u64>| *m.get(name).unwrap_or_else(|| panic!("nstat has no {name}"));
    let (then, now) = (get(before), get(after));
    assert!(now >= then, "nstat {name} went backwards: {then} -> {now}");
    now - then
}

/// TCP_INFO of a socket. A plain getsockopt(2): socket2 has no TCP_INFO.
pub fn tcp_info(sock: &impl AsRawFd) -> libc::tcp_info {
    // SAFETY: tcp_info is made of integers only, so all-zero is a valid value.
    let mut info: libc::tcp_info = unsafe { std::mem::zeroed() };
    let mut len = size_of::<libc::tcp_info>() as libc::socklen_t;
    // SAFETY: getsockopt(2) writes at most `len` bytes into the live `info`.
    let rc = unsafe {
        libc::getsockopt(
            sock.as_raw_fd(),
            libc::IPPROTO_TCP,
            libc::TCP_INFO,
            (&raw mut info).cast(),
            &mut len,
        )
    };
    assert!(
        rc == 0,
        "getsockopt(TCP_INFO): {}",
        io::Error::last_os_error()
    );
    let needed = std::mem::offset_of!(libc::tcp_info, tcpi_notsent_bytes);
    assert!(
        len as usize >= needed,
        "TCP_INFO of {len} bytes has no tcpi_segs_out/tcpi_segs_in"
    );
    info
}

/// `TCP_ESTABLISHED` in `tcpi_state`.
const TCP_ESTABLISHED: u8 = 1;

/// Segments sent and received by the sockets of each (side, family), from
/// TCP_INFO, plus how many sockets were not established.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SegmentTotals {
    pub sent: WireCounts,
    pub received: WireCounts,
    pub not_established: usize,
}

impl SegmentTotals {
    pub fn sample(conns: &[Conn]) -> SegmentTotals {
        let mut t = SegmentTotals::default();
        for c in conns {
            for (side, sock) in [(Side::A, &c.client), (Side::B, c.server())] {
                let info = tcp_info(sock);
                *t.sent.0.entry((side, c.family)).or_default() += u64::from(info.tcpi_segs_out);
                *t.received.0.entry((side, c.family)).or_default() += u64::from(info.tcpi_segs_in);
                if info.tcpi_state != TCP_ESTABLISHED {
                    t.not_established += 1;
                }
            }
        }
        t
    }

    /// `self - before`, per (side, family).
    pub fn since(&self, before: &SegmentTotals) -> SegmentTotals {
        let sub = |now: &WireCounts, then: &WireCounts| {
            WireCounts(
                now.0
                    .iter()
                    .map(|(k, v)| {
                        let t = then.0.get(k).copied().unwrap_or(0);
                        assert!(*v >= t, "TCP_INFO segments of {k:?} went backwards");
                        (*k, v - t)
                    })
                    .collect(),
            )
        };
        SegmentTotals {
            sent: sub(&self.sent, &before.sent),
            received: sub(&self.received, &before.received),
            not_established: self.not_established,
        }
    }
}

/// Oracle of the scale scenario; every count is a delta over the probing
/// window (baseline to final sample), unless said otherwise.
#[derive(Debug)]
pub struct ScaleOracle {
    pub connections: usize,
    /// TcpExtTCPKeepAlive in A and in B.
    pub kernel_probes_a: u64,
    pub kernel_probes_b: u64,
    /// TCP_INFO segment counters summed per (side, family) of the sockets.
    pub segments: SegmentTotals,
    /// TcpOutSegs and TcpInSegs of namespace B.
    pub ns_out_segs_b: u64,
    pub ns_in_segs_b: u64,
    /// TcpExtTCPACKSkippedSeq in A and B: out-of-window segments (probes)
    /// the kernel did not answer because of tcp_invalid_ratelimit.
    pub answers_skipped_a: u64,
    pub answers_skipped_b: u64,
    /// TcpExtListenOverflows + TcpExtListenDrops in B while connecting.
    pub listen_drops_b: u64,
    /// tshark `tcp.analysis.keep_alive` and `keep_alive_ack` frames, by
    /// sender and family, when a capture was requested.
    pub wire_probes: Option<WireCounts>,
    pub wire_acks: Option<WireCounts>,
    /// The matcher's probes and answers (`crate::answers`), with the capture.
    pub answers: Option<Answers>,
    /// How long connecting (with the first byte each way) took.
    pub connect_time: Duration,
    /// From the first keepalive on to keepalive off everywhere.
    pub probe_phase: Duration,
}

impl ScaleOracle {
    /// Segments `side` sent in the window, both families.
    pub fn segments_from(&self, side: Side) -> u64 {
        self.segments.sent.from(side)
    }

    /// ACKs B sent answering A's probes: B's segments minus B's own probes.
    pub fn answers_from_b(&self) -> u64 {
        self.segments_from(Side::B)
            .checked_sub(self.kernel_probes_b)
            .expect("B sent fewer segments than probes")
    }

    /// ACKs A sent answering B's probes: A's segments minus A's own probes.
    pub fn answers_from_a(&self) -> u64 {
        self.segments_from(Side::A)
            .checked_sub(self.kernel_probes_a)
            .expect("A sent fewer segments than probes")
    }
}

/// A finished scale scenario. The connections stay open (keepalive off)
/// until dropped, so the daemon's flow map can still be looked at.
#[derive(Debug)]
pub struct ScaleRun<T> {
    pub observed: Observed<ScaleOracle, T>,
    pub conns: Vec<Conn>,
    /// When the last connection was open.
    pub all_open_at: Instant,
}

/// Scale scenario: `v4` + `v6` connections A -> B (a byte each way first),
/// a quiet [`SCALE_QUIET`], the baseline; then fast keepalive on every end,
/// switched on group by group ([`KEEPALIVE_GROUPS`], B's ends
/// [`KEEPALIVE_STAGGER`] after A's), for [`SCALE_PROBE_PHASE`]; keepalive
/// off everywhere, [`SCALE_SETTLE`], the final sample. `snapshot` is called
/// right after the oracles are sampled, both times.
pub fn keepalive_at_scale<T>(
    setup: &Setup,
    v4: usize,
    v6: usize,
    capture: bool,
    mut snapshot: impl FnMut() -> T,
) -> ScaleRun<T> {
    let mut capture = capture.then(|| Capture::start(&setup.b, &setup.veth.b_if));

    let b_pre = nstat_all(&setup.b);
    let started = Instant::now();
    let conns = open_many(&setup.a, &setup.b, v4, v6);
    let all_open_at = Instant::now();
    crate::sockets::exchange_byte(&conns);
    let connect_time = started.elapsed();
    let b_post = nstat_all(&setup.b);
    let listen_drops_b = nstat_delta(&b_pre, &b_post, "TcpExtListenOverflows")
        + nstat_delta(&b_pre, &b_post, "TcpExtListenDrops");
    thread::sleep(SCALE_QUIET);

    let seg0 = SegmentTotals::sample(&conns);
    let (a0, b0) = (nstat_all(&setup.a), nstat_all(&setup.b));
    let before = snapshot();

    let probe_phase = keepalive_in_groups(&conns);
    thread::sleep(SCALE_SETTLE);

    let seg1 = SegmentTotals::sample(&conns);
    let (a1, b1) = (nstat_all(&setup.a), nstat_all(&setup.b));
    let after = snapshot();

    let (wire_probes, wire_acks, answers) = capture_counts(capture.as_mut());

    let oracle = ScaleOracle {
        connections: conns.len(),
        kernel_probes_a: nstat_delta(&a0, &a1, crate::nstat::KEEPALIVE),
        kernel_probes_b: nstat_delta(&b0, &b1, crate::nstat::KEEPALIVE),
        segments: seg1.since(&seg0),
        ns_out_segs_b: nstat_delta(&b0, &b1, "TcpOutSegs"),
        ns_in_segs_b: nstat_delta(&b0, &b1, "TcpInSegs"),
        answers_skipped_a: nstat_delta(&a0, &a1, "TcpExtTCPACKSkippedSeq"),
        answers_skipped_b: nstat_delta(&b0, &b1, "TcpExtTCPACKSkippedSeq"),
        listen_drops_b,
        wire_probes,
        wire_acks,
        answers,
        connect_time,
        probe_phase,
    };
    ScaleRun {
        observed: Observed {
            oracle,
            before,
            after,
        },
        conns,
        all_open_at,
    }
}

/// Switches fast keepalive on group by group ([`KEEPALIVE_GROUPS`], B's ends
/// [`KEEPALIVE_STAGGER`] after A's), then off everywhere once
/// [`SCALE_PROBE_PHASE`] has passed; returns how long probing lasted.
fn keepalive_in_groups(conns: &[Conn]) -> Duration {
    let mut schedule: Vec<(Duration, Side, usize)> = (0..KEEPALIVE_GROUPS)
        .flat_map(|g| {
            let at = GROUP_SPACING * g as u32;
            [(at, Side::A, g), (at + KEEPALIVE_STAGGER, Side::B, g)]
        })
        .collect();
    schedule.sort();
    let start = Instant::now();
    for (at, side, group) in schedule {
        sleep_until(start + at);
        for c in conns.iter().skip(group).step_by(KEEPALIVE_GROUPS) {
            match side {
                Side::A => enable_keepalive(&c.client, FAST_KEEPALIVE),
                Side::B => enable_keepalive(c.server(), FAST_KEEPALIVE),
            }
        }
    }
    sleep_until(start + SCALE_PROBE_PHASE);
    for c in conns {
        disable_keepalive(&c.client);
        disable_keepalive(c.server());
    }
    start.elapsed()
}

/// Stops `capture` (if any) and counts its probes and answers, by tshark's
/// analysis and by the matcher.
fn capture_counts(
    capture: Option<&mut Capture<'_>>,
) -> (Option<WireCounts>, Option<WireCounts>, Option<Answers>) {
    match capture {
        Some(cap) => {
            cap.stop();
            (
                Some(wire_counts(cap, "tcp.analysis.keep_alive")),
                Some(wire_counts(cap, "tcp.analysis.keep_alive_ack")),
                Some(cap.answers()),
            )
        }
        None => (None, None, None),
    }
}

/// Sleeps until `t`; returns at once if `t` has passed.
pub fn sleep_until(t: Instant) {
    let now = Instant::now();
    if t > now {
        thread::sleep(t - now);
    }
}

/// Frames matching `filter`, by sender and family, in one tshark pass.
pub fn wire_counts(capture: &Capture<'_>, filter: &str) -> WireCounts {
    let listing = capture.fields(filter, &["ip.src", "ipv6.src"]);
    let mut counts = BTreeMap::new();
    for line in listing.lines().filter(|l| !l.trim().is_empty()) {
        let src: IpAddr = line
            .split('\t')
            .map(str::trim)
            .find(|f| !f.is_empty())
            .and_then(|f| f.parse().ok())
            .unwrap_or_else(|| panic!("tshark line without a source address: {line:?}"));
        let key = if src == IpAddr::from(A_V4) {
            (Side::A, Family::Ipv4)
        } else if src == IpAddr::from(A_V6) {
            (Side::A, Family::Ipv6)
        } else if src == IpAddr::from(B_V4) {
            (Side::B, Family::Ipv4)
        } else if src == IpAddr::from(B_V6) {
            (Side::B, Family::Ipv6)
        } else {
            panic!("frame from unexpected {src} matching {filter}");
        };
        *counts.entry(key).or_default() += 1;
    }
    WireCounts(counts)
}

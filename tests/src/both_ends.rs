//! Both ends probing at once: connections whose two ends have equal keepalive
//! settings switched on at the same moment, so their probes cross every round
//! (A's probe, B's probe, A's ACK to B's probe, B's ACK to A's probe), plus a
//! group whose B ends start a few milliseconds later.
//!
//! Oracles, none of which depends on the daemon:
//! - `TcpExtTCPKeepAlive` of each namespace: the probes each kernel sent;
//! - a capture on B's end matched from the TCP rules ([`crate::answers`]): probes
//!   and answers by prober and family, and how many probes crossed a peer probe;
//! - `TCP_INFO` segment counters of every socket: with keepalive the only traffic
//!   in the window, what a side sent is its probes plus its answers, which checks
//!   the matcher's answers independently of any capture analysis;
//! - `TcpExtTCPACKSkippedSeq`: no answer was suppressed by tcp_invalid_ratelimit,
//!   so every probe must have been answered exactly once.
//!
//! tshark's keep_alive_ack is recorded too, only to show how much it misses.

use std::thread;
use std::time::{Duration, Instant};

use crate::answers::Answers;
use crate::capture::Capture;
use crate::nstat::KEEPALIVE;
use crate::scale::{SegmentTotals, nstat_all, nstat_delta, open_many, sleep_until, wire_counts};
use crate::scenarios::{Observed, Setup, WireCounts};
use crate::sockets::{
    Conn, FAST_KEEPALIVE, disable_keepalive, enable_keepalive, exchange_byte, set_quickack,
};

/// Quiet time after priming, before the baseline: no ACK of the priming
/// exchange is still held by a delayed-ACK timer (at most 200 ms), even on a
/// busy machine.
pub const QUIET: Duration = Duration::from_millis(1000);
/// From keepalive on to keepalive off everywhere: four or five probe rounds at
/// the 1 s idle / 1 s interval of [`FAST_KEEPALIVE`], and fewer than KEEPCNT
/// unanswered in a row is impossible to miss.
pub const PROBE_PHASE: Duration = Duration::from_secs(5);
/// Quiet time after keepalive is off everywhere, before the final sample.
pub const SETTLE: Duration = Duration::from_millis(1500);
/// The offset group's B ends start 1, 2, ... OFFSET_STEPS ms after its A ends.
pub const OFFSET_STEPS: u32 = 5;
pub const OFFSET_STEP: Duration = Duration::from_millis(1);

/// Sizes of the two groups of connections.
#[derive(Clone, Copy, Debug)]
pub struct Groups {
    pub lockstep_v4: usize,
    pub lockstep_v6: usize,
    pub offset_v4: usize,
    pub offset_v6: usize,
}

impl Groups {
    pub fn total(&self) -> usize {
        self.lockstep_v4 + self.lockstep_v6 + self.offset_v4 + self.offset_v6
    }
}

/// Oracle of the both-ends scenario; counts are deltas over the probing window.
#[derive(Debug)]
pub struct BothEndsOracle {
    pub groups: Groups,
    pub kernel_probes_a: u64,
    pub kernel_probes_b: u64,
    /// TcpExtTCPACKSkippedSeq of A and B.
    pub answers_skipped_a: u64,
    pub answers_skipped_b: u64,
    /// TCP_INFO segment counters summed per (side, family).
    pub segments: SegmentTotals,
    /// The matcher's probes and answers, by prober and family.
    pub answers: Answers,
    /// tshark `tcp.analysis.keep_alive_ack`, by sender (for the record only).
    pub tshark_acks: WireCounts,
    /// From keepalive on to keepalive off everywhere.
    pub probe_phase: Duration,
}

/// Runs the scenario; `snapshot` is called right after the oracles' baseline
/// and final samples.
pub fn both_ends_probing<T>(
    setup: &Setup,
    groups: Groups,
    mut snapshot: impl FnMut() -> T,
) -> (Observed<BothEndsOracle, T>, Vec<Conn>) {
    let mut capture = Capture::start(&setup.b, &setup.veth.b_if);
    let mut conns = open_many(&setup.a, &setup.b, groups.lockstep_v4, groups.lockstep_v6);
    conns.extend(open_many(
        &setup.a,
        &setup.b,
        groups.offset_v4,
        groups.offset_v6,
    ));
    exchange_byte(&conns);
    for c in &conns {
        set_quickack(&c.client);
        set_quickack(c.server());
    }
    let (lockstep, offset) = conns.split_at(groups.lockstep_v4 + groups.lockstep_v6);
    thread::sleep(QUIET);

    let seg0 = SegmentTotals::sample(&conns);
    let (a0, b0) = (nstat_all(&setup.a), nstat_all(&setup.b));
    let before = snapshot();

    let start = Instant::now();
    // Lockstep: both ends of a connection within microseconds of each other, so
    // their timers fall in the same timer-wheel slot.
    for c in lockstep {
        enable_keepalive(&c.client, FAST_KEEPALIVE);
        enable_keepalive(c.server(), FAST_KEEPALIVE);
    }
    for c in offset {
        enable_keepalive(&c.client, FAST_KEEPALIVE);
    }
    let offset_start = Instant::now();
    for step in 1..=OFFSET_STEPS {
        sleep_until(offset_start + OFFSET_STEP * step);
        for c in offset
            .iter()
            .skip(step as usize - 1)
            .step_by(OFFSET_STEPS as usize)
        {
            enable_keepalive(c.server(), FAST_KEEPALIVE);
        }
    }
    sleep_until(start + PROBE_PHASE);
    for c in &conns {
        disable_keepalive(&c.client);
        disable_keepalive(c.server());
    }
    let probe_phase = start.elapsed();
    thread::sleep(SETTLE);

    let seg1 = SegmentTotals::sample(&conns);
    let (a1, b1) = (nstat_all(&setup.a), nstat_all(&setup.b));
    let after = snapshot();
    capture.stop();

    let oracle = BothEndsOracle {
        groups,
        kernel_probes_a: nstat_delta(&a0, &a1, KEEPALIVE),
        kernel_probes_b: nstat_delta(&b0, &b1, KEEPALIVE),
        answers_skipped_a: nstat_delta(&a0, &a1, "TcpExtTCPACKSkippedSeq"),
        answers_skipped_b: nstat_delta(&b0, &b1, "TcpExtTCPACKSkippedSeq"),
        segments: seg1.since(&seg0),
        answers: capture.answers(),
        tshark_acks: wire_counts(&capture, "tcp.analysis.keep_alive_ack"),
        probe_phase,
    };
    (
        Observed {
            oracle,
            before,
            after,
        },
        conns,
    )
}

//! Assertions that several integration tests make the same way: one of the daemon's
//! counters against one oracle, or one premise of the oracles, each written once so
//! that every test compares the same quantities with the same message. `ctx` adds the
//! test's evidence (oracle, daemon stderr) to each message.

use crate::answers::Answers;
use crate::both_ends::BothEndsOracle;
use crate::metrics::Samples;
use crate::names::{PROBES, RESETS, ZERO_WINDOW_PROBES};
use crate::replay::LinkStats;
use crate::scale::ScaleOracle;
use crate::scenarios::{ProbeOracle, ResetOracle, Side};
use crate::sockets::{Family, ReadOutcome};

/// An oracle that counted the keepalive probes of its window with the kernels' own
/// TcpExtTCPKeepAlive (nstat) in both namespaces; the daemon runs on A.
pub trait KernelProbes {
    /// Deltas of TcpExtTCPKeepAlive over the window: (in A, in B), the probes each
    /// side's kernel sent.
    fn kernel_probes(&self) -> (u64, u64);

    /// Panics unless the daemon's probes sent equal the probes A's kernel sent.
    fn assert_probes_sent_equal_nstat(
        &self,
        before: &Samples,
        after: &Samples,
        ctx: &dyn Fn() -> String,
    ) {
        assert_eq!(
            after.delta(before, PROBES, &[("direction", "sent")]),
            self.kernel_probes().0,
            "probes sent vs nstat in A; {}",
            ctx()
        );
    }

    /// Panics unless the daemon's probes sent equal the probes A's kernel sent and its
    /// probes received equal the probes B's kernel sent.
    fn assert_probes_equal_nstat(
        &self,
        before: &Samples,
        after: &Samples,
        ctx: &dyn Fn() -> String,
    ) {
        self.assert_probes_sent_equal_nstat(before, after, ctx);
        assert_eq!(
            after.delta(before, PROBES, &[("direction", "received")]),
            self.kernel_probes().1,
            "probes received vs nstat in B; {}",
            ctx()
        );
    }
}

impl KernelProbes for ProbeOracle {
    fn kernel_probes(&self) -> (u64, u64) {
        (self.kernel_probes_a, self.kernel_probes_b)
    }
}

impl KernelProbes for ScaleOracle {
    fn kernel_probes(&self) -> (u64, u64) {
        (self.kernel_probes_a, self.kernel_probes_b)
    }
}

impl KernelProbes for BothEndsOracle {
    fn kernel_probes(&self) -> (u64, u64) {
        (self.kernel_probes_a, self.kernel_probes_b)
    }
}

/// Counts read from nstat by the test itself: (A, B).
impl KernelProbes for (u64, u64) {
    fn kernel_probes(&self) -> (u64, u64) {
        *self
    }
}

/// Panics unless both sides' kernels sent probes and the matcher found, on each side,
/// exactly the probes its kernel sent.
pub fn assert_matcher_probes_equal_nstat(
    m: &Answers,
    kernel: &impl KernelProbes,
    ctx: &dyn Fn() -> String,
) {
    let (a, b) = kernel.kernel_probes();
    for (side, kernel) in [(Side::A, a), (Side::B, b)] {
        assert!(kernel > 0, "no probes from {side:?}; {}", ctx());
        assert_eq!(
            m.counts(|t| t.probes).from(side),
            kernel,
            "harness: matcher's probes of {side:?} vs nstat; {}",
            ctx()
        );
    }
}

/// Panics if either kernel skipped an answer to a probe (TcpExtTCPACKSkippedSeq deltas
/// of A and B): tcp_invalid_ratelimit would make the answers an oracle cannot count.
pub fn assert_no_answer_rate_limited(skipped: (u64, u64), ctx: &dyn Fn() -> String) {
    assert_eq!(
        skipped,
        (0, 0),
        "harness: the kernel rate-limited answers to probes (TcpExtTCPACKSkippedSeq); {}",
        ctx()
    );
}

/// Panics unless every `family` probe of `prober` was answered by exactly one ACK (no
/// reset, no 1-byte or zero-window probe among them) and at least one crossed a probe
/// of the other side: the premise of the tests where both ends probe together.
pub fn assert_answered_once_and_crossed(
    m: &Answers,
    family: Family,
    prober: Side,
    ctx: &dyn Fn() -> String,
) {
    let t = m.get(prober, family);
    // Nothing is lost on the veth and nothing was rate-limited.
    assert_eq!(
        (t.answered, t.reset, t.one_byte, t.zero_window),
        (t.probes, 0, 0, 0),
        "harness: every {family} probe of {prober:?} answered by exactly one ACK; {}",
        ctx()
    );
    assert!(
        t.crossed > 0,
        "harness: no {family} probe of {prober:?} crossed a probe of the other side; {}",
        ctx()
    );
}

/// Panics if the daemon counted anything but plain keepalive in the window: a 1-byte
/// probe (Linux sends none), a zero-window probe or a reset.
pub fn assert_only_keepalive_counted(before: &Samples, after: &Samples, ctx: &dyn Fn() -> String) {
    let d = |name: &str, filters: &[(&str, &str)]| after.delta(before, name, filters);
    assert_eq!(
        d(PROBES, &[("payload_bytes", "1")]),
        0,
        "1-byte probes; {}",
        ctx()
    );
    assert_eq!(
        d(ZERO_WINDOW_PROBES, &[]),
        0,
        "zero-window probes; {}",
        ctx()
    );
    assert_eq!(d(RESETS, &[]), 0, "resets; {}", ctx());
}

/// Panics unless every connection of `o` ended as `ended` says (the application's
/// view) and the daemon counted exactly those as resets with `reason`, in all and per
/// family. Returns how many ended so.
pub fn assert_resets_match_sockets(
    o: &ResetOracle,
    reason: &str,
    ended: fn(&ReadOutcome) -> bool,
    before: &Samples,
    after: &Samples,
    ctx: &dyn Fn() -> String,
) -> u64 {
    let d = |filters: &[(&str, &str)]| after.delta(before, RESETS, filters);
    let count = o.count(None, ended);
    assert_eq!(
        count,
        o.connections(None),
        "not every connection ended with {reason}; {}",
        ctx()
    );
    assert_eq!(
        d(&[("reason", reason)]),
        count,
        "{reason} resets; {}",
        ctx()
    );
    for family in Family::ALL {
        let f = family.label();
        assert_eq!(
            d(&[("reason", reason), ("family", f)]),
            o.count(Some(family), ended),
            "{f} {reason} resets; {}",
            ctx()
        );
    }
    count
}

/// Panics unless every replayed frame crossed the veth and nothing else did: A sent
/// `local` frames and B received them all, B sent `remote` and A received them all
/// (`a` and `b` are the link counters' deltas over the replay).
pub fn assert_link_carried_exactly(a: &LinkStats, b: &LinkStats, local: u64, remote: u64) {
    assert_eq!(
        (a.tx_packets, a.tx_dropped, b.rx_packets),
        (local, 0, local),
        "A -> B: {a:?} {b:?}"
    );
    assert_eq!(
        (b.tx_packets, b.tx_dropped, a.rx_packets),
        (remote, 0, remote),
        "B -> A: {a:?} {b:?}"
    );
}

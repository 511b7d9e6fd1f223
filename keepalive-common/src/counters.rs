//! Layout of the global per-CPU counter array. Totals live here, not in the flow map,
//! so they never go backwards when a connection ends or is evicted.

use crate::{Direction, Family, classify::Verdict};

/// Why keepalive reset a connection.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u32)]
pub enum ResetReason {
    /// This host's keepalive timer gave up and reset the connection.
    Timeout = 0,
    /// A probe this host sent was answered with RST.
    PeerReset = 1,
    /// A probe this host received was answered with RST by this host.
    LocalReset = 2,
}

impl ResetReason {
    pub const ALL: [ResetReason; 3] = [
        ResetReason::Timeout,
        ResetReason::PeerReset,
        ResetReason::LocalReset,
    ];

    pub const fn label(self) -> &'static str {
        match self {
            ResetReason::Timeout => "timeout",
            ResetReason::PeerReset => "peer_reset",
            ResetReason::LocalReset => "local_reset",
        }
    }
}

/// Errors and losses the kernel programs count (exported with `kind` labels).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u32)]
pub enum KernelError {
    /// A frame announced IP/TCP but ended inside a header.
    Truncated = 0,
    /// IP/TCP header fields contradicted each other.
    Malformed = 1,
    /// A new connection could not be added to the flow map.
    FlowInsertFailed = 2,
    /// bpf_probe_read_kernel failed in a socket hook.
    KernelReadFailed = 3,
}

impl KernelError {
    pub const ALL: [KernelError; 4] = [
        KernelError::Truncated,
        KernelError::Malformed,
        KernelError::FlowInsertFailed,
        KernelError::KernelReadFailed,
    ];

    pub const fn label(self) -> &'static str {
        match self {
            KernelError::Truncated => "truncated_frame",
            KernelError::Malformed => "malformed_frame",
            KernelError::FlowInsertFailed => "flow_insert_failed",
            KernelError::KernelReadFailed => "kernel_read_failed",
        }
    }
}

// Each block of slots follows the previous one; its size is the product of its labels.
const DIRECTIONS: u32 = Direction::ALL.len() as u32;
const FAMILIES: u32 = Family::ALL.len() as u32;
const PROBES: u32 = 0; // direction x family x payload_bytes (0 or 1)
const PROBE_ACKS: u32 = PROBES + DIRECTIONS * FAMILIES * 2; // direction x family
const ZERO_WINDOW: u32 = PROBE_ACKS + DIRECTIONS * FAMILIES; // direction x family
const RESETS: u32 = ZERO_WINDOW + DIRECTIONS * FAMILIES; // reason x family
pub const TIMER_PROBES: u32 = RESETS + ResetReason::ALL.len() as u32 * FAMILIES;
const ERRORS: u32 = TIMER_PROBES + 1; // KernelError
/// Flow-map entries the kernel programs created: with the entries the daemon removed
/// and those still present, it tells how many the LRU evicted.
pub const FLOWS_CREATED: u32 = ERRORS + KernelError::ALL.len() as u32;
/// Idle deaths (the keepalive audit): cause (reset, retransmit_timeout) x keepalive (off, on).
const IDLE_FAILURES: u32 = FLOWS_CREATED + 1;
/// tcp_idle_connection_failure_idle_seconds: one slot per bucket, non-cumulative
/// (audit::failure_bucket), then the sum of idle milliseconds.
const FAILURE_IDLE_BUCKET: u32 = IDLE_FAILURES + 4;
pub const FAILURE_IDLE_MS_SUM: u32 = FAILURE_IDLE_BUCKET + crate::audit::FAILURE_IDLE_BUCKETS;
/// Endings whose event did not fit in the ring buffer (their counters are exact).
pub const ENDING_EVENTS_LOST: u32 = FAILURE_IDLE_MS_SUM + 1;
/// Slots in use: 0..USED_SLOTS.
pub const USED_SLOTS: u32 = ENDING_EVENTS_LOST + 1;
/// Entries in the counter array; room is left for growth.
pub const COUNTER_SLOTS: u32 = 64;
const _: () = assert!(USED_SLOTS <= COUNTER_SLOTS);

#[inline(always)]
pub const fn probes(dir: Direction, family: Family, payload_bytes: u32) -> u32 {
    PROBES + (dir as u32) * 4 + (family as u32) * 2 + (payload_bytes & 1)
}

#[inline(always)]
pub const fn probe_acks(probe_dir: Direction, family: Family) -> u32 {
    PROBE_ACKS + (probe_dir as u32) * 2 + family as u32
}

#[inline(always)]
pub const fn zero_window_probes(dir: Direction, family: Family) -> u32 {
    ZERO_WINDOW + (dir as u32) * 2 + family as u32
}

#[inline(always)]
pub const fn resets(reason: ResetReason, family: Family) -> u32 {
    RESETS + (reason as u32) * 2 + family as u32
}

/// An idle death's slot; `cause` is `IdleReset` or `IdleRetransmitTimeout`.
#[inline(always)]
pub const fn idle_failures(cause: crate::audit::EndingKind, keepalive: bool) -> u32 {
    let c = match cause {
        crate::audit::EndingKind::IdleRetransmitTimeout => 1,
        _ => 0,
    };
    IDLE_FAILURES + c * 2 + keepalive as u32
}

/// A bucket of tcp_idle_connection_failure_idle_seconds (from audit::failure_bucket).
#[inline(always)]
pub const fn failure_idle_bucket(bucket: u32) -> u32 {
    let last = crate::audit::FAILURE_IDLE_BUCKETS - 1;
    FAILURE_IDLE_BUCKET + if bucket < last { bucket } else { last }
}

#[inline(always)]
pub const fn error(kind: KernelError) -> u32 {
    ERRORS + kind as u32
}

/// The counter a verdict for a segment travelling in `dir` increments, if any.
#[inline(always)]
pub const fn for_verdict(v: Verdict, dir: Direction, family: Family) -> Option<u32> {
    match v {
        Verdict::Nothing => None,
        Verdict::Probe { payload_bytes } => Some(probes(dir, family, payload_bytes)),
        Verdict::ZeroWindowProbe => Some(zero_window_probes(dir, family)),
        // An answer travels against the probe: the probe's direction is the opposite.
        Verdict::ProbeAck => Some(probe_acks(dir.opposite(), family)),
        Verdict::ProbeReset => Some(resets(
            match dir {
                Direction::Received => ResetReason::PeerReset,
                Direction::Sent => ResetReason::LocalReset,
            },
            family,
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::audit::EndingKind;

    /// Every (metric, labels) combination has its own slot, inside the array.
    #[test]
    fn slots_are_distinct_and_in_range() {
        let mut seen = [false; COUNTER_SLOTS as usize];
        let mut mark = |i: u32| {
            assert!(i < COUNTER_SLOTS, "slot {i} out of range");
            assert!(!seen[i as usize], "slot {i} used twice");
            seen[i as usize] = true;
        };
        for d in Direction::ALL {
            for f in Family::ALL {
                mark(probes(d, f, 0));
                mark(probes(d, f, 1));
                mark(probe_acks(d, f));
                mark(zero_window_probes(d, f));
            }
        }
        for r in ResetReason::ALL {
            for f in Family::ALL {
                mark(resets(r, f));
            }
        }
        mark(TIMER_PROBES);
        for e in KernelError::ALL {
            mark(error(e));
        }
        mark(FLOWS_CREATED);
        for cause in [EndingKind::IdleReset, EndingKind::IdleRetransmitTimeout] {
            mark(idle_failures(cause, false));
            mark(idle_failures(cause, true));
        }
        for b in 0..crate::audit::FAILURE_IDLE_BUCKETS {
            mark(failure_idle_bucket(b));
        }
        mark(FAILURE_IDLE_MS_SUM);
        mark(ENDING_EVENTS_LOST);
        for slot in 0..USED_SLOTS {
            assert!(seen[slot as usize], "slot {slot} in use but never marked");
        }
    }

    #[test]
    fn answers_count_against_the_probe_direction() {
        let f = Family::Ipv6;
        assert_eq!(
            for_verdict(Verdict::ProbeAck, Direction::Received, f),
            Some(probe_acks(Direction::Sent, f))
        );
        assert_eq!(
            for_verdict(Verdict::ProbeReset, Direction::Received, f),
            Some(resets(ResetReason::PeerReset, f))
        );
        assert_eq!(
            for_verdict(Verdict::ProbeReset, Direction::Sent, f),
            Some(resets(ResetReason::LocalReset, f))
        );
        assert_eq!(for_verdict(Verdict::Nothing, Direction::Sent, f), None);
    }
}

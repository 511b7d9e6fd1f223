//! Housekeeping of the kernel flow map: removes connections that ended and reports how
//! full the map is. Totals live in the counter array, so removing entries loses nothing.

use aya::maps::{HashMap, MapData};
use keepalive_common::flow::{FlowKey, FlowState, flow_end};

/// The kernel's flow map (FLOWS in keepalive-ebpf), as the daemon holds it.
pub type FlowMap = HashMap<MapData, FlowKey, FlowState>;

/// Closed connections stay this long so late segments (TIME-WAIT ACKs) find them.
pub const CLOSED_GRACE_NS: u64 = 60_000_000_000;

#[derive(Debug, Default, PartialEq, Eq)]
pub struct SweepResult {
    pub entries: u64,
    pub removed: u64,
    pub read_errors: u64,
}

/// Whether a flow may be forgotten at monotonic time `now_ns`.
pub fn is_stale(state: &FlowState, now_ns: u64) -> bool {
    state.end != flow_end::OPEN && now_ns.saturating_sub(state.last_seen_ns) > CLOSED_GRACE_NS
}

pub fn sweep(map: &mut FlowMap, now_ns: u64) -> SweepResult {
    let mut r = SweepResult::default();
    let mut stale = Vec::new();
    for item in map.iter() {
        match item {
            Ok((key, state)) => {
                r.entries += 1;
                if is_stale(&state, now_ns) {
                    stale.push(key);
                }
            }
            Err(_) => r.read_errors += 1,
        }
    }
    for key in stale {
        // The kernel may have evicted or removed it meanwhile: not an error.
        if map.remove(&key).is_ok() {
            r.removed += 1;
            r.entries -= 1;
        }
    }
    r
}

/// Entries the LRU map evicted: every entry the kernel created is either still there,
/// removed by the daemon's sweep, or evicted (the kernel programs never delete). Counts
/// that moved between the reads can only lower the result; it never goes below zero.
pub fn evictions(created: u64, swept: u64, present: u64) -> u64 {
    created.saturating_sub(swept).saturating_sub(present)
}

/// CLOCK_MONOTONIC in nanoseconds: the clock of bpf_ktime_get_ns().
pub fn monotonic_ns() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: ts is a valid, writable timespec; CLOCK_MONOTONIC always exists.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn evictions_are_what_is_neither_present_nor_swept() {
        assert_eq!(evictions(300, 0, 64), 236);
        assert_eq!(evictions(300, 10, 64), 226);
        assert_eq!(evictions(10, 0, 10), 0);
        // Entries created after `created` was read: no negative evictions.
        assert_eq!(evictions(10, 0, 12), 0);
    }

    #[test]
    fn only_closed_flows_past_the_grace_period_are_stale() {
        let mut st = FlowState {
            last_seen_ns: 1_000,
            ..Default::default()
        };
        let later = 1_000 + CLOSED_GRACE_NS + 1;
        assert!(!is_stale(&st, later), "open flows stay, however idle");
        st.end = flow_end::CLOSED;
        assert!(!is_stale(&st, 1_000 + CLOSED_GRACE_NS));
        assert!(is_stale(&st, later));
        st.end = flow_end::PEER_RESET;
        assert!(is_stale(&st, later));
    }
}

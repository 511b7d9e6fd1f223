//! Opt-in per-port detail: counters for an allowlist of local ports (`--metrics.local-port`),
//! so an operator can watch the database port without unbounded labels.

use crate::{Direction, classify::Verdict, counters::ResetReason};

/// Ports in the allowlist at most.
pub const MAX_PORTS: usize = 16;
/// Counter slots per port: probes and probe ACKs per direction, resets per reason.
pub const PORT_SLOTS: u32 = 8;

#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PortConfig {
    /// Local ports, host byte order; the first `count` are in use.
    pub ports: [u16; MAX_PORTS],
    pub count: u32,
    pub _pad: u32,
}
const _: () = assert!(core::mem::size_of::<PortConfig>() == 40);

impl PortConfig {
    /// Index of `port` in the allowlist. A plain bounded loop: it runs only for
    /// segments that already produced a verdict.
    #[inline(always)]
    pub fn index_of(&self, port: u16) -> Option<u32> {
        let mut i = 0;
        while i < MAX_PORTS {
            if (i as u32) < self.count && self.ports[i] == port {
                return Some(i as u32);
            }
            i += 1;
        }
        None
    }
}

#[inline(always)]
pub const fn probes(dir: Direction) -> u32 {
    dir as u32
}

#[inline(always)]
pub const fn probe_acks(probe_dir: Direction) -> u32 {
    2 + probe_dir as u32
}

#[inline(always)]
pub const fn resets(reason: ResetReason) -> u32 {
    4 + reason as u32
}

/// The per-port slot a verdict for a segment travelling in `dir` counts in, if any
/// (zero-window probes have no per-port series).
#[inline(always)]
pub const fn for_verdict(v: Verdict, dir: Direction) -> Option<u32> {
    match v {
        Verdict::Probe { .. } => Some(probes(dir)),
        Verdict::ProbeAck => Some(probe_acks(dir.opposite())),
        Verdict::ProbeReset => Some(resets(match dir {
            Direction::Received => ResetReason::PeerReset,
            Direction::Sent => ResetReason::LocalReset,
        })),
        Verdict::Nothing | Verdict::ZeroWindowProbe => None,
    }
}

/// Index into the per-port counter array.
#[inline(always)]
pub const fn index(port_index: u32, slot: u32) -> u32 {
    port_index * PORT_SLOTS + slot
}

#[cfg(feature = "user")]
mod pod {
    // SAFETY: repr(C), Copy, integers only; the size assert shows there is no padding.
    unsafe impl aya::Pod for super::PortConfig {}
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn allowlist_lookup_respects_count() {
        let mut c = PortConfig {
            count: 2,
            ..Default::default()
        };
        c.ports[0] = 5432;
        c.ports[1] = 6379;
        c.ports[2] = 8080; // beyond count: not in the list
        assert_eq!(c.index_of(6379), Some(1));
        assert_eq!(c.index_of(8080), None);
        assert_eq!(PortConfig::default().index_of(0), None);
    }

    #[test]
    fn slots_are_distinct_and_fit() {
        let mut all = vec![probes(Direction::Sent), probes(Direction::Received)];
        all.extend([probe_acks(Direction::Sent), probe_acks(Direction::Received)]);
        all.extend(ResetReason::ALL.map(resets));
        let mut sorted = all.clone();
        sorted.sort();
        sorted.dedup();
        assert_eq!(sorted.len(), all.len());
        assert!(all.iter().all(|s| *s < PORT_SLOTS));
        assert_eq!(
            for_verdict(Verdict::ProbeAck, Direction::Received),
            Some(probe_acks(Direction::Sent))
        );
    }
}

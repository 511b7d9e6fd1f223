//! Per-connection state kept in the kernel's LRU hash map, keyed from this host's side.

use crate::{Direction, Family, packet::Segment};

/// A connection as this host sees it: `local` is this host's end whichever way the
/// segment travels (the source on egress, the destination on ingress).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct FlowKey {
    /// Addresses in wire byte order; IPv4 uses word 0 and leaves the rest zero.
    pub local_addr: [u32; 4],
    pub remote_addr: [u32; 4],
    pub local_port: u16,
    pub remote_port: u16,
    /// [`Family`] as u32 (0 = IPv4, 1 = IPv6).
    pub family: u32,
}
const _: () = assert!(core::mem::size_of::<FlowKey>() == 40);

impl FlowKey {
    #[inline(always)]
    pub fn from_segment(seg: &Segment, dir: Direction) -> FlowKey {
        match dir {
            Direction::Sent => FlowKey {
                local_addr: seg.src,
                remote_addr: seg.dst,
                local_port: seg.sport,
                remote_port: seg.dport,
                family: seg.family as u32,
            },
            Direction::Received => FlowKey {
                local_addr: seg.dst,
                remote_addr: seg.src,
                local_port: seg.dport,
                remote_port: seg.sport,
                family: seg.family as u32,
            },
        }
    }

    pub fn family(&self) -> Family {
        if self.family == Family::Ipv6 as u32 {
            Family::Ipv6
        } else {
            Family::Ipv4
        }
    }
}

/// `DirState::flags` bits.
pub mod dir_flags {
    /// `next_seq` holds a value learned from the wire.
    pub const SEQ_KNOWN: u32 = 1 << 0;
    /// The last probe this side sent has not been answered yet.
    pub const PROBE_PENDING: u32 = 1 << 2;
    /// The last window this side advertised was zero.
    pub const WINDOW_ZERO: u32 = 1 << 3;
    /// This side sent a FIN. One FIN is a half-close: the other side may go on
    /// sending, and probing, for hours; the connection is closed when both have.
    pub const FIN_SEEN: u32 = 1 << 4;
}

/// What is known of one direction of a connection (one sender).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct DirState {
    /// Lower bound of the sender's snd_nxt: the highest seq + len, or the highest
    /// ACK the other side sent, whichever is later.
    pub next_seq: u32,
    /// Sequence number of the pending probe (valid with `PROBE_PENDING`).
    pub probe_seq: u32,
    pub flags: u32,
    /// Keepalive probes (0- or 1-byte), zero-window probes and answered probes.
    pub probes: u32,
    pub zero_window_probes: u32,
    pub probe_acks: u32,
    /// Probes in a row that got no answer before the next probe.
    pub unanswered_streak: u32,
    /// With `WINDOW_ZERO`: this side's next_seq when it last announced a zero window.
    /// An ACK from the other side beyond it proves this side sent data since, with an
    /// open window (data announcing a zero window is never skipped).
    pub zero_window_end: u32,
    /// bpf_ktime_get_ns() of the last probe, 0 if none.
    pub last_probe_ns: u64,
}
const _: () = assert!(core::mem::size_of::<DirState>() == 40);

/// `FlowState::end` values: how a tracked connection ended, if keepalive ended it.
pub mod flow_end {
    pub const OPEN: u32 = 0;
    /// Both sides sent FIN, or an unrelated RST was seen: closed, not by keepalive.
    pub const CLOSED: u32 = 1;
    /// A probe this host sent was answered with RST.
    pub const PEER_RESET: u32 = 2;
    /// A probe this host received was answered with RST by this host.
    pub const LOCAL_RESET: u32 = 3;
    /// This host reset the connection while its own keepalive probe was unanswered: the
    /// keepalive timer gave up (inferred on the wire, for the connection view).
    pub const TIMEOUT: u32 = 4;
}

#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct FlowState {
    /// Indexed by [`Direction::index`].
    pub dir: [DirState; 2],
    pub first_seen_ns: u64,
    /// bpf_ktime_get_ns() of the last probe, answer or close (not of every ACK).
    pub last_seen_ns: u64,
    /// One of [`flow_end`].
    pub end: u32,
    pub _pad: u32,
}
const _: () = assert!(core::mem::size_of::<FlowState>() == 104);

#[cfg(feature = "user")]
mod pod {
    // SAFETY: FlowKey, DirState and FlowState are repr(C), Copy, made only of integers
    // and arrays of integers, and the size asserts above show there is no padding.
    unsafe impl aya::Pod for super::FlowKey {}
    unsafe impl aya::Pod for super::FlowState {}
}

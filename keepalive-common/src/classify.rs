//! The keepalive classifier: one segment, one direction, one connection's state in;
//! one [`Verdict`] out. Pure, so the host tests run exactly what the kernel runs.
//!
//! # Rules
//! - **Probe**: ACK, no SYN/FIN/RST, 0 or 1 payload byte, `seq == next_seq - 1` of its
//!   direction. A 1-byte probe must also find everything before it acknowledged
//!   (`acked == next_seq`): the kernel's keepalive timer only fires with nothing in
//!   flight (tcp_keepalive_timer() returns early on `tp->packets_out`), so a 1-byte
//!   segment at `next_seq - 1` that the peer has *not* acknowledged is a retransmission
//!   of the last byte, not a keepalive. (Wireshark calls both keep-alives; we do not.)
//! - **Zero-window probe**: probe-shaped, but the other side last advertised a zero
//!   window. Linux sends these through the same tcp_xmit_probe_skb() with
//!   `seq = snd_una - 1`; they are counted apart and never as keepalives.
//! - **Answer**: the next segment from the other side after a probe. A pure ACK with
//!   `ack == probe seq + 1` answers it; a RST resets it. A probe is never an answer.
//!   Any other segment of the prober's own side supersedes a pending probe.
//!
//! # What the state learns, and from which segments
//! Only small segments (0/1 payload bytes, RST, FIN) reach the classifier; bulk data
//! leaves at the early exit. `next_seq` is still right when a probe can come, because
//! an idle connection's last segment is always a pure ACK (data always wants an
//! acknowledgement), which carries either the sender's own `snd_nxt` (its seq) or,
//! once everything is acknowledged, the other side's `snd_nxt` (its ack). Both raise a
//! lower bound that never passes the true value, so a pure ACK (`seq == snd_nxt`) is
//! never taken for a probe (`seq == next_seq - 1`).
//!
//! A connection first seen mid-idle has no `next_seq` yet: its first probe is learned,
//! not counted, and the peer's answer (ack = probe seq + 1) makes the next one count.

use crate::{
    Direction,
    flow::{DirState, FlowState, dir_flags::*, flow_end},
    packet::{Segment, TCP_ACK, TCP_FIN, TCP_RST},
    seq::seq_max,
};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Verdict {
    Nothing,
    /// A keepalive probe sent in the segment's direction.
    Probe {
        payload_bytes: u32,
    },
    /// A zero-window probe in the segment's direction (not a keepalive).
    ZeroWindowProbe,
    /// The segment answers a probe sent the other way with an ACK.
    ProbeAck,
    /// The segment answers a probe sent the other way with a RST.
    ProbeReset,
}

/// Updates `st` with `seg` travelling in `dir` and says what the segment was.
#[inline(always)]
pub fn classify(st: &mut FlowState, seg: &Segment, dir: Direction, now_ns: u64) -> Verdict {
    st.last_seen_ns = now_ns;
    let (me, other) = split(&mut st.dir, dir);

    if seg.has(TCP_RST) {
        let answered = other.flags & PROBE_PENDING != 0;
        other.flags &= !PROBE_PENDING;
        if answered {
            st.end = match dir {
                // Our RST answers a probe we received.
                Direction::Sent => flow_end::LOCAL_RESET,
                Direction::Received => flow_end::PEER_RESET,
            };
            return Verdict::ProbeReset;
        }
        if st.end == flow_end::OPEN {
            st.end = flow_end::CLOSED;
        }
        return Verdict::Nothing;
    }
    if seg.has(TCP_FIN) || !seg.has(TCP_ACK) {
        me.flags &= !PROBE_PENDING;
        if seg.has(TCP_FIN) && st.end == flow_end::OPEN {
            st.end = flow_end::CLOSED;
        }
        learn_dir(me, other, seg);
        return Verdict::Nothing;
    }

    let probe_shaped = seg.payload_len <= 1
        && me.flags & SEQ_KNOWN != 0
        && seg.seq == me.next_seq.wrapping_sub(1)
        && (seg.payload_len == 0 || (me.flags & ACK_KNOWN != 0 && me.acked == me.next_seq));

    let verdict = if probe_shaped {
        if other.flags & WINDOW_ZERO != 0 {
            me.zero_window_probes = me.zero_window_probes.wrapping_add(1);
            Verdict::ZeroWindowProbe
        } else {
            if me.flags & PROBE_PENDING != 0 {
                me.unanswered_streak = me.unanswered_streak.wrapping_add(1);
            }
            me.flags |= PROBE_PENDING;
            me.probe_seq = seg.seq;
            me.probes = me.probes.wrapping_add(1);
            me.last_probe_ns = now_ns;
            Verdict::Probe {
                payload_bytes: seg.payload_len,
            }
        }
    } else {
        // Anything else from this side supersedes its own pending probe.
        me.flags &= !PROBE_PENDING;
        if seg.payload_len == 0
            && other.flags & PROBE_PENDING != 0
            && seg.ack == other.probe_seq.wrapping_add(1)
        {
            other.flags &= !PROBE_PENDING;
            other.probe_acks = other.probe_acks.wrapping_add(1);
            other.unanswered_streak = 0;
            Verdict::ProbeAck
        } else {
            Verdict::Nothing
        }
    };
    learn_dir(me, other, seg);
    verdict
}

/// Folds what `seg` says about both directions into `st`, without classifying.
#[inline(always)]
pub fn learn(st: &mut FlowState, seg: &Segment, dir: Direction) {
    let (me, other) = split(&mut st.dir, dir);
    learn_dir(me, other, seg);
}

#[inline(always)]
fn learn_dir(me: &mut DirState, other: &mut DirState, seg: &Segment) {
    // FIN occupies one sequence number (RFC 9293 3.4).
    let end = seg
        .seq
        .wrapping_add(seg.payload_len)
        .wrapping_add((seg.flags & TCP_FIN) as u32);
    raise(me, end);
    me.flags = if seg.window == 0 {
        me.flags | WINDOW_ZERO
    } else {
        me.flags & !WINDOW_ZERO
    };
    if seg.has(TCP_ACK) {
        raise(other, seg.ack);
        other.acked = if other.flags & ACK_KNOWN != 0 {
            seq_max(other.acked, seg.ack)
        } else {
            seg.ack
        };
        other.flags |= ACK_KNOWN;
    }
}

#[inline(always)]
fn raise(d: &mut DirState, value: u32) {
    d.next_seq = if d.flags & SEQ_KNOWN != 0 {
        seq_max(d.next_seq, value)
    } else {
        value
    };
    d.flags |= SEQ_KNOWN;
}

#[inline(always)]
fn split(dirs: &mut [DirState; 2], dir: Direction) -> (&mut DirState, &mut DirState) {
    let [sent, received] = dirs;
    match dir {
        Direction::Sent => (sent, received),
        Direction::Received => (received, sent),
    }
}

#[cfg(test)]
#[path = "classify_tests.rs"]
mod tests;

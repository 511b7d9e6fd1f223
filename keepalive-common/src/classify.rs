//! The keepalive classifier: one segment, one direction, one connection's state in;
//! one [`Verdict`] out. Pure, so the host tests run exactly what the kernel runs.
//!
//! # Rules
//! - **Probe**: ACK, no SYN/FIN/RST, 0 or 1 payload byte, `seq == next_seq - 1` of its
//!   direction (Wireshark's keep-alive rule). A *retransmission of exactly the last
//!   byte* has the same shape and is counted as a 1-byte probe: telling them apart needs
//!   to know whether that byte was acknowledged, and those ACKs often ride on data
//!   segments the early exit skips. Linux never sends 1-byte keepalives, so between
//!   Linux hosts `payload_bytes="1"` holds only such retransmissions (and Windows or
//!   old stacks' 1-byte keepalives); the label keeps them apart.
//! - **Zero-window probe**: probe-shaped, but the other side last advertised a zero
//!   window. Linux sends these through the same tcp_xmit_probe_skb() with
//!   `seq = snd_una - 1`; they are counted apart and never as keepalives.
//! - **Answer**: a pending probe is answered by the other side's first pure ACK (no
//!   payload, no SYN/FIN/RST) with `ack == probe seq + 1`, and reset by its RST. A probe
//!   is never an answer. The prober's next probe leaves it unanswered
//!   (`unanswered_streak`).
//! - **Superseded**: decided by what segments mean, not by their order. Only new data
//!   from the prober ends a pending probe without an answer: seen directly (payload or a
//!   FIN), or proven (a later segment of the prober starting beyond the probe, or an ACK
//!   from the other side beyond `probe seq + 1`). A segment that consumes no sequence
//!   space never does: when both ends probe at once, each side's pure ACK to the other's
//!   probe crosses the answer to its own (docs/accuracy.md, "Both ends probing").
//!
//! # What the state learns, and from which segments
//! Only small segments (0/1 payload bytes, RST, FIN) and data announcing a zero window
//! reach the classifier; other data leaves at the early exit. `next_seq` is still right when a probe can come, because
//! an idle connection's last segment is always a pure ACK (data always wants an
//! acknowledgement), which carries either the sender's own `snd_nxt` (its seq) or,
//! once everything is acknowledged, the other side's `snd_nxt` (its ack). Both raise a
//! lower bound that never passes the true value, so a pure ACK (`seq == snd_nxt`) is
//! never taken for a probe (`seq == next_seq - 1`).
//!
//! The zero-window state stays exact the same way: a side's data that announces a zero
//! window is always seen, and an ACK for data sent after that announcement proves the
//! side reopened its window in a segment the early exit skipped.
//!
//! A connection first seen mid-idle has no `next_seq` yet: its first probe is learned,
//! not counted, and the peer's answer (ack = probe seq + 1) makes the next one count.

use crate::{
    Direction,
    flow::{DirState, FlowState, dir_flags::*, flow_end},
    packet::{Segment, TCP_ACK, TCP_FIN, TCP_RST},
    seq::{before, seq_max},
};

// The first state is built here, next to the rules it starts (flow.rs holds only the
// layout, so it need not know the classifier).
impl FlowState {
    /// State for a connection first seen with `seg` (a small ACK-only segment).
    #[inline(always)]
    pub fn first_sighting(seg: &Segment, dir: Direction, now_ns: u64) -> FlowState {
        let mut st = FlowState {
            first_seen_ns: now_ns,
            last_seen_ns: now_ns,
            ..Default::default()
        };
        learn(&mut st, seg, dir);
        st
    }
}

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
///
/// `now_ns` is called only when something worth a timestamp happens (a probe, an
/// answer, a close): reading the clock on every ACK of a bulk transfer costs more than
/// the rest of the classification.
#[inline(always)]
pub fn classify(
    st: &mut FlowState,
    seg: &Segment,
    dir: Direction,
    now_ns: impl FnOnce() -> u64,
) -> Verdict {
    let verdict = classify_inner(st, seg, dir);
    if verdict != Verdict::Nothing || seg.flags & (TCP_FIN | TCP_RST) != 0 {
        let now = now_ns();
        st.last_seen_ns = now;
        if let Verdict::Probe { .. } = verdict {
            st.dir[dir.index()].last_probe_ns = now;
        }
    }
    verdict
}

#[inline(always)]
fn classify_inner(st: &mut FlowState, seg: &Segment, dir: Direction) -> Verdict {
    if seg.has(TCP_RST) {
        return on_reset(st, seg, dir);
    }
    let (me, other) = split(&mut st.dir, dir);
    if seg.has(TCP_FIN) || !seg.has(TCP_ACK) {
        clear(me, PROBE_PENDING);
        if seg.has(TCP_FIN) {
            set(me, FIN_SEEN);
            if other.flags & FIN_SEEN != 0 && st.end == flow_end::OPEN {
                st.end = flow_end::CLOSED;
            }
        }
        learn_dir(me, other, seg);
        return Verdict::Nothing;
    }
    let verdict = on_ack(me, other, seg);
    learn_dir(me, other, seg);
    verdict
}

/// A RST travelling in `dir`: an answer to the other side's pending probe, or the end
/// of the connection (a keepalive timeout when this host resets with its own probe
/// unanswered).
#[inline(always)]
fn on_reset(st: &mut FlowState, seg: &Segment, dir: Direction) -> Verdict {
    let (me, other) = split(&mut st.dir, dir);
    // An ACK beyond the probe shows the prober sent data since: it was superseded.
    let answered = other.flags & PROBE_PENDING != 0
        && !(seg.has(TCP_ACK) && before(other.probe_seq.wrapping_add(1), seg.ack));
    clear(other, PROBE_PENDING);
    if answered {
        st.end = match dir {
            // Our RST answers a probe we received.
            Direction::Sent => flow_end::LOCAL_RESET,
            Direction::Received => flow_end::PEER_RESET,
        };
        return Verdict::ProbeReset;
    }
    if st.end == flow_end::OPEN {
        // This host resets while its own probe is unanswered: what the keepalive
        // timer does when it gives up (tcp_keepalive_timer -> tcp_send_active_reset).
        // Only the connection view uses this; the timeout metric comes from the
        // socket hooks, which know for sure.
        let our_probe_unanswered = dir == Direction::Sent && me.flags & PROBE_PENDING != 0;
        st.end = if our_probe_unanswered {
            flow_end::TIMEOUT
        } else {
            flow_end::CLOSED
        };
    }
    clear(me, PROBE_PENDING);
    Verdict::Nothing
}

/// An ACK without FIN or RST sent by `me`: a probe (keepalive or zero-window), an answer
/// to `other`'s pending probe, or neither.
#[inline(always)]
fn on_ack(me: &mut DirState, other: &mut DirState, seg: &Segment) -> Verdict {
    let probe_shaped =
        seg.payload_len <= 1 && me.flags & SEQ_KNOWN != 0 && seg.seq == me.next_seq.wrapping_sub(1);
    if probe_shaped {
        if other.flags & WINDOW_ZERO != 0 {
            me.zero_window_probes = me.zero_window_probes.wrapping_add(1);
            return Verdict::ZeroWindowProbe;
        }
        if me.flags & PROBE_PENDING != 0 {
            me.unanswered_streak = me.unanswered_streak.wrapping_add(1);
        }
        set(me, PROBE_PENDING);
        me.probe_seq = seg.seq;
        me.probes = me.probes.wrapping_add(1);
        return Verdict::Probe {
            payload_bytes: seg.payload_len,
        };
    }
    // Only new data supersedes this side's own pending probe: a segment that
    // consumes no sequence space (a pure ACK, e.g. our answer to the peer's probe
    // when both ends probe at once) leaves it waiting for its answer.
    if sends_new_data(me, seg) {
        clear(me, PROBE_PENDING);
    }
    if seg.payload_len == 0
        && other.flags & PROBE_PENDING != 0
        && seg.ack == other.probe_seq.wrapping_add(1)
    {
        clear(other, PROBE_PENDING);
        other.probe_acks = other.probe_acks.wrapping_add(1);
        other.unanswered_streak = 0;
        return Verdict::ProbeAck;
    }
    Verdict::Nothing
}

/// Whether `seg` (not probe-shaped, ACK set, no FIN/RST) shows that its sender sent new
/// data after its pending probe: it carries payload (a non-probe segment with payload is
/// new data, as the sender has nothing in flight when it probes), or it starts beyond
/// the probe, so data the early exit skipped came in between.
#[inline(always)]
fn sends_new_data(me: &DirState, seg: &Segment) -> bool {
    seg.payload_len > 0 || before(me.probe_seq.wrapping_add(1), seg.seq)
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
    if seg.window == 0 {
        set(me, WINDOW_ZERO);
        // Not this segment's end: a keepalive announcing the zero window ends one
        // below what this side has sent.
        me.zero_window_end = me.next_seq;
    } else {
        clear(me, WINDOW_ZERO);
    }
    if seg.has(TCP_ACK) {
        // The other side sent data after its last zero-window announcement: that data
        // was skipped by the early exit, so its window was open.
        if other.flags & WINDOW_ZERO != 0 && before(other.zero_window_end, seg.ack) {
            clear(other, WINDOW_ZERO);
        }
        // Acknowledging beyond the other side's pending probe means it sent data since
        // (skipped by the early exit): the probe was superseded, not left unanswered.
        if other.flags & PROBE_PENDING != 0 && before(other.probe_seq.wrapping_add(1), seg.ack) {
            clear(other, PROBE_PENDING);
        }
        raise(other, seg.ack);
    }
}

#[inline(always)]
fn raise(d: &mut DirState, value: u32) {
    let next = if d.flags & SEQ_KNOWN != 0 {
        seq_max(d.next_seq, value)
    } else {
        value
    };
    if next != d.next_seq {
        d.next_seq = next;
    }
    set(d, SEQ_KNOWN);
}

// Writes only on a change. The ingress and egress programs of one connection can run
// at once on two CPUs (both ends probing: our probe leaves on one while theirs arrives
// on the other), and both update both directions' flags without a lock (map values
// of a Rust program carry no BTF, so no bpf_spin_lock). An unconditional
// read-modify-write of a word that did not change (SEQ_KNOWN on every ACK) could put
// back a stale copy over the other CPU's PROBE_PENDING; skipping no-op stores leaves
// only real transitions that can meet, and those follow each other causally (a probe,
// then its answer). Fewer stores also dirty fewer cache lines per packet.
#[inline(always)]
fn set(d: &mut DirState, bit: u32) {
    if d.flags & bit == 0 {
        d.flags |= bit;
    }
}

#[inline(always)]
fn clear(d: &mut DirState, bit: u32) {
    if d.flags & bit != 0 {
        d.flags &= !bit;
    }
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

#[cfg(test)]
#[path = "classify_crossing_tests.rs"]
mod crossing_tests;

//! The reference model: written from the TCP rules and the classifier's documented
//! decisions (the `classify` module doc and docs/accuracy.md), never from classify.rs.
//!
//! It sees every segment, bulk data included, so it knows each side's exact snd_nxt,
//! the highest ACK the other side sent, each side's last advertised window, and when a
//! side sends new data. Its rules:
//! - a keepalive probe is ACK, no SYN/FIN/RST, 0 or 1 payload byte, seq = snd_nxt - 1,
//!   and the other side's last window was not zero (else a zero-window probe);
//! - a pending probe is answered by the other side's first pure ACK (no payload, no
//!   SYN/FIN/RST) acknowledging probe seq + 1, and reset by the other side's RST;
//! - only new data from the prober (sequence space beyond its snd_nxt: payload or FIN)
//!   ends a pending probe without an answer; the prober's next probe replaces it.

use crate::{
    Direction,
    classify::Verdict,
    packet::{Segment, TCP_ACK, TCP_FIN, TCP_RST, TCP_SYN},
};

/// A documented decision of classify.rs: a 1-byte segment at snd_nxt - 1 is a probe
/// even if that byte is unacknowledged, i.e. a retransmission of the last byte counts
/// as a 1-byte probe. `false` is the earlier rule: a 1-byte probe also needs everything
/// acknowledged (`acked == snd_nxt`).
const RETRANSMITTED_LAST_BYTE_IS_PROBE: bool = true;

/// `a` is strictly later than `b` in sequence space.
pub fn later(a: u32, b: u32) -> bool {
    (a.wrapping_sub(b) as i32) > 0
}

fn later_of(a: Option<u32>, b: u32) -> u32 {
    match a {
        Some(a) if later(a, b) => a,
        _ => b,
    }
}

#[derive(Clone, Copy, Debug, Default)]
pub struct Side {
    /// Exact: the highest seq + len (+1 for SYN/FIN) this side sent.
    pub snd_nxt: Option<u32>,
    /// The highest ACK the other side sent for this side's data.
    pub acked: Option<u32>,
    /// The last window this side advertised was zero.
    pub window_zero: bool,
    /// Sequence number of this side's keepalive probe that awaits its answer.
    pub pending: Option<u32>,
    pub probes: u32,
    pub zero_window_probes: u32,
    /// Probes of this side answered by an ACK.
    pub probe_acks: u32,
}

#[derive(Clone, Debug, Default)]
pub struct Model {
    pub side: [Side; 2],
}

impl Model {
    pub fn step(&mut self, dir: Direction, s: &Segment) -> Verdict {
        let (me, other) = (dir.index(), dir.opposite().index());
        let has = |f: u8| s.flags & f != 0;
        if has(TCP_RST) {
            // A RST answers the other side's pending probe; the connection ends here.
            self.side[me].pending = None;
            return match self.side[other].pending.take() {
                Some(_) => Verdict::ProbeReset,
                None => Verdict::Nothing,
            };
        }
        let plain_ack = has(TCP_ACK) && !has(TCP_SYN) && !has(TCP_FIN);
        let m = self.side[me];
        let at_tail = m.snd_nxt.is_some_and(|n| s.seq == n.wrapping_sub(1));
        let all_acked = m.snd_nxt.is_some() && m.acked == m.snd_nxt;
        let one_byte_ok = RETRANSMITTED_LAST_BYTE_IS_PROBE || all_acked;
        let probe =
            plain_ack && s.payload_len <= 1 && at_tail && (s.payload_len == 0 || one_byte_ok);
        let end = s
            .seq
            .wrapping_add(s.payload_len + u32::from(has(TCP_FIN)) + u32::from(has(TCP_SYN)));
        let verdict = if probe && self.side[other].window_zero {
            self.side[me].zero_window_probes += 1;
            Verdict::ZeroWindowProbe
        } else if probe {
            self.side[me].pending = Some(s.seq);
            self.side[me].probes += 1;
            Verdict::Probe {
                payload_bytes: s.payload_len,
            }
        } else {
            let new_data = m.snd_nxt.is_none_or(|n| later(end, n));
            if new_data {
                self.side[me].pending = None;
            }
            let o = &mut self.side[other];
            if plain_ack
                && s.payload_len == 0
                && o.pending.is_some_and(|p| s.ack == p.wrapping_add(1))
            {
                o.pending = None;
                o.probe_acks += 1;
                Verdict::ProbeAck
            } else {
                Verdict::Nothing
            }
        };
        self.side[me].snd_nxt = Some(later_of(self.side[me].snd_nxt, end));
        self.side[me].window_zero = s.window == 0;
        if has(TCP_ACK) {
            self.side[other].acked = Some(later_of(self.side[other].acked, s.ack));
        }
        verdict
    }
}

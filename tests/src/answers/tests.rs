//! The matcher on hand-written segment lists (host tests, no root).

use std::net::{IpAddr, SocketAddr};

use super::decode::parse_fields;
use super::{ACK, Answers, FIN, RST, SYN, Seg, Tally};
use crate::netns::{A_V4, A_V6, B_V4, B_V6};
use crate::scenarios::Side;
use crate::sockets::Family;

/// A connection between A and B in one family; builds its segments.
struct Conn {
    a: SocketAddr,
    b: SocketAddr,
    frames: Vec<Seg>,
}

const WIN: u32 = 502;

impl Conn {
    fn new(family: Family, a_port: u16) -> Conn {
        let (a, b): (IpAddr, IpAddr) = match family {
            Family::Ipv4 => (A_V4.into(), B_V4.into()),
            Family::Ipv6 => (A_V6.into(), B_V6.into()),
        };
        Conn {
            a: SocketAddr::new(a, a_port),
            b: SocketAddr::new(b, 6379),
            frames: Vec::new(),
        }
    }

    /// SYN, SYN-ACK, ACK: A's snd_nxt becomes `a_isn + 1`, B's `b_isn + 1`.
    fn handshake(mut self, a_isn: u32, b_isn: u32) -> Conn {
        let (a1, b1) = (a_isn.wrapping_add(1), b_isn.wrapping_add(1));
        self.push(Side::A, a_isn, 0, 0, SYN, WIN);
        self.push(Side::B, b_isn, a1, 0, SYN | ACK, WIN);
        self.push(Side::A, a1, b1, 0, ACK, WIN);
        self
    }

    fn push(&mut self, from: Side, seq: u32, ack: u32, len: u32, flags: u16, window: u32) {
        let (src, dst) = match from {
            Side::A => (self.a, self.b),
            Side::B => (self.b, self.a),
        };
        self.frames.push(Seg {
            frame: 0,
            time: String::new(),
            src,
            dst,
            seq,
            ack,
            len,
            flags,
            window,
        });
    }

    /// A segment with ACK and the default window.
    fn seg(mut self, from: Side, seq: u32, ack: u32, len: u32) -> Conn {
        self.push(from, seq, ack, len, ACK, WIN);
        self
    }

    fn seg_win(mut self, from: Side, seq: u32, ack: u32, window: u32) -> Conn {
        self.push(from, seq, ack, 0, ACK, window);
        self
    }

    fn flags(mut self, from: Side, seq: u32, ack: u32, flags: u16) -> Conn {
        self.push(from, seq, ack, 0, flags, WIN);
        self
    }
}

/// Numbers the frames of `conns` (interleaved in the given order) and matches them.
fn run(conns: Vec<Vec<Seg>>) -> Answers {
    let mut all: Vec<Seg> = conns.into_iter().flatten().collect();
    for (i, s) in all.iter_mut().enumerate() {
        s.frame = i as u64 + 1;
    }
    Answers::match_segments(&all)
}

fn tally(probes: u64, answered: u64, crossed: u64) -> Tally {
    Tally {
        probes,
        answered,
        crossed,
        ..Tally::default()
    }
}

use Side::{A, B};

// A's snd_nxt is 1000 after the handshake, B's 5000.
fn primed(family: Family) -> Conn {
    Conn::new(family, 40000).handshake(999, 4999)
}

#[test]
fn probe_answered() {
    let c = primed(Family::Ipv4)
        .seg(A, 999, 5000, 0)
        .seg(B, 5000, 1000, 0);
    let m = run(vec![c.frames]);
    assert_eq!(m.get(A, Family::Ipv4), tally(1, 1, 0));
    assert_eq!(m.get(B, Family::Ipv4), Tally::default());
    assert!(m.unanswered.is_empty(), "{m:?}");
}

#[test]
fn crossing_probes_a_first() {
    // A's probe, B's probe (its ack is already A's probe seq + 1), A's pure ACK to
    // B's probe, then B's ACK to A's probe: both probes answered.
    let c = primed(Family::Ipv4)
        .seg(A, 999, 5000, 0)
        .seg(B, 4999, 1000, 0)
        .seg(A, 1000, 5000, 0)
        .seg(B, 5000, 1000, 0);
    let m = run(vec![c.frames]);
    assert_eq!(m.get(A, Family::Ipv4), tally(1, 1, 1));
    assert_eq!(m.get(B, Family::Ipv4), tally(1, 1, 1));
    assert!(m.unanswered.is_empty(), "{m:?}");
}

#[test]
fn crossing_probes_b_first_answers_either_order() {
    for a_answers_first in [true, false] {
        let mut c = primed(Family::Ipv6)
            .seg(B, 4999, 1000, 0)
            .seg(A, 999, 5000, 0);
        c = if a_answers_first {
            c.seg(A, 1000, 5000, 0).seg(B, 5000, 1000, 0)
        } else {
            c.seg(B, 5000, 1000, 0).seg(A, 1000, 5000, 0)
        };
        let m = run(vec![c.frames]);
        assert_eq!(m.get(A, Family::Ipv6), tally(1, 1, 1), "{a_answers_first}");
        assert_eq!(m.get(B, Family::Ipv6), tally(1, 1, 1), "{a_answers_first}");
    }
}

#[test]
fn lockstep_rounds_on_two_connections_interleaved() {
    let round = |c: Conn| {
        c.seg(A, 999, 5000, 0)
            .seg(B, 4999, 1000, 0)
            .seg(A, 1000, 5000, 0)
            .seg(B, 5000, 1000, 0)
    };
    let mut v4 = primed(Family::Ipv4);
    let mut v6 = Conn::new(Family::Ipv6, 40001).handshake(u32::MAX, 7);
    for _ in 0..3 {
        v4 = round(v4);
        // Sequence numbers wrap on this one: A's snd_nxt is 0.
        v6 = v6
            .seg(B, 7, 0, 0)
            .seg(A, u32::MAX, 8, 0)
            .seg(B, 8, 0, 0)
            .seg(A, 0, 8, 0);
    }
    let (f4, f6) = (v4.frames, v6.frames);
    let mut mixed = Vec::new();
    for i in 0..f4.len().max(f6.len()) {
        mixed.extend(f4.get(i).cloned());
        mixed.extend(f6.get(i).cloned());
    }
    let m = run(vec![mixed]);
    for f in Family::ALL {
        assert_eq!(m.get(A, f), tally(3, 3, 3), "{f}: {}", m.summary());
        assert_eq!(m.get(B, f), tally(3, 3, 3), "{f}: {}", m.summary());
    }
}

#[test]
fn peer_probe_is_not_an_answer() {
    let c = primed(Family::Ipv4)
        .seg(A, 999, 5000, 0)
        .seg(B, 4999, 1000, 0);
    let m = run(vec![c.frames]);
    assert_eq!(m.get(A, Family::Ipv4), tally(1, 0, 1));
    assert_eq!(m.get(B, Family::Ipv4), tally(1, 0, 1));
    assert_eq!(m.unanswered.len(), 2, "{m:?}");
}

#[test]
fn one_answer_lost() {
    let c = primed(Family::Ipv4)
        .seg(A, 999, 5000, 0)
        .seg(A, 999, 5000, 0)
        .seg(B, 5000, 1000, 0);
    let m = run(vec![c.frames]);
    assert_eq!(m.get(A, Family::Ipv4), tally(2, 1, 0));
    assert_eq!(m.unanswered.len(), 1);
    assert_eq!(m.unanswered[0].frame, 4);
    assert_eq!(m.unanswered[0].why, "its sender probed again first");
}

#[test]
fn answer_after_the_next_probe_answers_that_one() {
    // The late answer to the first probe is taken for the second probe's; the
    // second probe's own answer then has nothing left to answer.
    let c = primed(Family::Ipv4)
        .seg(A, 999, 5000, 0)
        .seg(A, 999, 5000, 0)
        .seg(B, 5000, 1000, 0)
        .seg(B, 5000, 1000, 0);
    let m = run(vec![c.frames]);
    assert_eq!(m.get(A, Family::Ipv4), tally(2, 1, 0));
    assert_eq!(m.unanswered.len(), 1);
}

#[test]
fn one_byte_probe_answered_by_a_duplicate_ack() {
    let c = primed(Family::Ipv4)
        .seg(A, 1000, 5000, 1)
        .seg(B, 5000, 1001, 0)
        .seg(A, 1000, 5000, 1)
        .seg(B, 5000, 1001, 0);
    let m = run(vec![c.frames]);
    let want = Tally {
        one_byte: 1,
        ..tally(1, 1, 0)
    };
    assert_eq!(m.get(A, Family::Ipv4), want);
}

#[test]
fn zero_window_probe_is_not_a_keepalive() {
    let c = primed(Family::Ipv4)
        .seg_win(B, 5000, 1000, 0)
        .seg(A, 999, 5000, 0)
        .seg_win(B, 5000, 1000, 0)
        .seg(A, 999, 5000, 0)
        // B opens its window; A's next probe-shaped segment is a keepalive.
        .seg_win(B, 5000, 1000, WIN)
        .seg(A, 999, 5000, 0)
        .seg(B, 5000, 1000, 0);
    let m = run(vec![c.frames]);
    let want = Tally {
        zero_window: 2,
        ..tally(1, 1, 0)
    };
    assert_eq!(m.get(A, Family::Ipv4), want);
    assert!(m.unanswered.is_empty(), "{m:?}");
}

#[test]
fn data_crossing_a_probe() {
    // B's data carries ack = probe seq + 1 but new data: not the answer. A
    // acknowledges the data, then B's duplicate ACK answers the probe.
    let c = primed(Family::Ipv4)
        .seg(A, 999, 5000, 0)
        .seg(B, 5000, 1000, 100)
        .seg(A, 1000, 5100, 0)
        .seg(B, 5100, 1000, 0);
    let m = run(vec![c.frames]);
    assert_eq!(m.get(A, Family::Ipv4), tally(1, 1, 0));
    assert_eq!(m.get(B, Family::Ipv4), Tally::default());
}

#[test]
fn prober_data_after_the_probe() {
    // Answered before the data's ACK.
    let c = primed(Family::Ipv4)
        .seg(A, 999, 5000, 0)
        .seg(A, 1000, 5000, 10)
        .seg(B, 5000, 1000, 0)
        .seg(B, 5000, 1010, 0);
    let m = run(vec![c.frames]);
    assert_eq!(m.get(A, Family::Ipv4), tally(1, 1, 0));
    // The answer lost: the data's ACK is not taken for it.
    let c = primed(Family::Ipv4)
        .seg(A, 999, 5000, 0)
        .seg(A, 1000, 5000, 10)
        .seg(B, 5000, 1010, 0);
    let m = run(vec![c.frames]);
    assert_eq!(m.get(A, Family::Ipv4), tally(1, 0, 0));
    assert_eq!(m.unanswered[0].why, "the peer acknowledged beyond it");
}

#[test]
fn reset_answers_a_probe() {
    let c = primed(Family::Ipv6)
        .seg(A, 999, 5000, 0)
        .flags(B, 5000, 0, RST);
    let m = run(vec![c.frames]);
    let want = Tally {
        reset: 1,
        ..tally(1, 0, 0)
    };
    assert_eq!(m.get(A, Family::Ipv6), want);
    assert!(m.unanswered.is_empty(), "{m:?}");
}

#[test]
fn fin_is_neither_probe_nor_answer_and_takes_a_sequence_number() {
    // After A's FIN its snd_nxt is 1001: a segment with seq 1000 is A's ACK, not a
    // probe; seq 1000 with FIN is the FIN's retransmission.
    let c = primed(Family::Ipv4)
        .flags(A, 1000, 5000, FIN | ACK)
        .seg(B, 5000, 1001, 0)
        .flags(A, 1000, 5000, FIN | ACK)
        .seg(A, 1001, 5000, 0);
    let m = run(vec![c.frames]);
    assert_eq!(m.get(A, Family::Ipv4), Tally::default());
    assert_eq!(m.get(B, Family::Ipv4), Tally::default());
}

#[test]
fn mid_stream_connection_learns_first() {
    // No handshake: A's first segment only teaches its snd_nxt.
    let c = Conn::new(Family::Ipv4, 40002)
        .seg(A, 999, 5000, 0)
        .seg(B, 5000, 1000, 0)
        .seg(A, 999, 5000, 0)
        .seg(B, 5000, 1000, 0);
    let m = run(vec![c.frames]);
    assert_eq!(m.get(A, Family::Ipv4), tally(0, 0, 0));
}

#[test]
fn parses_tshark_fields() {
    let text = "1\t0.000000000\t192.0.2.1\t\t192.0.2.2\t\t40000\t6379\t999\t\t0\t0x0002\t64240\n\
                2\t0.000100000\t\t2001:db8::2\t\t2001:db8::1\t6379\t40000\t4999\t1000\t0\t0x0012\t65160\n";
    let segs = parse_fields(text);
    assert_eq!(segs.len(), 2);
    assert_eq!(segs[0].flags, SYN);
    assert_eq!(segs[0].ack, 0);
    assert_eq!(segs[0].src, "192.0.2.1:40000".parse().unwrap());
    assert_eq!(segs[1].flags, SYN | ACK);
    assert_eq!(segs[1].ack, 1000);
    assert_eq!(segs[1].dst, "[2001:db8::1]:40000".parse().unwrap());
    assert_eq!(segs[1].window, 65160);
}

#[test]
#[should_panic(expected = "not exactly one IP header")]
fn rejects_tunnelled_frames() {
    parse_fields("1\t0\t192.0.2.1,10.0.0.1\t2001:db8::1\t192.0.2.2\t\t1\t2\t3\t4\t0\t0x0010\t5\n");
}

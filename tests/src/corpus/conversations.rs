//! The scripted conversations. Each one is written by one function from a [`Shape`]
//! and the generator's random numbers; every frame gets its [`Kind`] and, where tshark
//! is expected to disagree with the daemon, the documented [`Difference`].

mod windows;

use super::script::{Script, Shape};
use super::wire::{ACK, PSH};
use super::{Difference, Frame, Kind, Origin, Rng};

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Scenario {
    /// Probes (0 or 1 byte) answered by ACKs, some after unanswered retries; D-SACK
    /// answers to 1-byte probes when SACK is on; sometimes an orderly close.
    Keepalive,
    /// Both ends probe in turn.
    BothEnds,
    /// Both ends probe at once: each end's answer to the other's probe supersedes its
    /// own pending probe, whose answer then counts nowhere.
    CrossingProbes,
    /// A probe answered by RST (with or without ACK); or an unrelated RST after an
    /// answered probe, or after the prober superseded its probe with data (the RST
    /// then acknowledges that data, or follows the peer's ACK of it).
    ResetAnswer,
    /// Unanswered probes, then the prober's own RST (keepalive timeout).
    Timeout,
    /// Linux zero-window probes (0 bytes at snd_una - 1, or 1 byte) and their
    /// zero-window ACKs; then the window opens and later keepalives count.
    ZeroWindow,
    /// Zero-window probes; then the window reopens on a data segment (which the
    /// daemon's early exit skips: it learns from the ACK of that data), or the data
    /// still announces a zero window and the next probe is a zero-window probe again.
    ZeroWindowReopenedByData,
    /// BSD/Windows-style zero-window probes: 1 new byte at snd_nxt, retransmitted.
    NewByteZeroWindow,
    /// 1 byte of data whose ACK is lost, retransmitted once or twice, then a probe.
    LastByteRetransmission,
    /// The capture starts with a probe of an idle connection.
    MidIdleProbeFirst,
    /// The capture starts with the peer's pure ACK of an idle connection.
    MidIdleAckFirst,
    /// The prober's snd_nxt is exactly 0 (probe seq 0xffffffff).
    WrapToZero,
    /// Probes before and after the prober's sequence numbers wrap around 2^32.
    WrapAcross,
    /// The ACK answering a probe advertises a new window.
    AnswerWithNewWindow,
    /// A probe answered by data instead of a pure ACK.
    AnswerWithData,
    /// One end sent its FIN (FIN_WAIT2); the other (CLOSE_WAIT) keeps probing and is
    /// answered: the FIN's sequence number must count in the answerer's snd_nxt.
    HalfClosed,
}

impl Scenario {
    pub const ALL: [Scenario; 16] = [
        Scenario::Keepalive,
        Scenario::BothEnds,
        Scenario::CrossingProbes,
        Scenario::ResetAnswer,
        Scenario::Timeout,
        Scenario::ZeroWindow,
        Scenario::ZeroWindowReopenedByData,
        Scenario::NewByteZeroWindow,
        Scenario::LastByteRetransmission,
        Scenario::MidIdleProbeFirst,
        Scenario::MidIdleAckFirst,
        Scenario::WrapToZero,
        Scenario::WrapAcross,
        Scenario::AnswerWithNewWindow,
        Scenario::AnswerWithData,
        Scenario::HalfClosed,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Scenario::Keepalive => "keepalive",
            Scenario::BothEnds => "both_ends",
            Scenario::CrossingProbes => "crossing_probes",
            Scenario::ResetAnswer => "reset_answer",
            Scenario::Timeout => "timeout",
            Scenario::ZeroWindow => "zero_window",
            Scenario::ZeroWindowReopenedByData => "zero_window_reopened_by_data",
            Scenario::NewByteZeroWindow => "new_byte_zero_window",
            Scenario::LastByteRetransmission => "last_byte_retransmission",
            Scenario::MidIdleProbeFirst => "mid_idle_probe_first",
            Scenario::MidIdleAckFirst => "mid_idle_ack_first",
            Scenario::WrapToZero => "wrap_to_zero",
            Scenario::WrapAcross => "wrap_across",
            Scenario::AnswerWithNewWindow => "answer_with_new_window",
            Scenario::AnswerWithData => "answer_with_data",
            Scenario::HalfClosed => "half_closed",
        }
    }
}

/// Writes one conversation of `scenario`.
pub fn write(scenario: Scenario, shape: Shape, rng: &mut Rng) -> Vec<Frame> {
    let prober = rng.pick(&[Origin::Local, Origin::Remote]);
    let payload = payload(rng);
    let s = match scenario {
        Scenario::Keepalive => keepalive(shape, rng, prober, payload),
        Scenario::BothEnds => both_ends(shape, rng, prober),
        Scenario::CrossingProbes => crossing(shape, rng, prober),
        Scenario::ResetAnswer => reset_answer(shape, rng, prober, payload),
        Scenario::Timeout => timeout(shape, rng, prober, payload),
        Scenario::ZeroWindow => windows::zero_window(shape, rng, prober),
        Scenario::ZeroWindowReopenedByData => {
            windows::reopened_by_data(shape, rng, prober, payload)
        }
        Scenario::NewByteZeroWindow => windows::new_byte_zero_window(shape, rng, prober, payload),
        Scenario::LastByteRetransmission => last_byte(shape, rng, prober, payload),
        Scenario::MidIdleProbeFirst => mid_idle(shape, rng, prober, payload, true),
        Scenario::MidIdleAckFirst => mid_idle(shape, rng, prober, payload, false),
        Scenario::WrapToZero => wrap_to_zero(shape, rng, prober, payload),
        Scenario::WrapAcross => wrap_across(shape, rng, prober, payload),
        Scenario::AnswerWithNewWindow => new_window(shape, rng, prober, payload),
        Scenario::AnswerWithData => data_answer(shape, rng, prober, payload),
        Scenario::HalfClosed => half_closed(shape, rng, prober, payload),
    };
    s.into_frames()
}

/// Probe payload: Linux sends none; Windows and old BSDs send one byte.
pub(super) fn payload(rng: &mut Rng) -> usize {
    usize::from(rng.chance(30))
}

fn windows(rng: &mut Rng) -> (u16, u16) {
    (rng.range(2048, 65535) as u16, rng.range(2048, 65535) as u16)
}

pub(super) fn idle(s: &mut Script, rng: &mut Rng) {
    s.wait_ms(rng.range(2_000, 20_000));
}

fn interval(s: &mut Script, rng: &mut Rng) {
    s.wait_ms(rng.range(1_000, 15_000));
}

/// Request size: mostly bulk, sometimes a single byte (which the classifier sees).
fn request(rng: &mut Rng) -> usize {
    if rng.chance(10) {
        1
    } else {
        rng.range(2, 600) as usize
    }
}

/// A connection opened by a random end, with 1-3 request/response exchanges, idle.
fn opened_with(shape: Shape, rng: &mut Rng, isns: (u32, u32)) -> Script {
    let mut s = Script::new(shape, isns.0, isns.1, windows(rng));
    let client = rng.pick(&[Origin::Local, Origin::Remote]);
    s.handshake(client);
    for _ in 0..rng.range(1, 3) {
        s.wait_ms(rng.range(1, 500));
        let (req, resp) = (request(rng), rng.range(2, 1400) as usize);
        s.exchange(client, req, resp);
    }
    idle(&mut s, rng);
    s
}

pub(super) fn opened(shape: Shape, rng: &mut Rng) -> Script {
    let isns = (rng.isn(), rng.isn());
    opened_with(shape, rng, isns)
}

fn keepalive(shape: Shape, rng: &mut Rng, p: Origin, pay: usize) -> Script {
    let mut s = opened(shape, rng);
    for _ in 0..rng.range(1, 4) {
        let unanswered = if rng.chance(25) { rng.range(1, 2) } else { 0 };
        for _ in 0..unanswered {
            s.probe(p, pay, Kind::Probe);
            interval(&mut s, rng);
        }
        s.probe_round(p, pay);
        interval(&mut s, rng);
    }
    if rng.chance(50) {
        let first = rng.pick(&[Origin::Local, Origin::Remote]);
        s.close(first);
    }
    s
}

fn both_ends(shape: Shape, rng: &mut Rng, first: Origin) -> Script {
    let mut s = opened(shape, rng);
    let pays = [payload(rng), payload(rng)];
    for round in 0..rng.range(2, 5) {
        let p = if round % 2 == 0 { first } else { first.peer() };
        s.probe_round(p, pays[(round % 2) as usize]);
        interval(&mut s, rng);
    }
    s
}

fn crossing(shape: Shape, rng: &mut Rng, p: Origin) -> Script {
    let mut s = opened(shape, rng);
    let q = p.peer();
    let (pay_p, pay_q) = (payload(rng), payload(rng));
    s.probe(p, pay_p, Kind::Probe);
    s.wait_us(rng.range(5, 50));
    s.probe(q, pay_q, Kind::Probe);
    s.wait_rtt();
    // Each end answers the other's probe; the answers cross. Neither consumes sequence
    // space, so neither supersedes its sender's own probe: both count. tshark flags
    // only the first (its keep_alive_ack wants the other direction's last segment to
    // be the probe, and by the second answer it is the first answer).
    let (first, second, pay_first, pay_second) = if rng.chance(50) {
        (p, q, pay_q, pay_p)
    } else {
        (q, p, pay_p, pay_q)
    };
    s.answer(first, pay_first, Kind::ProbeAck);
    s.wait_us(rng.range(5, 50));
    let j = s.answer(second, pay_second, Kind::ProbeAck);
    s.differs(j, Difference::CrossingAnswerTsharkMissed);
    interval(&mut s, rng);
    s.probe_round(p, pay_p);
    s
}

fn reset_answer(shape: Shape, rng: &mut Rng, p: Origin, pay: usize) -> Script {
    let mut s = opened(shape, rng);
    let q = p.peer();
    let answered_first = rng.chance(50);
    if answered_first {
        s.probe_round(p, pay);
        interval(&mut s, rng);
    }
    if answered_first && rng.chance(30) {
        // Nothing pending: an ordinary reset.
        s.rst(q, rng.chance(50), Kind::Rst);
        return s;
    }
    if rng.chance(30) {
        // The probe goes unanswered and the prober sends data (skipped by the early
        // exit): the peer's ACK or RST+ACK acknowledges beyond the probe, which shows
        // the probe was superseded. (A RST without ACK right after the data would look
        // exactly like an answer to the probe: see docs/accuracy.md.)
        s.probe(p, pay, Kind::Probe);
        interval(&mut s, rng);
        s.data(p, rng.range(2, 1400) as usize);
        s.wait_rtt();
        if rng.chance(50) {
            s.ack(q, Kind::Ack);
            interval(&mut s, rng);
            s.rst(q, rng.chance(50), Kind::Rst);
        } else {
            s.rst(q, true, Kind::Rst);
        }
        return s;
    }
    for _ in 0..rng.range(0, 1) {
        s.probe(p, pay, Kind::Probe);
        interval(&mut s, rng);
    }
    s.probe(p, pay, Kind::Probe);
    s.wait_rtt();
    s.rst(q, rng.chance(50), Kind::ProbeRst);
    s
}

fn timeout(shape: Shape, rng: &mut Rng, p: Origin, pay: usize) -> Script {
    let mut s = opened(shape, rng);
    if rng.chance(50) {
        s.probe_round(p, pay);
        interval(&mut s, rng);
    }
    for _ in 0..rng.range(2, 5) {
        s.probe(p, pay, Kind::Probe);
        interval(&mut s, rng);
    }
    s.rst(p, true, Kind::Rst);
    s
}

fn last_byte(shape: Shape, rng: &mut Rng, p: Origin, pay: usize) -> Script {
    let mut s = opened(shape, rng);
    let q = p.peer();
    let x = s.nxt(p);
    s.data(p, 1); // its ACK is lost
    let mut rto = 200;
    for _ in 0..rng.range(1, 2) {
        s.wait_ms(rto);
        rto *= 2;
        let ack = s.nxt(q);
        // Probe-shaped (seq = snd_nxt - 1, 1 byte): a 1-byte probe for both.
        s.segment(p, Kind::Probe, x, ack, PSH | ACK, 1, &[]);
    }
    s.wait_rtt();
    // The byte did arrive the first time: D-SACK when SACK is on. It acknowledges
    // probe seq + 1: the probe's answer for us; tshark wants a repeated ACK.
    let i = s.answer(q, 1, Kind::ProbeAck);
    s.differs(i, Difference::AckOfRetransmittedLastByte);
    idle(&mut s, rng);
    s.probe_round(p, pay);
    s
}

fn mid_idle(shape: Shape, rng: &mut Rng, p: Origin, pay: usize, probe_first: bool) -> Script {
    let (pl, pr) = (rng.isn(), rng.isn());
    let mut s = Script::new(shape, pl, pr, windows(rng));
    let q = p.peer();
    if probe_first {
        // No history: the daemon learns from it and its answer, counts neither.
        s.probe(p, pay, Kind::UnknownFlowProbe);
        s.wait_rtt();
        s.answer(q, pay, Kind::UncountedAnswer);
    } else {
        s.ack(q, Kind::Ack);
    }
    for round in 0..rng.range(1, 3) {
        interval(&mut s, rng);
        let i = s.probe(p, pay, Kind::Probe);
        s.wait_rtt();
        let j = s.answer(q, pay, Kind::ProbeAck);
        let missed = if round == 0 && !probe_first {
            Some(Difference::FirstSegmentOfItsEnd)
        } else if pay == 0 {
            Some(Difference::ZeroByteProbeAfterCaptureStartedOnOne)
        } else {
            None
        };
        if let Some(d) = missed {
            s.differs(i, d);
            s.differs(j, Difference::AnswerToProbeTsharkMissed);
        }
    }
    s
}

fn wrap_to_zero(shape: Shape, rng: &mut Rng, p: Origin, pay: usize) -> Script {
    let client = rng.pick(&[Origin::Local, Origin::Remote]);
    let (req, resp) = (request(rng), rng.range(2, 1400) as usize);
    let sent_by_p = if p == client { req } else { resp };
    // snd_nxt of p after the SYN and its data is exactly 2^32 = 0.
    let isn_p = 0u32.wrapping_sub(1 + sent_by_p as u32);
    let isn_q = rng.isn();
    let (l, r) = match p {
        Origin::Local => (isn_p, isn_q),
        Origin::Remote => (isn_q, isn_p),
    };
    let mut s = Script::new(shape, l, r, windows(rng));
    s.handshake(client);
    s.wait_ms(rng.range(1, 500));
    s.exchange(client, req, resp);
    assert_eq!(s.nxt(p), 0);
    idle(&mut s, rng);
    for round in 0..rng.range(2, 3) {
        let i = s.probe(p, pay, Kind::Probe);
        s.wait_rtt();
        let j = s.answer(p.peer(), pay, Kind::ProbeAck);
        if round > 0 && pay == 0 {
            s.differs(i, Difference::ZeroByteProbeAtSndNxtZero);
            s.differs(j, Difference::AnswerToProbeTsharkMissed);
        }
        interval(&mut s, rng);
    }
    s
}

fn wrap_across(shape: Shape, rng: &mut Rng, p: Origin, pay: usize) -> Script {
    let isn_p = 0u32.wrapping_sub(rng.range(2_000, 3_000) as u32);
    let isn_q = rng.isn();
    let (l, r) = match p {
        Origin::Local => (isn_p, isn_q),
        Origin::Remote => (isn_q, isn_p),
    };
    let mut s = Script::new(shape, l, r, windows(rng));
    let client = rng.pick(&[Origin::Local, Origin::Remote]);
    s.handshake(client);
    s.exchange(
        client,
        rng.range(2, 900) as usize,
        rng.range(2, 900) as usize,
    );
    idle(&mut s, rng);
    s.probe_round(p, pay);
    interval(&mut s, rng);
    // Across the wrap.
    for _ in 0..3 {
        s.data(p, 1400);
        s.wait_us(20);
    }
    s.wait_rtt();
    s.ack(p.peer(), Kind::Ack);
    assert!(s.nxt(p) < 1 << 20, "p's sequence numbers wrapped");
    idle(&mut s, rng);
    for _ in 0..rng.range(1, 2) {
        s.probe_round(p, pay);
        interval(&mut s, rng);
    }
    s
}

fn new_window(shape: Shape, rng: &mut Rng, p: Origin, pay: usize) -> Script {
    let mut s = opened(shape, rng);
    let q = p.peer();
    s.probe(p, pay, Kind::Probe);
    s.wait_rtt();
    let w = s.window(q);
    let new = if w > 40_000 { w - 1_000 } else { w + 1_000 };
    s.set_window(q, new);
    let i = s.answer(q, pay, Kind::ProbeAck);
    s.differs(i, Difference::AnswerWithNewWindow);
    interval(&mut s, rng);
    s.probe_round(p, pay);
    s
}

fn data_answer(shape: Shape, rng: &mut Rng, p: Origin, pay: usize) -> Script {
    let mut s = opened(shape, rng);
    let q = p.peer();
    s.probe(p, pay, Kind::Probe);
    s.wait_rtt();
    s.data(q, rng.range(2, 1400) as usize);
    s.wait_rtt();
    s.ack(p, Kind::Ack);
    interval(&mut s, rng);
    s.probe_round(p, pay);
    s
}

fn half_closed(shape: Shape, rng: &mut Rng, p: Origin, pay: usize) -> Script {
    let mut s = opened(shape, rng);
    let f = p.peer();
    let (seq, ack) = (s.nxt(f), s.nxt(p));
    s.segment(f, Kind::Fin, seq, ack, super::wire::FIN | ACK, 0, &[]);
    s.wait_rtt();
    s.ack(p, Kind::Ack);
    idle(&mut s, rng);
    for _ in 0..rng.range(1, 3) {
        s.probe_round(p, pay);
        interval(&mut s, rng);
    }
    if rng.chance(50) {
        let (seq, ack) = (s.nxt(p), s.nxt(f));
        s.segment(p, Kind::Fin, seq, ack, super::wire::FIN | ACK, 0, &[]);
        s.wait_rtt();
        s.ack(f, Kind::Ack);
    }
    s
}

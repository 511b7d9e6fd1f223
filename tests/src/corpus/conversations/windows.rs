//! The zero-window scenarios: Linux zero-window probes, windows reopened by data the
//! early exit skips, and BSD/Windows-style probes that send a new byte.

use super::super::script::{Script, Shape};
use super::super::wire::ACK;
use super::super::{Difference, Kind, Origin, Rng};
use super::{idle, opened, payload};

/// `p` sends bulk data until `q`'s window is zero; `q` acknowledges it all.
fn fill_window(s: &mut Script, rng: &mut Rng, p: Origin) {
    for _ in 0..rng.range(2, 5) {
        s.data(p, 1400);
        s.wait_us(20);
    }
    s.wait_rtt();
    s.set_window(p.peer(), 0);
    if rng.chance(30) {
        // Announced on data (which the daemon must see to know the window is zero).
        let len = rng.range(2, 1400) as usize;
        s.data(p.peer(), len);
        s.wait_rtt();
        s.ack(p, Kind::Ack);
    } else {
        s.ack(p.peer(), Kind::Ack);
    }
}

pub(super) fn zero_window(shape: Shape, rng: &mut Rng, p: Origin) -> Script {
    let mut s = opened(shape, rng);
    let q = p.peer();
    let open_window = s.window(q);
    fill_window(&mut s, rng, p);
    // A 1-byte probe into a zero window is what a Windows keepalive looks like while
    // the peer's window is closed; by the rules it is a zero-window probe too.
    let pay = usize::from(rng.chance(20));
    let mut backoff = 200;
    for _ in 0..rng.range(1, 5) {
        s.wait_ms(backoff);
        backoff *= 2;
        let i = s.probe(p, pay, Kind::ZeroWindowProbe);
        s.differs(i, Difference::ZeroWindowProbeIsKeepAliveForTshark);
        s.wait_rtt();
        s.answer(q, pay, Kind::ZeroWindowAck);
    }
    s.wait_ms(rng.range(10, 3_000));
    s.set_window(q, open_window);
    s.ack(q, Kind::Ack); // window update
    s.wait_rtt();
    s.data(p, 1000);
    s.wait_rtt();
    s.ack(q, Kind::Ack);
    idle(&mut s, rng);
    let pay = payload(rng);
    s.probe_round(p, pay);
    s
}

pub(super) fn reopened_by_data(shape: Shape, rng: &mut Rng, p: Origin, pay: usize) -> Script {
    let mut s = opened(shape, rng);
    let q = p.peer();
    let open_window = s.window(q);
    fill_window(&mut s, rng, p);
    for _ in 0..rng.range(1, 2) {
        s.wait_ms(200);
        let i = s.probe(p, 0, Kind::ZeroWindowProbe);
        s.differs(i, Difference::ZeroWindowProbeIsKeepAliveForTshark);
        s.wait_rtt();
        s.answer(q, 0, Kind::ZeroWindowAck);
    }
    s.wait_ms(rng.range(10, 2_000));
    let reopened = rng.chance(60);
    if reopened {
        s.set_window(q, open_window);
    }
    // q's data: with an open window the early exit skips it, and p's ACK of it is
    // what tells the daemon the window reopened.
    let len = rng.range(2, 1400) as usize;
    s.data(q, len);
    s.wait_rtt();
    s.ack(p, Kind::Ack);
    idle(&mut s, rng);
    if !reopened {
        let i = s.probe(p, pay, Kind::ZeroWindowProbe);
        s.differs(i, Difference::ZeroWindowProbeIsKeepAliveForTshark);
        s.wait_rtt();
        s.answer(q, pay, Kind::ZeroWindowAck);
        s.wait_ms(rng.range(10, 2_000));
        s.set_window(q, open_window);
        s.ack(q, Kind::Ack); // window update
        idle(&mut s, rng);
    }
    s.probe_round(p, pay);
    s
}

pub(super) fn new_byte_zero_window(shape: Shape, rng: &mut Rng, p: Origin, pay: usize) -> Script {
    let mut s = opened(shape, rng);
    let q = p.peer();
    let open_window = s.window(q);
    fill_window(&mut s, rng, p);
    let x = s.nxt(p);
    let tries = rng.range(1, 4);
    let mut backoff = 500;
    for n in 1..=tries {
        s.wait_ms(backoff);
        backoff *= 2;
        let ack = s.nxt(q);
        if n == 1 {
            // seq = snd_nxt: not probe-shaped.
            let i = s.segment(p, Kind::NewByteIntoZeroWindow, x, ack, ACK, 1, &[]);
            s.differs(i, Difference::NewByteZeroWindowProbe);
        } else {
            // The retransmission is at snd_nxt - 1 with the peer's window zero.
            s.segment(p, Kind::ZeroWindowProbe, x, ack, ACK, 1, &[]);
        }
        s.wait_rtt();
        let q_seq = s.nxt(q);
        if n < tries {
            s.segment(q, Kind::ZeroWindowAck, q_seq, x, ACK, 0, &[]);
        } else {
            // The last try finds room: the byte is taken and the window opens.
            s.set_window(q, open_window);
            s.segment(q, Kind::Ack, q_seq, x.wrapping_add(1), ACK, 0, &[]);
        }
    }
    s.wait_rtt();
    s.data(p, 800);
    s.wait_rtt();
    s.ack(q, Kind::Ack);
    idle(&mut s, rng);
    s.probe_round(p, pay);
    s
}

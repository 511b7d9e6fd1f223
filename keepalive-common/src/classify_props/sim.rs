//! Conversations ([`Conv`]): scripts of realistic TCP actions played by a small
//! simulator ([`Sim`]) that keeps seq/ack consistent with what each side sent and
//! received, and the orders in which one host's hooks can see them ([`hook_order`]).
//!
//! Every segment records how many of the other side's segments its sender had received
//! when it sent it. Most segments are sent after everything before them arrived; the
//! crossing acts send some before (both ends probing at once, data crossing a probe,
//! answers delayed past the next probe), as real peers with equal keepalive settings do.

use crate::{
    Direction, Family,
    packet::{Segment, TCP_ACK, TCP_FIN, TCP_PSH, TCP_RST},
};

/// What the other side does after a keepalive probe.
#[derive(Clone, Copy, Debug)]
pub enum Answer {
    Ack,
    /// Rate-limited or lost.
    Silent,
    /// The peer lost the connection: RST, the conversation ends.
    Reset,
}

/// One step of a script; a side is 0 (this host, Sent) or 1 (the peer, Received).
#[derive(Clone, Debug)]
pub enum Act {
    /// (side, sizes, ack_every, reply): bulk segments; the receiver ACKs every
    /// `ack_every` of them (0: not during the burst), then replies with data carrying
    /// the ACK (`reply`) or sends a cumulative pure ACK.
    Burst(usize, Vec<u16>, usize, Option<u16>),
    /// (side, ack_now): a 1-byte data segment, acknowledged at once or later.
    OneByte(usize, bool),
    /// (side): the last data segment again, if it is still unacknowledged.
    Retransmit(usize),
    /// (side, one_byte, answers, give_up): `side` idles and its keepalive timer fires
    /// once per answer; after a last unanswered probe it may give up with a RST.
    Idle(usize, bool, Vec<Answer>, bool),
    /// Both keepalive timers fire at once (see [`BothIdle`]).
    BothIdle(BothIdle),
    /// (side, size): the peer's data crosses `side`'s probe; `side` acknowledges it,
    /// and the peer's answer to the probe (sent before that ACK arrived) follows.
    CrossData(usize, u16),
    /// (side): two probes, each answer sent before the next probe arrived but seen
    /// after it (an answer delayed past the prober's next probe).
    LateAnswers(usize),
    /// (side, sizes, probes, receiver_keepalive, close_with_data, reopen_with_data):
    /// `side` fills the peer's window; the peer announces window 0 (in a pure ACK, or
    /// on data of its own); zero-window probes, each answered with window 0; the peer
    /// may send a keepalive meanwhile (`Some(crossing)`: crossing the window probe);
    /// the window reopens (pure ACK or on data).
    ZeroWindow(
        usize,
        Vec<u16>,
        usize,
        Option<bool>,
        Option<u16>,
        Option<u16>,
    ),
}

/// Both ends' keepalive timers fire in the same round.
#[derive(Clone, Copy, Debug)]
pub struct BothIdle {
    /// The side whose probe leaves first.
    pub first: usize,
    pub one_byte: [bool; 2],
    /// The second probe is sent before the first arrives (they cross on the wire).
    pub crossing: bool,
    /// The side that answers first; the other answer crosses it.
    pub first_answer: usize,
    /// The peer's answer is lost before it reaches this host. (Our answer lost after
    /// our hooks saw it looks the same here as one delivered.)
    pub peer_answer_lost: bool,
}

#[derive(Clone, Debug)]
pub struct Conv {
    pub isn: [u32; 2],
    pub window: [u16; 2],
    /// Which side sends the first pure ACK.
    pub first: usize,
    pub acts: Vec<Act>,
    /// FIN from this side to end, the other side optionally probing in CLOSE_WAIT.
    pub fin: Option<(usize, bool)>,
}

/// A segment as sent, with how many of the other side's segments its sender had
/// received by then.
#[derive(Clone, Copy, Debug)]
pub struct Sent {
    pub dir: Direction,
    pub seg: Segment,
    pub seen: usize,
}

/// Plays a script. Nothing is lost unless an act says so.
struct Sim {
    nxt: [u32; 2],
    /// snd_nxt of side i after each of its segments, for the ACKs of a receiver that
    /// has not seen them all.
    nxt_after: [Vec<u32>; 2],
    initial_nxt: [u32; 2],
    /// The highest ACK side i received for its data.
    una: [u32; 2],
    window: [u16; 2],
    open_window: [u16; 2],
    /// Side i received data it has not acknowledged yet.
    owed: [bool; 2],
    last_data: [u32; 2],
    /// Of the other side's segments, how many side i had received when it last sent.
    seen: [usize; 2],
    out: Vec<Sent>,
    ended: bool,
}

impl Sim {
    /// Sends a segment from side `i` that has not received the other side's last
    /// `unseen` segments yet.
    fn emit_crossing(&mut self, i: usize, seq: u32, flags: u8, payload_len: u32, unseen: usize) {
        let (o, dir) = (1 - i, Direction::ALL[i]);
        let seen = self.nxt_after[o].len() - unseen;
        assert!(
            seen >= self.seen[i],
            "simulator bug: a side un-received a segment"
        );
        self.seen[i] = seen;
        let ack = if flags & TCP_ACK == 0 {
            0
        } else if seen == 0 {
            self.initial_nxt[o]
        } else {
            self.nxt_after[o][seen - 1]
        };
        let window = if flags & TCP_RST != 0 {
            0
        } else {
            self.window[i]
        };
        if flags & TCP_ACK != 0 {
            self.una[o] = ack;
            self.owed[i] &= unseen > 0;
        }
        self.ended |= flags & TCP_RST != 0;
        let (here, there) = ([0x0100_000a, 0, 0, 0], [0x0200_000a, 0, 0, 0]);
        let ((src, sport), (dst, dport)) = match dir {
            Direction::Sent => ((here, 40000), (there, 443)),
            Direction::Received => ((there, 443), (here, 40000)),
        };
        let family = Family::Ipv4;
        #[rustfmt::skip]
        let seg = Segment { family, src, dst, sport, dport, seq, ack, flags, window, payload_len };
        let fin = u32::from(flags & TCP_FIN != 0);
        let end = seq.wrapping_add(payload_len + fin);
        if (end.wrapping_sub(self.nxt[i]) as i32) > 0 {
            self.nxt[i] = end;
        }
        self.nxt_after[i].push(self.nxt[i]);
        self.out.push(Sent { dir, seg, seen });
    }
    fn emit(&mut self, i: usize, seq: u32, flags: u8, payload_len: u32) {
        self.emit_crossing(i, seq, flags, payload_len, 0);
    }
    fn data(&mut self, i: usize, len: u32, flags: u8) {
        self.emit(i, self.nxt[i], TCP_ACK | flags, len);
        if len > 0 {
            self.last_data[i] = len;
        }
        self.owed[1 - i] |= len + u32::from(flags & TCP_FIN != 0) > 0;
    }
    fn pure_ack(&mut self, i: usize) {
        self.emit(i, self.nxt[i], TCP_ACK, 0);
    }
    /// Keepalive or zero-window probe: one below snd_nxt (snd_una - 1 when idle).
    fn probe_crossing(&mut self, i: usize, len: u32, unseen: usize) {
        assert_eq!(self.una[i], self.nxt[i], "probe with data in flight");
        self.emit_crossing(i, self.nxt[i].wrapping_sub(1), TCP_ACK, len, unseen);
    }
    fn probe(&mut self, i: usize, len: u32) {
        self.probe_crossing(i, len, 0);
    }
    /// Every side acknowledges what it received: nothing in flight afterwards.
    fn settle(&mut self) {
        for i in 0..2 {
            if self.owed[i] {
                self.pure_ack(i);
            }
        }
    }

    fn play(&mut self, act: &Act) {
        match *act {
            Act::Burst(side, ref sizes, ack_every, reply) => {
                self.burst(side, sizes, ack_every, reply)
            }
            Act::OneByte(side, ack_now) => {
                self.data(side, 1, TCP_PSH);
                if ack_now {
                    self.pure_ack(1 - side);
                }
            }
            Act::Retransmit(side) => self.retransmit(side),
            Act::Idle(side, one_byte, ref answers, give_up) => {
                self.idle(side, one_byte, answers, give_up)
            }
            Act::BothIdle(b) => self.both_idle(b),
            Act::CrossData(side, size) => self.cross_data(side, size),
            Act::LateAnswers(side) => self.late_answers(side),
            Act::ZeroWindow(side, ref sizes, probes, rx_keepalive, close_data, reopen_data) => {
                self.zero_window(side, sizes, probes, rx_keepalive, close_data, reopen_data)
            }
        }
    }

    fn burst(&mut self, side: usize, sizes: &[u16], ack_every: usize, reply: Option<u16>) {
        let o = 1 - side;
        for (k, &n) in sizes.iter().enumerate() {
            let psh = if k + 1 == sizes.len() { TCP_PSH } else { 0 };
            self.data(side, u32::from(n), psh);
            if ack_every > 0 && (k + 1) % ack_every == 0 {
                self.pure_ack(o);
            }
        }
        match reply {
            Some(n) => self.data(o, u32::from(n), TCP_PSH),
            None if self.owed[o] => self.pure_ack(o),
            None => {}
        }
    }

    fn retransmit(&mut self, side: usize) {
        if self.una[side] == self.nxt[side] {
            return;
        }
        let len = self.last_data[side];
        let seq = self.nxt[side].wrapping_sub(len);
        self.emit(side, seq, TCP_ACK | TCP_PSH, len);
        // Duplicate data is acknowledged at once.
        self.pure_ack(1 - side);
    }

    fn idle(&mut self, side: usize, one_byte: bool, answers: &[Answer], give_up: bool) {
        let o = 1 - side;
        self.settle();
        for a in answers {
            self.probe(side, u32::from(one_byte));
            match a {
                Answer::Ack => self.pure_ack(o),
                Answer::Silent => {}
                // RFC 9293: the RST takes its seq from the probe's ACK field.
                Answer::Reset => return self.emit(o, self.nxt[o], TCP_RST, 0),
            }
        }
        if give_up && matches!(answers.last(), Some(Answer::Silent)) {
            self.emit(side, self.nxt[side], TCP_RST | TCP_ACK, 0);
        }
    }

    fn cross_data(&mut self, side: usize, size: u16) {
        let o = 1 - side;
        self.settle();
        self.probe(side, 0);
        // Sent before the probe arrived.
        self.emit_crossing(o, self.nxt[o], TCP_ACK | TCP_PSH, u32::from(size), 1);
        self.owed[side] = true;
        self.last_data[o] = u32::from(size);
        self.pure_ack(side);
        // The duplicate ACK for the probe, sent before `side`'s ACK arrived.
        self.emit_crossing(o, self.nxt[o], TCP_ACK, 0, 1);
    }

    fn late_answers(&mut self, side: usize) {
        let o = 1 - side;
        self.settle();
        self.probe(side, 0);
        self.probe(side, 0);
        self.emit_crossing(o, self.nxt[o], TCP_ACK, 0, 1);
        self.pure_ack(o);
    }

    fn zero_window(
        &mut self,
        side: usize,
        sizes: &[u16],
        probes: usize,
        rx_keepalive: Option<bool>,
        close_data: Option<u16>,
        reopen_data: Option<u16>,
    ) {
        let r = 1 - side;
        self.settle();
        for &n in sizes {
            self.data(side, u32::from(n), TCP_PSH);
        }
        self.window[r] = 0;
        match close_data {
            Some(n) => {
                self.data(r, u32::from(n), TCP_PSH);
                self.pure_ack(side);
            }
            None => self.pure_ack(r),
        }
        for k in 0..probes {
            self.probe(side, 0);
            match rx_keepalive {
                Some(crossing) if k == 0 => {
                    // The receiver's keepalive, sent before (crossing) or after
                    // the window probe arrived, and both answers.
                    self.probe_crossing(r, 0, usize::from(crossing));
                    self.pure_ack(r);
                    self.emit_crossing(side, self.nxt[side], TCP_ACK, 0, 1);
                }
                _ => self.pure_ack(r),
            }
        }
        self.window[r] = self.open_window[r];
        match reopen_data {
            Some(n) => self.data(r, u32::from(n), TCP_PSH),
            None => self.pure_ack(r),
        }
    }

    fn both_idle(&mut self, b: BothIdle) {
        let (first, second) = (b.first, 1 - b.first);
        self.settle();
        self.probe(first, u32::from(b.one_byte[first]));
        self.probe_crossing(
            second,
            u32::from(b.one_byte[second]),
            usize::from(b.crossing),
        );
        let (a1, a2) = (b.first_answer, 1 - b.first_answer);
        // Each answer is sent after its side received the other's probe; the second
        // crosses the first (sent before the first arrived).
        let answer = |side: usize| side == 0 || !b.peer_answer_lost;
        if answer(a1) {
            self.pure_ack(a1);
        }
        if answer(a2) {
            let unseen = usize::from(answer(a1));
            self.emit_crossing(a2, self.nxt[a2], TCP_ACK, 0, unseen);
        }
    }
}

impl Conv {
    pub fn segments(&self) -> Vec<Sent> {
        let nxt = self.isn.map(|isn| isn.wrapping_add(1)); // the SYN took one
        let mut sim = Sim {
            nxt,
            nxt_after: [Vec::new(), Vec::new()],
            initial_nxt: nxt,
            una: nxt,
            window: self.window,
            open_window: self.window,
            owed: [false; 2],
            last_data: [0; 2],
            seen: [0; 2],
            out: Vec::new(),
            ended: false,
        };
        sim.pure_ack(self.first);
        sim.pure_ack(1 - self.first);
        for act in &self.acts {
            if sim.ended {
                break;
            }
            sim.play(act);
        }
        if let (Some((a, close_wait_probe)), false) = (self.fin, sim.ended) {
            let b = 1 - a;
            sim.settle();
            sim.data(a, 0, TCP_FIN);
            sim.pure_ack(b);
            if close_wait_probe {
                sim.probe(b, 0);
                sim.pure_ack(a);
            }
            sim.data(b, 0, TCP_FIN);
            sim.pure_ack(a);
        }
        sim.out
    }

    /// The script without its [`Act::LateAnswers`]: an answer this host may see after
    /// the prober's next probe answers whichever probe is pending in the order the hooks
    /// saw (docs/accuracy.md), so only the other acts are order-independent.
    pub fn without_late_answers(&self) -> Conv {
        let mut c = self.clone();
        c.acts.retain(|a| !matches!(a, Act::LateAnswers(_)));
        c
    }
}

/// One order in which this host's (side 0's) egress and ingress hooks can see `sent`:
/// each side's segments in the order it sent them, and a segment only after those its
/// sender had received. `seed` picks among the orders.
pub fn hook_order(sent: &[Sent], seed: u64) -> Vec<Sent> {
    let ours: Vec<Sent> = sent
        .iter()
        .copied()
        .filter(|s| s.dir == Direction::Sent)
        .collect();
    let theirs: Vec<Sent> = sent
        .iter()
        .copied()
        .filter(|s| s.dir != Direction::Sent)
        .collect();
    let (mut i, mut j, mut rng) = (0, 0, seed | 1);
    let mut order = Vec::with_capacity(sent.len());
    while i < ours.len() || j < theirs.len() {
        let ours_ready = i < ours.len() && ours[i].seen <= j;
        let theirs_ready = j < theirs.len() && theirs[j].seen <= i;
        // xorshift64: any cheap, repeatable choice will do.
        rng ^= rng << 13;
        rng ^= rng >> 7;
        rng ^= rng << 17;
        let take_ours = match (ours_ready, theirs_ready) {
            (true, true) => rng & 1 == 0,
            (true, false) => true,
            (false, true) => false,
            (false, false) => panic!("simulator bug: no segment can come next"),
        };
        if take_ours {
            order.push(ours[i]);
            i += 1;
        } else {
            order.push(theirs[j]);
            j += 1;
        }
    }
    order
}

//! One TCP conversation written step by step: each end's next sequence number, window
//! and timestamps are tracked so the scenarios only say what happens, not the numbers.

use super::wire::{self, ACK, Encap, FIN, Host, Options, PSH, RST, SYN, Tcp};
use super::{Difference, Frame, Kind, Origin};
use crate::Family;

/// One end of the conversation.
#[derive(Clone, Debug)]
struct End {
    host: Host,
    /// snd_nxt: the sequence number after the last byte (or SYN/FIN) this end sent.
    nxt: u32,
    window: u16,
    ip_id: u16,
    /// Offset of this end's TCP timestamp clock.
    ts_base: u32,
}

/// What a conversation looks like on the wire, fixed for its whole life.
#[derive(Clone, Debug)]
pub struct Shape {
    pub flow: u32,
    pub family: Family,
    pub local: Host,
    pub remote: Host,
    pub encap: Encap,
    /// IPv4 options, or IPv6 hop-by-hop + destination options headers.
    pub ip_extras: bool,
    /// TCP timestamps on every segment but RSTs.
    pub timestamps: bool,
    /// SACK negotiated: 1-byte probes are answered with a D-SACK block.
    pub sack: bool,
    pub start_us: u64,
    /// One-way delay between a segment and the answer it provokes.
    pub rtt_us: u64,
}

/// A conversation being written.
#[derive(Debug)]
pub struct Script {
    shape: Shape,
    local: End,
    remote: End,
    now_us: u64,
    frames: Vec<Frame>,
}

impl Script {
    /// `local_nxt` / `remote_nxt`: each end's initial sequence number (or, for a
    /// conversation captured mid-way, its snd_nxt when the capture starts).
    pub fn new(shape: Shape, local_nxt: u32, remote_nxt: u32, windows: (u16, u16)) -> Script {
        let end = |host: Host, nxt: u32, window: u16, salt: u32| End {
            host,
            nxt,
            window,
            ip_id: (nxt >> 16) as u16,
            ts_base: nxt.rotate_left(7) ^ salt,
        };
        Script {
            local: end(shape.local, local_nxt, windows.0, 0x5a5a),
            remote: end(shape.remote, remote_nxt, windows.1, 0xa5a5),
            now_us: shape.start_us,
            frames: Vec::new(),
            shape,
        }
    }

    pub fn into_frames(self) -> Vec<Frame> {
        self.frames
    }

    /// The frames written so far.
    pub fn frames(&self) -> &[Frame] {
        &self.frames
    }

    pub fn shape(&self) -> &Shape {
        &self.shape
    }

    fn end(&mut self, o: Origin) -> &mut End {
        match o {
            Origin::Local => &mut self.local,
            Origin::Remote => &mut self.remote,
        }
    }

    fn end_ref(&self, o: Origin) -> &End {
        match o {
            Origin::Local => &self.local,
            Origin::Remote => &self.remote,
        }
    }

    /// `o`'s snd_nxt.
    pub fn nxt(&self, o: Origin) -> u32 {
        self.end_ref(o).nxt
    }

    pub fn window(&self, o: Origin) -> u16 {
        self.end_ref(o).window
    }

    /// The window `o` advertises from now on.
    pub fn set_window(&mut self, o: Origin, window: u16) {
        self.end(o).window = window;
    }

    pub fn wait_us(&mut self, us: u64) {
        self.now_us += us;
    }

    pub fn wait_ms(&mut self, ms: u64) {
        self.wait_us(ms * 1000);
    }

    /// Waits one round trip (the time an answer takes).
    pub fn wait_rtt(&mut self) {
        self.wait_us(self.shape.rtt_us);
    }

    /// Marks frame `index` (as returned by the senders) as one tshark sees differently.
    pub fn differs(&mut self, index: usize, difference: Difference) {
        self.frames[index].difference = Some(difference);
    }

    /// Writes one segment from `from` and returns its index in this conversation.
    #[allow(clippy::too_many_arguments)]
    pub fn segment(
        &mut self,
        from: Origin,
        kind: Kind,
        seq: u32,
        ack: u32,
        flags: u8,
        payload_len: usize,
        sack: &[(u32, u32)],
    ) -> usize {
        let now_ms = (self.now_us / 1000) as u32;
        let shape = &self.shape;
        let (me, peer) = match from {
            Origin::Local => (&self.local, &self.remote),
            Origin::Remote => (&self.remote, &self.local),
        };
        let mut opts = Options::new();
        if flags & SYN != 0 {
            opts = opts.mss(1460);
            if shape.sack {
                opts = opts.sack_permitted();
            }
        }
        if shape.timestamps && flags & RST == 0 {
            let tsecr = if flags & SYN != 0 && flags & ACK == 0 {
                0
            } else {
                peer.ts_base.wrapping_add(now_ms)
            };
            opts = opts.timestamps(me.ts_base.wrapping_add(now_ms), tsecr);
        }
        if !sack.is_empty() {
            opts = opts.sack(sack);
        }
        let tcp = Tcp {
            seq,
            ack: if flags & ACK != 0 { ack } else { 0 },
            flags,
            window: if flags & RST != 0 { 0 } else { me.window },
            options: opts.into_bytes(),
            payload: vec![if payload_len == 1 { 0 } else { b'k' }; payload_len],
        };
        let bytes = wire::frame(
            &me.host,
            &peer.host,
            shape.encap,
            shape.ip_extras,
            me.ip_id,
            &tcp,
        );
        let frame = Frame {
            time_us: self.now_us,
            origin: from,
            flow: shape.flow,
            family: shape.family,
            kind,
            seq: tcp.seq,
            ack: tcp.ack,
            flags,
            window: tcp.window,
            payload_len: payload_len as u32,
            difference: None,
            bytes,
        };
        let end_seq = seq
            .wrapping_add(payload_len as u32)
            .wrapping_add(u32::from(flags & (SYN | FIN) != 0));
        let me = self.end(from);
        me.ip_id = me.ip_id.wrapping_add(1);
        if (end_seq.wrapping_sub(me.nxt) as i32) > 0 {
            me.nxt = end_seq;
        }
        self.frames.push(frame);
        // Frames of one conversation never share a timestamp.
        self.now_us += 1;
        self.frames.len() - 1
    }

    /// SYN, SYN-ACK, ACK with `client` opening.
    pub fn handshake(&mut self, client: Origin) {
        let server = client.peer();
        let (c, s) = (self.nxt(client), self.nxt(server));
        self.segment(client, Kind::Handshake, c, 0, SYN, 0, &[]);
        self.wait_rtt();
        self.segment(
            server,
            Kind::Handshake,
            s,
            c.wrapping_add(1),
            SYN | ACK,
            0,
            &[],
        );
        self.wait_rtt();
        self.ack(client, Kind::Handshake);
    }

    /// `len` bytes of new data from `from`, acknowledging everything.
    pub fn data(&mut self, from: Origin, len: usize) -> usize {
        let (seq, ack) = (self.nxt(from), self.nxt(from.peer()));
        self.segment(from, Kind::Data, seq, ack, PSH | ACK, len, &[])
    }

    /// A pure ACK from `from` acknowledging everything the peer sent.
    pub fn ack(&mut self, from: Origin, kind: Kind) -> usize {
        let (seq, ack) = (self.nxt(from), self.nxt(from.peer()));
        self.segment(from, kind, seq, ack, ACK, 0, &[])
    }

    /// A request from `client`, the response, and the client's ACK: afterwards both
    /// ends have acknowledged everything, as on any idle connection.
    pub fn exchange(&mut self, client: Origin, request: usize, response: usize) {
        self.data(client, request);
        self.wait_rtt();
        self.data(client.peer(), response);
        self.wait_rtt();
        self.ack(client, Kind::Ack);
    }

    /// A probe-shaped segment from `from`: `seq = snd_nxt - 1`, 0 or 1 byte.
    pub fn probe(&mut self, from: Origin, payload_len: usize, kind: Kind) -> usize {
        let (seq, ack) = (self.nxt(from).wrapping_sub(1), self.nxt(from.peer()));
        self.segment(from, kind, seq, ack, ACK, payload_len, &[])
    }

    /// The pure ACK answering a probe from `from.peer()` of `probe_len` bytes; with
    /// SACK, a 1-byte probe (old data) is answered with a D-SACK block, as Linux does.
    pub fn answer(&mut self, from: Origin, probe_len: usize, kind: Kind) -> usize {
        let (seq, ack) = (self.nxt(from), self.nxt(from.peer()));
        let dsack = [(ack.wrapping_sub(1), ack)];
        let sack: &[(u32, u32)] = if self.shape.sack && probe_len == 1 {
            &dsack
        } else {
            &[]
        };
        self.segment(from, kind, seq, ack, ACK, 0, sack)
    }

    /// A probe from `prober` and, one round trip later, its answer.
    pub fn probe_round(&mut self, prober: Origin, payload_len: usize) {
        self.probe(prober, payload_len, Kind::Probe);
        self.wait_rtt();
        self.answer(prober.peer(), payload_len, Kind::ProbeAck);
    }

    /// A RST from `from` (seq = snd_nxt), with or without ACK.
    pub fn rst(&mut self, from: Origin, with_ack: bool, kind: Kind) -> usize {
        let (seq, ack) = (self.nxt(from), self.nxt(from.peer()));
        let flags = if with_ack { RST | ACK } else { RST };
        self.segment(from, kind, seq, ack, flags, 0, &[])
    }

    /// An orderly close started by `first`.
    pub fn close(&mut self, first: Origin) {
        let second = first.peer();
        for (from, to) in [(first, second), (second, first)] {
            let (seq, ack) = (self.nxt(from), self.nxt(to));
            self.segment(from, Kind::Fin, seq, ack, FIN | ACK, 0, &[]);
            self.wait_rtt();
            self.ack(to, Kind::Ack);
            self.wait_ms(1);
        }
    }
}

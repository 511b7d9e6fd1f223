//! Our own oracle for keepalive probes and their answers, matched from the TCP rules
//! on a decoded capture ([`decode`]), independent of Wireshark's analysis.
//!
//! Why not tshark's `tcp.analysis.keep_alive_ack`: it only marks an answer whose
//! sender's previous segment in the other direction was the probe, so when both ends
//! probe at once (equal keepalive settings; the kernel fires both timers in the same
//! tick) the probes cross and it misses about half of the answers. That is the very
//! case the daemon's classifier got wrong, so an oracle with the same blind spot could
//! not see the bug.
//!
//! # Rules
//! - `snd_nxt` of each direction is the highest `seq + len (+1 for SYN, +1 for FIN)`
//!   seen from that side. The captures start before the connections, so it is known
//!   from the SYN on; a segment from a side whose `snd_nxt` is still unknown is only
//!   learned from.
//! - **Probe**: ACK, no SYN/FIN/RST, 0 or 1 payload byte, `seq == snd_nxt - 1` of its
//!   sender. As in Wireshark and in the daemon, a retransmission of exactly the last
//!   sent byte has that shape and counts as a 1-byte probe (Linux sends no 1-byte
//!   keepalive; the tests assert none is seen).
//! - **Zero-window probe**: probe-shaped while the other side's last segment
//!   advertised a zero window. Counted apart, never as a keepalive.
//! - **Answer**: a segment from the other side with ACK, no SYN/FIN/RST, no new data
//!   (`seq + len <= its snd_nxt`), which is not itself a probe, and whose
//!   `ack == probe seq + 1`. A probe is never an answer even when its ack number fits:
//!   when probes cross, the peer's probe carries `ack == our probe seq + 1` only
//!   because that was already its `rcv_nxt`.
//! - A RST from the other side while a probe is pending answers it with a reset,
//!   unless it acknowledges beyond the probe (the prober sent data since).
//! - A pending probe ends unanswered when its sender probes again (the next probe
//!   takes its place), when the other side acknowledges beyond `probe seq + 1` (the
//!   prober's later data made the answer impossible to tell apart), when its sender
//!   resets, or when the capture ends. Nothing else from the prober ends it: in
//!   particular the prober's own pure ACK to a crossing probe does not.
//! - A probe **crossed** a peer probe when the peer probed while it was pending, or it
//!   was sent while the peer's probe was pending.
//!
//! Sides and families come from the source address: A and B are the veth addresses of
//! the harness ([`crate::netns`]); any other address is a harness error.

mod daemon;
pub mod decode;
#[cfg(test)]
mod tests;

use std::collections::{BTreeMap, HashMap};
use std::fmt::Write as _;
use std::net::{IpAddr, SocketAddr};

use crate::netns::{A_V4, A_V6, B_V4, B_V6};
use crate::scenarios::{Side, WireCounts};
use crate::sockets::Family;

pub use daemon::assert_daemon_matches;
pub use decode::decode;

/// TCP header flag bits.
pub const FIN: u16 = 0x01;
pub const SYN: u16 = 0x02;
pub const RST: u16 = 0x04;
pub const PSH: u16 = 0x08;
pub const ACK: u16 = 0x10;

/// One decoded TCP segment of a capture.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Seg {
    pub frame: u64,
    /// Seconds since the first frame, as tshark prints it (for listings only).
    pub time: String,
    pub src: SocketAddr,
    pub dst: SocketAddr,
    /// Absolute (raw) sequence and acknowledgement numbers.
    pub seq: u32,
    pub ack: u32,
    pub len: u32,
    pub flags: u16,
    /// The window field as sent (unscaled); 0 means a zero window at any scale.
    pub window: u32,
}

impl Seg {
    fn has(&self, flag: u16) -> bool {
        self.flags & flag != 0
    }

    /// Sequence space the segment occupies up to: `seq + len (+SYN) (+FIN)`.
    fn end(&self) -> u32 {
        self.seq
            .wrapping_add(self.len)
            .wrapping_add(u32::from(self.has(SYN)))
            .wrapping_add(u32::from(self.has(FIN)))
    }

    /// One listing line: frame, time, src > dst, flags, seq, ack, len, window.
    pub fn line(&self) -> String {
        let names = [(SYN, 'S'), (FIN, 'F'), (RST, 'R'), (PSH, 'P'), (ACK, '.')];
        let flags: String = names
            .iter()
            .filter(|(bit, _)| self.has(*bit))
            .map(|(_, c)| *c)
            .collect();
        format!(
            "#{} {}s {} > {} [{flags}] seq={} ack={} len={} win={}",
            self.frame, self.time, self.src, self.dst, self.seq, self.ack, self.len, self.window
        )
    }
}

/// `a` is after `b` in sequence space (RFC 9293 modular comparison).
fn after(a: u32, b: u32) -> bool {
    (a.wrapping_sub(b) as i32) > 0
}

/// The harness side an address belongs to, with its family.
pub fn side_of(ip: IpAddr) -> (Side, Family) {
    match ip {
        ip if ip == IpAddr::from(A_V4) => (Side::A, Family::Ipv4),
        ip if ip == IpAddr::from(A_V6) => (Side::A, Family::Ipv6),
        ip if ip == IpAddr::from(B_V4) => (Side::B, Family::Ipv4),
        ip if ip == IpAddr::from(B_V6) => (Side::B, Family::Ipv6),
        other => panic!("segment from {other}, which is neither side A nor side B"),
    }
}

/// What the matcher found for the probes sent by one (side, family).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Tally {
    /// Keepalive probes sent (zero-window probes excluded).
    pub probes: u64,
    /// Of those, answered by a pure ACK from the other side.
    pub answered: u64,
    /// Of those, answered by a RST.
    pub reset: u64,
    /// Of those, probes that crossed a probe of the other side.
    pub crossed: u64,
    /// Probes sent with 1 payload byte.
    pub one_byte: u64,
    /// Zero-window probes sent (not counted in `probes`).
    pub zero_window: u64,
}

/// A probe that ended without an answer, and why.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Unanswered {
    pub frame: u64,
    pub conn: ConnKey,
    pub why: &'static str,
}

/// A connection, by its two endpoints in a canonical order.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ConnKey(pub SocketAddr, pub SocketAddr);

impl ConnKey {
    fn of(seg: &Seg) -> ConnKey {
        if seg.src <= seg.dst {
            ConnKey(seg.src, seg.dst)
        } else {
            ConnKey(seg.dst, seg.src)
        }
    }
}

#[derive(Clone, Copy, Debug)]
struct Pending {
    seq: u32,
    frame: u64,
    crossed: bool,
}

#[derive(Clone, Debug, Default)]
struct DirState {
    snd_nxt: Option<u32>,
    window_zero: bool,
    pending: Option<Pending>,
}

/// One segment being matched, with the state of its direction (`me`) and of
/// the opposite one (`other`).
struct Step<'a> {
    key: ConnKey,
    /// (side, family) of the sender and of the receiver.
    mine: (Side, Family),
    theirs: (Side, Family),
    me: &'a mut DirState,
    other: &'a mut DirState,
    seg: &'a Seg,
}

/// The matcher's findings over a whole capture.
#[derive(Clone, Default)]
pub struct Answers {
    pub tally: BTreeMap<(Side, Family), Tally>,
    pub unanswered: Vec<Unanswered>,
    /// Every segment, per connection, in capture order (for listings).
    segments: BTreeMap<ConnKey, Vec<Seg>>,
}

/// Without the segments: a capture of thousands of frames would drown the
/// assertion messages that print an oracle (use [`Answers::listing`]).
impl std::fmt::Debug for Answers {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Answers")
            .field("tally", &self.tally)
            .field("unanswered", &self.unanswered)
            .finish_non_exhaustive()
    }
}

impl Answers {
    /// Runs the matcher over `segs` (in capture order).
    pub fn match_segments(segs: &[Seg]) -> Answers {
        let mut states: HashMap<ConnKey, [DirState; 2]> = HashMap::new();
        let mut out = Answers::default();
        for seg in segs {
            let key = ConnKey::of(seg);
            let dirs = states.entry(key).or_default();
            // Index 0 is the direction from the canonical first endpoint.
            let (me, other) = if seg.src == key.0 {
                let [x, y] = dirs;
                (x, y)
            } else {
                let [x, y] = dirs;
                (y, x)
            };
            let mine = side_of(seg.src.ip());
            let theirs = side_of(seg.dst.ip());
            assert_eq!(mine.1, theirs.1, "segment across families: {}", seg.line());
            assert_ne!(mine.0, theirs.0, "segment within one side: {}", seg.line());
            out.step(Step {
                key,
                mine,
                theirs,
                me,
                other,
                seg,
            });
            out.segments.entry(key).or_default().push(seg.clone());
        }
        for (key, dirs) in &states {
            for d in dirs {
                if let Some(p) = d.pending {
                    out.unanswered.push(Unanswered {
                        frame: p.frame,
                        conn: *key,
                        why: "pending when the capture ended",
                    });
                }
            }
        }
        out.unanswered.sort_by_key(|u| u.frame);
        out
    }

    /// Matches one segment: a reset ends what is pending both ways, a
    /// probe-shaped segment is a probe (or a zero-window probe), and an ACK
    /// may answer the peer's pending probe. Every segment then advances its
    /// direction's `snd_nxt`.
    fn step(&mut self, mut s: Step<'_>) {
        if s.seg.has(RST) {
            self.on_rst(&mut s);
            return;
        }
        let seg = s.seg;
        let probe_shaped = seg.has(ACK)
            && !seg.has(SYN)
            && !seg.has(FIN)
            && seg.len <= 1
            && s.me.snd_nxt == Some(seg.seq.wrapping_add(1));
        if probe_shaped && s.other.window_zero {
            self.tally.entry(s.mine).or_default().zero_window += 1;
        } else if probe_shaped {
            self.on_probe(&mut s);
        } else if seg.has(ACK)
            && let Some(p) = s.other.pending
        {
            self.on_ack(&mut s, p);
        }

        // Learn from every segment, probes included.
        let end = seg.end();
        s.me.snd_nxt = Some(match s.me.snd_nxt {
            Some(n) if !after(end, n) => n,
            _ => end,
        });
        s.me.window_zero = seg.window == 0;
    }

    /// Records the probe `p` of connection `key` as never answered.
    fn lose(&mut self, key: ConnKey, p: Pending, why: &'static str) {
        self.unanswered.push(Unanswered {
            frame: p.frame,
            conn: key,
            why,
        });
    }

    /// A reset: the peer's pending probe was answered by it (unless it
    /// acknowledges beyond the probe); the sender's own is lost.
    fn on_rst(&mut self, s: &mut Step<'_>) {
        if let Some(p) = s.other.pending.take() {
            let beyond = s.seg.has(ACK) && after(s.seg.ack, p.seq.wrapping_add(1));
            if beyond {
                self.lose(s.key, p, "the peer's RST acknowledged beyond it");
            } else {
                self.tally.entry(s.theirs).or_default().reset += 1;
            }
        }
        if let Some(p) = s.me.pending.take() {
            self.lose(s.key, p, "its sender reset the connection");
        }
    }

    /// A probe: replaces the sender's pending one, and crosses the peer's
    /// pending probe if there is one.
    fn on_probe(&mut self, s: &mut Step<'_>) {
        if let Some(p) = s.me.pending.take() {
            self.lose(s.key, p, "its sender probed again first");
        }
        let crossed = match s.other.pending.as_mut() {
            Some(peer) => {
                if !peer.crossed {
                    peer.crossed = true;
                    self.tally.entry(s.theirs).or_default().crossed += 1;
                }
                true
            }
            None => false,
        };
        let t = self.tally.entry(s.mine).or_default();
        t.probes += 1;
        t.one_byte += u64::from(s.seg.len == 1);
        t.crossed += u64::from(crossed);
        s.me.pending = Some(Pending {
            seq: s.seg.seq,
            frame: s.seg.frame,
            crossed,
        });
    }

    /// An ACK while the peer's probe `p` is pending: an answer if it carries
    /// no new data and acknowledges exactly the probe; the probe is lost if it
    /// acknowledges beyond it.
    fn on_ack(&mut self, s: &mut Step<'_>, p: Pending) {
        let seg = s.seg;
        let no_new_data =
            !seg.has(SYN) && !seg.has(FIN) && s.me.snd_nxt.is_some_and(|n| !after(seg.end(), n));
        if no_new_data && seg.ack == p.seq.wrapping_add(1) {
            s.other.pending = None;
            self.tally.entry(s.theirs).or_default().answered += 1;
        } else if after(seg.ack, p.seq.wrapping_add(1)) {
            s.other.pending = None;
            self.lose(s.key, p, "the peer acknowledged beyond it");
        }
    }

    /// The tally of probes sent by `side` in `family` (zero if none).
    pub fn get(&self, side: Side, family: Family) -> Tally {
        self.tally.get(&(side, family)).cloned().unwrap_or_default()
    }

    /// One field of the tallies as per-(side, family) counts, e.g.
    /// `answers.counts(|t| t.probes)`.
    pub fn counts(&self, field: impl Fn(&Tally) -> u64) -> WireCounts {
        let mut counts = BTreeMap::new();
        for side in [Side::A, Side::B] {
            for family in Family::ALL {
                counts.insert((side, family), field(&self.get(side, family)));
            }
        }
        WireCounts(counts)
    }

    /// Every segment of `conn`, one per line.
    pub fn listing(&self, conn: &ConnKey) -> String {
        let mut s = String::new();
        for seg in self.segments.get(conn).into_iter().flatten() {
            let _ = writeln!(s, "  {}", seg.line());
        }
        s
    }

    /// The unanswered probes, with the whole segment listing of the first
    /// `max_conns` connections they belong to, for assertion messages.
    pub fn describe_unanswered(&self, max_conns: usize) -> String {
        let mut s = format!("{} probe(s) without an answer:\n", self.unanswered.len());
        let mut shown: Vec<ConnKey> = Vec::new();
        for u in &self.unanswered {
            let _ = writeln!(s, "  probe #{} on {:?}: {}", u.frame, u.conn, u.why);
            if shown.len() < max_conns && !shown.contains(&u.conn) {
                shown.push(u.conn);
            }
        }
        for conn in shown {
            let _ = write!(s, "connection {conn:?}:\n{}", self.listing(&conn));
        }
        s
    }

    /// A one-line summary per (side, family), for messages and logs.
    pub fn summary(&self) -> String {
        self.tally
            .iter()
            .map(|((side, family), t)| {
                format!(
                    "{side:?} {family}: probes {} answered {} reset {} crossed {} \
                     one-byte {} zero-window {}",
                    t.probes, t.answered, t.reset, t.crossed, t.one_byte, t.zero_window
                )
            })
            .collect::<Vec<_>>()
            .join("; ")
    }
}

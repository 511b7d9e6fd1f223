//! A pcap corpus of keepalive traffic, written on purpose to be tricky, with what it
//! contains known frame by frame.
//!
//! Several hundred interleaved TCP conversations between a "local" end (the host the
//! daemon runs on: 192.0.2.1 / 2001:db8::1) and "remote" ends (192.0.2.0/24,
//! 2001:db8::/64), each a [`Scenario`] with seeded random parameters: family, VLAN tags
//! (none, 802.1Q, QinQ), IPv4 options or IPv6 extension headers, TCP timestamps and
//! SACK, initial sequence numbers (a quarter of them within 64 KiB of 2^32), windows,
//! round-trip time, which end opens and which end probes.
//!
//! Every frame records which end sent it ([`Origin`]), what it is under the daemon's
//! rules ([`Kind`], from which [`expected`] derives the daemon's counters), and, when
//! tshark's TCP analysis is expected to see it differently, the documented reason
//! ([`Difference`]). See `docs/accuracy.md`.

pub mod accounting;
pub mod conversations;
mod kinds;
mod rng;
pub mod script;
pub mod tshark;
pub mod wire;

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::path::Path;

use crate::Family;
pub use conversations::Scenario;
pub use kinds::{Cat, Difference, Kind};
pub use rng::Rng;

/// MAC addresses of the two ends. Neither is the address of a test interface, so the
/// receiving stacks drop the replayed frames (PACKET_OTHERHOST) after tc has seen them.
pub const LOCAL_MAC: [u8; 6] = [0x02, 0x6b, 0x61, 0x00, 0x00, 0x01];
pub const REMOTE_MAC: [u8; 6] = [0x02, 0x6b, 0x61, 0x00, 0x00, 0x02];
pub const LOCAL_V4: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 1);
pub const LOCAL_V6: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 1);
/// Conversation `i` uses local port `LOCAL_PORT_BASE + i` (unique) and a remote port in
/// `REMOTE_PORTS`.
pub const LOCAL_PORT_BASE: u16 = 20_000;
/// At most this many conversations (local ports `LOCAL_PORT_BASE..+MAX_FLOWS`).
pub const MAX_FLOWS: usize = 10_000;
pub const REMOTE_PORTS: std::ops::RangeInclusive<u16> = 7_000..=7_999;

/// Which end of its conversation sent a frame.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Origin {
    /// The daemon's host: the frame leaves through tc egress (`direction="sent"`).
    Local,
    /// The peer: the frame arrives through tc ingress (`direction="received"`).
    Remote,
}

impl Origin {
    pub fn peer(self) -> Origin {
        match self {
            Origin::Local => Origin::Remote,
            Origin::Remote => Origin::Local,
        }
    }

    /// The daemon's `direction` label of a frame this end sent.
    pub fn direction(self) -> &'static str {
        match self {
            Origin::Local => "sent",
            Origin::Remote => "received",
        }
    }

    /// The sender of a corpus frame, from its source MAC address.
    pub fn of_frame(frame: &[u8]) -> Option<Origin> {
        match frame.get(6..12)? {
            m if m == LOCAL_MAC => Some(Origin::Local),
            m if m == REMOTE_MAC => Some(Origin::Remote),
            _ => None,
        }
    }
}

/// One frame of the corpus.
#[derive(Clone, Debug)]
pub struct Frame {
    /// Capture timestamp, µs since the epoch of the file.
    pub time_us: u64,
    pub origin: Origin,
    /// Index of its conversation in [`Corpus::flows`].
    pub flow: u32,
    pub family: Family,
    pub kind: Kind,
    pub seq: u32,
    pub ack: u32,
    /// TCP flags byte.
    pub flags: u8,
    pub window: u16,
    pub payload_len: u32,
    pub difference: Option<Difference>,
    /// The whole Ethernet frame.
    pub bytes: Vec<u8>,
}

impl Frame {
    /// One line for messages.
    pub fn summary(&self) -> String {
        let names = [
            (wire::SYN, 'S'),
            (wire::FIN, 'F'),
            (wire::RST, 'R'),
            (wire::PSH, 'P'),
            (wire::ACK, 'A'),
        ];
        let flags: String = names
            .iter()
            .filter(|(b, _)| self.flags & b != 0)
            .map(|(_, c)| *c)
            .collect();
        format!(
            "t={}.{:06} {:?} {} [{flags}] seq={} ack={} win={} len={} {:?}{}",
            self.time_us / 1_000_000,
            self.time_us % 1_000_000,
            self.origin,
            self.family,
            self.seq,
            self.ack,
            self.window,
            self.payload_len,
            self.kind,
            self.difference
                .map_or(String::new(), |d| format!(" (tshark: {d:?})"))
        )
    }

    /// What tshark is expected to flag on this frame.
    pub fn tshark_cat(&self) -> Cat {
        self.difference.map_or(self.kind.cat(), Difference::tshark)
    }
}

/// One conversation of the corpus.
#[derive(Clone, Debug)]
pub struct FlowInfo {
    pub scenario: Scenario,
    pub shape: script::Shape,
}

#[derive(Clone, Debug)]
pub struct Corpus {
    pub seed: u64,
    pub flows: Vec<FlowInfo>,
    /// All frames of all conversations, interleaved in capture order.
    pub frames: Vec<Frame>,
}

pub const DEFAULT_SEED: u64 = 0x6b61_2d63_6f72_7075;
/// Conversations per scenario in the default corpus.
pub const DEFAULT_FLOWS_PER_SCENARIO: usize = 30;

/// Generates the corpus: `per_scenario` conversations of each [`Scenario`], cycled.
pub fn generate(seed: u64, per_scenario: usize) -> Corpus {
    let mut rng = Rng::new(seed);
    let mut flows = Vec::new();
    let mut frames = Vec::new();
    let total = per_scenario * Scenario::ALL.len();
    assert!(total <= MAX_FLOWS, "at most {MAX_FLOWS} conversations");
    for i in 0..total {
        let scenario = Scenario::ALL[i % Scenario::ALL.len()];
        let family = if (i / Scenario::ALL.len()).is_multiple_of(2) {
            Family::Ipv4
        } else {
            Family::Ipv6
        };
        let shape = shape(&mut rng, i as u32, family);
        frames.extend(conversations::write(scenario, shape.clone(), &mut rng));
        flows.push(FlowInfo { scenario, shape });
    }
    // Interleave: by time, then conversation (each conversation's frames are already
    // strictly increasing in time); then make capture timestamps strictly increasing.
    frames.sort_by_key(|f| (f.time_us, f.flow));
    for i in 1..frames.len() {
        if frames[i].time_us <= frames[i - 1].time_us {
            frames[i].time_us = frames[i - 1].time_us + 1;
        }
    }
    Corpus {
        seed,
        flows,
        frames,
    }
}

fn shape(rng: &mut Rng, flow: u32, family: Family) -> script::Shape {
    let remote_ip: IpAddr = match family {
        Family::Ipv4 => Ipv4Addr::new(192, 0, 2, 2 + (flow % 250) as u8).into(),
        Family::Ipv6 => Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0x100, flow as u16).into(),
    };
    let local_ip: IpAddr = match family {
        Family::Ipv4 => LOCAL_V4.into(),
        Family::Ipv6 => LOCAL_V6.into(),
    };
    let encap = match rng.range(0, 99) {
        0..=59 => wire::Encap::Plain,
        60..=84 => wire::Encap::Vlan(rng.range(2, 4094) as u16),
        _ => wire::Encap::QinQ(rng.range(2, 4094) as u16, rng.range(2, 4094) as u16),
    };
    script::Shape {
        flow,
        family,
        local: wire::Host {
            mac: LOCAL_MAC,
            ip: local_ip,
            port: LOCAL_PORT_BASE + flow as u16,
        },
        remote: wire::Host {
            mac: REMOTE_MAC,
            ip: remote_ip,
            port: rng.range(
                u64::from(*REMOTE_PORTS.start()),
                u64::from(*REMOTE_PORTS.end()),
            ) as u16,
        },
        encap,
        ip_extras: rng.chance(20),
        timestamps: rng.chance(50),
        sack: rng.chance(60),
        start_us: rng.range(0, 30_000_000),
        rtt_us: rng.range(80, 3_000),
    }
}

/// Label sets and values of the daemon's counters, keyed like
/// [`crate::metrics::series_key`].
pub type Counts = BTreeMap<String, u64>;

/// The daemon's counters this corpus must produce under its rules, every series of
/// the four wire metrics included (zeros too).
pub fn expected(corpus: &Corpus) -> Counts {
    expected_for(&corpus.frames)
}

/// [`expected`] for some frames (e.g. one conversation's).
pub fn expected_for<'a>(frames: impl IntoIterator<Item = &'a Frame>) -> Counts {
    use crate::metrics::series_key;
    use crate::names::{PROBE_ACKS, PROBES, RESETS, ZERO_WINDOW_PROBES};
    let mut counts = Counts::new();
    for fam in Family::ALL {
        let f = fam.label();
        for dir in ["sent", "received"] {
            for p in ["0", "1"] {
                let k = [("direction", dir), ("family", f), ("payload_bytes", p)];
                counts.insert(series_key(PROBES, k), 0);
            }
            for name in [PROBE_ACKS, ZERO_WINDOW_PROBES] {
                counts.insert(series_key(name, [("direction", dir), ("family", f)]), 0);
            }
        }
        for reason in ["timeout", "peer_reset", "local_reset"] {
            counts.insert(series_key(RESETS, [("reason", reason), ("family", f)]), 0);
        }
    }
    for fr in frames {
        let f = fr.family.label();
        let dir = fr.origin.direction();
        let key = match fr.kind {
            Kind::Probe => {
                let p = if fr.payload_len == 1 { "1" } else { "0" };
                series_key(
                    PROBES,
                    [("direction", dir), ("family", f), ("payload_bytes", p)],
                )
            }
            // An answer counts under the direction of the probe it answers.
            Kind::ProbeAck => series_key(
                PROBE_ACKS,
                [("direction", fr.origin.peer().direction()), ("family", f)],
            ),
            Kind::ZeroWindowProbe => {
                series_key(ZERO_WINDOW_PROBES, [("direction", dir), ("family", f)])
            }
            Kind::ProbeRst => {
                let reason = match fr.origin {
                    Origin::Remote => "peer_reset",
                    Origin::Local => "local_reset",
                };
                series_key(RESETS, [("reason", reason), ("family", f)])
            }
            _ => continue,
        };
        *counts.get_mut(&key).expect("series listed above") += 1;
    }
    counts
}

impl Corpus {
    pub fn write_pcap(&self, path: &Path) -> std::io::Result<()> {
        let file = std::io::BufWriter::new(std::fs::File::create(path)?);
        wire::write_pcap(
            file,
            self.frames.iter().map(|f| (f.time_us, f.bytes.as_slice())),
        )
    }

    /// A table of what the corpus holds, for reports.
    pub fn composition(&self) -> String {
        let mut by_scenario: BTreeMap<Scenario, (usize, usize)> = BTreeMap::new();
        for fr in &self.frames {
            by_scenario
                .entry(self.flows[fr.flow as usize].scenario)
                .or_default()
                .1 += 1;
        }
        for fl in &self.flows {
            by_scenario.entry(fl.scenario).or_default().0 += 1;
        }
        let mut out = format!(
            "seed {:#x}: {} conversations, {} frames\n",
            self.seed,
            self.flows.len(),
            self.frames.len()
        );
        for (s, (flows, frames)) in &by_scenario {
            let _ = writeln!(
                out,
                "  {:<28} {flows:>4} conversations {frames:>6} frames",
                s.name()
            );
        }
        let mut tally = |what: &str, key: &dyn Fn(&FlowInfo) -> String| {
            let mut m: BTreeMap<String, usize> = BTreeMap::new();
            for fl in &self.flows {
                *m.entry(key(fl)).or_default() += 1;
            }
            let _ = writeln!(out, "  {what}: {m:?}");
        };
        tally("family", &|f| f.shape.family.label().to_owned());
        tally("framing", &|f| f.shape.encap.label().to_owned());
        tally("ip options / ipv6 ext headers", &|f| {
            f.shape.ip_extras.to_string()
        });
        tally("tcp timestamps", &|f| f.shape.timestamps.to_string());
        tally("sack", &|f| f.shape.sack.to_string());
        let mut kinds: BTreeMap<(Kind, Origin), usize> = BTreeMap::new();
        for fr in &self.frames {
            *kinds.entry((fr.kind, fr.origin)).or_default() += 1;
        }
        let _ = writeln!(out, "  frames by kind and sender: {kinds:?}");
        out
    }
}

#[cfg(test)]
mod tests;

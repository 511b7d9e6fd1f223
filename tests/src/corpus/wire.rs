//! Bytes on the wire: Ethernet (optionally with an 802.1Q tag, or 802.1ad + 802.1Q),
//! IPv4 (optionally with options) or IPv6 (optionally with hop-by-hop and destination
//! options headers), TCP with options and valid checksums; and the classic pcap file
//! format (LINKTYPE_ETHERNET, microsecond timestamps).

use std::io::{self, Read, Write};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

pub const ETH_P_IP: u16 = 0x0800;
pub const ETH_P_IPV6: u16 = 0x86dd;
pub const ETH_P_8021Q: u16 = 0x8100;
pub const ETH_P_8021AD: u16 = 0x88a8;

pub const FIN: u8 = 0x01;
pub const SYN: u8 = 0x02;
pub const RST: u8 = 0x04;
pub const PSH: u8 = 0x08;
pub const ACK: u8 = 0x10;

/// How a flow's frames are framed below IP.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Encap {
    Plain,
    /// One 802.1Q tag with this VLAN id.
    Vlan(u16),
    /// 802.1ad outer tag and 802.1Q inner tag (QinQ).
    QinQ(u16, u16),
}

impl Encap {
    pub fn label(self) -> &'static str {
        match self {
            Encap::Plain => "untagged",
            Encap::Vlan(_) => "802.1Q",
            Encap::QinQ(..) => "802.1ad+802.1Q",
        }
    }
}

/// One end of a flow on the wire.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Host {
    pub mac: [u8; 6],
    pub ip: IpAddr,
    pub port: u16,
}

/// Everything about a TCP segment except its addresses.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Tcp {
    pub seq: u32,
    pub ack: u32,
    pub flags: u8,
    pub window: u16,
    /// Raw option bytes (a multiple of 4, at most 40).
    pub options: Vec<u8>,
    pub payload: Vec<u8>,
}

/// IPv4 options: Router Alert (RFC 2113), then NOP, NOP, NOP, EOL.
const IPV4_OPTIONS: [u8; 8] = [0x94, 0x04, 0x00, 0x00, 0x01, 0x01, 0x01, 0x00];
const IPPROTO_TCP: u8 = 6;
const IPPROTO_DSTOPTS: u8 = 60;

/// Builds one Ethernet frame from `src` to `dst`. `ip_extras` adds IPv4 options, or an
/// IPv6 hop-by-hop header and a destination options header (each 8 bytes of PadN).
pub fn frame(
    src: &Host,
    dst: &Host,
    encap: Encap,
    ip_extras: bool,
    ip_id: u16,
    tcp: &Tcp,
) -> Vec<u8> {
    assert!(tcp.options.len().is_multiple_of(4) && tcp.options.len() <= 40);
    let segment = tcp_bytes(src, dst, tcp);
    let mut out = Vec::with_capacity(segment.len() + 80);
    out.extend_from_slice(&dst.mac);
    out.extend_from_slice(&src.mac);
    match encap {
        Encap::Plain => {}
        Encap::Vlan(id) => push_tag(&mut out, ETH_P_8021Q, id),
        Encap::QinQ(outer, inner) => {
            push_tag(&mut out, ETH_P_8021AD, outer);
            push_tag(&mut out, ETH_P_8021Q, inner);
        }
    }
    match (src.ip, dst.ip) {
        (IpAddr::V4(s), IpAddr::V4(d)) => {
            push_ipv4(&mut out, (s, d), ip_extras, ip_id, segment.len());
        }
        (IpAddr::V6(s), IpAddr::V6(d)) => {
            // Flow label from the ports, so each flow keeps one.
            let label = (u32::from(src.port) ^ (u32::from(dst.port) << 4)) & 0xf_ffff;
            push_ipv6(&mut out, (s, d), label, ip_extras, segment.len());
        }
        _ => panic!("mixed address families {src:?} -> {dst:?}"),
    }
    out.extend_from_slice(&segment);
    out
}

/// Appends the IPv4 ethertype and header (with [`IPV4_OPTIONS`] when `options`) of a
/// packet carrying `payload_len` bytes of TCP.
fn push_ipv4(
    out: &mut Vec<u8>,
    (s, d): (Ipv4Addr, Ipv4Addr),
    options: bool,
    ip_id: u16,
    payload_len: usize,
) {
    out.extend_from_slice(&ETH_P_IP.to_be_bytes());
    let opts: &[u8] = if options { &IPV4_OPTIONS } else { &[] };
    let hlen = 20 + opts.len();
    let mut h = Vec::with_capacity(hlen);
    h.push(0x40 | (hlen / 4) as u8);
    h.push(0);
    h.extend_from_slice(&((hlen + payload_len) as u16).to_be_bytes());
    h.extend_from_slice(&ip_id.to_be_bytes());
    h.extend_from_slice(&0x4000u16.to_be_bytes()); // DF
    h.push(64);
    h.push(IPPROTO_TCP);
    h.extend_from_slice(&[0, 0]);
    h.extend_from_slice(&s.octets());
    h.extend_from_slice(&d.octets());
    h.extend_from_slice(opts);
    let sum = checksum(&[&h]);
    h[10..12].copy_from_slice(&sum.to_be_bytes());
    out.extend_from_slice(&h);
}

/// Hop-by-hop (next: destination options), then destination options (next: TCP);
/// each one PadN option filling its 8 bytes.
const IPV6_EXTENSION_HEADERS: [u8; 16] = [
    IPPROTO_DSTOPTS,
    0,
    1,
    4,
    0,
    0,
    0,
    0,
    IPPROTO_TCP,
    0,
    1,
    4,
    0,
    0,
    0,
    0,
];

/// Appends the IPv6 ethertype and header (followed by [`IPV6_EXTENSION_HEADERS`] when
/// `extensions`) of a packet carrying `payload_len` bytes of TCP.
fn push_ipv6(
    out: &mut Vec<u8>,
    (s, d): (Ipv6Addr, Ipv6Addr),
    flow_label: u32,
    extensions: bool,
    payload_len: usize,
) {
    out.extend_from_slice(&ETH_P_IPV6.to_be_bytes());
    let ext: &[u8] = if extensions {
        &IPV6_EXTENSION_HEADERS
    } else {
        &[]
    };
    out.extend_from_slice(&(0x6000_0000u32 | flow_label).to_be_bytes());
    out.extend_from_slice(&((ext.len() + payload_len) as u16).to_be_bytes());
    out.push(if extensions { 0 } else { IPPROTO_TCP });
    out.push(64);
    out.extend_from_slice(&s.octets());
    out.extend_from_slice(&d.octets());
    out.extend_from_slice(ext);
}

fn push_tag(out: &mut Vec<u8>, tpid: u16, vid: u16) {
    out.extend_from_slice(&tpid.to_be_bytes());
    out.extend_from_slice(&(vid & 0x0fff).to_be_bytes());
}

/// The TCP header, options and payload with a valid checksum.
fn tcp_bytes(src: &Host, dst: &Host, tcp: &Tcp) -> Vec<u8> {
    let hlen = 20 + tcp.options.len();
    let mut t = Vec::with_capacity(hlen + tcp.payload.len());
    t.extend_from_slice(&src.port.to_be_bytes());
    t.extend_from_slice(&dst.port.to_be_bytes());
    t.extend_from_slice(&tcp.seq.to_be_bytes());
    t.extend_from_slice(&tcp.ack.to_be_bytes());
    t.push(((hlen / 4) as u8) << 4);
    t.push(tcp.flags);
    t.extend_from_slice(&tcp.window.to_be_bytes());
    t.extend_from_slice(&[0, 0, 0, 0]); // checksum, urgent pointer
    t.extend_from_slice(&tcp.options);
    t.extend_from_slice(&tcp.payload);
    let len = t.len() as u32;
    let sum = match (src.ip, dst.ip) {
        (IpAddr::V4(s), IpAddr::V4(d)) => {
            let pseudo = [
                &s.octets()[..],
                &d.octets(),
                &[0, IPPROTO_TCP],
                &(len as u16).to_be_bytes(),
            ]
            .concat();
            checksum(&[&pseudo, &t])
        }
        (IpAddr::V6(s), IpAddr::V6(d)) => {
            let pseudo = [
                &s.octets()[..],
                &d.octets(),
                &len.to_be_bytes(),
                &[0, 0, 0, IPPROTO_TCP],
            ]
            .concat();
            checksum(&[&pseudo, &t])
        }
        _ => panic!("mixed address families"),
    };
    t[16..18].copy_from_slice(&sum.to_be_bytes());
    t
}

/// The Internet checksum (RFC 1071) over the concatenation of `parts`; every part but
/// the last must have an even length.
pub fn checksum(parts: &[&[u8]]) -> u16 {
    let mut sum: u32 = 0;
    for part in parts {
        let (pairs, rest) = part.as_chunks::<2>();
        for c in pairs {
            sum += u32::from(u16::from_be_bytes(*c));
        }
        if let [last] = rest {
            sum += u32::from(*last) << 8;
        }
    }
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(sum as u16)
}

/// TCP option bytes, padded with leading NOPs to a multiple of 4 like Linux does.
#[derive(Clone, Debug, Default)]
pub struct Options(Vec<u8>);

impl Options {
    pub fn new() -> Options {
        Options(Vec::new())
    }
    pub fn mss(mut self, mss: u16) -> Options {
        self.0.extend_from_slice(&[2, 4]);
        self.0.extend_from_slice(&mss.to_be_bytes());
        self
    }
    pub fn sack_permitted(mut self) -> Options {
        self.0.extend_from_slice(&[1, 1, 4, 2]);
        self
    }
    pub fn timestamps(mut self, tsval: u32, tsecr: u32) -> Options {
        self.0.extend_from_slice(&[1, 1, 8, 10]);
        self.0.extend_from_slice(&tsval.to_be_bytes());
        self.0.extend_from_slice(&tsecr.to_be_bytes());
        self
    }
    /// SACK blocks `[left, right)`.
    pub fn sack(mut self, blocks: &[(u32, u32)]) -> Options {
        self.0
            .extend_from_slice(&[1, 1, 5, (2 + 8 * blocks.len()) as u8]);
        for (l, r) in blocks {
            self.0.extend_from_slice(&l.to_be_bytes());
            self.0.extend_from_slice(&r.to_be_bytes());
        }
        self
    }
    pub fn into_bytes(self) -> Vec<u8> {
        assert!(
            self.0.len().is_multiple_of(4) && self.0.len() <= 40,
            "{:?}",
            self.0
        );
        self.0
    }
}

const PCAP_MAGIC_US: u32 = 0xa1b2_c3d4;
const LINKTYPE_ETHERNET: u32 = 1;
const SNAPLEN: u32 = 65535;

/// Writes a classic pcap file: `(timestamp in µs, frame)` records in order.
pub fn write_pcap<'a>(
    mut out: impl Write,
    records: impl IntoIterator<Item = (u64, &'a [u8])>,
) -> io::Result<()> {
    let mut header = Vec::with_capacity(24);
    header.extend_from_slice(&PCAP_MAGIC_US.to_le_bytes());
    header.extend_from_slice(&2u16.to_le_bytes());
    header.extend_from_slice(&4u16.to_le_bytes());
    header.extend_from_slice(&0i32.to_le_bytes()); // thiszone
    header.extend_from_slice(&0u32.to_le_bytes()); // sigfigs
    header.extend_from_slice(&SNAPLEN.to_le_bytes());
    header.extend_from_slice(&LINKTYPE_ETHERNET.to_le_bytes());
    out.write_all(&header)?;
    for (ts_us, bytes) in records {
        let mut rec = Vec::with_capacity(16 + bytes.len());
        rec.extend_from_slice(&((ts_us / 1_000_000) as u32).to_le_bytes());
        rec.extend_from_slice(&((ts_us % 1_000_000) as u32).to_le_bytes());
        rec.extend_from_slice(&(bytes.len() as u32).to_le_bytes());
        rec.extend_from_slice(&(bytes.len() as u32).to_le_bytes());
        rec.extend_from_slice(bytes);
        out.write_all(&rec)?;
    }
    out.flush()
}

/// Reads a classic little-endian microsecond pcap file of Ethernet frames (what
/// [`write_pcap`] writes): `(timestamp in µs, frame)` records.
pub fn read_pcap(mut input: impl Read) -> io::Result<Vec<(u64, Vec<u8>)>> {
    let bad = |what: &str| io::Error::new(io::ErrorKind::InvalidData, what.to_owned());
    let mut data = Vec::new();
    input.read_to_end(&mut data)?;
    let u32_at =
        |d: &[u8], off: usize| u32::from_le_bytes([d[off], d[off + 1], d[off + 2], d[off + 3]]);
    if data.len() < 24 || u32_at(&data, 0) != PCAP_MAGIC_US {
        return Err(bad("not a little-endian microsecond pcap file"));
    }
    if u32_at(&data, 20) != LINKTYPE_ETHERNET {
        return Err(bad("link type is not Ethernet"));
    }
    let mut off = 24;
    let mut records = Vec::new();
    while off < data.len() {
        if data.len() - off < 16 {
            return Err(bad("truncated record header"));
        }
        let ts = u64::from(u32_at(&data, off)) * 1_000_000 + u64::from(u32_at(&data, off + 4));
        let len = u32_at(&data, off + 8) as usize;
        off += 16;
        if data.len() - off < len {
            return Err(bad("truncated record"));
        }
        records.push((ts, data[off..off + len].to_vec()));
        off += len;
    }
    Ok(records)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::{Ipv4Addr, Ipv6Addr};

    fn hosts(v6: bool) -> (Host, Host) {
        let (a, b): (IpAddr, IpAddr) = if v6 {
            (
                Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 1).into(),
                Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 2).into(),
            )
        } else {
            (
                Ipv4Addr::new(192, 0, 2, 1).into(),
                Ipv4Addr::new(192, 0, 2, 2).into(),
            )
        };
        (
            Host {
                mac: [2, 0, 0, 0, 0, 1],
                ip: a,
                port: 40000,
            },
            Host {
                mac: [2, 0, 0, 0, 0, 2],
                ip: b,
                port: 443,
            },
        )
    }

    /// Verifying a correct checksum over the whole covered range gives zero.
    #[test]
    fn checksums_verify() {
        for v6 in [false, true] {
            for extras in [false, true] {
                let (a, b) = hosts(v6);
                let tcp = Tcp {
                    seq: u32::MAX,
                    ack: 7,
                    flags: ACK | PSH,
                    window: 1000,
                    options: Options::new().timestamps(1, 2).into_bytes(),
                    payload: vec![0xab; 3],
                };
                let f = frame(&a, &b, Encap::QinQ(10, 20), extras, 9, &tcp);
                let l3 = 14 + 8;
                let (l4, pseudo) = if v6 {
                    let l4 = l3 + 40 + if extras { 16 } else { 0 };
                    let len = (f.len() - l4) as u32;
                    let p = [&f[l3 + 8..l3 + 40], &len.to_be_bytes()[..], &[0, 0, 0, 6]].concat();
                    (l4, p)
                } else {
                    let ihl = usize::from(f[l3] & 0xf) * 4;
                    assert_eq!(checksum(&[&f[l3..l3 + ihl]]), 0);
                    let len = (f.len() - l3 - ihl) as u16;
                    let p = [&f[l3 + 12..l3 + 20], &[0, 6], &len.to_be_bytes()[..]].concat();
                    (l3 + ihl, p)
                };
                assert_eq!(checksum(&[&pseudo, &f[l4..]]), 0, "v6={v6} extras={extras}");
            }
        }
    }

    #[test]
    fn pcap_round_trip() {
        let frames = [(1_500_000u64, vec![1u8, 2, 3]), (2_000_001, vec![4; 60])];
        let mut buf = Vec::new();
        write_pcap(&mut buf, frames.iter().map(|(t, f)| (*t, f.as_slice()))).unwrap();
        assert_eq!(read_pcap(buf.as_slice()).unwrap(), frames.to_vec());
    }
}

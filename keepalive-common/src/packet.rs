//! Frame parsing: Ethernet (with up to two VLAN tags), IPv4 or IPv6 (with extension
//! headers), TCP. Generic over [`Packet`] so the kernel reads with direct packet access
//! and the host tests read from a byte slice, through the same code.
//!
//! The parser stops as early as it can: a segment that can be neither a keepalive probe
//! nor an answer to one (SYN, or more than one payload byte without RST/FIN) returns
//! [`Parsed::NotCandidate`] before addresses and sequence numbers are read.

use crate::Family;

/// Access to a frame that starts at its link-layer header, one header at a time: a
/// single bounds check per header, then reads at constant offsets inside it. (The
/// verifier needs each packet read to go through a pointer it saw checked; checking
/// per header also makes the fewest comparisons.)
pub trait Packet {
    type Header: Header;
    /// The `len` bytes at `offset`, or `None` when the frame is shorter.
    fn header(&self, offset: usize, len: usize) -> Option<Self::Header>;
    /// Length of the whole frame (for an skb: skb->len, linear or not).
    fn frame_len(&self) -> usize;
}

/// Reads inside a checked header. `at` (plus the field size) must lie inside the length
/// the header was checked for; the parser only uses constant offsets that do.
pub trait Header {
    fn u8(&self, at: usize) -> u8;
    /// A big-endian (network order) 16-bit field.
    fn be16(&self, at: usize) -> u16;
    /// A big-endian (network order) 32-bit field.
    fn be32(&self, at: usize) -> u32;
    /// Four bytes kept in wire order inside a native u32 (addresses: compared, never
    /// used as numbers, so no byte swap).
    fn raw32(&self, at: usize) -> u32;
}

impl<'a> Packet for &'a [u8] {
    type Header = &'a [u8];
    fn header(&self, offset: usize, len: usize) -> Option<&'a [u8]> {
        self.get(offset..offset.checked_add(len)?)
    }
    fn frame_len(&self) -> usize {
        self.len()
    }
}

impl Header for &[u8] {
    fn u8(&self, at: usize) -> u8 {
        self[at]
    }
    fn be16(&self, at: usize) -> u16 {
        u16::from_be_bytes([self[at], self[at + 1]])
    }
    fn be32(&self, at: usize) -> u32 {
        u32::from_be_bytes([self[at], self[at + 1], self[at + 2], self[at + 3]])
    }
    fn raw32(&self, at: usize) -> u32 {
        u32::from_ne_bytes([self[at], self[at + 1], self[at + 2], self[at + 3]])
    }
}

pub const TCP_FIN: u8 = 0x01;
pub const TCP_SYN: u8 = 0x02;
pub const TCP_RST: u8 = 0x04;
pub const TCP_PSH: u8 = 0x08;
pub const TCP_ACK: u8 = 0x10;

const ETH_HLEN: usize = 14;
const ETH_P_IP: u16 = 0x0800;
const ETH_P_IPV6: u16 = 0x86dd;
const ETH_P_8021Q: u16 = 0x8100;
const ETH_P_8021AD: u16 = 0x88a8;
const IPPROTO_TCP: u8 = 6;
const IPV6_HLEN: usize = 40;
const TCP_MIN_HLEN: u32 = 20;
/// Extension headers walked before giving up on an IPv6 packet: real traffic carries
/// at most one or two; the bound keeps the kernel loop finite for the verifier.
const IPV6_MAX_EXT_HEADERS: usize = 4;

/// A TCP segment that may be a keepalive probe, an answer to one, or a FIN/RST that
/// ends a tracked connection.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Segment {
    pub family: Family,
    /// Source and destination addresses as on the wire; IPv4 uses word 0 only.
    pub src: [u32; 4],
    pub dst: [u32; 4],
    pub sport: u16,
    pub dport: u16,
    pub seq: u32,
    pub ack: u32,
    /// The TCP flags byte (FIN, SYN, RST, PSH, ACK, URG, ECE, CWR).
    pub flags: u8,
    /// The raw advertised window (unscaled: zero is zero whatever the scale).
    pub window: u16,
    /// TCP payload length: 0 or 1 for probe-shaped segments, anything for RST/FIN.
    pub payload_len: u32,
}

impl Segment {
    #[inline(always)]
    pub const fn has(&self, flag: u8) -> bool {
        self.flags & flag != 0
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Parsed {
    /// Not TCP over IPv4/IPv6, or a non-first fragment: nothing to do.
    NotTcp,
    /// TCP, but cannot be a probe, an answer or a FIN/RST: the fast path.
    NotCandidate,
    Candidate(Segment),
}

/// Why a frame that claimed to be IP/TCP could not be parsed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u32)]
pub enum ParseError {
    /// The frame ends inside a header it announces.
    Truncated = 1,
    /// Header fields contradict each other (lengths too small, bad version).
    Malformed = 2,
}

/// The header at `offset`; a frame that ends inside it is truncated.
#[inline(always)]
fn need<P: Packet + ?Sized>(p: &P, offset: usize, len: usize) -> Result<P::Header, ParseError> {
    p.header(offset, len).ok_or(ParseError::Truncated)
}

/// Parses a frame that starts with an Ethernet header.
#[inline(always)]
pub fn parse_ethernet<P: Packet + ?Sized>(p: &P) -> Result<Parsed, ParseError> {
    let mut off = ETH_HLEN;
    let mut proto = need(p, 12, 2)?.be16(0);
    // Up to two tags (802.1ad outer + 802.1Q inner); tc usually sees them stripped into
    // skb->vlan_tci, but replayed captures and some drivers leave them in the frame.
    if proto == ETH_P_8021Q || proto == ETH_P_8021AD {
        proto = need(p, off + 2, 2)?.be16(0);
        off += 4;
        if proto == ETH_P_8021Q || proto == ETH_P_8021AD {
            proto = need(p, off + 2, 2)?.be16(0);
            off += 4;
        }
    }
    match proto {
        ETH_P_IP => parse_ipv4(p, off),
        ETH_P_IPV6 => parse_ipv6(p, off),
        _ => Ok(Parsed::NotTcp),
    }
}

#[inline(always)]
fn parse_ipv4<P: Packet + ?Sized>(p: &P, l3: usize) -> Result<Parsed, ParseError> {
    let ip = need(p, l3, 20)?;
    let vihl = ip.u8(0);
    if vihl >> 4 != 4 {
        return Err(ParseError::Malformed);
    }
    let ihl = ((vihl & 0x0f) as u32) * 4;
    if ihl < 20 {
        return Err(ParseError::Malformed);
    }
    if ip.u8(9) != IPPROTO_TCP {
        return Ok(Parsed::NotTcp);
    }
    // More-fragments or a fragment offset: the TCP header may be elsewhere.
    if ip.be16(6) & 0x3fff != 0 {
        return Ok(Parsed::NotTcp);
    }
    let tot_len = ip.be16(2) as u32;
    if tot_len == 0 {
        // IPv4 BIG TCP (GSO packets over 64 KiB) carries tot_len 0: bulk data.
        return Ok(Parsed::NotCandidate);
    }
    if tot_len < ihl + TCP_MIN_HLEN {
        return Err(ParseError::Malformed);
    }
    let l4 = l3 + ihl as usize;
    let Some(tcp) = tcp_fixed(p, l4, tot_len - ihl)? else {
        return Ok(Parsed::NotCandidate);
    };
    let (src, dst) = (ip.raw32(12), ip.raw32(16));
    Ok(Parsed::Candidate(tcp.into_segment(
        Family::Ipv4,
        [src, 0, 0, 0],
        [dst, 0, 0, 0],
    )))
}

#[inline(always)]
fn parse_ipv6<P: Packet + ?Sized>(p: &P, l3: usize) -> Result<Parsed, ParseError> {
    let ip = need(p, l3, IPV6_HLEN)?;
    if ip.u8(0) >> 4 != 6 {
        return Err(ParseError::Malformed);
    }
    let payload_len = ip.be16(4) as u32;
    let mut next = ip.u8(6);
    let mut off = l3 + IPV6_HLEN;
    let mut ext_len: u32 = 0;
    let mut walked = 0;
    while next != IPPROTO_TCP {
        if walked == IPV6_MAX_EXT_HEADERS {
            return Ok(Parsed::NotTcp);
        }
        walked += 1;
        let ext = need(p, off, 2)?;
        let hdr_len = ext.u8(1) as u32;
        let len = match next {
            // Hop-by-hop, routing, destination options: (hdr ext len + 1) * 8.
            0 | 43 | 60 => (hdr_len + 1) * 8,
            // Authentication header: (payload len + 2) * 4.
            51 => (hdr_len + 2) * 4,
            // Fragment header, ESP, no-next-header, anything else: not a TCP we can read.
            _ => return Ok(Parsed::NotTcp),
        };
        next = ext.u8(0);
        off += len as usize;
        ext_len += len;
    }
    if payload_len == 0 {
        // A jumbogram (IPv6 BIG TCP): bulk data.
        return Ok(Parsed::NotCandidate);
    }
    if payload_len < ext_len + TCP_MIN_HLEN {
        return Err(ParseError::Malformed);
    }
    let Some(tcp) = tcp_fixed(p, off, payload_len - ext_len)? else {
        return Ok(Parsed::NotCandidate);
    };
    let src = [ip.raw32(8), ip.raw32(12), ip.raw32(16), ip.raw32(20)];
    let dst = [ip.raw32(24), ip.raw32(28), ip.raw32(32), ip.raw32(36)];
    Ok(Parsed::Candidate(tcp.into_segment(Family::Ipv6, src, dst)))
}

struct TcpFixed {
    sport: u16,
    dport: u16,
    seq: u32,
    ack: u32,
    flags: u8,
    window: u16,
    payload_len: u32,
}

impl TcpFixed {
    #[inline(always)]
    fn into_segment(self, family: Family, src: [u32; 4], dst: [u32; 4]) -> Segment {
        Segment {
            family,
            src,
            dst,
            sport: self.sport,
            dport: self.dport,
            seq: self.seq,
            ack: self.ack,
            flags: self.flags,
            window: self.window,
            payload_len: self.payload_len,
        }
    }
}

/// Reads the fixed TCP header at `l4`; `l4_len` is the TCP header plus payload length
/// that the IP header announces. `None` means the segment is not a candidate.
#[inline(always)]
fn tcp_fixed<P: Packet + ?Sized>(
    p: &P,
    l4: usize,
    l4_len: u32,
) -> Result<Option<TcpFixed>, ParseError> {
    // Data offset and flags first: most segments leave right after.
    let tcp = need(p, l4, TCP_MIN_HLEN as usize)?;
    let doff = ((tcp.u8(12) >> 4) as u32) * 4;
    if doff < TCP_MIN_HLEN || doff > l4_len {
        return Err(ParseError::Malformed);
    }
    let flags = tcp.u8(13);
    let window = tcp.be16(14);
    let payload_len = l4_len - doff;
    if !is_candidate(flags, payload_len, window) {
        return Ok(None);
    }
    // A candidate must be in the frame whole: one cut inside its TCP options or its
    // payload byte is a broken frame, not a probe (the stack would drop it). Only
    // candidates are checked: bulk data may sit in pages beyond the headers, but
    // frame_len counts those too.
    if l4 + l4_len as usize > p.frame_len() {
        return Err(ParseError::Truncated);
    }
    Ok(Some(TcpFixed {
        sport: tcp.be16(0),
        dport: tcp.be16(2),
        seq: tcp.be32(4),
        ack: tcp.be32(8),
        flags,
        window,
        payload_len,
    }))
}

/// The early exit: can a segment with these flags, payload and window be a keepalive
/// probe, an answer to one, a FIN/RST that closes a tracked connection, or a zero-window
/// announcement?
///
/// SYNs never are (connections are tracked from their first pure ACK). Data of more
/// than one byte is not, unless it advertises a zero window (rare, and the classifier
/// must see every zero-window announcement to tell zero-window probes from keepalives):
/// the classifier learns each side's next sequence number from the small segments alone
/// (see [`crate::classify`]).
#[inline(always)]
pub const fn is_candidate(flags: u8, payload_len: u32, window: u16) -> bool {
    if flags & TCP_SYN != 0 {
        return false;
    }
    if flags & (TCP_RST | TCP_FIN) != 0 {
        return true;
    }
    flags & TCP_ACK != 0 && (payload_len <= 1 || window == 0)
}

#[cfg(test)]
#[path = "packet_tests.rs"]
mod tests;

//! Frame parsing: Ethernet (with up to two VLAN tags), IPv4 or IPv6 (with extension
//! headers), TCP. Generic over [`Packet`] so the kernel reads with direct packet access
//! and the host tests read from a byte slice, through the same code.
//!
//! The parser stops as early as it can: a segment that can be neither a keepalive probe
//! nor an answer to one (SYN, or more than one payload byte without RST/FIN) returns
//! [`Parsed::NotCandidate`] before addresses and sequence numbers are read.

use crate::Family;

/// Byte access to a frame that starts at its link-layer header.
pub trait Packet {
    /// `N` bytes starting at `offset`, or `None` when the frame is shorter.
    fn load<const N: usize>(&self, offset: usize) -> Option<[u8; N]>;
}

impl Packet for [u8] {
    #[inline(always)]
    fn load<const N: usize>(&self, offset: usize) -> Option<[u8; N]> {
        let end = offset.checked_add(N)?;
        let bytes = self.get(offset..end)?;
        let mut out = [0u8; N];
        out.copy_from_slice(bytes);
        Some(out)
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

#[inline(always)]
fn be16(b: [u8; 2]) -> u16 {
    u16::from_be_bytes(b)
}

#[inline(always)]
fn be32(b: [u8; 4]) -> u32 {
    u32::from_be_bytes(b)
}

#[inline(always)]
fn need<const N: usize, P: Packet + ?Sized>(p: &P, off: usize) -> Result<[u8; N], ParseError> {
    p.load::<N>(off).ok_or(ParseError::Truncated)
}

/// Parses a frame that starts with an Ethernet header.
#[inline(always)]
pub fn parse_ethernet<P: Packet + ?Sized>(p: &P) -> Result<Parsed, ParseError> {
    let mut off = ETH_HLEN;
    let mut proto = be16(need(p, 12)?);
    // Up to two tags (802.1ad outer + 802.1Q inner); tc usually sees them stripped into
    // skb->vlan_tci, but replayed captures and some drivers leave them in the frame.
    if proto == ETH_P_8021Q || proto == ETH_P_8021AD {
        proto = be16(need(p, off + 2)?);
        off += 4;
        if proto == ETH_P_8021Q || proto == ETH_P_8021AD {
            proto = be16(need(p, off + 2)?);
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
    let h: [u8; 20] = need(p, l3)?;
    if h[0] >> 4 != 4 {
        return Err(ParseError::Malformed);
    }
    let ihl = ((h[0] & 0x0f) as u32) * 4;
    if ihl < 20 {
        return Err(ParseError::Malformed);
    }
    if h[9] != IPPROTO_TCP {
        return Ok(Parsed::NotTcp);
    }
    // More-fragments or a fragment offset: the TCP header may be elsewhere.
    if be16([h[6], h[7]]) & 0x3fff != 0 {
        return Ok(Parsed::NotTcp);
    }
    let tot_len = be16([h[2], h[3]]) as u32;
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
    let src = be_word(h[12], h[13], h[14], h[15]);
    let dst = be_word(h[16], h[17], h[18], h[19]);
    Ok(Parsed::Candidate(tcp.into_segment(
        Family::Ipv4,
        [src, 0, 0, 0],
        [dst, 0, 0, 0],
    )))
}

/// Keeps the address bytes in wire order inside the word, so keys compare like the
/// kernel's `__be32` addresses.
#[inline(always)]
fn be_word(a: u8, b: u8, c: u8, d: u8) -> u32 {
    u32::from_ne_bytes([a, b, c, d])
}

#[inline(always)]
fn parse_ipv6<P: Packet + ?Sized>(p: &P, l3: usize) -> Result<Parsed, ParseError> {
    let h: [u8; 8] = need(p, l3)?;
    if h[0] >> 4 != 6 {
        return Err(ParseError::Malformed);
    }
    let payload_len = be16([h[4], h[5]]) as u32;
    let mut next = h[6];
    let mut off = l3 + IPV6_HLEN;
    let mut ext_len: u32 = 0;
    let mut walked = 0;
    while next != IPPROTO_TCP {
        if walked == IPV6_MAX_EXT_HEADERS {
            return Ok(Parsed::NotTcp);
        }
        walked += 1;
        let e: [u8; 2] = need(p, off)?;
        let len = match next {
            // Hop-by-hop, routing, destination options: (hdr ext len + 1) * 8.
            0 | 43 | 60 => (e[1] as u32 + 1) * 8,
            // Authentication header: (payload len + 2) * 4.
            51 => (e[1] as u32 + 2) * 4,
            // Fragment header, ESP, no-next-header, anything else: not a TCP we can read.
            _ => return Ok(Parsed::NotTcp),
        };
        next = e[0];
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
    let a: [u8; 32] = need(p, l3 + 8)?;
    let mut src = [0u32; 4];
    let mut dst = [0u32; 4];
    for i in 0..4 {
        let s = i * 4;
        src[i] = be_word(a[s], a[s + 1], a[s + 2], a[s + 3]);
        dst[i] = be_word(a[16 + s], a[17 + s], a[18 + s], a[19 + s]);
    }
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
    // Data offset and flags first: most segments leave here.
    let df: [u8; 2] = need(p, l4 + 12)?;
    let doff = ((df[0] >> 4) as u32) * 4;
    if doff < TCP_MIN_HLEN || doff > l4_len {
        return Err(ParseError::Malformed);
    }
    let flags = df[1];
    let payload_len = l4_len - doff;
    if !is_candidate(flags, payload_len) {
        return Ok(None);
    }
    let t: [u8; 20] = need(p, l4)?;
    Ok(Some(TcpFixed {
        sport: be16([t[0], t[1]]),
        dport: be16([t[2], t[3]]),
        seq: be32([t[4], t[5], t[6], t[7]]),
        ack: be32([t[8], t[9], t[10], t[11]]),
        flags,
        window: be16([t[14], t[15]]),
        payload_len,
    }))
}

/// The early exit: can a segment with these flags and payload be a keepalive probe, an
/// answer to one, or a FIN/RST that closes a tracked connection?
///
/// SYNs never are (connections are tracked from their first pure ACK). Data of more
/// than one byte never is: the classifier learns each side's next sequence number from
/// the small segments alone (see [`crate::classify`]).
#[inline(always)]
pub const fn is_candidate(flags: u8, payload_len: u32) -> bool {
    if flags & TCP_SYN != 0 {
        return false;
    }
    if flags & (TCP_RST | TCP_FIN) != 0 {
        return true;
    }
    flags & TCP_ACK != 0 && payload_len <= 1
}

#[cfg(test)]
#[path = "packet_tests.rs"]
mod tests;

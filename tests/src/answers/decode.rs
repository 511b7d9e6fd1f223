//! Decodes a capture into [`Seg`]s with tshark used as a packet decoder only.
//!
//! tshark already parses everything between the pcapng file and the TCP header
//! (link types, VLAN tags, IPv6 extension headers, TCP options) and is installed for the
//! other oracles, so we add no pcap crate; this file only reads its `-T fields` text.
//! Sequence-number analysis is switched off: we want the raw fields, not Wireshark's
//! interpretation of them, and it makes a big capture several times faster to read.

use std::net::{IpAddr, SocketAddr};
use std::path::Path;
use std::process::Command;

use super::Seg;
use crate::process::run_checked;

/// Fields asked of tshark, in this order.
const FIELDS: [&str; 13] = [
    "frame.number",
    "frame.time_relative",
    "ip.src",
    "ipv6.src",
    "ip.dst",
    "ipv6.dst",
    "tcp.srcport",
    "tcp.dstport",
    "tcp.seq_raw",
    "tcp.ack_raw",
    "tcp.len",
    "tcp.flags",
    "tcp.window_size_value",
];

/// Every TCP segment of the pcap/pcapng file `pcap`, in capture order.
pub fn decode(pcap: &Path) -> Vec<Seg> {
    let mut cmd = Command::new("tshark");
    cmd.args(["-n", "-r"]).arg(pcap).args([
        "-o",
        "tcp.analyze_sequence_numbers:FALSE",
        "-o",
        "tcp.relative_sequence_numbers:FALSE",
        // TCP quoted inside ICMP errors is not a segment of the connection.
        "-Y",
        "tcp && !icmp && !icmpv6",
        "-T",
        "fields",
        "-E",
        "separator=/t",
        "-E",
        "occurrence=a",
        "-E",
        "aggregator=,",
    ]);
    for f in FIELDS {
        cmd.args(["-e", f]);
    }
    parse_fields(&run_checked(cmd, None))
}

/// Parses tshark's tab-separated output of [`FIELDS`]; panics on anything it cannot
/// read exactly (a tunnelled packet with two IP headers, a missing field), so that a
/// decoding surprise fails the test instead of dropping a segment.
pub fn parse_fields(text: &str) -> Vec<Seg> {
    text.lines()
        .filter(|l| !l.trim().is_empty())
        .map(|line| parse_line(line).unwrap_or_else(|e| panic!("tshark line {line:?}: {e}")))
        .collect()
}

fn parse_line(line: &str) -> Result<Seg, String> {
    let f: Vec<&str> = line.split('\t').collect();
    if f.len() != FIELDS.len() {
        return Err(format!("{} fields, expected {}", f.len(), FIELDS.len()));
    }
    let ip = |v4: &str, v6: &str| -> Result<IpAddr, String> {
        match (v4.is_empty(), v6.is_empty()) {
            (false, true) => v4.parse().map_err(|e| format!("ip {v4:?}: {e}")),
            (true, false) => v6.parse().map_err(|e| format!("ipv6 {v6:?}: {e}")),
            _ => Err(format!("not exactly one IP header ({v4:?}, {v6:?})")),
        }
    };
    let num = |i: usize| -> Result<u64, String> {
        let s = f[i];
        let parsed = match s.strip_prefix("0x") {
            Some(hex) => u64::from_str_radix(hex, 16),
            None => s.parse(),
        };
        parsed.map_err(|e| format!("{} = {s:?}: {e}", FIELDS[i]))
    };
    let narrow = |i: usize| -> Result<u32, String> {
        u32::try_from(num(i)?).map_err(|e| format!("{}: {e}", FIELDS[i]))
    };
    let port = |i: usize| -> Result<u16, String> {
        u16::try_from(num(i)?).map_err(|e| format!("{}: {e}", FIELDS[i]))
    };
    let flags = port(11)?;
    // tshark leaves the acknowledgement number out when the ACK flag is clear.
    let ack = if f[9].is_empty() && flags & super::ACK == 0 {
        0
    } else {
        narrow(9)?
    };
    Ok(Seg {
        frame: num(0)?,
        time: f[1].to_owned(),
        src: SocketAddr::new(ip(f[2], f[3])?, port(6)?),
        dst: SocketAddr::new(ip(f[4], f[5])?, port(7)?),
        seq: narrow(8)?,
        ack,
        len: narrow(10)?,
        flags,
        window: narrow(12)?,
    })
}

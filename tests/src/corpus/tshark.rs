//! tshark's TCP analysis of a pcap file, frame by frame.

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::path::Path;
use std::process::Command;

use super::Cat;
use crate::process::run_checked;

/// The analysis flags tshark put on one frame, and who sent it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Flagged {
    /// 1-based, as tshark counts (record order of the file).
    pub number: usize,
    pub src: IpAddr,
    pub sport: u16,
    pub tcp_len: u32,
    pub cats: Vec<Cat>,
}

/// The display filters of the categories tshark and the daemon share.
pub const FILTERS: [(Cat, &str); 3] = [
    (Cat::KeepAlive, "tcp.analysis.keep_alive"),
    (Cat::KeepAliveAck, "tcp.analysis.keep_alive_ack"),
    (Cat::ZeroWindowProbe, "tcp.analysis.zero_window_probe"),
];

fn tshark(pcap: &Path, extra: &[&str]) -> String {
    // Payloads are filler: decode them as plain data, not as whatever application
    // protocol a port number suggests (which would report them malformed).
    let (remote, local) = (&super::REMOTE_PORTS, super::LOCAL_PORT_BASE);
    let mut cmd = Command::new("tshark");
    cmd.args(["-n", "-r"])
        .arg(pcap)
        .arg("-d")
        .arg(format!(
            "tcp.port=={}-{},data",
            remote.start(),
            remote.end()
        ))
        .arg("-d")
        .arg(format!(
            "tcp.port=={local}-{},data",
            usize::from(local) + super::MAX_FLOWS - 1
        ))
        .args(extra);
    run_checked(cmd, None)
}

/// Every frame tshark flags with one of [`FILTERS`], by frame number.
pub fn analyse(pcap: &Path) -> BTreeMap<usize, Flagged> {
    let mut out: BTreeMap<usize, Flagged> = BTreeMap::new();
    for (cat, filter) in FILTERS {
        let listing = tshark(
            pcap,
            &[
                "-Y",
                filter,
                "-T",
                "fields",
                "-E",
                "separator=/t",
                "-e",
                "frame.number",
                "-e",
                "ip.src",
                "-e",
                "ipv6.src",
                "-e",
                "tcp.srcport",
                "-e",
                "tcp.len",
            ],
        );
        for line in listing.lines().filter(|l| !l.trim().is_empty()) {
            let f: Vec<&str> = line.split('\t').collect();
            if f.len() != 5 {
                bad_line(filter, line)
            }
            let number: usize = f[0].parse().unwrap_or_else(|_| bad_line(filter, line));
            // Only the innermost header counts (no tunnels here): the last value.
            let addr = if f[1].is_empty() { f[2] } else { f[1] };
            let src: IpAddr = addr
                .rsplit(',')
                .next()
                .and_then(|a| a.parse().ok())
                .unwrap_or_else(|| bad_line(filter, line));
            let entry = out.entry(number).or_insert_with(|| Flagged {
                number,
                src,
                sport: f[3].parse().unwrap_or_else(|_| bad_line(filter, line)),
                tcp_len: f[4].parse().unwrap_or_else(|_| bad_line(filter, line)),
                cats: Vec::new(),
            });
            entry.cats.push(cat);
        }
    }
    out
}

fn bad_line<T>(filter: &str, line: &str) -> T {
    panic!("unexpected tshark line for {filter}: {line:?}")
}

/// Frames whose IPv4 header or TCP checksum tshark finds bad (checking enabled).
pub fn bad_checksums(pcap: &Path) -> usize {
    let listing = tshark(
        pcap,
        &[
            "-o",
            "tcp.check_checksum:TRUE",
            "-o",
            "ip.check_checksum:TRUE",
            "-Y",
            "tcp.checksum.status != 1 || ip.checksum.status != 1 && ip",
            "-T",
            "fields",
            "-e",
            "frame.number",
        ],
    );
    listing.lines().filter(|l| !l.trim().is_empty()).count()
}

/// Frames tshark could not dissect cleanly (malformed, or any expert error).
pub fn malformed(pcap: &Path) -> usize {
    let listing = tshark(
        pcap,
        &[
            "-Y",
            "_ws.malformed || _ws.expert.severity == error",
            "-T",
            "fields",
            "-e",
            "frame.number",
        ],
    );
    listing.lines().filter(|l| !l.trim().is_empty()).count()
}

/// The first `limit` frames tshark lists for `filter`, in its one-line summary, for
/// failure messages.
pub fn listing(pcap: &Path, filter: &str, limit: usize) -> String {
    let out = tshark(pcap, &["-Y", filter]);
    out.lines().take(limit).collect::<Vec<_>>().join("\n")
}

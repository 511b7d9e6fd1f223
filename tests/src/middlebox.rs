//! A real middlebox that forgets idle flows: three namespaces A - M - B, M a Linux
//! router doing nftables masquerade of A's traffic toward B, with a short
//! established-conntrack timeout, loose pickup off, and packets of forgotten flows
//! (conntrack state "invalid") either dropped silently or answered with a TCP reset.
//!
//! This is how a NAT gateway or a stateful load balancer behaves after its idle
//! timeout: the first segment of a connection that went quiet for longer than the
//! timeout matches no state, cannot start a new flow (it is not a SYN) and is lost or
//! rejected. Conntrack's own table in M (`/proc/net/nf_conntrack` of M) and the nft
//! rule counters are oracles that do not depend on the daemon.

use std::net::Ipv4Addr;

use crate::netns::Netns;

/// A's address (the daemon's and the clients' side).
pub const A_ADDR: Ipv4Addr = Ipv4Addr::new(198, 51, 100, 1);
/// M's address toward A (A's default gateway).
pub const M_A_ADDR: Ipv4Addr = Ipv4Addr::new(198, 51, 100, 254);
/// M's address toward B: B sees every connection from A coming from here (masquerade).
pub const M_B_ADDR: Ipv4Addr = Ipv4Addr::new(203, 0, 113, 254);
/// B's address (the servers' side).
pub const B_ADDR: Ipv4Addr = Ipv4Addr::new(203, 0, 113, 2);
const PREFIX: u8 = 24;

/// A's interface toward M (the daemon attaches there); the same name is used in every
/// namespace pair because interface names only need to be unique within a namespace.
pub const A_IF: &str = "to-m";
const M_TO_A_IF: &str = "to-a";
const M_TO_B_IF: &str = "to-b";
const B_IF: &str = "to-m";

/// What M does with a segment of a flow it has forgotten.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Forgotten {
    /// Drops it silently: the sender retransmits until it gives up (ETIMEDOUT).
    Drop,
    /// Answers it with a TCP reset in the peer's name (ECONNRESET at the sender).
    Reset,
}

impl Forgotten {
    fn nft_verdict(self) -> &'static str {
        match self {
            Forgotten::Drop => "drop",
            Forgotten::Reset => "reject with tcp reset",
        }
    }
}

/// The three namespaces and M's ruleset. Fields drop in order: A, M, B; the veth
/// pairs go with their namespaces.
#[derive(Debug)]
pub struct Middlebox {
    pub a: Netns,
    pub m: Netns,
    pub b: Netns,
    pub forgotten: Forgotten,
    /// net.netfilter.nf_conntrack_tcp_timeout_established in M, seconds.
    pub established_timeout_secs: u32,
}

impl Middlebox {
    /// Builds A - M - B; `test` tags the namespace names.
    pub fn new(test: &str, forgotten: Forgotten, established_timeout_secs: u32) -> Middlebox {
        let mb = Middlebox {
            a: Netns::new(test, "a"),
            m: Netns::new(test, "m"),
            b: Netns::new(test, "b"),
            forgotten,
            established_timeout_secs,
        };
        link(&mb.a, A_IF, A_ADDR, &mb.m, M_TO_A_IF, M_A_ADDR);
        link(&mb.b, B_IF, B_ADDR, &mb.m, M_TO_B_IF, M_B_ADDR);
        mb.a.cmd(&[
            "ip",
            "route",
            "add",
            "default",
            "via",
            &M_A_ADDR.to_string(),
        ]);
        // The ruleset first: it makes conntrack track M's namespace, and the sysctls
        // below are conntrack's per-namespace ones.
        mb.m.nft(&mb.ruleset());
        mb.m.cmd(&[
            "sysctl",
            "-q",
            "-w",
            "net.ipv4.ip_forward=1",
            &format!(
                "net.netfilter.nf_conntrack_tcp_timeout_established={established_timeout_secs}"
            ),
            // No pickup of a flow from the middle: a forgotten flow stays forgotten.
            "net.netfilter.nf_conntrack_tcp_loose=0",
        ]);
        mb
    }

    /// M's forward filter: forgotten flows (ct state invalid) get the variant's
    /// verdict; established flows and new SYNs pass; anything else is dropped and
    /// counted (the tests expect that counter to stay 0).
    fn ruleset(&self) -> String {
        format!(
            "table ip mbox {{\n\
             \x20 chain forward_filter {{\n\
             \x20   type filter hook forward priority 0; policy accept;\n\
             \x20   meta l4proto tcp ct state invalid counter {} comment \"forgotten\"\n\
             \x20   ct state established counter accept\n\
             \x20   ct state new tcp flags syn counter accept\n\
             \x20   counter drop comment \"other\"\n\
             \x20 }}\n\
             \x20 chain nat_postrouting {{\n\
             \x20   type nat hook postrouting priority 100; policy accept;\n\
             \x20   oifname \"{M_TO_B_IF}\" masquerade\n\
             \x20 }}\n\
             }}\n",
            self.forgotten.nft_verdict()
        )
    }

    /// Packets M's forward filter counted as forgotten (ct state invalid).
    pub fn invalid_packets(&self) -> u64 {
        self.rule_packets("forgotten")
    }

    /// Packets M dropped as neither established, a new SYN nor forgotten.
    pub fn other_dropped_packets(&self) -> u64 {
        self.rule_packets("other")
    }

    /// The packet count of the rule commented `comment`.
    fn rule_packets(&self, comment: &str) -> u64 {
        let listing = self.forward_listing();
        let tag = format!("comment \"{comment}\"");
        let line = listing
            .lines()
            .find(|l| l.contains(&tag))
            .unwrap_or_else(|| panic!("no rule {tag} in M's ruleset:\n{listing}"));
        packets_of(line).unwrap_or_else(|| panic!("no packet count in {line:?}"))
    }

    fn forward_listing(&self) -> String {
        self.m
            .cmd(&["nft", "list", "chain", "ip", "mbox", "forward_filter"])
    }

    /// The TCP flows conntrack in M holds now (expired entries are not listed: the
    /// kernel drops them while dumping).
    pub fn conntrack_flows(&self) -> Vec<ConntrackFlow> {
        let text = self.m.cmd(&["cat", "/proc/net/nf_conntrack"]);
        text.lines().filter_map(ConntrackFlow::parse).collect()
    }
}

/// `packets N` of an nft rule listing line.
fn packets_of(line: &str) -> Option<u64> {
    let mut words = line.split_whitespace();
    words.find(|w| *w == "packets")?;
    words.next()?.parse().ok()
}

/// Joins `x` (interface `x_if`, address `x_addr`) and `m` (`m_if`, `m_addr`) with a
/// veth pair, both ends up, addresses only inside the namespaces.
fn link(x: &Netns, x_if: &str, x_addr: Ipv4Addr, m: &Netns, m_if: &str, m_addr: Ipv4Addr) {
    x.cmd(&[
        "ip",
        "link",
        "add",
        x_if,
        "type",
        "veth",
        "peer",
        "name",
        m_if,
        "netns",
        m.name(),
    ]);
    for (ns, ifname, addr) in [(x, x_if, x_addr), (m, m_if, m_addr)] {
        ns.cmd(&[
            "ip",
            "addr",
            "add",
            &format!("{addr}/{PREFIX}"),
            "dev",
            ifname,
        ]);
        ns.cmd(&["ip", "link", "set", ifname, "up"]);
    }
}

/// One TCP entry of `/proc/net/nf_conntrack`, original direction.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ConntrackFlow {
    /// Conntrack's TCP state, e.g. "ESTABLISHED".
    pub state: String,
    pub src: Ipv4Addr,
    pub dst: Ipv4Addr,
    pub sport: u16,
    pub dport: u16,
}

impl ConntrackFlow {
    /// Parses `ipv4 2 tcp 6 <timeout> <STATE> src=.. dst=.. sport=.. dport=.. ...`.
    fn parse(line: &str) -> Option<ConntrackFlow> {
        let words: Vec<&str> = line.split_whitespace().collect();
        if words.get(2) != Some(&"tcp") {
            return None;
        }
        let field = |key: &str| {
            words
                .iter()
                .find_map(|w| w.strip_prefix(key)?.strip_prefix('='))
        };
        Some(ConntrackFlow {
            state: (*words.get(5)?).to_owned(),
            src: field("src")?.parse().ok()?,
            dst: field("dst")?.parse().ok()?,
            sport: field("sport")?.parse().ok()?,
            dport: field("dport")?.parse().ok()?,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_a_conntrack_line_in_its_original_direction() {
        let line = "ipv4     2 tcp      6 5 ESTABLISHED src=198.51.100.1 dst=203.0.113.2 \
                    sport=43052 dport=7000 src=203.0.113.2 dst=203.0.113.254 sport=7000 \
                    dport=43052 [ASSURED] mark=0 zone=0 use=2";
        assert_eq!(
            ConntrackFlow::parse(line),
            Some(ConntrackFlow {
                state: "ESTABLISHED".into(),
                src: A_ADDR,
                dst: B_ADDR,
                sport: 43052,
                dport: 7000,
            })
        );
        assert_eq!(ConntrackFlow::parse("ipv4 2 udp 17 29 src=1.2.3.4"), None);
    }

    #[test]
    fn reads_packet_counts_of_rule_lines() {
        let line = "\t\tmeta l4proto tcp ct state invalid counter packets 12 bytes 636 drop";
        assert_eq!(packets_of(line), Some(12));
        assert_eq!(packets_of("ct state new accept"), None);
    }
}

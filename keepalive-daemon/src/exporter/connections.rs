//! The per-connection view (GET /connections), outside Prometheus: addresses and ports
//! are fine here, unlike in metric labels. At most `limit` connections, most recently
//! active first, with a note when truncated; what is read and how is in `scan.rs`.
//! The keepalive audit's part (settings, risk, `?at_risk=1`, recent endings) is in
//! `connections/audit.rs`.

pub mod audit;

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use keepalive_common::{
    Direction, Family,
    flow::{FlowKey, FlowState, flow_end},
};
use serde::{Deserialize, Serialize};

pub use self::audit::{AuditRow, EndingRow, Request, Risk};

pub const DEFAULT_LIMIT: usize = 1000;
pub const MAX_LIMIT: usize = 10_000;

#[derive(Debug, Serialize, Deserialize, PartialEq)]
pub struct Connection {
    pub family: String,
    pub local: String,
    pub remote: String,
    pub probes_sent: u32,
    pub probes_received: u32,
    /// Probes this host sent that the peer answered with an ACK.
    pub probes_sent_answered: u32,
    /// Probes this host received and answered with an ACK.
    pub probes_received_answered: u32,
    pub zero_window_probes_sent: u32,
    pub zero_window_probes_received: u32,
    /// Probes in a row without an answer, per direction.
    pub unanswered_streak_sent: u32,
    pub unanswered_streak_received: u32,
    /// Seconds since the last keepalive probe either way; null if none was seen.
    pub seconds_since_last_probe: Option<f64>,
    /// open, closed, peer_reset (our probe was answered with RST), local_reset (we
    /// answered the peer's probe with RST) or timeout (we reset with our probe
    /// unanswered: the keepalive timer gave up).
    pub ended: String,
    /// The connection has an entry in the kernel flow map (its probes, answers and
    /// small segments are counted above). false: listed from the audit's inventory only
    /// (`?at_risk=1`), never seen on a watched interface: the counts above are 0.
    #[serde(default = "yes")]
    pub in_flow_map: bool,
    /// Keepalive settings and risk from the audit's last inventory; null when the
    /// inventory is off, has not run yet, or did not see this connection.
    #[serde(default)]
    pub audit: Option<AuditRow>,
}

fn yes() -> bool {
    true
}

#[derive(Debug, Default, Serialize, Deserialize)]
pub struct Listing {
    pub connections: Vec<Connection>,
    /// Connections in the kernel flow map: those read when the walk reached the map's
    /// end, else the last sweep's count (keepalive_daemon_flow_map_entries) or the
    /// entries read, whichever is larger.
    pub total: usize,
    pub limit: usize,
    /// Fewer connections shown than `total`.
    pub truncated: bool,
    /// Explains truncation, or what the view cannot show.
    pub note: String,
    /// Flow map entries read for this listing.
    #[serde(default)]
    pub scanned: u64,
    /// The walk stopped at a cap before the map's end: the rows are the most recently
    /// active of the entries read, not necessarily of the whole map.
    #[serde(default)]
    pub scan_truncated: bool,
    /// How long the walk took.
    #[serde(default)]
    pub elapsed_seconds: f64,
    /// CPU time the walk took (the daemon's thread, user and kernel).
    #[serde(default)]
    pub cpu_seconds: f64,
    /// `?at_risk=1`: only connections the audit's inventory has at risk, longest idle
    /// first; `total` counts those.
    #[serde(default)]
    pub at_risk_only: bool,
    /// When the audit's last inventory was taken (Unix time); null when the inventory
    /// is off or has not run yet.
    #[serde(default)]
    pub audit_inventory_unix_seconds: Option<f64>,
    /// Connections that ended recently (keepalive timeouts and idle deaths), newest
    /// first, at most `limit` (and 256), also after their sockets are gone.
    #[serde(default)]
    pub recent_endings: Vec<EndingRow>,
}

pub fn address(key: &FlowKey, local: bool) -> SocketAddr {
    let (words, port) = if local {
        (key.local_addr, key.local_port)
    } else {
        (key.remote_addr, key.remote_port)
    };
    let ip = match key.family() {
        Family::Ipv4 => IpAddr::V4(Ipv4Addr::from(words[0].to_ne_bytes())),
        Family::Ipv6 => {
            let mut b = [0u8; 16];
            for (i, w) in words.iter().enumerate() {
                b[i * 4..i * 4 + 4].copy_from_slice(&w.to_ne_bytes());
            }
            IpAddr::V6(Ipv6Addr::from(b))
        }
    };
    SocketAddr::new(ip, port)
}

/// Unanswered probes in a row, counting the last one while it is still pending (the
/// kernel-side streak counts a probe once the next one goes out unanswered).
fn streak(d: &keepalive_common::flow::DirState) -> u32 {
    d.unanswered_streak + u32::from(d.flags & keepalive_common::flow::dir_flags::PROBE_PENDING != 0)
}

fn ended(end: u32) -> &'static str {
    match end {
        flow_end::CLOSED => "closed",
        flow_end::PEER_RESET => "peer_reset",
        flow_end::LOCAL_RESET => "local_reset",
        flow_end::TIMEOUT => "timeout",
        _ => "open",
    }
}

pub fn describe(key: &FlowKey, st: &FlowState, now_ns: u64) -> Connection {
    let (s, r) = (
        &st.dir[Direction::Sent.index()],
        &st.dir[Direction::Received.index()],
    );
    let last = s.last_probe_ns.max(r.last_probe_ns);
    Connection {
        family: key.family().label().to_owned(),
        local: address(key, true).to_string(),
        remote: address(key, false).to_string(),
        probes_sent: s.probes,
        probes_received: r.probes,
        probes_sent_answered: s.probe_acks,
        probes_received_answered: r.probe_acks,
        zero_window_probes_sent: s.zero_window_probes,
        zero_window_probes_received: r.zero_window_probes,
        unanswered_streak_sent: streak(s),
        unanswered_streak_received: streak(r),
        seconds_since_last_probe: (last != 0).then(|| now_ns.saturating_sub(last) as f64 / 1e9),
        ended: ended(st.end).to_owned(),
        in_flow_map: true,
        audit: None,
    }
}

/// The request's parameters: `?limit=N` and `?at_risk=1` (or `true`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Query {
    pub limit: usize,
    pub at_risk: bool,
}

impl Query {
    pub fn parse(query: &str) -> Query {
        let at_risk = query
            .split('&')
            .filter_map(|kv| kv.strip_prefix("at_risk="))
            .any(|v| v == "1" || v == "true");
        Query {
            limit: limit_from_query(query),
            at_risk,
        }
    }
}

/// `?limit=N` from a query string, clamped to 1..=MAX_LIMIT.
pub fn limit_from_query(query: &str) -> usize {
    query
        .split('&')
        .find_map(|kv| kv.strip_prefix("limit="))
        .and_then(|v| v.parse::<usize>().ok())
        .map_or(DEFAULT_LIMIT, |n| n.clamp(1, MAX_LIMIT))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(i: u8, family: Family) -> FlowKey {
        let mut k = FlowKey {
            local_addr: [u32::from_ne_bytes([192, 0, 2, 1]), 0, 0, 0],
            remote_addr: [u32::from_ne_bytes([192, 0, 2, i]), 0, 0, 0],
            local_port: 5432,
            remote_port: 40000 + i as u16,
            family: family as u32,
        };
        if family == Family::Ipv6 {
            k.local_addr = [
                u32::from_ne_bytes([0x20, 0x01, 0x0d, 0xb8]),
                0,
                0,
                u32::from_ne_bytes([0, 0, 0, 1]),
            ];
        }
        k
    }

    #[test]
    fn addresses_render_for_both_families() {
        assert_eq!(
            address(&key(2, Family::Ipv4), false).to_string(),
            "192.0.2.2:40002"
        );
        assert_eq!(
            address(&key(2, Family::Ipv6), true).to_string(),
            "[2001:db8::1]:5432"
        );
    }

    #[test]
    fn limit_parsing_is_clamped() {
        assert_eq!(limit_from_query(""), DEFAULT_LIMIT);
        assert_eq!(limit_from_query("limit=5"), 5);
        assert_eq!(limit_from_query("x=1&limit=999999"), MAX_LIMIT);
        assert_eq!(limit_from_query("limit=0"), 1);
        assert_eq!(limit_from_query("limit=abc"), DEFAULT_LIMIT);
    }

    #[test]
    fn at_risk_is_a_flag_of_the_query() {
        assert_eq!(
            Query::parse("limit=5&at_risk=1"),
            Query {
                limit: 5,
                at_risk: true
            }
        );
        assert!(Query::parse("at_risk=true").at_risk);
        assert!(!Query::parse("at_risk=0").at_risk);
        assert!(!Query::parse("limit=3").at_risk);
    }

    /// A listing of an older daemon (no audit fields) still parses: rows count as in
    /// the flow map, without audit data.
    #[test]
    fn old_listings_parse_with_defaults() {
        let old = r#"{"connections":[{"family":"ipv4","local":"192.0.2.1:1","remote":"192.0.2.2:2",
            "probes_sent":1,"probes_received":0,"probes_sent_answered":1,"probes_received_answered":0,
            "zero_window_probes_sent":0,"zero_window_probes_received":0,"unanswered_streak_sent":0,
            "unanswered_streak_received":0,"seconds_since_last_probe":null,"ended":"open"}],
            "total":1,"limit":10,"truncated":false,"note":""}"#;
        let l: Listing = serde_json::from_str(old).unwrap();
        assert!(l.connections[0].in_flow_map && l.connections[0].audit.is_none());
        assert!(!l.at_risk_only && l.recent_endings.is_empty());
        assert_eq!(l.audit_inventory_unix_seconds, None);
    }
}

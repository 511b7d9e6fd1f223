//! The table `keepalive-daemon connections` prints from a daemon's GET /connections.

use crate::exporter::connections::Listing;

/// The table `keepalive-daemon connections` prints. Columns name the probe's direction:
/// SENT_* are probes this host sent (ACKED: answered by the peer), RECV_* probes it
/// received (ACKED: answered by this host); STREAK is unanswered probes in a row.
pub fn table(l: &Listing) -> String {
    let row = |cols: [&str; 10]| {
        format!(
            "{:<46} {:<46} {:>10} {:>10} {:>11} {:>10} {:>10} {:>11} {:>8} {:>11}\n",
            cols[0],
            cols[1],
            cols[2],
            cols[3],
            cols[4],
            cols[5],
            cols[6],
            cols[7],
            cols[8],
            cols[9]
        )
    };
    let mut out = row([
        "LOCAL",
        "REMOTE",
        "SENT",
        "SENT_ACKED",
        "SENT_STREAK",
        "RECV",
        "RECV_ACKED",
        "RECV_STREAK",
        "LAST(s)",
        "ENDED",
    ]);
    for c in &l.connections {
        let last = c
            .seconds_since_last_probe
            .map_or("-".to_owned(), |s| format!("{s:.1}"));
        out += &row([
            c.local.as_str(),
            c.remote.as_str(),
            &c.probes_sent.to_string(),
            &c.probes_sent_answered.to_string(),
            &c.unanswered_streak_sent.to_string(),
            &c.probes_received.to_string(),
            &c.probes_received_answered.to_string(),
            &c.unanswered_streak_received.to_string(),
            &last,
            c.ended.as_str(),
        ]);
    }
    out += &format!(
        "{} of {} connections. {}\n",
        l.connections.len(),
        l.total,
        l.note
    );
    out
}

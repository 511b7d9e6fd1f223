//! What `keepalive-daemon connections` prints from a daemon's GET /connections: the
//! table (columns sized to their content) and the `--probing` filter, applied alike to
//! the parsed listing and to the daemon's JSON as received.

use crate::exporter::connections::{Connection, Listing};

/// Column headers, in order. The `connections --help` text explains each; keep them
/// in step. SENT_* are probes this host sent (answered by the peer), RECEIVED_* probes
/// it received (answered by this host); *_UNANSWERED is the current run of unanswered
/// probes.
pub const COLUMNS: [&str; 10] = [
    "LOCAL",
    "REMOTE",
    "SENT",
    "SENT_ANSWERED",
    "SENT_UNANSWERED",
    "RECEIVED",
    "RECEIVED_ANSWERED",
    "RECEIVED_UNANSWERED",
    "LAST_PROBE_S",
    "ENDED",
];

/// Columns that are text (left-aligned); the others are numbers (right-aligned).
const TEXT_COLUMNS: [usize; 3] = [0, 1, 9];

/// The table of `l`, with nothing filtered out.
pub fn table(l: &Listing) -> String {
    render(l, 0)
}

/// The table of `l`; `hidden` rows were left out by --probing (said in the last line).
pub fn render(l: &Listing, hidden: usize) -> String {
    let mut rows = vec![COLUMNS.map(str::to_owned)];
    rows.extend(l.connections.iter().map(row));
    let mut width = [0usize; 10];
    for r in &rows {
        for (w, cell) in width.iter_mut().zip(r) {
            *w = (*w).max(cell.len());
        }
    }
    let mut out = String::new();
    for r in &rows {
        let mut line = String::new();
        for (i, cell) in r.iter().enumerate() {
            if i > 0 {
                line.push_str("  ");
            }
            if TEXT_COLUMNS.contains(&i) {
                line += &format!("{cell:<w$}", w = width[i]);
            } else {
                line += &format!("{cell:>w$}", w = width[i]);
            }
        }
        out += line.trim_end();
        out.push('\n');
    }
    let filtered = if hidden > 0 {
        format!(" ({hidden} without probes not shown: --probing)")
    } else {
        String::new()
    };
    out += &format!(
        "{} of {} connections{filtered}. {}\n",
        l.connections.len(),
        l.total,
        l.note
    );
    out
}

fn row(c: &Connection) -> [String; 10] {
    [
        c.local.clone(),
        c.remote.clone(),
        c.probes_sent.to_string(),
        c.probes_sent_answered.to_string(),
        c.unanswered_streak_sent.to_string(),
        c.probes_received.to_string(),
        c.probes_received_answered.to_string(),
        c.unanswered_streak_received.to_string(),
        c.seconds_since_last_probe
            .map_or("-".to_owned(), |s| format!("{s:.1}")),
        c.ended.clone(),
    ]
}

/// --probing: keeps the connections with a keepalive probe either way; returns how many
/// were dropped.
pub fn only_probing(l: &mut Listing) -> usize {
    let before = l.connections.len();
    l.connections
        .retain(|c| c.probes_sent > 0 || c.probes_received > 0);
    before - l.connections.len()
}

/// --probing on the daemon's JSON as received (so `--json` keeps every field, also
/// those this client does not know): the same rule as [`only_probing`].
pub fn only_probing_json(listing: &mut serde_json::Value) {
    let probes = |c: &serde_json::Value, key: &str| c.get(key).and_then(|v| v.as_u64());
    if let Some(conns) = listing
        .get_mut("connections")
        .and_then(|c| c.as_array_mut())
    {
        conns.retain(|c| {
            probes(c, "probes_sent").unwrap_or(0) > 0
                || probes(c, "probes_received").unwrap_or(0) > 0
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn conn(local: &str, sent: u32, received: u32, last: Option<f64>) -> Connection {
        Connection {
            family: "ipv4".into(),
            local: local.into(),
            remote: "192.0.2.2:5432".into(),
            probes_sent: sent,
            probes_received: received,
            probes_sent_answered: sent.saturating_sub(1),
            probes_received_answered: received,
            zero_window_probes_sent: 0,
            zero_window_probes_received: 0,
            unanswered_streak_sent: u32::from(sent > 0),
            unanswered_streak_received: 0,
            seconds_since_last_probe: last,
            ended: if sent > 2 { "timeout" } else { "open" }.into(),
        }
    }

    fn listing() -> Listing {
        Listing {
            connections: vec![
                conn("192.0.2.1:40001", 3, 0, Some(1.3)),
                conn("192.0.2.1:40002", 0, 0, None),
                conn("[2001:db8::1]:40003", 0, 12, Some(0.5)),
            ],
            total: 7,
            limit: 3,
            truncated: true,
            note: "showing the 3 most recently active of 7 connections".into(),
            ..Default::default()
        }
    }

    #[test]
    fn table_has_sized_columns_and_a_summary() {
        let text = table(&listing());
        let expected = "\
LOCAL                REMOTE          SENT  SENT_ANSWERED  SENT_UNANSWERED  RECEIVED  RECEIVED_ANSWERED  RECEIVED_UNANSWERED  LAST_PROBE_S  ENDED
192.0.2.1:40001      192.0.2.2:5432     3              2                1         0                  0                    0           1.3  timeout
192.0.2.1:40002      192.0.2.2:5432     0              0                0         0                  0                    0             -  open
[2001:db8::1]:40003  192.0.2.2:5432     0              0                0        12                 12                    0           0.5  open
3 of 7 connections. showing the 3 most recently active of 7 connections
";
        assert_eq!(text, expected);
    }

    #[test]
    fn probing_keeps_rows_with_probes_either_way() {
        let mut l = listing();
        assert_eq!(only_probing(&mut l), 1);
        let locals: Vec<_> = l.connections.iter().map(|c| c.local.as_str()).collect();
        assert_eq!(locals, ["192.0.2.1:40001", "[2001:db8::1]:40003"]);
        let text = render(&l, 1);
        assert!(!text.contains("40002"), "{text}");
        assert!(
            text.ends_with(
                "2 of 7 connections (1 without probes not shown: --probing). showing the 3 most recently active of 7 connections\n"
            ),
            "{text}"
        );
    }

    #[test]
    fn probing_on_json_keeps_unknown_fields() {
        let mut v = serde_json::to_value(listing()).unwrap();
        v["connections"][0]["added_later"] = serde_json::json!("kept");
        v["generated_by"] = serde_json::json!("a newer daemon");
        only_probing_json(&mut v);
        let conns = v["connections"].as_array().unwrap();
        assert_eq!(conns.len(), 2);
        assert_eq!(conns[0]["added_later"], "kept");
        assert_eq!(conns[1]["local"], "[2001:db8::1]:40003");
        assert_eq!(v["generated_by"], "a newer daemon");
        assert_eq!(v["total"], 7);
    }

    #[test]
    fn an_empty_listing_is_a_header_and_a_summary() {
        let l = Listing {
            connections: vec![],
            total: 0,
            limit: 100,
            truncated: false,
            note: "n".into(),
            ..Default::default()
        };
        let text = table(&l);
        assert_eq!(text.lines().count(), 2);
        assert!(
            text.starts_with("LOCAL  REMOTE  SENT  SENT_ANSWERED"),
            "{text}"
        );
        assert!(text.ends_with("0 of 0 connections. n\n"), "{text}");
    }
}

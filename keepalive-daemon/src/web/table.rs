//! What `keepalive-daemon connections` prints from a daemon's GET /connections: the
//! table (columns sized to their content), the recent endings after it, and the
//! `--probing` filter, applied alike to the parsed listing and to the daemon's JSON as
//! received.

use std::time::{SystemTime, UNIX_EPOCH};

use crate::exporter::connections::{AuditRow, Connection, EndingRow, Listing};

/// Column headers, in order. The `connections --help` text explains each; keep them
/// in step. SENT_* are probes this host sent (answered by the peer), RECEIVED_* probes
/// it received (answered by this host); *_UNANSWERED is the current run of unanswered
/// probes. The last five come from the keepalive audit's inventory.
pub const COLUMNS: [&str; 15] = [
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
    "KEEPALIVE",
    "IDLE_AGE_S",
    "AT_RISK",
    "REASON",
    "PROCESS",
];

/// Columns that are text (left-aligned); the others are numbers (right-aligned).
const TEXT_COLUMNS: [usize; 7] = [0, 1, 9, 10, 12, 13, 14];

/// The recent endings' columns.
pub const ENDING_COLUMNS: [&str; 8] = [
    "AGO_S",
    "LOCAL",
    "REMOTE",
    "CAUSE",
    "KEEPALIVE",
    "IDLE_S",
    "NETNS",
    "CGROUP",
];
const ENDING_TEXT_COLUMNS: [usize; 5] = [1, 2, 3, 4, 7];

/// The table of `l`, with nothing filtered out.
pub fn table(l: &Listing) -> String {
    render(l, 0)
}

/// The table of `l`; `hidden` rows were left out by --probing (said in the summary).
pub fn render(l: &Listing, hidden: usize) -> String {
    render_at(l, hidden, SystemTime::now())
}

/// [`render`], with the recent endings' ages counted to `now`.
pub fn render_at(l: &Listing, hidden: usize, now: SystemTime) -> String {
    let rows: Vec<Vec<String>> = l.connections.iter().map(row).collect();
    let mut out = columns(&COLUMNS, &TEXT_COLUMNS, rows);
    let filtered = if hidden > 0 {
        format!(" ({hidden} without probes not shown: --probing)")
    } else {
        String::new()
    };
    let what = if l.at_risk_only {
        "connections at risk"
    } else {
        "connections"
    };
    out += &format!(
        "{} of {} {what}{filtered}. {}\n",
        l.connections.len(),
        l.total,
        l.note
    );
    if !l.recent_endings.is_empty() {
        let now = now
            .duration_since(UNIX_EPOCH)
            .map_or(0.0, |d| d.as_secs_f64());
        let rows = l
            .recent_endings
            .iter()
            .map(|e| ending_row(e, now))
            .collect();
        out += "\nRecent endings, newest first (keepalive timeouts and idle deaths):\n";
        out += &columns(&ENDING_COLUMNS, &ENDING_TEXT_COLUMNS, rows);
    }
    out
}

/// `header` and `rows` as lines of columns sized to their content, two spaces apart.
fn columns(header: &[&str], text: &[usize], rows: Vec<Vec<String>>) -> String {
    let mut all = vec![header.iter().map(|h| (*h).to_owned()).collect::<Vec<_>>()];
    all.extend(rows);
    let mut width = vec![0usize; header.len()];
    for r in &all {
        for (w, cell) in width.iter_mut().zip(r) {
            *w = (*w).max(cell.len());
        }
    }
    let mut out = String::new();
    for r in &all {
        let mut line = String::new();
        for (i, cell) in r.iter().enumerate() {
            if i > 0 {
                line.push_str("  ");
            }
            if text.contains(&i) {
                line += &format!("{cell:<w$}", w = width[i]);
            } else {
                line += &format!("{cell:>w$}", w = width[i]);
            }
        }
        out += line.trim_end();
        out.push('\n');
    }
    out
}

/// A cell without blanks (process names may have them), so columns split on whitespace.
fn cell(s: &str) -> String {
    s.split_whitespace().collect::<Vec<_>>().join("_")
}

fn row(c: &Connection) -> Vec<String> {
    // A row listed from the audit's inventory only has no flow entry: no counts.
    let n = |v: u32| {
        if c.in_flow_map {
            v.to_string()
        } else {
            "-".to_owned()
        }
    };
    let mut r = vec![
        c.local.clone(),
        c.remote.clone(),
        n(c.probes_sent),
        n(c.probes_sent_answered),
        n(c.unanswered_streak_sent),
        n(c.probes_received),
        n(c.probes_received_answered),
        n(c.unanswered_streak_received),
        c.seconds_since_last_probe
            .map_or("-".to_owned(), |s| format!("{s:.1}")),
        c.ended.clone(),
    ];
    r.extend(audit_cells(c.audit.as_ref()));
    r
}

/// KEEPALIVE (off, or on with its idle time), IDLE_AGE_S, AT_RISK, REASON, PROCESS.
fn audit_cells(a: Option<&AuditRow>) -> [String; 5] {
    let Some(a) = a else {
        return ["-", "-", "-", "-", "-"].map(str::to_owned);
    };
    let keepalive = if a.keepalive {
        format!("on:{}s", a.idle_seconds)
    } else {
        "off".to_owned()
    };
    let (limits, mut reasons): (Vec<&str>, Vec<&str>) = a
        .at_risk
        .iter()
        .map(|r| (r.idle_limit.as_str(), r.reason.as_str()))
        .unzip();
    reasons.dedup();
    let or_dash = |v: Vec<&str>| {
        if v.is_empty() {
            "-".to_owned()
        } else {
            v.join(",")
        }
    };
    let process = a.process.as_deref().or(a.cgroup.as_deref()).unwrap_or("-");
    [
        keepalive,
        a.idle_age_seconds.to_string(),
        or_dash(limits),
        or_dash(reasons),
        cell(process),
    ]
}

fn ending_row(e: &EndingRow, now: f64) -> Vec<String> {
    vec![
        format!("{:.0}", (now - e.time_unix_seconds).max(0.0)),
        e.local.clone(),
        e.remote.clone(),
        e.cause.clone(),
        if e.keepalive { "on" } else { "off" }.to_owned(),
        format!("{:.0}", e.idle_seconds),
        e.netns_inode.to_string(),
        cell(e.cgroup.as_deref().unwrap_or("-")),
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
            in_flow_map: true,
            audit: None,
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
LOCAL                REMOTE          SENT  SENT_ANSWERED  SENT_UNANSWERED  RECEIVED  RECEIVED_ANSWERED  RECEIVED_UNANSWERED  LAST_PROBE_S  ENDED    KEEPALIVE  IDLE_AGE_S  AT_RISK  REASON  PROCESS
192.0.2.1:40001      192.0.2.2:5432     3              2                1         0                  0                    0           1.3  timeout  -                   -  -        -       -
192.0.2.1:40002      192.0.2.2:5432     0              0                0         0                  0                    0             -  open     -                   -  -        -       -
[2001:db8::1]:40003  192.0.2.2:5432     0              0                0        12                 12                    0           0.5  open     -                   -  -        -       -
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

    fn audit(keepalive: bool, idle_age: u32, limits: &[u32], reason: &str) -> AuditRow {
        AuditRow {
            keepalive,
            idle_seconds: 600,
            interval_seconds: 75,
            count: 9,
            user_timeout_ms: 0,
            idle_age_seconds: idle_age,
            at_risk: limits
                .iter()
                .map(|&l| crate::exporter::connections::Risk {
                    idle_limit: format!("{l}s"),
                    idle_limit_seconds: l,
                    reason: reason.into(),
                })
                .collect(),
            netns_inode: 4026531840,
            uid: 0,
            cgroup: Some("/system.slice/app.service".into()),
            process: keepalive.then(|| "my app[77]".into()),
        }
    }

    #[test]
    fn at_risk_rows_show_settings_limits_reasons_and_the_endings() {
        let mut off = conn("192.0.2.1:40001", 0, 0, None);
        off.in_flow_map = false;
        off.audit = Some(audit(false, 700, &[240, 350], "keepalive_off"));
        let mut long = conn("192.0.2.1:40002", 1, 0, Some(100.0));
        long.audit = Some(audit(true, 300, &[240, 350], "idle_at_or_above_limit"));
        let l = Listing {
            connections: vec![off, long],
            total: 2,
            limit: 100,
            note: "2 connections at risk in the audit's last inventory".into(),
            at_risk_only: true,
            recent_endings: vec![EndingRow {
                time_unix_seconds: 1000.0,
                family: "ipv4".into(),
                local: "192.0.2.1:40009".into(),
                remote: "192.0.2.2:5432".into(),
                kind: "idle_death".into(),
                cause: "reset".into(),
                keepalive: false,
                idle_seconds: 245.4,
                netns_inode: 4026531840,
                cgroup: None,
            }],
            ..Default::default()
        };
        let now = UNIX_EPOCH + std::time::Duration::from_secs(1012);
        let text = render_at(&l, 0, now);
        let expected = "\
LOCAL            REMOTE          SENT  SENT_ANSWERED  SENT_UNANSWERED  RECEIVED  RECEIVED_ANSWERED  RECEIVED_UNANSWERED  LAST_PROBE_S  ENDED  KEEPALIVE  IDLE_AGE_S  AT_RISK    REASON                  PROCESS
192.0.2.1:40001  192.0.2.2:5432     -              -                -         -                  -                    -             -  open   off               700  240s,350s  keepalive_off           /system.slice/app.service
192.0.2.1:40002  192.0.2.2:5432     1              0                1         0                  0                    0         100.0  open   on:600s           300  240s,350s  idle_at_or_above_limit  my_app[77]
2 of 2 connections at risk. 2 connections at risk in the audit's last inventory

Recent endings, newest first (keepalive timeouts and idle deaths):
AGO_S  LOCAL            REMOTE          CAUSE  KEEPALIVE  IDLE_S       NETNS  CGROUP
   12  192.0.2.1:40009  192.0.2.2:5432  reset  off           245  4026531840  -
";
        assert_eq!(text, expected);
    }
}

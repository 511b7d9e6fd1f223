//! The keepalive audit's join in the connection view, with a synthetic inventory.

use super::*;

use std::{
    sync::Arc,
    time::{Duration as Span, SystemTime},
};

use keepalive_common::audit::{Effective, EndingKind};

use crate::audit::{AuditedConnection, EndingRecord, Inventory};

const LIMITS: [u32; 2] = [240, 350];
/// The inventory's time: 1,000,000 s after the epoch.
const TAKEN_S: u64 = 1_000_000;

/// Connection `i` as the inventory sees it: keepalive on with `idle` s (None: off),
/// idle for `idle_now` s, risk by the contract's rule for LIMITS.
fn audited(i: u8, idle: Option<u32>, idle_now: u32) -> AuditedConnection {
    let settings = Effective {
        keepalive: idle.is_some(),
        idle_seconds: idle.unwrap_or(7200),
        interval_seconds: 75,
        count: 9,
        user_timeout_ms: 0,
        idle_now_seconds: idle_now,
    };
    AuditedConnection {
        key: key(i),
        netns_inum: 4026531840,
        settings,
        cgroup: Some(format!("/system.slice/app{i}.service").into()),
        uid: 1000,
        process: Some(format!("app[{i}]").into()),
    }
}

fn request(limit: usize, at_risk_only: bool, conns: Vec<AuditedConnection>) -> Request {
    Request {
        limit,
        at_risk_only,
        inventory: Some(Arc::new(Inventory::new(
            SystemTime::UNIX_EPOCH + Span::from_secs(TAKEN_S),
            LIMITS.to_vec(),
            conns,
        ))),
        endings: Vec::new(),
    }
}

fn select_request(entries: &[(FlowKey, FlowState)], r: Request) -> Listing {
    let mut sel = Selector::for_request(r, Caps::default());
    let walked = walk(entries, 2, &mut sel);
    sel.finish(walked, 0, 10_000_000_000)
}

/// The inventory of the at-risk tests: 2 (off, idle 500 s) and 4 (on, 60 s: not at
/// risk) are in the flow map; 7 (on, 600 s: at risk for both limits, idle 700 s), 8
/// (off, idle 100 s) and 9 (on, 300 s: at risk for 240 s only, idle 30 s) are not.
fn risky_inventory(limit: usize, at_risk_only: bool) -> Request {
    request(
        limit,
        at_risk_only,
        vec![
            audited(2, None, 500),
            audited(4, Some(60), 1000),
            audited(7, Some(600), 700),
            audited(8, None, 100),
            audited(9, Some(300), 30),
        ],
    )
}

#[test]
fn rows_carry_the_inventory_of_their_connection() {
    let entries = [flow(1, 3), flow(2, 5), flow(4, 4)];
    let l = select_request(&entries, risky_inventory(10, false));
    assert_eq!(
        remotes(&l),
        ["192.0.2.2:40002", "192.0.2.4:40004", "192.0.2.1:40001"]
    );
    assert_eq!((l.total, l.truncated, l.at_risk_only), (3, false, false));
    let a = l.connections[0].audit.as_ref().unwrap();
    assert_eq!(
        (a.keepalive, a.idle_age_seconds, a.netns_inode, a.uid),
        (false, 500, 4026531840, 1000)
    );
    let risks: Vec<_> = a
        .at_risk
        .iter()
        .map(|r| {
            (
                r.idle_limit.as_str(),
                r.idle_limit_seconds,
                r.reason.as_str(),
            )
        })
        .collect();
    assert_eq!(
        risks,
        [
            ("240s", 240, "keepalive_off"),
            ("350s", 350, "keepalive_off")
        ]
    );
    assert_eq!(a.cgroup.as_deref(), Some("/system.slice/app2.service"));
    assert_eq!(a.process.as_deref(), Some("app[2]"));
    let b = l.connections[1].audit.as_ref().unwrap();
    assert_eq!(
        (b.keepalive, b.idle_seconds, b.interval_seconds, b.count),
        (true, 60, 75, 9)
    );
    assert!(b.at_risk.is_empty());
    // 1 is not in the inventory; every row is a flow map row.
    assert_eq!(l.connections[2].audit, None);
    assert!(l.connections.iter().all(|c| c.in_flow_map));
    assert_eq!(l.audit_inventory_unix_seconds, Some(TAKEN_S as f64));
    assert!(
        l.note.starts_with("keepalive settings and risk from"),
        "{}",
        l.note
    );
}

#[test]
fn at_risk_lists_the_inventory_longest_idle_first_with_flow_entries() {
    let entries = [flow(1, 3), flow(2, 5), flow(4, 4)];
    let l = select_request(&entries, risky_inventory(10, true));
    assert_eq!(
        remotes(&l),
        [
            "192.0.2.7:40007",
            "192.0.2.2:40002",
            "192.0.2.8:40008",
            "192.0.2.9:40009"
        ]
    );
    let in_map: Vec<bool> = l.connections.iter().map(|c| c.in_flow_map).collect();
    assert_eq!(in_map, [false, true, false, false]);
    // 2's probe counts come from its flow entry; the others have none.
    let sent: Vec<u32> = l.connections.iter().map(|c| c.probes_sent).collect();
    assert_eq!(sent, [0, 2, 0, 0]);
    let limits = |i: usize| -> Vec<(String, String)> {
        let a = l.connections[i].audit.as_ref().unwrap();
        a.at_risk
            .iter()
            .map(|r| (r.idle_limit.clone(), r.reason.clone()))
            .collect()
    };
    let s = |a: &str, b: &str| (a.to_owned(), b.to_owned());
    assert_eq!(
        limits(0),
        [
            s("240s", "idle_at_or_above_limit"),
            s("350s", "idle_at_or_above_limit")
        ]
    );
    assert_eq!(
        limits(2),
        [s("240s", "keepalive_off"), s("350s", "keepalive_off")]
    );
    assert_eq!(limits(3), [s("240s", "idle_at_or_above_limit")]);
    assert_eq!(
        (l.total, l.truncated, l.at_risk_only, l.scanned),
        (4, false, true, 3)
    );
    assert_eq!(
        l.note,
        "4 connections at risk in the audit's last inventory"
    );
}

#[test]
fn at_risk_is_bounded_by_the_limit_and_says_so() {
    let l = select_request(&[flow(2, 5)], risky_inventory(2, true));
    assert_eq!(remotes(&l), ["192.0.2.7:40007", "192.0.2.2:40002"]);
    assert_eq!((l.total, l.truncated, l.limit), (4, true, 2));
    assert_eq!(
        l.note,
        format!(
            "showing the 2 longest idle of 4 connections at risk; raise ?limit= (at most {MAX_LIMIT})"
        )
    );
    let l = select_request(&[], risky_inventory(1, true));
    assert_eq!(remotes(&l), ["192.0.2.7:40007"]);
}

#[test]
fn at_risk_without_an_inventory_is_empty_and_says_why() {
    let r = Request {
        at_risk_only: true,
        ..Request::plain(10)
    };
    let l = select_request(&[flow(1, 1)], r);
    assert_eq!((l.connections.len(), l.total, l.truncated), (0, 0, false));
    assert_eq!(l.note, NO_INVENTORY);
}

#[test]
fn recent_endings_are_listed_newest_first_bounded_by_the_limit() {
    let ending = |i: u8, kind, keepalive| EndingRecord {
        at: SystemTime::UNIX_EPOCH + Span::from_secs(TAKEN_S + u64::from(i)),
        key: key(i),
        kind,
        keepalive,
        idle_seconds: 245.5,
        netns_inum: 7,
        cgroup: None,
    };
    let mut r = risky_inventory(2, false);
    r.endings = vec![
        ending(3, EndingKind::IdleRetransmitTimeout, false),
        ending(2, EndingKind::KeepaliveTimeout, true),
        ending(1, EndingKind::IdleReset, true),
    ];
    let l = select_request(&[], r);
    let e: Vec<_> = l
        .recent_endings
        .iter()
        .map(|e| {
            (
                e.remote.as_str(),
                e.kind.as_str(),
                e.cause.as_str(),
                e.keepalive,
            )
        })
        .collect();
    assert_eq!(
        e,
        [
            ("192.0.2.3:40003", "idle_death", "retransmit_timeout", false),
            (
                "192.0.2.2:40002",
                "keepalive_timeout",
                "keepalive_timeout",
                true
            )
        ]
    );
    let first = &l.recent_endings[0];
    assert_eq!(
        (
            first.time_unix_seconds,
            first.idle_seconds,
            first.netns_inode
        ),
        ((TAKEN_S + 3) as f64, 245.5, 7)
    );
    assert_eq!(
        (first.family.as_str(), first.local.as_str()),
        ("ipv4", "192.0.2.1:5432")
    );
    let json = serde_json::to_value(&l).unwrap();
    assert_eq!(json["recent_endings"][1]["cause"], "keepalive_timeout");
}

/// The same connection in a second namespace (another netns inode).
const OTHER_NS: u32 = 4026532000;

/// A flow whose addresses two namespaces hold (the flow map has no namespace): one row
/// per namespace's socket, each with its own settings and the same wire counts; `total`
/// and `truncated` count flows. `?at_risk=1` lists each namespace's socket at risk.
#[test]
fn a_flow_held_in_two_namespaces_is_a_row_per_namespace() {
    let entries = [flow(2, 5), flow(4, 4)];
    let mut twin = audited(2, Some(60), 9);
    twin.netns_inum = OTHER_NS;
    let conns = vec![audited(2, None, 500), twin, audited(4, Some(60), 1000)];
    let l = select_request(&entries, request(10, false, conns.clone()));
    assert_eq!(
        remotes(&l),
        ["192.0.2.2:40002", "192.0.2.2:40002", "192.0.2.4:40004"]
    );
    assert_eq!((l.total, l.truncated), (2, false));
    let rows: Vec<(u32, bool, u32, u32)> = l
        .connections
        .iter()
        .map(|c| {
            let a = c.audit.as_ref().unwrap();
            (a.netns_inode, a.keepalive, a.idle_seconds, c.probes_sent)
        })
        .collect();
    assert_eq!(
        rows,
        [
            (4026531840, false, 7200, 2),
            (OTHER_NS, true, 60, 2),
            (4026531840, true, 60, 4)
        ]
    );

    let mut twin_off = audited(2, None, 400);
    twin_off.netns_inum = OTHER_NS;
    let conns = vec![audited(2, None, 500), twin_off, audited(4, Some(60), 1000)];
    let l = select_request(&entries, request(10, true, conns));
    let rows: Vec<(&str, u32, u32, bool)> = l
        .connections
        .iter()
        .map(|c| {
            let a = c.audit.as_ref().unwrap();
            (
                c.remote.as_str(),
                a.netns_inode,
                a.idle_age_seconds,
                c.in_flow_map,
            )
        })
        .collect();
    assert_eq!(
        rows,
        [
            ("192.0.2.2:40002", 4026531840, 500, true),
            ("192.0.2.2:40002", OTHER_NS, 400, true)
        ]
    );
    assert_eq!((l.total, l.truncated), (2, false));
}

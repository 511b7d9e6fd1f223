//! The walk's selection and listing, over synthetic flows and a synthetic audit inventory.

use keepalive_common::Family;

use super::*;

fn key(i: u8) -> FlowKey {
    FlowKey {
        local_addr: [u32::from_ne_bytes([192, 0, 2, 1]), 0, 0, 0],
        remote_addr: [u32::from_ne_bytes([192, 0, 2, i]), 0, 0, 0],
        local_port: 5432,
        remote_port: 40000 + i as u16,
        family: Family::Ipv4 as u32,
    }
}

/// A flow last active at `active` seconds, with `i` probes sent.
fn flow(i: u8, active: u64) -> (FlowKey, FlowState) {
    let mut st = FlowState {
        last_seen_ns: active * 1_000_000_000,
        ..Default::default()
    };
    st.dir[0].probes = i as u32;
    st.dir[0].last_probe_ns = st.last_seen_ns;
    (key(i), st)
}

/// What [`flow_map::walk`] does with a map holding `entries`, `batch` at a time.
fn walk(entries: &[(FlowKey, FlowState)], batch: usize, sel: &mut Selector) -> Walked {
    let chunks: Vec<_> = entries.chunks(batch).collect();
    let mut walked = Walked::default();
    for (i, chunk) in chunks.iter().enumerate() {
        let (k, v): (Vec<FlowKey>, Vec<FlowState>) = chunk.iter().copied().unzip();
        walked.entries += k.len() as u64;
        if sel.take(&k, &v).is_break() {
            walked.stopped = i + 1 < chunks.len();
            break;
        }
    }
    walked
}

fn select(entries: &[(FlowKey, FlowState)], limit: usize, caps: Caps, now_s: u64) -> Listing {
    let mut sel = Selector::new(limit, caps);
    let walked = walk(entries, 2, &mut sel);
    sel.finish(walked, 0, now_s * 1_000_000_000)
}

fn remotes(l: &Listing) -> Vec<&str> {
    l.connections.iter().map(|c| c.remote.as_str()).collect()
}

#[test]
fn listing_is_bounded_recent_first_and_says_so() {
    let entries: Vec<_> = (1..=5u8).map(|i| flow(i, i as u64)).collect();
    let l = select(&entries, 2, Caps::default(), 6);
    assert_eq!((l.total, l.truncated, l.connections.len()), (5, true, 2));
    assert_eq!((l.scanned, l.scan_truncated), (5, false));
    assert_eq!(l.connections[0].probes_sent, 5);
    assert_eq!(l.connections[0].seconds_since_last_probe, Some(1.0));
    assert!(l.note.contains("2 most recently active of 5"));
    let text = crate::web::table::table(&l);
    assert!(text.contains("192.0.2.5:40005") && text.contains("2 of 5 connections"));
    let json = serde_json::to_string(&l).unwrap();
    let back: Listing = serde_json::from_str(&json).unwrap();
    assert_eq!(back.connections, l.connections);
}

#[test]
fn order_is_most_recent_first_ties_by_address() {
    // 3 and 4 tie at 7 s, 1 and 2 at 5 s; 5 is the oldest.
    let entries = [flow(2, 5), flow(4, 7), flow(5, 1), flow(3, 7), flow(1, 5)];
    let l = select(&entries, 4, Caps::default(), 10);
    assert_eq!(
        remotes(&l),
        [
            "192.0.2.3:40003",
            "192.0.2.4:40004",
            "192.0.2.1:40001",
            "192.0.2.2:40002"
        ]
    );
    assert!(l.truncated);
}

#[test]
fn a_probe_either_way_counts_as_activity() {
    let (k, mut st) = flow(9, 1);
    st.dir[1].last_probe_ns = 8_000_000_000;
    let entries = [flow(1, 5), (k, st), flow(2, 6)];
    let l = select(&entries, 1, Caps::default(), 10);
    assert_eq!(remotes(&l), ["192.0.2.9:40009"]);
    assert_eq!(l.connections[0].seconds_since_last_probe, Some(2.0));
}

#[test]
fn limit_above_the_entries_shows_them_all_in_order() {
    let entries = [flow(1, 3), flow(2, 9), flow(3, 6)];
    let l = select(&entries, MAX_LIMIT, Caps::default(), 10);
    assert_eq!(
        remotes(&l),
        ["192.0.2.2:40002", "192.0.2.3:40003", "192.0.2.1:40001"]
    );
    assert_eq!((l.total, l.truncated, l.scan_truncated), (3, false, false));
    assert_eq!(l.note, NO_INVENTORY);
    assert_eq!(l.audit_inventory_unix_seconds, None);
    assert!(
        l.connections
            .iter()
            .all(|c| c.in_flow_map && c.audit.is_none())
    );
}

#[test]
fn limit_one_keeps_the_most_recent() {
    let entries: Vec<_> = (1..=200u8)
        .map(|i| flow(i, (i as u64 * 37) % 101))
        .collect();
    let l = select(&entries, 1, Caps::default(), 200);
    // 37 * i mod 101 is at its highest, 100, for i = 30 and 131: the lower address wins.
    assert_eq!(remotes(&l), ["192.0.2.30:40030"]);
    assert_eq!(l.total, 200);
}

#[test]
fn top_k_equals_a_full_sort() {
    // Many ties (activity mod 17) and every limit from 1 past the entry count.
    let entries: Vec<_> = (0..=255u8)
        .map(|i| flow(i, (i as u64 * 7919) % 17))
        .collect();
    let mut sorted = entries.clone();
    sorted.sort_by(|a, b| {
        let ra = Ranked {
            active: last_active(&a.1),
            key: a.0,
            state: a.1,
        };
        let rb = Ranked {
            active: last_active(&b.1),
            key: b.0,
            state: b.1,
        };
        ra.cmp(&rb)
    });
    for limit in [1, 2, 16, 17, 100, 255, 256, 300] {
        let mut top = TopK::new(limit);
        for (k, st) in &entries {
            top.offer(k, st);
        }
        let got: Vec<FlowKey> = top.into_sorted().iter().map(|e| e.0).collect();
        let want: Vec<FlowKey> = sorted.iter().take(limit).map(|e| e.0).collect();
        assert_eq!(got, want, "limit {limit}");
    }
}

#[test]
fn the_entry_cap_stops_the_walk_and_says_so() {
    // The most recent (12) lies beyond the cap: the view shows the best of the first 5.
    let entries: Vec<_> = (1..=12u8).map(|i| flow(i, i as u64)).collect();
    let caps = Caps {
        budget: SCAN_BUDGET,
        max_entries: 5,
    };
    let mut sel = Selector::new(3, caps);
    let walked = walk(&entries, 4, &mut sel);
    let l = sel.finish(walked, 40, 20_000_000_000);
    assert_eq!((l.scanned, l.scan_truncated), (5, true));
    assert_eq!(
        remotes(&l),
        ["192.0.2.5:40005", "192.0.2.4:40004", "192.0.2.3:40003"]
    );
    // The last sweep's count stands for the total.
    assert_eq!((l.total, l.truncated), (40, true));
    assert!(
        l.note.contains("read only in part (5 entries in"),
        "{}",
        l.note
    );
}

#[test]
fn a_cap_equal_to_the_map_reads_it_whole() {
    let entries: Vec<_> = (1..=8u8).map(|i| flow(i, i as u64)).collect();
    let caps = Caps {
        budget: SCAN_BUDGET,
        max_entries: 8,
    };
    let mut sel = Selector::new(10, caps);
    let walked = walk(&entries, 4, &mut sel);
    let l = sel.finish(walked, 3, 20_000_000_000);
    assert_eq!(
        (l.scanned, l.scan_truncated, l.total, l.truncated),
        (8, false, 8, false)
    );
}

#[test]
fn the_time_budget_stops_the_walk_after_a_batch() {
    let entries: Vec<_> = (1..=12u8).map(|i| flow(i, i as u64)).collect();
    let caps = Caps {
        budget: Duration::ZERO,
        max_entries: SCAN_MAX_ENTRIES,
    };
    let mut sel = Selector::new(2, caps);
    let walked = walk(&entries, 4, &mut sel);
    let l = sel.finish(walked, 0, 20_000_000_000);
    assert_eq!((l.scanned, l.scan_truncated, l.total), (4, true, 4));
    assert_eq!(remotes(&l), ["192.0.2.4:40004", "192.0.2.3:40003"]);
}

mod audit;

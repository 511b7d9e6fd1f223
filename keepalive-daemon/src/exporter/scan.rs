//! The bounded walk behind GET /connections: the `limit` most recently active flows of
//! the kernel flow map, whatever its size (up to 16,777,216 entries). The map is read in
//! batches ([`flow_map::walk`]) and only the `limit` best entries are kept while reading
//! (a heap, [`TopK`]), so memory is O(limit + one batch), about 2 MiB at the largest
//! limit; the walk stops at [`SCAN_MAX_ENTRIES`] entries or after [`SCAN_BUDGET`], and
//! the listing says so (`scan_truncated`, `note`).

use std::{
    cmp::Ordering,
    collections::BinaryHeap,
    ops::ControlFlow,
    time::{Duration, Instant},
};

use keepalive_common::flow::{FlowKey, FlowState};

use super::{
    connections::{Connection, Listing, MAX_LIMIT, address, describe},
    flow_map::{self, FlowMapError, Walked},
};

/// How long one request may read the flow map: below the 10 s timeout of
/// `keepalive-daemon connections` (web/client.rs) with room to render the rows, and far
/// inside the 30 s systemd watchdog. It bounds the latency when CPU is scarce: on a
/// 2-CPU machine at load 12 the walk of 1,048,576 entries took up to 4.1 s (0.6 s of CPU).
pub const SCAN_BUDGET: Duration = Duration::from_secs(8);

/// Entries one request reads at most: the bound on its work, whatever the clock. At
/// the measured 0.5 µs of CPU per entry (mostly the kernel's copy), about 2 s of CPU.
/// Maps up to --flows.max 4194304 are read whole; of larger ones the entries of the
/// first hash buckets, and the listing says so.
pub const SCAN_MAX_ENTRIES: u64 = 4 * 1024 * 1024;

/// The caps of one walk ([`SCAN_BUDGET`], [`SCAN_MAX_ENTRIES`] for requests).
#[derive(Debug, Clone, Copy)]
pub struct Caps {
    pub budget: Duration,
    pub max_entries: u64,
}

impl Default for Caps {
    fn default() -> Caps {
        Caps {
            budget: SCAN_BUDGET,
            max_entries: SCAN_MAX_ENTRIES,
        }
    }
}

/// When a flow was last active: its last probe either way, answer or close.
pub fn last_active(st: &FlowState) -> u64 {
    st.last_seen_ns
        .max(st.dir[0].last_probe_ns)
        .max(st.dir[1].last_probe_ns)
}

/// A flow in the view's order: `a < b` when `a` comes first, i.e. was active more
/// recently (ties: the lower local, then remote address first), so the top of a
/// max-heap is the entry to drop.
struct Ranked {
    active: u64,
    key: FlowKey,
    state: FlowState,
}

impl Ord for Ranked {
    fn cmp(&self, other: &Ranked) -> Ordering {
        other.active.cmp(&self.active).then_with(|| {
            (address(&self.key, true), address(&self.key, false))
                .cmp(&(address(&other.key, true), address(&other.key, false)))
        })
    }
}

impl PartialOrd for Ranked {
    fn partial_cmp(&self, other: &Ranked) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl PartialEq for Ranked {
    fn eq(&self, other: &Ranked) -> bool {
        self.cmp(other) == Ordering::Equal
    }
}

impl Eq for Ranked {}

/// The `limit` first flows in the view's order among those offered, in O(limit) memory
/// and O(log limit) per offer (most offers cost one comparison with the last kept).
pub struct TopK {
    limit: usize,
    heap: BinaryHeap<Ranked>,
}

impl TopK {
    pub fn new(limit: usize) -> TopK {
        TopK {
            limit,
            heap: BinaryHeap::with_capacity(limit.min(MAX_LIMIT)),
        }
    }

    pub fn offer(&mut self, key: &FlowKey, state: &FlowState) {
        let active = last_active(state);
        // Most flows of a large map are older than the last one kept: one comparison,
        // no copy.
        if self.heap.len() >= self.limit && self.heap.peek().is_none_or(|last| active < last.active)
        {
            return;
        }
        let r = Ranked {
            active,
            key: *key,
            state: *state,
        };
        if self.heap.len() < self.limit {
            self.heap.push(r);
        } else if let Some(mut last) = self.heap.peek_mut()
            && r < *last
        {
            // Replacing through PeekMut restores the heap order when `last` drops.
            *last = r;
        }
    }

    /// The kept flows, first first.
    pub fn into_sorted(self) -> Vec<(FlowKey, FlowState)> {
        self.heap
            .into_sorted_vec()
            .into_iter()
            .map(|r| (r.key, r.state))
            .collect()
    }
}

/// Takes the batches of one walk into a [`TopK`] until the map ends or a cap is hit.
pub struct Selector {
    top: TopK,
    caps: Caps,
    started: Instant,
    started_cpu_ns: u64,
    scanned: u64,
    /// Entries of a batch were left out because of the entry cap.
    cut: bool,
}

impl Selector {
    pub fn new(limit: usize, caps: Caps) -> Selector {
        Selector {
            top: TopK::new(limit),
            caps,
            started: Instant::now(),
            started_cpu_ns: flow_map::thread_cpu_ns(),
            scanned: 0,
            cut: false,
        }
    }

    /// One batch of the walk; breaks when a cap is reached (checked per batch: the
    /// budget can be overrun by one batch, 4096 entries, about a millisecond).
    pub fn take(&mut self, keys: &[FlowKey], values: &[FlowState]) -> ControlFlow<()> {
        let room = self.caps.max_entries.saturating_sub(self.scanned);
        let n = keys.len().min(usize::try_from(room).unwrap_or(usize::MAX));
        self.cut |= n < keys.len();
        for (k, st) in keys[..n].iter().zip(values) {
            self.top.offer(k, st);
        }
        self.scanned += n as u64;
        if self.scanned >= self.caps.max_entries || self.started.elapsed() >= self.caps.budget {
            ControlFlow::Break(())
        } else {
            ControlFlow::Continue(())
        }
    }

    /// The listing, given how the walk ended and the last sweep's count of the map.
    pub fn finish(self, walked: Walked, swept_count: u64, now_ns: u64) -> Listing {
        let scan_truncated = walked.stopped || self.cut;
        let elapsed_seconds = self.started.elapsed().as_secs_f64();
        let cpu_seconds =
            flow_map::thread_cpu_ns().saturating_sub(self.started_cpu_ns) as f64 / 1e9;
        let (scanned, caps, limit) = (self.scanned, self.caps, self.top.limit);
        let total = if scan_truncated {
            swept_count.max(scanned)
        } else {
            scanned
        } as usize;
        let connections: Vec<Connection> = self
            .top
            .into_sorted()
            .iter()
            .map(|(k, st)| describe(k, st, now_ns))
            .collect();
        let truncated = connections.len() < total;
        let note = if scan_truncated {
            format!(
                "the flow map was read only in part ({scanned} entries in {elapsed_seconds:.1} s; \
                 a request reads at most {} entries or for {:?}): showing the {} most recently \
                 active of those, of about {total} connections (keepalive_daemon_flow_map_entries \
                 at the last sweep)",
                caps.max_entries,
                caps.budget,
                connections.len()
            )
        } else if truncated {
            format!(
                "showing the {limit} most recently active of {total} connections; raise ?limit= (at most {MAX_LIMIT})"
            )
        } else {
            "keepalive settings per connection are not tracked yet".to_owned()
        };
        Listing {
            connections,
            total,
            limit,
            truncated,
            note,
            scanned,
            scan_truncated,
            elapsed_seconds,
            cpu_seconds,
        }
    }
}

/// The listing of the flow map `map`, read within `caps`; `swept_count` is the last
/// sweep's entry count, the total when the walk cannot reach the map's end.
pub fn read(
    map: &aya::maps::MapData,
    limit: usize,
    caps: Caps,
    swept_count: u64,
) -> Result<Listing, FlowMapError> {
    use std::os::fd::AsFd as _;
    let mut selector = Selector::new(limit, caps);
    let walked = flow_map::walk(map.fd().as_fd(), flow_map::BATCH_ENTRIES, |k, v| {
        selector.take(k, v)
    })?;
    Ok(selector.finish(walked, swept_count, flow_map::monotonic_ns()))
}

#[cfg(test)]
mod tests {
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
        assert_eq!(
            l.note,
            "keepalive settings per connection are not tracked yet"
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
}

//! The bounded walk behind GET /connections: the `limit` most recently active flows of
//! the kernel flow map, whatever its size (up to 16,777,216 entries). The map is read in
//! batches ([`flow_map::walk`]) and only the `limit` best entries are kept while reading
//! (a heap, [`TopK`]), so memory is O(limit + one batch), about 2 MiB at the largest
//! limit; the walk stops at [`SCAN_MAX_ENTRIES`] entries or after [`SCAN_BUDGET`], and
//! the listing says so (`scan_truncated`, `note`). With `?at_risk=1` the rows are
//! chosen from the audit's inventory first (connections/audit.rs) and the walk only
//! picks up their flow entries.

use std::{
    cmp::Ordering,
    collections::{BinaryHeap, HashMap},
    ops::ControlFlow,
    time::{Duration, Instant},
};

use keepalive_common::flow::{FlowKey, FlowState};

use super::{
    connections::{Connection, Listing, MAX_LIMIT, Request, address, describe},
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

/// `?at_risk=1`: the connections to show (chosen from the inventory before the walk)
/// and their flow entries, filled in as the walk meets them.
struct AtRisk {
    total: usize,
    keys: Vec<(u32, FlowKey)>,
    found: HashMap<FlowKey, Option<FlowState>>,
}

/// Takes the batches of one walk into a [`TopK`] (or, for `?at_risk=1`, the entries of
/// the chosen connections) until the map ends or a cap is hit.
pub struct Selector {
    top: TopK,
    caps: Caps,
    started: Instant,
    started_cpu_ns: u64,
    scanned: u64,
    /// Entries of a batch were left out because of the entry cap.
    cut: bool,
    request: Request,
    at_risk: Option<AtRisk>,
}

impl Selector {
    pub fn new(limit: usize, caps: Caps) -> Selector {
        Selector::for_request(Request::plain(limit), caps)
    }

    pub fn for_request(request: Request, caps: Caps) -> Selector {
        let at_risk = request.at_risk_only.then(|| {
            let (total, keys) = request.at_risk();
            let found = keys.iter().map(|(_, k)| (*k, None)).collect();
            AtRisk { total, keys, found }
        });
        // ?at_risk=1 keeps its rows in `at_risk`: no heap.
        let kept = if at_risk.is_some() { 0 } else { request.limit };
        Selector {
            top: TopK::new(kept),
            caps,
            started: Instant::now(),
            started_cpu_ns: flow_map::thread_cpu_ns(),
            scanned: 0,
            cut: false,
            request,
            at_risk,
        }
    }

    /// One batch of the walk; breaks when a cap is reached (checked per batch: the
    /// budget can be overrun by one batch, 4096 entries, about a millisecond).
    pub fn take(&mut self, keys: &[FlowKey], values: &[FlowState]) -> ControlFlow<()> {
        let room = self.caps.max_entries.saturating_sub(self.scanned);
        let n = keys.len().min(usize::try_from(room).unwrap_or(usize::MAX));
        self.cut |= n < keys.len();
        for (k, st) in keys[..n].iter().zip(values) {
            match &mut self.at_risk {
                Some(w) => {
                    if let Some(slot) = w.found.get_mut(k) {
                        *slot = Some(*st);
                    }
                }
                None => self.top.offer(k, st),
            }
        }
        self.scanned += n as u64;
        if self.scanned >= self.caps.max_entries || self.started.elapsed() >= self.caps.budget {
            ControlFlow::Break(())
        } else {
            ControlFlow::Continue(())
        }
    }

    /// The listing, given how the walk ended and the last sweep's count of the map.
    pub fn finish(mut self, walked: Walked, swept_count: u64, now_ns: u64) -> Listing {
        let scan_truncated = walked.stopped || self.cut;
        let elapsed_seconds = self.started.elapsed().as_secs_f64();
        let cpu_seconds =
            flow_map::thread_cpu_ns().saturating_sub(self.started_cpu_ns) as f64 / 1e9;
        let scanned = self.scanned;
        let (limit, at_risk_only) = (self.request.limit, self.request.at_risk_only);
        let audit_inventory_unix_seconds = self.request.inventory_unix_seconds();
        let recent_endings = self.request.ending_rows();
        let (connections, shown, total, note) = match self.at_risk.take() {
            Some(w) => self.at_risk_rows(w, now_ns, scan_truncated),
            None => self.recent_rows(swept_count, now_ns, scan_truncated, elapsed_seconds),
        };
        Listing {
            truncated: shown < total,
            connections,
            total,
            limit,
            note,
            scanned,
            scan_truncated,
            elapsed_seconds,
            cpu_seconds,
            at_risk_only,
            audit_inventory_unix_seconds,
            recent_endings,
        }
    }

    /// The listing's rows: the `limit` most recently active flows, with their audit
    /// data, and how many flows they show. A flow whose addresses the inventory saw in
    /// several network namespaces (the flow map has none in its key) is one row per
    /// namespace's socket, each with the same wire counters.
    fn recent_rows(
        self,
        swept_count: u64,
        now_ns: u64,
        scan_truncated: bool,
        elapsed_seconds: f64,
    ) -> (Vec<Connection>, usize, usize, String) {
        let (scanned, caps, limit) = (self.scanned, self.caps, self.top.limit);
        let total = if scan_truncated {
            swept_count.max(scanned)
        } else {
            scanned
        } as usize;
        let flows = self.top.into_sorted();
        let mut connections = Vec::with_capacity(flows.len());
        for (k, st) in &flows {
            let audits = self.request.audited(k);
            if audits.is_empty() {
                connections.push(describe(k, st, now_ns));
            }
            for a in audits {
                connections.push(Connection {
                    audit: Some(a),
                    ..describe(k, st, now_ns)
                });
            }
        }
        let shown = flows.len();
        let note = if scan_truncated {
            format!(
                "the flow map was read only in part ({scanned} entries in {elapsed_seconds:.1} s; \
                 a request reads at most {} entries or for {:?}): showing the {} most recently \
                 active of those, of about {total} connections (keepalive_daemon_flow_map_entries \
                 at the last sweep)",
                caps.max_entries, caps.budget, shown
            )
        } else if shown < total {
            format!(
                "showing the {limit} most recently active of {total} connections; raise ?limit= (at most {MAX_LIMIT})"
            )
        } else {
            settings_note(&self.request)
        };
        (connections, shown, total, note)
    }

    /// `?at_risk=1`: the chosen connections in their order, with their flow entries
    /// where the walk found them.
    fn at_risk_rows(
        &self,
        w: AtRisk,
        now_ns: u64,
        scan_truncated: bool,
    ) -> (Vec<Connection>, usize, usize, String) {
        let connections: Vec<Connection> = w
            .keys
            .iter()
            .map(|(netns, k)| {
                let st = w.found.get(k).copied().flatten();
                Connection {
                    in_flow_map: st.is_some(),
                    audit: self.request.audited_in(*netns, k),
                    ..describe(k, &st.unwrap_or_default(), now_ns)
                }
            })
            .collect();
        let note = if self.request.inventory.is_none() {
            NO_INVENTORY.to_owned()
        } else if connections.len() < w.total {
            format!(
                "showing the {} longest idle of {} connections at risk; raise ?limit= (at most {MAX_LIMIT})",
                connections.len(),
                w.total
            )
        } else {
            format!(
                "{} connections at risk in the audit's last inventory",
                w.total
            )
        };
        let note = if scan_truncated {
            note + "; the flow map was read only in part: rows it did not reach show in_flow_map false"
        } else {
            note
        };
        let shown = connections.len();
        (connections, shown, w.total, note)
    }
}

const NO_INVENTORY: &str = "no keepalive settings per connection: the audit's inventory is off or has not run yet (keepalive_daemon_audit_inventory_enabled, --audit.interval)";

fn settings_note(request: &Request) -> String {
    if request.inventory.is_some() {
        "keepalive settings and risk from the audit's last inventory (audit_inventory_unix_seconds)"
            .to_owned()
    } else {
        NO_INVENTORY.to_owned()
    }
}

/// The listing of the flow map `map` for one request (limit, at-risk filter, audit
/// data), read within `caps`; `swept_count` is the last sweep's entry count, the total
/// when the walk cannot reach the map's end.
pub fn read_request(
    map: &aya::maps::MapData,
    request: Request,
    caps: Caps,
    swept_count: u64,
) -> Result<Listing, FlowMapError> {
    use std::os::fd::AsFd as _;
    let mut selector = Selector::for_request(request, caps);
    let walked = flow_map::walk(map.fd().as_fd(), flow_map::BATCH_ENTRIES, |k, v| {
        selector.take(k, v)
    })?;
    Ok(selector.finish(walked, swept_count, flow_map::monotonic_ns()))
}

#[cfg(test)]
mod tests;

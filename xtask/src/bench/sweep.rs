//! The flow-map sweep's CPU at 10k, 100k and 1M tracked connections in one map of fixed
//! size (--flows.max 1048576), read from the daemon's own sweep metrics over several
//! sweeps per fill; and a row with 10% of the connections closed long ago, so the
//! sweep's deletes are measured too. The map is filled through the daemon's batch code
//! (keepalive_tests::flow_fill), one descriptor duplicated from the daemon.

use std::time::{Duration, Instant};

use anyhow::ensure;
use keepalive_common::flow::{FlowKey, FlowState, flow_end};
use keepalive_daemon::metric_names::{
    FLOW_MAP_SWEEP_CPU_SECONDS, FLOW_MAP_SWEEP_ENTRIES, FLOW_MAP_SWEEPS, FLOWS_SWEPT,
};
use keepalive_tests::{
    Daemon,
    flow_fill::{DaemonFlowMap, synthetic},
    scenarios::Setup,
};

use super::{Spread, loadavg, spawn_daemon};

/// The map's size for every row: the largest --flows.max documented.
const MAX: u32 = 1 << 20;
/// Short, so a row takes seconds; a sweep of 1M entries takes about half a second.
const INTERVAL: &str = "2s";
const FILLS: [u32; 3] = [10_000, 100_000, 1_000_000];
/// Sweeps measured per row.
const SWEEPS: usize = 8;
/// The row with closed connections: this many tracked, the first tenth of them stale.
const STALE_FILL: u32 = 100_000;
const STALE: u32 = STALE_FILL / 10;
/// Bound on the wait for one sweep to end (the interval plus a slow 1M walk).
const SWEEP_WAIT: Duration = Duration::from_secs(30);
const POLL: Duration = Duration::from_millis(100);

/// The daemon's sweep counters at one scrape.
#[derive(Clone, Copy)]
struct Totals {
    sweeps: u64,
    cpu_seconds: f64,
    walked: u64,
    removed: u64,
}

/// One sweep (or the mean of the few that ended between two scrapes).
struct Sweep {
    cpu_ns: f64,
    walked: u64,
    removed: u64,
}

fn totals(daemon: &Daemon) -> Totals {
    let s = daemon.scrape();
    Totals {
        sweeps: s.value(FLOW_MAP_SWEEPS, &[]) as u64,
        cpu_seconds: s.value(FLOW_MAP_SWEEP_CPU_SECONDS, &[]),
        walked: s.value(FLOW_MAP_SWEEP_ENTRIES, &[]) as u64,
        removed: s.value(FLOWS_SWEPT, &[]) as u64,
    }
}

/// Waits (bounded by [`SWEEP_WAIT`]) for a sweep that ends after `after` was read.
fn next_sweep(daemon: &Daemon, after: Totals) -> anyhow::Result<Totals> {
    let deadline = Instant::now() + SWEEP_WAIT;
    loop {
        let t = totals(daemon);
        if t.sweeps > after.sweeps {
            return Ok(t);
        }
        ensure!(
            Instant::now() < deadline,
            "no sweep ended within {SWEEP_WAIT:?}; daemon stderr:\n{}",
            daemon.stderr()
        );
        std::thread::sleep(POLL);
    }
}

fn per_sweep(a: Totals, b: Totals) -> Sweep {
    let n = (b.sweeps - a.sweeps).max(1);
    Sweep {
        cpu_ns: (b.cpu_seconds - a.cpu_seconds) * 1e9 / n as f64,
        walked: (b.walked - a.walked) / n,
        removed: (b.removed - a.removed) / n,
    }
}

/// An open connection, active a moment after boot (open flows are never stale).
fn open(i: u32) -> (FlowKey, FlowState) {
    synthetic(i, MAX)
}

/// The same connection closed and last seen 1 ns after boot: stale for the sweep.
fn closed(i: u32) -> (FlowKey, FlowState) {
    let (key, mut state) = synthetic(i, MAX);
    state.end = flow_end::CLOSED;
    state.last_seen_ns = 1;
    (key, state)
}

pub fn run(setup: &Setup, iface: &str) -> anyhow::Result<()> {
    println!(
        "## Flow-map sweep (--flows.max {MAX}, --flows.sweep-interval {INTERVAL}; \
         goal: ns per connection independent of the fill)"
    );
    println!("load average at start: {}", loadavg());
    let max = MAX.to_string();
    let daemon = spawn_daemon(
        &setup.a,
        iface,
        &["--flows.max", &max, "--flows.sweep-interval", INTERVAL],
    );
    let map = DaemonFlowMap::open(daemon.pid());
    println!(
        "| tracked connections | removed per sweep | sweeps | CPU per sweep (ms), median | \
         ns per connection swept, median (min-max) | ns per connection removed |"
    );
    println!("| ---: | ---: | ---: | ---: | ---: | ---: |");
    let mut filled = 0;
    let mut baseline_ms = 0.0;
    for n in FILLS {
        map.write(filled..n, open);
        filled = n;
        let sweeps = measure(&daemon, n, || Ok(()))?;
        let row = Row::of(&sweeps);
        row.print(&n.to_string(), 0, "");
        if n == STALE_FILL {
            baseline_ms = row.cpu_ms;
            stale_row(&daemon, &map, baseline_ms)?;
        }
    }
    ensure!(baseline_ms > 0.0, "no {STALE_FILL} row measured");
    println!("load average at end: {}", loadavg());
    println!();
    daemon.terminate();
    Ok(())
}

/// The 100k fill with its first tenth closed long ago before every sweep measured; the
/// open flows are back afterwards.
fn stale_row(daemon: &Daemon, map: &DaemonFlowMap, baseline_ms: f64) -> anyhow::Result<()> {
    let sweeps = measure(daemon, STALE_FILL, || {
        // Right after a sweep ended: the next starts an interval later, so it sees
        // every stale entry (a reinsert, or an update of the open entry of that key).
        map.write(0..STALE, closed);
        Ok(())
    })?;
    for s in &sweeps {
        ensure!(
            s.removed == u64::from(STALE),
            "a sweep removed {} of the {STALE} stale entries",
            s.removed
        );
    }
    let row = Row::of(&sweeps);
    let per_removed = (row.cpu_ms - baseline_ms) * 1e6 / f64::from(STALE);
    row.print(
        &format!("{STALE_FILL} (10% closed)"),
        STALE,
        &format!("{per_removed:.0}"),
    );
    map.write(0..STALE, open);
    Ok(())
}

/// [`SWEEPS`] sweeps that each walked `n` entries, the first starting after the fill;
/// `before_each` runs right after the previous sweep ended.
fn measure(
    daemon: &Daemon,
    n: u32,
    mut before_each: impl FnMut() -> anyhow::Result<()>,
) -> anyhow::Result<Vec<Sweep>> {
    // The first sweep to end may have begun during the fill: it is not measured.
    let mut last = next_sweep(daemon, totals(daemon))?;
    let mut out = Vec::with_capacity(SWEEPS);
    while out.len() < SWEEPS {
        before_each()?;
        let t = next_sweep(daemon, last)?;
        let s = per_sweep(last, t);
        ensure!(
            s.walked == u64::from(n),
            "a sweep walked {} entries, {n} were written",
            s.walked
        );
        out.push(s);
        last = t;
    }
    Ok(out)
}

/// A row's figures: CPU per sweep and per connection swept.
struct Row {
    sweeps: usize,
    cpu_ms: f64,
    per_conn: Spread,
}

impl Row {
    fn of(sweeps: &[Sweep]) -> Row {
        let cpu = Spread::of(sweeps.iter().map(|s| s.cpu_ns).collect()).median;
        Row {
            sweeps: sweeps.len(),
            cpu_ms: cpu / 1e6,
            per_conn: Spread::of(sweeps.iter().map(|s| s.cpu_ns / s.walked as f64).collect()),
        }
    }

    fn print(&self, label: &str, removed: u32, per_removed: &str) {
        println!(
            "| {label} | {removed} | {} | {:.2} | {} | {per_removed} |",
            self.sweeps,
            self.cpu_ms,
            self.per_conn.show(0)
        );
    }
}

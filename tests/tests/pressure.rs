//! A full flow map: with --flows.max 64 and 400 connections, the LRU evicts, the
//! daemon reports the evictions (at least 400 - 64 by pigeonhole, at most what the kernel
//! created), and keeps counting: probes on fresh connections still equal the kernel's
//! TcpExtTCPKeepAlive. The documented maximum for 1M connections starts.

use std::time::{Duration, Instant};

use keepalive_tests::expect::KernelProbes;
use keepalive_tests::names::{
    FLOW_MAP_CAPACITY, FLOW_MAP_ENTRIES, FLOW_MAP_EVICTIONS, FLOWS_CREATED, FLOWS_SWEPT,
};
use keepalive_tests::scenarios::{self, Setup};
use keepalive_tests::sockets::{exchange_byte, open_connections};
use keepalive_tests::{Daemon, Samples, require_root};

const CAPACITY: u64 = 64;
/// Connections opened in batches (a listener's backlog holds one batch).
const BATCHES: usize = 4;
const BATCH: usize = 100;
/// The sweep refreshes the eviction count; the flag makes it every second.
const SWEEP: &str = "1s";
const SWEEP_WAIT: Duration = Duration::from_secs(15);

#[test]
fn a_full_flow_map_evicts_counts_it_and_keeps_counting() {
    require_root();
    let setup = Setup::new("press");
    let capacity = CAPACITY.to_string();
    let daemon = Daemon::spawn_with(
        &setup.a,
        &[&setup.veth.a_if],
        &["--flows.max", &capacity, "--flows.sweep-interval", SWEEP],
    );
    let ctx = || format!("daemon stderr:\n{}", daemon.stderr());
    let start = daemon.scrape();
    assert_eq!(
        start.value(FLOW_MAP_EVICTIONS, &[]),
        0.0,
        "evictions at start; {}",
        ctx()
    );
    assert_eq!(start.value(FLOW_MAP_CAPACITY, &[]), CAPACITY as f64);

    let mut conns = Vec::new();
    for _ in 0..BATCHES {
        let batch = open_connections(&setup.a, &setup.b, BATCH / 2, BATCH / 2);
        exchange_byte(&batch);
        conns.extend(batch);
    }
    let n = conns.len() as u64;
    let s = wait_for_sweep(&daemon, n);
    check_evictions(&s, n, &ctx);

    // Still counting: fresh connections take the place of the idle ones.
    let observed = scenarios::keepalive_probes(&setup, 2, 2, || daemon.scrape());
    let (o, before, after) = (&observed.oracle, &observed.before, &observed.after);
    assert!(o.kernel_probes_a > 0, "no probes; {}", ctx());
    o.assert_probes_equal_nstat(before, after, &|| format!("with a full map; {}", ctx()));
    drop(conns);
    daemon.terminate();
}

/// Waits (bounded by [`SWEEP_WAIT`]) for a sweep that saw all `n` connections: the
/// first scrape with at least `n - CAPACITY` evictions, or the last one.
fn wait_for_sweep(daemon: &Daemon, n: u64) -> Samples {
    let deadline = Instant::now() + SWEEP_WAIT;
    loop {
        let s = daemon.scrape();
        if s.value(FLOW_MAP_EVICTIONS, &[]) as u64 >= n - CAPACITY || Instant::now() > deadline {
            return s;
        }
        std::thread::sleep(Duration::from_millis(250));
    }
}

/// The map stayed within its capacity, every connection created a flow, and the
/// evictions reported are what pigeonhole and the flow accounting say.
fn check_evictions(s: &Samples, n: u64, ctx: &dyn Fn() -> String) {
    let evictions = s.value(FLOW_MAP_EVICTIONS, &[]) as u64;
    let created = s.value(FLOWS_CREATED, &[]) as u64;
    let entries = s.value(FLOW_MAP_ENTRIES, &[]) as u64;
    eprintln!(
        "pressure: {n} connections, {created} flows created, {entries} present, {evictions} evicted"
    );
    assert!(
        created >= n,
        "{n} connections, {created} flows created; {}",
        ctx()
    );
    assert!(
        entries <= CAPACITY,
        "{entries} entries in a map of {CAPACITY}; {}",
        ctx()
    );
    assert!(
        evictions >= n - CAPACITY && evictions <= created,
        "evictions {evictions}: {n} connections in {CAPACITY} slots must evict at least {}, \
         and at most the {created} created; {}",
        n - CAPACITY,
        ctx()
    );
    assert_eq!(
        evictions,
        created - entries - s.value(FLOWS_SWEPT, &[]) as u64,
        "evictions are created minus present minus swept; {}",
        ctx()
    );
}

#[test]
fn the_documented_maximum_for_a_million_connections_starts() {
    require_root();
    let setup = Setup::new("pressmax");
    let daemon = Daemon::spawn_with(&setup.a, &[&setup.veth.a_if], &["--flows.max", "1048576"]);
    let s = daemon.scrape();
    assert_eq!(s.value(FLOW_MAP_CAPACITY, &[]), 1_048_576.0);
    assert_eq!(s.value(FLOW_MAP_EVICTIONS, &[]), 0.0);
    daemon.terminate();
}

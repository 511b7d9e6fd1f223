//! The flow-map sweep on the real kernel map: it removes exactly the closed connections
//! past the grace period (with BPF_MAP_DELETE_BATCH, several lookup batches' worth),
//! keeps open and recently closed ones, and counts its own cost
//! (keepalive_daemon_flow_map_sweep*_total); and the batch delete itself counts exactly
//! when some keys are gone already (the kernel stops at such a key with ENOENT).

use std::time::{Duration, Instant};

use keepalive_common::flow::{FlowKey, FlowState, flow_end};
use keepalive_daemon::exporter::flow_map::{self, CLOSED_GRACE_NS};
use keepalive_tests::flow_fill::{DaemonFlowMap, synthetic};
use keepalive_tests::names::{
    FLOW_MAP_ENTRIES, FLOW_MAP_SWEEP_CPU_SECONDS, FLOW_MAP_SWEEP_ENTRIES, FLOW_MAP_SWEEPS,
    FLOWS_SWEPT,
};
use keepalive_tests::scenarios::Setup;
use keepalive_tests::{Daemon, Samples, require_root};

/// Flows written: more than two lookup batches (flow_map::BATCH_ENTRIES), so the sweep
/// deletes in several batches.
const FLOWS: u32 = 10_000;
/// Every fourth flow is closed long ago (stale), every fourth + 1 closed just now.
const STALE: u64 = (FLOWS / 4) as u64;
const KEPT: u64 = FLOWS as u64 - STALE;
const SWEEP: &str = "1s";
/// Bound on the wait for one sweep to end (an interval plus a walk of milliseconds).
const SWEEP_WAIT: Duration = Duration::from_secs(10);

/// Flow `i` of the test: open, closed long ago, or closed at `now_ns`.
fn flow(i: u32, now_ns: u64) -> (FlowKey, FlowState) {
    let (key, mut state) = synthetic(i, 1 << 14);
    match i % 4 {
        0 => {
            state.end = flow_end::CLOSED;
            state.last_seen_ns = 1;
        }
        1 => {
            state.end = flow_end::PEER_RESET;
            state.last_seen_ns = now_ns;
        }
        _ => {}
    }
    (key, state)
}

/// The first scrape whose sweep count is above `after`'s (bounded by [`SWEEP_WAIT`]).
fn next_sweep(daemon: &Daemon, after: &Samples) -> Samples {
    let deadline = Instant::now() + SWEEP_WAIT;
    loop {
        let s = daemon.scrape();
        if s.value(FLOW_MAP_SWEEPS, &[]) > after.value(FLOW_MAP_SWEEPS, &[]) {
            return s;
        }
        assert!(
            Instant::now() < deadline,
            "no sweep within {SWEEP_WAIT:?}; daemon stderr:\n{}",
            daemon.stderr()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn delta(a: &Samples, b: &Samples, name: &str) -> f64 {
    b.value(name, &[]) - a.value(name, &[])
}

#[test]
fn sweep_removes_exactly_the_stale_flows_and_counts_its_cost() {
    require_root();
    let now = flow_map::monotonic_ns();
    assert!(
        now > CLOSED_GRACE_NS + 1,
        "the host booted less than {CLOSED_GRACE_NS} ns ago: flows last seen 1 ns after boot \
         are not stale yet; run the test later"
    );
    let setup = Setup::new("sweep");
    let daemon = Daemon::spawn_with(
        &setup.a,
        &[&setup.veth.a_if],
        &["--flows.sweep-interval", SWEEP],
    );
    let ctx = || format!("daemon stderr:\n{}", daemon.stderr());
    let map = DaemonFlowMap::open(daemon.pid());
    let before = daemon.scrape();
    map.write(0..FLOWS, |i| flow(i, now));
    let written = daemon.scrape();
    // The second sweep to end after the write started after it: between them they
    // saw every stale flow; the third sees the map as the sweeps left it.
    let t1 = next_sweep(&daemon, &written);
    let t2 = next_sweep(&daemon, &t1);
    let t3 = next_sweep(&daemon, &t2);
    eprintln!(
        "flow_sweep: removed {}, walked {} in {} sweeps, {:.6} s CPU",
        delta(&before, &t3, FLOWS_SWEPT),
        delta(&before, &t3, FLOW_MAP_SWEEP_ENTRIES),
        delta(&before, &t3, FLOW_MAP_SWEEPS),
        delta(&before, &t3, FLOW_MAP_SWEEP_CPU_SECONDS),
    );
    assert_eq!(delta(&before, &t2, FLOWS_SWEPT), STALE as f64, "{}", ctx());
    assert_eq!(t2.value(FLOW_MAP_ENTRIES, &[]), KEPT as f64, "{}", ctx());
    assert_eq!(map.count(), KEPT, "entries left in the map; {}", ctx());
    // The third sweep: only what was kept, nothing removed, its CPU counted.
    let sweeps = delta(&t2, &t3, FLOW_MAP_SWEEPS);
    assert_eq!(
        delta(&t2, &t3, FLOW_MAP_SWEEP_ENTRIES),
        KEPT as f64 * sweeps,
        "entries walked by {sweeps} sweeps; {}",
        ctx()
    );
    assert_eq!(delta(&t2, &t3, FLOWS_SWEPT), 0.0, "{}", ctx());
    assert!(
        delta(&t2, &t3, FLOW_MAP_SWEEP_CPU_SECONDS) > 0.0,
        "a sweep of {KEPT} entries used no CPU; {}",
        ctx()
    );
    daemon.terminate();
}

#[test]
fn batch_delete_of_flow_keys_skips_keys_already_gone() {
    require_root();
    let setup = Setup::new("sweepdel");
    // An hour between sweeps: only the test deletes (the open flows are never stale).
    let daemon = Daemon::spawn_with(
        &setup.a,
        &[&setup.veth.a_if],
        &["--flows.sweep-interval", "1h"],
    );
    let map = DaemonFlowMap::open(daemon.pid());
    const PRESENT: u32 = 100;
    map.write(0..PRESENT, |i| synthetic(i, 1 << 14));
    assert_eq!(map.count(), u64::from(PRESENT));
    // Keys 0..40 present, 1000.. never written: missing first, in runs, and last.
    let key = |i: u32| synthetic(i, 1 << 14).0;
    let mut keys = vec![key(1000)];
    for i in 0..40 {
        keys.push(key(i));
        if i % 7 == 0 {
            keys.extend([key(2000 + i), key(3000 + i)]);
        }
    }
    keys.push(key(4000));
    assert_eq!(
        map.delete(&keys),
        40,
        "keys removed of a list with 40 present"
    );
    assert_eq!(map.count(), u64::from(PRESENT - 40));
    assert_eq!(map.delete(&keys), 0, "the same keys again: all gone");
    let rest: Vec<FlowKey> = (40..PRESENT).map(key).collect();
    assert_eq!(map.delete(&rest), u64::from(PRESENT - 40));
    assert_eq!(map.count(), 0);
    daemon.terminate();
}

//! Scale of real traffic: 1,000 concurrent keepalive connections between the
//! namespaces (500 IPv4, 500 IPv6), fast keepalive on both ends for a
//! bounded time, and the daemon's counters equal to the kernels' exactly.
//!
//! Oracles (see `keepalive_tests::scale`): TcpExtTCPKeepAlive of each
//! namespace for the probes; for the answers, the segments every socket sent
//! (TCP_INFO) minus the probes its kernel sent, since keepalive is the only
//! traffic in the window. The premises are checked first: nothing lost on
//! the veth, B's namespace counters agree with its sockets', no answer
//! suppressed by tcp_invalid_ratelimit, every probe answered exactly once.
//! Counters are compared after keepalive is off everywhere and a settle
//! wait, so timing never affects exactness.
//!
//! `KAT_SCALE_CAPTURE=1` adds a tshark capture on B's end and compares the
//! per-family wire counts too (a verification of the oracles): probes by
//! tshark, answers by our matcher (`keepalive_tests::answers`), which must
//! agree with tshark's keep_alive_ack here since the probes never cross. Verified so
//! on Linux 6.18 (HZ=250, 2 CPUs), also with a CPU hog running: tshark saw
//! exactly the nstat probes (e.g. A 4900, B 4400), exactly one keep-alive
//! ACK per probe, and no other segment in the window. The daemon runs with
//! its default flow map (65536 entries).

use std::thread;
use std::time::Instant;

use keepalive_tests::expect::{
    KernelProbes, assert_no_answer_rate_limited, assert_only_keepalive_counted,
};
use keepalive_tests::names::{
    FLOW_MAP_CAPACITY, FLOW_MAP_ENTRIES, KERNEL_ERRORS, MAP_READ_ERRORS, PROBE_ACKS, PROBES,
};
use keepalive_tests::scale::{
    self, CAPTURE_ENV, FLOW_MAP_POLL, FLOW_MAP_REFRESH, FLOW_MAP_REFRESH_FLAG, FLOW_MAP_WAIT,
    ScaleOracle, ScaleRun,
};
use keepalive_tests::scenarios::{Setup, Side, WireCounts};
use keepalive_tests::timer_probes::assert_timer_probes;
use keepalive_tests::{Daemon, Family, Samples, require_root};

const V4: usize = 500;
const V6: usize = 500;

#[test]
fn thousand_connections_counted_exactly() {
    require_root();
    let t0 = Instant::now();
    let n = V4 + V6;
    // Two sockets per connection, plus listeners, pipes, files.
    scale::ensure_nofile_limit(2 * n as u64 + 256);
    let capture = std::env::var(CAPTURE_ENV).is_ok_and(|v| !v.is_empty() && v != "0");

    let setup = Setup::new("scale");
    let daemon = Daemon::spawn_with(
        &setup.a,
        &[&setup.veth.a_if],
        &["--flows.sweep-interval", FLOW_MAP_REFRESH_FLAG],
    );
    let ScaleRun {
        observed,
        conns,
        all_open_at,
    } = scale::keepalive_at_scale(&setup, V4, V6, capture, || daemon.scrape());
    let (o, before, after) = (&observed.oracle, &observed.before, &observed.after);
    let ctx = || format!("oracle: {o:#?}\ndaemon stderr:\n{}", daemon.stderr());
    assert_eq!(o.connections, n);

    // The oracles' premises, then the daemon against the oracles.
    check_premises(o, &ctx);
    if let (Some(wp), Some(wa)) = (&o.wire_probes, &o.wire_acks) {
        check_capture_premises(o, wp, wa, &ctx);
    }
    check_daemon_totals(o, before, after, &ctx);
    check_daemon_per_family(o, before, after, &ctx);
    check_nothing_else_counted(before, after, &ctx);
    let flow_map = check_flow_map_held_every_connection(&daemon, after, n, all_open_at, &ctx);

    report(o, flow_map, t0);
    drop(conns);
    daemon.terminate();
    eprintln!("scale: done in {:?}", t0.elapsed());
}

/// What the harness must show before the daemon is judged: no connection lost or
/// dropped, probes on both sides, no answer rate-limited, nothing lost on the veth,
/// B's namespace counters equal to its sockets', every probe answered exactly once.
fn check_premises(o: &ScaleOracle, ctx: &dyn Fn() -> String) {
    assert_eq!(o.listen_drops_b, 0, "listen queue overflowed; {}", ctx());
    assert_eq!(
        o.segments.not_established,
        0,
        "sockets no longer ESTABLISHED; {}",
        ctx()
    );
    assert!(
        o.kernel_probes_a > 0 && o.kernel_probes_b > 0,
        "no probes at all; {}",
        ctx()
    );
    assert_no_answer_rate_limited((o.answers_skipped_a, o.answers_skipped_b), ctx);
    for family in Family::ALL {
        for (from, to) in [(Side::A, Side::B), (Side::B, Side::A)] {
            assert_eq!(
                o.segments.received.get(to, family),
                o.segments.sent.get(from, family),
                "harness: {family} segments lost between {from:?} and {to:?}; {}",
                ctx()
            );
        }
    }
    assert_eq!(
        (o.ns_out_segs_b, o.ns_in_segs_b),
        (
            o.segments.sent.from(Side::B),
            o.segments.received.from(Side::B)
        ),
        "harness: B's TcpOutSegs/TcpInSegs disagree with its sockets' TCP_INFO; {}",
        ctx()
    );
    assert_eq!(
        o.answers_from_b(),
        o.kernel_probes_a,
        "harness: every probe of A must be answered exactly once by B; {}",
        ctx()
    );
    assert_eq!(
        o.answers_from_a(),
        o.kernel_probes_b,
        "harness: every probe of B must be answered exactly once by A; {}",
        ctx()
    );
}

/// With the capture (`KAT_SCALE_CAPTURE=1`): tshark's probes equal nstat's, its
/// answers the sockets' segments minus probes, the matcher agrees with tshark, and
/// every segment in the window was a probe or an answer.
fn check_capture_premises(
    o: &ScaleOracle,
    wp: &WireCounts,
    wa: &WireCounts,
    ctx: &dyn Fn() -> String,
) {
    assert_eq!(
        (wp.from(Side::A), wp.from(Side::B)),
        (o.kernel_probes_a, o.kernel_probes_b),
        "harness: tshark keep_alive vs nstat; {}",
        ctx()
    );
    assert_eq!(
        (wa.from(Side::B), wa.from(Side::A)),
        (o.answers_from_b(), o.answers_from_a()),
        "harness: tshark keep_alive_ack vs TCP_INFO segments minus probes; {}",
        ctx()
    );
    let m = o.answers.as_ref().expect("matcher runs with the capture");
    for family in Family::ALL {
        for (prober, answerer) in [(Side::A, Side::B), (Side::B, Side::A)] {
            let t = m.get(prober, family);
            assert_eq!(
                (t.probes, t.answered),
                (wp.get(prober, family), wa.get(answerer, family)),
                "harness: {family} probes of {prober:?} and their answers, matcher vs \
                 tshark (staggered keepalive: probes do not cross); {}\n{}",
                ctx(),
                m.describe_unanswered(3)
            );
            assert_eq!(
                (t.reset, t.crossed, t.one_byte, t.zero_window),
                (0, 0, 0, 0),
                "harness: {family} probes of {prober:?}; {}",
                ctx()
            );
        }
    }
    for family in Family::ALL {
        for side in [Side::A, Side::B] {
            assert_eq!(
                wp.get(side, family) + wa.get(side, family),
                o.segments.sent.get(side, family),
                "harness: {family} segments of {side:?} are not all probes and answers; {}",
                ctx()
            );
        }
    }
}

/// Probes sent/received against nstat, the timer's count against A's kernel, ACKs to
/// probes sent/received against the other side's segments minus its probes.
fn check_daemon_totals(
    o: &ScaleOracle,
    before: &Samples,
    after: &Samples,
    ctx: &dyn Fn() -> String,
) {
    let d = |name: &str, filters: &[(&str, &str)]| after.delta(before, name, filters);
    o.assert_probes_equal_nstat(before, after, ctx);
    assert_timer_probes(before, after, o.kernel_probes_a, ctx);
    assert_eq!(
        d(PROBE_ACKS, &[("direction", "sent")]),
        o.answers_from_b(),
        "ACKs to probes sent vs B's segments minus B's probes; {}",
        ctx()
    );
    assert_eq!(
        d(PROBE_ACKS, &[("direction", "received")]),
        o.answers_from_a(),
        "ACKs to probes received vs A's segments minus A's probes; {}",
        ctx()
    );
}

/// Per family: some probes each way, each side's segments are exactly its probes and
/// its answers as the daemon counted them, and (with the capture) the counts equal
/// tshark's probes and the matcher's answers.
fn check_daemon_per_family(
    o: &ScaleOracle,
    before: &Samples,
    after: &Samples,
    ctx: &dyn Fn() -> String,
) {
    let d = |name: &str, filters: &[(&str, &str)]| after.delta(before, name, filters);
    for family in Family::ALL {
        let f = family.label();
        let probes_sent = d(PROBES, &[("direction", "sent"), ("family", f)]);
        let probes_received = d(PROBES, &[("direction", "received"), ("family", f)]);
        let acks_sent = d(PROBE_ACKS, &[("direction", "sent"), ("family", f)]);
        let acks_received = d(PROBE_ACKS, &[("direction", "received"), ("family", f)]);
        assert!(
            probes_sent > 0 && probes_received > 0,
            "no {f} probes; {}",
            ctx()
        );
        // What each side sent on its f sockets: its probes and its answers to the
        // other's, as the daemon on A counted them.
        for (side, probes, answers, counted) in [
            (
                Side::A,
                probes_sent,
                acks_received,
                "probes sent + ACKs to probes received",
            ),
            (
                Side::B,
                probes_received,
                acks_sent,
                "probes received + ACKs to probes sent",
            ),
        ] {
            assert_eq!(
                probes + answers,
                o.segments.sent.get(side, family),
                "{f}: {counted} ({probes} + {answers}) vs {side:?}'s segments; {}",
                ctx()
            );
        }
        if let (Some(wp), Some(m)) = (&o.wire_probes, &o.answers) {
            assert_eq!(
                (probes_sent, probes_received, acks_sent, acks_received),
                (
                    wp.get(Side::A, family),
                    wp.get(Side::B, family),
                    m.get(Side::A, family).answered,
                    m.get(Side::B, family).answered
                ),
                "{f}: probes sent/received vs tshark, ACKs sent/received vs the matcher; {}",
                ctx()
            );
        }
    }
}

/// Nothing else was seen: no 1-byte probes (Linux sends none), no zero-window probes,
/// no resets; and the kernel programs reported no error.
fn check_nothing_else_counted(before: &Samples, after: &Samples, ctx: &dyn Fn() -> String) {
    assert_only_keepalive_counted(before, after, ctx);
    let errors: Vec<(String, f64)> = after
        .matching(KERNEL_ERRORS, &[])
        .map(|s| (format!("{:?}", s.labels), s.value))
        .collect();
    assert!(!errors.is_empty(), "no {KERNEL_ERRORS} series; {}", ctx());
    assert!(
        errors.iter().all(|(_, v)| *v == 0.0),
        "kernel errors: {errors:?}; {}",
        ctx()
    );
}

/// The flow map held every connection. Its gauge is refreshed every
/// FLOW_MAP_REFRESH; wait (bounded) for a refresh after all were open. Returns the
/// (entries, capacity) seen.
fn check_flow_map_held_every_connection(
    daemon: &Daemon,
    after: &Samples,
    n: usize,
    all_open_at: Instant,
    ctx: &dyn Fn() -> String,
) -> (f64, f64) {
    let capacity = after.value(FLOW_MAP_CAPACITY, &[]);
    assert!(
        capacity >= n as f64,
        "flow map capacity {capacity} < {n} connections; {}",
        ctx()
    );
    loop {
        let s = daemon.scrape();
        let entries = s.value(FLOW_MAP_ENTRIES, &[]);
        assert!(
            entries <= n as f64,
            "flow map holds {entries} entries for {n} connections; {}",
            ctx()
        );
        if entries == n as f64 {
            assert_eq!(
                s.value(MAP_READ_ERRORS, &[]),
                0.0,
                "flow map read errors; {}",
                ctx()
            );
            for (labels, v) in s.matching(KERNEL_ERRORS, &[]).map(|s| (&s.labels, s.value)) {
                assert_eq!(v, 0.0, "kernel errors {labels:?}; {}", ctx());
            }
            return (entries, capacity);
        }
        assert!(
            all_open_at.elapsed() < FLOW_MAP_WAIT,
            "flow map entries still {entries} (not {n}) {FLOW_MAP_WAIT:?} after all \
             connections were open (refresh every {FLOW_MAP_REFRESH:?}); {}",
            ctx()
        );
        thread::sleep(FLOW_MAP_POLL);
    }
}

/// One line on stderr with what the run measured, for the CI log and docs.
fn report(o: &ScaleOracle, (entries, capacity): (f64, f64), t0: Instant) {
    let per_family = |side: Side| {
        Family::ALL
            .map(|f| format!("{f} {}", o.segments.sent.get(side, f)))
            .join(", ")
    };
    eprintln!(
        "scale: {} connections ({V4} IPv4 + {V6} IPv6) open and primed in {:?}; \
         keepalive for {:?}; probes: A sent {}, B sent {}; answers: B {}, A {}; \
         segments A ({}), B ({}); tshark: {}; flow map {entries} of {capacity}; \
         {:?} so far",
        o.connections,
        o.connect_time,
        o.probe_phase,
        o.kernel_probes_a,
        o.kernel_probes_b,
        o.answers_from_b(),
        o.answers_from_a(),
        per_family(Side::A),
        per_family(Side::B),
        match (&o.wire_probes, &o.wire_acks) {
            (Some(p), Some(a)) => format!("probes {:?}, acks {:?}", p.0, a.0),
            _ => "not captured".to_owned(),
        },
        t0.elapsed(),
    );
}

//! Both ends probing at once, the common case between two Linux hosts with
//! equal keepalive settings: 50 IPv4 + 50 IPv6 connections whose ends switch
//! keepalive on together (probes cross every round), and as many whose B ends
//! start 1-5 ms later. The daemon runs on A and must count every probe and
//! every answer exactly.
//!
//! Oracles (`keepalive_tests::both_ends`): TcpExtTCPKeepAlive of each
//! namespace for the probes; for the answers, the matcher of
//! `keepalive_tests::answers` on a capture of B's end, itself checked against
//! the sockets' TCP_INFO segment counters. tshark's keep_alive_ack cannot be
//! used here: it misses the answers to crossed probes.

use std::time::Instant;

use keepalive_tests::answers::assert_daemon_matches;
use keepalive_tests::both_ends::{self, BothEndsOracle, Groups};
use keepalive_tests::expect::{
    assert_answered_once_and_crossed, assert_matcher_probes_equal_nstat,
    assert_no_answer_rate_limited,
};
use keepalive_tests::names::PROBE_ACKS;
use keepalive_tests::scale::ensure_nofile_limit;
use keepalive_tests::scenarios::{Setup, Side};
use keepalive_tests::{Daemon, Family, Samples, require_root};

const GROUPS: Groups = Groups {
    lockstep_v4: 50,
    lockstep_v6: 50,
    offset_v4: 50,
    offset_v6: 50,
};

#[test]
fn both_ends_probe_counted_exactly() {
    require_root();
    let t0 = Instant::now();
    ensure_nofile_limit(2 * GROUPS.total() as u64 + 256);
    let setup = Setup::new("both");
    let daemon = Daemon::spawn(&setup.a, &[&setup.veth.a_if]);
    let (observed, conns) = both_ends::both_ends_probing(&setup, GROUPS, || daemon.scrape());
    let (o, before, after) = (&observed.oracle, &observed.before, &observed.after);
    let ctx = || {
        format!(
            "oracle: {o:#?}\nmatcher: {}\n{}\ndaemon stderr:\n{}",
            o.answers.summary(),
            o.answers.describe_unanswered(3),
            daemon.stderr()
        )
    };
    check_premises(o, &ctx);
    check_daemon(o, before, after, &ctx);

    let m = &o.answers;
    eprintln!(
        "both_ends: {} connections; keepalive for {:?}; nstat probes A {} B {}; matcher: {}; \
         tshark keep_alive_ack by answerer: {:?}; daemon probe ACKs sent {} received {}; \
         {:?} in all",
        GROUPS.total(),
        o.probe_phase,
        o.kernel_probes_a,
        o.kernel_probes_b,
        m.summary(),
        o.tshark_acks.0,
        after.delta(before, PROBE_ACKS, &[("direction", "sent")]),
        after.delta(before, PROBE_ACKS, &[("direction", "received")]),
        t0.elapsed()
    );
    drop(conns);
    daemon.terminate();
}

/// The oracles agree with each other and the scenario did what it is for.
fn check_premises(o: &BothEndsOracle, ctx: &dyn Fn() -> String) {
    let m = &o.answers;
    assert_eq!(
        o.segments.not_established,
        0,
        "sockets no longer ESTABLISHED; {}",
        ctx()
    );
    assert_no_answer_rate_limited((o.answers_skipped_a, o.answers_skipped_b), ctx);
    assert_matcher_probes_equal_nstat(m, o, ctx);
    for family in Family::ALL {
        for (prober, answerer) in [(Side::A, Side::B), (Side::B, Side::A)] {
            // Nothing lost on the veth, nothing rate-limited, and the premise of this
            // test: probes really crossed.
            assert_answered_once_and_crossed(m, family, prober, ctx);
            let t = m.get(prober, family);
            // What the answerer sent in the window: its own probes and its answers.
            assert_eq!(
                m.get(answerer, family).probes + t.answered,
                o.segments.sent.get(answerer, family),
                "harness: {family} segments of {answerer:?} (TCP_INFO) vs its probes plus its \
                 answers (matcher); {}",
                ctx()
            );
        }
    }
}

/// The daemon on A against the oracles, exactly, per family.
fn check_daemon(o: &BothEndsOracle, before: &Samples, after: &Samples, ctx: &dyn Fn() -> String) {
    let nstat = (o.kernel_probes_a, o.kernel_probes_b);
    assert_daemon_matches(&o.answers, nstat, before, after, ctx);
}

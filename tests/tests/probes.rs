//! Keepalive probes and their answers, both families, both directions.
//!
//! A (the daemon's side) and B both enable fast keepalive on 3 IPv4 and 3
//! IPv6 connections, so A sends probes (and receives their ACKs) and
//! receives probes (and sends their ACKs). Oracles: the kernels' own
//! TcpExtTCPKeepAlive counters for probes, and a capture on B's end: probes
//! and answers matched from the TCP rules (`keepalive_tests::answers`),
//! cross-checked with tshark's keep_alive / keep_alive_ack analysis, which is
//! right here because keepalive is staggered and probes never cross.

use keepalive_tests::expect::KernelProbes;
use keepalive_tests::names::{PROBE_ACKS, PROBES};
use keepalive_tests::scenarios::{self, ProbeOracle, Setup, Side};
use keepalive_tests::timer_probes::assert_timer_probes;
use keepalive_tests::{Daemon, Family, Samples, require_root};

#[test]
fn probes_and_acks_match_kernel_counters_and_capture() {
    require_root();
    let setup = Setup::new("probes");
    let daemon = Daemon::spawn(&setup.a, &[&setup.veth.a_if]);

    let observed = scenarios::keepalive_probes(&setup, 3, 3, || daemon.scrape());
    let (o, before, after) = (&observed.oracle, &observed.before, &observed.after);
    let ctx = || format!("oracle: {o:#?}\ndaemon stderr:\n{}", daemon.stderr());

    // The oracles must agree with each other, or the comparison means nothing.
    o.assert_consistent(&ctx);
    check_probes(o, before, after, &ctx);
    check_probe_acks(o, before, after, &ctx);

    daemon.terminate();
}

/// Probes sent and received against nstat, per family against the capture; no 1-byte
/// probe; the timer's count against A's kernel.
fn check_probes(o: &ProbeOracle, before: &Samples, after: &Samples, ctx: &dyn Fn() -> String) {
    let d = |name: &str, filters: &[(&str, &str)]| after.delta(before, name, filters);
    o.assert_probes_equal_nstat(before, after, ctx);
    for family in Family::ALL {
        let f = family.label();
        let sent_f = d(PROBES, &[("direction", "sent"), ("family", f)]);
        let received_f = d(PROBES, &[("direction", "received"), ("family", f)]);
        assert!(sent_f > 0, "no {f} probe sent; {}", ctx());
        assert_eq!(
            sent_f,
            o.wire_probes.get(Side::A, family),
            "{f} probes sent; {}",
            ctx()
        );
        assert_eq!(
            received_f,
            o.wire_probes.get(Side::B, family),
            "{f} probes received; {}",
            ctx()
        );
    }
    // Linux keepalive probes carry no payload (seq = snd_una - 1, length 0).
    assert_eq!(
        d(PROBES, &[("payload_bytes", "1")]),
        0,
        "1-byte probes; {}",
        ctx()
    );

    assert_timer_probes(before, after, o.kernel_probes_a, ctx);
}

/// ACKs to probes sent and received against the matcher's answers to B's and A's
/// probes (by B and A), in all and per family.
fn check_probe_acks(o: &ProbeOracle, before: &Samples, after: &Samples, ctx: &dyn Fn() -> String) {
    let d = |name: &str, filters: &[(&str, &str)]| after.delta(before, name, filters);
    // Answers to A's probes (sent by B) and to B's (sent by A), by the matcher.
    let answered = o.answers.counts(|t| t.answered);
    assert_eq!(
        d(PROBE_ACKS, &[("direction", "sent")]),
        answered.from(Side::A),
        "ACKs to probes sent vs the matcher's answers to A's probes; {}",
        ctx()
    );
    assert_eq!(
        d(PROBE_ACKS, &[("direction", "received")]),
        answered.from(Side::B),
        "ACKs to probes received vs the matcher's answers to B's probes; {}",
        ctx()
    );
    for family in Family::ALL {
        let f = family.label();
        assert_eq!(
            d(PROBE_ACKS, &[("direction", "sent"), ("family", f)]),
            answered.get(Side::A, family),
            "{f} ACKs to probes sent vs the matcher; {}",
            ctx()
        );
        assert_eq!(
            d(PROBE_ACKS, &[("direction", "received"), ("family", f)]),
            answered.get(Side::B, family),
            "{f} ACKs to probes received vs the matcher; {}",
            ctx()
        );
    }
}

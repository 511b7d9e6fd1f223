//! The daemon's wire counters against the matcher and nstat, for scenarios of pure
//! keepalive traffic (no 1-byte probe, no zero window, no reset): one assertion
//! sequence shared by the both-ends and third-party tests.

use super::Answers;
use crate::metrics::Samples;
use crate::names::{PROBE_ACKS, PROBES};
use crate::scenarios::Side;
use crate::sockets::Family;

/// Asserts, for the daemon on A between `before` and `after`: probes sent/received
/// equal nstat's TcpExtTCPKeepAlive deltas of A/B (`nstat_probes`) and, per family,
/// the matcher's probes; ACKs to probes sent/received equal the matcher's answers to
/// A's/B's probes, all families in one comparison so that a failure shows them all; no
/// 1-byte probe, zero-window probe or reset. `ctx` adds the evidence to each message.
pub fn assert_daemon_matches(
    m: &Answers,
    nstat_probes: (u64, u64),
    before: &Samples,
    after: &Samples,
    ctx: &dyn Fn() -> String,
) {
    let d = |name: &str, filters: &[(&str, &str)]| after.delta(before, name, filters);
    assert_eq!(
        (
            d(PROBES, &[("direction", "sent")]),
            d(PROBES, &[("direction", "received")])
        ),
        nstat_probes,
        "probes sent/received vs nstat TcpExtTCPKeepAlive in A/B; {}",
        ctx()
    );
    for family in Family::ALL {
        let f = family.label();
        let got = |dir: &str| d(PROBES, &[("direction", dir), ("family", f)]);
        assert_eq!(
            (got("sent"), got("received")),
            (m.get(Side::A, family).probes, m.get(Side::B, family).probes),
            "{f} probes sent/received vs the matcher; {}",
            ctx()
        );
    }
    let counted: Vec<_> = Family::ALL
        .map(|f| {
            let got = |dir: &str| d(PROBE_ACKS, &[("direction", dir), ("family", f.label())]);
            (f, got("sent"), got("received"))
        })
        .into();
    let matcher: Vec<_> = Family::ALL
        .map(|f| (f, m.get(Side::A, f).answered, m.get(Side::B, f).answered))
        .into();
    assert_eq!(
        counted,
        matcher,
        "(family, ACKs to probes sent, ACKs to probes received): daemon (left) vs the \
         matcher's answers to A's and B's probes (right; its summary says how many crossed); {}",
        ctx()
    );
    crate::expect::assert_only_keepalive_counted(before, after, ctx);
}

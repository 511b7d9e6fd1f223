//! Zero-window probes look like keepalive probes on the wire (sequence
//! number one below the unacknowledged data) but must be told apart.
//!
//! Oracle: the kernels' TcpExtTCPWinProbe counters.

use keepalive_tests::names::{PROBE_ACKS, PROBES, TIMER_PROBES, ZERO_WINDOW_PROBES};
use keepalive_tests::scenarios::{self, Setup};
use keepalive_tests::{Daemon, require_root};

#[test]
fn zero_window_probes_are_not_keepalive_probes() {
    require_root();
    let setup = Setup::new("zwin");
    let daemon = Daemon::spawn(&setup.a, &[&setup.veth.a_if]);

    let observed = scenarios::zero_window(&setup, || daemon.scrape());
    let (o, before, after) = (&observed.oracle, &observed.before, &observed.after);
    let d = |name: &str, filters: &[(&str, &str)]| after.delta(before, name, filters);
    let ctx = || format!("oracle: {o:#?}\ndaemon stderr:\n{}", daemon.stderr());

    assert!(
        o.win_probes_a > 0,
        "harness: A's kernel sent no zero-window probe; {}",
        ctx()
    );
    assert_eq!(
        (o.keepalive_a, o.keepalive_b),
        (0, 0),
        "harness: keepalive probes; {}",
        ctx()
    );

    let sent = d(ZERO_WINDOW_PROBES, &[("direction", "sent")]);
    assert!(sent > 0, "no zero-window probe counted; {}", ctx());
    assert_eq!(
        sent,
        o.win_probes_a,
        "zero-window probes sent vs nstat in A; {}",
        ctx()
    );
    assert_eq!(
        d(
            ZERO_WINDOW_PROBES,
            &[("direction", "sent"), ("family", "ipv4")]
        ),
        o.win_probes_a,
        "the only connection is IPv4; {}",
        ctx()
    );
    assert_eq!(
        d(ZERO_WINDOW_PROBES, &[("direction", "received")]),
        o.win_probes_b,
        "zero-window probes received vs nstat in B; {}",
        ctx()
    );

    assert_eq!(
        d(PROBES, &[]),
        0,
        "zero-window probes counted as keepalive; {}",
        ctx()
    );
    assert_eq!(
        d(PROBE_ACKS, &[]),
        0,
        "zero-window ACKs counted as keepalive; {}",
        ctx()
    );
    assert_eq!(
        d(TIMER_PROBES, &[]),
        o.keepalive_a,
        "timer probes vs nstat in A; {}",
        ctx()
    );

    daemon.terminate();
}

//! Keepalive timeouts: the peer silently disappears and A's kernel gives up.
//!
//! Oracle: which connections the application saw die with ETIMEDOUT.

use keepalive_tests::names::RESETS;
use keepalive_tests::scenarios::{self, Setup};
use keepalive_tests::{Daemon, Family, ReadOutcome, require_root};

#[test]
fn keepalive_timeouts_are_counted_per_connection() {
    require_root();
    let setup = Setup::new("timeout");
    let daemon = Daemon::spawn(&setup.a, &[&setup.veth.a_if]);

    let observed = scenarios::keepalive_timeout(&setup, 2, 1, || daemon.scrape());
    let (o, before, after) = (&observed.oracle, &observed.before, &observed.after);
    let d = |name: &str, filters: &[(&str, &str)]| after.delta(before, name, filters);
    let ctx = || format!("oracle: {o:#?}\ndaemon stderr:\n{}", daemon.stderr());

    let timed_out = o.count(None, ReadOutcome::is_etimedout);
    assert_eq!(
        timed_out,
        o.connections(None),
        "not every connection timed out; {}",
        ctx()
    );
    assert_eq!(
        d(RESETS, &[("reason", "timeout")]),
        timed_out,
        "timeouts; {}",
        ctx()
    );
    for family in Family::ALL {
        let f = family.label();
        assert_eq!(
            d(RESETS, &[("reason", "timeout"), ("family", f)]),
            o.count(Some(family), ReadOutcome::is_etimedout),
            "{f} timeouts; {}",
            ctx()
        );
    }
    // B never sent anything once unreachable, so nothing reset A's connections.
    assert_eq!(
        d(RESETS, &[("reason", "peer_reset")]),
        0,
        "peer resets; {}",
        ctx()
    );

    // The connection view infers the same from the wire: this host reset each of them
    // while its own probe was unanswered.
    let view = daemon.get("/connections?limit=10000");
    assert_eq!(
        view.matches("\"ended\": \"timeout\"").count() as u64,
        timed_out,
        "connections marked timeout in /connections:\n{view}"
    );

    daemon.terminate();
}

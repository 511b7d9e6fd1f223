//! Keepalive timeouts: the peer silently disappears and A's kernel gives up.
//!
//! Oracle: which connections the application saw die with ETIMEDOUT.

use keepalive_tests::expect::assert_resets_match_sockets;
use keepalive_tests::names::RESETS;
use keepalive_tests::scenarios::{self, Setup};
use keepalive_tests::{Daemon, ReadOutcome, require_root};

#[test]
fn keepalive_timeouts_are_counted_per_connection() {
    require_root();
    let setup = Setup::new("timeout");
    let daemon = Daemon::spawn(&setup.a, &[&setup.veth.a_if]);

    let observed = scenarios::keepalive_timeout(&setup, 2, 1, || daemon.scrape());
    let (o, before, after) = (&observed.oracle, &observed.before, &observed.after);
    let d = |name: &str, filters: &[(&str, &str)]| after.delta(before, name, filters);
    let ctx = || format!("oracle: {o:#?}\ndaemon stderr:\n{}", daemon.stderr());

    // Every connection timed out, and the daemon counted exactly those, per family.
    let timed_out =
        assert_resets_match_sockets(o, "timeout", ReadOutcome::is_etimedout, before, after, &ctx);
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

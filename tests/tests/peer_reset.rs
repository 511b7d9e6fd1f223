//! Peer resets: B forgets the connections without telling A (its RSTs are
//! dropped), so A's next keepalive probe is answered by a RST.
//!
//! Oracle: which connections the application saw die with ECONNRESET.

use keepalive_tests::expect::assert_resets_match_sockets;
use keepalive_tests::names::RESETS;
use keepalive_tests::scenarios::{self, Setup};
use keepalive_tests::{Daemon, ReadOutcome, require_root};

#[test]
fn probes_answered_by_rst_are_counted_as_peer_resets() {
    require_root();
    let setup = Setup::new("reset");
    let daemon = Daemon::spawn(&setup.a, &[&setup.veth.a_if]);

    let observed = scenarios::peer_reset(&setup, 2, 1, || daemon.scrape());
    let (o, before, after) = (&observed.oracle, &observed.before, &observed.after);
    let d = |name: &str, filters: &[(&str, &str)]| after.delta(before, name, filters);
    let ctx = || format!("oracle: {o:#?}\ndaemon stderr:\n{}", daemon.stderr());

    assert_eq!(
        o.dropped_by_rule,
        o.connections(None),
        "harness: B's abortive closes must each have produced one dropped RST; {}",
        ctx()
    );
    // Every connection was reset, and the daemon counted exactly those, per family.
    assert_resets_match_sockets(
        o,
        "peer_reset",
        ReadOutcome::is_econnreset,
        before,
        after,
        &ctx,
    );
    assert_eq!(
        d(RESETS, &[("reason", "timeout")]),
        0,
        "timeouts; {}",
        ctx()
    );
    // A only received RSTs; it sent none.
    assert_eq!(
        d(RESETS, &[("reason", "local_reset")]),
        0,
        "local resets; {}",
        ctx()
    );

    daemon.terminate();
}

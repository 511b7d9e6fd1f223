//! Self-test of the harness and of its oracles, without the daemon: the
//! scenarios the real tests use must produce consistent kernel counters,
//! socket errors and capture analyses on their own.
//!
//! It tests the harness, not the product; CI runs it with the other root tests. Alone:
//! `cargo test -p keepalive-tests --test harness_selftest -- --nocapture`

use keepalive_tests::scenarios::{self, Setup, Side};
use keepalive_tests::{Family, require_root};

#[test]

fn probe_oracles_agree() {
    require_root();
    let setup = Setup::new("st-probes");
    let o = scenarios::keepalive_probes(&setup, 3, 3, || ()).oracle;
    eprintln!(
        "nstat TcpExtTCPKeepAlive: A +{} B +{}; tshark keep_alive {:?}; keep_alive_ack {:?}",
        o.kernel_probes_a, o.kernel_probes_b, o.wire_probes, o.wire_acks
    );
    eprintln!("matcher: {}", o.answers.summary());
    let ctx = || format!("{o:#?}");
    o.assert_consistent(&ctx);
    for side in [Side::A, Side::B] {
        for family in Family::ALL {
            assert!(
                o.wire_probes.get(side, family) > 0,
                "{side:?} {family}: {}",
                ctx()
            );
            // Every probe is answered by exactly one ACK on this lossless link.
            assert_eq!(
                o.wire_acks.get(side, family),
                o.wire_probes
                    .get(if side == Side::A { Side::B } else { Side::A }, family),
                "{}",
                ctx()
            );
        }
    }
}

#[test]

fn timeout_oracle() {
    require_root();
    let setup = Setup::new("st-timeout");
    let o = scenarios::keepalive_timeout(&setup, 2, 1, || ()).oracle;
    eprintln!(
        "timeout outcomes: {:?}; dropped by rule: {}",
        o.outcomes, o.dropped_by_rule
    );
    assert_eq!(o.count(None, |r| r.is_etimedout()), 3, "{o:?}");
    assert_eq!(
        o.count(Some(Family::Ipv4), |r| r.is_etimedout()),
        2,
        "{o:?}"
    );
    assert_eq!(
        o.count(Some(Family::Ipv6), |r| r.is_etimedout()),
        1,
        "{o:?}"
    );
    assert!(o.dropped_by_rule >= 3, "{o:?}");
}

#[test]

fn peer_reset_oracle() {
    require_root();
    let setup = Setup::new("st-reset");
    let o = scenarios::peer_reset(&setup, 2, 1, || ()).oracle;
    eprintln!(
        "peer-reset outcomes: {:?}; RSTs dropped: {}",
        o.outcomes, o.dropped_by_rule
    );
    assert_eq!(o.count(None, |r| r.is_econnreset()), 3, "{o:?}");
    assert_eq!(
        o.count(Some(Family::Ipv6), |r| r.is_econnreset()),
        1,
        "{o:?}"
    );
    assert_eq!(o.dropped_by_rule, 3, "{o:?}");
}

#[test]

fn zero_window_oracle() {
    require_root();
    let setup = Setup::new("st-zwin");
    let o = scenarios::zero_window(&setup, || ()).oracle;
    eprintln!("zero window: {o:?}");
    assert!(o.win_probes_a > 0, "{o:?}");
    assert_eq!(
        (o.win_probes_b, o.keepalive_a, o.keepalive_b),
        (0, 0, 0),
        "{o:?}"
    );
}

//! Interfaces that come and go while the daemon runs: started with `--interface` a glob
//! that matches nothing yet, the daemon attaches to a veth created afterwards and counts
//! its keepalive probes exactly (the kernels' TcpExtTCPKeepAlive); when the veth is
//! deleted its series and links go and the daemon stays healthy; a new veth is attached
//! and counted again, all without a restart.

use std::collections::BTreeSet;
use std::thread;
use std::time::Duration;

use keepalive_tests::bpf::{bpftool_links, bpftool_progs, wait_until};
use keepalive_tests::expect::KernelProbes;
use keepalive_tests::names::{INTERFACE_ATTACH_ERRORS, TC_PROGRAMS_ATTACHED, UP};
use keepalive_tests::nstat::KEEPALIVE;
use keepalive_tests::sockets::{enable_keepalive_staggered, exchange_byte};
use keepalive_tests::timing::{PROBE_PHASE, SETTLE};
use keepalive_tests::{Daemon, Netns, VethPair, disable_keepalive, open_connections, require_root};

const WAIT: Duration = Duration::from_secs(10);

/// Live links to our tc programs besides `baseline` (bpftool 7.1 shows TCX links as
/// `type 11` without their interface; integration tests run one at a time).
fn our_tc_links(baseline: &BTreeSet<u32>) -> usize {
    let progs = bpftool_progs();
    bpftool_links()
        .into_iter()
        .filter(|l| !baseline.contains(&l.id))
        .filter(|l| {
            l.prog_id.is_some_and(|id| {
                progs
                    .iter()
                    .any(|p| p.id == id && p.name.starts_with("ka_tc_"))
            })
        })
        .count()
}

fn series_for(daemon: &Daemon, iface: &str) -> usize {
    daemon
        .scrape()
        .matching(TC_PROGRAMS_ATTACHED, &[("interface", iface)])
        .count()
}

/// Keepalive on one IPv4 and one IPv6 connection over the current veth: the daemon's
/// probe counters against nstat in A and B.
fn probes_counted(a: &Netns, b: &Netns, iface: &str, daemon: &Daemon) {
    let (ka_a0, ka_b0) = (a.nstat(KEEPALIVE), b.nstat(KEEPALIVE));
    let before = daemon.scrape();
    let conns = open_connections(a, b, 1, 1);
    exchange_byte(&conns);
    enable_keepalive_staggered(&conns);
    thread::sleep(PROBE_PHASE);
    for c in &conns {
        disable_keepalive(&c.client);
        disable_keepalive(c.server());
    }
    thread::sleep(SETTLE);
    let after = daemon.scrape();
    let (sent, received) = (a.nstat(KEEPALIVE) - ka_a0, b.nstat(KEEPALIVE) - ka_b0);
    drop(conns);
    assert!(sent > 0, "no probes on {iface}");
    (sent, received).assert_probes_equal_nstat(&before, &after, &|| {
        format!("on {iface}; daemon stderr:\n{}", daemon.stderr())
    });
}

#[test]
fn veths_created_and_deleted_while_running_are_followed() {
    require_root();
    let a = Netns::new("churn", "a");
    let b = Netns::new("churn", "b");
    let baseline: BTreeSet<u32> = bpftool_links().into_iter().map(|l| l.id).collect();
    // VethPair names its ends kat<pid><n>a|b.
    let pattern = format!("kat{}*a", std::process::id());
    let daemon = Daemon::spawn(&a, &[&pattern]);
    assert_eq!(
        our_tc_links(&baseline),
        0,
        "attached before any veth existed"
    );

    for round in 0..2 {
        let veth = VethPair::new(&a, &b);
        let iface = veth.a_if.clone();
        assert!(
            wait_until(WAIT, || series_for(&daemon, &iface) == 2),
            "round {round}: {iface} not attached within {WAIT:?}; daemon stderr:\n{}",
            daemon.stderr()
        );
        assert_eq!(
            our_tc_links(&baseline),
            2,
            "round {round}: ingress and egress links"
        );
        probes_counted(&a, &b, &iface, &daemon);
        a.cmd(&["ip", "link", "del", &iface]);
        assert!(
            wait_until(WAIT, || series_for(&daemon, &iface) == 0),
            "round {round}: {iface} deleted but its series stayed; daemon stderr:\n{}",
            daemon.stderr()
        );
        assert!(
            wait_until(WAIT, || our_tc_links(&baseline) == 0),
            "round {round}: links of the deleted {iface} stayed"
        );
        let up = daemon.scrape().value(UP, &[]);
        assert_eq!(
            up, 1.0,
            "round {round}: daemon not healthy after the deletion"
        );
    }
    assert_eq!(daemon.scrape().value(INTERFACE_ATTACH_ERRORS, &[]), 0.0);
    let stderr = daemon.terminate();
    assert!(stderr.contains("forgetting"), "{stderr}");
}

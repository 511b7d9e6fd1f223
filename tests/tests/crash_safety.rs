//! SIGKILL, then a restart, with another tool's clsact qdisc and filters on the same
//! interface. TCX: the kernel drops the killed daemon's TCX links with its descriptors, the
//! restarted daemon attaches exactly once, probes are counted once (the kernels'
//! TcpExtTCPKeepAlive), and the foreign qdisc and filter are never touched, not even by
//! the final SIGTERM. With `--tc.attach-mode netlink` (the path of kernels before 6.6)
//! the killed daemon's clsact filters outlive it; the restarted daemon removes those
//! leftovers by name, attaches exactly once, and leaves the foreign filters alone.

use std::collections::BTreeSet;

use keepalive_tests::bpf::{bpftool_links, bpftool_progs, wait_until};
use keepalive_tests::expect::KernelProbes;
use keepalive_tests::scenarios::{self, Setup};
use keepalive_tests::timing::BPF_RELEASE_TIMEOUT;
use keepalive_tests::{Daemon, Netns, require_root};

/// A u32 match-all filter with a class id: what another tool might leave on clsact
/// (this kernel has no matchall classifier or gact action).
const FOREIGN_FILTER: [&str; 10] = [
    "pref", "49000", "protocol", "all", "u32", "match", "u32", "0", "0", "classid",
];

/// The qdiscs, and the filters that are not ours (ours are the cls_bpf ones: the foreign
/// filters are u32).
fn foreign_state(ns: &Netns, iface: &str) -> (String, String, String) {
    let qdisc = ns.cmd(&["tc", "qdisc", "show", "dev", iface]);
    let not_ours = |dir: &str| {
        ns.cmd(&["tc", "filter", "show", "dev", iface, dir])
            .lines()
            .filter(|l| !l.contains(" bpf "))
            .collect::<Vec<_>>()
            .join("\n")
    };
    (qdisc, not_ours("ingress"), not_ours("egress"))
}

/// Live tc links to our programs (ingress, egress), besides those in `baseline`. This
/// bpftool (7.1) shows TCX links only as `type 11` without their interface, so they are
/// counted machine-wide; integration tests run one at a time. Legacy clsact filters of
/// ours are counted from `tc filter show` on `iface`.
fn ours(ns: &Netns, iface: &str, baseline: &BTreeSet<u32>) -> (usize, usize) {
    let progs = bpftool_progs();
    let name_of = |id: u32| progs.iter().find(|p| p.id == id).map(|p| p.name.clone());
    let links: Vec<String> = bpftool_links()
        .into_iter()
        .filter(|l| !baseline.contains(&l.id))
        .filter_map(|l| name_of(l.prog_id?))
        .collect();
    let filters = |dir: &str| ns.cmd(&["tc", "filter", "show", "dev", iface, dir]);
    let count = |name: &str, dir: &str| {
        // One line per filter names it (as the filter and as its program).
        links.iter().filter(|n| *n == name).count()
            + filters(dir).lines().filter(|l| l.contains(name)).count()
    };
    (
        count("ka_tc_ingress", "ingress"),
        count("ka_tc_egress", "egress"),
    )
}

fn sigkill_then_restart(tag: &str, mode: &str) {
    require_root();
    let setup = Setup::new(tag);
    let flags = ["--tc.attach-mode", mode];
    let iface = setup.veth.a_if.as_str();
    let foreign = add_foreign_filters(&setup.a, iface);
    let baseline: BTreeSet<u32> = bpftool_links().into_iter().map(|l| l.id).collect();
    start_and_kill(&setup.a, iface, mode, &baseline, &foreign);

    let second = Daemon::spawn_with(&setup.a, &[iface], &flags);
    let ctx = || format!("daemon stderr:\n{}", second.stderr());
    if mode == "netlink" {
        assert!(
            second.stderr().contains("removed leftover"),
            "no leftover removal logged; {}",
            ctx()
        );
    }
    assert_eq!(
        ours(&setup.a, iface, &baseline),
        (1, 1),
        "after restart; {}",
        ctx()
    );
    assert_eq!(
        foreign_state(&setup.a, iface),
        foreign,
        "the restarted daemon changed the foreign qdisc or filters; {}",
        ctx()
    );
    let observed = scenarios::keepalive_probes(&setup, 1, 1, || second.scrape());
    let (o, before, after) = (&observed.oracle, &observed.before, &observed.after);
    assert!(o.kernel_probes_a > 0, "no probes; {}", ctx());
    o.assert_probes_sent_equal_nstat(before, after, &|| {
        format!("counted once after the restart; {}", ctx())
    });
    second.terminate();
    assert_eq!(ours(&setup.a, iface, &baseline), (0, 0), "after SIGTERM");
    assert_eq!(
        foreign_state(&setup.a, iface),
        foreign,
        "SIGTERM changed the foreign qdisc or filters"
    );
}

/// Another tool's clsact qdisc and u32 filters on `iface`; returns their state.
fn add_foreign_filters(ns: &Netns, iface: &str) -> (String, String, String) {
    ns.cmd(&["tc", "qdisc", "add", "dev", iface, "clsact"]);
    for dir in ["ingress", "egress"] {
        let mut args = vec!["tc", "filter", "add", "dev", iface, dir];
        args.extend(FOREIGN_FILTER);
        args.push("1:1");
        ns.cmd(&args);
    }
    let foreign = foreign_state(ns, iface);
    assert!(
        foreign.0.contains("clsact") && foreign.1.contains("u32") && foreign.2.contains("u32"),
        "harness: foreign qdisc and filters not in place: {foreign:?}"
    );
    foreign
}

/// A first daemon attaches once and is SIGKILLed: with TCX its links go with it, with
/// netlink its filters stay (the leftovers of the restart); the foreign ones are intact.
fn start_and_kill(
    ns: &Netns,
    iface: &str,
    mode: &str,
    baseline: &BTreeSet<u32>,
    foreign: &(String, String, String),
) {
    let first = Daemon::spawn_with(ns, &[iface], &["--tc.attach-mode", mode]);
    assert_eq!(ours(ns, iface, baseline), (1, 1), "first start");
    // SIGKILL: no chance to detach anything itself.
    let stderr = first.kill();
    if mode == "tcx" {
        assert!(
            wait_until(BPF_RELEASE_TIMEOUT, || ours(ns, iface, baseline) == (0, 0)),
            "after SIGKILL our links stayed: {:?}\n{:?}\nfirst daemon's stderr:\n{stderr}",
            ours(ns, iface, baseline),
            bpftool_links()
        );
    } else {
        // Legacy filters outlive the process: the leftovers the restart must remove.
        assert_eq!(
            ours(ns, iface, baseline),
            (1, 1),
            "netlink filters after SIGKILL (the precondition)"
        );
    }
    assert_eq!(
        &foreign_state(ns, iface),
        foreign,
        "SIGKILL changed the foreign qdisc or filters"
    );
}

#[test]
fn sigkill_restart_with_tcx_attaches_once_and_spares_foreign_filters() {
    sigkill_then_restart("crashtcx", "tcx");
}

#[test]
fn sigkill_restart_with_netlink_removes_only_our_leftovers() {
    sigkill_then_restart("crashnl", "netlink");
}

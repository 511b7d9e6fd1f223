//! After SIGTERM the daemon exits 0 and leaves nothing behind: no tc/tcx
//! attachment on the interface, none of its programs or links in the kernel.

use std::collections::BTreeSet;

use keepalive_tests::bpf::{bpftool_links, bpftool_progs, net_show_prog_ids, wait_until};
use keepalive_tests::scenarios::Setup;
use keepalive_tests::timing::BPF_RELEASE_TIMEOUT;
use keepalive_tests::{Daemon, require_root};

/// Every kernel program name of the daemon starts with this.
const PROG_PREFIX: &str = "ka_";

/// The daemon's programs and links, as found while it runs.
struct Ours {
    progs: BTreeSet<u32>,
    links: BTreeSet<u32>,
    /// What they were found from, for messages.
    ctx: String,
}

#[test]
fn terminate_detaches_everything() {
    require_root();
    let setup = Setup::new("cleanup");
    let iface = setup.veth.a_if.as_str();
    let preexisting: BTreeSet<u32> = bpftool_progs().into_iter().map(|p| p.id).collect();

    let daemon = Daemon::spawn(&setup.a, &[iface]);
    let ours = find_ours(&setup, &daemon, &preexisting);

    let stderr = daemon.terminate();
    let ctx = format!("{}\ndaemon stderr:\n{stderr}", ours.ctx);
    check_released(&ours, &ctx);

    let net_after = setup.a.cmd(&["bpftool", "net", "show"]);
    let leftovers: Vec<&str> = net_after
        .lines()
        .filter(|l| l.contains(iface) || l.contains(PROG_PREFIX))
        .collect();
    assert!(leftovers.is_empty(), "still attached:\n{net_after}\n{ctx}");

    for direction in ["ingress", "egress"] {
        let filters = setup
            .a
            .cmd(&["tc", "filter", "show", "dev", iface, direction]);
        assert!(
            filters.trim().is_empty(),
            "tc {direction} filters left on {iface}:\n{filters}\n{ctx}"
        );
    }
}

/// Which programs and links are this daemon's: loaded after it started (not in
/// `preexisting`), named ka_*, and held by it (directly, through a link it holds, or
/// attached to its interface). Other daemons may run concurrently. Panics unless some
/// are found and one is attached.
fn find_ours(setup: &Setup, daemon: &Daemon, preexisting: &BTreeSet<u32>) -> Ours {
    let iface = setup.veth.a_if.as_str();
    let loaded: Vec<_> = bpftool_progs()
        .into_iter()
        .filter(|p| !preexisting.contains(&p.id) && p.name.starts_with(PROG_PREFIX))
        .collect();
    let held = daemon.bpf_objects();
    let links_during = bpftool_links();
    let net_during = setup.a.cmd(&["bpftool", "-j", "net", "show"]);
    let on_iface = net_show_prog_ids(&net_during, iface);
    let via_links: BTreeSet<u32> = links_during
        .iter()
        .filter(|l| held.link_ids.contains(&l.id))
        .filter_map(|l| l.prog_id)
        .collect();
    let ours: BTreeSet<u32> = loaded
        .iter()
        .map(|p| p.id)
        .filter(|id| held.prog_ids.contains(id) || via_links.contains(id) || on_iface.contains(id))
        .collect();
    let our_links: BTreeSet<u32> = links_during
        .iter()
        .filter(|l| held.link_ids.contains(&l.id) || l.prog_id.is_some_and(|p| ours.contains(&p)))
        .map(|l| l.id)
        .collect();
    let ctx = format!(
        "new {PROG_PREFIX}* programs: {loaded:?}\nheld by the daemon: {held:?}\n\
         links: {links_during:#?}\nbpftool net show:\n{net_during}\nours: {ours:?}, \
         our links: {our_links:?}"
    );
    assert!(!ours.is_empty(), "found no program of the daemon; {ctx}");
    assert!(
        ours.iter()
            .any(|id| on_iface.contains(id) || via_links.contains(id)),
        "none of the daemon's programs is attached (clsact filter or link); {ctx}"
    );
    Ours {
        progs: ours,
        links: our_links,
        ctx,
    }
}

/// None of `ours` is left in the kernel after the daemon exited.
fn check_released(ours: &Ours, ctx: &str) {
    // Part of the release is deferred (workqueues, RCU): poll, bounded.
    let remaining_progs = || -> Vec<u32> {
        let progs = bpftool_progs();
        progs
            .iter()
            .map(|p| p.id)
            .filter(|id| ours.progs.contains(id))
            .collect()
    };
    let remaining_links = || -> Vec<String> {
        let links = bpftool_links();
        links
            .into_iter()
            .filter(|l| {
                ours.links.contains(&l.id) || l.prog_id.is_some_and(|p| ours.progs.contains(&p))
            })
            .map(|l| l.text)
            .collect()
    };
    wait_until(BPF_RELEASE_TIMEOUT, || {
        remaining_progs().is_empty() && remaining_links().is_empty()
    });
    assert_eq!(
        remaining_progs(),
        Vec::<u32>::new(),
        "programs still loaded; {ctx}"
    );
    assert_eq!(
        remaining_links(),
        Vec::<String>::new(),
        "links still present; {ctx}"
    );
}

//! CAP_SYS_ADMIN standing in for CAP_BPF (kernels before 5.8 have no CAP_BPF; some
//! deployments grant CAP_SYS_ADMIN but not CAP_BPF): the daemon runs under setpriv with
//! CAP_SYS_ADMIN, CAP_PERFMON and CAP_NET_ADMIN and without CAP_BPF. Once attached it
//! must keep CAP_SYS_ADMIN (the kernel's bpf_capable() is CAP_BPF or CAP_SYS_ADMIN) and
//! CAP_NET_ADMIN and drop everything else; then it still counts keepalive probes
//! exactly (TcpExtTCPKeepAlive), scrapes read the maps without errors, and a veth
//! created after start-up gets the tc programs (link watcher). SIGTERM: exit 0 and
//! nothing left attached.

use std::ffi::CString;
use std::time::Duration;

use aya::programs::{SchedClassifier, TcAttachType};

use keepalive_tests::bpf::wait_until;
use keepalive_tests::expect::KernelProbes;
use keepalive_tests::names::{INTERFACE_ATTACH_ERRORS, MAP_READ_ERRORS, TC_PROGRAMS_ATTACHED, UP};
use keepalive_tests::scenarios::{self, Setup};
use keepalive_tests::{Daemon, Netns, require_root};

const CAP_NET_ADMIN: u32 = 12;
const CAP_SYS_ADMIN: u32 = 21;
const CAP_PERFMON: u32 = 38;
const CAP_BPF: u32 = 39;
/// setpriv(1): a bounding set without CAP_BPF; nothing inheritable, so the root uid's
/// implicit capabilities are bounded by these three.
const WRAPPER: [&str; 4] = [
    "setpriv",
    "--bounding-set=-all,+sys_admin,+perfmon,+net_admin",
    "--inh-caps=-all",
    "--",
];
/// How long the link watcher may take to attach a new veth.
const ATTACH_WAIT: Duration = Duration::from_secs(10);

/// Names of the programs attached with TCX to `ifname` in `ns`, ingress then egress
/// (aya's BPF_PROG_QUERY; bpftool 7.1 does not list TCX attachments).
fn tcx_programs(ns: &Netns, ifname: &str) -> Vec<String> {
    let name = CString::new(ifname).expect("interface name");
    ns.run_in(move || {
        let mut names = Vec::new();
        for at in [TcAttachType::Ingress, TcAttachType::Egress] {
            let (_, progs) = SchedClassifier::query_tcx(name.as_c_str(), at)
                .unwrap_or_else(|e| panic!("BPF_PROG_QUERY {ifname} {at:?}: {e}"));
            names.extend(
                progs
                    .iter()
                    .map(|p| p.name_as_str().unwrap_or("?").to_owned()),
            );
        }
        names
    })
}

/// `Cap<kind>` of every thread of `pid`.
fn thread_caps(pid: u32, kind: &str) -> Vec<u64> {
    let tasks = std::fs::read_dir(format!("/proc/{pid}/task")).expect("daemon threads");
    tasks
        .filter_map(Result::ok)
        .map(|t| {
            let status = std::fs::read_to_string(t.path().join("status")).expect("status");
            let prefix = format!("Cap{kind}:");
            let hex = status
                .lines()
                .find_map(|l| l.strip_prefix(prefix.as_str()))
                .unwrap_or_else(|| panic!("no {prefix} in {status}"));
            u64::from_str_radix(hex.trim(), 16).expect("hex")
        })
        .collect()
}

#[test]
fn sys_admin_standing_in_for_cap_bpf_is_kept() {
    require_root();
    let setup = Setup::new("sysadm");
    // VethPair names its ends kat<pid><n>a|b; the late veth below matches too.
    let pid = std::process::id();
    let pattern = format!("kat{pid}*a");
    let daemon = Daemon::spawn_wrapped(&setup.a, &WRAPPER, &[&pattern], &[]);
    let ctx = || format!("daemon stderr:\n{}", daemon.stderr());

    // The counter maps are read after the drop: probes counted exactly.
    let observed = scenarios::keepalive_probes(&setup, 1, 1, || daemon.scrape());
    let (o, before, after) = (&observed.oracle, &observed.before, &observed.after);
    assert!(o.kernel_probes_a > 0, "no probes sent; {}", ctx());
    o.assert_probes_equal_nstat(before, after, &ctx);
    assert_eq!(after.value(UP, &[]), 1.0, "{}", ctx());
    assert_eq!(after.sum(MAP_READ_ERRORS, &[]), 0.0, "{}", ctx());

    // A veth created after start-up (both ends in A, no addresses): the link watcher
    // attaches ingress and egress to the end that matches the pattern.
    let (late, peer) = (format!("kat{pid}xa"), format!("kat{pid}xb"));
    setup.a.cmd(&[
        "ip", "link", "add", &late, "type", "veth", "peer", "name", &peer,
    ]);
    setup.a.cmd(&["ip", "link", "set", &late, "up"]);
    let attached = |d: &Daemon| {
        d.scrape()
            .matching(TC_PROGRAMS_ATTACHED, &[("interface", late.as_str())])
            .count()
    };
    let ok = wait_until(ATTACH_WAIT, || attached(&daemon) == 2);
    let shown = tcx_programs(&setup.a, &late);
    assert!(
        ok,
        "{late} not attached within {ATTACH_WAIT:?} ({} series); TCX: {shown:?}; {}",
        attached(&daemon),
        ctx()
    );
    assert_eq!(
        shown,
        ["ka_tc_ingress", "ka_tc_egress"],
        "TCX programs on {late}; {}",
        ctx()
    );
    let last = daemon.scrape();
    assert_eq!(last.sum(INTERFACE_ATTACH_ERRORS, &[]), 0.0, "{}", ctx());
    assert_eq!(last.sum(MAP_READ_ERRORS, &[]), 0.0, "{}", ctx());

    let kept = (1u64 << CAP_SYS_ADMIN) | (1 << CAP_NET_ADMIN);
    for kind in ["Eff", "Prm"] {
        for caps in thread_caps(daemon.pid(), kind) {
            assert_eq!(caps, kept, "Cap{kind} {caps:#x} after attaching; {}", ctx());
            assert!(caps & ((1 << CAP_BPF) | (1 << CAP_PERFMON)) == 0);
        }
    }
    assert!(
        daemon
            .stderr()
            .contains("keeping CAP_SYS_ADMIN: it stands in for CAP_BPF"),
        "no word on why CAP_SYS_ADMIN is kept; {}",
        ctx()
    );

    daemon.terminate();
    for dev in [&setup.veth.a_if, &late] {
        let left = tcx_programs(&setup.a, dev);
        assert!(left.is_empty(), "left attached on {dev}: {left:?}");
    }
}

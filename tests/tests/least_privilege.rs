//! The daemon with only CAP_BPF, CAP_PERFMON and CAP_NET_ADMIN (setpriv; the systemd
//! unit's set): it comes up, attaches every socket hook with the same mechanism as with
//! every capability (the audit's idle-death hook included, so its inventory runs),
//! counts keepalive probes exactly (the kernels' TcpExtTCPKeepAlive),
//! and once attached holds only CAP_BPF and CAP_NET_ADMIN, with no_new_privs. SIGTERM:
//! exit 0 and nothing left attached.

use keepalive_tests::expect::KernelProbes;
use keepalive_tests::names::{AUDIT_ERRORS, AUDIT_INVENTORY_ENABLED, AUDIT_RUNS};
use keepalive_tests::scenarios::{self, Setup};
use keepalive_tests::timer_probes::assert_timer_probes;
use keepalive_tests::{Daemon, Samples, require_root};

const CAP_NET_ADMIN: u32 = 12;
const CAP_PERFMON: u32 = 38;
const CAP_BPF: u32 = 39;
/// setpriv(1): the unit's bounding set; nothing inheritable, so the root uid's implicit
/// capabilities are bounded by these three.
const WRAPPER: [&str; 4] = [
    "setpriv",
    "--bounding-set=-all,+bpf,+perfmon,+net_admin",
    "--inh-caps=-all",
    "--",
];

/// `Cap<kind>` of every thread of `pid`, and whether each has no_new_privs.
fn thread_caps(pid: u32, kind: &str) -> Vec<(u64, bool)> {
    let tasks = std::fs::read_dir(format!("/proc/{pid}/task")).expect("daemon threads");
    tasks
        .filter_map(Result::ok)
        .map(|t| {
            let status = std::fs::read_to_string(t.path().join("status")).expect("status");
            let field = |k: &str| {
                status
                    .lines()
                    .find_map(|l| l.strip_prefix(k))
                    .map(|v| v.trim().to_owned())
                    .unwrap_or_else(|| panic!("no {k} in {status}"))
            };
            let caps = u64::from_str_radix(&field(&format!("Cap{kind}:")), 16).expect("hex");
            (caps, field("NoNewPrivs:") == "1")
        })
        .collect()
}

#[test]
fn three_capabilities_suffice_and_only_two_stay() {
    require_root();
    let setup = Setup::new("lpriv");

    // The reference: the same daemon with every capability.
    let full = Daemon::spawn(&setup.a, &[&setup.veth.a_if]);
    let want = Samples::hooks_in_use(&full.scrape());
    full.terminate();
    // timer_probes, timeouts and idle_deaths (the audit's hook needs the inventory,
    // which must work under the unit's three capabilities too).
    assert_eq!(want.len(), 3, "with every capability: hooks {want:?}");

    let daemon = Daemon::spawn_wrapped(
        &setup.a,
        &WRAPPER,
        &[&setup.veth.a_if],
        &["--audit.interval", "1s"],
    );
    let ctx = || format!("daemon stderr:\n{}", daemon.stderr());
    assert_eq!(
        Samples::hooks_in_use(&daemon.scrape()),
        want,
        "hooks under three capabilities; {}",
        ctx()
    );

    let kept = (1u64 << CAP_BPF) | (1 << CAP_NET_ADMIN);
    for kind in ["Eff", "Prm"] {
        for (caps, no_new_privs) in thread_caps(daemon.pid(), kind) {
            assert_eq!(caps, kept, "Cap{kind} {caps:#x} after attaching; {}", ctx());
            assert!(caps & (1 << CAP_PERFMON) == 0);
            assert!(no_new_privs, "no_new_privs not set; {}", ctx());
        }
    }
    for (caps, _) in thread_caps(daemon.pid(), "Inh")
        .into_iter()
        .chain(thread_caps(daemon.pid(), "Amb"))
    {
        assert_eq!(
            caps,
            0,
            "inheritable or ambient capabilities left; {}",
            ctx()
        );
    }

    // Dropping CAP_PERFMON after attaching must not stop counting.
    let observed = scenarios::keepalive_probes(&setup, 2, 2, || daemon.scrape());
    let (o, before, after) = (&observed.oracle, &observed.before, &observed.after);
    assert!(o.kernel_probes_a > 0, "no probes sent; {}", ctx());
    o.assert_probes_equal_nstat(before, after, &ctx);
    assert_timer_probes(before, after, o.kernel_probes_a, ctx);

    // The audit's inventory works under the unit's capabilities too, and keeps walking
    // after they were dropped (a run every second: the probes above took longer than two).
    let s = daemon.scrape();
    assert_eq!(s.value(AUDIT_INVENTORY_ENABLED, &[]), 1.0, "{}", ctx());
    assert!(s.value(AUDIT_RUNS, &[]) >= 2.0, "{}", ctx());
    assert_eq!(s.value(AUDIT_ERRORS, &[]), 0.0, "{}", ctx());

    let stderr = daemon.terminate();
    assert!(
        stderr.contains("learned tcp_keepalive_timer's address in-kernel"),
        "{stderr}"
    );
    let links = setup
        .a
        .cmd(&["bpftool", "net", "show", "dev", &setup.veth.a_if]);
    assert!(!links.contains("ka_"), "left attached: {links}");
}

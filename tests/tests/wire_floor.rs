//! --debug.wire-floor, the floors `cargo xtask bench` measures the per-packet path
//! against: each floor passes the verifier, replaces our wire programs on both hooks,
//! and does what it claims on real traffic: the parse floor tracks nothing, the
//! lookup floor puts every connection in the flow map; nothing of them stays
//! attached after exit.

use std::collections::BTreeSet;

use keepalive_daemon::{exporter::connections::Listing, wire::tc::TcPrograms};
use keepalive_tests::bpf::{bpftool_links, bpftool_progs};
use keepalive_tests::scenarios::Setup;
use keepalive_tests::sockets::{exchange_byte, open_connections};
use keepalive_tests::{Daemon, require_root};

/// (floor as the flag takes it, its programs, whether it fills the flow map)
const FLOORS: [(&str, TcPrograms, bool); 2] = [
    ("parse", TcPrograms::PARSE_FLOOR, false),
    ("lookup", TcPrograms::LOOKUP_FLOOR, true),
];

#[test]
fn wire_floors_replace_ours_and_only_the_lookup_floor_tracks_connections() {
    require_root();
    for (floor, programs, tracks) in FLOORS {
        let setup = Setup::new(&format!("floor-{floor}"));
        let iface = setup.veth.a_if.as_str();
        // TCX: the attach mode this test can see (bpftool shows no netlink tc filter
        // of a process by link).
        let daemon = Daemon::spawn_with(
            &setup.a,
            &[iface],
            &["--debug.wire-floor", floor, "--tc.attach-mode", "tcx"],
        );
        let ctx = || format!("floor {floor}; daemon stderr:\n{}", daemon.stderr());

        // Kernel program names are cut at 15 characters; these are all shorter.
        let (attached, links) = attached_names(&daemon);
        let want: BTreeSet<String> = programs.names().map(str::to_owned).into();
        assert_eq!(attached, want, "{}", ctx());

        let conns = open_connections(&setup.a, &setup.b, 2, 1);
        exchange_byte(&conns);
        let listing: Listing = serde_json::from_str(&daemon.get("/connections"))
            .unwrap_or_else(|e| panic!("unparsable /connections: {e}\n{}", ctx()));
        let mut seen: Vec<String> = listing
            .connections
            .iter()
            .map(|c| c.local.clone())
            .collect();
        seen.sort();
        let mut ours: Vec<String> = if tracks {
            conns
                .iter()
                .map(|c| c.client.local_addr().expect("client address").to_string())
                .collect()
        } else {
            Vec::new()
        };
        ours.sort();
        assert_eq!(seen, ours, "connections in the flow map; {}", ctx());

        daemon.terminate();
        let left: Vec<u32> = bpftool_links()
            .iter()
            .map(|l| l.id)
            .filter(|id| links.contains(id))
            .collect();
        assert!(
            left.is_empty(),
            "floor {floor}: links left after exit: {left:?}"
        );
    }
}

/// Names of the ka_tc_* programs the daemon attached with TCX (the links it holds:
/// Debian 12's bpftool lists TCX links by type number 11 and shows neither the
/// interface nor the hook), and the ids of those links.
fn attached_names(daemon: &Daemon) -> (BTreeSet<String>, BTreeSet<u32>) {
    let held = daemon.bpf_objects();
    let tcx: Vec<(u32, u32)> = bpftool_links()
        .into_iter()
        .filter(|l| held.link_ids.contains(&l.id) && (l.kind == "tcx" || l.kind == "11"))
        .filter_map(|l| Some((l.id, l.prog_id?)))
        .collect();
    let names = bpftool_progs()
        .into_iter()
        .filter(|p| tcx.iter().any(|&(_, prog)| prog == p.id) && p.name.starts_with("ka_tc_"))
        .map(|p| p.name)
        .collect();
    (names, tcx.iter().map(|&(link, _)| link).collect())
}

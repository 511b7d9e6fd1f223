//! The keepalive audit's inventory, without the daemon binary: the `iter/tcp` program
//! (audit::kernel::Inventory) must list exactly the established sockets of the
//! namespace it walks, with the raw values the test set on them.
//!
//! Oracles: the sockets the test made (their addresses, options and inodes) and the
//! namespace's sysctls read back with sysctl(8).

use std::{
    collections::BTreeMap,
    fs::File,
    net::{Ipv4Addr, Ipv6Addr, SocketAddr, TcpListener, TcpStream},
    os::{fd::AsRawFd as _, unix::fs::MetadataExt as _},
    time::{Duration, Instant},
};

use keepalive_common::{
    audit::{HZ_CHOICES, SocketRecord, record_flags},
    flow::FlowKey,
};
use keepalive_daemon::audit::kernel::{self, Inventory};
use keepalive_tests::{
    Netns,
    audit_kernel::{inum, key_of, load, pair},
    require_root,
    sockets::{KeepaliveParams, enable_keepalive},
};
use socket2::SockRef;

/// What the test set on one socket, in the kernel's raw units (`hz` for jiffies).
#[derive(Clone, Copy, Debug)]
struct Expected {
    keepalive: bool,
    own: (u32, u32, u32),
    user_timeout_ms: u32,
    inode: u64,
}

#[derive(Default)]
struct Made {
    /// Keeps the sockets open while the walk runs.
    socks: Vec<TcpStream>,
    expected: BTreeMap<(u16, u16), (FlowKey, Expected)>,
}

const PLAIN: Expected = Expected {
    keepalive: false,
    own: (0, 0, 0),
    user_timeout_ms: 0,
    inode: 0,
};

impl Made {
    /// Records both ends: the client with `client`, the accepted end with defaults.
    fn add(&mut self, (c, s): (TcpStream, TcpStream), client: Expected) {
        for (sock, e) in [(&c, client), (&s, PLAIN)] {
            let inode = std::fs::metadata(format!("/proc/self/fd/{}", sock.as_raw_fd()))
                .unwrap()
                .ino();
            let key = key_of(sock);
            let ports = (key.local_port, key.remote_port);
            self.expected.insert(ports, (key, Expected { inode, ..e }));
        }
        self.socks.extend([c, s]);
    }
}

/// The connections of the inventory test, made inside `ns`.
fn make_connections(hz: u32) -> Made {
    let v4 = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).unwrap();
    let v6 = TcpListener::bind((Ipv6Addr::UNSPECIFIED, 0)).unwrap(); // dual stack
    let p4 = v4.local_addr().unwrap();
    let port6 = v6.local_addr().unwrap().port();
    let p6 = SocketAddr::from((Ipv6Addr::LOCALHOST, port6));
    let mapped = SocketAddr::from((Ipv4Addr::LOCALHOST.to_ipv6_mapped(), port6));
    let mut made = Made::default();
    // Keepalive off.
    made.add(pair(&v4, p4), PLAIN);
    // Keepalive on with its own settings (stored in jiffies).
    let (c, s) = pair(&v4, p4);
    let p = KeepaliveParams {
        idle_secs: 60,
        intvl_secs: 7,
        cnt: 4,
    };
    enable_keepalive(&c, p);
    let own = (60 * hz, 7 * hz, 4);
    let keepalive = true;
    made.add(
        (c, s),
        Expected {
            keepalive,
            own,
            ..PLAIN
        },
    );
    // Keepalive on with the namespace's sysctls, over IPv6.
    let (c, s) = pair(&v6, p6);
    SockRef::from(&c).set_keepalive(true).unwrap();
    made.add((c, s), Expected { keepalive, ..PLAIN });
    // TCP_USER_TIMEOUT, over an IPv4-mapped IPv6 socket.
    let (c, s) = pair(&v6, mapped);
    let timeout = Duration::from_millis(5000);
    SockRef::from(&c)
        .set_tcp_user_timeout(Some(timeout))
        .unwrap();
    made.add(
        (c, s),
        Expected {
            user_timeout_ms: 5000,
            ..PLAIN
        },
    );
    made
}

fn sysctl(ns: &Netns, name: &str) -> u32 {
    ns.cmd(&["sysctl", "-n", name]).trim().parse().expect(name)
}

fn check_record(r: &SocketRecord, key: &FlowKey, e: &Expected, ns: &Netns, hz: u32) {
    let ctx = format!("{r:#?}\nexpected {e:?}");
    assert_eq!(r.key, *key, "{ctx}");
    assert_eq!(r.flags & record_flags::KEEPALIVE != 0, e.keepalive, "{ctx}");
    assert_eq!(r.netns_inum, inum(ns), "{ctx}");
    assert_eq!(r.uid, 0, "{ctx}");
    let own = (r.keepalive_time, r.keepalive_intvl, r.keepalive_probes);
    assert_eq!(own, e.own, "{ctx}");
    let sys = (
        r.sysctl_keepalive_time,
        r.sysctl_keepalive_intvl,
        r.sysctl_keepalive_probes,
    );
    let want = (
        sysctl(ns, "net.ipv4.tcp_keepalive_time") * hz,
        sysctl(ns, "net.ipv4.tcp_keepalive_intvl") * hz,
        sysctl(ns, "net.ipv4.tcp_keepalive_probes"),
    );
    assert_eq!(sys, want, "{ctx}");
    assert_eq!(r.user_timeout_ms, e.user_timeout_ms, "{ctx}");
    assert!(r.idle_jiffies < 30 * hz, "idle implausible: {ctx}");
    assert_eq!(r.socket_inode, e.inode, "{ctx}");
    // The test runs in the cgroup v2 root here or below it: an id is always set.
    assert_ne!(r.cgroup_id, 0, "{ctx}");
}

#[test]
fn inventory_lists_exactly_the_walked_namespaces_established_sockets() {
    require_root();
    let ns = Netns::new("auditinv", "a");
    let other = Netns::new("auditinv", "b");
    ns.cmd(&["sysctl", "-w", "net.ipv4.tcp_keepalive_time=4321"]);
    let (mut ebpf, btf) = load(None);
    let inv = Inventory::attach(&mut ebpf, &btf).expect("attaching the iterator");
    let hz = inv.hz();
    assert!(HZ_CHOICES.contains(&hz), "HZ {hz}");

    let made = ns.run_in(|| make_connections(hz));
    let other_made = other.run_in(|| make_connections(hz));
    let file = File::open(ns.path()).unwrap();
    let t0 = Instant::now();
    let walk = inv.walk_in(&file).expect("walking the namespace");
    let took = t0.elapsed();
    eprintln!("walk of {} sockets took {took:?}", walk.records.len());
    assert_eq!(walk.truncated, 0);
    assert_ne!(walk.now_jiffies, 0);
    let got: BTreeMap<(u16, u16), &SocketRecord> = walk
        .records
        .iter()
        .map(|r| ((r.key.local_port, r.key.remote_port), r))
        .collect();
    assert_eq!(
        got.keys().collect::<Vec<_>>(),
        made.expected.keys().collect::<Vec<_>>(),
        "the walk must list exactly this namespace's established sockets: {:#?}",
        walk.records
    );
    assert_eq!(
        walk.records.len(),
        made.expected.len(),
        "a socket listed twice"
    );
    for (port, (key, e)) in &made.expected {
        check_record(got[port], key, e, &ns, hz);
    }
    // The other namespace, walked from here too, has only its own.
    let file = File::open(other.path()).unwrap();
    let walk = inv.walk_in(&file).expect("walking the other namespace");
    let ports: Vec<(u16, u16)> = walk
        .records
        .iter()
        .map(|r| (r.key.local_port, r.key.remote_port))
        .collect();
    let mut want: Vec<(u16, u16)> = other_made.expected.keys().copied().collect();
    let mut ports_sorted = ports.clone();
    ports_sorted.sort();
    want.sort();
    assert_eq!(ports_sorted, want);
    for r in &walk.records {
        assert_eq!(r.netns_inum, inum(&other));
    }
    // The program reads a namespace's sysctls once per walk (its per-CPU cache is
    // valid for one iterator session): a change shows in the next walk, for every socket.
    ns.cmd(&["sysctl", "-w", "net.ipv4.tcp_keepalive_intvl=37"]);
    let file = File::open(ns.path()).unwrap();
    let walk = inv.walk_in(&file).expect("walking the namespace again");
    assert_eq!(walk.records.len(), made.expected.len());
    for r in &walk.records {
        let port = (r.key.local_port, r.key.remote_port);
        let (key, e) = &made.expected[&port];
        check_record(r, key, e, &ns, hz);
        assert_eq!(r.sysctl_keepalive_intvl, 37 * hz);
    }
}

/// Connections of the scale walk: 8,000 sockets, within the 20,000 files the test
/// process may open here.
const SCALE_CONNECTIONS: usize = 4000;

#[test]
fn inventory_walks_thousands_of_sockets_exactly_once_each() {
    require_root();
    let ns = Netns::new("auditscale", "a");
    let (mut ebpf, btf) = load(None);
    let inv = Inventory::attach(&mut ebpf, &btf).expect("attaching the iterator");
    let socks = ns.run_in(|| {
        let l = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).unwrap();
        let to = l.local_addr().unwrap();
        (0..SCALE_CONNECTIONS)
            .flat_map(|_| {
                let (c, s) = pair(&l, to);
                [c, s]
            })
            .collect::<Vec<_>>()
    });
    let mut want: Vec<(u16, u16)> = socks
        .iter()
        .map(|s| {
            (
                s.local_addr().unwrap().port(),
                s.peer_addr().unwrap().port(),
            )
        })
        .collect();
    want.sort();
    let file = File::open(ns.path()).unwrap();
    let t0 = Instant::now();
    let walk = inv.walk_in(&file).expect("walking the namespace");
    let took = t0.elapsed();
    let mut got: Vec<(u16, u16)> = walk
        .records
        .iter()
        .map(|r| (r.key.local_port, r.key.remote_port))
        .collect();
    got.sort();
    assert_eq!(got.len(), want.len());
    assert!(got == want, "the walk must list each socket exactly once");
    assert_eq!(walk.truncated, 0);
    let insns = ebpf
        .program(kernel::ITER_PROGRAM)
        .and_then(|p| p.info().ok())
        .and_then(|i| i.size_translated())
        .map_or(0, |b| b / 8);
    eprintln!(
        "walk of {} sockets took {took:?}; {} has {insns} instructions",
        got.len(),
        kernel::ITER_PROGRAM
    );
}

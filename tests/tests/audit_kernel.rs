//! The keepalive audit's kernel side, without the daemon binary: the `iter/tcp`
//! inventory (audit::kernel::Inventory) must list exactly the established sockets of the
//! namespace it walks, with the raw values the test set on them; the idle-death hook
//! (IdleDeaths) must count and report exactly the connections that died after being
//! idle, with the right cause.
//!
//! Oracles: the sockets the test made (their addresses, options and inodes), the
//! namespace's sysctls read back with sysctl(8), and the errors the application saw.

use std::{
    collections::BTreeMap,
    fs::File,
    io::{Read as _, Write as _},
    net::{Ipv4Addr, Ipv6Addr, SocketAddr, TcpListener, TcpStream},
    os::{fd::AsRawFd as _, unix::fs::MetadataExt as _},
    path::Path,
    thread,
    time::{Duration, Instant},
};

use aya::{Ebpf, maps::PerCpuArray};
use keepalive_common::{
    audit::{
        EndingKind, FAILURE_IDLE_BUCKETS, HZ_CHOICES, SocketRecord, failure_bucket, record_flags,
    },
    audit_config::{IdleDeathParams, audit_flags},
    counters,
    flow::FlowKey,
};
use keepalive_daemon::{
    audit::kernel::{self, IdleDeathSetup, IdleDeaths, Inventory},
    kernel::btf::KernelBtf,
    sockhooks,
};
use keepalive_tests::{
    Netns, VethPair,
    netns::{A_V4, B_V4},
    require_root,
    sockets::{KeepaliveParams, enable_keepalive, set_linger_zero},
};
use socket2::SockRef;

const MIN_IDLE: Duration = Duration::from_secs(2);
/// Longer than MIN_IDLE by a margin that a loaded machine's scheduling cannot eat.
const IDLE: Duration = Duration::from_millis(2600);
const ENDING_TIMEOUT: Duration = Duration::from_secs(10);

/// Loads the daemon's eBPF object as the daemon does, counting only in `netns_inum`.
fn load(netns_inum: Option<u32>) -> (Ebpf, KernelBtf) {
    let btf = KernelBtf::load(Path::new("/sys/kernel/btf/vmlinux")).expect("kernel BTF");
    let resolved = sockhooks::resolve_or_disable(&btf, netns_inum);
    let audit = kernel::loader_config(&btf);
    assert_ne!(
        audit.flags & audit_flags::VALID,
        0,
        "audit layout not resolved"
    );
    let ebpf = kernel::load_object(&resolved.config, &audit).expect("loading the eBPF object");
    (ebpf, btf)
}

fn inum(ns: &Netns) -> u32 {
    std::fs::metadata(ns.path()).expect("netns file").ino() as u32
}

fn key_of(s: &TcpStream) -> FlowKey {
    fn words(a: SocketAddr) -> ([u32; 4], u32) {
        match a {
            SocketAddr::V4(v) => ([u32::from_ne_bytes(v.ip().octets()), 0, 0, 0], 0),
            SocketAddr::V6(v) => match v.ip().to_ipv4_mapped() {
                // The kernel sends IPv4 packets for these: the wire programs key them so.
                Some(v4) => ([u32::from_ne_bytes(v4.octets()), 0, 0, 0], 0),
                None => {
                    let o = v.ip().octets();
                    let w = |i: usize| u32::from_ne_bytes([o[i], o[i + 1], o[i + 2], o[i + 3]]);
                    ([w(0), w(4), w(8), w(12)], 1)
                }
            },
        }
    }
    let (l, r) = (s.local_addr().unwrap(), s.peer_addr().unwrap());
    let ((local_addr, family), (remote_addr, _)) = (words(l), words(r));
    FlowKey {
        local_addr,
        remote_addr,
        local_port: l.port(),
        remote_port: r.port(),
        family,
    }
}

/// What the test set on one socket, in the kernel's raw units (`hz` for jiffies).
#[derive(Clone, Copy, Debug)]
struct Expected {
    keepalive: bool,
    own: (u32, u32, u32),
    user_timeout_ms: u32,
    inode: u64,
}

/// Both ends of a connection to `listener` (client, accepted).
fn pair(listener: &TcpListener, to: SocketAddr) -> (TcpStream, TcpStream) {
    let c = TcpStream::connect_timeout(&to, Duration::from_secs(5)).expect("connect");
    let (s, _) = listener.accept().expect("accept");
    (c, s)
}

struct Made {
    /// Keeps the sockets open while the walk runs.
    _socks: Vec<TcpStream>,
    expected: BTreeMap<(u16, u16), (FlowKey, Expected)>,
}

/// The connections of the inventory test, made inside `ns`.
fn make_connections(hz: u32) -> Made {
    let v4 = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).unwrap();
    let v6 = TcpListener::bind((Ipv6Addr::UNSPECIFIED, 0)).unwrap(); // dual stack
    let p4 = v4.local_addr().unwrap();
    let p6 = SocketAddr::from((Ipv6Addr::LOCALHOST, v6.local_addr().unwrap().port()));
    let mapped = SocketAddr::from((
        Ipv4Addr::LOCALHOST.to_ipv6_mapped(),
        v6.local_addr().unwrap().port(),
    ));
    let mut socks = Vec::new();
    let mut expected = BTreeMap::new();
    let plain = Expected {
        keepalive: false,
        own: (0, 0, 0),
        user_timeout_ms: 0,
        inode: 0,
    };
    let mut add = |c: TcpStream, s: TcpStream, client: Expected| {
        for (sock, e) in [(&c, client), (&s, plain)] {
            let inode = std::fs::metadata(format!("/proc/self/fd/{}", sock.as_raw_fd()))
                .unwrap()
                .ino();
            let key = key_of(sock);
            expected.insert(
                (key.local_port, key.remote_port),
                (key, Expected { inode, ..e }),
            );
        }
        socks.extend([c, s]);
    };
    // Keepalive off.
    let (c, s) = pair(&v4, p4);
    add(c, s, plain);
    // Keepalive on with its own settings (stored in jiffies).
    let (c, s) = pair(&v4, p4);
    let p = KeepaliveParams {
        idle_secs: 60,
        intvl_secs: 7,
        cnt: 4,
    };
    enable_keepalive(&c, p);
    let own = (60 * hz, 7 * hz, 4);
    add(
        c,
        s,
        Expected {
            keepalive: true,
            own,
            ..plain
        },
    );
    // Keepalive on with the namespace's sysctls, over IPv6.
    let (c, s) = pair(&v6, p6);
    SockRef::from(&c).set_keepalive(true).unwrap();
    add(
        c,
        s,
        Expected {
            keepalive: true,
            ..plain
        },
    );
    // TCP_USER_TIMEOUT, over an IPv4-mapped IPv6 socket.
    let (c, s) = pair(&v6, mapped);
    SockRef::from(&c)
        .set_tcp_user_timeout(Some(Duration::from_millis(5000)))
        .unwrap();
    add(
        c,
        s,
        Expected {
            user_timeout_ms: 5000,
            ..plain
        },
    );
    Made {
        _socks: socks,
        expected,
    }
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
}

/// The counter slots of the idle-death hook, summed over CPUs.
fn idle_counters(ebpf: &Ebpf) -> Vec<(u32, u64)> {
    let counters: PerCpuArray<_, u64> =
        PerCpuArray::try_from(ebpf.map("COUNTERS").expect("COUNTERS")).unwrap();
    let mut slots = Vec::new();
    for kind in [EndingKind::IdleReset, EndingKind::IdleRetransmitTimeout] {
        for ka in [false, true] {
            slots.push(counters::idle_failures(kind, ka));
        }
    }
    slots.extend((0..FAILURE_IDLE_BUCKETS).map(counters::failure_idle_bucket));
    slots.push(counters::FAILURE_IDLE_MS_SUM);
    slots.push(counters::ENDING_EVENTS_LOST);
    slots
        .into_iter()
        .map(|s| (s, counters.get(&s, 0).unwrap().iter().sum()))
        .collect()
}

/// Attaches the hook (HZ from the iterator) in a runtime that then waits for endings.
struct Hooked {
    ebpf: Ebpf,
    hz: u32,
    rt: tokio::runtime::Runtime,
    reader: kernel::EndingsReader,
}

fn hook(netns_inum: u32) -> Hooked {
    let (mut ebpf, btf) = load(Some(netns_inum));
    let hz = Inventory::attach(&mut ebpf, &btf).expect("iterator").hz();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let setup = IdleDeathSetup {
        min_idle: MIN_IDLE,
        hz,
    };
    let mut deaths = rt
        .block_on(async { IdleDeaths::attach(&mut ebpf, &btf, setup) })
        .expect("attaching the idle-death hook");
    let reader = deaths.take_endings().expect("the endings reader");
    Hooked {
        ebpf,
        hz,
        rt,
        reader,
    }
}

impl Hooked {
    fn one_ending(&mut self) -> keepalive_common::audit::Ending {
        let reader = &mut self.reader;
        let batch = self
            .rt
            .block_on(async { tokio::time::timeout(ENDING_TIMEOUT, reader.next_batch()).await })
            .expect("no ending within the timeout")
            .expect("reading endings");
        assert_eq!(batch.len(), 1, "exactly one ending: {batch:#?}");
        batch[0]
    }

    /// Asserts the counters show exactly this one death.
    fn assert_counted_once(&self, e: &keepalive_common::audit::Ending, kind: EndingKind) {
        let keepalive = e.flags & record_flags::KEEPALIVE != 0;
        let bounds = IdleDeathParams::new(self.hz, 0).bounds_jiffies;
        let bucket = counters::failure_idle_bucket(failure_bucket(e.idle_jiffies, &bounds));
        let ms = e.idle_jiffies as u64 * 1000 / self.hz as u64;
        for (slot, v) in idle_counters(&self.ebpf) {
            let want = if slot == counters::idle_failures(kind, keepalive) || slot == bucket {
                1
            } else if slot == counters::FAILURE_IDLE_MS_SUM {
                ms
            } else {
                0
            };
            assert_eq!(v, want, "counter slot {slot}; ending {e:#?}");
        }
    }
}

#[test]
fn an_idle_connection_reset_by_its_peer_is_one_idle_death() {
    require_root();
    let ns = Netns::new("auditrst", "a");
    let mut h = hook(inum(&ns));
    let (client, server, early) = ns.run_in(|| {
        let l = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).unwrap();
        let to = l.local_addr().unwrap();
        // Reset at once: not idle long enough, not an idle death.
        let (early_c, early_s) = pair(&l, to);
        set_linger_zero(&early_s);
        drop(early_s);
        let (c, s) = pair(&l, to);
        enable_keepalive(
            &c,
            KeepaliveParams {
                idle_secs: 3600,
                intvl_secs: 60,
                cnt: 5,
            },
        );
        (c, s, early_c)
    });
    let key = key_of(&client);
    thread::sleep(IDLE);
    set_linger_zero(&server);
    drop(server);
    let e = h.one_ending();
    assert_eq!(e.kind, EndingKind::IdleReset as u32, "{e:#?}");
    assert_eq!(e.key, key);
    assert_eq!(e.flags & record_flags::KEEPALIVE, record_flags::KEEPALIVE);
    assert_eq!(e.netns_inum, inum(&ns));
    let idle_ms = e.idle_jiffies as u64 * 1000 / h.hz as u64;
    assert!((2000..6000).contains(&idle_ms), "idle {idle_ms} ms: {e:#?}");
    h.assert_counted_once(&e, EndingKind::IdleReset);
    // The application saw the reset.
    let err = (&client).read(&mut [0u8; 1]).expect_err("read after RST");
    assert_eq!(err.raw_os_error(), Some(libc::ECONNRESET));
    drop(early);
}

#[test]
fn an_idle_connection_whose_retransmissions_time_out_is_one_idle_death() {
    require_root();
    let a = Netns::new("auditrto", "a");
    let b = Netns::new("auditrto", "b");
    let _veth = VethPair::new(&a, &b);
    let mut h = hook(inum(&a));
    let listener = b.run_in(|| TcpListener::bind((B_V4, 0)).unwrap());
    let to = listener.local_addr().unwrap();
    let client = a.run_in(|| {
        let c = keepalive_tests::sockets::connect_with_retry(to);
        SockRef::from(&c)
            .set_tcp_user_timeout(Some(Duration::from_millis(2000)))
            .unwrap();
        c
    });
    let (_server, _) = listener.accept().unwrap();
    let key = key_of(&client);
    thread::sleep(IDLE);
    b.nft(&format!(
        "table inet audit_rto {{\n\tchain input {{\n\t\ttype filter hook input priority 0; \
         policy accept;\n\t\tip saddr {A_V4} drop\n\t}}\n}}\n"
    ));
    (&client).write_all(b"x").unwrap();
    let e = h.one_ending();
    assert_eq!(e.kind, EndingKind::IdleRetransmitTimeout as u32, "{e:#?}");
    assert_eq!(e.key, key);
    assert_eq!(e.flags & record_flags::KEEPALIVE, 0);
    h.assert_counted_once(&e, EndingKind::IdleRetransmitTimeout);
    let err = (&client)
        .read(&mut [0u8; 1])
        .expect_err("read after the timeout");
    assert_eq!(err.raw_os_error(), Some(libc::ETIMEDOUT));
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

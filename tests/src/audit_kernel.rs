//! Helpers of the audit's kernel-side tests (tests/tests/audit_kernel.rs and
//! audit_idle_deaths.rs): loading the daemon's eBPF object as the daemon does, flow keys
//! of the test's sockets, and the idle-death hook with its counters and endings.

use std::{
    net::{SocketAddr, TcpListener, TcpStream},
    os::unix::fs::MetadataExt as _,
    path::Path,
    time::Duration,
};

use aya::{Ebpf, maps::PerCpuArray};
use keepalive_common::{
    audit::{Ending, EndingKind, FAILURE_IDLE_BUCKETS, failure_bucket, record_flags},
    audit_config::{IdleDeathParams, audit_flags},
    counters,
    flow::FlowKey,
};
use keepalive_daemon::{
    audit::kernel::{self, IdleDeathSetup, IdleDeaths, Inventory},
    exporter::registry::Metrics,
    kernel::btf::KernelBtf,
    sockhooks,
};

use crate::Netns;

pub const MIN_IDLE: Duration = Duration::from_secs(2);
/// Longer than MIN_IDLE by a margin that a loaded machine's scheduling cannot eat.
pub const IDLE: Duration = Duration::from_millis(2600);
pub const ENDING_TIMEOUT: Duration = Duration::from_secs(10);

/// Loads the daemon's eBPF object as the daemon does, counting only in `netns_inum`.
pub fn load(netns_inum: Option<u32>) -> (Ebpf, KernelBtf) {
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

pub fn inum(ns: &Netns) -> u32 {
    std::fs::metadata(ns.path()).expect("netns file").ino() as u32
}

pub fn key_of(s: &TcpStream) -> FlowKey {
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

/// Both ends of a connection to `listener` (client, accepted).
pub fn pair(listener: &TcpListener, to: SocketAddr) -> (TcpStream, TcpStream) {
    let c = TcpStream::connect_timeout(&to, Duration::from_secs(5)).expect("connect");
    let (s, _) = listener.accept().expect("accept");
    (c, s)
}

/// The counter slots of the idle-death hook, summed over CPUs.
pub fn idle_counters(ebpf: &Ebpf) -> Vec<(u32, u64)> {
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
pub struct Hooked {
    pub ebpf: Ebpf,
    pub hz: u32,
    rt: tokio::runtime::Runtime,
    reader: kernel::EndingsReader,
}

/// With `socket_hooks`, the daemon's socket hooks (keepalive timer probes and
/// timeouts) are attached first, as the daemon does.
pub fn hook(netns_inum: u32, socket_hooks: bool) -> Hooked {
    let (mut ebpf, btf) = load(Some(netns_inum));
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    // The socket hooks and the endings reader register with the runtime's reactor.
    let in_rt = rt.enter();
    if socket_hooks {
        let resolved = sockhooks::resolve_or_disable(&btf, Some(netns_inum));
        let metrics = Metrics::new(&[]).expect("registry");
        let used = sockhooks::attach(&mut ebpf, resolved, &[], &metrics.hook_info);
        eprintln!("socket hooks: {}", used.summary);
    }
    let hz = Inventory::attach(&mut ebpf, &btf).expect("iterator").hz();
    let setup = IdleDeathSetup {
        min_idle: MIN_IDLE,
        hz,
    };
    let mut deaths =
        IdleDeaths::attach(&mut ebpf, &btf, setup).expect("attaching the idle-death hook");
    let reader = deaths.take_endings().expect("the endings reader");
    drop(in_rt);
    Hooked {
        ebpf,
        hz,
        rt,
        reader,
    }
}

impl Hooked {
    pub fn one_ending(&mut self) -> Ending {
        let reader = &mut self.reader;
        let batch = self
            .rt
            .block_on(async { tokio::time::timeout(ENDING_TIMEOUT, reader.next_batch()).await })
            .expect("no ending within the timeout")
            .expect("reading endings");
        assert_eq!(batch.len(), 1, "exactly one ending: {batch:#?}");
        batch[0]
    }

    /// Asserts that no other ending arrives within a second.
    pub fn assert_no_more_endings(&mut self) {
        let reader = &mut self.reader;
        let more = self.rt.block_on(async {
            tokio::time::timeout(Duration::from_secs(1), reader.next_batch()).await
        });
        assert!(more.is_err(), "unexpected endings: {more:?}");
    }

    /// Asserts the idle-death counters are all zero.
    pub fn assert_no_idle_deaths(&self) {
        for (slot, v) in idle_counters(&self.ebpf) {
            assert_eq!(v, 0, "counter slot {slot}");
        }
    }

    /// Asserts the counters show exactly this one death.
    pub fn assert_counted_once(&self, e: &Ending, kind: EndingKind) {
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

//! The daemon's kernel flow map (FLOWS) filled from the test with synthetic flows of
//! known activity, for the per-connection view at scale (tests/tests/connections_view.rs),
//! and the daemon's memory as /proc reports it.
//!
//! The map is found among the daemon's own descriptors (pidfd_getfd, then its name in
//! `bpf_map_info`), so a daemon of another test running in parallel is never touched.
//! Entries go in with bpf(2) BPF_MAP_UPDATE_BATCH, 65536 per call, through the
//! daemon's own batch code (exporter/flow_map.rs): aya has no batch API, and bpftool
//! takes one entry per command (a million processes).

use std::io;
use std::ops::ControlFlow;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};

use keepalive_common::flow::{FlowKey, FlowState, flow_end};
use keepalive_daemon::exporter::flow_map;

use crate::bpf_syscall::{ProcessFds, obj_info};

/// `enum bpf_map_type` BPF_MAP_TYPE_LRU_HASH.
const BPF_MAP_TYPE_LRU_HASH: u32 = 9;
/// Entries per batch call.
const BATCH: usize = 65_536;

/// The local end of every synthetic flow.
pub const LOCAL: &str = "192.0.2.1:5432";
/// Activity of the least recently active synthetic flow (1 s after boot); flow `i` is
/// last active [`STEP_NS`] times its rank later.
pub const BASE_NS: u64 = 1_000_000_000;
pub const STEP_NS: u64 = 1_000;
/// Odd, so `i * SPREAD` modulo a power of two is a permutation: activity is not in the
/// order of insertion (nor of the hash buckets the walk follows).
const SPREAD: u32 = 0x9E37_79B1;

/// A descriptor of the daemon's FLOWS map, duplicated into the test.
pub struct DaemonFlowMap {
    fd: OwnedFd,
    pub max_entries: u32,
}

/// Descriptor numbers of every BPF map `pid` holds.
fn map_fds(pid: u32) -> Vec<i32> {
    let dir = std::fs::read_dir(format!("/proc/{pid}/fdinfo"))
        .unwrap_or_else(|e| panic!("reading /proc/{pid}/fdinfo: {e}"));
    dir.filter_map(Result::ok)
        .filter(|e| std::fs::read_to_string(e.path()).is_ok_and(|t| t.contains("map_type:")))
        .filter_map(|e| e.file_name().to_string_lossy().parse().ok())
        .collect()
}

impl DaemonFlowMap {
    /// The FLOWS map of the daemon `pid`; panics unless it has exactly one.
    pub fn open(pid: u32) -> DaemonFlowMap {
        let fds = ProcessFds::open(pid).unwrap_or_else(|e| panic!("pidfd_open({pid}): {e}"));
        let mut found = Vec::new();
        for target in map_fds(pid) {
            let Ok(fd) = fds.get(target) else { continue };
            // struct bpf_map_info: type @0, key_size @8, value_size @12,
            // max_entries @16, name[16] @24.
            let mut info = [0u8; 128];
            obj_info(fd.as_fd(), &mut info).unwrap_or_else(|e| panic!("map info: {e}"));
            let u32_at = |o: usize| u32::from_ne_bytes(info[o..o + 4].try_into().expect("4"));
            if &info[24..30] == b"FLOWS\0" {
                assert_eq!(
                    (u32_at(0), u32_at(8), u32_at(12)),
                    (
                        BPF_MAP_TYPE_LRU_HASH,
                        size_of::<FlowKey>() as u32,
                        size_of::<FlowState>() as u32
                    ),
                    "the daemon's FLOWS is not the LRU hash of FlowKey -> FlowState"
                );
                found.push(DaemonFlowMap {
                    fd,
                    max_entries: u32_at(16),
                });
            }
        }
        assert_eq!(
            found.len(),
            1,
            "daemon {pid} must hold exactly one FLOWS map"
        );
        found.pop().expect("one map")
    }

    fn fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }

    /// Inserts synthetic flows `0..n` (n a power of two, at most 2^24), `BATCH` per call,
    /// from one thread pinned to one CPU: the LRU map hands out free entries through
    /// per-CPU lists, and a thread that moved between CPUs could leave free entries
    /// stranded on one and see evictions before the map is full.
    pub fn fill(&self, n: u32) {
        assert!(n.is_power_of_two() && n <= 1 << 24, "n = {n}");
        self.write(0..n, |i| synthetic(i, n));
    }

    /// Writes `entry(i)` for every `i` of `range` (inserted, or replacing the entry of
    /// the same key), `BATCH` per call, pinned to one CPU as [`Self::fill`] says.
    pub fn write(
        &self,
        range: std::ops::Range<u32>,
        entry: impl Fn(u32) -> (FlowKey, FlowState) + Sync,
    ) {
        std::thread::scope(|s| {
            s.spawn(|| {
                pin_to_current_cpu();
                let mut keys = Vec::with_capacity(BATCH);
                let mut values = Vec::with_capacity(BATCH);
                for start in range.clone().step_by(BATCH) {
                    keys.clear();
                    values.clear();
                    for i in start..start.saturating_add(BATCH as u32).min(range.end) {
                        let (k, v) = entry(i);
                        keys.push(k);
                        values.push(v);
                    }
                    self.update_batch(&keys, &values)
                        .unwrap_or_else(|e| panic!("BPF_MAP_UPDATE_BATCH at {start}: {e}"));
                }
            })
            .join()
            .expect("fill thread");
        });
    }

    fn update_batch(&self, keys: &[FlowKey], values: &[FlowState]) -> io::Result<()> {
        let written = flow_map::update_batch(self.fd(), keys, values)?;
        assert_eq!(written as usize, keys.len(), "entries updated");
        Ok(())
    }

    /// Removes `keys` with the daemon's batch delete; returns how many it removed.
    pub fn delete(&self, keys: &[FlowKey]) -> u64 {
        flow_map::delete_keys(self.fd(), keys)
    }

    /// Entries in the map, counted with the daemon's own batched walk.
    pub fn count(&self) -> u64 {
        let mut total = 0u64;
        flow_map::walk(self.fd(), BATCH, |keys, _| {
            total += keys.len() as u64;
            ControlFlow::Continue(())
        })
        .unwrap_or_else(|e| panic!("BPF_MAP_LOOKUP_BATCH: {e}"));
        total
    }
}

/// Pins the calling thread to the CPU it runs on.
fn pin_to_current_cpu() {
    // SAFETY: sched_getcpu(3) has no arguments; sched_setaffinity(2) on the calling
    // thread (0) with a zeroed, then filled cpu_set_t we own.
    unsafe {
        let cpu = libc::sched_getcpu();
        assert!(cpu >= 0, "sched_getcpu: {}", io::Error::last_os_error());
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        libc::CPU_SET(cpu as usize, &mut set);
        let rc = libc::sched_setaffinity(0, size_of::<libc::cpu_set_t>(), &set);
        assert!(rc == 0, "sched_setaffinity: {}", io::Error::last_os_error());
    }
}

/// Activity rank of synthetic flow `i` of `n` (a power of two): a permutation of 0..n.
pub fn rank(i: u32, n: u32) -> u32 {
    i.wrapping_mul(SPREAD) & (n - 1)
}

/// Remote address of synthetic flow `i`: 10.x.y.z from the flow number, port 40000.
pub fn remote(i: u32) -> String {
    let [_, a, b, c] = i.to_be_bytes();
    format!("10.{a}.{b}.{c}:40000")
}

/// Synthetic flow `i` of `n`: IPv4 192.0.2.1:5432 to [`remote`], open, `i` probes
/// sent, last active at `BASE_NS + rank * STEP_NS`.
pub fn synthetic(i: u32, n: u32) -> (FlowKey, FlowState) {
    let [_, a, b, c] = i.to_be_bytes();
    let key = FlowKey {
        local_addr: [u32::from_ne_bytes([192, 0, 2, 1]), 0, 0, 0],
        remote_addr: [u32::from_ne_bytes([10, a, b, c]), 0, 0, 0],
        local_port: 5432,
        remote_port: 40000,
        family: 0,
    };
    let active = BASE_NS + u64::from(rank(i, n)) * STEP_NS;
    let mut state = FlowState {
        first_seen_ns: BASE_NS,
        last_seen_ns: active,
        end: flow_end::OPEN,
        ..Default::default()
    };
    state.dir[0].probes = i;
    state.dir[0].last_probe_ns = active;
    (key, state)
}

/// The synthetic flows of `n` the view must show first, most recently active first.
pub fn most_recent(n: u32, limit: usize) -> Vec<u32> {
    let mut by_rank = vec![0u32; n as usize];
    for i in 0..n {
        by_rank[rank(i, n) as usize] = i;
    }
    by_rank.iter().rev().take(limit).copied().collect()
}

/// A `/proc/PID/status` field in KiB, e.g. "VmRSS" or "VmHWM".
pub fn status_kib(pid: u32, field: &str) -> u64 {
    let text = std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_else(|e| panic!("reading /proc/{pid}/status: {e}"));
    text.lines()
        .find_map(|l| l.strip_prefix(field)?.strip_prefix(':'))
        .and_then(|v| v.trim().strip_suffix("kB")?.trim().parse().ok())
        .unwrap_or_else(|| panic!("no {field} in /proc/{pid}/status"))
}

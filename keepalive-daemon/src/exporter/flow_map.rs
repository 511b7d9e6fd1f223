//! The kernel flow map (FLOWS) from user space: the walk the sweep and the
//! per-connection view share, the sweep that removes connections that ended, and how
//! full the map is. Totals live in the counter array, so removing entries loses nothing.
//!
//! The walk is hand-written on bpf(2) BPF_MAP_LOOKUP_BATCH (Linux 5.6+; the daemon
//! needs 5.8): aya 0.16 iterates a HashMap with two syscalls per entry
//! (BPF_MAP_GET_NEXT_KEY, then a lookup, each a hash-bucket search) and has no batch
//! API, while one batch call copies thousands of entries. Walking 1,048,576 entries
//! measured 3.0 s of CPU aya's way and 0.53 s in batches (2-CPU VM, Linux 6.18). The
//! sweep's deletes are hand-written on BPF_MAP_DELETE_BATCH for the same reason: one
//! call removes the stale entries of a whole lookup batch, where aya (and
//! BPF_MAP_DELETE_ELEM) takes a syscall per entry.
//! Reading and deleting through the map's descriptor need no `&mut`, so the daemon
//! keeps no lock around the map that a scrape, the watchdog or another walk waits on.

use std::{
    io,
    ops::ControlFlow,
    os::fd::{AsFd as _, AsRawFd as _, BorrowedFd},
};

use aya::maps::{HashMap, MapData};
use keepalive_common::flow::{FlowKey, FlowState, flow_end};

/// The kernel's flow map (FLOWS in keepalive-ebpf) typed, to check its key and value
/// sizes against [`FlowKey`] and [`FlowState`] once; the walks use its descriptor.
pub type TypedFlowMap<'a> = HashMap<&'a MapData, FlowKey, FlowState>;

/// Closed connections stay this long so late segments (TIME-WAIT ACKs) find them.
pub const CLOSED_GRACE_NS: u64 = 60_000_000_000;

/// Entries per BPF_MAP_LOOKUP_BATCH call: 4096 x 144 bytes = 576 KiB of buffers, few
/// enough syscalls (256 per 1,048,576 entries) that their cost is noise, and far more
/// than one hash bucket ever holds (the kernel fails the call if a bucket does not fit).
pub const BATCH_ENTRIES: usize = 4096;

/// `enum bpf_cmd` values from include/uapi/linux/bpf.h.
const BPF_MAP_DELETE_ELEM: libc::c_long = 3;
const BPF_MAP_LOOKUP_BATCH: libc::c_long = 24;
const BPF_MAP_UPDATE_BATCH: libc::c_long = 26;
const BPF_MAP_DELETE_BATCH: libc::c_long = 27;

/// Why the flow map could not be walked.
#[derive(Debug, thiserror::Error)]
pub enum FlowMapError {
    #[error(
        "reading the flow map in batches (bpf BPF_MAP_LOOKUP_BATCH) failed; the daemon \
         needs Linux 5.8 or later and the map descriptor it created"
    )]
    Batch {
        #[source]
        source: io::Error,
    },
}

/// How a walk ended: entries seen, and whether it stopped before the end of the map.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Walked {
    pub entries: u64,
    /// The callback stopped it (a cap or a time budget) before the map's end.
    pub stopped: bool,
}

/// Zeroed key and value buffers of `n` entries each.
fn buffers(n: usize) -> (Vec<FlowKey>, Vec<FlowState>) {
    let key = FlowKey {
        local_addr: [0; 4],
        remote_addr: [0; 4],
        local_port: 0,
        remote_port: 0,
        family: 0,
    };
    (vec![key; n], vec![FlowState::default(); n])
}

/// `union bpf_attr` as BPF_MAP_*_BATCH reads it (`struct { in_batch, out_batch, keys,
/// values, count, map_fd, elem_flags, flags }`), padded with zeros.
#[repr(C)]
#[derive(Default)]
struct BatchAttr {
    in_batch: u64,
    out_batch: u64,
    keys: u64,
    values: u64,
    count: u32,
    map_fd: u32,
    elem_flags: u64,
    flags: u64,
    _zero: [u64; 8],
}

/// Walks every entry of the map behind `fd` (FLOWS, whose key and value sizes State
/// checked against FlowKey and FlowState) in batches of `batch` entries, handing each
/// batch to `f` until it breaks or the map ends. Entries created or removed during the
/// walk may or may not be seen (a bucket is copied atomically, the map is not). The
/// loop ends: each call moves past at least one hash bucket (the kernel skips empty
/// ones), and there are as many buckets as --flows.max rounded up to a power of two.
pub fn walk(
    fd: BorrowedFd<'_>,
    batch: usize,
    mut f: impl FnMut(&[FlowKey], &[FlowState]) -> ControlFlow<()>,
) -> Result<Walked, FlowMapError> {
    let (mut keys, mut values) = buffers(batch.max(1));
    // The position for the next call (for hash maps a bucket index, 4 bytes); the
    // first call starts at the beginning when `in_batch` is null.
    let mut token = 0u64;
    let mut walked = Walked::default();
    let mut first = true;
    loop {
        let mut attr = BatchAttr {
            in_batch: if first { 0 } else { &raw const token as u64 },
            out_batch: &raw mut token as u64,
            keys: keys.as_mut_ptr() as u64,
            values: values.as_mut_ptr() as u64,
            count: keys.len() as u32,
            map_fd: fd.as_raw_fd() as u32,
            ..Default::default()
        };
        first = false;
        // The kernel writes at most `count` keys and values (arrays of exactly that many
        // `#[repr(C)]` entries of the map's key and value sizes), 4 bytes of `token`,
        // and `count` back. ENOENT: the map's end, with the last entries (possibly
        // none) in the buffers.
        let end = match batch_call(BPF_MAP_LOOKUP_BATCH, &mut attr) {
            Ok(()) => false,
            Err(source) if source.raw_os_error() == Some(libc::ENOENT) => true,
            Err(source) => return Err(FlowMapError::Batch { source }),
        };
        let n = (attr.count as usize).min(keys.len());
        walked.entries += n as u64;
        if f(&keys[..n], &values[..n]).is_break() {
            walked.stopped = !end;
            return Ok(walked);
        }
        if end {
            return Ok(walked);
        }
    }
}

/// `union bpf_attr` as BPF_MAP_DELETE_ELEM reads it (`struct { map_fd; key; ... }`).
#[repr(C)]
#[derive(Default)]
struct ElemAttr {
    map_fd: u32,
    _pad: u32,
    key: u64,
    _zero: [u64; 14],
}

/// Writes `keys` and `values` into the map behind `fd` with one BPF_MAP_UPDATE_BATCH
/// call; returns how many the kernel wrote. The daemon never writes the flow map: the
/// tests fill it through this, so the batch attribute block exists once.
pub fn update_batch(fd: BorrowedFd<'_>, keys: &[FlowKey], values: &[FlowState]) -> io::Result<u32> {
    let mut attr = BatchAttr {
        keys: keys.as_ptr() as u64,
        values: values.as_ptr() as u64,
        count: keys.len().min(values.len()) as u32,
        map_fd: fd.as_raw_fd() as u32,
        ..Default::default()
    };
    batch_call(BPF_MAP_UPDATE_BATCH, &mut attr)?;
    Ok(attr.count)
}

/// bpf(`cmd`, `attr`) for a batch command; the kernel writes `count` back.
fn batch_call(cmd: libc::c_long, attr: &mut BatchAttr) -> io::Result<()> {
    // SAFETY: bpf(2) with an attribute block we own; its pointers were set by the
    // caller to buffers of `count` keys and values (and a token) that outlive the call.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_bpf,
            cmd,
            std::ptr::from_mut(attr),
            size_of::<BatchAttr>(),
        )
    };
    if rc < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// Removes `keys` from the map behind `fd`, as many per BPF_MAP_DELETE_BATCH call as
/// it takes; returns how many were removed (keys gone already do not count). Public for
/// the tests, which check it on the kernel's map.
pub fn delete_keys(fd: BorrowedFd<'_>, keys: &[FlowKey]) -> u64 {
    delete_in_batches(
        keys,
        |rest| {
            let mut attr = BatchAttr {
                keys: rest.as_ptr() as u64,
                count: rest.len() as u32,
                map_fd: fd.as_raw_fd() as u32,
                ..Default::default()
            };
            // The kernel reads `count` keys and writes back how many it deleted.
            batch_call(BPF_MAP_DELETE_BATCH, &mut attr).map_err(|e| (attr.count as usize, e))
        },
        |key| delete(fd, key),
    )
}

/// What one BPF_MAP_DELETE_BATCH call did: Ok, all deleted; or how many it deleted
/// (in order) before the key it stopped at, and why it stopped.
type BatchDeleted = Result<(), (usize, io::Error)>;

/// The batch delete's bookkeeping, apart from the syscalls (`batch` deletes a slice,
/// `one` a single key), so its host tests can play the kernel. The kernel deletes in
/// order and stops at the first key it cannot delete, reporting how many it did:
/// ENOENT means that key is gone already (the LRU evicted it meanwhile), so it is
/// skipped and the rest goes in the next call. After any other error the rest goes one
/// key at a time (a key gone already is not counted there either); the count is the
/// kernel's only if below the count asked for: an error before the first delete
/// (EINVAL, EPERM) leaves it as we wrote it. Each call deletes or skips at least one
/// key: at most `keys.len()` calls.
fn delete_in_batches<K>(
    keys: &[K],
    mut batch: impl FnMut(&[K]) -> BatchDeleted,
    mut one: impl FnMut(&K) -> bool,
) -> u64 {
    let mut removed = 0u64;
    let mut rest = keys;
    while !rest.is_empty() {
        match batch(rest) {
            Ok(()) => return removed + rest.len() as u64,
            Err((done, e)) if e.raw_os_error() == Some(libc::ENOENT) && done < rest.len() => {
                removed += done as u64;
                rest = &rest[done + 1..];
            }
            Err((done, _)) => {
                let done = if done < rest.len() { done } else { 0 };
                let singles = rest[done..].iter().filter(|k| one(k)).count();
                return removed + (done + singles) as u64;
            }
        }
    }
    removed
}

/// Removes `key` from the map behind `fd`; false if it was gone already.
fn delete(fd: BorrowedFd<'_>, key: &FlowKey) -> bool {
    let mut attr = ElemAttr {
        map_fd: fd.as_raw_fd() as u32,
        key: std::ptr::from_ref(key) as u64,
        ..Default::default()
    };
    // SAFETY: bpf(2) with an attribute block we own; the kernel reads the key's 40
    // bytes through a reference that outlives the call.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_bpf,
            BPF_MAP_DELETE_ELEM,
            &raw mut attr,
            size_of::<ElemAttr>(),
        )
    };
    rc == 0
}

/// What one sweep saw and did.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct SweepResult {
    /// Entries it removed (closed connections past [`CLOSED_GRACE_NS`]).
    pub removed: u64,
    /// Entries it read: those left and those removed.
    pub walked: u64,
}

impl SweepResult {
    /// Entries left in the map.
    pub fn entries(&self) -> u64 {
        self.walked.saturating_sub(self.removed)
    }
}

/// Whether a flow may be forgotten at monotonic time `now_ns`.
pub fn is_stale(state: &FlowState, now_ns: u64) -> bool {
    state.end != flow_end::OPEN && now_ns.saturating_sub(state.last_seen_ns) > CLOSED_GRACE_NS
}

/// The keys of the stale entries of one lookup batch, appended to `out`.
fn stale_keys(keys: &[FlowKey], values: &[FlowState], now_ns: u64, out: &mut Vec<FlowKey>) {
    out.extend(
        keys.iter()
            .zip(values)
            .filter(|(_, state)| is_stale(state, now_ns))
            .map(|(key, _)| *key),
    );
}

/// Counts the entries of the flow map and removes the stale ones, batch by batch (one
/// delete call per lookup batch with stale entries), so memory stays at one batch
/// whatever the map's size. Removing entries of a batch already copied does not
/// disturb the walk (it goes on with the next hash bucket).
pub fn sweep(map: &MapData, now_ns: u64) -> Result<SweepResult, FlowMapError> {
    let fd = map.fd().as_fd();
    let mut removed = 0;
    let mut stale = Vec::new();
    let walked = walk(fd, BATCH_ENTRIES, |keys, values| {
        stale.clear();
        stale_keys(keys, values, now_ns, &mut stale);
        if !stale.is_empty() {
            // Keys the kernel evicted or removed meanwhile are skipped, not counted.
            removed += delete_keys(fd, &stale);
        }
        ControlFlow::Continue(())
    })?;
    Ok(SweepResult {
        removed,
        walked: walked.entries,
    })
}

/// Entries the LRU map evicted: every entry the kernel created is either still there,
/// removed by the daemon's sweep, or evicted (the kernel programs never delete). Counts
/// that moved between the reads can only lower the result; it never goes below zero.
pub fn evictions(created: u64, swept: u64, present: u64) -> u64 {
    created.saturating_sub(swept).saturating_sub(present)
}

fn clock_ns(clock: libc::clockid_t) -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: ts is a valid, writable timespec; both clocks used here always exist.
    unsafe { libc::clock_gettime(clock, &mut ts) };
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

/// CLOCK_MONOTONIC in nanoseconds: the clock of bpf_ktime_get_ns().
pub fn monotonic_ns() -> u64 {
    clock_ns(libc::CLOCK_MONOTONIC)
}

/// CPU time of the calling thread (user and kernel, so the batches' copies count).
pub fn thread_cpu_ns() -> u64 {
    clock_ns(libc::CLOCK_THREAD_CPUTIME_ID)
}
#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn evictions_are_what_is_neither_present_nor_swept() {
        assert_eq!(evictions(300, 0, 64), 236);
        assert_eq!(evictions(300, 10, 64), 226);
        assert_eq!(evictions(10, 0, 10), 0);
        // Entries created after `created` was read: no negative evictions.
        assert_eq!(evictions(10, 0, 12), 0);
    }

    fn key(port: u16) -> FlowKey {
        FlowKey {
            local_port: port,
            ..buffers(1).0[0]
        }
    }

    #[test]
    fn stale_keys_are_the_closed_flows_past_the_grace_period_in_order() {
        let now = 10 * CLOSED_GRACE_NS;
        let closed = |last_seen_ns| FlowState {
            end: flow_end::CLOSED,
            last_seen_ns,
            ..Default::default()
        };
        let open_long_idle = FlowState::default();
        let keys = [key(1), key(2), key(3), key(4), key(5)];
        let values = [
            closed(0),
            open_long_idle,
            closed(now),
            closed(1),
            closed(now - 1),
        ];
        let mut out = vec![key(9)];
        stale_keys(&keys, &values, now, &mut out);
        assert_eq!(out, [key(9), key(1), key(4)]);
    }

    /// A map as the kernel's batch delete treats it: in order, stopping with ENOENT
    /// (and the count done) at the first key it does not hold.
    struct FakeMap {
        present: std::collections::HashSet<u32>,
        batch_calls: usize,
        single_calls: usize,
    }

    impl FakeMap {
        fn new(present: impl IntoIterator<Item = u32>) -> FakeMap {
            FakeMap {
                present: present.into_iter().collect(),
                batch_calls: 0,
                single_calls: 0,
            }
        }

        fn delete(&mut self, keys: &[u32]) -> u64 {
            let present = std::cell::RefCell::new(std::mem::take(&mut self.present));
            let (mut batches, mut singles) = (0, 0);
            let removed = delete_in_batches(
                keys,
                |rest| {
                    batches += 1;
                    for (done, k) in rest.iter().enumerate() {
                        if !present.borrow_mut().remove(k) {
                            return Err((done, io::Error::from_raw_os_error(libc::ENOENT)));
                        }
                    }
                    Ok(())
                },
                |k| {
                    singles += 1;
                    present.borrow_mut().remove(k)
                },
            );
            (self.batch_calls, self.single_calls) = (batches, singles);
            self.present = present.into_inner();
            removed
        }
    }

    #[test]
    fn batch_deletes_count_exactly_and_skip_keys_already_gone() {
        let mut m = FakeMap::new(0..10);
        assert_eq!(m.delete(&[0, 1, 2]), 3);
        assert_eq!(m.batch_calls, 1, "all present: one call");
        // Gone already: first, in a run, last; a call stops at each of the four.
        assert_eq!(m.delete(&[2, 3, 1, 0, 4, 5, 11]), 3);
        assert_eq!(m.batch_calls, 4);
        assert_eq!(m.single_calls, 0);
        assert_eq!(m.present, (6..10).collect());
        assert_eq!(m.delete(&[6, 6, 7]), 2, "a key twice counts once");
        assert_eq!(m.delete(&[]), 0);
        assert_eq!(m.batch_calls, 0, "no keys: no call");
    }

    /// Deletes of keys 1, 2, 3, 4 (3 absent) when the batch call fails with EFAULT
    /// after deleting `before_failing` keys and reports `count`.
    fn failing_batch(before_failing: usize, count: impl Fn(usize) -> usize) -> (u64, usize) {
        let present = std::cell::RefCell::new(std::collections::HashSet::from([1u32, 2, 4]));
        let mut calls = 0;
        let removed = delete_in_batches(
            &[1, 2, 3, 4],
            |rest| {
                calls += 1;
                for k in &rest[..before_failing] {
                    present.borrow_mut().remove(k);
                }
                Err((
                    count(rest.len()),
                    io::Error::from_raw_os_error(libc::EFAULT),
                ))
            },
            |k| present.borrow_mut().remove(k),
        );
        assert!(present.borrow().is_empty(), "every present key deleted");
        (removed, calls)
    }

    #[test]
    fn other_batch_errors_go_on_one_key_at_a_time_and_count_exactly() {
        // Stopped at key 2 after deleting key 1, and said so.
        assert_eq!(failing_batch(1, |_| 1), (3, 1));
        // Failed before deleting anything: the count is still the one asked for.
        assert_eq!(failing_batch(0, |asked| asked), (3, 1));
    }

    #[test]
    fn only_closed_flows_past_the_grace_period_are_stale() {
        let mut st = FlowState {
            last_seen_ns: 1_000,
            ..Default::default()
        };
        let later = 1_000 + CLOSED_GRACE_NS + 1;
        assert!(!is_stale(&st, later), "open flows stay, however idle");
        st.end = flow_end::CLOSED;
        assert!(!is_stale(&st, 1_000 + CLOSED_GRACE_NS));
        assert!(is_stale(&st, later));
        st.end = flow_end::PEER_RESET;
        assert!(is_stale(&st, later));
    }
}

//! The keepalive audit's inventory: an `iter/tcp` program that writes one
//! keepalive_common::audit::SocketRecord per established TCP socket of the namespace
//! the reader created the iterator in, then a trailer with the clocks.
//!
//! aya-ebpf has no #[iter] macro (aya issue 1742), so the section and the context
//! struct (bpf_iter__tcp, include/linux/bpf.h and net/ipv4/tcp_ipv4.c) are declared by
//! hand. Every socket field is read with bpf_probe_read_kernel at BTF offsets (Rust has
//! no CO-RE), which works on every kernel with the iterator, unlike bpf_getsockopt.
//!
//! Each read is a helper call, and the walk costs about a microsecond a socket, so the
//! reads are cut where the answer is known: adjacent fields in one read (the
//! `audit_flags` stretches), and what every socket of a walk shares (its namespace's
//! `struct net`: the namespace inode and sysctls) or consecutive sockets mostly share
//! (the cgroup id) read once per walk and kept in a per-CPU cache ([`WalkCache`]).

use aya_ebpf::{
    helpers::{bpf_jiffies64, bpf_ktime_get_ns, generated::bpf_seq_write},
    macros::map,
    maps::PerCpuArray,
};
use keepalive_common::{
    audit::{SocketRecord, record_flags},
    audit_config::{AuditConfig, audit_flags},
};

use crate::{
    audit_sock::{cgroup_of, flow_key_of, head, id_of_cgroup, idle_jiffies, keepalive_on},
    maps::audit_config,
    sock::read,
};

/// The namespace values every socket of a walk shares.
#[repr(C)]
#[derive(Clone, Copy, Default)]
struct NetValues {
    netns_inum: u32,
    sysctl_time: u32,
    sysctl_intvl: u32,
    sysctl_probes: u32,
}

/// What sockets of one walk share, read once: the namespace values of `net` for the
/// iterator session `session` (unique per walk: a new walk reads again, so a changed
/// sysctl shows at the next walk), and the cgroup id of the cgroup `cgroup`. A socket
/// holds a reference on both, so a pointer met during a walk is that object.
///
/// The program runs with migration disabled but may be preempted (PREEMPT_RCU), and
/// another walk on this CPU may then rewrite the entry: each part is written between
/// two copies of a tag unique to the write (`*_begin` first, `*_end` last, volatile, so
/// in that order), a reader reads them the other way round (end, the part, begin) and
/// uses the part only when both agree and the key matches; otherwise it reads the
/// kernel as without the cache.
#[repr(C)]
#[derive(Clone, Copy)]
pub struct WalkCache {
    net_begin: u64,
    session: u64,
    net: u64,
    values: NetValues,
    net_end: u64,
    cgroup_begin: u64,
    cgroup: u64,
    cgroup_id: u64,
    cgroup_end: u64,
}

#[map]
static AUDIT_WALK_CACHE: PerCpuArray<WalkCache> = PerCpuArray::with_max_entries(1, 0);

/// A tag unique to one write of a part of the cache on this CPU.
#[inline(always)]
fn tag() -> u64 {
    // SAFETY: a helper without arguments, callable from iterator programs.
    (unsafe { bpf_ktime_get_ns() }) | 1
}

/// The namespace values of `net` for this walk, from the cache when it holds them.
#[inline(always)]
fn net_values(ac: &AuditConfig, net: u64, session: u64) -> Option<NetValues> {
    use core::ptr::{read_volatile as get, write_volatile as put};
    let Some(c) = AUDIT_WALK_CACHE.get_ptr_mut(0) else {
        return read_net(ac, net);
    };
    // SAFETY: c points at this CPU's entry of a one-entry array; volatile accesses keep
    // the order the tags rely on.
    // The tags are read in the opposite order to their writing (end first, begin
    // last): a write that began before or during the copy leaves them different.
    unsafe {
        let end = get(&raw const (*c).net_end);
        let (s, n, v) = (
            get(&raw const (*c).session),
            get(&raw const (*c).net),
            get(&raw const (*c).values),
        );
        if end != 0 && get(&raw const (*c).net_begin) == end && s == session && n == net {
            return Some(v);
        }
    }
    let v = read_net(ac, net)?;
    let t = tag();
    // SAFETY: as above.
    unsafe {
        put(&raw mut (*c).net_begin, t);
        put(&raw mut (*c).session, session);
        put(&raw mut (*c).net, net);
        put(&raw mut (*c).values, v);
        put(&raw mut (*c).net_end, t);
    }
    Some(v)
}

/// The cgroup id of `cgroup` from the cache when it holds it.
#[inline(always)]
fn cached_id(cgroup: u64) -> Option<u64> {
    use core::ptr::read_volatile as get;
    let c = AUDIT_WALK_CACHE.get_ptr_mut(0)?;
    // SAFETY: as in net_values.
    // Tags read end first, begin last, as in net_values.
    unsafe {
        let end = get(&raw const (*c).cgroup_end);
        let (g, id) = (get(&raw const (*c).cgroup), get(&raw const (*c).cgroup_id));
        (end != 0 && get(&raw const (*c).cgroup_begin) == end && g == cgroup).then_some(id)
    }
}

/// Keeps `id` as the cgroup id of `cgroup`.
#[inline(always)]
fn cache_id(cgroup: u64, id: u64) {
    use core::ptr::write_volatile as put;
    let Some(c) = AUDIT_WALK_CACHE.get_ptr_mut(0) else {
        return;
    };
    let t = tag();
    // SAFETY: as in net_values.
    unsafe {
        put(&raw mut (*c).cgroup_begin, t);
        put(&raw mut (*c).cgroup, cgroup);
        put(&raw mut (*c).cgroup_id, id);
        put(&raw mut (*c).cgroup_end, t);
    }
}

/// TCP_ESTABLISHED in include/net/tcp_states.h (stable ABI: it is in uapi's
/// bpf.h BPF_TCP_ESTABLISHED too).
const TCP_ESTABLISHED: u8 = 1;

#[repr(C)]
struct BpfIterMeta {
    seq: *mut aya_ebpf::bindings::seq_file,
    session_id: u64,
    seq_num: u64,
}

#[repr(C)]
struct BpfIterTcp {
    meta: *const BpfIterMeta,
    /// NULL on the last call, after the last socket.
    sk_common: u64,
    uid: u32,
}

#[unsafe(no_mangle)]
#[unsafe(link_section = "iter/tcp")]
pub fn ka_audit_iter(ctx: *mut core::ffi::c_void) -> i32 {
    let ctx = ctx as *const BpfIterTcp;
    // SAFETY: the kernel passes a bpf_iter__tcp; the verifier checks these context
    // loads (meta is a trusted pointer, sk_common may be NULL and is only compared and
    // used as an address for bpf_probe_read_kernel).
    let (meta, sk, uid) = unsafe { ((*ctx).meta, (*ctx).sk_common, (*ctx).uid) };
    // SAFETY: meta is non-NULL for iterator programs (PTR_TO_BTF_ID, trusted).
    let seq = unsafe { (*meta).seq };
    let ac = audit_config();
    if ac.flags & audit_flags::VALID == 0 {
        return 0;
    }
    // SAFETY: as above.
    let session = unsafe { (*meta).session_id };
    let rec = if sk == 0 {
        Some(trailer())
    } else {
        record(&ac, sk, uid, session)
    };
    if let Some(rec) = rec {
        // SAFETY: seq is the iterator's seq_file; rec is a live stack value of the
        // length passed. A full buffer makes the kernel call us again for the same
        // socket after the reader drained it, so nothing is lost.
        unsafe {
            bpf_seq_write(
                seq,
                &rec as *const SocketRecord as *const _,
                core::mem::size_of::<SocketRecord>() as u32,
            )
        };
    }
    0
}

#[inline(always)]
fn trailer() -> SocketRecord {
    SocketRecord {
        flags: record_flags::TRAILER,
        // SAFETY: helpers without arguments, callable from iterator programs.
        now_jiffies: unsafe { bpf_jiffies64() },
        // SAFETY: as above.
        now_ns: unsafe { bpf_ktime_get_ns() },
        ..Default::default()
    }
}

#[inline(always)]
fn record(ac: &AuditConfig, sk: u64, uid: u32, session: u64) -> Option<SocketRecord> {
    // The iterator also yields listening, TIME_WAIT and request sockets (the latter
    // two are not full tcp_socks): only established ones are read further.
    let h = head(ac, sk)?;
    if h.state != TCP_ESTABLISHED {
        return None;
    }
    let key = flow_key_of(ac, sk, &h)?;
    let net = net_values(ac, read::<u64>(sk + ac.skc_net_off as u64)?, session)?;
    // SAFETY: helpers without arguments, callable from iterator programs.
    let (now_jiffies, now_ns) = unsafe { (bpf_jiffies64(), bpf_ktime_get_ns()) };
    let keepalive = keepalive_on(ac, sk)?;
    let (keepalive_time, keepalive_intvl) = keepalive_times(ac, sk)?;
    Some(SocketRecord {
        key,
        flags: if keepalive {
            record_flags::KEEPALIVE
        } else {
            0
        },
        netns_inum: net.netns_inum,
        uid,
        keepalive_time,
        keepalive_intvl,
        keepalive_probes: read::<u8>(sk + ac.keepalive_probes_off as u64)? as u32,
        sysctl_keepalive_time: net.sysctl_time,
        sysctl_keepalive_intvl: net.sysctl_intvl,
        sysctl_keepalive_probes: net.sysctl_probes,
        user_timeout_ms: read::<u32>(sk + ac.user_timeout_off as u64)?,
        idle_jiffies: idle_jiffies(ac, sk, now_jiffies)?,
        _pad: 0,
        cgroup_id: cached_cgroup_id(ac, sk),
        socket_inode: socket_inode(ac, sk),
        now_jiffies,
        now_ns,
    })
}

/// The namespace inode and keepalive sysctls of `net`.
#[inline(always)]
fn read_net(ac: &AuditConfig, net: u64) -> Option<NetValues> {
    Some(NetValues {
        netns_inum: read::<u32>(net + ac.net_inum_off as u64)?,
        sysctl_time: read::<u32>(net + ac.sysctl_time_off as u64)?,
        sysctl_intvl: read::<u32>(net + ac.sysctl_intvl_off as u64)?,
        sysctl_probes: if ac.sysctl_probes_size == 1 {
            read::<u8>(net + ac.sysctl_probes_off as u64)? as u32
        } else {
            read::<u32>(net + ac.sysctl_probes_off as u64)?
        },
    })
}

/// tcp_sock's keepalive_time and keepalive_intvl, in one read where adjacent.
#[inline(always)]
fn keepalive_times(ac: &AuditConfig, sk: u64) -> Option<(u32, u32)> {
    if ac.flags & audit_flags::KEEPALIVE_PAIR != 0 {
        let [time, intvl] = read::<[u32; 2]>(sk + ac.keepalive_time_off as u64)?;
        return Some((time, intvl));
    }
    Some((
        read::<u32>(sk + ac.keepalive_time_off as u64)?,
        read::<u32>(sk + ac.keepalive_intvl_off as u64)?,
    ))
}

/// The socket's cgroup v2 id (as audit_sock::cgroup_id), the kernfs reads skipped when the
/// socket's cgroup is the one whose id this CPU read last (a cgroup's id never changes).
#[inline(always)]
fn cached_cgroup_id(ac: &AuditConfig, sk: u64) -> u64 {
    let Some(cgroup) = cgroup_of(ac, sk) else {
        return 0;
    };
    if let Some(id) = cached_id(cgroup) {
        return id;
    }
    let Some(id) = id_of_cgroup(ac, cgroup) else {
        return 0;
    };
    cache_id(cgroup, id);
    id
}

/// SOCK_INODE(sk->sk_socket)->i_ino, 0 for a socket without a `struct socket`.
#[inline(always)]
fn socket_inode(ac: &AuditConfig, sk: u64) -> u64 {
    if ac.flags & audit_flags::HAVE_SOCKET_INODE == 0 {
        return 0;
    }
    match read::<u64>(sk + ac.sk_socket_off as u64) {
        Some(sock) if sock != 0 => read::<u64>(sock + ac.socket_ino_off as u64).unwrap_or(0),
        _ => 0,
    }
}

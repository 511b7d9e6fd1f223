//! The keepalive audit's inventory: an `iter/tcp` program that writes one
//! keepalive_common::audit::SocketRecord per established TCP socket of the namespace
//! the reader created the iterator in, then a trailer with the clocks.
//!
//! aya-ebpf has no #[iter] macro (aya issue 1742), so the section and the context
//! struct (bpf_iter__tcp, include/linux/bpf.h and net/ipv4/tcp_ipv4.c) are declared by
//! hand. Every socket field is read with bpf_probe_read_kernel at BTF offsets (Rust has
//! no CO-RE), which works on every kernel with the iterator, unlike bpf_getsockopt.

use aya_ebpf::helpers::{bpf_jiffies64, bpf_ktime_get_ns, generated::bpf_seq_write};
use keepalive_common::{
    audit::{SocketRecord, record_flags},
    audit_config::{AuditConfig, audit_flags},
};

use crate::{
    audit_sock::{cgroup_id, flow_key, idle_jiffies, keepalive_on, net},
    maps::audit_config,
    sock::read,
};

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
    let rec = if sk == 0 {
        Some(trailer())
    } else {
        record(&ac, sk, uid)
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
fn record(ac: &AuditConfig, sk: u64, uid: u32) -> Option<SocketRecord> {
    // The iterator also yields listening, TIME_WAIT and request sockets (the latter
    // two are not full tcp_socks): only established ones are read further.
    if read::<u8>(sk + ac.skc_state_off as u64)? != TCP_ESTABLISHED {
        return None;
    }
    let key = flow_key(ac, sk)?;
    let (net, netns_inum) = net(ac, sk)?;
    // SAFETY: helpers without arguments, callable from iterator programs.
    let (now_jiffies, now_ns) = unsafe { (bpf_jiffies64(), bpf_ktime_get_ns()) };
    let probes = if ac.sysctl_probes_size == 1 {
        read::<u8>(net + ac.sysctl_probes_off as u64)? as u32
    } else {
        read::<u32>(net + ac.sysctl_probes_off as u64)?
    };
    let keepalive = keepalive_on(ac, sk)?;
    Some(SocketRecord {
        key,
        flags: if keepalive {
            record_flags::KEEPALIVE
        } else {
            0
        },
        netns_inum,
        uid,
        keepalive_time: read::<u32>(sk + ac.keepalive_time_off as u64)?,
        keepalive_intvl: read::<u32>(sk + ac.keepalive_intvl_off as u64)?,
        keepalive_probes: read::<u8>(sk + ac.keepalive_probes_off as u64)? as u32,
        sysctl_keepalive_time: read::<u32>(net + ac.sysctl_time_off as u64)?,
        sysctl_keepalive_intvl: read::<u32>(net + ac.sysctl_intvl_off as u64)?,
        sysctl_keepalive_probes: probes,
        user_timeout_ms: read::<u32>(sk + ac.user_timeout_off as u64)?,
        idle_jiffies: idle_jiffies(ac, sk, now_jiffies)?,
        _pad: 0,
        cgroup_id: cgroup_id(ac, sk),
        socket_inode: socket_inode(ac, sk),
        now_jiffies,
        now_ns,
    })
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

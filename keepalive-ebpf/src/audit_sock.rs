//! Reads of a TCP socket shared by the audit programs (the `iter/tcp` inventory in
//! audit_iter.rs and the endings in idle_death_tracepoint.rs and sock.rs), at the
//! offsets the daemon resolved from BTF (AuditConfig), and the ending events.

use aya_ebpf::helpers::{bpf_jiffies64, bpf_ktime_get_ns};
use keepalive_common::{
    Family,
    audit::{Ending, EndingKind, record_flags},
    audit_config::{AuditConfig, audit_flags},
    counters,
    flow::FlowKey,
};

use crate::{
    maps::{ENDINGS, count},
    sock::read,
};

const AF_INET: u16 = 2;
const AF_INET6: u16 = 10;
/// Bytes 8..12 of an IPv4-mapped IPv6 address (::ffff:a.b.c.d), as a u32 in memory.
const V4_MAPPED_WORD2: u32 = u32::from_ne_bytes([0, 0, 0xff, 0xff]);

/// The first 20 bytes of sock_common when [`audit_flags::HEAD_STRETCH`] is set.
#[repr(C)]
#[derive(Clone, Copy)]
struct HeadStretch {
    daddr: u32,
    rcv_saddr: u32,
    _hash: u32,
    dport: u16,
    _num: u16,
    family: u16,
    state: u8,
    _reuse: u8,
}

/// The sock_common fields every audit read starts with.
#[derive(Clone, Copy)]
pub struct Head {
    pub state: u8,
    pub family: u16,
    /// Network order, as in the socket.
    pub dport: u16,
    pub daddr: u32,
    pub rcv_saddr: u32,
}

/// The socket's [`Head`]: one read where the kernel lays sock_common out as every
/// kernel since 4.x does, else one read per field.
#[inline(always)]
pub fn head(ac: &AuditConfig, sk: u64) -> Option<Head> {
    if ac.flags & audit_flags::HEAD_STRETCH != 0 {
        let h = read::<HeadStretch>(sk + ac.skc_daddr_off as u64)?;
        return Some(Head {
            state: h.state,
            family: h.family,
            dport: h.dport,
            daddr: h.daddr,
            rcv_saddr: h.rcv_saddr,
        });
    }
    Some(Head {
        state: read::<u8>(sk + ac.skc_state_off as u64)?,
        family: read::<u16>(sk + ac.skc_family_off as u64)?,
        dport: read::<u16>(sk + ac.skc_dport_off as u64)?,
        daddr: read::<u32>(sk + ac.skc_daddr_off as u64)?,
        rcv_saddr: read::<u32>(sk + ac.skc_rcv_saddr_off as u64)?,
    })
}

/// The connection from this host's side, as the wire programs key it: an IPv4-mapped
/// IPv6 socket sends IPv4 packets, so it gets an IPv4 key. The local port is
/// inet_sport, which stays set while the socket closes (skc_num does not).
#[inline(always)]
pub fn flow_key(ac: &AuditConfig, sk: u64) -> Option<FlowKey> {
    flow_key_of(ac, sk, &head(ac, sk)?)
}

/// [`flow_key`] with the socket's [`Head`] already read.
#[inline(always)]
pub fn flow_key_of(ac: &AuditConfig, sk: u64, h: &Head) -> Option<FlowKey> {
    let sport = read::<u16>(sk + ac.inet_sport_off as u64)?;
    let mut key = FlowKey {
        local_port: u16::from_be(sport),
        remote_port: u16::from_be(h.dport),
        ..Default::default()
    };
    match h.family {
        AF_INET => {
            key.local_addr[0] = h.rcv_saddr;
            key.remote_addr[0] = h.daddr;
            key.family = Family::Ipv4 as u32;
        }
        AF_INET6 => {
            let (d, s) = v6_addrs(ac, sk)?;
            if d[0] == 0 && d[1] == 0 && d[2] == V4_MAPPED_WORD2 {
                key.local_addr[0] = s[3];
                key.remote_addr[0] = d[3];
                key.family = Family::Ipv4 as u32;
            } else {
                key.local_addr = s;
                key.remote_addr = d;
                key.family = Family::Ipv6 as u32;
            }
        }
        _ => return None,
    }
    Some(key)
}

/// skc_v6_daddr and skc_v6_rcv_saddr, with one read where they are adjacent.
#[inline(always)]
fn v6_addrs(ac: &AuditConfig, sk: u64) -> Option<([u32; 4], [u32; 4])> {
    if ac.flags & audit_flags::V6_PAIR != 0 {
        let both = read::<[[u32; 4]; 2]>(sk + ac.skc_v6_daddr_off as u64)?;
        return Some((both[0], both[1]));
    }
    Some((
        read::<[u32; 4]>(sk + ac.skc_v6_daddr_off as u64)?,
        read::<[u32; 4]>(sk + ac.skc_v6_rcv_saddr_off as u64)?,
    ))
}

/// Jiffies since the last segment received, measured as tcp_keepalive_timer() does
/// (keepalive_time_elapsed(), include/net/tcp.h): u32 arithmetic, so a wrapped jiffies
/// counter gives the same answer as in the kernel.
#[inline(always)]
pub fn idle_jiffies(ac: &AuditConfig, sk: u64, now_jiffies: u64) -> Option<u32> {
    let (lrcvtime, rcv_tstamp) = receipt_times(ac, sk)?;
    let now = now_jiffies as u32;
    Some(now.wrapping_sub(lrcvtime).min(now.wrapping_sub(rcv_tstamp)))
}

/// icsk_ack.lrcvtime and tp->rcv_tstamp. Both stay 0 (the socket is allocated zeroed)
/// on a connection that never received anything, such as a connect() that timed out:
/// that is no idle death.
#[inline(always)]
pub fn receipt_times(ac: &AuditConfig, sk: u64) -> Option<(u32, u32)> {
    let lrcvtime = read::<u32>(sk + ac.lrcvtime_off as u64)?;
    let rcv_tstamp = read::<u32>(sk + ac.rcv_tstamp_off as u64)?;
    Some((lrcvtime, rcv_tstamp))
}

/// Whether SO_KEEPALIVE is on (SOCK_KEEPOPEN in sk_flags).
#[inline(always)]
pub fn keepalive_on(ac: &AuditConfig, sk: u64) -> Option<bool> {
    let flags = read::<u64>(sk + ac.sk_flags_off as u64)?;
    Some(flags & (1u64 << (ac.keepopen_bit & 63)) != 0)
}

/// The socket's network namespace inode and its `struct net`.
#[inline(always)]
pub fn net(ac: &AuditConfig, sk: u64) -> Option<(u64, u32)> {
    let net = read::<u64>(sk + ac.skc_net_off as u64)?;
    Some((net, read::<u32>(net + ac.net_inum_off as u64)?))
}

/// The socket's `struct cgroup` (v2): `None` when the layout has none or it is unset.
#[inline(always)]
pub fn cgroup_of(ac: &AuditConfig, sk: u64) -> Option<u64> {
    if ac.flags & audit_flags::HAVE_CGROUP == 0 {
        return None;
    }
    let cgroup = read::<u64>(sk + ac.cgroup_off as u64)?;
    if cgroup == 0 {
        return None;
    }
    Some(cgroup)
}

/// The id of `cgroup` (its kernfs node's id, what user space sees as the cgroup
/// directory's inode).
#[inline(always)]
pub fn id_of_cgroup(ac: &AuditConfig, cgroup: u64) -> Option<u64> {
    let kn = read::<u64>(cgroup + ac.cgroup_kn_off as u64)?;
    if kn == 0 {
        return None;
    }
    read::<u64>(kn + ac.kn_id_off as u64)
}

/// The socket's cgroup v2 id, 0 when unknown.
#[inline(always)]
pub fn cgroup_id(ac: &AuditConfig, sk: u64) -> u64 {
    cgroup_of(ac, sk)
        .and_then(|cgroup| id_of_cgroup(ac, cgroup))
        .unwrap_or(0)
}

/// Sends an ending of `sk` (its idle time already measured) through the ring buffer;
/// a full buffer only loses the event, which is counted.
#[inline(always)]
pub fn send_ending(ac: &AuditConfig, sk: u64, kind: EndingKind, keepalive: bool, idle: u32) {
    let Some(key) = flow_key(ac, sk) else {
        return;
    };
    let netns_inum = net(ac, sk).map_or(0, |(_, inum)| inum);
    let ending = Ending {
        key,
        kind: kind as u32,
        flags: if keepalive {
            record_flags::KEEPALIVE
        } else {
            0
        },
        netns_inum,
        idle_jiffies: idle,
        cgroup_id: cgroup_id(ac, sk),
        // SAFETY: a helper without arguments, always callable from tracing programs.
        now_ns: unsafe { bpf_ktime_get_ns() },
    };
    if ENDINGS.output(&ending, 0).is_err() {
        count(counters::ENDING_EVENTS_LOST);
    }
}

/// The keepalive timer gave up on `sk`: an ending of kind KeepaliveTimeout, so that
/// every reset keepalive caused can be logged.
#[inline(always)]
pub fn keepalive_timeout_ending(sk: u64) {
    let ac = crate::maps::audit_config();
    if ac.flags & audit_flags::VALID == 0 {
        return;
    }
    // SAFETY: a helper without arguments, always callable from tracing programs.
    let now = unsafe { bpf_jiffies64() };
    let idle = idle_jiffies(&ac, sk, now).unwrap_or(0);
    send_ending(&ac, sk, EndingKind::KeepaliveTimeout, true, idle);
}

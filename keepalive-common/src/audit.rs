//! The keepalive audit's contract: what the `iter/tcp` program reports per established
//! socket, what the idle-death hook reports per ending, and the pure rules the daemon
//! applies to them (effective settings, risk per idle limit, histogram buckets).
//!
//! The kernel reports raw kernel units (jiffies, the socket's own fields and its
//! namespace's sysctls); the conversion to seconds happens here, on the host, where it
//! is unit-tested.

use crate::flow::FlowKey;

/// `SocketRecord::flags` and `Ending::flags` bits.
pub mod record_flags {
    /// SOCK_KEEPOPEN is set on the socket (SO_KEEPALIVE).
    pub const KEEPALIVE: u32 = 1 << 0;
    /// The record is the iterator's trailer (written once, at the end of a walk, with no
    /// socket): only `now_jiffies` and `now_ns` are meaningful.
    pub const TRAILER: u32 = 1 << 1;
}

/// One established TCP socket as the `iter/tcp` program writes it (bpf_seq_write), or
/// the trailer that ends a walk. Times are in jiffies as the kernel keeps them.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SocketRecord {
    /// The connection from this host's side (addresses in wire order, ports host order).
    pub key: FlowKey,
    /// `record_flags`.
    pub flags: u32,
    /// Network namespace inode of the socket.
    pub netns_inum: u32,
    /// bpf_iter__tcp's `uid` (the socket's owner).
    pub uid: u32,
    /// tcp_sock's keepalive_time / keepalive_intvl (jiffies) and keepalive_probes;
    /// 0 means "not set on the socket": the namespace's sysctl applies
    /// (keepalive_time_when() and friends, include/net/tcp.h).
    pub keepalive_time: u32,
    pub keepalive_intvl: u32,
    pub keepalive_probes: u32,
    /// The socket's namespace's net.ipv4.tcp_keepalive_time / _intvl (jiffies) and
    /// _probes, read from the socket's `struct net`.
    pub sysctl_keepalive_time: u32,
    pub sysctl_keepalive_intvl: u32,
    pub sysctl_keepalive_probes: u32,
    /// icsk_user_timeout (TCP_USER_TIMEOUT), milliseconds; 0 = not set.
    pub user_timeout_ms: u32,
    /// now - max(icsk_ack.lrcvtime, tp->rcv_tstamp), in jiffies: the idle time the
    /// keepalive timer itself measures (keepalive_time_elapsed(), include/net/tcp.h).
    pub idle_jiffies: u32,
    pub _pad: u32,
    /// cgroup v2 id of the socket (sk_cgrp_data), 0 if unknown.
    pub cgroup_id: u64,
    /// Inode of the socket's `struct socket` (the number in /proc/PID/fd's
    /// `socket:[N]`), 0 for a socket without one.
    pub socket_inode: u64,
    /// bpf_jiffies64() and bpf_ktime_get_ns() when the record was written.
    pub now_jiffies: u64,
    pub now_ns: u64,
}
const _: () = assert!(core::mem::size_of::<SocketRecord>() == 120);

/// How a connection ended, as the idle-death hook and the keepalive-reset hooks report it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u32)]
pub enum EndingKind {
    /// The keepalive timer gave up (also counted in tcp_keepalive_resets_total).
    KeepaliveTimeout = 0,
    /// A RST arrived after the connection had been idle at least --audit.min-idle.
    IdleReset = 1,
    /// The kernel gave up retransmitting (ETIMEDOUT outside the keepalive timer) after
    /// the connection had been idle at least --audit.min-idle.
    IdleRetransmitTimeout = 2,
}

impl EndingKind {
    pub const fn from_u32(v: u32) -> Option<EndingKind> {
        match v {
            0 => Some(EndingKind::KeepaliveTimeout),
            1 => Some(EndingKind::IdleReset),
            2 => Some(EndingKind::IdleRetransmitTimeout),
            _ => None,
        }
    }

    /// The `cause` label of tcp_idle_connection_failures_total (idle deaths only).
    pub const fn cause_label(self) -> &'static str {
        match self {
            EndingKind::KeepaliveTimeout => "keepalive_timeout",
            EndingKind::IdleReset => "reset",
            EndingKind::IdleRetransmitTimeout => "retransmit_timeout",
        }
    }
}

/// One ending, sent to the daemon through a ring buffer for the log line and the
/// connection view's recent endings. The counters are kept in the kernel; a full ring
/// buffer loses only the log line (counted in `counters::ENDING_EVENTS_LOST`).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Ending {
    pub key: FlowKey,
    /// [`EndingKind`] as u32.
    pub kind: u32,
    /// `record_flags` (KEEPALIVE).
    pub flags: u32,
    pub netns_inum: u32,
    /// Jiffies since the last segment received, as `SocketRecord::idle_jiffies`.
    pub idle_jiffies: u32,
    pub cgroup_id: u64,
    /// bpf_ktime_get_ns() at the ending.
    pub now_ns: u64,
}
const _: () = assert!(core::mem::size_of::<Ending>() == 72);

/// Upper bounds (seconds) of tcp_idle_connection_failure_idle_seconds' buckets; the
/// last bucket is +Inf. Includes the documented middlebox limits 240, 350, 900, 1200.
pub const FAILURE_IDLE_BUCKETS_SECONDS: [u32; 15] = [
    1, 5, 10, 30, 60, 120, 240, 300, 350, 600, 900, 1200, 1800, 3600, 7200,
];
/// Buckets including +Inf.
pub const FAILURE_IDLE_BUCKETS: u32 = FAILURE_IDLE_BUCKETS_SECONDS.len() as u32 + 1;

/// The bucket (0-based, non-cumulative; `FAILURE_IDLE_BUCKETS - 1` is +Inf) of an idle
/// time, with the bounds converted to jiffies by the daemon (`bounds_jiffies[i]` =
/// `FAILURE_IDLE_BUCKETS_SECONDS[i] * HZ`). Written for the kernel: a bounded loop.
#[inline(always)]
pub fn failure_bucket(idle_jiffies: u32, bounds_jiffies: &[u32; 15]) -> u32 {
    let mut i = 0;
    while i < bounds_jiffies.len() {
        if idle_jiffies <= bounds_jiffies[i] {
            return i as u32;
        }
        i += 1;
    }
    FAILURE_IDLE_BUCKETS - 1
}

/// Upper bounds (seconds) of the distribution of effective keepalive idle settings
/// (tcp_keepalive_idle_setting_connections{idle_le_seconds}), cumulative like a histogram's
/// buckets; +Inf last.
pub const IDLE_SETTING_BUCKETS_SECONDS: [u32; 11] =
    [30, 60, 120, 240, 300, 350, 600, 900, 1200, 3600, 7200];

/// The HZ values Linux can be built with (kernel/Kconfig.hz).
pub const HZ_CHOICES: [u32; 4] = [100, 250, 300, 1000];

/// HZ from two (jiffies, monotonic ns) samples taken at least 100 ms apart (the
/// iterator's trailers): the Kconfig choice nearest the measured rate, if within 10%.
pub fn hz_from_samples(j0: u64, ns0: u64, j1: u64, ns1: u64) -> Option<u32> {
    let dj = j1.checked_sub(j0)?;
    let dns = ns1.checked_sub(ns0)?;
    if dns < 100_000_000 {
        return None;
    }
    let rate = dj as f64 * 1e9 / dns as f64;
    let best = HZ_CHOICES.iter().copied().min_by(|a, b| {
        let da = (*a as f64 - rate).abs();
        let db = (*b as f64 - rate).abs();
        da.total_cmp(&db)
    })?;
    ((best as f64 - rate).abs() <= best as f64 * 0.1).then_some(best)
}

/// A socket's keepalive settings as the kernel will apply them.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Effective {
    pub keepalive: bool,
    /// Seconds of idleness before the first probe (TCP_KEEPIDLE, else the sysctl).
    pub idle_seconds: u32,
    /// Seconds between probes (TCP_KEEPINTVL, else the sysctl).
    pub interval_seconds: u32,
    /// Unanswered probes before the reset (TCP_KEEPCNT, else the sysctl).
    pub count: u32,
    /// TCP_USER_TIMEOUT in milliseconds, 0 when unset.
    pub user_timeout_ms: u32,
    /// Seconds since the last segment received.
    pub idle_now_seconds: u32,
}

/// The effective settings of a socket record; `hz` from [`hz_from_samples`].
pub fn effective(r: &SocketRecord, hz: u32) -> Effective {
    let hz = hz.max(1);
    let pick = |own: u32, sysctl: u32| if own != 0 { own } else { sysctl };
    Effective {
        keepalive: r.flags & record_flags::KEEPALIVE != 0,
        idle_seconds: pick(r.keepalive_time, r.sysctl_keepalive_time) / hz,
        interval_seconds: pick(r.keepalive_intvl, r.sysctl_keepalive_intvl) / hz,
        count: pick(r.keepalive_probes, r.sysctl_keepalive_probes),
        user_timeout_ms: r.user_timeout_ms,
        idle_now_seconds: r.idle_jiffies / hz,
    }
}

/// Why a connection is at risk behind a middlebox that forgets idle flows.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RiskReason {
    /// SO_KEEPALIVE is off: nothing keeps the middlebox's state alive.
    KeepaliveOff,
    /// The first probe comes at or after the limit: the state is gone by then.
    IdleAtOrAboveLimit,
}

impl RiskReason {
    pub const fn label(self) -> &'static str {
        match self {
            RiskReason::KeepaliveOff => "keepalive_off",
            RiskReason::IdleAtOrAboveLimit => "idle_at_or_above_limit",
        }
    }
}

/// Whether a connection is at risk for a middlebox idle limit of `limit_seconds`.
/// TCP_USER_TIMEOUT does not enter: it bounds how long unacknowledged data or probes
/// may go unanswered, it sends nothing that keeps a middlebox's state.
pub fn at_risk(e: &Effective, limit_seconds: u32) -> Option<RiskReason> {
    if !e.keepalive {
        Some(RiskReason::KeepaliveOff)
    } else if e.idle_seconds >= limit_seconds {
        Some(RiskReason::IdleAtOrAboveLimit)
    } else {
        None
    }
}

#[cfg(feature = "user")]
mod pod {
    // SAFETY: repr(C), Copy, integers only; the size asserts show there is no padding.
    unsafe impl aya::Pod for super::SocketRecord {}
    // SAFETY: as above.
    unsafe impl aya::Pod for super::Ending {}
}

//! Kernel layout the audit programs (the `iter/tcp` inventory and the idle-death hook)
//! read sockets with, and the idle-death parameters that depend on the measured HZ.
//!
//! Rust eBPF has no CO-RE relocations: the daemon resolves these offsets from the
//! kernel's BTF and sets [`AuditConfig`] as a global at load. [`IdleDeathParams`] is
//! written into a one-entry array map after load, because HZ is only known once the
//! iterator has run twice.

/// `AuditConfig::flags` bits.
pub mod audit_flags {
    /// The offsets were resolved: the programs do nothing while this is clear.
    pub const VALID: u32 = 1 << 0;
    /// `cgroup_off`, `cgroup_kn_off` and `kn_id_off` are valid (cgroup v2 id).
    pub const HAVE_CGROUP: u32 = 1 << 1;
    /// `sk_socket_off` and `socket_ino_off` are valid (socket inode).
    pub const HAVE_SOCKET_INODE: u32 = 1 << 2;
    /// sock_common starts as every kernel since 4.x lays it out from skc_daddr:
    /// skc_rcv_saddr at +4, skc_dport at +12, skc_family at +16, skc_state at +18, so
    /// the five are read with one 20-byte read (each read is a helper call).
    pub const HEAD_STRETCH: u32 = 1 << 3;
    /// tcp_sock's keepalive_intvl follows keepalive_time (+4): one read for both.
    pub const KEEPALIVE_PAIR: u32 = 1 << 4;
    /// skc_v6_rcv_saddr follows skc_v6_daddr (+16): one read for both.
    pub const V6_PAIR: u32 = 1 << 5;
}

/// Byte offsets inside kernel structs (all relative to the start of the named struct;
/// `struct sock` starts with its `struct sock_common`, and tcp_sock and
/// inet_connection_sock start with the sock, so every socket offset is from `sk`).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct AuditConfig {
    /// sock_common: skc_state (u8), skc_family (u16), skc_daddr / skc_rcv_saddr
    /// (__be32), skc_dport (__be16), skc_num (u16, host order), skc_v6_daddr /
    /// skc_v6_rcv_saddr (16 bytes), skc_net (struct net *), skc_flags or sk_flags
    /// (unsigned long).
    pub skc_state_off: u32,
    pub skc_family_off: u32,
    pub skc_daddr_off: u32,
    pub skc_rcv_saddr_off: u32,
    pub skc_dport_off: u32,
    pub skc_num_off: u32,
    pub skc_v6_daddr_off: u32,
    pub skc_v6_rcv_saddr_off: u32,
    pub skc_net_off: u32,
    pub sk_flags_off: u32,
    /// struct net: ns.inum (u32), ipv4.sysctl_tcp_keepalive_time / _intvl (int,
    /// jiffies), ipv4.sysctl_tcp_keepalive_probes (u8 since 5.x, int before).
    pub net_inum_off: u32,
    pub sysctl_time_off: u32,
    pub sysctl_intvl_off: u32,
    pub sysctl_probes_off: u32,
    /// Size in bytes of sysctl_tcp_keepalive_probes (1 or 4).
    pub sysctl_probes_size: u32,
    /// tcp_sock: keepalive_time, keepalive_intvl (u32, jiffies), keepalive_probes (u8),
    /// rcv_tstamp (u32, jiffies).
    pub keepalive_time_off: u32,
    pub keepalive_intvl_off: u32,
    pub keepalive_probes_off: u32,
    pub rcv_tstamp_off: u32,
    /// inet_connection_sock: icsk_ack.lrcvtime (u32, jiffies), icsk_user_timeout (u32,
    /// ms).
    pub lrcvtime_off: u32,
    pub user_timeout_off: u32,
    /// sock.sk_cgrp_data.cgroup (struct cgroup *), cgroup.kn (struct kernfs_node *),
    /// kernfs_node.id (u64): the cgroup v2 id.
    pub cgroup_off: u32,
    pub cgroup_kn_off: u32,
    pub kn_id_off: u32,
    /// sock.sk_socket (struct socket *), and the offset from the `struct socket` to its
    /// inode's i_ino: `struct socket_alloc` holds the socket and then `vfs_inode`.
    pub sk_socket_off: u32,
    pub socket_ino_off: u32,
    /// The bit number of SOCK_KEEPOPEN in sk_flags (enum sock_flags).
    pub keepopen_bit: u32,
    /// `audit_flags`.
    pub flags: u32,
    /// inet_sock.inet_sport (__be16): the local port of a socket that is being closed
    /// (tcp_set_state(TCP_CLOSE) releases the port and zeroes skc_num first).
    pub inet_sport_off: u32,
    pub _pad: u32,
}
const _: () = assert!(core::mem::size_of::<AuditConfig>() == 120);

/// The idle-death hook's parameters, in jiffies (they depend on HZ). `hz == 0` means
/// the hook is not set up yet: it counts nothing.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct IdleDeathParams {
    pub hz: u32,
    /// --audit.min-idle in jiffies: endings after a shorter idle time are not idle
    /// deaths.
    pub min_idle_jiffies: u32,
    /// `audit::FAILURE_IDLE_BUCKETS_SECONDS` times HZ.
    pub bounds_jiffies: [u32; 15],
    pub _pad: u32,
}
const _: () = assert!(core::mem::size_of::<IdleDeathParams>() == 72);

impl IdleDeathParams {
    /// The parameters for `hz` and a minimum idle time in milliseconds.
    pub fn new(hz: u32, min_idle_ms: u64) -> IdleDeathParams {
        let mut bounds_jiffies = [0u32; 15];
        let mut i = 0;
        while i < bounds_jiffies.len() {
            bounds_jiffies[i] = crate::audit::FAILURE_IDLE_BUCKETS_SECONDS[i].saturating_mul(hz);
            i += 1;
        }
        let min = min_idle_ms.saturating_mul(hz as u64).div_ceil(1000);
        IdleDeathParams {
            hz,
            min_idle_jiffies: u32::try_from(min).unwrap_or(u32::MAX),
            bounds_jiffies,
            _pad: 0,
        }
    }
}

#[cfg(feature = "user")]
mod pod {
    // SAFETY: repr(C), Copy, integers only; the size asserts show there is no padding.
    unsafe impl aya::Pod for super::AuditConfig {}
    // SAFETY: as above.
    unsafe impl aya::Pod for super::IdleDeathParams {}
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn params_convert_seconds_to_jiffies() {
        let p = IdleDeathParams::new(250, 2000);
        assert_eq!(p.hz, 250);
        assert_eq!(p.min_idle_jiffies, 500);
        assert_eq!(p.bounds_jiffies[0], 250);
        assert_eq!(p.bounds_jiffies[14], 7200 * 250);
        // A minimum that is not a whole number of jiffies rounds up: never shorter.
        assert_eq!(IdleDeathParams::new(100, 1005).min_idle_jiffies, 101);
    }
}

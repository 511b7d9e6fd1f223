//! Configuration of the socket-level hooks (keepalive timer, keepalive resets).
//!
//! Rust eBPF has no CO-RE relocations, so the daemon reads kernel struct offsets from
//! /sys/kernel/btf/vmlinux and tracepoint field offsets from tracefs, and hands them to
//! the programs in one global, [`SockConfig`].

/// `SockConfig::flags` bits.
pub mod config_flags {
    /// Count only sockets whose network namespace inode is `netns_inum`.
    pub const FILTER_NETNS: u32 = 1 << 0;
    /// `sk_err_off` and `sk_protocol_off` are valid: the idle-death programs may read
    /// a socket's error and protocol (without them they count nothing).
    pub const IDLE_DEATH_LAYOUT: u32 = 1 << 1;
}

#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SockConfig {
    /// Address of tcp_keepalive_timer() from /proc/kallsyms, or 0 to use the address
    /// learned in-kernel (TimerFnCalibration): timer:timer_expire_entry fires for every
    /// kernel timer, this picks out the keepalive timer.
    pub keepalive_timer_fn: u64,
    /// Offset of the keepalive timer in the socket: inet_connection_sock's
    /// icsk_keepalive_timer where the kernel has it (Debian's 6.1 and 6.12, which moved
    /// it out of sk_timer's union with mptcp_retransmit_timer), otherwise sk->sk_timer.
    pub keepalive_timer_off: u32,
    /// offsetof(struct inet_connection_sock, icsk_probes_out) (a u8).
    pub probes_out_off: u32,
    /// offsetof(struct sock, __sk_common.skc_family) (a u16).
    pub skc_family_off: u32,
    /// offsetof(struct sock, __sk_common.skc_net) (a struct net *).
    pub skc_net_off: u32,
    /// offsetof(struct net, ns.inum) (a u32).
    pub net_inum_off: u32,
    /// Network namespace inode to count, with `FILTER_NETNS`.
    pub netns_inum: u32,
    /// offsetof(struct timer_list, function): timer_expire_entry's raw arguments are
    /// the timer and the base clock, so the function is read from the timer.
    pub timer_function_off: u32,
    /// offsetof(struct sock, sk_err) (an int): inet_sk_error_report's raw argument is
    /// the socket, the error is read from it.
    pub sk_err_off: u32,
    /// enum sk_rst_reason's SK_RST_REASON_TCP_KEEPALIVE_TIMEOUT (from BTF).
    pub keepalive_timeout_reason: u32,
    /// LINUX_MIB_TCPKEEPALIVE (from BTF): tcp_write_wakeup()'s `mib` for keepalive.
    pub keepalive_mib: u32,
    pub flags: u32,
    /// offsetof(struct sock, __sk_common.skc_num): the local port, host order (a u16).
    pub skc_num_off: u32,
    /// offsetof(struct sock, sk_protocol) (a u16 since 5.6): the fentry and kprobe
    /// idle-death programs see every socket family's error reports and keep TCP's.
    pub sk_protocol_off: u32,
}
const _: () = assert!(core::mem::size_of::<SockConfig>() == 64);

/// Per-CPU record of the keepalive timer callback running on that CPU. Timer
/// callbacks run in softirq context and do not nest on one CPU, so one slot suffices.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct TimerSlot {
    /// The socket whose keepalive timer is running; 0 when none is.
    pub sk: u64,
    /// icsk_probes_out when the callback started.
    pub probes_out: u32,
    /// Set when the callback reset the connection: the socket may be freed by exit.
    pub aborted: u32,
}
const _: () = assert!(core::mem::size_of::<TimerSlot>() == 16);

pub const ETIMEDOUT: i32 = 110;

/// Learning tcp_keepalive_timer()'s address without /proc/kallsyms (whose addresses
/// need CAP_SYSLOG): every TCP socket's keepalive timer has `function` set to it from
/// the socket's creation (inet_csk_init_xmit_timers(), net/ipv4/inet_connection_sock.c),
/// armed or not. The daemon fills in the offsets and the local port of a TCP socket it
/// is about to put into LISTEN; the calibration program, on sock:inet_sock_set_state
/// for that socket, reads the timer's function pointer from the socket and stores it.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct TimerFnCalibration {
    /// Learned address of tcp_keepalive_timer(); 0 until learned.
    pub function: u64,
    /// Local port (host order) of the daemon's calibration socket; 0 disables learning.
    pub port: u32,
    /// offsetof(struct timer_list, function).
    pub timer_function_off: u32,
    /// inet_sock_set_state record offsets (tracefs): skaddr, sport, protocol.
    pub tp_skaddr_off: u32,
    pub tp_sport_off: u32,
    pub tp_protocol_off: u32,
    pub _pad: u32,
}
const _: () = assert!(core::mem::size_of::<TimerFnCalibration>() == 32);

pub const IPPROTO_TCP: u16 = 6;

#[cfg(feature = "user")]
mod pod {
    // SAFETY: repr(C), Copy, integers only; the size asserts show there is no padding.
    unsafe impl aya::Pod for super::SockConfig {}
    // SAFETY: as above.
    unsafe impl aya::Pod for super::TimerSlot {}
    // SAFETY: as above.
    unsafe impl aya::Pod for super::TimerFnCalibration {}
}

//! fentry on tcp_write_wakeup(sk, mib): the keepalive timer calls it with
//! LINUX_MIB_TCPKEEPALIVE for each probe, the zero-window timer with
//! LINUX_MIB_TCPWINPROBE (net/ipv4/tcp_timer.c, tcp_output.c). Preferred: cheapest,
//! and the same point where the kernel counts TcpExtTCPKeepAlive.

use aya_ebpf::{macros::fentry, programs::FEntryContext};

#[fentry(function = "tcp_write_wakeup")]
pub fn ka_wakeup_fe(ctx: FEntryContext) -> u32 {
    let sk: u64 = ctx.arg(0);
    let mib: u32 = ctx.arg(1);
    crate::sock::count_probe::<false>(sk, mib);
    0
}

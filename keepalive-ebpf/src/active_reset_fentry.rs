//! fentry on tcp_send_active_reset(sk, priority, reason): the keepalive timeout is the
//! call with SK_RST_REASON_TCP_KEEPALIVE_TIMEOUT (the third argument exists since 6.10).

use aya_ebpf::{macros::fentry, programs::FEntryContext};

#[fentry(function = "tcp_send_active_reset")]
pub fn ka_arst_fe(ctx: FEntryContext) -> u32 {
    let sk: u64 = ctx.arg(0);
    let reason: u32 = ctx.arg(2);
    crate::active_reset_kprobe::count_reset(sk, reason);
    0
}

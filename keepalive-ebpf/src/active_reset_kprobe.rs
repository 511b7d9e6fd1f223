//! kprobe on tcp_send_active_reset(): the fallback for fentry, one program per
//! signature like the fentry ones (see active_reset_fentry.rs).

use aya_ebpf::{macros::kprobe, programs::ProbeContext};

use crate::sock::count_reset;

/// tcp_send_active_reset(sk, priority, reason).
#[kprobe(function = "tcp_send_active_reset")]
pub fn ka_arst_kp(ctx: ProbeContext) -> u32 {
    if let (Some(sk), Some(reason)) = (ctx.arg::<u64>(0), ctx.arg::<u32>(2)) {
        count_reset::<true>(sk, reason);
    }
    0
}

/// tcp_send_active_reset(sk, reason).
#[kprobe(function = "tcp_send_active_reset")]
pub fn ka_arst_kp_r1(ctx: ProbeContext) -> u32 {
    if let (Some(sk), Some(reason)) = (ctx.arg::<u64>(0), ctx.arg::<u32>(1)) {
        count_reset::<true>(sk, reason);
    }
    0
}

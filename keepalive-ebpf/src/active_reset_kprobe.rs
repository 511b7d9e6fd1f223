//! kprobe on tcp_send_active_reset(sk, priority, reason): the fallback for fentry.

use aya_ebpf::{macros::kprobe, programs::ProbeContext};

use crate::{
    maps::config,
    sock::{count_timeout, in_scope},
};

#[kprobe(function = "tcp_send_active_reset")]
pub fn ka_arst_kp(ctx: ProbeContext) -> u32 {
    if let (Some(sk), Some(reason)) = (ctx.arg::<u64>(0), ctx.arg::<u32>(2)) {
        count_reset(sk, reason);
    }
    0
}

#[inline(always)]
pub fn count_reset(sk: u64, reason: u32) {
    let cfg = config();
    if reason == cfg.keepalive_timeout_reason && sk != 0 && in_scope(&cfg, sk) {
        count_timeout(&cfg, sk);
    }
}

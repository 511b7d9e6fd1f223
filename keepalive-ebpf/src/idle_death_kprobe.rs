//! kprobe on sk_error_report(sk) and tcp_reset(sk, skb): the fallback when fentry cannot
//! load (see idle_death_fentry.rs for the functions and their signatures).

use aya_ebpf::{macros::kprobe, programs::ProbeContext};

use crate::idle_death::{idle_death, mark_reset};

#[kprobe(function = "sk_error_report")]
pub fn ka_idle_death_kp(ctx: ProbeContext) -> u32 {
    if let Some(sk) = ctx.arg::<u64>(0) {
        let _ = idle_death::<true>(sk);
    }
    0
}

#[kprobe(function = "tcp_reset")]
pub fn ka_rst_mark_kp(ctx: ProbeContext) -> u32 {
    if let Some(sk) = ctx.arg::<u64>(0) {
        mark_reset(sk);
    }
    0
}

//! tcp:tcp_send_reset carries `enum sk_rst_reason` since Linux 6.10, and
//! tcp_keepalive_timer() resets with SK_RST_REASON_TCP_KEEPALIVE_TIMEOUT (6.12+).

//! A raw tracepoint, like the timer programs (see timer_tracepoint.rs for why).

use aya_ebpf::{macros::raw_tracepoint, programs::RawTracePointContext};

use crate::{
    maps::{TIMER_SLOT, config},
    sock::{count_timeout, in_scope},
};

#[raw_tracepoint(tracepoint = "tcp_send_reset")]
pub fn ka_send_reset(ctx: RawTracePointContext) -> i32 {
    let _ = try_send_reset(&ctx);
    0
}

#[inline(always)]
fn try_send_reset(ctx: &RawTracePointContext) -> Option<()> {
    let cfg = config();
    // TP_PROTO(const struct sock *sk, const struct sk_buff *skb,
    //          const enum sk_rst_reason reason) since 6.10; the daemon checks the
    // prototype in BTF (btf_trace_tcp_send_reset) before attaching this.
    let reason: u64 = ctx.arg(2);
    if reason as u32 != cfg.keepalive_timeout_reason {
        return None;
    }
    let sk: u64 = ctx.arg(0);
    if sk == 0 || !in_scope::<true>(&cfg, sk) {
        return None;
    }
    mark_aborted(sk);
    count_timeout::<true>(&cfg, sk);
    Some(())
}

/// Tells the timer-exit program not to read a socket that tcp_done() may have freed.
#[inline(always)]
pub fn mark_aborted(sk: u64) {
    if let Some(slot) = TIMER_SLOT.get_ptr_mut(0) {
        // SAFETY: per-CPU array slot 0 of this CPU.
        let slot = unsafe { &mut *slot };
        if slot.sk == sk {
            slot.aborted = 1;
        }
    }
}

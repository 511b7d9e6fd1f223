//! tcp:tcp_send_reset carries `enum sk_rst_reason` since Linux 6.10, and
//! tcp_keepalive_timer() resets with SK_RST_REASON_TCP_KEEPALIVE_TIMEOUT (6.12+).

use aya_ebpf::{macros::tracepoint, programs::TracePointContext};

use crate::{
    maps::{TIMER_SLOT, config},
    sock::{count_timeout, in_scope},
};

#[tracepoint(category = "tcp", name = "tcp_send_reset")]
pub fn ka_send_reset(ctx: TracePointContext) -> u32 {
    let _ = try_send_reset(&ctx);
    0
}

#[inline(always)]
fn try_send_reset(ctx: &TracePointContext) -> Option<()> {
    let cfg = config();
    // SAFETY: offsets come from this tracepoint's tracefs format file.
    let reason: u32 = unsafe { ctx.read_at(cfg.tp_send_reset_reason_off as usize) }.ok()?;
    if reason != cfg.keepalive_timeout_reason {
        return None;
    }
    // SAFETY: as above.
    let sk: u64 = unsafe { ctx.read_at(cfg.tp_send_reset_skaddr_off as usize) }.ok()?;
    if sk == 0 || !in_scope(&cfg, sk) {
        return None;
    }
    mark_aborted(sk);
    count_timeout(&cfg, sk);
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

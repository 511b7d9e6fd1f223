//! Timeout fallback for kernels whose tcp:tcp_send_reset has no reason (before 6.10):
//! tcp_keepalive_timer() gives up through tcp_write_err(), which reports ETIMEDOUT on
//! the socket (sock:inet_sk_error_report). An ETIMEDOUT reported while this CPU runs
//! a keepalive timer callback (see timer_tracepoint.rs) is a keepalive timeout; the
//! retransmission timer's ETIMEDOUT runs outside it and is not counted.

use aya_ebpf::{macros::tracepoint, programs::TracePointContext};
use keepalive_common::sockhook::ETIMEDOUT;

use crate::{
    maps::{TIMER_SLOT, config},
    sock::count_timeout,
};

#[tracepoint(category = "sock", name = "inet_sk_error_report")]
pub fn ka_err_report(ctx: TracePointContext) -> u32 {
    let _ = try_error_report(&ctx);
    0
}

#[inline(always)]
fn try_error_report(ctx: &TracePointContext) -> Option<()> {
    let cfg = config();
    // SAFETY: the offset comes from this tracepoint's tracefs format file.
    let error: i32 = unsafe { ctx.read_at(cfg.tp_error_report_error_off as usize) }.ok()?;
    if error != ETIMEDOUT {
        return None;
    }
    let slot = TIMER_SLOT.get_ptr_mut(0)?;
    // SAFETY: per-CPU array slot 0 of this CPU.
    let slot = unsafe { &mut *slot };
    // The entry program already checked the namespace before filling the slot.
    if slot.sk == 0 || slot.aborted != 0 {
        return None;
    }
    slot.aborted = 1;
    count_timeout(&cfg, slot.sk);
    Some(())
}

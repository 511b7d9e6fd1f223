//! Tracepoint path for the keepalive timer (kernels or sandboxes without kprobes and
//! fentry). timer:timer_expire_entry/exit bracket every timer callback; we keep the one
//! for tcp_keepalive_timer() and compare icsk_probes_out before and after it:
//! tcp_keepalive_timer() increments it exactly when tcp_write_wakeup() sent a probe
//! (net/ipv4/tcp_timer.c).

use aya_ebpf::{macros::tracepoint, programs::TracePointContext};
use keepalive_common::{counters, sockhook::TimerSlot};

use crate::{
    maps::{TIMER_SLOT, config, count, keepalive_timer_fn},
    sock::{in_scope, read},
};

#[tracepoint(category = "timer", name = "timer_expire_entry")]
pub fn ka_timer_entry(ctx: TracePointContext) -> u32 {
    let _ = try_entry(&ctx);
    0
}

#[inline(always)]
fn try_entry(ctx: &TracePointContext) -> Option<()> {
    let cfg = config();
    // SAFETY: the offset comes from this tracepoint's tracefs format file.
    let function: u64 = unsafe { ctx.read_at(cfg.tp_timer_entry_function_off as usize) }.ok()?;
    let want = keepalive_timer_fn(&cfg);
    if want == 0 || function != want {
        return None;
    }
    // SAFETY: as above.
    let timer: u64 = unsafe { ctx.read_at(cfg.tp_timer_entry_timer_off as usize) }.ok()?;
    // container_of(timer, struct sock, <keepalive timer>): see keepalive_timer_off.
    let sk = timer.wrapping_sub(cfg.keepalive_timer_off as u64);
    if !in_scope(&cfg, sk) {
        return None;
    }
    let probes_out = read::<u8>(sk + cfg.probes_out_off as u64)?;
    let slot = TIMER_SLOT.get_ptr_mut(0)?;
    // SAFETY: per-CPU array slot 0 of this CPU; timer callbacks do not nest on a CPU.
    unsafe {
        *slot = TimerSlot {
            sk,
            probes_out: probes_out as u32,
            aborted: 0,
        }
    };
    Some(())
}

#[tracepoint(category = "timer", name = "timer_expire_exit")]
pub fn ka_timer_exit(ctx: TracePointContext) -> u32 {
    let _ = try_exit(&ctx, true);
    0
}

/// The exit half without counting, for when another mechanism counts timer probes and
/// only the timer context is needed (error_report_tracepoint.rs).
#[tracepoint(category = "timer", name = "timer_expire_exit")]
pub fn ka_timer_exit_ctx(ctx: TracePointContext) -> u32 {
    let _ = try_exit(&ctx, false);
    0
}

#[inline(always)]
fn try_exit(ctx: &TracePointContext, count_probes: bool) -> Option<()> {
    let slot = TIMER_SLOT.get_ptr_mut(0)?;
    // SAFETY: per-CPU array slot 0 of this CPU, as in try_entry.
    let slot = unsafe { &mut *slot };
    if slot.sk == 0 {
        return None;
    }
    let cfg = config();
    // SAFETY: the offset comes from this tracepoint's tracefs format file.
    let timer: u64 = unsafe { ctx.read_at(cfg.tp_timer_exit_timer_off as usize) }.ok()?;
    if timer.wrapping_sub(cfg.keepalive_timer_off as u64) != slot.sk {
        return None;
    }
    let sk = slot.sk;
    slot.sk = 0;
    // After a reset the callback has called tcp_done(): do not read the socket again.
    if slot.aborted != 0 || !count_probes {
        return None;
    }
    let after = read::<u8>(sk + cfg.probes_out_off as u64)?;
    if after as u32 == (slot.probes_out + 1) & 0xff {
        count(counters::TIMER_PROBES);
    }
    Some(())
}

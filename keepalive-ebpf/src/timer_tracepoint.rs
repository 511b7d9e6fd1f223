//! Tracepoint path for the keepalive timer (kernels or sandboxes without kprobes and
//! fentry). timer:timer_expire_entry/exit bracket every timer callback; we keep the one
//! for tcp_keepalive_timer() and compare icsk_probes_out before and after it:
//! tcp_keepalive_timer() increments it exactly when tcp_write_wakeup() sent a probe
//! (net/ipv4/tcp_timer.c).
//!
//! Raw tracepoints, not perf-event tracepoints: those run through trace_call_bpf(),
//! which skips every program while bpf_prog_active is held on the CPU, and the kernel
//! holds it during the daemon's own map syscalls (bpf_disable_instrumentation() in
//! kernel/bpf/syscall.c). A timer softirq that ran inside such a syscall lost its whole
//! burst of keepalive timers (100 at a time in the scale test). Raw tracepoints only
//! guard against recursion of the same program (__bpf_trace_run(), kernel/trace/bpf_trace.c).

use aya_ebpf::{macros::raw_tracepoint, programs::RawTracePointContext};
use keepalive_common::{counters, sockhook::TimerSlot};

use crate::{
    maps::{TIMER_SLOT, config, count, keepalive_timer_fn},
    sock::{in_scope, read_field},
};

#[raw_tracepoint(tracepoint = "timer_expire_entry")]
pub fn ka_timer_entry(ctx: RawTracePointContext) -> i32 {
    let _ = try_entry(&ctx);
    0
}

#[inline(always)]
fn try_entry(ctx: &RawTracePointContext) -> Option<()> {
    let cfg = config();
    // TP_PROTO(struct timer_list *timer, unsigned long baseclk)
    let timer: u64 = ctx.arg(0);
    // The timer being run is always readable; read_field() would count a failure.
    let function = read_field::<u64, true>(timer, cfg.timer_function_off, "timer_list.function")?;
    let want = keepalive_timer_fn(&cfg);
    if want == 0 || function != want {
        return None;
    }
    // container_of(timer, struct sock, <keepalive timer>): see keepalive_timer_off.
    let sk = timer.wrapping_sub(cfg.keepalive_timer_off as u64);
    if !in_scope::<true>(&cfg, sk) {
        return None;
    }
    let probes_out = read_field::<u8, true>(sk, cfg.probes_out_off, "icsk_probes_out")?;
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

#[raw_tracepoint(tracepoint = "timer_expire_exit")]
pub fn ka_timer_exit(ctx: RawTracePointContext) -> i32 {
    let _ = try_exit(&ctx, true);
    0
}

/// The exit half without counting, for when another mechanism counts timer probes and
/// only the timer context is needed (error_report_tracepoint.rs).
#[raw_tracepoint(tracepoint = "timer_expire_exit")]
pub fn ka_timer_exit_ctx(ctx: RawTracePointContext) -> i32 {
    let _ = try_exit(&ctx, false);
    0
}

#[inline(always)]
fn try_exit(ctx: &RawTracePointContext, count_probes: bool) -> Option<()> {
    let slot = TIMER_SLOT.get_ptr_mut(0)?;
    // SAFETY: per-CPU array slot 0 of this CPU, as in try_entry.
    let slot = unsafe { &mut *slot };
    if slot.sk == 0 {
        return None;
    }
    let cfg = config();
    // TP_PROTO(struct timer_list *timer)
    let timer: u64 = ctx.arg(0);
    if timer.wrapping_sub(cfg.keepalive_timer_off as u64) != slot.sk {
        return None;
    }
    let sk = slot.sk;
    slot.sk = 0;
    // After a reset the callback has called tcp_done(): do not read the socket again.
    if slot.aborted != 0 || !count_probes {
        return None;
    }
    let after = read_field::<u8, true>(sk, cfg.probes_out_off, "icsk_probes_out")?;
    if after as u32 == (slot.probes_out + 1) & 0xff {
        count(counters::TIMER_PROBES);
    }
    Some(())
}

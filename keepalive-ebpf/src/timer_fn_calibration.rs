//! Learns tcp_keepalive_timer()'s address for the timer tracepoint programs without
//! /proc/kallsyms (see TimerFnCalibration): attached for a moment at start-up, it waits
//! for the daemon's own socket to enter LISTEN and reads the function pointer of that
//! socket's keepalive timer.

use aya_ebpf::{helpers::bpf_probe_read_kernel, macros::tracepoint, programs::TracePointContext};
use keepalive_common::sockhook::IPPROTO_TCP;

use crate::maps::{TIMER_FN_CALIBRATION, config};

#[tracepoint(category = "sock", name = "inet_sock_set_state")]
pub fn ka_timer_fn_cal(ctx: TracePointContext) -> u32 {
    let _ = try_calibrate(&ctx);
    0
}

#[inline(always)]
fn try_calibrate(ctx: &TracePointContext) -> Option<()> {
    let cal = TIMER_FN_CALIBRATION.get_ptr_mut(0)?;
    // SAFETY: element 0 of a one-element array map, valid while the program runs.
    let cal = unsafe { &mut *cal };
    if cal.port == 0 || cal.function != 0 {
        return None;
    }
    // The u16 fields are read as the u64 they start and cut to the low half (little
    // endian): a 2- or 4-byte read into the stack is what Debian 6.1's verifier
    // mishandled in error_report_tracepoint.rs. Both are followed by more fields.
    // SAFETY: offsets from this tracepoint's tracefs format file.
    let protocol: u64 = unsafe { ctx.read_at(cal.tp_protocol_off as usize) }.ok()?;
    // SAFETY: as above.
    let sport: u64 = unsafe { ctx.read_at(cal.tp_sport_off as usize) }.ok()?;
    // MPTCP and SCTP sockets fire this tracepoint too, with other layouts.
    if protocol as u16 != IPPROTO_TCP || sport as u16 as u32 != cal.port {
        return None;
    }
    // SAFETY: as above.
    let sk: u64 = unsafe { ctx.read_at(cal.tp_skaddr_off as usize) }.ok()?;
    let cfg = config();
    let at = sk + cfg.keepalive_timer_off as u64 + cal.timer_function_off as u64;
    // SAFETY: bpf_probe_read_kernel checks the address and fails cleanly.
    let function = unsafe { bpf_probe_read_kernel(at as *const u64) }.ok()?;
    cal.function = function;
    Some(())
}

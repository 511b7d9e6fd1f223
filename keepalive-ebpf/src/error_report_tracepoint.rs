//! Timeout fallback for kernels whose tcp:tcp_send_reset has no reason (before 6.10):
//! tcp_keepalive_timer() gives up through tcp_write_err(), which reports ETIMEDOUT on
//! the socket (sock:inet_sk_error_report). An ETIMEDOUT reported while this CPU runs
//! a keepalive timer callback (see timer_tracepoint.rs) is a keepalive timeout; the
//! retransmission timer's ETIMEDOUT runs outside it and is not counted.

//!
//! A raw tracepoint, like the timer programs (see timer_tracepoint.rs for why).

use aya_ebpf::{macros::raw_tracepoint, programs::RawTracePointContext};
use keepalive_common::sockhook::ETIMEDOUT;

use crate::{
    maps::{TIMER_SLOT, config},
    sock::{count_timeout, read_field},
};

#[raw_tracepoint(tracepoint = "inet_sk_error_report")]
pub fn ka_err_report(ctx: RawTracePointContext) -> i32 {
    let _ = try_error_report(&ctx);
    0
}

#[inline(always)]
fn try_error_report(ctx: &RawTracePointContext) -> Option<()> {
    let cfg = config();
    // TP_PROTO(const struct sock *sk); the record's `error` is sk->sk_err.
    // SAFETY: the offset comes from this tracepoint's tracefs format file.
    let sk: u64 = ctx.arg(0);
    // Read as the u64 it starts, keeping the low half: with a 4-byte read into the
    // stack, Debian 6.1.192's verifier took `error != ETIMEDOUT` as always true and
    // removed the rest of the program (docs/kernel-matrix.md). sk_err is followed by
    // more fields of struct sock.
    let raw = read_field::<u64, true>(sk, cfg.sk_err_off, "sk->sk_err")?;
    let error = raw as u32 as i32;
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
    count_timeout::<true>(&cfg, slot.sk);
    Some(())
}

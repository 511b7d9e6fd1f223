//! fentry on tcp_send_active_reset(): the keepalive timeout is the call with
//! SK_RST_REASON_TCP_KEEPALIVE_TIMEOUT (since 6.10). Mainline has (sk, priority,
//! reason); some stable kernels (Debian's 6.12.117) have (sk, reason). One program per
//! signature, chosen by the daemon from BTF: a branch on the position would not do, as
//! LLVM folds it into a computed context offset ("dereference of modified ctx ptr") and
//! fentry may not touch an argument the function does not have.

use aya_ebpf::{macros::fentry, programs::FEntryContext};

/// tcp_send_active_reset(sk, priority, reason).
#[fentry(function = "tcp_send_active_reset")]
pub fn ka_arst_fe(ctx: FEntryContext) -> u32 {
    crate::sock::count_reset::<false>(ctx.arg(0), ctx.arg(2));
    0
}

/// tcp_send_active_reset(sk, reason).
#[fentry(function = "tcp_send_active_reset")]
pub fn ka_arst_fe_r1(ctx: FEntryContext) -> u32 {
    crate::sock::count_reset::<false>(ctx.arg(0), ctx.arg(1));
    0
}

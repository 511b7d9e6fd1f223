//! Idle deaths on raw tracepoints, the fallback for kernels without fentry and kprobes:
//! sock:inet_sk_error_report (fired inside sk_error_report(), for AF_INET and AF_INET6
//! sockets only) and tcp:tcp_receive_reset (fired first thing in tcp_reset()). Both
//! pass the socket as their one argument.
//!
//! Why raw tracepoints: they load everywhere the daemon runs (kprobes and fentry are
//! missing or refused in some sandboxes, see KEEPALIVE-FACTS), and, unlike perf-event
//! tracepoints, are not skipped while the daemon's own map syscalls hold
//! bpf_prog_active (see timer_tracepoint.rs).

use aya_ebpf::{macros::raw_tracepoint, programs::RawTracePointContext};

use crate::idle_death::{idle_death, mark_reset};

/// TP_PROTO(const struct sock *sk)
#[raw_tracepoint(tracepoint = "inet_sk_error_report")]
pub fn ka_idle_death(ctx: RawTracePointContext) -> i32 {
    let _ = idle_death::<true>(ctx.arg(0));
    0
}

/// TP_PROTO(const struct sock *sk)
#[raw_tracepoint(tracepoint = "tcp_receive_reset")]
pub fn ka_rst_mark(ctx: RawTracePointContext) -> i32 {
    mark_reset(ctx.arg(0));
    0
}

//! fentry on the two kernel functions the idle-death tracepoints fire in, the preferred
//! mechanism (cheapest, and a per-program recursion guard only, like raw tracepoints):
//! - sk_error_report(struct sock *sk) (net/core/sock.c): sk->sk_err is already set when
//!   it is called; it runs for every socket family, so idle_death() checks for a TCP
//!   socket of AF_INET or AF_INET6 first;
//! - tcp_reset(struct sock *sk, struct sk_buff *skb) (net/ipv4/tcp_input.c): a RST
//!   arrived; it fires tcp:tcp_receive_reset first thing, then reports the error.
//!
//! Signatures (BTF): both the same on Debian's 6.1 and 6.12 and mainline 6.18:
//! sk_error_report(sk) since 5.14, tcp_reset(sk, skb) since 5.11; both are global,
//! not inlined (tcp_reset has only a `.cold` part split off). The daemon checks the
//! parameter names in BTF before choosing this (sockhooks/sockconfig.rs).

use aya_ebpf::{macros::fentry, programs::FEntryContext};

use crate::idle_death::{idle_death, mark_reset};

#[fentry(function = "sk_error_report")]
pub fn ka_idle_death_fe(ctx: FEntryContext) -> u32 {
    let _ = idle_death::<false>(ctx.arg(0));
    0
}

#[fentry(function = "tcp_reset")]
pub fn ka_rst_mark_fe(ctx: FEntryContext) -> u32 {
    mark_reset(ctx.arg(0));
    0
}

use aya_ebpf::{macros::classifier, programs::TcContext};
use keepalive_common::Direction;

/// Segments arriving at this host: `received` probes and answers to our probes.
#[classifier]
pub fn ka_tc_ingress(ctx: TcContext) -> i32 {
    crate::wire::observe::<false>(&ctx, Direction::Received)
}

/// The same with kernel-side diagnostics (--log.kernel-level other than off): see
/// wire::observe for why this is a second program rather than a runtime check.
#[classifier]
pub fn ka_tc_ing_log(ctx: TcContext) -> i32 {
    crate::wire::observe::<true>(&ctx, Direction::Received)
}

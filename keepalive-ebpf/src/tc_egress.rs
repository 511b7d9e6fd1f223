use aya_ebpf::{macros::classifier, programs::TcContext};
use keepalive_common::Direction;

/// Segments leaving this host: `sent` probes and our answers to received probes.
#[classifier]
pub fn ka_tc_egress(ctx: TcContext) -> i32 {
    crate::wire::observe::<false>(&ctx, Direction::Sent)
}

/// The same with kernel-side diagnostics (--log.kernel-level other than off): see
/// wire::observe for why this is a second program rather than a runtime check.
#[classifier]
pub fn ka_tc_egr_log(ctx: TcContext) -> i32 {
    crate::wire::observe::<true>(&ctx, Direction::Sent)
}

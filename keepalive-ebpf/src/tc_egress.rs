use aya_ebpf::{macros::classifier, programs::TcContext};
use keepalive_common::Direction;

/// Segments leaving this host: `sent` probes and our answers to received probes.
#[classifier]
pub fn ka_tc_egress(ctx: TcContext) -> i32 {
    crate::wire::observe(&ctx, Direction::Sent)
}

use aya_ebpf::{macros::classifier, programs::TcContext};
use keepalive_common::Direction;

/// Segments arriving at this host: `received` probes and answers to our probes.
#[classifier]
pub fn ka_tc_ingress(ctx: TcContext) -> i32 {
    crate::wire::observe(&ctx, Direction::Received)
}

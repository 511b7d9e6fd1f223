//! Floors of the per-packet path, for `cargo xtask bench` only: the daemon loads these
//! instead of ka_tc_ingress and ka_tc_egress with --debug.wire-floor, so that the cost
//! of parsing alone, and of parsing plus the flow-map lookup, is measured against the
//! empty program on the same traffic (wire::floor says what each does).
use aya_ebpf::{macros::classifier, programs::TcContext};
use keepalive_common::Direction;

use crate::wire::floor;

#[classifier]
pub fn ka_tc_parse_ing(ctx: TcContext) -> i32 {
    floor::<false>(&ctx, Direction::Received)
}

#[classifier]
pub fn ka_tc_parse_egr(ctx: TcContext) -> i32 {
    floor::<false>(&ctx, Direction::Sent)
}

#[classifier]
pub fn ka_tc_lkup_ing(ctx: TcContext) -> i32 {
    floor::<true>(&ctx, Direction::Received)
}

#[classifier]
pub fn ka_tc_lkup_egr(ctx: TcContext) -> i32 {
    floor::<true>(&ctx, Direction::Sent)
}

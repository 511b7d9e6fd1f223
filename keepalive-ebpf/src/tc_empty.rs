use aya_ebpf::{macros::classifier, programs::TcContext};

/// Does nothing: the floor for per-packet cost. The daemon attaches it beside the real
/// programs only with --debug.baseline-program, for `cargo xtask bench`.
#[classifier]
pub fn ka_tc_empty(_ctx: TcContext) -> i32 {
    crate::wire::TC_ACT_UNSPEC
}

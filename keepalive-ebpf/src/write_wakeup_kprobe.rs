//! kprobe on tcp_write_wakeup(sk, mib): the fallback when fentry cannot load.

use crate::sock::count_probe;
use aya_ebpf::{macros::kprobe, programs::ProbeContext};

#[kprobe(function = "tcp_write_wakeup")]
pub fn ka_wakeup_kp(ctx: ProbeContext) -> u32 {
    if let (Some(sk), Some(mib)) = (ctx.arg::<u64>(0), ctx.arg::<u32>(1)) {
        count_probe::<true>(sk, mib);
    }
    0
}

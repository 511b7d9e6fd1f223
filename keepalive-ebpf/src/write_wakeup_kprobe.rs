//! kprobe on tcp_write_wakeup(sk, mib): the fallback when fentry cannot load.

use aya_ebpf::{macros::kprobe, programs::ProbeContext};
use keepalive_common::counters;

use crate::{
    maps::{config, count},
    sock::in_scope,
};

#[kprobe(function = "tcp_write_wakeup")]
pub fn ka_wakeup_kp(ctx: ProbeContext) -> u32 {
    if let (Some(sk), Some(mib)) = (ctx.arg::<u64>(0), ctx.arg::<u32>(1)) {
        count_probe(sk, mib);
    }
    0
}

#[inline(always)]
pub fn count_probe(sk: u64, mib: u32) {
    let cfg = config();
    if mib == cfg.keepalive_mib && in_scope(&cfg, sk) {
        count(counters::TIMER_PROBES);
    }
}

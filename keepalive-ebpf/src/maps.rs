//! Maps and globals shared by all programs.

use aya_ebpf::{
    macros::map,
    maps::{LruHashMap, PerCpuArray},
};
use keepalive_common::{
    counters::COUNTER_SLOTS,
    flow::{FlowKey, FlowState},
    sockhook::{SockConfig, TimerSlot},
};

/// Per-connection state. The daemon sets the real size at load (--flows.max).
#[map]
pub static FLOWS: LruHashMap<FlowKey, FlowState> = LruHashMap::with_max_entries(1024, 0);

/// Totals, per CPU so increments need no atomics; the daemon sums them on scrape.
#[map]
pub static COUNTERS: PerCpuArray<u64> = PerCpuArray::with_max_entries(COUNTER_SLOTS, 0);

/// The keepalive timer callback running on each CPU (see TimerSlot).
#[map]
pub static TIMER_SLOT: PerCpuArray<TimerSlot> = PerCpuArray::with_max_entries(1, 0);

/// Kernel offsets and tracepoint layouts, filled in by the daemon before load.
#[unsafe(no_mangle)]
static SOCK_CONFIG: SockConfig = SockConfig {
    keepalive_timer_fn: 0,
    sk_timer_off: 0,
    probes_out_off: 0,
    skc_family_off: 0,
    skc_net_off: 0,
    net_inum_off: 0,
    netns_inum: 0,
    tp_timer_entry_timer_off: 0,
    tp_timer_entry_function_off: 0,
    tp_timer_exit_timer_off: 0,
    tp_send_reset_skaddr_off: 0,
    tp_send_reset_reason_off: 0,
    tp_error_report_error_off: 0,
    keepalive_timeout_reason: 0,
    keepalive_mib: 0,
    flags: 0,
    _pad: 0,
};

/// The configuration as the daemon set it. The volatile read keeps the compiler from
/// folding the zero initialiser into the code (the daemon rewrites .rodata at load).
#[inline(always)]
pub fn config() -> SockConfig {
    // SAFETY: SOCK_CONFIG is a plain static of integers; reading it is always valid.
    unsafe { core::ptr::read_volatile(&raw const SOCK_CONFIG) }
}

#[inline(always)]
pub fn count(slot: u32) {
    if let Some(p) = COUNTERS.get_ptr_mut(slot) {
        // SAFETY: the pointer comes from a successful per-CPU array lookup and points
        // at this CPU's u64; programs do not migrate CPUs while they run.
        unsafe { *p += 1 };
    }
}

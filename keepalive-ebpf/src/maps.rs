//! Maps and globals shared by all programs.

use aya_ebpf::{
    macros::map,
    maps::{Array, LruHashMap, PerCpuArray, RingBuf},
};
use keepalive_common::{
    audit_config::{AuditConfig, IdleDeathParams},
    counters::COUNTER_SLOTS,
    flow::{FlowKey, FlowState},
    ports::{self, PortConfig},
    sockhook::{SockConfig, TimerFnCalibration, TimerSlot},
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

/// tcp_keepalive_timer()'s address learned in-kernel (see TimerFnCalibration).
#[map]
pub static TIMER_FN_CALIBRATION: Array<TimerFnCalibration> = Array::with_max_entries(1, 0);

/// The keepalive timer's function: the learned one (the daemon cross-checks it with
/// kallsyms where it can read addresses), else kallsyms' from SOCK_CONFIG; 0 while
/// neither is known.
#[inline(always)]
pub fn keepalive_timer_fn(cfg: &SockConfig) -> u64 {
    match TIMER_FN_CALIBRATION.get(0) {
        Some(c) if c.function != 0 => c.function,
        _ => cfg.keepalive_timer_fn,
    }
}

/// Kernel offsets and tracepoint layouts, filled in by the daemon before load.
#[unsafe(no_mangle)]
static SOCK_CONFIG: SockConfig = SockConfig {
    keepalive_timer_fn: 0,
    keepalive_timer_off: 0,
    probes_out_off: 0,
    skc_family_off: 0,
    skc_net_off: 0,
    net_inum_off: 0,
    netns_inum: 0,
    timer_function_off: 0,
    sk_err_off: 0,
    keepalive_timeout_reason: 0,
    keepalive_mib: 0,
    flags: 0,
    skc_num_off: 0,
    sk_protocol_off: 0,
};

/// Per-port counters for the --metrics.local-port allowlist (index: ports::index).
#[map]
pub static PORT_COUNTERS: PerCpuArray<u64> =
    PerCpuArray::with_max_entries((ports::MAX_PORTS as u32) * ports::PORT_SLOTS, 0);

#[unsafe(no_mangle)]
static PORT_CONFIG: PortConfig = PortConfig {
    ports: [0; ports::MAX_PORTS],
    count: 0,
    _pad: 0,
};

/// Counts `slot` for local port `port` when the port is in the allowlist.
#[inline(always)]
pub fn count_port(port: u16, slot: u32) {
    // SAFETY: PORT_CONFIG is a plain static of integers (rewritten by the loader).
    let cfg = unsafe { core::ptr::read_volatile(&raw const PORT_CONFIG) };
    if cfg.count == 0 {
        return;
    }
    if let Some(i) = cfg.index_of(port)
        && let Some(p) = PORT_COUNTERS.get_ptr_mut(ports::index(i, slot))
    {
        // SAFETY: this CPU's u64 from a successful per-CPU array lookup.
        unsafe { *p += 1 };
    }
}

/// The configuration as the daemon set it. The volatile read keeps the compiler from
/// folding the zero initialiser into the code (the daemon rewrites .rodata at load).
#[inline(always)]
pub fn config() -> SockConfig {
    // SAFETY: SOCK_CONFIG is a plain static of integers; reading it is always valid.
    unsafe { core::ptr::read_volatile(&raw const SOCK_CONFIG) }
}

#[inline(always)]
pub fn count(slot: u32) {
    count_add(slot, 1);
}

#[inline(always)]
pub fn count_add(slot: u32, n: u64) {
    if let Some(p) = COUNTERS.get_ptr_mut(slot) {
        // SAFETY: the pointer comes from a successful per-CPU array lookup and points
        // at this CPU's u64; programs do not migrate CPUs while they run.
        unsafe { *p += n };
    }
}

/// Kernel offsets for the audit programs (audit_iter.rs, idle_death_tracepoint.rs),
/// filled in by the daemon before load; all zero (flags without VALID) when the daemon
/// could not resolve them, and then the programs do nothing.
#[unsafe(no_mangle)]
static AUDIT_CONFIG: AuditConfig = AuditConfig {
    skc_state_off: 0,
    skc_family_off: 0,
    skc_daddr_off: 0,
    skc_rcv_saddr_off: 0,
    skc_dport_off: 0,
    skc_num_off: 0,
    skc_v6_daddr_off: 0,
    skc_v6_rcv_saddr_off: 0,
    skc_net_off: 0,
    sk_flags_off: 0,
    net_inum_off: 0,
    sysctl_time_off: 0,
    sysctl_intvl_off: 0,
    sysctl_probes_off: 0,
    sysctl_probes_size: 0,
    keepalive_time_off: 0,
    keepalive_intvl_off: 0,
    keepalive_probes_off: 0,
    rcv_tstamp_off: 0,
    lrcvtime_off: 0,
    user_timeout_off: 0,
    cgroup_off: 0,
    cgroup_kn_off: 0,
    kn_id_off: 0,
    sk_socket_off: 0,
    socket_ino_off: 0,
    keepopen_bit: 0,
    flags: 0,
    inet_sport_off: 0,
    _pad: 0,
};

/// The audit configuration as the daemon set it (volatile read: see config()).
#[inline(always)]
pub fn audit_config() -> AuditConfig {
    // SAFETY: AUDIT_CONFIG is a plain static of integers; reading it is always valid.
    unsafe { core::ptr::read_volatile(&raw const AUDIT_CONFIG) }
}

/// The idle-death hook's HZ-dependent parameters; a map, not a global, because the
/// daemon measures HZ only after load (two iterator walks).
#[map]
pub static IDLE_DEATH_PARAMS: Array<IdleDeathParams> = Array::with_max_entries(1, 0);

/// The socket tcp:tcp_receive_reset last fired for on each CPU: tcp_reset() fires it
/// and then reports ECONNRESET on the same CPU, while an application's own abort
/// (close with SO_LINGER 0, tcp_disconnect()) reports ECONNRESET without it.
#[map]
pub static RESET_SLOT: PerCpuArray<u64> = PerCpuArray::with_max_entries(1, 0);

/// Endings (keepalive timeouts and idle deaths) for the daemon's log and connection
/// view: 256 KiB holds about 3,000 of them (72 bytes plus an 8-byte header each).
#[map]
pub static ENDINGS: RingBuf = RingBuf::with_byte_size(256 * 1024, 0);

//! Reading `struct sock` fields at offsets the daemon found in BTF.

use aya_ebpf::helpers::bpf_probe_read_kernel;
use keepalive_common::{
    Family,
    counters::{self, KernelError},
    ports,
    sockhook::{SockConfig, config_flags},
};

use crate::maps::{count, count_port};

/// Reads a `T` at kernel address `addr`; counts and returns `None` on failure.
#[inline(always)]
pub fn read<T>(addr: u64) -> Option<T> {
    // SAFETY: bpf_probe_read_kernel checks the address itself and fails cleanly on a
    // bad one; nothing here dereferences kernel memory directly.
    match unsafe { bpf_probe_read_kernel(addr as *const T) } {
        Ok(v) => Some(v),
        Err(_) => {
            count(counters::error(KernelError::KernelReadFailed));
            None
        }
    }
}

/// Whether `sk` belongs to the network namespace the daemon watches.
#[inline(always)]
pub fn in_scope(cfg: &SockConfig, sk: u64) -> bool {
    if cfg.flags & config_flags::FILTER_NETNS == 0 {
        return true;
    }
    let Some(net) = read::<u64>(sk + cfg.skc_net_off as u64) else {
        return false;
    };
    read::<u32>(net + cfg.net_inum_off as u64) == Some(cfg.netns_inum)
}

#[inline(always)]
pub fn family(cfg: &SockConfig, sk: u64) -> Option<Family> {
    Family::from_af(read::<u16>(sk + cfg.skc_family_off as u64)?)
}

/// Counts a keepalive timeout of `sk` (already known to be in scope).
#[inline(always)]
pub fn count_timeout(cfg: &SockConfig, sk: u64) {
    if let Some(family) = family(cfg, sk) {
        count(counters::resets(counters::ResetReason::Timeout, family));
    }
    if let Some(port) = read::<u16>(sk + cfg.skc_num_off as u64) {
        count_port(port, ports::resets(counters::ResetReason::Timeout));
    }
}

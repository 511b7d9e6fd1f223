//! The socket-hook bodies every mechanism shares (fentry, kprobe and tracepoint
//! programs are thin wrappers that only fetch their arguments), and the reads of
//! `struct sock` fields at offsets the daemon found in BTF.

use aya_ebpf::helpers::bpf_probe_read_kernel;
use keepalive_common::{
    Family,
    counters::{self, KernelError},
    ports,
    sockhook::{SockConfig, config_flags},
};

use crate::maps::{config, count, count_port};

/// Reads a `T` at kernel address `addr`; counts a failure and returns `None`, without a
/// log line. The audit's iterator reads this way: a call to the logging subprogram
/// (read_failed) makes ka_audit_iter fail to load ("reg type unsupported for arg#0
/// function ka_audit_iter", Debian 6.1; EACCES on 6.12 and 6.18), since an iter/tcp
/// program with BPF-to-BPF calls has its context argument checked against BTF.
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

/// Reads the `T` named `field` at `base + off` in kernel memory; counts (and, with
/// `LOG` and at --log.kernel-level warn or finer, logs) a failure and returns `None`.
/// `LOG` is false in fentry programs: see [`read_failed`].
#[inline(always)]
pub fn read_field<T, const LOG: bool>(base: u64, off: u32, field: &str) -> Option<T> {
    let addr = base + off as u64;
    // SAFETY: bpf_probe_read_kernel checks the address itself and fails cleanly on a
    // bad one; nothing here dereferences kernel memory directly.
    match unsafe { bpf_probe_read_kernel(addr as *const T) } {
        Ok(v) => Some(v),
        Err(err) => {
            count(counters::error(KernelError::KernelReadFailed));
            if LOG {
                read_failed(field, off, base, err);
            }
            None
        }
    }
}

/// Detail for --log.kernel-level warn (the counter is the source of truth); at a
/// disabled level the verifier prunes the call. Out of line (inline(never)) so that its
/// arguments are not kept alive across the read helper on the success path; aya-log's
/// macro makes a BPF-to-BPF call anyway (a closure LLVM keeps out of line). fentry and
/// iter programs must not reach it (`LOG` false): with a call the program carries BTF
/// func info, its `void *` context is checked against it, and the load fails (Debian
/// 6.12 and 6.18: EACCES after "0: R1=ctx() R10=fp0"; 6.1: "reg type unsupported for
/// arg#0"). Raw tracepoint and kprobe programs load with it (cargo xtask vm-test).
#[inline(never)]
fn read_failed(field: &str, off: u32, base: u64, err: i32) {
    aya_log_ebpf::warn!(
        &(),
        target: "keepalive_ebpf",
        "kernel read failed: {} at offset {} of {:x}: error {}",
        field,
        off,
        base,
        err
    );
}

/// Whether `sk` belongs to the network namespace the daemon watches.
#[inline(always)]
pub fn in_scope<const LOG: bool>(cfg: &SockConfig, sk: u64) -> bool {
    if cfg.flags & config_flags::FILTER_NETNS == 0 {
        return true;
    }
    let Some(net) = read_field::<u64, LOG>(sk, cfg.skc_net_off, "sk->__sk_common.skc_net") else {
        return false;
    };
    read_field::<u32, LOG>(net, cfg.net_inum_off, "net->ns.inum") == Some(cfg.netns_inum)
}

#[inline(always)]
pub fn family<const LOG: bool>(cfg: &SockConfig, sk: u64) -> Option<Family> {
    Family::from_af(read_field::<u16, LOG>(
        sk,
        cfg.skc_family_off,
        "sk->__sk_common.skc_family",
    )?)
}

/// Counts a keepalive timeout of `sk` (already known to be in scope), and sends its
/// ending to the daemon (audit_sock.rs) so every reset keepalive caused can be logged.
#[inline(always)]
pub fn count_timeout<const LOG: bool>(cfg: &SockConfig, sk: u64) {
    crate::audit_sock::keepalive_timeout_ending(sk);
    if let Some(family) = family::<LOG>(cfg, sk) {
        count(counters::resets(counters::ResetReason::Timeout, family));
    }
    if let Some(port) = read_field::<u16, LOG>(sk, cfg.skc_num_off, "sk->__sk_common.skc_num") {
        count_port(port, ports::resets(counters::ResetReason::Timeout));
    }
}

/// A tcp_write_wakeup(sk, mib) call: a keepalive probe when `mib` is
/// LINUX_MIB_TCPKEEPALIVE (the zero-window timer passes LINUX_MIB_TCPWINPROBE).
#[inline(always)]
pub fn count_probe<const LOG: bool>(sk: u64, mib: u32) {
    let cfg = config();
    if mib == cfg.keepalive_mib && in_scope::<LOG>(&cfg, sk) {
        count(counters::TIMER_PROBES);
    }
}

/// A tcp_send_active_reset(sk, .., reason) call: a keepalive timeout when `reason` is
/// SK_RST_REASON_TCP_KEEPALIVE_TIMEOUT.
#[inline(always)]
pub fn count_reset<const LOG: bool>(sk: u64, reason: u32) {
    let cfg = config();
    if reason == cfg.keepalive_timeout_reason && sk != 0 && in_scope::<LOG>(&cfg, sk) {
        count_timeout::<LOG>(&cfg, sk);
    }
}

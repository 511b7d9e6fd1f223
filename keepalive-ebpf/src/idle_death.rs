//! Idle deaths: connections that fail after having been idle at least --audit.min-idle.
//! The body every mechanism shares (idle_death_{fentry,kprobe,tracepoint}.rs are thin
//! wrappers that only fetch the socket). Both deaths end in sk_error_report() with the
//! error in sk->sk_err:
//! - ECONNRESET: a RST arrived (tcp_reset() -> tcp_done_with_error()); rcv_tstamp and
//!   lrcvtime are not updated for the RST itself, so the idle time is the time before it.
//!   The application's own abort (SO_LINGER 0 close, tcp_disconnect()) reports
//!   ECONNRESET too: only a socket tcp_reset() just marked on this CPU ([`mark_reset`],
//!   RESET_SLOT) counts;
//! - ETIMEDOUT outside this socket's keepalive timer: the retransmission (or zero-window
//!   probe) timer gave up (tcp_write_timeout() -> tcp_write_err()). Inside the keepalive
//!   timer (TIMER_SLOT, filled by timer_tracepoint.rs's entry program) it is a keepalive
//!   timeout, counted by the timeout hook instead.
//!
//! sk_error_report() runs for every socket family (unix, netlink, UDP, ...), the
//! tracepoint inside it only for AF_INET/AF_INET6 (UDP included): [`idle_death`] first
//! checks for a TCP socket of those families, before it reads any TCP field or takes
//! the reset mark.

use aya_ebpf::helpers::bpf_jiffies64;
use keepalive_common::{
    audit::{EndingKind, failure_bucket},
    audit_config::audit_flags,
    counters,
    sockhook::{ETIMEDOUT, IPPROTO_TCP, SockConfig, config_flags},
};

use crate::{
    audit_sock::{idle_jiffies, keepalive_on, receipt_times, send_ending},
    maps::{
        IDLE_DEATH_PARAMS, RESET_SLOT, TIMER_SLOT, audit_config, config, count, count_add,
        keepalive_timer_fn,
    },
    sock::{in_scope, read_field},
};

const ECONNRESET: i32 = 104;
const AF_INET: u16 = 2;
const AF_INET6: u16 = 10;

/// Marks the socket a RST arrived on (tcp_reset(), before it reports the error).
#[inline(always)]
pub fn mark_reset(sk: u64) {
    if let Some(slot) = RESET_SLOT.get_ptr_mut(0) {
        // SAFETY: per-CPU array slot 0 of this CPU.
        unsafe { *slot = sk };
    }
}

/// Whether `sk` is a TCP socket of AF_INET or AF_INET6 (what tcp_sock fields may be
/// read from).
#[inline(always)]
fn inet_tcp<const LOG: bool>(cfg: &SockConfig, sk: u64) -> bool {
    let family = read_field::<u16, LOG>(sk, cfg.skc_family_off, "sk->skc_family");
    if family != Some(AF_INET) && family != Some(AF_INET6) {
        return false;
    }
    read_field::<u16, LOG>(sk, cfg.sk_protocol_off, "sk->sk_protocol") == Some(IPPROTO_TCP)
}

/// sk_error_report(sk) ran (or sock:inet_sk_error_report fired) for `sk`: counts it
/// and sends its ending if it is an idle death.
#[inline(always)]
pub fn idle_death<const LOG: bool>(sk: u64) -> Option<()> {
    let ac = audit_config();
    let params = IDLE_DEATH_PARAMS.get(0)?;
    if ac.flags & audit_flags::VALID == 0 || params.hz == 0 {
        return None;
    }
    let cfg = config();
    if cfg.flags & config_flags::IDLE_DEATH_LAYOUT == 0 || sk == 0 || !inet_tcp::<LOG>(&cfg, sk) {
        return None;
    }
    // Read as a u64 and keep the low half, as error_report_tracepoint.rs does (a 4-byte
    // read confused Debian 6.1's verifier).
    let error = read_field::<u64, LOG>(sk, cfg.sk_err_off, "sk->sk_err")? as u32 as i32;
    let reset_slot = RESET_SLOT.get_ptr_mut(0)?;
    // SAFETY: per-CPU array slot 0 of this CPU.
    let reset_sk = unsafe { core::mem::replace(&mut *reset_slot, 0) };
    let kind = if error == ECONNRESET {
        if reset_sk != sk {
            // The application's own abort, not a RST from the peer.
            return None;
        }
        EndingKind::IdleReset
    } else if error == ETIMEDOUT {
        // Without the keepalive timer's address the timer programs fill no slot, and a
        // keepalive timeout would pass for a retransmission give-up: count none.
        if keepalive_timer_fn(&cfg) == 0 {
            return None;
        }
        let slot = TIMER_SLOT.get(0)?;
        if slot.sk == sk {
            return None;
        }
        EndingKind::IdleRetransmitTimeout
    } else {
        return None;
    };
    if !in_scope::<LOG>(&cfg, sk) {
        return None;
    }
    if receipt_times(&ac, sk)? == (0, 0) {
        // Never connected (a connect() that timed out): nothing was idle.
        return None;
    }
    // SAFETY: a helper without arguments, always callable from tracing programs.
    let now = unsafe { bpf_jiffies64() };
    let idle = idle_jiffies(&ac, sk, now)?;
    if idle < params.min_idle_jiffies {
        return None;
    }
    let keepalive = keepalive_on(&ac, sk)?;
    count(counters::idle_failures(kind, keepalive));
    count(counters::failure_idle_bucket(failure_bucket(
        idle,
        &params.bounds_jiffies,
    )));
    count_add(
        counters::FAILURE_IDLE_MS_SUM,
        idle as u64 * 1000 / params.hz as u64,
    );
    send_ending(&ac, sk, kind, keepalive, idle);
    Some(())
}

//! Builds the [`SockConfig`] global from BTF, kallsyms and tracefs, and records which
//! hook mechanisms the kernel can support at all (what is missing, and why).

use std::path::Path;

use keepalive_common::sockhook::{SockConfig, TimerFnCalibration, config_flags};

use crate::{
    error_chain::Chain,
    kernel::{
        btf::{BtfError, KernelBtf},
        kallsyms,
        tracefs::{self, TracefsError},
    },
};

/// Why the socket layout, or one mechanism's part of it, cannot be worked out.
#[derive(Debug, thiserror::Error)]
pub enum SockConfigError {
    #[error(transparent)]
    Btf(#[from] BtfError),
    #[error(transparent)]
    Tracefs(#[from] TracefsError),
    #[error("struct net's namespace inode")]
    NetInode {
        #[source]
        source: BtfError,
    },
    #[error("tcp_keepalive_timer's address: cannot learn it ({learn}) nor read it ({kallsyms})")]
    TimerFnAddress { learn: String, kallsyms: String },
    #[error("icsk_probes_out is {size:?} bytes, the timer programs read one")]
    ProbesOutSize { size: Option<u32> },
    #[error("raw tracepoint {tracepoint} passes no timer")]
    NoTimerArgument { tracepoint: &'static str },
    #[error("raw tracepoint tcp_send_reset passes {count} arguments, not (sk, skb, reason)")]
    SendResetArguments { count: usize },
    #[error("raw tracepoint inet_sk_error_report does not pass just the socket")]
    ErrorReportArguments,
    #[error("sk_err is {size:?} bytes, not an int")]
    SkErrSize { size: Option<u32> },
    #[error("sk_protocol is {size:?} bytes, not a u16 (kernel before 5.6)")]
    SkProtocolSize { size: Option<u32> },
    #[error("raw tracepoint {tracepoint} does not pass the socket first")]
    NoSocketArgument { tracepoint: &'static str },
}

/// Why a hook mechanism cannot be used on this kernel; `None` means it may be tried.
#[derive(Debug, Default)]
pub struct Prerequisites {
    /// tcp_write_wakeup(sk, mib) and LINUX_MIB_TCPKEEPALIVE (fentry/kprobe timer probes).
    pub write_wakeup: Option<String>,
    /// tcp_send_active_reset(sk, priority, reason) and the keepalive reason (6.10+).
    pub active_reset_reason: Option<String>,
    /// Position of `reason` among tcp_send_active_reset()'s parameters (1 or 2).
    pub active_reset_reason_arg: u32,
    /// timer:timer_expire_entry/exit, tcp_keepalive_timer's address, sock offsets.
    pub timer_tracepoints: Option<String>,
    /// tcp:tcp_send_reset with a reason field.
    pub send_reset_tracepoint: Option<String>,
    /// sock:inet_sk_error_report with an error field.
    pub error_report_tracepoint: Option<String>,
    /// sk_error_report(sk) and tcp_reset(sk, skb), with sk_err and sk_protocol (fentry
    /// and kprobe idle deaths).
    pub idle_death_functions: Option<String>,
    /// sock:inet_sk_error_report and tcp:tcp_receive_reset passing the socket, with
    /// sk_err and sk_protocol (tracepoint idle deaths).
    pub idle_death_tracepoints: Option<String>,
}

pub struct Resolved {
    pub config: SockConfig,
    pub prerequisites: Prerequisites,
    /// What the program that learns tcp_keepalive_timer()'s address needs (timer_fn.rs),
    /// when BTF and tracefs have it.
    pub timer_fn_learning: Option<TimerFnCalibration>,
}

impl Prerequisites {
    /// Every mechanism ruled out for the same reason.
    pub fn all_missing(why: &str) -> Prerequisites {
        let why = Some(why.to_owned());
        Prerequisites {
            write_wakeup: why.clone(),
            active_reset_reason: why.clone(),
            active_reset_reason_arg: 2,
            timer_tracepoints: why.clone(),
            send_reset_tracepoint: why.clone(),
            error_report_tracepoint: why.clone(),
            idle_death_functions: why.clone(),
            idle_death_tracepoints: why,
        }
    }
}

/// Works out the [`SockConfig`] and which mechanisms may be tried. Fails only without
/// the socket fields every hook needs; a missing piece of one mechanism is recorded in
/// [`Prerequisites`].
pub fn resolve(
    btf: &KernelBtf,
    kallsyms_path: &Path,
    netns_inum: Option<u32>,
) -> Result<Resolved, SockConfigError> {
    let mut c = sock_fields(btf)?;
    if let Some(inum) = netns_inum {
        c.netns_inum = inum;
        c.flags |= config_flags::FILTER_NETNS;
    }
    let mut p = Prerequisites {
        write_wakeup: write_wakeup(btf, &mut c),
        ..Prerequisites::default()
    };
    active_reset(btf, &mut c, &mut p);

    // The timer programs need tcp_keepalive_timer()'s address: learned in-kernel
    // (timer_fn.rs) and, where this process may read kallsyms addresses (CAP_SYSLOG or
    // kernel.kptr_restrict=0), cross-checked against /proc/kallsyms.
    let kallsyms_fn = kallsyms::address(kallsyms_path, "tcp_keepalive_timer");
    c.keepalive_timer_fn = *kallsyms_fn.as_ref().unwrap_or(&0);
    let learning = timer_fn_learning(btf);
    let timer = (|| {
        if let (Err(learn), Err(kallsyms)) = (&learning, &kallsyms_fn) {
            return Err(SockConfigError::TimerFnAddress {
                learn: Chain(learn).to_string(),
                kallsyms: kallsyms.to_string(),
            });
        }
        timer_tracepoints(btf, &mut c)
    })();
    p.timer_tracepoints = timer.err().map(|e| Chain(&e).to_string());

    if p.send_reset_tracepoint.is_none() {
        p.send_reset_tracepoint = send_reset_tracepoint(btf)
            .err()
            .map(|e| Chain(&e).to_string());
    }
    p.error_report_tracepoint = error_report_tracepoint(btf, &mut c)
        .err()
        .map(|e| Chain(&e).to_string());
    idle_death(btf, &mut c, &mut p);

    Ok(Resolved {
        config: c,
        prerequisites: p,
        timer_fn_learning: learning.ok(),
    })
}

/// Socket fields every hook needs; without them no socket hook can run.
fn sock_fields(btf: &KernelBtf) -> Result<SockConfig, SockConfigError> {
    Ok(SockConfig {
        skc_family_off: btf.member("sock", &["__sk_common", "skc_family"])?.offset,
        skc_net_off: btf.member("sock", &["__sk_common", "skc_net"])?.offset,
        skc_num_off: btf.member("sock", &["__sk_common", "skc_num"])?.offset,
        net_inum_off: btf
            .member("net", &["ns", "inum"])
            .map_err(|source| SockConfigError::NetInode { source })?
            .offset,
        ..SockConfig::default()
    })
}

/// What the fentry/kprobe timer probe hook needs: LINUX_MIB_TCPKEEPALIVE and
/// tcp_write_wakeup(sk, mib). Returns why not, if it cannot be used.
fn write_wakeup(btf: &KernelBtf, c: &mut SockConfig) -> Option<String> {
    match btf.enumerator("LINUX_MIB_TCPKEEPALIVE") {
        Ok(v) => c.keepalive_mib = v as u32,
        Err(e) => return Some(e.to_string()),
    }
    check_params(btf, "tcp_write_wakeup", &[(1, "mib")])
}

/// What the reason-based timeout hooks need: the keepalive reset reason (6.12+), and
/// where tcp_send_active_reset() takes it.
fn active_reset(btf: &KernelBtf, c: &mut SockConfig, p: &mut Prerequisites) {
    match btf.enumerator("SK_RST_REASON_TCP_KEEPALIVE_TIMEOUT") {
        Ok(v) => c.keepalive_timeout_reason = v as u32,
        Err(e) => {
            // Never matches a real reason: keeps the reason-based programs inert.
            c.keepalive_timeout_reason = u32::MAX;
            let why = format!("{e} (kernel before 6.12)");
            p.active_reset_reason = Some(why.clone());
            p.send_reset_tracepoint = Some(why);
            return;
        }
    }
    match btf.function_params("tcp_send_active_reset") {
        Ok(params) => match reason_position(&params) {
            Some(i) => p.active_reset_reason_arg = i,
            None => {
                p.active_reset_reason = Some(format!(
                    "tcp_send_active_reset has parameters {params:?}: no `reason` at position 1 or 2"
                ))
            }
        },
        Err(e) => p.active_reset_reason = Some(e.to_string()),
    }
}

/// What the program that learns tcp_keepalive_timer()'s address reads (timer_fn.rs).
fn timer_fn_learning(btf: &KernelBtf) -> Result<TimerFnCalibration, SockConfigError> {
    let function = btf.member("timer_list", &["function"])?;
    let f = tracefs::EventFormat::read(&tracefs::root()?, "sock", "inet_sock_set_state")?;
    Ok(TimerFnCalibration {
        timer_function_off: function.offset,
        tp_skaddr_off: f.field("skaddr")?.offset,
        tp_sport_off: f.field("sport")?.offset,
        tp_protocol_off: f.field("protocol")?.offset,
        ..Default::default()
    })
}

/// The socket and timer offsets the timer tracepoint programs read.
fn timer_tracepoints(btf: &KernelBtf, c: &mut SockConfig) -> Result<(), SockConfigError> {
    c.keepalive_timer_off = keepalive_timer_offset(btf)?;
    let probes_out = btf.member("inet_connection_sock", &["icsk_probes_out"])?;
    if probes_out.size != Some(1) {
        return Err(SockConfigError::ProbesOutSize {
            size: probes_out.size,
        });
    }
    c.probes_out_off = probes_out.offset;
    c.timer_function_off = btf.member("timer_list", &["function"])?.offset;
    // Raw tracepoints: the programs take the timer from argument 0 of both.
    for tp in ["timer_expire_entry", "timer_expire_exit"] {
        if btf.raw_tracepoint_args(tp)? < 1 {
            return Err(SockConfigError::NoTimerArgument { tracepoint: tp });
        }
    }
    Ok(())
}

/// tcp:tcp_send_reset is (sk, skb, reason) since 6.10: ka_send_reset reads arguments 0
/// and 2.
fn send_reset_tracepoint(btf: &KernelBtf) -> Result<(), SockConfigError> {
    let count = btf.raw_tracepoint_args("tcp_send_reset")?;
    if count != 3 {
        return Err(SockConfigError::SendResetArguments { count });
    }
    Ok(())
}

/// sock:inet_sk_error_report passes just the socket, whose sk_err the program reads.
fn error_report_tracepoint(btf: &KernelBtf, c: &mut SockConfig) -> Result<(), SockConfigError> {
    if btf.raw_tracepoint_args("inet_sk_error_report")? != 1 {
        return Err(SockConfigError::ErrorReportArguments);
    }
    let err = btf.member("sock", &["sk_err"])?;
    if err.size != Some(4) {
        return Err(SockConfigError::SkErrSize { size: err.size });
    }
    c.sk_err_off = err.offset;
    Ok(())
}

/// What the idle-death hook's mechanisms need, for the hook's late choice
/// (choice::attach_one, after the audit measured HZ): the same answer [`resolve`] gave
/// when it filled in the SOCK_CONFIG the object was loaded with (same BTF). The other
/// hooks' fields say "not resolved here".
pub fn idle_death_prerequisites(btf: &KernelBtf) -> Prerequisites {
    let mut p = Prerequisites::all_missing("not resolved for the idle-death hook");
    match sock_fields(btf) {
        Ok(mut c) => idle_death(btf, &mut c, &mut p),
        Err(e) => {
            let why = Some(Chain(&e).to_string());
            p.idle_death_functions = why.clone();
            p.idle_death_tracepoints = why;
        }
    }
    p
}

/// The idle-death programs read sk_err and sk_protocol (the fentry and kprobe ones see
/// every socket family's error reports, idle_death.rs keeps TCP over IPv4/IPv6); the
/// fentry and kprobe programs take the socket from argument 0 of sk_error_report(sk)
/// and tcp_reset(sk, skb), the tracepoint ones from argument 0 of
/// sock:inet_sk_error_report(sk) and tcp:tcp_receive_reset(sk). Sets
/// IDLE_DEATH_LAYOUT when the fields are known.
fn idle_death(btf: &KernelBtf, c: &mut SockConfig, p: &mut Prerequisites) {
    if let Err(e) = idle_death_layout(btf, c) {
        let why = Some(Chain(&e).to_string());
        p.idle_death_functions = why.clone();
        p.idle_death_tracepoints = why;
        return;
    }
    c.flags |= config_flags::IDLE_DEATH_LAYOUT;
    p.idle_death_functions = check_params(btf, "sk_error_report", &[(0, "sk")])
        .or_else(|| check_params(btf, "tcp_reset", &[(0, "sk")]));
    p.idle_death_tracepoints = ["inet_sk_error_report", "tcp_receive_reset"]
        .into_iter()
        .find_map(|tp| match btf.raw_tracepoint_args(tp) {
            Ok(n) if n >= 1 => None,
            Ok(_) => Some(SockConfigError::NoSocketArgument { tracepoint: tp }),
            Err(e) => Some(e.into()),
        })
        .map(|e| Chain(&e).to_string());
}

fn idle_death_layout(btf: &KernelBtf, c: &mut SockConfig) -> Result<(), SockConfigError> {
    let err = btf.member("sock", &["sk_err"])?;
    if err.size != Some(4) {
        return Err(SockConfigError::SkErrSize { size: err.size });
    }
    let protocol = btf.member("sock", &["sk_protocol"])?;
    if protocol.size != Some(2) {
        return Err(SockConfigError::SkProtocolSize {
            size: protocol.size,
        });
    }
    c.sk_err_off = err.offset;
    c.sk_protocol_off = protocol.offset;
    Ok(())
}

/// Where tcp_keepalive_timer() finds its socket: kernels that have
/// inet_connection_sock.icsk_keepalive_timer (in a union with mptcp_tout_timer; seen in
/// Debian's 6.1.192 and 6.12.117) arm and recover the keepalive timer there
/// (`from_timer(icsk, t, icsk_keepalive_timer)`), even though struct sock still has an
/// sk_timer; the others (mainline 6.18) use sk->sk_timer. Taking sk_timer on the former
/// made every container_of land 736 bytes off the socket (the qemu matrix found it).
fn keepalive_timer_offset(btf: &KernelBtf) -> Result<u32, BtfError> {
    match btf.member("inet_connection_sock", &["icsk_keepalive_timer"]) {
        Ok(m) => Ok(m.offset),
        Err(_) => Ok(btf.member("sock", &["sk_timer"])?.offset),
    }
}

/// Where tcp_send_active_reset() takes its `reason`: mainline has (sk, priority, reason),
/// some stable kernels (Debian's 6.12.117) (sk, reason).
fn reason_position(params: &[String]) -> Option<u32> {
    [1u32, 2]
        .into_iter()
        .find(|i| params.get(*i as usize).map(String::as_str) == Some("reason"))
}

/// Checks that kernel function `func` has each `(index, name)` parameter.
fn check_params(btf: &KernelBtf, func: &str, want: &[(usize, &str)]) -> Option<String> {
    match btf.function_params(func) {
        Err(e) => Some(e.to_string()),
        Ok(params) => want.iter().find_map(|(i, name)| {
            (params.get(*i).map(String::as_str) != Some(*name)).then(|| {
                format!("{func} has parameters {params:?}, expected `{name}` at position {i}")
            })
        }),
    }
}

/// The inode of the network namespace this process runs in (what `ns.inum` holds).
pub fn own_netns_inum() -> std::io::Result<u32> {
    use std::os::unix::fs::MetadataExt as _;
    Ok(std::fs::metadata("/proc/self/ns/net")?.ino() as u32)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reason_position_follows_the_signature() {
        let p = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        assert_eq!(reason_position(&p(&["sk", "priority", "reason"])), Some(2));
        assert_eq!(reason_position(&p(&["sk", "reason"])), Some(1));
        assert_eq!(reason_position(&p(&["sk", "priority"])), None);
    }
}

//! The socket-level hooks (timer probes, timeouts): what the kernel offers them
//! (sockconfig.rs), learning tcp_keepalive_timer()'s address (timer_fn.rs), which
//! mechanism each hook gets (choice.rs), and the timer runs the tracepoint path misses
//! (timer_loss.rs).

pub(crate) mod choice;
pub mod sockconfig;
pub(crate) mod timer_fn;
pub mod timer_loss;

use std::path::Path;

use aya::Ebpf;
use prometheus::IntGaugeVec;

use crate::{cli::HookMechanism, error_chain::Chain, kernel::btf::KernelBtf};
use choice::{Hook, HookChoice};
use sockconfig::{Prerequisites, Resolved};

/// The daemon's own network namespace could not be identified.
#[derive(Debug, thiserror::Error)]
#[error("reading /proc/self/ns/net")]
pub struct NetnsError {
    #[source]
    source: std::io::Error,
}

/// The namespace the socket hooks count in: the daemon's own, or every one
/// (--socket.all-namespaces).
pub fn netns_filter(all_namespaces: bool) -> Result<Option<u32>, NetnsError> {
    if all_namespaces {
        return Ok(None);
    }
    let inum = sockconfig::own_netns_inum().map_err(|source| NetnsError { source })?;
    Ok(Some(inum))
}

/// The kernel layout the socket hooks need; when it cannot be worked out, the hooks are
/// disabled (the wire counters work without them) and the reason is kept for each.
pub fn resolve_or_disable(btf: &KernelBtf, netns: Option<u32>) -> Resolved {
    match sockconfig::resolve(btf, Path::new("/proc/kallsyms"), netns) {
        Ok(r) => r,
        Err(e) => {
            let why = Chain(&e).to_string();
            log::warn!("socket-level hooks disabled: {why}");
            Resolved {
                config: Default::default(),
                prerequisites: Prerequisites::all_missing(&why),
                timer_fn_learning: None,
            }
        }
    }
}

/// What the socket hooks ended up with.
pub struct HooksInUse {
    /// `hook=mechanism, ...`, for systemd's status line.
    pub summary: String,
    /// The timer probes hook uses the tracepoints, which can miss whole timer softirqs
    /// (timer_loss.rs).
    pub timer_tracepoint: bool,
}

/// Learns tcp_keepalive_timer()'s address if the timer tracepoints may need it, then
/// attaches the best mechanism each hook can get, logging every choice and exporting it
/// in `hook_info` (keepalive_daemon_hook_info).
pub fn attach(
    ebpf: &mut Ebpf,
    resolved: Resolved,
    disabled: &[HookMechanism],
    hook_info: &IntGaugeVec,
) -> HooksInUse {
    let Resolved {
        config,
        mut prerequisites,
        timer_fn_learning,
    } = resolved;
    if prerequisites.timer_tracepoints.is_none() {
        prerequisites.timer_tracepoints =
            timer_fn::establish(ebpf, timer_fn_learning, config.keepalive_timer_fn);
    }
    let kernel_btf = aya::Btf::from_sys_fs().ok();
    let mut summary = Vec::new();
    let mut timer_tracepoint = false;
    for choice in choice::attach_all(ebpf, &prerequisites, kernel_btf.as_ref(), disabled) {
        report(&choice, hook_info);
        summary.push(format!(
            "{}={}",
            choice.hook.label(),
            choice.chosen.map_or("none", |m| m.label())
        ));
        if choice.hook == Hook::TimerProbes {
            timer_tracepoint = choice.chosen == Some(HookMechanism::Tracepoint);
        }
    }
    HooksInUse {
        summary: summary.join(", "),
        timer_tracepoint,
    }
}

/// Logs one hook's choice and sets its keepalive_daemon_hook_info series.
fn report(choice: &HookChoice, hook_info: &IntGaugeVec) {
    choice.log();
    for m in choice::preference(choice.hook) {
        let v = i64::from(choice.chosen == Some(*m));
        hook_info
            .with_label_values(&[choice.hook.label(), m.label()])
            .set(v);
    }
}

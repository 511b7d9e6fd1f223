//! The socket-level hooks (timer probes, timeouts, and the audit's idle deaths): what
//! the kernel offers them (sockconfig.rs), learning tcp_keepalive_timer()'s address
//! (timer_fn.rs), which mechanism each hook gets (choice.rs), and the timer runs the
//! tracepoint path misses (timer_loss.rs).

pub(crate) mod choice;
pub mod sockconfig;
pub(crate) mod timer_fn;
pub mod timer_loss;

use std::path::Path;

use aya::Ebpf;
use prometheus::IntGaugeVec;

use crate::{cli::HookMechanism, error_chain::Chain, kernel::btf::KernelBtf};
pub use choice::{Hook, HookChoice};
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

/// What choosing a hook after start-up needs besides the kernel's facts: the
/// mechanisms the operator disabled (--hooks.disable) and, in the daemon, the metric the
/// choice is exported in (none in the test harnesses that attach hooks by hand).
#[derive(Clone, Copy, Default)]
pub struct LateChoice<'a> {
    pub disabled: &'a [HookMechanism],
    pub hook_info: Option<&'a IntGaugeVec>,
}

impl LateChoice<'_> {
    /// Attaches the best mechanism `hook` can get (choice::attach_one), logs the choice
    /// in the same one line as the start-up hooks and exports it.
    pub fn attach(&self, ebpf: &mut Ebpf, hook: Hook, prereq: &Prerequisites) -> HookChoice {
        let kernel_btf = aya::Btf::from_sys_fs().ok();
        let choice = choice::attach_one(ebpf, hook, prereq, kernel_btf.as_ref(), self.disabled);
        report_to(&choice, self.hook_info);
        choice
    }

    /// `hook` is not tried at all (e.g. the audit is off): one info line saying why, and
    /// its keepalive_daemon_hook_info series all 0.
    pub fn off(&self, hook: Hook, why: &str) {
        log::info!("{}", HookChoice::off_summary(hook, why));
        if let Some(hook_info) = self.hook_info {
            export(hook, None, hook_info);
        }
    }
}

/// Logs one hook's choice and sets its keepalive_daemon_hook_info series.
fn report(choice: &HookChoice, hook_info: &IntGaugeVec) {
    report_to(choice, Some(hook_info));
}

fn report_to(choice: &HookChoice, hook_info: Option<&IntGaugeVec>) {
    choice.log();
    if let Some(hook_info) = hook_info {
        export(choice.hook, choice.chosen, hook_info);
    }
}

/// 1 for the mechanism in use, 0 for the others the hook may use.
fn export(hook: Hook, chosen: Option<HookMechanism>, hook_info: &IntGaugeVec) {
    for m in choice::preference(hook) {
        let v = i64::from(chosen == Some(*m));
        hook_info
            .with_label_values(&[hook.label(), m.label()])
            .set(v);
    }
}

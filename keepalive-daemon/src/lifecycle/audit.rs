//! Start-up of the keepalive audit: attaches the inventory (`iter/tcp`) and, with the
//! HZ it measured, the idle-death hook; says in one line what runs, or why not; then,
//! once the state exists, starts the inventory loop and the consumer of endings.
//!
//! Nothing here is fatal: a kernel without the iterator runs the daemon without the
//! inventory (keepalive_daemon_audit_inventory_enabled 0), as the issue asks.
//!
//! The idle-death hook's mechanism is chosen and logged like the other socket hooks'
//! (`idle_deaths: fentry`, ...). Without it (--audit.disable, or no inventory and so no
//! HZ) it is not tried: its line says why (`idle_deaths: none (...)`) and its
//! keepalive_daemon_hook_info series are all 0.

use std::sync::{Arc, Mutex};

use aya::Ebpf;
use keepalive_daemon::{
    audit::settings::AuditSettings,
    audit::{
        cgroup::{self, CgroupPaths},
        endings, inventory,
        kernel::{EndingsReader, IdleDeathSetup, IdleDeaths, Inventory},
    },
    cli::Args,
    error_chain::Chain,
    exporter::{audit_metrics::limit_label, state::State},
    kernel::btf::KernelBtf,
    sockhooks::{Hook, LateChoice},
};

/// What attached; started by [`Attached::start`].
pub struct Attached {
    inventory: Option<(Inventory, AuditSettings)>,
    endings: Option<EndingsReader>,
    /// The idle-death hook's links, kept for the daemon's life.
    hooks: Option<IdleDeaths>,
    all_namespaces: bool,
}

impl Attached {
    /// `idle_deaths=<mechanism>` for the ready line and systemd's status.
    pub fn hook_summary(&self) -> String {
        let mechanism = self.hooks.as_ref().and_then(IdleDeaths::mechanism);
        format!(
            "{}={}",
            Hook::IdleDeaths.label(),
            mechanism.map_or("none", |m| m.label())
        )
    }
}

/// Attaches what the kernel allows (before the capabilities are dropped) and logs one
/// line on what the audit does, and the idle-death hook's choice (through `late`).
pub fn attach(
    ebpf: &mut Ebpf,
    btf: &KernelBtf,
    settings: Option<AuditSettings>,
    all_namespaces: bool,
    late: LateChoice<'_>,
) -> Attached {
    let mut out = Attached {
        inventory: None,
        endings: None,
        hooks: None,
        all_namespaces,
    };
    let Some(settings) = settings else {
        log::info!("audit: off (--audit.disable)");
        late.off(Hook::IdleDeaths, "audit off: --audit.disable");
        return out;
    };
    let inv = match Inventory::attach(ebpf, btf) {
        Ok(inv) => inv,
        Err(e) => {
            log::warn!(
                "audit: inventory off: {}; tcp_keepalive_connections* are not exported \
                 (keepalive_daemon_audit_inventory_enabled 0), and idle deaths are not \
                 tracked either: their hook needs the kernel's HZ, which the inventory measures",
                Chain(&e)
            );
            late.off(Hook::IdleDeaths, "audit inventory off: no HZ");
            return out;
        }
    };
    let setup = IdleDeathSetup {
        min_idle: settings.min_idle,
        hz: inv.hz(),
    };
    let deaths = match IdleDeaths::attach_with(ebpf, btf, setup, late) {
        Ok(mut hooks) => {
            out.endings = hooks.take_endings();
            let deaths = match hooks.mechanism() {
                Some(m) => format!(
                    "idle deaths after {:?} idle tracked ({})",
                    settings.min_idle,
                    m.label()
                ),
                None => "idle deaths not tracked (no mechanism: see idle_deaths)".to_owned(),
            };
            out.hooks = Some(hooks);
            deaths
        }
        Err(e) => {
            log::warn!("audit: idle-death hook off: {}", Chain(&e));
            late.off(Hook::IdleDeaths, "its set-up failed: see the audit warning");
            "idle deaths not tracked".to_owned()
        }
    };
    let limits: Vec<String> = settings
        .idle_limits
        .iter()
        .map(|l| limit_label(*l))
        .collect();
    log::info!(
        "audit: inventory every {:?} in {}, idle limits {}, HZ {}; {deaths}",
        settings.interval,
        if all_namespaces {
            "every network namespace"
        } else {
            "this namespace"
        },
        limits.join(" "),
        inv.hz(),
    );
    out.inventory = Some((inv, settings));
    out
}

impl Attached {
    /// What the inventory needs after the capabilities are dropped (caps.rs).
    pub fn capabilities_needed(&self) -> Vec<caps::Capability> {
        super::caps::audit_needs(self.inventory.is_some(), self.all_namespaces)
    }

    /// Starts the inventory loop and the consumer of endings.
    pub fn start(&mut self, args: &Args, state: &Arc<State>) {
        let cgroups = Arc::new(Mutex::new(CgroupPaths::new(cgroup::find_root())));
        let Some((inv, settings)) = self.inventory.take() else {
            return;
        };
        if args.all_namespaces {
            warn_missing_namespace_caps();
        }
        let hz = inv.hz();
        if let Some(reader) = self.endings.take() {
            endings::spawn(reader, hz, cgroups.clone(), state.clone());
        }
        let loop_settings = inventory::Settings {
            interval: settings.interval,
            limits: settings.idle_limits,
            all_namespaces: args.all_namespaces,
            local_ports: args.local_ports.clone(),
        };
        inventory::spawn(inv, loop_settings, cgroups, state.clone());
    }

    /// Lets go of the idle-death hook, before the programs are unloaded.
    pub fn detach(self) {
        if self.hooks.is_some() {
            log::debug!("audit: idle-death hook released");
        }
    }
}

/// With --socket.all-namespaces the inventory enters each namespace (setns: CAP_SYS_ADMIN)
/// found through other processes' /proc/PID/ns/net (CAP_SYS_PTRACE for processes with
/// capabilities the daemon lacks). Said once, after the capabilities were dropped, if
/// those are gone: the failures would otherwise only show as errors every run.
fn warn_missing_namespace_caps() {
    use caps::{CapSet, Capability};
    let missing: Vec<String> = [Capability::CAP_SYS_ADMIN, Capability::CAP_SYS_PTRACE]
        .into_iter()
        .filter(|c| !caps::has_cap(None, CapSet::Effective, *c).unwrap_or(false))
        .map(|c| c.to_string())
        .collect();
    if !missing.is_empty() {
        log::warn!(
            "audit: --socket.all-namespaces: without {} (dropped after attaching) the \
             inventory cannot open or enter most other network namespaces: their sockets \
             are not listed, and they count in keepalive_daemon_audit_errors_total",
            missing.join(" and ")
        );
    }
}

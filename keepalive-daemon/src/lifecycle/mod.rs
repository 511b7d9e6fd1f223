//! The daemon's life: start-up as a sequence of steps (each in the module it belongs
//! to), serving until SIGTERM or SIGINT, then detaching everything.

mod audit;
pub mod caps;
pub mod notify;

use std::sync::Arc;

use anyhow::Context as _;
use aya::{Ebpf, EbpfLoader};
use keepalive_common::{
    ports::{MAX_PORTS, PortConfig},
    sockhook::SockConfig,
};
use keepalive_daemon::{
    cli::{Args, KernelLogLevel},
    error_chain::Chain,
    exporter::{self, registry::Metrics, state::State},
    kernel::btf::KernelBtf,
    sockhooks,
    web::Server,
    wire::{self, attachments::Attachments, linkwatch::LinkWatch},
};
use tokio::signal::unix::{SignalKind, signal};

pub async fn run(args: Args) -> anyhow::Result<()> {
    // What clap cannot check value by value (the audit's limits) comes first of all.
    let audit_settings = args.audit_settings()?;
    // Kernel, capabilities and BTF first: each names what is missing, before anything
    // is bound or attached.
    caps::check()?;
    let btf = KernelBtf::load(&args.btf_path)
        .with_context(|| format!("--kernel.btf-path {}", args.btf_path.display()))?;
    // Web configuration and binding next: a bad TLS file or a port in use fails
    // before anything is attached.
    let server = Server::bind(&args).await?;
    let (mut links, chosen) = wire::watch_and_select(&args.interfaces)?;
    let netns = sockhooks::netns_filter(args.all_namespaces)?;
    let resolved = sockhooks::resolve_or_disable(&btf, netns);
    let audit_config = keepalive_daemon::audit::kernel::loader_config(&btf);

    let mut ebpf = load_object(&args, &resolved.config, &audit_config)?;
    forward_kernel_logs(&mut ebpf, args.kernel_log_level)?;
    let metrics = Metrics::new(&args.local_ports).context("building the metrics registry")?;
    metrics.flow_capacity.set(args.flows_max.into());
    let mut attachments = wire::attach_at_start(&mut ebpf, &args, &metrics, &chosen)?;
    let attached_interfaces = attachments.len();
    log::info!("{}", attachments.summary());
    let hooks = sockhooks::attach(&mut ebpf, resolved, &args.hooks_disable, &metrics.hook_info);
    // The audit's programs attach with the others, before the capabilities go; BTF is
    // not needed after them.
    let late = sockhooks::LateChoice {
        disabled: &args.hooks_disable,
        hook_info: Some(&metrics.hook_info),
    };
    let mut audit = audit::attach(&mut ebpf, &btf, audit_settings, args.all_namespaces, late);
    drop(btf);
    // What start-up freed (the parsed kernel BTF above all) goes back to the kernel.
    keepalive_daemon::audit::inventory::release_free_pages();
    caps::drop_after_attach(&audit.capabilities_needed());

    // Only the daemon's own namespace has a kernel count to compare with.
    let measure_timer_loss = hooks.timer_tracepoint && netns.is_some();
    let state = Arc::new(State::from_ebpf(&mut ebpf, metrics, measure_timer_loss)?);
    server.spawn(&state)?;
    exporter::spawn_flow_map_sweeper(state.clone(), args.sweep_interval);
    audit.start(&args, &state);
    let hooks_summary = format!("{}, {}", hooks.summary, audit.hook_summary());
    log::info!("ready: watching {attached_interfaces} interface(s); hooks: {hooks_summary}");
    tell_systemd(&state, attached_interfaces, &hooks_summary);

    run_until_signal(&mut ebpf, &mut attachments, &mut links, &state.metrics).await?;
    notify::stopping();
    audit.detach();
    detach(ebpf);
    Ok(())
}

/// Loads the eBPF object with the globals the programs read (socket layout, per-port
/// allowlist) and the flow map sized by --flows.max.
fn load_object(
    args: &Args,
    sock_config: &SockConfig,
    audit_config: &keepalive_common::audit_config::AuditConfig,
) -> anyhow::Result<Ebpf> {
    let port_config = port_config(&args.local_ports)?;
    // aya-log's level global lives in .rodata: at off (0) every log call's level check
    // is a known-false constant and the verifier prunes the call.
    let kernel_level = args.kernel_log_level.aya_level();
    EbpfLoader::new()
        .override_global(aya_log::LEVEL, &kernel_level, true)
        .override_global("SOCK_CONFIG", sock_config, true)
        .override_global("AUDIT_CONFIG", audit_config, true)
        .override_global("PORT_CONFIG", &port_config, true)
        .map_max_entries("FLOWS", args.flows_max)
        .load(aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/keepalive")))
        .context("loading the eBPF object failed; the daemon needs root, or CAP_BPF, CAP_PERFMON and CAP_NET_ADMIN")
}

/// With --log.kernel-level above off, reads the programs' aya-log ring buffer whenever
/// it has records and passes them to `log` (target "keepalive_ebpf").
fn forward_kernel_logs(ebpf: &mut Ebpf, level: KernelLogLevel) -> anyhow::Result<()> {
    if level == KernelLogLevel::Off {
        return Ok(());
    }
    let logger = aya_log::EbpfLogger::init(ebpf)
        .context("reading the kernel programs' log buffer for --log.kernel-level")?;
    // SAFETY: the EbpfLogger owns its ring buffer's fd: it stays open and the same for
    // as long as the AsyncFd owns the logger.
    let mut fd = unsafe {
        tokio::io::unix::AsyncFd::register_with_interest(logger, tokio::io::Interest::READABLE)
    }
    .map_err(|e| e.into_parts().1)
    .context("watching the kernel programs' log buffer for --log.kernel-level")?;
    tokio::spawn(async move {
        loop {
            match fd.readable_mut().await {
                Ok(mut guard) => {
                    guard.get_inner_mut().flush();
                    guard.clear_ready();
                }
                Err(e) => {
                    log::error!("kernel log buffer unreadable, kernel logs stop: {e}");
                    return;
                }
            }
        }
    });
    Ok(())
}

/// The kernel's view of --metrics.local-port.
fn port_config(ports: &[u16]) -> anyhow::Result<PortConfig> {
    anyhow::ensure!(
        ports.len() <= MAX_PORTS,
        "--metrics.local-port given {} times; at most {MAX_PORTS} ports are supported",
        ports.len()
    );
    let mut c = PortConfig {
        count: ports.len() as u32,
        ..Default::default()
    };
    c.ports[..ports.len()].copy_from_slice(ports);
    Ok(c)
}

/// READY=1 with a status line, then, if systemd asked for a watchdog, pings fed by real
/// progress: each needs a successful read of the kernel counters.
fn tell_systemd(state: &Arc<State>, attached_interfaces: usize, hooks_in_use: &str) {
    notify::ready(&format!(
        "watching {attached_interfaces} interface(s); hooks: {hooks_in_use}"
    ));
    let Some(every) = notify::watchdog_interval() else {
        return;
    };
    let state = state.clone();
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(every);
        loop {
            tick.tick().await;
            match state.render_metrics_checked() {
                Ok(()) => notify::watchdog(),
                Err(e) => log::error!("watchdog: kernel counters unreadable: {}", Chain(&e)),
            }
        }
    });
}

/// Follows link events (attaching interfaces that appear, forgetting those that go)
/// until SIGTERM or SIGINT.
async fn run_until_signal(
    ebpf: &mut Ebpf,
    attachments: &mut Attachments,
    links: &mut LinkWatch,
    metrics: &Metrics,
) -> anyhow::Result<()> {
    let mut term = signal(SignalKind::terminate()).context("installing the SIGTERM handler")?;
    let mut int = signal(SignalKind::interrupt()).context("installing the SIGINT handler")?;
    loop {
        let name = tokio::select! {
            _ = term.recv() => "SIGTERM",
            _ = int.recv() => "SIGINT",
            events = links.next() => {
                match events {
                    Ok(events) => {
                        for ev in events {
                            attachments.on_event(ebpf, metrics, ev);
                        }
                    }
                    Err(e) => {
                        log::warn!("reading link events: {e}");
                        tokio::time::sleep(std::time::Duration::from_secs(1)).await;
                    }
                }
                continue;
            }
        };
        log::info!("{name} received: detaching and exiting");
        return Ok(());
    }
}

/// Dropping the programs detaches their links (TCX and perf/BPF links close with their
/// file descriptors; netlink filters are deleted by aya on drop).
fn detach(ebpf: Ebpf) {
    let n = ebpf.programs().filter(|(_, p)| p.fd().is_ok()).count();
    drop(ebpf);
    log::info!("detached and unloaded {n} programs");
}

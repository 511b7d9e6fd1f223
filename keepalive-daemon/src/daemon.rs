//! Start-up, serving and shutdown.

use std::{net::SocketAddr, path::Path, sync::Arc};

use anyhow::{Context as _, anyhow};
use aya::{
    Ebpf, EbpfLoader,
    maps::{HashMap, PerCpuArray},
};
use keepalive_common::{
    flow::{FlowKey, FlowState},
    ports::{MAX_PORTS, PortConfig},
};
use tokio::{
    net::TcpListener,
    signal::unix::{SignalKind, signal},
};

use keepalive_daemon::cli::{Args, ListenAddress, parse_listen_address};

use crate::{
    attachments::Attachments, caps, hooks, http, interfaces, kernel::btf::KernelBtf,
    linkwatch::LinkWatch, metrics::Metrics, notify, sockconfig, state::State, tc, timer_fn,
    webconfig,
};

pub async fn run(args: Args) -> anyhow::Result<()> {
    // Kernel, capabilities and BTF first: each names what is missing, before anything
    // is bound or attached.
    caps::check()?;
    let btf = KernelBtf::load(&args.btf_path)
        .with_context(|| format!("--kernel.btf-path {}", args.btf_path.display()))?;
    // Web configuration and binding first: a bad TLS file or a port in use fails
    // before anything is attached.
    let web = match &args.web_config_file {
        None => http::Web::default(),
        Some(path) => {
            let config = webconfig::WebConfig::load(path)?;
            http::Web {
                tls: config.tls()?.map(tokio_rustls::TlsAcceptor::from),
                users: config.basic_auth_users,
            }
        }
    };
    let scheme = if web.tls.is_some() { "https" } else { "http" };
    let web = Arc::new(web);
    let mut listeners = Vec::new();
    for addr in &args.listen {
        listeners.push(bind(addr).await?);
    }

    // Subscribed before listing, so no interface falls between the two.
    let mut links = LinkWatch::open().context("subscribing to rtnetlink link events")?;
    let all = interfaces::list()?;
    let mut chosen = interfaces::select(&all, &args.interfaces)?;
    chosen.retain(|i| {
        let ok = i.has_ethernet_header();
        if !ok {
            log::warn!(
                "skipping {}: link type {} has no Ethernet header",
                i.name,
                i.link_type
            );
        }
        ok
    });

    let netns = if args.all_namespaces {
        None
    } else {
        Some(sockconfig::own_netns_inum().context("reading /proc/self/ns/net")?)
    };
    let resolved = sockconfig::resolve(&btf, Path::new("/proc/kallsyms"), netns);
    drop(btf);
    let (config, mut prerequisites, timer_fn_learning) = match resolved {
        Ok(r) => (r.config, r.prerequisites, r.timer_fn_learning),
        Err(e) => {
            log::warn!("socket-level hooks disabled: {e:#}");
            let why = Some(format!("{e:#}"));
            let p = sockconfig::Prerequisites {
                write_wakeup: why.clone(),
                active_reset_reason: why.clone(),
                active_reset_reason_arg: 2,
                timer_tracepoints: why.clone(),
                send_reset_tracepoint: why.clone(),
                error_report_tracepoint: why,
            };
            (Default::default(), p, None)
        }
    };

    let port_config = port_config(&args.local_ports)?;
    let mut ebpf = EbpfLoader::new()
        .override_global("SOCK_CONFIG", &config, true)
        .override_global("PORT_CONFIG", &port_config, true)
        .map_max_entries("FLOWS", args.flows_max)
        .load(aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/keepalive")))
        .context("loading the eBPF object failed; the daemon needs root, or CAP_BPF, CAP_PERFMON and CAP_NET_ADMIN")?;

    let metrics = Metrics::new(&args.local_ports).context("building the metrics registry")?;
    metrics.flow_capacity.set(args.flows_max.into());

    let mut tc_programs = vec![tc::INGRESS_PROGRAM, tc::EGRESS_PROGRAM];
    if args.baseline_program {
        tc_programs.push(tc::BASELINE_PROGRAM);
    }
    tc::load(&mut ebpf, &tc_programs)?;
    let mut attachments = Attachments::new(
        &args.interfaces,
        args.baseline_program,
        &args.tc_attach_mode,
    );
    for iface in &chosen {
        attachments.attach(&mut ebpf, &metrics, iface)?;
    }
    if attachments.len() == 0 {
        log::warn!("no interface to watch yet: wire counters stay at zero");
    }

    if prerequisites.timer_tracepoints.is_none() {
        prerequisites.timer_tracepoints =
            timer_fn::establish(&mut ebpf, timer_fn_learning, config.keepalive_timer_fn);
    }

    let attached_ifaces = attachments.len();
    let mut hook_summary = Vec::new();
    let kernel_btf = aya::Btf::from_sys_fs().ok();
    // The tracepoint timer hook can miss whole timer softirqs (timer_loss.rs).
    let mut timer_tracepoint = false;
    for choice in hooks::attach_all(
        &mut ebpf,
        &prerequisites,
        kernel_btf.as_ref(),
        &args.hooks_disable,
    ) {
        for (m, why) in &choice.rejected {
            log::info!(
                "hook {}: {} not used: {why}",
                choice.hook.label(),
                m.label()
            );
        }
        for m in hooks::preference(choice.hook) {
            let v = i64::from(choice.chosen == Some(*m));
            metrics
                .hook_info
                .with_label_values(&[choice.hook.label(), m.label()])
                .set(v);
        }
        hook_summary.push(format!(
            "{}={}",
            choice.hook.label(),
            choice.chosen.map_or("none", |m| m.label())
        ));
        if choice.hook == hooks::Hook::TimerProbes {
            timer_tracepoint = choice.chosen == Some(hooks::Mechanism::Tracepoint);
        }
        match choice.chosen {
            Some(m) => log::info!("hook {} attached via {}", choice.hook.label(), m.label()),
            None => log::warn!(
                "hook {} could not attach: its counters stay at zero",
                choice.hook.label()
            ),
        }
    }

    // Everything is attached: keep only what run time needs.
    match caps::drop_all_but(&caps::KEPT_AFTER_ATTACH) {
        Ok(dropped) => log::info!(
            "dropped {} capabilities no longer needed ({}); kept CAP_BPF and CAP_NET_ADMIN",
            dropped.len(),
            dropped
                .iter()
                .map(|&c| caps::name(c))
                .collect::<Vec<_>>()
                .join(", ")
        ),
        Err(e) => log::warn!("{e}"),
    }

    let counters = PerCpuArray::try_from(take_map(&mut ebpf, "COUNTERS")?)?;
    // Only the daemon's own namespace has a kernel count to compare with.
    let timer_slots = if timer_tracepoint && netns.is_some() {
        Some(PerCpuArray::try_from(take_map(&mut ebpf, "TIMER_SLOT")?)?)
    } else {
        None
    };
    let port_counters = PerCpuArray::try_from(take_map(&mut ebpf, "PORT_COUNTERS")?)?;
    let flow_map: HashMap<_, FlowKey, FlowState> =
        HashMap::try_from(take_map(&mut ebpf, "FLOWS")?)?;
    // Our own descriptors: their fdinfo has the run statistics, readable without the
    // capabilities dropped above (enumerating all programs would need CAP_SYS_ADMIN).
    let programs = ebpf
        .programs()
        .filter_map(|(name, p)| {
            let fd = p.fd().ok()?.try_clone().ok()?;
            Some((name.to_owned(), fd))
        })
        .collect();
    let state = Arc::new(State::new(
        metrics,
        counters,
        port_counters,
        flow_map,
        programs,
        timer_slots,
    ));

    for listener in listeners {
        log::info!(
            "serving metrics on {scheme}://{}/metrics",
            listener.local_addr()?
        );
        tokio::spawn(http::serve(listener, state.clone(), web.clone()));
    }
    let sweeper_state = state.clone();
    let sweep_interval = args.sweep_interval;
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(sweep_interval);
        loop {
            tick.tick().await;
            sweeper_state.sweep_flows();
        }
    });
    log::info!("ready");
    let notifier = notify::Notifier::from_env();
    let hooks_in_use = hook_summary.join(", ");
    notifier.send(&format!(
        "READY=1\nSTATUS=watching {attached_ifaces} interface(s); hooks: {hooks_in_use}"
    ));
    if let Some(every) = notify::Notifier::watchdog_interval() {
        // Fed by real progress: each ping needs a successful read of the kernel counters.
        let state = state.clone();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(every);
            loop {
                tick.tick().await;
                match state.render_metrics_checked() {
                    Ok(()) => notifier.send("WATCHDOG=1"),
                    Err(e) => log::error!("watchdog: kernel counters unreadable: {e:#}"),
                }
            }
        });
    }

    run_until_signal(&mut ebpf, &mut attachments, &mut links, &state.metrics).await?;
    detach(ebpf);
    Ok(())
}

/// Follows link events (attaching interfaces that appear, forgetting those that go)
/// until SIGTERM or SIGINT.
async fn run_until_signal(
    ebpf: &mut Ebpf,
    attachments: &mut Attachments,
    links: &mut LinkWatch,
    metrics: &crate::metrics::Metrics,
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

fn take_map(ebpf: &mut Ebpf, name: &str) -> anyhow::Result<aya::maps::Map> {
    ebpf.take_map(name)
        .ok_or_else(|| anyhow!("map {name} missing from the eBPF object"))
}

async fn bind(addr: &str) -> anyhow::Result<TcpListener> {
    let explain = |e: std::io::Error, at: SocketAddr| {
        anyhow!("cannot listen on {at} (--web.listen-address {addr}): {e}; choose a free address")
    };
    match parse_listen_address(addr)? {
        ListenAddress::Specific(at) => TcpListener::bind(at).await.map_err(|e| explain(e, at)),
        ListenAddress::Any(port) => {
            // [::] also accepts IPv4 unless IPv6 is off on this host.
            let v6 = SocketAddr::from(([0u16; 8], port));
            match TcpListener::bind(v6).await {
                Ok(l) => Ok(l),
                Err(e) if e.kind() == std::io::ErrorKind::AddrInUse => Err(explain(e, v6)),
                Err(_) => {
                    let v4 = SocketAddr::from(([0u8; 4], port));
                    TcpListener::bind(v4).await.map_err(|e| explain(e, v4))
                }
            }
        }
    }
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

//! The keepalive audit's inventory with many established connections: CPU per
//! inventory run (the daemon's CPU over a window of runs at --audit.interval 1s,
//! divided by the runs it made; an upper bound, since scrapes and sweeps are included),
//! the share of a core that makes at the default interval (30 s), the run time the
//! daemon reports, and the daemon's RSS. Goals (issue #12): under 1% of a core at the
//! default interval, RSS under 64 MiB, at 10,000 and 50,000 connections.

use std::{
    net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream},
    time::{Duration, Instant},
};

use anyhow::{Context as _, ensure};
use keepalive_daemon::metric_names::{AUDIT_DURATION, AUDIT_RUNS, CONNECTIONS};
use keepalive_tests::scenarios::Setup;
use socket2::SockRef;

use super::{
    spawn_daemon,
    userspace::{cpu_ticks, rss_kib, ticks_per_second},
};

/// Inventory runs timed per size.
const RUNS: f64 = 20.0;
const DEFAULT_INTERVAL_S: f64 = 30.0;
/// Listening ports: each takes at most PER_PORT connections, well inside the
/// namespace's ephemeral range (set below), so connect() never runs out of ports.
const PER_PORT: usize = 20_000;
const FIRST_PORT: u16 = 7000;

pub fn run(setup: &Setup, iface: &str) -> anyhow::Result<()> {
    println!("## Audit inventory (goals: < 1% of a core at --audit.interval 30s, RSS < 64 MiB)");
    println!(
        "| established connections | CPU per run (ms) | % of a core at 30 s | run time reported (ms) | RSS (MiB) |"
    );
    println!("| ---: | ---: | ---: | ---: | ---: |");
    raise_fd_limit(2 * 50_000 + 4096)?;
    setup.a.cmd(&[
        "sysctl",
        "-q",
        "-w",
        "net.ipv4.ip_local_port_range=10000 65000",
    ]);
    for n in [10_000usize, 50_000] {
        let conns = setup
            .a
            .run_in(|| open_loopback(n))
            .context("opening connections")?;
        let daemon = spawn_daemon(&setup.a, iface, &["--audit.interval", "1s"]);
        let pid = daemon.pid();
        // Both ends of each connection are established sockets of the namespace.
        let want = (2 * n) as f64;
        let deadline = Instant::now() + Duration::from_secs(60);
        let counted = |d: &keepalive_tests::Daemon| {
            let s = d.scrape();
            s.value(CONNECTIONS, &[("keepalive", "on")])
                + s.value(CONNECTIONS, &[("keepalive", "off")])
        };
        while counted(&daemon) < want {
            ensure!(
                Instant::now() < deadline,
                "the inventory never listed {want} sockets"
            );
            std::thread::sleep(Duration::from_millis(500));
        }
        let runs0 = daemon.scrape().value(AUDIT_RUNS, &[]);
        let cpu0 = cpu_ticks(pid)?;
        std::thread::sleep(Duration::from_secs_f64(RUNS + 0.5));
        let cpu = (cpu_ticks(pid)? - cpu0) as f64 / ticks_per_second();
        let s = daemon.scrape();
        let runs = s.value(AUDIT_RUNS, &[]) - runs0;
        ensure!(runs >= 1.0, "no inventory run in the window");
        let per_run = cpu / runs;
        println!(
            "| {n} | {:.1} | {:.3} | {:.1} | {:.1} |",
            per_run * 1e3,
            per_run / DEFAULT_INTERVAL_S * 100.0,
            s.value(AUDIT_DURATION, &[]) * 1e3,
            rss_kib(pid)? as f64 / 1024.0
        );
        daemon.terminate();
        drop(conns);
    }
    println!();
    Ok(())
}

/// `n` connections over the namespace's loopback, half with SO_KEEPALIVE (idle 60 s);
/// returns every socket (clients, accepted ends, listeners) to keep them open.
fn open_loopback(n: usize) -> anyhow::Result<Vec<TcpStream>> {
    let mut listeners = Vec::new();
    let mut out = Vec::with_capacity(2 * n);
    for i in 0..n {
        if i % PER_PORT == 0 {
            let port = FIRST_PORT + (i / PER_PORT) as u16;
            listeners.push(
                TcpListener::bind((Ipv4Addr::LOCALHOST, port))
                    .with_context(|| format!("listening on 127.0.0.1:{port}"))?,
            );
        }
        let listener = listeners.last().context("no listener")?;
        let addr: SocketAddr = listener.local_addr()?;
        let client = TcpStream::connect(addr).with_context(|| format!("connection {i}"))?;
        if i % 2 == 0 {
            let s = SockRef::from(&client);
            s.set_tcp_keepalive(
                &socket2::TcpKeepalive::new()
                    .with_time(Duration::from_secs(60))
                    .with_interval(Duration::from_secs(10))
                    .with_retries(5),
            )?;
        }
        let (server, _) = listener.accept()?;
        out.push(client);
        out.push(server);
    }
    Ok(out)
}

fn raise_fd_limit(want: u64) -> anyhow::Result<()> {
    let lim = libc::rlimit {
        rlim_cur: want,
        rlim_max: want,
    };
    // SAFETY: setrlimit with a valid struct; as root the hard limit may be raised.
    let rc = unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &lim) };
    ensure!(
        rc == 0,
        "raising RLIMIT_NOFILE to {want}: {}",
        std::io::Error::last_os_error()
    );
    Ok(())
}

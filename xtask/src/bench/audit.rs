//! The keepalive audit's inventory with many established connections: CPU per
//! inventory run (the daemon's CPU over a window of runs at --audit.interval 1s,
//! divided by the runs it made; an upper bound, since scrapes and sweeps are included),
//! the share of a core that makes at the default interval (30 s), the run time the
//! daemon reports, and the daemon's RSS. Goals (issue #12): under 1% of a core at the
//! default interval, RSS under 64 MiB, at 10,000 and 50,000 connections.
//!
//! Beside those: the iterator program's own run time (kernel BPF statistics, held for
//! this section), so the kernel walk and the daemon's user-side work are told apart,
//! the RSS floor (the daemon with --audit.disable, and with the audit on but no
//! connections), and the anonymous part of the RSS (the heap).

use std::{
    io::Read as _,
    process::{Child, Stdio},
    time::{Duration, Instant},
};

use anyhow::{Context as _, ensure};
use aya::sys::{Stats, enable_stats};
use keepalive_daemon::metric_names::{AUDIT_DURATION, AUDIT_RUNS, CONNECTIONS};
use keepalive_tests::{netns::Netns, scenarios::Setup};

use super::{
    spawn_daemon,
    userspace::{cpu_ticks, rss_kib, ticks_per_second},
};

/// Inventory runs timed per size.
const RUNS: f64 = 20.0;
const DEFAULT_INTERVAL_S: f64 = 30.0;
/// The first holder pair's port; each pair listens on the next (its connections stay
/// well inside the namespace's ephemeral range, widened below).
const FIRST_PORT: u16 = 7000;

pub fn run(setup: &Setup, iface: &str) -> anyhow::Result<()> {
    println!("## Audit inventory (goals: < 1% of a core at --audit.interval 30s, RSS < 64 MiB)");
    // Statistics count while this fd is open (BPF_ENABLE_STATS); closed on return.
    let _stats = enable_stats(Stats::RunTime)?;
    floor(setup, iface)?;
    println!(
        "| established connections | CPU per run (ms) | % of a core at 30 s | run time reported (ms) | program per run (ms) | program ns per socket | RSS (MiB) | of which anonymous (MiB) |"
    );
    println!("| ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |");
    setup.a.cmd(&[
        "sysctl",
        "-q",
        "-w",
        "net.ipv4.ip_local_port_range=10000 65000",
    ]);
    for n in [10_000usize, 50_000] {
        let conns = open_loopback(&setup.a, n).context("opening connections")?;
        let daemon = spawn_daemon(&setup.a, iface, &["--audit.interval", "1s"]);
        let pid = daemon.pid();
        // Both ends of each connection are established sockets of the namespace.
        let want = (2 * n) as f64;
        let deadline = Instant::now() + Duration::from_secs(60);
        let counted = |d: &keepalive_tests::Daemon| {
            let s = d.scrape();
            // Absent until the first inventory.
            s.matching(CONNECTIONS, &[]).map(|s| s.value).sum::<f64>()
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
        let prog0 = iter_stats(pid)?;
        std::thread::sleep(Duration::from_secs_f64(RUNS + 0.5));
        let cpu = (cpu_ticks(pid)? - cpu0) as f64 / ticks_per_second();
        let prog = iter_stats(pid)?;
        let s = daemon.scrape();
        let runs = s.value(AUDIT_RUNS, &[]) - runs0;
        ensure!(runs >= 1.0, "no inventory run in the window");
        let per_run = cpu / runs;
        let prog_ns = prog.0.saturating_sub(prog0.0) as f64;
        let prog_calls = prog.1.saturating_sub(prog0.1).max(1) as f64;
        println!(
            "| {n} | {:.1} | {:.3} | {:.1} | {:.1} | {:.0} | {:.1} | {:.1} |",
            per_run * 1e3,
            per_run / DEFAULT_INTERVAL_S * 100.0,
            s.value(AUDIT_DURATION, &[]) * 1e3,
            prog_ns / runs / 1e6,
            prog_ns / prog_calls,
            rss_kib(pid)? as f64 / 1024.0,
            status_kib(pid, "RssAnon:")? as f64 / 1024.0
        );
        daemon.terminate();
        drop(conns);
    }
    println!();
    Ok(())
}

/// The RSS floor: the daemon without the audit, and with it but no connections (after
/// a few inventory runs), each after the same settling time.
fn floor(setup: &Setup, iface: &str) -> anyhow::Result<()> {
    for (what, extra) in [
        ("--audit.disable", &["--audit.disable"][..]),
        ("audit on, no connections", &["--audit.interval", "1s"][..]),
    ] {
        let daemon = spawn_daemon(&setup.a, iface, extra);
        std::thread::sleep(Duration::from_secs(5));
        let pid = daemon.pid();
        println!(
            "RSS floor ({what}): {:.1} MiB, of which anonymous {:.1} MiB",
            rss_kib(pid)? as f64 / 1024.0,
            status_kib(pid, "RssAnon:")? as f64 / 1024.0
        );
        daemon.terminate();
    }
    println!();
    Ok(())
}

/// A field of /proc/PID/status in KiB.
fn status_kib(pid: u32, field: &str) -> anyhow::Result<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    status
        .lines()
        .find_map(|l| l.strip_prefix(field))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .with_context(|| format!("no {field} in /proc/{pid}/status"))
}

/// run_time_ns and run_cnt of the daemon's iterator program (one run per socket the
/// iterator visits, listening and TIME_WAIT ones included), from bpftool; picked among
/// the programs of that name by the daemon's fds (/proc/PID/fdinfo names the program id
/// of a program or link fd), since other daemons may load the same program.
fn iter_stats(pid: u32) -> anyhow::Result<(u64, u64)> {
    let out = std::process::Command::new("bpftool")
        .args(["-j", "prog", "show"])
        .output()
        .context("running bpftool -j prog show")?;
    let progs: Vec<serde_json::Value> =
        serde_json::from_slice(&out.stdout).context("parsing bpftool's JSON")?;
    let mut held = std::collections::HashSet::new();
    for e in std::fs::read_dir(format!("/proc/{pid}/fdinfo"))? {
        let Ok(text) = std::fs::read_to_string(e?.path()) else {
            continue;
        };
        held.extend(
            text.lines()
                .filter_map(|l| l.strip_prefix("prog_id:"))
                .filter_map(|v| v.trim().parse::<u64>().ok()),
        );
    }
    let ours = progs
        .iter()
        .find(|p| {
            p["name"] == keepalive_daemon::audit::kernel::ITER_PROGRAM
                && p["id"].as_u64().is_some_and(|id| held.contains(&id))
        })
        .context("the daemon's iterator program is not loaded")?;
    let num = |f: &str| ours[f].as_u64().unwrap_or(0);
    Ok((num("run_time_ns"), num("run_cnt")))
}

/// Holds connections over the namespace's loopback from child processes: one server
/// and one client process per [`PER_PAIR`] connections, each far below the open-file
/// limit this machine allows (a hard limit of 20,000 that root cannot raise here without
/// CAP_SYS_RESOURCE). Half the clients set SO_KEEPALIVE with TCP_KEEPIDLE 60 s. The
/// processes hold their sockets until their stdin closes (on drop).
struct Holders(Vec<Child>);

/// Connections per server/client process pair.
const PER_PAIR: usize = 12_500;

/// The holder: `server PORT N` accepts N connections, `client PORT N` makes N; both
/// print "ready" and keep every socket until stdin reaches EOF.
const HOLDER: &str = r#"
import socket, sys
role, port, n = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
held = []
if role == "server":
    l = socket.socket()
    l.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    l.bind(("127.0.0.1", port))
    l.listen(4096)
    print("listening", flush=True)
    for _ in range(n):
        held.append(l.accept()[0])
else:
    for i in range(n):
        s = socket.create_connection(("127.0.0.1", port))
        if i % 2 == 0:
            s.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)
            s.setsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPIDLE, 60)
        held.append(s)
print("ready", flush=True)
sys.stdin.read()
"#;

fn open_loopback(ns: &Netns, n: usize) -> anyhow::Result<Holders> {
    let mut holders = Holders(Vec::new());
    let pairs = n.div_ceil(PER_PAIR);
    for p in 0..pairs {
        let count = (n - p * PER_PAIR).min(PER_PAIR).to_string();
        let port = (FIRST_PORT + p as u16).to_string();
        let server = spawn_holder(ns, "server", &port, &count)?;
        holders.0.push(server);
        wait_line(holders.0.last_mut().context("no server")?, "listening")?;
        holders.0.push(spawn_holder(ns, "client", &port, &count)?);
        wait_line(holders.0.last_mut().context("no client")?, "ready")?;
        wait_line(&mut holders.0[2 * p], "ready")?;
    }
    Ok(holders)
}

fn spawn_holder(ns: &Netns, role: &str, port: &str, count: &str) -> anyhow::Result<Child> {
    ns.command("python3")
        .args(["-c", HOLDER, role, port, count])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .with_context(|| format!("starting the {role} holder on port {port}"))
}

/// Reads the holder's stdout up to the line `want` (bounded: a holder that dies ends
/// its stdout, which ends the read).
fn wait_line(child: &mut Child, want: &str) -> anyhow::Result<()> {
    let out = child.stdout.as_mut().context("holder without stdout")?;
    let mut line = Vec::new();
    let mut byte = [0u8; 1];
    loop {
        let n = out.read(&mut byte)?;
        ensure!(n == 1, "the holder exited before saying {want}");
        if byte[0] == b'\n' {
            if line == want.as_bytes() {
                return Ok(());
            }
            line.clear();
        } else {
            line.push(byte[0]);
        }
    }
}

impl Drop for Holders {
    fn drop(&mut self) {
        for c in &mut self.0 {
            drop(c.stdin.take());
        }
        for c in &mut self.0 {
            let _ = c.wait();
        }
    }
}

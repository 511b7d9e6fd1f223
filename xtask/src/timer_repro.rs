//! `cargo xtask timer-repro`: reproducer for the timer-probe burst loss on the
//! tracepoint fallback (docs/timer-burst-loss.md).
//!
//! Each run builds the harness's namespaces A and B, starts one daemon in each, opens
//! 1,000 connections A -> B and switches fast keepalive on at both ends of each group
//! of 100 at once (equal settings, so the two ends' timers share timer-wheel slots and
//! their probes cross), group k at k * 100 ms. Both daemons are scraped every 0.5 s.
//! After `--seconds` keepalive goes off everywhere and, after a settle wait, each
//! daemon's `tcp_keepalive_timer_probes_total` is compared with the
//! `TcpExtTCPKeepAlive` delta of its own namespace. Traffic stays inside the run's
//! namespaces; the harness's Drop guards remove daemons, sockets and namespaces.

use std::io;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread;
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use keepalive_daemon::metric_names::{PROBES, TIMER_PROBES, TIMER_PROBES_LOST};
use keepalive_tests::bpf::proc_bpf_objects;
use keepalive_tests::scale::{self, GROUP_SPACING, KEEPALIVE_GROUPS, SCALE_QUIET, SCALE_SETTLE};
use keepalive_tests::sockets::{Conn, FAST_KEEPALIVE, disable_keepalive, enable_keepalive};
use keepalive_tests::{Daemon, Netns, Samples, Setup};

/// Half of the connections IPv4, half IPv6, as in the scale test.
const V4: usize = 500;
const V6: usize = 500;
const SCRAPE_EVERY: Duration = Duration::from_millis(500);
/// Bounds, so a typo cannot keep the machine busy for a day.
const MAX_RUNS: u32 = 500;
const MAX_SECONDS: u64 = 120;

#[derive(clap::Args, Debug)]
pub struct Args {
    /// Number of runs.
    #[arg(long, default_value_t = 20)]
    pub runs: u32,
    /// Seconds of keepalive per run (from the first group on to keepalive off).
    #[arg(long, default_value_t = 15)]
    pub seconds: u64,
    /// Only the daemon in A (the scale test's layout).
    #[arg(long)]
    pub single_daemon: bool,
    /// Run this daemon binary instead of building the release daemon (to compare
    /// builds, e.g. a copy of the binary before a change).
    #[arg(long)]
    pub daemon_bin: Option<std::path::PathBuf>,
}

/// What one daemon reported against its namespace's kernel counter.
struct SideResult {
    timer: u64,
    nstat: u64,
    wire_sent: u64,
    lost_metric: Option<u64>,
    progs: String,
}

impl SideResult {
    /// Fewer timer probes than the kernel sent (a missed burst), accounted or not.
    fn lost(&self) -> bool {
        self.timer != self.nstat
    }

    /// Kernel probes neither counted nor reported lost by the daemon (negative: more
    /// reported lost than missed).
    fn unaccounted(&self) -> i64 {
        self.nstat as i64 - (self.timer + self.lost_metric.unwrap_or(0)) as i64
    }

    fn describe(&self, side: &str) -> String {
        let lost = self
            .lost_metric
            .map_or_else(|| "-".to_owned(), |v| v.to_string());
        format!(
            "{side}: timer {} nstat {} wire {} lost-metric {lost} unaccounted {}{} [{}]",
            self.timer,
            self.nstat,
            self.wire_sent,
            self.unaccounted(),
            if self.lost() { " LOSS" } else { "" },
            self.progs
        )
    }
}

pub fn run(args: &Args) -> anyhow::Result<()> {
    if args.runs == 0 || args.runs > MAX_RUNS {
        bail!("--runs must be 1..={MAX_RUNS}");
    }
    if args.seconds < 2 || args.seconds > MAX_SECONDS {
        bail!("--seconds must be 2..={MAX_SECONDS}");
    }
    scale::ensure_nofile_limit(2 * (V4 + V6) as u64 + 256);
    let (mut losses, mut unaccounted_runs) = (0, 0);
    for i in 1..=args.runs {
        let started = Instant::now();
        let sides = one_run(args)?;
        let lost = sides.iter().any(|(_, s)| s.lost());
        losses += u32::from(lost);
        unaccounted_runs += u32::from(sides.iter().any(|(_, s)| s.unaccounted() != 0));
        let text: Vec<String> = sides.iter().map(|(n, s)| s.describe(n)).collect();
        println!(
            "run {i}: {} ({:.1} s){}",
            text.join("; "),
            started.elapsed().as_secs_f64(),
            if lost { " BURST LOST" } else { "" }
        );
    }
    println!(
        "runs: {}, losses: {losses}, runs with unaccounted (or over-reported) probes: \
         {unaccounted_runs}",
        args.runs
    );
    Ok(())
}

fn one_run(args: &Args) -> anyhow::Result<Vec<(&'static str, SideResult)>> {
    let setup = Setup::new("trepro");
    let daemon_a = Daemon::spawn(&setup.a, &[&setup.veth.a_if]);
    let daemon_b = (!args.single_daemon).then(|| Daemon::spawn(&setup.b, &[&setup.veth.b_if]));
    let daemons: Vec<(&'static str, &Netns, &Daemon<'_>)> =
        std::iter::once(("A", &setup.a, &daemon_a))
            .chain(daemon_b.as_ref().map(|d| ("B", &setup.b, d)))
            .collect();
    for (name, _, d) in &daemons {
        let hooks = d.scrape().hooks_in_use();
        if hooks.get("timer_probes").map(String::as_str) != Some("tracepoint") {
            bail!("daemon {name} does not use the tracepoint timer hook: {hooks:?}");
        }
    }

    let conns = scale::open_many(&setup.a, &setup.b, V4, V6);
    keepalive_tests::sockets::exchange_byte(&conns);
    thread::sleep(SCALE_QUIET);
    let before: Vec<_> = daemons
        .iter()
        .map(|(_, ns, d)| (scale::nstat_all(ns), d.scrape()))
        .collect();

    let stop = AtomicBool::new(false);
    thread::scope(|s| {
        s.spawn(|| {
            while !stop.load(Ordering::Relaxed) {
                for (_, _, d) in &daemons {
                    let _ = d.scrape_text();
                }
                thread::sleep(SCRAPE_EVERY);
            }
        });
        probe_phase(&conns, Duration::from_secs(args.seconds));
        stop.store(true, Ordering::Relaxed);
    });
    thread::sleep(SCALE_SETTLE);

    daemons
        .iter()
        .zip(before)
        .map(|((name, ns, d), (nstat0, s0))| {
            let nstat1 = scale::nstat_all(ns);
            let s1 = d.scrape();
            let progs = timer_prog_stats(d.pid()).unwrap_or_else(|e| format!("{e:#}"));
            Ok((
                *name,
                SideResult {
                    timer: s1.delta(&s0, TIMER_PROBES, &[]),
                    nstat: scale::nstat_delta(&nstat0, &nstat1, keepalive_tests::nstat::KEEPALIVE),
                    wire_sent: s1.delta(&s0, PROBES, &[("direction", "sent")]),
                    lost_metric: lost_metric(&s0, &s1),
                    progs,
                },
            ))
        })
        .collect()
}

/// The loss metric's delta, where the daemon exports one (reported as "-" where it does
/// not, e.g. an older binary given with --daemon-bin).
fn lost_metric(before: &Samples, after: &Samples) -> Option<u64> {
    after.get(TIMER_PROBES_LOST, &[])?;
    Some(after.delta(before, TIMER_PROBES_LOST, &[]))
}

/// Keepalive on at both ends of group k at k * GROUP_SPACING, off everywhere after
/// `length`.
fn probe_phase(conns: &[Conn], length: Duration) {
    let start = Instant::now();
    for g in 0..KEEPALIVE_GROUPS {
        sleep_until(start + GROUP_SPACING * g as u32);
        for c in conns.iter().skip(g).step_by(KEEPALIVE_GROUPS) {
            enable_keepalive(&c.client, FAST_KEEPALIVE);
            enable_keepalive(c.server(), FAST_KEEPALIVE);
        }
    }
    sleep_until(start + length);
    for c in conns {
        disable_keepalive(&c.client);
        disable_keepalive(c.server());
    }
}

fn sleep_until(t: Instant) {
    let now = Instant::now();
    if t > now {
        thread::sleep(t - now);
    }
}

/// run_cnt and recursion_misses of the daemon's timer programs, read from
/// bpf_prog_info directly (bpftool prints recursion_misses only when it is non-zero).
fn timer_prog_stats(pid: u32) -> anyhow::Result<String> {
    let mut out = Vec::new();
    for id in proc_bpf_objects(pid).prog_ids {
        let info = prog_info(id).with_context(|| format!("bpf_prog_info of {id}"))?;
        if info.name.starts_with("ka_timer") {
            out.push(format!(
                "{} run_cnt {} recursion_misses {}",
                info.name, info.run_cnt, info.recursion_misses
            ));
        }
    }
    Ok(out.join(", "))
}

struct ProgInfo {
    name: String,
    run_cnt: u64,
    recursion_misses: u64,
}

// include/uapi/linux/bpf.h
const BPF_PROG_GET_FD_BY_ID: libc::c_long = 13;
const BPF_OBJ_GET_INFO_BY_FD: libc::c_long = 15;
/// Offsets in struct bpf_prog_info (include/uapi/linux/bpf.h, stable ABI).
const INFO_NAME: usize = 64;
const INFO_RUN_CNT: usize = 200;
const INFO_RECURSION_MISSES: usize = 208;
const INFO_LEN: usize = 256;

fn prog_info(id: u32) -> io::Result<ProgInfo> {
    // union bpf_attr for BPF_PROG_GET_FD_BY_ID: prog_id, next_id, open_flags.
    let mut attr = [0u8; 128];
    attr[..4].copy_from_slice(&id.to_ne_bytes());
    // SAFETY: bpf(2) reads `attr.len()` bytes from the live buffer.
    let fd = unsafe {
        libc::syscall(
            libc::SYS_bpf,
            BPF_PROG_GET_FD_BY_ID,
            attr.as_ptr(),
            attr.len() as libc::c_uint,
        )
    };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    let fd = fd as libc::c_int;
    let mut info = [0u8; INFO_LEN];
    // union bpf_attr for BPF_OBJ_GET_INFO_BY_FD: bpf_fd, info_len, info (pointer).
    let mut attr = [0u8; 128];
    attr[..4].copy_from_slice(&(fd as u32).to_ne_bytes());
    attr[4..8].copy_from_slice(&(INFO_LEN as u32).to_ne_bytes());
    attr[8..16].copy_from_slice(&(info.as_mut_ptr() as u64).to_ne_bytes());
    // SAFETY: bpf(2) reads the attr buffer and writes at most INFO_LEN bytes into
    // `info`, both live for the call.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_bpf,
            BPF_OBJ_GET_INFO_BY_FD,
            attr.as_ptr(),
            attr.len() as libc::c_uint,
        )
    };
    let err = io::Error::last_os_error();
    // SAFETY: `fd` came from BPF_PROG_GET_FD_BY_ID above and is closed once.
    unsafe { libc::close(fd) };
    if rc < 0 {
        return Err(err);
    }
    let u64_at = |off: usize| {
        let mut b = [0u8; 8];
        b.copy_from_slice(&info[off..off + 8]);
        u64::from_ne_bytes(b)
    };
    let name = &info[INFO_NAME..INFO_NAME + 16];
    let len = name.iter().position(|&b| b == 0).unwrap_or(16);
    Ok(ProgInfo {
        name: String::from_utf8_lossy(&name[..len]).into_owned(),
        run_cnt: u64_at(INFO_RUN_CNT),
        recursion_misses: u64_at(INFO_RECURSION_MISSES),
    })
}

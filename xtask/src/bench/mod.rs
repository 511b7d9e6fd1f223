//! `cargo xtask bench`: figures measured side by side in one run, printed as a report.
//! Method and latest figures: BENCHMARKS.md.

mod audit;
mod cost;
mod sweep;
mod throughput;
mod userspace;

use std::time::Duration;

use anyhow::{Context as _, bail};
use keepalive_tests::{Daemon, netns::Netns, scenarios::Setup};
use serde::Deserialize;

pub struct Options {
    /// Seconds of traffic per measurement.
    pub seconds: u64,
    /// Rounds per configuration in the throughput comparison.
    pub rounds: usize,
    /// Only this section (cost, throughput, userspace, sweep, audit).
    pub only: Option<String>,
    /// The cost section also measures the floors of our path (--debug.wire-floor).
    pub floors: bool,
}

pub fn run(opts: &Options) -> anyhow::Result<()> {
    let setup = Setup::new("bench");
    let iface = setup.veth.a_if.clone();
    println!("# keepalive-daemon benchmark");
    println!(
        "kernel {}, {} CPUs, load average {}",
        uname_release(),
        num_cpus(),
        loadavg()
    );
    println!();

    let want = |section: &str| opts.only.as_deref().is_none_or(|o| o == section);
    if let Some(o) = opts.only.as_deref() {
        anyhow::ensure!(
            ["cost", "throughput", "userspace", "sweep", "audit"].contains(&o),
            "unknown section {o}"
        );
    }
    if want("cost") {
        cost::run(&setup, &iface, opts)?;
    }
    if want("throughput") {
        throughput::run(&setup, &iface, opts)?;
    }
    if want("userspace") {
        userspace::run(&setup, &iface)?;
    }
    if want("sweep") {
        sweep::run(&setup, &iface)?;
    }
    if want("audit") {
        audit::run(&setup, &iface)?;
    }
    Ok(())
}

/// The small-segment shape's send rate (iperf3 -b): 78,000 writes of 64 bytes a
/// second, about half of what this 2-vCPU machine sends one write a segment.
pub const SMALL_RATE: &str = "40M";

/// iperf3 from A to B; returns received bits per second. `small` uses 64-byte writes
/// with TCP_NODELAY at [`SMALL_RATE`], so every write becomes a segment.
pub fn iperf(setup: &Setup, seconds: u64, small: bool) -> anyhow::Result<f64> {
    let mut server = setup.b.command("iperf3");
    server.args(["-s", "-1", "-B", &keepalive_tests::netns::B_V4.to_string()]);
    let mut server = server
        .stdout(std::process::Stdio::null())
        .spawn()
        .context("starting iperf3 -s")?;
    std::thread::sleep(Duration::from_millis(300));
    let secs = seconds.to_string();
    let mut args = vec!["-c", "192.0.2.2", "-t", secs.as_str(), "-J"];
    if small {
        // Paced below what the stack can send one write at a time: unpaced, rounds
        // flipped between two steady states, 900,000 segments of 64 bytes in 4 s, or
        // 5,000 of about 20 KB, once the sender got ahead of its own transmissions and
        // tcp_sendmsg() kept appending the writes to the unsent tail of the queue.
        args.extend(["-l", "64", "-N", "-b", SMALL_RATE]);
    }
    let out = setup.a.cmd_output(&[&["iperf3"][..], &args].concat());
    let _ = server.wait();
    if !out.status.success() {
        bail!("iperf3 failed: {}", String::from_utf8_lossy(&out.stderr));
    }
    let report: IperfReport =
        serde_json::from_slice(&out.stdout).context("parsing iperf3's JSON report (-J)")?;
    let bps = report.end.sum_received.bits_per_second;
    Ok(bps)
}

/// The part of iperf3's `-J` report the bench reads: what the receiver counted over the
/// whole run (`end.sum_received`), not what the sender wrote into its socket.
#[derive(Deserialize)]
struct IperfReport {
    end: IperfEnd,
}

#[derive(Deserialize)]
struct IperfEnd {
    sum_received: IperfSum,
}

#[derive(Deserialize)]
struct IperfSum {
    bits_per_second: f64,
}

pub fn spawn_daemon<'a>(ns: &'a Netns, iface: &str, extra: &[&str]) -> Daemon<'a> {
    Daemon::spawn_with(ns, &[iface], extra)
}

/// The median of some measurements and their range (min, max): what every table of the
/// report gives for repeated rounds or sweeps.
#[derive(Clone, Copy, Debug)]
pub struct Spread {
    pub median: f64,
    pub min: f64,
    pub max: f64,
}

impl Spread {
    /// Of `v`, which must not be empty (every caller measures at least one round).
    pub fn of(mut v: Vec<f64>) -> Spread {
        v.sort_by(f64::total_cmp);
        Spread {
            median: v[v.len() / 2],
            min: v[0],
            max: v[v.len() - 1],
        }
    }

    /// "median (min-max)" with `digits` decimals.
    pub fn show(&self, digits: usize) -> String {
        format!(
            "{:.digits$} ({:.digits$}-{:.digits$})",
            self.median, self.min, self.max
        )
    }
}

/// The 1, 5 and 15 minute load averages, for the report's record of how quiet the
/// machine was.
pub fn loadavg() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|s| s.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_else(|e| format!("unknown ({e})"))
}

fn uname_release() -> String {
    std::fs::read_to_string("/proc/sys/kernel/osrelease")
        .unwrap_or_default()
        .trim()
        .to_owned()
}

fn num_cpus() -> usize {
    std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1)
}

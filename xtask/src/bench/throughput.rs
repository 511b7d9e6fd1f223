//! Throughput with the daemon attached versus without, alternating in one run, and the
//! machine's CPU per gigabit in the same rounds.
//!
//! Why the CPU column: the bulk transfer is CPU-bound on both ends (2 vCPUs), and on
//! this build machine (a Firecracker VM) the host takes a varying share of the CPUs
//! ("steal" in /proc/stat), so rounds of the same configuration ranged 0.6x-1.8x in
//! throughput. CPU time used per gigabit moved far less (the table shows both, and the
//! steal share of each configuration).

use keepalive_tests::scenarios::Setup;

use super::{Options, Spread, iperf, spawn_daemon};

/// CPU time of the whole machine from the first line of /proc/stat, in clock ticks:
/// (busy: user, nice, system, irq, softirq; steal).
fn machine_cpu_ticks() -> anyhow::Result<(u64, u64)> {
    let stat = std::fs::read_to_string("/proc/stat")?;
    let f: Vec<u64> = stat
        .lines()
        .next()
        .unwrap_or_default()
        .split_whitespace()
        .skip(1)
        .map(|v| v.parse().unwrap_or(0))
        .collect();
    anyhow::ensure!(f.len() >= 8, "unexpected /proc/stat: {stat:.80}");
    Ok((f[0] + f[1] + f[2] + f[5] + f[6], f[7]))
}

/// One iperf3 run: Gbit/s received, CPU seconds per gigabit sent, steal share.
struct Run {
    gbps: f64,
    cpu_per_gbit: f64,
    steal: f64,
}

fn measured(setup: &Setup, seconds: u64) -> anyhow::Result<Run> {
    let (busy0, steal0) = machine_cpu_ticks()?;
    let bps = iperf(setup, seconds, false)?;
    let (busy1, steal1) = machine_cpu_ticks()?;
    let tick = super::userspace::ticks_per_second();
    let busy = (busy1 - busy0) as f64 / tick;
    let steal = (steal1 - steal0) as f64 / tick;
    let gbit = bps * seconds as f64 / 1e9;
    Ok(Run {
        gbps: bps / 1e9,
        cpu_per_gbit: busy / gbit,
        steal: steal / (busy + steal).max(1e-9),
    })
}

pub fn run(setup: &Setup, iface: &str, opts: &Options) -> anyhow::Result<()> {
    println!("## Throughput with the daemon vs without, bulk (goal: >= 98%)");
    println!(
        "| rounds | without (Gbit/s, mean) | with (Gbit/s, mean) | ratio of means | per-round throughput ratio: median (min-max) | per-round CPU per Gbit, without / with: median (min-max) | steal share without / with |"
    );
    println!("| ---: | ---: | ---: | ---: | ---: | ---: | ---: |");
    // Bulk only: the small-segment shape is paced (bench::SMALL_RATE), so its
    // throughput is the pace whatever the observer costs, and unpaced it flips between
    // two steady states (see SMALL_RATE).
    let (mut without, mut with) = (Vec::new(), Vec::new());
    for _ in 0..opts.rounds.max(1) {
        without.push(measured(setup, opts.seconds)?);
        let daemon = spawn_daemon(&setup.a, iface, &[]);
        with.push(measured(setup, opts.seconds)?);
        daemon.terminate();
    }
    let mean = |v: &[Run], f: fn(&Run) -> f64| v.iter().map(f).sum::<f64>() / v.len() as f64;
    let (a, b) = (mean(&without, |r| r.gbps), mean(&with, |r| r.gbps));
    // Each round measures without and with back to back, so a per-round ratio is less
    // exposed to load that comes and goes on the machine.
    let per_round = |f: fn(&Run, &Run) -> f64| {
        Spread::of(with.iter().zip(&without).map(|(w, wo)| f(w, wo)).collect()).show(3)
    };
    println!(
        "| {} | {a:.3} | {b:.3} | {:.3} | {} | {} | {:.1}% / {:.1}% |",
        without.len(),
        b / a,
        per_round(|w, wo| w.gbps / wo.gbps),
        per_round(|w, wo| wo.cpu_per_gbit / w.cpu_per_gbit),
        mean(&without, |r| r.steal) * 100.0,
        mean(&with, |r| r.steal) * 100.0,
    );
    println!();
    Ok(())
}

//! Throughput with the daemon attached versus without, alternating in one run.

use keepalive_tests::scenarios::Setup;

use super::{Options, iperf, spawn_daemon};

pub fn run(setup: &Setup, iface: &str, opts: &Options) -> anyhow::Result<()> {
    println!("## Throughput with the daemon vs without (goal: >= 98%)");
    println!(
        "| traffic | rounds | without (Gbit/s, mean) | with (Gbit/s, mean) | ratio of means | per-round ratios: median (min-max) |"
    );
    println!("| --- | ---: | ---: | ---: | ---: | ---: |");
    // Bulk only: the small-segment shape is paced (bench::SMALL_RATE), so its
    // throughput is the pace whatever the observer costs, and unpaced it flips between
    // two steady states (see SMALL_RATE).
    for (name, small) in [("bulk", false)] {
        let (mut without, mut with) = (Vec::new(), Vec::new());
        for _ in 0..opts.rounds {
            without.push(iperf(setup, opts.seconds, small)?);
            let daemon = spawn_daemon(&setup.a, iface, &[]);
            with.push(iperf(setup, opts.seconds, small)?);
            daemon.terminate();
        }
        let mean = |v: &[f64]| v.iter().sum::<f64>() / v.len() as f64 / 1e9;
        let (a, b) = (mean(&without), mean(&with));
        // Each round measures without and with back to back, so a per-round ratio is
        // less exposed to load that comes and goes on the machine.
        let mut ratios: Vec<f64> = with.iter().zip(&without).map(|(w, wo)| w / wo).collect();
        ratios.sort_by(f64::total_cmp);
        let median = ratios[ratios.len() / 2];
        println!(
            "| {name} | {} | {a:.3} | {b:.3} | {:.3} | {median:.3} ({:.3}-{:.3}) |",
            ratios.len(),
            b / a,
            ratios[0],
            ratios[ratios.len() - 1]
        );
    }
    println!();
    Ok(())
}

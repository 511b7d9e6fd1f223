//! Per-packet cost of the tc programs from kernel BPF statistics (run_time_ns /
//! run_cnt), next to an empty tc program attached to the same hooks on the same traffic
//! in the same run (the daemon's --debug.baseline-program).

use aya::sys::{Stats, enable_stats};
use keepalive_daemon::metric_names::{PROGRAM_RUN_SECONDS, PROGRAM_RUNS};
use keepalive_tests::scenarios::Setup;

use super::{Options, iperf, spawn_daemon};

const OURS: [&str; 2] = ["ka_tc_ingress", "ka_tc_egress"];
const EMPTY: &str = "ka_tc_empty";

#[derive(Clone, Copy, Default)]
struct Totals {
    seconds: f64,
    runs: f64,
}

fn totals(s: &keepalive_tests::metrics::Samples, programs: &[&str]) -> Totals {
    let mut t = Totals::default();
    for p in programs {
        t.seconds += s.value(PROGRAM_RUN_SECONDS, &[("program", p)]);
        t.runs += s.value(PROGRAM_RUNS, &[("program", p)]);
    }
    t
}

pub fn run(setup: &Setup, iface: &str, opts: &Options) -> anyhow::Result<()> {
    // Statistics count while this fd is open (BPF_ENABLE_STATS); closed on return.
    let _stats = enable_stats(Stats::RunTime)?;
    let daemon = spawn_daemon(&setup.a, iface, &["--debug.baseline-program"]);
    println!("## Per-packet cost (ns per program run; goal: ours <= 2x empty)");
    println!(
        "| traffic | packets | ours ns | empty ns | ratio | ingress ns (runs) | egress ns (runs) |"
    );
    println!("| --- | ---: | ---: | ---: | ---: | ---: | ---: |");
    for (name, small) in [("bulk", false), ("small segments (64 B, nodelay)", true)] {
        let before = daemon.scrape();
        iperf(setup, opts.seconds, small)?;
        let after = daemon.scrape();
        let (o0, o1) = (totals(&before, &OURS), totals(&after, &OURS));
        let (e0, e1) = (totals(&before, &[EMPTY]), totals(&after, &[EMPTY]));
        let ours = (o1.seconds - o0.seconds) / (o1.runs - o0.runs) * 1e9;
        let empty = (e1.seconds - e0.seconds) / (e1.runs - e0.runs) * 1e9;
        let per_hook = |p: &str| {
            let (a, b) = (totals(&before, &[p]), totals(&after, &[p]));
            format!(
                "{:.1} ({:.0})",
                (b.seconds - a.seconds) / (b.runs - a.runs) * 1e9,
                b.runs - a.runs
            )
        };
        println!(
            "| {name} | {:.0} | {ours:.1} | {empty:.1} | {:.2} | {} | {} |",
            o1.runs - o0.runs,
            ours / empty,
            per_hook(OURS[0]),
            per_hook(OURS[1])
        );
    }
    println!();
    daemon.terminate();
    Ok(())
}

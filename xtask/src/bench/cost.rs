//! Per-packet cost of the tc programs from kernel BPF statistics (run_time_ns /
//! run_cnt), next to an empty tc program attached to the same hooks on the same traffic
//! in the same run (the daemon's --debug.baseline-program), once after ours and once
//! before them.

use aya::sys::{Stats, enable_stats};
use keepalive_daemon::metric_names::{PROGRAM_RUN_SECONDS, PROGRAM_RUNS};
use keepalive_tests::scenarios::Setup;

use super::{Options, Spread, iperf, spawn_daemon};

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

/// One round of one traffic shape: ns per run of ours (both hooks), of the empty
/// program, and of each of our hooks.
struct Round {
    ours: f64,
    empty: f64,
    ingress: f64,
    egress: f64,
    /// Runs of ours (both hooks) in the round.
    runs: f64,
}

impl Round {
    fn ratio(&self) -> f64 {
        self.ours / self.empty
    }
}

fn measure(
    daemon: &keepalive_tests::Daemon<'_>,
    setup: &Setup,
    seconds: u64,
    small: bool,
) -> anyhow::Result<Round> {
    let before = daemon.scrape();
    let bps = iperf(setup, seconds, small)?;
    let after = daemon.scrape();
    eprintln!("round: {:.3} Gbit/s", bps / 1e9);
    let per_run = |programs: &[&str]| {
        let (a, b) = (totals(&before, programs), totals(&after, programs));
        (b.seconds - a.seconds) / (b.runs - a.runs) * 1e9
    };
    Ok(Round {
        ours: per_run(&OURS),
        empty: per_run(&[EMPTY]),
        ingress: per_run(&OURS[..1]),
        egress: per_run(&OURS[1..]),
        runs: totals(&after, &OURS).runs - totals(&before, &OURS).runs,
    })
}

const SHAPES: [(&str, bool); 2] = [("bulk", false), ("small segments (64 B, nodelay)", true)];

/// Where the empty program runs, as --debug.baseline-program takes it.
const ORDERS: [&str; 2] = ["after", "before"];

pub fn run(setup: &Setup, iface: &str, opts: &Options) -> anyhow::Result<()> {
    // Statistics count while this fd is open (BPF_ENABLE_STATS); closed on return.
    let _stats = enable_stats(Stats::RunTime)?;
    println!(
        "## Per-packet cost (ns per program run, median (min-max) of {} rounds of {} s; goal: ours <= 1.5x empty)",
        opts.rounds, opts.seconds
    );
    println!(
        "| traffic | empty program | runs per round | ours ns | empty ns | ratio | ingress ns | egress ns |"
    );
    println!("| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: |");
    // The first program on a hook pays for the hook's cold start (measured: 3-25 ns),
    // so each order gets its own daemon and rounds, and the balanced ratio puts both
    // programs in both places equally often.
    let mut medians = [[(0.0, 0.0); 2]; 2];
    for (o, order) in ORDERS.iter().enumerate() {
        let flag = format!("--debug.baseline-program={order}");
        let daemon = spawn_daemon(&setup.a, iface, &[flag.as_str()]);
        for (s, (name, small)) in SHAPES.iter().enumerate() {
            let rounds = (0..opts.rounds.max(1))
                .map(|_| measure(&daemon, setup, opts.seconds, *small))
                .collect::<anyhow::Result<Vec<Round>>>()?;
            let col = |f: fn(&Round) -> f64| Spread::of(rounds.iter().map(f).collect());
            medians[s][o] = (col(|r| r.ours).median, col(|r| r.empty).median);
            println!(
                "| {name} | {order} ours | {} | {} | {} | {} | {} | {} |",
                col(|r| r.runs).show(0),
                col(|r| r.ours).show(1),
                col(|r| r.empty).show(1),
                col(Round::ratio).show(2),
                col(|r| r.ingress).show(1),
                col(|r| r.egress).show(1),
            );
        }
        daemon.terminate();
    }
    println!();
    println!("| traffic | balanced ratio (both orders: sum of medians, ours / empty) |");
    println!("| --- | ---: |");
    for (s, (name, _)) in SHAPES.iter().enumerate() {
        let [(oa, ea), (ob, eb)] = medians[s];
        println!("| {name} | {:.2} |", (oa + ob) / (ea + eb));
    }
    println!();
    Ok(())
}

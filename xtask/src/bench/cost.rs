//! Per-packet cost of the tc programs from kernel BPF statistics (run_time_ns /
//! run_cnt), next to an empty tc program attached to the same hooks on the same traffic
//! in the same run (the daemon's --debug.baseline-program), once after ours and once
//! before them. With --floors, the same for the floors of our path (the daemon's
//! --debug.wire-floor): the parser alone, and the parser with the flow-map lookup.

use aya::sys::{Stats, enable_stats};
use clap::ValueEnum as _;
use keepalive_daemon::{
    cli::WireFloor,
    metric_names::{PROGRAM_RUN_SECONDS, PROGRAM_RUNS},
    wire::tc::TcPrograms,
};
use keepalive_tests::scenarios::Setup;

use super::{Options, Spread, iperf, spawn_daemon};

const EMPTY: &str = "ka_tc_empty";

/// What is measured against the empty program: our wire programs (no floor), or a
/// floor of them (--debug.wire-floor).
#[derive(Clone, Copy)]
struct Variant(Option<WireFloor>);

impl Variant {
    fn label(self) -> &'static str {
        match self.0 {
            None => "ours",
            Some(WireFloor::Parse) => "parse floor",
            Some(WireFloor::Lookup) => "lookup floor",
        }
    }

    /// The ingress and egress programs the daemon attaches for it (without kernel-side
    /// logging, as the bench runs the daemon).
    fn programs(self) -> [&'static str; 2] {
        TcPrograms::choose(self.0, false).names()
    }
}

const OURS: Variant = Variant(None);
const FLOORS: [Variant; 2] = [
    Variant(Some(WireFloor::Parse)),
    Variant(Some(WireFloor::Lookup)),
];

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

/// One round of one traffic shape: ns per run of the measured pair (both hooks), of
/// the empty program, and of each hook of the pair.
struct Round {
    ours: f64,
    empty: f64,
    ingress: f64,
    egress: f64,
    /// Runs of the measured pair (both hooks) in the round.
    runs: f64,
    /// The measured pair's run time over the round's wall time, in % of one CPU: an
    /// upper bound on what the programs take from the traffic (statistics included).
    cpu_percent: f64,
}

impl Round {
    fn ratio(&self) -> f64 {
        self.ours / self.empty
    }
}

fn measure(
    daemon: &keepalive_tests::Daemon<'_>,
    setup: &Setup,
    ours: [&str; 2],
    seconds: u64,
    small: bool,
) -> anyhow::Result<Round> {
    let before = daemon.scrape();
    let started = std::time::Instant::now();
    let bps = iperf(setup, seconds, small)?;
    let wall = started.elapsed().as_secs_f64();
    let after = daemon.scrape();
    eprintln!("round: {:.3} Gbit/s", bps / 1e9);
    let per_run = |programs: &[&str]| {
        let (a, b) = (totals(&before, programs), totals(&after, programs));
        (b.seconds - a.seconds) / (b.runs - a.runs) * 1e9
    };
    Ok(Round {
        ours: per_run(&ours),
        empty: per_run(&[EMPTY]),
        ingress: per_run(&ours[..1]),
        egress: per_run(&ours[1..]),
        runs: totals(&after, &ours).runs - totals(&before, &ours).runs,
        cpu_percent: (totals(&after, &ours).seconds - totals(&before, &ours).seconds) / wall
            * 100.0,
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
        "| traffic | measured, empty program | runs per round | measured ns | empty ns | ratio | ingress ns | egress ns | measured, % of one CPU |"
    );
    println!("| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |");
    let variants: Vec<Variant> = std::iter::once(OURS)
        .chain(FLOORS.into_iter().filter(|_| opts.floors))
        .collect();
    let mut balanced = Vec::new();
    for &v in &variants {
        balanced.push(measure_variant(setup, iface, opts, v)?);
    }
    println!();
    println!(
        "| traffic | measured | balanced ratio (both orders: sum of medians, measured / empty) |"
    );
    println!("| --- | --- | ---: |");
    for (s, (name, _)) in SHAPES.iter().enumerate() {
        for (v, ratios) in variants.iter().zip(&balanced) {
            println!("| {name} | {} | {:.2} |", v.label(), ratios[s]);
        }
    }
    println!();
    Ok(())
}

/// Prints the rows of one variant in both orders; returns its balanced ratio per shape.
fn measure_variant(
    setup: &Setup,
    iface: &str,
    opts: &Options,
    v: Variant,
) -> anyhow::Result<[f64; 2]> {
    // The first program on a hook pays for the hook's cold start (measured: 3-25 ns),
    // so each order gets its own daemon and rounds, and the balanced ratio puts both
    // programs in both places equally often.
    let mut medians = [[(0.0, 0.0); 2]; 2];
    for (o, order) in ORDERS.iter().enumerate() {
        let baseline = format!("--debug.baseline-program={order}");
        let floor = v.0.and_then(|f| f.to_possible_value());
        let mut flags = vec![baseline.as_str()];
        if let Some(floor) = &floor {
            flags.extend(["--debug.wire-floor", floor.get_name()]);
        }
        let daemon = spawn_daemon(&setup.a, iface, &flags);
        for (s, (name, small)) in SHAPES.iter().enumerate() {
            let rounds = (0..opts.rounds.max(1))
                .map(|_| measure(&daemon, setup, v.programs(), opts.seconds, *small))
                .collect::<anyhow::Result<Vec<Round>>>()?;
            let col = |f: fn(&Round) -> f64| Spread::of(rounds.iter().map(f).collect());
            medians[s][o] = (col(|r| r.ours).median, col(|r| r.empty).median);
            println!(
                "| {name} | {}, {order} | {} | {} | {} | {} | {} | {} | {} |",
                v.label(),
                col(|r| r.runs).show(0),
                col(|r| r.ours).show(1),
                col(|r| r.empty).show(1),
                col(Round::ratio).show(2),
                col(|r| r.ingress).show(1),
                col(|r| r.egress).show(1),
                col(|r| r.cpu_percent).show(2),
            );
        }
        daemon.terminate();
    }
    Ok(medians.map(|[(oa, ea), (ob, eb)]| (oa + ob) / (ea + eb)))
}

//! Writes the keepalive pcap corpus (see `keepalive_tests::corpus`) to a file and
//! prints its composition and the counters the daemon must report after a replay.
//!
//! `keepalive-pcapgen PATH [--seed N] [--flows-per-scenario N]`

use std::io::Write as _;
use std::path::PathBuf;
use std::process::ExitCode;

use keepalive_tests::corpus::{self, DEFAULT_FLOWS_PER_SCENARIO, DEFAULT_SEED};

fn parse_u64(s: &str) -> Option<u64> {
    match s.strip_prefix("0x") {
        Some(hex) => u64::from_str_radix(hex, 16).ok(),
        None => s.parse().ok(),
    }
}

fn main() -> ExitCode {
    let usage = "usage: keepalive-pcapgen PATH [--seed N] [--flows-per-scenario N]";
    let mut path = None;
    let mut seed = DEFAULT_SEED;
    let mut per_scenario = DEFAULT_FLOWS_PER_SCENARIO;
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        let value =
            |args: &mut dyn Iterator<Item = String>| args.next().as_deref().and_then(parse_u64);
        match arg.as_str() {
            "--seed" => match value(&mut args) {
                Some(v) => seed = v,
                None => {
                    eprintln!("{usage}");
                    return ExitCode::from(2);
                }
            },
            "--flows-per-scenario" => match value(&mut args) {
                Some(v) if v > 0 => per_scenario = v as usize,
                _ => {
                    eprintln!("{usage}");
                    return ExitCode::from(2);
                }
            },
            "-h" | "--help" => {
                println!("{usage}");
                return ExitCode::SUCCESS;
            }
            _ if path.is_none() && !arg.starts_with('-') => path = Some(PathBuf::from(arg)),
            _ => {
                eprintln!("{usage}");
                return ExitCode::from(2);
            }
        }
    }
    let Some(path) = path else {
        eprintln!("{usage}");
        return ExitCode::from(2);
    };
    let corpus = corpus::generate(seed, per_scenario);
    if let Err(e) = corpus.write_pcap(&path) {
        eprintln!("writing {}: {e}", path.display());
        return ExitCode::FAILURE;
    }
    // A closed stdout (e.g. `| head`) is not an error: the file is written.
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "wrote {}", path.display());
    let _ = write!(out, "{}", corpus.composition());
    let _ = writeln!(out, "expected daemon counters after a replay:");
    for (series, value) in corpus::expected(&corpus) {
        let _ = writeln!(out, "  {series} {value}");
    }
    ExitCode::SUCCESS
}

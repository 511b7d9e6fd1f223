//! keepalive-daemon: loads the keepalive eBPF programs, attaches them, and serves
//! Prometheus metrics until SIGINT or SIGTERM, then detaches everything and exits 0.

mod lifecycle;

use std::{io::Write as _, process::ExitCode};

use clap::Parser as _;
use keepalive_daemon::{cli, web};

fn main() -> ExitCode {
    let args = cli::Args::parse();
    init_logging(args.log_level, args.kernel_log_level.filter());
    if let Some(cli::Command::Connections(connections)) = &args.command {
        return match web::client::connections_output(connections) {
            Ok(text) => {
                print!("{text}");
                ExitCode::SUCCESS
            }
            Err(e) => {
                log::error!("{:#}", anyhow::Error::new(e));
                ExitCode::FAILURE
            }
        };
    }
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            log::error!("cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(lifecycle::run(args)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            log::error!("{e:#}");
            ExitCode::FAILURE
        }
    }
}

/// Logs go to stderr. Under systemd (JOURNAL_STREAM set) journald adds the time, so
/// lines carry only the syslog priority prefix it understands.
/// The kernel programs' records (--log.kernel-level) pass at their own level, whatever
/// --log.level says; RUST_LOG still overrides both.
fn init_logging(level: log::LevelFilter, kernel_level: log::LevelFilter) {
    let mut b = env_logger::Builder::new();
    b.filter_level(level)
        .filter_module(cli::KERNEL_LOG_TARGET, kernel_level);
    // At debug level the operator wants the daemon's details, not aya's hundreds of
    // BTF fix-up and relocation lines: those need trace (or RUST_LOG).
    if level == log::LevelFilter::Debug {
        b.filter_module("aya", log::LevelFilter::Info);
    }
    b.parse_default_env().target(env_logger::Target::Stderr);
    if std::env::var_os("JOURNAL_STREAM").is_some() {
        b.format(|f, r| {
            let prio = match r.level() {
                log::Level::Error => 3,
                log::Level::Warn => 4,
                log::Level::Info => 6,
                log::Level::Debug | log::Level::Trace => 7,
            };
            writeln!(f, "<{prio}>{}", r.args())
        });
    }
    b.init();
}

//! Project tasks that need more than cargo: the privileged test run, benchmarks,
//! packaging and deployment checks, the demo and the kernel matrix. This file is the
//! command line and its dispatch; each task lives in its own module. The eBPF object is
//! built only by keepalive-daemon's build.rs; this crate never builds it another way.

mod bench;
mod demo;
mod deploy_check;
mod man_pages;
mod package;
mod sandbox_check;
mod systemd_verify;
mod test_run;
mod timer_repro;
mod tool;
mod vm;
mod workspace;

use clap::{Parser, Subcommand};

use crate::workspace::{build_release_daemon, require_root, set_daemon_bin, use_daemon_bin};

#[derive(Parser)]
#[command(name = "xtask", about = "keepalive-daemon project tasks")]
struct Cli {
    #[command(subcommand)]
    task: Task,
}

#[derive(Subcommand)]
enum Task {
    /// Host unit tests, then the root integration tests in network namespaces.
    Test {
        /// Only the host unit tests (no root needed).
        #[arg(long)]
        unit_only: bool,
        /// Extra arguments for the integration test binaries (e.g. a test name filter).
        #[arg(last = true)]
        filter: Vec<String>,
    },
    /// Per-packet cost, throughput and daemon resource figures, side by side (root).
    Bench {
        /// Seconds of traffic per measurement.
        #[arg(long, default_value_t = 5)]
        seconds: u64,
        /// Rounds per traffic shape in the cost section, and alternating rounds per
        /// configuration in the throughput comparison.
        #[arg(long, default_value_t = 3)]
        rounds: usize,
        /// Run one section only: cost, throughput, userspace, sweep or audit.
        #[arg(long)]
        only: Option<String>,
        /// Measure this daemon binary instead of building the workspace's release one
        /// (for before/after figures of a change: build the "before" at its commit).
        #[arg(long, value_name = "PATH")]
        daemon_bin: Option<std::path::PathBuf>,
        /// In the cost section, also measure the floors of the per-packet path against
        /// the empty program: the parser alone, and the parser with the flow-map lookup
        /// (the daemon's --debug.wire-floor), to show what part of the cost is ours to cut.
        #[arg(long)]
        floors: bool,
    },
    /// Debian package with cargo-deb (target/debian/*.deb): binary, systemd unit,
    /// defaults file, man pages, shell completions, dashboard and alert rules.
    Package {
        /// Then list the package and check its contents (and run lintian if installed).
        #[arg(long)]
        check: bool,
    },
    /// Check the deployment files: systemd-analyze verify and security (exposure at most
    /// 2.5), the defaults file, the Kubernetes manifests, promtool on the scrape config;
    /// as root also the daemon under the unit's capabilities and system call filter.
    DeployCheck,
    /// Live demo (root): three keepalive connections between namespaces, one healthy,
    /// one whose peer vanishes, one whose peer lost its state, and the metrics they move.
    Demo {
        /// Length of the demo after start-up, in seconds (at least 20).
        #[arg(long, default_value_t = 30)]
        seconds: u64,
    },
    /// Kernel matrix (root): the socket-hook check on the host and on Debian's 6.1 and
    /// 6.12 kernels under qemu; which hooks attached and whether the counts matched.
    VmTest(vm::Args),
    /// Reproducer of the timer-probe burst loss on the tracepoint fallback (root):
    /// two daemons, 1,000 connections probing at both ends, counts per run.
    TimerRepro(timer_repro::Args),
}

fn main() -> anyhow::Result<()> {
    match Cli::parse().task {
        Task::Test { unit_only, filter } => test_run::run(unit_only, &filter),
        Task::Bench {
            seconds,
            rounds,
            only,
            daemon_bin,
            floors,
        } => {
            require_root("cargo xtask bench")?;
            match daemon_bin {
                Some(bin) => use_daemon_bin(&bin),
                None => {
                    build_release_daemon()?;
                    set_daemon_bin();
                }
            }
            bench::run(&bench::Options {
                seconds,
                rounds,
                only,
                floors,
            })
        }
        Task::Package { check } => package::run(check),
        Task::DeployCheck => deploy_check::run(),
        Task::Demo { seconds } => {
            require_root("cargo xtask demo")?;
            build_release_daemon()?;
            set_daemon_bin();
            demo::run(seconds)
        }
        Task::VmTest(args) => vm::run(args),
        Task::TimerRepro(args) => {
            require_root("cargo xtask timer-repro")?;
            match &args.daemon_bin {
                Some(bin) => use_daemon_bin(bin),
                None => {
                    build_release_daemon()?;
                    set_daemon_bin();
                }
            }
            timer_repro::run(&args)
        }
    }
}

//! `cargo xtask vm-test`: the kernel matrix. Runs keepalive-vmcheck (tests/src/bin) on the
//! host and inside qemu guests (TCG) booted from Debian's own kernels, so that the fentry
//! and kprobe socket hooks and their fallbacks run on real kernels. See docs/kernel-matrix.md.
//!
//! Everything downloaded or unpacked is cached under target/vm-cache; serial logs and the
//! summary go to target/vm-cache/run.

mod initramfs;
mod kernels;
mod qemu;
mod report;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};

use crate::workspace::{build_release_daemon, require_root, workspace_root};

pub use report::KernelResult;

/// Options of `cargo xtask vm-test`.
#[derive(clap::Args)]
pub struct Args {
    /// Run only these kernels (repeatable): `host`, or a Debian kernel's short name
    /// (`6.1`, `6.12`). Default: all.
    #[arg(long = "kernel")]
    kernels: Vec<String>,
    /// Bound on one guest's run, boot to power-off, in seconds.
    #[arg(long, default_value_t = 180)]
    timeout_secs: u64,
}

/// Where downloads, unpacked kernels and run artefacts are cached.
fn cache_dir() -> PathBuf {
    workspace_root().join("target/vm-cache")
}

/// The two binaries every run executes: the release daemon and keepalive-vmcheck.
struct Binaries {
    daemon: PathBuf,
    check: PathBuf,
}

/// Builds the binaries, runs the check on each wanted kernel, prints and saves the
/// summary; fails if any kernel failed.
pub fn run(args: Args) -> anyhow::Result<()> {
    require_root("cargo xtask vm-test")?;
    let wanted = |name: &str| args.kernels.is_empty() || args.kernels.iter().any(|k| k == name);
    check_kernel_names(&args.kernels)?;
    let tools_missing = qemu::missing_tools();
    if !tools_missing.is_empty() {
        bail!(
            "vm-test needs {}; see docs/kernel-matrix.md (Setup)",
            tools_missing.join(", ")
        );
    }
    let bins = build_binaries()?;
    let run_dir = cache_dir().join("run");
    std::fs::create_dir_all(&run_dir).context("creating target/vm-cache/run")?;

    let mut results = Vec::new();
    if wanted("host") {
        results.extend(run_host(&bins, &run_dir)?);
    }
    for kernel in kernels::DEBIAN.iter().filter(|k| wanted(k.short)) {
        results.extend(run_debian_kernel(
            kernel,
            &bins,
            &run_dir,
            args.timeout_secs,
        ));
    }
    report_results(&results, &run_dir)
}

/// Fails on a `--kernel` that is neither `host` nor a known Debian kernel.
fn check_kernel_names(names: &[String]) -> anyhow::Result<()> {
    for k in names {
        if k != "host" && !kernels::DEBIAN.iter().any(|d| d.short == k) {
            bail!(
                "unknown kernel {k}: pick host or one of {}",
                kernels::DEBIAN
                    .iter()
                    .map(|d| d.short)
                    .collect::<Vec<_>>()
                    .join(", ")
            );
        }
    }
    Ok(())
}

/// Builds the release daemon and keepalive-vmcheck (one build of the default members).
fn build_binaries() -> anyhow::Result<Binaries> {
    build_release_daemon()?;
    let release = workspace_root().join("target/release");
    Ok(Binaries {
        daemon: release.join("keepalive-daemon"),
        check: release.join("keepalive-vmcheck"),
    })
}

/// keepalive-vmcheck on the host kernel: default hooks, the fallbacks, and no fentry.
fn run_host(bins: &Binaries, run_dir: &Path) -> anyhow::Result<Vec<KernelResult>> {
    let started = Instant::now();
    eprintln!("vm-test: host kernel");
    let mut log = Vec::new();
    for extra in [&[][..], &["--fallback"][..], &["--no-fentry"][..]] {
        let out = std::process::Command::new(&bins.check)
            .arg("--daemon")
            .arg(&bins.daemon)
            .args(extra)
            .output()
            .with_context(|| format!("running {}", bins.check.display()))?;
        log.extend_from_slice(&out.stdout);
        log.extend_from_slice(&out.stderr);
    }
    std::fs::write(run_dir.join("host.log"), &log)?;
    Ok(report::parse_runs(
        "host",
        &String::from_utf8_lossy(&log),
        started.elapsed(),
        None,
    ))
}

/// keepalive-vmcheck in a qemu guest booted from a Debian kernel; a failure to get
/// there (download, initramfs, boot) is that kernel's result.
fn run_debian_kernel(
    kernel: &kernels::DebianKernel,
    bins: &Binaries,
    run_dir: &Path,
    timeout_secs: u64,
) -> Vec<KernelResult> {
    let started = Instant::now();
    eprintln!("vm-test: {} ({})", kernel.short, kernel.package);
    let result = boot_debian_kernel(kernel, bins, run_dir, timeout_secs)
        .unwrap_or_else(|e| vec![KernelResult::error(kernel.short, format!("{e:#}"))]);
    eprintln!(
        "vm-test: {} done in {:.0} s",
        kernel.short,
        started.elapsed().as_secs_f64()
    );
    result
}

fn boot_debian_kernel(
    kernel: &kernels::DebianKernel,
    bins: &Binaries,
    run_dir: &Path,
    timeout_secs: u64,
) -> anyhow::Result<Vec<KernelResult>> {
    let unpacked = kernels::fetch(kernel, &cache_dir())?;
    let dir = run_dir.join(kernel.short);
    std::fs::create_dir_all(&dir)?;
    let initrd = dir.join("initramfs.cpio.gz");
    initramfs::build(
        &unpacked,
        &bins.daemon,
        &bins.check,
        &dir.join("root"),
        &initrd,
    )?;
    let log_path = dir.join("serial.log");
    let boot_started = Instant::now();
    let timed_out = qemu::boot(
        &unpacked.vmlinuz,
        &initrd,
        &log_path,
        Duration::from_secs(timeout_secs),
    )?;
    let log = String::from_utf8_lossy(&std::fs::read(&log_path)?).into_owned();
    Ok(report::parse_runs(
        kernel.short,
        &log,
        boot_started.elapsed(),
        timed_out.then(|| format!("timed out after {timeout_secs} s")),
    ))
}

/// Prints and saves the summary table; fails when any kernel failed.
fn report_results(results: &[KernelResult], run_dir: &Path) -> anyhow::Result<()> {
    let table = report::table(results);
    println!("{table}");
    std::fs::write(run_dir.join("summary.txt"), &table)?;
    let failed: Vec<&str> = results
        .iter()
        .filter(|r| !r.passed())
        .map(|r| r.name.as_str())
        .collect();
    if !failed.is_empty() {
        bail!(
            "kernel matrix failed on {} (logs in target/vm-cache/run)",
            failed.join(", ")
        );
    }
    Ok(())
}

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

use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};

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
    crate::workspace_root().join("target/vm-cache")
}

pub fn run(args: Args) -> anyhow::Result<()> {
    crate::require_root("cargo xtask vm-test")?;
    let wanted = |name: &str| args.kernels.is_empty() || args.kernels.iter().any(|k| k == name);
    for k in &args.kernels {
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
    let tools_missing = qemu::missing_tools();
    if !tools_missing.is_empty() {
        bail!(
            "vm-test needs {}; see docs/kernel-matrix.md (Setup)",
            tools_missing.join(", ")
        );
    }
    crate::cargo(&["build", "--release", "--package", "keepalive-daemon"])?;
    crate::cargo(&[
        "build",
        "--release",
        "--package",
        "keepalive-tests",
        "--bin",
        "keepalive-vmcheck",
    ])?;
    let release = crate::workspace_root().join("target/release");
    let daemon = release.join("keepalive-daemon");
    let check = release.join("keepalive-vmcheck");
    let run_dir = cache_dir().join("run");
    std::fs::create_dir_all(&run_dir).context("creating target/vm-cache/run")?;

    let mut results = Vec::new();
    if wanted("host") {
        let started = Instant::now();
        eprintln!("vm-test: host kernel");
        let mut log = Vec::new();
        for extra in [&[][..], &["--fallback"][..], &["--no-fentry"][..]] {
            let out = std::process::Command::new(&check)
                .arg("--daemon")
                .arg(&daemon)
                .args(extra)
                .output()
                .with_context(|| format!("running {}", check.display()))?;
            log.extend_from_slice(&out.stdout);
            log.extend_from_slice(&out.stderr);
        }
        std::fs::write(run_dir.join("host.log"), &log)?;
        results.extend(report::parse_runs(
            "host",
            &String::from_utf8_lossy(&log),
            started.elapsed(),
            None,
        ));
    }
    for kernel in kernels::DEBIAN.iter().filter(|k| wanted(k.short)) {
        let started = Instant::now();
        eprintln!("vm-test: {} ({})", kernel.short, kernel.package);
        let result = (|| -> anyhow::Result<Vec<KernelResult>> {
            let unpacked = kernels::fetch(kernel, &cache_dir())?;
            let dir = run_dir.join(kernel.short);
            std::fs::create_dir_all(&dir)?;
            let initrd = dir.join("initramfs.cpio.gz");
            initramfs::build(&unpacked, &daemon, &check, &dir.join("root"), &initrd)?;
            let log_path = dir.join("serial.log");
            let boot_started = Instant::now();
            let timed_out = qemu::boot(
                &unpacked.vmlinuz,
                &initrd,
                &log_path,
                Duration::from_secs(args.timeout_secs),
            )?;
            let log = String::from_utf8_lossy(&std::fs::read(&log_path)?).into_owned();
            Ok(report::parse_runs(
                kernel.short,
                &log,
                boot_started.elapsed(),
                timed_out.then(|| format!("timed out after {} s", args.timeout_secs)),
            ))
        })();
        let result =
            result.unwrap_or_else(|e| vec![KernelResult::error(kernel.short, format!("{e:#}"))]);
        eprintln!(
            "vm-test: {} done in {:.0} s",
            kernel.short,
            started.elapsed().as_secs_f64()
        );
        results.extend(result);
    }
    let table = report::table(&results);
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

//! `cargo xtask deploy-check`: the deployment files checked with the tools that exist
//! for them, and against each other and the daemon's flags. No root needed.
//!
//! - deploy/systemd/keepalive-daemon.service: `systemd-analyze verify` (on a copy whose
//!   ExecStart points at an existing binary, with the generated man page on MANPATH) and
//!   `systemd-analyze security --offline=yes`, whose exposure must be at most
//!   [`unit::MAX_EXPOSURE`] (unit.rs);
//! - as root, the daemon with the unit's capabilities, system call filter and address
//!   families (see sandbox_check.rs);
//! - deploy/systemd/keepalive-daemon.default: syntax, and every flag it mentions parses
//!   (defaults.rs);
//! - deploy/kubernetes/*.yaml: parsed, and the DaemonSet's required fields
//!   (kubernetes.rs);
//! - deploy/prometheus/scrape-config.yaml: `promtool check config` on a configuration
//!   built around it (with alerts.yaml as rule file when present) (prometheus.rs).

mod defaults;
mod files;
mod kubernetes;
mod problems;
mod prometheus;
mod unit;
mod yaml;

use anyhow::bail;
use keepalive_tests::process::TempDir;

use self::files::{UNIT, read};
use crate::workspace::{build_release_daemon, workspace_root};

/// Runs every check, each reported under its name; fails naming those that failed.
pub fn run() -> anyhow::Result<()> {
    let tmp = TempDir::new("deploy-check");
    // SAFETY: geteuid has no preconditions.
    let root = unsafe { libc::geteuid() } == 0;
    if root {
        build_release_daemon()?;
    }
    let checks: [(&str, &dyn Fn() -> anyhow::Result<()>); 5] = [
        ("systemd unit", &|| unit::check_unit(tmp.path())),
        ("systemd sandbox emulation (root)", &|| {
            let bin = workspace_root().join("target/release/keepalive-daemon");
            crate::sandbox_check::run(&read(UNIT)?, &bin)
        }),
        ("defaults file", &defaults::check_defaults),
        ("kubernetes", &kubernetes::check_kubernetes),
        ("prometheus", &|| prometheus::check_prometheus(tmp.path())),
    ];
    let mut failed = Vec::new();
    for (name, check) in checks {
        println!("== {name}");
        match check() {
            Ok(()) => println!("ok\n"),
            Err(e) => {
                println!("FAILED: {e:#}\n");
                failed.push(name);
            }
        }
    }
    if !failed.is_empty() {
        bail!("deploy-check failed: {}", failed.join(", "));
    }
    println!("deploy-check passed");
    Ok(())
}

//! `cargo xtask deploy-check`: the deployment files checked with the tools that exist
//! for them, and against each other and the daemon's flags. No root needed.
//!
//! - deploy/systemd/keepalive-daemon.service: `systemd-analyze verify` (on a copy whose
//!   ExecStart points at an existing binary, with the generated man page on MANPATH) and
//!   `systemd-analyze security --offline=yes`, whose exposure must be at most
//!   [`MAX_EXPOSURE`] (unit.rs);
//! - as root, the daemon with the unit's capabilities, system call filter and address
//!   families (see sandbox_check.rs);
//! - deploy/systemd/keepalive-daemon.default: syntax, and every flag it mentions parses
//!   (defaults.rs);
//! - deploy/kubernetes/*.yaml: parsed, and the DaemonSet's required fields
//!   (kubernetes.rs);
//! - deploy/prometheus/scrape-config.yaml: `promtool check config` on a configuration
//!   built around it (with alerts.yaml as rule file when present) (prometheus.rs).

mod defaults;
mod kubernetes;
mod prometheus;
mod unit;
mod yaml;

use std::fs;

use anyhow::{Context as _, bail};
use keepalive_tests::process::TempDir;

use crate::workspace::{build_release_daemon, workspace_root};

/// Highest acceptable `systemd-analyze security` exposure (0 = locked down, 10 = open).
pub const MAX_EXPOSURE: f64 = 2.5;

const UNIT: &str = "deploy/systemd/keepalive-daemon.service";
const DEFAULTS: &str = "deploy/systemd/keepalive-daemon.default";
const KUBERNETES_DIR: &str = "deploy/kubernetes";
const SCRAPE_CONFIG: &str = "deploy/prometheus/scrape-config.yaml";
const ALERTS: &str = "deploy/prometheus/alerts.yaml";
/// Job label the alert rules select on.
const JOB: &str = "keepalive";
/// Daemon port everywhere.
const PORT: u16 = 10291;

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

/// Problems found by a check, reported together.
#[derive(Default)]
struct Problems(Vec<String>);

impl Problems {
    fn expect(&mut self, ok: bool, what: impl FnOnce() -> String) {
        if !ok {
            self.0.push(what());
        }
    }

    fn finish(self) -> anyhow::Result<()> {
        if self.0.is_empty() {
            Ok(())
        } else {
            bail!("\n  {}", self.0.join("\n  "))
        }
    }
}

/// A file of the tree, by its path relative to the workspace root.
fn read(rel: &str) -> anyhow::Result<String> {
    let path = workspace_root().join(rel);
    fs::read_to_string(&path).with_context(|| format!("reading {}", path.display()))
}

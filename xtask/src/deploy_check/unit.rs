//! The systemd unit: `systemd-analyze verify` and `security`, the lines the daemon's
//! start-up depends on, paths that must exist, and no CAP_SYS_ADMIN.

use std::collections::BTreeSet;
use std::fs;
use std::path::Path;
use std::process::Command;

use anyhow::{Context as _, bail};

use super::files::UNIT;
use super::problems::Problems;
use crate::man_pages::write_man_pages;
use crate::systemd_verify::verify_unit;
use crate::tool::describe;
use crate::workspace::workspace_root;

/// Highest acceptable `systemd-analyze security` exposure (0 = locked down, 10 = open).
pub(super) const MAX_EXPOSURE: f64 = 2.5;

pub(super) fn check_unit(tmp: &Path) -> anyhow::Result<()> {
    let man_root = tmp.join("man");
    let man1 = man_root.join("man1");
    fs::create_dir_all(&man1)?;
    write_man_pages(&man1)?;
    // Any existing executable satisfies verify's ExecStart check; prefer the real daemon.
    let release = workspace_root().join("target/release/keepalive-daemon");
    let bin = if release.is_file() {
        release
    } else {
        std::env::current_exe().context("locating xtask")?
    };
    let unit = workspace_root().join(UNIT);
    verify_unit(&unit, &bin, &man_root, tmp)?;
    println!(
        "systemd-analyze verify: no findings (ExecStart -> {})",
        bin.display()
    );
    let exposure = security(&unit)?;
    println!("systemd-analyze security: exposure {exposure} (at most {MAX_EXPOSURE})");

    let text = fs::read_to_string(&unit)?;
    let mut p = Problems::default();
    for line in [
        "Type=notify",
        "WatchdogSec=30s",
        "EnvironmentFile=-/etc/default/keepalive-daemon",
        "ExecStart=/usr/bin/keepalive-daemon $KEEPALIVE_DAEMON_ARGS",
        "RequiresMountsFor=/sys/kernel/tracing",
    ] {
        p.expect(text.lines().any(|l| l.trim() == line), || {
            format!("{UNIT} lacks {line}")
        });
    }
    check_sandbox_paths(&text, &mut p);
    p.expect(!unit_capabilities(&text).contains("CAP_SYS_ADMIN"), || {
        format!("{UNIT} grants CAP_SYS_ADMIN")
    });
    p.finish()
}

/// A missing path in these makes systemd refuse to start the unit; verify does not
/// notice. "-" marks a path as optional.
fn check_sandbox_paths(text: &str, p: &mut Problems) {
    for key in ["ReadOnlyPaths", "InaccessiblePaths", "ReadWritePaths"] {
        let prefix = format!("{key}=");
        for path in text
            .lines()
            .filter_map(|l| l.trim().strip_prefix(&prefix))
            .flat_map(str::split_whitespace)
            .filter(|p| !p.starts_with('-'))
        {
            p.expect(Path::new(path).exists(), || {
                format!("{key}= lists {path}, which this machine lacks; prefix it with \"-\"")
            });
        }
    }
}

/// Overall exposure from `systemd-analyze security --offline=yes`; fails above
/// [`MAX_EXPOSURE`] with the analyzer's full output.
fn security(unit: &Path) -> anyhow::Result<f64> {
    let mut cmd = Command::new("systemd-analyze");
    cmd.args(["security", "--offline=yes", "--no-pager"])
        .arg(format!("--threshold={}", (MAX_EXPOSURE * 10.0).round()))
        .arg(unit);
    let line = describe(&cmd);
    let out = cmd.output().with_context(|| format!("running {line}"))?;
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    // "→ Overall exposure level for keepalive-daemon.service: 2.4 OK 🙂"
    let exposure = text
        .lines()
        .find_map(|l| {
            let rest = l.split("Overall exposure level for ").nth(1)?;
            rest.split(": ")
                .nth(1)?
                .split_whitespace()
                .next()?
                .parse::<f64>()
                .ok()
        })
        .with_context(|| format!("{line} printed no overall exposure:\n{text}"))?;
    if !out.status.success() || exposure > MAX_EXPOSURE {
        bail!(
            "{line}: exposure {exposure}, at most {MAX_EXPOSURE} allowed ({}):\n{text}",
            out.status
        );
    }
    for l in text.lines().filter(|l| l.starts_with('✗')) {
        println!("  {}", l.split_whitespace().collect::<Vec<_>>().join(" "));
    }
    Ok(exposure)
}

/// The capabilities of CapabilityBoundingSet= lines.
pub(super) fn unit_capabilities(unit: &str) -> BTreeSet<String> {
    unit.lines()
        .filter_map(|l| l.trim().strip_prefix("CapabilityBoundingSet="))
        .flat_map(|v| v.split_whitespace().map(str::to_owned))
        .collect()
}

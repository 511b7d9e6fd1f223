//! `systemd-analyze verify` of the daemon's systemd unit, shared by the deployment check
//! (the unit in the tree) and the package check (the unit the .deb installs).

use std::fs;
use std::path::Path;
use std::process::Command;

use anyhow::{Context as _, bail};

use crate::tool::{describe, have};

/// `systemd-analyze verify` on a copy of `unit` whose ExecStart runs `bin`, with
/// `man_root` as MANPATH (for Documentation=man:). Fails on any output.
pub fn verify_unit(unit: &Path, bin: &Path, man_root: &Path, tmp: &Path) -> anyhow::Result<()> {
    let text = fs::read_to_string(unit).with_context(|| format!("reading {}", unit.display()))?;
    let exec = "ExecStart=/usr/bin/keepalive-daemon";
    if !text.lines().any(|l| l.starts_with(exec)) {
        bail!("{} has no line starting with {exec}", unit.display());
    }
    let copy_dir = tmp.join("verify");
    fs::create_dir_all(&copy_dir)?;
    let copy = copy_dir.join("keepalive-daemon.service");
    let rewritten: String = text
        .lines()
        .map(|l| match l.strip_prefix(exec) {
            Some(rest) => format!("ExecStart={}{rest}\n", bin.display()),
            None => format!("{l}\n"),
        })
        .collect();
    fs::write(&copy, rewritten)?;
    let mut cmd = Command::new("systemd-analyze");
    cmd.arg("verify");
    if !have("man") {
        println!(
            "note: man is not installed (apt-get install -y man-db): Documentation= not checked"
        );
        cmd.arg("--man=no");
    }
    cmd.arg(&copy).env("MANPATH", man_root);
    let line = describe(&cmd);
    let out = cmd.output().with_context(|| format!("running {line}"))?;
    let output = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    if !out.status.success() || !output.trim().is_empty() {
        bail!("{line} ({}):\n{output}", out.status);
    }
    Ok(())
}

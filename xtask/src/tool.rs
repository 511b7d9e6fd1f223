//! Running external tools (dpkg-deb, systemd-analyze, promtool...) for the packaging
//! and deployment checks.

use std::process::Command;

use anyhow::{Context as _, bail};

/// Runs `cmd` to completion; returns its stdout, or fails with its output.
pub fn run_tool(cmd: &mut Command) -> anyhow::Result<String> {
    let line = describe(cmd);
    let out = cmd.output().with_context(|| format!("running {line}"))?;
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    if !out.status.success() {
        bail!(
            "{line} failed ({}):\n{stdout}{}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(stdout)
}

/// Whether `program` can be found on PATH.
pub fn have(program: &str) -> bool {
    std::env::var_os("PATH").is_some_and(|path| {
        std::env::split_paths(&path).any(|dir| {
            let p = dir.join(program);
            p.is_file()
        })
    })
}

pub fn describe(cmd: &Command) -> String {
    keepalive_tests::process::describe(cmd)
}

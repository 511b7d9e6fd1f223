//! The `prometheus` and `promtool` binaries: finding them (never skipping
//! when they are missing), running `promtool`, and reading `--help`.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use super::workspace_root;
use crate::process::{describe, run_output};

/// Debian package that provides both `prometheus` and `promtool`.
pub const PROMETHEUS_PACKAGE: &str = "prometheus";

/// Finds `name` in PATH or /usr/bin; panics loudly (never skips) if missing.
fn find_binary(name: &str) -> PathBuf {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain([PathBuf::from("/usr/bin"), PathBuf::from("/usr/sbin")])
        .map(|dir| dir.join(name))
        .find(|p| p.is_file())
        .unwrap_or_else(|| {
            panic!(
                "`{name}` not found in PATH or /usr/bin: install the Debian package \
                 `{PROMETHEUS_PACKAGE}` (apt-get install -y {PROMETHEUS_PACKAGE}; \
                 scripts/setup-tests.sh does it)"
            )
        })
}

/// Path of `promtool`; panics if it is not installed.
pub fn promtool() -> PathBuf {
    find_binary("promtool")
}

/// Path of the `prometheus` server; panics if it is not installed.
pub fn prometheus_bin() -> PathBuf {
    find_binary("prometheus")
}

/// Runs `promtool` with `args` (bounded in time), feeding it `stdin`.
pub fn run_promtool(args: &[&str], stdin: Option<&str>) -> Output {
    let mut cmd = Command::new(promtool());
    cmd.args(args).current_dir(workspace_root());
    run_output(cmd, stdin.map(str::as_bytes))
}

/// Renders a finished command for a panic message.
pub fn describe_output(what: &str, out: &Output) -> String {
    format!(
        "`{what}` exited with {}\n--- stdout ---\n{}\n--- stderr ---\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// Whether `bin --help` lists `flag` (e.g. `--metrics.local-port`).
pub fn help_lists_flag(bin: &Path, flag: &str) -> bool {
    let mut cmd = Command::new(bin);
    cmd.arg("--help");
    let what = describe(&cmd);
    let out = run_output(cmd, None);
    assert!(out.status.success(), "{}", describe_output(&what, &out));
    let help = String::from_utf8_lossy(&out.stdout);
    help.split(|c: char| c.is_whitespace() || c == ',' || c == '=' || c == '[')
        .any(|word| word == flag)
}

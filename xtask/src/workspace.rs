//! The workspace the tasks work in: its root directory, cargo run there, the release
//! daemon the privileged tasks build and point the test harness at, and the root check
//! those tasks make first.

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context as _, bail};

/// The workspace's root directory (xtask lives one level below it).
pub fn workspace_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// Runs cargo (the one running xtask, when known) with `args` in the workspace root.
pub fn cargo(args: &[&str]) -> anyhow::Result<()> {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let mut cmd = Command::new(&cargo);
    // `cargo run` gave xtask its own package's variables (CARGO_PKG_NAME=xtask,
    // CARGO_MANIFEST_DIR, ...); build scripts such as ring's rerun when those change
    // (rerun-if-env-changed), so passing them on would rebuild ring, rustls and the daemon
    // on every switch between `cargo build --release` and `cargo xtask`.
    for (key, _) in std::env::vars_os() {
        let key = key.to_string_lossy();
        if key.starts_with("CARGO_PKG_")
            || key.starts_with("CARGO_MANIFEST_")
            || [
                "CARGO_CRATE_NAME",
                "CARGO_BIN_NAME",
                "CARGO_PRIMARY_PACKAGE",
                "OUT_DIR",
            ]
            .contains(&key.as_ref())
        {
            cmd.env_remove(key.as_ref());
        }
    }
    let status = cmd
        .args(args)
        .current_dir(workspace_root())
        .status()
        .with_context(|| format!("running cargo {}", args.join(" ")))?;
    if !status.success() {
        bail!("cargo {} failed ({status})", args.join(" "));
    }
    Ok(())
}

/// Builds the release daemon (and, through its build.rs, the eBPF programs) the way the
/// README's `cargo build --release` does: the same package selection (the default
/// members) resolves the same dependency features, so switching between the two rebuilds
/// nothing (`-p keepalive-daemon` alone left out features the tests crate turns on, e.g.
/// bitflags/std through tempfile, and every switch recompiled the daemon). It also builds
/// keepalive-vmcheck.
pub fn build_release_daemon() -> anyhow::Result<()> {
    cargo(&["build", "--release"])
}

/// Fails with advice unless xtask runs as root.
pub fn require_root(what: &str) -> anyhow::Result<()> {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        bail!(
            "{what} loads eBPF programs and creates network namespaces: run it as root \
             (`cargo xtask test --unit-only` runs the host tests without root)"
        );
    }
    Ok(())
}

/// Points the harness at the release daemon just built.
pub fn set_daemon_bin() {
    use_daemon_bin(&workspace_root().join("target/release/keepalive-daemon"));
}

/// Points the harness at the daemon binary `bin`.
pub fn use_daemon_bin(bin: &Path) {
    // SAFETY: single-threaded at this point; nothing else reads the environment.
    unsafe { std::env::set_var(keepalive_tests::daemon::DAEMON_BIN_ENV, bin) };
}

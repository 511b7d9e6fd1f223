//! `cargo xtask test`: the host unit tests, then (as root) the integration tests of the
//! keepalive-tests crate against the release daemon, one at a time.

use crate::workspace::{build_release_daemon, cargo, require_root, set_daemon_bin};

/// Runs the unit tests; unless `unit_only`, then the integration tests with `filter`
/// passed to the test binaries.
pub fn run(unit_only: bool, filter: &[String]) -> anyhow::Result<()> {
    cargo(&[
        "test",
        "--workspace",
        "--exclude",
        "keepalive-tests",
        "--exclude",
        "keepalive-ebpf",
    ])?;
    if unit_only {
        return Ok(());
    }
    require_root("cargo xtask test")?;
    build_release_daemon()?;
    set_daemon_bin();
    let mut args = vec![
        "test",
        "--package",
        "keepalive-tests",
        "--",
        "--test-threads=1",
    ];
    args.extend(filter.iter().map(String::as_str));
    cargo(&args)
}

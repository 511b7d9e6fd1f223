//! `cargo xtask package`: the Debian package, built by cargo-deb from the
//! `[package.metadata.deb]` section of keepalive-daemon/Cargo.toml. assets.rs generates
//! what cargo-deb cannot: the man pages and shell completions (from the daemon's clap
//! definition) and the shared files, under `target/release/deb-assets/`. `--check` then
//! inspects the .deb it built (check.rs).

mod assets;
mod check;

use std::path::PathBuf;
use std::process::Command;

use anyhow::{Context as _, ensure};

use crate::tool::run_tool;
use crate::workspace::{build_release_daemon, workspace_root};

/// cargo-deb version the packaging metadata is written for (`scripts/setup-tests.sh`).
pub const CARGO_DEB_VERSION: &str = "3.8.0";

/// Where the generated assets go; cargo-deb maps `target/release/` to the real
/// target directory, and keepalive-daemon/Cargo.toml lists these paths.
const DEB_ASSETS: &str = "target/release/deb-assets";

/// Generates the assets, builds the .deb and, with `check`, inspects it.
pub fn run(check: bool) -> anyhow::Result<()> {
    let version = cargo_deb_version()?;
    if version != CARGO_DEB_VERSION {
        eprintln!("note: cargo-deb {version}; the packaging is tested with {CARGO_DEB_VERSION}");
    }
    let assets = workspace_root().join(DEB_ASSETS);
    let generated = assets::generate_assets(&assets)?;
    for path in &generated {
        println!("generated {}", path.display());
    }
    let deb = build_deb()?;
    println!("built {}", deb.display());
    if check {
        check::check_deb(&deb)?;
    }
    Ok(())
}

fn cargo_deb_version() -> anyhow::Result<String> {
    let hint = format!(
        "cargo-deb is not installed; install it with \
         `cargo install cargo-deb --version {CARGO_DEB_VERSION} --locked`"
    );
    let out = Command::new(cargo_bin())
        .args(["deb", "--version"])
        .output()
        .context(hint.clone())?;
    ensure!(out.status.success(), "{hint}");
    // "cargo-deb 3.8.0"
    let text = String::from_utf8_lossy(&out.stdout);
    Ok(text.split_whitespace().nth(1).unwrap_or("?").to_owned())
}

fn cargo_bin() -> String {
    std::env::var("CARGO").unwrap_or_else(|_| "cargo".into())
}

/// Builds the release binary (and the eBPF programs, through build.rs), then runs
/// cargo-deb on it; returns the path of the .deb. cargo-deb does not build by itself:
/// the generated assets under target/release/ would make it build the whole workspace.
fn build_deb() -> anyhow::Result<PathBuf> {
    build_release_daemon()?;
    let out = run_tool(
        Command::new(cargo_bin())
            .args(["deb", "--package", "keepalive-daemon", "--no-build"])
            .current_dir(workspace_root()),
    )?;
    let path = out
        .lines()
        .rev()
        .map(str::trim)
        .find(|l| l.ends_with(".deb"))
        .with_context(|| format!("cargo deb printed no .deb path:\n{out}"))?;
    let path = PathBuf::from(path);
    ensure!(path.is_file(), "{} does not exist", path.display());
    Ok(path)
}

//! Builds the kernel programs (keepalive-ebpf) for bpfel-unknown-none with the nightly
//! pinned in keepalive-ebpf/rust-toolchain.toml, and leaves the object in OUT_DIR.
use anyhow::{Context as _, anyhow};
use aya_build::{Package, Toolchain};

fn main() -> anyhow::Result<()> {
    let toolchain_file = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../keepalive-ebpf/rust-toolchain.toml"
    );
    println!("cargo::rerun-if-changed={toolchain_file}");
    let text = std::fs::read_to_string(toolchain_file)
        .with_context(|| format!("reading {toolchain_file}"))?;
    let channel = text
        .lines()
        .find_map(|l| l.trim().strip_prefix("channel = "))
        .map(|v| v.trim_matches('"').to_owned())
        .ok_or_else(|| anyhow!("no `channel = \"...\"` line in {toolchain_file}"))?;
    let root_dir = concat!(env!("CARGO_MANIFEST_DIR"), "/../keepalive-ebpf");
    aya_build::build_ebpf(
        [Package {
            name: "keepalive-ebpf",
            root_dir,
            ..Default::default()
        }],
        Toolchain::Custom(&channel),
    )
}

//! The Debian kernels of the matrix: download (apt-get download), unpack (dpkg -x), cache.

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context as _, bail};

pub struct DebianKernel {
    /// Name on the command line and in the table.
    pub short: &'static str,
    /// Debian binary package (bookworm-security).
    pub package: &'static str,
}

pub const DEBIAN: &[DebianKernel] = &[
    DebianKernel {
        short: "6.1",
        package: "linux-image-6.1.0-56-amd64",
    },
    DebianKernel {
        short: "6.12",
        package: "linux-image-6.12.117+deb12-amd64",
    },
];

/// Modules the guest loads (no dependencies among them): veth for the pair, sch_ingress
/// for clsact (kernels before 6.6 have no TCX), cls_bpf for the tc programs.
pub const MODULES: [&str; 3] = [
    "drivers/net/veth",
    "net/sched/sch_ingress",
    "net/sched/cls_bpf",
];

pub struct Unpacked {
    pub vmlinuz: PathBuf,
    /// Uncompressed .ko files, in load order.
    pub modules: Vec<PathBuf>,
}

/// Downloads and unpacks `kernel` once; later calls only look the files up.
pub fn fetch(kernel: &DebianKernel, cache: &Path) -> anyhow::Result<Unpacked> {
    let debs = cache.join("debs");
    std::fs::create_dir_all(&debs)?;
    let prefix = format!("{}_", kernel.package);
    let find_deb = || -> anyhow::Result<Option<PathBuf>> {
        Ok(std::fs::read_dir(&debs)?
            .filter_map(Result::ok)
            .map(|e| e.path())
            .find(|p| {
                p.file_name()
                    .and_then(|n| n.to_str())
                    .is_some_and(|n| n.starts_with(&prefix) && n.ends_with(".deb"))
            }))
    };
    let deb = match find_deb()? {
        Some(deb) => deb,
        None => {
            eprintln!("vm-test: apt-get download {}", kernel.package);
            let status = Command::new("apt-get")
                .args(["download", "-q", kernel.package])
                .current_dir(&debs)
                .status()
                .context("running apt-get download")?;
            if !status.success() {
                bail!(
                    "apt-get download {} failed: is bookworm-security in the apt sources \
                     (and apt-get update done)? See docs/kernel-matrix.md",
                    kernel.package
                );
            }
            find_deb()?.context("apt-get download left no .deb")?
        }
    };
    // Only vmlinuz and the few modules are kept (the unpacked package is ~250 MB).
    let root = cache
        .join("kernels")
        .join(deb.file_stem().expect("deb file name"));
    let marker = root.join(".unpacked");
    let vmlinuz = root.join("vmlinuz");
    let modules: Vec<PathBuf> = MODULES
        .iter()
        .map(|m| root.join(format!("{}.ko", m.rsplit('/').next().expect("module name"))))
        .collect();
    if !marker.exists() {
        if root.exists() {
            std::fs::remove_dir_all(&root)?;
        }
        let unpacked = root.with_extension("tmp");
        if unpacked.exists() {
            std::fs::remove_dir_all(&unpacked)?;
        }
        std::fs::create_dir_all(&unpacked)?;
        run(Command::new("dpkg").arg("-x").arg(&deb).arg(&unpacked))?;
        std::fs::create_dir_all(&root)?;
        let release = kernel.package.trim_start_matches("linux-image-");
        std::fs::copy(unpacked.join(format!("boot/vmlinuz-{release}")), &vmlinuz)
            .context("vmlinuz missing from the package")?;
        let mod_root = unpacked.join(format!("lib/modules/{release}/kernel"));
        for (m, dest) in MODULES.iter().zip(&modules) {
            let ko = mod_root.join(format!("{m}.ko"));
            let xz = mod_root.join(format!("{m}.ko.xz"));
            if !ko.is_file() {
                anyhow::ensure!(xz.is_file(), "neither {} nor .xz exists", ko.display());
                run(Command::new("xz").arg("-dk").arg(&xz))?;
            }
            std::fs::copy(&ko, dest)?;
        }
        std::fs::remove_dir_all(&unpacked)?;
        std::fs::write(&marker, b"")?;
    }
    Ok(Unpacked { vmlinuz, modules })
}

fn run(cmd: &mut Command) -> anyhow::Result<()> {
    let status = cmd.status().with_context(|| format!("running {cmd:?}"))?;
    if !status.success() {
        bail!("{cmd:?} failed ({status})");
    }
    Ok(())
}

//! The guest's initramfs: busybox-static, iproute2's ip, the daemon and keepalive-vmcheck
//! (host builds, with the shared libraries ldd names), the kernel's modules and /init.

use std::os::unix::fs::PermissionsExt as _;
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context as _, bail};

use super::kernels::Unpacked;

const BUSYBOX: &str = "/bin/busybox";

/// Mounts, loads the modules, runs the check, powers off. Everything it prints goes to
/// the serial console; the host reads the `VMCHECK` lines from there.
const INIT: &str = r#"#!/bin/busybox sh
/bin/busybox --install -s /bin
export PATH=/usr/sbin:/usr/bin:/bin:/sbin
mount -t devtmpfs devtmpfs /dev
exec 0</dev/console 1>/dev/console 2>&1
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t tmpfs tmpfs /tmp
mount -t tmpfs tmpfs /run
mount -t tracefs tracefs /sys/kernel/tracing || echo "VMCHECK init tracefs=unavailable"
mount -t bpf bpf /sys/fs/bpf
ln -s /run /var/run
for m in /modules/*.ko; do insmod "$m" || echo "VMCHECK init insmod_failed=$m"; done
ip link set lo up
echo "VMCHECK init uptime=$(cut -d' ' -f1 /proc/uptime)"
/bin/keepalive-vmcheck --daemon /bin/keepalive-daemon
echo "VMCHECK init check_exit=$?"
/bin/keepalive-vmcheck --daemon /bin/keepalive-daemon --fallback
echo "VMCHECK init check_exit=$?"
/bin/keepalive-vmcheck --daemon /bin/keepalive-daemon --no-fentry
echo "VMCHECK init check_exit=$?"
poweroff -f
"#;

/// Builds `out` (gzip-compressed newc cpio) from a fresh staging tree at `stage`.
pub fn build(
    kernel: &Unpacked,
    daemon: &Path,
    check: &Path,
    stage: &Path,
    out: &Path,
) -> anyhow::Result<()> {
    if stage.exists() {
        std::fs::remove_dir_all(stage)?;
    }
    for d in [
        "bin", "sbin", "usr/bin", "usr/sbin", "dev", "proc", "sys", "tmp", "run", "var", "modules",
        "lib64",
    ] {
        std::fs::create_dir_all(stage.join(d))?;
    }
    let ip = which("ip")?;
    copy(Path::new(BUSYBOX), &stage.join("bin/busybox"))?;
    copy(&ip, &stage.join("usr/sbin/ip"))?;
    copy(daemon, &stage.join("bin/keepalive-daemon"))?;
    copy(check, &stage.join("bin/keepalive-vmcheck"))?;
    for lib in shared_libs(&[&ip, daemon, check])? {
        let dest = stage.join(lib.strip_prefix("/").expect("absolute library path"));
        std::fs::create_dir_all(dest.parent().expect("library directory"))?;
        copy(&lib, &dest)?;
    }
    for (i, m) in kernel.modules.iter().enumerate() {
        let name = m.file_name().expect("module file name").to_string_lossy();
        copy(m, &stage.join(format!("modules/{i}-{name}")))?;
    }
    let init = stage.join("init");
    std::fs::write(&init, INIT)?;
    std::fs::set_permissions(&init, std::fs::Permissions::from_mode(0o755))?;
    // The kernel opens /dev/console for init before devtmpfs is mounted.
    let status = Command::new("mknod")
        .arg(stage.join("dev/console"))
        .args(["c", "5", "1"])
        .status()
        .context("mknod")?;
    if !status.success() {
        bail!("mknod dev/console failed");
    }
    let script = format!(
        "find . | cpio -o -H newc -R 0:0 --quiet | gzip -1 > '{}'",
        out.display()
    );
    let status = Command::new("sh")
        .args(["-c", &script])
        .current_dir(stage)
        .status()
        .context("running cpio")?;
    if !status.success() {
        bail!("building {} failed", out.display());
    }
    Ok(())
}

fn copy(from: &Path, to: &Path) -> anyhow::Result<()> {
    std::fs::copy(from, to)
        .with_context(|| format!("copying {} to {}", from.display(), to.display()))?;
    Ok(())
}

fn which(program: &str) -> anyhow::Result<PathBuf> {
    for dir in ["/usr/sbin", "/sbin", "/usr/bin", "/bin"] {
        let p = Path::new(dir).join(program);
        if p.is_file() {
            return Ok(p);
        }
    }
    bail!("{program} not found (apt-get install iproute2)")
}

/// Every shared library (and the dynamic loader) `ldd` lists for `binaries`.
fn shared_libs(binaries: &[&Path]) -> anyhow::Result<Vec<PathBuf>> {
    let mut libs = Vec::new();
    for bin in binaries {
        let out = Command::new("ldd")
            .arg(bin)
            .output()
            .context("running ldd")?;
        for line in String::from_utf8_lossy(&out.stdout).lines() {
            let path = match line.split_once("=>") {
                Some((_, rest)) => rest.split_whitespace().next(),
                None => line.split_whitespace().next(),
            };
            if let Some(p) = path.filter(|p| p.starts_with('/')) {
                let p = PathBuf::from(p);
                if !libs.contains(&p) {
                    libs.push(p);
                }
            }
        }
    }
    Ok(libs)
}

//! Boots a kernel and initramfs under qemu (TCG; this machine has no KVM), serial
//! console to a file, bounded in time.

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::Context as _;

const QEMU: &str = "qemu-system-x86_64";

/// Host tools vm-test needs that are not installed.
pub fn missing_tools() -> Vec<&'static str> {
    let have = |p: &str| {
        ["/usr/bin", "/usr/sbin", "/bin", "/sbin"]
            .iter()
            .any(|d| Path::new(d).join(p).is_file())
    };
    [
        (QEMU, "qemu-system-x86"),
        ("busybox", "busybox-static"),
        ("cpio", "cpio"),
        ("xz", "xz-utils"),
        ("ip", "iproute2"),
    ]
    .into_iter()
    .filter(|(tool, _)| !have(tool))
    .map(|(_, package)| package)
    .collect()
}

/// Runs the guest to power-off. Returns whether it had to be killed at `timeout`.
pub fn boot(vmlinuz: &Path, initrd: &Path, log: &Path, timeout: Duration) -> anyhow::Result<bool> {
    let mut child = Command::new(QEMU)
        .args(["-accel", "tcg", "-m", "2048", "-smp", "2", "-no-reboot"])
        .args(["-display", "none", "-monitor", "none", "-nic", "none"])
        .arg("-serial")
        .arg(format!("file:{}", log.display()))
        .arg("-kernel")
        .arg(vmlinuz)
        .arg("-initrd")
        .arg(initrd)
        .args(["-append", "console=ttyS0 panic=-1 quiet"])
        .stdin(Stdio::null())
        .spawn()
        .context("starting qemu-system-x86_64")?;
    let deadline = Instant::now() + timeout;
    loop {
        if child.try_wait()?.is_some() {
            return Ok(false);
        }
        if Instant::now() >= deadline {
            let _ = child.kill();
            let _ = child.wait();
            return Ok(true);
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

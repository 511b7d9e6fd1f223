//! Capabilities and kernel version: checked before anything is bound or attached, and
//! trimmed once everything is attached.

/// Capability numbers (include/uapi/linux/capability.h).
pub const CAP_NET_ADMIN: u32 = 12;
pub const CAP_SETPCAP: u32 = 8;
pub const CAP_SYS_ADMIN: u32 = 21;
pub const CAP_PERFMON: u32 = 38;
pub const CAP_BPF: u32 = 39;

/// The oldest kernel the daemon supports: CAP_BPF and CAP_PERFMON (5.8) are what it is
/// granted under systemd; bpf_probe_read_kernel (5.5), raw tracepoints, BTF in sysfs
/// and global data in .rodata are older.
pub const MIN_KERNEL: (u32, u32) = (5, 8);

/// Kept after attaching: CAP_NET_ADMIN deletes the netlink tc filters at exit (kernels
/// before 6.6), CAP_BPF with it attaches interfaces that appear later.
pub const KEPT_AFTER_ATTACH: [u32; 2] = [CAP_BPF, CAP_NET_ADMIN];

#[derive(Debug, thiserror::Error)]
pub enum CapsError {
    #[error(
        "missing {missing}: run as root, or grant them (systemd: AmbientCapabilities={granted}; \
         or `setcap {setcap}+ep` on the binary)"
    )]
    Missing {
        missing: String,
        granted: String,
        setcap: String,
    },
    #[error(
        "kernel {release} is not supported: keepalive-daemon needs Linux {}.{} or newer",
        MIN_KERNEL.0,
        MIN_KERNEL.1
    )]
    OldKernel { release: String },
    #[error("cannot read {what}: {source}")]
    Read {
        what: &'static str,
        source: std::io::Error,
    },
    #[error("dropping capabilities failed: {source}")]
    Drop { source: std::io::Error },
}

/// Names by number (include/uapi/linux/capability.h).
const NAMES: [&str; 41] = [
    "CAP_CHOWN",
    "CAP_DAC_OVERRIDE",
    "CAP_DAC_READ_SEARCH",
    "CAP_FOWNER",
    "CAP_FSETID",
    "CAP_KILL",
    "CAP_SETGID",
    "CAP_SETUID",
    "CAP_SETPCAP",
    "CAP_LINUX_IMMUTABLE",
    "CAP_NET_BIND_SERVICE",
    "CAP_NET_BROADCAST",
    "CAP_NET_ADMIN",
    "CAP_NET_RAW",
    "CAP_IPC_LOCK",
    "CAP_IPC_OWNER",
    "CAP_SYS_MODULE",
    "CAP_SYS_RAWIO",
    "CAP_SYS_CHROOT",
    "CAP_SYS_PTRACE",
    "CAP_SYS_PACCT",
    "CAP_SYS_ADMIN",
    "CAP_SYS_BOOT",
    "CAP_SYS_NICE",
    "CAP_SYS_RESOURCE",
    "CAP_SYS_TIME",
    "CAP_SYS_TTY_CONFIG",
    "CAP_MKNOD",
    "CAP_LEASE",
    "CAP_AUDIT_WRITE",
    "CAP_AUDIT_CONTROL",
    "CAP_SETFCAP",
    "CAP_MAC_OVERRIDE",
    "CAP_MAC_ADMIN",
    "CAP_SYSLOG",
    "CAP_WAKE_ALARM",
    "CAP_BLOCK_SUSPEND",
    "CAP_AUDIT_READ",
    "CAP_PERFMON",
    "CAP_BPF",
    "CAP_CHECKPOINT_RESTORE",
];

pub fn name(cap: u32) -> &'static str {
    NAMES.get(cap as usize).copied().unwrap_or("CAP_?")
}

/// `Cap<kind>:` of /proc/self/status (`CapEff:\t000001fffeffffff`).
pub fn parse_status(status: &str, kind: &str) -> Option<u64> {
    let prefix = format!("Cap{kind}:");
    status
        .lines()
        .find_map(|l| u64::from_str_radix(l.strip_prefix(prefix.as_str())?.trim(), 16).ok())
}

/// "6.18.44-fc-v669" -> (6, 18).
pub fn parse_release(release: &str) -> Option<(u32, u32)> {
    let mut parts = release.split(|c: char| !c.is_ascii_digit());
    let major = parts.next()?.parse().ok()?;
    let minor = parts.next()?.parse().ok()?;
    Some((major, minor))
}

/// The capabilities the daemon needs that `effective` lacks. On kernels without
/// CAP_BPF and CAP_PERFMON (`last_cap` below 39), CAP_SYS_ADMIN stands for both.
pub fn missing(effective: u64, last_cap: u32) -> Vec<u32> {
    // The kernel accepts CAP_SYS_ADMIN wherever it asks for CAP_BPF or CAP_PERFMON
    // (bpf_capable(), perfmon_capable() in include/linux/capability.h).
    let has = |c: u32| {
        effective & (1u64 << c) != 0
            || (matches!(c, CAP_BPF | CAP_PERFMON) && effective & (1u64 << CAP_SYS_ADMIN) != 0)
    };
    let needed: &[u32] = if last_cap >= CAP_BPF {
        &[CAP_BPF, CAP_PERFMON, CAP_NET_ADMIN]
    } else {
        &[CAP_SYS_ADMIN, CAP_NET_ADMIN]
    };
    needed.iter().copied().filter(|&c| !has(c)).collect()
}

fn read(path: &'static str) -> Result<String, CapsError> {
    std::fs::read_to_string(path).map_err(|source| CapsError::Read { what: path, source })
}

/// Fails with an error naming what is missing: a kernel older than [`MIN_KERNEL`], or
/// capabilities. Runs before anything is bound or attached.
pub fn check() -> Result<(), CapsError> {
    let release = read("/proc/sys/kernel/osrelease")?.trim().to_owned();
    // uname(2), not osrelease: personalities (setarch --uname-2.6) change what
    // programs see, and the check must agree with uname.
    let release = uname_release().unwrap_or(release);
    if parse_release(&release).is_none_or(|v| v < MIN_KERNEL) {
        return Err(CapsError::OldKernel { release });
    }
    let status = read("/proc/self/status")?;
    let effective = parse_status(&status, "Eff").unwrap_or(0);
    let last_cap = read("/proc/sys/kernel/cap_last_cap")?
        .trim()
        .parse()
        .unwrap_or(CAP_BPF);
    let missing = missing(effective, last_cap);
    if missing.is_empty() {
        return Ok(());
    }
    let names = |caps: &[u32]| caps.iter().map(|&c| name(c)).collect::<Vec<_>>();
    let all = if last_cap >= CAP_BPF {
        vec![CAP_BPF, CAP_PERFMON, CAP_NET_ADMIN]
    } else {
        vec![CAP_SYS_ADMIN, CAP_NET_ADMIN]
    };
    Err(CapsError::Missing {
        missing: names(&missing).join(", "),
        granted: names(&all).join(" "),
        setcap: names(&all)
            .iter()
            .map(|n| n.to_lowercase())
            .collect::<Vec<_>>()
            .join(","),
    })
}

fn uname_release() -> Option<String> {
    // SAFETY: utsname is plain bytes; uname(2) fills it or fails.
    let mut u: libc::utsname = unsafe { std::mem::zeroed() };
    // SAFETY: `u` is a valid, writable utsname.
    if unsafe { libc::uname(&mut u) } != 0 {
        return None;
    }
    // SAFETY: uname NUL-terminates each field within its array.
    let r = unsafe { std::ffi::CStr::from_ptr(u.release.as_ptr()) };
    Some(r.to_string_lossy().into_owned())
}

/// Everything is attached: keeps only what run time needs, and says what went. A
/// failure is logged, not fatal.
pub fn drop_after_attach() {
    match drop_all_but(&KEPT_AFTER_ATTACH) {
        Ok(dropped) => log::info!(
            "dropped {} capabilities no longer needed ({}); kept CAP_BPF and CAP_NET_ADMIN",
            dropped.len(),
            dropped
                .iter()
                .map(|&c| name(c))
                .collect::<Vec<_>>()
                .join(", ")
        ),
        Err(e) => log::warn!("{e}"),
    }
}

/// After attaching: keeps only `keep` (of what this thread has), clears the inheritable
/// and ambient sets, shrinks the bounding set when allowed (CAP_SETPCAP) and sets
/// no_new_privs. The daemon is single-threaded (a current-thread runtime), so this
/// covers the whole process. Returns the capabilities dropped from the permitted set.
pub fn drop_all_but(keep: &[u32]) -> Result<Vec<u32>, CapsError> {
    let err = |source| CapsError::Drop { source };
    let status = read("/proc/self/status")?;
    let permitted = parse_status(&status, "Prm").unwrap_or(0);
    let keep_mask = keep.iter().fold(0u64, |m, &c| m | (1 << c)) & permitted;
    let last_cap: u32 = read("/proc/sys/kernel/cap_last_cap")?
        .trim()
        .parse()
        .unwrap_or(40);
    // The bounding set first: dropping from it needs CAP_SETPCAP in the effective set.
    if parse_status(&status, "Eff").unwrap_or(0) & (1 << CAP_SETPCAP) != 0 {
        for cap in (0..=last_cap).filter(|c| keep_mask & (1 << c) == 0) {
            // SAFETY: prctl(2) with integer arguments only.
            if unsafe { libc::prctl(libc::PR_CAPBSET_DROP, cap as libc::c_ulong, 0, 0, 0) } != 0 {
                return Err(err(std::io::Error::last_os_error()));
            }
        }
    }
    // SAFETY: prctl(2) with integer arguments only.
    if unsafe {
        libc::prctl(
            libc::PR_CAP_AMBIENT,
            libc::PR_CAP_AMBIENT_CLEAR_ALL,
            0,
            0,
            0,
        )
    } != 0
    {
        return Err(err(std::io::Error::last_os_error()));
    }
    let mut header = libc_cap_header();
    let data = [
        CapData {
            effective: keep_mask as u32,
            permitted: keep_mask as u32,
            inheritable: 0,
        },
        CapData {
            effective: (keep_mask >> 32) as u32,
            permitted: (keep_mask >> 32) as u32,
            inheritable: 0,
        },
    ];
    // SAFETY: capset(2) with a version-3 header and the two data words it expects.
    if unsafe { libc::syscall(libc::SYS_capset, &mut header, data.as_ptr()) } != 0 {
        return Err(err(std::io::Error::last_os_error()));
    }
    // SAFETY: prctl(2) with integer arguments only.
    if unsafe { libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) } != 0 {
        return Err(err(std::io::Error::last_os_error()));
    }
    Ok((0..=last_cap.min(63))
        .filter(|c| permitted & (1 << c) != 0 && keep_mask & (1 << c) == 0)
        .collect())
}

#[repr(C)]
struct CapHeader {
    version: u32,
    pid: i32,
}

#[repr(C)]
struct CapData {
    effective: u32,
    permitted: u32,
    inheritable: u32,
}

fn libc_cap_header() -> CapHeader {
    // _LINUX_CAPABILITY_VERSION_3: two 32-bit words per set.
    CapHeader {
        version: 0x2008_0522,
        pid: 0,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_lines_parse() {
        let s = "Name:\tx\nCapInh:\t0000000000000000\nCapEff:\t000001fffeffffff\n";
        assert_eq!(parse_status(s, "Eff"), Some(0x1fffeffffff));
        assert_eq!(parse_status(s, "Inh"), Some(0));
        assert_eq!(parse_status(s, "Bnd"), None);
    }

    #[test]
    fn releases_parse_and_compare() {
        assert_eq!(parse_release("6.18.44-fc-v669"), Some((6, 18)));
        assert_eq!(parse_release("2.6.78-fc-v669"), Some((2, 6)));
        assert_eq!(parse_release("5.8.0"), Some((5, 8)));
        assert_eq!(parse_release("garbage"), None);
        assert!(parse_release("5.4.0").unwrap() < MIN_KERNEL);
        assert!(parse_release("5.10.0").unwrap() >= MIN_KERNEL);
    }

    #[test]
    fn names_follow_the_numbers() {
        assert_eq!(name(CAP_NET_ADMIN), "CAP_NET_ADMIN");
        assert_eq!(name(CAP_SYS_ADMIN), "CAP_SYS_ADMIN");
        assert_eq!(name(CAP_PERFMON), "CAP_PERFMON");
        assert_eq!(name(CAP_BPF), "CAP_BPF");
        assert_eq!(name(CAP_SETPCAP), "CAP_SETPCAP");
        assert_eq!(name(99), "CAP_?");
    }

    #[test]
    fn missing_names_what_is_absent() {
        let all = (1u64 << CAP_BPF) | (1 << CAP_PERFMON) | (1 << CAP_NET_ADMIN);
        assert!(missing(all, 40).is_empty());
        assert_eq!(missing(1 << CAP_NET_ADMIN, 40), [CAP_BPF, CAP_PERFMON]);
        assert_eq!(missing(0, 40), [CAP_BPF, CAP_PERFMON, CAP_NET_ADMIN]);
        // Before 5.8 CAP_SYS_ADMIN stands for CAP_BPF and CAP_PERFMON.
        assert_eq!(missing(1 << CAP_NET_ADMIN, 37), [CAP_SYS_ADMIN]);
        // CAP_SYS_ADMIN covers CAP_BPF and CAP_PERFMON.
        assert!(missing((1 << CAP_SYS_ADMIN) | (1 << CAP_NET_ADMIN), 40).is_empty());
    }
}

//! Capabilities and kernel version: checked before anything is bound or attached, and
//! trimmed once everything is attached. The capability sets go through the `caps` crate
//! (capget/capset, the bounding and ambient sets); two plain libc calls remain because
//! the crate does not cover them: uname(2) and prctl(PR_SET_NO_NEW_PRIVS).

use caps::{CapSet, Capability, CapsHashSet};

use Capability::{CAP_BPF, CAP_NET_ADMIN, CAP_PERFMON, CAP_SETPCAP, CAP_SYS_ADMIN, CAP_SYS_PTRACE};

/// The oldest kernel the daemon supports: CAP_BPF and CAP_PERFMON (5.8) are what it is
/// granted under systemd; bpf_probe_read_kernel (5.5), raw tracepoints, BTF in sysfs
/// and global data in .rodata are older.
pub const MIN_KERNEL: (u32, u32) = (5, 8);

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
    #[error("cannot read this process's {set} capabilities: {source}")]
    Query {
        set: &'static str,
        source: caps::errors::CapsError,
    },
    #[error("dropping capabilities failed: {source}")]
    Drop { source: caps::errors::CapsError },
    #[error("dropping capabilities failed: setting no_new_privs: {source}")]
    NoNewPrivs { source: std::io::Error },
}

/// "6.18.44-fc-v669" -> (6, 18).
pub fn parse_release(release: &str) -> Option<(u32, u32)> {
    let mut parts = release.split(|c: char| !c.is_ascii_digit());
    let major = parts.next()?.parse().ok()?;
    let minor = parts.next()?.parse().ok()?;
    Some((major, minor))
}

/// What the daemon needs to load and attach: CAP_BPF, CAP_PERFMON and CAP_NET_ADMIN,
/// or on kernels without CAP_BPF (before 5.8) CAP_SYS_ADMIN and CAP_NET_ADMIN.
fn needed(kernel_has_cap_bpf: bool) -> &'static [Capability] {
    if kernel_has_cap_bpf {
        &[CAP_BPF, CAP_PERFMON, CAP_NET_ADMIN]
    } else {
        &[CAP_SYS_ADMIN, CAP_NET_ADMIN]
    }
}

/// The capabilities the daemon needs that `effective` lacks.
pub fn missing(effective: &CapsHashSet, kernel_has_cap_bpf: bool) -> Vec<Capability> {
    // The kernel accepts CAP_SYS_ADMIN wherever it asks for CAP_BPF or CAP_PERFMON
    // (bpf_capable(), perfmon_capable() in include/linux/capability.h).
    let has = |c: Capability| {
        effective.contains(&c)
            || (matches!(c, CAP_BPF | CAP_PERFMON) && effective.contains(&CAP_SYS_ADMIN))
    };
    needed(kernel_has_cap_bpf)
        .iter()
        .copied()
        .filter(|&c| !has(c))
        .collect()
}

fn read(path: &'static str) -> Result<String, CapsError> {
    std::fs::read_to_string(path).map_err(|source| CapsError::Read { what: path, source })
}

fn read_set(set: CapSet, label: &'static str) -> Result<CapsHashSet, CapsError> {
    caps::read(None, set).map_err(|source| CapsError::Query { set: label, source })
}

/// The capabilities this kernel knows (/proc/sys/kernel/cap_last_cap); when that cannot
/// be read, those of the bounding set.
fn supported() -> CapsHashSet {
    caps::runtime::procfs_all_supported(None)
        .unwrap_or_else(|_| caps::runtime::thread_all_supported())
}

fn names(caps: &[Capability]) -> Vec<String> {
    caps.iter().map(Capability::to_string).collect()
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
    let effective = read_set(CapSet::Effective, "effective")?;
    let has_cap_bpf = supported().contains(&CAP_BPF);
    let missing = missing(&effective, has_cap_bpf);
    if missing.is_empty() {
        return Ok(());
    }
    let all = names(needed(has_cap_bpf));
    Err(CapsError::Missing {
        missing: names(&missing).join(", "),
        granted: all.join(" "),
        setcap: all
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

/// What run time needs once everything is attached, out of `permitted`.
#[derive(Debug, PartialEq, Eq)]
pub struct Kept {
    /// Ordered by number.
    pub caps: Vec<Capability>,
    /// CAP_SYS_ADMIN is kept because it stands in for a CAP_BPF the process lacks.
    pub sys_admin_for_bpf: bool,
    /// CAP_SYS_ADMIN and CAP_SYS_PTRACE are kept for the audit of every namespace.
    pub for_namespaces: bool,
}

/// CAP_NET_ADMIN deletes the netlink tc filters at exit (kernels before 6.6) and
/// attaches interfaces that appear later, with CAP_BPF: on kernels before 6.4 every
/// bpf(2) command, map reads included, needs bpf_capable() when unprivileged BPF is
/// disabled. bpf_capable() is CAP_BPF or CAP_SYS_ADMIN, so a process that holds
/// CAP_SYS_ADMIN but not CAP_BPF (kernels before 5.8 have none; or a grant without it)
/// keeps CAP_SYS_ADMIN. CAP_PERFMON (or its CAP_SYS_ADMIN stand-in) is needed only to
/// attach kprobes and tracepoints, which happens at start-up only.
///
/// With `audit_namespaces` (the audit's inventory with --socket.all-namespaces), the
/// inventory enters every network namespace each run: setns(2) on a network namespace
/// needs CAP_SYS_ADMIN (net/core/net_namespace.c netns_install()), and opening another
/// process's /proc/PID/ns/net or reading its /proc/PID/fd needs ptrace read access,
/// which a root process whose capabilities are a subset of the target's lacks without
/// CAP_SYS_PTRACE (kernel/ptrace.c __ptrace_may_access()). Both are kept when granted.
pub fn kept_after_attach(permitted: &CapsHashSet, audit_namespaces: bool) -> Kept {
    let mut caps = Vec::new();
    let mut sys_admin_for_bpf = false;
    if permitted.contains(&CAP_BPF) {
        caps.push(CAP_BPF);
    } else if permitted.contains(&CAP_SYS_ADMIN) {
        caps.push(CAP_SYS_ADMIN);
        sys_admin_for_bpf = true;
    }
    if permitted.contains(&CAP_NET_ADMIN) {
        caps.push(CAP_NET_ADMIN);
    }
    let mut for_namespaces = false;
    if audit_namespaces {
        for c in [CAP_SYS_ADMIN, CAP_SYS_PTRACE] {
            if permitted.contains(&c) && !caps.contains(&c) {
                caps.push(c);
                for_namespaces = true;
            }
        }
    }
    caps.sort_by_key(|c| c.index());
    Kept {
        caps,
        sys_admin_for_bpf,
        for_namespaces,
    }
}

/// Everything is attached: keeps only what run time needs, and says what went. A
/// failure is logged, not fatal. `audit_namespaces`: see [`kept_after_attach`].
pub fn drop_after_attach(audit_namespaces: bool) {
    let kept = match read_set(CapSet::Permitted, "permitted") {
        Ok(permitted) => kept_after_attach(&permitted, audit_namespaces),
        Err(e) => {
            log::warn!("{e}");
            return;
        }
    };
    if kept.sys_admin_for_bpf {
        log::info!(
            "keeping CAP_SYS_ADMIN: it stands in for CAP_BPF, which this process was not \
             granted; reading the maps and attaching interfaces that appear later need one \
             of the two"
        );
    }
    match drop_all_but(&kept.caps) {
        Ok(dropped) => {
            log::info!(
                "capabilities: kept {}; dropped {} others",
                names(&kept.caps).join(", "),
                dropped.len()
            );
            log::debug!("capabilities dropped: {}", names(&dropped).join(", "));
        }
        Err(e) => log::warn!("{e}"),
    }
}

/// After attaching: keeps only `keep` (of what this thread has), clears the inheritable
/// and ambient sets, shrinks the bounding set when allowed (CAP_SETPCAP) and sets
/// no_new_privs. The daemon is single-threaded (a current-thread runtime), so this
/// covers the whole process. Returns the capabilities dropped from the permitted set,
/// ordered by number.
pub fn drop_all_but(keep: &[Capability]) -> Result<Vec<Capability>, CapsError> {
    let err = |source| CapsError::Drop { source };
    let permitted = read_set(CapSet::Permitted, "permitted")?;
    let keep: CapsHashSet = keep
        .iter()
        .copied()
        .filter(|c| permitted.contains(c))
        .collect();
    // The bounding set first: dropping from it needs CAP_SETPCAP in the effective set.
    if read_set(CapSet::Effective, "effective")?.contains(&CAP_SETPCAP) {
        for cap in supported().difference(&keep) {
            caps::drop(None, CapSet::Bounding, *cap).map_err(err)?;
        }
    }
    caps::clear(None, CapSet::Ambient).map_err(err)?;
    // Effective before permitted: the effective set must stay within the permitted one.
    for set in [CapSet::Effective, CapSet::Permitted] {
        caps::set(None, set, &keep).map_err(err)?;
    }
    caps::clear(None, CapSet::Inheritable).map_err(err)?;
    // SAFETY: prctl(2) with integer arguments only.
    if unsafe { libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) } != 0 {
        return Err(CapsError::NoNewPrivs {
            source: std::io::Error::last_os_error(),
        });
    }
    let mut dropped: Vec<Capability> = permitted.difference(&keep).copied().collect();
    dropped.sort_by_key(|c| c.index());
    Ok(dropped)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn set(caps: &[Capability]) -> CapsHashSet {
        caps.iter().copied().collect()
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
        assert_eq!(
            names(&[
                CAP_NET_ADMIN,
                CAP_SYS_ADMIN,
                CAP_PERFMON,
                CAP_BPF,
                CAP_SETPCAP
            ]),
            [
                "CAP_NET_ADMIN",
                "CAP_SYS_ADMIN",
                "CAP_PERFMON",
                "CAP_BPF",
                "CAP_SETPCAP"
            ]
        );
    }

    #[test]
    fn missing_names_what_is_absent() {
        let all = set(&[CAP_BPF, CAP_PERFMON, CAP_NET_ADMIN]);
        assert!(missing(&all, true).is_empty());
        assert_eq!(
            missing(&set(&[CAP_NET_ADMIN]), true),
            [CAP_BPF, CAP_PERFMON]
        );
        assert_eq!(
            missing(&set(&[]), true),
            [CAP_BPF, CAP_PERFMON, CAP_NET_ADMIN]
        );
        // Before 5.8 CAP_SYS_ADMIN stands for CAP_BPF and CAP_PERFMON.
        assert_eq!(missing(&set(&[CAP_NET_ADMIN]), false), [CAP_SYS_ADMIN]);
        // CAP_SYS_ADMIN covers CAP_BPF and CAP_PERFMON.
        assert!(missing(&set(&[CAP_SYS_ADMIN, CAP_NET_ADMIN]), true).is_empty());
    }

    #[test]
    fn cap_bpf_is_kept_when_granted_sys_admin_when_it_stands_in() {
        // The systemd unit's set, and root: CAP_BPF, never CAP_SYS_ADMIN.
        let unit = set(&[CAP_BPF, CAP_PERFMON, CAP_NET_ADMIN]);
        let root = caps::all();
        for permitted in [unit, root] {
            assert_eq!(
                kept_after_attach(&permitted, false),
                Kept {
                    caps: vec![CAP_NET_ADMIN, CAP_BPF],
                    sys_admin_for_bpf: false,
                    for_namespaces: false,
                }
            );
        }
        // CAP_SYS_ADMIN without CAP_BPF (a kernel before 5.8, or a grant without it).
        let stand_in = set(&[CAP_SYS_ADMIN, CAP_PERFMON, CAP_NET_ADMIN]);
        assert_eq!(
            kept_after_attach(&stand_in, false),
            Kept {
                caps: vec![CAP_NET_ADMIN, CAP_SYS_ADMIN],
                sys_admin_for_bpf: true,
                for_namespaces: false,
            }
        );
        // Nothing to keep that was not granted.
        assert_eq!(
            kept_after_attach(&set(&[CAP_PERFMON]), true),
            Kept {
                caps: vec![],
                sys_admin_for_bpf: false,
                for_namespaces: false,
            }
        );
    }

    #[test]
    fn the_audit_of_every_namespace_keeps_sys_admin_and_sys_ptrace_when_granted() {
        assert_eq!(
            kept_after_attach(&caps::all(), true),
            Kept {
                caps: vec![CAP_NET_ADMIN, CAP_SYS_PTRACE, CAP_SYS_ADMIN, CAP_BPF],
                sys_admin_for_bpf: false,
                for_namespaces: true,
            }
        );
        // The systemd unit grants neither: nothing more is kept, the audit warns.
        let unit = set(&[CAP_BPF, CAP_PERFMON, CAP_NET_ADMIN]);
        assert_eq!(
            kept_after_attach(&unit, true),
            Kept {
                caps: vec![CAP_NET_ADMIN, CAP_BPF],
                sys_admin_for_bpf: false,
                for_namespaces: false,
            }
        );
        // CAP_SYS_ADMIN standing in for CAP_BPF is kept once, for both reasons.
        let stand_in = set(&[CAP_SYS_ADMIN, CAP_SYS_PTRACE, CAP_NET_ADMIN]);
        assert_eq!(
            kept_after_attach(&stand_in, true),
            Kept {
                caps: vec![CAP_NET_ADMIN, CAP_SYS_PTRACE, CAP_SYS_ADMIN],
                sys_admin_for_bpf: true,
                for_namespaces: true,
            }
        );
    }
}

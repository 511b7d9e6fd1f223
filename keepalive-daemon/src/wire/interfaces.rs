//! Which interfaces to watch: --interface globs, or every interface that is up.

use std::{
    ffi::CStr,
    os::fd::{AsRawFd as _, FromRawFd as _, OwnedFd},
};

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Interface {
    pub name: String,
    /// Kernel interface index (a re-created interface gets a new one).
    pub index: u32,
    pub up: bool,
    /// ARPHRD_* link type from /sys/class/net/NAME/type.
    pub link_type: u32,
}

const ARPHRD_ETHER: u32 = 1;
const ARPHRD_LOOPBACK: u32 = 772;
const IFF_UP: u32 = 0x1;

impl Interface {
    /// The kernel programs parse frames that start with an Ethernet header: Ethernet-
    /// like devices (veth, bridges, bonds, NICs) and loopback.
    pub fn has_ethernet_header(&self) -> bool {
        matches!(self.link_type, ARPHRD_ETHER | ARPHRD_LOOPBACK)
    }
}

#[derive(Debug, thiserror::Error)]
pub enum InterfaceError {
    #[error("cannot list network interfaces: {source}")]
    List { source: std::io::Error },
    #[error("interface {name} does not exist (see `ip link`)")]
    Missing { name: String },
    #[error("invalid --interface pattern {pattern:?}: {source}")]
    Pattern {
        pattern: String,
        source: glob::PatternError,
    },
}

/// Interfaces of this process's network namespace (if_nameindex and ioctls, not
/// /sys/class/net: sysfs shows the namespace it was mounted in, which differs under
/// `nsenter --net`).
// The request constants are c_ulong in glibc and c_int in musl, like ioctl's parameter
// (libc::Ioctl): the casts are no-ops on either, and needed for the other.
#[allow(clippy::unnecessary_cast)]
pub fn list() -> Result<Vec<Interface>, InterfaceError> {
    let err = |source| InterfaceError::List { source };
    // SAFETY: plain socket(2) call; the fd is wrapped in OwnedFd right away.
    let fd = unsafe { libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0) };
    if fd < 0 {
        return Err(err(std::io::Error::last_os_error()));
    }
    // SAFETY: fd is a fresh, valid descriptor owned by nothing else.
    let sock = unsafe { OwnedFd::from_raw_fd(fd) };
    // SAFETY: if_nameindex returns a heap array terminated by a zero entry, or NULL.
    let head = unsafe { libc::if_nameindex() };
    if head.is_null() {
        return Err(err(std::io::Error::last_os_error()));
    }
    let mut out = Vec::new();
    let mut p = head;
    // SAFETY: we walk the array up to its terminating entry (if_index 0), read each
    // NUL-terminated name, and free the array once with if_freenameindex.
    unsafe {
        while (*p).if_index != 0 {
            let name = CStr::from_ptr((*p).if_name).to_string_lossy().into_owned();
            let flags = ioctl_ifreq(&sock, &name, libc::SIOCGIFFLAGS as libc::Ioctl)
                .map(|r| r.ifr_ifru.ifru_flags as u16 as u32)
                .unwrap_or(0);
            let link_type = ioctl_ifreq(&sock, &name, libc::SIOCGIFHWADDR as libc::Ioctl)
                .map(|r| r.ifr_ifru.ifru_hwaddr.sa_family as u32)
                .unwrap_or(0);
            out.push(Interface {
                name,
                index: (*p).if_index,
                up: flags & IFF_UP != 0,
                link_type,
            });
            p = p.add(1);
        }
        libc::if_freenameindex(head);
    }
    out.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(out)
}

fn ioctl_ifreq(sock: &OwnedFd, name: &str, request: libc::Ioctl) -> Option<libc::ifreq> {
    // SAFETY: ifreq is plain old data; all-zero is a valid value.
    let mut req: libc::ifreq = unsafe { std::mem::zeroed() };
    let bytes = name.as_bytes();
    if bytes.len() >= req.ifr_name.len() {
        return None;
    }
    for (d, s) in req.ifr_name.iter_mut().zip(bytes) {
        *d = *s as libc::c_char;
    }
    // SAFETY: req is a valid ifreq with a NUL-terminated name; the kernel fills ifr_ifru.
    let rc = unsafe { libc::ioctl(sock.as_raw_fd(), request, &mut req) };
    (rc == 0).then_some(req)
}

/// Picks interfaces by pattern: without patterns every interface that is up; a pattern
/// without glob characters must name an existing interface.
pub fn select(all: &[Interface], patterns: &[String]) -> Result<Vec<Interface>, InterfaceError> {
    if patterns.is_empty() {
        return Ok(all.iter().filter(|i| i.up).cloned().collect());
    }
    let mut chosen: Vec<Interface> = Vec::new();
    for pattern in patterns {
        let is_glob = pattern.contains(['*', '?', '[']);
        let compiled = glob::Pattern::new(pattern).map_err(|source| InterfaceError::Pattern {
            pattern: pattern.clone(),
            source,
        })?;
        let matched: Vec<&Interface> = all.iter().filter(|i| compiled.matches(&i.name)).collect();
        if matched.is_empty() {
            if !is_glob {
                return Err(InterfaceError::Missing {
                    name: pattern.clone(),
                });
            }
            log::warn!("--interface {pattern} matches no interface yet");
        }
        for i in matched {
            if !chosen.iter().any(|c| c.name == i.name) {
                chosen.push(i.clone());
            }
        }
    }
    Ok(chosen)
}

/// Whether an interface seen at run time (a link event) is one to watch: the same rule
/// as [`select`] (patterns, or every interface that is up), Ethernet-like only. Patterns
/// were validated at start-up; an invalid one matches nothing.
pub fn wanted(patterns: &[String], iface: &Interface) -> bool {
    if !iface.has_ethernet_header() {
        return false;
    }
    if patterns.is_empty() {
        return iface.up;
    }
    patterns.iter().any(|p| {
        glob::Pattern::new(p)
            .map(|g| g.matches(&iface.name))
            .unwrap_or(false)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn iface(name: &str, up: bool) -> Interface {
        Interface {
            name: name.into(),
            index: 1,
            up,
            link_type: ARPHRD_ETHER,
        }
    }

    #[test]
    fn default_is_every_interface_that_is_up() {
        let all = [iface("eth0", true), iface("eth1", false), iface("lo", true)];
        let names: Vec<_> = select(&all, &[])
            .unwrap()
            .into_iter()
            .map(|i| i.name)
            .collect();
        assert_eq!(names, ["eth0", "lo"]);
    }

    #[test]
    fn globs_match_down_interfaces_too_without_duplicates() {
        let all = [
            iface("veth1", false),
            iface("veth2", true),
            iface("eth0", true),
        ];
        let pats = ["veth*".to_string(), "veth2".to_string()];
        let names: Vec<_> = select(&all, &pats)
            .unwrap()
            .into_iter()
            .map(|i| i.name)
            .collect();
        assert_eq!(names, ["veth1", "veth2"]);
    }

    #[test]
    fn a_missing_literal_name_is_an_error_an_empty_glob_is_not() {
        let all = [iface("eth0", true)];
        assert!(matches!(
            select(&all, &["eth9".into()]),
            Err(InterfaceError::Missing { .. })
        ));
        assert!(select(&all, &["wg*".into()]).unwrap().is_empty());
        assert!(matches!(
            select(&all, &["[".into()]),
            Err(InterfaceError::Pattern { .. })
        ));
    }

    #[test]
    fn run_time_interfaces_follow_the_same_rule() {
        let pats = ["veth*".to_string()];
        assert!(wanted(&pats, &iface("veth9", false)));
        assert!(!wanted(&pats, &iface("eth0", true)));
        assert!(wanted(&[], &iface("eth0", true)));
        assert!(!wanted(&[], &iface("eth0", false)));
        let mut tun = iface("veth-tun", true);
        tun.link_type = 65534; // ARPHRD_NONE: no Ethernet header
        assert!(!wanted(&pats, &tun));
    }

    #[test]
    fn lists_this_machines_interfaces() {
        let all = list().unwrap();
        let lo = all.iter().find(|i| i.name == "lo").expect("lo");
        assert!(lo.has_ethernet_header());
    }
}

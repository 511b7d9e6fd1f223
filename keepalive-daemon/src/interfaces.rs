//! Which interfaces to watch: --interface globs, or every interface that is up.

use std::path::Path;

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Interface {
    pub name: String,
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
    #[error("cannot list network interfaces in {path}: {source}")]
    List { path: String, source: std::io::Error },
    #[error("interface {name} does not exist (see `ip link`)")]
    Missing { name: String },
    #[error("invalid --interface pattern {pattern:?}: {source}")]
    Pattern { pattern: String, source: glob::PatternError },
}

pub fn list(sys_class_net: &Path) -> Result<Vec<Interface>, InterfaceError> {
    let err = |source| InterfaceError::List { path: sys_class_net.display().to_string(), source };
    let mut out = Vec::new();
    for entry in std::fs::read_dir(sys_class_net).map_err(err)? {
        let dir = entry.map_err(err)?.path();
        let Some(name) = dir.file_name().and_then(|n| n.to_str()).map(str::to_owned) else {
            continue;
        };
        let read_num = |file: &str, radix| {
            std::fs::read_to_string(dir.join(file))
                .ok()
                .and_then(|s| u32::from_str_radix(s.trim().trim_start_matches("0x"), radix).ok())
        };
        let flags = read_num("flags", 16).unwrap_or(0);
        let link_type = read_num("type", 10).unwrap_or(0);
        out.push(Interface { name, up: flags & IFF_UP != 0, link_type });
    }
    out.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(out)
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
        let compiled = glob::Pattern::new(pattern)
            .map_err(|source| InterfaceError::Pattern { pattern: pattern.clone(), source })?;
        let matched: Vec<&Interface> = all.iter().filter(|i| compiled.matches(&i.name)).collect();
        if matched.is_empty() {
            if !is_glob {
                return Err(InterfaceError::Missing { name: pattern.clone() });
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

#[cfg(test)]
mod tests {
    use super::*;

    fn iface(name: &str, up: bool) -> Interface {
        Interface { name: name.into(), up, link_type: ARPHRD_ETHER }
    }

    #[test]
    fn default_is_every_interface_that_is_up() {
        let all = [iface("eth0", true), iface("eth1", false), iface("lo", true)];
        let names: Vec<_> = select(&all, &[]).unwrap().into_iter().map(|i| i.name).collect();
        assert_eq!(names, ["eth0", "lo"]);
    }

    #[test]
    fn globs_match_down_interfaces_too_without_duplicates() {
        let all = [iface("veth1", false), iface("veth2", true), iface("eth0", true)];
        let pats = ["veth*".to_string(), "veth2".to_string()];
        let names: Vec<_> = select(&all, &pats).unwrap().into_iter().map(|i| i.name).collect();
        assert_eq!(names, ["veth1", "veth2"]);
    }

    #[test]
    fn a_missing_literal_name_is_an_error_an_empty_glob_is_not() {
        let all = [iface("eth0", true)];
        assert!(matches!(select(&all, &["eth9".into()]), Err(InterfaceError::Missing { .. })));
        assert!(select(&all, &["wg*".into()]).unwrap().is_empty());
        assert!(matches!(select(&all, &["[".into()]), Err(InterfaceError::Pattern { .. })));
    }

    #[test]
    fn lists_this_machines_interfaces() {
        let all = list(Path::new("/sys/class/net")).unwrap();
        let lo = all.iter().find(|i| i.name == "lo").expect("lo");
        assert!(lo.has_ethernet_header());
    }
}

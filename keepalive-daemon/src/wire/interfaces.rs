//! Which interfaces to watch: --interface globs, or every interface that is up. The
//! list comes from an RTM_GETLINK dump (netlink-packet-route), the same rtnetlink the
//! link watcher follows; rtnetlink answers for this process's network namespace (sysfs
//! would show the namespace it was mounted in, which differs under `nsenter --net`).

use netlink_packet_core::{
    NLM_F_DUMP, NLM_F_REQUEST, NetlinkHeader, NetlinkMessage, NetlinkPayload,
};
use netlink_packet_route::{
    RouteNetlinkMessage,
    link::{LinkAttribute, LinkFlags, LinkMessage},
};
use netlink_sys::{Socket, SocketAddr, protocols::NETLINK_ROUTE};

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Interface {
    pub name: String,
    /// Kernel interface index (a re-created interface gets a new one).
    pub index: u32,
    pub up: bool,
    /// ARPHRD_* link type (ifinfomsg's ifi_type).
    pub link_type: u32,
}

const ARPHRD_ETHER: u32 = 1;
const ARPHRD_LOOPBACK: u32 = 772;
/// A dump sends at least one link per datagram; far more datagrams than any host has
/// interfaces means the kernel's answer is not a dump.
const MAX_DUMP_DATAGRAMS: usize = 1 << 20;

impl Interface {
    /// The kernel programs parse frames that start with an Ethernet header: Ethernet-
    /// like devices (veth, bridges, bonds, NICs) and loopback.
    pub fn has_ethernet_header(&self) -> bool {
        matches!(self.link_type, ARPHRD_ETHER | ARPHRD_LOOPBACK)
    }

    fn from_message(link: &LinkMessage) -> Option<Interface> {
        let name = link.attributes.iter().find_map(|a| match a {
            LinkAttribute::IfName(n) => Some(n.clone()),
            _ => None,
        })?;
        Some(Interface {
            name,
            index: link.header.index,
            up: link.header.flags.contains(LinkFlags::Up),
            link_type: u16::from(link.header.link_layer_type).into(),
        })
    }
}

#[derive(Debug, thiserror::Error)]
pub enum InterfaceError {
    #[error("cannot list network interfaces: {source}")]
    List { source: std::io::Error },
    #[error("cannot list network interfaces: undecodable rtnetlink answer: {source}")]
    Decode {
        source: netlink_packet_core::DecodeError,
    },
    #[error("interface {name} does not exist (see `ip link`)")]
    Missing { name: String },
    #[error("invalid --interface pattern {pattern:?}: {source}")]
    Pattern {
        pattern: String,
        source: glob::PatternError,
    },
}

fn list_error(source: std::io::Error) -> InterfaceError {
    InterfaceError::List { source }
}

/// Interfaces of this process's network namespace, sorted by name.
pub fn list() -> Result<Vec<Interface>, InterfaceError> {
    let mut socket = Socket::new(NETLINK_ROUTE).map_err(list_error)?;
    socket.bind_auto().map_err(list_error)?;
    socket.connect(&SocketAddr::new(0, 0)).map_err(list_error)?;
    let mut request = NetlinkMessage::new(
        NetlinkHeader::default(),
        NetlinkPayload::from(RouteNetlinkMessage::GetLink(LinkMessage::default())),
    );
    request.header.flags = NLM_F_DUMP | NLM_F_REQUEST;
    request.header.sequence_number = 1;
    request.finalize();
    let mut buf = vec![0; request.buffer_len()];
    request.serialize(&mut buf);
    socket.send(&buf, 0).map_err(list_error)?;
    let mut out = Vec::new();
    for _ in 0..MAX_DUMP_DATAGRAMS {
        let (datagram, _) = socket.recv_from_full().map_err(list_error)?;
        if parse_dump(&datagram, &mut out)? {
            out.sort_by(|a, b| a.name.cmp(&b.name));
            return Ok(out);
        }
    }
    Err(list_error(std::io::Error::other(
        "the RTM_GETLINK dump did not end",
    )))
}

/// Adds the links of one datagram of an RTM_GETLINK dump to `out`; true once the dump
/// is done (NLMSG_DONE).
fn parse_dump(mut datagram: &[u8], out: &mut Vec<Interface>) -> Result<bool, InterfaceError> {
    while !datagram.is_empty() {
        let msg: NetlinkMessage<RouteNetlinkMessage> = NetlinkMessage::deserialize(datagram)
            .map_err(|source| InterfaceError::Decode { source })?;
        match msg.payload {
            NetlinkPayload::Done(_) => return Ok(true),
            NetlinkPayload::Error(e) => return Err(list_error(e.to_io())),
            NetlinkPayload::InnerMessage(RouteNetlinkMessage::NewLink(link)) => {
                out.extend(Interface::from_message(&link));
            }
            _ => {}
        }
        // Messages are 4-byte aligned; a zero length would never advance.
        let len = (msg.header.length as usize + 3) & !3;
        if len == 0 || len > datagram.len() {
            break;
        }
        datagram = &datagram[len..];
    }
    Ok(false)
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

    /// One datagram of a dump: RTM_NEWLINK messages, then NLMSG_DONE if `done`.
    fn dump(links: &[(u32, &str, bool, u16)], done: bool) -> Vec<u8> {
        let mut out = Vec::new();
        let mut push = |payload| {
            let mut m = NetlinkMessage::new(NetlinkHeader::default(), payload);
            m.header.flags = netlink_packet_core::NLM_F_MULTIPART;
            m.finalize();
            let mut b = vec![0; m.buffer_len()];
            m.serialize(&mut b);
            out.extend(b);
        };
        for &(index, name, up, link_type) in links {
            let mut link = LinkMessage::default();
            link.header.index = index;
            link.header.link_layer_type = link_type.into();
            if up {
                link.header.flags = LinkFlags::Up;
            }
            link.attributes.push(LinkAttribute::IfName(name.into()));
            push(NetlinkPayload::from(RouteNetlinkMessage::NewLink(link)));
        }
        if done {
            push(NetlinkPayload::Done(Default::default()));
        }
        out
    }

    #[test]
    fn dumps_parse_into_names_indexes_states_and_types() {
        let mut out = Vec::new();
        let first = dump(&[(1, "lo", true, 772), (7, "veth1", false, 1)], false);
        assert!(!parse_dump(&first, &mut out).unwrap());
        let last = dump(&[(9, "tun0", true, 65534)], true);
        assert!(parse_dump(&last, &mut out).unwrap());
        let want = [
            (1, "lo", true, 772),
            (7, "veth1", false, 1),
            (9, "tun0", true, 65534),
        ];
        let got: Vec<_> = out
            .iter()
            .map(|i| (i.index, i.name.as_str(), i.up, i.link_type))
            .collect();
        assert_eq!(got, want);
        assert!(out[0].has_ethernet_header() && out[1].has_ethernet_header());
        assert!(!out[2].has_ethernet_header());
        // A truncated datagram is an error, not a panic nor a silent short list.
        assert!(parse_dump(&first[..first.len() - 3], &mut Vec::new()).is_err());
    }

    #[test]
    fn lists_this_machines_interfaces() {
        let all = list().unwrap();
        let lo = all.iter().find(|i| i.name == "lo").expect("lo");
        assert!(lo.has_ethernet_header());
    }
}

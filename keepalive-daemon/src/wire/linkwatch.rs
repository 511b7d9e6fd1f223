//! Link events from rtnetlink (RTMGRP_LINK): interfaces that appear, change or go away
//! while the daemon runs (container veths), so they are attached or forgotten without
//! a restart. Parsing is a pure function over the received bytes.

use std::os::fd::{AsRawFd as _, FromRawFd as _, OwnedFd};

use tokio::io::unix::AsyncFd;

/// include/uapi/linux/rtnetlink.h
const RTM_NEWLINK: u16 = 16;
const RTM_DELLINK: u16 = 17;
const RTMGRP_LINK: u32 = 1;
/// include/uapi/linux/if_link.h
const IFLA_IFNAME: u16 = 3;
const IFF_UP: u32 = 1;
const NLMSG_HDRLEN: usize = 16;
/// struct ifinfomsg: family, pad, type (u16), index (i32), flags, change (u32).
const IFINFOMSG_LEN: usize = 16;

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum LinkEvent {
    /// A link was added or changed (flags, name).
    New {
        index: u32,
        name: String,
        up: bool,
        link_type: u32,
    },
    Deleted {
        index: u32,
        name: String,
    },
    /// The kernel dropped events (ENOBUFS): the caller re-reads the interface list.
    Overrun,
}

/// A NETLINK_ROUTE socket subscribed to link events.
pub struct LinkWatch {
    fd: AsyncFd<OwnedFd>,
    buf: Vec<u8>,
}

impl LinkWatch {
    /// Subscribes; call before listing interfaces, so nothing falls between the two.
    pub fn open() -> std::io::Result<LinkWatch> {
        // SAFETY: plain socket(2) call; the fd is wrapped in OwnedFd right away.
        let fd = unsafe {
            libc::socket(
                libc::AF_NETLINK,
                libc::SOCK_RAW | libc::SOCK_NONBLOCK | libc::SOCK_CLOEXEC,
                libc::NETLINK_ROUTE,
            )
        };
        if fd < 0 {
            return Err(std::io::Error::last_os_error());
        }
        // SAFETY: fd is a fresh, valid descriptor owned by nothing else.
        let fd = unsafe { OwnedFd::from_raw_fd(fd) };
        // SAFETY: sockaddr_nl is plain data; all zeroes is valid before the fields are set.
        let mut addr: libc::sockaddr_nl = unsafe { std::mem::zeroed() };
        addr.nl_family = libc::AF_NETLINK as u16;
        addr.nl_groups = RTMGRP_LINK;
        // SAFETY: addr is a valid sockaddr_nl of the length given.
        let rc = unsafe {
            libc::bind(
                fd.as_raw_fd(),
                (&raw const addr).cast(),
                std::mem::size_of::<libc::sockaddr_nl>() as u32,
            )
        };
        if rc != 0 {
            return Err(std::io::Error::last_os_error());
        }
        // SAFETY: `fd` is an open descriptor that the AsyncFd owns from here on (an
        // OwnedFd always returns the same raw fd and closes it only when dropped).
        let fd = unsafe { AsyncFd::register(fd) }.map_err(|e| e.into_parts().1)?;
        Ok(LinkWatch {
            fd,
            buf: vec![0; 64 * 1024],
        })
    }

    /// The next batch of events (waits for one).
    pub async fn next(&mut self) -> std::io::Result<Vec<LinkEvent>> {
        loop {
            let mut guard = self.fd.readable().await?;
            let buf = &mut self.buf;
            let res = guard.try_io(|fd| {
                // SAFETY: buf is valid for writes of buf.len() bytes.
                let n =
                    unsafe { libc::recv(fd.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len(), 0) };
                if n < 0 {
                    Err(std::io::Error::last_os_error())
                } else {
                    Ok(n as usize)
                }
            });
            match res {
                Ok(Ok(n)) => return Ok(parse(&self.buf[..n])),
                Ok(Err(e)) if e.raw_os_error() == Some(libc::ENOBUFS) => {
                    return Ok(vec![LinkEvent::Overrun]);
                }
                Ok(Err(e)) => return Err(e),
                Err(_would_block) => continue,
            }
        }
    }
}

fn u16_at(b: &[u8], at: usize) -> Option<u16> {
    Some(u16::from_ne_bytes(b.get(at..at + 2)?.try_into().ok()?))
}

fn u32_at(b: &[u8], at: usize) -> Option<u32> {
    Some(u32::from_ne_bytes(b.get(at..at + 4)?.try_into().ok()?))
}

/// The link events in one datagram; anything truncated or malformed ends the parse
/// (what was complete before it is kept).
pub fn parse(buf: &[u8]) -> Vec<LinkEvent> {
    let mut out = Vec::new();
    let mut at = 0;
    while let (Some(len), Some(kind)) = (u32_at(buf, at), u16_at(buf, at + 4)) {
        let len = len as usize;
        if len < NLMSG_HDRLEN || at + len > buf.len() {
            break;
        }
        let msg = &buf[at + NLMSG_HDRLEN..at + len];
        if matches!(kind, RTM_NEWLINK | RTM_DELLINK)
            && let Some(ev) = link_event(kind, msg)
        {
            out.push(ev);
        }
        at += (len + 3) & !3;
    }
    out
}

fn link_event(kind: u16, msg: &[u8]) -> Option<LinkEvent> {
    if msg.len() < IFINFOMSG_LEN {
        return None;
    }
    let link_type = u32::from(u16_at(msg, 2)?);
    let index = u32_at(msg, 4)?;
    let flags = u32_at(msg, 8)?;
    let mut name = None;
    let mut at = IFINFOMSG_LEN;
    while let (Some(len), Some(ty)) = (u16_at(msg, at), u16_at(msg, at + 2)) {
        let len = len as usize;
        if len < 4 || at + len > msg.len() {
            break;
        }
        if ty == IFLA_IFNAME {
            let raw = &msg[at + 4..at + len];
            let end = raw.iter().position(|&b| b == 0).unwrap_or(raw.len());
            name = Some(String::from_utf8_lossy(&raw[..end]).into_owned());
        }
        at += (len + 3) & !3;
    }
    let name = name?;
    Some(match kind {
        RTM_NEWLINK => LinkEvent::New {
            index,
            name,
            up: flags & IFF_UP != 0,
            link_type,
        },
        _ => LinkEvent::Deleted { index, name },
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// One RTM_*LINK message: ifinfomsg and an IFLA_IFNAME attribute.
    fn message(kind: u16, index: u32, flags: u32, name: &str) -> Vec<u8> {
        let mut attr = Vec::new();
        let alen = 4 + name.len() + 1;
        attr.extend_from_slice(&(alen as u16).to_ne_bytes());
        attr.extend_from_slice(&IFLA_IFNAME.to_ne_bytes());
        attr.extend_from_slice(name.as_bytes());
        attr.push(0);
        while attr.len() % 4 != 0 {
            attr.push(0);
        }
        let mut body = vec![0u8, 0];
        body.extend_from_slice(&1u16.to_ne_bytes()); // ARPHRD_ETHER
        body.extend_from_slice(&index.to_ne_bytes());
        body.extend_from_slice(&flags.to_ne_bytes());
        body.extend_from_slice(&0u32.to_ne_bytes());
        body.extend_from_slice(&attr);
        let mut m = Vec::new();
        m.extend_from_slice(&((NLMSG_HDRLEN + body.len()) as u32).to_ne_bytes());
        m.extend_from_slice(&kind.to_ne_bytes());
        m.extend_from_slice(&[0; 10]);
        m.extend_from_slice(&body);
        m
    }

    #[test]
    fn new_and_deleted_links_parse() {
        let mut buf = message(RTM_NEWLINK, 7, IFF_UP, "veth1");
        buf.extend(message(RTM_DELLINK, 8, 0, "veth22"));
        assert_eq!(
            parse(&buf),
            [
                LinkEvent::New {
                    index: 7,
                    name: "veth1".into(),
                    up: true,
                    link_type: 1
                },
                LinkEvent::Deleted {
                    index: 8,
                    name: "veth22".into()
                },
            ]
        );
    }

    #[test]
    fn truncated_and_garbage_input_never_panics() {
        let good = message(RTM_NEWLINK, 7, 0, "eth0");
        for cut in 0..good.len() {
            let evs = parse(&good[..cut]);
            assert!(evs.is_empty(), "cut at {cut}: {evs:?}");
        }
        let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
        for _ in 0..2000 {
            let n = (x % 97) as usize;
            let junk: Vec<u8> = (0..n)
                .map(|_| {
                    x ^= x << 13;
                    x ^= x >> 7;
                    x ^= x << 17;
                    x as u8
                })
                .collect();
            let _ = parse(&junk);
        }
        // Other message types are skipped, later link messages still read.
        let mut buf = message(24, 1, 0, "x"); // RTM_NEWROUTE-ish
        buf.extend(message(RTM_NEWLINK, 3, 0, "eth1"));
        assert_eq!(parse(&buf).len(), 1);
    }
}

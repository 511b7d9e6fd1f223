//! Replays captured frames onto a veth pair, each frame from the end that sent it.
//!
//! Frames of the "local" end are written to an AF_PACKET socket bound to A's veth:
//! they leave through A's tc egress (the daemon's `sent`). Frames of the "remote" end
//! are written to an AF_PACKET socket bound to B's veth, in namespace B: they arrive
//! through A's tc ingress (`received`). Their destination MAC address is neither
//! veth's, so both stacks drop them as PACKET_OTHERHOST after tc: nothing answers.
//!
//! Order is preserved: one thread pinned to one CPU writes every frame; a write on B's
//! veth is processed by A's ingress in the softirq run when the write returns, and a
//! short pause after it leaves room for a deferred softirq. The veth packet counters
//! before and after prove that nothing was dropped (see [`LinkStats`]).

use std::io;
use std::mem;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::time::{Duration, Instant};

use crate::corpus::Origin;
use crate::netns::Netns;

/// An AF_PACKET raw socket bound to one interface, for writing whole frames.
#[derive(Debug)]
pub struct PacketSocket {
    fd: OwnedFd,
    ifindex: i32,
    ifname: String,
}

impl PacketSocket {
    /// Opens the socket inside `ns`. Protocol 0: it receives nothing.
    pub fn open(ns: &Netns, ifname: &str) -> PacketSocket {
        let name = ifname.to_owned();
        ns.run_in(move || {
            let cname = std::ffi::CString::new(name.clone()).expect("interface name");
            // SAFETY: if_nametoindex reads a NUL-terminated string.
            let ifindex = unsafe { libc::if_nametoindex(cname.as_ptr()) } as i32;
            assert!(
                ifindex > 0,
                "no interface {name}: {}",
                io::Error::last_os_error()
            );
            // SAFETY: plain socket(2).
            let raw =
                unsafe { libc::socket(libc::AF_PACKET, libc::SOCK_RAW | libc::SOCK_CLOEXEC, 0) };
            assert!(
                raw >= 0,
                "socket(AF_PACKET): {}",
                io::Error::last_os_error()
            );
            // SAFETY: `raw` is a fresh descriptor we own.
            let fd = unsafe { OwnedFd::from_raw_fd(raw) };
            let addr = sockaddr(ifindex, &[0; 6]);
            // SAFETY: bind(2) with a sockaddr_ll of the right size.
            let rc = unsafe {
                libc::bind(
                    fd.as_raw_fd(),
                    (&raw const addr).cast(),
                    mem::size_of::<libc::sockaddr_ll>() as libc::socklen_t,
                )
            };
            assert!(
                rc == 0,
                "bind(AF_PACKET, {name}): {}",
                io::Error::last_os_error()
            );
            PacketSocket {
                fd,
                ifindex,
                ifname: name,
            }
        })
    }

    /// Writes one whole Ethernet frame.
    pub fn send(&self, frame: &[u8]) -> io::Result<()> {
        let mut dst = [0u8; 6];
        dst.copy_from_slice(&frame[..6]);
        let addr = sockaddr(self.ifindex, &dst);
        // SAFETY: sendto(2) from a live buffer to a sockaddr_ll of the right size.
        let n = unsafe {
            libc::sendto(
                self.fd.as_raw_fd(),
                frame.as_ptr().cast(),
                frame.len(),
                0,
                (&raw const addr).cast(),
                mem::size_of::<libc::sockaddr_ll>() as libc::socklen_t,
            )
        };
        if n < 0 {
            return Err(io::Error::last_os_error());
        }
        if n as usize != frame.len() {
            return Err(io::Error::other(format!(
                "short write on {}: {n} of {}",
                self.ifname,
                frame.len()
            )));
        }
        Ok(())
    }
}

fn sockaddr(ifindex: i32, mac: &[u8; 6]) -> libc::sockaddr_ll {
    // SAFETY: sockaddr_ll is plain data; all zeroes is a valid value.
    let mut addr: libc::sockaddr_ll = unsafe { mem::zeroed() };
    addr.sll_family = libc::AF_PACKET as u16;
    addr.sll_protocol = 0; // taken from the frame's Ethernet header
    addr.sll_ifindex = ifindex;
    addr.sll_halen = 6;
    addr.sll_addr[..6].copy_from_slice(mac);
    addr
}

/// Packet counters of one interface (from /proc/net/dev of its namespace).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct LinkStats {
    pub rx_packets: u64,
    pub rx_dropped: u64,
    pub tx_packets: u64,
    pub tx_dropped: u64,
}

impl LinkStats {
    pub fn read(ns: &Netns, ifname: &str) -> LinkStats {
        let text = ns
            .run_in(|| std::fs::read_to_string("/proc/thread-self/net/dev"))
            .unwrap_or_else(|e| panic!("reading /proc/net/dev in {}: {e}", ns.name()));
        parse_net_dev(&text, ifname)
            .unwrap_or_else(|| panic!("no {ifname} in /proc/net/dev of {}:\n{text}", ns.name()))
    }

    /// `self - before`, field by field.
    pub fn since(&self, before: &LinkStats) -> LinkStats {
        LinkStats {
            rx_packets: self.rx_packets - before.rx_packets,
            rx_dropped: self.rx_dropped - before.rx_dropped,
            tx_packets: self.tx_packets - before.tx_packets,
            tx_dropped: self.tx_dropped - before.tx_dropped,
        }
    }
}

/// `face: rx bytes packets errs drop fifo frame compressed multicast | tx bytes
/// packets errs drop ...`
pub fn parse_net_dev(text: &str, ifname: &str) -> Option<LinkStats> {
    text.lines().find_map(|line| {
        let (name, rest) = line.split_once(':')?;
        (name.trim() == ifname).then_some(())?;
        let v: Vec<u64> = rest
            .split_whitespace()
            .map(|f| f.parse().ok())
            .collect::<Option<_>>()?;
        (v.len() >= 12).then(|| LinkStats {
            rx_packets: v[1],
            rx_dropped: v[3],
            tx_packets: v[9],
            tx_dropped: v[11],
        })
    })
}

/// What a replay wrote.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Replayed {
    pub local: u64,
    pub remote: u64,
    pub elapsed: Duration,
}

/// Pause after a frame written on the remote end's veth (see the module doc).
pub const REMOTE_PAUSE: Duration = Duration::from_micros(40);

/// Writes `frames` in order, each through the socket of the end that sent it.
pub fn replay<'a>(
    frames: impl IntoIterator<Item = (Origin, &'a [u8])> + Send,
    local: &PacketSocket,
    remote: &PacketSocket,
) -> io::Result<Replayed> {
    std::thread::scope(|scope| {
        scope
            .spawn(move || {
                pin_to_current_cpu()?;
                let start = Instant::now();
                let mut done = Replayed::default();
                for (origin, frame) in frames {
                    match origin {
                        Origin::Local => {
                            local.send(frame)?;
                            done.local += 1;
                        }
                        Origin::Remote => {
                            remote.send(frame)?;
                            done.remote += 1;
                            spin(REMOTE_PAUSE);
                        }
                    }
                }
                done.elapsed = start.elapsed();
                Ok(done)
            })
            .join()
            .expect("replay thread panicked")
    })
}

/// Pins the calling thread to the CPU it runs on, so every frame goes through the same
/// per-CPU backlog queue in order.
fn pin_to_current_cpu() -> io::Result<()> {
    // SAFETY: sched_getcpu has no preconditions.
    let cpu = unsafe { libc::sched_getcpu() };
    if cpu < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: cpu_set_t is plain data; CPU_SET writes inside it; sched_setaffinity
    // reads a set of the size given, for the calling thread (pid 0).
    unsafe {
        let mut set: libc::cpu_set_t = mem::zeroed();
        libc::CPU_SET(cpu as usize, &mut set);
        if libc::sched_setaffinity(0, mem::size_of::<libc::cpu_set_t>(), &set) != 0 {
            return Err(io::Error::last_os_error());
        }
    }
    Ok(())
}

/// Sleeps for `d`, yielding the CPU (so a deferred softirq thread can run).
fn spin(d: Duration) {
    let end = Instant::now() + d;
    while Instant::now() < end {
        std::thread::yield_now();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_proc_net_dev() {
        let text = "Inter-|   Receive                                                |  Transmit\n \
                    face |bytes    packets errs drop fifo frame compressed multicast|bytes    packets errs drop fifo colls carrier compressed\n    \
                    lo:       0       0    0    0    0     0          0         0        0       0    0    0    0     0       0          0\n\
                    kat1a: 1000 12 0 3 0 0 0 0 2000 34 0 5 0 0 0 0\n";
        assert_eq!(
            parse_net_dev(text, "kat1a"),
            Some(LinkStats {
                rx_packets: 12,
                rx_dropped: 3,
                tx_packets: 34,
                tx_dropped: 5
            })
        );
        assert_eq!(parse_net_dev(text, "kat1"), None);
    }
}

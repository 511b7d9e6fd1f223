//! The contract between the kernel programs and the daemon.
//!
//! Everything that crosses a map or a global is `#[repr(C)]`, `Copy` and free of hidden
//! padding (checked by the size asserts next to each type). The wire classification is
//! written as pure functions over [`packet::Packet`] so the host unit tests exercise the
//! same code the kernel runs.
#![cfg_attr(not(any(feature = "user", test)), no_std)]
#![cfg_attr(
    not(test),
    deny(clippy::panic, clippy::unwrap_used, clippy::expect_used)
)]

pub mod audit;
pub mod audit_config;
#[cfg(test)]
mod audit_tests;
pub mod classify;
#[cfg(test)]
mod classify_props;
pub mod counters;
pub mod flow;
pub mod packet;
pub mod ports;
pub mod seq;
pub mod sockhook;
#[cfg(test)]
mod testframes;

/// Which way a segment travels relative to this host.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u32)]
pub enum Direction {
    /// Leaving this host (tc egress).
    Sent = 0,
    /// Arriving at this host (tc ingress).
    Received = 1,
}

impl Direction {
    pub const ALL: [Direction; 2] = [Direction::Sent, Direction::Received];

    #[inline(always)]
    pub const fn index(self) -> usize {
        self as usize
    }

    #[inline(always)]
    pub const fn opposite(self) -> Direction {
        match self {
            Direction::Sent => Direction::Received,
            Direction::Received => Direction::Sent,
        }
    }

    pub const fn label(self) -> &'static str {
        match self {
            Direction::Sent => "sent",
            Direction::Received => "received",
        }
    }
}

/// Address family of a connection.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u32)]
pub enum Family {
    Ipv4 = 0,
    Ipv6 = 1,
}

impl Family {
    pub const ALL: [Family; 2] = [Family::Ipv4, Family::Ipv6];

    #[inline(always)]
    pub const fn index(self) -> usize {
        self as usize
    }

    pub const fn label(self) -> &'static str {
        match self {
            Family::Ipv4 => "ipv4",
            Family::Ipv6 => "ipv6",
        }
    }

    /// From the kernel's `sa_family_t` (AF_INET = 2, AF_INET6 = 10).
    #[inline(always)]
    pub const fn from_af(af: u16) -> Option<Family> {
        match af {
            2 => Some(Family::Ipv4),
            10 => Some(Family::Ipv6),
            _ => None,
        }
    }
}

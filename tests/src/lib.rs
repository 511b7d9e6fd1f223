//! Harness for the root-only integration tests of `keepalive-daemon`.
//!
//! Each scenario builds two private network namespaces joined by a veth
//! pair: A (192.0.2.1, 2001:db8::1) runs the daemon attached to its end, B
//! (192.0.2.2, 2001:db8::2) is the peer. The daemon's metrics are compared
//! with oracles that do not depend on it: the kernel's own counters
//! (`nstat`), a capture (decoded by tshark, probes and answers matched by
//! [`answers`]; tshark's own TCP analysis where it is right), and the errors
//! the application sees on its sockets.
//!
//! Everything is torn down by `Drop` guards, in reverse order of creation,
//! even when a test fails: declare the namespaces first.

pub mod answers;
pub mod audit_kernel;
pub mod both_ends;
pub mod bpf;
pub mod bpf_syscall;
pub mod capture;
pub mod corpus;
pub mod daemon;
pub mod expect;
pub mod flow_fill;
pub mod idle_apps;
pub mod idle_scenario;
pub mod metrics;
pub mod middlebox;
pub mod netns;
pub mod port_listener;
pub mod process;
pub mod prometheus;
pub mod replay;
pub mod scale;
pub mod scenarios;
pub mod sockets;
pub mod tc_vlan_probe;
pub mod third_party;
pub mod timer_probes;
pub mod timing;

pub use capture::Capture;
pub use daemon::Daemon;
pub use metrics::Samples;
pub use netns::{Netns, VethPair};
pub use scenarios::{Observed, Setup, Side};
pub use sockets::{
    Conn, FAST_KEEPALIVE, Family, KeepaliveParams, ReadOutcome, disable_keepalive,
    enable_keepalive, open_connections, spawn_readers,
};

/// Panics unless running as root: the tests must never skip silently.
pub fn require_root() {
    // SAFETY: geteuid(2) cannot fail and has no side effects.
    let euid = unsafe { libc::geteuid() };
    assert!(
        euid == 0,
        "these tests need root; run them through `cargo xtask test` (euid is {euid})"
    );
}

/// Metric names (the daemon's contract), from the daemon's library.
pub use keepalive_daemon::metric_names as names;

/// `nstat` counter names used as oracles.
pub mod nstat {
    /// Keepalive probes sent by the keepalive timer.
    pub const KEEPALIVE: &str = "TcpExtTCPKeepAlive";
    /// Zero-window probes sent.
    pub const WIN_PROBE: &str = "TcpExtTCPWinProbe";
}

//! Every duration and bound the tests rely on, in one place.
//!
//! The keepalive settings are deliberately aggressive (probe after 1 s of
//! idleness, then every second, give up after 3 unanswered probes) so that a
//! whole scenario fits in a few seconds.

use std::time::Duration;

/// TCP_KEEPIDLE, in seconds.
pub const KEEPIDLE_SECS: u32 = 1;
/// TCP_KEEPINTVL, in seconds.
pub const KEEPINTVL_SECS: u32 = 1;
/// TCP_KEEPCNT.
pub const KEEPCNT: u32 = 3;

/// How long keepalive probing runs in the probe-counting scenario.
pub const PROBE_PHASE: Duration = Duration::from_secs(5);
/// Delay between enabling keepalive on A's and on B's ends. Both ends
/// otherwise start their timers together and probe in lockstep; then A's
/// probe overtakes A's answer to B's probe, and tshark labels that answer a
/// duplicate ACK instead of a keep-alive ACK. Half an interval apart, every
/// probe/answer pair is unambiguous.
pub const KEEPALIVE_STAGGER: Duration = Duration::from_millis(500);
/// Quiet time after the last event before counters are compared, so that
/// in-flight answers are seen and accounted for everywhere.
pub const SETTLE: Duration = Duration::from_millis(500);

/// Upper bound for a blocked reader waiting for the kernel to kill its
/// connection (SO_RCVTIMEO). Keepalive gives up after roughly
/// KEEPIDLE + KEEPCNT * KEEPINTVL = 4-5 s, so this is generous.
pub const READ_TIMEOUT: Duration = Duration::from_secs(15);

/// How long the sender waits once the receiver's window is closed, so that
/// its kernel sends a few zero-window probes (RTO backoff: 0.2, 0.4, 0.8, 1.6 s...).
pub const ZERO_WINDOW_WAIT: Duration = Duration::from_secs(4);
/// Bound on filling a socket's send path until the peer's window is closed.
pub const FILL_TIMEOUT: Duration = Duration::from_secs(10);
/// Pause between two attempts at filling the send path.
pub const FILL_ROUND_PAUSE: Duration = Duration::from_millis(100);
/// Bound on the number of bytes written while filling the send path.
pub const FILL_MAX_BYTES: usize = 512 << 20;

/// Daemon readiness: poll /metrics until it reports `keepalive_daemon_up 1`.
pub const DAEMON_READY_TIMEOUT: Duration = Duration::from_secs(30);
pub const DAEMON_POLL_INTERVAL: Duration = Duration::from_millis(100);
/// Time the daemon gets to exit after SIGTERM.
pub const DAEMON_TERM_TIMEOUT: Duration = Duration::from_secs(10);
/// Port the daemon listens on inside its (private) namespace's loopback.
pub const DAEMON_PORT: u16 = 10291;
/// Connect/read/write timeout of the tiny HTTP client.
pub const HTTP_TIMEOUT: Duration = Duration::from_secs(5);
/// Bound on the size of a /metrics response.
pub const HTTP_MAX_BYTES: u64 = 16 << 20;

/// Bound on waiting for tshark to report "Capturing on".
pub const CAPTURE_START_TIMEOUT: Duration = Duration::from_secs(15);
/// Extra pause after tshark reported it is capturing.
pub const CAPTURE_WARMUP: Duration = Duration::from_millis(300);
/// Time tshark gets to flush and exit after SIGINT.
pub const CAPTURE_STOP_TIMEOUT: Duration = Duration::from_secs(10);

/// Bound on any helper command (ip, nft, nstat, bpftool, tshark -r...).
pub const COMMAND_TIMEOUT: Duration = Duration::from_secs(30);
/// Client connect timeout, attempts and pause between attempts (the veth
/// pair may need a moment to get carrier).
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);
pub const CONNECT_ATTEMPTS: u32 = 10;
pub const CONNECT_RETRY_PAUSE: Duration = Duration::from_millis(200);
/// Bound on accepting the server side of the connections.
pub const ACCEPT_TIMEOUT: Duration = Duration::from_secs(5);
/// Bound on the one-byte exchange that primes each connection.
pub const EXCHANGE_TIMEOUT: Duration = Duration::from_secs(5);
/// Polling period of every bounded wait loop.
pub const POLL_INTERVAL: Duration = Duration::from_millis(20);

/// Bound on the kernel releasing BPF programs and links after the daemon
/// exited (part of the release is deferred to workqueues and RCU).
pub const BPF_RELEASE_TIMEOUT: Duration = Duration::from_secs(5);
/// Bound on the receiver draining what the sender queued (zero-window scenario).
pub const DRAIN_TIMEOUT: Duration = Duration::from_secs(10);

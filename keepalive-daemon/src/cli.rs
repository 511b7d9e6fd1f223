//! Command-line flags (names follow node_exporter's where they overlap).

use std::{
    net::{SocketAddr, ToSocketAddrs as _},
    path::PathBuf,
};

use clap::Parser;

/// Makes TCP keepalives visible: counts keepalive probes sent and received, their
/// answers, and the connections keepalive reset, with eBPF, and serves them as
/// Prometheus metrics. Runs as root (or with CAP_BPF, CAP_PERFMON and CAP_NET_ADMIN).
#[derive(Debug, Parser)]
#[command(name = "keepalive-daemon", version, about, long_about = None)]
pub struct Args {
    #[command(subcommand)]
    pub command: Option<Command>,

    /// Address to serve /metrics on; repeat for several. ":PORT" listens on every
    /// address (IPv6 and IPv4).
    #[arg(
        long = "web.listen-address",
        value_name = "[HOST]:PORT",
        default_value = ":10291"
    )]
    pub listen: Vec<String>,

    /// Most HTTP requests served at once, over all connections and endpoints
    /// (requests waiting for a password check included); more are answered 503 at
    /// once, not queued. 0: no limit. (node_exporter's flag and default.)
    #[arg(long = "web.max-requests", value_name = "N", default_value_t = 40)]
    pub max_requests: usize,

    /// Do not serve /connections (it answers 404 and the landing page does not link it),
    /// e.g. when nobody should see the per-connection table or walk the flow map.
    #[arg(long = "web.disable-connections")]
    pub disable_connections: bool,

    /// Web configuration (TLS, client certificates, basic auth, HTTP/2 and response
    /// headers): the YAML of Prometheus' exporter-toolkit, as written for node_exporter
    /// (tls_server_config, http_server_config, basic_auth_users). Certificate files are
    /// re-read when they change on disk.
    #[arg(long = "web.config.file", value_name = "PATH")]
    pub web_config_file: Option<PathBuf>,

    /// Interface to watch; repeat for several; shell globs allowed ("veth*").
    /// Default: every interface that is up. Followed at run time (rtnetlink): matching
    /// interfaces that appear later are attached, removed ones are forgotten.
    #[arg(long = "interface", value_name = "NAME|GLOB")]
    pub interfaces: Vec<String>,

    /// How the tc programs attach: tcx (kernel 6.6+; links the kernel drops with the
    /// process), netlink (clsact qdisc and cls_bpf filters, any kernel), or auto (tcx,
    /// else netlink).
    #[arg(
        long = "tc.attach-mode",
        value_name = "MODE",
        default_value = "auto",
        value_enum
    )]
    pub tc_attach_mode: TcAttachMode,

    /// Connections the kernel tracks at once (LRU map; 144 bytes of key and value each,
    /// plus the kernel's per-entry overhead).
    /// When full, the least recently active connection is evicted; totals are kept, and
    /// evictions are counted (keepalive_daemon_flow_map_evictions_total). About 208 bytes
    /// per connection in all: 1048576 connections take about 208 MiB.
    #[arg(long = "flows.max", value_name = "N", default_value_t = 65_536,
          value_parser = clap::value_parser!(u32).range(64..=16_777_216))]
    pub flows_max: u32,

    /// How often the daemon walks the flow map to drop closed connections and refresh
    /// keepalive_daemon_flow_map_entries (each walk costs about 0.5 µs of CPU per tracked
    /// connection plus about 3 ns per slot of --flows.max, off the thread that serves
    /// scrapes; keepalive_daemon_flow_map_sweep_cpu_seconds_total counts it), e.g. 60s, 5m.
    #[arg(long = "flows.sweep-interval", value_name = "DURATION", default_value = "60s",
          value_parser = parse_duration)]
    pub sweep_interval: std::time::Duration,

    /// Local port to export per-port series for (tcp_keepalive_port_*), e.g. the
    /// database port; repeat for several (at most 16). Ports only, never addresses.
    #[arg(long = "metrics.local-port", value_name = "PORT")]
    pub local_ports: Vec<u16>,

    /// Count socket-level events (timer probes, timeouts) of every network namespace,
    /// not only the daemon's own. The wire counters always cover the watched interfaces.
    #[arg(long = "socket.all-namespaces")]
    pub all_namespaces: bool,

    /// Hook mechanism not to use for the socket-level hooks (timer probes, timeouts, the
    /// audit's idle deaths); repeat for several. Each hook then takes the next one it can get, in the order
    /// fentry, kprobe, tracepoint, tracepoint_timer_context, e.g. to keep away from
    /// fentry trampolines that another tool relies on.
    #[arg(long = "hooks.disable", value_name = "MECHANISM", value_enum)]
    pub hooks_disable: Vec<HookMechanism>,

    /// Kernel BTF, for struct offsets (there is no CO-RE in Rust eBPF).
    #[arg(
        long = "kernel.btf-path",
        value_name = "PATH",
        default_value = "/sys/kernel/btf/vmlinux"
    )]
    pub btf_path: PathBuf,

    /// Also attach an empty tc program to the same hooks, as the floor for per-packet
    /// cost (compare keepalive_daemon_program_run_seconds_total per run; needs
    /// kernel.bpf_stats_enabled=1): after ours (the default) or before them. The first
    /// program on a hook pays for the hook's first touches, so `cargo xtask bench`
    /// measures both orders.
    #[arg(
        long = "debug.baseline-program",
        value_name = "POSITION",
        num_args = 0..=1,
        default_missing_value = "after",
        value_enum
    )]
    pub baseline_program: Option<BaselinePosition>,

    /// Attach a floor of the wire programs instead of the real ones, for `cargo xtask
    /// bench`: `parse` only parses each frame, `lookup` also looks the connection up in
    /// the flow map; neither classifies nor counts, so the wire metrics stay at zero.
    /// Never on a production host.
    #[arg(long = "debug.wire-floor", value_name = "FLOOR", value_enum)]
    pub wire_floor: Option<WireFloor>,

    /// How often the keepalive audit lists the established TCP connections (their
    /// keepalive settings, idle time, cgroup) for tcp_keepalive_connections* and the
    /// connection view, e.g. 30s, 2m; at least 1s. With --socket.all-namespaces every
    /// network namespace of the host is listed.
    #[arg(long = "audit.interval", value_name = "DURATION", default_value = "30s",
          value_parser = crate::audit::settings::parse_interval)]
    pub audit_interval: std::time::Duration,

    /// Idle timeout of a middlebox on the path (NAT gateway, load balancer, firewall),
    /// in whole seconds, e.g. 240s (Azure), 350s (AWS), 20m (GCP Cloud NAT): a
    /// connection is at risk for it when keepalive is off or its first probe comes at or
    /// after it. Repeat for several (at most 8; given ones replace the defaults); one
    /// tcp_keepalive_connections_at_risk series each, labelled in seconds ("1200s").
    #[arg(long = "audit.idle-limit", value_name = "DURATION",
          default_values = ["240s", "350s"], value_parser = crate::audit::settings::parse_idle_limit)]
    pub audit_idle_limits: Vec<std::time::Duration>,

    /// A connection that fails (a reset received, or retransmissions given up) after
    /// being idle at least this long is an idle death
    /// (tcp_idle_connection_failures_total), e.g. 30s, 1m.
    #[arg(long = "audit.min-idle", value_name = "DURATION", default_value = "30s",
          value_parser = crate::audit::settings::parse_min_idle)]
    pub audit_min_idle: std::time::Duration,

    /// Turn the keepalive audit off: no inventory of connections, no idle-death hook
    /// (the --audit.* flags are then ignored).
    #[arg(long = "audit.disable")]
    pub audit_disable: bool,

    /// Log level: error, warn, info, debug or trace (RUST_LOG overrides).
    #[arg(long = "log.level", value_name = "LEVEL", default_value = "info")]
    pub log_level: log::LevelFilter,

    /// Kernel-side diagnostics (why a frame was judged truncated or malformed, failed
    /// kernel reads, failed flow inserts), forwarded to this log under the target
    /// "keepalive_ebpf": off, error, warn, info, debug or trace. Set at load time; at off
    /// the tc programs attached carry no logging code at all. The kernel error counters
    /// (keepalive_daemon_kernel_errors_total) count the same events at every level.
    #[arg(
        long = "log.kernel-level",
        value_name = "LEVEL",
        default_value = "off",
        value_enum
    )]
    pub kernel_log_level: KernelLogLevel,
}

/// Where --debug.baseline-program puts the empty program in each hook's chain.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum BaselinePosition {
    /// After our programs.
    After,
    /// Before our programs.
    Before,
}

/// --debug.wire-floor: how much of the per-packet path the attached programs do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum WireFloor {
    /// Parse the frame (the early exit included), nothing more.
    Parse,
    /// Parse, then look the connection up in the flow map (insert on a miss).
    Lookup,
}

/// --log.kernel-level, in aya-log's order (the kernel logs a record when its level's
/// number is at most this one's).
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum KernelLogLevel {
    Off = 0,
    Error = 1,
    Warn = 2,
    Info = 3,
    Debug = 4,
    Trace = 5,
}

impl KernelLogLevel {
    /// The value of aya-log's AYA_LOG_LEVEL global in the kernel programs.
    pub fn aya_level(self) -> u8 {
        self as u8
    }

    /// The daemon-side filter for the forwarded records.
    pub fn filter(self) -> log::LevelFilter {
        match self {
            KernelLogLevel::Off => log::LevelFilter::Off,
            KernelLogLevel::Error => log::LevelFilter::Error,
            KernelLogLevel::Warn => log::LevelFilter::Warn,
            KernelLogLevel::Info => log::LevelFilter::Info,
            KernelLogLevel::Debug => log::LevelFilter::Debug,
            KernelLogLevel::Trace => log::LevelFilter::Trace,
        }
    }
}

/// The `log` target of the kernel programs' records (set in keepalive-ebpf).
pub const KERNEL_LOG_TARGET: &str = "keepalive_ebpf";

/// --tc.attach-mode. (Plain comments on the variants: doc comments would change --help.)
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum TcAttachMode {
    // TCX, else clsact + netlink.
    Auto,
    // TCX only (kernel 6.6+).
    Tcx,
    // clsact qdisc and cls_bpf filters only.
    Netlink,
}

/// How a socket-level hook attaches (--hooks.disable; the `mechanism` label of
/// keepalive_daemon_hook_info).
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum HookMechanism {
    Fentry,
    Kprobe,
    Tracepoint,
    // tcp_keepalive_timer bracketed by timer tracepoints + sock:inet_sk_error_report.
    #[value(name = "tracepoint_timer_context")]
    TracepointTimerContext,
}

impl HookMechanism {
    pub fn label(self) -> &'static str {
        match self {
            HookMechanism::Fentry => "fentry",
            HookMechanism::Kprobe => "kprobe",
            HookMechanism::Tracepoint => "tracepoint",
            HookMechanism::TracepointTimerContext => "tracepoint_timer_context",
        }
    }
}

/// `N` followed by ms, s, m or h (`90s`, `5m`).
pub(crate) fn parse_duration(s: &str) -> Result<std::time::Duration, String> {
    let split = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
    let (n, unit) = s.split_at(split);
    let n: u64 = n
        .parse()
        .map_err(|_| format!("{s:?}: expected a number and a unit, e.g. 60s"))?;
    let d = match unit {
        "ms" => std::time::Duration::from_millis(n),
        "s" => std::time::Duration::from_secs(n),
        "m" => std::time::Duration::from_secs(n * 60),
        "h" => std::time::Duration::from_secs(n * 3600),
        _ => return Err(format!("{s:?}: unit must be ms, s, m or h")),
    };
    if d < std::time::Duration::from_millis(100) {
        return Err(format!("{s:?}: at least 100ms"));
    }
    Ok(d)
}

#[derive(Debug, clap::Subcommand)]
pub enum Command {
    /// Print the keepalive view of each tracked connection from a running daemon
    /// (GET /connections), most recently active first. Columns: SENT: keepalive probes
    /// this host sent; SENT_ANSWERED: those the peer answered; SENT_UNANSWERED: the
    /// current run of unanswered ones; RECEIVED: probes the peer sent; RECEIVED_ANSWERED:
    /// those this host answered; RECEIVED_UNANSWERED: the current run of unanswered
    /// ones; LAST_PROBE_S: seconds since the last probe either way (- if none); ENDED:
    /// open, closed, peer_reset, local_reset or timeout. From the keepalive audit's last
    /// inventory (- without one): KEEPALIVE: off, or on with its idle time (on:600s);
    /// IDLE_AGE_S: seconds since the last segment received; AT_RISK: the
    /// --audit.idle-limit values the connection is at risk for; REASON: keepalive_off
    /// or idle_at_or_above_limit; PROCESS: the process holding the socket, else its
    /// cgroup. Recent endings (keepalive timeouts, idle deaths) follow the table.
    Connections(ConnectionsArgs),
}

/// `keepalive-daemon connections`.
#[derive(Debug, clap::Args)]
pub struct ConnectionsArgs {
    /// The running daemon: a URL (http:// or https://; the path defaults to
    /// /connections) or HOST:PORT for plain HTTP.
    #[arg(
        long = "web.address",
        value_name = "URL|HOST:PORT",
        default_value = "127.0.0.1:10291"
    )]
    pub address: String,
    /// HTTP client configuration in Prometheus' YAML (as for promtool or a scrape
    /// job): tls_config (ca_file, cert_file, key_file, server_name,
    /// insecure_skip_verify) and basic_auth (username, password or password_file), for
    /// a daemon behind --web.config.file.
    #[arg(long = "http.config.file", value_name = "FILE")]
    pub http_config_file: Option<PathBuf>,
    /// Connections to ask for at most, most recently active first (before --probing).
    #[arg(long, default_value_t = 100)]
    pub limit: usize,
    /// Print the daemon's JSON (pretty) instead of the table.
    #[arg(long)]
    pub json: bool,
    /// Only connections with keepalive probes (sent or received).
    #[arg(long)]
    pub probing: bool,
    /// Only connections the keepalive audit has at risk for an --audit.idle-limit
    /// (keepalive off, or its idle time at or above the limit), longest idle first, with
    /// the limits and the reason; also those never seen on a watched interface.
    #[arg(long = "at-risk")]
    pub at_risk: bool,
}

#[derive(Debug, thiserror::Error)]
pub enum ListenAddressError {
    #[error(
        "invalid --web.listen-address {addr:?}: expected [HOST]:PORT, e.g. :10291 or 127.0.0.1:10291"
    )]
    Syntax { addr: String },
    #[error("cannot resolve --web.listen-address {addr:?}: {source}")]
    Resolve {
        addr: String,
        source: std::io::Error,
    },
}

/// A listen address: `:PORT` means every address.
#[derive(Debug, PartialEq, Eq)]
pub enum ListenAddress {
    Any(u16),
    Specific(SocketAddr),
}

pub fn parse_listen_address(addr: &str) -> Result<ListenAddress, ListenAddressError> {
    let syntax = || ListenAddressError::Syntax {
        addr: addr.to_owned(),
    };
    if let Some(port) = addr.strip_prefix(':') {
        return port.parse().map(ListenAddress::Any).map_err(|_| syntax());
    }
    if !addr.contains(':') {
        return Err(syntax());
    }
    addr.to_socket_addrs()
        .map_err(|source| ListenAddressError::Resolve {
            addr: addr.to_owned(),
            source,
        })?
        .next()
        .map(ListenAddress::Specific)
        .ok_or_else(syntax)
}

#[cfg(test)]
mod tests;

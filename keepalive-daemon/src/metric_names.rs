//! The names of the daemon's metric families: the contract with dashboards, alerts and
//! the tests, which import them from here instead of spelling them again.

// Keepalive traffic, counted in the kernel.
pub const PROBES: &str = "tcp_keepalive_probes_total";
pub const PROBE_ACKS: &str = "tcp_keepalive_probe_acks_total";
pub const RESETS: &str = "tcp_keepalive_resets_total";
pub const ZERO_WINDOW_PROBES: &str = "tcp_keepalive_zero_window_probes_total";
pub const TIMER_PROBES: &str = "tcp_keepalive_timer_probes_total";
pub const PORT_PROBES: &str = "tcp_keepalive_port_probes_total";
pub const PORT_PROBE_ACKS: &str = "tcp_keepalive_port_probe_acks_total";
pub const PORT_RESETS: &str = "tcp_keepalive_port_resets_total";

// The daemon itself.
pub const UP: &str = "keepalive_daemon_up";
pub const BUILD_INFO: &str = "keepalive_daemon_build_info";
pub const HOOK_INFO: &str = "keepalive_daemon_hook_info";
pub const TC_PROGRAMS_ATTACHED: &str = "keepalive_daemon_tc_programs_attached";
pub const INTERFACE_ATTACH_ERRORS: &str = "keepalive_daemon_interface_attach_errors_total";
pub const KERNEL_ERRORS: &str = "keepalive_daemon_kernel_errors_total";
pub const MAP_READ_ERRORS: &str = "keepalive_daemon_map_read_errors_total";
pub const TIMER_PROBES_LOST: &str = "keepalive_daemon_timer_probes_lost_total";
pub const FLOW_MAP_ENTRIES: &str = "keepalive_daemon_flow_map_entries";
pub const FLOW_MAP_CAPACITY: &str = "keepalive_daemon_flow_map_capacity";
pub const FLOW_MAP_EVICTIONS: &str = "keepalive_daemon_flow_map_evictions_total";
pub const FLOWS_CREATED: &str = "keepalive_daemon_flows_created_total";
pub const FLOWS_SWEPT: &str = "keepalive_daemon_flows_swept_total";
pub const PROGRAM_RUN_SECONDS: &str = "keepalive_daemon_program_run_seconds_total";
pub const PROGRAM_RUNS: &str = "keepalive_daemon_program_runs_total";
pub const BPF_STATS_ENABLED: &str = "keepalive_daemon_bpf_stats_enabled";

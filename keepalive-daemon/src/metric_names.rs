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
pub const FLOW_MAP_SWEEPS: &str = "keepalive_daemon_flow_map_sweeps_total";
pub const FLOW_MAP_SWEEP_CPU_SECONDS: &str = "keepalive_daemon_flow_map_sweep_cpu_seconds_total";
pub const FLOW_MAP_SWEEP_ENTRIES: &str = "keepalive_daemon_flow_map_sweep_entries_total";
pub const PROGRAM_RUN_SECONDS: &str = "keepalive_daemon_program_run_seconds_total";
pub const PROGRAM_RUNS: &str = "keepalive_daemon_program_runs_total";
pub const BPF_STATS_ENABLED: &str = "keepalive_daemon_bpf_stats_enabled";

// The keepalive audit: the inventory of established connections (iter/tcp) ...
pub const CONNECTIONS: &str = "tcp_keepalive_connections";
pub const CONNECTIONS_AT_RISK: &str = "tcp_keepalive_connections_at_risk";
pub const IDLE_SETTING_CONNECTIONS: &str = "tcp_keepalive_idle_setting_connections";
pub const PORT_CONNECTIONS: &str = "tcp_keepalive_port_connections";
pub const PORT_CONNECTIONS_AT_RISK: &str = "tcp_keepalive_port_connections_at_risk";
// ... and the connections that failed after being idle (socket hooks).
pub const IDLE_FAILURES: &str = "tcp_idle_connection_failures_total";
pub const IDLE_FAILURE_IDLE_SECONDS: &str = "tcp_idle_connection_failure_idle_seconds";

// The audit's own health.
pub const AUDIT_INVENTORY_ENABLED: &str = "keepalive_daemon_audit_inventory_enabled";
pub const AUDIT_RUNS: &str = "keepalive_daemon_audit_runs_total";
pub const AUDIT_ERRORS: &str = "keepalive_daemon_audit_errors_total";
pub const AUDIT_DURATION: &str = "keepalive_daemon_audit_duration_seconds";
pub const AUDIT_NAMESPACES: &str = "keepalive_daemon_audit_namespaces";
pub const ENDING_EVENTS_LOST: &str = "keepalive_daemon_ending_events_lost_total";

//! Prometheus-side checks of the daemon: a real Prometheus server run inside a
//! namespace and queried through its HTTP API ([`server`]), `promtool`
//! ([`promtool`]), the PromQL of the Grafana dashboard
//! (`dashboards/keepalive.json`, [`dashboard`]), and the small JSON parser
//! all of that needs ([`json`]).

use std::path::{Path, PathBuf};

pub mod dashboard;
pub mod json;
pub mod promtool;
pub mod server;

pub use dashboard::{
    Dashboard, PanelQuery, Variable, dashboard_path, parse_label_values, substitute,
};
pub use json::Json;
pub use promtool::{
    PROMETHEUS_PACKAGE, describe_output, help_lists_flag, prometheus_bin, promtool, run_promtool,
};
pub use server::{
    PROMETHEUS_READY_TIMEOUT, PROMETHEUS_TERM_TIMEOUT, Prometheus, RuleState, Sample, ScrapeConfig,
    free_local_port, url_encode,
};

/// The workspace root (the parent of this crate).
pub fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("tests/ has a parent")
        .to_path_buf()
}

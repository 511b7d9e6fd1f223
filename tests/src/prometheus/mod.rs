//! Prometheus-side checks of the daemon: a real Prometheus server run inside a
//! namespace and queried through its HTTP API ([`server`]), `promtool`
//! ([`promtool`]), the PromQL of the Grafana dashboard
//! (`dashboards/keepalive.json`, [`dashboard`]). JSON (the API's answers, the
//! dashboard model) is read with serde_json.

use std::path::{Path, PathBuf};

pub mod dashboard;
pub mod promtool;
pub mod server;

pub use dashboard::{
    Dashboard, PanelQuery, Variable, array_at, dashboard_path, parse_label_values, str_at,
    substitute,
};
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

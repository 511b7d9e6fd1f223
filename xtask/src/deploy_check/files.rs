//! The deployment files under deploy/, by their paths relative to the workspace root,
//! and the values they must agree on.

use std::fs;

use anyhow::Context as _;

use crate::workspace::workspace_root;

pub(super) const UNIT: &str = "deploy/systemd/keepalive-daemon.service";
pub(super) const DEFAULTS: &str = "deploy/systemd/keepalive-daemon.default";
pub(super) const KUBERNETES_DIR: &str = "deploy/kubernetes";
pub(super) const SCRAPE_CONFIG: &str = "deploy/prometheus/scrape-config.yaml";
pub(super) const ALERTS: &str = "deploy/prometheus/alerts.yaml";
/// Job label the alert rules select on.
pub(super) const JOB: &str = "keepalive";
/// Daemon port everywhere.
pub(super) const PORT: u16 = 10291;

/// A file of the tree, by its path relative to the workspace root.
pub(super) fn read(rel: &str) -> anyhow::Result<String> {
    let path = workspace_root().join(rel);
    fs::read_to_string(&path).with_context(|| format!("reading {}", path.display()))
}

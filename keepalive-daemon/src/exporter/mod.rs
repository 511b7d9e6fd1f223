//! The Prometheus side: the metric catalog, the registry built from it, the state the
//! HTTP handlers read (kernel maps, copied at scrape), the flow map's housekeeping and
//! the per-connection view.

pub(crate) mod catalog;
pub mod connections;
pub(crate) mod flow_map;
pub mod registry;
pub(crate) mod self_stats;
pub mod state;

use std::{sync::Arc, time::Duration};

use state::State;

/// Sweeps the flow map every `interval` (--flows.sweep-interval), for the daemon's life.
pub fn spawn_flow_map_sweeper(state: Arc<State>, interval: Duration) {
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(interval);
        loop {
            tick.tick().await;
            state.sweep_flow_map();
        }
    });
}

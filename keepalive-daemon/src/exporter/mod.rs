//! The Prometheus side: the metric catalog, the registry built from it, the state the
//! HTTP handlers read (kernel maps, copied at scrape), the flow map's housekeeping and
//! the per-connection view and its bounded walk.

pub mod audit_metrics;
pub(crate) mod catalog;
pub mod connections;
pub mod flow_map;
pub mod registry;
pub mod scan;
pub(crate) mod self_stats;
pub mod state;

use std::{sync::Arc, time::Duration};

use state::State;

/// Sweeps the flow map every `interval` (--flows.sweep-interval), for the daemon's life.
pub fn spawn_flow_map_sweeper(state: Arc<State>, interval: Duration) {
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(interval);
        // A sweep longer than the interval delays the next one instead of bunching them.
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            let state = state.clone();
            // The walk takes seconds at millions of entries: on a blocking thread, so
            // scrapes and the watchdog (on the runtime thread) go on meanwhile.
            if let Err(e) = tokio::task::spawn_blocking(move || state.sweep_flow_map()).await {
                log::error!("flow map sweep panicked: {e}");
            }
        }
    });
}

//! What the HTTP handlers share: the registry and the kernel counter array.

use std::sync::Mutex;

use anyhow::{Context as _, anyhow};
use aya::maps::{MapData, PerCpuArray};
use keepalive_common::counters::COUNTER_SLOTS;

use crate::metrics::Metrics;

pub struct State {
    pub metrics: Metrics,
    counters: Mutex<PerCpuArray<MapData, u64>>,
}

impl State {
    pub fn new(metrics: Metrics, counters: PerCpuArray<MapData, u64>) -> State {
        State {
            metrics,
            counters: Mutex::new(counters),
        }
    }

    /// Sums each counter slot over all CPUs.
    fn kernel_totals(&self) -> anyhow::Result<Vec<u64>> {
        let counters = self
            .counters
            .lock()
            .map_err(|_| anyhow!("counter map lock poisoned"))?;
        (0..COUNTER_SLOTS)
            .map(|slot| {
                let per_cpu = counters
                    .get(&slot, 0)
                    .with_context(|| format!("reading counter slot {slot}"))?;
                Ok(per_cpu.iter().copied().fold(0u64, u64::wrapping_add))
            })
            .collect()
    }

    pub fn render_metrics(&self) -> anyhow::Result<String> {
        match self.kernel_totals() {
            Ok(totals) => self.metrics.sync_kernel_totals(&totals),
            Err(e) => {
                self.metrics.map_read_errors.inc();
                log::warn!("{e:#}");
            }
        }
        Ok(self.metrics.encode()?)
    }
}

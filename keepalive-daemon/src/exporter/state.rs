//! What the HTTP handlers share: the registry and the kernel maps it is read from.

use std::sync::Mutex;

use aya::{
    Ebpf,
    maps::{Map, MapData, MapError, PerCpuArray},
};
use keepalive_common::{
    counters::{self, COUNTER_SLOTS},
    ports,
};

use super::{
    connections,
    flow_map::{self, FlowMapError, TypedFlowMap},
    registry::Metrics,
    scan,
};
use crate::{
    error_chain::Chain,
    sockhooks::timer_loss::{TimerLoss, TimerLossError, TimerSlots},
};

/// Why the kernel maps cannot be taken or read, or the metrics not encoded.
#[derive(Debug, thiserror::Error)]
pub enum StateError {
    #[error("map {name} missing from the eBPF object")]
    MissingMap { name: String },
    #[error(transparent)]
    Map(#[from] MapError),
    #[error("counter map lock poisoned")]
    CounterLock,
    #[error("reading counter slot {slot}")]
    CounterSlot {
        slot: u32,
        #[source]
        source: MapError,
    },
    #[error("map FLOWS of the eBPF object is not an LRU hash map; rebuild the daemon")]
    FlowMapType,
    #[error(transparent)]
    FlowMap(#[from] FlowMapError),
    #[error(transparent)]
    TimerLoss(#[from] TimerLossError),
    #[error(transparent)]
    Encode(#[from] prometheus::Error),
}

const TIMER_PROBES_SLOT: usize = counters::TIMER_PROBES as usize;

pub struct State {
    pub metrics: Metrics,
    /// The keepalive audit's latest inventory and recent endings (audit/mod.rs).
    pub audit: std::sync::Arc<crate::audit::AuditView>,
    counters: Mutex<PerCpuArray<MapData, u64>>,
    port_counters: Mutex<PerCpuArray<MapData, u64>>,
    /// FLOWS, read and swept through its descriptor (flow_map.rs): no lock, so neither
    /// walk makes a scrape, the watchdog or the other walk wait.
    flow_map: MapData,
    /// Loaded programs by name, with a descriptor for their run-time statistics.
    programs: Vec<(String, aya::programs::ProgramFd)>,
    timer_loss: TimerLoss,
}

/// Sums each slot of a per-CPU counter array over all CPUs.
fn totals(map: &Mutex<PerCpuArray<MapData, u64>>, slots: u32) -> Result<Vec<u64>, StateError> {
    let counters = map.lock().map_err(|_| StateError::CounterLock)?;
    (0..slots)
        .map(|slot| {
            let per_cpu = counters
                .get(&slot, 0)
                .map_err(|source| StateError::CounterSlot { slot, source })?;
            Ok(per_cpu.iter().copied().fold(0u64, u64::wrapping_add))
        })
        .collect()
}

fn take_map(ebpf: &mut Ebpf, name: &str) -> Result<aya::maps::Map, StateError> {
    ebpf.take_map(name).ok_or_else(|| StateError::MissingMap {
        name: name.to_owned(),
    })
}

impl State {
    /// Takes the maps the scrapes read out of `ebpf`; with `measure_timer_loss` also the
    /// timer slots (sockhooks/timer_loss.rs).
    pub fn from_ebpf(
        ebpf: &mut Ebpf,
        metrics: Metrics,
        measure_timer_loss: bool,
    ) -> Result<State, StateError> {
        let counters = PerCpuArray::try_from(take_map(ebpf, "COUNTERS")?)?;
        let timer_slots = if measure_timer_loss {
            Some(PerCpuArray::try_from(take_map(ebpf, "TIMER_SLOT")?)?)
        } else {
            None
        };
        let port_counters = PerCpuArray::try_from(take_map(ebpf, "PORT_COUNTERS")?)?;
        let flow_map = take_map(ebpf, "FLOWS")?;
        // Checks the key and value sizes against FlowKey and FlowState.
        TypedFlowMap::try_from(&flow_map)?;
        let Map::LruHashMap(flow_map) = flow_map else {
            return Err(StateError::FlowMapType);
        };
        // Our own descriptors: their fdinfo has the run statistics, readable without the
        // capabilities dropped after attaching (enumerating all programs would need
        // CAP_SYS_ADMIN).
        let programs = ebpf
            .programs()
            .filter_map(|(name, p)| {
                let fd = p.fd().ok()?.try_clone().ok()?;
                Some((name.to_owned(), fd))
            })
            .collect();
        Ok(State::new(
            metrics,
            counters,
            port_counters,
            flow_map,
            programs,
            timer_slots,
        ))
    }

    fn new(
        metrics: Metrics,
        counters: PerCpuArray<MapData, u64>,
        port_counters: PerCpuArray<MapData, u64>,
        flow_map: MapData,
        programs: Vec<(String, aya::programs::ProgramFd)>,
        timer_slots: Option<TimerSlots>,
    ) -> State {
        let counters = Mutex::new(counters);
        let timer_loss = match timer_slots {
            None => TimerLoss::off(),
            Some(slots) => {
                let programs =
                    || Ok::<_, StateError>(totals(&counters, COUNTER_SLOTS)?[TIMER_PROBES_SLOT]);
                TimerLoss::start(slots, programs).unwrap_or_else(|e| {
                    log::warn!(
                        "keepalive_daemon_timer_probes_lost_total stays at 0, the loss is not measured: {}",
                        Chain(&e)
                    );
                    TimerLoss::off()
                })
            }
        };
        State {
            metrics,
            audit: Default::default(),
            counters,
            port_counters: Mutex::new(port_counters),
            flow_map,
            programs,
            timer_loss,
        }
    }

    /// Drops closed connections from the flow map and refreshes its gauges. Blocks for
    /// the walk (about 0.5 s of CPU per million entries): call it off the runtime thread.
    pub fn sweep_flow_map(&self) {
        // Created is read before the walk, so entries created during it can only make
        // the evictions come out low, never high.
        let created = totals(&self.counters, COUNTER_SLOTS)
            .ok()
            .map(|t| t[counters::FLOWS_CREATED as usize]);
        // The whole walk runs on this thread, so its CPU clock measures the sweep alone,
        // the kernel's work in the batch calls included.
        let cpu_start = flow_map::thread_cpu_ns();
        let swept = flow_map::sweep(&self.flow_map, flow_map::monotonic_ns());
        let cpu_ns = flow_map::thread_cpu_ns().saturating_sub(cpu_start);
        self.metrics.flow_sweeps.inc();
        self.metrics
            .flow_sweep_cpu_seconds
            .inc_by(cpu_ns as f64 / 1e9);
        let r = match swept {
            Ok(r) => r,
            Err(e) => {
                self.metrics.map_read_errors.inc();
                log::warn!("flow map sweep: {}", Chain(&e));
                return;
            }
        };
        self.metrics.flow_sweep_entries.inc_by(r.walked);
        self.metrics.flow_entries.set(r.entries() as i64);
        self.metrics.flows_swept.inc_by(r.removed);
        if let Some(created) = created {
            let evicted = flow_map::evictions(created, self.metrics.flows_swept.get(), r.entries());
            let have = self.metrics.flow_evictions.get();
            if evicted > have {
                self.metrics.flow_evictions.inc_by(evicted - have);
            }
        }
    }

    /// The per-connection view for `request` (limit, at-risk filter, the audit's data).
    /// Blocks for the walk, at most [`scan::SCAN_BUDGET`] (about 0.5 s of CPU per
    /// million entries) in O(limit) memory: call it off the runtime thread.
    pub fn connections(
        &self,
        request: connections::Request,
    ) -> Result<connections::Listing, StateError> {
        // The last sweep's count: the total when the walk cannot reach the map's end.
        let swept = u64::try_from(self.metrics.flow_entries.get()).unwrap_or(0);
        Ok(scan::read_request(
            &self.flow_map,
            request,
            scan::Caps::default(),
            swept,
        )?)
    }

    /// Run time and run count of our programs (non-zero only with kernel.bpf_stats_enabled=1).
    fn sync_program_stats(&self) {
        use std::os::fd::{AsFd as _, AsRawFd as _};
        for (name, fd) in &self.programs {
            let path = format!("/proc/self/fdinfo/{}", fd.as_fd().as_raw_fd());
            if let Ok(text) = std::fs::read_to_string(path)
                && let Some((run_ns, runs)) = parse_prog_fdinfo(&text)
            {
                self.metrics.sync_program_stats(
                    name,
                    std::time::Duration::from_nanos(run_ns),
                    runs,
                );
            }
        }
        let enabled = std::fs::read_to_string("/proc/sys/kernel/bpf_stats_enabled")
            .map(|s| s.trim() == "1")
            .unwrap_or(false);
        self.metrics.bpf_stats_enabled.set(i64::from(enabled));
    }

    fn sync_kernel(&self) -> Result<(), StateError> {
        // The timer-loss reading must come before the programs' counts (timer_loss.rs).
        let timer_loss = self.timer_loss.read_before_programs()?;
        let kernel_totals = totals(&self.counters, COUNTER_SLOTS)?;
        if let Some(reading) = timer_loss {
            self.metrics
                .sync_timer_probes_lost(reading.missed(kernel_totals[TIMER_PROBES_SLOT]));
        }
        self.metrics.sync_kernel_totals(&kernel_totals);
        if self.metrics.has_ports() {
            let slots = (ports::MAX_PORTS as u32) * ports::PORT_SLOTS;
            self.metrics
                .sync_port_totals(&totals(&self.port_counters, slots)?);
        }
        Ok(())
    }

    /// Reads the kernel counters, failing if they cannot be read (watchdog, /healthz).
    pub fn render_metrics_checked(&self) -> Result<(), StateError> {
        self.sync_kernel()
    }

    pub fn render_metrics(&self) -> Result<String, StateError> {
        if let Err(e) = self.sync_kernel() {
            self.metrics.map_read_errors.inc();
            log::warn!("{}", Chain(&e));
        }
        self.sync_program_stats();
        Ok(self.metrics.encode()?)
    }
}

/// `run_time_ns` and `run_cnt` of a BPF program's /proc/self/fdinfo entry.
fn parse_prog_fdinfo(text: &str) -> Option<(u64, u64)> {
    let field = |k: &str| {
        text.lines()
            .find_map(|l| l.strip_prefix(k))
            .and_then(|v| v.trim().parse().ok())
    };
    Some((field("run_time_ns:")?, field("run_cnt:")?))
}

#[cfg(test)]
mod tests {
    #[test]
    fn fdinfo_run_statistics_parse() {
        let t = "pos:\t0\nprog_type:\t3\nrun_time_ns:\t1234\nrun_cnt:\t7\nrecursion_misses:\t0\n";
        assert_eq!(super::parse_prog_fdinfo(t), Some((1234, 7)));
        assert_eq!(super::parse_prog_fdinfo("prog_type:\t3\n"), None);
    }
}

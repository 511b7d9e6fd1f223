//! The Prometheus registry. Kernel totals are monotonic per-CPU sums; on each scrape
//! they are copied into the counters here (never backwards), so every series exists at
//! zero from start and the exposition is the classic text format promtool lints.

use std::sync::{Arc, Mutex, PoisonError};

use keepalive_common::{
    audit::{FAILURE_IDLE_BUCKETS, FAILURE_IDLE_BUCKETS_SECONDS},
    counters::{FAILURE_IDLE_MS_SUM, failure_idle_bucket},
    ports,
};
use prometheus::{
    Encoder as _, IntCounter, IntCounterVec, IntGauge, IntGaugeVec, Opts, Registry, TextEncoder,
    core::{Collector, Desc},
    proto::{self, MetricFamily, MetricType},
};

use super::catalog::{self, Describe};

pub struct Metrics {
    registry: Registry,
    /// Each kernel counter slot with the series it feeds (catalog::KERNEL_COUNTERS).
    kernel: Vec<(u32, IntCounter)>,
    /// Timer runs the tracepoint programs were not run for (see sockhooks/timer_loss.rs).
    pub timer_probes_lost: IntCounter,
    pub hook_info: IntGaugeVec,
    pub tc_programs: IntGaugeVec,
    pub interface_attach_errors: IntCounter,
    pub flow_entries: IntGauge,
    pub flow_capacity: IntGauge,
    pub flows_swept: IntCounter,
    /// The sweep's own cost: walks, their CPU and the entries they read (state.rs).
    pub flow_sweeps: IntCounter,
    pub flow_sweep_cpu_seconds: prometheus::Counter,
    pub flow_sweep_entries: IntCounter,
    pub flow_evictions: IntCounter,
    pub map_read_errors: IntCounter,
    program_run_seconds: prometheus::CounterVec,
    program_runs: IntCounterVec,
    pub bpf_stats_enabled: IntGauge,
    /// Each per-port counter index (ports::index) with the series it feeds; empty
    /// without --metrics.local-port, when the per-port families are not registered.
    ports: Vec<(u32, IntCounter)>,
    self_stats: super::self_stats::SelfStats,
    /// The keepalive audit's inventory gauges and health (audit_metrics.rs).
    pub audit: super::audit_metrics::AuditMetrics,
    idle_failure_seconds: KernelHistogram,
}

/// A histogram whose buckets the kernel keeps (one non-cumulative counter slot per
/// bucket, plus a sum): prometheus::Histogram cannot be set from outside, so this
/// collector builds the family at scrape from the last totals synced.
#[derive(Clone)]
struct KernelHistogram {
    desc: Desc,
    /// Non-cumulative bucket counts (last one +Inf) and the sum in milliseconds.
    totals: Arc<Mutex<(Vec<u64>, u64)>>,
}

impl KernelHistogram {
    fn new(d: &Describe) -> prometheus::Result<KernelHistogram> {
        Ok(KernelHistogram {
            desc: Desc::new(d.name.into(), d.help.into(), vec![], Default::default())?,
            totals: Arc::new(Mutex::new((vec![0; FAILURE_IDLE_BUCKETS as usize], 0))),
        })
    }

    /// Takes the bucket slots and the sum from the kernel totals (never backwards).
    fn sync(&self, totals: &[u64]) {
        let mut t = self.totals.lock().unwrap_or_else(PoisonError::into_inner);
        for (i, have) in t.0.iter_mut().enumerate() {
            let slot = failure_idle_bucket(i as u32) as usize;
            *have = (*have).max(totals.get(slot).copied().unwrap_or(0));
        }
        t.1 = t.1.max(
            totals
                .get(FAILURE_IDLE_MS_SUM as usize)
                .copied()
                .unwrap_or(0),
        );
    }
}

impl Collector for KernelHistogram {
    fn desc(&self) -> Vec<&Desc> {
        vec![&self.desc]
    }

    fn collect(&self) -> Vec<MetricFamily> {
        let (buckets, sum_ms) = self
            .totals
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone();
        let mut cumulative = 0;
        let mut out = Vec::new();
        // The +Inf bucket is implied by the count, as prometheus::Histogram does.
        for (bound, n) in FAILURE_IDLE_BUCKETS_SECONDS.iter().zip(&buckets) {
            cumulative += n;
            let mut b = proto::Bucket::default();
            b.set_upper_bound(f64::from(*bound));
            b.set_cumulative_count(cumulative);
            out.push(b);
        }
        let mut h = proto::Histogram::default();
        h.set_bucket(out);
        h.set_sample_count(buckets.iter().sum());
        h.set_sample_sum(sum_ms as f64 / 1000.0);
        let mut m = proto::Metric::default();
        m.set_histogram(h);
        let mut f = MetricFamily::default();
        f.set_name(self.desc.fq_name.clone());
        f.set_help(self.desc.help.clone());
        f.set_field_type(MetricType::HISTOGRAM);
        f.set_metric(vec![m]);
        vec![f]
    }
}

fn register<C: prometheus::core::Collector + Clone + 'static>(
    r: &Registry,
    c: C,
) -> prometheus::Result<C> {
    r.register(Box::new(c.clone()))?;
    Ok(c)
}

fn counter_vec(r: &Registry, d: &Describe) -> prometheus::Result<IntCounterVec> {
    register(r, IntCounterVec::new(Opts::new(d.name, d.help), d.labels)?)
}

fn gauge_vec(r: &Registry, d: &Describe) -> prometheus::Result<IntGaugeVec> {
    register(r, IntGaugeVec::new(Opts::new(d.name, d.help), d.labels)?)
}

fn gauge(r: &Registry, d: &Describe) -> prometheus::Result<IntGauge> {
    register(r, IntGauge::new(d.name, d.help)?)
}

fn counter(r: &Registry, d: &Describe) -> prometheus::Result<IntCounter> {
    register(r, IntCounter::new(d.name, d.help)?)
}

/// Registers the families of the global counter array and returns each series with the
/// slot that feeds it.
fn kernel_families(r: &Registry) -> prometheus::Result<Vec<(u32, IntCounter)>> {
    let mut out = Vec::new();
    for family in catalog::KERNEL_COUNTERS {
        let vec = counter_vec(r, &family.describe)?;
        for series in family.series {
            // A family without labels has one series: the vector's child without labels.
            let counter = vec.get_metric_with_label_values(series.label_values)?;
            out.push((series.slot, counter));
        }
    }
    Ok(out)
}

/// Registers the per-port families (--metrics.local-port): every port's series.
fn port_families(r: &Registry, local_ports: &[u16]) -> prometheus::Result<Vec<(u32, IntCounter)>> {
    if local_ports.is_empty() {
        return Ok(Vec::new());
    }
    let mut out = Vec::new();
    for family in catalog::PORT_COUNTERS {
        let vec = counter_vec(r, &family.describe)?;
        for (i, port) in local_ports.iter().enumerate() {
            let port = port.to_string();
            for series in family.series {
                let labels: Vec<&str> = std::iter::once(port.as_str())
                    .chain(series.label_values.iter().copied())
                    .collect();
                let counter = vec.get_metric_with_label_values(&labels)?;
                out.push((ports::index(i as u32, series.slot), counter));
            }
        }
    }
    Ok(out)
}

impl Metrics {
    /// The registry, every series of the catalog registered (kernel-backed ones at zero,
    /// so rate() and alerts work from start).
    pub fn new(local_ports: &[u16]) -> prometheus::Result<Metrics> {
        let r = Registry::new();
        let program_run_seconds = {
            let d = &catalog::PROGRAM_RUN_SECONDS;
            register(
                &r,
                prometheus::CounterVec::new(Opts::new(d.name, d.help), d.labels)?,
            )?
        };
        let build = gauge_vec(&r, &catalog::BUILD_INFO)?;
        build.with_label_values(&[env!("CARGO_PKG_VERSION")]).set(1);
        gauge(&r, &catalog::UP)?.set(1);
        Ok(Metrics {
            kernel: kernel_families(&r)?,
            ports: port_families(&r, local_ports)?,
            timer_probes_lost: counter(&r, &catalog::TIMER_PROBES_LOST)?,
            hook_info: gauge_vec(&r, &catalog::HOOK_INFO)?,
            tc_programs: gauge_vec(&r, &catalog::TC_PROGRAMS_ATTACHED)?,
            interface_attach_errors: counter(&r, &catalog::INTERFACE_ATTACH_ERRORS)?,
            flow_entries: gauge(&r, &catalog::FLOW_MAP_ENTRIES)?,
            flow_capacity: gauge(&r, &catalog::FLOW_MAP_CAPACITY)?,
            flows_swept: counter(&r, &catalog::FLOWS_SWEPT)?,
            flow_sweeps: counter(&r, &catalog::FLOW_MAP_SWEEPS)?,
            flow_sweep_cpu_seconds: {
                let d = &catalog::FLOW_MAP_SWEEP_CPU_SECONDS;
                register(&r, prometheus::Counter::new(d.name, d.help)?)?
            },
            flow_sweep_entries: counter(&r, &catalog::FLOW_MAP_SWEEP_ENTRIES)?,
            flow_evictions: counter(&r, &catalog::FLOW_MAP_EVICTIONS)?,
            map_read_errors: counter(&r, &catalog::MAP_READ_ERRORS)?,
            program_run_seconds,
            program_runs: counter_vec(&r, &catalog::PROGRAM_RUNS)?,
            bpf_stats_enabled: gauge(&r, &catalog::BPF_STATS_ENABLED)?,
            self_stats: super::self_stats::SelfStats::register(&r)?,
            audit: super::audit_metrics::AuditMetrics::register(&r, local_ports)?,
            idle_failure_seconds: register(
                &r,
                KernelHistogram::new(&catalog::IDLE_FAILURE_IDLE_SECONDS)?,
            )?,
            registry: r,
        })
    }

    /// Brings the per-port counters up to the kernel totals (indexed by ports::index).
    pub fn sync_port_totals(&self, totals: &[u64]) {
        raise_all(&self.ports, totals);
    }

    pub fn has_ports(&self) -> bool {
        !self.ports.is_empty()
    }

    /// Brings the counters up to the kernel totals (indexed by counter slot).
    pub fn sync_kernel_totals(&self, totals: &[u64]) {
        raise_all(&self.kernel, totals);
        self.idle_failure_seconds.sync(totals);
    }

    /// Raises the lost-probe counter to `missed` (never backwards).
    pub fn sync_timer_probes_lost(&self, missed: u64) {
        raise(&self.timer_probes_lost, missed);
    }

    /// Brings one program's run statistics up to the kernel's (monotonic) values.
    pub fn sync_program_stats(&self, program: &str, run_time: std::time::Duration, runs: u64) {
        let secs = self.program_run_seconds.with_label_values(&[program]);
        let delta = run_time.as_secs_f64() - secs.get();
        if delta > 0.0 {
            secs.inc_by(delta);
        }
        raise(&self.program_runs.with_label_values(&[program]), runs);
    }

    pub fn encode(&self) -> Result<String, prometheus::Error> {
        self.self_stats.update();
        let mut buf = Vec::new();
        TextEncoder::new().encode(&self.registry.gather(), &mut buf)?;
        String::from_utf8(buf).map_err(|e| prometheus::Error::Msg(e.to_string()))
    }
}

/// Raises a counter to the kernel's `total` (never backwards).
fn raise(c: &IntCounter, total: u64) {
    let have = c.get();
    if total > have {
        c.inc_by(total - have);
    }
}

/// Raises each `(index, counter)` to `totals[index]`.
fn raise_all(series: &[(u32, IntCounter)], totals: &[u64]) {
    for (index, c) in series {
        if let Some(total) = totals.get(*index as usize) {
            raise(c, *total);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use keepalive_common::{
        Direction, Family,
        counters::{self, COUNTER_SLOTS, ResetReason},
    };

    #[test]
    fn every_series_exists_at_zero_with_help() {
        let m = Metrics::new(&[]).expect("registry");
        let text = m.encode().expect("encode");
        assert!(text.contains(
            "tcp_keepalive_probes_total{direction=\"received\",family=\"ipv6\",payload_bytes=\"1\"} 0"
        ));
        assert!(
            text.contains("tcp_keepalive_resets_total{family=\"ipv4\",reason=\"local_reset\"} 0")
        );
        assert!(text.contains("tcp_keepalive_timer_probes_total 0"));
        assert!(text.contains("keepalive_daemon_timer_probes_lost_total 0"));
        for sweep in [
            "keepalive_daemon_flow_map_sweeps_total 0",
            "keepalive_daemon_flow_map_sweep_cpu_seconds_total 0",
            "keepalive_daemon_flow_map_sweep_entries_total 0",
        ] {
            assert!(text.contains(sweep), "{sweep} missing:\n{text}");
        }
        assert!(
            text.contains("keepalive_daemon_kernel_errors_total{kind=\"flow_insert_failed\"} 0")
        );
        for line in text.lines().filter(|l| l.starts_with("# TYPE")) {
            let name = line.split_whitespace().nth(2).expect("name");
            assert!(
                text.contains(&format!("# HELP {name} ")),
                "no HELP for {name}"
            );
            if line.ends_with(" counter") {
                assert!(name.ends_with("_total"), "counter {name} lacks _total");
            }
        }
    }

    #[test]
    fn kernel_totals_sync_and_never_go_back() {
        let m = Metrics::new(&[]).expect("registry");
        let mut totals = vec![0u64; COUNTER_SLOTS as usize];
        totals[counters::probes(Direction::Sent, Family::Ipv4, 0) as usize] = 7;
        totals[counters::resets(ResetReason::Timeout, Family::Ipv6) as usize] = 2;
        m.sync_kernel_totals(&totals);
        totals[counters::probes(Direction::Sent, Family::Ipv4, 0) as usize] = 3;
        m.sync_kernel_totals(&totals);
        let text = m.encode().expect("encode");
        assert!(text.contains(
            "tcp_keepalive_probes_total{direction=\"sent\",family=\"ipv4\",payload_bytes=\"0\"} 7"
        ));
        assert!(text.contains("tcp_keepalive_resets_total{family=\"ipv6\",reason=\"timeout\"} 2"));
    }

    #[test]
    fn idle_failures_have_all_series_at_zero_and_a_real_histogram() {
        use keepalive_common::audit::EndingKind;
        let m = Metrics::new(&[]).expect("registry");
        let text = m.encode().expect("encode");
        for cause in ["reset", "retransmit_timeout"] {
            for ka in ["on", "off"] {
                let line = format!(
                    "tcp_idle_connection_failures_total{{cause=\"{cause}\",keepalive=\"{ka}\"}} 0"
                );
                assert!(text.contains(&line), "{line} missing:\n{text}");
            }
        }
        assert!(text.contains("keepalive_daemon_ending_events_lost_total 0"));
        assert!(text.contains("# TYPE tcp_idle_connection_failure_idle_seconds histogram"));
        assert!(text.contains("tcp_idle_connection_failure_idle_seconds_count 0"));

        let mut totals = vec![0u64; COUNTER_SLOTS as usize];
        totals[counters::idle_failures(EndingKind::IdleRetransmitTimeout, true) as usize] = 3;
        // Two failures at <= 5 s (bucket 1), one beyond 7200 s (+Inf).
        totals[counters::failure_idle_bucket(1) as usize] = 2;
        totals[counters::failure_idle_bucket(FAILURE_IDLE_BUCKETS - 1) as usize] = 1;
        totals[counters::FAILURE_IDLE_MS_SUM as usize] = 7_210_500;
        m.sync_kernel_totals(&totals);
        let text = m.encode().expect("encode");
        let h = "tcp_idle_connection_failure_idle_seconds";
        for want in [
            "tcp_idle_connection_failures_total{cause=\"retransmit_timeout\",keepalive=\"on\"} 3"
                .to_owned(),
            format!("{h}_bucket{{le=\"1\"}} 0"),
            format!("{h}_bucket{{le=\"5\"}} 2"),
            format!("{h}_bucket{{le=\"7200\"}} 2"),
            format!("{h}_bucket{{le=\"+Inf\"}} 3"),
            format!("{h}_sum 7210.5"),
            format!("{h}_count 3"),
        ] {
            assert!(text.contains(&want), "{want} missing:\n{text}");
        }
    }
}

#[cfg(test)]
mod port_tests {
    use super::*;
    use keepalive_common::counters::ResetReason;

    #[test]
    fn port_series_exist_only_when_asked_and_sync() {
        let none = Metrics::new(&[])
            .expect("registry")
            .encode()
            .expect("encode");
        assert!(!none.contains("tcp_keepalive_port_"));
        let m = Metrics::new(&[5432, 6379]).expect("registry");
        let mut totals = vec![0u64; ports::MAX_PORTS * ports::PORT_SLOTS as usize];
        totals[ports::index(1, ports::resets(ResetReason::Timeout)) as usize] = 4;
        m.sync_port_totals(&totals);
        let text = m.encode().expect("encode");
        assert!(
            text.contains(
                "tcp_keepalive_port_probes_total{direction=\"sent\",local_port=\"5432\"} 0"
            )
        );
        assert!(
            text.contains(
                "tcp_keepalive_port_resets_total{local_port=\"6379\",reason=\"timeout\"} 4"
            )
        );
    }
}

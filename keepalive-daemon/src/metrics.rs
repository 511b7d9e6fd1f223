//! The Prometheus registry. Kernel totals are monotonic per-CPU sums; on each scrape
//! they are copied into the counters here (never backwards), so every series exists at
//! zero from start and the exposition is the classic text format promtool lints.

use keepalive_common::{
    Direction, Family,
    counters::{self, COUNTER_SLOTS, KernelError, ResetReason},
    ports,
};
use prometheus::{
    Encoder as _, IntCounter, IntCounterVec, IntGauge, IntGaugeVec, Opts, Registry, TextEncoder,
};

pub struct Metrics {
    registry: Registry,
    probes: IntCounterVec,
    probe_acks: IntCounterVec,
    resets: IntCounterVec,
    zero_window_probes: IntCounterVec,
    timer_probes: IntCounter,
    /// Timer runs the tracepoint programs were not run for (see timer_loss.rs).
    pub timer_probes_lost: IntCounter,
    kernel_errors: IntCounterVec,
    pub hook_info: IntGaugeVec,
    pub tc_programs: IntGaugeVec,
    pub interface_attach_errors: IntCounter,
    pub flow_entries: IntGauge,
    pub flow_capacity: IntGauge,
    pub flows_swept: IntCounter,
    pub flows_created: IntCounter,
    pub flow_evictions: IntCounter,
    pub map_read_errors: IntCounter,
    program_run_seconds: prometheus::CounterVec,
    program_runs: IntCounterVec,
    pub bpf_stats_enabled: IntGauge,
    /// Per-port families, registered only with --metrics.local-port.
    ports: Option<PortMetrics>,
    process: Option<crate::process::ProcessMetrics>,
}

struct PortMetrics {
    list: Vec<u16>,
    probes: IntCounterVec,
    probe_acks: IntCounterVec,
    resets: IntCounterVec,
}

fn counter_vec(
    r: &Registry,
    name: &str,
    help: &str,
    labels: &[&str],
) -> prometheus::Result<IntCounterVec> {
    let v = IntCounterVec::new(Opts::new(name, help), labels)?;
    r.register(Box::new(v.clone()))?;
    Ok(v)
}

fn gauge_vec(
    r: &Registry,
    name: &str,
    help: &str,
    labels: &[&str],
) -> prometheus::Result<IntGaugeVec> {
    let v = IntGaugeVec::new(Opts::new(name, help), labels)?;
    r.register(Box::new(v.clone()))?;
    Ok(v)
}

fn gauge(r: &Registry, name: &str, help: &str) -> prometheus::Result<IntGauge> {
    let g = IntGauge::new(name, help)?;
    r.register(Box::new(g.clone()))?;
    Ok(g)
}

fn counter(r: &Registry, name: &str, help: &str) -> prometheus::Result<IntCounter> {
    let c = IntCounter::new(name, help)?;
    r.register(Box::new(c.clone()))?;
    Ok(c)
}

impl Metrics {
    pub fn new(local_ports: &[u16]) -> prometheus::Result<Metrics> {
        let r = Registry::new();
        let ports = if local_ports.is_empty() {
            None
        } else {
            Some(PortMetrics {
                list: local_ports.to_vec(),
                probes: counter_vec(
                    &r,
                    "tcp_keepalive_port_probes_total",
                    "Keepalive probes on the wire for connections on an allowlisted local port (--metrics.local-port).",
                    &["local_port", "direction"],
                )?,
                probe_acks: counter_vec(
                    &r,
                    "tcp_keepalive_port_probe_acks_total",
                    "Keepalive probes answered by a pure ACK of probe seq + 1, for allowlisted local ports; direction is the probe's.",
                    &["local_port", "direction"],
                )?,
                resets: counter_vec(
                    &r,
                    "tcp_keepalive_port_resets_total",
                    "Keepalive-caused resets of connections on allowlisted local ports, by reason.",
                    &["local_port", "reason"],
                )?,
            })
        };
        let m = Metrics {
            probes: counter_vec(
                &r,
                "tcp_keepalive_probes_total",
                "TCP keepalive probes seen on the wire; direction sent = leaving this host.",
                &["direction", "family", "payload_bytes"],
            )?,
            probe_acks: counter_vec(
                &r,
                "tcp_keepalive_probe_acks_total",
                "Keepalive probes answered: the other side sent a pure ACK of probe seq + 1 before the prober's next probe; direction is the probe's (sent = this host's probes, answered by peers).",
                &["direction", "family"],
            )?,
            resets: counter_vec(
                &r,
                "tcp_keepalive_resets_total",
                "Connections reset because of keepalive: timeout (this host's keepalive timer gave up), \
                 peer_reset (a probe we sent was answered with RST), local_reset (we answered a probe with RST).",
                &["reason", "family"],
            )?,
            zero_window_probes: counter_vec(
                &r,
                "tcp_keepalive_zero_window_probes_total",
                "Zero-window probes: keepalive look-alikes sent while the peer's window is zero, not counted as keepalives.",
                &["direction", "family"],
            )?,
            timer_probes: counter(
                &r,
                "tcp_keepalive_timer_probes_total",
                "Keepalive probes the kernel's keepalive timer sent, seen at the socket.",
            )?,
            timer_probes_lost: counter(
                &r,
                "keepalive_daemon_timer_probes_lost_total",
                "Keepalive probes the kernel counted in this namespace (TcpExtTCPKeepAlive) that the timer tracepoint programs were not run for; measured on the tracepoint path without --all-namespaces, else 0.",
            )?,
            kernel_errors: counter_vec(
                &r,
                "keepalive_daemon_kernel_errors_total",
                "Frames or events the kernel programs could not handle, by kind.",
                &["kind"],
            )?,
            hook_info: gauge_vec(
                &r,
                "keepalive_daemon_hook_info",
                "1 for the mechanism each socket-level hook uses, 0 for the ones it could not or did not use.",
                &["hook", "mechanism"],
            )?,
            tc_programs: gauge_vec(
                &r,
                "keepalive_daemon_tc_programs_attached",
                "tc programs attached, by program, interface, direction and attach mode (tcx or netlink).",
                &["program", "interface", "direction", "mode"],
            )?,
            interface_attach_errors: counter(
                &r,
                "keepalive_daemon_interface_attach_errors_total",
                "Interfaces that appeared while the daemon ran, matched --interface, and could not be attached (see the log).",
            )?,
            flow_entries: gauge(
                &r,
                "keepalive_daemon_flow_map_entries",
                "Connections in the kernel flow map.",
            )?,
            flow_capacity: gauge(
                &r,
                "keepalive_daemon_flow_map_capacity",
                "Maximum connections the kernel flow map holds (--flows.max); the least recently used is evicted beyond it.",
            )?,
            flows_swept: counter(
                &r,
                "keepalive_daemon_flows_swept_total",
                "Closed connections removed from the flow map by the daemon.",
            )?,
            flows_created: counter(
                &r,
                "keepalive_daemon_flows_created_total",
                "Connections the kernel programs started tracking in the flow map.",
            )?,
            flow_evictions: counter(
                &r,
                "keepalive_daemon_flow_map_evictions_total",
                "Tracked connections the full flow map evicted (least recently used first) to make room: created minus swept minus present, refreshed by each sweep. Rising means --flows.max is too small.",
            )?,
            map_read_errors: counter(
                &r,
                "keepalive_daemon_map_read_errors_total",
                "Failed reads of kernel maps by the daemon.",
            )?,
            program_run_seconds: {
                let v = prometheus::CounterVec::new(
                    Opts::new(
                        "keepalive_daemon_program_run_seconds_total",
                        "Time the kernel spent running each eBPF program (needs kernel.bpf_stats_enabled=1).",
                    ),
                    &["program"],
                )?;
                r.register(Box::new(v.clone()))?;
                v
            },
            program_runs: counter_vec(
                &r,
                "keepalive_daemon_program_runs_total",
                "Runs of each eBPF program (needs kernel.bpf_stats_enabled=1).",
                &["program"],
            )?,
            ports,
            process: None,
            bpf_stats_enabled: gauge(
                &r,
                "keepalive_daemon_bpf_stats_enabled",
                "1 when kernel.bpf_stats_enabled=1, so the program run metrics count.",
            )?,
            registry: r,
        };
        let build = gauge_vec(
            &m.registry,
            "keepalive_daemon_build_info",
            "Build information of the running keepalive-daemon.",
            &["version"],
        )?;
        build.with_label_values(&[env!("CARGO_PKG_VERSION")]).set(1);
        let up = gauge(
            &m.registry,
            "keepalive_daemon_up",
            "1 once every program is loaded and attached.",
        )?;
        up.set(1);
        let process = crate::process::ProcessMetrics::register(&m.registry)?;
        m.touch_all();
        Ok(Metrics {
            process: Some(process),
            ..m
        })
    }

    /// The per-port series for (allowlist index, slot), if ports are configured.
    fn port_counter_for(&self, port_index: usize, slot: u32) -> Option<IntCounter> {
        let p = self.ports.as_ref()?;
        let port = p.list.get(port_index)?.to_string();
        for d in Direction::ALL {
            if slot == ports::probes(d) {
                return Some(p.probes.with_label_values(&[&port, d.label()]));
            }
            if slot == ports::probe_acks(d) {
                return Some(p.probe_acks.with_label_values(&[&port, d.label()]));
            }
        }
        ResetReason::ALL
            .into_iter()
            .find(|r| ports::resets(*r) == slot)
            .map(|r| p.resets.with_label_values(&[&port, r.label()]))
    }

    /// Brings the per-port counters up to the kernel totals (indexed by ports::index).
    pub fn sync_port_totals(&self, totals: &[u64]) {
        for (i, total) in totals.iter().enumerate() {
            let (port_index, slot) = (i / ports::PORT_SLOTS as usize, i as u32 % ports::PORT_SLOTS);
            if let Some(c) = self.port_counter_for(port_index, slot) {
                let have = c.get();
                if *total > have {
                    c.inc_by(total - have);
                }
            }
        }
    }

    pub fn has_ports(&self) -> bool {
        self.ports.is_some()
    }

    /// Creates every kernel-backed series at zero so rate() and alerts work from start.
    fn touch_all(&self) {
        for i in 0..ports::MAX_PORTS {
            for slot in 0..ports::PORT_SLOTS {
                if let Some(c) = self.port_counter_for(i, slot) {
                    c.inc_by(0);
                }
            }
        }
        for slot in 0..COUNTER_SLOTS {
            if let Some(c) = self.counter_for(slot) {
                c.inc_by(0);
            }
        }
    }

    fn counter_for(&self, slot: u32) -> Option<IntCounter> {
        for d in Direction::ALL {
            for f in Family::ALL {
                for p in 0..2u32 {
                    if slot == counters::probes(d, f, p) {
                        let pb = if p == 0 { "0" } else { "1" };
                        return Some(self.probes.with_label_values(&[d.label(), f.label(), pb]));
                    }
                }
                if slot == counters::probe_acks(d, f) {
                    return Some(self.probe_acks.with_label_values(&[d.label(), f.label()]));
                }
                if slot == counters::zero_window_probes(d, f) {
                    return Some(
                        self.zero_window_probes
                            .with_label_values(&[d.label(), f.label()]),
                    );
                }
            }
        }
        for r in ResetReason::ALL {
            for f in Family::ALL {
                if slot == counters::resets(r, f) {
                    return Some(self.resets.with_label_values(&[r.label(), f.label()]));
                }
            }
        }
        if slot == counters::TIMER_PROBES {
            return Some(self.timer_probes.clone());
        }
        if slot == counters::FLOWS_CREATED {
            return Some(self.flows_created.clone());
        }
        KernelError::ALL
            .into_iter()
            .find(|e| counters::error(*e) == slot)
            .map(|e| self.kernel_errors.with_label_values(&[e.label()]))
    }

    /// Brings the counters up to the kernel totals (indexed by counter slot).
    pub fn sync_kernel_totals(&self, totals: &[u64]) {
        for (slot, total) in totals.iter().enumerate() {
            if let Some(c) = self.counter_for(slot as u32) {
                let have = c.get();
                if *total > have {
                    c.inc_by(total - have);
                }
            }
        }
    }

    /// Raises the lost-probe counter to `missed` (never backwards).
    pub fn sync_timer_probes_lost(&self, missed: u64) {
        let have = self.timer_probes_lost.get();
        if missed > have {
            self.timer_probes_lost.inc_by(missed - have);
        }
    }

    /// Brings one program's run statistics up to the kernel's (monotonic) values.
    pub fn sync_program_stats(&self, program: &str, run_time: std::time::Duration, runs: u64) {
        let secs = self.program_run_seconds.with_label_values(&[program]);
        let delta = run_time.as_secs_f64() - secs.get();
        if delta > 0.0 {
            secs.inc_by(delta);
        }
        let count = self.program_runs.with_label_values(&[program]);
        if runs > count.get() {
            count.inc_by(runs - count.get());
        }
    }

    pub fn encode(&self) -> Result<String, prometheus::Error> {
        if let Some(p) = &self.process {
            p.update();
        }
        let mut buf = Vec::new();
        TextEncoder::new().encode(&self.registry.gather(), &mut buf)?;
        String::from_utf8(buf).map_err(|e| prometheus::Error::Msg(e.to_string()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
}

#[cfg(test)]
mod port_tests {
    use super::*;

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

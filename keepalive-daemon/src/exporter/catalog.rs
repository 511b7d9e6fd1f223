//! Every metric family the daemon exports, described once: name, help, label names and,
//! for the kernel's counters, which counter slot feeds which series. The registry
//! (registry.rs) is built from these tables and walks them at scrape to copy the
//! kernel's totals, so adding a kernel counter means adding its slot in
//! keepalive_common::counters and one row here.

use keepalive_common::{
    Direction::{Received, Sent},
    Family::{Ipv4, Ipv6},
    audit::EndingKind::{IdleReset, IdleRetransmitTimeout},
    counters::{
        ENDING_EVENTS_LOST, FLOWS_CREATED, KernelError, ResetReason, TIMER_PROBES, error,
        idle_failures, probe_acks, probes, resets, zero_window_probes,
    },
    ports,
};

use crate::metric_names as names;

/// A metric family: what Prometheus shows in `# HELP` and the labels of its series.
pub struct Describe {
    pub name: &'static str,
    pub help: &'static str,
    pub labels: &'static [&'static str],
}

/// One series fed by a kernel counter slot.
pub struct Series {
    pub slot: u32,
    pub label_values: &'static [&'static str],
}

/// A counter family whose series are kernel counter slots.
pub struct CounterFamily {
    pub describe: Describe,
    pub series: &'static [Series],
}

const fn s(slot: u32, label_values: &'static [&'static str]) -> Series {
    Series { slot, label_values }
}

const SENT: &str = Sent.label();
const RECEIVED: &str = Received.label();
const IPV4: &str = Ipv4.label();
const IPV6: &str = Ipv6.label();
const TIMEOUT: &str = ResetReason::Timeout.label();
const PEER_RESET: &str = ResetReason::PeerReset.label();
const LOCAL_RESET: &str = ResetReason::LocalReset.label();

/// The global counter array (keepalive_common::counters), slot by slot.
pub const KERNEL_COUNTERS: &[CounterFamily] = &[
    CounterFamily {
        describe: Describe {
            name: names::PROBES,
            help: "TCP keepalive probes seen on the wire; direction sent = leaving this host.",
            labels: &["direction", "family", "payload_bytes"],
        },
        series: &[
            s(probes(Sent, Ipv4, 0), &[SENT, IPV4, "0"]),
            s(probes(Sent, Ipv4, 1), &[SENT, IPV4, "1"]),
            s(probes(Sent, Ipv6, 0), &[SENT, IPV6, "0"]),
            s(probes(Sent, Ipv6, 1), &[SENT, IPV6, "1"]),
            s(probes(Received, Ipv4, 0), &[RECEIVED, IPV4, "0"]),
            s(probes(Received, Ipv4, 1), &[RECEIVED, IPV4, "1"]),
            s(probes(Received, Ipv6, 0), &[RECEIVED, IPV6, "0"]),
            s(probes(Received, Ipv6, 1), &[RECEIVED, IPV6, "1"]),
        ],
    },
    CounterFamily {
        describe: Describe {
            name: names::PROBE_ACKS,
            help: "Keepalive probes answered: the other side sent a pure ACK of probe seq + 1 before the prober's next probe; direction is the probe's (sent = this host's probes, answered by peers).",
            labels: &["direction", "family"],
        },
        series: &[
            s(probe_acks(Sent, Ipv4), &[SENT, IPV4]),
            s(probe_acks(Sent, Ipv6), &[SENT, IPV6]),
            s(probe_acks(Received, Ipv4), &[RECEIVED, IPV4]),
            s(probe_acks(Received, Ipv6), &[RECEIVED, IPV6]),
        ],
    },
    CounterFamily {
        describe: Describe {
            name: names::ZERO_WINDOW_PROBES,
            help: "Zero-window probes: keepalive look-alikes sent while the peer's window is zero, not counted as keepalives.",
            labels: &["direction", "family"],
        },
        series: &[
            s(zero_window_probes(Sent, Ipv4), &[SENT, IPV4]),
            s(zero_window_probes(Sent, Ipv6), &[SENT, IPV6]),
            s(zero_window_probes(Received, Ipv4), &[RECEIVED, IPV4]),
            s(zero_window_probes(Received, Ipv6), &[RECEIVED, IPV6]),
        ],
    },
    CounterFamily {
        describe: Describe {
            name: names::RESETS,
            help: "Connections reset because of keepalive: timeout (this host's keepalive timer gave up), \
                   peer_reset (a probe we sent was answered with RST), local_reset (we answered a probe with RST).",
            labels: &["reason", "family"],
        },
        series: &[
            s(resets(ResetReason::Timeout, Ipv4), &[TIMEOUT, IPV4]),
            s(resets(ResetReason::Timeout, Ipv6), &[TIMEOUT, IPV6]),
            s(resets(ResetReason::PeerReset, Ipv4), &[PEER_RESET, IPV4]),
            s(resets(ResetReason::PeerReset, Ipv6), &[PEER_RESET, IPV6]),
            s(resets(ResetReason::LocalReset, Ipv4), &[LOCAL_RESET, IPV4]),
            s(resets(ResetReason::LocalReset, Ipv6), &[LOCAL_RESET, IPV6]),
        ],
    },
    CounterFamily {
        describe: Describe {
            name: names::TIMER_PROBES,
            help: "Keepalive probes the kernel's keepalive timer sent, seen at the socket.",
            labels: &[],
        },
        series: &[s(TIMER_PROBES, &[])],
    },
    CounterFamily {
        describe: Describe {
            name: names::KERNEL_ERRORS,
            help: "Frames or events the kernel programs could not handle, by kind.",
            labels: &["kind"],
        },
        series: &[
            s(
                error(KernelError::Truncated),
                &[KernelError::Truncated.label()],
            ),
            s(
                error(KernelError::Malformed),
                &[KernelError::Malformed.label()],
            ),
            s(
                error(KernelError::FlowInsertFailed),
                &[KernelError::FlowInsertFailed.label()],
            ),
            s(
                error(KernelError::KernelReadFailed),
                &[KernelError::KernelReadFailed.label()],
            ),
        ],
    },
    CounterFamily {
        describe: Describe {
            name: names::FLOWS_CREATED,
            help: "Connections the kernel programs started tracking in the flow map.",
            labels: &[],
        },
        series: &[s(FLOWS_CREATED, &[])],
    },
    CounterFamily {
        describe: Describe {
            name: names::IDLE_FAILURES,
            help: "Connections that failed after being idle at least --audit.min-idle: cause reset (a RST arrived) \
                   or retransmit_timeout (the kernel gave up retransmitting, outside the keepalive timer); \
                   keepalive tells whether SO_KEEPALIVE was on. Keepalive timeouts are in tcp_keepalive_resets_total.",
            labels: &["cause", "keepalive"],
        },
        series: &[
            s(idle_failures(IdleReset, false), &[RESET_CAUSE, "off"]),
            s(idle_failures(IdleReset, true), &[RESET_CAUSE, "on"]),
            s(
                idle_failures(IdleRetransmitTimeout, false),
                &[RTO_CAUSE, "off"],
            ),
            s(
                idle_failures(IdleRetransmitTimeout, true),
                &[RTO_CAUSE, "on"],
            ),
        ],
    },
    CounterFamily {
        describe: Describe {
            name: names::ENDING_EVENTS_LOST,
            help: "Connection endings (keepalive timeouts, idle deaths) whose log event did not fit in the kernel's ring buffer; their counters are exact.",
            labels: &[],
        },
        series: &[s(ENDING_EVENTS_LOST, &[])],
    },
];

const RESET_CAUSE: &str = IdleReset.cause_label();
const RTO_CAUSE: &str = IdleRetransmitTimeout.cause_label();

/// tcp_idle_connection_failure_idle_seconds, a histogram built at scrape from the
/// kernel's non-cumulative bucket slots (counters::failure_idle_bucket, bounds
/// audit::FAILURE_IDLE_BUCKETS_SECONDS) and its sum of milliseconds
/// (counters::FAILURE_IDLE_MS_SUM).
pub const IDLE_FAILURE_IDLE_SECONDS: Describe = Describe {
    name: names::IDLE_FAILURE_IDLE_SECONDS,
    help: "How long connections counted in tcp_idle_connection_failures_total had been idle (no segment received) when they failed, in seconds.",
    labels: &[],
};

/// The per-port counter array (keepalive_common::ports), slot by slot within one port.
/// The first label, `local_port`, is the allowlisted port; `label_values` are the rest.
pub const PORT_COUNTERS: &[CounterFamily] = &[
    CounterFamily {
        describe: Describe {
            name: names::PORT_PROBES,
            help: "Keepalive probes on the wire for connections on an allowlisted local port (--metrics.local-port).",
            labels: &["local_port", "direction"],
        },
        series: &[
            s(ports::probes(Sent), &[SENT]),
            s(ports::probes(Received), &[RECEIVED]),
        ],
    },
    CounterFamily {
        describe: Describe {
            name: names::PORT_PROBE_ACKS,
            help: "Keepalive probes answered by a pure ACK of probe seq + 1, for allowlisted local ports; direction is the probe's.",
            labels: &["local_port", "direction"],
        },
        series: &[
            s(ports::probe_acks(Sent), &[SENT]),
            s(ports::probe_acks(Received), &[RECEIVED]),
        ],
    },
    CounterFamily {
        describe: Describe {
            name: names::PORT_RESETS,
            help: "Keepalive-caused resets of connections on allowlisted local ports, by reason.",
            labels: &["local_port", "reason"],
        },
        series: &[
            s(ports::resets(ResetReason::Timeout), &[TIMEOUT]),
            s(ports::resets(ResetReason::PeerReset), &[PEER_RESET]),
            s(ports::resets(ResetReason::LocalReset), &[LOCAL_RESET]),
        ],
    },
];

// The daemon's own families: set by the daemon's code, not read from a counter slot.

pub const TIMER_PROBES_LOST: Describe = Describe {
    name: names::TIMER_PROBES_LOST,
    help: "Keepalive probes the kernel counted in this namespace (TcpExtTCPKeepAlive) that the timer tracepoint programs were not run for; measured on the tracepoint path without --all-namespaces, else 0.",
    labels: &[],
};
pub const HOOK_INFO: Describe = Describe {
    name: names::HOOK_INFO,
    help: "1 for the mechanism each socket-level hook uses, 0 for the ones it could not or did not use.",
    labels: &["hook", "mechanism"],
};
pub const TC_PROGRAMS_ATTACHED: Describe = Describe {
    name: names::TC_PROGRAMS_ATTACHED,
    help: "tc programs attached, by program, interface, direction and attach mode (tcx or netlink).",
    labels: &["program", "interface", "direction", "mode"],
};
pub const INTERFACE_ATTACH_ERRORS: Describe = Describe {
    name: names::INTERFACE_ATTACH_ERRORS,
    help: "Interfaces that appeared while the daemon ran, matched --interface, and could not be attached (see the log).",
    labels: &[],
};
pub const FLOW_MAP_ENTRIES: Describe = Describe {
    name: names::FLOW_MAP_ENTRIES,
    help: "Connections in the kernel flow map.",
    labels: &[],
};
pub const FLOW_MAP_CAPACITY: Describe = Describe {
    name: names::FLOW_MAP_CAPACITY,
    help: "Maximum connections the kernel flow map holds (--flows.max); the least recently used is evicted beyond it.",
    labels: &[],
};
pub const FLOWS_SWEPT: Describe = Describe {
    name: names::FLOWS_SWEPT,
    help: "Closed connections removed from the flow map by the daemon.",
    labels: &[],
};
pub const FLOW_MAP_SWEEPS: Describe = Describe {
    name: names::FLOW_MAP_SWEEPS,
    help: "Walks of the flow map by the sweep (every --flows.sweep-interval), failed ones included (those also count in keepalive_daemon_map_read_errors_total).",
    labels: &[],
};
pub const FLOW_MAP_SWEEP_CPU_SECONDS: Describe = Describe {
    name: names::FLOW_MAP_SWEEP_CPU_SECONDS,
    help: "CPU time the sweeps used, user and kernel (the sweeping thread's CPU clock, so the kernel's copies and deletes count), in seconds. Divided by keepalive_daemon_flow_map_sweep_entries_total: CPU per entry swept.",
    labels: &[],
};
pub const FLOW_MAP_SWEEP_ENTRIES: Describe = Describe {
    name: names::FLOW_MAP_SWEEP_ENTRIES,
    help: "Flow map entries the sweeps walked (read), those they removed included.",
    labels: &[],
};
pub const FLOW_MAP_EVICTIONS: Describe = Describe {
    name: names::FLOW_MAP_EVICTIONS,
    help: "Tracked connections the full flow map evicted (least recently used first) to make room: created minus swept minus present, refreshed by each sweep. Rising means --flows.max is too small.",
    labels: &[],
};
pub const MAP_READ_ERRORS: Describe = Describe {
    name: names::MAP_READ_ERRORS,
    help: "Failed reads of kernel maps by the daemon.",
    labels: &[],
};
pub const PROGRAM_RUN_SECONDS: Describe = Describe {
    name: names::PROGRAM_RUN_SECONDS,
    help: "Time the kernel spent running each eBPF program (needs kernel.bpf_stats_enabled=1).",
    labels: &["program"],
};
pub const PROGRAM_RUNS: Describe = Describe {
    name: names::PROGRAM_RUNS,
    help: "Runs of each eBPF program (needs kernel.bpf_stats_enabled=1).",
    labels: &["program"],
};
pub const BPF_STATS_ENABLED: Describe = Describe {
    name: names::BPF_STATS_ENABLED,
    help: "1 when kernel.bpf_stats_enabled=1, so the program run metrics count.",
    labels: &[],
};
pub const BUILD_INFO: Describe = Describe {
    name: names::BUILD_INFO,
    help: "Build information of the running keepalive-daemon.",
    labels: &["version"],
};
pub const UP: Describe = Describe {
    name: names::UP,
    help: "1 once every program is loaded and attached.",
    labels: &[],
};

/// The slots the kernel programs write (keepalive_common::counters), for the tests.
#[cfg(test)]
fn kernel_slots() -> Vec<u32> {
    use keepalive_common::{Direction, Family};
    let mut slots = vec![TIMER_PROBES, FLOWS_CREATED, ENDING_EVENTS_LOST];
    for kind in [IdleReset, IdleRetransmitTimeout] {
        slots.extend([idle_failures(kind, false), idle_failures(kind, true)]);
    }
    for d in Direction::ALL {
        for f in Family::ALL {
            slots.extend([probes(d, f, 0), probes(d, f, 1)]);
            slots.extend([probe_acks(d, f), zero_window_probes(d, f)]);
        }
    }
    for r in ResetReason::ALL {
        slots.extend(Family::ALL.map(|f| resets(r, f)));
    }
    slots.extend(KernelError::ALL.map(error));
    slots
}

#[cfg(test)]
mod tests {
    use super::*;

    /// How many table rows read each slot of an array of `slots`.
    fn readers(table: &[CounterFamily], slots: u32) -> Vec<usize> {
        let mut n = vec![0; slots as usize];
        for family in table {
            for series in family.series {
                assert!(
                    series.slot < slots,
                    "{}: slot {} out of range",
                    family.describe.name,
                    series.slot
                );
                n[series.slot as usize] += 1;
            }
        }
        n
    }

    /// Every slot the kernel writes is exported as exactly one series, and the table
    /// reads no slot the kernel leaves alone.
    #[test]
    fn every_kernel_slot_maps_to_exactly_one_series() {
        let written = kernel_slots();
        let n = readers(KERNEL_COUNTERS, keepalive_common::counters::COUNTER_SLOTS);
        for slot in 0..keepalive_common::counters::COUNTER_SLOTS {
            let expected = usize::from(written.contains(&slot));
            assert_eq!(n[slot as usize], expected, "slot {slot}");
        }
        assert!(written.contains(&FLOWS_CREATED));
    }

    #[test]
    fn every_port_slot_the_kernel_writes_maps_to_exactly_one_series() {
        use keepalive_common::{Direction, classify::Verdict};
        let n = readers(PORT_COUNTERS, ports::PORT_SLOTS);
        let verdicts = [
            Verdict::Probe { payload_bytes: 0 },
            Verdict::ProbeAck,
            Verdict::ProbeReset,
        ];
        let mut written = vec![ports::resets(ResetReason::Timeout)];
        for v in verdicts {
            written.extend(
                Direction::ALL
                    .into_iter()
                    .filter_map(|d| ports::for_verdict(v, d)),
            );
        }
        for slot in 0..ports::PORT_SLOTS {
            assert_eq!(
                n[slot as usize],
                usize::from(written.contains(&slot)),
                "port slot {slot}"
            );
        }
    }

    /// Label values match label names, so registration cannot fail at run time.
    #[test]
    fn every_series_has_a_value_per_label() {
        for f in KERNEL_COUNTERS {
            for s in f.series {
                assert_eq!(
                    s.label_values.len(),
                    f.describe.labels.len(),
                    "{}",
                    f.describe.name
                );
            }
        }
        for f in PORT_COUNTERS {
            for s in f.series {
                assert_eq!(
                    s.label_values.len() + 1,
                    f.describe.labels.len(),
                    "{}",
                    f.describe.name
                );
            }
        }
    }
}

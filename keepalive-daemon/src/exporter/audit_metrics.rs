//! The keepalive audit's metrics: the inventory's gauges (connections by keepalive
//! state, at risk per idle limit, the distribution of idle settings, and per
//! --metrics.local-port the same by port) and the audit's own health.
//!
//! The inventory's gauges are replaced as a whole after each run: a scrape sees one
//! run's figures, never a mix of two, and a port or limit that has no connection any
//! more keeps its series at 0 while a connection that is gone leaves no series behind.
//! They exist only once an inventory ran (absent with the inventory off, which
//! keepalive_daemon_audit_inventory_enabled says).

use std::sync::{PoisonError, RwLock};

use keepalive_common::audit::{IDLE_SETTING_BUCKETS_SECONDS, at_risk};
use prometheus::{
    Gauge, IntCounter, IntGauge, IntGaugeVec, Opts, Registry,
    core::{Collector, Desc},
    proto::MetricFamily,
};

use crate::{audit::AuditedConnection, metric_names as names};

const CONNECTIONS_HELP: &str =
    "Established TCP connections in the last keepalive audit, by whether SO_KEEPALIVE is set.";
const AT_RISK_HELP: &str = "Established TCP connections in the last keepalive audit that a middlebox with this idle timeout (--audit.idle-limit) can silently forget: keepalive off, or its first probe at or after the limit.";
const IDLE_SETTING_HELP: &str = "Keepalive-enabled established TCP connections in the last keepalive audit whose effective idle time before the first probe (TCP_KEEPIDLE, else net.ipv4.tcp_keepalive_time) is at most le seconds (cumulative).";
const PORT_CONNECTIONS_HELP: &str = "Established TCP connections on this --metrics.local-port in the last keepalive audit, by whether SO_KEEPALIVE is set.";
const PORT_AT_RISK_HELP: &str = "Established TCP connections on this --metrics.local-port in the last keepalive audit at risk for this idle limit (keepalive off, or first probe at or after it).";

/// The inventory's counts, before they become series.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Aggregate {
    pub keepalive_on: u64,
    pub keepalive_off: u64,
    /// Per --audit.idle-limit, in its order.
    pub at_risk: Vec<u64>,
    /// Cumulative per IDLE_SETTING_BUCKETS_SECONDS, then +Inf (keepalive on only).
    pub idle_setting_le: Vec<u64>,
    /// Per --metrics.local-port, in its order.
    pub ports: Vec<PortAggregate>,
}

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PortAggregate {
    pub keepalive_on: u64,
    pub keepalive_off: u64,
    pub at_risk: Vec<u64>,
}

/// Counts `conns` for `limits` (seconds) and `ports`.
pub fn aggregate<'a>(
    conns: impl IntoIterator<Item = &'a AuditedConnection>,
    limits: &[u32],
    ports: &[u16],
) -> Aggregate {
    let mut a = Aggregate {
        at_risk: vec![0; limits.len()],
        idle_setting_le: vec![0; IDLE_SETTING_BUCKETS_SECONDS.len() + 1],
        ports: vec![
            PortAggregate {
                at_risk: vec![0; limits.len()],
                ..Default::default()
            };
            ports.len()
        ],
        ..Default::default()
    };
    for c in conns {
        let port = ports.iter().position(|p| *p == c.key.local_port);
        let on = c.settings.keepalive;
        *if on {
            &mut a.keepalive_on
        } else {
            &mut a.keepalive_off
        } += 1;
        if let Some(i) = port {
            let p = &mut a.ports[i];
            *if on {
                &mut p.keepalive_on
            } else {
                &mut p.keepalive_off
            } += 1;
        }
        for (j, &limit) in limits.iter().enumerate() {
            if at_risk(&c.settings, limit).is_some() {
                a.at_risk[j] += 1;
                if let Some(i) = port {
                    a.ports[i].at_risk[j] += 1;
                }
            }
        }
        if on {
            for (k, bound) in IDLE_SETTING_BUCKETS_SECONDS.iter().enumerate() {
                if c.settings.idle_seconds <= *bound {
                    a.idle_setting_le[k] += 1;
                }
            }
            a.idle_setting_le[IDLE_SETTING_BUCKETS_SECONDS.len()] += 1;
        }
    }
    a
}

/// The `idle_limit` label of a limit: whole seconds with an `s`, e.g. "350s".
pub fn limit_label(seconds: u32) -> String {
    format!("{seconds}s")
}

/// The inventory's gauge families of one run.
struct Snapshot {
    families: Vec<IntGaugeVec>,
}

/// A collector whose series are swapped whole after each run.
struct InventoryGauges {
    descs: Vec<Desc>,
    current: RwLock<Option<Snapshot>>,
}

/// (name, help, labels) of the inventory's families; the per-port ones only with ports.
fn families(with_ports: bool) -> Vec<(&'static str, &'static str, &'static [&'static str])> {
    let mut f = vec![
        (names::CONNECTIONS, CONNECTIONS_HELP, &["keepalive"][..]),
        (
            names::CONNECTIONS_AT_RISK,
            AT_RISK_HELP,
            &["idle_limit"][..],
        ),
        (
            names::IDLE_SETTING_CONNECTIONS,
            IDLE_SETTING_HELP,
            // Not `le`: promtool reserves it for histograms, and this is a gauge.
            &["idle_le_seconds"][..],
        ),
    ];
    if with_ports {
        f.push((
            names::PORT_CONNECTIONS,
            PORT_CONNECTIONS_HELP,
            &["local_port", "keepalive"][..],
        ));
        f.push((
            names::PORT_CONNECTIONS_AT_RISK,
            PORT_AT_RISK_HELP,
            &["local_port", "idle_limit"][..],
        ));
    }
    f
}

impl Collector for InventoryGauges {
    fn desc(&self) -> Vec<&Desc> {
        self.descs.iter().collect()
    }

    fn collect(&self) -> Vec<MetricFamily> {
        let current = self.current.read().unwrap_or_else(PoisonError::into_inner);
        current
            .iter()
            .flat_map(|s| s.families.iter().flat_map(|f| f.collect()))
            .collect()
    }
}

/// The audit's metrics, registered in the daemon's registry.
pub struct AuditMetrics {
    pub inventory_enabled: IntGauge,
    pub runs: IntCounter,
    pub errors: IntCounter,
    pub duration_seconds: Gauge,
    pub namespaces: IntGauge,
    inventory: std::sync::Arc<InventoryGauges>,
    with_ports: bool,
}

/// Shares the swapped collector with the registry.
struct Shared(std::sync::Arc<InventoryGauges>);

impl Collector for Shared {
    fn desc(&self) -> Vec<&Desc> {
        self.0.desc()
    }
    fn collect(&self) -> Vec<MetricFamily> {
        self.0.collect()
    }
}

impl AuditMetrics {
    pub fn register(r: &Registry, local_ports: &[u16]) -> prometheus::Result<AuditMetrics> {
        let with_ports = !local_ports.is_empty();
        let descs = families(with_ports)
            .into_iter()
            .map(|(name, help, labels)| {
                let labels = labels.iter().map(|l| (*l).to_owned()).collect();
                Desc::new(name.into(), help.into(), labels, Default::default())
            })
            .collect::<prometheus::Result<Vec<_>>>()?;
        let inventory = std::sync::Arc::new(InventoryGauges {
            descs,
            current: RwLock::new(None),
        });
        r.register(Box::new(Shared(inventory.clone())))?;
        let m = AuditMetrics {
            inventory_enabled: IntGauge::new(
                names::AUDIT_INVENTORY_ENABLED,
                "1 while the keepalive audit's inventory of established connections runs (kernel with the iter/tcp program, audit not disabled), else 0; the log says why.",
            )?,
            runs: IntCounter::new(
                names::AUDIT_RUNS,
                "Keepalive audit inventory runs completed.",
            )?,
            errors: IntCounter::new(
                names::AUDIT_ERRORS,
                "Keepalive audit failures: each network namespace whose sockets could not be listed in a run, plus one per run that could not open some namespace files (the log says why; the run goes on with the rest).",
            )?,
            duration_seconds: Gauge::new(
                names::AUDIT_DURATION,
                "Wall-clock seconds the last keepalive audit inventory run took.",
            )?,
            namespaces: IntGauge::new(
                names::AUDIT_NAMESPACES,
                "Network namespaces listed by the last keepalive audit inventory run.",
            )?,
            inventory,
            with_ports,
        };
        r.register(Box::new(m.inventory_enabled.clone()))?;
        r.register(Box::new(m.runs.clone()))?;
        r.register(Box::new(m.errors.clone()))?;
        r.register(Box::new(m.duration_seconds.clone()))?;
        r.register(Box::new(m.namespaces.clone()))?;
        Ok(m)
    }

    /// Replaces the inventory's series with those of `a` (counted for `limits` and
    /// `ports`, the same as at [`aggregate`]).
    pub fn publish(&self, a: &Aggregate, limits: &[u32], ports: &[u16]) -> prometheus::Result<()> {
        let vecs = families(self.with_ports)
            .into_iter()
            .map(|(name, help, labels)| IntGaugeVec::new(Opts::new(name, help), labels))
            .collect::<prometheus::Result<Vec<_>>>()?;
        let set = |f: &IntGaugeVec, labels: &[&str], v: u64| {
            f.with_label_values(labels)
                .set(i64::try_from(v).unwrap_or(i64::MAX));
        };
        set(&vecs[0], &["on"], a.keepalive_on);
        set(&vecs[0], &["off"], a.keepalive_off);
        for (limit, n) in limits.iter().zip(&a.at_risk) {
            set(&vecs[1], &[&limit_label(*limit)], *n);
        }
        let les = IDLE_SETTING_BUCKETS_SECONDS
            .iter()
            .map(u32::to_string)
            .chain(std::iter::once("+Inf".to_owned()));
        for (le, n) in les.zip(&a.idle_setting_le) {
            set(&vecs[2], &[&le], *n);
        }
        if self.with_ports {
            for (port, p) in ports.iter().zip(&a.ports) {
                let port = port.to_string();
                set(&vecs[3], &[&port, "on"], p.keepalive_on);
                set(&vecs[3], &[&port, "off"], p.keepalive_off);
                for (limit, n) in limits.iter().zip(&p.at_risk) {
                    set(&vecs[4], &[&port, &limit_label(*limit)], *n);
                }
            }
        }
        let mut current = self
            .inventory
            .current
            .write()
            .unwrap_or_else(PoisonError::into_inner);
        *current = Some(Snapshot { families: vecs });
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use keepalive_common::audit::{SocketRecord, record_flags};

    use crate::audit::inventory::audited;

    const HZ: u32 = 100;
    const LIMITS: [u32; 2] = [240, 350];

    fn conn(port: u16, keepalive: bool, idle_s: u32) -> AuditedConnection {
        let mut r = SocketRecord {
            flags: if keepalive {
                record_flags::KEEPALIVE
            } else {
                0
            },
            sysctl_keepalive_time: 7200 * HZ,
            keepalive_time: idle_s * HZ,
            ..Default::default()
        };
        r.key.local_port = port;
        audited(&r, HZ)
    }

    /// 3 off, and on with idle 30, 240, 300, 350 and (sysctl) 7200 s, over two ports.
    fn sample() -> Vec<AuditedConnection> {
        vec![
            conn(5432, false, 0),
            conn(5432, false, 0),
            conn(6379, false, 0),
            conn(5432, true, 30),
            conn(5432, true, 240),
            conn(6379, true, 300),
            conn(9999, true, 350),
            conn(9999, true, 0),
        ]
    }

    #[test]
    fn counts_are_exact() {
        let a = aggregate(&sample(), &LIMITS, &[5432, 6379, 80]);
        assert_eq!((a.keepalive_on, a.keepalive_off), (5, 3));
        // 240 s: 3 off + 240, 300, 350, 7200; 350 s: 3 off + 350, 7200.
        assert_eq!(a.at_risk, [7, 5]);
        // le 30 60 120 240 300 350 600 900 1200 3600 7200 +Inf, keepalive on only.
        assert_eq!(a.idle_setting_le, [1, 1, 1, 2, 3, 4, 4, 4, 4, 4, 5, 5]);
        let p = |on, off, risk: [u64; 2]| PortAggregate {
            keepalive_on: on,
            keepalive_off: off,
            at_risk: risk.to_vec(),
        };
        assert_eq!(a.ports, [p(2, 2, [3, 2]), p(1, 1, [2, 1]), p(0, 0, [0, 0])]);
        assert_eq!(aggregate(&[], &LIMITS, &[]).at_risk, [0, 0]);
    }

    #[test]
    fn series_are_replaced_whole_with_help() {
        let r = Registry::new();
        let m = AuditMetrics::register(&r, &[5432]).unwrap();
        let text = |r: &Registry| {
            let mut buf = Vec::new();
            prometheus::Encoder::encode(&prometheus::TextEncoder::new(), &r.gather(), &mut buf)
                .unwrap();
            String::from_utf8(buf).unwrap()
        };
        let before = text(&r);
        assert!(before.contains("keepalive_daemon_audit_inventory_enabled 0"));
        assert!(before.contains("keepalive_daemon_audit_errors_total 0"));
        assert!(!before.contains("tcp_keepalive_connections"), "{before}");
        let a = aggregate(&sample(), &LIMITS, &[5432]);
        m.publish(&a, &LIMITS, &[5432]).unwrap();
        let t = text(&r);
        for line in [
            "tcp_keepalive_connections{keepalive=\"on\"} 5",
            "tcp_keepalive_connections{keepalive=\"off\"} 3",
            "tcp_keepalive_connections_at_risk{idle_limit=\"240s\"} 7",
            "tcp_keepalive_connections_at_risk{idle_limit=\"350s\"} 5",
            "tcp_keepalive_idle_setting_connections{idle_le_seconds=\"30\"} 1",
            "tcp_keepalive_idle_setting_connections{idle_le_seconds=\"7200\"} 5",
            "tcp_keepalive_idle_setting_connections{idle_le_seconds=\"+Inf\"} 5",
            "tcp_keepalive_port_connections{keepalive=\"off\",local_port=\"5432\"} 2",
            "tcp_keepalive_port_connections_at_risk{idle_limit=\"350s\",local_port=\"5432\"} 2",
        ] {
            assert!(t.contains(line), "{line} missing:\n{t}");
        }
        for line in t.lines().filter(|l| l.starts_with("# TYPE")) {
            let name = line.split_whitespace().nth(2).unwrap();
            assert!(t.contains(&format!("# HELP {name} ")), "no HELP for {name}");
        }
        // A second run with fewer limits: the dropped limit's series are gone.
        m.publish(&aggregate(&sample(), &[240], &[5432]), &[240], &[5432])
            .unwrap();
        let t = text(&r);
        assert!(t.contains("tcp_keepalive_connections_at_risk{idle_limit=\"240s\"} 7"));
        assert!(!t.contains("idle_limit=\"350s\""), "{t}");
    }
}

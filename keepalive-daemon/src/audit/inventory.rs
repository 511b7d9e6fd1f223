//! The inventory loop: every --audit.interval, on the blocking pool, the `iter/tcp`
//! program lists the established TCP sockets of the daemon's network namespace (every
//! namespace with --socket.all-namespaces); each socket's record becomes an
//! [`AuditedConnection`] (effective settings, the limits it is at risk for, cgroup path,
//! owning process for those at risk), the counts replace the inventory's gauges and the
//! connections replace the view's inventory.

use std::{
    collections::{HashMap, HashSet},
    sync::{Arc, Mutex, PoisonError},
    time::{Duration, Instant, SystemTime},
};

use keepalive_common::audit::{SocketRecord, at_risk, effective, record_flags};

use super::{
    AuditedConnection, Inventory as View,
    cgroup::CgroupPaths,
    kernel::{AuditKernelError, Inventory, Walk},
    namespaces, owners,
};
use crate::{
    error_chain::Chain,
    exporter::{audit_metrics, state::State},
};

/// What the loop runs with (from the command line).
#[derive(Clone, Debug)]
pub struct Settings {
    pub interval: Duration,
    /// --audit.idle-limit in seconds.
    pub limits: Vec<u32>,
    pub all_namespaces: bool,
    pub local_ports: Vec<u16>,
}

/// One socket record as the view and the metrics see it (`hz` from the inventory).
pub fn audited(r: &SocketRecord, hz: u32, limits: &[u32]) -> AuditedConnection {
    let settings = effective(r, hz);
    AuditedConnection {
        key: r.key,
        netns_inum: r.netns_inum,
        settings,
        at_risk: limits
            .iter()
            .filter_map(|l| Some((*l, at_risk(&settings, *l)?)))
            .collect(),
        cgroup: None,
        uid: r.uid,
        process: None,
    }
}

/// The loop's state between runs; moved onto a blocking thread for each run.
struct Runner {
    inventory: Inventory,
    settings: Settings,
    cgroups: Arc<Mutex<CgroupPaths>>,
    state: Arc<State>,
    /// Whether a failure of this kind was logged at warn already (later ones: debug).
    warned_walk: bool,
    warned_listing: bool,
}

/// Runs the inventory every `settings.interval` for the daemon's life.
pub fn spawn(
    inventory: Inventory,
    settings: Settings,
    cgroups: Arc<Mutex<CgroupPaths>>,
    state: Arc<State>,
) {
    state.metrics.audit.inventory_enabled.set(1);
    let mut runner = Runner {
        inventory,
        cgroups,
        state,
        warned_walk: false,
        warned_listing: false,
        settings,
    };
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(runner.settings.interval);
        // A run longer than the interval delays the next one instead of bunching them.
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            // The walks take milliseconds per thousand sockets and read /proc and
            // /sys/fs/cgroup: off the runtime thread, which serves scrapes meanwhile.
            match tokio::task::spawn_blocking(move || {
                runner.run();
                runner
            })
            .await
            {
                Ok(r) => runner = r,
                Err(e) => {
                    log::error!("audit: inventory run panicked, the inventory stops: {e}");
                    return;
                }
            }
        }
    });
}

impl Runner {
    fn run(&mut self) {
        let started = Instant::now();
        let (walks, errors) = self.walk();
        let hz = self.inventory.hz();
        let mut conns: Vec<AuditedConnection> = walks
            .iter()
            .flat_map(|w| &w.records)
            .filter(|r| r.flags & record_flags::TRAILER == 0)
            .map(|r| audited(r, hz, &self.settings.limits))
            .collect();
        self.name_owners(&walks, &mut conns);
        let metrics = &self.state.metrics.audit;
        let agg =
            audit_metrics::aggregate(&conns, &self.settings.limits, &self.settings.local_ports);
        if let Err(e) = metrics.publish(&agg, &self.settings.limits, &self.settings.local_ports) {
            log::warn!("audit: inventory metrics not updated: {e}");
        }
        let count = conns.len();
        // Keyed by connection: the same addresses in two namespaces (loopback, mostly)
        // keep one entry in the view; the metrics above counted both.
        let connections: HashMap<_, _> = conns.into_iter().map(|c| (c.key, c)).collect();
        self.state.audit.set_inventory(View {
            taken_at: SystemTime::now(),
            connections,
        });
        metrics.errors.inc_by(errors);
        metrics.namespaces.set(walks.len() as i64);
        metrics
            .duration_seconds
            .set(started.elapsed().as_secs_f64());
        metrics.runs.inc();
        log::debug!(
            "audit: {count} established connection(s) in {} namespace(s), {} at risk for {}s, in {:?}",
            walks.len(),
            agg.at_risk.first().copied().unwrap_or(0),
            self.settings.limits.first().copied().unwrap_or(0),
            started.elapsed()
        );
    }

    /// The walks of this run and how many namespaces failed.
    fn walk(&mut self) -> (Vec<Walk>, u64) {
        if !self.settings.all_namespaces {
            return match self.inventory.walk() {
                Ok(w) => (vec![w], 0),
                Err(e) => {
                    self.walk_failed("this namespace", &e);
                    (Vec::new(), 1)
                }
            };
        }
        let listing = namespaces::list();
        let mut errors = 0;
        if let Some(first) = &listing.first_error {
            errors += 1;
            let line = format!(
                "audit: {} namespace file(s) could not be opened (their sockets are not listed), e.g. {first}",
                listing.unreadable
            );
            warn_once(&mut self.warned_listing, &line);
        }
        if listing.truncated {
            log::warn!(
                "audit: namespace listing cut short at {} namespaces (bounds: {} processes, {} namespaces, {:?})",
                listing.namespaces.len(),
                namespaces::MAX_PROCESSES,
                namespaces::MAX_NAMESPACES,
                namespaces::LIST_BUDGET
            );
        }
        let mut walks = Vec::with_capacity(listing.namespaces.len());
        for ns in &listing.namespaces {
            match self.inventory.walk_in(&ns.file) {
                Ok(w) => walks.push(w),
                Err(e) => {
                    errors += 1;
                    self.walk_failed(
                        &format!("namespace {} ({})", ns.inode, ns.path.display()),
                        &e,
                    );
                }
            }
        }
        (walks, errors)
    }

    fn walk_failed(&mut self, which: &str, e: &AuditKernelError) {
        let line = format!("audit: listing the sockets of {which} failed: {}", Chain(e));
        warn_once(&mut self.warned_walk, &line);
    }

    /// Fills the cgroup paths, and the processes of the connections at risk.
    fn name_owners(&self, walks: &[Walk], conns: &mut [AuditedConnection]) {
        let records = walks
            .iter()
            .flat_map(|w| &w.records)
            .filter(|r| r.flags & record_flags::TRAILER == 0);
        let wanted: HashSet<u64> = records
            .clone()
            .zip(conns.iter())
            .filter(|(r, c)| r.socket_inode != 0 && !c.at_risk.is_empty())
            .map(|(r, _)| r.socket_inode)
            .collect();
        let processes = owners::find(&wanted);
        let mut cgroups = self.cgroups.lock().unwrap_or_else(PoisonError::into_inner);
        cgroups.begin_run();
        for (r, c) in records.zip(conns.iter_mut()) {
            c.cgroup = cgroups.resolve(r.cgroup_id);
            c.process = processes.get(&r.socket_inode).cloned();
        }
    }
}

/// Logs `line` at warn the first time, at debug afterwards (it would repeat every run).
fn warn_once(warned: &mut bool, line: &str) {
    if *warned {
        log::debug!("{line}");
    } else {
        log::warn!("{line} (further ones at debug level)");
        *warned = true;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use keepalive_common::audit::RiskReason;

    /// HZ 250: the kernel's default on Debian.
    const HZ: u32 = 250;

    pub(crate) fn record(keepalive: bool, own_idle_s: u32, sysctl_idle_s: u32) -> SocketRecord {
        SocketRecord {
            flags: if keepalive {
                record_flags::KEEPALIVE
            } else {
                0
            },
            keepalive_time: own_idle_s * HZ,
            sysctl_keepalive_time: sysctl_idle_s * HZ,
            sysctl_keepalive_intvl: 75 * HZ,
            sysctl_keepalive_probes: 9,
            idle_jiffies: 12 * HZ,
            uid: 1000,
            ..Default::default()
        }
    }

    #[test]
    fn records_become_connections_with_their_risks() {
        let limits = [240, 350];
        let off = audited(&record(false, 0, 7200), HZ, &limits);
        assert!(!off.settings.keepalive);
        assert_eq!(
            off.at_risk,
            [
                (240, RiskReason::KeepaliveOff),
                (350, RiskReason::KeepaliveOff)
            ]
        );
        // The socket's own 300 s wins over the sysctl: at risk for 240 s only.
        let own = audited(&record(true, 300, 60), HZ, &limits);
        assert_eq!(own.settings.idle_seconds, 300);
        assert_eq!(own.at_risk, [(240, RiskReason::IdleAtOrAboveLimit)]);
        // The sysctl's 60 s applies when the socket sets nothing: safe.
        let sysctl = audited(&record(true, 0, 60), HZ, &limits);
        assert_eq!(sysctl.settings.idle_seconds, 60);
        assert!(sysctl.at_risk.is_empty());
        assert_eq!(sysctl.settings.idle_now_seconds, 12);
        assert_eq!(sysctl.uid, 1000);
        assert_eq!(
            (sysctl.cgroup.clone(), sysctl.process.clone()),
            (None, None)
        );
    }
}

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

use keepalive_common::audit::{SocketRecord, effective};

use super::{
    AuditView, AuditedConnection, Inventory as View,
    cgroup::CgroupPaths,
    kernel::{AuditKernelError, Inventory, WalkEnd},
    namespaces, owners,
};
use crate::{
    error_chain::Chain,
    exporter::{
        audit_metrics::{self, AuditMetrics},
        state::State,
    },
};

/// What the loop needs of the kernel side (kernel.rs's [`Inventory`]; a fake in the
/// tests, which have no kernel programs). The walks hand each record over as it is
/// read: the loop keeps what the view needs, not the 120-byte records.
pub trait Walker: Send + 'static {
    fn hz(&self) -> u32;
    fn walk(&self, each: &mut dyn FnMut(&SocketRecord)) -> Result<WalkEnd, AuditKernelError>;
    fn walk_in(
        &self,
        netns: &std::fs::File,
        each: &mut (dyn FnMut(&SocketRecord) + Send),
    ) -> Result<WalkEnd, AuditKernelError>;
}

impl Walker for Inventory {
    fn hz(&self) -> u32 {
        Inventory::hz(self)
    }
    fn walk(&self, each: &mut dyn FnMut(&SocketRecord)) -> Result<WalkEnd, AuditKernelError> {
        Inventory::walk_each(self, each)
    }
    fn walk_in(
        &self,
        netns: &std::fs::File,
        each: &mut (dyn FnMut(&SocketRecord) + Send),
    ) -> Result<WalkEnd, AuditKernelError> {
        Inventory::walk_in_each(self, netns, each)
    }
}

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
pub fn audited(r: &SocketRecord, hz: u32) -> AuditedConnection {
    AuditedConnection {
        key: r.key,
        netns_inum: r.netns_inum,
        settings: effective(r, hz),
        cgroup: None,
        uid: r.uid,
        process: None,
    }
}

/// What a run keeps of each record beside its [`AuditedConnection`], to name owners.
#[derive(Clone, Copy)]
struct Ids {
    socket_inode: u64,
    cgroup_id: u64,
}

/// The connections of one run, in walk order, and their ids.
#[derive(Default)]
struct Collected {
    conns: Vec<AuditedConnection>,
    ids: Vec<Ids>,
}

impl Collected {
    fn take(&mut self, r: &SocketRecord, hz: u32) {
        self.conns.push(audited(r, hz));
        self.ids.push(Ids {
            socket_inode: r.socket_inode,
            cgroup_id: r.cgroup_id,
        });
    }
}

/// The loop's state between runs; moved onto a blocking thread for each run.
pub struct Runner<W> {
    inventory: W,
    settings: Settings,
    cgroups: Arc<Mutex<CgroupPaths>>,
    /// Owners of the sockets at risk by socket inode, kept between runs so that /proc is
    /// searched only for sockets not seen before (the search reads every descriptor of
    /// every process: 100,000 links took about 0.2 s). `None`: a complete search did
    /// not find one (a search resumed after earlier cut-short ones can miss a socket
    /// opened meanwhile by a process already read: it stays without a process until
    /// it is no longer at risk). Pruned each run to the sockets at risk then. A socket
    /// handed to another process keeps the first owner found.
    owners: HashMap<u64, Option<Arc<str>>>,
    /// Processes read by searches cut short by their bounds since the last complete
    /// one: the next search resumes after them (owners.rs).
    owners_searched: HashSet<u32>,
    /// Whether a failure of this kind was logged at warn already (later ones: debug).
    warned_walk: bool,
    warned_listing: bool,
    /// Connections of the last run: the next run reserves room for them up front, so
    /// its Vecs are large enough to be mmapped from the start (growing from small,
    /// they would start on the heap and leave it fragmented).
    last_count: usize,
}

/// Runs the inventory every `settings.interval` for the daemon's life.
pub fn spawn<W: Walker>(
    inventory: W,
    settings: Settings,
    cgroups: Arc<Mutex<CgroupPaths>>,
    state: Arc<State>,
) {
    state.metrics.audit.inventory_enabled.set(1);
    return_large_blocks();
    let mut runner = Runner::new(inventory, settings, cgroups);
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(runner.settings.interval);
        // A run longer than the interval delays the next one instead of bunching them.
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            // The walks take milliseconds per thousand sockets and read /proc and
            // /sys/fs/cgroup: off the runtime thread, which serves scrapes meanwhile.
            let state = state.clone();
            match tokio::task::spawn_blocking(move || {
                runner.run(&state.metrics.audit, &state.audit);
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

impl<W: Walker> Runner<W> {
    pub fn new(inventory: W, settings: Settings, cgroups: Arc<Mutex<CgroupPaths>>) -> Self {
        Runner {
            inventory,
            settings,
            cgroups,
            owners: HashMap::new(),
            owners_searched: HashSet::new(),
            warned_walk: false,
            warned_listing: false,
            last_count: 0,
        }
    }

    /// One run: walks, publishes the metrics and the view's inventory.
    pub fn run(&mut self, metrics: &AuditMetrics, view: &AuditView) {
        let started = Instant::now();
        let (mut got, namespaces, errors) = self.walk();
        self.name_owners(&mut got);
        let limits = &self.settings.limits;
        let agg = audit_metrics::aggregate(&got.conns, limits, &self.settings.local_ports);
        if let Err(e) = metrics.publish(&agg, limits, &self.settings.local_ports) {
            log::warn!("audit: inventory metrics not updated: {e}");
        }
        let count = got.conns.len();
        self.last_count = count;
        drop(got.ids);
        view.set_inventory(View::new(SystemTime::now(), limits.clone(), got.conns));
        release_free_pages();
        metrics.errors.inc_by(errors);
        metrics.namespaces.set(namespaces as i64);
        metrics
            .duration_seconds
            .set(started.elapsed().as_secs_f64());
        metrics.runs.inc();
        log::debug!(
            "audit: {count} established connection(s) in {namespaces} namespace(s), {} at risk for {}s, in {:?}",
            agg.at_risk.first().copied().unwrap_or(0),
            limits.first().copied().unwrap_or(0),
            started.elapsed()
        );
    }

    /// The connections of this run, how many namespaces were walked and how many
    /// failed.
    fn walk(&mut self) -> (Collected, usize, u64) {
        let hz = self.inventory.hz();
        let room = self.last_count + self.last_count / 8;
        let mut got = Collected {
            conns: Vec::with_capacity(room),
            ids: Vec::with_capacity(room),
        };
        if !self.settings.all_namespaces {
            return match self.inventory.walk(&mut |r| got.take(r, hz)) {
                Ok(_) => (got, 1, 0),
                Err(e) => {
                    self.walk_failed("this namespace", &e);
                    (Collected::default(), 0, 1)
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
        let mut walked = 0;
        // The daemon's own namespace needs no setns (nor CAP_SYS_ADMIN for it).
        let own = namespaces::own_inode();
        for ns in &listing.namespaces {
            // A failed walk may have handed over some records: keep none of them.
            let before = got.conns.len();
            let walk = if Some(ns.inode) == own {
                self.inventory.walk(&mut |r| got.take(r, hz))
            } else {
                self.inventory.walk_in(&ns.file, &mut |r| got.take(r, hz))
            };
            match walk {
                Ok(_) => walked += 1,
                Err(e) => {
                    got.conns.truncate(before);
                    got.ids.truncate(before);
                    errors += 1;
                    self.walk_failed(
                        &format!("namespace {} ({})", ns.inode, ns.path.display()),
                        &e,
                    );
                }
            }
        }
        (got, walked, errors)
    }

    fn walk_failed(&mut self, which: &str, e: &AuditKernelError) {
        let line = format!("audit: listing the sockets of {which} failed: {}", Chain(e));
        warn_once(&mut self.warned_walk, &line);
    }

    /// Fills the cgroup paths, and the processes of the connections at risk.
    fn name_owners(&mut self, got: &mut Collected) {
        let limits = &self.settings.limits;
        let wanted: HashSet<u64> = got
            .ids
            .iter()
            .zip(&got.conns)
            .filter(|(i, c)| i.socket_inode != 0 && c.risks(limits).next().is_some())
            .map(|(i, _)| i.socket_inode)
            .collect();
        self.owners.retain(|inode, _| wanted.contains(inode));
        let unknown: HashSet<u64> = wanted
            .iter()
            .filter(|i| !self.owners.contains_key(i))
            .copied()
            .collect();
        if !unknown.is_empty() {
            let found = owners::find(&unknown, &self.owners_searched);
            if found.complete {
                self.owners_searched.clear();
            } else {
                self.owners_searched.extend(&found.scanned);
            }
            // One shared name per process, not one per socket: a process holding
            // 12,500 sockets at risk made 12,500 copies of the same name.
            let mut names: HashMap<&str, Arc<str>> = self
                .owners
                .values()
                .flatten()
                .map(|n| (&**n, n.clone()))
                .collect();
            let mut fresh = Vec::new();
            for inode in unknown {
                match found.owners.get(&inode) {
                    Some(o) => {
                        let name = names.entry(o.as_str()).or_insert_with(|| o.as_str().into());
                        fresh.push((inode, Some(name.clone())));
                    }
                    None if found.complete => fresh.push((inode, None)),
                    None => {}
                }
            }
            drop(names);
            self.owners.extend(fresh);
        }
        let mut cgroups = self.cgroups.lock().unwrap_or_else(PoisonError::into_inner);
        cgroups.begin_run();
        for (i, c) in got.ids.iter().zip(got.conns.iter_mut()) {
            c.cgroup = cgroups.resolve(i.cgroup_id);
            c.process = self.owners.get(&i.socket_inode).cloned().flatten();
        }
    }
}

/// Makes glibc serve every allocation of 128 KiB or more with its own mmap, returned to
/// the kernel when freed. A run allocates its connections (about 100 bytes a socket:
/// megabytes at 100,000 sockets) and frees the previous run's; glibc's default raises
/// its mmap threshold to the size of each large block freed (up to 32 MiB), after which
/// such blocks come from the heap and their pages stay with the process: measured in
/// BENCHMARKS.md's audit section. Fixing the threshold turns the dynamic raise off.
/// Process-wide, so the rest of the daemon's large buffers are mmapped too (few, and
/// growing a mmapped block is a mremap, not a copy).
fn return_large_blocks() {
    #[cfg(target_env = "gnu")]
    {
        const THRESHOLD: libc::c_int = 128 * 1024;
        // SAFETY: mallopt only changes allocator parameters; it is thread-safe.
        if unsafe { libc::mallopt(libc::M_MMAP_THRESHOLD, THRESHOLD) } != 1 {
            log::debug!("audit: mallopt(M_MMAP_THRESHOLD) refused; freed memory may stay");
        }
    }
}

/// Gives the pages of freed small blocks back to the kernel after a run (glibc keeps
/// them for reuse; the run's hash sets and the previous inventory's names leave holes).
/// The daemon also calls it once after start-up, whose BTF parsing leaves ~27 MiB free
/// but held (BENCHMARKS.md, the RSS floor with --audit.disable).
pub fn release_free_pages() {
    #[cfg(target_env = "gnu")]
    // SAFETY: malloc_trim only returns free memory; it is thread-safe.
    unsafe {
        libc::malloc_trim(0);
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
mod tests;

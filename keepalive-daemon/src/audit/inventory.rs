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
fn release_free_pages() {
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
mod tests {
    use super::*;
    use keepalive_common::audit::{RiskReason, record_flags};

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
        let risks = |c: &AuditedConnection| c.risks(&limits).collect::<Vec<_>>();
        let off = audited(&record(false, 0, 7200), HZ);
        assert!(!off.settings.keepalive);
        assert_eq!(
            risks(&off),
            [
                (240, RiskReason::KeepaliveOff),
                (350, RiskReason::KeepaliveOff)
            ]
        );
        // The socket's own 300 s wins over the sysctl: at risk for 240 s only.
        let own = audited(&record(true, 300, 60), HZ);
        assert_eq!(own.settings.idle_seconds, 300);
        assert_eq!(risks(&own), [(240, RiskReason::IdleAtOrAboveLimit)]);
        // The sysctl's 60 s applies when the socket sets nothing: safe.
        let sysctl = audited(&record(true, 0, 60), HZ);
        assert_eq!(sysctl.settings.idle_seconds, 60);
        assert!(risks(&sysctl).is_empty());
        assert_eq!(sysctl.settings.idle_now_seconds, 12);
        assert_eq!(sysctl.uid, 1000);
        assert_eq!(
            (sysctl.cgroup.clone(), sysctl.process.clone()),
            (None, None)
        );
    }

    /// The kernel side as the tests need it: fixed records, or a failure.
    struct Fake(Option<Vec<SocketRecord>>);

    impl Walker for Fake {
        fn hz(&self) -> u32 {
            HZ
        }
        fn walk(&self, each: &mut dyn FnMut(&SocketRecord)) -> Result<WalkEnd, AuditKernelError> {
            let records = self.0.as_ref().ok_or(AuditKernelError::NotBuilt)?;
            // The reader hands over sockets, not the trailer.
            let sockets = records
                .iter()
                .filter(|r| r.flags & record_flags::TRAILER == 0)
                .inspect(|r| each(r))
                .count();
            Ok(WalkEnd {
                sockets,
                ..Default::default()
            })
        }
        fn walk_in(
            &self,
            _: &std::fs::File,
            each: &mut (dyn FnMut(&SocketRecord) + Send),
        ) -> Result<WalkEnd, AuditKernelError> {
            self.walk(each)
        }
    }

    fn inode_of(fd: &impl std::os::fd::AsRawFd) -> u64 {
        use std::os::unix::fs::MetadataExt as _;
        std::fs::metadata(format!("/proc/self/fd/{}", fd.as_raw_fd()))
            .unwrap()
            .ino()
    }

    fn settings(port: u16) -> Settings {
        Settings {
            interval: Duration::from_secs(30),
            limits: vec![240, 350],
            all_namespaces: false,
            local_ports: vec![port],
        }
    }

    fn text(r: &prometheus::Registry) -> String {
        let mut buf = Vec::new();
        prometheus::Encoder::encode(&prometheus::TextEncoder::new(), &r.gather(), &mut buf)
            .unwrap();
        String::from_utf8(buf).unwrap()
    }

    /// A run fills the view (cgroup paths; processes for connections at risk only) and
    /// the metrics; the trailer is not a connection.
    #[test]
    fn a_run_publishes_view_and_metrics() {
        use std::os::unix::fs::MetadataExt as _;
        let root = std::env::temp_dir().join(format!("ka-inv-test-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&root);
        std::fs::create_dir_all(root.join("app.slice")).unwrap();
        let app = std::fs::metadata(root.join("app.slice")).unwrap().ino();
        // Two sockets of this process stand for the connections' sockets.
        let (s1, s2) = (
            std::net::TcpListener::bind("127.0.0.1:0").unwrap(),
            std::net::TcpListener::bind("127.0.0.1:0").unwrap(),
        );
        let mut off = record(false, 0, 7200);
        off.key.local_port = 5432;
        off.cgroup_id = app;
        off.socket_inode = inode_of(&s1);
        let mut safe = record(true, 0, 60);
        safe.key.local_port = 6000;
        safe.socket_inode = inode_of(&s2);
        let trailer = SocketRecord {
            flags: record_flags::TRAILER,
            ..Default::default()
        };
        let cgroups = Arc::new(Mutex::new(CgroupPaths::new(Some(root.clone()))));
        let fake = Fake(Some(vec![off, safe, trailer]));
        let mut runner = Runner::new(fake, settings(5432), cgroups);
        let registry = prometheus::Registry::new();
        let metrics = AuditMetrics::register(&registry, &[5432]).unwrap();
        let view = AuditView::default();
        runner.run(&metrics, &view);
        std::fs::remove_dir_all(&root).unwrap();

        let inv = view.inventory().expect("published");
        assert_eq!(inv.len(), 2);
        let off = inv.get(0, &off.key).unwrap();
        assert_eq!(off.cgroup.as_deref(), Some("/app.slice"));
        let comm = std::fs::read_to_string("/proc/self/comm").unwrap();
        let me = format!("{}[{}]", comm.trim_end(), std::process::id());
        assert_eq!(off.process.as_deref(), Some(me.as_str()));
        let safe = inv.get(0, &safe.key).unwrap();
        assert!(inv.risks(safe).next().is_none());
        assert_eq!(
            (safe.cgroup.as_deref(), safe.process.as_deref()),
            (None, None)
        );
        assert_eq!((metrics.runs.get(), metrics.errors.get()), (1, 0));
        assert_eq!(metrics.namespaces.get(), 1);
        let t = text(&registry);
        for line in [
            "tcp_keepalive_connections{keepalive=\"off\"} 1",
            "tcp_keepalive_connections{keepalive=\"on\"} 1",
            "tcp_keepalive_connections_at_risk{idle_limit=\"240s\"} 1",
            "tcp_keepalive_port_connections{keepalive=\"off\",local_port=\"5432\"} 1",
            "tcp_keepalive_port_connections{keepalive=\"on\",local_port=\"5432\"} 0",
        ] {
            assert!(t.contains(line), "{line} missing:\n{t}");
        }
    }

    /// A failed walk is an error; the run still completes, with an empty inventory.
    #[test]
    fn a_failed_walk_counts_an_error() {
        let cgroups = Arc::new(Mutex::new(CgroupPaths::new(None)));
        let mut runner = Runner::new(Fake(None), settings(5432), cgroups);
        let registry = prometheus::Registry::new();
        let metrics = AuditMetrics::register(&registry, &[]).unwrap();
        let view = AuditView::default();
        runner.run(&metrics, &view);
        runner.run(&metrics, &view);
        assert_eq!((metrics.runs.get(), metrics.errors.get()), (2, 2));
        assert_eq!(metrics.namespaces.get(), 0);
        assert!(view.inventory().unwrap().is_empty());
        assert!(text(&registry).contains("tcp_keepalive_connections{keepalive=\"off\"} 0"));
    }
}

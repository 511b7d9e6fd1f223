//! The inventory loop's tests: records to connections, a run over a fake kernel side.

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
    prometheus::Encoder::encode(&prometheus::TextEncoder::new(), &r.gather(), &mut buf).unwrap();
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

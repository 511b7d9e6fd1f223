//! The Grafana dashboard against a real Prometheus scraping the daemon.
//!
//! The daemon runs in namespace A with `--metrics.local-port P`, P being the
//! port of a listener in A; a Prometheus (Debian package `prometheus`) runs in
//! the same namespace on 127.0.0.1, scrapes it every second as job
//! "keepalive" and evaluates deploy/prometheus/alerts.yaml. Real keepalive
//! traffic then runs: the probe scenario (both directions, both families),
//! probes both ways plus a peer reset on connections to port P, a keepalive
//! timeout and a peer reset. Afterwards every query of every panel of
//! dashboards/keepalive.json, with the Grafana variables substituted
//! (`$__rate_interval` by a window covering the whole run), must succeed and
//! return data; the panels that show this traffic must show it (non-zero);
//! the variable queries must find the job, the instance and the port; and the
//! alerting rules must evaluate without errors, the traffic alerts pending or
//! firing and the daemon-health alerts quiet. Kernel BPF statistics are on for
//! the test (through a BPF_ENABLE_STATS descriptor, not the sysctl) so that
//! the program run-time panel has data.

use std::io;
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr, TcpListener, TcpStream};
use std::os::fd::{FromRawFd, OwnedFd};
use std::thread;
use std::time::{Duration, Instant, SystemTime};

use keepalive_tests::daemon::daemon_bin;
use keepalive_tests::prometheus::{
    Dashboard, PanelQuery, Prometheus, Sample, ScrapeConfig, dashboard_path, help_lists_flag,
    parse_label_values, substitute, workspace_root,
};
use keepalive_tests::scenarios::{self, Setup};
use keepalive_tests::sockets::{enable_keepalive_staggered, exchange_byte};
use keepalive_tests::timing::{
    ACCEPT_TIMEOUT, CONNECT_TIMEOUT, DAEMON_PORT, POLL_INTERVAL, READ_TIMEOUT, SETTLE,
};
use keepalive_tests::{Conn, Daemon, Family, disable_keepalive, require_root, spawn_readers};

/// Scrape job name (the alerting rules expect "keepalive").
const JOB: &str = "keepalive";
const SCRAPE_INTERVAL: Duration = Duration::from_secs(1);
/// Bound on the first successful scrape, and on a scrape after the traffic.
const SCRAPE_WAIT: Duration = Duration::from_secs(20);
/// How long keepalive probes run both ways on the per-port connections.
const PORT_PROBE_PHASE: Duration = Duration::from_secs(4);
/// The flag that makes the daemon export per-port series.
const LOCAL_PORT_FLAG: &str = "--metrics.local-port";

/// A panel query (panel title, refId) and the labels of a series it returns.
type Expectation = (
    &'static str,
    &'static str,
    &'static [(&'static str, &'static str)],
);

/// Panel queries that must return a non-zero value for a series with the
/// given labels after the traffic of this test.
const MUST_SHOW_TRAFFIC: &[Expectation] = &[
    ("Probes sent", "A", &[("family", "ipv4")]),
    ("Probes sent", "A", &[("family", "ipv6")]),
    ("Probes received", "A", &[("family", "ipv4")]),
    ("Probes received", "A", &[("family", "ipv6")]),
    ("Probe answer ratio", "A", &[("direction", "sent")]),
    ("Probe answer ratio", "A", &[("direction", "received")]),
    ("Keepalive resets by reason", "A", &[("reason", "timeout")]),
    (
        "Keepalive resets by reason",
        "A",
        &[("reason", "peer_reset")],
    ),
    ("Keepalive timeouts", "A", &[]),
    (
        "Keepalive timer probes vs probes sent on the wire",
        "A",
        &[],
    ),
    (
        "Keepalive timer probes vs probes sent on the wire",
        "B",
        &[],
    ),
    ("Probes by local port", "A", &[("direction", "sent")]),
    ("Probes by local port", "A", &[("direction", "received")]),
    (
        "Probe answer ratio by local port",
        "A",
        &[("direction", "sent")],
    ),
    (
        "Probe answer ratio by local port",
        "A",
        &[("direction", "received")],
    ),
    (
        "Keepalive resets by local port",
        "A",
        &[("reason", "peer_reset")],
    ),
    ("Daemon up", "A", &[]),
    ("Daemon up", "B", &[]),
    ("Socket hooks in use", "A", &[]),
    ("tc programs attached", "A", &[]),
    (
        "eBPF program run time per run",
        "A",
        &[("program", "ka_tc_egress")],
    ),
];

/// Alerts this test's traffic must trigger (pending or firing); every other
/// alert must stay inactive.
const TRAFFIC_ALERTS: &[&str] = &["KeepaliveTimeouts", "KeepaliveResets"];

#[test]
fn every_dashboard_query_returns_data_from_a_live_prometheus() {
    require_root();
    let t0 = Instant::now();
    let dashboard = load_dashboard();
    let queries = dashboard.queries();
    assert!(!queries.is_empty(), "the dashboard has no query");

    let _bpf_stats = BpfStats::enable();
    let setup = Setup::new("dash");
    let listener = PortListener::bind(&setup.a);
    let port = listener.port.to_string();
    let daemon = Daemon::spawn_with(
        &setup.a,
        &[&setup.veth.a_if],
        &[LOCAL_PORT_FLAG, port.as_str()],
    );
    println!("[{:5.1}s] daemon up", t0.elapsed().as_secs_f64());
    let target = SocketAddr::from((Ipv4Addr::LOCALHOST, DAEMON_PORT));
    let prom = Prometheus::start(
        &setup.a,
        &ScrapeConfig {
            job: JOB.to_owned(),
            target,
            interval: SCRAPE_INTERVAL,
            rule_files: vec![workspace_root().join("deploy/prometheus/alerts.yaml")],
        },
    );
    prom.wait_target_up(JOB, SCRAPE_WAIT);
    println!(
        "[{:5.1}s] daemon and prometheus ({}) up; local port {port}",
        t0.elapsed().as_secs_f64(),
        prom.addr()
    );
    run_traffic(&setup, &listener, t0);
    prom.wait_scraped_after(JOB, SystemTime::now(), SCRAPE_WAIT);

    // Windows cover everything since Prometheus started, so rate() sees
    // every sample of the run (dozens at one scrape per second).
    let window = format!("{}s", prom.age().as_secs() + 5);
    let instance = target.to_string();
    let vars = [
        ("datasource", "prometheus"),
        ("job", JOB),
        ("instance", instance.as_str()),
        ("local_port", port.as_str()),
        ("__rate_interval", window.as_str()),
        ("__range", window.as_str()),
        ("__interval", "1s"),
    ];
    let mut failures = check_variables(&dashboard, &prom, &vars);
    let results = query_panels(&queries, &prom, &vars, &mut failures);
    failures.extend(check_traffic_shown(&queries, &results));
    failures.extend(check_alert_rules(&prom));

    assert!(
        failures.is_empty(),
        "{} problem(s) with dashboards/keepalive.json on live data (window {window}):\n{}\n\
         daemon stderr:\n{}",
        failures.len(),
        failures.join("\n"),
        daemon.stderr()
    );
    println!(
        "[{:5.1}s] {} panel queries checked",
        t0.elapsed().as_secs_f64(),
        queries.len()
    );
    prom.stop();
    daemon.terminate();
    println!("[{:5.1}s] done", t0.elapsed().as_secs_f64());
}

/// The dashboard, after checking that this daemon has per-port metrics (the per-port
/// panels need them) and that the dashboard lints clean.
fn load_dashboard() -> Dashboard {
    let bin = daemon_bin();
    assert!(
        help_lists_flag(&bin, LOCAL_PORT_FLAG),
        "`{} --help` does not list {LOCAL_PORT_FLAG}: the per-port panels of \
         dashboards/keepalive.json (Probes by local port, Probe answer ratio by local port, \
         Keepalive resets by local port) could not be checked. This test needs a daemon \
         with per-port metrics.",
        bin.display()
    );
    let dashboard = Dashboard::load(&dashboard_path());
    let problems = dashboard.lint();
    assert!(
        problems.is_empty(),
        "dashboards/keepalive.json: {problems:#?}"
    );
    dashboard
}

/// Real keepalive traffic: the probe scenario, probes and a peer reset on the per-port
/// connections, a keepalive timeout, a peer reset.
fn run_traffic(setup: &Setup, listener: &PortListener, t0: Instant) {
    scenarios::keepalive_probes(setup, 1, 1, || ());
    println!("[{:5.1}s] probes scenario done", t0.elapsed().as_secs_f64());
    listener.probes_then_peer_reset(setup);
    println!(
        "[{:5.1}s] per-port traffic done",
        t0.elapsed().as_secs_f64()
    );
    let timeouts = scenarios::keepalive_timeout(setup, 1, 1, || ());
    assert!(
        timeouts
            .oracle
            .outcomes
            .iter()
            .all(|(_, o)| o.is_etimedout()),
        "harness: not every connection timed out: {:?}",
        timeouts.oracle.outcomes
    );
    // The timeout scenario leaves B dropping everything from A.
    setup.b.cmd(&["nft", "delete", "table", "inet", "kat"]);
    let resets = scenarios::peer_reset(setup, 1, 1, || ());
    assert!(
        resets
            .oracle
            .outcomes
            .iter()
            .all(|(_, o)| o.is_econnreset()),
        "harness: not every connection was reset: {:?}",
        resets.oracle.outcomes
    );
    println!(
        "[{:5.1}s] timeout and peer reset scenarios done",
        t0.elapsed().as_secs_f64()
    );
}

/// Template variables: label_values() must find what the panels filter on. Returns
/// what is wrong.
fn check_variables(
    dashboard: &Dashboard,
    prom: &Prometheus<'_>,
    vars: &[(&str, &str)],
) -> Vec<String> {
    let mut failures = Vec::new();
    for var in dashboard.variables() {
        let Some(query) = var.query.as_deref().filter(|_| var.kind == "query") else {
            continue;
        };
        let Some((selector, label)) = parse_label_values(query) else {
            failures.push(format!(
                "variable {}: unsupported query {query:?}",
                var.name
            ));
            continue;
        };
        let selector = match substitute(selector.as_deref().unwrap_or("{__name__!=\"\"}"), vars) {
            Ok(s) => s,
            Err(e) => {
                failures.push(format!("variable {}: {e:#}", var.name));
                continue;
            }
        };
        let want = vars
            .iter()
            .find(|(n, _)| *n == var.name)
            .map(|(_, v)| *v)
            .unwrap_or_default();
        match prom.label_values(&selector, &label) {
            Ok(values) if values.iter().any(|v| v == want) => {
                println!("variable ${}: {values:?}", var.name);
            }
            Ok(values) => failures.push(format!(
                "variable {} ({query}): values {values:?} do not include {want:?}",
                var.name
            )),
            Err(e) => failures.push(format!("variable {} ({query}): {e:#}", var.name)),
        }
    }
    failures
}

/// A panel query's (panel title, refId) and the series it returned.
type PanelResult = (String, String, Vec<Sample>);

/// Every panel query must succeed and return series: those that do, with what they
/// returned; the others go to `failures`.
fn query_panels(
    queries: &[PanelQuery],
    prom: &Prometheus<'_>,
    vars: &[(&str, &str)],
    failures: &mut Vec<String>,
) -> Vec<PanelResult> {
    let mut results = Vec::new();
    for q in queries {
        let promql = match substitute(&q.expr, vars) {
            Ok(p) => p,
            Err(e) => {
                failures.push(format!("{}: {e:#}", q.name()));
                continue;
            }
        };
        match prom.query(&promql) {
            Err(e) => failures.push(format!("{}: query failed: {e:#}\n    {promql}", q.name())),
            Ok(samples) if samples.is_empty() => failures.push(format!(
                "{}: EMPTY result (no series)\n    {promql}",
                q.name()
            )),
            Ok(samples) => {
                let shown: Vec<String> = samples.iter().take(8).map(Sample::describe).collect();
                println!(
                    "ok {}: {} series: {}{}",
                    q.name(),
                    samples.len(),
                    shown.join("; "),
                    if samples.len() > 8 { "; ..." } else { "" }
                );
                results.push((q.panel_title.clone(), q.ref_id.clone(), samples));
            }
        }
    }
    results
}

/// The panels that show this traffic ([`MUST_SHOW_TRAFFIC`]) must show it. Returns
/// what is wrong.
fn check_traffic_shown(queries: &[PanelQuery], results: &[PanelResult]) -> Vec<String> {
    let mut failures = Vec::new();
    for (title, ref_id, labels) in MUST_SHOW_TRAFFIC {
        let Some((_, _, samples)) = results.iter().find(|(t, r, _)| t == title && r == ref_id)
        else {
            if !queries
                .iter()
                .any(|q| q.panel_title == *title && q.ref_id == *ref_id)
            {
                failures.push(format!("no panel {title:?} with query {ref_id}"));
            }
            continue; // already reported as failed or empty
        };
        let matching: Vec<&Sample> = samples
            .iter()
            .filter(|s| {
                labels
                    .iter()
                    .all(|(k, v)| s.labels.get(*k).map(String::as_str) == Some(*v))
            })
            .collect();
        if !matching
            .iter()
            .any(|s| s.value.is_finite() && s.value > 0.0)
        {
            let got: Vec<String> = samples.iter().map(Sample::describe).collect();
            failures.push(format!(
                "{title:?} {ref_id}: no non-zero series with {labels:?} after the test traffic; \
                 got {got:?}"
            ));
        }
    }
    failures
}

/// The alerting rules, evaluated by this Prometheus on the live data: all healthy, the
/// [`TRAFFIC_ALERTS`] pending or firing, every other alert inactive. Returns what is
/// wrong.
fn check_alert_rules(prom: &Prometheus<'_>) -> Vec<String> {
    let rules = match prom.rules() {
        Err(e) => return vec![format!("/api/v1/rules: {e:#}")],
        Ok(rules) => rules,
    };
    let mut failures = Vec::new();
    if rules.is_empty() {
        failures.push("prometheus loaded no alerting rule".to_owned());
    }
    for r in &rules {
        println!("rule {}: health {}, state {}", r.name, r.health, r.state);
        if r.health != "ok" {
            failures.push(format!(
                "rule {}: health {:?} ({})",
                r.name, r.health, r.last_error
            ));
        }
        let traffic = TRAFFIC_ALERTS.contains(&r.name.as_str());
        let active = r.state == "pending" || r.state == "firing";
        if traffic && !active {
            failures.push(format!(
                "alert {} is {:?} after keepalive timeouts and resets",
                r.name, r.state
            ));
        } else if !traffic && r.state != "inactive" {
            failures.push(format!(
                "alert {} is {:?} on a healthy daemon",
                r.name, r.state
            ));
        }
    }
    failures
}

/// A dual-stack listener in namespace A whose port is given to the daemon
/// with --metrics.local-port: connections to it have that local port on A.
struct PortListener {
    listener: TcpListener,
    port: u16,
}

impl PortListener {
    fn bind(a: &keepalive_tests::Netns) -> PortListener {
        let listener = a.run_in(|| {
            TcpListener::bind((Ipv6Addr::UNSPECIFIED, 0)).expect("bind [::]:0 in namespace A")
        });
        listener
            .set_nonblocking(true)
            .expect("nonblocking listener");
        let port = listener.local_addr().expect("listener address").port();
        PortListener { listener, port }
    }

    /// One IPv4 and one IPv6 connection from B to this port. In the returned
    /// [`Conn`]s, `client` is A's (accepted) end and `server` B's end.
    fn connect(&self, setup: &Setup) -> Vec<Conn> {
        let port = self.port;
        let clients: Vec<(Family, TcpStream)> = setup.b.run_in(|| {
            Family::ALL
                .iter()
                .map(|&f| {
                    let addr = SocketAddr::new(f.a_addr(), port);
                    let stream = (0..10)
                        .find_map(
                            |_| match TcpStream::connect_timeout(&addr, CONNECT_TIMEOUT) {
                                Ok(s) => Some(s),
                                Err(_) => {
                                    thread::sleep(Duration::from_millis(200));
                                    None
                                }
                            },
                        )
                        .unwrap_or_else(|| panic!("connecting to {addr} from B"));
                    (f, stream)
                })
                .collect()
        });
        let deadline = Instant::now() + ACCEPT_TIMEOUT;
        let mut accepted = Vec::new();
        while accepted.len() < clients.len() {
            match self.listener.accept() {
                Ok((stream, peer)) => {
                    stream.set_nonblocking(false).expect("blocking socket");
                    accepted.push((peer, stream));
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    assert!(
                        Instant::now() < deadline,
                        "accepted {} of {} connections on port {port}",
                        accepted.len(),
                        clients.len()
                    );
                    thread::sleep(POLL_INTERVAL);
                }
                Err(e) => panic!("accept on port {port}: {e}"),
            }
        }
        clients
            .into_iter()
            .map(|(family, b_end)| {
                let local = b_end.local_addr().expect("B address");
                let idx = accepted
                    .iter()
                    .position(|(peer, _)| {
                        peer.port() == local.port()
                            && peer.ip().to_canonical() == local.ip().to_canonical()
                    })
                    .unwrap_or_else(|| panic!("no accepted socket for {local}"));
                let (_, a_end) = accepted.swap_remove(idx);
                Conn {
                    family,
                    client: a_end,
                    server: Some(b_end),
                }
            })
            .collect()
    }

    /// Keepalive probes both ways on connections to this port, then B drops
    /// its ends without telling A (its RSTs are dropped), so A's next probe
    /// is answered by a RST: a peer reset on this local port.
    fn probes_then_peer_reset(&self, setup: &Setup) {
        let mut conns = self.connect(setup);
        exchange_byte(&conns);
        enable_keepalive_staggered(&conns);
        thread::sleep(PORT_PROBE_PHASE);
        for c in &conns {
            disable_keepalive(c.server());
        }
        setup.b.nft(
            "table inet katport {\n\
             \tchain output {\n\
             \t\ttype filter hook output priority 0; policy accept;\n\
             \t\ttcp flags & rst == rst counter drop\n\
             \t}\n\
             }\n",
        );
        let readers = spawn_readers(&conns, READ_TIMEOUT);
        for c in &mut conns {
            let b_end = c.server.take().expect("B's end");
            keepalive_tests::sockets::set_linger_zero(&b_end);
            drop(b_end);
        }
        setup.b.cmd(&["nft", "delete", "table", "inet", "katport"]);
        let outcomes = readers.join();
        assert!(
            outcomes.iter().all(|(_, o)| o.is_econnreset()),
            "harness: A's ends on port {} were not all reset by B: {outcomes:?}",
            self.port
        );
        thread::sleep(SETTLE);
    }
}

/// Kernel BPF run-time statistics enabled for as long as this lives, through
/// a BPF_ENABLE_STATS file descriptor: reference-counted by the kernel, so it
/// neither clobbers nor is undone by kernel.bpf_stats_enabled writes of other
/// processes, and it ends with the descriptor even if the test dies.
struct BpfStats {
    _fd: OwnedFd,
}

impl BpfStats {
    fn enable() -> BpfStats {
        /// `enum bpf_cmd` BPF_ENABLE_STATS (5.8+).
        const BPF_ENABLE_STATS: libc::c_int = 32;
        // `union bpf_attr` for it: `struct { __u32 type; }`, BPF_STATS_RUN_TIME = 0.
        let attr: u32 = 0;
        // SAFETY: bpf(2) reads `size_of::<u32>()` bytes from a live u32.
        let fd = unsafe {
            libc::syscall(
                libc::SYS_bpf,
                BPF_ENABLE_STATS,
                (&raw const attr).cast::<libc::c_void>(),
                size_of::<u32>() as libc::c_uint,
            )
        };
        let fd = i32::try_from(fd).expect("fd fits in i32");
        assert!(
            fd >= 0,
            "bpf(BPF_ENABLE_STATS): {}",
            io::Error::last_os_error()
        );
        // SAFETY: the kernel just returned this descriptor to us.
        BpfStats {
            _fd: unsafe { OwnedFd::from_raw_fd(fd) },
        }
    }
}

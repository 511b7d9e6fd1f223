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
//! the program run-time panel has data. The keepalive audit lists A's connections every
//! second (`--audit.interval 1s`): the daemon's own end of Prometheus' scrape
//! connection has no SO_KEEPALIVE, so it is at risk for both default idle limits, which
//! the at-risk panels and the KeepaliveConnectionsAtRisk alert (pending) must show.

use std::net::{Ipv4Addr, SocketAddr};
use std::time::{Duration, Instant, SystemTime};

use keepalive_tests::bpf_syscall::BpfStats;
use keepalive_tests::daemon::daemon_bin;
use keepalive_tests::port_listener::PortListener;
use keepalive_tests::prometheus::{
    Dashboard, PanelQuery, Prometheus, Sample, ScrapeConfig, dashboard_path, help_lists_flag,
    parse_label_values, substitute, workspace_root,
};
use keepalive_tests::scenarios::{self, Setup};
use keepalive_tests::timing::DAEMON_PORT;
use keepalive_tests::{Daemon, require_root};

/// Scrape job name (the alerting rules expect "keepalive").
const JOB: &str = "keepalive";
const SCRAPE_INTERVAL: Duration = Duration::from_secs(1);
/// Bound on the first successful scrape, and on a scrape after the traffic.
const SCRAPE_WAIT: Duration = Duration::from_secs(20);
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
    (
        "Connections at risk by idle limit",
        "A",
        &[("idle_limit", "240s")],
    ),
    (
        "Connections at risk by idle limit",
        "A",
        &[("idle_limit", "350s")],
    ),
    (
        "Established connections by keepalive",
        "A",
        &[("keepalive", "off")],
    ),
    ("Audit inventory", "A", &[]),
    ("Audit runs and errors", "A", &[]),
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
/// alert must stay inactive. KeepaliveConnectionsAtRisk: the daemon's end of the
/// scrape connection has keepalive off (see the module header).
const TRAFFIC_ALERTS: &[&str] = &[
    "KeepaliveTimeouts",
    "KeepaliveResets",
    "KeepaliveConnectionsAtRisk",
];
/// The audit lists the connections every second, so the at-risk gauges have data
/// within the test.
const AUDIT_FLAGS: [&str; 2] = ["--audit.interval", "1s"];

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
        &[
            LOCAL_PORT_FLAG,
            port.as_str(),
            AUDIT_FLAGS[0],
            AUDIT_FLAGS[1],
        ],
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

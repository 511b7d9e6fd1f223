//! The Prometheus alerting rules (deploy/prometheus) and the daemon's exposition,
//! checked with promtool (Debian package `prometheus`; missing promtool fails
//! these tests, it never skips them):
//!
//! - `promtool check rules` (with every lint fatal) accepts alerts.yaml;
//! - `promtool test rules` passes the unit tests of alerts_test.yaml, and those
//!   cover every alert both firing and not firing;
//! - `promtool check metrics` finds no problem in a live scrape of the daemon.

use std::collections::BTreeSet;

use keepalive_tests::daemon::daemon_bin;
use keepalive_tests::names::PORT_PROBES;
use keepalive_tests::prometheus::{
    describe_output, help_lists_flag, promtool, run_promtool, workspace_root,
};
use keepalive_tests::scenarios::Setup;
use keepalive_tests::{Daemon, require_root};

const RULES: &str = "deploy/prometheus/alerts.yaml";
const RULE_TESTS: &str = "deploy/prometheus/alerts_test.yaml";

fn read(rel: &str) -> String {
    let path = workspace_root().join(rel);
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("reading {}: {e}", path.display()))
}

#[test]
fn alerting_rules_pass_promtool_check() {
    let out = run_promtool(
        &["check", "rules", "--lint=all", "--lint-fatal", RULES],
        None,
    );
    let what = format!("promtool check rules --lint=all --lint-fatal {RULES}");
    println!("{}", String::from_utf8_lossy(&out.stdout));
    assert!(out.status.success(), "{}", describe_output(&what, &out));
}

#[test]
fn alerting_rules_pass_their_unit_tests() {
    let out = run_promtool(&["test", "rules", RULE_TESTS], None);
    let what = format!("promtool test rules {RULE_TESTS}");
    println!("{}", String::from_utf8_lossy(&out.stdout));
    assert!(out.status.success(), "{}", describe_output(&what, &out));
}

/// Every alert of alerts.yaml has a unit test where it fires (`exp_alerts:`
/// followed by entries) and one where it does not (`exp_alerts: []`).
#[test]
fn every_alert_is_tested_firing_and_not_firing() {
    let rules = read(RULES);
    let alerts: BTreeSet<String> = rules
        .lines()
        .filter_map(|l| l.trim().strip_prefix("- alert:"))
        .map(|name| name.trim().to_owned())
        .collect();
    assert!(!alerts.is_empty(), "no alert found in {RULES}");

    let tests = read(RULE_TESTS);
    let (mut firing, mut quiet) = (BTreeSet::new(), BTreeSet::new());
    let mut current: Option<String> = None;
    for line in tests.lines() {
        let line = line.trim();
        if let Some(name) = line.strip_prefix("alertname:") {
            current = Some(name.trim().to_owned());
        } else if let Some(rest) = line.strip_prefix("exp_alerts:") {
            let name = current
                .clone()
                .unwrap_or_else(|| panic!("exp_alerts before any alertname in {RULE_TESTS}"));
            if rest.trim() == "[]" {
                quiet.insert(name);
            } else {
                assert!(
                    rest.trim().is_empty(),
                    "write exp_alerts as `[]` or as a block list in {RULE_TESTS}"
                );
                firing.insert(name);
            }
        }
    }
    let unknown: Vec<_> = firing
        .union(&quiet)
        .filter(|n| !alerts.contains(*n))
        .collect();
    assert!(
        unknown.is_empty(),
        "{RULE_TESTS} tests alerts that {RULES} does not define: {unknown:?}"
    );
    let never_firing: Vec<_> = alerts.difference(&firing).collect();
    let never_quiet: Vec<_> = alerts.difference(&quiet).collect();
    assert!(
        never_firing.is_empty() && never_quiet.is_empty(),
        "alerts without a firing test: {never_firing:?}; without a not-firing test: {never_quiet:?}"
    );
}

/// `promtool check metrics` on a live /metrics of the daemon prints nothing.
#[test]
fn live_metrics_pass_promtool_check_metrics() {
    require_root();
    // Fail before setting anything up if promtool is missing.
    let promtool = promtool();
    let bin = daemon_bin();
    // Lint the per-port families too when this daemon has them.
    let per_port = help_lists_flag(&bin, "--metrics.local-port");
    let extra: &[&str] = if per_port {
        &["--metrics.local-port", "5432"]
    } else {
        println!("note: this daemon has no --metrics.local-port; per-port families not linted");
        &[]
    };
    let setup = Setup::new("lint");
    let daemon = Daemon::spawn_with(&setup.a, &[&setup.veth.a_if], extra);
    let text = daemon.scrape_text();
    assert!(
        !per_port || text.contains(PORT_PROBES),
        "--metrics.local-port 5432 given but no per-port series in:\n{text}"
    );

    let out = run_promtool(&["check", "metrics"], Some(&text));
    let what = format!("{} check metrics < /metrics", promtool.display());
    let printed = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        out.status.success() && printed.trim().is_empty(),
        "promtool found problems in the daemon's /metrics:\n{}\n--- /metrics ---\n{text}",
        describe_output(&what, &out)
    );
    println!(
        "promtool check metrics: clean ({} lines of exposition)",
        text.lines().count()
    );
    daemon.terminate();
}

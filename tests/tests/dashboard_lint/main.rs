//! Lints dashboards/keepalive.json with the rules of Grafana's dashboard-linter.
//!
//! dashboard-linter is a Go program, and none of the registries this project's machines
//! reach ships it (no Debian, PyPI or npm package; the Go module proxy and GitHub
//! releases are out of reach), so its rules are re-implemented here, one test per rule,
//! named after it. Each test asserts that the dashboard satisfies the rule, and that the
//! rule catches one violation planted in a copy of the dashboard (so a rule that cannot
//! fail does not pass unnoticed). PromQL is parsed with the promql-parser crate.
//!
//! Covered (dashboard-linter's default rule set): template-datasource-rule,
//! template-job-rule, template-instance-rule, template-label-promql-rule,
//! template-on-time-change-reload-rule, panel-datasource-rule,
//! panel-title-description-rule, panel-units-rule, panel-no-targets-rule,
//! target-promql-rule, target-rate-interval-rule, target-job-rule,
//! target-instance-rule, target-counter-agg-rule, uneditable-dashboard.
//!
//! Checked as the rule states it rather than as dashboard-linter's code happens to:
//! target-counter-agg-rule looks at the metric name (dashboard-linter compares the
//! printed selector, which ends in `}` whenever it has matchers, so it never fires on a
//! dashboard that filters by job); panel-units-rule skips panels with *non-empty* value
//! mappings (dashboard-linter skips any panel with a `mappings` key, even `[]`);
//! template-label-promql-rule parses the whole selector of label_values() and the whole
//! expression of query_result() (dashboard-linter accepts a query whose beginning
//! parses). Warnings of dashboard-linter (data source and job/instance labels) are
//! errors here.
//!
//! Beyond the linter: `audit_panels_query_every_audit_family` (dashboard_lint/audit.rs)
//! checks the keepalive audit's panels against the daemon's metric names.
//!
//! Not applicable: target-logql-rule and target-logql-auto-rule (the dashboard has no
//! Loki data source); rules outside dashboard-linter's default set (refresh and time
//! interval rules, Grafana v2 schema fields: the dashboard uses the v1 JSON model).
//! The structural checks the live test relies on (unique panel ids, gridPos, the
//! variables its queries need) stay in `Dashboard::lint` (tests/src/prometheus).

mod audit;
mod promql;
mod rules;
mod units;

use keepalive_tests::prometheus::{Dashboard, dashboard_path};
use serde_json::{Value, json};

/// Asserts that `rule` finds nothing wrong with the dashboard, and something wrong
/// with a copy of it changed by `plant`.
fn check(name: &str, rule: impl Fn(&Dashboard) -> Vec<String>, plant: impl FnOnce(&mut Value)) {
    let dashboard = Dashboard::load(&dashboard_path());
    let problems = rule(&dashboard);
    assert!(
        problems.is_empty(),
        "dashboards/keepalive.json breaks {name}:\n{}",
        problems.join("\n")
    );
    let mut broken = dashboard.json().clone();
    plant(&mut broken);
    let found = rule(&Dashboard::from_json(broken));
    assert!(
        !found.is_empty(),
        "{name} did not catch the violation planted in a copy of the dashboard"
    );
    println!("{name}: ok; on the planted violation: {}", found.join("; "));
}

/// The `i`th panel of the dashboard that is not a row.
fn panel(d: &mut Value, i: usize) -> &mut Value {
    d["panels"]
        .as_array_mut()
        .expect("panels")
        .iter_mut()
        .filter(|p| p["type"] != "row")
        .nth(i)
        .expect("enough panels")
}

/// The template variable named `name`.
fn variable<'a>(d: &'a mut Value, name: &str) -> &'a mut Value {
    d["templating"]["list"]
        .as_array_mut()
        .expect("templating.list")
        .iter_mut()
        .find(|v| v["name"] == name)
        .expect("variable")
}

#[test]
fn template_datasource_rule() {
    check(
        "template-datasource-rule",
        rules::template_datasource,
        |d| {
            variable(d, "datasource")["name"] = json!("prom");
        },
    );
}

#[test]
fn template_job_rule() {
    check(
        "template-job-rule",
        |d| rules::template_required(d, "job"),
        |d| {
            variable(d, "job")["allValue"] = json!(".*");
        },
    );
}

#[test]
fn template_instance_rule() {
    check(
        "template-instance-rule",
        |d| rules::template_required(d, "instance"),
        |d| {
            variable(d, "instance")["multi"] = json!(false);
        },
    );
}

#[test]
fn template_label_promql_rule() {
    check(
        "template-label-promql-rule",
        rules::template_label_promql,
        |d| {
            variable(d, "instance")["query"]["query"] = json!("label_values(up{, instance)");
        },
    );
}

#[test]
fn template_on_time_change_reload_rule() {
    check(
        "template-on-time-change-reload-rule",
        rules::template_on_time_change_reload,
        |d| {
            variable(d, "job")["refresh"] = json!(1);
        },
    );
}

#[test]
fn panel_datasource_rule() {
    check("panel-datasource-rule", rules::panel_datasource, |d| {
        panel(d, 0)["datasource"]["uid"] = json!("P1809F7CD0C75ACF3");
    });
}

#[test]
fn panel_title_description_rule() {
    check(
        "panel-title-description-rule",
        rules::panel_title_description,
        |d| {
            panel(d, 0)["description"] = json!("");
        },
    );
}

#[test]
fn panel_units_rule() {
    check("panel-units-rule", rules::panel_units, |d| {
        panel(d, 0)["fieldConfig"]["defaults"]["unit"] = json!("probes/s");
    });
}

#[test]
fn panel_no_targets_rule() {
    check("panel-no-targets-rule", rules::panel_no_targets, |d| {
        panel(d, 0)
            .as_object_mut()
            .expect("panel")
            .remove("targets");
    });
}

#[test]
fn target_promql_rule() {
    check("target-promql-rule", rules::target_promql, |d| {
        panel(d, 0)["targets"][0]["expr"] = json!("sum by (family (up)");
    });
}

#[test]
fn target_rate_interval_rule() {
    check(
        "target-rate-interval-rule",
        rules::target_rate_interval,
        |d| {
            panel(d, 0)["targets"][0]["expr"] = json!(
                r#"sum(rate(tcp_keepalive_probes_total{job=~"$job",instance=~"$instance"}[5m]))"#
            );
        },
    );
}

#[test]
fn target_job_rule() {
    check(
        "target-job-rule",
        |d| rules::target_required_matcher(d, "job"),
        |d| {
            panel(d, 0)["targets"][0]["expr"] = json!(
                r#"sum(rate(tcp_keepalive_probes_total{instance=~"$instance"}[$__rate_interval]))"#
            );
        },
    );
}

#[test]
fn target_instance_rule() {
    check(
        "target-instance-rule",
        |d| rules::target_required_matcher(d, "instance"),
        |d| {
            panel(d, 0)["targets"][0]["expr"] = json!(
                r#"sum(rate(tcp_keepalive_probes_total{job=~"$job",instance="a"}[$__rate_interval]))"#
            );
        },
    );
}

#[test]
fn target_counter_agg_rule() {
    check("target-counter-agg-rule", rules::target_counter_agg, |d| {
        panel(d, 0)["targets"][0]["expr"] =
            json!(r#"sum(tcp_keepalive_probes_total{job=~"$job",instance=~"$instance"})"#);
    });
}

#[test]
fn uneditable_dashboard() {
    check("uneditable-dashboard", rules::uneditable, |d| {
        d["editable"] = json!(true);
    });
}

/// Not a dashboard-linter rule: the keepalive audit's families are all queried, by
/// their own labels, and the idle-time histogram is a heatmap (dashboard_lint/audit.rs).
#[test]
fn audit_panels_query_every_audit_family() {
    check("audit-panels", audit::audit_queries, |d| {
        let heatmap = d["panels"]
            .as_array_mut()
            .expect("panels")
            .iter_mut()
            .find(|p| p["type"] == "heatmap")
            .expect("a heatmap panel");
        let expr = heatmap["targets"][0]["expr"]
            .as_str()
            .expect("expr")
            .to_owned();
        heatmap["targets"][0]["expr"] = json!(expr.replace("_bucket", ""));
    });
    check("audit-panels (labels)", audit::audit_queries, |d| {
        let p = panel(d, 0);
        p["targets"][0]["expr"] = json!(
            r#"sum by (reason) (tcp_keepalive_connections_at_risk{job=~"$job",instance=~"$instance"})"#
        );
    });
}

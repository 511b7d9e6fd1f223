//! The keepalive audit's panels (issue #12): every audit family is queried, with only
//! the labels it has, and the idle-time histogram is a heatmap of its buckets' rates.
//! Not a dashboard-linter rule: it checks the dashboard against the daemon's metric
//! contract (metric_names.rs), which the linter cannot know. It looks at every panel
//! type, the heatmap included (dashboard-linter's query rules skip heatmaps).

use keepalive_tests::names;
use keepalive_tests::prometheus::{Dashboard, array_at, str_at};
use promql_parser::parser::{Expr, LabelModifier};

use crate::promql::{RATE_INTERVAL_SAMPLE, call_name, metric_name, parse, selectors, walk};

/// Each audit series name as queried, with its labels (job and instance aside).
const FAMILIES: &[(&str, &[&str])] = &[
    (names::CONNECTIONS, &["keepalive"]),
    (names::CONNECTIONS_AT_RISK, &["idle_limit"]),
    (names::IDLE_SETTING_CONNECTIONS, &["idle_le_seconds"]),
    (names::PORT_CONNECTIONS, &["local_port", "keepalive"]),
    (
        names::PORT_CONNECTIONS_AT_RISK,
        &["local_port", "idle_limit"],
    ),
    (names::IDLE_FAILURES, &["cause", "keepalive"]),
    (BUCKETS, &["le"]),
    (names::AUDIT_INVENTORY_ENABLED, &[]),
    (names::AUDIT_RUNS, &[]),
    (names::AUDIT_ERRORS, &[]),
    (names::AUDIT_DURATION, &[]),
    (names::AUDIT_NAMESPACES, &[]),
    (names::ENDING_EVENTS_LOST, &[]),
];

/// The histogram's bucket series (a histogram is queried through its buckets).
const BUCKETS: &str = "tcp_idle_connection_failure_idle_seconds_bucket";

fn variables(d: &Dashboard) -> Vec<String> {
    d.variables().into_iter().map(|v| v.name.clone()).collect()
}

/// What is wrong with the audit's panels; empty when they are right.
pub fn audit_queries(d: &Dashboard) -> Vec<String> {
    let mut problems = Vec::new();
    if !BUCKETS.starts_with(names::IDLE_FAILURE_IDLE_SECONDS) {
        problems.push(format!(
            "{BUCKETS} is not a bucket of {}",
            names::IDLE_FAILURE_IDLE_SECONDS
        ));
    }
    let vars = variables(d);
    let mut queried = Vec::new();
    for p in d.panels() {
        for t in array_at(p, "targets") {
            let expr = str_at(t, "expr");
            let Ok(e) = parse(expr, &vars) else {
                problems.push(format!("{:?}: invalid PromQL {expr:?}", str_at(p, "title")));
                continue;
            };
            for vs in selectors(&e) {
                let Some(name) = metric_name(vs) else {
                    continue;
                };
                if let Some((_, labels)) = FAMILIES.iter().find(|(n, _)| *n == name) {
                    queried.push(name.to_owned());
                    problems.extend(grouping_problems(&e, name, labels, str_at(p, "title")));
                }
            }
        }
    }
    for (name, _) in FAMILIES {
        if !queried.iter().any(|q| q == name) {
            problems.push(format!("no panel queries {name}"));
        }
    }
    problems.extend(heatmap_problems(d, &vars));
    problems
}

/// `sum by (...)` over an audit family groups only by its own labels, job or instance.
fn grouping_problems(e: &Expr, name: &str, labels: &[&str], title: &str) -> Vec<String> {
    let mut found = Vec::new();
    walk(e, &mut |node, _| {
        if let Expr::Aggregate(a) = node
            && let Some(LabelModifier::Include(by)) = &a.modifier
            && selectors(&a.expr)
                .iter()
                .any(|vs| metric_name(vs) == Some(name))
        {
            for l in &by.labels {
                if !labels.contains(&l.as_str()) && l != "instance" && l != "job" {
                    found.push(format!("{title:?}: {name} has no label {l:?}"));
                }
            }
        }
    });
    found
}

/// The heatmap: a `heatmap` panel whose query is `sum by (le) (rate(BUCKETS[$__rate_interval]))`
/// in Grafana's heatmap format, with seconds on its y axis.
fn heatmap_problems(d: &Dashboard, vars: &[String]) -> Vec<String> {
    let heatmaps: Vec<_> = d
        .panels()
        .into_iter()
        .filter(|p| str_at(p, "type") == "heatmap")
        .collect();
    let Some(p) = heatmaps.iter().find(|p| {
        array_at(p, "targets")
            .iter()
            .any(|t| str_at(t, "expr").contains(BUCKETS))
    }) else {
        return vec![format!("no heatmap panel queries {BUCKETS}")];
    };
    let mut problems = Vec::new();
    if p.pointer("/options/yAxis/unit").and_then(|u| u.as_str()) != Some("s") {
        problems.push("the idle-time heatmap's y axis is not in seconds".to_owned());
    }
    for t in array_at(p, "targets") {
        if str_at(t, "format") != "heatmap" {
            problems.push("the idle-time heatmap's query is not in heatmap format".to_owned());
        }
        let Ok(e) = parse(str_at(t, "expr"), vars) else {
            continue;
        };
        let by_le = matches!(&e, Expr::Aggregate(a)
            if matches!(&a.modifier, Some(LabelModifier::Include(l)) if l.labels == ["le"]));
        let mut rate_of_buckets = false;
        walk(&e, &mut |node, parents| {
            if let Expr::MatrixSelector(ms) = node {
                rate_of_buckets |= metric_name(&ms.vs) == Some(BUCKETS)
                    && ms.range == RATE_INTERVAL_SAMPLE
                    && parents.last().and_then(|p| call_name(p)) == Some("rate");
            }
        });
        if !by_le || !rate_of_buckets {
            problems.push(format!(
                "the idle-time heatmap's query is not sum by (le) (rate({BUCKETS}[$__rate_interval])): {}",
                str_at(t, "expr")
            ));
        }
    }
    problems
}

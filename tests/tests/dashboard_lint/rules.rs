//! The rules of Grafana's dashboard-linter, each a function from the dashboard to what
//! it finds wrong (empty: the rule holds). Names and scope (which panel types a rule
//! looks at) follow dashboard-linter's; where its check is looser than its stated
//! intent, the intent is checked (see the module header of main.rs).

use keepalive_tests::prometheus::{Dashboard, array_at, parse_label_values, str_at};
use promql_parser::parser::Expr;
use serde_json::Value;

use crate::promql::{
    RATE_INTERVAL_SAMPLE, call_name, has_regex_matcher, metric_name, parse, selectors, walk,
};
use crate::units::GRAFANA_UNITS;

/// Panel types whose title, description, unit and targets are checked.
const PANEL_TYPES: &[&str] = &[
    "stat",
    "singlestat",
    "graph",
    "table",
    "timeseries",
    "gauge",
];
/// Panel types whose data source is checked.
const DATASOURCE_PANEL_TYPES: &[&str] = &["singlestat", "graph", "table", "timeseries"];
/// Panel types whose queries are checked.
const QUERY_PANEL_TYPES: &[&str] = &[
    "singlestat",
    "gauge",
    "table",
    "stat",
    "state-timeline",
    "timeseries",
];

fn templates(d: &Dashboard) -> &[Value] {
    d.json()
        .get("templating")
        .map(|t| array_at(t, "list"))
        .unwrap_or_default()
}

/// A template's query: a string, or the `query` of an object.
fn template_query(t: &Value) -> &str {
    match t.get("query") {
        Some(Value::String(s)) => s,
        Some(q) => str_at(q, "query"),
        None => "",
    }
}

/// A data source reference's uid: the string itself, or the `uid` of an object.
fn datasource_uid(ds: Option<&Value>) -> &str {
    match ds {
        Some(Value::String(s)) => s,
        Some(d) => str_at(d, "uid"),
        None => "",
    }
}

fn datasource_templates(d: &Dashboard) -> Vec<&Value> {
    templates(d)
        .iter()
        .filter(|t| str_at(t, "type") == "datasource")
        .collect()
}

/// The first data source template selects Prometheus (most rules apply only then).
fn is_prometheus(d: &Dashboard) -> bool {
    datasource_templates(d)
        .first()
        .is_some_and(|t| template_query(t) == "prometheus")
}

fn variable_names(d: &Dashboard) -> Vec<String> {
    templates(d)
        .iter()
        .map(|t| str_at(t, "name").to_owned())
        .collect()
}

/// A Prometheus label name: `[a-zA-Z_][a-zA-Z0-9_]*`.
fn is_label_name(s: &str) -> bool {
    let mut bytes = s.bytes();
    bytes
        .next()
        .is_some_and(|b| b.is_ascii_alphabetic() || b == b'_')
        && bytes.all(|b| b.is_ascii_alphanumeric() || b == b'_')
}

/// "prometheus" -> "Prometheus".
fn title_case(word: &str) -> String {
    let mut c = word.chars();
    c.next()
        .map(|f| {
            f.to_uppercase()
                .chain(c.flat_map(char::to_lowercase))
                .collect()
        })
        .unwrap_or_default()
}

fn panel_name(p: &Value) -> String {
    format!(
        "panel {} {:?}",
        p.get("id").unwrap_or(&Value::Null),
        str_at(p, "title")
    )
}

/// The panels of `types` (every panel, rows included, when `types` is empty).
fn panels_of<'a>(d: &'a Dashboard, types: &[&str]) -> Vec<&'a Value> {
    d.panels()
        .into_iter()
        .filter(|p| types.is_empty() || types.contains(&str_at(p, "type")))
        .collect()
}

/// Every (panel, target, name for messages) of panels of `types`.
fn targets<'a>(d: &'a Dashboard, types: &[&str]) -> Vec<(&'a Value, &'a Value, String)> {
    let mut out = Vec::new();
    for p in panels_of(d, types) {
        for t in array_at(p, "targets") {
            let name = format!("{} target {}", panel_name(p), str_at(t, "refId"));
            out.push((p, t, name));
        }
    }
    out
}

/// template-datasource-rule: a data source template exists, named `datasource` (or
/// `<type>_datasource`) and labelled `Data source` (or `<Type> data source`).
pub fn template_datasource(d: &Dashboard) -> Vec<String> {
    let ds = datasource_templates(d);
    if ds.is_empty() {
        return vec!["no templated data source".to_owned()];
    }
    let mut problems = Vec::new();
    for t in &ds {
        let query = template_query(t);
        let mut names = vec![format!("{}_datasource", query.to_lowercase())];
        let mut labels = vec![format!("{} data source", title_case(query))];
        if ds.len() == 1 {
            names.push("datasource".to_owned());
            labels.push("Data source".to_owned());
        }
        let (name, label) = (str_at(t, "name"), str_at(t, "label"));
        if !names.iter().any(|n| n == name) {
            problems.push(format!(
                "data source variable {name:?}: name it one of {names:?}"
            ));
        }
        if !labels.iter().any(|l| l == label) {
            problems.push(format!(
                "data source variable label {label:?}: use one of {labels:?}"
            ));
        }
    }
    problems
}

/// template-job-rule and template-instance-rule: the `name` template queries the
/// templated Prometheus, is labelled `Name`, multi-select, with `.+` as its All value.
pub fn template_required(d: &Dashboard, name: &str) -> Vec<String> {
    if !is_prometheus(d) {
        return Vec::new();
    }
    let Some(t) = templates(d).iter().find(|t| str_at(t, "name") == name) else {
        return vec![format!("no {name} template")];
    };
    let mut problems = Vec::new();
    let uid = datasource_uid(t.get("datasource"));
    let allowed = [
        "$datasource",
        "${datasource}",
        "$prometheus_datasource",
        "${prometheus_datasource}",
    ];
    if !allowed.contains(&uid) {
        problems.push(format!(
            "{name} template: data source {uid:?}, not $datasource"
        ));
    }
    if str_at(t, "type") != "query" {
        problems.push(format!(
            "{name} template: type {:?}, not query",
            str_at(t, "type")
        ));
    }
    if str_at(t, "label") != title_case(name) {
        problems.push(format!(
            "{name} template: label {:?}, not {:?}",
            str_at(t, "label"),
            title_case(name)
        ));
    }
    if t.get("multi") != Some(&Value::Bool(true)) {
        problems.push(format!("{name} template: not multi-select"));
    }
    if str_at(t, "allValue") != ".+" {
        problems.push(format!(
            "{name} template: allValue {:?}, not \".+\"",
            str_at(t, "allValue")
        ));
    }
    problems
}

/// template-label-promql-rule: query templates use a Prometheus data source function
/// whose PromQL parses (label_values' selector, query_result's expression).
pub fn template_label_promql(d: &Dashboard) -> Vec<String> {
    if !is_prometheus(d) {
        return Vec::new();
    }
    let vars = variable_names(d);
    let mut problems = Vec::new();
    for t in templates(d).iter().filter(|t| str_at(t, "type") == "query") {
        let query = template_query(t).trim();
        let name = str_at(t, "name");
        let call = query.split_once('(').filter(|(f, rest)| {
            !f.is_empty()
                && f.bytes().all(|b| b.is_ascii_lowercase() || b == b'_')
                && rest.len() > 1
                && rest.ends_with(')')
        });
        let Some((func, rest)) = call else {
            problems.push(format!(
                "template {name}: query {query:?} is not function(argument)"
            ));
            continue;
        };
        let arg = &rest[..rest.len() - 1];
        let parsed = match func {
            "label_values" => match parse_label_values(query) {
                Some((Some(selector), label)) if is_label_name(&label) => {
                    parse(&selector, &vars).map(drop)
                }
                Some((None, label)) if is_label_name(&label) => Ok(()),
                _ => Err("not label_values(selector, label) with a valid label name".to_owned()),
            },
            "query_result" => parse(arg, &vars).map(drop),
            "label_names" | "metrics" => Ok(()),
            other => Err(format!("{other} is not a Prometheus template function")),
        };
        if let Err(e) = parsed {
            problems.push(format!("template {name}: {query:?}: {e}"));
        }
    }
    problems
}

/// template-on-time-change-reload-rule: query templates refresh on time range change.
pub fn template_on_time_change_reload(d: &Dashboard) -> Vec<String> {
    templates(d)
        .iter()
        .filter(|t| str_at(t, "type") == "query")
        .filter(|t| t.get("refresh").and_then(Value::as_i64) != Some(2))
        .map(|t| {
            format!(
                "template {}: refresh is not 2 (on time range change)",
                str_at(t, "name")
            )
        })
        .collect()
}

/// panel-datasource-rule: panels use a templated data source.
pub fn panel_datasource(d: &Dashboard) -> Vec<String> {
    let mut allowed = Vec::new();
    for t in datasource_templates(d) {
        allowed.push(format!("${}", str_at(t, "name")));
        allowed.push(format!("${{{}}}", str_at(t, "name")));
    }
    panels_of(d, DATASOURCE_PANEL_TYPES)
        .into_iter()
        .filter(|p| {
            !allowed
                .iter()
                .any(|a| a == datasource_uid(p.get("datasource")))
        })
        .map(|p| {
            format!(
                "{}: data source {:?} is not templated",
                panel_name(p),
                datasource_uid(p.get("datasource"))
            )
        })
        .collect()
}

/// panel-title-description-rule: panels have a title and a description.
pub fn panel_title_description(d: &Dashboard) -> Vec<String> {
    panels_of(d, PANEL_TYPES)
        .into_iter()
        .filter(|p| str_at(p, "title").is_empty() || str_at(p, "description").is_empty())
        .map(|p| format!("{}: no title or no description", panel_name(p)))
        .collect()
}

/// panel-units-rule: panels have a valid Grafana unit, except stat panels showing
/// non-numeric fields and panels with value mappings.
pub fn panel_units(d: &Dashboard) -> Vec<String> {
    let mut problems = Vec::new();
    for p in panels_of(d, PANEL_TYPES) {
        let reduce_fields = p
            .pointer("/options/reduceOptions/fields")
            .and_then(Value::as_str);
        if str_at(p, "type") == "stat" && reduce_fields.is_some_and(|f| !f.is_empty()) {
            continue;
        }
        let overrides = p
            .pointer("/fieldConfig/overrides")
            .and_then(Value::as_array);
        let props: Vec<&Value> = overrides
            .into_iter()
            .flatten()
            .flat_map(|o| array_at(o, "properties"))
            .collect();
        let non_empty = |v: Option<&Value>| {
            v.is_some_and(|v| !v.is_null() && v.as_array().is_none_or(|a| !a.is_empty()))
        };
        let mapped = props
            .iter()
            .any(|o| str_at(o, "id") == "mappings" && non_empty(o.get("value")))
            || non_empty(p.pointer("/fieldConfig/defaults/mappings"));
        if mapped {
            continue;
        }
        let unit = props
            .iter()
            .rev()
            .find(|o| str_at(o, "id") == "unit")
            .and_then(|o| o.get("value").and_then(Value::as_str))
            .or_else(|| {
                p.pointer("/fieldConfig/defaults/unit")
                    .and_then(Value::as_str)
            })
            .unwrap_or_default();
        if !GRAFANA_UNITS.contains(&unit) {
            problems.push(format!("{}: no or invalid unit {unit:?}", panel_name(p)));
        }
    }
    problems
}

/// panel-no-targets-rule: panels have targets.
pub fn panel_no_targets(d: &Dashboard) -> Vec<String> {
    panels_of(d, PANEL_TYPES)
        .into_iter()
        .filter(|p| p.get("targets").is_none_or(Value::is_null))
        .map(|p| format!("{}: no targets", panel_name(p)))
        .collect()
}

/// target-promql-rule: every query parses as PromQL (after the variables are
/// expanded); a target without a query must reference an existing panel.
pub fn target_promql(d: &Dashboard) -> Vec<String> {
    if !is_prometheus(d) {
        return Vec::new();
    }
    let vars = variable_names(d);
    let mut problems = Vec::new();
    for (_, t, name) in targets(d, QUERY_PANEL_TYPES) {
        let expr = str_at(t, "expr");
        let panel_ref = t
            .get("panelId")
            .and_then(Value::as_i64)
            .filter(|id| *id > 0);
        if expr.is_empty()
            && let Some(id) = panel_ref
        {
            if !d
                .panels()
                .iter()
                .any(|p| p.get("id").and_then(Value::as_i64) == Some(id))
            {
                problems.push(format!(
                    "{name}: references panel {id}, which does not exist"
                ));
            }
            continue;
        }
        if let Err(e) = parse(expr, &vars) {
            problems.push(format!("{name}: invalid PromQL {expr:?}: {e}"));
        }
    }
    problems
}

/// Runs `check(expr, parsed)` on every target of `types` whose query parses (invalid
/// PromQL is target-promql-rule's business), prefixing what it finds with the target.
fn each_query(
    d: &Dashboard,
    types: &[&str],
    check: &mut dyn FnMut(&Expr) -> Vec<String>,
) -> Vec<String> {
    let vars = variable_names(d);
    let mut problems = Vec::new();
    for (_, t, name) in targets(d, types) {
        if let Ok(e) = parse(str_at(t, "expr"), &vars) {
            problems.extend(check(&e).into_iter().map(|p| format!("{name}: {p}")));
        }
    }
    problems
}

/// target-rate-interval-rule: range selectors under rate() and irate() use
/// `$__rate_interval`.
pub fn target_rate_interval(d: &Dashboard) -> Vec<String> {
    if !is_prometheus(d) {
        return Vec::new();
    }
    each_query(d, QUERY_PANEL_TYPES, &mut |e| {
        let mut found = Vec::new();
        walk(e, &mut |node, parents| {
            let Expr::MatrixSelector(ms) = node else {
                return;
            };
            if ms.range == RATE_INTERVAL_SAMPLE || parents.is_empty() {
                return;
            }
            match parents.last().and_then(|p| call_name(p)) {
                None => found.push(format!("range selector {node} outside a function call")),
                Some("rate" | "irate") => found.push(format!("{node}: use [$__rate_interval]")),
                Some(_) => {}
            }
        });
        found
    })
}

/// target-job-rule and target-instance-rule: every selector has `label=~"$label"`.
pub fn target_required_matcher(d: &Dashboard, label: &str) -> Vec<String> {
    if !is_prometheus(d) {
        return Vec::new();
    }
    let value = format!("${label}");
    each_query(d, &[], &mut |e| {
        selectors(e)
            .into_iter()
            .filter(|vs| !has_regex_matcher(vs, label, &value))
            .map(|vs| format!("selector {vs} lacks {label}=~\"{value}\""))
            .collect()
    })
}

/// target-counter-agg-rule: counters (`*_total`) are read only through rate(),
/// irate() or increase() over a range.
pub fn target_counter_agg(d: &Dashboard) -> Vec<String> {
    each_query(d, &[], &mut |e| {
        let mut found = Vec::new();
        walk(e, &mut |node, parents| {
            let (vs, ranged) = match node {
                Expr::VectorSelector(vs) => (vs, false),
                Expr::MatrixSelector(ms) => (&ms.vs, true),
                _ => return,
            };
            if !metric_name(vs).is_some_and(|n| n.ends_with("_total")) {
                return;
            }
            let agg = parents.last().and_then(|p| call_name(p));
            if !ranged || !matches!(agg, Some("rate" | "irate" | "increase")) {
                found.push(format!(
                    "counter {node} is not read through rate, irate or increase"
                ));
            }
        });
        found
    })
}

/// uneditable-dashboard: the dashboard is not editable (provisioned dashboards are
/// changed in the repository, not in Grafana).
pub fn uneditable(d: &Dashboard) -> Vec<String> {
    match d.json().get("editable") {
        Some(Value::Bool(true)) => vec!["editable is true".to_owned()],
        _ => Vec::new(),
    }
}

//! The PromQL side of the dashboard lint: Grafana variables expanded to sample values
//! the way dashboard-linter does (outside double-quoted strings only, so that
//! `job=~"$job"` keeps its variable for the matcher rules), parsing with the
//! promql-parser crate, and a walk over the syntax tree that knows each node's parents.

use std::time::Duration;

use keepalive_tests::prometheus::substitute;
use promql_parser::label::{MatchOp, Matcher};
use promql_parser::parser::{Expr, VectorSelector};

/// The sample value `$__rate_interval` expands to: a range no one writes by hand, so a
/// range selector that has it came from the variable. Sample durations stay under
/// 2^32 of their unit, which promql-parser's duration parser needs.
pub const RATE_INTERVAL_SAMPLE: Duration = Duration::from_millis(3_887_654_321);

/// Grafana's global variables and a sample value of each (durations for the range
/// variables, numbers for the `_ms`/`_s` ones).
fn global_samples() -> Vec<(&'static str, String)> {
    vec![
        (
            "__rate_interval",
            format!("{}ms", RATE_INTERVAL_SAMPLE.as_millis()),
        ),
        ("__interval", "2867856611ms".to_owned()),
        ("__range", "1069770749ms".to_owned()),
        ("__auto", "12345ms".to_owned()),
        ("__interval_ms", "7781188786".to_owned()),
        ("__range_ms", "6737667980".to_owned()),
        ("__range_s", "9397795485".to_owned()),
    ]
}

/// `expr` with every Grafana variable outside double-quoted strings replaced by a
/// sample value: the global ones by [`global_samples`], template variables
/// (`template_vars`) by their own name.
pub fn expand(expr: &str, template_vars: &[String]) -> Result<String, String> {
    let globals = global_samples();
    let mut vars: Vec<(&str, &str)> = globals.iter().map(|(n, v)| (*n, v.as_str())).collect();
    vars.extend(template_vars.iter().map(|n| (n.as_str(), n.as_str())));
    let mut out = Vec::new();
    for (i, part) in expr.split('"').enumerate() {
        if i % 2 == 1 {
            out.push(part.to_owned()); // inside a string: as written
        } else {
            out.push(substitute(part, &vars).map_err(|e| format!("{e:#}"))?);
        }
    }
    Ok(out.join("\""))
}

/// `expr` expanded and parsed.
pub fn parse(expr: &str, template_vars: &[String]) -> Result<Expr, String> {
    promql_parser::parser::parse(&expand(expr, template_vars)?)
}

/// The direct sub-expressions of `e`.
fn children(e: &Expr) -> Vec<&Expr> {
    match e {
        Expr::Aggregate(a) => {
            let mut c = vec![a.expr.as_ref()];
            c.extend(a.param.as_deref());
            c
        }
        Expr::Unary(u) => vec![u.expr.as_ref()],
        Expr::Binary(b) => vec![b.lhs.as_ref(), b.rhs.as_ref()],
        Expr::Paren(p) => vec![p.expr.as_ref()],
        Expr::Subquery(s) => vec![s.expr.as_ref()],
        Expr::Call(c) => c.args.args.iter().map(AsRef::as_ref).collect(),
        Expr::NumberLiteral(_)
        | Expr::StringLiteral(_)
        | Expr::VectorSelector(_)
        | Expr::MatrixSelector(_)
        | Expr::Extension(_) => Vec::new(),
    }
}

/// Calls `visit(node, parents)` on every node of `e`, parents outermost first.
pub fn walk<'a>(e: &'a Expr, visit: &mut dyn FnMut(&'a Expr, &[&'a Expr])) {
    fn go<'a>(
        e: &'a Expr,
        parents: &mut Vec<&'a Expr>,
        visit: &mut dyn FnMut(&'a Expr, &[&'a Expr]),
    ) {
        visit(e, parents);
        parents.push(e);
        for c in children(e) {
            go(c, parents, visit);
        }
        parents.pop();
    }
    go(e, &mut Vec::new(), visit);
}

/// Every series selector of `e`, instant and range alike.
pub fn selectors(e: &Expr) -> Vec<&VectorSelector> {
    let mut out = Vec::new();
    walk(e, &mut |node, _| match node {
        Expr::VectorSelector(vs) => out.push(vs),
        Expr::MatrixSelector(ms) => out.push(&ms.vs),
        _ => {}
    });
    out
}

/// The metric name of a selector (`foo{...}` or `{__name__="foo"}`).
pub fn metric_name(vs: &VectorSelector) -> Option<&str> {
    vs.name.as_deref().or_else(|| {
        vs.matchers
            .matchers
            .iter()
            .find(|m| m.name == "__name__" && matches!(m.op, MatchOp::Equal))
            .map(|m| m.value.as_str())
    })
}

/// The name of the function `e` calls, if it is a call.
pub fn call_name(e: &Expr) -> Option<&'static str> {
    match e {
        Expr::Call(c) => Some(c.func.name),
        _ => None,
    }
}

/// Whether the selector has the matcher `label=~"value"` exactly (in every group of an
/// `or` selector).
pub fn has_regex_matcher(vs: &VectorSelector, label: &str, value: &str) -> bool {
    let has = |group: &[Matcher]| {
        group
            .iter()
            .any(|m| m.name == label && matches!(m.op, MatchOp::Re(_)) && m.value == value)
    };
    if vs.matchers.or_matchers.is_empty() {
        has(&vs.matchers.matchers)
    } else {
        vs.matchers.or_matchers.iter().all(|g| has(g))
    }
}

//! The Grafana dashboard (`dashboards/keepalive.json`): its panels, queries
//! and template variables, a structural lint, and the substitution of
//! Grafana variables so its PromQL can be sent to a real Prometheus. The JSON
//! model is read with serde_json.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use anyhow::{Result, anyhow};

use super::workspace_root;
use serde_json::Value;

/// Path of the dashboard in the repository.
pub fn dashboard_path() -> PathBuf {
    workspace_root().join("dashboards/keepalive.json")
}

/// One query of one panel.
#[derive(Clone, Debug)]
pub struct PanelQuery {
    pub panel_id: i64,
    pub panel_title: String,
    pub ref_id: String,
    /// PromQL with the Grafana variables still in it.
    pub expr: String,
}

impl PanelQuery {
    /// `#id "title" refId`, for messages.
    pub fn name(&self) -> String {
        format!("#{} {:?} {}", self.panel_id, self.panel_title, self.ref_id)
    }
}

/// A template variable of the dashboard.
#[derive(Clone, Debug)]
pub struct Variable {
    pub name: String,
    pub kind: String,
    /// The query of a `query` variable (e.g. `label_values(..., instance)`).
    pub query: Option<String>,
}

/// A Grafana dashboard JSON model.
#[derive(Clone, Debug)]
pub struct Dashboard {
    json: Value,
}

/// The string at `key` of an object, or "" when absent or not a string.
pub fn str_at<'a>(v: &'a Value, key: &str) -> &'a str {
    v.get(key).and_then(Value::as_str).unwrap_or_default()
}

/// The array at `key` of an object, or an empty slice.
pub fn array_at<'a>(v: &'a Value, key: &str) -> &'a [Value] {
    v.get(key)
        .and_then(Value::as_array)
        .map(Vec::as_slice)
        .unwrap_or_default()
}

impl Dashboard {
    pub fn load(path: &Path) -> Dashboard {
        let text = std::fs::read_to_string(path)
            .unwrap_or_else(|e| panic!("reading {}: {e}", path.display()));
        let json: Value = serde_json::from_str(&text)
            .unwrap_or_else(|e| panic!("{} is not valid JSON: {e:#}", path.display()));
        Dashboard { json }
    }

    /// A dashboard from its JSON model (e.g. a copy changed to test a lint).
    pub fn from_json(json: Value) -> Dashboard {
        Dashboard { json }
    }

    /// The whole JSON model.
    pub fn json(&self) -> &Value {
        &self.json
    }

    /// Every panel, rows included, with the panels of collapsed rows
    /// (which Grafana nests inside the row) flattened in.
    pub fn panels(&self) -> Vec<&Value> {
        fn walk<'a>(panels: &'a [Value], out: &mut Vec<&'a Value>) {
            for p in panels {
                out.push(p);
                walk(array_at(p, "panels"), out);
            }
        }
        let mut out = Vec::new();
        walk(array_at(&self.json, "panels"), &mut out);
        out
    }

    /// Every non-empty `expr` of every panel target.
    pub fn queries(&self) -> Vec<PanelQuery> {
        let mut out = Vec::new();
        for p in self.panels() {
            for t in array_at(p, "targets") {
                let expr = str_at(t, "expr").trim();
                if expr.is_empty() {
                    continue;
                }
                out.push(PanelQuery {
                    panel_id: p.get("id").and_then(Value::as_f64).unwrap_or(-1.0) as i64,
                    panel_title: str_at(p, "title").to_owned(),
                    ref_id: str_at(t, "refId").to_owned(),
                    expr: expr.to_owned(),
                });
            }
        }
        out
    }

    /// The template variables.
    pub fn variables(&self) -> Vec<Variable> {
        let list = self
            .json
            .get("templating")
            .map(|t| array_at(t, "list"))
            .unwrap_or_default();
        list.iter()
            .map(|v| Variable {
                name: str_at(v, "name").to_owned(),
                kind: str_at(v, "type").to_owned(),
                query: match v.get("query") {
                    Some(Value::String(s)) => Some(s.clone()),
                    Some(q @ Value::Object(_)) => Some(str_at(q, "query").to_owned()),
                    _ => None,
                },
            })
            .collect()
    }

    /// What is wrong with the dashboard's structure: every panel but rows
    /// needs a title, a description, a unit, the `${datasource}` data source
    /// and at least one query with a refId; panel ids are unique; the data
    /// source, job and instance variables exist, job and instance being
    /// `label_values` on keepalive_daemon_build_info.
    pub fn lint(&self) -> Vec<String> {
        let mut problems = Vec::new();
        let mut ids = BTreeMap::new();
        for p in self.panels() {
            let title = str_at(p, "title");
            let id = p.get("id").and_then(Value::as_f64);
            let name = format!("panel {id:?} {title:?}");
            match id {
                Some(id) => {
                    if let Some(other) = ids.insert(id as i64, title.to_owned()) {
                        problems.push(format!("{name}: id also used by {other:?}"));
                    }
                }
                None => problems.push(format!("{name}: no id")),
            }
            if p.get("gridPos").is_none() {
                problems.push(format!("{name}: no gridPos"));
            }
            if str_at(p, "type") == "row" {
                continue;
            }
            if title.trim().is_empty() {
                problems.push(format!("{name}: no title"));
            }
            if str_at(p, "description").trim().is_empty() {
                problems.push(format!("{name}: no description"));
            }
            let unit = p
                .get("fieldConfig")
                .and_then(|f| f.get("defaults"))
                .map(|d| str_at(d, "unit"))
                .unwrap_or_default();
            if unit.trim().is_empty() {
                problems.push(format!("{name}: no unit (fieldConfig.defaults.unit)"));
            }
            let ds = p.get("datasource").map(|d| str_at(d, "uid"));
            if ds != Some("${datasource}") {
                problems.push(format!(
                    "{name}: datasource uid is {ds:?}, not the ${{datasource}} variable"
                ));
            }
            let targets = array_at(p, "targets");
            if targets.is_empty() {
                problems.push(format!("{name}: no query"));
            }
            for t in targets {
                if str_at(t, "refId").is_empty() || str_at(t, "expr").trim().is_empty() {
                    problems.push(format!("{name}: a target lacks refId or expr"));
                }
            }
        }
        let vars = self.variables();
        let find = |n: &str| vars.iter().find(|v| v.name == n);
        match find("datasource") {
            Some(v) if v.kind == "datasource" => {}
            other => problems.push(format!("no datasource variable (got {other:?})")),
        }
        for name in ["job", "instance"] {
            match find(name) {
                Some(v)
                    if v.kind == "query"
                        && v.query.as_deref().is_some_and(|q| {
                            q.starts_with("label_values(keepalive_daemon_build_info")
                                && q.trim_end().ends_with(&format!(", {name})"))
                        }) => {}
                other => problems.push(format!(
                    "variable {name} must be label_values(keepalive_daemon_build_info..., {name}); \
                     got {other:?}"
                )),
            }
        }
        problems
    }
}

/// Replaces Grafana variables (`$name`, `${name}`, `${name:format}`,
/// `[[name]]`) in `text` with their values. Fails on a variable it has no
/// value for, so nothing unsubstituted reaches Prometheus.
pub fn substitute(text: &str, vars: &[(&str, &str)]) -> Result<String> {
    let lookup = |name: &str| -> Result<&str> {
        vars.iter()
            .find(|(n, _)| *n == name)
            .map(|(_, v)| *v)
            .ok_or_else(|| anyhow!("no value for Grafana variable ${name} in {text:?}"))
    };
    let is_ident = |c: char| c.is_ascii_alphanumeric() || c == '_';
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(i) = rest.find(['$', '[']) {
        out.push_str(&rest[..i]);
        let tail = &rest[i..];
        if let Some(inner) = tail.strip_prefix("${") {
            let end = inner
                .find('}')
                .ok_or_else(|| anyhow!("unterminated ${{ in {text:?}"))?;
            let name = inner[..end].split(':').next().unwrap_or_default();
            out.push_str(lookup(name)?);
            rest = &inner[end + 1..];
        } else if let Some(inner) = tail.strip_prefix("[[") {
            match inner.find("]]") {
                Some(end) if inner[..end].chars().all(is_ident) && end > 0 => {
                    out.push_str(lookup(&inner[..end])?);
                    rest = &inner[end + 2..];
                }
                _ => {
                    out.push('[');
                    rest = &tail[1..];
                }
            }
        } else if let Some(inner) = tail.strip_prefix('$') {
            let end = inner.find(|c: char| !is_ident(c)).unwrap_or(inner.len());
            if end == 0 {
                out.push('$'); // a regex anchor, not a variable
            } else {
                out.push_str(lookup(&inner[..end])?);
            }
            rest = &inner[end..];
        } else {
            out.push('[');
            rest = &tail[1..];
        }
    }
    out.push_str(rest);
    Ok(out)
}

/// Splits Grafana's `label_values(selector, label)` (or `label_values(label)`)
/// into `(selector, label)`.
pub fn parse_label_values(query: &str) -> Option<(Option<String>, String)> {
    let inner = query
        .trim()
        .strip_prefix("label_values(")?
        .strip_suffix(')')?;
    // The last comma outside braces and quotes separates the label.
    let (mut depth, mut quoted, mut split) = (0i32, false, None);
    let mut prev = '\0';
    for (i, c) in inner.char_indices() {
        match c {
            '"' if prev != '\\' => quoted = !quoted,
            '{' | '(' if !quoted => depth += 1,
            '}' | ')' if !quoted => depth -= 1,
            ',' if !quoted && depth == 0 => split = Some(i),
            _ => {}
        }
        prev = c;
    }
    match split {
        Some(i) => Some((
            Some(inner[..i].trim().to_owned()),
            inner[i + 1..].trim().to_owned(),
        )),
        None => Some((None, inner.trim().to_owned())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn substitutes_grafana_variables() {
        let vars = [
            ("job", "keepalive"),
            ("instance", "127.0.0.1:10291"),
            ("__rate_interval", "30s"),
            ("datasource", "prom"),
        ];
        assert_eq!(
            substitute(
                r#"rate(x{job=~"$job",instance=~"${instance}",ds="[[datasource]]",re=~"a$"}[$__rate_interval])"#,
                &vars
            )
            .unwrap(),
            r#"rate(x{job=~"keepalive",instance=~"127.0.0.1:10291",ds="prom",re=~"a$"}[30s])"#
        );
        assert_eq!(substitute("${job:regex}", &vars).unwrap(), "keepalive");
        assert!(substitute("$nope", &vars).is_err());
        assert_eq!(substitute("a[5m]", &vars).unwrap(), "a[5m]");
    }

    #[test]
    fn parses_label_values() {
        assert_eq!(
            parse_label_values(r#"label_values(up{job=~"a,b"}, instance)"#),
            Some((Some(r#"up{job=~"a,b"}"#.to_owned()), "instance".to_owned()))
        );
        assert_eq!(
            parse_label_values("label_values(job)"),
            Some((None, "job".to_owned()))
        );
        assert_eq!(parse_label_values("query_result(up)"), None);
    }

    #[test]
    fn the_dashboard_is_well_formed() {
        let d = Dashboard::load(&dashboard_path());
        let problems = d.lint();
        assert!(problems.is_empty(), "dashboard problems:\n{problems:#?}");
        assert!(!d.queries().is_empty());
    }
}

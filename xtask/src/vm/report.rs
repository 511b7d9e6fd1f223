//! Reads keepalive-vmcheck's `VMCHECK` lines and prints the matrix.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::time::Duration;

pub struct Hook {
    pub hook: String,
    pub mechanism: String,
    pub expected: String,
    pub ok: bool,
}

pub struct Count {
    pub name: String,
    pub text: String,
    pub ok: bool,
}

pub struct KernelResult {
    pub name: String,
    pub release: String,
    pub hooks: Vec<Hook>,
    pub counts: Vec<Count>,
    /// `PASS`, or why not.
    pub verdict: String,
    pub seconds: f64,
}

/// `key=value` fields of a VMCHECK line.
fn fields(line: &str) -> BTreeMap<&str, &str> {
    line.split_whitespace()
        .filter_map(|f| f.split_once('='))
        .collect()
}

/// One KernelResult per keepalive-vmcheck run in `log` (each starts with its
/// `VMCHECK kernel` line; the fallback run is named `<name>/fb`). A log without any run
/// gives one failed result.
pub fn parse_runs(
    name: &str,
    log: &str,
    elapsed: Duration,
    problem: Option<String>,
) -> Vec<KernelResult> {
    let mut runs: Vec<(String, String)> = Vec::new();
    for line in log.lines() {
        if line.contains("VMCHECK kernel ") {
            let run = if line.contains("mode=fallback") {
                format!("{name}/fb")
            } else if line.contains("mode=no_fentry") {
                format!("{name}/kp")
            } else {
                name.to_owned()
            };
            runs.push((run, String::new()));
        }
        if let Some((_, text)) = runs.last_mut() {
            text.push_str(line);
            text.push('\n');
        }
    }
    if runs.is_empty() {
        return vec![KernelResult::parse(name, log, elapsed, problem)];
    }
    let n = runs.len() as u32;
    runs.into_iter()
        .map(|(run, text)| KernelResult::parse(&run, &text, elapsed / n, problem.clone()))
        .collect()
}

impl KernelResult {
    pub fn parse(name: &str, log: &str, elapsed: Duration, problem: Option<String>) -> Self {
        let mut r = KernelResult::error(name, "no VMCHECK RESULT line".into());
        r.seconds = elapsed.as_secs_f64();
        for line in log.lines() {
            let Some(rest) = line
                .trim_end_matches('\r')
                .split_once("VMCHECK ")
                .map(|(_, r)| r)
            else {
                continue;
            };
            let f = fields(rest);
            let get = |k: &str| f.get(k).copied().unwrap_or("?").to_owned();
            if rest.starts_with("kernel ") {
                r.release = get("release");
            } else if rest.starts_with("hook ") {
                r.hooks.push(Hook {
                    hook: get("hook"),
                    mechanism: get("mechanism"),
                    expected: get("expected"),
                    ok: f.get("ok") == Some(&"yes"),
                });
            } else if rest.starts_with("count ") {
                let oracle = f
                    .iter()
                    .find(|(k, _)| !["name", "daemon", "match"].contains(k))
                    .map_or("?".to_owned(), |(k, v)| format!("{k} {v}"));
                r.counts.push(Count {
                    name: get("name"),
                    text: format!("{} vs {}", get("daemon"), oracle),
                    ok: f.get("match") == Some(&"yes"),
                });
            } else if let Some(v) = rest.strip_prefix("RESULT ") {
                r.verdict = v.trim().to_owned();
            }
        }
        if let Some(p) = problem {
            r.verdict = format!("FAIL {p}; {}", r.verdict);
        }
        r
    }

    pub fn error(name: &str, why: String) -> Self {
        KernelResult {
            name: name.to_owned(),
            release: "?".into(),
            hooks: Vec::new(),
            counts: Vec::new(),
            verdict: format!("FAIL {why}"),
            seconds: 0.0,
        }
    }

    pub fn passed(&self) -> bool {
        self.verdict == "PASS"
    }
}

pub fn table(results: &[KernelResult]) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "{:<8} {:<26} {:<34} {:<52} {:<34} {:<7} {:>6}  result",
        "kernel",
        "release",
        "timer_probes -> (expected)",
        "timeouts -> (expected)",
        "idle_deaths -> (expected)",
        "counts",
        "secs",
    );
    for r in results {
        let hook = |name: &str| {
            r.hooks
                .iter()
                .find(|h| h.hook == name)
                .map_or("-".to_owned(), |h| {
                    format!(
                        "{} ({}){}",
                        h.mechanism,
                        h.expected,
                        if h.ok { "" } else { " !" }
                    )
                })
        };
        let counts = if r.counts.is_empty() {
            "-"
        } else if r.counts.iter().all(|c| c.ok) {
            "yes"
        } else {
            "NO"
        };
        let _ = writeln!(
            out,
            "{:<8} {:<26} {:<34} {:<52} {:<34} {:<7} {:>6.0}  {}",
            r.name,
            r.release,
            hook("timer_probes"),
            hook("timeouts"),
            hook("idle_deaths"),
            counts,
            r.seconds,
            r.verdict
        );
    }
    let _ = writeln!(out, "\ncounts (daemon vs kernel/socket oracle):");
    for r in results {
        let detail: Vec<String> = r
            .counts
            .iter()
            .map(|c| {
                format!(
                    "{} {}{}",
                    c.name,
                    c.text,
                    if c.ok { "" } else { " MISMATCH" }
                )
            })
            .collect();
        let _ = writeln!(out, "  {:<8} {}", r.name, detail.join("; "));
    }
    out
}

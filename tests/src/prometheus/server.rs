//! A real Prometheus server run inside a namespace, configured to scrape
//! the daemon, and queried through its HTTP API (instant queries, label
//! values, rule states).

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::fs::File;
use std::net::{Ipv4Addr, SocketAddr, TcpListener};
use std::path::PathBuf;
use std::process::{Child, Stdio};
use std::thread;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{Context, Result, anyhow, bail};
use serde::Deserialize;
use serde::de::DeserializeOwned;

use super::promtool::prometheus_bin;
use crate::metrics::{HttpResponse, http_get};
use crate::netns::Netns;
use crate::process::{TempDir, describe, kill_and_reap, read_lossy, send_signal, wait_timeout};

/// What the test Prometheus scrapes: one static target in one job.
#[derive(Clone, Debug)]
pub struct ScrapeConfig {
    pub job: String,
    pub target: SocketAddr,
    pub interval: Duration,
    /// Rule files to load (evaluated every `interval`).
    pub rule_files: Vec<PathBuf>,
}

/// Bound on Prometheus answering /-/ready after start.
pub const PROMETHEUS_READY_TIMEOUT: Duration = Duration::from_secs(30);
/// Time Prometheus gets to shut down after SIGTERM.
pub const PROMETHEUS_TERM_TIMEOUT: Duration = Duration::from_secs(10);
/// Polling period while waiting for Prometheus.
const PROMETHEUS_POLL: Duration = Duration::from_millis(200);

/// A free TCP port on 127.0.0.1 inside `ns` (bound, then released).
pub fn free_local_port(ns: &Netns) -> u16 {
    ns.run_in(|| {
        let l = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).expect("bind 127.0.0.1:0");
        l.local_addr().expect("local address").port()
    })
}

/// One sample of an instant-query answer.
#[derive(Clone, Debug, PartialEq)]
pub struct Sample {
    pub labels: BTreeMap<String, String>,
    pub value: f64,
}

impl Sample {
    /// `{a="x", b="y"} value`, for messages.
    pub fn describe(&self) -> String {
        let labels: Vec<String> = self
            .labels
            .iter()
            .map(|(k, v)| format!("{k}={v:?}"))
            .collect();
        format!("{{{}}} {}", labels.join(", "), self.value)
    }
}

/// A `prometheus` server running inside a namespace, listening on a free
/// port of that namespace's 127.0.0.1, with its TSDB in a temporary
/// directory. SIGKILLed on drop if still running.
#[derive(Debug)]
pub struct Prometheus<'ns> {
    ns: &'ns Netns,
    child: Option<Child>,
    addr: SocketAddr,
    started: Instant,
    log_path: PathBuf,
    _dir: TempDir,
}

impl<'ns> Prometheus<'ns> {
    /// Writes a configuration for `scrape`, starts Prometheus in `ns` and
    /// waits (bounded) until it reports itself ready.
    pub fn start(ns: &'ns Netns, scrape: &ScrapeConfig) -> Prometheus<'ns> {
        let bin = prometheus_bin();
        let dir = TempDir::new("prometheus");
        let config_path = dir.join("prometheus.yml");
        let secs = scrape.interval.as_secs_f64();
        let mut config = format!(
            "global:\n  scrape_interval: {secs}s\n  scrape_timeout: {secs}s\n  \
             evaluation_interval: {secs}s\n"
        );
        if !scrape.rule_files.is_empty() {
            config.push_str("rule_files:\n");
            for f in &scrape.rule_files {
                let _ = writeln!(config, "  - {:?}", f.display().to_string());
            }
        }
        let _ = write!(
            config,
            "scrape_configs:\n  - job_name: {:?}\n    static_configs:\n      - targets: [{:?}]\n",
            scrape.job,
            scrape.target.to_string()
        );
        std::fs::write(&config_path, &config).expect("writing prometheus.yml");
        let data = dir.join("data");
        let log_path = dir.join("prometheus.log");
        let log = File::create(&log_path).expect("create prometheus log");
        let log2 = log.try_clone().expect("clone prometheus log");
        let addr = SocketAddr::new(Ipv4Addr::LOCALHOST.into(), free_local_port(ns));
        let mut cmd = ns.command(&bin);
        cmd.arg(format!("--config.file={}", config_path.display()))
            .arg(format!("--storage.tsdb.path={}", data.display()))
            .arg(format!("--web.listen-address={addr}"))
            .arg("--storage.tsdb.retention.time=1h")
            .arg("--log.level=warn")
            .current_dir(dir.path())
            .stdin(Stdio::null())
            .stdout(log)
            .stderr(log2);
        let what = describe(&cmd);
        let child = cmd
            .spawn()
            .unwrap_or_else(|e| panic!("spawning `{what}`: {e}"));
        let mut prom = Prometheus {
            ns,
            child: Some(child),
            addr,
            started: Instant::now(),
            log_path,
            _dir: dir,
        };
        prom.wait_ready(&config);
        prom
    }

    /// Where the server listens (inside the namespace).
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Time since the server was started.
    pub fn age(&self) -> Duration {
        self.started.elapsed()
    }

    /// Everything the server logged so far.
    pub fn log(&self) -> String {
        read_lossy(&self.log_path)
    }

    fn wait_ready(&mut self, config: &str) {
        let deadline = Instant::now() + PROMETHEUS_READY_TIMEOUT;
        loop {
            let child = self.child.as_mut().expect("prometheus child");
            if let Some(status) = child.try_wait().expect("try_wait prometheus") {
                panic!(
                    "prometheus exited ({status}) before becoming ready; config:\n{config}\nlog:\n{}",
                    self.log()
                );
            }
            let last = match self.get("/-/ready") {
                Ok(resp) if resp.status == 200 => return,
                Ok(resp) => format!("HTTP {}: {:.200}", resp.status, resp.body),
                Err(e) => format!("{e:#}"),
            };
            if Instant::now() >= deadline {
                kill_and_reap(self.child.as_mut().expect("prometheus child"));
                panic!(
                    "prometheus not ready within {PROMETHEUS_READY_TIMEOUT:?} (last attempt: \
                     {last}); log:\n{}",
                    self.log()
                );
            }
            thread::sleep(PROMETHEUS_POLL);
        }
    }

    /// `GET path` against the server, from inside its namespace.
    pub fn get(&self, path: &str) -> Result<HttpResponse> {
        let addr = self.addr;
        self.ns.run_in(|| http_get(addr, path))
    }

    /// `GET path` of the HTTP API; returns `data` of a `"status": "success"`
    /// answer, or the API's error.
    pub fn api<T: DeserializeOwned>(&self, path: &str) -> Result<T> {
        let resp = self.get(path)?;
        let answer: ApiAnswer = serde_json::from_str(&resp.body).with_context(|| {
            format!(
                "HTTP {} with a body that is not a Prometheus API answer: {:.300}",
                resp.status, resp.body
            )
        })?;
        if answer.status != "success" {
            bail!(
                "HTTP {}: {} ({})",
                resp.status,
                answer.error,
                answer.error_type
            );
        }
        let data = answer
            .data
            .ok_or_else(|| anyhow!("API answer without data: {:.300}", resp.body))?;
        serde_json::from_value(data)
            .with_context(|| format!("unexpected data in the answer: {:.300}", resp.body))
    }

    /// Instant query at the server's current time. Vectors and scalars are
    /// returned as samples (a scalar has no labels).
    pub fn query(&self, promql: &str) -> Result<Vec<Sample>> {
        let data: QueryData = self.api(&format!("/api/v1/query?query={}", url_encode(promql)))?;
        match data.result_type.as_str() {
            "vector" => serde_json::from_value::<Vec<VectorItem>>(data.result)
                .context("a vector result")?
                .into_iter()
                .map(|item| {
                    Ok(Sample {
                        labels: item.metric,
                        value: parse_prom_float(&item.value.1)?,
                    })
                })
                .collect(),
            "scalar" => {
                let (_, value): (f64, String) =
                    serde_json::from_value(data.result).context("a scalar result")?;
                Ok(vec![Sample {
                    labels: BTreeMap::new(),
                    value: parse_prom_float(&value)?,
                }])
            }
            other => bail!("unexpected resultType {other:?} for an instant query"),
        }
    }

    /// Values of `label` over the series matching `selector`
    /// (`/api/v1/label/<label>/values?match[]=<selector>`), as Grafana's
    /// `label_values(selector, label)` computes them.
    pub fn label_values(&self, selector: &str, label: &str) -> Result<Vec<String>> {
        self.api(&format!(
            "/api/v1/label/{}/values?match[]={}",
            url_encode(label),
            url_encode(selector)
        ))
    }

    /// The alerting and recording rules the server loaded, with their
    /// evaluation state: `(name, health, state, last error)`.
    pub fn rules(&self) -> Result<Vec<RuleState>> {
        let data: RulesData = self.api("/api/v1/rules")?;
        Ok(data.groups.into_iter().flat_map(|g| g.rules).collect())
    }

    /// Waits (bounded) until `up{job}` is 1: the target has been scraped.
    pub fn wait_target_up(&self, job: &str, timeout: Duration) {
        let q = format!("up{{job={job:?}}} == 1");
        let deadline = Instant::now() + timeout;
        loop {
            let last = match self.query(&q) {
                Ok(samples) if !samples.is_empty() => return,
                Ok(_) => "no successful scrape yet".to_owned(),
                Err(e) => format!("{e:#}"),
            };
            if Instant::now() >= deadline {
                let targets = self
                    .get("/api/v1/targets")
                    .map(|r| r.body)
                    .unwrap_or_else(|e| format!("{e:#}"));
                panic!(
                    "job {job} not scraped successfully within {timeout:?} ({last}); \
                     targets: {targets:.2000}\nlog:\n{}",
                    self.log()
                );
            }
            thread::sleep(PROMETHEUS_POLL);
        }
    }

    /// Waits (bounded) until the server has scraped job `job` after `after`
    /// (scrape timestamps are the scrape start), so the samples cover
    /// everything that happened before `after`.
    pub fn wait_scraped_after(&self, job: &str, after: SystemTime, timeout: Duration) {
        let after_secs = after
            .duration_since(UNIX_EPOCH)
            .expect("clock after 1970")
            .as_secs_f64();
        let q = format!("timestamp(up{{job={job:?}}} == 1)");
        let deadline = Instant::now() + timeout;
        loop {
            let last = match self.query(&q) {
                Ok(samples) if samples.iter().any(|s| s.value > after_secs) => return,
                Ok(samples) => format!("latest scrapes: {samples:?}"),
                Err(e) => format!("{e:#}"),
            };
            if Instant::now() >= deadline {
                panic!(
                    "no successful scrape of job {job} after {after_secs} within {timeout:?} \
                     ({last}); log:\n{}",
                    self.log()
                );
            }
            thread::sleep(PROMETHEUS_POLL);
        }
    }

    /// SIGTERM, bounded wait; panics unless Prometheus exits 0.
    pub fn stop(mut self) {
        let mut child = self.child.take().expect("prometheus already stopped");
        send_signal(&child, libc::SIGTERM);
        let Some(status) = wait_timeout(&mut child, PROMETHEUS_TERM_TIMEOUT) else {
            kill_and_reap(&mut child);
            panic!(
                "prometheus still running {PROMETHEUS_TERM_TIMEOUT:?} after SIGTERM; log:\n{}",
                self.log()
            );
        };
        assert!(
            status.success(),
            "prometheus exited with {status} after SIGTERM; log:\n{}",
            self.log()
        );
    }
}

impl Drop for Prometheus<'_> {
    fn drop(&mut self) {
        if let Some(child) = self.child.as_mut() {
            kill_and_reap(child);
            if thread::panicking() {
                eprintln!("---- prometheus log ----\n{}", self.log());
            }
        }
    }
}

/// State of one rule of `/api/v1/rules`.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
pub struct RuleState {
    pub name: String,
    /// "ok", "err" or "unknown" (not evaluated yet).
    pub health: String,
    /// Alerting rules: "inactive", "pending" or "firing"; "" for recording rules.
    #[serde(default)]
    pub state: String,
    #[serde(default, rename = "lastError")]
    pub last_error: String,
}

/// The envelope of every answer of the HTTP API.
#[derive(Deserialize)]
struct ApiAnswer {
    status: String,
    data: Option<serde_json::Value>,
    #[serde(default)]
    error: String,
    #[serde(default, rename = "errorType")]
    error_type: String,
}

/// `data` of an instant query; `result` depends on `resultType`.
#[derive(Deserialize)]
struct QueryData {
    #[serde(rename = "resultType")]
    result_type: String,
    result: serde_json::Value,
}

/// One series of a vector result: its labels and `[timestamp, "value"]`.
#[derive(Deserialize)]
struct VectorItem {
    metric: BTreeMap<String, String>,
    value: (f64, String),
}

/// `data` of `/api/v1/rules`.
#[derive(Deserialize)]
struct RulesData {
    groups: Vec<RuleGroup>,
}

#[derive(Deserialize)]
struct RuleGroup {
    rules: Vec<RuleState>,
}

/// Prometheus' float rendering: numbers, "NaN", "+Inf", "-Inf".
fn parse_prom_float(text: &str) -> Result<f64> {
    match text {
        "NaN" => Ok(f64::NAN),
        "+Inf" | "Inf" => Ok(f64::INFINITY),
        "-Inf" => Ok(f64::NEG_INFINITY),
        _ => text
            .parse()
            .with_context(|| format!("bad sample value {text:?}")),
    }
}

/// Percent-encodes everything but RFC 3986 unreserved characters.
pub fn url_encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len() * 3);
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~') {
            out.push(b as char);
        } else {
            let _ = write!(out, "%{b:02X}");
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encodes_urls() {
        assert_eq!(
            url_encode(r#"a{b="c d"}[1m]"#),
            "a%7Bb%3D%22c%20d%22%7D%5B1m%5D"
        );
    }
}

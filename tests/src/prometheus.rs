//! Prometheus-side checks of the daemon: a real Prometheus server run inside a
//! namespace and queried through its HTTP API, `promtool`, the PromQL of the
//! Grafana dashboard (`dashboards/keepalive.json`), and the small JSON parser
//! all of that needs.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::fs::File;
use std::net::{Ipv4Addr, SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::thread;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{Context, Result, anyhow, bail, ensure};

use crate::metrics::{HttpResponse, http_get};
use crate::netns::Netns;
use crate::process::{
    TempDir, describe, kill_and_reap, read_lossy, run_output, send_signal, wait_timeout,
};

/// The workspace root (the parent of this crate).
pub fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("tests/ has a parent")
        .to_path_buf()
}

// ---------------------------------------------------------------------------
// Binaries
// ---------------------------------------------------------------------------

/// Debian package that provides both `prometheus` and `promtool`.
pub const PROMETHEUS_PACKAGE: &str = "prometheus";

/// Finds `name` in PATH or /usr/bin; panics loudly (never skips) if missing.
fn find_binary(name: &str) -> PathBuf {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain([PathBuf::from("/usr/bin"), PathBuf::from("/usr/sbin")])
        .map(|dir| dir.join(name))
        .find(|p| p.is_file())
        .unwrap_or_else(|| {
            panic!(
                "`{name}` not found in PATH or /usr/bin: install the Debian package \
                 `{PROMETHEUS_PACKAGE}` (apt-get install -y {PROMETHEUS_PACKAGE}; \
                 scripts/setup.sh does it)"
            )
        })
}

/// Path of `promtool`; panics if it is not installed.
pub fn promtool() -> PathBuf {
    find_binary("promtool")
}

/// Path of the `prometheus` server; panics if it is not installed.
pub fn prometheus_bin() -> PathBuf {
    find_binary("prometheus")
}

/// Runs `promtool` with `args` (bounded in time), feeding it `stdin`.
pub fn run_promtool(args: &[&str], stdin: Option<&str>) -> Output {
    let mut cmd = Command::new(promtool());
    cmd.args(args).current_dir(workspace_root());
    run_output(cmd, stdin.map(str::as_bytes))
}

/// Renders a finished command for a panic message.
pub fn describe_output(what: &str, out: &Output) -> String {
    format!(
        "`{what}` exited with {}\n--- stdout ---\n{}\n--- stderr ---\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// Whether `bin --help` lists `flag` (e.g. `--metrics.local-port`).
pub fn help_lists_flag(bin: &Path, flag: &str) -> bool {
    let mut cmd = Command::new(bin);
    cmd.arg("--help");
    let what = describe(&cmd);
    let out = run_output(cmd, None);
    assert!(out.status.success(), "{}", describe_output(&what, &out));
    let help = String::from_utf8_lossy(&out.stdout);
    help.split(|c: char| c.is_whitespace() || c == ',' || c == '=' || c == '[')
        .any(|word| word == flag)
}

// ---------------------------------------------------------------------------
// JSON
// ---------------------------------------------------------------------------

/// A parsed JSON value. Objects keep their keys in document order.
#[derive(Clone, Debug, PartialEq)]
pub enum Json {
    Null,
    Bool(bool),
    Number(f64),
    String(String),
    Array(Vec<Json>),
    Object(Vec<(String, Json)>),
}

impl Json {
    /// Parses one JSON document (RFC 8259), surrounding whitespace allowed.
    pub fn parse(text: &str) -> Result<Json> {
        let mut p = JsonParser {
            s: text.as_bytes(),
            pos: 0,
            depth: 0,
        };
        let value = p.value()?;
        p.skip_ws();
        ensure!(
            p.pos == p.s.len(),
            "trailing characters at byte {} of the JSON document",
            p.pos
        );
        Ok(value)
    }

    /// Member `key` of an object (`None` for other values or a missing key).
    pub fn get(&self, key: &str) -> Option<&Json> {
        match self {
            Json::Object(members) => members.iter().find(|(k, _)| k == key).map(|(_, v)| v),
            _ => None,
        }
    }

    pub fn as_str(&self) -> Option<&str> {
        match self {
            Json::String(s) => Some(s),
            _ => None,
        }
    }

    pub fn as_f64(&self) -> Option<f64> {
        match self {
            Json::Number(n) => Some(*n),
            _ => None,
        }
    }

    pub fn as_array(&self) -> Option<&[Json]> {
        match self {
            Json::Array(items) => Some(items),
            _ => None,
        }
    }

    pub fn as_object(&self) -> Option<&[(String, Json)]> {
        match self {
            Json::Object(members) => Some(members),
            _ => None,
        }
    }

    /// The string at `key`, or "" when absent or not a string.
    pub fn str_at(&self, key: &str) -> &str {
        self.get(key).and_then(Json::as_str).unwrap_or_default()
    }

    /// The array at `key`, or an empty slice.
    pub fn array_at(&self, key: &str) -> &[Json] {
        self.get(key).and_then(Json::as_array).unwrap_or_default()
    }
}

struct JsonParser<'a> {
    s: &'a [u8],
    pos: usize,
    depth: u32,
}

/// Nesting bound, so a hostile document cannot overflow the stack.
const JSON_MAX_DEPTH: u32 = 128;

impl JsonParser<'_> {
    fn skip_ws(&mut self) {
        while let Some(b' ' | b'\t' | b'\n' | b'\r') = self.s.get(self.pos) {
            self.pos += 1;
        }
    }

    fn peek(&self) -> Option<u8> {
        self.s.get(self.pos).copied()
    }

    fn expect(&mut self, b: u8) -> Result<()> {
        ensure!(
            self.peek() == Some(b),
            "expected '{}' at byte {} of the JSON document",
            b as char,
            self.pos
        );
        self.pos += 1;
        Ok(())
    }

    fn literal(&mut self, word: &str, value: Json) -> Result<Json> {
        ensure!(
            self.s[self.pos..].starts_with(word.as_bytes()),
            "bad literal at byte {}",
            self.pos
        );
        self.pos += word.len();
        Ok(value)
    }

    fn value(&mut self) -> Result<Json> {
        self.skip_ws();
        match self.peek() {
            Some(b'{') => self.nested(Self::object),
            Some(b'[') => self.nested(Self::array),
            Some(b'"') => Ok(Json::String(self.string()?)),
            Some(b't') => self.literal("true", Json::Bool(true)),
            Some(b'f') => self.literal("false", Json::Bool(false)),
            Some(b'n') => self.literal("null", Json::Null),
            Some(b'-' | b'0'..=b'9') => self.number(),
            Some(c) => bail!("unexpected '{}' at byte {}", c as char, self.pos),
            None => bail!("unexpected end of the JSON document"),
        }
    }

    fn nested(&mut self, f: fn(&mut Self) -> Result<Json>) -> Result<Json> {
        self.depth += 1;
        ensure!(self.depth <= JSON_MAX_DEPTH, "JSON nested too deeply");
        let v = f(self);
        self.depth -= 1;
        v
    }

    fn object(&mut self) -> Result<Json> {
        self.expect(b'{')?;
        let mut members = Vec::new();
        self.skip_ws();
        if self.peek() == Some(b'}') {
            self.pos += 1;
            return Ok(Json::Object(members));
        }
        loop {
            self.skip_ws();
            let key = self.string()?;
            self.skip_ws();
            self.expect(b':')?;
            let value = self.value()?;
            members.push((key, value));
            self.skip_ws();
            match self.peek() {
                Some(b',') => self.pos += 1,
                Some(b'}') => {
                    self.pos += 1;
                    return Ok(Json::Object(members));
                }
                _ => bail!("expected ',' or '}}' at byte {}", self.pos),
            }
        }
    }

    fn array(&mut self) -> Result<Json> {
        self.expect(b'[')?;
        let mut items = Vec::new();
        self.skip_ws();
        if self.peek() == Some(b']') {
            self.pos += 1;
            return Ok(Json::Array(items));
        }
        loop {
            items.push(self.value()?);
            self.skip_ws();
            match self.peek() {
                Some(b',') => self.pos += 1,
                Some(b']') => {
                    self.pos += 1;
                    return Ok(Json::Array(items));
                }
                _ => bail!("expected ',' or ']' at byte {}", self.pos),
            }
        }
    }

    fn hex4(&mut self) -> Result<u32> {
        let digits = self
            .s
            .get(self.pos..self.pos + 4)
            .ok_or_else(|| anyhow!("truncated \\u escape"))?;
        let digits = std::str::from_utf8(digits)?;
        let v = u32::from_str_radix(digits, 16).context("bad \\u escape")?;
        self.pos += 4;
        Ok(v)
    }

    fn string(&mut self) -> Result<String> {
        self.expect(b'"')?;
        let mut out: Vec<u8> = Vec::new();
        loop {
            let Some(b) = self.peek() else {
                bail!("unterminated JSON string");
            };
            self.pos += 1;
            match b {
                b'"' => break,
                b'\\' => {
                    let Some(e) = self.peek() else {
                        bail!("unterminated escape");
                    };
                    self.pos += 1;
                    let c = match e {
                        b'"' => '"',
                        b'\\' => '\\',
                        b'/' => '/',
                        b'b' => '\u{8}',
                        b'f' => '\u{c}',
                        b'n' => '\n',
                        b'r' => '\r',
                        b't' => '\t',
                        b'u' => {
                            let hi = self.hex4()?;
                            let code = if (0xd800..0xdc00).contains(&hi) {
                                ensure!(
                                    self.s[self.pos..].starts_with(b"\\u"),
                                    "lone high surrogate in JSON string"
                                );
                                self.pos += 2;
                                let lo = self.hex4()?;
                                ensure!(
                                    (0xdc00..0xe000).contains(&lo),
                                    "bad low surrogate in JSON string"
                                );
                                0x10000 + ((hi - 0xd800) << 10) + (lo - 0xdc00)
                            } else {
                                hi
                            };
                            char::from_u32(code)
                                .ok_or_else(|| anyhow!("bad code point {code:#x}"))?
                        }
                        other => bail!("bad escape '\\{}'", other as char),
                    };
                    let mut buf = [0u8; 4];
                    out.extend_from_slice(c.encode_utf8(&mut buf).as_bytes());
                }
                0x00..=0x1f => bail!("control character in JSON string"),
                _ => out.push(b),
            }
        }
        String::from_utf8(out).context("JSON string is not UTF-8")
    }

    fn number(&mut self) -> Result<Json> {
        let start = self.pos;
        while let Some(b'-' | b'+' | b'.' | b'e' | b'E' | b'0'..=b'9') = self.peek() {
            self.pos += 1;
        }
        let text = std::str::from_utf8(&self.s[start..self.pos])?;
        let n: f64 = text
            .parse()
            .with_context(|| format!("bad JSON number {text:?}"))?;
        Ok(Json::Number(n))
    }
}

// ---------------------------------------------------------------------------
// Prometheus server
// ---------------------------------------------------------------------------

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
    pub fn api(&self, path: &str) -> Result<Json> {
        let resp = self.get(path)?;
        let json = Json::parse(&resp.body).with_context(|| {
            format!(
                "HTTP {} with a body that is not JSON: {:.300}",
                resp.status, resp.body
            )
        })?;
        if json.str_at("status") != "success" {
            bail!(
                "HTTP {}: {} ({})",
                resp.status,
                json.str_at("error"),
                json.str_at("errorType")
            );
        }
        json.get("data")
            .cloned()
            .ok_or_else(|| anyhow!("API answer without data: {:.300}", resp.body))
    }

    /// Instant query at the server's current time. Vectors and scalars are
    /// returned as samples (a scalar has no labels).
    pub fn query(&self, promql: &str) -> Result<Vec<Sample>> {
        let data = self.api(&format!("/api/v1/query?query={}", url_encode(promql)))?;
        let value_of = |pair: &Json| -> Result<f64> {
            let text = pair
                .as_array()
                .and_then(|p| p.get(1))
                .and_then(Json::as_str)
                .ok_or_else(|| anyhow!("bad sample value {pair:?}"))?;
            parse_prom_float(text)
        };
        match data.str_at("resultType") {
            "vector" => data
                .array_at("result")
                .iter()
                .map(|item| {
                    let labels = item
                        .get("metric")
                        .and_then(Json::as_object)
                        .unwrap_or_default()
                        .iter()
                        .map(|(k, v)| (k.clone(), v.as_str().unwrap_or_default().to_owned()))
                        .collect();
                    let value = value_of(item.get("value").unwrap_or(&Json::Null))?;
                    Ok(Sample { labels, value })
                })
                .collect(),
            "scalar" => Ok(vec![Sample {
                labels: BTreeMap::new(),
                value: value_of(data.get("result").unwrap_or(&Json::Null))?,
            }]),
            other => bail!("unexpected resultType {other:?} for an instant query"),
        }
    }

    /// Values of `label` over the series matching `selector`
    /// (`/api/v1/label/<label>/values?match[]=<selector>`), as Grafana's
    /// `label_values(selector, label)` computes them.
    pub fn label_values(&self, selector: &str, label: &str) -> Result<Vec<String>> {
        let data = self.api(&format!(
            "/api/v1/label/{}/values?match[]={}",
            url_encode(label),
            url_encode(selector)
        ))?;
        Ok(data
            .as_array()
            .unwrap_or_default()
            .iter()
            .filter_map(|v| v.as_str().map(str::to_owned))
            .collect())
    }

    /// The alerting and recording rules the server loaded, with their
    /// evaluation state: `(name, health, state, last error)`.
    pub fn rules(&self) -> Result<Vec<RuleState>> {
        let data = self.api("/api/v1/rules")?;
        Ok(data
            .array_at("groups")
            .iter()
            .flat_map(|g| g.array_at("rules"))
            .map(|r| RuleState {
                name: r.str_at("name").to_owned(),
                health: r.str_at("health").to_owned(),
                state: r.str_at("state").to_owned(),
                last_error: r.str_at("lastError").to_owned(),
            })
            .collect())
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
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RuleState {
    pub name: String,
    /// "ok", "err" or "unknown" (not evaluated yet).
    pub health: String,
    /// Alerting rules: "inactive", "pending" or "firing".
    pub state: String,
    pub last_error: String,
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

// ---------------------------------------------------------------------------
// The Grafana dashboard
// ---------------------------------------------------------------------------

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
    json: Json,
}

impl Dashboard {
    pub fn load(path: &Path) -> Dashboard {
        let text = std::fs::read_to_string(path)
            .unwrap_or_else(|e| panic!("reading {}: {e}", path.display()));
        let json = Json::parse(&text)
            .unwrap_or_else(|e| panic!("{} is not valid JSON: {e:#}", path.display()));
        Dashboard { json }
    }

    /// Every panel, rows included, with the panels of collapsed rows
    /// (which Grafana nests inside the row) flattened in.
    pub fn panels(&self) -> Vec<&Json> {
        fn walk<'a>(panels: &'a [Json], out: &mut Vec<&'a Json>) {
            for p in panels {
                out.push(p);
                walk(p.array_at("panels"), out);
            }
        }
        let mut out = Vec::new();
        walk(self.json.array_at("panels"), &mut out);
        out
    }

    /// Every non-empty `expr` of every panel target.
    pub fn queries(&self) -> Vec<PanelQuery> {
        let mut out = Vec::new();
        for p in self.panels() {
            for t in p.array_at("targets") {
                let expr = t.str_at("expr").trim();
                if expr.is_empty() {
                    continue;
                }
                out.push(PanelQuery {
                    panel_id: p.get("id").and_then(Json::as_f64).unwrap_or(-1.0) as i64,
                    panel_title: p.str_at("title").to_owned(),
                    ref_id: t.str_at("refId").to_owned(),
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
            .map(|t| t.array_at("list"))
            .unwrap_or_default();
        list.iter()
            .map(|v| Variable {
                name: v.str_at("name").to_owned(),
                kind: v.str_at("type").to_owned(),
                query: match v.get("query") {
                    Some(Json::String(s)) => Some(s.clone()),
                    Some(q @ Json::Object(_)) => Some(q.str_at("query").to_owned()),
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
            let title = p.str_at("title");
            let id = p.get("id").and_then(Json::as_f64);
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
            if p.str_at("type") == "row" {
                continue;
            }
            if title.trim().is_empty() {
                problems.push(format!("{name}: no title"));
            }
            if p.str_at("description").trim().is_empty() {
                problems.push(format!("{name}: no description"));
            }
            let unit = p
                .get("fieldConfig")
                .and_then(|f| f.get("defaults"))
                .map(|d| d.str_at("unit"))
                .unwrap_or_default();
            if unit.trim().is_empty() {
                problems.push(format!("{name}: no unit (fieldConfig.defaults.unit)"));
            }
            let ds = p.get("datasource").map(|d| d.str_at("uid"));
            if ds != Some("${datasource}") {
                problems.push(format!(
                    "{name}: datasource uid is {ds:?}, not the ${{datasource}} variable"
                ));
            }
            let targets = p.array_at("targets");
            if targets.is_empty() {
                problems.push(format!("{name}: no query"));
            }
            for t in targets {
                if t.str_at("refId").is_empty() || t.str_at("expr").trim().is_empty() {
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
    fn parses_json() {
        let j = Json::parse(
            r#" {"a": [1, -2.5e3, true, false, null], "b": {"c": "x\"\\\/\n\u00e9\ud83d\ude00"}, "e": {}} "#,
        )
        .unwrap();
        let a = j.array_at("a");
        assert_eq!(a[0], Json::Number(1.0));
        assert_eq!(a[1], Json::Number(-2500.0));
        assert_eq!(a[2], Json::Bool(true));
        assert_eq!(a[4], Json::Null);
        assert_eq!(j.get("b").unwrap().str_at("c"), "x\"\\/\n\u{e9}\u{1f600}");
        assert_eq!(j.get("e").unwrap().as_object().unwrap().len(), 0);
        assert!(Json::parse("{\"a\": 1,}").is_err());
        assert!(Json::parse("[1] x").is_err());
        assert!(Json::parse("\"abc").is_err());
        assert!(Json::parse(&"[".repeat(1000)).is_err());
    }

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
    fn encodes_urls() {
        assert_eq!(
            url_encode(r#"a{b="c d"}[1m]"#),
            "a%7Bb%3D%22c%20d%22%7D%5B1m%5D"
        );
    }

    #[test]
    fn the_dashboard_is_well_formed() {
        let d = Dashboard::load(&dashboard_path());
        let problems = d.lint();
        assert!(problems.is_empty(), "dashboard problems:\n{problems:#?}");
        assert!(!d.queries().is_empty());
    }
}

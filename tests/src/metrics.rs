//! A minimal Prometheus text-format parser and HTTP/1.0 GET client.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};

use anyhow::{Context, Result, anyhow, bail, ensure};

use crate::timing::{HTTP_MAX_BYTES, HTTP_TIMEOUT};

/// One series of a scrape.
#[derive(Clone, Debug, PartialEq)]
pub struct Series {
    pub name: String,
    pub labels: BTreeMap<String, String>,
    pub value: f64,
}

/// A parsed scrape, keyed by `name{label="value",...}` with sorted labels.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Samples {
    series: BTreeMap<String, Series>,
}

/// The canonical key of a series: `name{a="x",b="y"}` (labels sorted), or
/// just `name` without labels.
pub fn series_key<'a>(name: &str, labels: impl IntoIterator<Item = (&'a str, &'a str)>) -> String {
    let sorted: BTreeMap<&str, &str> = labels.into_iter().collect();
    let mut key = name.to_owned();
    if !sorted.is_empty() {
        key.push('{');
        for (i, (k, v)) in sorted.iter().enumerate() {
            if i > 0 {
                key.push(',');
            }
            let escaped = v
                .replace('\\', "\\\\")
                .replace('"', "\\\"")
                .replace('\n', "\\n");
            let _ = write!(key, "{k}=\"{escaped}\"");
        }
        key.push('}');
    }
    key
}

impl Samples {
    /// Mechanism in use per socket hook (`keepalive_daemon_hook_info` series at 1).
    pub fn hooks_in_use(&self) -> BTreeMap<String, String> {
        self.matching("keepalive_daemon_hook_info", &[])
            .filter(|series| series.value == 1.0)
            .filter_map(|series| {
                Some((
                    series.labels.get("hook")?.clone(),
                    series.labels.get("mechanism")?.clone(),
                ))
            })
            .collect()
    }

    /// Parses the Prometheus text exposition format.
    pub fn parse(text: &str) -> Result<Samples> {
        let mut series = BTreeMap::new();
        for (i, raw) in text.lines().enumerate() {
            let line = raw.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let s = parse_line(line).with_context(|| format!("line {}: {raw:?}", i + 1))?;
            let key = series_key(
                &s.name,
                s.labels.iter().map(|(k, v)| (k.as_str(), v.as_str())),
            );
            ensure!(!series.contains_key(&key), "duplicate series {key}");
            series.insert(key, s);
        }
        Ok(Samples { series })
    }

    pub fn len(&self) -> usize {
        self.series.len()
    }

    pub fn is_empty(&self) -> bool {
        self.series.is_empty()
    }

    pub fn iter(&self) -> impl Iterator<Item = (&String, &Series)> {
        self.series.iter()
    }

    /// The series with exactly this name and label set.
    pub fn get(&self, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
        self.series
            .get(&series_key(name, labels.iter().copied()))
            .map(|s| s.value)
    }

    /// Like [`Samples::get`], but the series must exist.
    pub fn value(&self, name: &str, labels: &[(&str, &str)]) -> f64 {
        let key = series_key(name, labels.iter().copied());
        match self.series.get(&key) {
            Some(s) => s.value,
            None => panic!("no series {key} in scrape; have:\n{}", self.keys_of(name)),
        }
    }

    /// Every series called `name` whose labels include all of `filters`.
    pub fn matching<'a>(
        &'a self,
        name: &'a str,
        filters: &'a [(&'a str, &'a str)],
    ) -> impl Iterator<Item = &'a Series> + 'a {
        self.series.values().filter(move |s| {
            s.name == name
                && filters
                    .iter()
                    .all(|(k, v)| s.labels.get(*k).map(String::as_str) == Some(*v))
        })
    }

    /// Sum over the series selected by [`Samples::matching`]; at least one must exist.
    pub fn sum(&self, name: &str, filters: &[(&str, &str)]) -> f64 {
        let mut n = 0;
        let total = self
            .matching(name, filters)
            .map(|s| s.value)
            .inspect(|_| n += 1)
            .sum();
        assert!(
            n > 0,
            "no series {name} matching {filters:?} in scrape; have:\n{}",
            self.keys_of(name)
        );
        total
    }

    /// [`Samples::sum`] of a counter, as an integer.
    pub fn count(&self, name: &str, filters: &[(&str, &str)]) -> u64 {
        as_count(self.sum(name, filters), name, filters)
    }

    /// `self.count(..) - before.count(..)`; counters must not go backwards.
    pub fn delta(&self, before: &Samples, name: &str, filters: &[(&str, &str)]) -> u64 {
        let (now, then) = (self.count(name, filters), before.count(name, filters));
        assert!(
            now >= then,
            "counter {name} {filters:?} went backwards: {then} -> {now}"
        );
        now - then
    }

    fn keys_of(&self, name: &str) -> String {
        let keys: Vec<&str> = self
            .series
            .iter()
            .filter(|(_, s)| s.name == name)
            .map(|(k, _)| k.as_str())
            .collect();
        if keys.is_empty() {
            let all: Vec<&str> = self.series.keys().map(String::as_str).collect();
            format!("(no {name} at all) {all:#?}")
        } else {
            format!("{keys:#?}")
        }
    }
}

fn as_count(v: f64, name: &str, filters: &[(&str, &str)]) -> u64 {
    assert!(
        v.is_finite() && v >= 0.0 && v.fract() == 0.0 && v < 2f64.powi(53),
        "{name} {filters:?} = {v} is not a counter value"
    );
    v as u64
}

fn is_name_start(c: char) -> bool {
    c.is_ascii_alphabetic() || c == '_' || c == ':'
}

fn is_name_char(c: char) -> bool {
    is_name_start(c) || c.is_ascii_digit()
}

fn parse_line(line: &str) -> Result<Series> {
    let name_end = line.find(|c: char| !is_name_char(c)).unwrap_or(line.len());
    let name = &line[..name_end];
    ensure!(name.starts_with(is_name_start), "bad metric name");
    let mut rest = &line[name_end..];
    let mut labels = BTreeMap::new();
    if let Some(after) = rest.strip_prefix('{') {
        rest = parse_labels(after, &mut labels)?;
    }
    let mut fields = rest.split_whitespace();
    let value = fields.next().ok_or_else(|| anyhow!("missing value"))?;
    let value = parse_value(value)?;
    if let Some(ts) = fields.next() {
        ts.parse::<i64>()
            .with_context(|| format!("bad timestamp {ts:?}"))?;
    }
    ensure!(fields.next().is_none(), "trailing garbage");
    Ok(Series {
        name: name.to_owned(),
        labels,
        value,
    })
}

/// Parses `k="v",...}` and returns what follows the closing brace.
fn parse_labels<'a>(mut s: &'a str, labels: &mut BTreeMap<String, String>) -> Result<&'a str> {
    loop {
        s = s.trim_start();
        if let Some(rest) = s.strip_prefix('}') {
            return Ok(rest);
        }
        let key_end = s.find(|c: char| !is_name_char(c)).unwrap_or(s.len());
        let key = &s[..key_end];
        ensure!(!key.is_empty(), "bad label name at {s:?}");
        s = s[key_end..].trim_start();
        s = s
            .strip_prefix('=')
            .ok_or_else(|| anyhow!("expected '=' after {key}"))?;
        s = s
            .trim_start()
            .strip_prefix('"')
            .ok_or_else(|| anyhow!("expected '\"'"))?;
        let mut value = String::new();
        let mut chars = s.char_indices();
        let end = loop {
            match chars.next() {
                None => bail!("unterminated value of label {key}"),
                Some((i, '"')) => break i,
                Some((_, '\\')) => match chars.next() {
                    Some((_, 'n')) => value.push('\n'),
                    Some((_, c @ ('\\' | '"'))) => value.push(c),
                    other => bail!("bad escape {other:?} in label {key}"),
                },
                Some((_, c)) => value.push(c),
            }
        };
        ensure!(
            labels.insert(key.to_owned(), value).is_none(),
            "duplicate label {key}"
        );
        s = s[end + 1..].trim_start();
        if let Some(rest) = s.strip_prefix(',') {
            s = rest;
        } else {
            ensure!(s.starts_with('}'), "expected ',' or '}}' at {s:?}");
        }
    }
}

fn parse_value(v: &str) -> Result<f64> {
    match v {
        "+Inf" | "Inf" => Ok(f64::INFINITY),
        "-Inf" => Ok(f64::NEG_INFINITY),
        "NaN" => Ok(f64::NAN),
        _ => v.parse().with_context(|| format!("bad value {v:?}")),
    }
}

/// A response of [`http_get`].
#[derive(Debug)]
pub struct HttpResponse {
    pub status: u16,
    pub body: String,
}

/// `GET path HTTP/1.0` against `addr`, bounded in time and size. Must be
/// called from a thread inside the server's namespace if it is not the
/// current one (see [`crate::Netns::run_in`]).
pub fn http_get(addr: SocketAddr, path: &str) -> Result<HttpResponse> {
    let mut stream = TcpStream::connect_timeout(&addr, HTTP_TIMEOUT)
        .with_context(|| format!("connecting to {addr}"))?;
    stream.set_read_timeout(Some(HTTP_TIMEOUT))?;
    stream.set_write_timeout(Some(HTTP_TIMEOUT))?;
    write!(
        stream,
        "GET {path} HTTP/1.0\r\nHost: {addr}\r\nAccept: text/plain\r\n\r\n"
    )?;
    let mut raw = Vec::new();
    stream
        .take(HTTP_MAX_BYTES)
        .read_to_end(&mut raw)
        .with_context(|| format!("reading response from {addr}"))?;
    let split = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .ok_or_else(|| anyhow!("no end of headers in {} bytes", raw.len()))?;
    let head = String::from_utf8_lossy(&raw[..split]).into_owned();
    let mut body = raw[split + 4..].to_vec();
    let mut lines = head.split("\r\n");
    let status_line = lines.next().unwrap_or_default();
    let status = status_line
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| anyhow!("bad status line {status_line:?}"))?;
    let chunked = lines.any(|h| {
        let lower = h.to_ascii_lowercase();
        lower.starts_with("transfer-encoding:") && lower.contains("chunked")
    });
    if chunked {
        body = dechunk(&body)?;
    }
    let body = String::from_utf8(body).context("response body is not UTF-8")?;
    Ok(HttpResponse { status, body })
}

fn dechunk(mut data: &[u8]) -> Result<Vec<u8>> {
    let mut out = Vec::new();
    loop {
        let eol = data
            .windows(2)
            .position(|w| w == b"\r\n")
            .ok_or_else(|| anyhow!("truncated chunk header"))?;
        let header = std::str::from_utf8(&data[..eol])?;
        let size_hex = header.split(';').next().unwrap_or_default().trim();
        let size = usize::from_str_radix(size_hex, 16).context("bad chunk size")?;
        data = &data[eol + 2..];
        if size == 0 {
            return Ok(out);
        }
        ensure!(data.len() >= size + 2, "truncated chunk");
        out.extend_from_slice(&data[..size]);
        data = &data[size + 2..];
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_exposition_text() {
        let text = "# HELP x y\n# TYPE a counter\na_total{b=\"2\",a=\"1\"} 3\n\
                    up 1 1700000000000\nesc{v=\"q\\\"\\\\\\n\",} 0\nweird{ k = \"v\" } +Inf\n";
        let s = Samples::parse(text).unwrap();
        assert_eq!(s.len(), 4);
        assert_eq!(s.value("a_total", &[("b", "2"), ("a", "1")]), 3.0);
        assert!(s.iter().any(|(k, _)| k == "a_total{a=\"1\",b=\"2\"}"));
        assert_eq!(s.value("up", &[]), 1.0);
        assert_eq!(s.value("esc", &[("v", "q\"\\\n")]), 0.0);
        assert_eq!(s.value("weird", &[("k", "v")]), f64::INFINITY);
        assert_eq!(s.count("a_total", &[("a", "1")]), 3);
        assert!(Samples::parse("a{b=\"1\"} 1\na{b=\"1\"} 2\n").is_err());
        assert!(Samples::parse("a{b=\"1} 1\n").is_err());
        assert!(Samples::parse("a\n").is_err());
    }

    #[test]
    fn dechunks() {
        assert_eq!(
            dechunk(b"3\r\nabc\r\n2;x=y\r\nde\r\n0\r\n\r\n").unwrap(),
            b"abcde"
        );
    }
}

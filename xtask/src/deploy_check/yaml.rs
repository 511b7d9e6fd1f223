//! Reading YAML documents by dotted paths of mapping keys, for the Kubernetes manifests
//! and the Prometheus scrape configuration.

use serde_norway::Value;

/// `v` at a dotted path of mapping keys (keys may contain dots when quoted in `[..]`:
/// not needed here).
pub(super) fn at<'a>(v: &'a Value, path: &str) -> Option<&'a Value> {
    path.split('.').try_fold(v, |v, key| v.get(key))
}

pub(super) fn str_at<'a>(v: &'a Value, path: &str) -> Option<&'a str> {
    at(v, path).and_then(Value::as_str)
}

pub(super) fn bool_at(v: &Value, path: &str) -> Option<bool> {
    at(v, path).and_then(Value::as_bool)
}

pub(super) fn u64_at(v: &Value, path: &str) -> Option<u64> {
    at(v, path).and_then(Value::as_u64)
}

/// The sequence at `path`; empty when there is none.
pub(super) fn seq_at<'a>(v: &'a Value, path: &str) -> &'a [Value] {
    at(v, path)
        .and_then(Value::as_sequence)
        .map(Vec::as_slice)
        .unwrap_or_default()
}

/// Every non-empty document of a multi-document YAML text.
pub(super) fn parse_documents(text: &str) -> anyhow::Result<Vec<Value>> {
    use serde::Deserialize as _;
    serde_norway::Deserializer::from_str(text)
        .map(|d| Value::deserialize(d).map_err(anyhow::Error::from))
        .filter(|v| !matches!(v, Ok(Value::Null)))
        .collect()
}

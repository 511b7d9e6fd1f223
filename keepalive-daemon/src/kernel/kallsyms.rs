//! Kernel symbol addresses from /proc/kallsyms.

use std::path::Path;

#[derive(Debug, thiserror::Error)]
pub enum KallsymsError {
    #[error("cannot read {path}: {source}")]
    Read {
        path: String,
        source: std::io::Error,
    },
    #[error(
        "symbol {name} not found in {path}, or its address is hidden (no CAP_SYSLOG, or \
         kernel.kptr_restrict); then only the address learned in-kernel is used"
    )]
    Missing { name: String, path: String },
}

/// Address of the text symbol `name`.
pub fn address(path: &Path, name: &str) -> Result<u64, KallsymsError> {
    let text = std::fs::read_to_string(path).map_err(|source| KallsymsError::Read {
        path: path.display().to_string(),
        source,
    })?;
    find(&text, name).ok_or_else(|| KallsymsError::Missing {
        name: name.to_owned(),
        path: path.display().to_string(),
    })
}

/// Looks `name` up in kallsyms text (`ffffffff8202df70 t tcp_keepalive_timer`). Zero
/// addresses mean kptr_restrict hid them and count as missing.
pub fn find(text: &str, name: &str) -> Option<u64> {
    text.lines().find_map(|line| {
        let mut parts = line.split_whitespace();
        let addr = parts.next()?;
        let kind = parts.next()?;
        let sym = parts.next()?;
        if sym != name || !matches!(kind, "t" | "T") {
            return None;
        }
        u64::from_str_radix(addr, 16).ok().filter(|a| *a != 0)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const TEXT: &str = "ffffffff8202df60 t __pfx_tcp_keepalive_timer
ffffffff8202df70 t tcp_keepalive_timer
ffffffff8202e000 T tcp_keepalive_timer_other
0000000000000000 t hidden_fn
ffffffff8300a000 d tcp_data_symbol [tcp]";

    #[test]
    fn finds_exact_text_symbols() {
        assert_eq!(find(TEXT, "tcp_keepalive_timer"), Some(0xffffffff8202df70));
        assert_eq!(find(TEXT, "tcp_keepalive"), None);
        assert_eq!(find(TEXT, "hidden_fn"), None);
        assert_eq!(find(TEXT, "tcp_data_symbol"), None);
    }
}

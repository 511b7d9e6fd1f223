//! The defaults file (/etc/default/keepalive-daemon): KEY=VALUE syntax, exactly one
//! KEEPALIVE_DAEMON_ARGS= that the daemon's parser accepts, and only flags it knows
//! mentioned in the comments.

use std::collections::BTreeSet;

use clap::{CommandFactory as _, Parser as _};
use keepalive_daemon::cli::Args;

use super::files::{DEFAULTS, read};
use super::problems::Problems;

pub(super) fn check_defaults() -> anyhow::Result<()> {
    let text = read(DEFAULTS)?;
    let mut p = Problems::default();
    let known = known_flags();
    let mut assignments = 0;
    for (i, raw) in text.lines().enumerate() {
        let n = i + 1;
        let line = raw.trim();
        let (commented, body) = match line.strip_prefix('#') {
            Some(rest) => (true, rest.trim()),
            None => (false, line),
        };
        if !commented && !body.is_empty() {
            let ok = body.split_once('=').is_some_and(|(k, _)| {
                !k.is_empty() && k.chars().all(|c| c.is_ascii_uppercase() || c == '_')
            });
            p.expect(ok, || format!("{DEFAULTS}:{n}: not KEY=VALUE: {raw}"));
        }
        if let Some(value) = body.strip_prefix("KEEPALIVE_DAEMON_ARGS=") {
            assignments += usize::from(!commented);
            let value = value.trim_matches('"');
            let argv = std::iter::once("keepalive-daemon").chain(value.split_whitespace());
            if let Err(e) = Args::try_parse_from(argv) {
                p.expect(false, || {
                    format!("{DEFAULTS}:{n}: {value:?} does not parse: {e}")
                });
            }
        } else if commented {
            for token in body.split_whitespace().filter(|t| t.starts_with("--")) {
                let flag = token.trim_end_matches([',', '.', ';', ')', '`', '"']);
                p.expect(known.contains(flag), || {
                    format!("{DEFAULTS}:{n}: mentions unknown flag {flag}")
                });
            }
        }
    }
    p.expect(assignments == 1, || {
        format!("{DEFAULTS}: {assignments} uncommented KEEPALIVE_DAEMON_ARGS= lines, want 1")
    });
    p.finish()
}

/// The daemon's long flags, `--` included.
fn known_flags() -> BTreeSet<String> {
    let mut cmd = Args::command();
    cmd.build();
    let mut known: BTreeSet<String> = cmd
        .get_arguments()
        .filter_map(|a| a.get_long().map(|l| format!("--{l}")))
        .collect();
    known.extend(["--help".to_owned(), "--version".to_owned()]);
    known
}

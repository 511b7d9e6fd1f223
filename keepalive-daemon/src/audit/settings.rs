//! The keepalive audit's flags (--audit.*, defined in cli.rs): the value parsers clap
//! calls, and the checks that need all the values (how many limits, duplicates), done
//! first at start-up, before anything is attached.

use crate::cli::{Args, parse_duration};

/// --audit.interval: a duration of at least 1s (each run walks every socket).
pub fn parse_interval(s: &str) -> Result<std::time::Duration, String> {
    let d = parse_nonzero(s)?;
    if d < std::time::Duration::from_secs(1) {
        return Err(format!("{s:?}: at least 1s"));
    }
    Ok(d)
}

/// --audit.idle-limit: whole seconds, more than 0 (the risk rule and the label count
/// seconds).
pub fn parse_idle_limit(s: &str) -> Result<std::time::Duration, String> {
    let d = parse_nonzero(s)?;
    if d.subsec_nanos() != 0 {
        return Err(format!("{s:?}: whole seconds, e.g. 350s or 4m"));
    }
    if d.as_secs() > u64::from(u32::MAX) {
        return Err(format!("{s:?}: at most {}s", u32::MAX));
    }
    Ok(d)
}

/// --audit.min-idle: more than 0.
pub fn parse_min_idle(s: &str) -> Result<std::time::Duration, String> {
    parse_nonzero(s)
}

/// [`parse_duration`], saying "more than 0" for a zero duration instead of its minimum.
fn parse_nonzero(s: &str) -> Result<std::time::Duration, String> {
    let digits = s.trim_end_matches(|c: char| !c.is_ascii_digit());
    if !digits.is_empty() && digits.bytes().all(|b| b == b'0') {
        return Err(format!("{s:?}: must be more than 0"));
    }
    parse_duration(s)
}

/// What the keepalive audit runs with, checked beyond what clap checks per value.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AuditSettings {
    pub interval: std::time::Duration,
    /// --audit.idle-limit in seconds, in the order given, without duplicates.
    pub idle_limits: Vec<u32>,
    pub min_idle: std::time::Duration,
}

/// An --audit.* combination clap cannot check value by value.
#[derive(Debug, thiserror::Error)]
pub enum AuditFlagsError {
    #[error(
        "--audit.idle-limit given {count} times; at most {max} limits are supported: keep the ones of the middleboxes on your paths"
    )]
    TooManyLimits { count: usize, max: usize },
    #[error("--audit.idle-limit {seconds}s given twice; give each limit once")]
    DuplicateLimit { seconds: u64 },
}

impl Args {
    /// The audit's settings, `None` with --audit.disable.
    pub fn audit_settings(&self) -> Result<Option<AuditSettings>, AuditFlagsError> {
        if self.audit_disable {
            return Ok(None);
        }
        let max = super::MAX_IDLE_LIMITS;
        if self.audit_idle_limits.len() > max {
            return Err(AuditFlagsError::TooManyLimits {
                count: self.audit_idle_limits.len(),
                max,
            });
        }
        let mut idle_limits = Vec::with_capacity(self.audit_idle_limits.len());
        for d in &self.audit_idle_limits {
            // parse_idle_limit keeps them whole seconds within u32.
            let seconds = d.as_secs() as u32;
            if idle_limits.contains(&seconds) {
                return Err(AuditFlagsError::DuplicateLimit {
                    seconds: d.as_secs(),
                });
            }
            idle_limits.push(seconds);
        }
        Ok(Some(AuditSettings {
            interval: self.audit_interval,
            idle_limits,
            min_idle: self.audit_min_idle,
        }))
    }
}

#[cfg(test)]
mod tests {
    use clap::Parser as _;

    use crate::cli::Args;

    #[test]
    fn audit_flags_default_and_parse() {
        let a = Args::try_parse_from(["keepalive-daemon"]).unwrap();
        let s = a.audit_settings().unwrap().expect("on by default");
        assert_eq!(s.interval, std::time::Duration::from_secs(30));
        assert_eq!(s.idle_limits, [240, 350]);
        assert_eq!(s.min_idle, std::time::Duration::from_secs(30));
        let a = Args::try_parse_from([
            "keepalive-daemon",
            "--audit.interval",
            "1s",
            "--audit.idle-limit",
            "20m",
            "--audit.idle-limit",
            "90s",
            "--audit.min-idle",
            "500ms",
        ])
        .unwrap();
        let s = a.audit_settings().unwrap().unwrap();
        assert_eq!(s.interval, std::time::Duration::from_secs(1));
        assert_eq!(
            s.idle_limits,
            [1200, 90],
            "given limits replace the defaults"
        );
        assert_eq!(s.min_idle, std::time::Duration::from_millis(500));
        let a = Args::try_parse_from(["keepalive-daemon", "--audit.disable"]).unwrap();
        assert_eq!(a.audit_settings().unwrap(), None);
    }

    #[test]
    fn audit_flags_refuse_bad_values_naming_the_flag() {
        let cases: &[(&str, &str, &str)] = &[
            ("--audit.interval", "0s", "must be more than 0"),
            ("--audit.interval", "500ms", "at least 1s"),
            ("--audit.interval", "x", "expected a number"),
            ("--audit.idle-limit", "0", "must be more than 0"),
            ("--audit.idle-limit", "0s", "must be more than 0"),
            ("--audit.idle-limit", "1500ms", "whole seconds"),
            ("--audit.idle-limit", "5d", "unit must be"),
            ("--audit.min-idle", "0ms", "must be more than 0"),
            ("--audit.min-idle", "", "expected a number"),
        ];
        for (flag, value, says) in cases {
            let e = Args::try_parse_from(["keepalive-daemon", flag, value])
                .expect_err(&format!("{flag} {value:?} accepted"))
                .to_string();
            assert!(
                e.contains(flag) && e.contains(says),
                "{flag} {value:?}: {e}"
            );
        }
    }

    #[test]
    fn audit_limits_at_most_eight_and_distinct() {
        let mut argv = vec!["keepalive-daemon".to_owned()];
        for i in 1..=9 {
            argv.push("--audit.idle-limit".into());
            argv.push(format!("{i}m"));
        }
        let e = Args::try_parse_from(&argv).unwrap().audit_settings();
        let e = e.expect_err("9 limits accepted").to_string();
        assert!(
            e.contains("--audit.idle-limit given 9 times; at most 8"),
            "{e}"
        );
        argv.truncate(1 + 2 * 8);
        let s = Args::try_parse_from(&argv).unwrap().audit_settings();
        assert_eq!(s.unwrap().unwrap().idle_limits.len(), 8);
        let a = Args::try_parse_from([
            "keepalive-daemon",
            "--audit.idle-limit",
            "5m",
            "--audit.idle-limit",
            "300s",
        ])
        .unwrap();
        let e = a
            .audit_settings()
            .expect_err("duplicate accepted")
            .to_string();
        assert_eq!(
            e,
            "--audit.idle-limit 300s given twice; give each limit once"
        );
    }
}

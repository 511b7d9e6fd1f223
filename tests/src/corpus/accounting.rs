//! Frame-by-frame comparison of tshark's analysis with what the corpus says the daemon
//! counts: every disagreement must be one the generator predicted, with its documented
//! [`Difference`]; and the per-series totals then differ by exactly those frames.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::net::IpAddr;

use super::tshark::Flagged;
use super::{Cat, Corpus, Counts, Difference, Frame, LOCAL_V4, LOCAL_V6, Origin};
use crate::metrics::series_key;
use crate::names::{PROBE_ACKS, PROBES, ZERO_WINDOW_PROBES};

/// The daemon series a frame of category `cat` counts in.
pub fn series(cat: Cat, fr: &Frame) -> Option<String> {
    let f = fr.family.label();
    match cat {
        Cat::None => None,
        Cat::KeepAlive => {
            let p = if fr.payload_len == 1 { "1" } else { "0" };
            let d = fr.origin.direction();
            Some(series_key(
                PROBES,
                [("direction", d), ("family", f), ("payload_bytes", p)],
            ))
        }
        Cat::KeepAliveAck => {
            let d = fr.origin.peer().direction();
            Some(series_key(PROBE_ACKS, [("direction", d), ("family", f)]))
        }
        Cat::ZeroWindowProbe => {
            let d = fr.origin.direction();
            Some(series_key(
                ZERO_WINDOW_PROBES,
                [("direction", d), ("family", f)],
            ))
        }
    }
}

/// Whether `series` belongs to a metric tshark has a counterpart for.
pub fn comparable(series: &str) -> bool {
    [PROBES, PROBE_ACKS, ZERO_WINDOW_PROBES].iter().any(|m| {
        series
            .strip_prefix(m)
            .is_some_and(|rest| rest.starts_with('{'))
    })
}

#[derive(Debug, Default)]
pub struct Comparison {
    /// tshark's counts in the daemon's series (comparable metrics only, zeros included).
    pub tshark: Counts,
    /// Per series: (daemon's rules) - (tshark), as explained by the documented
    /// differences alone.
    pub explained: BTreeMap<String, i64>,
    /// Frames per documented difference, as tshark actually showed them.
    pub by_difference: BTreeMap<Difference, usize>,
    /// Problems: frames tshark analysed otherwise than predicted, or attributed to
    /// another sender than the corpus says. Must be empty.
    pub unexplained: Vec<String>,
}

/// Compares tshark's flags (`flagged`, by 1-based frame number) with the corpus.
pub fn compare(corpus: &Corpus, flagged: &BTreeMap<usize, Flagged>) -> Comparison {
    let mut c = Comparison::default();
    for (key, _) in super::expected(corpus)
        .into_iter()
        .filter(|(k, _)| comparable(k))
    {
        c.tshark.insert(key.clone(), 0);
        c.explained.insert(key, 0);
    }
    for (i, fr) in corpus.frames.iter().enumerate() {
        let number = i + 1;
        let actual = match flagged.get(&number) {
            None => Cat::None,
            Some(t) => {
                if let Some(problem) = check_sender(fr, t) {
                    c.unexplained.push(format!("frame {number}: {problem}"));
                }
                match t.cats.as_slice() {
                    [one] => *one,
                    many => {
                        c.unexplained
                            .push(format!("frame {number}: several flags {many:?}"));
                        continue;
                    }
                }
            }
        };
        if let Some(key) = series(actual, fr) {
            *c.tshark.get_mut(&key).expect("comparable series") += 1;
        }
        let predicted = fr.tshark_cat();
        if actual != predicted {
            c.unexplained.push(format!(
                "frame {number} ({} conversation {}, {:?} from {:?}, {} bytes): tshark says {actual:?}, \
                 predicted {predicted:?} ({})",
                corpus.flows[fr.flow as usize].scenario.name(),
                fr.flow,
                fr.kind,
                fr.origin,
                fr.payload_len,
                fr.difference.map_or("no documented difference".to_owned(), |d| format!("{d:?}")),
            ));
            continue;
        }
        if let Some(d) = fr.difference {
            *c.by_difference.entry(d).or_default() += 1;
            if let Some(key) = series(fr.kind.cat(), fr) {
                *c.explained.get_mut(&key).expect("comparable series") += 1;
            }
            if let Some(key) = series(actual, fr) {
                *c.explained.get_mut(&key).expect("comparable series") -= 1;
            }
        }
    }
    c
}

fn check_sender(fr: &Frame, t: &Flagged) -> Option<String> {
    let local = match t.src {
        IpAddr::V4(a) => a == LOCAL_V4,
        IpAddr::V6(a) => a == LOCAL_V6,
    };
    let origin = if local { Origin::Local } else { Origin::Remote };
    let family_ok = t.src.is_ipv4() == (fr.family == crate::Family::Ipv4);
    (origin != fr.origin || !family_ok || t.tcp_len != fr.payload_len).then(|| {
        format!(
            "tshark sees {}:{} ({} bytes), corpus says {:?} {} ({} bytes)",
            t.src, t.sport, t.tcp_len, fr.origin, fr.family, fr.payload_len
        )
    })
}

/// A table of the comparable series: the daemon's rules (expected), the daemon
/// (measured, if given), tshark, and the documented part of the difference.
pub fn table(expected: &Counts, daemon: Option<&Counts>, c: &Comparison) -> String {
    let mut out = format!(
        "{:<80} {:>8} {:>8} {:>8} {:>11}\n",
        "series", "expected", "daemon", "tshark", "documented"
    );
    for (key, want) in expected.iter().filter(|(k, _)| comparable(k)) {
        let got = daemon
            .and_then(|d| d.get(key))
            .map_or("-".to_owned(), u64::to_string);
        let _ = writeln!(
            out,
            "{key:<80} {want:>8} {got:>8} {:>8} {:>+11}",
            c.tshark.get(key).copied().unwrap_or(0),
            c.explained.get(key).copied().unwrap_or(0)
        );
    }
    for (key, want) in expected.iter().filter(|(k, _)| !comparable(k)) {
        let got = daemon
            .and_then(|d| d.get(key))
            .map_or("-".to_owned(), u64::to_string);
        let _ = writeln!(
            out,
            "{key:<80} {want:>8} {got:>8} {:>8} {:>11}",
            "n/a", "n/a"
        );
    }
    out.push_str("documented differences (frames):\n");
    for d in Difference::ALL {
        let _ = writeln!(
            out,
            "  {:<40} {}",
            format!("{d:?}"),
            c.by_difference.get(&d).copied().unwrap_or(0)
        );
    }
    out
}

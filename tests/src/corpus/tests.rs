//! Host checks of the generator itself (no root, no daemon, no tshark).

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;

use super::*;
use crate::metrics::series_key;
use crate::names::{PROBE_ACKS, PROBES, RESETS};

fn corpus() -> Corpus {
    generate(DEFAULT_SEED, 4)
}

#[test]
fn generation_is_deterministic() {
    let (a, b) = (generate(7, 2), generate(7, 2));
    assert_eq!(a.frames.len(), b.frames.len());
    assert!(
        a.frames
            .iter()
            .zip(&b.frames)
            .all(|(x, y)| x.bytes == y.bytes && x.time_us == y.time_us)
    );
    let c = generate(8, 2);
    assert!(
        a.frames
            .iter()
            .zip(&c.frames)
            .any(|(x, y)| x.bytes != y.bytes)
    );
}

#[test]
fn capture_order_and_conversations_are_sound() {
    let c = corpus();
    assert!(
        c.frames.windows(2).all(|w| w[0].time_us < w[1].time_us),
        "timestamps increase"
    );
    let mut tuples = BTreeSet::new();
    for fl in &c.flows {
        let s = &fl.shape;
        assert!(
            tuples.insert((s.local.ip, s.local.port, s.remote.ip, s.remote.port)),
            "unique 4-tuple"
        );
        for ip in [s.local.ip, s.remote.ip] {
            match ip {
                IpAddr::V4(a) => assert_eq!(a.octets()[..3], [192, 0, 2]),
                IpAddr::V6(a) => assert_eq!(a.segments()[..4], [0x2001, 0xdb8, 0, 0]),
            }
        }
    }
    // Interleaved: conversations overlap in time.
    let switches = c
        .frames
        .windows(2)
        .filter(|w| w[0].flow != w[1].flow)
        .count();
    assert!(switches > c.frames.len() / 4, "{switches} switches");
    for fr in &c.frames {
        assert_eq!(Origin::of_frame(&fr.bytes), Some(fr.origin));
    }
}

#[test]
fn every_case_is_present() {
    let c = generate(DEFAULT_SEED, DEFAULT_FLOWS_PER_SCENARIO);
    let scenarios: BTreeSet<Scenario> = c.flows.iter().map(|f| f.scenario).collect();
    assert_eq!(scenarios.len(), Scenario::ALL.len());
    let differences: BTreeSet<Difference> = c.frames.iter().filter_map(|f| f.difference).collect();
    assert_eq!(differences.len(), Difference::ALL.len(), "{differences:?}");
    let mut seen: BTreeSet<(Kind, Origin, Family, u32)> = BTreeSet::new();
    for fr in &c.frames {
        seen.insert((fr.kind, fr.origin, fr.family, fr.payload_len.min(1)));
    }
    for o in [Origin::Local, Origin::Remote] {
        for f in Family::ALL {
            for p in [0, 1] {
                assert!(
                    seen.contains(&(Kind::Probe, o, f, p)),
                    "{o:?} {f} {p}-byte probes"
                );
            }
            for k in [
                Kind::ProbeAck,
                Kind::ProbeRst,
                Kind::ZeroWindowProbe,
                Kind::UnknownFlowProbe,
            ] {
                assert!(
                    seen.iter().any(|s| (s.0, s.1, s.2) == (k, o, f)),
                    "{k:?} from {o:?} {f}"
                );
            }
        }
    }
    let encaps: BTreeSet<&str> = c.flows.iter().map(|f| f.shape.encap.label()).collect();
    assert_eq!(encaps.len(), 3);
    assert!(
        c.flows
            .iter()
            .any(|f| f.shape.ip_extras && f.shape.family == Family::Ipv6)
    );
    assert!(
        c.flows
            .iter()
            .any(|f| f.shape.ip_extras && f.shape.family == Family::Ipv4)
    );
    // Sequence numbers that wrap: some probe at 0xffffffff, some below 2^20 after a wrap.
    assert!(
        c.frames
            .iter()
            .any(|f| f.kind == Kind::Probe && f.seq == u32::MAX)
    );
}

#[test]
fn documented_differences_are_real_differences() {
    for fr in &corpus().frames {
        if let Some(d) = fr.difference {
            assert_ne!(d.tshark(), fr.kind.cat(), "{}", fr.summary());
        }
        assert_eq!(fr.tshark_cat() != fr.kind.cat(), fr.difference.is_some());
    }
}

/// Probes are probe-shaped (seq one below the highest seq + len the end sent before,
/// 0/1 byte, ACK only), and answers acknowledge probe seq + 1.
#[test]
fn probes_and_answers_have_their_shape() {
    let c = corpus();
    let mut nxt: BTreeMap<(u32, Origin), u32> = BTreeMap::new();
    let mut last_probe: BTreeMap<(u32, Origin), u32> = BTreeMap::new();
    for fr in &c.frames {
        let key = (fr.flow, fr.origin);
        if matches!(
            fr.kind,
            Kind::Probe | Kind::ZeroWindowProbe | Kind::UnknownFlowProbe
        ) {
            assert!(
                fr.payload_len <= 1 && fr.flags & !wire::PSH == wire::ACK,
                "{}",
                fr.summary()
            );
            if let Some(n) = nxt.get(&key) {
                assert_eq!(fr.seq, n.wrapping_sub(1), "{}", fr.summary());
            }
            last_probe.insert(key, fr.seq);
        }
        if fr.kind == Kind::ProbeAck {
            let probe = last_probe[&(fr.flow, fr.origin.peer())];
            assert_eq!(fr.ack, probe.wrapping_add(1), "{}", fr.summary());
            assert_eq!(fr.payload_len, 0);
        }
        // snd_nxt as far as seen: own seq + len, or what the peer acknowledged.
        let syn_fin = u32::from(fr.flags & (wire::SYN | wire::FIN) != 0);
        let mut raise = |key, value: u32| {
            let e = nxt.entry(key).or_insert(value);
            if (value.wrapping_sub(*e) as i32) > 0 {
                *e = value;
            }
        };
        raise(key, fr.seq.wrapping_add(fr.payload_len + syn_fin));
        if fr.flags & wire::ACK != 0 {
            raise((fr.flow, fr.origin.peer()), fr.ack);
        }
    }
}

#[test]
fn expected_counts_follow_the_kinds() {
    let c = corpus();
    let e = expected(&c);
    assert_eq!(e.len(), 8 + 4 + 4 + 6, "every series, zeros included");
    let total = |name: &str| -> u64 {
        e.iter()
            .filter(|(k, _)| k.starts_with(&format!("{name}{{")))
            .map(|(_, v)| v)
            .sum()
    };
    let kinds = |k: Kind| c.frames.iter().filter(|f| f.kind == k).count() as u64;
    assert_eq!(total(PROBES), kinds(Kind::Probe));
    assert_eq!(total(PROBE_ACKS), kinds(Kind::ProbeAck));
    assert_eq!(total(RESETS), kinds(Kind::ProbeRst));
    for f in ["ipv4", "ipv6"] {
        assert_eq!(
            e[&series_key(RESETS, [("reason", "timeout"), ("family", f)])],
            0
        );
    }
}

/// Each documented difference lives in its own scenarios, so that every difference
/// between the daemon and tshark is accountable to one cause.
#[test]
fn differences_are_isolated_in_their_scenarios() {
    use Difference as D;
    use Scenario as S;
    let allowed = |d: Difference| -> &'static [Scenario] {
        match d {
            D::ZeroWindowProbeIsKeepAliveForTshark => &[S::ZeroWindow, S::ZeroWindowReopenedByData],
            D::AckOfRetransmittedLastByte => &[S::LastByteRetransmission],
            D::NewByteZeroWindowProbe => &[S::NewByteZeroWindow],
            D::AnswerWithNewWindow => &[S::AnswerWithNewWindow],
            D::CrossingAnswerTsharkMissed => &[S::CrossingProbes],
            D::FirstSegmentOfItsEnd => &[S::MidIdleAckFirst],
            D::ZeroByteProbeAfterCaptureStartedOnOne => &[S::MidIdleProbeFirst, S::MidIdleAckFirst],
            D::ZeroByteProbeAtSndNxtZero => &[S::WrapToZero],
            D::AnswerToProbeTsharkMissed => {
                &[S::MidIdleProbeFirst, S::MidIdleAckFirst, S::WrapToZero]
            }
        }
    };
    let c = generate(DEFAULT_SEED, DEFAULT_FLOWS_PER_SCENARIO);
    for fr in &c.frames {
        if let Some(d) = fr.difference {
            let s = c.flows[fr.flow as usize].scenario;
            assert!(allowed(d).contains(&s), "{d:?} in {}", s.name());
        }
    }
}

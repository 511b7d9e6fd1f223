//! Property tests: the classifier against an independent reference model.
//!
//! The model ([`model::Model`]) is written from the TCP rules in its module doc, not
//! from classify.rs. It sees every segment of a simulated connection, bulk data
//! included; the classifier only gets the segments that pass [`packet::is_candidate`],
//! as in the kernel.
//!
//! Conversations ([`sim::Conv`]) include both ends probing at once, probes crossing
//! data and answers, and answers delayed past the next probe. Each is checked in the
//! order the simulator sent it and in a random order in which this host's egress and
//! ingress hooks could see it ([`sim::hook_order`]): two programs on two CPUs see
//! causally unrelated segments in either order.

mod model;
mod sim;
mod strategy;

use proptest::prelude::*;

use crate::{
    Direction,
    classify::{Verdict, classify},
    flow::FlowState,
    packet::{self, TCP_ACK},
};
use model::{Model, later};
use sim::{Act, Answer, BothIdle, Conv, Sent, hook_order};
use strategy::conv;

// ----- Running both -----

/// Each segment with the model's verdict and, for candidates, the classifier's (the
/// first candidate only seeds the state, as in the kernel: `Some(Nothing)`).
struct Run {
    steps: Vec<(Sent, Verdict, Option<Verdict>)>,
    model: Model,
    state: Option<FlowState>,
}

fn run(segs: &[Sent]) -> Run {
    let mut model = Model::default();
    let mut state: Option<FlowState> = None;
    let mut steps = Vec::new();
    for (k, sent) in segs.iter().enumerate() {
        let (dir, s) = (sent.dir, &sent.seg);
        let now = k as u64 + 1;
        // Generator self-check: nobody acknowledges data the other side never sent.
        let sent_so_far = model.side[dir.opposite().index()].snd_nxt;
        if s.flags & TCP_ACK != 0 && sent_so_far.is_some_and(|n| later(s.ack, n)) {
            panic!("generator bug: segment #{k} acknowledges unsent data");
        }
        let mv = model.step(dir, s);
        let rv = if !packet::is_candidate(s.flags, s.payload_len, s.window) {
            None
        } else if let Some(st) = state.as_mut() {
            Some(classify(st, s, dir, || now))
        } else {
            state = Some(FlowState::first_sighting(s, dir, now));
            Some(Verdict::Nothing)
        };
        steps.push((*sent, mv, rv));
    }
    Run {
        steps,
        model,
        state,
    }
}

/// The conversation with sequence numbers relative to each side's ISN.
fn trace(isn: [u32; 2], run: &Run) -> String {
    let mut t = String::new();
    for (k, (sent, mv, rv)) in run.steps.iter().enumerate() {
        let (dir, s) = (sent.dir, &sent.seg);
        let (me, other) = (dir.index(), dir.opposite().index());
        t += &format!(
            "#{k:<3} {:<8} seq=isn+{:<6} ack=isn+{:<6} flags={:#04x} len={:<4} win={:<5} seen={:<3} model={mv:?} real={rv:?}\n",
            dir.label(),
            s.seq.wrapping_sub(isn[me]),
            s.ack.wrapping_sub(isn[other]),
            s.flags,
            s.payload_len,
            s.window,
            sent.seen,
        );
    }
    t
}

/// Property 1 on one sequence of segments.
fn agrees_segment_by_segment(isn: [u32; 2], segs: &[Sent]) -> Result<(), TestCaseError> {
    let r = run(segs);
    for (k, (sent, mv, rv)) in r.steps.iter().enumerate() {
        match rv {
            Some(rv) => prop_assert_eq!(rv, mv, "segment #{}\n{}", k, trace(isn, &r)),
            None => prop_assert!(
                *mv == Verdict::Nothing && sent.seg.payload_len > 1,
                "skipped segment #{} is {:?}\n{}",
                k,
                mv,
                trace(isn, &r)
            ),
        }
    }
    Ok(())
}

/// (probes, probe_acks, zero_window_probes) per direction left in the flow state.
fn counters(st: &FlowState) -> [(u32, u32, u32); 2] {
    st.dir
        .map(|d| (d.probes, d.probe_acks, d.zero_window_probes))
}

// The minimal cases these properties found against earlier classifiers are kept as a
// regression test at the end of this file.
const KNOWN: &str = "REGRESSION: a case the model once caught the classifier on";

proptest! {
    // No regression files in the source tree. 512 cases unless PROPTEST_CASES says
    // otherwise: every run has hundreds of crossing rounds (generator_makes_probes_cross).
    #![proptest_config(ProptestConfig {
        failure_persistence: None,
        cases: std::env::var("PROPTEST_CASES").ok().and_then(|v| v.parse().ok()).unwrap_or(512),
        ..Default::default()
    })]

    /// The classifier, fed only the candidate segments, agrees with the model on each of
    /// them; the model never calls a skipped (bulk data) segment anything.
    #[test]
    fn classifier_agrees_with_model_segment_by_segment(c in conv()) {
        agrees_segment_by_segment(c.isn, &c.segments())?;
    }

    /// The same in an order this host's two hooks could see the segments in.
    #[test]
    fn classifier_agrees_with_model_in_any_hook_order(c in conv(), seed in any::<u64>()) {
        agrees_segment_by_segment(c.isn, &hook_order(&c.segments(), seed))?;
    }

    /// The per-direction counters left in the flow state match the model's counts.
    #[test]
    fn counters_match_model(c in conv(), seed in any::<u64>()) {
        let r = run(&hook_order(&c.segments(), seed));
        let st = r.state.expect("every run starts with a pure ACK");
        for d in Direction::ALL {
            let (real, model) = (&st.dir[d.index()], &r.model.side[d.index()]);
            prop_assert_eq!(
                (real.probes, real.probe_acks, real.zero_window_probes),
                (model.probes, model.probe_acks, model.zero_window_probes),
                "{} (probes, probe_acks, zero_window_probes)\n{}", d.label(), trace(c.isn, &r));
        }
    }

    /// The order in which the hooks see causally unrelated segments changes no count,
    /// unless an answer is delayed past the next probe (then the order at this host
    /// decides which probe it answers; docs/accuracy.md).
    #[test]
    fn hook_order_changes_no_count(c in conv(), seed in any::<u64>()) {
        let c = c.without_late_answers();
        let segs = c.segments();
        let (a, b) = (run(&segs), run(&hook_order(&segs, seed)));
        let (ca, cb) = (counters(&a.state.unwrap()), counters(&b.state.unwrap()));
        prop_assert_eq!(ca, cb, "sent order:\n{}\nhook order:\n{}", trace(c.isn, &a), trace(c.isn, &b));
    }

    /// Shifting both sides' sequence spaces changes no verdict.
    #[test]
    fn verdicts_do_not_depend_on_isns(c in conv(), shift in [any::<u32>(), any::<u32>()]) {
        let segs = c.segments();
        let shifted: Vec<_> = segs
            .iter()
            .map(|&sent| {
                let mut s = sent;
                s.seg.seq = s.seg.seq.wrapping_add(shift[s.dir.index()]);
                if s.seg.flags & TCP_ACK != 0 {
                    s.seg.ack = s.seg.ack.wrapping_add(shift[s.dir.opposite().index()]);
                }
                s
            })
            .collect();
        let real = |r: Run| r.steps.into_iter().map(|step| step.2).collect::<Vec<_>>();
        let (a, b) = (run(&segs), run(&shifted));
        let msg = format!("shift {shift:?}\n{}", trace(c.isn, &a));
        prop_assert_eq!(real(a), real(b), "{}", msg);
    }
}

/// The generator really makes probes cross: in 512 conversations drawn as the
/// properties draw them, at least 150 rounds where a probe leaves before the other
/// side's probe arrived.
#[test]
fn generator_makes_probes_cross() {
    use proptest::strategy::ValueTree;
    let mut runner = proptest::test_runner::TestRunner::deterministic();
    let mut crossings = 0;
    for _ in 0..512 {
        let c = conv()
            .new_tree(&mut runner)
            .expect("conversation")
            .current();
        let segs = c.segments();
        let r = run(&segs);
        // A probe whose sender had not yet received the other side's last probe.
        let probes: Vec<usize> = (0..segs.len())
            .filter(|&k| matches!(r.steps[k].1, Verdict::Probe { .. }))
            .collect();
        for w in probes.windows(2) {
            let (p, q) = (&segs[w[0]], &segs[w[1]]);
            let q_received = segs[..w[1]].iter().filter(|s| s.dir == p.dir).count();
            if p.dir != q.dir && q.seen < q_received {
                crossings += 1;
            }
        }
    }
    assert!(crossings >= 150, "only {crossings} crossing rounds");
}

/// The minimal failing cases proptest shrank to (ISNs 0, windows 1), one per cause.
/// Cases 1-4 were found while this test was first written (1 by the decision behind
/// `RETRANSMITTED_LAST_BYTE_IS_PROBE`); 5 and 6 are the both-ends-probing bug (a pure
/// ACK of the prober's own side taken as superseding its probe).
#[test]
fn cases_found_by_the_model_stay_fixed() {
    let conv = |acts| Conv {
        isn: [0, 0],
        window: [1, 1],
        first: 0,
        acts,
        fin: None,
    };
    use Answer::{Ack, Silent};
    let cases = [
        // 1. Stale `acked`: the peer's request was acknowledged only by our (skipped)
        // response; its 1-byte keepalive was taken for a retransmission (Nothing).
        conv(vec![
            Act::Burst(1, vec![2], 0, Some(2)),
            Act::Idle(1, true, vec![Ack], false),
        ]),
        // 2. Stale WINDOW_ZERO: the peer reopened its window on (skipped) data; our
        // next keepalive was a ZeroWindowProbe and its answer lost.
        conv(vec![
            Act::ZeroWindow(0, vec![2], 1, None, None, Some(2)),
            Act::Idle(0, false, vec![Ack], false),
        ]),
        // 3. Stale PROBE_PENDING: the peer's unanswered probe was superseded by its own
        // (skipped) data; our later keepalive-timeout RST was a ProbeReset.
        conv(vec![
            Act::Idle(1, false, vec![Silent], false),
            Act::Burst(1, vec![2], 0, None),
            Act::Idle(0, false, vec![Silent], true),
        ]),
        // 4. WINDOW_ZERO cleared too early: the zero-window side's own keepalive (seq
        // snd_nxt - 1) sets its `zero_window_end`, so our answer (ack snd_nxt) "proves"
        // a reopened window.
        conv(vec![Act::ZeroWindow(
            0,
            vec![2],
            2,
            Some(false),
            None,
            None,
        )]),
        // 5. Both ends probe, probes cross: our ACK to the peer's probe dropped our own
        // pending probe, and the peer's answer counted for nothing.
        conv(vec![Act::BothIdle(BothIdle {
            first: 0,
            one_byte: [false, false],
            crossing: true,
            first_answer: 0,
            peer_answer_lost: false,
        })]),
        // 6. The peer's keepalive crosses our zero-window probe: its answer to the
        // window probe dropped its own keepalive, and our answer counted for nothing.
        conv(vec![Act::ZeroWindow(0, vec![2], 1, Some(true), None, None)]),
    ];
    for (n, c) in cases.iter().enumerate() {
        if let Err(e) = agrees_segment_by_segment(c.isn, &c.segments()) {
            panic!("{KNOWN}: case {}: {e}", n + 1);
        }
    }
}

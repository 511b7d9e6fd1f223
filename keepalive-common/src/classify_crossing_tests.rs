//! Both ends probing at once, and other segments that cross a probe on the wire: the
//! cases where a rule based on segment order instead of meaning loses answers.
//!
//! Our snd_nxt is 1000 and the peer's 5000 throughout (probes at 999 and 4999).

use super::tests::{ack, established, run, seg};
use super::*;
use crate::flow::dir_flags;
use crate::packet::{TCP_ACK, TCP_FIN, TCP_RST};

use Direction::{Received as In, Sent as Out};

const OUR_PROBE: (Direction, u32, u32) = (Out, 999, 5000);
const THEIR_PROBE: (Direction, u32, u32) = (In, 4999, 1000);
/// Our zero-length ACK to the peer's probe (seq = our snd_nxt, ack = their probe + 1).
const OUR_ANSWER: (Direction, u32, u32) = (Out, 1000, 5000);
const THEIR_ANSWER: (Direction, u32, u32) = (In, 5000, 1000);

fn steps(order: &[(Direction, u32, u32)]) -> Vec<(Direction, Segment)> {
    order.iter().map(|&(d, s, a)| (d, ack(s, a))).collect()
}

fn answers(st: &FlowState) -> (u32, u32) {
    (st.dir[0].probe_acks, st.dir[1].probe_acks)
}

/// Every order in which this host's egress and ingress hooks can see the four segments
/// of one crossing round: each answer after the probe it answers, our segments in the
/// order we sent them, theirs in the order they sent them.
#[test]
fn crossing_probes_count_both_answers_in_every_hook_order() {
    let orders: [[(Direction, u32, u32); 4]; 6] = [
        [OUR_PROBE, THEIR_PROBE, OUR_ANSWER, THEIR_ANSWER],
        [OUR_PROBE, THEIR_PROBE, THEIR_ANSWER, OUR_ANSWER],
        [THEIR_PROBE, OUR_PROBE, OUR_ANSWER, THEIR_ANSWER],
        [THEIR_PROBE, OUR_PROBE, THEIR_ANSWER, OUR_ANSWER],
        [OUR_PROBE, THEIR_ANSWER, THEIR_PROBE, OUR_ANSWER],
        [THEIR_PROBE, OUR_ANSWER, OUR_PROBE, THEIR_ANSWER],
    ];
    for order in orders {
        let mut st = established(1000, 5000);
        let v = run(&mut st, &steps(&order));
        let probes = v
            .iter()
            .filter(|v| matches!(v, Verdict::Probe { .. }))
            .count();
        let acks = v.iter().filter(|v| **v == Verdict::ProbeAck).count();
        assert_eq!((probes, acks), (2, 2), "order {order:?}: {v:?}");
        assert_eq!(answers(&st), (1, 1), "order {order:?}");
        assert_eq!(
            (st.dir[0].unanswered_streak, st.dir[1].unanswered_streak),
            (0, 0)
        );
        assert_eq!(st.dir[0].flags & dir_flags::PROBE_PENDING, 0);
        assert_eq!(st.dir[1].flags & dir_flags::PROBE_PENDING, 0);
    }
}

#[test]
fn crossing_probes_with_one_answer_lost_leave_only_that_probe_unanswered() {
    // Their answer is lost: our probe stays pending; our next probe makes a streak.
    let mut st = established(1000, 5000);
    run(&mut st, &steps(&[OUR_PROBE, THEIR_PROBE, OUR_ANSWER]));
    assert_eq!(answers(&st), (0, 1));
    assert_ne!(st.dir[0].flags & dir_flags::PROBE_PENDING, 0);
    run(&mut st, &steps(&[OUR_PROBE, THEIR_ANSWER]));
    assert_eq!(answers(&st), (1, 1));
    assert_eq!((st.dir[0].probes, st.dir[0].unanswered_streak), (2, 0));

    // Our answer is lost (after our hook saw it): their probe stays pending here.
    let mut st = established(1000, 5000);
    run(&mut st, &steps(&[OUR_PROBE, THEIR_PROBE, THEIR_ANSWER]));
    assert_eq!(answers(&st), (1, 0));
    assert_ne!(st.dir[1].flags & dir_flags::PROBE_PENDING, 0);
}

#[test]
fn one_byte_probes_crossing_count_both_answers() {
    // Answered as duplicate data: a zero-length ACK each way, ack unchanged.
    let mut st = established(1000, 5000);
    let v = run(
        &mut st,
        &[
            (Out, seg(999, 5000, TCP_ACK, 1, 1000)),
            (In, seg(4999, 1000, TCP_ACK, 1, 1000)),
            (Out, ack(1000, 5000)),
            (In, ack(5000, 1000)),
        ],
    );
    assert_eq!(
        v,
        [
            Verdict::Probe { payload_bytes: 1 },
            Verdict::Probe { payload_bytes: 1 },
            Verdict::ProbeAck,
            Verdict::ProbeAck
        ]
    );
}

#[test]
fn peer_data_crossing_our_probe_does_not_hide_the_answer() {
    // The peer sends 300 bytes (skipped by the early exit) while our probe is on its
    // way; we acknowledge them with a pure ACK at seq 1000, then its duplicate ACK for
    // our probe arrives: still the answer.
    let mut st = established(1000, 5000);
    let v = run(
        &mut st,
        &[
            (Out, ack(999, 5000)),
            (Out, ack(1000, 5300)),
            (In, ack(5300, 1000)),
        ],
    );
    assert_eq!(
        v,
        [
            Verdict::Probe { payload_bytes: 0 },
            Verdict::Nothing,
            Verdict::ProbeAck
        ]
    );
}

#[test]
fn a_pure_ack_beyond_the_probe_proves_skipped_data_and_supersedes_it() {
    // We sent 200 bytes after our probe (skipped); our next pure ACK starts at 1200.
    // An ACK of 1000 arriving later answers nothing: the probe was superseded.
    let mut st = established(1000, 5000);
    let v = run(
        &mut st,
        &[
            (Out, ack(999, 5000)),
            (Out, ack(1200, 5000)),
            (In, ack(5000, 1000)),
        ],
    );
    assert_eq!(
        v,
        [
            Verdict::Probe { payload_bytes: 0 },
            Verdict::Nothing,
            Verdict::Nothing
        ]
    );
    assert_eq!(st.dir[0].unanswered_streak, 0);
}

#[test]
fn our_fin_supersedes_our_probe() {
    let mut st = established(1000, 5000);
    let fin = seg(1000, 5000, TCP_ACK | TCP_FIN, 0, 1000);
    let v = run(
        &mut st,
        &[(Out, ack(999, 5000)), (Out, fin), (In, ack(5000, 1000))],
    );
    assert_eq!(v[2], Verdict::Nothing);
}

#[test]
fn peer_keepalive_while_we_probe_its_zero_window() {
    // The peer closed its window; we send zero-window probes; the peer's keepalive
    // crosses one of them. Its answer to our window probe (window 0, seq 5000) must not
    // drop its own keepalive, which our ACK then answers.
    let mut st = established(1000, 5000);
    let v = run(
        &mut st,
        &[
            (In, seg(5000, 1000, TCP_ACK, 0, 0)),
            (Out, ack(999, 5000)),
            (In, seg(4999, 1000, TCP_ACK, 0, 0)),
            (In, seg(5000, 1000, TCP_ACK, 0, 0)),
            (Out, ack(1000, 5000)),
        ],
    );
    assert_eq!(
        v,
        [
            Verdict::Nothing,
            Verdict::ZeroWindowProbe,
            Verdict::Probe { payload_bytes: 0 },
            Verdict::Nothing,
            Verdict::ProbeAck
        ]
    );
}

#[test]
fn an_answer_after_our_next_probe_answers_that_probe() {
    // Answer to the first probe delayed past the second: one probe unanswered (streak
    // 1 while it waited), the late ACK answers the pending (second) probe.
    let mut st = established(1000, 5000);
    let v = run(
        &mut st,
        &[
            (Out, ack(999, 5000)),
            (Out, ack(999, 5000)),
            (In, ack(5000, 1000)),
        ],
    );
    assert_eq!(v[2], Verdict::ProbeAck);
    assert_eq!((st.dir[0].probes, st.dir[0].probe_acks), (2, 1));
    assert_eq!(st.dir[0].unanswered_streak, 0);
    // The second answer finds nothing pending.
    assert_eq!(run(&mut st, &[(In, ack(5000, 1000))]), [Verdict::Nothing]);
}

#[test]
fn their_reset_crossing_our_probe_counts_as_a_reset_answer() {
    // On the wire a RST that crosses our probe cannot be told from one that answers
    // it: both reset the probe (documented in docs/accuracy.md).
    let mut st = established(1000, 5000);
    let rst = seg(5000, 1000, TCP_ACK | TCP_RST, 0, 0);
    let v = run(&mut st, &[(Out, ack(999, 5000)), (In, rst)]);
    assert_eq!(v[1], Verdict::ProbeReset);
    assert_eq!(st.end, flow_end::PEER_RESET);
}

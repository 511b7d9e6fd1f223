use super::*;
use crate::{
    Family,
    flow::FlowState,
    packet::{Segment, TCP_ACK, TCP_FIN, TCP_PSH, TCP_RST},
};

use Direction::{Received as In, Sent as Out};

pub(super) fn seg(seq: u32, ack: u32, flags: u8, len: u32, window: u16) -> Segment {
    Segment {
        family: Family::Ipv4,
        src: [1, 0, 0, 0],
        dst: [2, 0, 0, 0],
        sport: 1,
        dport: 2,
        seq,
        ack,
        flags,
        window,
        payload_len: len,
    }
}

pub(super) fn ack(seq: u32, ack: u32) -> Segment {
    seg(seq, ack, TCP_ACK, 0, 1000)
}

/// A connection that has exchanged data: our snd_nxt is `ours`, the peer's `theirs`,
/// both acknowledged (the last pure ACK of the exchange carried both).
pub(super) fn established(ours: u32, theirs: u32) -> FlowState {
    let mut st = FlowState::first_sighting(&ack(ours, theirs), Out, 1);
    learn(&mut st, &ack(theirs, ours), In);
    st
}

pub(super) fn run(st: &mut FlowState, steps: &[(Direction, Segment)]) -> Vec<Verdict> {
    steps
        .iter()
        .map(|(d, s)| classify(st, s, *d, || 5))
        .collect()
}

#[test]
fn zero_byte_probe_and_its_ack() {
    let mut st = established(1000, 5000);
    let v = run(&mut st, &[(Out, ack(999, 5000)), (In, ack(5000, 1000))]);
    assert_eq!(v, [Verdict::Probe { payload_bytes: 0 }, Verdict::ProbeAck]);
    assert_eq!(
        (
            st.dir[0].probes,
            st.dir[0].probe_acks,
            st.dir[0].unanswered_streak
        ),
        (1, 1, 0)
    );
    assert_eq!(st.dir[0].last_probe_ns, 5);
}

#[test]
fn received_probe_answered_by_us() {
    let mut st = established(1000, 5000);
    let v = run(&mut st, &[(In, ack(4999, 1000)), (Out, ack(1000, 5000))]);
    assert_eq!(v, [Verdict::Probe { payload_bytes: 0 }, Verdict::ProbeAck]);
    assert_eq!(st.dir[1].probe_acks, 1);
}

#[test]
fn one_byte_probe_counts_when_everything_is_acknowledged() {
    let mut st = established(1000, 5000);
    let probe = seg(999, 5000, TCP_ACK, 1, 1000);
    // Answered as duplicate data: ack stays at 1000 (a DSACK option may ride along).
    let v = run(&mut st, &[(Out, probe), (In, ack(5000, 1000))]);
    assert_eq!(v, [Verdict::Probe { payload_bytes: 1 }, Verdict::ProbeAck]);
}

#[test]
fn retransmitted_last_byte_counts_as_a_one_byte_probe() {
    // Documented decision (classify.rs): the same shape as a 1-byte keepalive, whether
    // or not the byte was acknowledged; Wireshark calls it a keep-alive too.
    let mut st = established(1000, 5000);
    let data = seg(1000, 5000, TCP_ACK | TCP_PSH, 1, 1000);
    let rexmit = seg(1000, 5000, TCP_ACK | TCP_PSH, 1, 1000);
    let v = run(&mut st, &[(Out, data), (Out, rexmit)]);
    assert_eq!(v, [Verdict::Nothing, Verdict::Probe { payload_bytes: 1 }]);
}

#[test]
fn a_probe_superseded_by_skipped_data_is_not_answered_by_a_later_reset() {
    let mut st = established(1000, 5000);
    // The peer probes (unanswered), then sends 300 bytes we only see acknowledged; our
    // keepalive timeout's RST|ACK later acknowledges past the probe.
    let v = run(
        &mut st,
        &[
            (In, ack(4999, 1000)),
            (Out, ack(1000, 5300)),
            (Out, seg(1000, 5300, TCP_RST | TCP_ACK, 0, 0)),
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
    assert_eq!(st.end, flow_end::CLOSED);
}

#[test]
fn rst_answers_count_by_who_sent_the_probe() {
    let mut st = established(1000, 5000);
    let v = run(
        &mut st,
        &[(Out, ack(999, 5000)), (In, seg(5000, 0, TCP_RST, 0, 0))],
    );
    assert_eq!(
        v,
        [Verdict::Probe { payload_bytes: 0 }, Verdict::ProbeReset]
    );
    assert_eq!(st.end, flow_end::PEER_RESET);

    let mut st = established(1000, 5000);
    let v = run(
        &mut st,
        &[(In, ack(4999, 1000)), (Out, seg(1000, 0, TCP_RST, 0, 0))],
    );
    assert_eq!(
        v,
        [Verdict::Probe { payload_bytes: 0 }, Verdict::ProbeReset]
    );
    assert_eq!(st.end, flow_end::LOCAL_RESET);
}

#[test]
fn rst_fin_and_syn_shapes_are_never_probes() {
    let mut st = established(1000, 5000);
    let v = run(
        &mut st,
        &[
            (Out, seg(999, 5000, TCP_ACK | TCP_FIN, 0, 1000)),
            (Out, seg(999, 5000, TCP_RST | TCP_ACK, 0, 1000)),
            (In, seg(4999, 1000, TCP_RST, 0, 0)),
        ],
    );
    assert_eq!(v, [Verdict::Nothing; 3]);
    assert_eq!(st.end, flow_end::CLOSED);
    assert!(!crate::packet::is_candidate(
        crate::packet::TCP_SYN | TCP_ACK,
        0,
        1000
    ));
}

#[test]
fn our_own_reset_after_our_probe_is_not_an_answer() {
    // The keepalive timeout: our last probe is unanswered, then our kernel resets.
    let mut st = established(1000, 5000);
    let v = run(
        &mut st,
        &[
            (Out, ack(999, 5000)),
            (Out, seg(1000, 5000, TCP_RST | TCP_ACK, 0, 0)),
        ],
    );
    assert_eq!(v, [Verdict::Probe { payload_bytes: 0 }, Verdict::Nothing]);
    assert_eq!(st.end, flow_end::TIMEOUT);
}

#[test]
fn zero_window_probes_are_counted_apart_and_their_acks_ignored() {
    let mut st = established(1000, 5000);
    let v = run(
        &mut st,
        &[
            (In, seg(5000, 1000, TCP_ACK, 0, 0)), // receiver closes its window
            (Out, ack(999, 5000)),                // sender probes the window
            (In, seg(5000, 1000, TCP_ACK, 0, 0)), // still closed
        ],
    );
    assert_eq!(
        v,
        [Verdict::Nothing, Verdict::ZeroWindowProbe, Verdict::Nothing]
    );
    assert_eq!((st.dir[0].zero_window_probes, st.dir[0].probes), (1, 0));
    // The window reopens: the next probe-shaped segment is a keepalive again.
    let v = run(&mut st, &[(In, ack(5000, 1000)), (Out, ack(999, 5000))]);
    assert_eq!(v, [Verdict::Nothing, Verdict::Probe { payload_bytes: 0 }]);
}

#[test]
fn probes_across_the_sequence_wrap() {
    let mut st = established(0, 7); // snd_nxt wrapped to 0: the probe is 2^32 - 1
    let v = run(&mut st, &[(Out, ack(u32::MAX, 7)), (In, ack(7, 0))]);
    assert_eq!(v, [Verdict::Probe { payload_bytes: 0 }, Verdict::ProbeAck]);

    let mut st = established(u32::MAX - 1, 7);
    // Data of 3 bytes crosses the wrap (learned through the peer's ACK of 1).
    let v = run(
        &mut st,
        &[(In, ack(7, 1)), (Out, ack(0, 7)), (Out, ack(1, 7))],
    );
    assert_eq!(
        v,
        [
            Verdict::Nothing,
            Verdict::Probe { payload_bytes: 0 },
            Verdict::Nothing
        ]
    );
}

#[test]
fn ipv6_segments_classify_the_same() {
    let mut st = established(1000, 5000);
    let mut p = ack(999, 5000);
    p.family = Family::Ipv6;
    assert_eq!(
        classify(&mut st, &p, Out, || 5),
        Verdict::Probe { payload_bytes: 0 }
    );
}

#[test]
fn flow_first_seen_mid_idle_counts_from_the_second_probe() {
    // The first thing we ever see is a probe at 999: it cannot be told from an ACK.
    let mut st = FlowState::first_sighting(&ack(999, 5000), Out, 1);
    let v = run(
        &mut st,
        &[
            (In, ack(5000, 1000)),
            (Out, ack(999, 5000)),
            (In, ack(5000, 1000)),
        ],
    );
    assert_eq!(
        v,
        [
            Verdict::Nothing,
            Verdict::Probe { payload_bytes: 0 },
            Verdict::ProbeAck
        ]
    );
}

#[test]
fn pure_and_duplicate_acks_are_not_probes() {
    let mut st = established(1000, 5000);
    let v = run(
        &mut st,
        &[
            (Out, ack(1000, 5000)),
            (Out, ack(1000, 5000)),
            (In, ack(5000, 1000)),
        ],
    );
    assert_eq!(v, [Verdict::Nothing; 3]);
}

#[test]
fn bulk_data_seen_only_through_acks() {
    // We sent [1000, 901000) in segments the early exit skipped; the peer's ACKs and
    // our probe are all the classifier sees.
    let mut st = established(1000, 5000);
    let v = run(
        &mut st,
        &[
            (In, ack(5000, 500_000)),
            (In, ack(5000, 901_000)),
            (Out, ack(900_999, 5000)),
        ],
    );
    assert_eq!(
        v,
        [
            Verdict::Nothing,
            Verdict::Nothing,
            Verdict::Probe { payload_bytes: 0 }
        ]
    );
}

#[test]
fn unanswered_probes_build_a_streak_that_an_answer_clears() {
    let mut st = established(1000, 5000);
    run(
        &mut st,
        &[
            (Out, ack(999, 5000)),
            (Out, ack(999, 5000)),
            (Out, ack(999, 5000)),
        ],
    );
    assert_eq!((st.dir[0].probes, st.dir[0].unanswered_streak), (3, 2));
    assert_eq!(
        classify(&mut st, &ack(5000, 1000), In, || 9),
        Verdict::ProbeAck
    );
    assert_eq!(st.dir[0].unanswered_streak, 0);
}

#[test]
fn a_probe_is_never_an_answer() {
    // Both ends probe at once: the peer's probe carries ack = our probe seq + 1.
    let mut st = established(1000, 5000);
    let v = run(&mut st, &[(Out, ack(999, 5000)), (In, ack(4999, 1000))]);
    assert_eq!(
        v,
        [
            Verdict::Probe { payload_bytes: 0 },
            Verdict::Probe { payload_bytes: 0 }
        ]
    );
    assert_eq!(st.dir[0].probe_acks, 0);
}

#[test]
fn an_answer_must_acknowledge_the_probe() {
    let mut st = established(1000, 5000);
    // An ACK for something else (ack 990) after our probe does not answer it.
    let v = run(&mut st, &[(Out, ack(999, 5000)), (In, ack(5000, 990))]);
    assert_eq!(v, [Verdict::Probe { payload_bytes: 0 }, Verdict::Nothing]);
}

#[test]
fn new_traffic_supersedes_a_pending_probe() {
    let mut st = established(1000, 5000);
    let v = run(
        &mut st,
        &[
            (Out, ack(999, 5000)),
            (Out, seg(1000, 5000, TCP_ACK | TCP_PSH, 1, 1000)),
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
}

#[test]
fn a_window_reopened_by_skipped_data_is_noticed_through_our_ack() {
    let mut st = established(1000, 5000);
    // The peer announces a zero window, then (later) sends 500 bytes with an open window:
    // that data segment leaves at the early exit; our ACK of it is all we see.
    let v = run(
        &mut st,
        &[
            (In, seg(5000, 1000, TCP_ACK, 0, 0)),
            (Out, ack(1000, 5500)),
            (Out, ack(999, 5500)),
        ],
    );
    assert_eq!(
        v,
        [
            Verdict::Nothing,
            Verdict::Nothing,
            Verdict::Probe { payload_bytes: 0 }
        ]
    );
}

#[test]
fn data_that_keeps_the_window_closed_keeps_probes_zero_window() {
    let mut st = established(1000, 5000);
    // Data announcing a zero window is a candidate (never skipped): it moves the point
    // our ACK must pass, so acknowledging it does not reopen the window.
    let v = run(
        &mut st,
        &[
            (In, seg(5000, 1000, TCP_ACK, 0, 0)),
            (In, seg(5000, 1000, TCP_ACK | TCP_PSH, 300, 0)),
            (Out, ack(1000, 5300)),
            (Out, ack(999, 5300)),
        ],
    );
    assert_eq!(
        v,
        [
            Verdict::Nothing,
            Verdict::Nothing,
            Verdict::Nothing,
            Verdict::ZeroWindowProbe
        ]
    );
}

#[test]
fn a_half_closed_connection_stays_open_and_keeps_counting() {
    let mut st = established(1000, 5000);
    // The peer closes its half (FIN takes seq 5000); we stay in CLOSE_WAIT and probe.
    let v = run(
        &mut st,
        &[
            (In, seg(5000, 1000, TCP_ACK | TCP_FIN, 0, 1000)),
            (Out, ack(1000, 5001)),
            (Out, ack(999, 5001)),
            (In, ack(5001, 1000)),
        ],
    );
    assert_eq!(
        v,
        [
            Verdict::Nothing,
            Verdict::Nothing,
            Verdict::Probe { payload_bytes: 0 },
            Verdict::ProbeAck
        ]
    );
    assert_eq!(st.end, flow_end::OPEN);
    // Our FIN completes the close.
    run(
        &mut st,
        &[(Out, seg(1000, 5001, TCP_ACK | TCP_FIN, 0, 1000))],
    );
    assert_eq!(st.end, flow_end::CLOSED);
}

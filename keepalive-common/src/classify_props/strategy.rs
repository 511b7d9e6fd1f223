//! The generator of conversations for the property test: which acts, with which sizes
//! and offsets, in which proportions.

use proptest::{collection::vec, option, prelude::*};

use super::sim::{Act, Answer, BothIdle, Conv};

fn answer() -> impl Strategy<Value = Answer> {
    prop_oneof![4 => Just(Answer::Ack), 3 => Just(Answer::Silent), 1 => Just(Answer::Reset)]
}

fn both_idle() -> impl Strategy<Value = BothIdle> {
    (
        0..2usize,
        any::<[bool; 2]>(),
        prop::bool::weighted(0.7),
        0..2usize,
        // Losses are rarer than clean rounds.
        prop::bool::weighted(0.15),
    )
        .prop_map(
            |(first, one_byte, crossing, first_answer, peer_answer_lost)| BothIdle {
                first,
                one_byte,
                crossing,
                first_answer,
                peer_answer_lost,
            },
        )
}

fn act() -> impl Strategy<Value = Act> {
    let (side, size, flag) = (0..2usize, 2u16..=1500, any::<bool>());
    prop_oneof![
        4 => (side.clone(), vec(size.clone(), 1..6), 0..4usize, option::of(size.clone()))
            .prop_map(|(s, sizes, every, reply)| Act::Burst(s, sizes, every, reply)),
        2 => (side.clone(), flag).prop_map(|(s, now)| Act::OneByte(s, now)),
        1 => side.clone().prop_map(Act::Retransmit),
        4 => (side.clone(), flag, vec(answer(), 1..4), flag)
            .prop_map(|(s, one, answers, give_up)| Act::Idle(s, one, answers, give_up)),
        4 => both_idle().prop_map(Act::BothIdle),
        1 => (side.clone(), size.clone()).prop_map(|(s, n)| Act::CrossData(s, n)),
        1 => side.clone().prop_map(Act::LateAnswers),
        2 => (side, vec(size.clone(), 1..3), 1..4usize, option::of(flag),
              option::weighted(0.3, size.clone()), option::weighted(0.3, size))
            .prop_map(|(s, sizes, n, ka, close, reopen)| {
                Act::ZeroWindow(s, sizes, n, ka, close, reopen)
            }),
    ]
}

/// Anywhere in u32, half the time close enough to 2^32 for the conversation to wrap.
fn isn() -> impl Strategy<Value = u32> {
    prop_oneof![any::<u32>(), (u32::MAX - 3_000)..=u32::MAX]
}

pub fn conv() -> impl Strategy<Value = Conv> {
    (
        [isn(), isn()],
        [1u16..=u16::MAX, 1u16..=u16::MAX],
        0..2usize,
        vec(act(), 1..12),
        option::of((0..2usize, any::<bool>())),
    )
        .prop_map(|(isn, window, first, acts, fin)| Conv {
            isn,
            window,
            first,
            acts,
            fin,
        })
}

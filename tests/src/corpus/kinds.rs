//! What each frame is under the daemon's rules, and why tshark may see it otherwise.

/// What a frame is under the daemon's rules (README, keepalive-common classify.rs).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Kind {
    /// SYN, SYN-ACK and the ACK completing the handshake.
    Handshake,
    /// New data (any length).
    Data,
    /// A pure ACK that answers no probe.
    Ack,
    Fin,
    /// A RST that answers no probe (e.g. the prober giving up).
    Rst,
    /// A keepalive probe: counted in `tcp_keepalive_probes_total`.
    Probe,
    /// A pure ACK answering a probe: counted in `tcp_keepalive_probe_acks_total`.
    ProbeAck,
    /// A RST answering a probe: counted in `tcp_keepalive_resets_total`
    /// (`peer_reset` when the remote end sends it, `local_reset` when we do).
    ProbeRst,
    /// Probe-shaped, but the other end's window is zero: counted in
    /// `tcp_keepalive_zero_window_probes_total`.
    ZeroWindowProbe,
    /// The (zero-window) ACK answering a zero-window probe: not counted.
    ZeroWindowAck,
    /// The first 1-byte segment of new data at snd_nxt sent into a zero window (a
    /// BSD/Windows-style zero-window probe): not probe-shaped, not counted. (Its
    /// retransmissions are probe-shaped: [`Kind::ZeroWindowProbe`].)
    NewByteIntoZeroWindow,
    /// The first probe of a conversation first seen mid-idle: no history, not counted.
    UnknownFlowProbe,
    /// A pure ACK answering a probe that was not counted or that its prober superseded
    /// (sent something else before the answer came): not counted.
    UncountedAnswer,
}

/// Why tshark's analysis of a frame differs from the daemon's, by design.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Difference {
    /// A Linux zero-window probe (0 bytes at snd_una - 1) or any probe-shaped segment
    /// sent while the other end's window is zero: tshark says keep-alive, we count a
    /// zero-window probe.
    ZeroWindowProbeIsKeepAliveForTshark,
    /// The ACK acknowledging a retransmitted last byte (which both count as a 1-byte
    /// keep-alive): it acknowledges probe seq + 1, so we count the probe answered;
    /// tshark wants a keep-alive ACK to repeat the previous ACK, and this one advances.
    AckOfRetransmittedLastByte,
    /// The first try of a BSD/Windows-style zero-window probe (1 new byte at snd_nxt):
    /// tshark says zero-window probe; it is not probe-shaped (seq is snd_nxt, not
    /// snd_nxt - 1), so we count nothing. Its retransmissions are, and both count them.
    NewByteZeroWindowProbe,
    /// The answer advertises a window other than the answerer's previous one (its
    /// application read data meanwhile): tshark requires the window to repeat; we
    /// only require a pure ACK of probe seq + 1.
    AnswerWithNewWindow,
    /// The first segment tshark sees from an end is a probe: it has no next sequence
    /// number for that end yet; we learned it from the peer's ACK.
    FirstSegmentOfItsEnd,
    /// The answer to a probe tshark did not flag.
    AnswerToProbeTsharkMissed,
    /// Both ends probed at once and answer each other's probe: the second answer
    /// follows the first answer, not a probe, so tshark's keep_alive_ack misses it.
    /// Neither answer consumes sequence space, so both probes are answered.
    CrossingAnswerTsharkMissed,
    /// The end's first captured segment was a 0-byte probe: tshark takes its seq as
    /// the next sequence number, one below the truth, and misses every later 0-byte
    /// probe of that end until the end sends new data; we learn from the peer's ACK.
    ZeroByteProbeAfterCaptureStartedOnOne,
    /// The end's snd_nxt is exactly 0 (probe seq 0xffffffff): tshark keeps 0 for "no
    /// next sequence number yet", so after the first 0-byte probe it expects the
    /// probe's seq and misses every later 0-byte probe of that end.
    ZeroByteProbeAtSndNxtZero,
}

impl Difference {
    pub const ALL: [Difference; 9] = [
        Difference::ZeroWindowProbeIsKeepAliveForTshark,
        Difference::AckOfRetransmittedLastByte,
        Difference::NewByteZeroWindowProbe,
        Difference::AnswerWithNewWindow,
        Difference::FirstSegmentOfItsEnd,
        Difference::AnswerToProbeTsharkMissed,
        Difference::CrossingAnswerTsharkMissed,
        Difference::ZeroByteProbeAfterCaptureStartedOnOne,
        Difference::ZeroByteProbeAtSndNxtZero,
    ];

    /// What tshark flags on such a frame.
    pub fn tshark(self) -> Cat {
        match self {
            Difference::ZeroWindowProbeIsKeepAliveForTshark => Cat::KeepAlive,
            Difference::NewByteZeroWindowProbe => Cat::ZeroWindowProbe,
            Difference::AckOfRetransmittedLastByte
            | Difference::AnswerWithNewWindow
            | Difference::FirstSegmentOfItsEnd
            | Difference::AnswerToProbeTsharkMissed
            | Difference::CrossingAnswerTsharkMissed
            | Difference::ZeroByteProbeAfterCaptureStartedOnOne
            | Difference::ZeroByteProbeAtSndNxtZero => Cat::None,
        }
    }
}

/// The categories both the daemon and tshark have: probes (`tcp.analysis.keep_alive`),
/// their ACKs (`keep_alive_ack`) and zero-window probes (`zero_window_probe`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Cat {
    None,
    KeepAlive,
    KeepAliveAck,
    ZeroWindowProbe,
}

impl Kind {
    /// How the daemon's comparable counters see this kind (resets have no tshark
    /// counterpart and compare as [`Cat::None`]).
    pub fn cat(self) -> Cat {
        match self {
            Kind::Probe => Cat::KeepAlive,
            Kind::ProbeAck => Cat::KeepAliveAck,
            Kind::ZeroWindowProbe => Cat::ZeroWindowProbe,
            _ => Cat::None,
        }
    }
}

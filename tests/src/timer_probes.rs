//! The one assertion on `tcp_keepalive_timer_probes_total` against the kernel's count
//! of keepalive probes (TcpExtTCPKeepAlive of the daemon's namespace).
//!
//! On fentry and kprobe every timer probe is counted: timer == kernel, nothing lost.
//! On the tracepoint fallback the kernel may not run the programs for a timer softirq
//! at all (docs/timer-burst-loss.md); the daemon then reports the gap in
//! `keepalive_daemon_timer_probes_lost_total`, and the two together must equal the
//! kernel's count exactly, the programs never counting more than the kernel sent.

use crate::{Samples, names};

/// The daemon's timer counts over one window, with the kernel's.
#[derive(Clone, Debug)]
pub struct TimerProbes {
    /// The timer_probes hook's mechanism (`keepalive_daemon_hook_info`).
    pub mechanism: String,
    pub timer: u64,
    pub lost: u64,
    pub kernel: u64,
}

impl TimerProbes {
    pub fn new(before: &Samples, after: &Samples, kernel: u64) -> TimerProbes {
        TimerProbes {
            mechanism: after
                .hooks_in_use()
                .remove("timer_probes")
                .unwrap_or_else(|| "none".to_owned()),
            timer: after.delta(before, names::TIMER_PROBES, &[]),
            lost: after.delta(before, names::TIMER_PROBES_LOST, &[]),
            kernel,
        }
    }

    /// What is wrong, if anything.
    pub fn failure(&self) -> Option<String> {
        let TimerProbes {
            mechanism,
            timer,
            lost,
            kernel,
        } = self;
        let ok = if mechanism == "tracepoint" {
            timer + lost == *kernel && timer <= kernel
        } else {
            timer == kernel && *lost == 0
        };
        (!ok).then(|| {
            format!(
                "timer probes {timer} + lost {lost} (hook via {mechanism}) vs TcpExtTCPKeepAlive {kernel}"
            )
        })
    }
}

/// Panics unless the timer counts account exactly for the kernel's probes; reports a
/// loss on stderr when there was one.
pub fn assert_timer_probes(
    before: &Samples,
    after: &Samples,
    kernel: u64,
    ctx: impl FnOnce() -> String,
) {
    let t = TimerProbes::new(before, after, kernel);
    if let Some(failure) = t.failure() {
        panic!("{failure}; {}", ctx());
    }
    if t.lost > 0 {
        eprintln!(
            "timer programs not run for {} of {} keepalive probes (tracepoint path, accounted)",
            t.lost, t.kernel
        );
    }
}

//! Accounting for keepalive timer runs the tracepoint programs never see
//! (docs/timer-burst-loss.md).
//!
//! On the tracepoint fallback, `tcp_keepalive_timer_probes_total` depends on the raw
//! tracepoint programs on timer:timer_expire_entry/exit being run for every timer
//! callback. On the 6.18 sandbox kernel they are not run at all (not even counted as
//! recursion misses) for a timer softirq that interrupts certain tasks, while ftrace
//! records the same tracepoint calls and tc programs run inside the same softirq: a
//! whole burst of keepalive timers then goes unseen. No program can count what it is
//! not run for, so the daemon measures the gap instead: the kernel's own count of
//! keepalive probes in its namespace (TcpExtTCPKeepAlive, LINUX_MIB_TCPKEEPALIVE,
//! incremented in tcp_xmit_probe_skb(), net/ipv4/tcp_output.c) minus the probes the
//! programs counted, both since the programs were attached. Only meaningful when the
//! programs count exactly the daemon's own namespace (the default, not
//! --all-namespaces) and use the tracepoint path (fentry and kprobe do not lose runs).

use aya::maps::{MapData, MapError, PerCpuArray};
use keepalive_common::sockhook::TimerSlot;

/// The namespace's keepalive probe counter, read where the daemon runs.
const NETSTAT: &str = "/proc/net/netstat";
const MIB: &str = "TCPKeepAlive";

/// Why the gap cannot be measured.
#[derive(Debug, thiserror::Error)]
pub enum TimerLossError {
    #[error("{NETSTAT} has no TcpExt {MIB} (is /proc mounted?)")]
    NoKernelCount,
    #[error("reading the TIMER_SLOT map")]
    TimerSlot {
        #[source]
        source: MapError,
    },
}

/// How often to try for a baseline with no timer callback in flight (1 ms apart).
const BASELINE_TRIES: u32 = 200;

/// The per-CPU record of the keepalive timer callback the entry program saw begin
/// (timer_tracepoint.rs): non-zero `sk` while the callback is in flight.
pub type TimerSlots = PerCpuArray<MapData, TimerSlot>;

/// Measures the probes the timer programs were not run for.
///
/// Every observation is a lower bound of the true gap, so the exported counter, raised
/// to the largest observation, never overstates it, and it is exact whenever no probe
/// is being sent while it is read. One observation reads, in this order:
/// K, the kernel's count; S, the CPUs inside a keepalive timer callback whose entry the
/// programs saw; P, the programs' count. A probe in K that the programs will count but
/// that is not yet in P had its callback entered before K was read and not exited when
/// P was read, so that callback was in flight when S was read: K - P - S never
/// overstates the gap. Probes in P sent after K was read only lower it further.
pub struct TimerLoss {
    measured: Option<Measured>,
}

struct Measured {
    slots: TimerSlots,
    baseline: Baseline,
}

#[derive(Clone, Copy, Debug)]
struct Baseline {
    kernel: u64,
    programs: u64,
}

impl TimerLoss {
    /// Not measured (another hook, or --all-namespaces): the metric stays at zero.
    pub fn off() -> TimerLoss {
        TimerLoss { measured: None }
    }

    /// Starts measuring. The baseline must be exact, not a bound (an error in it would
    /// stay in every later value), so it is taken when nothing is in flight: the
    /// programs' count read before and after K is the same (no probe counted around
    /// the kernel read) and S is 0. `programs` reads the programs' count.
    pub fn start<E: From<TimerLossError>>(
        slots: TimerSlots,
        mut programs: impl FnMut() -> Result<u64, E>,
    ) -> Result<TimerLoss, E> {
        let mut tries = 0;
        let baseline = loop {
            tries += 1;
            let before = programs()?;
            let kernel = read_kernel().ok_or(TimerLossError::NoKernelCount)?;
            let in_flight = in_flight(&slots)?;
            let after = programs()?;
            let quiet = before == after && in_flight == 0;
            if quiet || tries == BASELINE_TRIES {
                if !quiet {
                    log::warn!(
                        "timer probe loss baseline taken while keepalive timers were running; \
                         keepalive_daemon_timer_probes_lost_total may be off by {}",
                        in_flight + (after - before)
                    );
                }
                break Baseline {
                    kernel,
                    programs: after,
                };
            }
            std::thread::sleep(std::time::Duration::from_millis(1));
        };
        Ok(TimerLoss {
            measured: Some(Measured { slots, baseline }),
        })
    }

    /// The first half of an observation, K then S, to be read before the programs'
    /// count (see the type's doc). None when not measured or /proc/net/netstat is
    /// unreadable.
    pub fn read_before_programs(&self) -> Result<Option<Reading>, TimerLossError> {
        let Some(m) = &self.measured else {
            return Ok(None);
        };
        let Some(kernel) = read_kernel() else {
            return Ok(None);
        };
        Ok(Some(Reading {
            baseline: m.baseline,
            kernel,
            in_flight: in_flight(&m.slots)?,
        }))
    }
}

/// K and S of one observation; [`Reading::missed`] completes it with P.
pub struct Reading {
    baseline: Baseline,
    kernel: u64,
    in_flight: u64,
}

impl Reading {
    /// Probes the programs missed since the baseline, at most: `programs` (P) must have
    /// been read after this reading.
    pub fn missed(&self, programs: u64) -> u64 {
        lower_bound(self.baseline, self.kernel, self.in_flight, programs)
    }
}

/// CPUs inside a keepalive timer callback whose entry the programs saw.
fn in_flight(slots: &TimerSlots) -> Result<u64, TimerLossError> {
    let per_cpu = slots
        .get(&0, 0)
        .map_err(|source| TimerLossError::TimerSlot { source })?;
    Ok(per_cpu.iter().filter(|s| s.sk != 0).count() as u64)
}

fn lower_bound(b: Baseline, kernel: u64, in_flight: u64, programs: u64) -> u64 {
    kernel
        .saturating_sub(b.kernel)
        .saturating_sub(programs.saturating_sub(b.programs))
        .saturating_sub(in_flight)
}

fn read_kernel() -> Option<u64> {
    parse_netstat(&std::fs::read_to_string(NETSTAT).ok()?, "TcpExt:", MIB)
}

/// /proc/net/netstat: a header line and a value line per prefix.
fn parse_netstat(text: &str, prefix: &str, field: &str) -> Option<u64> {
    let mut lines = text.lines().filter(|l| l.starts_with(prefix));
    let names = lines.next()?.split_whitespace().skip(1);
    let values = lines.next()?.split_whitespace().skip(1);
    names
        .zip(values)
        .find(|(n, _)| *n == field)
        .and_then(|(_, v)| v.parse().ok())
}

#[cfg(test)]
mod tests {
    use super::*;

    const SAMPLE: &str = "TcpExt: SyncookiesSent TCPKeepAlive TCPWinProbe\n\
                          TcpExt: 0 4900 3\n\
                          IpExt: InNoRoutes\nIpExt: 0\n";

    #[test]
    fn reads_the_keepalive_mib() {
        assert_eq!(parse_netstat(SAMPLE, "TcpExt:", "TCPKeepAlive"), Some(4900));
        assert_eq!(parse_netstat(SAMPLE, "TcpExt:", "Nope"), None);
        assert_eq!(parse_netstat("", "TcpExt:", "TCPKeepAlive"), None);
    }

    #[test]
    fn gap_is_kernel_minus_programs_since_baseline() {
        let b = Baseline {
            kernel: 100,
            programs: 7,
        };
        assert_eq!(lower_bound(b, 4900, 0, 4707), 100);
        assert_eq!(lower_bound(b, 4900, 0, 4807), 0);
        // Probes counted by the programs after the kernel read are no loss.
        assert_eq!(lower_bound(b, 4900, 0, 4900), 0);
    }

    #[test]
    fn callbacks_in_flight_are_not_counted_as_lost() {
        let b = Baseline {
            kernel: 0,
            programs: 0,
        };
        // Two CPUs inside a keepalive timer callback that already counted its probe in
        // the MIB: not lost, the exit programs will count them.
        assert_eq!(lower_bound(b, 102, 2, 100), 0);
        // A lost burst of 100 and one callback in flight.
        assert_eq!(lower_bound(b, 201, 1, 100), 100);
    }

    #[test]
    fn not_measured_observes_nothing() {
        assert!(TimerLoss::off().read_before_programs().unwrap().is_none());
    }
}

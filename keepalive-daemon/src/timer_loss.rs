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

/// The namespace's keepalive probe counter, read where the daemon runs.
const NETSTAT: &str = "/proc/net/netstat";
const MIB: &str = "TCPKeepAlive";

/// Both counts as they were right after the timer programs were attached.
#[derive(Clone, Copy, Debug)]
pub struct TimerLoss {
    baseline: Option<Baseline>,
}

#[derive(Clone, Copy, Debug)]
struct Baseline {
    kernel: u64,
    programs: u64,
}

impl TimerLoss {
    /// Not measured (another hook, or --all-namespaces): the metric stays at zero.
    pub fn off() -> TimerLoss {
        TimerLoss { baseline: None }
    }

    /// Starts measuring from the kernel count (read first) and the programs' total
    /// (read after it).
    pub fn start(kernel: u64, programs: u64) -> TimerLoss {
        TimerLoss {
            baseline: Some(Baseline { kernel, programs }),
        }
    }

    /// The kernel's count when measuring. Read it before the program counters: the MIB
    /// is incremented inside the timer callback and the exit program counts right after
    /// the callback returns, so by the time the counters are read every probe in this
    /// count has been counted by the programs if they ran for it.
    pub fn kernel_now(&self) -> Option<u64> {
        self.baseline.and_then(|_| read_kernel())
    }

    /// Probes the programs missed since the start.
    pub fn missed(&self, kernel: u64, programs: u64) -> Option<u64> {
        self.baseline.map(|b| gap(b, kernel, programs))
    }
}

fn gap(b: Baseline, kernel: u64, programs: u64) -> u64 {
    kernel
        .saturating_sub(b.kernel)
        .saturating_sub(programs.saturating_sub(b.programs))
}

pub fn read_kernel() -> Option<u64> {
    parse_netstat(&std::fs::read_to_string(NETSTAT).ok()?, "TcpExt:", MIB)
}

/// /proc/net/netstat: a header line and a value line per prefix.
pub fn parse_netstat(text: &str, prefix: &str, field: &str) -> Option<u64> {
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
        assert_eq!(gap(b, 4900, 4707), 100);
        assert_eq!(gap(b, 4900, 4807), 0);
        // The programs ahead of the kernel (read order violated) is no loss.
        assert_eq!(gap(b, 4900, 4900), 0);
    }

    #[test]
    fn only_measured_when_started() {
        assert_eq!(TimerLoss::off().missed(1, 0), None);
        assert_eq!(TimerLoss::start(10, 3).missed(150, 43), Some(100));
    }
}

//! Learning tcp_keepalive_timer()'s address in-kernel (see
//! keepalive_common::sockhook::TimerFnCalibration), so the timer tracepoint hook needs
//! no CAP_SYSLOG for /proc/kallsyms. Runs once at start-up, before the socket hooks are
//! attached: no traffic, only one TCP socket put into LISTEN on loopback for a moment.

use std::{
    net::{Ipv4Addr, SocketAddr},
    time::{Duration, Instant},
};

use aya::{Ebpf, maps::Array, programs::TracePoint};
use keepalive_common::sockhook::TimerFnCalibration;

pub const PROGRAM: &str = "ka_timer_fn_cal";
const MAP: &str = "TIMER_FN_CALIBRATION";
/// The tracepoint fires inside listen(2); the wait only covers a slow first run.
const WAIT: Duration = Duration::from_secs(1);

#[derive(Debug, thiserror::Error)]
pub enum TimerFnError {
    #[error("{what}: {source}")]
    Bpf {
        what: &'static str,
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    #[error("cannot open the calibration socket on {addr}: {source}")]
    Socket {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error("sock:inet_sock_set_state did not report the calibration socket within {waited:?}")]
    NotSeen { waited: Duration },
    #[error("learned {learned:#x}, which is no kernel address")]
    Implausible { learned: u64 },
}

fn bpf<E: std::error::Error + Send + Sync + 'static>(
    what: &'static str,
) -> impl FnOnce(E) -> TimerFnError {
    move |e| TimerFnError::Bpf {
        what,
        source: Box::new(e),
    }
}

/// Makes tcp_keepalive_timer()'s address known to the timer programs: learned, and
/// checked against kallsyms' (`kallsyms_fn`, 0 when hidden) where that is readable.
/// Returns why the timer tracepoint hook cannot be used, if it cannot.
pub fn establish(
    ebpf: &mut Ebpf,
    learning: Option<TimerFnCalibration>,
    kallsyms_fn: u64,
) -> Option<String> {
    let Some(offsets) = learning else {
        return (kallsyms_fn == 0).then(|| "tcp_keepalive_timer's address is unknown".into());
    };
    match learn(ebpf, offsets) {
        Ok(_) if kallsyms_fn == 0 => {
            log::info!("learned tcp_keepalive_timer's address in-kernel");
            None
        }
        Ok(learned) if learned == kallsyms_fn => {
            log::info!("learned tcp_keepalive_timer's address in-kernel (matches /proc/kallsyms)");
            None
        }
        Ok(_) => {
            log::error!(
                "the learned address of tcp_keepalive_timer differs from /proc/kallsyms; \
                 using kallsyms' (please report this with the kernel version)"
            );
            set(ebpf, kallsyms_fn).err().map(|e| e.to_string())
        }
        Err(e) if kallsyms_fn != 0 => {
            log::warn!("could not learn tcp_keepalive_timer's address ({e}); using /proc/kallsyms");
            None
        }
        Err(e) => Some(format!(
            "cannot learn tcp_keepalive_timer's address ({e}) and /proc/kallsyms hides it"
        )),
    }
}

/// Learns the address and leaves it in the map the timer programs read. The
/// calibration program is unloaded again whatever happens.
pub fn learn(ebpf: &mut Ebpf, offsets: TimerFnCalibration) -> Result<u64, TimerFnError> {
    let prog: &mut TracePoint = ebpf
        .program_mut(PROGRAM)
        .ok_or_else(|| TimerFnError::Bpf {
            what: "program ka_timer_fn_cal missing from the eBPF object",
            source: "missing".into(),
        })?
        .try_into()
        .map_err(bpf("ka_timer_fn_cal is not a tracepoint program"))?;
    prog.load().map_err(bpf("loading ka_timer_fn_cal"))?;
    let result = prog
        .attach("sock", "inet_sock_set_state")
        .map_err(bpf("attaching ka_timer_fn_cal to sock:inet_sock_set_state"))
        .and_then(|_| listen_and_read(ebpf, offsets));
    if let Some(p) = ebpf.program_mut(PROGRAM)
        && let Ok(p) = <&mut TracePoint>::try_from(p)
        && let Err(e) = p.unload()
    {
        log::warn!("unloading {PROGRAM}: {e}");
    }
    result
}

fn listen_and_read(ebpf: &mut Ebpf, offsets: TimerFnCalibration) -> Result<u64, TimerFnError> {
    let mut map = calibration_map(ebpf)?;
    // Loopback when it is up; any address otherwise (a fresh namespace has lo down).
    // Nothing connects: the socket listens for microseconds with a backlog of 1.
    let mut last = None;
    for ip in [Ipv4Addr::LOCALHOST, Ipv4Addr::UNSPECIFIED] {
        let addr = SocketAddr::from((ip, 0));
        let socket = tokio::net::TcpSocket::new_v4()
            .and_then(|s| s.bind(addr).map(|()| s))
            .and_then(|s| s.local_addr().map(|a| (s, a)));
        let (socket, bound) = match socket {
            Ok(v) => v,
            Err(source) => {
                last = Some(TimerFnError::Socket { addr, source });
                continue;
            }
        };
        let cal = TimerFnCalibration {
            function: 0,
            port: bound.port().into(),
            ..offsets
        };
        map.set(0, &cal, 0)
            .map_err(bpf("writing TIMER_FN_CALIBRATION"))?;
        let listener = socket.listen(1).map_err(|source| TimerFnError::Socket {
            addr: bound,
            source,
        })?;
        let started = Instant::now();
        let learned = loop {
            let v = map
                .get(&0, 0)
                .map_err(bpf("reading TIMER_FN_CALIBRATION"))?;
            if v.function != 0 || started.elapsed() > WAIT {
                break v.function;
            }
            std::thread::sleep(Duration::from_millis(5));
        };
        drop(listener);
        if learned == 0 {
            return Err(TimerFnError::NotSeen { waited: WAIT });
        }
        if !plausible(learned) {
            return Err(TimerFnError::Implausible { learned });
        }
        return Ok(learned);
    }
    Err(last.unwrap_or(TimerFnError::NotSeen { waited: WAIT }))
}

/// Writes `function` as the address the timer programs use (kallsyms' when the
/// learned one disagrees with it).
pub fn set(ebpf: &mut Ebpf, function: u64) -> Result<(), TimerFnError> {
    let mut map = calibration_map(ebpf)?;
    let cal = TimerFnCalibration {
        function,
        ..Default::default()
    };
    map.set(0, &cal, 0)
        .map_err(bpf("writing TIMER_FN_CALIBRATION"))
}

fn calibration_map(
    ebpf: &mut Ebpf,
) -> Result<Array<&mut aya::maps::MapData, TimerFnCalibration>, TimerFnError> {
    let map = ebpf.map_mut(MAP).ok_or_else(|| TimerFnError::Bpf {
        what: "map TIMER_FN_CALIBRATION missing from the eBPF object",
        source: "missing".into(),
    })?;
    Array::try_from(map).map_err(bpf("opening TIMER_FN_CALIBRATION"))
}

/// Kernel text lives in the upper half of the address space on 64-bit Linux.
pub fn plausible(addr: u64) -> bool {
    addr >> 63 == 1
}

#[cfg(test)]
mod tests {
    #[test]
    fn only_upper_half_addresses_are_plausible() {
        assert!(super::plausible(0xffff_ffff_8202_df70));
        assert!(!super::plausible(0));
        assert!(!super::plausible(0x0000_7fff_1234_0000));
    }
}

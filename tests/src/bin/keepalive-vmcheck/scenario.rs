//! The workload: the daemon in namespace A, keepalive connections (1 s / 1 s / 3) to
//! namespace B, two healthy and two whose answers B drops so they die with ETIMEDOUT;
//! then the daemon's counters compared with the kernel's and the sockets', and its
//! hook mechanisms with the expectation. Prints `VMCHECK hook`, `doomed`, `count`,
//! `phase`, `kernel_error`, `prog` and `VMCHECK-DAEMON` lines.

use std::collections::BTreeMap;
use std::io::{Read as _, Write as _};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::time::{Duration, Instant};

use keepalive_tests::netns::{B_V4, B_V6};
use keepalive_tests::process::run;
use keepalive_tests::{
    Conn, Daemon, FAST_KEEPALIVE, Family, Netns, Samples, VethPair, disable_keepalive,
    enable_keepalive, names, spawn_readers, timer_probes::TimerProbes,
};

use super::dumps::{TraceEvents, prog_run_counts, sockconfig_dump};
use super::{extra_args, yn};

/// Addresses B listens on for the connections whose answers it drops.
const B_DOOMED_V4: &str = "192.0.2.12";
const B_DOOMED_V6: &str = "2001:db8::12";
/// How long a doomed connection may take to time out (3 probes 1 s apart, then the reset).
const DOOMED_READ_TIMEOUT: Duration = Duration::from_secs(20);
const HOOKS: [&str; 3] = ["timer_probes", "timeouts", "idle_deaths"];

/// Absolute TcpExt counter of the namespace the calling thread is in.
fn tcpext(counter: &str) -> u64 {
    let text = std::fs::read_to_string("/proc/thread-self/net/netstat").expect("netstat");
    let lines: Vec<&str> = text.lines().filter(|l| l.starts_with("TcpExt:")).collect();
    assert!(lines.len() >= 2, "no TcpExt in /proc/net/netstat");
    let names = lines[0].split_whitespace().skip(1);
    let values = lines[1].split_whitespace().skip(1);
    names
        .zip(values)
        .find(|(n, _)| *n == counter)
        .and_then(|(_, v)| v.parse().ok())
        .unwrap_or_else(|| panic!("no TcpExt {counter}"))
}

fn connect_pair(a: &Netns, listener: &TcpListener, family: Family) -> Conn {
    let addr: SocketAddr = listener.local_addr().expect("listener address");
    let client = a.run_in(|| {
        TcpStream::connect_timeout(&addr, Duration::from_secs(10))
            .unwrap_or_else(|e| panic!("connect {addr}: {e}"))
    });
    let (server, _) = listener.accept().expect("accept");
    // One byte each way: both sides' sequence numbers are known to the classifier.
    let (mut c, mut s) = (&client, &server);
    let mut byte = [0u8; 1];
    c.write_all(b"?").expect("client write");
    s.read_exact(&mut byte).expect("server read");
    s.write_all(b"!").expect("server write");
    c.read_exact(&mut byte).expect("client read");
    Conn {
        family,
        client,
        server: Some(server),
    }
}

/// Runs the workload; returns what did not match (empty on success).
pub fn scenario(expected: &BTreeMap<&'static str, &'static str>) -> Vec<String> {
    let mut failures = Vec::new();
    let a = Netns::new("vm", "a");
    let b = Netns::new("vm", "b");
    let pair = VethPair::new(&a, &b);
    add_doomed_addresses(&b, &pair);

    // Per-program run counts in fdinfo (diagnostics only).
    let _ = std::fs::write("/proc/sys/kernel/bpf_stats_enabled", "1");
    let extra = extra_args().clone();
    let extra: Vec<&str> = extra.iter().map(String::as_str).collect();
    let daemon = Daemon::spawn_with(&a, &[&pair.a_if], &extra);
    let before = daemon.scrape();
    check_hooks(&before, expected, &mut failures);

    let conns = Connections::open(&a, &b);
    blackhole_doomed(&b);
    let phase = keepalive_phase(&a, &daemon, &conns);
    compare_counts(&before, &phase, conns.doomed.len(), &mut failures);
    for s in phase
        .after
        .matching("keepalive_daemon_kernel_errors_total", &[])
    {
        if s.value != 0.0 {
            println!(
                "VMCHECK kernel_error kind={} count={}",
                s.labels.get("kind").map_or("?", |v| v),
                s.value
            );
        }
    }
    sockconfig_dump(daemon.pid());
    for (name, run_cnt) in prog_run_counts(daemon.pid()) {
        println!("VMCHECK prog name={name} run_cnt={run_cnt}");
    }
    drop(conns);
    check_daemon_stderr(daemon, &mut failures);
    failures
}

/// Gives B the addresses of the doomed connections.
fn add_doomed_addresses(b: &Netns, pair: &VethPair) {
    run(&[
        "ip",
        "-n",
        b.name(),
        "addr",
        "add",
        &format!("{B_DOOMED_V4}/24"),
        "dev",
        &pair.b_if,
    ]);
    run(&[
        "ip",
        "-n",
        b.name(),
        "-6",
        "addr",
        "add",
        &format!("{B_DOOMED_V6}/64"),
        "dev",
        &pair.b_if,
        "nodad",
    ]);
}

/// Compares the mechanism the daemon reports for each hook with the expectation.
fn check_hooks(
    before: &Samples,
    expected: &BTreeMap<&'static str, &'static str>,
    failures: &mut Vec<String>,
) {
    for hook in HOOKS {
        let chosen: Vec<String> = before
            .matching("keepalive_daemon_hook_info", &[("hook", hook)])
            .filter(|s| s.value == 1.0)
            .filter_map(|s| s.labels.get("mechanism").cloned())
            .collect();
        let got = if chosen.is_empty() {
            "none".to_owned()
        } else {
            chosen.join("+")
        };
        let want = expected.get(hook).copied().unwrap_or("?");
        let ok = got == want;
        println!(
            "VMCHECK hook hook={hook} mechanism={got} expected={want} ok={}",
            yn(ok)
        );
        if !ok {
            failures.push(format!("hook {hook} attached {got}, expected {want}"));
        }
    }
}

/// The connections from A to B, healthy and doomed (B's listeners kept open).
struct Connections {
    healthy: Vec<Conn>,
    doomed: Vec<Conn>,
    _listeners: Vec<(Family, bool, TcpListener)>,
}

impl Connections {
    fn open(a: &Netns, b: &Netns) -> Connections {
        let listeners: Vec<(Family, bool, TcpListener)> = b.run_in(|| {
            [
                (Family::Ipv4, false, B_V4.to_string()),
                (Family::Ipv6, false, B_V6.to_string()),
                (Family::Ipv4, true, B_DOOMED_V4.to_owned()),
                (Family::Ipv6, true, B_DOOMED_V6.to_owned()),
            ]
            .into_iter()
            .map(|(f, doomed, ip)| {
                let addr = SocketAddr::new(ip.parse().expect("address"), 0);
                let l = TcpListener::bind(addr).unwrap_or_else(|e| panic!("bind {addr}: {e}"));
                (f, doomed, l)
            })
            .collect()
        });
        let mut healthy = Vec::new();
        let mut doomed = Vec::new();
        for (family, is_doomed, l) in &listeners {
            let conn = connect_pair(a, l, *family);
            if *is_doomed {
                doomed.push(conn)
            } else {
                healthy.push(conn)
            }
        }
        Connections {
            healthy,
            doomed,
            _listeners: listeners,
        }
    }
}

/// From now on B's answers from the doomed addresses go nowhere.
fn blackhole_doomed(b: &Netns) {
    for (v, from) in [("-4", B_DOOMED_V4), ("-6", B_DOOMED_V6)] {
        run(&[
            "ip",
            "-n",
            b.name(),
            v,
            "rule",
            "add",
            "from",
            from,
            "lookup",
            "100",
        ]);
        run(&[
            "ip",
            "-n",
            b.name(),
            v,
            "route",
            "add",
            "blackhole",
            "default",
            "table",
            "100",
        ]);
    }
}

/// What the keepalive phase left: the daemon's counters and the oracles.
struct Phase {
    after: Samples,
    /// TcpExtTCPKeepAlive of A during the phase.
    ka: u64,
    /// Doomed connections whose reader saw ETIMEDOUT.
    etimedout: u64,
}

/// Turns keepalive on everywhere, waits for the doomed connections to time out,
/// then stops the healthy ones and scrapes the daemon.
fn keepalive_phase(a: &Netns, daemon: &Daemon<'_>, conns: &Connections) -> Phase {
    let trace = TraceEvents::start();
    let ka_before = a.run_in(|| tcpext("TCPKeepAlive"));
    let t0 = Instant::now();
    for c in conns.healthy.iter().chain(&conns.doomed) {
        enable_keepalive(&c.client, FAST_KEEPALIVE);
    }
    let readers = spawn_readers(&conns.doomed, DOOMED_READ_TIMEOUT);
    let outcomes = readers.join();
    let etimedout = outcomes.iter().filter(|(_, o)| o.is_etimedout()).count() as u64;
    for (family, o) in &outcomes {
        println!(
            "VMCHECK doomed family={family} outcome={}",
            format!("{o:?}").replace(' ', "_")
        );
    }
    // Healthy connections probed meanwhile; stop them, let the last probe settle.
    for c in &conns.healthy {
        disable_keepalive(&c.client);
    }
    std::thread::sleep(Duration::from_millis(500));
    let ka = a.run_in(|| tcpext("TCPKeepAlive")) - ka_before;
    trace.dump();
    let after = daemon.scrape();
    println!("VMCHECK phase seconds={:.1}", t0.elapsed().as_secs_f64());
    Phase {
        after,
        ka,
        etimedout,
    }
}

/// The daemon's counters against the kernel's and the sockets'.
fn compare_counts(before: &Samples, phase: &Phase, doomed: usize, failures: &mut Vec<String>) {
    let (after, ka, etimedout) = (&phase.after, phase.ka, phase.etimedout);
    let wire_sent = after.delta(before, names::PROBES, &[("direction", "sent")]);
    let timer = TimerProbes::new(before, after, ka);
    let resets = after.delta(before, names::RESETS, &[("reason", "timeout")]);
    let mut compare = |name: &str, daemon_value: u64, kernel_value: u64, oracle: &str| {
        let ok = daemon_value == kernel_value;
        println!(
            "VMCHECK count name={name} daemon={daemon_value} {oracle}={kernel_value} match={}",
            yn(ok)
        );
        if !ok {
            failures.push(format!(
                "{name}: daemon {daemon_value}, {oracle} {kernel_value}"
            ));
        }
    };
    compare("probes_sent", wire_sent, ka, "TcpExtTCPKeepAlive");
    compare("timeout_resets", resets, etimedout, "ETIMEDOUT");
    // On the tracepoint path the kernel may skip the timer programs for a whole
    // softirq; the daemon accounts for it (docs/timer-burst-loss.md): daemon=timer+lost.
    let timer_failure = timer.failure();
    println!(
        "VMCHECK count name=timer_probes daemon={}+{} TcpExtTCPKeepAlive={ka} match={}",
        timer.timer,
        timer.lost,
        yn(timer_failure.is_none())
    );
    failures.extend(timer_failure);
    if etimedout != doomed as u64 {
        failures.push(format!(
            "only {etimedout} of {doomed} doomed connections timed out"
        ));
    }
    if ka == 0 {
        failures.push("the kernel sent no keepalive probes".into());
    }
}

/// Stops the daemon, prints all of its stderr (a rejected program's verifier log
/// spans many lines) and checks it learned tcp_keepalive_timer's address.
fn check_daemon_stderr(daemon: Daemon<'_>, failures: &mut Vec<String>) {
    let stderr = daemon.terminate();
    for line in stderr.lines() {
        println!("VMCHECK-DAEMON {line}");
    }
    // The address of tcp_keepalive_timer learned in-kernel (what runs without
    // CAP_SYSLOG) must equal kallsyms', which this root check can read.
    if !stderr.contains("learned tcp_keepalive_timer's address in-kernel (matches /proc/kallsyms)")
    {
        failures.push(
            "the daemon did not learn tcp_keepalive_timer's address matching kallsyms".into(),
        );
    }
}

//! `cargo xtask demo`: keepalive-daemon watching three connections between two network
//! namespaces, live. Host A runs the daemon and the clients; host B is the peer.
//!
//! 1. healthy: probes go out and are answered, in both directions, all along;
//! 2. peer vanishes: B starts dropping everything of this connection (as a NAT gateway
//!    that forgot it would), so A's probes go unanswered until A's kernel gives up
//!    (`tcp_keepalive_resets_total{reason="timeout"}`, ETIMEDOUT for the application);
//! 3. peer lost state: B's socket is closed and its RST dropped (as after a reboot, or a
//!    load balancer failover), so B answers A's next probe with a RST
//!    (`tcp_keepalive_resets_total{reason="peer_reset"}`, ECONNRESET).
//!
//! Every couple of seconds the metrics that changed are printed, and the table of
//! `keepalive-daemon connections` when the daemon has that subcommand. Everything is
//! removed at the end, or on Ctrl-C.

use std::fmt::Write as _;
use std::io::Read as _;
use std::net::{Shutdown, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use keepalive_daemon::metric_names::{HOOK_INFO, PROBE_ACKS, PROBES, RESETS, TIMER_PROBES};
use keepalive_tests::daemon::daemon_bin;
use keepalive_tests::netns::A_V4;
use keepalive_tests::sockets::{exchange_byte, set_linger_zero};
use keepalive_tests::{
    Conn, Daemon, KeepaliveParams, Netns, Samples, Setup, enable_keepalive, open_connections,
};

/// A's keepalive: first probe after 2 s idle, then every 2 s, give up after 3 unanswered.
const CLIENT_KEEPALIVE: KeepaliveParams = KeepaliveParams {
    idle_secs: 2,
    intvl_secs: 2,
    cnt: 3,
};
/// B's keepalive on the healthy connection, so A also receives probes.
const SERVER_KEEPALIVE: KeepaliveParams = KeepaliveParams {
    idle_secs: 3,
    intvl_secs: 3,
    cnt: 3,
};
/// When the peers of connections 2 and 3 fail.
const FAILURE_AT: Duration = Duration::from_secs(8);
/// How often metrics are printed.
const TICK: Duration = Duration::from_secs(2);

/// nftables tables installed in B (one per failing connection).
const VANISH_TABLE: &str = "kademo_vanish";
const LOST_TABLE: &str = "kademo_lost";

static INTERRUPTED: AtomicBool = AtomicBool::new(false);

extern "C" fn on_sigint(_: libc::c_int) {
    INTERRUPTED.store(true, Ordering::SeqCst);
}

/// The series worth watching: a PromQL-like label selector, summed over the others.
const WATCHED: [(&str, &[(&str, &str)]); 8] = [
    (PROBES, &[("direction", "sent")]),
    (PROBE_ACKS, &[("direction", "sent")]),
    (PROBES, &[("direction", "received")]),
    (PROBE_ACKS, &[("direction", "received")]),
    (TIMER_PROBES, &[]),
    (RESETS, &[("reason", "timeout")]),
    (RESETS, &[("reason", "peer_reset")]),
    (RESETS, &[("reason", "local_reset")]),
];

pub fn run(seconds: u64) -> anyhow::Result<()> {
    let total = Duration::from_secs(seconds.max(20));
    // SAFETY: installs an async-signal-safe handler that only stores to an atomic.
    unsafe {
        libc::signal(libc::SIGINT, on_sigint as *const () as libc::sighandler_t);
    }

    let setup = Setup::new("demo");
    let daemon = start_daemon(&setup);
    let (mut conns, ports) = open_demo_connections(&setup, total)?;
    let (mut table, start) = watch(&setup, &daemon, &mut conns, &ports, total)?;
    if INTERRUPTED.load(Ordering::SeqCst) {
        println!("\ninterrupted; cleaning up");
    } else {
        let now = sample(&daemon.scrape());
        println!("\nfinal values:");
        for (i, (name, labels)) in WATCHED.iter().enumerate() {
            println!("  {:<58} {}", selector(name, labels), now[i]);
        }
        if let Some(table) = table.as_mut() {
            table.print(&setup.a, start.elapsed());
        }
    }
    stop(&setup, daemon, conns);
    Ok(())
}

/// The daemon in A, watching the veth; prints where it runs and its socket hooks.
fn start_daemon(setup: &Setup) -> Daemon<'_> {
    println!(
        "namespaces {} (A: 192.0.2.1, runs the daemon) and {} (B: 192.0.2.2), joined by a veth pair",
        setup.a.name(),
        setup.b.name()
    );
    let daemon = Daemon::spawn_with(&setup.a, &[&setup.veth.a_if], &[]);
    println!(
        "keepalive-daemon (pid {}) watches {} in A and serves 127.0.0.1:10291 there",
        daemon.pid(),
        setup.veth.a_if
    );
    print_hooks(&daemon.scrape());
    daemon
}

/// The three connections with keepalive on, described; returns them and A's ports.
fn open_demo_connections(setup: &Setup, total: Duration) -> anyhow::Result<(Vec<Conn>, Vec<u16>)> {
    let conns = open_connections(&setup.a, &setup.b, 3, 0);
    exchange_byte(&conns);
    for c in &conns {
        enable_keepalive(&c.client, CLIENT_KEEPALIVE);
    }
    enable_keepalive(conns[0].server(), SERVER_KEEPALIVE);
    let ports: Vec<u16> = conns
        .iter()
        .map(|c| c.client.local_addr().map(|a| a.port()))
        .collect::<Result<_, _>>()?;
    let peer = conns[0].client.peer_addr()?;
    let k = |p: KeepaliveParams| format!("{}s/{}s/{}", p.idle_secs, p.intvl_secs, p.cnt);
    println!("\nconnections, A -> B (keepalive idle/interval/count):");
    println!(
        "  1 healthy          {A_V4}:{} -> {peer}  A {}, B {}",
        ports[0],
        k(CLIENT_KEEPALIVE),
        k(SERVER_KEEPALIVE)
    );
    println!(
        "  2 peer vanishes    {A_V4}:{} -> {peer}  A {}",
        ports[1],
        k(CLIENT_KEEPALIVE)
    );
    println!(
        "  3 peer lost state  {A_V4}:{} -> {peer}  A {}",
        ports[2],
        k(CLIENT_KEEPALIVE)
    );
    println!(
        "at {}s connections 2 and 3 fail; the demo ends after {}s\n",
        FAILURE_AT.as_secs(),
        total.as_secs()
    );
    Ok((conns, ports))
}

/// The demo proper, until `total` has passed or Ctrl-C: fails the peers at
/// [`FAILURE_AT`], reports how the applications' reads end, and every [`TICK`] prints
/// the metrics that changed (and the connections table after an event). Returns the
/// connections table, if the daemon has one, and when the demo started.
fn watch(
    setup: &Setup,
    daemon: &Daemon,
    conns: &mut [Conn],
    ports: &[u16],
    total: Duration,
) -> anyhow::Result<(Option<ConnectionsTable>, Instant)> {
    let outcomes = watch_reads(&conns[1..], total + Duration::from_secs(5))?;
    let mut connections_cmd = ConnectionsTable::probe();
    let start = Instant::now();
    let mut last: Option<Vec<f64>> = None;
    let mut failed = false;
    let mut next_tick = start;
    // The connections table is printed at the first tick and at the tick after each event.
    let mut table_at = Some(Duration::ZERO);
    while start.elapsed() < total && !INTERRUPTED.load(Ordering::SeqCst) {
        let t = start.elapsed();
        if !failed && t >= FAILURE_AT {
            failed = true;
            fail_peers(setup, conns, ports, t)?;
            table_at = Some(t + TICK / 2);
        }
        while let Ok((i, outcome)) = outcomes.try_recv() {
            println!(
                "[{:>3}s] connection {}: the application's read() {outcome}",
                t.as_secs(),
                i + 2
            );
            table_at = Some(t + TICK / 2);
        }
        if t >= next_tick.duration_since(start) {
            next_tick += TICK;
            let now = sample(&daemon.scrape());
            print_changes(t, last.as_deref(), &now);
            last = Some(now);
            if let Some(table) = connections_cmd.as_mut()
                && table_at.is_some_and(|at| t >= at)
            {
                table.print(&setup.a, t);
                table_at = None;
            }
        }
        thread::sleep(Duration::from_millis(100));
    }
    Ok((connections_cmd, start))
}

/// Unblocks the readers and stops the daemon; the namespaces go after it (Setup's Drop).
fn stop(setup: &Setup, daemon: Daemon, conns: Vec<Conn>) {
    for c in &conns {
        let _ = c.client.shutdown(Shutdown::Both);
    }
    drop(conns);
    let stderr = daemon.terminate();
    let warnings: Vec<&str> = stderr
        .lines()
        .filter(|l| l.contains("WARN") || l.contains("ERROR"))
        .collect();
    if !warnings.is_empty() {
        println!("daemon warnings:\n  {}", warnings.join("\n  "));
    }
    println!(
        "daemon stopped (exit 0); removing namespaces {} and {}",
        setup.a.name(),
        setup.b.name()
    );
}

/// Which mechanism each socket hook uses (`keepalive_daemon_hook_info`).
fn print_hooks(s: &Samples) {
    let hooks: Vec<String> = s
        .matching(HOOK_INFO, &[])
        .filter(|series| series.value == 1.0)
        .map(|series| {
            let label = |k: &str| series.labels.get(k).map(String::as_str).unwrap_or("?");
            format!("{} via {}", label("hook"), label("mechanism"))
        })
        .collect();
    println!(
        "socket hooks: {}",
        if hooks.is_empty() {
            "none attached".into()
        } else {
            hooks.join(", ")
        }
    );
}

/// Makes connection 2's peer vanish and connection 3's peer lose its state.
fn fail_peers(setup: &Setup, conns: &mut [Conn], ports: &[u16], t: Duration) -> anyhow::Result<()> {
    let secs = t.as_secs();
    // 2: B drops every segment of this connection from now on.
    setup.b.nft(&format!(
        "table inet {VANISH_TABLE} {{\n\
         \tchain input {{\n\
         \t\ttype filter hook input priority 0; policy accept;\n\
         \t\tip saddr {A_V4} tcp sport {} counter drop\n\
         \t}}\n\
         }}\n",
        ports[1]
    ));
    println!("[{secs:>3}s] connection 2: B now silently drops everything A sends on it");
    // 3: B aborts its end; the RST is dropped on the way out, so A does not learn of it.
    setup.b.nft(&format!(
        "table inet {LOST_TABLE} {{\n\
         \tchain output {{\n\
         \t\ttype filter hook output priority 0; policy accept;\n\
         \t\tip daddr {A_V4} tcp dport {} tcp flags & rst == rst counter drop\n\
         \t}}\n\
         }}\n",
        ports[2]
    ));
    let server = conns[2]
        .server
        .take()
        .context("connection 3's server socket")?;
    set_linger_zero(&server);
    drop(server);
    setup.b.cmd(&["nft", "delete", "table", "inet", LOST_TABLE]);
    println!("[{secs:>3}s] connection 3: B forgot it (socket aborted, its RST never reached A)");
    Ok(())
}

/// One reader thread per connection, blocked in read() on A's end; each reports how
/// its read ended (bounded by `timeout`).
fn watch_reads(
    conns: &[Conn],
    timeout: Duration,
) -> anyhow::Result<mpsc::Receiver<(usize, String)>> {
    let (tx, rx) = mpsc::channel();
    for (i, c) in conns.iter().enumerate() {
        let mut stream: TcpStream = c.client.try_clone()?;
        stream.set_read_timeout(Some(timeout))?;
        let tx = tx.clone();
        thread::spawn(move || {
            let mut buf = [0u8; 64];
            let outcome = match stream.read(&mut buf) {
                Ok(0) => "returned end of file".to_owned(),
                Ok(n) => format!("returned {n} bytes"),
                Err(e) => format!("failed: {e}"),
            };
            let _ = tx.send((i, outcome));
        });
    }
    Ok(rx)
}

fn selector(name: &str, labels: &[(&str, &str)]) -> String {
    if labels.is_empty() {
        return name.to_owned();
    }
    let inner: Vec<String> = labels.iter().map(|(k, v)| format!("{k}=\"{v}\"")).collect();
    format!("{name}{{{}}}", inner.join(","))
}

fn sample(s: &Samples) -> Vec<f64> {
    WATCHED
        .iter()
        .map(|(name, labels)| s.matching(name, labels).map(|series| series.value).sum())
        .collect()
}

/// Prints the watched series that changed since `last` (all of them the first time).
fn print_changes(t: Duration, last: Option<&[f64]>, now: &[f64]) {
    let mut out = String::new();
    for (i, (name, labels)) in WATCHED.iter().enumerate() {
        let before = last.map(|l| l[i]);
        if before == Some(now[i]) {
            continue;
        }
        let delta = before
            .map(|b| format!("(+{})", now[i] - b))
            .unwrap_or_default();
        let _ = writeln!(
            out,
            "[{:>3}s]   {:<58} {:>4} {delta}",
            t.as_secs(),
            selector(name, labels),
            now[i]
        );
    }
    if out.is_empty() {
        println!("[{:>3}s]   (no change)", t.as_secs());
    } else {
        print!("{out}");
    }
}

/// `keepalive-daemon connections`, when the daemon has that subcommand: run in A, where
/// the daemon listens on 127.0.0.1:10291 (the subcommand's default address).
struct ConnectionsTable {
    failed: bool,
}

impl ConnectionsTable {
    fn probe() -> Option<ConnectionsTable> {
        let ok = std::process::Command::new(daemon_bin())
            .args(["connections", "--help"])
            .output()
            .is_ok_and(|o| o.status.success());
        if !ok {
            println!("(this keepalive-daemon has no `connections` subcommand; metrics only)\n");
            return None;
        }
        Some(ConnectionsTable { failed: false })
    }

    fn print(&mut self, ns: &Netns, t: Duration) {
        if self.failed {
            return;
        }
        let out = ns.cmd_output(&[daemon_bin().as_os_str(), "connections".as_ref()]);
        if out.status.success() {
            let table = String::from_utf8_lossy(&out.stdout);
            println!(
                "[{:>3}s] $ keepalive-daemon connections\n{table}",
                t.as_secs()
            );
        } else {
            println!(
                "[{:>3}s] keepalive-daemon connections failed ({}); not trying again:\n{}",
                t.as_secs(),
                out.status,
                String::from_utf8_lossy(&out.stderr)
            );
            self.failed = true;
        }
    }
}

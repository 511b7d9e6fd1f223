//! The systemd notify protocol: READY=1 with a STATUS once everything is attached, then
//! WATCHDOG=1 pings fed by successful reads of the kernel counters; /healthz answers 200;
//! on SIGTERM, STOPPING=1 before the exit.

use std::{
    net::{Ipv4Addr, SocketAddr},
    os::unix::net::UnixDatagram,
    process::{Command, Stdio},
    time::{Duration, Instant},
};

use keepalive_tests::{
    Netns, daemon::daemon_bin, metrics::http_get, process::TempDir, require_root,
};

const PORT: u16 = 19_291;

#[test]
fn ready_status_watchdog_and_healthz() {
    require_root();
    let ns = Netns::new("notify", "a");
    let dir = TempDir::new("notify");
    let sock_path = dir.path().join("notify.sock");
    let sock = UnixDatagram::bind(&sock_path).unwrap();
    sock.set_read_timeout(Some(Duration::from_secs(1))).unwrap();

    let mut child = Command::new("nsenter")
        .arg(format!("--net={}", ns.path().display()))
        .arg(daemon_bin())
        .args(["--web.listen-address", &format!("127.0.0.1:{PORT}")])
        .env("NOTIFY_SOCKET", &sock_path)
        .env("WATCHDOG_USEC", "1000000")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawning the daemon");

    // Each datagram is a list of newline-separated assignments (sd_notify(3)).
    let mut messages: Vec<Vec<String>> = Vec::new();
    let watchdog = vec!["WATCHDOG=1".to_owned()];
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut buf = [0u8; 512];
    let mut receive = |messages: &mut Vec<Vec<String>>| {
        if let Ok(n) = sock.recv(&mut buf) {
            let text = String::from_utf8_lossy(&buf[..n]).into_owned();
            messages.push(text.lines().map(str::to_owned).collect());
        }
    };
    while Instant::now() < deadline && messages.iter().filter(|m| **m == watchdog).count() < 2 {
        receive(&mut messages);
    }
    let addr = SocketAddr::new(Ipv4Addr::LOCALHOST.into(), PORT);
    let health = ns.run_in(move || http_get(addr, "/healthz"));
    let _ = Command::new("kill").arg(child.id().to_string()).status();
    let stopping = vec!["STOPPING=1".to_owned()];
    let deadline = Instant::now() + Duration::from_secs(10);
    let before_term = messages.len();
    while Instant::now() < deadline && !messages[before_term..].contains(&stopping) {
        receive(&mut messages);
    }
    let status = child.wait().expect("waiting for the daemon");
    assert_notifications(&messages, before_term);
    let health = health.expect("GET /healthz");
    assert_eq!((health.status, health.body.as_str()), (200, "ok\n"));
    assert!(
        status.success(),
        "daemon exit status after SIGTERM: {status}"
    );
}

/// READY=1 with the status first, watchdog pings before SIGTERM (`before_term` messages),
/// then STOPPING=1 and nothing but pings after it.
fn assert_notifications(messages: &[Vec<String>], before_term: usize) {
    let watchdog = vec!["WATCHDOG=1".to_owned()];
    let stopping = vec!["STOPPING=1".to_owned()];
    let first = messages.first().cloned().unwrap_or_default();
    assert_eq!(
        first.len(),
        2,
        "first notification: {first:?}; all: {messages:?}"
    );
    assert_eq!(first[0], "READY=1", "all: {messages:?}");
    assert!(
        first[1].starts_with("STATUS=watching "),
        "first notification: {first:?}; all: {messages:?}"
    );
    assert!(
        first[1].contains("hooks: timer_probes="),
        "status without hooks: {first:?}"
    );
    assert!(
        messages[..before_term]
            .iter()
            .filter(|m| **m == watchdog)
            .count()
            >= 2,
        "expected watchdog pings (WATCHDOG_USEC=1s means every 0.5 s): {messages:?}"
    );
    // After SIGTERM: pings may still come until the daemon stops, then STOPPING=1.
    let after_term = &messages[before_term..];
    assert!(
        after_term.contains(&stopping),
        "no STOPPING=1 within 10 s of SIGTERM: {after_term:?}"
    );
    assert!(
        after_term.iter().all(|m| *m == watchdog || *m == stopping),
        "unexpected notifications after SIGTERM: {after_term:?}"
    );
}

//! The systemd notify protocol: READY=1 with a STATUS once everything is attached, then
//! WATCHDOG=1 pings fed by successful reads of the kernel counters; /healthz answers 200.

use std::{
    net::{Ipv4Addr, SocketAddr},
    os::unix::net::UnixDatagram,
    process::{Command, Stdio},
    time::{Duration, Instant},
};

use keepalive_tests::{Netns, daemon::daemon_bin, metrics::http_get, require_root};

const PORT: u16 = 19_291;

#[test]
fn ready_status_watchdog_and_healthz() {
    require_root();
    let ns = Netns::new("notify", "a");
    let dir = std::env::temp_dir().join(format!("kat-notify-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let sock_path = dir.join("notify.sock");
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

    let mut messages = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut buf = [0u8; 512];
    while Instant::now() < deadline
        && messages
            .iter()
            .filter(|m: &&String| *m == "WATCHDOG=1")
            .count()
            < 2
    {
        if let Ok(n) = sock.recv(&mut buf) {
            messages.push(String::from_utf8_lossy(&buf[..n]).into_owned());
        }
    }
    let addr = SocketAddr::new(Ipv4Addr::LOCALHOST.into(), PORT);
    let health = ns.run_in(move || http_get(addr, "/healthz"));
    let _ = Command::new("kill").arg(child.id().to_string()).status();
    let status = child.wait().expect("waiting for the daemon");
    let _ = std::fs::remove_dir_all(&dir);

    let first = messages.first().cloned().unwrap_or_default();
    assert!(
        first.starts_with("READY=1\nSTATUS=watching "),
        "first notification: {first:?}; all: {messages:?}"
    );
    assert!(
        first.contains("hooks: timer_probes="),
        "status without hooks: {first:?}"
    );
    assert!(
        messages.iter().filter(|m| *m == "WATCHDOG=1").count() >= 2,
        "expected watchdog pings (WATCHDOG_USEC=1s means every 0.5 s): {messages:?}"
    );
    let health = health.expect("GET /healthz");
    assert_eq!((health.status, health.body.as_str()), (200, "ok\n"));
    assert!(
        status.success(),
        "daemon exit status after SIGTERM: {status}"
    );
}

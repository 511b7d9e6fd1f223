//! The keepalive audit in the connection view (issue #12), end to end: three idle
//! connections from namespace A to B with known settings (keepalive off; on with 60 s
//! idle; on with 600 s idle and TCP_USER_TIMEOUT 5 s), the daemon in A with
//! `--audit.interval 1s --audit.idle-limit 240s`. Once an inventory taken after the
//! sockets were set up is served, GET /connections?at_risk=1 must list exactly the
//! keepalive-off and the 600 s connections of the veth (longest idle first), with their
//! settings, the limit and the reason, the test's process, its cgroup and A's namespace
//! inode, and never the 60 s one; `keepalive-daemon connections --at-risk` must print
//! the same two rows.
//!
//! Needs the audit's kernel side (iter/tcp) and daemon wiring (--audit.* flags, the
//! inventory loop): run it after they are merged. Before that the daemon refuses the
//! --audit.* flags and this test fails at start-up, loudly.
//!
//! The daemon starts after the connections went idle, so none of them has a flow map
//! entry (nothing crossed the veth since): each row is listed from the inventory alone.
//! Other rows of the listing can only be loopback connections of A (the daemon's side of
//! the test's own HTTP requests, which has no keepalive): they are checked to be that.

use std::{
    net::SocketAddr,
    os::unix::fs::MetadataExt as _,
    thread,
    time::{Duration, Instant, SystemTime, UNIX_EPOCH},
};

use keepalive_tests::{
    Conn, Daemon, KeepaliveParams, Setup, enable_keepalive, open_connections, require_root,
    sockets::exchange_byte, timing::DAEMON_PORT,
};
use serde_json::{Value, json};
use socket2::SockRef;

/// The inventory runs every second; one taken after the set-up is served within this.
const INVENTORY_WAIT: Duration = Duration::from_secs(15);
const POLL: Duration = Duration::from_millis(200);
/// The off connection's last segment is this much older than the others'.
const OLDER_BY: Duration = Duration::from_secs(2);

const SHORT: KeepaliveParams = KeepaliveParams {
    idle_secs: 60,
    intvl_secs: 10,
    cnt: 5,
};
const LONG: KeepaliveParams = KeepaliveParams {
    idle_secs: 600,
    intvl_secs: 30,
    cnt: 4,
};
const USER_TIMEOUT: Duration = Duration::from_millis(5000);

#[test]
fn at_risk_view_lists_the_keepalive_off_and_long_idle_connections_exactly() {
    require_root();
    let setup = Setup::new("auditv");
    let conns = idle_connections(&setup);
    let configured = unix_now();
    let daemon = Daemon::spawn_with(
        &setup.a,
        &[&setup.veth.a_if],
        &["--audit.interval", "1s", "--audit.idle-limit", "240s"],
    );
    let listing = wait_for_inventory(&daemon, configured);
    let rows = veth_rows(&listing);
    let local = |c: &Conn| c.client.local_addr().unwrap().to_string();
    let remote = |c: &Conn| c.client.peer_addr().unwrap().to_string();
    let got: Vec<(&str, &str)> = rows
        .iter()
        .map(|r| (r["local"].as_str().unwrap(), r["remote"].as_str().unwrap()))
        .collect();
    let (off, long) = (&conns[0], &conns[2]);
    assert_eq!(
        got,
        [
            (local(off).as_str(), remote(off).as_str()),
            (local(long).as_str(), remote(long).as_str())
        ],
        "at-risk rows of the veth (the 60 s connection {} must not be one): {listing:#}",
        local(&conns[1])
    );
    let ns = std::fs::metadata(setup.a.path())
        .expect("A's namespace file")
        .ino();
    check_row(rows[0], &off_expected(&setup, ns), &listing);
    check_row(rows[1], &long_expected(ns), &listing);
    assert!(
        rows[0]["audit"]["idle_age_seconds"].as_u64()
            > rows[1]["audit"]["idle_age_seconds"].as_u64(),
        "the off connection is idle longer: {listing:#}"
    );
    assert_eq!(listing["at_risk_only"], true);
    assert_eq!(listing["recent_endings"], json!([]), "{listing:#}");
    check_cli(&setup, &conns);
    drop(conns);
    daemon.terminate();
}

/// Three connections A -> B: keepalive off; on, 60 s; on, 600 s with TCP_USER_TIMEOUT.
/// The last two exchange a byte [`OLDER_BY`] after the first went idle.
fn idle_connections(setup: &Setup) -> Vec<Conn> {
    let conns = open_connections(&setup.a, &setup.b, 3, 0);
    exchange_byte(&conns);
    thread::sleep(OLDER_BY);
    exchange_byte(&conns[1..]);
    enable_keepalive(&conns[1].client, SHORT);
    enable_keepalive(&conns[2].client, LONG);
    SockRef::from(&conns[2].client)
        .set_tcp_user_timeout(Some(USER_TIMEOUT))
        .expect("TCP_USER_TIMEOUT");
    conns
}

fn unix_now() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs_f64()
}

/// GET /connections?at_risk=1 until it reads an inventory taken after `since`.
fn wait_for_inventory(daemon: &Daemon, since: f64) -> Value {
    let deadline = Instant::now() + INVENTORY_WAIT;
    loop {
        let body = daemon.get("/connections?at_risk=1&limit=100");
        let listing: Value = serde_json::from_str(&body).expect("GET /connections is JSON");
        let taken = listing["audit_inventory_unix_seconds"].as_f64();
        if taken.is_some_and(|t| t > since) {
            return listing;
        }
        assert!(
            Instant::now() < deadline,
            "no inventory taken after the set-up within {INVENTORY_WAIT:?} (last: {taken:?}); \
             listing: {listing:#}\ndaemon stderr:\n{}",
            daemon.stderr()
        );
        thread::sleep(POLL);
    }
}

/// The rows of the veth's connections; every other row must be a loopback connection
/// of the test's requests to the daemon: both its ends are established sockets of the
/// namespace with keepalive off (the daemon's end and, while the request is open, the
/// test's own end), so either side may be the daemon's port.
fn veth_rows(listing: &Value) -> Vec<&Value> {
    let rows = listing["connections"].as_array().expect("connections");
    let (veth, other): (Vec<&Value>, Vec<&Value>) = rows
        .iter()
        .partition(|r| r["remote"].as_str().unwrap().starts_with("192.0.2.2:"));
    for r in &other {
        let local: SocketAddr = r["local"].as_str().unwrap().parse().unwrap();
        let remote: SocketAddr = r["remote"].as_str().unwrap().parse().unwrap();
        assert!(
            local.ip().is_loopback()
                && remote.ip().is_loopback()
                && (local.port() == DAEMON_PORT || remote.port() == DAEMON_PORT),
            "unexpected at-risk row {r:#}"
        );
    }
    assert_eq!(
        listing["total"].as_u64(),
        Some(rows.len() as u64),
        "{listing:#}"
    );
    veth
}

/// What a row's `audit` must hold, but for the idle age: `p` the effective keepalive
/// settings, `ns` the namespace inode.
fn audit(keepalive: bool, p: KeepaliveParams, timeout_ms: u64, reason: &str, ns: u64) -> Value {
    json!({
        "keepalive": keepalive,
        "idle_seconds": p.idle_secs,
        "interval_seconds": p.intvl_secs,
        "count": p.cnt,
        "user_timeout_ms": timeout_ms,
        "at_risk": [{"idle_limit": "240s", "idle_limit_seconds": 240, "reason": reason}],
        "netns_inode": ns,
        "uid": 0,
        "cgroup": own_cgroup(),
        "process": own_process(),
    })
}

/// Keepalive off: the settings are A's sysctls (the socket sets none).
fn off_expected(setup: &Setup, ns: u64) -> Value {
    let sysctl = |name: &str| -> u32 {
        let v = setup.a.cmd(&["sysctl", "-n", name]);
        v.trim()
            .parse()
            .unwrap_or_else(|e| panic!("{name}: {v:?}: {e}"))
    };
    let p = KeepaliveParams {
        idle_secs: sysctl("net.ipv4.tcp_keepalive_time"),
        intvl_secs: sysctl("net.ipv4.tcp_keepalive_intvl"),
        cnt: sysctl("net.ipv4.tcp_keepalive_probes"),
    };
    audit(false, p, 0, "keepalive_off", ns)
}

fn long_expected(ns: u64) -> Value {
    audit(
        true,
        LONG,
        USER_TIMEOUT.as_millis() as u64,
        "idle_at_or_above_limit",
        ns,
    )
}

/// A row: listed from the inventory only (no flow map entry, no counts) with the
/// `expected` audit fields.
fn check_row(row: &Value, expected: &Value, listing: &Value) {
    assert_eq!(
        (
            &row["in_flow_map"],
            &row["probes_sent"],
            &row["probes_received"],
            &row["ended"]
        ),
        (&json!(false), &json!(0), &json!(0), &json!("open")),
        "{listing:#}"
    );
    let a = &row["audit"];
    for (key, want) in expected.as_object().unwrap() {
        assert_eq!(&a[key], want, "audit.{key} of {row:#}");
    }
}

/// This process's cgroup v2 path ("0::PATH" in /proc/self/cgroup), which its sockets
/// carry; null without a cgroup v2 hierarchy.
fn own_cgroup() -> Value {
    let text = std::fs::read_to_string("/proc/self/cgroup").expect("/proc/self/cgroup");
    let v2 = [
        "/sys/fs/cgroup/cgroup.controllers",
        "/sys/fs/cgroup/unified/cgroup.procs",
    ]
    .iter()
    .any(|p| std::path::Path::new(p).exists());
    match text.lines().find_map(|l| l.strip_prefix("0::")) {
        Some(path) if v2 => json!(path),
        _ => Value::Null,
    }
}

/// `comm[pid]` of this process, which holds the sockets.
fn own_process() -> Value {
    let comm = std::fs::read_to_string("/proc/self/comm").expect("/proc/self/comm");
    json!(format!("{}[{}]", comm.trim_end(), std::process::id()))
}

/// `keepalive-daemon connections --at-risk` in A prints the same two rows of the veth.
fn check_cli(setup: &Setup, conns: &[Conn]) {
    let bin = keepalive_tests::daemon::daemon_bin();
    let address = format!("127.0.0.1:{DAEMON_PORT}");
    let out = setup.a.cmd_output(&[
        bin.to_str().unwrap(),
        "connections",
        "--web.address",
        &address,
        "--at-risk",
    ]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "connections --at-risk failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let rows: Vec<Vec<&str>> = text
        .lines()
        .filter(|l| l.contains(" 192.0.2.2:"))
        .map(|l| l.split_whitespace().collect())
        .collect();
    let process = own_process();
    let process = process.as_str().unwrap();
    let expect = |c: &Conn, keepalive: &str, reason: &'static str| {
        let local = c.client.local_addr().unwrap().to_string();
        (local, keepalive.to_owned(), reason)
    };
    let want = [
        expect(&conns[0], "off", "keepalive_off"),
        expect(&conns[2], "on:600s", "idle_at_or_above_limit"),
    ];
    assert_eq!(rows.len(), 2, "{text}");
    for (r, (local, keepalive, reason)) in rows.iter().zip(&want) {
        assert_eq!(r.len(), 15, "{text}");
        assert_eq!(r[0], local.as_str(), "{text}");
        assert_eq!(&r[2..9], ["-"; 7], "no flow counts: {text}");
        assert_eq!(
            (r[9], r[10], r[12], r[13], r[14]),
            ("open", keepalive.as_str(), "240s", *reason, process),
            "{text}"
        );
    }
    assert!(
        text.lines().any(|l| l.contains(" connections at risk. ")),
        "{text}"
    );
}

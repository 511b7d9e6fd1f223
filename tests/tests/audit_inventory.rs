//! The keepalive audit's inventory across namespaces (issue #12) with a real third-party
//! application: the daemon runs in namespace A with `--socket.all-namespaces`; in a
//! second namespace N run Debian's redis-server with `tcp-keepalive 45` in its config
//! file, python3-redis clients connected to it with their own keepalive options, and
//! the test's own sockets: one with keepalive off and TCP_USER_TIMEOUT 7 s, one with
//! only TCP_KEEPIDLE 600 (interval and count from N's sysctls, set to 33 s and 7 here so
//! that a daemon reading another namespace's values shows), and their accepted ends.
//!
//! Every one of them is at risk for --audit.idle-limit 30s (redis's 45 s idle is above
//! it), so GET /connections?at_risk=1 lists them all with their settings: the rows of
//! N's namespace inode must be exactly these 12 sockets with exactly these settings, and
//! their risks for 30s and 60s exactly as the rule gives them.
//!
//! Redis applies `tcp-keepalive N` to each accepted connection in anetKeepAlive()
//! (src/anet.c): SO_KEEPALIVE, TCP_KEEPIDLE N, TCP_KEEPINTVL N/3, TCP_KEEPCNT 3; checked
//! on Debian's 7.0.15 with strace (setsockopt(fd, SOL_TCP, TCP_KEEPIDLE, [45]) and so
//! on). The test checks what it can without the daemon: `ss` shows a keepalive timer of
//! at most 45 s on each of redis's sockets.
//!
//! The same connection in two namespaces: A and N each hold a loopback connection
//! 127.0.0.1:7412 -> 127.0.0.1:7411 (the same addresses and ports), keepalive off with
//! TCP_USER_TIMEOUT 9 s in A, TCP_KEEPIDLE 300 s in N. The view keys its inventory by
//! namespace and connection, so both rows are listed, each with its own settings (and
//! both accepted ends, whose sysctl-derived settings differ by namespace).

use std::collections::BTreeMap;
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::os::unix::fs::MetadataExt as _;
use std::thread;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use keepalive_tests::names::AUDIT_INVENTORY_ENABLED;
use keepalive_tests::netns::B_V4;
use keepalive_tests::sockets::connect_with_retry;
use keepalive_tests::third_party::{REDIS_PORT, RedisClients, RedisServer, redis_keepalive};
use keepalive_tests::timing::{ACCEPT_TIMEOUT, POLL_INTERVAL};
use keepalive_tests::{Daemon, KeepaliveParams, Netns, Setup, require_root};
use serde_json::{Value, json};
use socket2::{SockRef, TcpKeepalive};

/// `tcp-keepalive` in redis.conf.
const REDIS_KEEPALIVE_SECS: u32 = 45;
/// The python3-redis clients' keepalive options.
const CLIENT_KEEPALIVE: KeepaliveParams = KeepaliveParams {
    idle_secs: 200,
    intvl_secs: 20,
    cnt: 5,
};
/// Client connections per family (IPv4 and IPv6).
const PER_FAMILY: usize = 2;
/// N's net.ipv4.tcp_keepalive_intvl and _probes; its tcp_keepalive_time stays the
/// kernel's default for a new namespace.
const N_SYSCTL_INTVL: u32 = 33;
const N_SYSCTL_PROBES: u32 = 7;
const SYSCTL_TIME_DEFAULT: u32 = 7200;
/// The off socket's TCP_USER_TIMEOUT.
const USER_TIMEOUT_MS: u64 = 7000;
/// The own keepalive socket's TCP_KEEPIDLE.
const OWN_IDLE_SECS: u32 = 600;
/// The inventory runs every second; one taken after the set-up is served within this.
const INVENTORY_WAIT: Duration = Duration::from_secs(15);

#[test]
fn audit_inventory_shows_redis_settings_in_another_namespace() {
    require_root();
    let setup = Setup::new("ainv");
    let n = &setup.b;
    n.cmd(&[
        "sysctl",
        "-q",
        "-w",
        &format!("net.ipv4.tcp_keepalive_intvl={N_SYSCTL_INTVL}"),
        &format!("net.ipv4.tcp_keepalive_probes={N_SYSCTL_PROBES}"),
    ]);
    let daemon = Daemon::spawn_with(
        &setup.a,
        &[&setup.veth.a_if],
        &[
            "--socket.all-namespaces",
            "--audit.interval",
            "1s",
            "--audit.idle-limit",
            "30s",
            "--audit.idle-limit",
            "60s",
        ],
    );
    let server = RedisServer::start(n, REDIS_KEEPALIVE_SECS);
    let clients = RedisClients::connect(n, PER_FAMILY, CLIENT_KEEPALIVE);
    let own = OwnSockets::open(n);
    let twins = [
        Twin::open(&setup.a, None),
        Twin::open(n, Some(TWIN_IDLE_SECS)),
    ];
    let set_up = unix_now();
    let redis_timers = redis_keepalive_timers(n);

    let listing = wait_for_inventory(&daemon, set_up);
    let inode = std::fs::metadata(n.path()).expect("stat N").ino();
    let rows = rows_of(&listing, inode);
    let ctx = || {
        format!(
            "rows of N (inode {inode}): {rows:#?}\nredis keepalive timers (ss): \
             {redis_timers:?}\nredis log:\n{}\ndaemon stderr:\n{}",
            server.log(),
            daemon.stderr()
        )
    };
    assert_eq!(
        redis_timers.len(),
        2 * PER_FAMILY,
        "premise: redis's sockets in ss; {}",
        ctx()
    );
    assert!(
        redis_timers.iter().all(|t| *t <= REDIS_KEEPALIVE_SECS),
        "premise: redis's keepalive timers at most {REDIS_KEEPALIVE_SECS} s; {}",
        ctx()
    );
    let want = expected_rows(n, &own, &twins[1]);
    assert_eq!(rows, want, "N's at-risk rows (got left); {}", ctx());
    let a_inode = std::fs::metadata(setup.a.path()).expect("stat A").ino();
    let a_rows: BTreeMap<_, _> = rows_of(&listing, a_inode)
        .into_iter()
        .filter(|(k, _)| twins[0].rows().iter().any(|(tk, _)| tk == k))
        .collect();
    assert_eq!(
        a_rows,
        BTreeMap::from(twins[0].rows()),
        "A's rows of the connection N holds too (got left); {}",
        ctx()
    );
    assert_eq!(
        daemon.scrape().value(AUDIT_INVENTORY_ENABLED, &[]),
        1.0,
        "the inventory is off; {}",
        ctx()
    );
    eprintln!(
        "audit_inventory: {} rows in N (inode {inode}), redis keepalive timers {redis_timers:?}",
        rows.len()
    );
    drop(own);
    drop(twins);
    clients.close();
    drop(server);
    daemon.terminate();
}

fn unix_now() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock after 1970")
        .as_secs_f64()
}

/// The test's own connections in N: a listener on B's IPv4 address, one client with
/// keepalive off and TCP_USER_TIMEOUT, one with only TCP_KEEPIDLE set, and the two
/// accepted ends (keepalive off, as accepted sockets inherit from the listener).
struct OwnSockets {
    off: (TcpStream, TcpStream),
    idle600: (TcpStream, TcpStream),
}

impl OwnSockets {
    fn open(n: &Netns) -> OwnSockets {
        let (listener, off, idle600) = n.run_in(|| {
            let l = TcpListener::bind(SocketAddr::new(B_V4.into(), 0)).expect("bind in N");
            let addr = l.local_addr().expect("listener address");
            let off = connect_with_retry(addr);
            SockRef::from(&off)
                .set_tcp_user_timeout(Some(Duration::from_millis(USER_TIMEOUT_MS)))
                .expect("TCP_USER_TIMEOUT");
            let idle600 = connect_with_retry(addr);
            let only_idle =
                TcpKeepalive::new().with_time(Duration::from_secs(OWN_IDLE_SECS.into()));
            SockRef::from(&idle600)
                .set_tcp_keepalive(&only_idle)
                .expect("SO_KEEPALIVE and TCP_KEEPIDLE");
            (l, off, idle600)
        });
        let accept = |client: &TcpStream| {
            let want = client.local_addr().expect("client address");
            let deadline = Instant::now() + ACCEPT_TIMEOUT;
            listener
                .set_nonblocking(true)
                .expect("nonblocking listener");
            loop {
                match listener.accept() {
                    Ok((s, peer)) if peer == want => return s,
                    Ok((_, peer)) => panic!("unexpected connection from {peer}"),
                    Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                        assert!(Instant::now() < deadline, "no connection from {want}");
                        thread::sleep(POLL_INTERVAL);
                    }
                    Err(e) => panic!("accept in N: {e}"),
                }
            }
        };
        let off_server = accept(&off);
        let idle600_server = accept(&idle600);
        OwnSockets {
            off: (off, off_server),
            idle600: (idle600, idle600_server),
        }
    }
}

/// The loopback connection A and N both hold: the same ports in both.
const TWIN_SERVER_PORT: u16 = 7411;
const TWIN_CLIENT_PORT: u16 = 7412;
/// The client's TCP_KEEPIDLE in N; in A the client has keepalive off and this
/// TCP_USER_TIMEOUT.
const TWIN_IDLE_SECS: u32 = 300;
const TWIN_USER_TIMEOUT_MS: u64 = 9000;

/// One namespace's loopback connection 127.0.0.1:7412 -> 127.0.0.1:7411: the client
/// with keepalive on at `idle` seconds (only TCP_KEEPIDLE) or, with `None`, off and with
/// a TCP_USER_TIMEOUT; the accepted end with nothing set.
struct Twin {
    client: TcpStream,
    server: TcpStream,
    idle: Option<u32>,
    /// The namespace's net.ipv4.tcp_keepalive_intvl and _probes.
    sysctl: (u32, u32),
}

impl Twin {
    fn open(ns: &Netns, idle: Option<u32>) -> Twin {
        let sysctl = |name: &str| -> u32 {
            let v = ns.cmd(&["sysctl", "-n", name]);
            v.trim()
                .parse()
                .unwrap_or_else(|e| panic!("{name}: {v:?}: {e}"))
        };
        let sysctl = (
            sysctl("net.ipv4.tcp_keepalive_intvl"),
            sysctl("net.ipv4.tcp_keepalive_probes"),
        );
        let (client, server) = ns.run_in(|| {
            let lo = std::net::Ipv4Addr::LOCALHOST;
            let l = TcpListener::bind((lo, TWIN_SERVER_PORT)).expect("bind the twin listener");
            let c = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None)
                .expect("socket");
            c.bind(&SocketAddr::from((lo, TWIN_CLIENT_PORT)).into())
                .expect("bind the twin client");
            c.connect(&SocketAddr::from((lo, TWIN_SERVER_PORT)).into())
                .expect("connect the twin client");
            // The handshake is done: the connection waits in the backlog.
            let (server, _) = l.accept().expect("accept the twin");
            (TcpStream::from(c), server)
        });
        let sock = SockRef::from(&client);
        match idle {
            Some(secs) => sock
                .set_tcp_keepalive(&TcpKeepalive::new().with_time(Duration::from_secs(secs.into())))
                .expect("SO_KEEPALIVE and TCP_KEEPIDLE"),
            None => sock
                .set_tcp_user_timeout(Some(Duration::from_millis(TWIN_USER_TIMEOUT_MS)))
                .expect("TCP_USER_TIMEOUT"),
        }
        Twin {
            client,
            server,
            idle,
            sysctl,
        }
    }

    /// Both ends' rows as [`rows_of`] gives them.
    fn rows(&self) -> [((String, String), Value); 2] {
        let key = |s: &TcpStream| {
            (
                s.local_addr().expect("local").to_string(),
                s.peer_addr().expect("peer").to_string(),
            )
        };
        let (intvl_secs, cnt) = self.sysctl;
        let off = |timeout_ms| {
            let p = KeepaliveParams {
                idle_secs: SYSCTL_TIME_DEFAULT,
                intvl_secs,
                cnt,
            };
            settings(false, p, timeout_ms)
        };
        let client = match self.idle {
            Some(idle_secs) => {
                let p = KeepaliveParams {
                    idle_secs,
                    intvl_secs,
                    cnt,
                };
                settings(true, p, 0)
            }
            None => off(TWIN_USER_TIMEOUT_MS),
        };
        [(key(&self.client), client), (key(&self.server), off(0))]
    }
}

/// Seconds left on the keepalive timer of each established socket of redis (local port
/// 6379) in `n`, from `ss -tno`.
fn redis_keepalive_timers(n: &Netns) -> Vec<u32> {
    let out = n.cmd(&["ss", "-tnoH", "state", "established", "sport", "=", ":6379"]);
    out.lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| {
            let timer = l
                .split("timer:(keepalive,")
                .nth(1)
                .unwrap_or_else(|| panic!("redis socket without a keepalive timer: {l}"));
            let secs = timer.split("sec").next().expect("timer value");
            secs.parse()
                .unwrap_or_else(|_| panic!("keepalive timer not in whole seconds: {l}"))
        })
        .collect()
}

/// GET /connections?at_risk=1 until it reads an inventory taken after `since`.
fn wait_for_inventory(daemon: &Daemon, since: f64) -> Value {
    let deadline = Instant::now() + INVENTORY_WAIT;
    loop {
        let body = daemon.get("/connections?at_risk=1&limit=10000");
        let listing: Value = serde_json::from_str(&body).expect("GET /connections is JSON");
        let taken = listing["audit_inventory_unix_seconds"].as_f64();
        if taken.is_some_and(|t| t > since) {
            assert_eq!(listing["truncated"], json!(false), "{listing:#}");
            return listing;
        }
        assert!(
            Instant::now() < deadline,
            "no inventory taken after the set-up within {INVENTORY_WAIT:?} (last: {taken:?}); \
             daemon stderr:\n{}",
            daemon.stderr()
        );
        thread::sleep(POLL_INTERVAL * 10);
    }
}

/// (local, remote) -> the row's settings, for the rows of namespace `inode`; the idle
/// age, uid, cgroup and process are left out (not what this test configures).
fn rows_of(listing: &Value, inode: u64) -> BTreeMap<(String, String), Value> {
    let rows = listing["connections"].as_array().expect("connections");
    rows.iter()
        .filter(|r| r["audit"]["netns_inode"].as_u64() == Some(inode))
        .map(|r| {
            let a = &r["audit"];
            let settings = json!({
                "keepalive": a["keepalive"],
                "idle_seconds": a["idle_seconds"],
                "interval_seconds": a["interval_seconds"],
                "count": a["count"],
                "user_timeout_ms": a["user_timeout_ms"],
                "at_risk": a["at_risk"],
            });
            let addr = |k: &str| r[k].as_str().expect("address").to_owned();
            ((addr("local"), addr("remote")), settings)
        })
        .collect()
}

/// What each established socket of N (`ss`) must show: redis's accepted ends (local
/// port 6379) redis's settings, the python3-redis clients (remote port 6379) theirs,
/// the test's own sockets theirs; no other socket may exist in N.
fn expected_rows(n: &Netns, own: &OwnSockets, twin: &Twin) -> BTreeMap<(String, String), Value> {
    let key = |s: &TcpStream| {
        (
            s.local_addr().expect("local").to_string(),
            s.peer_addr().expect("peer").to_string(),
        )
    };
    let idle600 = KeepaliveParams {
        idle_secs: OWN_IDLE_SECS,
        intvl_secs: N_SYSCTL_INTVL,
        cnt: N_SYSCTL_PROBES,
    };
    let [twin_client, twin_server] = twin.rows();
    let own_rows = [
        (key(&own.off.0), row(None, USER_TIMEOUT_MS)),
        (key(&own.off.1), row(None, 0)),
        (key(&own.idle600.0), row(Some(idle600), 0)),
        (key(&own.idle600.1), row(None, 0)),
        twin_client,
        twin_server,
    ];
    let redis_port = format!(":{REDIS_PORT}");
    let out = n.cmd(&["ss", "-tnH", "state", "established"]);
    let mut want = BTreeMap::new();
    for line in out.lines().filter(|l| !l.trim().is_empty()) {
        let fields: Vec<&str> = line.split_whitespace().collect();
        let [.., local, remote] = fields[..] else {
            panic!("unexpected ss line {line:?}");
        };
        let k = (local.to_owned(), remote.to_owned());
        let settings = if local.ends_with(&redis_port) {
            row(Some(redis_keepalive(REDIS_KEEPALIVE_SECS)), 0)
        } else if remote.ends_with(&redis_port) {
            row(Some(CLIENT_KEEPALIVE), 0)
        } else {
            let (_, r) = own_rows
                .iter()
                .find(|(ok, _)| *ok == k)
                .unwrap_or_else(|| panic!("a socket in N the test did not make: {line}"));
            r.clone()
        };
        want.insert(k, settings);
    }
    assert_eq!(
        want.len(),
        own_rows.len() + 4 * PER_FAMILY,
        "premise: N's established sockets (ss):\n{out}"
    );
    want
}

/// One row's settings: `None` is keepalive off (settings from N's sysctls).
fn row(keepalive: Option<KeepaliveParams>, timeout_ms: u64) -> Value {
    let p = keepalive.unwrap_or(KeepaliveParams {
        idle_secs: SYSCTL_TIME_DEFAULT,
        intvl_secs: N_SYSCTL_INTVL,
        cnt: N_SYSCTL_PROBES,
    });
    settings(keepalive.is_some(), p, timeout_ms)
}

/// One row's settings: `p` the effective ones, whether keepalive is on or off.
fn settings(keepalive: bool, p: KeepaliveParams, timeout_ms: u64) -> Value {
    let at_risk: Vec<Value> = [30, 60]
        .into_iter()
        .filter(|limit| !keepalive || p.idle_secs >= *limit)
        .map(|limit| {
            json!({
                "idle_limit": format!("{limit}s"),
                "idle_limit_seconds": limit,
                "reason": if keepalive { "idle_at_or_above_limit" } else { "keepalive_off" },
            })
        })
        .collect();
    json!({
        "keepalive": keepalive,
        "idle_seconds": p.idle_secs,
        "interval_seconds": p.intvl_secs,
        "count": p.cnt,
        "user_timeout_ms": timeout_ms,
        "at_risk": at_risk,
    })
}

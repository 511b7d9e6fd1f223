//! Real third-party software with keepalive enabled by its own configuration:
//! Debian's redis-server in namespace B with `tcp-keepalive N` in its config
//! file, and clients in namespace A using Debian's python3-redis library with
//! `socket_keepalive=True` and matching `socket_keepalive_options`.
//!
//! Redis applies `tcp-keepalive N` to every accepted client connection through
//! anetKeepAlive() (src/anet.c): SO_KEEPALIVE, TCP_KEEPIDLE = N,
//! TCP_KEEPINTVL = N / 3 (at least 1) and TCP_KEEPCNT = 3. The clients use the
//! same three values, so both ends of every connection go idle together after
//! the last reply and probe in the same rounds, as in production.

use std::fs::File;
use std::io::{BufRead, BufReader, Write};
use std::process::{Child, ChildStdin, Stdio};
use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant};

use crate::netns::{B_V4, B_V6, Netns};
use crate::process::{TempDir, kill_and_reap, read_lossy, wait_timeout};
use crate::sockets::KeepaliveParams;
use crate::timing::POLL_INTERVAL;

/// Port of the server inside B (a private namespace: nothing else listens there).
pub const REDIS_PORT: u16 = 6379;
/// Debian's interpreter, with python3-redis on its path (a `python3` earlier on
/// PATH, e.g. a pyenv shim, may not have it).
pub const PYTHON: &str = "/usr/bin/python3";
/// Bound on redis-server becoming ready and on the clients connecting or closing.
pub const START_TIMEOUT: Duration = Duration::from_secs(20);

/// What redis-server does with `tcp-keepalive n` (see the module comment).
pub fn redis_keepalive(n: u32) -> KeepaliveParams {
    KeepaliveParams {
        idle_secs: n,
        intvl_secs: (n / 3).max(1),
        cnt: 3,
    }
}

/// redis-server running in a namespace, bound to B's addresses; killed and
/// reaped on drop.
#[derive(Debug)]
pub struct RedisServer {
    child: Child,
    log: std::path::PathBuf,
    _dir: TempDir,
}

impl RedisServer {
    /// Starts redis-server in `ns` with `tcp-keepalive keepalive_secs` and
    /// nothing persistent, and waits until it accepts connections.
    pub fn start(ns: &Netns, keepalive_secs: u32) -> RedisServer {
        let dir = TempDir::new("redis");
        let conf = dir.join("redis.conf");
        let log = dir.join("redis.log");
        let config = format!(
            "bind {B_V4} {B_V6}\n\
             port {REDIS_PORT}\n\
             protected-mode no\n\
             tcp-keepalive {keepalive_secs}\n\
             daemonize no\n\
             supervised no\n\
             save \"\"\n\
             appendonly no\n\
             dir {}\n\
             logfile \"\"\n",
            dir.path().display()
        );
        std::fs::write(&conf, config).expect("write redis.conf");
        let out = File::create(&log).expect("create redis log");
        let child = ns
            .command("redis-server")
            .arg(&conf)
            .stdin(Stdio::null())
            .stdout(out.try_clone().expect("clone redis log"))
            .stderr(out)
            .spawn()
            .unwrap_or_else(|e| panic!("spawning redis-server (Debian package redis-server): {e}"));
        let mut server = RedisServer {
            child,
            log,
            _dir: dir,
        };
        let deadline = Instant::now() + START_TIMEOUT;
        loop {
            let text = read_lossy(&server.log);
            if text.contains("Ready to accept connections") {
                return server;
            }
            if let Some(status) = server.child.try_wait().expect("try_wait redis-server") {
                panic!("redis-server exited early ({status}):\n{text}");
            }
            assert!(
                Instant::now() < deadline,
                "redis-server not ready after {START_TIMEOUT:?}:\n{text}"
            );
            thread::sleep(POLL_INTERVAL);
        }
    }

    pub fn log(&self) -> String {
        read_lossy(&self.log)
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        kill_and_reap(&mut self.child);
    }
}

/// The client program: opens `per_host` connections to each host with
/// keepalive set through redis-py's own options, PINGs on each, reports
/// "ready", holds them idle until a line arrives on stdin, closes them.
const CLIENT: &str = r#"
import socket, sys
import redis
hosts = sys.argv[1].split(",")
port, per_host, idle, intvl, cnt = map(int, sys.argv[2:7])
opts = {socket.TCP_KEEPIDLE: idle, socket.TCP_KEEPINTVL: intvl, socket.TCP_KEEPCNT: cnt}
clients = []
for host in hosts:
    for _ in range(per_host):
        r = redis.Redis(host=host, port=port, socket_keepalive=True,
                        socket_keepalive_options=opts, single_connection_client=True)
        if not r.ping():
            sys.exit("PING to %s failed" % host)
        clients.append(r)
print("ready %d" % len(clients), flush=True)
sys.stdin.readline()
for r in clients:
    r.close()
print("closed", flush=True)
"#;

/// python3-redis clients running in a namespace; killed and reaped on drop.
#[derive(Debug)]
pub struct RedisClients {
    child: Child,
    stdin: Option<ChildStdin>,
    lines: mpsc::Receiver<String>,
    stderr: std::path::PathBuf,
    _dir: TempDir,
}

impl RedisClients {
    /// Opens `per_family` connections to each of B's addresses from `ns` and
    /// returns once all answered a PING.
    pub fn connect(ns: &Netns, per_family: usize, keepalive: KeepaliveParams) -> RedisClients {
        let dir = TempDir::new("redis-clients");
        let stderr = dir.join("clients.stderr");
        let mut child = ns
            .command(PYTHON)
            .args(["-c", CLIENT, &format!("{B_V4},{B_V6}")])
            .args(
                [
                    u32::from(REDIS_PORT),
                    u32::try_from(per_family).expect("connection count fits in u32"),
                    keepalive.idle_secs,
                    keepalive.intvl_secs,
                    keepalive.cnt,
                ]
                .map(|v| v.to_string()),
            )
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(File::create(&stderr).expect("create clients stderr"))
            .spawn()
            .unwrap_or_else(|e| panic!("spawning {PYTHON} (Debian package python3-redis): {e}"));
        let stdin = child.stdin.take();
        let stdout = child.stdout.take().expect("clients stdout");
        let (tx, lines) = mpsc::channel();
        thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        let mut clients = RedisClients {
            child,
            stdin,
            lines,
            stderr,
            _dir: dir,
        };
        let want = format!("ready {}", 2 * per_family);
        clients.expect_line(&want);
        clients
    }

    fn expect_line(&mut self, want: &str) {
        match self.lines.recv_timeout(START_TIMEOUT) {
            Ok(line) if line == want => {}
            other => {
                kill_and_reap(&mut self.child);
                panic!(
                    "redis clients: expected {want:?}, got {other:?}; stderr:\n{}",
                    read_lossy(&self.stderr)
                );
            }
        }
    }

    /// Closes every connection and waits (bounded) for the program to exit 0.
    pub fn close(mut self) {
        let mut stdin = self.stdin.take().expect("clients stdin");
        stdin.write_all(b"close\n").expect("write to clients");
        drop(stdin);
        self.expect_line("closed");
        let status = wait_timeout(&mut self.child, START_TIMEOUT);
        assert!(
            status.is_some_and(|s| s.success()),
            "redis clients ended with {status:?}; stderr:\n{}",
            read_lossy(&self.stderr)
        );
    }
}

impl Drop for RedisClients {
    fn drop(&mut self) {
        kill_and_reap(&mut self.child);
    }
}

/// Established TCP sockets in `ns` whose pending timer is the keepalive timer,
/// from `ss -tno`: shows that the applications themselves switched keepalive on.
pub fn keepalive_sockets(ns: &Netns) -> usize {
    let out = ns.cmd(&["ss", "-tnoH", "state", "established"]);
    out.lines()
        .filter(|l| l.contains("timer:(keepalive"))
        .count()
}

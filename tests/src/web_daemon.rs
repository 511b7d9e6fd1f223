//! The daemon for the web server tests: started with any flags (a --web.config.file
//! with basic auth included, which [`crate::Daemon`]'s readiness check cannot pass),
//! ready once `GET /metrics` with the given credentials reports it up. Included by
//! tests/tests/web_server.rs (`#[path]`), next to web_client.rs.

use std::{
    fs::File,
    net::{Ipv4Addr, SocketAddr},
    process::{Child, Stdio},
    time::Instant,
};

use keepalive_tests::{
    Netns,
    daemon::{daemon_bin, reports_up},
    process::{TempDir, kill_and_reap, read_lossy},
    timing::{DAEMON_POLL_INTERVAL, DAEMON_PORT, DAEMON_READY_TIMEOUT},
};

use crate::web_client::{Client, connect_in};

/// A running daemon on 127.0.0.1:DAEMON_PORT of `ns`; SIGKILLed on drop.
pub struct WebDaemon<'ns> {
    pub ns: &'ns Netns,
    pub addr: SocketAddr,
    child: Child,
    dir: TempDir,
}

impl<'ns> WebDaemon<'ns> {
    /// Starts the daemon in `ns` with `flags`; `basic` (user:password) for readiness.
    pub fn spawn(ns: &'ns Netns, flags: &[&str], basic: Option<&str>) -> WebDaemon<'ns> {
        let dir = TempDir::new("webd");
        let stderr = File::create(dir.join("stderr")).expect("daemon stderr file");
        let addr = SocketAddr::new(Ipv4Addr::LOCALHOST.into(), DAEMON_PORT);
        let child = ns
            .command(daemon_bin())
            .args(flags)
            .args(["--web.listen-address", &addr.to_string()])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(stderr)
            .spawn()
            .expect("spawning the daemon");
        let mut d = WebDaemon {
            ns,
            addr,
            child,
            dir,
        };
        d.wait_ready(basic);
        d
    }

    /// A new connection to the daemon.
    pub fn client(&self) -> Client {
        Client::new(connect_in(self.ns, self.addr)).expect("HTTP handshake")
    }

    /// What the daemon wrote to stderr so far.
    pub fn stderr(&self) -> String {
        read_lossy(&self.dir.join("stderr"))
    }

    fn wait_ready(&mut self, basic: Option<&str>) {
        let deadline = Instant::now() + DAEMON_READY_TIMEOUT;
        loop {
            if let Some(status) = self.child.try_wait().expect("try_wait") {
                panic!("daemon exited ({status}) before ready:\n{}", self.stderr());
            }
            let last = self.ns.run_in(|| std::net::TcpStream::connect(self.addr));
            let last = match last.map(Client::new) {
                Ok(Ok(mut c)) => match c.send("GET", "/metrics", basic) {
                    Ok(a) if a.status == 200 && reports_up(&a.body) => return,
                    Ok(a) => format!("HTTP {}: {:.200}", a.status, a.body),
                    Err(e) => format!("{e:#}"),
                },
                Ok(Err(e)) => format!("{e:#}"),
                Err(e) => e.to_string(),
            };
            assert!(
                Instant::now() < deadline,
                "daemon not ready within {DAEMON_READY_TIMEOUT:?} (last: {last}); stderr:\n{}",
                self.stderr()
            );
            std::thread::sleep(DAEMON_POLL_INTERVAL);
        }
    }
}

impl Drop for WebDaemon<'_> {
    fn drop(&mut self) {
        kill_and_reap(&mut self.child);
        if std::thread::panicking() {
            eprintln!("---- keepalive-daemon stderr ----\n{}", self.stderr());
        }
    }
}

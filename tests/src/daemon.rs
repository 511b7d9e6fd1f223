//! The daemon under test, run inside a namespace.

use std::fs::File;
use std::net::{Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::process::{Child, Stdio};
use std::thread;
use std::time::Instant;

use crate::bpf::{BpfObjects, proc_bpf_objects};
use crate::metrics::{Samples, http_get};
use crate::netns::Netns;
use crate::process::{TempDir, kill_and_reap, read_lossy, send_signal, wait_timeout};
use crate::timing::{DAEMON_POLL_INTERVAL, DAEMON_PORT, DAEMON_READY_TIMEOUT, DAEMON_TERM_TIMEOUT};

/// Environment variable naming the daemon binary (set by `cargo xtask test`).
pub const DAEMON_BIN_ENV: &str = "KEEPALIVE_DAEMON_BIN";

/// Path of the daemon binary; panics loudly when it is not configured.
pub fn daemon_bin() -> PathBuf {
    let Some(bin) = std::env::var_os(DAEMON_BIN_ENV) else {
        panic!("{DAEMON_BIN_ENV} is not set; run these tests through `cargo xtask test`");
    };
    let bin = PathBuf::from(bin);
    assert!(
        bin.is_file(),
        "{DAEMON_BIN_ENV}={} is not a file",
        bin.display()
    );
    bin
}

/// A running `keepalive-daemon`; SIGKILLed on drop if still running.
#[derive(Debug)]
pub struct Daemon<'ns> {
    ns: &'ns Netns,
    child: Option<Child>,
    addr: SocketAddr,
    stderr_path: PathBuf,
    _dir: TempDir,
}

impl<'ns> Daemon<'ns> {
    /// Starts the daemon in `ns`, attached to `interfaces`, listening on
    /// 127.0.0.1 of that namespace, and waits until it reports itself up.
    pub fn spawn(ns: &'ns Netns, interfaces: &[&str]) -> Daemon<'ns> {
        Daemon::spawn_with(ns, interfaces, &[])
    }

    /// Like [`Daemon::spawn`], with extra command-line flags.
    pub fn spawn_with(ns: &'ns Netns, interfaces: &[&str], extra: &[&str]) -> Daemon<'ns> {
        Daemon::spawn_wrapped(ns, &[], interfaces, extra)
    }

    /// Like [`Daemon::spawn_with`], started through `wrapper` (a program that execs its
    /// arguments, e.g. `setpriv ...`), so [`Daemon::pid`] is still the daemon's.
    pub fn spawn_wrapped(
        ns: &'ns Netns,
        wrapper: &[&str],
        interfaces: &[&str],
        extra: &[&str],
    ) -> Daemon<'ns> {
        let bin = daemon_bin();
        let dir = TempDir::new("daemon");
        let stderr_path = dir.join("daemon.stderr");
        let stdout_path = dir.join("daemon.stdout");
        let stderr = File::create(&stderr_path).expect("create daemon stderr file");
        let stdout = File::create(&stdout_path).expect("create daemon stdout file");
        let addr = SocketAddr::new(Ipv4Addr::LOCALHOST.into(), DAEMON_PORT);
        let mut cmd = match wrapper.split_first() {
            None => ns.command(&bin),
            Some((program, args)) => {
                let mut c = ns.command(program);
                c.args(args).arg(&bin);
                c
            }
        };
        for iface in interfaces {
            cmd.arg("--interface").arg(iface);
        }
        cmd.args(extra)
            .arg("--web.listen-address")
            .arg(addr.to_string())
            .stdin(Stdio::null())
            .stdout(stdout)
            .stderr(stderr);
        let child = cmd
            .spawn()
            .unwrap_or_else(|e| panic!("spawning {}: {e}", bin.display()));
        let mut daemon = Daemon {
            ns,
            child: Some(child),
            addr,
            stderr_path,
            _dir: dir,
        };
        daemon.wait_ready();
        daemon
    }

    /// Process id (nsenter execs the daemon, so this is the daemon itself).
    pub fn pid(&self) -> u32 {
        self.child.as_ref().expect("daemon already stopped").id()
    }

    /// Everything the daemon wrote to stderr so far.
    pub fn stderr(&self) -> String {
        read_lossy(&self.stderr_path)
    }

    fn wait_ready(&mut self) {
        let deadline = Instant::now() + DAEMON_READY_TIMEOUT;
        loop {
            let child = self.child.as_mut().expect("daemon child");
            if let Some(status) = child.try_wait().expect("try_wait daemon") {
                panic!(
                    "keepalive-daemon exited ({status}) before becoming ready; stderr:\n{}",
                    self.stderr()
                );
            }
            let addr = self.addr;
            let last = match self.ns.run_in(|| http_get(addr, "/metrics")) {
                Ok(resp) if resp.status == 200 && reports_up(&resp.body) => return,
                Ok(resp) => format!("HTTP {}: {:.200}", resp.status, resp.body),
                Err(e) => format!("{e:#}"),
            };
            if Instant::now() >= deadline {
                kill_and_reap(self.child.as_mut().expect("daemon child"));
                panic!(
                    "keepalive-daemon not ready within {DAEMON_READY_TIMEOUT:?} (last attempt: \
                     {last}); stderr:\n{}",
                    self.stderr()
                );
            }
            thread::sleep(DAEMON_POLL_INTERVAL);
        }
    }

    /// The body of GET /metrics (must answer 200).
    pub fn scrape_text(&self) -> String {
        let addr = self.addr;
        match self.ns.run_in(|| http_get(addr, "/metrics")) {
            Ok(resp) if resp.status == 200 => resp.body,
            Ok(resp) => panic!(
                "GET /metrics answered {}:\n{}\ndaemon stderr:\n{}",
                resp.status,
                resp.body,
                self.stderr()
            ),
            Err(e) => panic!(
                "GET /metrics failed: {e:#}\ndaemon stderr:\n{}",
                self.stderr()
            ),
        }
    }

    /// The body of GET `path` (must answer 200), e.g. "/connections?limit=100".
    pub fn get(&self, path: &str) -> String {
        let addr = self.addr;
        let path = path.to_owned();
        match self.ns.run_in(move || http_get(addr, &path)) {
            Ok(resp) if resp.status == 200 => resp.body,
            Ok(resp) => panic!("GET answered {}:\n{}", resp.status, resp.body),
            Err(e) => panic!("GET failed: {e:#}\ndaemon stderr:\n{}", self.stderr()),
        }
    }

    /// GET /metrics, parsed.
    pub fn scrape(&self) -> Samples {
        let text = self.scrape_text();
        Samples::parse(&text).unwrap_or_else(|e| panic!("unparsable /metrics: {e:#}\n{text}"))
    }

    /// BPF programs and links the daemon holds file descriptors to.
    pub fn bpf_objects(&self) -> BpfObjects {
        proc_bpf_objects(self.pid())
    }

    /// SIGTERM, wait (bounded), assert exit status 0. Returns the daemon's stderr.
    /// SIGKILL: the daemon gets no chance to clean up. Returns what it wrote to stderr.
    pub fn kill(mut self) -> String {
        let mut child = self.child.take().expect("daemon already stopped");
        kill_and_reap(&mut child);
        self.stderr()
    }

    pub fn terminate(mut self) -> String {
        let mut child = self.child.take().expect("daemon already stopped");
        send_signal(&child, libc::SIGTERM);
        let Some(status) = wait_timeout(&mut child, DAEMON_TERM_TIMEOUT) else {
            kill_and_reap(&mut child);
            panic!(
                "keepalive-daemon still running {DAEMON_TERM_TIMEOUT:?} after SIGTERM; stderr:\n{}",
                self.stderr()
            );
        };
        let stderr = self.stderr();
        assert!(
            status.code() == Some(0),
            "keepalive-daemon exited with {status} after SIGTERM; stderr:\n{stderr}"
        );
        stderr
    }
}

/// Whether a /metrics body contains the sample `keepalive_daemon_up 1`.
pub fn reports_up(body: &str) -> bool {
    body.lines().any(|line| {
        let mut fields = line.split_whitespace();
        fields.next() == Some("keepalive_daemon_up")
            && fields.next().and_then(|v| v.parse::<f64>().ok()) == Some(1.0)
    })
}

impl Drop for Daemon<'_> {
    fn drop(&mut self) {
        if let Some(child) = self.child.as_mut() {
            kill_and_reap(child);
            if thread::panicking() {
                eprintln!("---- keepalive-daemon stderr ----\n{}", self.stderr());
            }
        }
    }
}

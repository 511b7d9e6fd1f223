//! Network namespaces and the veth pair joining two of them.

use std::ffi::OsStr;
use std::fs::File;
use std::net::{Ipv4Addr, Ipv6Addr};
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::atomic::{AtomicU32, Ordering};

use crate::process::{run, run_checked, run_output};

/// Side A of the veth pair (the daemon's side).
pub const A_V4: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 1);
/// Side B of the veth pair (the peer).
pub const B_V4: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 2);
pub const A_V6: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 1);
pub const B_V6: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 2);
const V4_PREFIX: u8 = 24;
const V6_PREFIX: u8 = 64;

/// A named network namespace (`ip netns add`), deleted on drop.
///
/// Declare it *before* anything that runs inside it (daemon, capture) so
/// that those are dropped, and their processes reaped, first.
#[derive(Debug)]
pub struct Netns {
    name: String,
    path: PathBuf,
}

impl Netns {
    /// Creates `kat-<test>-<pid>-<role>` with its loopback up.
    pub fn new(test: &str, role: &str) -> Netns {
        let name = format!("kat-{test}-{}-{role}", std::process::id());
        let path = Path::new("/var/run/netns").join(&name);
        if path.exists() {
            // Left over by an earlier process that had the same pid.
            let _ = run_output(
                crate::process::command(&["ip", "netns", "del", &name]),
                None,
            );
        }
        run(&["ip", "netns", "add", &name]);
        let ns = Netns { name, path };
        run(&["ip", "-n", &ns.name, "link", "set", "lo", "up"]);
        ns
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// `/var/run/netns/<name>`.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// `nsenter --net=<path> -- <program>`: a command that runs inside the
    /// namespace without remounting /sys (unlike `ip netns exec`).
    pub fn command<S: AsRef<OsStr>>(&self, program: S) -> Command {
        let mut cmd = Command::new("nsenter");
        cmd.arg(format!("--net={}", self.path.display()))
            .arg("--")
            .arg(program);
        cmd
    }

    fn command_argv<S: AsRef<OsStr>>(&self, argv: &[S]) -> Command {
        let (program, args) = argv.split_first().expect("non-empty argv");
        let mut cmd = self.command(program);
        cmd.args(args);
        cmd
    }

    /// Runs `argv` inside the namespace; panics unless it exits 0; returns stdout.
    pub fn cmd<S: AsRef<OsStr>>(&self, argv: &[S]) -> String {
        run_checked(self.command_argv(argv), None)
    }

    /// Like [`Netns::cmd`] but returns the raw output whatever the exit status.
    pub fn cmd_output<S: AsRef<OsStr>>(&self, argv: &[S]) -> Output {
        run_output(self.command_argv(argv), None)
    }

    /// Runs `argv` inside the namespace with `stdin` as its standard input.
    pub fn cmd_stdin<S: AsRef<OsStr>>(&self, argv: &[S], stdin: &str) -> String {
        run_checked(self.command_argv(argv), Some(stdin.as_bytes()))
    }

    /// Runs `f` on a thread that has joined this namespace and returns its
    /// result. Sockets created by `f` belong to the namespace for good and
    /// may be used from any thread afterwards.
    pub fn run_in<F, T>(&self, f: F) -> T
    where
        F: FnOnce() -> T + Send,
        T: Send,
    {
        let file = File::open(&self.path)
            .unwrap_or_else(|e| panic!("opening {}: {e}", self.path.display()));
        std::thread::scope(|scope| {
            let handle = std::thread::Builder::new()
                .name(format!("in-{}", self.name))
                .spawn_scoped(scope, move || {
                    // SAFETY: setns(2) on a valid namespace fd; it only
                    // affects the calling thread for CLONE_NEWNET.
                    let rc = unsafe { libc::setns(file.as_raw_fd(), libc::CLONE_NEWNET) };
                    if rc != 0 {
                        panic!(
                            "setns({}): {}",
                            self.path.display(),
                            std::io::Error::last_os_error()
                        );
                    }
                    drop(file);
                    f()
                })
                .expect("spawning namespace thread");
            match handle.join() {
                Ok(value) => value,
                Err(payload) => std::panic::resume_unwind(payload),
            }
        })
    }

    /// Absolute value of one `nstat` counter (e.g. `TcpExtTCPKeepAlive`) in
    /// this namespace. Compute deltas in the test.
    pub fn nstat(&self, counter: &str) -> u64 {
        // -a: absolute values, -s: do not touch the history file, -z: show zeros.
        let out = self.cmd(&["nstat", "-asz", counter]);
        parse_nstat(&out, counter)
            .unwrap_or_else(|| panic!("nstat in {} has no {counter}:\n{out}", self.name))
    }

    /// Loads an nftables script (`nft -f -`) inside the namespace.
    pub fn nft(&self, script: &str) {
        self.cmd_stdin(&["nft", "-f", "-"], script);
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        let out = run_output(
            crate::process::command(&["ip", "netns", "del", &self.name]),
            None,
        );
        if !out.status.success() {
            eprintln!(
                "warning: ip netns del {}: {}",
                self.name,
                String::from_utf8_lossy(&out.stderr)
            );
        }
    }
}

/// Extracts `counter` from `nstat` text output (`NAME  VALUE  RATE` lines).
pub fn parse_nstat(output: &str, counter: &str) -> Option<u64> {
    output.lines().find_map(|line| {
        let mut fields = line.split_whitespace();
        (fields.next()? == counter).then_some(())?;
        fields.next()?.parse().ok()
    })
}

/// A veth pair with `a_if` in namespace A (192.0.2.1/24, 2001:db8::1/64) and
/// `b_if` in namespace B (192.0.2.2/24, 2001:db8::2/64), both up.
/// It disappears with its namespaces.
#[derive(Debug)]
pub struct VethPair {
    pub a_if: String,
    pub b_if: String,
}

impl VethPair {
    pub fn new(a: &Netns, b: &Netns) -> VethPair {
        static COUNTER: AtomicU32 = AtomicU32::new(0);
        let n = COUNTER.fetch_add(1, Ordering::Relaxed);
        // "kat" + pid (<= 7 digits) + n + "a" stays within IFNAMSIZ - 1 = 15.
        let stem = format!("kat{}{n}", std::process::id());
        assert!(stem.len() < 15, "interface name stem {stem} too long");
        let pair = VethPair {
            a_if: format!("{stem}a"),
            b_if: format!("{stem}b"),
        };
        run(&[
            "ip",
            "-n",
            a.name(),
            "link",
            "add",
            &pair.a_if,
            "type",
            "veth",
            "peer",
            "name",
            &pair.b_if,
            "netns",
            b.name(),
        ]);
        for (ns, ifname, v4, v6) in [(a, &pair.a_if, A_V4, A_V6), (b, &pair.b_if, B_V4, B_V6)] {
            let n = ns.name();
            run(&[
                "ip",
                "-n",
                n,
                "addr",
                "add",
                &format!("{v4}/{V4_PREFIX}"),
                "dev",
                ifname,
            ]);
            run(&[
                "ip",
                "-n",
                n,
                "-6",
                "addr",
                "add",
                &format!("{v6}/{V6_PREFIX}"),
                "dev",
                ifname,
                "nodad",
            ]);
            run(&["ip", "-n", n, "link", "set", ifname, "up"]);
        }
        pair
    }
}

//! keepalive-vmcheck: the kernel-matrix check (`cargo xtask vm-test`). Runs as root on
//! the host and as the workload of a qemu guest booted from a Debian kernel.
//!
//! 1. Works out from the running kernel alone (its BTF, kallsyms, tracefs and a minimal
//!    fentry program) which mechanism each socket hook should get, independently of the
//!    daemon's own resolver.
//! 2. Starts the daemon in namespace A on the A end of a veth pair, makes keepalive
//!    connections (1 s / 1 s / 3) to namespace B, two healthy and two whose answers
//!    B drops (a source-address rule routes B's replies into a blackhole), so they die
//!    with ETIMEDOUT.
//! 3. Compares the daemon's counters with the kernel's (TcpExtTCPKeepAlive of A) and
//!    with what the sockets saw, and its keepalive_daemon_hook_info with step 1.
//! 4. Checks the keepalive audit's kernel side (audit.rs): the iter/tcp inventory and
//!    one idle death, counted by the idle-death hook's mechanism this mode expects
//!    (fentry, kprobe with --no-fentry, the tracepoints with --fallback).
//!
//! Output: one `VMCHECK key=value ...` line per fact, hook and count, then
//! `VMCHECK RESULT PASS` or `VMCHECK RESULT FAIL <why>`. Exit status 0 only on PASS.
//!
//! Usage: keepalive-vmcheck --daemon PATH [--daemon-arg ARG]...
//!
//! The parts are submodules of this binary (not of the `keepalive_tests` library):
//! they print the VMCHECK protocol on stdout, which is this program's job only.
//! xtask/src/vm/report.rs parses those lines.

#[path = "keepalive-vmcheck/audit.rs"]
mod audit;
#[path = "keepalive-vmcheck/btf.rs"]
mod btf;
#[path = "keepalive-vmcheck/dumps.rs"]
mod dumps;
#[path = "keepalive-vmcheck/expect.rs"]
mod expect;
#[path = "keepalive-vmcheck/scenario.rs"]
mod scenario;

use std::io::Write as _;
use std::path::Path;
use std::time::Instant;

use keepalive_daemon::cli::HookMechanism;
use keepalive_tests::daemon::DAEMON_BIN_ENV;

use btf::doctor_btf;
use expect::expectations;
use scenario::scenario;

fn main() {
    let mut args = std::env::args().skip(1);
    let mut fallback = false;
    let mut no_fentry = false;
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--fallback" => fallback = true,
            // The kprobe path: fentry refused by the operator flag, so every kernel that
            // supports kprobes on the hooked functions must attach them.
            "--no-fentry" => no_fentry = true,
            "--daemon-arg" => {
                extra_args().push(args.next().expect("--daemon-arg needs a value"));
            }
            "--daemon" => {
                let path = args.next().expect("--daemon needs a path");
                // SAFETY: single-threaded at this point.
                unsafe { std::env::set_var(DAEMON_BIN_ENV, path) };
            }
            other => {
                eprintln!("usage: keepalive-vmcheck --daemon PATH (unknown argument {other})");
                std::process::exit(2);
            }
        }
    }
    keepalive_tests::require_root();
    let release = std::fs::read_to_string("/proc/sys/kernel/osrelease")
        .unwrap_or_default()
        .trim()
        .to_owned();
    let mode = match (fallback, no_fentry) {
        (true, _) => "fallback",
        (false, true) => "no_fentry",
        (false, false) => "preferred",
    };
    println!("VMCHECK kernel release={release} mode={mode}");
    let started = Instant::now();
    let outcome = std::panic::catch_unwind(|| {
        // Kept until the scenario is over: dropping it removes the file.
        let doctored_file;
        let btf_path = if fallback {
            doctored_file = doctor_btf();
            let doctored = doctored_file.path().display().to_string();
            extra_args().extend(["--kernel.btf-path".to_owned(), doctored.clone()]);
            doctored
        } else {
            "/sys/kernel/btf/vmlinux".to_owned()
        };
        if no_fentry {
            extra_args().extend(["--hooks.disable".to_owned(), "fentry".to_owned()]);
        }
        let expected = expectations(Path::new(&btf_path), !no_fentry);
        let mut failures = scenario(&expected);
        let disabled: &[HookMechanism] = if no_fentry {
            &[HookMechanism::Fentry]
        } else {
            &[]
        };
        let idle_deaths = expected.get("idle_deaths").copied().unwrap_or("?");
        failures.extend(audit::check(Path::new(&btf_path), disabled, idle_deaths));
        failures
    });
    println!(
        "VMCHECK elapsed seconds={:.1}",
        started.elapsed().as_secs_f64()
    );
    let failures = match outcome {
        Ok(f) => f,
        Err(_) => vec!["the check panicked (see the message above)".to_owned()],
    };
    let _ = std::io::stderr().flush();
    if failures.is_empty() {
        println!("VMCHECK RESULT PASS");
    } else {
        println!("VMCHECK RESULT FAIL {}", failures.join("; "));
        std::process::exit(1);
    }
}

/// Prints one `VMCHECK fact key=value` line; spaces in the value become `_` so the
/// report can split the line on whitespace.
fn fact(key: &str, value: impl std::fmt::Display) {
    println!("VMCHECK fact {key}={}", value.to_string().replace(' ', "_"));
}

/// Extra daemon arguments (`--daemon-arg`, repeatable; e.g. `--kernel.btf-path`).
fn extra_args() -> std::sync::MutexGuard<'static, Vec<String>> {
    static EXTRA: std::sync::Mutex<Vec<String>> = std::sync::Mutex::new(Vec::new());
    EXTRA.lock().expect("extra args lock")
}

fn yn(b: bool) -> &'static str {
    if b { "yes" } else { "no" }
}

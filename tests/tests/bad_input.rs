//! Operator mistakes end in a clear error, a non-zero exit and nothing attached.
//!
//! Table-driven: every mistake of [`CASES`] is tried, whatever the earlier ones did, and
//! the test fails at the end listing every case handled wrong.

use std::{net::TcpListener, process::Command};

use keepalive_tests::{Netns, daemon::daemon_bin, require_root};

struct Run {
    code: Option<i32>,
    stderr: String,
}

/// How a case starts the daemon.
enum Start {
    /// In the namespace, with these arguments.
    Args(&'static [&'static str]),
    /// Through `wrapper` (setpriv, setarch: programs that exec the rest), with `args`.
    Wrapped {
        wrapper: &'static [&'static str],
        args: &'static [&'static str],
    },
    /// Told to listen on a port a listener of the test already holds in the namespace.
    PortInUse,
}

/// One operator mistake and what the daemon must do about it.
struct Case {
    name: &'static str,
    start: Start,
    /// The exit code: 2 for what the argument parser rejects, 1 for the rest.
    code: i32,
    /// Strings stderr must contain (all of them).
    says: &'static [&'static str],
    /// Strings stderr must not contain.
    never_says: &'static [&'static str],
    /// Whether to check that nothing of ours is left attached on lo.
    check_attached: bool,
}

const CASES: &[Case] = &[
    Case {
        name: "unknown flag",
        start: Start::Args(&["--no-such-flag"]),
        code: 2,
        says: &["--no-such-flag"],
        never_says: &[],
        check_attached: false,
    },
    Case {
        name: "listen address 10291",
        start: Start::Args(&["--web.listen-address", "10291", "--interface", "lo"]),
        code: 1,
        says: &["--web.listen-address"],
        never_says: &[],
        check_attached: true,
    },
    Case {
        name: "listen address 127.0.0.1:notaport",
        start: Start::Args(&[
            "--web.listen-address",
            "127.0.0.1:notaport",
            "--interface",
            "lo",
        ]),
        code: 1,
        says: &["--web.listen-address"],
        never_says: &[],
        check_attached: true,
    },
    Case {
        name: "listen address :99999",
        start: Start::Args(&["--web.listen-address", ":99999", "--interface", "lo"]),
        code: 1,
        says: &["--web.listen-address"],
        never_says: &[],
        check_attached: true,
    },
    Case {
        name: "port in use",
        start: Start::PortInUse,
        code: 1,
        says: &["cannot listen on"],
        // It must fail before attaching anything.
        never_says: &["attached"],
        check_attached: true,
    },
    Case {
        name: "missing interface",
        start: Start::Args(&[
            "--interface",
            "nosuch0",
            "--web.listen-address",
            "127.0.0.1:10291",
        ]),
        code: 1,
        says: &["interface nosuch0 does not exist"],
        never_says: &[],
        check_attached: true,
    },
    Case {
        name: "port out of range",
        start: Start::Args(&["--metrics.local-port", "70000"]),
        code: 2,
        says: &[],
        never_says: &[],
        check_attached: false,
    },
    Case {
        name: "missing BTF file",
        start: Start::Args(&[
            "--interface",
            "lo",
            "--kernel.btf-path",
            "/nonexistent/vmlinux",
        ]),
        code: 1,
        says: &[
            "--kernel.btf-path /nonexistent/vmlinux",
            "cannot read kernel BTF",
        ],
        never_says: &[],
        check_attached: true,
    },
    // The keepalive audit's flags: clap refuses a bad value (exit 2) naming the flag;
    // what needs all the values (count, duplicates) fails before anything is attached.
    Case {
        name: "audit idle limit 0",
        start: Start::Args(&["--audit.idle-limit", "0", "--interface", "lo"]),
        code: 2,
        says: &["--audit.idle-limit", "must be more than 0"],
        never_says: &[],
        check_attached: true,
    },
    Case {
        name: "audit idle limit garbage",
        start: Start::Args(&["--audit.idle-limit", "soon", "--interface", "lo"]),
        code: 2,
        says: &["--audit.idle-limit", "expected a number and a unit"],
        never_says: &[],
        check_attached: true,
    },
    Case {
        name: "audit idle limit not whole seconds",
        start: Start::Args(&["--audit.idle-limit", "1500ms", "--interface", "lo"]),
        code: 2,
        says: &["--audit.idle-limit", "whole seconds"],
        never_says: &[],
        check_attached: true,
    },
    Case {
        name: "nine audit idle limits",
        start: Start::Args(&[
            "--interface",
            "lo",
            "--audit.idle-limit",
            "1m",
            "--audit.idle-limit",
            "2m",
            "--audit.idle-limit",
            "3m",
            "--audit.idle-limit",
            "4m",
            "--audit.idle-limit",
            "5m",
            "--audit.idle-limit",
            "6m",
            "--audit.idle-limit",
            "7m",
            "--audit.idle-limit",
            "8m",
            "--audit.idle-limit",
            "9m",
        ]),
        code: 1,
        says: &["--audit.idle-limit given 9 times; at most 8 limits"],
        never_says: &["attached", "ready"],
        check_attached: true,
    },
    Case {
        name: "duplicate audit idle limit",
        start: Start::Args(&[
            "--interface",
            "lo",
            "--audit.idle-limit",
            "5m",
            "--audit.idle-limit",
            "300s",
        ]),
        code: 1,
        says: &["--audit.idle-limit 300s given twice"],
        never_says: &["attached", "ready"],
        check_attached: true,
    },
    Case {
        name: "audit interval under 1s",
        start: Start::Args(&["--audit.interval", "500ms", "--interface", "lo"]),
        code: 2,
        says: &["--audit.interval", "at least 1s"],
        never_says: &[],
        check_attached: true,
    },
    Case {
        name: "audit min idle 0",
        start: Start::Args(&["--audit.min-idle", "0s", "--interface", "lo"]),
        code: 2,
        says: &["--audit.min-idle", "must be more than 0"],
        never_says: &[],
        check_attached: true,
    },
    // Without the capabilities (setpriv keeps only CAP_NET_ADMIN): each missing one is
    // named, and how to grant them is said.
    Case {
        name: "no capabilities",
        start: Start::Wrapped {
            wrapper: &[
                "setpriv",
                "--bounding-set=-all,+net_admin",
                "--inh-caps=-all",
                "--",
            ],
            args: &["--interface", "lo"],
        },
        code: 1,
        says: &["missing CAP_BPF, CAP_PERFMON:", "AmbientCapabilities="],
        never_says: &["CAP_NET_ADMIN,"],
        check_attached: true,
    },
    // An unsupported kernel: the UNAME26 personality makes uname(2) report 2.6.x.
    Case {
        name: "old kernel",
        start: Start::Wrapped {
            wrapper: &["setarch", "--uname-2.6", "--"],
            args: &["--interface", "lo"],
        },
        code: 1,
        says: &["kernel 2.6.", "needs Linux 5.8 or newer"],
        never_says: &[],
        check_attached: true,
    },
];

#[test]
fn operator_mistakes_fail_clearly_and_attach_nothing() {
    require_root();
    let ns = Netns::new("badin", "a");
    let failures: Vec<String> = CASES.iter().flat_map(|case| check(&ns, case)).collect();
    assert!(
        failures.is_empty(),
        "{} failure(s) over {} operator mistakes:\n{}",
        failures.len(),
        CASES.len(),
        failures.join("\n")
    );
}

/// Runs one case; what it did wrong, if anything, each prefixed with its name.
fn check(ns: &Netns, case: &Case) -> Vec<String> {
    let r = match case.start {
        Start::Args(args) => daemon(ns, args),
        Start::Wrapped { wrapper, args } => wrapped(ns, wrapper, args),
        Start::PortInUse => port_in_use(ns),
    };
    let mut wrong = Vec::new();
    if r.code != Some(case.code) {
        wrong.push(format!("exit code {:?}, not {}", r.code, case.code));
    }
    for s in case.says {
        if !r.stderr.contains(s) {
            wrong.push(format!("stderr does not say {s:?}"));
        }
    }
    for s in case.never_says {
        if r.stderr.contains(s) {
            wrong.push(format!("stderr says {s:?}"));
        }
    }
    if case.check_attached {
        wrong.extend(left_attached(ns));
    }
    wrong
        .into_iter()
        .map(|w| format!("{}: {w}; stderr:\n{}", case.name, r.stderr))
        .collect()
}

/// The daemon in the namespace, with `args`.
fn daemon(ns: &Netns, args: &[&str]) -> Run {
    let mut cmd = Command::new("nsenter");
    cmd.arg(format!("--net={}", ns.path().display()))
        .arg(daemon_bin())
        .args(args);
    run(cmd)
}

/// Runs the daemon to its exit.
fn run(mut cmd: Command) -> Run {
    let out = cmd.output().expect("running the daemon");
    Run {
        code: out.status.code(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

/// What of ours is attached in the namespace: any TCX link or filter on lo.
fn left_attached(ns: &Netns) -> Vec<String> {
    let mut left = Vec::new();
    for dir in ["ingress", "egress"] {
        let filters = ns.cmd(&["tc", "filter", "show", "dev", "lo", dir]);
        if !filters.trim().is_empty() {
            left.push(format!("tc filter left on lo {dir}: {filters}"));
        }
    }
    let links = ns.cmd(&["bpftool", "net", "show", "dev", "lo"]);
    if links.contains("ka_") {
        left.push(format!("program left attached: {links}"));
    }
    left
}

/// The daemon told to listen on a port a listener already holds, inside the namespace.
fn port_in_use(ns: &Netns) -> Run {
    let (r, _held) = ns.run_in(|| {
        let held = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = held.local_addr().unwrap().port();
        let addr = format!("127.0.0.1:{port}");
        (daemon_in_thread(&addr), held)
    });
    r
}

/// The daemon started through `wrapper` (setpriv, setarch: programs that exec the rest).
fn wrapped(ns: &Netns, wrapper: &[&str], args: &[&str]) -> Run {
    let mut cmd = ns.command(wrapper[0]);
    cmd.args(&wrapper[1..]).arg(daemon_bin()).args(args);
    run(cmd)
}

/// The daemon run from a thread already inside the namespace (so it shares the port).
fn daemon_in_thread(addr: &str) -> Run {
    let mut cmd = Command::new(daemon_bin());
    cmd.args(["--web.listen-address", addr, "--interface", "lo"]);
    run(cmd)
}

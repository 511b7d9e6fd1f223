//! Operator mistakes end in a clear error, a non-zero exit and nothing attached.

use std::{net::TcpListener, process::Command};

use keepalive_tests::{Netns, daemon::daemon_bin, require_root};

struct Run {
    code: Option<i32>,
    stderr: String,
}

fn daemon(ns: &Netns, args: &[&str]) -> Run {
    let out = Command::new("nsenter")
        .arg(format!("--net={}", ns.path().display()))
        .arg(daemon_bin())
        .args(args)
        .output()
        .expect("running the daemon");
    Run {
        code: out.status.code(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

/// Nothing of ours is attached in the namespace: no TCX link or filter on lo.
fn assert_nothing_attached(ns: &Netns, what: &str) {
    for dir in ["ingress", "egress"] {
        let filters = ns.cmd(&["tc", "filter", "show", "dev", "lo", dir]);
        assert!(
            filters.trim().is_empty(),
            "{what}: tc filter left on lo {dir}: {filters}"
        );
    }
    let links = ns.cmd(&["bpftool", "net", "show", "dev", "lo"]);
    assert!(
        !links.contains("ka_"),
        "{what}: program left attached: {links}"
    );
}

#[test]
fn operator_mistakes_fail_clearly_and_attach_nothing() {
    require_root();
    let ns = Netns::new("badin", "a");

    let r = daemon(&ns, &["--no-such-flag"]);
    assert_eq!(r.code, Some(2), "unknown flag: {}", r.stderr);
    assert!(r.stderr.contains("--no-such-flag"), "{}", r.stderr);

    for bad in ["10291", "127.0.0.1:notaport", ":99999"] {
        let r = daemon(&ns, &["--web.listen-address", bad, "--interface", "lo"]);
        assert_eq!(r.code, Some(1), "listen address {bad}: {}", r.stderr);
        assert!(
            r.stderr.contains("--web.listen-address"),
            "{bad}: {}",
            r.stderr
        );
        assert_nothing_attached(&ns, bad);
    }

    // A port already in use, inside the namespace.
    let (r, _held) = ns.run_in(|| {
        let held = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = held.local_addr().unwrap().port();
        let addr = format!("127.0.0.1:{port}");
        (daemon_in_thread(&addr), held)
    });
    assert_eq!(r.code, Some(1), "port in use: {}", r.stderr);
    assert!(r.stderr.contains("cannot listen on"), "{}", r.stderr);
    assert!(
        !r.stderr.contains("attached"),
        "attached before failing: {}",
        r.stderr
    );
    assert_nothing_attached(&ns, "port in use");

    let r = daemon(
        &ns,
        &[
            "--interface",
            "nosuch0",
            "--web.listen-address",
            "127.0.0.1:10291",
        ],
    );
    assert_eq!(r.code, Some(1), "missing interface: {}", r.stderr);
    assert!(
        r.stderr.contains("interface nosuch0 does not exist"),
        "{}",
        r.stderr
    );
    assert_nothing_attached(&ns, "missing interface");

    let r = daemon(&ns, &["--metrics.local-port", "70000"]);
    assert_eq!(r.code, Some(2), "port out of range: {}", r.stderr);

    let r = daemon(
        &ns,
        &[
            "--interface",
            "lo",
            "--kernel.btf-path",
            "/nonexistent/vmlinux",
        ],
    );
    assert_eq!(r.code, Some(1), "missing BTF file: {}", r.stderr);
    assert!(
        r.stderr.contains("--kernel.btf-path /nonexistent/vmlinux")
            && r.stderr.contains("cannot read kernel BTF"),
        "{}",
        r.stderr
    );
    assert_nothing_attached(&ns, "missing BTF file");

    // Without the capabilities (setpriv keeps only CAP_NET_ADMIN): each missing one is
    // named, and how to grant them is said.
    let r = wrapped(
        &ns,
        &[
            "setpriv",
            "--bounding-set=-all,+net_admin",
            "--inh-caps=-all",
            "--",
        ],
        &["--interface", "lo"],
    );
    assert_eq!(r.code, Some(1), "no capabilities: {}", r.stderr);
    assert!(
        r.stderr.contains("missing CAP_BPF, CAP_PERFMON:")
            && r.stderr.contains("AmbientCapabilities="),
        "{}",
        r.stderr
    );
    assert!(!r.stderr.contains("CAP_NET_ADMIN,"), "{}", r.stderr);
    assert_nothing_attached(&ns, "no capabilities");

    // An unsupported kernel: the UNAME26 personality makes uname(2) report 2.6.x.
    let r = wrapped(
        &ns,
        &["setarch", "--uname-2.6", "--"],
        &["--interface", "lo"],
    );
    assert_eq!(r.code, Some(1), "old kernel: {}", r.stderr);
    assert!(
        r.stderr.contains("kernel 2.6.") && r.stderr.contains("needs Linux 5.8 or newer"),
        "{}",
        r.stderr
    );
    assert_nothing_attached(&ns, "old kernel");
}

/// The daemon started through `wrapper` (setpriv, setarch: programs that exec the rest).
fn wrapped(ns: &Netns, wrapper: &[&str], args: &[&str]) -> Run {
    let out = ns
        .command(wrapper[0])
        .args(&wrapper[1..])
        .arg(daemon_bin())
        .args(args)
        .output()
        .expect("running the daemon");
    Run {
        code: out.status.code(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

/// The daemon run from a thread already inside the namespace (so it shares the port).
fn daemon_in_thread(addr: &str) -> Run {
    let out = Command::new(daemon_bin())
        .args(["--web.listen-address", addr, "--interface", "lo"])
        .output()
        .expect("running the daemon");
    Run {
        code: out.status.code(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

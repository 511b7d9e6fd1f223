//! --log.kernel-level: with `debug` the daemon's log carries the kernel's reason for
//! each truncated or malformed frame (interface index, frame length, where the linear
//! data ends), under the target keepalive_ebpf; at `warn` the logging programs run but
//! drop those debug records; with the default (off) no kernel line appears and the
//! programs without any logging are the ones attached (keepalive-ebpf/src/wire.rs says
//! why they are separate programs). Either way the kernel error counters move by
//! exactly the frames sent: they stay the source of truth, the log is extra detail.

use std::thread;
use std::time::{Duration, Instant};

use keepalive_tests::names::{KERNEL_ERRORS, TC_PROGRAMS_ATTACHED};
use keepalive_tests::replay::PacketSocket;
use keepalive_tests::{Daemon, Netns, Samples, Setup, require_root};

/// Frames of each kind sent per run.
const FRAMES: usize = 3;
/// Ethernet + IPv4 ethertype + 10 of the 20 bytes of an IPv4 header.
const TRUNCATED_LEN: usize = 24;
/// Ethernet + a full 20-byte "IPv4" header whose version nibble says 6.
const MALFORMED_LEN: usize = 34;
/// How long the counters (and, at debug, the log lines) may take to show the frames.
const DEADLINE: Duration = Duration::from_secs(5);
const POLL: Duration = Duration::from_millis(50);
/// After the counters moved, time for a (wrongly) forwarded log line to show up.
const SETTLE: Duration = Duration::from_millis(500);

fn frame(len: usize, first_l3_byte: u8) -> Vec<u8> {
    let mut f = vec![0u8; len];
    f[..6].copy_from_slice(&[0xff; 6]);
    f[6..12].copy_from_slice(&[0x02, 0, 0, 0, 0, 0x01]);
    f[12..14].copy_from_slice(&0x0800u16.to_be_bytes());
    f[14] = first_l3_byte;
    f
}

fn ifindex(ns: &Netns, ifname: &str) -> u32 {
    let out = ns.cmd(&["ip", "-o", "link", "show", "dev", ifname]);
    out.split(':')
        .next()
        .and_then(|n| n.trim().parse().ok())
        .unwrap_or_else(|| panic!("no ifindex in {out:?}"))
}

fn errors(s: &Samples) -> (f64, f64) {
    (
        s.value(KERNEL_ERRORS, &[("kind", "truncated_frame")]),
        s.value(KERNEL_ERRORS, &[("kind", "malformed_frame")]),
    )
}

/// Sends [`FRAMES`] truncated and [`FRAMES`] malformed frames from b to the daemon's
/// interface; returns once the counters moved by exactly that much and each of `lines`
/// is in the daemon's log once per frame.
fn send_and_count(setup: &Setup, daemon: &Daemon, lines: &[String]) {
    let before = errors(&daemon.scrape());
    let remote = PacketSocket::open(&setup.b, &setup.veth.b_if);
    for _ in 0..FRAMES {
        remote
            .send(&frame(TRUNCATED_LEN, 0x45))
            .expect("send truncated");
        remote
            .send(&frame(MALFORMED_LEN, 0x65))
            .expect("send malformed");
    }
    let want = (before.0 + FRAMES as f64, before.1 + FRAMES as f64);
    let deadline = Instant::now() + DEADLINE;
    loop {
        let now = errors(&daemon.scrape());
        let log = daemon.stderr();
        if now == want
            && lines
                .iter()
                .all(|l| log.matches(l.as_str()).count() == FRAMES)
        {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "after {DEADLINE:?}: kernel errors (truncated, malformed) {now:?}, want {want:?}; \
             expected lines {lines:#?}; daemon stderr:\n{log}"
        );
        thread::sleep(POLL);
    }
}

/// The tc programs the daemon says it attached, sorted.
fn attached_programs(daemon: &Daemon) -> Vec<String> {
    let samples = daemon.scrape();
    let mut names: Vec<String> = samples
        .matching(TC_PROGRAMS_ATTACHED, &[])
        .filter(|s| s.value == 1.0)
        .map(|s| s.labels["program"].clone())
        .collect();
    names.sort();
    names
}

/// Lines the kernel programs forwarded to the daemon's log.
fn kernel_lines(daemon: &Daemon) -> usize {
    daemon
        .stderr()
        .lines()
        .filter(|l| l.contains("keepalive_ebpf]"))
        .count()
}

fn setup(tag: &str) -> (Setup, u32) {
    let setup = Setup::new(tag);
    for (ns, ifname) in [(&setup.a, &setup.veth.a_if), (&setup.b, &setup.veth.b_if)] {
        // No router solicitations or other traffic of the kernel's own on the link.
        ns.cmd(&[
            "sysctl",
            "-qw",
            &format!("net.ipv6.conf.{ifname}.disable_ipv6=1"),
        ]);
    }
    let index = ifindex(&setup.a, &setup.veth.a_if);
    (setup, index)
}

#[test]
fn kernel_log_debug_explains_bad_frames() {
    require_root();
    let (setup, index) = setup("klogdbg");
    let daemon = Daemon::spawn_with(
        &setup.a,
        &[&setup.veth.a_if],
        &["--log.kernel-level", "debug"],
    );
    let lines = [
        format!(
            "DEBUG keepalive_ebpf] truncated frame on ifindex {index} (ingress): frame length \
             {TRUNCATED_LEN}, linear data ends at offset {TRUNCATED_LEN}"
        ),
        format!(
            "DEBUG keepalive_ebpf] malformed frame on ifindex {index} (ingress): frame length \
             {MALFORMED_LEN}, linear data ends at offset {MALFORMED_LEN}"
        ),
    ];
    assert_eq!(
        attached_programs(&daemon),
        ["ka_tc_egr_log", "ka_tc_ing_log"]
    );
    send_and_count(&setup, &daemon, &lines);
    thread::sleep(SETTLE);
    // Nothing but those lines: one per frame sent.
    assert_eq!(
        kernel_lines(&daemon),
        2 * FRAMES,
        "daemon stderr:\n{}",
        daemon.stderr()
    );
    daemon.terminate();
}

#[test]
fn kernel_log_warn_leaves_out_frame_details() {
    require_root();
    let (setup, _) = setup("klogwarn");
    let daemon = Daemon::spawn_with(
        &setup.a,
        &[&setup.veth.a_if],
        &["--log.kernel-level", "warn"],
    );
    assert_eq!(
        attached_programs(&daemon),
        ["ka_tc_egr_log", "ka_tc_ing_log"]
    );
    send_and_count(&setup, &daemon, &[]);
    thread::sleep(SETTLE);
    assert_eq!(
        kernel_lines(&daemon),
        0,
        "daemon stderr:\n{}",
        daemon.stderr()
    );
    daemon.terminate();
}

#[test]
fn kernel_log_off_by_default_counters_still_move() {
    require_root();
    let (setup, _) = setup("klogoff");
    let daemon = Daemon::spawn(&setup.a, &[&setup.veth.a_if]);
    assert_eq!(
        attached_programs(&daemon),
        ["ka_tc_egress", "ka_tc_ingress"]
    );
    send_and_count(&setup, &daemon, &[]);
    thread::sleep(SETTLE);
    let log = daemon.stderr();
    assert!(
        !log.contains("keepalive_ebpf"),
        "kernel log line with --log.kernel-level off:\n{log}"
    );
    daemon.terminate();
}

//! What an operator reads at start-up: at the default level one summary line per socket
//! hook naming its mechanism (the refusals in short; their whole errors only at debug
//! level; the audit's idle-death hook too, or why it was not tried) and one line for the
//! tc attachment. A second daemon on the same interface
//! (TCX mode) warns, naming the interface and the first daemon's programs and ids; both
//! then exit 0 on SIGTERM and nothing stays attached.

use std::ffi::CString;
use std::fs::File;
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

use aya::programs::{SchedClassifier, TcAttachType};
use keepalive_tests::daemon::daemon_bin;
use keepalive_tests::process::{TempDir, kill_and_reap, read_lossy, send_signal, wait_timeout};
use keepalive_tests::scenarios::Setup;
use keepalive_tests::{Daemon, Netns, Samples, require_root};

/// The second daemon's port (the first uses the harness's).
const SECOND_PORT: u16 = 19_292;
const READY_WAIT: Duration = Duration::from_secs(30);
const TERM_WAIT: Duration = Duration::from_secs(10);

/// (name, id) of the programs attached with TCX to `ifname` in `ns`, ingress then
/// egress (aya's BPF_PROG_QUERY; bpftool 7.1 does not list TCX attachments).
fn tcx_programs(ns: &Netns, ifname: &str) -> Vec<(String, TcAttachType, u32)> {
    let name = CString::new(ifname).expect("interface name");
    ns.run_in(move || {
        let mut found = Vec::new();
        for at in [TcAttachType::Ingress, TcAttachType::Egress] {
            let (_, progs) = SchedClassifier::query_tcx(name.as_c_str(), at)
                .unwrap_or_else(|e| panic!("BPF_PROG_QUERY {ifname} {at:?}: {e}"));
            found.extend(
                progs
                    .iter()
                    .map(|p| (p.name_as_str().unwrap_or("?").to_owned(), at, p.id())),
            );
        }
        found
    })
}

/// The messages of the daemon's INFO lines (`[time INFO  target] message`).
fn info_messages(stderr: &str) -> Vec<&str> {
    stderr
        .lines()
        .filter(|l| l.contains(" INFO "))
        .filter_map(|l| l.split_once("] ").map(|(_, m)| m))
        .collect()
}

/// The second daemon, started by hand: the harness's Daemon listens on a fixed port.
fn spawn_second(ns: &Netns, iface: &str, dir: &TempDir) -> Child {
    let stderr = File::create(dir.join("second.stderr")).expect("stderr file");
    ns.command(daemon_bin())
        .args(["--interface", iface, "--tc.attach-mode", "tcx"])
        .args(["--web.listen-address", &format!("127.0.0.1:{SECOND_PORT}")])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(stderr)
        .spawn()
        .expect("spawning the second daemon")
}

/// Waits (bounded) until the second daemon logs that it is ready.
fn wait_second_ready(child: &mut Child, dir: &TempDir) -> String {
    let deadline = Instant::now() + READY_WAIT;
    loop {
        let stderr = read_lossy(&dir.join("second.stderr"));
        if stderr.contains("ready: watching") {
            return stderr;
        }
        if let Some(status) = child.try_wait().expect("try_wait") {
            panic!("second daemon exited ({status}) before ready:\n{stderr}");
        }
        if Instant::now() >= deadline {
            kill_and_reap(child);
            panic!("second daemon not ready within {READY_WAIT:?}:\n{stderr}");
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Exactly one INFO line per hook, naming the mechanism in use (from
/// keepalive_daemon_hook_info), and no refusal in full at this level; the ready line
/// names the three.
fn assert_hook_summaries(stderr: &str, scrape: &Samples) {
    let hooks = Samples::hooks_in_use(scrape);
    let names: Vec<&str> = hooks.keys().map(String::as_str).collect();
    assert_eq!(
        names,
        ["idle_deaths", "timeouts", "timer_probes"],
        "hooks in use: {hooks:?}"
    );
    let ready = format!(
        "hooks: timer_probes={}, timeouts={}, idle_deaths={}",
        hooks["timer_probes"], hooks["timeouts"], hooks["idle_deaths"]
    );
    assert!(
        stderr
            .lines()
            .any(|l| l.contains("ready: watching") && l.ends_with(&ready)),
        "no ready line ending `{ready}`:\n{stderr}"
    );
    let info = info_messages(stderr);
    for (hook, mechanism) in &hooks {
        let lines: Vec<&&str> = info
            .iter()
            .filter(|m| m.starts_with(&format!("{hook}: ")))
            .collect();
        assert_eq!(
            lines.len(),
            1,
            "summary lines of {hook}: {lines:?}\n{stderr}"
        );
        let line = lines[0];
        assert!(
            line.starts_with(&format!("{hook}: {mechanism}")),
            "{hook} uses {mechanism}: {line}"
        );
        if mechanism != "fentry" {
            assert!(
                line.contains("(fentry ") && line.ends_with("; fine)"),
                "{hook}: why not fentry, in short: {line}"
            );
        }
    }
    assert!(
        !info.iter().any(|m| m.contains(" not used: ")),
        "per-attempt details at info level:\n{stderr}"
    );
}

/// keepalive_daemon_hook_info{hook="idle_deaths"}: one series per mechanism it may use,
/// all 0.
fn assert_idle_deaths_none(scrape: &Samples) {
    let series: Vec<(String, f64)> = scrape
        .matching("keepalive_daemon_hook_info", &[("hook", "idle_deaths")])
        .map(|s| (s.labels["mechanism"].clone(), s.value))
        .collect();
    assert_eq!(
        series,
        [
            ("fentry".to_owned(), 0.0),
            ("kprobe".to_owned(), 0.0),
            ("tracepoint".to_owned(), 0.0)
        ],
        "idle_deaths series"
    );
}

/// --hooks.disable applies to the idle-death hook, chosen after the others: with every
/// mechanism of it disabled, its line is a warning naming each, and the audit says that
/// idle deaths are not tracked.
#[test]
fn hooks_disable_applies_to_the_idle_death_hook() {
    require_root();
    let setup = Setup::new("logsnohook");
    let iface = setup.veth.a_if.clone();
    let extra = [
        "--hooks.disable",
        "fentry",
        "--hooks.disable",
        "kprobe",
        "--hooks.disable",
        "tracepoint",
    ];
    let daemon = Daemon::spawn_with(&setup.a, &[&iface], &extra);
    let stderr = daemon.stderr();
    let warning = "idle_deaths: none (fentry disabled by --hooks.disable; kprobe disabled by \
                   --hooks.disable; tracepoint disabled by --hooks.disable): its counters stay \
                   at zero";
    let lines: Vec<&str> = stderr
        .lines()
        .filter(|l| l.contains("] idle_deaths: "))
        .collect();
    assert_eq!(lines.len(), 1, "{stderr}");
    assert!(
        lines[0].contains(" WARN ") && lines[0].ends_with(warning),
        "{stderr}"
    );
    assert!(
        stderr
            .lines()
            .any(|l| l.contains("] audit: inventory every ")
                && l.ends_with("; idle deaths not tracked (no mechanism: see idle_deaths)")),
        "{stderr}"
    );
    assert_idle_deaths_none(&daemon.scrape());
    assert!(
        stderr
            .lines()
            .any(|l| l.contains("ready: watching") && l.ends_with(", idle_deaths=none")),
        "{stderr}"
    );
}

/// With --audit.disable the idle-death hook is not tried: its line says why, its
/// keepalive_daemon_hook_info series are all 0, and the other two hooks are as usual.
#[test]
fn without_the_audit_the_idle_death_hook_says_none() {
    require_root();
    let setup = Setup::new("logsnoaudit");
    let iface = setup.veth.a_if.clone();
    let daemon = Daemon::spawn_with(&setup.a, &[&iface], &["--audit.disable"]);
    let stderr = daemon.stderr();
    let scrape = daemon.scrape();
    let info = info_messages(&stderr);
    let lines: Vec<&&str> = info
        .iter()
        .filter(|m| m.starts_with("idle_deaths: "))
        .collect();
    assert_eq!(
        lines,
        [&"idle_deaths: none (audit off: --audit.disable)"],
        "{stderr}"
    );
    assert_idle_deaths_none(&scrape);
    let hooks = Samples::hooks_in_use(&scrape);
    let names: Vec<&str> = hooks.keys().map(String::as_str).collect();
    assert_eq!(names, ["timeouts", "timer_probes"], "{hooks:?}");
    assert!(
        stderr.lines().any(|l| l.contains("ready: watching")
            && l.ends_with(&format!(
                "hooks: timer_probes={}, timeouts={}, idle_deaths=none",
                hooks["timer_probes"], hooks["timeouts"]
            ))),
        "{stderr}"
    );
}

#[test]
fn one_line_per_hook_and_a_second_daemon_is_warned_about() {
    require_root();
    let setup = Setup::new("logs");
    let iface = setup.veth.a_if.clone();
    let first = Daemon::spawn_with(&setup.a, &[&iface], &["--tc.attach-mode", "tcx"]);
    let first_err = first.stderr();
    assert_hook_summaries(&first_err, &first.scrape());
    let info = info_messages(&first_err);
    let tc_line = format!("tc: 1 interface(s) via tcx: {iface}");
    assert_eq!(
        info.iter().filter(|m| **m == tc_line).count(),
        1,
        "no `{tc_line}`:\n{first_err}"
    );
    assert!(
        !info.iter().any(|m| m.starts_with("attached ka_tc_")),
        "per-program attach lines at info level:\n{first_err}"
    );

    let theirs = tcx_programs(&setup.a, &iface);
    let names: Vec<&str> = theirs.iter().map(|(n, _, _)| n.as_str()).collect();
    assert_eq!(names, ["ka_tc_ingress", "ka_tc_egress"], "{first_err}");
    let dir = TempDir::new("second");
    let mut second = spawn_second(&setup.a, &iface, &dir);
    let second_err = wait_second_ready(&mut second, &dir);
    let warning = format!(
        "{iface}: ka_tc_ingress (Ingress, program id {}), ka_tc_egress (Egress, program id {}) \
         already attached by another process: is a second keepalive-daemon running? Run one \
         daemon per host",
        theirs[0].2, theirs[1].2
    );
    assert!(
        second_err
            .lines()
            .any(|l| l.contains(" WARN ") && l.contains(&warning)),
        "second daemon did not warn `{warning}`:\n{second_err}"
    );
    assert!(
        !first
            .stderr()
            .contains("already attached by another process"),
        "the first daemon warned:\n{}",
        first.stderr()
    );
    let both = tcx_programs(&setup.a, &iface);
    assert_eq!(both.len(), 4, "both daemons' programs: {both:?}");

    send_signal(&second, libc::SIGTERM);
    let status = wait_timeout(&mut second, TERM_WAIT);
    if status.is_none() {
        kill_and_reap(&mut second);
    }
    let second_err = read_lossy(&dir.join("second.stderr"));
    assert_eq!(
        status.and_then(|s| s.code()),
        Some(0),
        "second daemon after SIGTERM:\n{second_err}"
    );
    assert_eq!(
        tcx_programs(&setup.a, &iface),
        theirs,
        "the first daemon's programs after the second left"
    );
    first.terminate();
    let left = tcx_programs(&setup.a, &iface);
    assert!(left.is_empty(), "left attached on {iface}: {left:?}");
}

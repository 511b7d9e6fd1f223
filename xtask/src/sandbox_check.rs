//! The part of the systemd sandbox that can break the daemon, emulated without systemd
//! (root only; part of `cargo xtask deploy-check`). The daemon runs in a scratch network
//! namespace watching lo:
//!
//! - with only the unit's CapabilityBoundingSet (setpriv), under strace: it must come up,
//!   attach each socket hook with the same mechanism as with every capability, answer
//!   /healthz, and exit 0 on SIGTERM;
//! - every system call it made must pass the unit's SystemCallFilter= lines (expanded
//!   with `systemd-analyze syscall-filter`), and every socket family
//!   RestrictAddressFamilies=.
//!
//! Mount namespacing (ProtectSystem= and friends) needs systemd itself and is not
//! emulated.

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::net::{Ipv4Addr, SocketAddr};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail, ensure};
use keepalive_tests::daemon::reports_up;
use keepalive_tests::metrics::http_get;
use keepalive_tests::process::{TempDir, kill_and_reap, send_signal, wait_timeout};
use keepalive_tests::{Netns, Samples};

use crate::tool::{have, run_tool};

const PORT: u16 = 10291;

pub fn run(unit_text: &str, bin: &Path) -> anyhow::Result<()> {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        println!("sandbox emulation skipped: needs root");
        return Ok(());
    }
    for tool in ["setpriv", "strace"] {
        ensure!(
            have(tool),
            "{tool} is not installed (apt-get install -y {tool})"
        );
    }
    let caps = directive_words(unit_text, "CapabilityBoundingSet");
    let bounding = std::iter::once("-all".to_owned())
        .chain(
            caps.iter()
                .map(|c| format!("+{}", c.trim_start_matches("CAP_").to_lowercase())),
        )
        .collect::<Vec<_>>()
        .join(",");

    let ns = Netns::new("sandbox", "x");
    let tmp = TempDir::new("sandbox");
    let full = Samples::hooks_in_use(&run_daemon(&ns, bin, None, &tmp)?);
    let trace = tmp.join("strace.out");
    let confined = run_daemon(&ns, bin, Some((&bounding, &trace)), &tmp)?;
    let confined_hooks = Samples::hooks_in_use(&confined);
    println!("socket hooks with every capability: {full:?}; with {bounding}: {confined_hooks:?}");
    ensure!(
        confined_hooks == full,
        "the unit's capabilities attach {confined_hooks:?}, every capability {full:?}"
    );
    let inventory = confined.get(keepalive_tests::names::AUDIT_INVENTORY_ENABLED, &[]);
    ensure!(
        inventory == Some(1.0),
        "the audit's inventory under the unit's capabilities: {inventory:?} (want 1)"
    );

    let trace = fs::read_to_string(&trace).context("reading the strace output")?;
    let used = syscalls(&trace);
    let allowed = allowed_syscalls(unit_text)?;
    let denied: Vec<&String> = used.difference(&allowed).collect();
    println!(
        "{} distinct system calls made; all pass SystemCallFilter=",
        used.len()
    );
    ensure!(
        denied.is_empty(),
        "system calls outside the unit's SystemCallFilter=: {denied:?}"
    );
    let families: BTreeSet<String> = directive_words(unit_text, "RestrictAddressFamilies")
        .into_iter()
        .collect();
    let used_families = socket_families(&trace);
    let bad: Vec<&String> = used_families.difference(&families).collect();
    ensure!(
        bad.is_empty(),
        "socket families outside RestrictAddressFamilies=: {bad:?}"
    );
    println!("socket families {used_families:?} pass RestrictAddressFamilies=");
    Ok(())
}

/// The words of every `Key=` line of the unit.
fn directive_words(unit: &str, key: &str) -> Vec<String> {
    let prefix = format!("{key}=");
    unit.lines()
        .filter_map(|l| l.trim().strip_prefix(&prefix))
        .flat_map(|v| v.split_whitespace().map(str::to_owned))
        .collect()
}

/// Runs the daemon on lo in `ns` until it is up, scrapes it, checks /healthz, stops it
/// with SIGTERM (exit 0 required). `confine`: a setpriv bounding set and a strace
/// output file.
fn run_daemon(
    ns: &Netns,
    bin: &Path,
    confine: Option<(&str, &Path)>,
    tmp: &TempDir,
) -> anyhow::Result<Samples> {
    let addr = SocketAddr::new(Ipv4Addr::LOCALHOST.into(), PORT);
    let log = tmp.join(if confine.is_some() {
        "confined.log"
    } else {
        "full.log"
    });
    let mut cmd = match confine {
        Some((bounding, trace)) => {
            let mut c = ns.command("setpriv");
            c.arg(format!("--bounding-set={bounding}"))
                .args(["--no-new-privs", "--", "strace", "-f", "-qq", "-o"])
                .arg(trace)
                .arg(bin);
            c
        }
        None => ns.command(bin),
    };
    cmd.args([
        "--interface",
        "lo",
        "--web.listen-address",
        &addr.to_string(),
    ])
    .stdin(Stdio::null())
    .stdout(Stdio::null())
    .stderr(fs::File::create(&log)?);
    let mut child = cmd.spawn().context("starting the daemon")?;
    let result = scrape_and_stop(ns, addr, &mut child, confine.is_some());
    kill_and_reap(&mut child);
    result.with_context(|| {
        format!(
            "daemon ({}); its log:\n{}",
            if confine.is_some() {
                "confined"
            } else {
                "every capability"
            },
            fs::read_to_string(&log).unwrap_or_default()
        )
    })
}

fn scrape_and_stop(
    ns: &Netns,
    addr: SocketAddr,
    child: &mut Child,
    traced: bool,
) -> anyhow::Result<Samples> {
    let deadline = Instant::now() + Duration::from_secs(30);
    let body = loop {
        if let Some(status) = child.try_wait()? {
            bail!("exited ({status}) before it was up");
        }
        match ns.run_in(|| http_get(addr, "/metrics")) {
            Ok(r) if r.status == 200 && reports_up(&r.body) => break r.body,
            _ if Instant::now() > deadline => bail!("not up within 30 s"),
            _ => thread::sleep(Duration::from_millis(200)),
        }
    };
    let health = ns.run_in(|| http_get(addr, "/healthz"))?;
    ensure!(
        health.status == 200,
        "/healthz answered {}: {}",
        health.status,
        health.body
    );
    // Under strace the daemon is strace's child: signal it, not strace.
    let pid: libc::pid_t = if traced {
        let children = fs::read_to_string(format!("/proc/{}/task/{0}/children", child.id()))?;
        children
            .split_whitespace()
            .next()
            .context("strace has no child")?
            .parse()?
    } else {
        0
    };
    if traced {
        // SAFETY: kill(2) on strace's child, the daemon, which is running (it answered
        // above) and cannot be reaped before strace notices its exit.
        unsafe { libc::kill(pid, libc::SIGTERM) };
    } else {
        send_signal(child, libc::SIGTERM);
    }
    let status =
        wait_timeout(child, Duration::from_secs(15)).context("still running 15 s after SIGTERM")?;
    ensure!(status.success(), "exited with {status} after SIGTERM");
    Samples::parse(&body)
}

/// System call names in `strace -f -qq` output (`PID name(args) = ret`).
fn syscalls(trace: &str) -> BTreeSet<String> {
    trace
        .lines()
        .filter_map(|l| {
            let call = l.split_whitespace().nth(1)?;
            let name = call.split('(').next()?;
            (call.contains('(')
                && name
                    .chars()
                    .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_'))
            .then(|| name.to_owned())
        })
        .collect()
}

/// Address families of socket(2) calls (`socket(AF_INET, ...`).
fn socket_families(trace: &str) -> BTreeSet<String> {
    trace
        .lines()
        .filter_map(|l| {
            let args = l.split_once(" socket(")?.1;
            Some(args.split(',').next()?.trim().to_owned())
        })
        .collect()
}

/// The system calls the unit's SystemCallFilter= lines allow: the first line is an allow
/// list; later lines add to it, or with `~` take away from it.
fn allowed_syscalls(unit: &str) -> anyhow::Result<BTreeSet<String>> {
    let mut cache = BTreeMap::new();
    let mut allowed = BTreeSet::new();
    for (i, line) in unit
        .lines()
        .filter_map(|l| l.trim().strip_prefix("SystemCallFilter="))
        .enumerate()
    {
        let (deny, list) = match line.strip_prefix('~') {
            Some(rest) => (true, rest),
            None => (false, line),
        };
        ensure!(
            i > 0 || !deny,
            "the first SystemCallFilter= is a deny list; not handled"
        );
        for item in list.split_whitespace() {
            let calls = expand(item, &mut cache)?;
            if deny {
                allowed.retain(|c| !calls.contains(c));
            } else {
                allowed.extend(calls);
            }
        }
    }
    ensure!(!allowed.is_empty(), "the unit has no SystemCallFilter=");
    Ok(allowed)
}

/// A system call, or a `@group` expanded recursively by `systemd-analyze syscall-filter`.
fn expand(
    item: &str,
    cache: &mut BTreeMap<String, BTreeSet<String>>,
) -> anyhow::Result<BTreeSet<String>> {
    if !item.starts_with('@') {
        return Ok(BTreeSet::from([item.to_owned()]));
    }
    if let Some(calls) = cache.get(item) {
        return Ok(calls.clone());
    }
    let out =
        run_tool(Command::new("systemd-analyze").args(["syscall-filter", "--no-pager", item]))?;
    let mut calls = BTreeSet::new();
    for line in out.lines().skip(1).map(str::trim) {
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        calls.extend(expand(line, cache)?);
    }
    cache.insert(item.to_owned(), calls.clone());
    Ok(calls)
}

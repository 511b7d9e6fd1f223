//! The keepalive audit behind a real middlebox (issue #12): namespaces A - M - B, M a
//! Linux router masquerading A's traffic with a 6 s established-conntrack timeout and no
//! loose pickup, forgotten flows dropped silently (first test) or answered with a TCP
//! reset (second). The daemon runs in A with --audit.idle-limit 6s.
//!
//! From A: connections with keepalive off, with a first probe after M's timeout
//! ("above", 40 s) and before it ("below", 2 s), all with TCP_USER_TIMEOUT 3 s. The
//! inventory must count them exactly; after 15 s idle every application writes: the off
//! and above ones fail (ETIMEDOUT when M drops, ECONNRESET when M resets), the below ones
//! get their echo. The daemon's idle-failure counters must equal what the applications
//! saw, by cause and keepalive state, each failure in the histogram bucket of its idle
//! age, the kept-alive connections never counted.
//!
//! Oracles independent of the daemon (tests/src/idle_scenario.rs): what each
//! application saw, M's conntrack table (all flows when opened, only the kept-alive ones
//! before the writes), M's rule counters and A's nstat; `ss` in A for the inventory.
//!
//! The test scrapes over one kept-alive HTTP/1.1 connection opened before anything is
//! counted: its two sockets (the test's and the daemon's, keepalive off) are then
//! part of every inventory, exactly [`SCRAPE_SOCKETS`], instead of appearing in an
//! inventory only when a run happens to overlap a scrape.

#[path = "../src/web_client.rs"]
#[allow(dead_code)] // shared with web_server.rs, which uses all of it
mod web_client;

use std::collections::{BTreeMap, BTreeSet};
use std::net::{Ipv4Addr, SocketAddr};
use std::thread;
use std::time::{Duration, Instant};

use keepalive_common::audit::FAILURE_IDLE_BUCKETS_SECONDS;
use keepalive_tests::idle_apps::{Outcome, Seen};
use keepalive_tests::idle_scenario::{CT_TIMEOUT_SECS, N_ABOVE, N_BELOW, N_OFF, Played, play};
use keepalive_tests::middlebox::{A_ADDR, A_IF, Forgotten, Middlebox};
use keepalive_tests::names::{
    AUDIT_INVENTORY_ENABLED, AUDIT_RUNS, CONNECTIONS, CONNECTIONS_AT_RISK,
    IDLE_FAILURE_IDLE_SECONDS, IDLE_FAILURES, IDLE_SETTING_CONNECTIONS,
};
use keepalive_tests::timing::{DAEMON_PORT, POLL_INTERVAL};
use keepalive_tests::{Daemon, Netns, Samples, require_root};
use serde_json::{Value, json};
use web_client::{Client, connect_in};

/// --audit.idle-limit: M's timeout, as the label shows it.
const IDLE_LIMIT: &str = "6s";
/// The scrape connection's two sockets in A, both with keepalive off.
const SCRAPE_SOCKETS: u64 = 2;
/// Bound on two inventory runs (--audit.interval 1s) after the connections opened.
const INVENTORY_TIMEOUT: Duration = Duration::from_secs(10);
/// Bound on the failures showing in the daemon's counters after the applications saw them.
const COUNT_TIMEOUT: Duration = Duration::from_secs(5);
/// How far the daemon's idle age of one failure may be from the application's: the
/// kernel stamps the last segment and the failure in jiffies, the application sees both
/// a few milliseconds later.
const IDLE_AGE_SLACK_SECS: f64 = 0.25;

#[test]
fn idle_middlebox_silent_drop_counts_retransmit_timeouts() {
    run(Forgotten::Drop, "mbxd");
}

#[test]
fn idle_middlebox_reset_counts_resets() {
    run(Forgotten::Reset, "mbxr");
}

fn run(variant: Forgotten, tag: &str) {
    require_root();
    assert_eq!(IDLE_LIMIT, format!("{CT_TIMEOUT_SECS}s"));
    let t0 = Instant::now();
    let mb = Middlebox::new(tag, variant, CT_TIMEOUT_SECS);
    let flags = [
        "--audit.interval",
        "1s",
        "--audit.idle-limit",
        IDLE_LIMIT,
        "--audit.min-idle",
        "3s",
    ];
    let daemon = Daemon::spawn_with(&mb.a, &[A_IF], &flags);
    let mut scraper = Scraper::connect(&mb.a);
    let before = scraper.scrape(&daemon);
    assert_eq!(
        before.value(AUDIT_INVENTORY_ENABLED, &[]),
        1.0,
        "the inventory is off; daemon stderr:\n{}",
        daemon.stderr()
    );
    let played = play(&mb, |_| check_inventory(&mut scraper, &daemon, &mb.a));
    played.assert_consistent(variant);
    let after = wait_for_failures(&mut scraper, &daemon, &before);
    check_failures(&played, variant, &before, &after, &daemon);
    check_endings(&mut scraper, &daemon, &played, variant);
    eprintln!(
        "idle_middlebox {variant:?}: seen {:?}; M forgot {} packets; nstat aborts on \
         timeout {} resets {} retransmissions {}; {:?} in all",
        played
            .seen
            .iter()
            .map(|s| (s.kind.keepalive_label(), s.outcome.clone(), s.idle))
            .collect::<Vec<_>>(),
        played.invalid_packets,
        played.aborts_on_timeout,
        played.estab_resets,
        played.retrans_segs,
        t0.elapsed()
    );
    drop(scraper);
    daemon.terminate();
}

/// GET /metrics over one kept-alive HTTP/1.1 connection from A.
struct Scraper(Client);

impl Scraper {
    fn connect(a: &Netns) -> Scraper {
        let addr = SocketAddr::new(Ipv4Addr::LOCALHOST.into(), DAEMON_PORT);
        Scraper(Client::new(connect_in(a, addr)).expect("HTTP/1.1 connection to the daemon"))
    }

    fn get(&mut self, daemon: &Daemon, path: &str) -> String {
        let answer = self
            .0
            .send("GET", path, None)
            .unwrap_or_else(|e| panic!("GET {path}: {e:#}\ndaemon stderr:\n{}", daemon.stderr()));
        assert_eq!(answer.status, 200, "GET {path}: {}", answer.body);
        answer.body
    }

    fn scrape(&mut self, daemon: &Daemon) -> Samples {
        let body = self.get(daemon, "/metrics");
        Samples::parse(&body).unwrap_or_else(|e| panic!("unparsable /metrics: {e:#}"))
    }
}

/// Waits (bounded) for two inventory runs after the connections opened, so that one ran
/// entirely after, and checks its counts against the configuration and `ss`.
fn check_inventory(scraper: &mut Scraper, daemon: &Daemon, a: &Netns) {
    let runs0 = scraper.scrape(daemon).value(AUDIT_RUNS, &[]);
    let deadline = Instant::now() + INVENTORY_TIMEOUT;
    let s = loop {
        let s = scraper.scrape(daemon);
        if s.value(AUDIT_RUNS, &[]) >= runs0 + 2.0 {
            break s;
        }
        assert!(
            Instant::now() < deadline,
            "fewer than 2 inventory runs within {INVENTORY_TIMEOUT:?} with --audit.interval \
             1s; daemon stderr:\n{}",
            daemon.stderr()
        );
        thread::sleep(POLL_INTERVAL);
    };
    let (on, off) = ss_keepalive_counts(a);
    let want_on = (N_ABOVE + N_BELOW) as u64;
    let want_off = N_OFF as u64 + SCRAPE_SOCKETS;
    assert_eq!(
        (on, off),
        (want_on, want_off),
        "ss in A (keepalive on, off)"
    );
    let gauge = |name: &str, labels: &[(&str, &str)]| s.value(name, labels) as u64;
    let ctx = || format!("daemon stderr:\n{}", daemon.stderr());
    assert_eq!(
        gauge(CONNECTIONS, &[("keepalive", "on")]),
        want_on,
        "{}",
        ctx()
    );
    assert_eq!(
        gauge(CONNECTIONS, &[("keepalive", "off")]),
        want_off,
        "{}",
        ctx()
    );
    assert_eq!(
        gauge(CONNECTIONS_AT_RISK, &[("idle_limit", IDLE_LIMIT)]),
        want_off + N_ABOVE as u64,
        "at risk for {IDLE_LIMIT}: keepalive off and first probe after 40 s; {}",
        ctx()
    );
    // Cumulative: the 2 s ones from le=30 on, the 40 s ones from le=60 on.
    for (le, want) in [
        ("30", N_BELOW),
        ("60", N_BELOW + N_ABOVE),
        ("7200", N_BELOW + N_ABOVE),
        ("+Inf", N_BELOW + N_ABOVE),
    ] {
        assert_eq!(
            gauge(IDLE_SETTING_CONNECTIONS, &[("idle_le_seconds", le)]),
            want as u64,
            "{IDLE_SETTING_CONNECTIONS}{{idle_le_seconds={le}}}; {}",
            ctx()
        );
    }
}

/// Established TCP sockets of `ns` with and without a keepalive timer, from `ss`; only
/// valid while every connection is idle (a socket with data in flight shows its
/// retransmission timer instead).
fn ss_keepalive_counts(ns: &Netns) -> (u64, u64) {
    let out = ns.cmd(&["ss", "-tnoH", "state", "established"]);
    let on = out
        .lines()
        .filter(|l| l.contains("timer:(keepalive"))
        .count();
    let all = out.lines().filter(|l| !l.trim().is_empty()).count();
    (on as u64, (all - on) as u64)
}

/// The `cause` label of what `variant` makes the applications see.
fn cause(variant: Forgotten) -> (&'static str, &'static str) {
    match variant {
        Forgotten::Drop => ("retransmit_timeout", "reset"),
        Forgotten::Reset => ("reset", "retransmit_timeout"),
    }
}

/// Sum of the series matching `filters` minus the same in `before`; 0 for series that
/// do not exist (a label combination that never happened need not be exported).
fn delta(after: &Samples, before: &Samples, name: &str, filters: &[(&str, &str)]) -> f64 {
    let sum = |s: &Samples| s.matching(name, filters).map(|x| x.value).sum::<f64>();
    sum(after) - sum(before)
}

fn failures(seen: &[Seen]) -> Vec<&Seen> {
    seen.iter()
        .filter(|s| s.outcome != Outcome::Echoed)
        .collect()
}

/// Scrapes until the failure counter reached the number of failures the applications
/// saw (bounded); the exact checks come after.
fn wait_for_failures(scraper: &mut Scraper, daemon: &Daemon, before: &Samples) -> Samples {
    let want = (N_OFF + N_ABOVE) as f64;
    let deadline = Instant::now() + COUNT_TIMEOUT;
    loop {
        let s = scraper.scrape(daemon);
        if delta(&s, before, IDLE_FAILURES, &[]) >= want || Instant::now() >= deadline {
            return s;
        }
        thread::sleep(POLL_INTERVAL);
    }
}

fn check_failures(p: &Played, variant: Forgotten, before: &Samples, after: &Samples, d: &Daemon) {
    let (seen_cause, other_cause) = cause(variant);
    let failed = failures(&p.seen);
    let ctx = || {
        format!(
            "applications saw {:?}\ndaemon stderr:\n{}",
            p.seen,
            d.stderr()
        )
    };
    let by = |cause: &str, ka: &str| {
        delta(
            after,
            before,
            IDLE_FAILURES,
            &[("cause", cause), ("keepalive", ka)],
        )
    };
    let n = |ka: &str| {
        failed
            .iter()
            .filter(|s| s.kind.keepalive_label() == ka)
            .count() as f64
    };
    assert_eq!(
        by(seen_cause, "off"),
        n("off"),
        "{seen_cause} keepalive off; {}",
        ctx()
    );
    assert_eq!(
        by(seen_cause, "on"),
        n("on"),
        "{seen_cause} keepalive on; {}",
        ctx()
    );
    assert_eq!(
        by(other_cause, "off") + by(other_cause, "on"),
        0.0,
        "{other_cause}; {}",
        ctx()
    );
    assert_eq!(
        delta(after, before, IDLE_FAILURES, &[]),
        failed.len() as f64,
        "all idle failures (the kept-alive connections must not count); {}",
        ctx()
    );
    check_histogram(&failed, before, after, &ctx);
}

/// Each failure in the bucket of the idle age its application measured; the ages are
/// well inside their buckets (checked), so jiffy rounding cannot move one.
fn check_histogram(failed: &[&Seen], before: &Samples, after: &Samples, ctx: &dyn Fn() -> String) {
    for s in failed {
        let age = s.idle.as_secs_f64();
        let nearest = FAILURE_IDLE_BUCKETS_SECONDS
            .iter()
            .map(|b| (f64::from(*b) - age).abs())
            .fold(f64::INFINITY, f64::min);
        assert!(
            nearest >= 1.0,
            "premise: idle age {age} s is within 1 s of a bucket bound"
        );
    }
    let bucket = format!("{IDLE_FAILURE_IDLE_SECONDS}_bucket");
    for bound in FAILURE_IDLE_BUCKETS_SECONDS {
        let le = bound.to_string();
        let want = failed
            .iter()
            .filter(|s| s.idle.as_secs_f64() <= f64::from(bound))
            .count();
        assert_eq!(
            delta(after, before, &bucket, &[("le", &le)]),
            want as f64,
            "{bucket}{{le={le}}}; {}",
            ctx()
        );
    }
    let total = failed.len() as f64;
    let count = format!("{IDLE_FAILURE_IDLE_SECONDS}_count");
    assert_eq!(
        delta(after, before, &count, &[]),
        total,
        "{count}; {}",
        ctx()
    );
    let bucket_inf = delta(after, before, &bucket, &[("le", "+Inf")]);
    assert_eq!(bucket_inf, total, "{bucket}{{le=+Inf}}; {}", ctx());
    let sum = delta(
        after,
        before,
        &format!("{IDLE_FAILURE_IDLE_SECONDS}_sum"),
        &[],
    );
    let seen_sum: f64 = failed.iter().map(|s| s.idle.as_secs_f64()).sum();
    assert!(
        (sum - seen_sum).abs() <= IDLE_AGE_SLACK_SECS * total,
        "{IDLE_FAILURE_IDLE_SECONDS}_sum {sum} s, the applications' idle ages add up to \
         {seen_sum} s; {}",
        ctx()
    );
}

/// The connection view keeps each idle death after its socket is gone: exactly the
/// failed connections of A, with the cause, keepalive state and idle age the
/// applications saw.
fn check_endings(scraper: &mut Scraper, daemon: &Daemon, p: &Played, variant: Forgotten) {
    let body = scraper.get(daemon, "/connections?limit=100");
    let listing: Value = serde_json::from_str(&body).expect("GET /connections is JSON");
    let endings = listing["recent_endings"]
        .as_array()
        .unwrap_or_else(|| panic!("no recent_endings in {listing:#}"));
    let a_prefix = format!("{A_ADDR}:");
    let mut got: BTreeMap<u16, &Value> = BTreeMap::new();
    for e in endings {
        let local = e["local"].as_str().expect("local address");
        if let Some(port) = local.strip_prefix(&a_prefix) {
            let port: u16 = port.parse().expect("local port");
            assert!(
                got.insert(port, e).is_none(),
                "two endings of port {port}: {endings:#?}"
            );
        }
    }
    let failed = failures(&p.seen);
    let want_ports: BTreeSet<u16> = failed.iter().map(|s| s.port).collect();
    let got_ports: BTreeSet<u16> = got.keys().copied().collect();
    assert_eq!(
        got_ports, want_ports,
        "endings of A's connections: {endings:#?}"
    );
    let (cause, _) = cause(variant);
    for s in failed {
        let e = got[&s.port];
        assert_eq!(e["kind"], json!("idle_death"), "{e:#}");
        assert_eq!(e["cause"], json!(cause), "{e:#}");
        assert_eq!(
            e["keepalive"],
            json!(s.kind.keepalive_label() == "on"),
            "{e:#}"
        );
        let idle = e["idle_seconds"].as_f64().expect("idle_seconds");
        assert!(
            (idle - s.idle.as_secs_f64()).abs() <= IDLE_AGE_SLACK_SECS,
            "ending idle {idle} s, the application saw {:?}: {e:#}",
            s.idle
        );
    }
}

//! A real server and its real client library, keepalive configured the way
//! their users configure it: Debian's redis-server in B with `tcp-keepalive 3`
//! in its config file (TCP_KEEPIDLE 3 s, TCP_KEEPINTVL 1 s, TCP_KEEPCNT 3 on
//! every client connection), and python3-redis clients in A with
//! `socket_keepalive=True` and the same three values, held idle for a bounded
//! time. Both ends go idle together after the last reply, so they probe in the
//! same rounds. The daemon runs on A and must count every probe and answer.
//!
//! Oracles: TcpExtTCPKeepAlive of each namespace for the probes, the matcher of
//! `keepalive_tests::answers` on a capture of B's end for the answers.

use std::thread;
use std::time::{Duration, Instant};

use keepalive_tests::answers::{Answers, assert_daemon_matches};
use keepalive_tests::expect::{
    assert_answered_once_and_crossed, assert_matcher_probes_equal_nstat,
    assert_no_answer_rate_limited,
};
use keepalive_tests::names::PROBE_ACKS;
use keepalive_tests::scale::{nstat_all, nstat_delta};
use keepalive_tests::scenarios::Side;
use keepalive_tests::third_party::{RedisClients, RedisServer, keepalive_sockets, redis_keepalive};
use keepalive_tests::{Capture, Daemon, Family, Samples, Setup, require_root};

/// `tcp-keepalive` in redis.conf.
const REDIS_KEEPALIVE_SECS: u32 = 3;
/// Client connections per family.
const PER_FAMILY: usize = 10;
/// How long the connections stay idle: the first probes after 3 s; an answer
/// is traffic received, so the next round comes 3 s later: two rounds.
const HOLD: Duration = Duration::from_secs(8);
/// Quiet time after the clients closed, before the final sample.
const SETTLE: Duration = Duration::from_millis(1500);

/// What one idle hold showed: the daemon's samples around it and the oracles.
struct Hold {
    before: Samples,
    after: Samples,
    /// TcpExtTCPKeepAlive deltas of A and B: the probes each kernel sent.
    probes: (u64, u64),
    /// TcpExtTCPACKSkippedSeq deltas of A and B.
    skipped: (u64, u64),
    /// Sockets with a keepalive timer in A (the clients) and B (the server) while idle.
    with_keepalive: (usize, usize),
    /// The matcher on the capture of B's end.
    answers: Answers,
}

#[test]
fn third_party_redis_and_python_clients_counted_exactly() {
    require_root();
    let t0 = Instant::now();
    let setup = Setup::new("3rdp");
    let daemon = Daemon::spawn(&setup.a, &[&setup.veth.a_if]);
    let server = RedisServer::start(&setup.b, REDIS_KEEPALIVE_SECS);
    let mut capture = Capture::start(&setup.b, &setup.veth.b_if);
    let h = hold_idle_clients(&setup, &daemon, &mut capture);
    let ((probes_a, probes_b), m) = (h.probes, &h.answers);
    let ctx = || {
        format!(
            "nstat probes A {probes_a} B {probes_b}; ACKs skipped {:?}; keepalive \
             sockets {:?}\nmatcher: {}\n{}\nredis log:\n{}\ndaemon stderr:\n{}",
            h.skipped,
            h.with_keepalive,
            m.summary(),
            m.describe_unanswered(3),
            server.log(),
            daemon.stderr()
        )
    };

    check_premises(&h, &ctx);
    // The daemon against the oracles.
    assert_daemon_matches(m, h.probes, &h.before, &h.after, &ctx);

    let d = |name: &str, filters: &[(&str, &str)]| h.after.delta(&h.before, name, filters);
    eprintln!(
        "third_party: redis-server (tcp-keepalive {REDIS_KEEPALIVE_SECS}) and {} python3-redis \
         connections held {HOLD:?}; nstat probes A {probes_a} B {probes_b}; matcher: {}; \
         daemon probe ACKs sent {} received {}; {:?} in all",
        2 * PER_FAMILY,
        m.summary(),
        d(PROBE_ACKS, &[("direction", "sent")]),
        d(PROBE_ACKS, &[("direction", "received")]),
        t0.elapsed()
    );
    drop(capture);
    drop(server);
    daemon.terminate();
}

/// The python3-redis clients in A connect, stay idle for [`HOLD`] and close; after
/// [`SETTLE`] the daemon, nstat and the capture are read.
fn hold_idle_clients(setup: &Setup, daemon: &Daemon, capture: &mut Capture<'_>) -> Hold {
    let (a0, b0) = (nstat_all(&setup.a), nstat_all(&setup.b));
    let before = daemon.scrape();
    let held_from = Instant::now();
    let clients =
        RedisClients::connect(&setup.a, PER_FAMILY, redis_keepalive(REDIS_KEEPALIVE_SECS));
    thread::sleep(HOLD / 2);
    // Both applications switched keepalive on by themselves.
    let with_keepalive = (keepalive_sockets(&setup.a), keepalive_sockets(&setup.b));
    thread::sleep(HOLD.saturating_sub(held_from.elapsed()));
    clients.close();
    thread::sleep(SETTLE);
    let (a1, b1) = (nstat_all(&setup.a), nstat_all(&setup.b));
    let after = daemon.scrape();
    capture.stop();
    Hold {
        before,
        after,
        probes: (
            nstat_delta(&a0, &a1, keepalive_tests::nstat::KEEPALIVE),
            nstat_delta(&b0, &b1, keepalive_tests::nstat::KEEPALIVE),
        ),
        skipped: (
            nstat_delta(&a0, &a1, "TcpExtTCPACKSkippedSeq"),
            nstat_delta(&b0, &b1, "TcpExtTCPACKSkippedSeq"),
        ),
        with_keepalive,
        answers: capture.answers(),
    }
}

/// Both applications kept keepalive on, no answer was rate-limited, the matcher saw
/// exactly nstat's probes, and every probe was answered once, some crossing.
fn check_premises(h: &Hold, ctx: &dyn Fn() -> String) {
    let (n, m) = (2 * PER_FAMILY, &h.answers);
    assert_eq!(
        h.with_keepalive,
        (n, n),
        "sockets with a keepalive timer (A's clients, B's server) while idle; {}",
        ctx()
    );
    assert_no_answer_rate_limited(h.skipped, ctx);
    assert_matcher_probes_equal_nstat(m, &h.probes, ctx);
    for family in Family::ALL {
        for side in [Side::A, Side::B] {
            let t = m.get(side, family);
            assert!(t.probes > 0, "no {family} probe from {side:?}; {}", ctx());
            // Both ends go idle within microseconds and their timers share a tick:
            // the case the test is for.
            assert_answered_once_and_crossed(m, family, side, ctx);
        }
    }
}

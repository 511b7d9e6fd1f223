//! Accuracy against a pcap corpus (docs/accuracy.md).
//!
//! The generated corpus (`keepalive_tests::corpus`, also written by the
//! `keepalive-pcapgen` binary) is replayed frame by frame onto the veth pair, each frame
//! from the end that sent it: "local" frames leave through A's tc egress, "remote"
//! frames arrive through A's tc ingress. Then:
//! (a) the daemon's counters equal the generator's expected counts exactly, per metric
//!     and label set;
//! (b) tshark's keep_alive / keep_alive_ack / zero_window_probe analysis of the same
//!     file equals the daemon's counts except for documented differences: every frame
//!     tshark sees otherwise carries its documented cause, and per series the daemon
//!     minus tshark equals the sum of those causes exactly.
//!
//! Alone: `KEEPALIVE_DAEMON_BIN=target/release/keepalive-daemon \
//!   cargo test -p keepalive-tests --test corpus_replay -- --nocapture`

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::Path;
use std::thread;
use std::time::{Duration, Instant};

use keepalive_tests::corpus::accounting::Comparison;
use keepalive_tests::corpus::{
    self, Corpus, Frame, LOCAL_MAC, Origin, REMOTE_MAC, accounting, tshark, wire,
};
use keepalive_tests::expect::assert_link_carried_exactly;
use keepalive_tests::names::{KERNEL_ERRORS, TIMER_PROBES};
use keepalive_tests::process::TempDir;
use keepalive_tests::replay::{self, LinkStats, PacketSocket, Replayed};
use keepalive_tests::tc_vlan_probe::{VlanProbe, VlanSeen};
use keepalive_tests::{Daemon, Samples, Setup, require_root};

/// Time for the last frames to clear A's ingress before the final scrape.
const SETTLE: Duration = Duration::from_millis(300);

fn counters(s: &Samples) -> BTreeMap<String, f64> {
    s.iter().map(|(k, v)| (k.clone(), v.value)).collect()
}

fn silence_ipv6(setup: &Setup) {
    // Router solicitations and MLD reports would add packets to the veth counters
    // that prove nothing was dropped; the replay does not need IPv6 on the links.
    for (ns, ifname) in [(&setup.a, &setup.veth.a_if), (&setup.b, &setup.veth.b_if)] {
        ns.cmd(&[
            "sysctl",
            "-qw",
            &format!("net.ipv6.conf.{ifname}.disable_ipv6=1"),
        ]);
        let link = ns.cmd(&["ip", "-o", "link", "show", "dev", ifname]);
        let mut tokens = link.split_whitespace();
        tokens.by_ref().find(|t| *t == "link/ether");
        let mac = tokens
            .next()
            .unwrap_or_else(|| panic!("no MAC address in {link:?}"));
        for ours in [LOCAL_MAC, REMOTE_MAC] {
            let ours = ours.map(|b| format!("{b:02x}")).join(":");
            assert_ne!(
                mac, ours,
                "{ifname} has a corpus MAC address: frames would be delivered"
            );
        }
    }
}

/// After a mismatch: a fresh daemon, the corpus again one conversation at a time with
/// a scrape after each, to name the conversations (and their frames) counted wrong.
fn diagnose(setup: &Setup, corpus: &Corpus, local: &PacketSocket, remote: &PacketSocket) -> String {
    let daemon = Daemon::spawn(&setup.a, &[&setup.veth.a_if]);
    let mut by_flow: BTreeMap<u32, Vec<&Frame>> = BTreeMap::new();
    for fr in &corpus.frames {
        by_flow.entry(fr.flow).or_default().push(fr);
    }
    let mut last = counters(&daemon.scrape());
    let (mut out, mut wrong_flows) = (String::new(), 0);
    for (flow, frames) in by_flow {
        replay::replay(
            frames.iter().map(|f| (f.origin, f.bytes.as_slice())),
            local,
            remote,
        )
        .expect("replaying one conversation");
        thread::sleep(Duration::from_millis(2));
        let now = counters(&daemon.scrape());
        let diffs: Vec<String> = corpus::expected_for(frames.iter().copied())
            .into_iter()
            .filter_map(|(k, want)| {
                let got = now.get(&k).copied().unwrap_or(f64::NAN)
                    - last.get(&k).copied().unwrap_or(f64::NAN);
                (got != want as f64).then(|| format!("{k}: daemon +{got}, expected +{want}"))
            })
            .collect();
        if !diffs.is_empty() {
            wrong_flows += 1;
            if wrong_flows <= 8 {
                let scenario = corpus.flows[flow as usize].scenario.name();
                let _ = writeln!(
                    out,
                    "conversation {flow} ({scenario}): {}",
                    diffs.join("; ")
                );
                for f in &frames {
                    let _ = writeln!(out, "    {}", f.summary());
                }
            }
        }
        last = now;
    }
    daemon.terminate();
    let _ = writeln!(out, "{wrong_flows} conversations counted wrong");
    out
}

/// What the replay showed: the daemon's samples around it, the link counters' deltas
/// of A's and B's ends, and what A's tc hooks saw (egress, ingress).
struct ReplayRun {
    before: Samples,
    after: Samples,
    done: Replayed,
    a: LinkStats,
    b: LinkStats,
    egress: VlanSeen,
    ingress: VlanSeen,
}

#[test]
fn corpus_replay_matches_expected_counts_and_tshark() {
    require_root();
    let started = Instant::now();

    // The corpus, written to a file and read back: the replay sends what tshark reads.
    // KEEPALIVE_CORPUS_SEED replays another corpus of the same composition.
    let seed = std::env::var("KEEPALIVE_CORPUS_SEED").map_or(corpus::DEFAULT_SEED, |s| {
        s.parse()
            .unwrap_or_else(|_| panic!("KEEPALIVE_CORPUS_SEED={s:?} is not a number"))
    });
    let corpus = corpus::generate(seed, corpus::DEFAULT_FLOWS_PER_SCENARIO);
    let expected = corpus::expected(&corpus);
    let dir = TempDir::new("corpus");
    let pcap = dir.join("keepalive-corpus.pcap");
    corpus.write_pcap(&pcap).expect("writing the corpus");
    let records =
        wire::read_pcap(std::fs::File::open(&pcap).expect("open corpus")).expect("read corpus");
    let frames = frames_read_back(&corpus, &records);
    eprintln!("{}", corpus.composition());
    let comparison = tshark_accounting(&corpus, &pcap);

    // The replay, with the daemon and the VLAN probe on A's end.
    let setup = Setup::new("corpus");
    silence_ipv6(&setup);
    let daemon = Daemon::spawn(&setup.a, &[&setup.veth.a_if]);
    let vlan = VlanProbe::attach(&setup.a, &setup.veth.a_if).expect("attaching the tc VLAN probe");
    let local = PacketSocket::open(&setup.a, &setup.veth.a_if);
    let remote = PacketSocket::open(&setup.b, &setup.veth.b_if);
    let r = replay_observed(&setup, &daemon, vlan, &frames, (&local, &remote));
    check_link_and_hooks(&corpus, &r);

    // (a) The daemon against the corpus, every series of the wire metrics.
    let (measured, wrong) = measure(&expected, &r.before, &r.after);
    let report = accounting::table(&expected, Some(&measured), &comparison);
    eprintln!("{report}");
    if !wrong.is_empty() {
        let stderr = daemon.terminate();
        let diagnosis = diagnose(&setup, &corpus, &local, &remote);
        panic!(
            "daemon counters differ from the corpus:\n{}\n{report}\ndaemon stderr:\n{stderr}\n\
             replayed again one conversation at a time:\n{diagnosis}",
            wrong.join("\n")
        );
    }
    assert_eq!(
        r.after.delta(&r.before, TIMER_PROBES, &[]),
        0,
        "no socket sends probes here"
    );
    assert_eq!(
        r.after.delta(&r.before, KERNEL_ERRORS, &[]),
        0,
        "kernel errors:\n{}",
        daemon.scrape_text()
    );

    // (b) The daemon against tshark: the difference is the documented one, exactly.
    for (key, documented) in &comparison.explained {
        let (ours, theirs) = (measured[key] as i64, comparison.tshark[key] as i64);
        assert_eq!(
            ours - theirs,
            *documented,
            "{key}: daemon {ours}, tshark {theirs}\n{report}"
        );
    }

    daemon.terminate();
    let elapsed = started.elapsed();
    eprintln!("corpus replay test took {elapsed:?}");
    assert!(elapsed < Duration::from_secs(60), "took {elapsed:?}");
}

/// The pcap's records are the corpus's frames, in order, with increasing timestamps
/// and the sender told by the MAC address: the frames to replay, each with its sender.
fn frames_read_back<'r>(corpus: &Corpus, records: &'r [(u64, Vec<u8>)]) -> Vec<(Origin, &'r [u8])> {
    assert_eq!(records.len(), corpus.frames.len());
    let mut frames = Vec::with_capacity(records.len());
    for (i, ((ts, bytes), fr)) in records.iter().zip(&corpus.frames).enumerate() {
        assert!(
            *ts == fr.time_us && *bytes == fr.bytes,
            "record {i} differs from the corpus"
        );
        assert!(
            i == 0 || *ts > records[i - 1].0,
            "timestamps must increase (record {i})"
        );
        let origin = Origin::of_frame(bytes).expect("a corpus source MAC");
        assert_eq!(origin, fr.origin, "record {i}: sender from the MAC address");
        frames.push((origin, bytes.as_slice()));
    }
    frames
}

/// tshark on the same file: clean dissection, then frame-by-frame accounting, every
/// difference from the corpus explained by a documented cause.
fn tshark_accounting(corpus: &Corpus, pcap: &Path) -> Comparison {
    assert_eq!(
        tshark::bad_checksums(pcap),
        0,
        "bad checksums:\n{}",
        tshark::listing(pcap, "tcp.checksum.status != 1", 20)
    );
    assert_eq!(
        tshark::malformed(pcap),
        0,
        "malformed frames:\n{}",
        tshark::listing(pcap, "_ws.malformed || _ws.expert.severity == error", 20)
    );
    let flagged = tshark::analyse(pcap);
    let comparison = accounting::compare(corpus, &flagged);
    assert!(
        comparison.unexplained.is_empty(),
        "tshark disagrees with the corpus where no documented difference says so ({} frames):\n{}",
        comparison.unexplained.len(),
        comparison
            .unexplained
            .iter()
            .take(40)
            .cloned()
            .collect::<Vec<_>>()
            .join("\n")
    );
    comparison
}

/// Replays `frames` through the (local, remote) packet sockets, reading the daemon, the
/// link counters and the VLAN probe on A's end before and [`SETTLE`] after.
fn replay_observed(
    setup: &Setup,
    daemon: &Daemon,
    vlan: VlanProbe,
    frames: &[(Origin, &[u8])],
    (local, remote): (&PacketSocket, &PacketSocket),
) -> ReplayRun {
    let before = daemon.scrape();
    let (a0, b0) = (
        LinkStats::read(&setup.a, &setup.veth.a_if),
        LinkStats::read(&setup.b, &setup.veth.b_if),
    );
    let done = replay::replay(frames.iter().copied(), local, remote).expect("replaying the corpus");
    thread::sleep(SETTLE);
    let (a1, b1) = (
        LinkStats::read(&setup.a, &setup.veth.a_if),
        LinkStats::read(&setup.b, &setup.veth.b_if),
    );
    let after = daemon.scrape();
    let (egress, ingress) = vlan.read().expect("reading the VLAN probe");
    drop(vlan);
    eprintln!(
        "replayed {} local + {} remote frames in {:?}; A {:?}; B {:?}",
        done.local,
        done.remote,
        done.elapsed,
        a1.since(&a0),
        b1.since(&b0)
    );
    ReplayRun {
        before,
        after,
        done,
        a: a1.since(&a0),
        b: b1.since(&b0),
        egress,
        ingress,
    }
}

/// Nothing lost on the way, nothing else on the link, and every frame reached both of
/// A's tc hooks (what they saw of the VLAN tags is printed).
fn check_link_and_hooks(corpus: &Corpus, r: &ReplayRun) {
    let n_local = corpus
        .frames
        .iter()
        .filter(|f| f.origin == Origin::Local)
        .count() as u64;
    let n_remote = corpus.frames.len() as u64 - n_local;
    assert_eq!((r.done.local, r.done.remote), (n_local, n_remote));
    // (rx_dropped counts what the receiving stack discards after tc, e.g. QinQ frames:
    // once the outer tag is untagged, no handler takes the inner 802.1Q ethertype.)
    assert_link_carried_exactly(&r.a, &r.b, n_local, n_remote);

    let tagged = |o: Origin, qinq: bool| {
        corpus
            .frames
            .iter()
            .filter(|f| {
                f.origin == o && {
                    let encap = corpus.flows[f.flow as usize].shape.encap;
                    if qinq {
                        matches!(encap, wire::Encap::QinQ(..))
                    } else {
                        encap != wire::Encap::Plain
                    }
                }
            })
            .count()
    };
    eprintln!(
        "tc egress saw {:?} ({} local frames tagged, {} QinQ); tc ingress saw {:?} ({} remote frames tagged, {} QinQ)",
        r.egress,
        tagged(Origin::Local, false),
        tagged(Origin::Local, true),
        r.ingress,
        tagged(Origin::Remote, false),
        tagged(Origin::Remote, true)
    );
    assert_eq!(r.egress.frames, n_local, "frames through A's tc egress");
    assert_eq!(r.ingress.frames, n_remote, "frames through A's tc ingress");
}

/// The daemon's deltas of every series the corpus expects (each a whole number, not
/// negative), and those that differ from the expected counts.
fn measure(
    expected: &corpus::Counts,
    before: &Samples,
    after: &Samples,
) -> (corpus::Counts, Vec<String>) {
    let (c0, c1) = (counters(before), counters(after));
    let mut measured = corpus::Counts::new();
    let mut wrong = Vec::new();
    for (key, want) in expected {
        let delta =
            c1.get(key).copied().unwrap_or(f64::NAN) - c0.get(key).copied().unwrap_or(f64::NAN);
        assert!(
            delta.is_finite() && delta >= 0.0 && delta.fract() == 0.0,
            "series {key}: {delta}"
        );
        measured.insert(key.clone(), delta as u64);
        if delta as u64 != *want {
            wrong.push(format!("{key}: daemon {delta}, expected {want}"));
        }
    }
    (measured, wrong)
}

//! Crafted bad frames on the wire, interleaved with valid keepalive conversations: the
//! generated corpus (VLAN and QinQ tags, IPv4 options, IPv6 extension headers, both
//! directions) with, before every frame the daemon counts, broken copies of it (cut
//! inside each header, IHL and data offset out of range, total length shorter than the
//! headers or longer than the frame, wrong IP version, non-first IPv4 fragments, UDP
//! instead of TCP, an unknown ethertype), plus seeded random garbage behind valid
//! Ethernet headers. The daemon must count exactly what the valid conversations alone
//! contain, report the broken frames only as truncated/malformed, stay up with both
//! programs attached, and every frame must have crossed the link.
//!
//! Runts shorter than an Ethernet header cannot be sent: a packet socket refuses them
//! (dev_validate_header() in net/packet/af_packet.c).

use std::collections::BTreeMap;
use std::thread;
use std::time::Duration;

use keepalive_tests::corpus::{self, Corpus, Counts, Kind, Origin, Rng};
use keepalive_tests::expect::assert_link_carried_exactly;
use keepalive_tests::names::{KERNEL_ERRORS, UP};
use keepalive_tests::replay::{self, LinkStats, PacketSocket};
use keepalive_tests::{Daemon, Samples, Setup, require_root};

const SEED: u64 = 0x6372_6166_7465_6421;
const FLOWS_PER_SCENARIO: usize = 3;
const GARBAGE_FRAMES: usize = 2000;
const SETTLE: Duration = Duration::from_millis(300);

/// Where the headers of a corpus frame start and end.
struct Layout {
    /// The innermost ethertype's offset.
    ethertype: usize,
    l3: usize,
    l4: usize,
    tcp_end: usize,
    v4: bool,
}

fn layout(b: &[u8]) -> Layout {
    let mut et = 12;
    while matches!(u16::from_be_bytes([b[et], b[et + 1]]), 0x8100 | 0x88a8) {
        et += 4;
    }
    let l3 = et + 2;
    let v4 = u16::from_be_bytes([b[et], b[et + 1]]) == 0x0800;
    let l4 = if v4 {
        l3 + usize::from(b[l3] & 0x0f) * 4
    } else {
        let (mut nh, mut p) = (b[l3 + 6], l3 + 40);
        loop {
            match nh {
                0 | 43 | 60 => {
                    nh = b[p];
                    p += (usize::from(b[p + 1]) + 1) * 8;
                }
                44 => {
                    nh = b[p];
                    p += 8;
                }
                _ => break p,
            }
        }
    };
    let tcp_end = l4 + usize::from(b[l4 + 12] >> 4) * 4;
    Layout {
        ethertype: et,
        l3,
        l4,
        tcp_end,
        v4,
    }
}

/// Broken copies of a valid frame; none may be counted as anything.
fn broken(b: &[u8]) -> Vec<Vec<u8>> {
    let l = layout(b);
    let mut out = Vec::new();
    for cut in [
        l.l3 - 1,
        l.l3 + 1,
        l.l3 + 9,
        l.l4 - 1,
        l.l4 + 1,
        l.l4 + 13,
        l.tcp_end - 1,
    ] {
        if cut >= 14 && cut < l.tcp_end && cut > l.ethertype + 1 {
            out.push(b[..cut].to_vec());
        }
    }
    let mutate = |f: &dyn Fn(&mut Vec<u8>)| {
        let mut c = b.to_vec();
        f(&mut c);
        c
    };
    out.push(mutate(&|c| {
        c[l.ethertype..l.ethertype + 2].copy_from_slice(&[0x88, 0xb5])
    }));
    out.push(mutate(&|c| c[l.l4 + 12] = 0x40 | (c[l.l4 + 12] & 0x0f)));
    out.push(mutate(&|c| c[l.l4 + 12] = 0xf0 | (c[l.l4 + 12] & 0x0f)));
    if l.v4 {
        out.push(mutate(&|c| c[l.l3] = 0x44));
        out.push(mutate(&|c| c[l.l3] = 0x4f));
        out.push(mutate(&|c| c[l.l3] = 0x65));
        out.push(mutate(&|c| {
            c[l.l3 + 2..l.l3 + 4].copy_from_slice(&20u16.to_be_bytes())
        }));
        let longer = (b.len() + 100) as u16;
        out.push(mutate(&|c| {
            c[l.l3 + 2..l.l3 + 4].copy_from_slice(&longer.to_be_bytes())
        }));
        out.push(mutate(&|c| {
            c[l.l3 + 6..l.l3 + 8].copy_from_slice(&[0x00, 0x01])
        }));
        out.push(mutate(&|c| c[l.l3 + 9] = 17));
    } else {
        out.push(mutate(&|c| c[l.l3] = 0x45));
        let longer = (b.len() + 100) as u16;
        out.push(mutate(&|c| {
            c[l.l3 + 4..l.l3 + 6].copy_from_slice(&longer.to_be_bytes())
        }));
        out.push(mutate(&|c| c[l.l3 + 4..l.l3 + 6].copy_from_slice(&[0, 4])));
        if l.l4 == l.l3 + 40 {
            out.push(mutate(&|c| c[l.l3 + 6] = 17));
        }
    }
    out
}

/// Random bytes behind the Ethernet addresses of `template`.
fn garbage(template: &[u8], rng: &mut Rng) -> Vec<u8> {
    let mut f = template[..12].to_vec();
    let et: u16 = rng.pick(&[0x0800, 0x86dd, 0x8100, 0x88a8, 0x0806, 0x88b5]);
    f.extend_from_slice(&et.to_be_bytes());
    for _ in 0..rng.range(0, 120) {
        f.push(rng.next_u64() as u8);
    }
    f
}

fn counters(s: &Samples) -> BTreeMap<String, f64> {
    s.iter().map(|(k, v)| (k.clone(), v.value)).collect()
}

#[test]
fn crafted_frames_are_survived_and_never_counted() {
    require_root();
    let corpus = corpus::generate(SEED, FLOWS_PER_SCENARIO);
    let expected = corpus::expected(&corpus);
    let (frames, hostile) = with_crafted_frames(&corpus);

    let setup = Setup::new("crafted");
    for (ns, ifname) in [(&setup.a, &setup.veth.a_if), (&setup.b, &setup.veth.b_if)] {
        // Router solicitations would add packets to the link counters checked below.
        ns.cmd(&[
            "sysctl",
            "-qw",
            &format!("net.ipv6.conf.{ifname}.disable_ipv6=1"),
        ]);
    }
    let daemon = Daemon::spawn(&setup.a, &[&setup.veth.a_if]);
    let ctx = || format!("daemon stderr:\n{}", daemon.stderr());
    let local = PacketSocket::open(&setup.a, &setup.veth.a_if);
    let remote = PacketSocket::open(&setup.b, &setup.veth.b_if);
    let before = daemon.scrape();
    let (a0, b0) = (
        LinkStats::read(&setup.a, &setup.veth.a_if),
        LinkStats::read(&setup.b, &setup.veth.b_if),
    );
    let done = replay::replay(
        frames.iter().map(|(o, b)| (*o, b.as_slice())),
        &local,
        &remote,
    )
    .expect("replaying");
    thread::sleep(SETTLE);
    let (da, db) = (
        LinkStats::read(&setup.a, &setup.veth.a_if).since(&a0),
        LinkStats::read(&setup.b, &setup.veth.b_if).since(&b0),
    );
    let after = daemon.scrape();
    eprintln!(
        "{} frames ({} valid, {hostile} crafted) in {:?}",
        frames.len(),
        corpus.frames.len(),
        done.elapsed
    );

    let n_local = frames.iter().filter(|(o, _)| *o == Origin::Local).count() as u64;
    assert_link_carried_exactly(&da, &db, n_local, frames.len() as u64 - n_local);
    check_counts(&expected, &before, &after, &ctx);
    check_parse_errors(&before, &after, hostile, &ctx);

    // Still up, still attached: a clean SIGTERM.
    assert_eq!(after.value(UP, &[]), 1.0, "daemon not up; {}", ctx());
    daemon.terminate();
}

/// The corpus with, before every frame the daemon counts, broken copies of it, and
/// [`GARBAGE_FRAMES`] frames of seeded garbage inserted anywhere; and how many frames
/// of it are crafted.
fn with_crafted_frames(corpus: &Corpus) -> (Vec<(Origin, Vec<u8>)>, u64) {
    let mut rng = Rng::new(SEED);
    let mut frames: Vec<(Origin, Vec<u8>)> = Vec::new();
    let mut hostile = 0u64;
    for f in &corpus.frames {
        if matches!(
            f.kind,
            Kind::Probe | Kind::ProbeAck | Kind::ProbeRst | Kind::ZeroWindowProbe
        ) {
            for b in broken(&f.bytes) {
                frames.push((f.origin, b));
                hostile += 1;
            }
        }
        frames.push((f.origin, f.bytes.clone()));
    }
    for i in 0..GARBAGE_FRAMES {
        let f = &corpus.frames[i % corpus.frames.len()];
        let at = rng.range(0, frames.len() as u64) as usize;
        frames.insert(at, (f.origin, garbage(&f.bytes, &mut rng)));
        hostile += 1;
    }
    (frames, hostile)
}

/// The daemon counted exactly what the valid conversations alone contain.
fn check_counts(expected: &Counts, before: &Samples, after: &Samples, ctx: &dyn Fn() -> String) {
    let (c0, c1) = (counters(before), counters(after));
    let delta =
        |k: &str| c1.get(k).copied().unwrap_or(f64::NAN) - c0.get(k).copied().unwrap_or(0.0);
    let wrong: Vec<String> = expected
        .iter()
        .filter(|(k, want)| delta(k) != **want as f64)
        .map(|(k, want)| format!("{k}: daemon {}, expected {want}", delta(k)))
        .collect();
    assert!(
        wrong.is_empty(),
        "miscounted with crafted frames around the valid ones:\n{}\n{}",
        wrong.join("\n"),
        ctx()
    );
}

/// The crafted frames are reported only as truncated or malformed (some, and at most
/// one each), and no other kernel error happened.
fn check_parse_errors(before: &Samples, after: &Samples, hostile: u64, ctx: &dyn Fn() -> String) {
    let err = |kind: &str| {
        after.value(KERNEL_ERRORS, &[("kind", kind)])
            - before.value(KERNEL_ERRORS, &[("kind", kind)])
    };
    let parse_errors = err("truncated_frame") + err("malformed_frame");
    eprintln!(
        "kernel errors: truncated {} malformed {}",
        err("truncated_frame"),
        err("malformed_frame")
    );
    assert!(
        parse_errors > 0.0 && parse_errors <= hostile as f64,
        "parse errors {parse_errors} for {hostile} crafted frames; {}",
        ctx()
    );
    assert_eq!(err("flow_insert_failed"), 0.0, "{}", ctx());
    assert_eq!(err("kernel_read_failed"), 0.0, "{}", ctx());
}

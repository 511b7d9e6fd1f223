//! The audit's rules: effective settings (socket value over sysctl), the risk verdict
//! per idle limit, the failure histogram's buckets and HZ from two samples.

use crate::audit::*;

const HZ: u32 = 250;

fn record(keepalive: bool, own_idle_s: u32, sysctl_idle_s: u32) -> SocketRecord {
    SocketRecord {
        flags: if keepalive {
            record_flags::KEEPALIVE
        } else {
            0
        },
        keepalive_time: own_idle_s * HZ,
        keepalive_intvl: 0,
        keepalive_probes: 0,
        sysctl_keepalive_time: sysctl_idle_s * HZ,
        sysctl_keepalive_intvl: 75 * HZ,
        sysctl_keepalive_probes: 9,
        ..Default::default()
    }
}

#[test]
fn the_sockets_own_value_wins_over_the_sysctl() {
    let e = effective(&record(true, 60, 7200), HZ);
    assert_eq!(e.idle_seconds, 60);
    assert_eq!((e.interval_seconds, e.count), (75, 9));
    let e = effective(&record(true, 0, 7200), HZ);
    assert_eq!(e.idle_seconds, 7200);
}

#[test]
fn own_interval_and_count_win_too() {
    let mut r = record(true, 0, 7200);
    r.keepalive_intvl = 10 * HZ;
    r.keepalive_probes = 3;
    let e = effective(&r, HZ);
    assert_eq!((e.interval_seconds, e.count), (10, 3));
}

#[test]
fn keepalive_off_is_at_risk_for_every_limit() {
    let e = effective(&record(false, 10, 10), HZ);
    for limit in [1, 240, 350, 7200] {
        assert_eq!(at_risk(&e, limit), Some(RiskReason::KeepaliveOff));
    }
}

#[test]
fn idle_below_at_and_above_the_limit() {
    for (idle, limit, risk) in [(239, 240, false), (240, 240, true), (241, 240, true)] {
        let e = effective(&record(true, idle, 7200), HZ);
        assert_eq!(
            at_risk(&e, limit).is_some(),
            risk,
            "idle {idle} limit {limit}"
        );
    }
    // The Linux default (7200 s from the sysctl) is at risk behind every listed middlebox.
    let e = effective(&record(true, 0, 7200), HZ);
    for limit in [240, 350, 900, 1200] {
        assert_eq!(at_risk(&e, limit), Some(RiskReason::IdleAtOrAboveLimit));
    }
    // A per-socket 60 s is safe behind all of them even if the sysctl is not.
    let e = effective(&record(true, 60, 7200), HZ);
    for limit in [240, 350, 900, 1200] {
        assert_eq!(at_risk(&e, limit), None);
    }
}

#[test]
fn user_timeout_does_not_keep_a_middlebox_alive() {
    let mut r = record(true, 600, 7200);
    r.user_timeout_ms = 5_000;
    let e = effective(&r, HZ);
    assert_eq!(e.user_timeout_ms, 5_000);
    assert_eq!(at_risk(&e, 350), Some(RiskReason::IdleAtOrAboveLimit));
    let mut r = record(false, 0, 60);
    r.user_timeout_ms = 1_000;
    assert_eq!(
        at_risk(&effective(&r, HZ), 350),
        Some(RiskReason::KeepaliveOff)
    );
}

#[test]
fn idle_now_is_converted_with_hz() {
    let mut r = record(true, 0, 7200);
    r.idle_jiffies = 1000 * 3 + 999;
    assert_eq!(effective(&r, 1000).idle_now_seconds, 3);
}

fn bounds(hz: u32) -> [u32; 15] {
    FAILURE_IDLE_BUCKETS_SECONDS.map(|s| s * hz)
}

#[test]
fn failure_buckets_are_upper_inclusive() {
    let b = bounds(HZ);
    assert_eq!(failure_bucket(0, &b), 0);
    assert_eq!(failure_bucket(HZ, &b), 0); // exactly 1 s: le="1"
    assert_eq!(failure_bucket(HZ + 1, &b), 1);
    let i240 = FAILURE_IDLE_BUCKETS_SECONDS
        .iter()
        .position(|&s| s == 240)
        .unwrap() as u32;
    assert_eq!(failure_bucket(240 * HZ, &b), i240);
    assert_eq!(failure_bucket(240 * HZ + 1, &b), i240 + 1);
    assert_eq!(failure_bucket(7200 * HZ, &b), FAILURE_IDLE_BUCKETS - 2);
    assert_eq!(failure_bucket(7200 * HZ + 1, &b), FAILURE_IDLE_BUCKETS - 1);
    assert_eq!(failure_bucket(u32::MAX, &b), FAILURE_IDLE_BUCKETS - 1);
}

#[test]
fn failure_buckets_include_the_middlebox_limits() {
    for s in [240, 350, 900, 1200] {
        assert!(FAILURE_IDLE_BUCKETS_SECONDS.contains(&s), "{s}");
    }
    assert_eq!(FAILURE_IDLE_BUCKETS_SECONDS[0], 1);
    assert!(FAILURE_IDLE_BUCKETS_SECONDS.windows(2).all(|w| w[0] < w[1]));
}

#[test]
fn hz_from_two_samples() {
    for hz in HZ_CHOICES {
        // 150 ms apart, one jiffy of jitter either way.
        let dj = u64::from(hz) * 150 / 1000;
        for jitter in [-1i64, 0, 1] {
            let j1 = 1_000_000 + (dj as i64 + jitter) as u64;
            assert_eq!(
                hz_from_samples(1_000_000, 5_000_000_000, j1, 5_150_000_000),
                Some(hz),
                "hz {hz} jitter {jitter}"
            );
        }
    }
    // Too close together, backwards, or no known HZ.
    assert_eq!(hz_from_samples(0, 0, 10, 50_000_000), None);
    assert_eq!(hz_from_samples(10, 0, 0, 500_000_000), None);
    assert_eq!(hz_from_samples(0, 0, 500, 1_000_000_000), None);
}

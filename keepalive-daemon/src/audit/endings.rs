//! The consumer of endings: each connection the keepalive timer gave up on, and each
//! idle death (a reset received, or retransmissions given up, after at least
//! --audit.min-idle of idleness), arrives from the kernel's ring buffer; it is logged as
//! one line and kept in the view's recent endings.
//!
//! Levels: an idle death is a warning (an application saw a connection fail, most
//! likely because a middlebox forgot it); a keepalive timeout is info (keepalive did its
//! job: it found a dead peer before the application did).
//!
//! Lines are rate-limited to [`LINES_PER_SECOND`]; the suppressed ones are summed up in
//! one line when the second is over. The rate limiter is hand-written: it must count
//! what it suppressed for the summary, which the rate-limiting crates do not report,
//! and it is a dozen lines.

use std::{
    sync::{Arc, Mutex, PoisonError},
    time::{Duration, Instant, SystemTime},
};

use keepalive_common::audit::{Ending, EndingKind, record_flags};

use super::{AuditView, EndingRecord, cgroup::CgroupPaths, kernel::EndingsReader};
use crate::{error_chain::Chain, exporter::connections::address, exporter::state::State};

/// Lines logged per second at most.
pub const LINES_PER_SECOND: u32 = 10;
const WINDOW: Duration = Duration::from_secs(1);

/// Counts lines per one-second window.
#[derive(Debug)]
pub struct RateLimiter {
    window_start: Instant,
    in_window: u32,
    suppressed: u64,
}

impl RateLimiter {
    pub fn new(now: Instant) -> RateLimiter {
        RateLimiter {
            window_start: now,
            in_window: 0,
            suppressed: 0,
        }
    }

    /// Whether a line may be logged at `now`; a suppressed one is counted.
    pub fn admit(&mut self, now: Instant) -> bool {
        if now.duration_since(self.window_start) >= WINDOW {
            // The summary of the window that ended is taken by `take_suppressed` first.
            self.window_start = now;
            self.in_window = 0;
        }
        if self.in_window < LINES_PER_SECOND {
            self.in_window += 1;
            true
        } else {
            self.suppressed += 1;
            false
        }
    }

    /// Lines suppressed so far, once their window is over (then reset to 0).
    pub fn take_suppressed(&mut self, now: Instant) -> Option<u64> {
        if self.suppressed == 0 || now.duration_since(self.window_start) < WINDOW {
            return None;
        }
        Some(std::mem::take(&mut self.suppressed))
    }
}

/// The log level and line of an ending; `cgroup` resolved if known.
pub fn line(e: &Ending, hz: u32, cgroup: Option<&str>) -> (log::Level, String) {
    let kind = EndingKind::from_u32(e.kind);
    let (level, what) = match kind {
        Some(EndingKind::KeepaliveTimeout) => (log::Level::Info, "keepalive timeout".to_owned()),
        Some(k) => (
            log::Level::Warn,
            format!("idle death ({})", k.cause_label()),
        ),
        None => (
            log::Level::Warn,
            format!("ending of unknown kind {}", e.kind),
        ),
    };
    let keepalive = if e.flags & record_flags::KEEPALIVE != 0 {
        "on"
    } else {
        "off"
    };
    let cgroup = match (cgroup, e.cgroup_id) {
        (Some(path), _) => path.to_owned(),
        (None, 0) => "unknown".to_owned(),
        (None, id) => format!("id {id}"),
    };
    let line = format!(
        "audit: {what} after {}s idle, keepalive {keepalive}: {} -> {}, netns {}, cgroup {cgroup}",
        idle_seconds(e, hz).round() as u64,
        address(&e.key, true),
        address(&e.key, false),
        e.netns_inum,
    );
    (level, line)
}

fn idle_seconds(e: &Ending, hz: u32) -> f64 {
    f64::from(e.idle_jiffies) / f64::from(hz.max(1))
}

/// Reads endings for the daemon's life: each is logged (rate-limited) and kept in the
/// view. A failed read stops the task, logged once: the counters stay in the kernel.
pub fn spawn(
    mut reader: EndingsReader,
    hz: u32,
    cgroups: Arc<Mutex<CgroupPaths>>,
    state: Arc<State>,
) {
    let limiter = Arc::new(Mutex::new(RateLimiter::new(Instant::now())));
    // The summary of suppressed lines comes from its own task, so the reader is never
    // cancelled in the middle of a batch (no select! around next_batch).
    let flusher = limiter.clone();
    let flush = tokio::spawn(async move {
        let mut tick = tokio::time::interval(WINDOW);
        loop {
            tick.tick().await;
            log_suppressed(&flusher);
        }
    });
    tokio::spawn(async move {
        loop {
            match reader.next_batch().await {
                Ok(batch) => {
                    for e in &batch {
                        handle(e, hz, &cgroups, &state.audit, &limiter);
                    }
                }
                Err(e) => {
                    log::error!(
                        "audit: reading endings failed, no more ending lines (the counters go on): {}",
                        Chain(&e)
                    );
                    log_suppressed(&limiter);
                    flush.abort();
                    return;
                }
            }
        }
    });
}

fn log_suppressed(limiter: &Mutex<RateLimiter>) {
    let n = limiter
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .take_suppressed(Instant::now());
    if let Some(n) = n {
        log::warn!(
            "audit: {n} ending line(s) suppressed (at most {LINES_PER_SECOND} per second); all are counted in the metrics and the recent ones are in /connections"
        );
    }
}

fn handle(
    e: &Ending,
    hz: u32,
    cgroups: &Mutex<CgroupPaths>,
    view: &AuditView,
    limiter: &Mutex<RateLimiter>,
) {
    // The inventory's thread may hold the cache for a walk: without it the id is shown,
    // rather than stalling the runtime thread.
    let cgroup = cgroups.try_lock().ok().and_then(|c| c.lookup(e.cgroup_id));
    log_suppressed(limiter);
    let admitted = limiter
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .admit(Instant::now());
    if admitted {
        let (level, text) = line(e, hz, cgroup.as_deref());
        log::log!(level, "{text}");
    }
    let Some(kind) = EndingKind::from_u32(e.kind) else {
        return;
    };
    view.push_ending(EndingRecord {
        at: SystemTime::now(),
        key: e.key,
        kind,
        keepalive: e.flags & record_flags::KEEPALIVE != 0,
        idle_seconds: idle_seconds(e, hz),
        netns_inum: e.netns_inum,
        cgroup,
    });
}

#[cfg(test)]
mod tests {
    use super::*;
    use keepalive_common::flow::FlowKey;

    #[test]
    fn at_most_ten_lines_a_second_then_a_summary() {
        let t0 = Instant::now();
        let mut r = RateLimiter::new(t0);
        let admitted = (0..25).filter(|_| r.admit(t0)).count();
        assert_eq!(admitted, 10);
        // Not before the window is over.
        assert_eq!(r.take_suppressed(t0 + Duration::from_millis(999)), None);
        assert_eq!(r.take_suppressed(t0 + WINDOW), Some(15));
        assert_eq!(r.take_suppressed(t0 + WINDOW), None);
        // A new window admits ten again.
        let t1 = t0 + Duration::from_millis(1500);
        assert_eq!((0..12).filter(|_| r.admit(t1)).count(), 10);
        assert_eq!(r.take_suppressed(t1 + WINDOW), Some(2));
        // Nothing suppressed: no summary.
        let t2 = t1 + Duration::from_secs(5);
        assert!(r.admit(t2));
        assert_eq!(r.take_suppressed(t2 + WINDOW), None);
    }

    fn ending(kind: EndingKind, keepalive: bool, cgroup_id: u64) -> Ending {
        Ending {
            key: FlowKey {
                local_addr: [u32::from_ne_bytes([192, 0, 2, 1]), 0, 0, 0],
                remote_addr: [u32::from_ne_bytes([192, 0, 2, 2]), 0, 0, 0],
                local_port: 41234,
                remote_port: 5432,
                family: 0,
            },
            kind: kind as u32,
            flags: if keepalive {
                record_flags::KEEPALIVE
            } else {
                0
            },
            netns_inum: 4026531840,
            idle_jiffies: 250 * 312 + 100,
            cgroup_id,
            now_ns: 0,
        }
    }

    #[test]
    fn lines_name_everything_once() {
        let e = ending(EndingKind::IdleReset, false, 77);
        assert_eq!(
            line(&e, 250, Some("/system.slice/app.service")),
            (
                log::Level::Warn,
                "audit: idle death (reset) after 312s idle, keepalive off: 192.0.2.1:41234 -> 192.0.2.2:5432, netns 4026531840, cgroup /system.slice/app.service".to_owned()
            )
        );
        let e = ending(EndingKind::IdleRetransmitTimeout, true, 77);
        assert_eq!(
            line(&e, 250, None).1,
            "audit: idle death (retransmit_timeout) after 312s idle, keepalive on: 192.0.2.1:41234 -> 192.0.2.2:5432, netns 4026531840, cgroup id 77"
        );
        let e = ending(EndingKind::KeepaliveTimeout, true, 0);
        assert_eq!(
            line(&e, 250, None),
            (
                log::Level::Info,
                "audit: keepalive timeout after 312s idle, keepalive on: 192.0.2.1:41234 -> 192.0.2.2:5432, netns 4026531840, cgroup unknown".to_owned()
            )
        );
    }

    /// Every ending is kept in the view, logged or not (the 11th of a second is not),
    /// with its cgroup path when the cache knows it; unknown kinds are logged only.
    #[test]
    fn every_ending_reaches_the_view() {
        let view = AuditView::default();
        // A window that starts in an hour: however slow the machine, all of this falls
        // in it (durations before its start count as 0).
        let limiter = Mutex::new(RateLimiter::new(Instant::now() + Duration::from_secs(3600)));
        let cgroups = Mutex::new(CgroupPaths::new(None));
        for _ in 0..11 {
            handle(
                &ending(EndingKind::IdleReset, false, 5),
                250,
                &cgroups,
                &view,
                &limiter,
            );
        }
        let mut unknown = ending(EndingKind::IdleReset, false, 5);
        unknown.kind = 9;
        handle(&unknown, 250, &cgroups, &view, &limiter);
        let e = view.endings();
        assert_eq!(e.len(), 11);
        assert_eq!(e[0].kind, EndingKind::IdleReset);
        assert_eq!((e[0].keepalive, e[0].netns_inum), (false, 4026531840));
        assert_eq!(e[0].idle_seconds, 312.4);
        assert_eq!(e[0].cgroup, None);
        assert_eq!(e[0].key.remote_port, 5432);
        // The 11th and the unknown one were suppressed (not yet summed: same second).
        assert_eq!(limiter.lock().unwrap().suppressed, 2);
    }
}

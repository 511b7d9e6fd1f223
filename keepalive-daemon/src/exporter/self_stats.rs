//! process_* metrics read from /proc/self on each scrape. The prometheus crate's process
//! collector keeps CPU time as whole seconds (integer division by clock ticks), which
//! hides a daemon that should use well under one second per minute.

use prometheus::{Counter, IntGauge, Registry};

pub struct SelfStats {
    cpu_seconds: Counter,
    resident_bytes: IntGauge,
    virtual_bytes: IntGauge,
    open_fds: IntGauge,
    start_time: IntGauge,
}

impl SelfStats {
    pub fn register(r: &Registry) -> prometheus::Result<SelfStats> {
        let cpu_seconds = Counter::new(
            "process_cpu_seconds_total",
            "Total user and system CPU time spent in seconds.",
        )?;
        let resident_bytes = IntGauge::new(
            "process_resident_memory_bytes",
            "Resident memory size in bytes.",
        )?;
        let virtual_bytes = IntGauge::new(
            "process_virtual_memory_bytes",
            "Virtual memory size in bytes.",
        )?;
        let open_fds = IntGauge::new("process_open_fds", "Number of open file descriptors.")?;
        let start_time = IntGauge::new(
            "process_start_time_seconds",
            "Start time of the process since unix epoch in seconds.",
        )?;
        r.register(Box::new(cpu_seconds.clone()))?;
        r.register(Box::new(resident_bytes.clone()))?;
        r.register(Box::new(virtual_bytes.clone()))?;
        r.register(Box::new(open_fds.clone()))?;
        r.register(Box::new(start_time.clone()))?;
        let m = SelfStats {
            cpu_seconds,
            resident_bytes,
            virtual_bytes,
            open_fds,
            start_time,
        };
        if let Some(start) = start_time_seconds() {
            m.start_time.set(start as i64);
        }
        m.update();
        Ok(m)
    }

    pub fn update(&self) {
        if let Some(s) = read_stat() {
            let delta = s.cpu_seconds - self.cpu_seconds.get();
            if delta > 0.0 {
                self.cpu_seconds.inc_by(delta);
            }
            self.virtual_bytes.set(s.vsize as i64);
            self.resident_bytes.set((s.rss_pages * page_size()) as i64);
        }
        if let Ok(dir) = std::fs::read_dir("/proc/self/fd") {
            self.open_fds.set(dir.count() as i64);
        }
    }
}

struct Stat {
    cpu_seconds: f64,
    vsize: u64,
    rss_pages: u64,
    start_ticks: u64,
}

fn ticks() -> f64 {
    // SAFETY: sysconf has no preconditions.
    unsafe { libc::sysconf(libc::_SC_CLK_TCK) as f64 }
}

fn page_size() -> u64 {
    // SAFETY: sysconf has no preconditions.
    unsafe { libc::sysconf(libc::_SC_PAGESIZE) as u64 }
}

/// Parses /proc/self/stat (proc(5)): fields after the `(comm)`, which may hold spaces.
fn parse_stat(text: &str) -> Option<Stat> {
    let rest = text.rsplit_once(')')?.1;
    let f: Vec<&str> = rest.split_whitespace().collect();
    // After comm: state is field 3, so field N is f[N - 3].
    let num = |n: usize| f.get(n - 3)?.parse::<u64>().ok();
    Some(Stat {
        cpu_seconds: (num(14)? + num(15)?) as f64 / ticks(),
        start_ticks: num(22)?,
        vsize: num(23)?,
        rss_pages: num(24)?,
    })
}

fn read_stat() -> Option<Stat> {
    parse_stat(&std::fs::read_to_string("/proc/self/stat").ok()?)
}

fn start_time_seconds() -> Option<f64> {
    let boot = std::fs::read_to_string("/proc/stat")
        .ok()?
        .lines()
        .find_map(|l| l.strip_prefix("btime "))?
        .trim()
        .parse::<f64>()
        .ok()?;
    Some(boot + read_stat()?.start_ticks as f64 / ticks())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_stat_with_spaces_in_the_name() {
        let line = "1234 (keep alive) S 1 1234 1234 0 -1 4194560 500 0 0 0 37 13 0 0 20 0 3 0 \
                    98765 123456789 4321 18446744073709551615";
        let s = parse_stat(line).unwrap();
        assert!((s.cpu_seconds - 50.0 / ticks()).abs() < 1e-9);
        assert_eq!(
            (s.start_ticks, s.vsize, s.rss_pages),
            (98765, 123456789, 4321)
        );
        assert!(read_stat().is_some_and(|s| s.rss_pages > 0));
    }
}

//! The daemon in userspace with many tracked connections: CPU per second, RSS, scrape
//! time; and kernel map memory per connection up to the largest --flows.max.

use std::time::{Duration, Instant};

use anyhow::{Context as _, anyhow};
use aya::maps::{HashMap, MapData};
use keepalive_common::flow::{FlowKey, FlowState};
use keepalive_daemon::metric_names::FLOW_MAP_ENTRIES;
use keepalive_tests::scenarios::Setup;

use super::spawn_daemon;

/// Long enough to include two flow-map sweeps at the default interval (60 s).
const WINDOW: Duration = Duration::from_secs(125);
const SCRAPE_EVERY: Duration = Duration::from_secs(5);
const SCRAPES_TIMED: usize = 20;

pub fn run(setup: &Setup, iface: &str) -> anyhow::Result<()> {
    println!("## Daemon in userspace (goals: CPU < 1% of a core, RSS < 64 MiB, scrape < 50 ms)");
    println!(
        "| tracked connections | CPU (% of a core) | RSS (MiB) | scrape median (ms) | scrape max (ms) |"
    );
    println!("| ---: | ---: | ---: | ---: | ---: |");
    for n in [10_000u32, 100_000] {
        let daemon = spawn_daemon(&setup.a, iface, &["--flows.max", "131072"]);
        let pid = daemon.pid();
        let mut map = flows_map()?;
        fill(&mut map, n)?;
        // Scrape periodically during the window, as Prometheus would.
        let cpu0 = cpu_ticks(pid)?;
        let start = Instant::now();
        while start.elapsed() < WINDOW {
            std::thread::sleep(SCRAPE_EVERY);
            daemon.scrape_text();
        }
        let cpu =
            (cpu_ticks(pid)? - cpu0) as f64 / ticks_per_second() / start.elapsed().as_secs_f64();
        let entries = daemon.scrape().value(FLOW_MAP_ENTRIES, &[]);
        anyhow::ensure!(
            entries as u32 >= n * 99 / 100,
            "only {entries} of {n} flows tracked"
        );
        let mut times: Vec<f64> = (0..SCRAPES_TIMED)
            .map(|_| {
                let t = Instant::now();
                daemon.scrape_text();
                t.elapsed().as_secs_f64() * 1e3
            })
            .collect();
        times.sort_by(f64::total_cmp);
        println!(
            "| {n} | {:.2} | {:.1} | {:.2} | {:.2} |",
            cpu * 100.0,
            rss_kib(pid)? as f64 / 1024.0,
            times[times.len() / 2],
            times[times.len() - 1]
        );
        daemon.terminate();
    }
    println!();

    println!("## Kernel map memory (LRU hash, preallocated)");
    println!("| --flows.max | map memory (MiB) | bytes per connection |");
    println!("| ---: | ---: | ---: |");
    for max in [65_536u32, 1_048_576] {
        let arg = max.to_string();
        let daemon = spawn_daemon(&setup.a, iface, &["--flows.max", &arg]);
        let id = flows_map_info()?.id();
        let memlock = memlock_bytes(id)?;
        println!(
            "| {max} | {:.1} | {:.0} |",
            memlock as f64 / 1048576.0,
            memlock as f64 / max as f64
        );
        daemon.terminate();
    }
    println!();
    Ok(())
}

fn flows_map_info() -> anyhow::Result<aya::maps::MapInfo> {
    // The newest FLOWS map is the running daemon's.
    aya::maps::loaded_maps()
        .filter_map(Result::ok)
        .filter(|m| m.name_as_str() == Some("FLOWS"))
        .max_by_key(|m| m.id())
        .ok_or_else(|| anyhow!("no FLOWS map loaded"))
}

fn flows_map() -> anyhow::Result<HashMap<MapData, FlowKey, FlowState>> {
    let data = MapData::from_id(flows_map_info()?.id())?;
    Ok(HashMap::try_from(aya::maps::Map::LruHashMap(data))?)
}

/// Synthetic open connections, as if seen on the wire just now.
fn fill(map: &mut HashMap<MapData, FlowKey, FlowState>, n: u32) -> anyhow::Result<()> {
    for i in 0..n {
        let key = FlowKey {
            local_addr: [u32::from_ne_bytes([192, 0, 2, 1]), 0, 0, 0],
            remote_addr: [
                u32::from_ne_bytes([198, 18, (i >> 16) as u8, (i >> 8) as u8]),
                0,
                0,
                0,
            ],
            local_port: 5432,
            remote_port: (i & 0xffff) as u16 | 1024,
            family: 0,
        };
        let state = FlowState {
            first_seen_ns: 1,
            last_seen_ns: 1,
            ..Default::default()
        };
        map.insert(&key, &state, 0)
            .with_context(|| format!("inserting flow {i}"))?;
    }
    Ok(())
}

fn proc_field(pid: u32, file: &str) -> anyhow::Result<String> {
    std::fs::read_to_string(format!("/proc/{pid}/{file}"))
        .with_context(|| format!("/proc/{pid}/{file}"))
}

pub(super) fn cpu_ticks(pid: u32) -> anyhow::Result<u64> {
    let stat = proc_field(pid, "stat")?;
    // Fields after the command name (which may contain spaces): utime is 14th, stime 15th.
    let rest = stat.rsplit_once(')').map(|(_, r)| r).unwrap_or_default();
    let f: Vec<&str> = rest.split_whitespace().collect();
    Ok(f[11].parse::<u64>()? + f[12].parse::<u64>()?)
}

pub(super) fn ticks_per_second() -> f64 {
    // SAFETY: sysconf has no preconditions.
    unsafe { libc::sysconf(libc::_SC_CLK_TCK) as f64 }
}

pub(super) fn rss_kib(pid: u32) -> anyhow::Result<u64> {
    let status = proc_field(pid, "status")?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .ok_or_else(|| anyhow!("no VmRSS for {pid}"))
}

/// Kernel memory charged to the map (bpftool's `bytes_memlock`, from the map's fdinfo).
fn memlock_bytes(id: u32) -> anyhow::Result<u64> {
    /// The field of `bpftool -j map show id N` the bench reads.
    #[derive(serde::Deserialize)]
    struct MapShow {
        bytes_memlock: u64,
    }
    let out = std::process::Command::new("bpftool")
        .args(["-j", "map", "show", "id", &id.to_string()])
        .output()?;
    let map: MapShow = serde_json::from_slice(&out.stdout).with_context(|| {
        format!(
            "no bytes_memlock in `bpftool -j map show id {id}`: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        )
    })?;
    Ok(map.bytes_memlock)
}

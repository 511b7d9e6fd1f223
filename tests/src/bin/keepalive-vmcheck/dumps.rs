//! Diagnostics printed after the workload, for reading a failed run: the offsets the
//! daemon handed its programs (`VMCHECK sockconfig`), per-program run counts
//! (`VMCHECK prog`), and the tracefs events of the keepalive phase (`VMCHECK-TRACE`,
//! `VMCHECK-FORMAT`).

use std::os::fd::{AsFd, BorrowedFd};
use std::path::Path;

use keepalive_tests::bpf_syscall::{ProcessFds, map_lookup, obj_info};

/// `(descriptor number, fdinfo text)` of every descriptor `pid` holds.
fn fdinfos(pid: u32) -> Vec<(i32, String)> {
    let Ok(dir) = std::fs::read_dir(format!("/proc/{pid}/fdinfo")) else {
        return Vec::new();
    };
    dir.filter_map(Result::ok)
        .filter_map(|entry| {
            let text = std::fs::read_to_string(entry.path()).unwrap_or_default();
            let target = entry.file_name().to_string_lossy().parse::<i32>().ok()?;
            Some((target, text))
        })
        .collect()
}

/// Diagnostics: finds the daemon's SockConfig in its .rodata map (by the address of
/// tcp_keepalive_timer, its first field) and prints the offsets it handed the programs.
pub fn sockconfig_dump(pid: u32) {
    let kallsyms = std::fs::read_to_string("/proc/kallsyms").unwrap_or_default();
    let Some(addr) = kallsyms
        .lines()
        .find(|l| l.ends_with(" tcp_keepalive_timer"))
        .and_then(|l| u64::from_str_radix(l.split_whitespace().next()?, 16).ok())
    else {
        return;
    };
    let Ok(fds) = ProcessFds::open(pid) else {
        return;
    };
    for (target, text) in fdinfos(pid) {
        if !text.contains("map_type:") {
            continue;
        }
        let Ok(fd) = fds.get(target) else {
            continue;
        };
        if let Some(fields) = sockconfig_fields(fd.as_fd(), addr) {
            println!(
                "VMCHECK sockconfig keepalive_timer_fn={addr:#x} {}",
                fields.join(" ")
            );
        }
    }
}

/// `name=value` of each SockConfig field, when `map` is a .rodata map holding the
/// address `keepalive_timer_fn` (SockConfig's first field).
fn sockconfig_fields(map: BorrowedFd<'_>, keepalive_timer_fn: u64) -> Option<Vec<String>> {
    const FIELDS: [&str; 13] = [
        "keepalive_timer_off",
        "probes_out_off",
        "skc_family_off",
        "skc_net_off",
        "net_inum_off",
        "netns_inum",
        "timer_function_off",
        "sk_err_off",
        "keepalive_timeout_reason",
        "keepalive_mib",
        "flags",
        "skc_num_off",
        "sk_protocol_off",
    ];
    let mut info = [0u8; 128]; // struct bpf_map_info
    obj_info(map, &mut info).ok()?;
    let value_size = u32::from_le_bytes(info[12..16].try_into().expect("4 bytes")) as usize;
    if !(info[24..40].windows(7).any(|w| w == b".rodata") && value_size < (1 << 20)) {
        return None;
    }
    let mut value = vec![0u8; value_size];
    map_lookup(map, &0u32.to_ne_bytes(), &mut value).ok()?;
    let needle = keepalive_timer_fn.to_le_bytes();
    let at = value.windows(8).position(|w| w == needle)?;
    Some(
        FIELDS
            .iter()
            .enumerate()
            .filter_map(|(i, f)| {
                let o = at + 8 + 4 * i;
                let v = u32::from_le_bytes(value.get(o..o + 4)?.try_into().ok()?);
                Some(format!("{f}={v}"))
            })
            .collect(),
    )
}

/// (program name, run_cnt) of every BPF program `pid` holds, via pidfd_getfd and
/// BPF_OBJ_GET_INFO_BY_FD (the name) and fdinfo (the count; needs bpf_stats_enabled).
pub fn prog_run_counts(pid: u32) -> Vec<(String, u64)> {
    let mut out = Vec::new();
    let Ok(fds) = ProcessFds::open(pid) else {
        return out;
    };
    for (target, text) in fdinfos(pid) {
        let field = |k: &str| {
            text.lines()
                .find_map(|l| l.strip_prefix(k))
                .map(|v| v.trim().to_owned())
        };
        if field("prog_type:").is_none() {
            continue;
        }
        let run_cnt = field("run_cnt:").and_then(|v| v.parse().ok()).unwrap_or(0);
        let mut name = format!("fd{target}");
        if let Ok(fd) = fds.get(target) {
            let mut info = [0u8; 256]; // struct bpf_prog_info
            if obj_info(fd.as_fd(), &mut info).is_ok() {
                let raw = &info[64..80];
                let end = raw.iter().position(|&b| b == 0).unwrap_or(raw.len());
                name = String::from_utf8_lossy(&raw[..end]).into_owned();
            }
        }
        out.push((name, run_cnt));
    }
    out.sort();
    out
}

/// tracefs events recorded during the keepalive phase, printed as `VMCHECK-TRACE` lines
/// (diagnostics: the keepalive timer's entries and the ETIMEDOUT error reports).
pub struct TraceEvents {
    root: Option<&'static Path>,
}

impl TraceEvents {
    const EVENTS: [&'static str; 2] = ["timer/timer_expire_entry", "sock/inet_sk_error_report"];

    pub fn start() -> TraceEvents {
        let root = Path::new("/sys/kernel/tracing");
        if !root.join("events").is_dir() {
            return TraceEvents { root: None };
        }
        let _ = std::fs::write(root.join("trace"), "");
        let _ = std::fs::write(
            root.join("events/timer/timer_expire_entry/filter"),
            "function == tcp_keepalive_timer",
        );
        for e in Self::EVENTS {
            let _ = std::fs::write(root.join("events").join(e).join("enable"), "1");
        }
        TraceEvents { root: Some(root) }
    }

    pub fn dump(&self) {
        let Some(root) = self.root else { return };
        for e in Self::EVENTS {
            let _ = std::fs::write(root.join("events").join(e).join("enable"), "0");
        }
        let _ = std::fs::write(root.join("events/timer/timer_expire_entry/filter"), "0");
        for e in ["timer/timer_expire_entry", "timer/timer_expire_exit"] {
            let f = std::fs::read_to_string(root.join("events").join(e).join("format"));
            for l in f
                .unwrap_or_default()
                .lines()
                .filter(|l| l.contains("field:") && !l.contains("common_"))
            {
                println!("VMCHECK-FORMAT {e} {}", l.trim());
            }
        }
        let text = std::fs::read_to_string(root.join("trace")).unwrap_or_default();
        let lines: Vec<&str> = text.lines().filter(|l| !l.starts_with('#')).collect();
        println!("VMCHECK trace events={}", lines.len());
        // Each ETIMEDOUT report with the two events before it on the same CPU.
        for (i, l) in lines.iter().enumerate() {
            if !(l.contains("inet_sk_error_report") && l.contains("error=110")) {
                continue;
            }
            let cpu = l.split_whitespace().nth(1).unwrap_or("");
            let before: Vec<&&str> = lines[..i]
                .iter()
                .filter(|p| p.split_whitespace().nth(1) == Some(cpu))
                .collect();
            for p in before.iter().rev().take(2).rev() {
                println!("VMCHECK-TRACE   {}", p.trim());
            }
            println!("VMCHECK-TRACE {}", l.trim());
        }
    }
}

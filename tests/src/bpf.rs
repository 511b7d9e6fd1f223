//! What BPF programs and links exist (bpftool), and which ones a process holds.

use std::collections::BTreeSet;
use std::path::Path;

use std::time::{Duration, Instant};

use crate::process::run;
use crate::timing::POLL_INTERVAL;

/// One entry of `bpftool prog show`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ProgInfo {
    pub id: u32,
    pub kind: String,
    /// Empty for unnamed programs; truncated to 15 characters by the kernel.
    pub name: String,
}

/// One entry of `bpftool link show`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LinkInfo {
    pub id: u32,
    pub kind: String,
    pub prog_id: Option<u32>,
    /// The whole entry as printed, for messages.
    pub text: String,
}

/// Splits bpftool's plain output into entries: a line starting with `<id>:`
/// followed by indented continuation lines.
fn entries(out: &str) -> Vec<(u32, String, String)> {
    let mut result: Vec<(u32, String, String)> = Vec::new();
    for line in out.lines() {
        let head = line
            .split_once(':')
            .filter(|(id, _)| !id.is_empty() && id.bytes().all(|b| b.is_ascii_digit()));
        match head {
            Some((id, rest)) => result.push((
                id.parse().expect("bpf id"),
                rest.trim().to_owned(),
                line.to_owned(),
            )),
            None => {
                if let Some(last) = result.last_mut() {
                    last.2.push('\n');
                    last.2.push_str(line);
                }
            }
        }
    }
    result
}

/// The token following `key` in a whitespace-separated line.
fn after<'a>(line: &'a str, key: &str) -> Option<&'a str> {
    let mut tokens = line.split_whitespace();
    tokens.by_ref().find(|t| *t == key)?;
    tokens.next()
}

/// Parses `bpftool prog show` output.
pub fn parse_progs(out: &str) -> Vec<ProgInfo> {
    entries(out)
        .into_iter()
        .map(|(id, first, _)| ProgInfo {
            id,
            kind: first
                .split_whitespace()
                .next()
                .unwrap_or_default()
                .to_owned(),
            name: after(&first, "name").unwrap_or_default().to_owned(),
        })
        .collect()
}

/// Parses `bpftool link show` output.
pub fn parse_links(out: &str) -> Vec<LinkInfo> {
    entries(out)
        .into_iter()
        .map(|(id, first, text)| LinkInfo {
            id,
            kind: first
                .split_whitespace()
                .next()
                .unwrap_or_default()
                .to_owned(),
            prog_id: after(&first, "prog").and_then(|p| p.parse().ok()),
            text,
        })
        .collect()
}

/// Every BPF program loaded in the kernel (all namespaces).
pub fn bpftool_progs() -> Vec<ProgInfo> {
    parse_progs(&run(&["bpftool", "prog", "show"]))
}

/// Every BPF link in the kernel (all namespaces).
pub fn bpftool_links() -> Vec<LinkInfo> {
    parse_links(&run(&["bpftool", "link", "show"]))
}

/// Lines of `bpftool net show` output that mention interface `ifname`
/// (e.g. `kat1a(5) clsact/ingress ka_ingress id 42` or
/// `kat1a(5) tcx/ingress ka_ingress prog_id 42 link_id 7`).
pub fn net_show_lines<'a>(out: &'a str, ifname: &str) -> Vec<&'a str> {
    let prefix = format!("{ifname}(");
    out.lines()
        .filter(|l| l.trim_start().starts_with(&prefix))
        .collect()
}

/// Program ids in `bpftool net show` lines (the token after `id`/`prog_id`).
pub fn net_show_prog_ids<'a>(lines: impl IntoIterator<Item = &'a str>) -> BTreeSet<u32> {
    let mut ids = BTreeSet::new();
    for line in lines {
        let tokens: Vec<&str> = line.split_whitespace().collect();
        for pair in tokens.windows(2) {
            if matches!(pair[0], "id" | "prog_id")
                && let Ok(id) = pair[1].parse()
            {
                ids.insert(id);
            }
        }
    }
    ids
}

/// Polls `cond` until it holds or `timeout` passed; returns its last value.
pub fn wait_until(timeout: Duration, mut cond: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + timeout;
    loop {
        if cond() {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        std::thread::sleep(POLL_INTERVAL * 5);
    }
}

/// BPF objects a process holds file descriptors to (from /proc/PID/fdinfo).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct BpfObjects {
    /// Programs held directly, or through a link.
    pub prog_ids: BTreeSet<u32>,
    pub link_ids: BTreeSet<u32>,
}

/// Reads `prog_id:`/`link_id:` of the process's bpf-prog and bpf_link fds.
pub fn proc_bpf_objects(pid: u32) -> BpfObjects {
    let fd_dir = format!("/proc/{pid}/fd");
    let mut objects = BpfObjects::default();
    let dir = std::fs::read_dir(&fd_dir).unwrap_or_else(|e| panic!("reading {fd_dir}: {e}"));
    for entry in dir.flatten() {
        let Ok(target) = std::fs::read_link(entry.path()) else {
            continue;
        };
        let target = target.to_string_lossy().into_owned();
        let is_prog = target == "anon_inode:bpf-prog";
        let is_link = target == "anon_inode:bpf_link";
        if !is_prog && !is_link {
            continue;
        }
        let fdinfo = Path::new("/proc")
            .join(pid.to_string())
            .join("fdinfo")
            .join(entry.file_name());
        let Ok(info) = std::fs::read_to_string(&fdinfo) else {
            continue;
        };
        for line in info.lines() {
            let Some((key, value)) = line.split_once(':') else {
                continue;
            };
            let Ok(value) = value.trim().parse::<u32>() else {
                continue;
            };
            match key.trim() {
                "prog_id" => {
                    objects.prog_ids.insert(value);
                }
                "link_id" => {
                    objects.link_ids.insert(value);
                }
                _ => {}
            }
        }
    }
    objects
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_bpftool_text() {
        let progs = "12: cgroup_device  tag 03b4eaae2f14641a  gpl\n\
                     \tloaded_at 2024-01-01T00:00:00+0000  uid 0\n\
                     45: sched_cls  name ka_tc_ingress  tag 0011223344556677  gpl\n\
                     \txlated 296B  jited 183B  memlock 4096B  map_ids 3,4\n";
        let p = parse_progs(progs);
        assert_eq!(p.len(), 2);
        assert_eq!(
            (p[0].id, p[0].kind.as_str(), p[0].name.as_str()),
            (12, "cgroup_device", "")
        );
        assert_eq!((p[1].id, p[1].name.as_str()), (45, "ka_tc_ingress"));
        let links = "3: tcx  prog 45  \n\tifindex kat1a(5)  attach_type tcx_ingress  \n\
                     4: perf_event  prog 46  \n";
        let l = parse_links(links);
        assert_eq!(l.len(), 2);
        assert_eq!(
            (l[0].id, l[0].kind.as_str(), l[0].prog_id),
            (3, "tcx", Some(45))
        );
        assert!(l[0].text.contains("kat1a"));
        assert_eq!(l[1].prog_id, Some(46));
        let unknown = parse_links("7: type 11  prog 47  \n");
        assert_eq!(
            (unknown[0].kind.as_str(), unknown[0].prog_id),
            ("type", Some(47))
        );
    }

    #[test]
    fn parses_net_show() {
        let out = "xdp:\n\ntc:\nkat1a(5) clsact/ingress ka_ingress:[ka_ingress] id 42\n\
                   kat1a(5) tcx/egress ka_egress prog_id 43 link_id 7\n\
                   kat12a(6) clsact/ingress other id 44\n\nflow_dissector:\n";
        let lines = net_show_lines(out, "kat1a");
        assert_eq!(lines.len(), 2);
        assert_eq!(net_show_prog_ids(lines), BTreeSet::from([42, 43]));
    }
}

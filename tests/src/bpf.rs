//! What BPF programs and links exist (`bpftool -j`, read with serde_json), and which
//! ones a process holds (/proc/PID/fdinfo). bpftool rather than aya's
//! `loaded_programs()`/`loaded_links()`: those yield an error for every object that goes
//! away while they iterate (to be told apart from real errors), and the tests also need
//! what `bpftool net show` reports per interface (tc filters), which aya does not query.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

use serde::Deserialize;

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
    /// The link type's name, or its number for a type this bpftool does not know
    /// (bpftool 7.1 prints TCX links as type 11).
    pub kind: String,
    pub prog_id: Option<u32>,
    /// The whole entry as bpftool printed it (JSON), for messages.
    pub text: String,
}

/// bpftool's `type`: a name, or the kernel's number when bpftool has no name for it.
#[derive(Deserialize)]
#[serde(untagged)]
enum TypeName {
    Name(String),
    Number(u64),
}

impl TypeName {
    fn into_string(self) -> String {
        match self {
            TypeName::Name(n) => n,
            TypeName::Number(n) => n.to_string(),
        }
    }
}

/// The fields of a `bpftool -j prog show` entry the tests read.
#[derive(Deserialize)]
struct ProgJson {
    id: u32,
    #[serde(rename = "type")]
    kind: TypeName,
    #[serde(default)]
    name: String,
}

/// The fields of a `bpftool -j link show` entry the tests read.
#[derive(Deserialize)]
struct LinkJson {
    id: u32,
    #[serde(rename = "type")]
    kind: TypeName,
    prog_id: Option<u32>,
}

/// One attachment of `bpftool -j net show` (xdp, tc, tcx, flow_dissector, ...):
/// clsact filters carry the program as `id`, TCX links as `prog_id`.
#[derive(Deserialize)]
struct NetAttachment {
    devname: Option<String>,
    id: Option<u32>,
    prog_id: Option<u32>,
}

/// Parses `bpftool -j prog show` output.
pub fn parse_progs(out: &str) -> Vec<ProgInfo> {
    let progs: Vec<ProgJson> = serde_json::from_str(out)
        .unwrap_or_else(|e| panic!("`bpftool -j prog show` printed unexpected JSON ({e}): {out}"));
    progs
        .into_iter()
        .map(|p| ProgInfo {
            id: p.id,
            kind: p.kind.into_string(),
            name: p.name,
        })
        .collect()
}

/// Parses `bpftool -j link show` output.
pub fn parse_links(out: &str) -> Vec<LinkInfo> {
    let entries: Vec<serde_json::Value> = serde_json::from_str(out)
        .unwrap_or_else(|e| panic!("`bpftool -j link show` printed unexpected JSON ({e}): {out}"));
    entries
        .into_iter()
        .map(|entry| {
            let text = entry.to_string();
            let l: LinkJson = serde_json::from_value(entry).unwrap_or_else(|e| {
                panic!("unexpected `bpftool -j link show` entry ({e}): {text}")
            });
            LinkInfo {
                id: l.id,
                kind: l.kind.into_string(),
                prog_id: l.prog_id,
                text,
            }
        })
        .collect()
}

/// Every BPF program loaded in the kernel (all namespaces).
pub fn bpftool_progs() -> Vec<ProgInfo> {
    parse_progs(&run(&["bpftool", "-j", "prog", "show"]))
}

/// Every BPF link in the kernel (all namespaces).
pub fn bpftool_links() -> Vec<LinkInfo> {
    parse_links(&run(&["bpftool", "-j", "link", "show"]))
}

/// Program ids attached to interface `ifname` in `bpftool -j net show` output
/// (any section: xdp, tc filters, tcx links).
pub fn net_show_prog_ids(out: &str, ifname: &str) -> BTreeSet<u32> {
    let sections: Vec<BTreeMap<String, Vec<NetAttachment>>> = serde_json::from_str(out)
        .unwrap_or_else(|e| panic!("`bpftool -j net show` printed unexpected JSON ({e}): {out}"));
    sections
        .into_iter()
        .flat_map(BTreeMap::into_values)
        .flatten()
        .filter(|a| a.devname.as_deref() == Some(ifname))
        .filter_map(|a| a.id.or(a.prog_id))
        .collect()
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
    fn parses_bpftool_json() {
        let progs = r#"[{"id":12,"type":"cgroup_device","tag":"03b4eaae2f14641a","gpl_compatible":true},
            {"id":45,"type":"sched_cls","name":"ka_tc_ingress","tag":"0011223344556677","map_ids":[3,4]},
            {"id":46,"type":32,"name":"future"}]"#;
        let p = parse_progs(progs);
        assert_eq!(p.len(), 3);
        assert_eq!(
            (p[0].id, p[0].kind.as_str(), p[0].name.as_str()),
            (12, "cgroup_device", "")
        );
        assert_eq!((p[1].id, p[1].name.as_str()), (45, "ka_tc_ingress"));
        assert_eq!(p[2].kind, "32");
        let links = r#"[{"id":3,"type":"tcx","prog_id":45,"ifindex":5,"attach_type":"tcx_ingress"},
            {"id":4,"type":"perf_event","prog_id":46},{"id":7,"type":11,"prog_id":47}]"#;
        let l = parse_links(links);
        assert_eq!(l.len(), 3);
        assert_eq!(
            (l[0].id, l[0].kind.as_str(), l[0].prog_id),
            (3, "tcx", Some(45))
        );
        assert!(l[0].text.contains("tcx_ingress"));
        assert_eq!(l[1].prog_id, Some(46));
        assert_eq!((l[2].kind.as_str(), l[2].prog_id), ("11", Some(47)));
        assert!(parse_progs("[]").is_empty());
    }

    #[test]
    fn parses_net_show() {
        let out = r#"[{"xdp":[],"tc":[
            {"devname":"kat1a","ifindex":5,"kind":"clsact/ingress","name":"ka_ingress","id":42},
            {"devname":"kat12a","ifindex":6,"kind":"clsact/ingress","name":"other","id":44}],
            "tcx":[{"devname":"kat1a","ifindex":5,"kind":"tcx/egress","name":"ka_egress","prog_id":43,"link_id":7}],
            "flow_dissector":[{"id":9}]}]"#;
        assert_eq!(net_show_prog_ids(out, "kat1a"), BTreeSet::from([42, 43]));
        assert!(net_show_prog_ids(r#"[{"xdp":[],"tc":[],"flow_dissector":[]}]"#, "lo").is_empty());
    }
}

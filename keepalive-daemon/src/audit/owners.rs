//! The process holding a socket, for the connections at risk only: the kernel's socket
//! record carries the socket's inode, and /proc/PID/fd/N links read `socket:[INODE]`.
//! Reading every descriptor of the host is the cost, so the walk is bounded in
//! descriptors and time and stops as soon as every wanted socket is found; sockets not
//! found in budget have no process (the connection view shows none).
//!
//! Processes the daemon may not look into (another user's, or one with capabilities the
//! daemon dropped after attaching) are skipped: their sockets have no process.
//!
//! Hand-written: a bounded /proc walk; procfs crates read every fd eagerly with no bound.

use std::{
    collections::{HashMap, HashSet},
    path::Path,
    time::{Duration, Instant},
};

/// Descriptor links read per run, at most.
pub const MAX_FDS: usize = 262_144;
/// Time the walk may take per run.
pub const BUDGET: Duration = Duration::from_millis(250);

/// What a search found: `comm[pid]` by socket inode, and whether every process was
/// looked at (an inode not found by a complete search has no owner to find).
#[derive(Debug, Default)]
pub struct Found {
    pub owners: HashMap<u64, String>,
    pub complete: bool,
    /// Processes whose descriptors were all read: a search cut short by the bounds
    /// resumes after them next time (`skip`), so a host with more descriptors than one
    /// search may read is still covered within a few runs.
    pub scanned: Vec<u32>,
}

/// `comm[pid]` by socket inode, for the `wanted` inodes found within the bounds,
/// leaving out the processes in `skip`.
pub fn find(wanted: &HashSet<u64>, skip: &HashSet<u32>) -> Found {
    find_in(Path::new("/proc"), wanted, skip, MAX_FDS, BUDGET)
}

/// [`find`] over another /proc and bounds (for tests).
pub fn find_in(
    proc_root: &Path,
    wanted: &HashSet<u64>,
    skip: &HashSet<u32>,
    max_fds: usize,
    budget: Duration,
) -> Found {
    let started = Instant::now();
    let mut out = HashMap::new();
    let mut read = 0usize;
    if wanted.is_empty() {
        return Found {
            owners: out,
            complete: true,
            scanned: Vec::new(),
        };
    }
    let mut scanned = Vec::new();
    let Ok(procs) = std::fs::read_dir(proc_root) else {
        return Found::default();
    };
    let mut complete = true;
    'procs: for p in procs.flatten() {
        let Some(pid) = p.file_name().to_str().and_then(|s| s.parse::<u32>().ok()) else {
            continue;
        };
        if skip.contains(&pid) {
            continue;
        }
        let Ok(fds) = std::fs::read_dir(p.path().join("fd")) else {
            continue;
        };
        let mut comm: Option<String> = None;
        for fd in fds.flatten() {
            read += 1;
            if read > max_fds || started.elapsed() > budget {
                complete = false;
                break 'procs;
            }
            let Some(inode) = std::fs::read_link(fd.path())
                .ok()
                .and_then(|l| socket_inode(l.to_str()?))
            else {
                continue;
            };
            if wanted.contains(&inode) && !out.contains_key(&inode) {
                let comm = comm.get_or_insert_with(|| read_comm(&p.path()));
                out.insert(inode, format!("{comm}[{pid}]"));
                if out.len() == wanted.len() {
                    break 'procs;
                }
            }
        }
        scanned.push(pid);
    }
    Found {
        owners: out,
        complete,
        scanned,
    }
}

/// The inode of a `socket:[N]` link target.
pub fn socket_inode(link: &str) -> Option<u64> {
    link.strip_prefix("socket:[")?
        .strip_suffix(']')?
        .parse()
        .ok()
}

fn read_comm(proc_dir: &Path) -> String {
    std::fs::read_to_string(proc_dir.join("comm"))
        .map(|s| s.trim_end().to_owned())
        .unwrap_or_else(|_| "?".to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::MetadataExt as _;

    #[test]
    fn socket_links_parse() {
        assert_eq!(socket_inode("socket:[12345]"), Some(12345));
        assert_eq!(socket_inode("pipe:[12345]"), None);
        assert_eq!(socket_inode("/dev/null"), None);
        assert_eq!(socket_inode("socket:[x]"), None);
    }

    /// A socket of this process is found as ours, by its inode.
    #[test]
    fn finds_own_socket() {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let inode = std::fs::metadata(format!(
            "/proc/self/fd/{}",
            std::os::fd::AsRawFd::as_raw_fd(&l)
        ))
        .unwrap()
        .ino();
        let wanted: HashSet<u64> = [inode].into();
        let comm = read_comm(Path::new("/proc/self"));
        let found = find(&wanted, &HashSet::new());
        assert!(found.complete);
        assert_eq!(
            found.owners.get(&inode),
            Some(&format!("{comm}[{}]", std::process::id()))
        );
        // No budget: nothing found, and no error.
        // A search resumed after this process does not read it again.
        let resumed = find(&wanted, &[std::process::id()].into());
        assert!(resumed.owners.is_empty() && resumed.complete);
        assert!(!resumed.scanned.contains(&std::process::id()));
        let none = find_in(Path::new("/proc"), &wanted, &HashSet::new(), 0, BUDGET);
        assert!(none.owners.is_empty() && !none.complete);
    }
}

//! The network namespaces the inventory walks with --socket.all-namespaces: the distinct
//! namespaces of /proc/*/ns/net and /run/netns/* (named namespaces that may have no
//! process in them), each opened once and told apart by inode.
//!
//! Hand-written: a directory listing and a stat per entry; no crate lists namespaces.

use std::{
    collections::HashSet,
    fs::File,
    os::unix::fs::MetadataExt as _,
    path::{Path, PathBuf},
    time::{Duration, Instant},
};

/// Processes looked at per listing, at most: a bound on the work of one run.
pub const MAX_PROCESSES: usize = 1 << 20;
/// Namespaces walked per run, at most.
pub const MAX_NAMESPACES: usize = 4096;
/// Time one listing may take.
pub const LIST_BUDGET: Duration = Duration::from_secs(2);

/// An open network namespace.
#[derive(Debug)]
pub struct Namespace {
    /// The namespace's inode (what `SocketRecord::netns_inum` says).
    pub inode: u64,
    /// Where it was opened from (for messages).
    pub path: PathBuf,
    pub file: File,
}

/// What a listing found, and what it could not look at.
#[derive(Debug, Default)]
pub struct Listing {
    pub namespaces: Vec<Namespace>,
    /// Entries that could not be opened (a process that exited is not counted).
    pub unreadable: usize,
    /// The first error of those, for the log.
    pub first_error: Option<String>,
    /// A bound (process count, namespace count, time) cut the listing short.
    pub truncated: bool,
}

/// The distinct network namespaces of the host.
pub fn list() -> Listing {
    list_from(Path::new("/proc"), Path::new("/run/netns"))
}

/// [`list`] over other roots (for tests).
pub fn list_from(proc_root: &Path, run_netns: &Path) -> Listing {
    let started = Instant::now();
    let mut out = Listing::default();
    let mut seen = HashSet::new();
    let procs = std::fs::read_dir(proc_root)
        .into_iter()
        .flatten()
        .flatten()
        .filter(|e| e.file_name().to_str().is_some_and(is_pid))
        .map(|e| e.path().join("ns/net"));
    let named = std::fs::read_dir(run_netns)
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| e.path());
    for (i, path) in procs.chain(named).enumerate() {
        if i >= MAX_PROCESSES
            || out.namespaces.len() >= MAX_NAMESPACES
            || started.elapsed() > LIST_BUDGET
        {
            out.truncated = true;
            break;
        }
        add(&mut out, &mut seen, path);
    }
    out
}

/// The inode of the calling thread's network namespace.
pub fn own_inode() -> Option<u64> {
    std::fs::metadata("/proc/thread-self/ns/net")
        .ok()
        .map(|m| m.ino())
}

fn is_pid(name: &str) -> bool {
    !name.is_empty() && name.bytes().all(|b| b.is_ascii_digit())
}

/// Opens `path` unless its namespace was seen already (stat first: no descriptor for
/// the thousands of processes that share a namespace).
fn add(out: &mut Listing, seen: &mut HashSet<u64>, path: PathBuf) {
    let inode = match std::fs::metadata(&path) {
        Ok(m) => m.ino(),
        Err(e) => return note_error(out, &path, e),
    };
    if !seen.insert(inode) {
        return;
    }
    match File::open(&path) {
        // The inode of the open file: the entry may have changed since the stat.
        Ok(file) => match file.metadata() {
            Ok(m) if m.ino() == inode => out.namespaces.push(Namespace { inode, path, file }),
            Ok(m) => {
                if seen.insert(m.ino()) {
                    out.namespaces.push(Namespace {
                        inode: m.ino(),
                        path,
                        file,
                    });
                }
            }
            Err(e) => note_error(out, &path, e),
        },
        Err(e) => note_error(out, &path, e),
    }
}

fn note_error(out: &mut Listing, path: &Path, e: std::io::Error) {
    // A process that exited between the listing and the stat is not an error.
    if e.kind() == std::io::ErrorKind::NotFound || e.raw_os_error() == Some(libc::ESRCH) {
        return;
    }
    out.unreadable += 1;
    if out.first_error.is_none() {
        out.first_error = Some(format!("{}: {e}", path.display()));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Against the real /proc: this process's namespace is found, once.
    #[test]
    fn own_namespace_listed_once() {
        let own = std::fs::metadata("/proc/self/ns/net").unwrap().ino();
        let dir = std::env::temp_dir().join(format!("ka-netns-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        // Two "named namespaces" that are the same as ours: deduplicated.
        for name in ["a", "b"] {
            let _ = std::fs::remove_file(dir.join(name));
            std::os::unix::fs::symlink("/proc/self/ns/net", dir.join(name)).unwrap();
        }
        let l = list_from(Path::new("/nonexistent-proc"), &dir);
        std::fs::remove_dir_all(&dir).unwrap();
        let inodes: Vec<u64> = l.namespaces.iter().map(|n| n.inode).collect();
        assert_eq!(inodes, [own]);
        assert!(!l.truncated);
        let l = list();
        let ours = l.namespaces.iter().filter(|n| n.inode == own).count();
        assert_eq!(ours, 1, "{:?}", l.first_error);
    }

    #[test]
    fn pids_only() {
        assert!(is_pid("1") && is_pid("4242"));
        assert!(!is_pid("self") && !is_pid("") && !is_pid("1a"));
    }
}

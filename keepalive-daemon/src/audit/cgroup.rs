//! cgroup v2 ids (what the kernel reports per socket) to paths such as
//! `/system.slice/redis.service`: on cgroup v2 a cgroup's id is the inode number of its
//! directory, so one walk of the hierarchy maps them all. The map is a cache, bounded,
//! refreshed by a new walk when an id is missing, at most once per inventory run.
//!
//! Hand-written: a bounded directory walk; no crate maps cgroup ids to paths.

use std::{
    collections::HashMap,
    os::unix::fs::MetadataExt as _,
    path::{Path, PathBuf},
    sync::Arc,
    time::{Duration, Instant},
};

/// cgroups remembered at most (and directories visited per walk).
pub const MAX_CGROUPS: usize = 65_536;
/// Time one walk of the hierarchy may take.
pub const WALK_BUDGET: Duration = Duration::from_millis(500);

/// statfs(2) f_type of cgroup2 (include/uapi/linux/magic.h).
const CGROUP2_SUPER_MAGIC: i64 = 0x6367_7270;

/// The cgroup v2 hierarchy's mount point: /sys/fs/cgroup (unified) or
/// /sys/fs/cgroup/unified (hybrid), `None` without cgroup v2.
pub fn find_root() -> Option<PathBuf> {
    ["/sys/fs/cgroup", "/sys/fs/cgroup/unified"]
        .into_iter()
        .map(PathBuf::from)
        .find(|p| is_cgroup2(p))
}

fn is_cgroup2(path: &Path) -> bool {
    use std::os::unix::ffi::OsStrExt as _;
    let Ok(c) = std::ffi::CString::new(path.as_os_str().as_bytes()) else {
        return false;
    };
    // SAFETY: zeroed statfs is a valid out-parameter; `c` is a NUL-terminated path.
    let mut st: libc::statfs = unsafe { std::mem::zeroed() };
    // SAFETY: valid pointers for the duration of the call.
    let rc = unsafe { libc::statfs(c.as_ptr(), &mut st) };
    rc == 0 && st.f_type as i64 == CGROUP2_SUPER_MAGIC
}

/// Paths by cgroup id.
#[derive(Debug)]
pub struct CgroupPaths {
    root: Option<PathBuf>,
    /// Shared with every connection of the cgroup (one allocation per cgroup, not per
    /// connection: 100,000 sockets of one service hold one path).
    paths: HashMap<u64, Arc<str>>,
    /// Whether this run refreshed the map already.
    refreshed: bool,
}

impl CgroupPaths {
    pub fn new(root: Option<PathBuf>) -> CgroupPaths {
        CgroupPaths {
            root,
            paths: HashMap::new(),
            refreshed: false,
        }
    }

    /// Allows one refresh again (called at the start of each inventory run).
    pub fn begin_run(&mut self) {
        self.refreshed = false;
    }

    /// The path of cgroup `id`, walking the hierarchy again on a miss (once per run).
    /// `None` for id 0 (unknown) and for cgroups that are gone.
    pub fn resolve(&mut self, id: u64) -> Option<Arc<str>> {
        if id == 0 {
            return None;
        }
        if let Some(p) = self.paths.get(&id) {
            return Some(p.clone());
        }
        if self.refreshed {
            return None;
        }
        self.refreshed = true;
        if let Some(root) = &self.root {
            self.paths = walk(root).into_iter().map(|(k, v)| (k, v.into())).collect();
        }
        self.paths.get(&id).cloned()
    }

    /// The path of cgroup `id` if known, without walking (for the endings task).
    pub fn lookup(&self, id: u64) -> Option<String> {
        self.paths.get(&id).map(|p| p.to_string())
    }
}

/// Every cgroup under `root` (the root itself is "/"), within [`MAX_CGROUPS`] and
/// [`WALK_BUDGET`].
pub fn walk(root: &Path) -> HashMap<u64, String> {
    let started = Instant::now();
    let mut out = HashMap::new();
    let mut stack = vec![(root.to_path_buf(), String::from("/"))];
    while let Some((dir, rel)) = stack.pop() {
        if out.len() >= MAX_CGROUPS || started.elapsed() > WALK_BUDGET {
            break;
        }
        let Ok(meta) = std::fs::metadata(&dir) else {
            continue;
        };
        let Ok(entries) = std::fs::read_dir(&dir) else {
            continue;
        };
        for e in entries.flatten() {
            if e.file_type().is_ok_and(|t| t.is_dir())
                && let Some(name) = e.file_name().to_str()
            {
                let child = if rel == "/" {
                    format!("/{name}")
                } else {
                    format!("{rel}/{name}")
                };
                stack.push((e.path(), child));
            }
        }
        out.insert(meta.ino(), rel);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A tree of plain directories stands for the hierarchy: ids are their inodes.
    #[test]
    fn ids_map_to_paths_and_misses_refresh_once_per_run() {
        let root = std::env::temp_dir().join(format!("ka-cgroup-test-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&root);
        std::fs::create_dir_all(root.join("system.slice/redis.service")).unwrap();
        let ino = |p: &str| std::fs::metadata(root.join(p)).unwrap().ino();
        let redis = ino("system.slice/redis.service");
        let mut c = CgroupPaths::new(Some(root.clone()));
        assert_eq!(c.resolve(0), None);
        assert_eq!(
            c.resolve(redis).as_deref(),
            Some("/system.slice/redis.service")
        );
        assert_eq!(c.resolve(ino("")).as_deref(), Some("/"));
        // A cgroup created after the walk: not found until the next run's refresh.
        std::fs::create_dir_all(root.join("user.slice")).unwrap();
        let user = ino("user.slice");
        assert_eq!(c.resolve(user), None);
        assert_eq!(c.lookup(user), None);
        c.begin_run();
        assert_eq!(c.resolve(user).as_deref(), Some("/user.slice"));
        assert_eq!(
            c.lookup(redis).as_deref(),
            Some("/system.slice/redis.service")
        );
        std::fs::remove_dir_all(&root).unwrap();
    }
}

//! Raw bpf(2), for the few BPF objects the tests handle without aya or a
//! toolchain: the tc VLAN probe ([`crate::tc_vlan_probe`]) and the kernel-matrix
//! check's fentry probe and diagnostics (`keepalive-vmcheck`). Holds the attribute
//! block, the syscall, the commands used on existing descriptors (object info, map
//! lookup) and the duplication of another process's descriptors through a pidfd.
//!
//! Attribute offsets follow `union bpf_attr` in include/uapi/linux/bpf.h; bpftool
//! (see [`crate::bpf`]) is the tool for everything that can be read from outside.

use std::io;
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd};

pub const BPF_MAP_CREATE: libc::c_long = 0;
pub const BPF_MAP_LOOKUP_ELEM: libc::c_long = 1;
pub const BPF_PROG_LOAD: libc::c_long = 5;
pub const BPF_OBJ_GET_INFO_BY_FD: libc::c_long = 15;
pub const BPF_RAW_TRACEPOINT_OPEN: libc::c_long = 17;
pub const BPF_LINK_CREATE: libc::c_long = 28;

/// A zero-padded `union bpf_attr`. 128 bytes hold every command used here, and the
/// kernel accepts a longer block than it knows as long as the excess is zero.
#[repr(C, align(8))]
#[derive(Clone, Debug)]
pub struct Attr([u8; 128]);

impl Default for Attr {
    fn default() -> Attr {
        Attr([0; 128])
    }
}

impl Attr {
    /// An all-zero attribute block.
    pub fn new() -> Attr {
        Attr::default()
    }

    /// Stores `v` (native endianness, as the kernel reads it) at byte `off`.
    pub fn u32(&mut self, off: usize, v: u32) -> &mut Attr {
        self.bytes(off, &v.to_ne_bytes())
    }

    /// Stores `v` (native endianness) at byte `off`.
    pub fn u64(&mut self, off: usize, v: u64) -> &mut Attr {
        self.bytes(off, &v.to_ne_bytes())
    }

    /// Stores a user-space address (the kernel's `__aligned_u64` pointers).
    pub fn ptr<T>(&mut self, off: usize, p: *const T) -> &mut Attr {
        self.u64(off, p as u64)
    }

    /// Copies `b` to byte `off` (e.g. a NUL-padded object name).
    pub fn bytes(&mut self, off: usize, b: &[u8]) -> &mut Attr {
        self.0[off..off + b.len()].copy_from_slice(b);
        self
    }
}

/// bpf(`cmd`, `attr`): the kernel's non-negative return value, or errno.
pub fn bpf(cmd: libc::c_long, attr: &mut Attr) -> io::Result<i64> {
    // SAFETY: bpf(2) with a zero-padded attribute block we own; the kernel reads (and
    // for some commands writes back) at most its 128 bytes, and every pointer stored
    // in it was set by the caller to memory that outlives the call.
    let rc = unsafe { libc::syscall(libc::SYS_bpf, cmd, attr.0.as_mut_ptr(), attr.0.len()) };
    if rc < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(rc)
}

/// bpf(`cmd`, `attr`) for a command that returns a new descriptor.
pub fn bpf_fd(cmd: libc::c_long, attr: &mut Attr) -> io::Result<OwnedFd> {
    bpf(cmd, attr).map(|rc| {
        // SAFETY: the kernel just returned this new descriptor to us.
        unsafe { OwnedFd::from_raw_fd(rc as i32) }
    })
}

/// BPF_OBJ_GET_INFO_BY_FD: fills `info` (a `bpf_prog_info`, `bpf_map_info`, ...)
/// with at most `info.len()` bytes.
pub fn obj_info(fd: BorrowedFd<'_>, info: &mut [u8]) -> io::Result<()> {
    let mut attr = Attr::new();
    attr.u32(0, fd.as_raw_fd() as u32)
        .u32(4, info.len() as u32)
        .ptr(8, info.as_mut_ptr());
    bpf(BPF_OBJ_GET_INFO_BY_FD, &mut attr).map(drop)
}

/// BPF_MAP_LOOKUP_ELEM: copies the value at `key` into `value`, which must be the
/// map's value size.
pub fn map_lookup(map: BorrowedFd<'_>, key: &[u8], value: &mut [u8]) -> io::Result<()> {
    let mut attr = Attr::new();
    attr.u32(0, map.as_raw_fd() as u32)
        .ptr(8, key.as_ptr())
        .ptr(16, value.as_mut_ptr());
    bpf(BPF_MAP_LOOKUP_ELEM, &mut attr).map(drop)
}

/// The descriptors of another process (e.g. the daemon's maps and programs),
/// duplicated into ours with pidfd_getfd(2).
#[derive(Debug)]
pub struct ProcessFds {
    pidfd: OwnedFd,
}

impl ProcessFds {
    /// pidfd_open(2) on `pid` (a child of ours, or any process when root).
    pub fn open(pid: u32) -> io::Result<ProcessFds> {
        // SAFETY: pidfd_open(2) takes a pid and flags and returns a new descriptor.
        let rc = unsafe { libc::syscall(libc::SYS_pidfd_open, pid, 0) };
        if rc < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: the kernel just returned this new descriptor to us.
        let pidfd = unsafe { OwnedFd::from_raw_fd(rc as i32) };
        Ok(ProcessFds { pidfd })
    }

    /// Our duplicate of the process's descriptor `target`.
    pub fn get(&self, target: i32) -> io::Result<OwnedFd> {
        // SAFETY: pidfd_getfd(2) duplicates the process's descriptor into ours.
        let rc = unsafe { libc::syscall(libc::SYS_pidfd_getfd, self.pidfd.as_raw_fd(), target, 0) };
        if rc < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: the kernel just returned this new descriptor to us.
        Ok(unsafe { OwnedFd::from_raw_fd(rc as i32) })
    }
}

/// Kernel BPF run-time statistics enabled for as long as this lives, through a
/// BPF_ENABLE_STATS file descriptor: reference-counted by the kernel, so it neither
/// clobbers nor is undone by kernel.bpf_stats_enabled writes of other processes, and it
/// ends with the descriptor even if the test dies.
pub struct BpfStats {
    _fd: OwnedFd,
}

impl BpfStats {
    /// Panics when the kernel refuses (before 5.8, or without CAP_SYS_ADMIN).
    pub fn enable() -> BpfStats {
        /// `enum bpf_cmd` BPF_ENABLE_STATS (5.8+).
        const BPF_ENABLE_STATS: libc::c_long = 32;
        // `union bpf_attr` for it: `struct { __u32 type; }`, BPF_STATS_RUN_TIME = 0.
        let fd = bpf_fd(BPF_ENABLE_STATS, Attr::new().u32(0, 0))
            .unwrap_or_else(|e| panic!("bpf(BPF_ENABLE_STATS): {e}"));
        BpfStats { _fd: fd }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn attributes_land_at_their_offsets() {
        let mut a = Attr::new();
        a.u32(4, 0x0102_0304).u64(8, 7).bytes(48, b"ab");
        assert_eq!(a.0[4..8], 0x0102_0304u32.to_ne_bytes());
        assert_eq!(a.0[8..16], 7u64.to_ne_bytes());
        assert_eq!(&a.0[48..50], b"ab");
        assert!(a.0[..4].iter().chain(&a.0[50..]).all(|&b| b == 0));
    }
}

//! Reading the `iter/tcp` program: one BPF_ITER_CREATE per walk, read to the end.
//!
//! Hand-written (the link's fd found once in /proc/self/fdinfo, BPF_ITER_CREATE per
//! walk): aya's IterLink::into_file() consumes the link, so it gives one walk per
//! attach, and aya exposes neither the link's fd nor a way to create another iterator
//! from it.

use std::{
    fs::File,
    os::fd::{AsRawFd as _, BorrowedFd, FromRawFd as _, OwnedFd, RawFd},
};

use keepalive_common::audit::{SocketRecord, record_flags};

use super::{AuditKernelError, Walk, WalkEnd};

/// BPF_ITER_CREATE in enum bpf_cmd (include/uapi/linux/bpf.h).
const BPF_ITER_CREATE: libc::c_long = 33;

/// Records one walk keeps at most: 120 bytes each, 120 MB at this bound.
pub const MAX_RECORDS_PER_WALK: usize = 1_000_000;
const RECORD: usize = std::mem::size_of::<SocketRecord>();

fn bpf(cmd: libc::c_long, attr: &mut [u32; 4]) -> std::io::Result<OwnedFd> {
    // SAFETY: bpf(2) with a zero-padded attribute union of the size passed; the command
    // used reads only its first words and returns a new fd or -1.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_bpf,
            cmd,
            attr.as_mut_ptr(),
            std::mem::size_of_val(attr) as libc::c_uint,
        )
    };
    if rc < 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: the kernel just returned this fd to us; nothing else owns it.
    Ok(unsafe { OwnedFd::from_raw_fd(rc as i32) })
}

/// An fd of the attached iterator link, duplicated from the one aya's FdLink holds (aya
/// keeps it private). Not BPF_LINK_GET_FD_BY_ID: that needs CAP_SYS_ADMIN, which the
/// systemd unit does not grant, and without it the inventory was off under the unit.
/// The kernel names each bpf link's id in /proc/self/fdinfo/N (`link_id:`, printed by
/// bpf_link_show_fdinfo() in kernel/bpf/syscall.c since 5.8).
pub fn link_fd(link_id: u32) -> std::io::Result<OwnedFd> {
    let want = link_id.to_string();
    for entry in std::fs::read_dir("/proc/self/fdinfo")? {
        let entry = entry?;
        let Ok(fd) = entry.file_name().to_string_lossy().parse::<RawFd>() else {
            continue;
        };
        // An fd closed since the listing has no fdinfo any more: skip it.
        let Ok(info) = std::fs::read_to_string(entry.path()) else {
            continue;
        };
        let is_link = info
            .lines()
            .any(|l| l.strip_prefix("link_id:").map(str::trim) == Some(want.as_str()));
        if is_link {
            // SAFETY: `fd` is open in this process (its fdinfo was just read) and owned
            // by the FdLink the caller holds for the whole call; it is only duplicated.
            return unsafe { BorrowedFd::borrow_raw(fd) }.try_clone_to_owned();
        }
    }
    Err(std::io::Error::new(
        std::io::ErrorKind::NotFound,
        format!("no fd of bpf link {link_id} in /proc/self/fdinfo"),
    ))
}

/// Runs one walk in the calling thread's network namespace, handing each socket's
/// record to `each` as it is read (none is kept: 120 bytes a socket add up at 100,000).
pub fn walk_each(
    link: &OwnedFd,
    each: &mut dyn FnMut(&SocketRecord),
) -> Result<WalkEnd, AuditKernelError> {
    // union bpf_attr { struct { __u32 link_fd; __u32 flags; } iter_create; }
    let fd = bpf(BPF_ITER_CREATE, &mut [link.as_raw_fd() as u32, 0, 0, 0])
        .map_err(|source| AuditKernelError::IterCreate { source })?;
    read_each(File::from(fd), MAX_RECORDS_PER_WALK, each)
}

/// Runs one walk in the calling thread's network namespace, keeping the records.
pub fn walk(link: &OwnedFd) -> Result<Walk, AuditKernelError> {
    let mut records = Vec::new();
    let end = walk_each(link, &mut |r| records.push(*r))?;
    Ok(Walk::from_parts(records, end))
}

/// Reads records up to the trailer, keeping at most `max` sockets (the rest are read
/// and counted in `truncated`, so the trailer still arrives).
#[cfg(test)]
pub fn read_walk<R: std::io::Read>(f: R, max: usize) -> Result<Walk, AuditKernelError> {
    let mut records = Vec::new();
    let end = read_each(f, max, &mut |r| records.push(*r))?;
    Ok(Walk::from_parts(records, end))
}

/// Reads records up to the trailer, handing at most `max` sockets to `each`.
pub fn read_each<R: std::io::Read>(
    mut f: R,
    max: usize,
    each: &mut dyn FnMut(&SocketRecord),
) -> Result<WalkEnd, AuditKernelError> {
    let mut w = WalkEnd::default();
    let mut complete = false;
    let mut buf = vec![0u8; RECORD * 256];
    let mut have = 0usize;
    loop {
        let n = f
            .read(&mut buf[have..])
            .map_err(|source| AuditKernelError::IterRead { source })?;
        if n == 0 {
            break;
        }
        have += n;
        let whole = have / RECORD * RECORD;
        for chunk in buf[..whole].as_chunks::<RECORD>().0 {
            // SAFETY: SocketRecord is repr(C) plain integers (Pod), any bytes are a
            // valid value; read_unaligned because the buffer has no alignment.
            let r: SocketRecord = unsafe { std::ptr::read_unaligned(chunk.as_ptr().cast()) };
            if r.flags & record_flags::TRAILER != 0 {
                w.now_jiffies = r.now_jiffies;
                w.now_ns = r.now_ns;
                complete = true;
            } else if w.sockets < max {
                w.sockets += 1;
                each(&r);
            } else {
                w.truncated += 1;
            }
        }
        buf.copy_within(whole..have, 0);
        have -= whole;
    }
    if have != 0 || !complete {
        return Err(AuditKernelError::IncompleteWalk { records: w.sockets });
    }
    Ok(w)
}

/// Runs `walk_each` from a short-lived thread that first enters `netns`: the iterator
/// lists the sockets of the namespace of the thread that creates it (the seq file's
/// net is taken from current->nsproxy at BPF_ITER_CREATE).
pub fn walk_in_each(
    link: &OwnedFd,
    netns: &File,
    each: &mut (dyn FnMut(&SocketRecord) + Send),
) -> Result<WalkEnd, AuditKernelError> {
    std::thread::scope(|s| {
        s.spawn(|| {
            // SAFETY: setns(2) on an open namespace fd, in this thread only (it dies
            // after the walk, so no other code runs in the namespace).
            let rc = unsafe { libc::setns(netns.as_raw_fd(), libc::CLONE_NEWNET) };
            if rc != 0 {
                return Err(AuditKernelError::EnterNetns {
                    source: std::io::Error::last_os_error(),
                });
            }
            walk_each(link, each)
        })
        .join()
        .unwrap_or(Err(AuditKernelError::WalkThreadPanicked))
    })
}

/// [`walk_in_each`], keeping the records.
pub fn walk_in(link: &OwnedFd, netns: &File) -> Result<Walk, AuditKernelError> {
    let mut records = Vec::new();
    let end = walk_in_each(link, netns, &mut |r| records.push(*r))?;
    Ok(Walk::from_parts(records, end))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bytes(r: &SocketRecord) -> Vec<u8> {
        // SAFETY: reading the bytes of a repr(C) value without padding.
        unsafe { std::slice::from_raw_parts((r as *const SocketRecord).cast(), RECORD) }.to_vec()
    }

    /// A reader that hands out its data a few bytes at a time, across record bounds.
    struct Dribble(Vec<u8>, usize);
    impl std::io::Read for Dribble {
        fn read(&mut self, out: &mut [u8]) -> std::io::Result<usize> {
            let n = out.len().min(7).min(self.0.len() - self.1);
            out[..n].copy_from_slice(&self.0[self.1..self.1 + n]);
            self.1 += n;
            Ok(n)
        }
    }

    fn stream(sockets: u16) -> Vec<u8> {
        let mut data = Vec::new();
        for p in 0..sockets {
            let mut r = SocketRecord::default();
            r.key.local_port = p;
            data.extend(bytes(&r));
        }
        let t = SocketRecord {
            flags: record_flags::TRAILER,
            now_jiffies: 5,
            now_ns: 6,
            ..Default::default()
        };
        data.extend(bytes(&t));
        data
    }

    #[test]
    fn records_split_across_reads_and_the_trailer_ends_the_walk() {
        let w = read_walk(Dribble(stream(3), 0), 10).unwrap();
        let ports: Vec<u16> = w.records.iter().map(|r| r.key.local_port).collect();
        assert_eq!(ports, [0, 1, 2]);
        assert_eq!((w.now_jiffies, w.now_ns, w.truncated), (5, 6, 0));
    }

    #[test]
    fn the_cap_truncates_and_counts() {
        let w = read_walk(Dribble(stream(5), 0), 2).unwrap();
        assert_eq!(w.records.len(), 2);
        assert_eq!(w.truncated, 3);
    }

    #[test]
    fn a_walk_without_trailer_or_with_a_partial_record_is_an_error() {
        let mut s = stream(2);
        s.truncate(RECORD * 2);
        assert!(read_walk(Dribble(s, 0), 10).is_err());
        let mut s = stream(2);
        s.push(0);
        assert!(read_walk(Dribble(s, 0), 10).is_err());
    }
}

//! The audit's kernel side: the `iter/tcp` program (inventory, iter.rs), the idle-death
//! hook with its ring buffer of endings (endings.rs), and the kernel layout both read
//! sockets with (offsets.rs), set as the AUDIT_CONFIG global when the object is loaded.
//!
//! Capabilities: attaching needs CAP_BPF (or CAP_SYS_ADMIN) and CAP_PERFMON; creating an
//! iterator instance per walk needs the link fd only, but [`Inventory::walk_in`] enters
//! other network namespaces with setns(), which needs CAP_SYS_ADMIN.

mod endings;
mod iter;
pub mod offsets;

use std::{fs::File, os::fd::OwnedFd, time::Duration};

use aya::{
    Ebpf, EbpfLoader,
    programs::{Iter, links::FdLink},
};
use keepalive_common::{
    audit::{SocketRecord, hz_from_samples},
    audit_config::AuditConfig,
    sockhook::SockConfig,
};

use crate::{error_chain::Chain, kernel::btf::KernelBtf};
pub use endings::{EndingsReader, IdleDeaths};
pub use iter::MAX_RECORDS_PER_WALK;

/// The iterator program in the eBPF object.
pub const ITER_PROGRAM: &str = "ka_audit_iter";
/// HZ is measured from two walks this far apart (hz_from_samples needs >= 100 ms).
const HZ_SAMPLE_GAP: Duration = Duration::from_millis(150);

/// Why the audit's kernel side cannot run.
#[derive(Debug, thiserror::Error)]
pub enum AuditKernelError {
    /// Kept for API stability with the scaffold; no longer returned.
    #[error("the audit's kernel programs are not built into this daemon")]
    NotBuilt,
    #[error(
        "the kernel's BTF lacks a socket field the audit reads; the audit is off on this \
         kernel"
    )]
    Layout {
        #[source]
        source: crate::kernel::btf::BtfError,
    },
    #[error("program {name} missing from the eBPF object (a daemon build mismatch)")]
    MissingProgram { name: &'static str },
    #[error("map {name} missing from the eBPF object (a daemon build mismatch)")]
    MissingMap { name: &'static str },
    #[error("reading the kernel's BTF from /sys/kernel/btf/vmlinux for the iterator")]
    Btf {
        #[source]
        source: aya::BtfError,
    },
    #[error(
        "loading or attaching {what}; the kernel needs BPF iterators (5.9+) and raw \
         tracepoints, and the daemon CAP_BPF and CAP_PERFMON"
    )]
    Program {
        what: &'static str,
        #[source]
        source: aya::programs::ProgramError,
    },
    #[error("getting an fd of the iterator link")]
    Link {
        #[source]
        source: std::io::Error,
    },
    #[error("the iterator link has no id")]
    LinkInfo {
        #[source]
        source: aya::programs::links::LinkError,
    },
    #[error("creating an iterator instance (BPF_ITER_CREATE)")]
    IterCreate {
        #[source]
        source: std::io::Error,
    },
    #[error("reading the iterator")]
    IterRead {
        #[source]
        source: std::io::Error,
    },
    #[error("the iterator ended without its trailer after {records} sockets")]
    IncompleteWalk { records: usize },
    #[error("entering the network namespace to walk it (needs CAP_SYS_ADMIN)")]
    EnterNetns {
        #[source]
        source: std::io::Error,
    },
    #[error("the namespace walk's thread panicked")]
    WalkThreadPanicked,
    #[error(
        "could not measure the kernel's HZ: {jiffies} jiffies in {ns} ns is none of \
         100, 250, 300, 1000 Hz"
    )]
    Hz { jiffies: u64, ns: u64 },
    #[error("writing the idle-death parameters to map {name}")]
    Map {
        name: &'static str,
        #[source]
        source: aya::maps::MapError,
    },
    #[error("waiting for endings on the ring buffer")]
    Endings {
        #[source]
        source: std::io::Error,
    },
}

/// One walk of the established TCP sockets of a network namespace.
#[derive(Clone, Debug, Default)]
pub struct Walk {
    pub records: Vec<SocketRecord>,
    /// From the iterator's trailer: bpf_jiffies64() and bpf_ktime_get_ns() at the end.
    pub now_jiffies: u64,
    pub now_ns: u64,
    /// Sockets left out beyond [`MAX_RECORDS_PER_WALK`].
    pub truncated: u64,
}

/// How a walk ended, without its records (they went to the caller one by one).
#[derive(Clone, Copy, Debug, Default)]
pub struct WalkEnd {
    /// Sockets handed to the caller.
    pub sockets: usize,
    pub now_jiffies: u64,
    pub now_ns: u64,
    pub truncated: u64,
}

impl Walk {
    fn from_parts(records: Vec<SocketRecord>, end: WalkEnd) -> Walk {
        Walk {
            records,
            now_jiffies: end.now_jiffies,
            now_ns: end.now_ns,
            truncated: end.truncated,
        }
    }
}

/// The AUDIT_CONFIG global for the eBPF object: the layout from BTF, or all zero (the
/// audit programs then do nothing) with a warning when the kernel lacks a field.
pub fn loader_config(btf: &KernelBtf) -> AuditConfig {
    offsets::resolve(btf).unwrap_or_else(|e| {
        log::warn!("keepalive audit disabled on this kernel: {}", Chain(&e));
        AuditConfig::default()
    })
}

/// Loads the daemon's eBPF object with the socket and audit globals set (other globals
/// at their defaults), for tests and tools that need the programs outside the daemon.
pub fn load_object(sock: &SockConfig, audit: &AuditConfig) -> Result<Ebpf, aya::EbpfError> {
    EbpfLoader::new()
        .override_global("SOCK_CONFIG", sock, true)
        .override_global("AUDIT_CONFIG", audit, true)
        .load(aya::include_bytes_aligned!(concat!(
            env!("OUT_DIR"),
            "/keepalive"
        )))
}

/// The loaded and attached `iter/tcp` program.
pub struct Inventory {
    hz: u32,
    /// Our own fd of the link, to create iterator instances from.
    link_fd: OwnedFd,
    /// Keeps the link attached for the daemon's life.
    _link: FdLink,
}

impl Inventory {
    /// Loads the iterator, attaches it, and measures HZ from two walks (blocks about
    /// 150 ms). Fails, without harm to the rest of the daemon, on kernels without
    /// iter/tcp (before 5.9) or without the socket fields in BTF.
    pub fn attach(ebpf: &mut Ebpf, btf: &KernelBtf) -> Result<Inventory, AuditKernelError> {
        offsets::resolve(btf).map_err(|source| AuditKernelError::Layout { source })?;
        let kernel_btf =
            aya::Btf::from_sys_fs().map_err(|source| AuditKernelError::Btf { source })?;
        let what = "the iter/tcp program ka_audit_iter";
        let prog: &mut Iter = ebpf
            .program_mut(ITER_PROGRAM)
            .ok_or(AuditKernelError::MissingProgram { name: ITER_PROGRAM })?
            .try_into()
            .map_err(|source| AuditKernelError::Program { what, source })?;
        prog.load("tcp", &kernel_btf)
            .map_err(|source| AuditKernelError::Program { what, source })?;
        let id = prog
            .attach()
            .map_err(|source| AuditKernelError::Program { what, source })?;
        let link = prog
            .take_link(id)
            .map_err(|source| AuditKernelError::Program { what, source })?;
        let link =
            FdLink::try_from(link).map_err(|source| AuditKernelError::LinkInfo { source })?;
        let link_id = link
            .info()
            .map_err(|source| AuditKernelError::LinkInfo { source })?
            .id();
        let link_fd = iter::link_fd(link_id).map_err(|source| AuditKernelError::Link { source })?;
        let mut inv = Inventory {
            hz: 0,
            link_fd,
            _link: link,
        };
        let a = inv.walk()?;
        std::thread::sleep(HZ_SAMPLE_GAP);
        let b = inv.walk()?;
        inv.hz = hz_from_samples(a.now_jiffies, a.now_ns, b.now_jiffies, b.now_ns).ok_or(
            AuditKernelError::Hz {
                jiffies: b.now_jiffies.wrapping_sub(a.now_jiffies),
                ns: b.now_ns.wrapping_sub(a.now_ns),
            },
        )?;
        Ok(inv)
    }

    /// The kernel's HZ (jiffies per second), measured at attach.
    pub fn hz(&self) -> u32 {
        self.hz
    }

    /// Walks the sockets of the calling thread's network namespace. Blocking (a few ms
    /// per thousand sockets): call it from a blocking thread, not the async runtime.
    pub fn walk(&self) -> Result<Walk, AuditKernelError> {
        iter::walk(&self.link_fd)
    }

    /// Walks the sockets of the namespace `netns` (an open /proc/PID/ns/net or
    /// /run/netns/NAME), from a thread that enters it.
    pub fn walk_in(&self, netns: &File) -> Result<Walk, AuditKernelError> {
        iter::walk_in(&self.link_fd, netns)
    }

    /// [`Inventory::walk`], handing each record to `each` instead of keeping them.
    pub fn walk_each(
        &self,
        each: &mut dyn FnMut(&SocketRecord),
    ) -> Result<WalkEnd, AuditKernelError> {
        iter::walk_each(&self.link_fd, each)
    }

    /// [`Inventory::walk_in`], handing each record to `each` instead of keeping them.
    pub fn walk_in_each(
        &self,
        netns: &File,
        each: &mut (dyn FnMut(&SocketRecord) + Send),
    ) -> Result<WalkEnd, AuditKernelError> {
        iter::walk_in_each(&self.link_fd, netns, each)
    }
}

/// What the idle-death hook needs from the command line.
#[derive(Clone, Copy, Debug)]
pub struct IdleDeathSetup {
    /// --audit.min-idle: shorter idle times are not idle deaths.
    pub min_idle: Duration,
    /// HZ, to convert `min_idle` and the histogram bounds to jiffies.
    pub hz: u32,
}

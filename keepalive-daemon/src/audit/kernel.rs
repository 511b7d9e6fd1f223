//! The audit's kernel side: the `iter/tcp` program (inventory) and the idle-death hook
//! with its ring buffer of endings. SCAFFOLD: the signatures are the contract between
//! the helpers building issue #12; the bodies are filled in by the kernel-side work
//! (until then every call reports `NotBuilt`).

use std::{fs::File, time::Duration};

use aya::Ebpf;
use keepalive_common::audit::{Ending, SocketRecord};

use crate::kernel::btf::KernelBtf;

/// Why the audit's kernel side cannot run.
#[derive(Debug, thiserror::Error)]
pub enum AuditKernelError {
    #[error("the audit's kernel programs are not built into this daemon yet")]
    NotBuilt,
}

/// One walk of the established TCP sockets of a network namespace.
#[derive(Clone, Debug, Default)]
pub struct Walk {
    pub records: Vec<SocketRecord>,
    /// From the iterator's trailer: bpf_jiffies64() and bpf_ktime_get_ns() at the end.
    pub now_jiffies: u64,
    pub now_ns: u64,
}

/// The loaded and attached `iter/tcp` program.
pub struct Inventory {
    hz: u32,
}

impl Inventory {
    /// Loads the iterator, attaches it, and measures HZ from two walks.
    pub fn attach(_ebpf: &mut Ebpf, _btf: &KernelBtf) -> Result<Inventory, AuditKernelError> {
        Err(AuditKernelError::NotBuilt)
    }

    /// The kernel's HZ (jiffies per second), measured at attach.
    pub fn hz(&self) -> u32 {
        self.hz
    }

    /// Walks the sockets of the calling thread's network namespace.
    pub fn walk(&self) -> Result<Walk, AuditKernelError> {
        Err(AuditKernelError::NotBuilt)
    }

    /// Walks the sockets of the namespace `netns` (an open /proc/PID/ns/net or
    /// /run/netns/NAME), from a thread that enters it.
    pub fn walk_in(&self, _netns: &File) -> Result<Walk, AuditKernelError> {
        Err(AuditKernelError::NotBuilt)
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

/// The attached idle-death hook and the ring buffer its endings (and the keepalive
/// timeouts) arrive on.
pub struct IdleDeaths {
    endings: Option<EndingsReader>,
}

impl IdleDeaths {
    pub fn attach(
        _ebpf: &mut Ebpf,
        _btf: &KernelBtf,
        _setup: IdleDeathSetup,
    ) -> Result<IdleDeaths, AuditKernelError> {
        Err(AuditKernelError::NotBuilt)
    }

    /// The reader of endings; `None` once taken.
    pub fn take_endings(&mut self) -> Option<EndingsReader> {
        self.endings.take()
    }
}

/// Reads [`Ending`]s from the kernel's ring buffer.
pub struct EndingsReader {}

impl EndingsReader {
    /// Waits for endings and returns those available (at least one).
    pub async fn next_batch(&mut self) -> Result<Vec<Ending>, AuditKernelError> {
        Err(AuditKernelError::NotBuilt)
    }
}

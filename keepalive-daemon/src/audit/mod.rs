//! The keepalive audit (issue #12): which established connections are at risk behind a
//! middlebox that forgets idle flows (the inventory, from the `iter/tcp` program), and
//! which connections failed after being idle (the idle-death hooks).
//!
//! This module holds what the parts share: the latest inventory and the recent endings,
//! both read by the connection view (/connections, `keepalive-daemon connections`).
//! - inventory side: fills [`AuditView::set_inventory`] every --audit.interval;
//! - idle-death side: pushes each [`Ending`] it logs with [`AuditView::push_ending`];
//! - view side: reads [`AuditView::inventory`] and [`AuditView::endings`].

pub mod cgroup;
pub mod endings;
pub mod inventory;
pub mod kernel;
pub mod namespaces;
pub mod owners;
pub mod settings;

use std::{
    collections::{HashMap, VecDeque},
    sync::{Arc, Mutex, PoisonError, RwLock},
    time::SystemTime,
};

use keepalive_common::{
    audit::{Effective, EndingKind, RiskReason},
    flow::FlowKey,
};

/// Idle limits (--audit.idle-limit) at most; one at_risk series each.
pub const MAX_IDLE_LIMITS: usize = 8;
/// Recent endings kept for the connection view after their sockets are gone.
pub const MAX_RECENT_ENDINGS: usize = 256;

/// One established connection of the last inventory.
#[derive(Clone, Debug, PartialEq)]
pub struct AuditedConnection {
    pub key: FlowKey,
    pub netns_inum: u32,
    pub settings: Effective,
    /// The limits (seconds) this connection is at risk for, with the reason, in the
    /// order of --audit.idle-limit.
    pub at_risk: Vec<(u32, RiskReason)>,
    /// cgroup v2 path relative to the cgroup root (e.g. `/system.slice/redis.service`).
    pub cgroup: Option<Arc<str>>,
    pub uid: u32,
    /// `comm[pid]` of a process holding the socket, when known cheaply.
    pub process: Option<Arc<str>>,
}

/// The last complete inventory.
#[derive(Clone, Debug)]
pub struct Inventory {
    pub taken_at: SystemTime,
    pub connections: HashMap<FlowKey, AuditedConnection>,
}

/// A connection that ended: a keepalive timeout, or an idle death.
#[derive(Clone, Debug, PartialEq)]
pub struct EndingRecord {
    pub at: SystemTime,
    pub key: FlowKey,
    pub kind: EndingKind,
    pub keepalive: bool,
    pub idle_seconds: f64,
    pub netns_inum: u32,
    pub cgroup: Option<String>,
}

/// Shared between the audit tasks and the web handlers.
#[derive(Default)]
pub struct AuditView {
    inventory: RwLock<Option<Arc<Inventory>>>,
    endings: Mutex<VecDeque<EndingRecord>>,
}

impl AuditView {
    pub fn set_inventory(&self, inv: Inventory) {
        let mut slot = self
            .inventory
            .write()
            .unwrap_or_else(PoisonError::into_inner);
        *slot = Some(Arc::new(inv));
    }

    /// The last inventory, `None` before the first one or with the inventory off.
    pub fn inventory(&self) -> Option<Arc<Inventory>> {
        self.inventory
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// Keeps the ending, dropping the oldest beyond [`MAX_RECENT_ENDINGS`].
    pub fn push_ending(&self, e: EndingRecord) {
        let mut q = self.endings.lock().unwrap_or_else(PoisonError::into_inner);
        if q.len() == MAX_RECENT_ENDINGS {
            q.pop_front();
        }
        q.push_back(e);
    }

    /// Recent endings, newest first.
    pub fn endings(&self) -> Vec<EndingRecord> {
        let q = self.endings.lock().unwrap_or_else(PoisonError::into_inner);
        q.iter().rev().cloned().collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn recent_endings_are_bounded_and_newest_first() {
        let view = AuditView::default();
        for i in 0..(MAX_RECENT_ENDINGS as u16 + 10) {
            view.push_ending(EndingRecord {
                at: SystemTime::UNIX_EPOCH,
                key: FlowKey {
                    local_port: i,
                    ..Default::default()
                },
                kind: EndingKind::IdleReset,
                keepalive: false,
                idle_seconds: 1.0,
                netns_inum: 0,
                cgroup: None,
            });
        }
        let e = view.endings();
        assert_eq!(e.len(), MAX_RECENT_ENDINGS);
        assert_eq!(e[0].key.local_port, MAX_RECENT_ENDINGS as u16 + 9);
        assert_eq!(e.last().unwrap().key.local_port, 10);
    }
}

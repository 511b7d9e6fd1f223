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
    collections::VecDeque,
    sync::{Arc, Mutex, PoisonError, RwLock},
    time::SystemTime,
};

use keepalive_common::{
    audit::{Effective, EndingKind, RiskReason, at_risk},
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
    /// cgroup v2 path relative to the cgroup root (e.g. `/system.slice/redis.service`).
    pub cgroup: Option<Arc<str>>,
    pub uid: u32,
    /// `comm[pid]` of a process holding the socket, when known cheaply.
    pub process: Option<Arc<str>>,
}

impl AuditedConnection {
    /// The limits (seconds) of `limits` this connection is at risk for, with the
    /// reason, in their order. Derived when asked, not stored: a Vec per connection
    /// cost an allocation each, at hundreds of thousands of connections.
    pub fn risks<'a>(&self, limits: &'a [u32]) -> impl Iterator<Item = (u32, RiskReason)> + 'a {
        let settings = self.settings;
        limits
            .iter()
            .filter_map(move |&l| Some((l, at_risk(&settings, l)?)))
    }
}

/// The last complete inventory: its connections keyed by (network namespace inode,
/// connection). The same addresses and ports in two namespaces (loopback in two
/// containers, mostly) are two connections.
///
/// A Vec sorted by (connection, namespace), not a map: the view finds every namespace's
/// socket of a flow-map entry (which has no namespace) as one slice by binary search,
/// and a Vec has no per-entry table overhead (the inventory holds up to hundreds of
/// thousands of sockets, two inventories while a run replaces the last).
#[derive(Clone, Debug)]
pub struct Inventory {
    pub taken_at: SystemTime,
    /// --audit.idle-limit in seconds, which [`AuditedConnection::risks`] are for.
    pub limits: Vec<u32>,
    connections: Vec<AuditedConnection>,
}

/// The order of [`Inventory::connections`]: FlowKey has no `Ord` (a kernel map type).
fn order(key: &FlowKey) -> (u32, [u32; 4], [u32; 4], u16, u16) {
    (
        key.family,
        key.local_addr,
        key.remote_addr,
        key.local_port,
        key.remote_port,
    )
}

impl Inventory {
    /// An inventory of `connections` at risk for `limits`; of two with the same
    /// namespace and connection (which one namespace cannot hold twice) one is kept.
    pub fn new(
        taken_at: SystemTime,
        limits: Vec<u32>,
        mut connections: Vec<AuditedConnection>,
    ) -> Inventory {
        // Unstable: the stable sort allocates half the Vec again.
        connections.sort_unstable_by_key(|c| (order(&c.key), c.netns_inum));
        connections.dedup_by_key(|c| (c.key, c.netns_inum));
        connections.shrink_to_fit();
        Inventory {
            taken_at,
            limits,
            connections,
        }
    }

    /// The limits `c` is at risk for (see [`AuditedConnection::risks`]).
    pub fn risks<'a>(
        &'a self,
        c: &AuditedConnection,
    ) -> impl Iterator<Item = (u32, RiskReason)> + 'a {
        c.risks(&self.limits)
    }

    /// Every connection, ordered by connection then namespace.
    pub fn connections(&self) -> &[AuditedConnection] {
        &self.connections
    }

    pub fn len(&self) -> usize {
        self.connections.len()
    }

    pub fn is_empty(&self) -> bool {
        self.connections.is_empty()
    }

    /// The sockets of connection `key` in every namespace, ordered by namespace inode.
    pub fn of_flow(&self, key: &FlowKey) -> &[AuditedConnection] {
        let k = order(key);
        let start = self.connections.partition_point(|c| order(&c.key) < k);
        let len = self.connections[start..].partition_point(|c| order(&c.key) == k);
        &self.connections[start..start + len]
    }

    /// The socket of connection `key` in namespace `netns_inum`.
    pub fn get(&self, netns_inum: u32, key: &FlowKey) -> Option<&AuditedConnection> {
        self.of_flow(key)
            .iter()
            .find(|c| c.netns_inum == netns_inum)
    }
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

    fn conn(netns_inum: u32, local_port: u16, keepalive: bool) -> AuditedConnection {
        AuditedConnection {
            key: FlowKey {
                local_port,
                remote_port: 80,
                ..Default::default()
            },
            netns_inum,
            settings: Effective {
                keepalive,
                idle_seconds: 7200,
                interval_seconds: 75,
                count: 9,
                user_timeout_ms: 0,
                idle_now_seconds: 1,
            },
            cgroup: None,
            uid: 0,
            process: None,
        }
    }

    /// The same connection in two namespaces is two entries; a flow finds both.
    #[test]
    fn the_inventory_is_keyed_by_namespace_and_connection() {
        let inv = Inventory::new(
            SystemTime::UNIX_EPOCH,
            vec![240],
            vec![
                conn(7, 1, true),
                conn(5, 1, false),
                conn(5, 2, true),
                conn(7, 1, false),
            ],
        );
        assert_eq!(inv.len(), 3);
        let both: Vec<(u32, bool)> = inv
            .of_flow(&conn(0, 1, false).key)
            .iter()
            .map(|c| (c.netns_inum, c.settings.keepalive))
            .collect();
        assert_eq!(both, [(5, false), (7, true)]);
        let key2 = conn(0, 2, false).key;
        assert_eq!(inv.of_flow(&key2).len(), 1);
        assert!(inv.get(5, &key2).unwrap().settings.keepalive);
        assert!(inv.get(7, &key2).is_none());
        assert!(inv.of_flow(&conn(0, 3, false).key).is_empty());
    }

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

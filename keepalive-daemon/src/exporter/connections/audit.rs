//! What the keepalive audit (audit/mod.rs) adds to the connection view: per connection
//! the settings and risk from the last inventory, the at-risk selection behind
//! `?at_risk=1`, and the recent endings. Pure functions over an [`Inventory`], so they
//! are unit-tested with a synthetic one.

use std::{
    cmp::Reverse,
    sync::Arc,
    time::{SystemTime, UNIX_EPOCH},
};

use keepalive_common::{audit::EndingKind, flow::FlowKey};
use serde::{Deserialize, Serialize};

use super::address;
use crate::audit::{AuditedConnection, EndingRecord, Inventory, MAX_RECENT_ENDINGS};

/// A connection's keepalive settings and risk, as the last inventory saw them.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct AuditRow {
    /// SO_KEEPALIVE is set.
    pub keepalive: bool,
    /// Effective TCP_KEEPIDLE / TCP_KEEPINTVL (seconds) and TCP_KEEPCNT: the socket's
    /// own value, else its namespace's sysctl.
    pub idle_seconds: u32,
    pub interval_seconds: u32,
    pub count: u32,
    /// TCP_USER_TIMEOUT in milliseconds, 0 when unset.
    pub user_timeout_ms: u32,
    /// Seconds since the last segment received, when the inventory was taken.
    pub idle_age_seconds: u32,
    /// The --audit.idle-limit values this connection is at risk for; empty: none.
    pub at_risk: Vec<Risk>,
    /// Network namespace inode (as in /proc/PID/ns/net's `net:[N]`).
    pub netns_inode: u32,
    pub uid: u32,
    /// cgroup v2 path (the container or systemd unit), when known.
    pub cgroup: Option<String>,
    /// `comm[pid]` of a process holding the socket, when known.
    pub process: Option<String>,
}

/// One idle limit a connection is at risk for, and why.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct Risk {
    /// The limit as in the metric label `idle_limit`, e.g. "240s".
    pub idle_limit: String,
    pub idle_limit_seconds: u32,
    /// keepalive_off or idle_at_or_above_limit.
    pub reason: String,
}

/// A connection that ended (a keepalive timeout or an idle death), kept after its
/// socket is gone.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct EndingRow {
    /// When it ended (Unix time; absolute, so two listings agree).
    pub time_unix_seconds: f64,
    pub family: String,
    pub local: String,
    pub remote: String,
    /// keepalive_timeout (the keepalive timer gave up) or idle_death.
    pub kind: String,
    /// keepalive_timeout, reset or retransmit_timeout (the `cause` label of
    /// tcp_idle_connection_failures_total for idle deaths).
    pub cause: String,
    /// SO_KEEPALIVE was set.
    pub keepalive: bool,
    /// Seconds from the last segment received to the ending.
    pub idle_seconds: f64,
    pub netns_inode: u32,
    pub cgroup: Option<String>,
}

/// The `idle_limit` label of a limit in seconds (whole seconds and "s", as the metrics).
pub fn limit_label(seconds: u32) -> String {
    format!("{seconds}s")
}

/// `a`'s row; `limits` the --audit.idle-limit values of its inventory.
pub fn audit_row(a: &AuditedConnection, limits: &[u32]) -> AuditRow {
    let s = &a.settings;
    AuditRow {
        keepalive: s.keepalive,
        idle_seconds: s.idle_seconds,
        interval_seconds: s.interval_seconds,
        count: s.count,
        user_timeout_ms: s.user_timeout_ms,
        idle_age_seconds: s.idle_now_seconds,
        at_risk: a
            .risks(limits)
            .map(|(limit, reason)| Risk {
                idle_limit: limit_label(limit),
                idle_limit_seconds: limit,
                reason: reason.label().to_owned(),
            })
            .collect(),
        netns_inode: a.netns_inum,
        uid: a.uid,
        cgroup: a.cgroup.as_deref().map(str::to_owned),
        process: a.process.as_deref().map(str::to_owned),
    }
}

fn unix_seconds(t: SystemTime) -> f64 {
    t.duration_since(UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64())
}

pub fn ending_row(e: &EndingRecord) -> EndingRow {
    let kind = match e.kind {
        EndingKind::KeepaliveTimeout => "keepalive_timeout",
        EndingKind::IdleReset | EndingKind::IdleRetransmitTimeout => "idle_death",
    };
    EndingRow {
        time_unix_seconds: unix_seconds(e.at),
        family: e.key.family().label().to_owned(),
        local: address(&e.key, true).to_string(),
        remote: address(&e.key, false).to_string(),
        kind: kind.to_owned(),
        cause: e.kind.cause_label().to_owned(),
        keepalive: e.keepalive,
        idle_seconds: e.idle_seconds,
        netns_inode: e.netns_inum,
        cgroup: e.cgroup.clone(),
    }
}

/// What one /connections request asks of the audit: its last inventory and endings,
/// taken once so the whole listing reads one inventory.
#[derive(Clone, Debug)]
pub struct Request {
    pub limit: usize,
    /// `?at_risk=1`: only the connections the inventory has at risk, longest idle first.
    pub at_risk_only: bool,
    pub inventory: Option<Arc<Inventory>>,
    /// Newest first (AuditView::endings).
    pub endings: Vec<EndingRecord>,
}

impl Request {
    /// A request with no audit data (inventory off or not run yet).
    pub fn plain(limit: usize) -> Request {
        Request {
            limit,
            at_risk_only: false,
            inventory: None,
            endings: Vec::new(),
        }
    }

    /// The audit rows of flow-map connection `key`: one per network namespace holding
    /// a socket with these addresses and ports (the flow map has no namespace), ordered
    /// by namespace inode; empty when the inventory did not see it.
    pub fn audited(&self, key: &FlowKey) -> Vec<AuditRow> {
        self.inventory
            .as_ref()
            .map(|inv| {
                inv.of_flow(key)
                    .iter()
                    .map(|a| audit_row(a, &inv.limits))
                    .collect()
            })
            .unwrap_or_default()
    }

    /// The audit row of the socket `key` in namespace `netns_inum`.
    pub fn audited_in(&self, netns_inum: u32, key: &FlowKey) -> Option<AuditRow> {
        let inv = self.inventory.as_ref()?;
        inv.get(netns_inum, key).map(|a| audit_row(a, &inv.limits))
    }

    /// The recent endings, newest first, at most `limit` (and MAX_RECENT_ENDINGS).
    pub fn ending_rows(&self) -> Vec<EndingRow> {
        self.endings
            .iter()
            .take(self.limit.min(MAX_RECENT_ENDINGS))
            .map(ending_row)
            .collect()
    }

    /// When the inventory was taken (Unix time); `None` without one.
    pub fn inventory_unix_seconds(&self) -> Option<f64> {
        Some(unix_seconds(self.inventory.as_ref()?.taken_at))
    }

    /// `?at_risk=1`: the sockets at risk, each as (namespace inode, connection), every
    /// namespace's socket of the same addresses its own row (all of them counted, the
    /// first `limit` kept), longest idle first (those the middlebox forgot first), ties
    /// by address, then namespace.
    pub fn at_risk(&self) -> (usize, Vec<(u32, FlowKey)>) {
        let Some(inv) = &self.inventory else {
            return (0, Vec::new());
        };
        let mut risky: Vec<&AuditedConnection> = inv
            .connections()
            .iter()
            .filter(|a| inv.risks(a).next().is_some())
            .collect();
        let total = risky.len();
        let order = |a: &&AuditedConnection| {
            (
                Reverse(a.settings.idle_now_seconds),
                address(&a.key, true),
                address(&a.key, false),
                a.netns_inum,
            )
        };
        if risky.len() > self.limit {
            risky.select_nth_unstable_by_key(self.limit, order);
            risky.truncate(self.limit);
        }
        risky.sort_by_key(order);
        (total, risky.iter().map(|a| (a.netns_inum, a.key)).collect())
    }
}

//! Which interfaces carry the tc programs, kept in step with link events: interfaces
//! that appear (or come up) and match --interface get attached, removed ones are
//! forgotten, all while the daemon runs.

use std::collections::BTreeMap;

use aya::Ebpf;

use super::{
    interfaces::{self, Interface},
    linkwatch::LinkEvent,
    tc::{self, TcAttachment, TcError, TcPrograms},
};
use crate::{
    cli::{BaselinePosition, TcAttachMode},
    error_chain::Chain,
    exporter::registry::Metrics,
};

pub struct Attachments {
    patterns: Vec<String>,
    /// With or without kernel-side logging (--log.kernel-level).
    programs: TcPrograms,
    /// --debug.baseline-program
    baseline: Option<BaselinePosition>,
    /// --tc.attach-mode
    mode: TcAttachMode,
    /// By interface index: the name it had when attached and our attachments.
    by_index: BTreeMap<u32, (String, Vec<TcAttachment>)>,
}

impl Attachments {
    pub fn new(
        patterns: &[String],
        programs: TcPrograms,
        baseline: Option<BaselinePosition>,
        mode: TcAttachMode,
    ) -> Attachments {
        Attachments {
            patterns: patterns.to_vec(),
            programs,
            baseline,
            mode,
            by_index: BTreeMap::new(),
        }
    }

    pub fn len(&self) -> usize {
        self.by_index.len()
    }

    pub fn is_empty(&self) -> bool {
        self.by_index.is_empty()
    }

    /// Attaches to `iface`; an error leaves nothing attached to it.
    pub fn attach(
        &mut self,
        ebpf: &mut Ebpf,
        metrics: &Metrics,
        iface: &Interface,
    ) -> Result<(), TcError> {
        let done = tc::attach(ebpf, &iface.name, self.programs, self.baseline, self.mode)?;
        for a in &done {
            log::debug!(
                "attached {} ({}) to {} ({})",
                a.program,
                a.direction.label(),
                a.interface,
                a.mode.label()
            );
            metrics
                .tc_programs
                .with_label_values(&[a.program, &a.interface, a.direction.label(), a.mode.label()])
                .set(1);
        }
        self.by_index
            .insert(iface.index, (iface.name.clone(), done));
        Ok(())
    }

    /// Drops our attachments of interface `index` (gone, or no longer matching).
    fn forget(&mut self, ebpf: &mut Ebpf, metrics: &Metrics, index: u32, why: &str) {
        let Some((name, done)) = self.by_index.remove(&index) else {
            return;
        };
        log::info!("forgetting {name}: {why}");
        for a in done {
            let _ = metrics.tc_programs.remove_label_values(&[
                a.program,
                &a.interface,
                a.direction.label(),
                a.mode.label(),
            ]);
            tc::detach(ebpf, a);
        }
    }

    /// Attaches a new matching interface; a failure is logged and counted, never fatal.
    fn attach_at_run_time(&mut self, ebpf: &mut Ebpf, metrics: &Metrics, iface: &Interface) {
        match self.attach(ebpf, metrics, iface) {
            Ok(()) => log::info!(
                "tc: attached to {} ({})",
                iface.name,
                Self::modes_of(self.by_index.get(&iface.index).into_iter())
            ),
            Err(e) => {
                metrics.interface_attach_errors.inc();
                log::warn!("cannot attach to {}: {}", iface.name, Chain(&e));
            }
        }
    }

    /// The attach modes of `interfaces` ("tcx", "netlink", or both), for the logs.
    fn modes_of<'a>(interfaces: impl Iterator<Item = &'a (String, Vec<TcAttachment>)>) -> String {
        let mut modes: Vec<&str> = interfaces
            .flat_map(|(_, done)| done.iter().map(|a| a.mode.label()))
            .collect();
        modes.sort_unstable();
        modes.dedup();
        modes.join(" and ")
    }

    /// One line for the start-up log: how many interfaces carry the tc programs, how
    /// they are attached, and which.
    pub fn summary(&self) -> String {
        if self.by_index.is_empty() {
            return "tc: no interface yet (--tc.attach-mode applies when one appears)".into();
        }
        let names: Vec<&str> = self.by_index.values().map(|(n, _)| n.as_str()).collect();
        format!(
            "tc: {} interface(s) via {}: {}",
            names.len(),
            Self::modes_of(self.by_index.values()),
            names.join(", ")
        )
    }

    pub fn on_event(&mut self, ebpf: &mut Ebpf, metrics: &Metrics, ev: LinkEvent) {
        match ev {
            LinkEvent::New {
                index,
                name,
                up,
                link_type,
            } => {
                let iface = Interface {
                    name,
                    index,
                    up,
                    link_type,
                };
                let wanted = interfaces::wanted(&self.patterns, &iface);
                match self.by_index.get(&index) {
                    Some((old, _)) if *old != iface.name || !wanted => {
                        let why = if *old != iface.name {
                            format!("renamed to {}", iface.name)
                        } else {
                            "no longer selected".into()
                        };
                        self.forget(ebpf, metrics, index, &why);
                        if wanted {
                            self.attach_at_run_time(ebpf, metrics, &iface);
                        }
                    }
                    Some(_) => {}
                    None if wanted => self.attach_at_run_time(ebpf, metrics, &iface),
                    None => {}
                }
            }
            LinkEvent::Deleted { index, .. } => self.forget(ebpf, metrics, index, "deleted"),
            LinkEvent::Overrun => self.resync(ebpf, metrics),
        }
    }

    /// After lost events: forgets what is gone, attaches what is missing.
    pub fn resync(&mut self, ebpf: &mut Ebpf, metrics: &Metrics) {
        log::warn!("link events were lost; re-reading the interface list");
        let all = match interfaces::list() {
            Ok(all) => all,
            Err(e) => {
                log::warn!("{e}");
                return;
            }
        };
        let gone: Vec<u32> = self
            .by_index
            .iter()
            .filter(|(index, (name, _))| {
                !all.iter().any(|i| {
                    i.index == **index && i.name == *name && interfaces::wanted(&self.patterns, i)
                })
            })
            .map(|(index, _)| *index)
            .collect();
        for index in gone {
            self.forget(ebpf, metrics, index, "gone");
        }
        for iface in all {
            if !self.by_index.contains_key(&iface.index)
                && interfaces::wanted(&self.patterns, &iface)
            {
                self.attach_at_run_time(ebpf, metrics, &iface);
            }
        }
    }
}

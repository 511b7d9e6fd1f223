//! The wire programs: which interfaces carry them (selected at start-up, then followed
//! through link events) and how they attach (tc: TCX or netlink).

pub mod attachments;
pub mod interfaces;
pub mod linkwatch;
pub mod tc;

use aya::Ebpf;

use crate::{
    cli::{Args, KernelLogLevel},
    exporter::registry::Metrics,
};
use attachments::Attachments;
use interfaces::{Interface, InterfaceError};
use linkwatch::LinkWatch;
use tc::TcError;

/// Why the wire programs could not be set up at start-up.
#[derive(Debug, thiserror::Error)]
pub enum WireError {
    #[error("subscribing to rtnetlink link events")]
    LinkEvents {
        #[source]
        source: std::io::Error,
    },
    #[error(transparent)]
    Interface(#[from] InterfaceError),
    #[error(transparent)]
    Tc(#[from] TcError),
}

/// Subscribes to link events, then picks the interfaces to watch now (--interface),
/// Ethernet-like only. Subscribed before listing, so no interface falls between the two.
pub fn watch_and_select(patterns: &[String]) -> Result<(LinkWatch, Vec<Interface>), WireError> {
    let links = LinkWatch::open().map_err(|source| WireError::LinkEvents { source })?;
    let all = interfaces::list()?;
    let mut chosen = interfaces::select(&all, patterns)?;
    chosen.retain(|i| {
        let ok = i.has_ethernet_header();
        if !ok {
            log::warn!(
                "skipping {}: link type {} has no Ethernet header",
                i.name,
                i.link_type
            );
        }
        ok
    });
    Ok((links, chosen))
}

/// Loads the tc programs and attaches them to the interfaces chosen at start-up.
pub fn attach_at_start(
    ebpf: &mut Ebpf,
    args: &Args,
    metrics: &Metrics,
    chosen: &[Interface],
) -> Result<Attachments, WireError> {
    let programs = tc::TcPrograms::choose(
        args.wire_floor,
        args.kernel_log_level != KernelLogLevel::Off,
    );
    if args.wire_floor.is_some() {
        log::warn!(
            "--debug.wire-floor: attaching {} and {} instead of the wire programs; \
             no keepalive is classified or counted on the wire",
            programs.ingress,
            programs.egress
        );
    }
    let mut tc_programs = programs.names().to_vec();
    if args.baseline_program.is_some() {
        tc_programs.push(tc::BASELINE_PROGRAM);
    }
    tc::load(ebpf, &tc_programs)?;
    let mut attachments = Attachments::new(
        &args.interfaces,
        programs,
        args.baseline_program,
        args.tc_attach_mode,
    );
    for iface in chosen {
        attachments.attach(ebpf, metrics, iface)?;
    }
    if attachments.is_empty() {
        log::warn!("no interface to watch yet: wire counters stay at zero");
    }
    Ok(attachments)
}

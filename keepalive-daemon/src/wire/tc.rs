//! Attaching the wire programs: TCX where the kernel has it (6.6+), otherwise a
//! clsact qdisc with netlink cls_bpf filters. Before attaching, programs of ours that
//! another process attached to the interface (a second daemon) are warned about.

use std::ffi::CString;

use std::ffi::NulError;

use aya::{
    Ebpf,
    programs::{
        LinkOrder, ProgramError, SchedClassifier, TcAttach, TcAttachType,
        tc::{self, SchedClassifierLinkId},
    },
};
use keepalive_common::Direction;

use crate::cli::{BaselinePosition, TcAttachMode, WireFloor};

/// Why a tc program could not be loaded or attached; attach errors say what to change.
#[derive(Debug, thiserror::Error)]
pub enum TcError {
    #[error("program {name} missing from the eBPF object")]
    MissingProgram { name: String },
    #[error(transparent)]
    Program(Box<ProgramError>),
    #[error("loading tc program {name} (the verifier log follows)")]
    Load {
        name: String,
        #[source]
        source: Box<ProgramError>,
    },
    #[error("interface name {interface:?}")]
    InterfaceName {
        interface: String,
        #[source]
        source: NulError,
    },
    #[error(
        "attaching {name} to {interface} with TCX failed (--tc.attach-mode tcx; \
         kernels before 6.6 need netlink or auto): {error}"
    )]
    Tcx {
        name: &'static str,
        interface: String,
        // Not `source`: the message already carries it.
        error: Box<ProgramError>,
    },
    #[error(
        "attaching {name} to {interface} failed: {why}; netlink: {error}. \
         The daemon needs CAP_NET_ADMIN and CAP_BPF (or root)"
    )]
    Netlink {
        name: String,
        interface: String,
        why: String,
        error: Box<ProgramError>,
    },
}

// Boxed: aya's ProgramError is large, and this error travels through every attach.
impl From<ProgramError> for TcError {
    fn from(e: ProgramError) -> TcError {
        TcError::Program(Box::new(e))
    }
}

fn missing(name: &str) -> TcError {
    TcError::MissingProgram {
        name: name.to_owned(),
    }
}

/// The pair of programs attached to every watched interface.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TcPrograms {
    pub ingress: &'static str,
    pub egress: &'static str,
}

impl TcPrograms {
    /// Without kernel-side logging: the programs for --log.kernel-level off.
    pub const PLAIN: TcPrograms = TcPrograms {
        ingress: "ka_tc_ingress",
        egress: "ka_tc_egress",
    };
    /// The same programs with aya-log diagnostics (keepalive-ebpf/src/wire.rs says why
    /// these are separate programs): loaded only when --log.kernel-level is not off.
    pub const LOGGING: TcPrograms = TcPrograms {
        ingress: "ka_tc_ing_log",
        egress: "ka_tc_egr_log",
    };

    /// --debug.wire-floor parse: the parser alone (keepalive-ebpf/src/tc_floor.rs).
    pub const PARSE_FLOOR: TcPrograms = TcPrograms {
        ingress: "ka_tc_parse_ing",
        egress: "ka_tc_parse_egr",
    };
    /// --debug.wire-floor lookup: the parser and the flow-map lookup.
    pub const LOOKUP_FLOOR: TcPrograms = TcPrograms {
        ingress: "ka_tc_lkup_ing",
        egress: "ka_tc_lkup_egr",
    };

    /// The pair to attach: a floor for --debug.wire-floor, otherwise the pair for
    /// --log.kernel-level (`logging` when it is not off).
    pub fn choose(floor: Option<WireFloor>, logging: bool) -> TcPrograms {
        match (floor, logging) {
            (Some(WireFloor::Parse), _) => TcPrograms::PARSE_FLOOR,
            (Some(WireFloor::Lookup), _) => TcPrograms::LOOKUP_FLOOR,
            (None, true) => TcPrograms::LOGGING,
            (None, false) => TcPrograms::PLAIN,
        }
    }

    pub fn names(self) -> [&'static str; 2] {
        [self.ingress, self.egress]
    }
}

/// The empty program (--debug.baseline-program), attached to both hooks.
pub const BASELINE_PROGRAM: &str = "ka_tc_empty";
/// Every tc program of ours, whichever pair this daemon loaded: another daemon, or a
/// killed run, may have used the other pair.
const ALL_PROGRAMS: [&str; 9] = [
    TcPrograms::PLAIN.ingress,
    TcPrograms::PLAIN.egress,
    TcPrograms::LOGGING.ingress,
    TcPrograms::LOGGING.egress,
    TcPrograms::PARSE_FLOOR.ingress,
    TcPrograms::PARSE_FLOOR.egress,
    TcPrograms::LOOKUP_FLOOR.ingress,
    TcPrograms::LOOKUP_FLOOR.egress,
    BASELINE_PROGRAM,
];

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TcMode {
    Tcx,
    Netlink,
}

impl TcMode {
    pub fn label(self) -> &'static str {
        match self {
            TcMode::Tcx => "tcx",
            TcMode::Netlink => "netlink",
        }
    }
}

#[derive(Debug)]
pub struct TcAttachment {
    pub program: &'static str,
    pub interface: String,
    pub direction: Direction,
    pub mode: TcMode,
    pub link: SchedClassifierLinkId,
}

/// Loads the tc programs named (once per daemon).
pub fn load(ebpf: &mut Ebpf, names: &[&str]) -> Result<(), TcError> {
    for &name in names {
        let prog: &mut SchedClassifier = ebpf
            .program_mut(name)
            .ok_or_else(|| missing(name))?
            .try_into()?;
        prog.load().map_err(|source| TcError::Load {
            name: name.to_owned(),
            source: Box::new(source),
        })?;
    }
    Ok(())
}

/// Attaches the ingress and egress programs to `interface` (with `baseline`, the empty
/// program to both hooks too). The links stay owned by the programs inside `ebpf`:
/// dropping it detaches them.
pub fn attach(
    ebpf: &mut Ebpf,
    interface: &str,
    programs: TcPrograms,
    baseline: Option<BaselinePosition>,
    mode: TcAttachMode,
) -> Result<Vec<TcAttachment>, TcError> {
    let cname = CString::new(interface).map_err(|source| TcError::InterfaceName {
        interface: interface.to_owned(),
        source,
    })?;
    warn_about_other_daemons(ebpf, &cname, interface);
    remove_leftovers(&cname, interface);
    let mut done = Vec::new();
    let ours = [
        (programs.ingress, TcAttachType::Ingress, Direction::Received),
        (programs.egress, TcAttachType::Egress, Direction::Sent),
    ];
    let empty = [
        (BASELINE_PROGRAM, TcAttachType::Ingress, Direction::Received),
        (BASELINE_PROGRAM, TcAttachType::Egress, Direction::Sent),
    ];
    // Each attach goes to the end of its hook's chain, so the order of the plan is the
    // order the programs run in.
    let plan: Vec<_> = match baseline {
        None => ours.to_vec(),
        Some(BaselinePosition::After) => ours.iter().chain(&empty).copied().collect(),
        Some(BaselinePosition::Before) => empty.iter().chain(&ours).copied().collect(),
    };
    for (name, attach_type, direction) in plan {
        match attach_one(ebpf, &cname, interface, name, attach_type, direction, mode) {
            Ok(a) => done.push(a),
            Err(e) => {
                // All or nothing: no half-watched interface.
                for a in done {
                    detach(ebpf, a);
                }
                return Err(e);
            }
        }
    }
    Ok(done)
}

fn attach_one(
    ebpf: &mut Ebpf,
    cname: &CString,
    interface: &str,
    name: &'static str,
    attach_type: TcAttachType,
    direction: Direction,
    mode: TcAttachMode,
) -> Result<TcAttachment, TcError> {
    let prog: &mut SchedClassifier = ebpf
        .program_mut(name)
        .ok_or_else(|| missing(name))?
        .try_into()?;
    let tcx = (mode != TcAttachMode::Netlink).then(|| {
        prog.attach(
            cname.as_c_str(),
            TcAttach::Tcx {
                attach_type,
                order: LinkOrder::default(),
            },
        )
    });
    let (mode, link) = match tcx {
        Some(Ok(link)) => (TcMode::Tcx, link),
        Some(Err(error)) if mode == TcAttachMode::Tcx => {
            return Err(TcError::Tcx {
                name,
                interface: interface.to_owned(),
                error: Box::new(error),
            });
        }
        tcx => {
            let why = match tcx {
                Some(Err(e)) => format!("TCX: {e}"),
                _ => "--tc.attach-mode netlink".to_owned(),
            };
            let link = attach_netlink(prog, cname, (name, interface), attach_type, &why)?;
            (TcMode::Netlink, link)
        }
    };
    Ok(TcAttachment {
        program: name,
        interface: interface.to_owned(),
        direction,
        mode,
        link,
    })
}

/// The fallback: a clsact qdisc and a cls_bpf filter; `why` says why not TCX.
fn attach_netlink(
    prog: &mut SchedClassifier,
    cname: &CString,
    (name, interface): (&str, &str),
    attach_type: TcAttachType,
    why: &str,
) -> Result<SchedClassifierLinkId, TcError> {
    log::debug!("{interface}: {why}; attaching with clsact + netlink");
    // Already present (ours or another tool's) is fine: we only add a filter.
    if let Err(e) = tc::qdisc_add_clsact(cname.as_c_str()) {
        log::debug!("adding clsact qdisc on {interface}: {e}");
    }
    prog.attach(
        cname.as_c_str(),
        TcAttach::Netlink {
            parent: attach_type.into(),
            options: Default::default(),
        },
    )
    .map_err(|error| TcError::Netlink {
        name: name.to_owned(),
        interface: interface.to_owned(),
        why: why.to_owned(),
        error: Box::new(error),
    })
}

/// Removes legacy clsact filters of ours that a daemon which could not clean up left
/// behind (SIGKILL, a crash: netlink filters outlive the process, TCX links do not).
/// They are recognised by name; nothing else is touched, the qdisc included. (A second
/// keepalive-daemon on the same interface would lose its filters: run one per host.)
fn remove_leftovers(cname: &CString, interface: &str) {
    for name in ALL_PROGRAMS {
        for at in [TcAttachType::Ingress, TcAttachType::Egress] {
            match tc::qdisc_detach_program(cname.as_c_str(), at.into(), name) {
                Ok(()) => log::warn!(
                    "{interface}: removed leftover {name} filter(s) ({at:?}), left by an earlier \
                     run that could not clean up, or installed by another keepalive-daemon \
                     still running: run one daemon per host"
                ),
                // No clsact qdisc, or no such filter: nothing left over.
                Err(e) => log::debug!("no leftover {name} on {interface} ({at:?}): {e}"),
            }
        }
    }
}

/// Warns when `interface` already has programs named like ours attached with TCX by
/// another process: a second keepalive-daemon (TCX links die with their process, so
/// these are live). Both would count the same packets, each in its own maps. The
/// programs' names need BPF_PROG_GET_FD_BY_ID, hence CAP_SYS_ADMIN: without it (or
/// before TCX, 6.6) the check is skipped with a debug message.
fn warn_about_other_daemons(ebpf: &Ebpf, cname: &CString, interface: &str) {
    let ours: Vec<u32> = ALL_PROGRAMS
        .iter()
        .filter_map(|name| ebpf.program(name)?.info().ok())
        .map(|info| info.id())
        .collect();
    let mut found = Vec::new();
    for at in [TcAttachType::Ingress, TcAttachType::Egress] {
        match SchedClassifier::query_tcx(cname.as_c_str(), at) {
            Ok((_, progs)) => found.extend(
                progs
                    .iter()
                    .filter(|p| !ours.contains(&p.id()))
                    .filter_map(|p| Some((p.name_as_str()?.to_owned(), p.id())))
                    .filter(|(name, _)| name.starts_with("ka_tc_"))
                    .map(|(name, id)| format!("{name} ({at:?}, program id {id})")),
            ),
            Err(e) => {
                log::debug!("{interface}: cannot list its TCX programs ({at:?}): {e}");
                return;
            }
        }
    }
    if !found.is_empty() {
        log::warn!(
            "{interface}: {} already attached by another process: is a second \
             keepalive-daemon running? Run one daemon per host (both would count the same \
             packets)",
            found.join(", ")
        );
    }
}

/// Releases an attachment: for an interface that was deleted the kernel has already
/// detached the program, this frees our end of the link.
pub fn detach(ebpf: &mut Ebpf, a: TcAttachment) {
    let Some(prog) = ebpf.program_mut(a.program) else {
        return;
    };
    let prog: Result<&mut SchedClassifier, _> = prog.try_into();
    if let Ok(prog) = prog
        && let Err(e) = prog.detach(a.link)
    {
        log::debug!("detaching {} from {}: {e}", a.program, a.interface);
    }
}

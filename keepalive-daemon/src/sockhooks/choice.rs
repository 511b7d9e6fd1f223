//! Which mechanism each socket-level hook uses, chosen at run time per hook: fentry, then
//! kprobe, then tracepoints. Each choice is logged (one line per hook; each refusal's
//! whole error at debug level) and exported (keepalive_daemon_hook_info).
//!
//! The keepalive hooks are chosen together at start-up ([`attach_all`]); the idle-death
//! hook later, alone ([`attach_one`]), once the audit has measured the HZ its programs
//! need.

use std::collections::HashSet;

use aya::{
    Btf, Ebpf,
    programs::{FEntry, KProbe, ProgramError, RawTracePoint},
};

use super::sockconfig::Prerequisites;
pub use rejection::Rejection;

mod rejection;
use crate::cli::HookMechanism as Mechanism;

/// Why one mechanism of a hook could not be attached (the next one is tried).
#[derive(Debug, thiserror::Error)]
pub enum AttachError {
    #[error("program {name} missing from the eBPF object")]
    MissingProgram { name: &'static str },
    #[error("no kernel BTF for fentry")]
    NoBtf,
    #[error(transparent)]
    Program(#[from] ProgramError),
    #[error("loading fentry {prog} for {func}")]
    LoadFentry {
        prog: &'static str,
        func: &'static str,
        #[source]
        source: ProgramError,
    },
    #[error("attaching fentry {prog} to {func}")]
    AttachFentry {
        prog: &'static str,
        func: &'static str,
        #[source]
        source: ProgramError,
    },
    #[error("loading kprobe {prog}")]
    LoadKprobe {
        prog: &'static str,
        #[source]
        source: ProgramError,
    },
    #[error("attaching kprobe {prog} to {func}")]
    AttachKprobe {
        prog: &'static str,
        func: &'static str,
        #[source]
        source: ProgramError,
    },
    #[error("loading raw tracepoint program {prog}")]
    LoadTracepoint {
        prog: &'static str,
        #[source]
        source: ProgramError,
    },
    #[error("attaching {prog} to raw tracepoint {name}")]
    AttachTracepoint {
        prog: &'static str,
        name: &'static str,
        #[source]
        source: ProgramError,
    },
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Hook {
    /// Probes the keepalive timer sends (tcp_keepalive_timer -> tcp_write_wakeup).
    TimerProbes,
    /// Connections the keepalive timer gives up on and resets.
    Timeouts,
    /// Connections that fail after being idle (the keepalive audit; a RST received or
    /// the retransmission timer giving up).
    IdleDeaths,
}

impl Hook {
    pub const ALL: [Hook; 3] = [Hook::TimerProbes, Hook::Timeouts, Hook::IdleDeaths];
    /// The hooks [`attach_all`] chooses at start-up; the others are attached by
    /// [`attach_one`] when what they need is known.
    pub const AT_START: [Hook; 2] = [Hook::TimerProbes, Hook::Timeouts];

    pub fn label(self) -> &'static str {
        match self {
            Hook::TimerProbes => "timer_probes",
            Hook::Timeouts => "timeouts",
            Hook::IdleDeaths => "idle_deaths",
        }
    }
}

/// What was chosen for one hook, and why the better mechanisms were not.
#[derive(Debug)]
pub struct HookChoice {
    pub hook: Hook,
    pub chosen: Option<Mechanism>,
    pub rejected: Vec<Rejection>,
}

impl HookChoice {
    /// One line for the operator, e.g. `timer_probes: tracepoint (fentry refused by the
    /// kernel: EPERM; kprobe failed: ENOENT on /sys/bus/event_source/devices/kprobe/type;
    /// fine)`.
    pub fn summary(&self) -> String {
        let chosen = self.chosen.map_or("none", |m| m.label());
        let mut why: Vec<String> = self
            .rejected
            .iter()
            .map(|r| format!("{} {}", r.mechanism.label(), r.short))
            .collect();
        if why.is_empty() {
            return format!("{}: {chosen}", self.hook.label());
        }
        if self.chosen.is_some() {
            why.push("fine".to_owned());
        }
        format!("{}: {chosen} ({})", self.hook.label(), why.join("; "))
    }

    /// The line for a hook that was not tried at all, e.g. `idle_deaths: none (audit
    /// off: --audit.disable)`.
    pub fn off_summary(hook: Hook, why: &str) -> String {
        format!("{}: none ({why})", hook.label())
    }

    /// Logs the choice: each refusal in full at debug level, then the summary (a
    /// warning when the hook got no mechanism).
    pub fn log(&self) {
        for r in &self.rejected {
            log::debug!(
                "hook {}: {} not used: {}",
                self.hook.label(),
                r.mechanism.label(),
                r.detail
            );
        }
        match self.chosen {
            Some(_) => log::info!("{}", self.summary()),
            None => log::warn!("{}: its counters stay at zero", self.summary()),
        }
    }
}

/// The mechanisms for `hook`, best first.
pub fn preference(hook: Hook) -> &'static [Mechanism] {
    use Mechanism::*;
    match hook {
        Hook::TimerProbes => &[Fentry, Kprobe, Tracepoint],
        Hook::Timeouts => &[Fentry, Kprobe, Tracepoint, TracepointTimerContext],
        Hook::IdleDeaths => &[Fentry, Kprobe, Tracepoint],
    }
}

enum Step {
    Fentry {
        prog: &'static str,
        func: &'static str,
    },
    Kprobe {
        prog: &'static str,
        func: &'static str,
    },
    /// A raw tracepoint (see keepalive-ebpf/src/timer_tracepoint.rs for why not a
    /// perf-event one).
    Tracepoint {
        prog: &'static str,
        name: &'static str,
    },
}

const TIMER_ENTRY: Step = Step::Tracepoint {
    prog: "ka_timer_entry",
    name: "timer_expire_entry",
};
const TIMER_EXIT: Step = Step::Tracepoint {
    prog: "ka_timer_exit",
    name: "timer_expire_exit",
};
/// The same exit point without counting probes: only keeps the timer context.
const TIMER_EXIT_CONTEXT: Step = Step::Tracepoint {
    prog: "ka_timer_exit_ctx",
    name: "timer_expire_exit",
};

fn steps(
    hook: Hook,
    m: Mechanism,
    attached: &HashSet<&'static str>,
    prereq: &Prerequisites,
) -> Vec<Step> {
    use Mechanism::*;
    // One program per tcp_send_active_reset() signature (see active_reset_fentry.rs).
    let reason_first = prereq.active_reset_reason_arg == 1;
    match (hook, m) {
        (Hook::TimerProbes, Fentry) => vec![Step::Fentry {
            prog: "ka_wakeup_fe",
            func: "tcp_write_wakeup",
        }],
        (Hook::TimerProbes, Kprobe) => vec![Step::Kprobe {
            prog: "ka_wakeup_kp",
            func: "tcp_write_wakeup",
        }],
        (Hook::TimerProbes, _) => vec![TIMER_ENTRY, TIMER_EXIT],
        (Hook::Timeouts, Fentry) => vec![Step::Fentry {
            prog: if reason_first {
                "ka_arst_fe_r1"
            } else {
                "ka_arst_fe"
            },
            func: "tcp_send_active_reset",
        }],
        (Hook::Timeouts, Kprobe) => vec![Step::Kprobe {
            prog: if reason_first {
                "ka_arst_kp_r1"
            } else {
                "ka_arst_kp"
            },
            func: "tcp_send_active_reset",
        }],
        (Hook::Timeouts, Tracepoint) => {
            vec![Step::Tracepoint {
                prog: "ka_send_reset",
                name: "tcp_send_reset",
            }]
        }
        (Hook::Timeouts, TracepointTimerContext) => {
            let exit = if attached.contains("ka_timer_exit") {
                TIMER_EXIT
            } else {
                TIMER_EXIT_CONTEXT
            };
            vec![
                TIMER_ENTRY,
                exit,
                Step::Tracepoint {
                    prog: "ka_err_report",
                    name: "inet_sk_error_report",
                },
            ]
        }
        (Hook::IdleDeaths, m) => idle_death_steps(m),
    }
}

/// The idle-death hook's programs: the reset mark first, so that an error report never
/// misses the mark of its RST.
fn idle_death_steps(m: Mechanism) -> Vec<Step> {
    use Mechanism::*;
    match m {
        Fentry => vec![
            Step::Fentry {
                prog: "ka_rst_mark_fe",
                func: "tcp_reset",
            },
            Step::Fentry {
                prog: "ka_idle_death_fe",
                func: "sk_error_report",
            },
        ],
        Kprobe => vec![
            Step::Kprobe {
                prog: "ka_rst_mark_kp",
                func: "tcp_reset",
            },
            Step::Kprobe {
                prog: "ka_idle_death_kp",
                func: "sk_error_report",
            },
        ],
        _ => vec![
            Step::Tracepoint {
                prog: "ka_rst_mark",
                name: "tcp_receive_reset",
            },
            Step::Tracepoint {
                prog: "ka_idle_death",
                name: "inet_sk_error_report",
            },
        ],
    }
}

fn missing_prerequisite(hook: Hook, m: Mechanism, p: &Prerequisites) -> Option<String> {
    use Mechanism::*;
    let why = match (hook, m) {
        (Hook::TimerProbes, Fentry | Kprobe) => &p.write_wakeup,
        (Hook::TimerProbes, _) => &p.timer_tracepoints,
        (Hook::Timeouts, Fentry | Kprobe) => &p.active_reset_reason,
        (Hook::Timeouts, Tracepoint) => &p.send_reset_tracepoint,
        (Hook::Timeouts, TracepointTimerContext) => {
            if p.timer_tracepoints.is_some() {
                &p.timer_tracepoints
            } else {
                &p.error_report_tracepoint
            }
        }
        (Hook::IdleDeaths, Fentry | Kprobe) => &p.idle_death_functions,
        (Hook::IdleDeaths, _) => &p.idle_death_tracepoints,
    };
    why.clone()
}

/// Attaches the best mechanism each of [`Hook::AT_START`] can get. A hook that gets
/// none is reported (not fatal): the wire counters work without it.
pub fn attach_all(
    ebpf: &mut Ebpf,
    prereq: &Prerequisites,
    btf: Option<&Btf>,
    disabled: &[Mechanism],
) -> Vec<HookChoice> {
    let mut attached: HashSet<&'static str> = HashSet::new();
    Hook::AT_START
        .into_iter()
        .map(|hook| choose(ebpf, hook, prereq, btf, disabled, &mut attached))
        .collect()
}

/// Attaches the best mechanism `hook` can get, after start-up. Its steps share no
/// program with the other hooks' (the idle-death hook's timer context is attached by
/// its caller, which knows what the keepalive hooks loaded).
pub fn attach_one(
    ebpf: &mut Ebpf,
    hook: Hook,
    prereq: &Prerequisites,
    btf: Option<&Btf>,
    disabled: &[Mechanism],
) -> HookChoice {
    choose(ebpf, hook, prereq, btf, disabled, &mut HashSet::new())
}

/// Tries `hook`'s mechanisms best first; records why each one before the chosen failed.
fn choose(
    ebpf: &mut Ebpf,
    hook: Hook,
    prereq: &Prerequisites,
    btf: Option<&Btf>,
    disabled: &[Mechanism],
    attached: &mut HashSet<&'static str>,
) -> HookChoice {
    let mut choice = HookChoice {
        hook,
        chosen: None,
        rejected: Vec::new(),
    };
    for &m in preference(hook) {
        if disabled.contains(&m) {
            let why = "disabled by --hooks.disable".to_owned();
            choice.rejected.push(Rejection::new(m, why.clone(), why));
            continue;
        }
        if let Some(why) = missing_prerequisite(hook, m, prereq) {
            let short = format!("unavailable: {why}");
            choice.rejected.push(Rejection::new(m, short, why));
            continue;
        }
        match attach_steps(ebpf, &steps(hook, m, attached, prereq), btf, attached) {
            Ok(()) => {
                choice.chosen = Some(m);
                break;
            }
            Err(e) => choice.rejected.push(Rejection::attach_failed(m, &e)),
        }
    }
    choice
}

/// Attaches every step or none: on failure the programs this call attached are unloaded.
fn attach_steps(
    ebpf: &mut Ebpf,
    steps: &[Step],
    btf: Option<&Btf>,
    attached: &mut HashSet<&'static str>,
) -> Result<(), AttachError> {
    let mut new = Vec::new();
    for step in steps {
        let prog = match step {
            Step::Fentry { prog, .. }
            | Step::Kprobe { prog, .. }
            | Step::Tracepoint { prog, .. } => *prog,
        };
        if attached.contains(prog) {
            continue;
        }
        if let Err(e) = attach_step(ebpf, step, btf) {
            // The failing program may have loaded before its attach failed.
            for p in new.into_iter().chain([prog]) {
                if let Some(program) = ebpf.program_mut(p) {
                    let _ = unload(program);
                }
                attached.remove(p);
            }
            return Err(e);
        }
        attached.insert(prog);
        new.push(prog);
    }
    Ok(())
}

fn unload(p: &mut aya::programs::Program) -> Result<(), aya::programs::ProgramError> {
    use aya::programs::Program;
    match p {
        Program::FEntry(p) => p.unload(),
        Program::KProbe(p) => p.unload(),
        Program::RawTracePoint(p) => p.unload(),
        _ => Ok(()),
    }
}

fn get<'a>(
    ebpf: &'a mut Ebpf,
    name: &'static str,
) -> Result<&'a mut aya::programs::Program, AttachError> {
    ebpf.program_mut(name)
        .ok_or(AttachError::MissingProgram { name })
}

fn attach_step(ebpf: &mut Ebpf, step: &Step, btf: Option<&Btf>) -> Result<(), AttachError> {
    match *step {
        Step::Fentry { prog, func } => {
            let btf = btf.ok_or(AttachError::NoBtf)?;
            let p: &mut FEntry = get(ebpf, prog)?.try_into()?;
            p.load(func, btf)
                .map_err(|source| AttachError::LoadFentry { prog, func, source })?;
            p.attach()
                .map_err(|source| AttachError::AttachFentry { prog, func, source })?;
        }
        Step::Kprobe { prog, func } => {
            let p: &mut KProbe = get(ebpf, prog)?.try_into()?;
            p.load()
                .map_err(|source| AttachError::LoadKprobe { prog, source })?;
            p.attach(func, 0)
                .map_err(|source| AttachError::AttachKprobe { prog, func, source })?;
        }
        Step::Tracepoint { prog, name } => {
            let p: &mut RawTracePoint = get(ebpf, prog)?.try_into()?;
            p.load()
                .map_err(|source| AttachError::LoadTracepoint { prog, source })?;
            p.attach(name)
                .map_err(|source| AttachError::AttachTracepoint { prog, name, source })?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests;

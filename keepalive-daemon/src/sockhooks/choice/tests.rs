//! The choice's pure parts: the order of mechanisms per hook and the summary line.

use super::*;

fn refused(m: Mechanism, errno: i32) -> Rejection {
    let e = AttachError::LoadFentry {
        prog: "ka_wakeup_fe",
        func: "tcp_write_wakeup",
        source: ProgramError::SyscallError(aya::sys::SyscallError {
            call: "bpf_prog_load",
            io_error: std::io::Error::from_raw_os_error(errno),
        }),
    };
    Rejection::attach_failed(m, &e)
}

#[test]
fn the_summary_names_the_mechanism_and_each_refusal_in_short() {
    let choice = HookChoice {
        hook: Hook::TimerProbes,
        chosen: Some(Mechanism::Tracepoint),
        rejected: vec![
            refused(Mechanism::Fentry, libc::EPERM),
            refused(Mechanism::Kprobe, libc::ENOENT),
        ],
    };
    assert_eq!(
        choice.summary(),
        "timer_probes: tracepoint (fentry refused by the kernel: EPERM; \
         kprobe refused by the kernel: ENOENT; fine)"
    );
    // The details keep the whole chain.
    assert!(
        choice.rejected[0]
            .detail
            .starts_with("loading fentry ka_wakeup_fe for tcp_write_wakeup"),
        "{}",
        choice.rejected[0].detail
    );
    let first_choice = HookChoice {
        hook: Hook::Timeouts,
        chosen: Some(Mechanism::Fentry),
        rejected: vec![],
    };
    assert_eq!(first_choice.summary(), "timeouts: fentry");
    let none = HookChoice {
        hook: Hook::Timeouts,
        chosen: None,
        rejected: vec![
            Rejection::new(
                Mechanism::Fentry,
                "disabled by --hooks.disable".into(),
                String::new(),
            ),
            refused(Mechanism::Kprobe, 524),
        ],
    };
    assert_eq!(
        none.summary(),
        "timeouts: none (fentry disabled by --hooks.disable; \
         kprobe refused by the kernel: ENOTSUPP)"
    );
}

#[test]
fn the_idle_death_hook_prefers_fentry_then_kprobe_then_tracepoints() {
    assert_eq!(Hook::IdleDeaths.label(), "idle_deaths");
    assert_eq!(
        preference(Hook::IdleDeaths),
        [Mechanism::Fentry, Mechanism::Kprobe, Mechanism::Tracepoint]
    );
    // Chosen later, alone: not among the hooks of the first pass.
    assert_eq!(Hook::AT_START, [Hook::TimerProbes, Hook::Timeouts]);
    assert_eq!(Hook::ALL[2], Hook::IdleDeaths);
}

#[test]
fn each_idle_death_mechanism_marks_resets_before_it_reads_error_reports() {
    let p = Prerequisites::default();
    let none = HashSet::new();
    let names = |m| -> Vec<(&'static str, &'static str)> {
        steps(Hook::IdleDeaths, m, &none, &p)
            .iter()
            .map(|s| match *s {
                Step::Fentry { prog, func } | Step::Kprobe { prog, func } => (prog, func),
                Step::Tracepoint { prog, name } => (prog, name),
            })
            .collect()
    };
    assert_eq!(
        names(Mechanism::Fentry),
        [
            ("ka_rst_mark_fe", "tcp_reset"),
            ("ka_idle_death_fe", "sk_error_report")
        ]
    );
    assert_eq!(
        names(Mechanism::Kprobe),
        [
            ("ka_rst_mark_kp", "tcp_reset"),
            ("ka_idle_death_kp", "sk_error_report")
        ]
    );
    assert_eq!(
        names(Mechanism::Tracepoint),
        [
            ("ka_rst_mark", "tcp_receive_reset"),
            ("ka_idle_death", "inet_sk_error_report")
        ]
    );
}

#[test]
fn idle_death_prerequisites_are_per_mechanism_family() {
    let p = Prerequisites {
        idle_death_functions: Some("no tcp_reset in BTF".into()),
        ..Prerequisites::default()
    };
    let hook = Hook::IdleDeaths;
    assert_eq!(
        missing_prerequisite(hook, Mechanism::Fentry, &p).as_deref(),
        Some("no tcp_reset in BTF")
    );
    assert_eq!(
        missing_prerequisite(hook, Mechanism::Kprobe, &p).as_deref(),
        Some("no tcp_reset in BTF")
    );
    assert_eq!(missing_prerequisite(hook, Mechanism::Tracepoint, &p), None);
}

#[test]
fn the_idle_death_summaries() {
    let choice = HookChoice {
        hook: Hook::IdleDeaths,
        chosen: Some(Mechanism::Tracepoint),
        rejected: vec![
            refused(Mechanism::Fentry, libc::EPERM),
            Rejection::new(
                Mechanism::Kprobe,
                "disabled by --hooks.disable".into(),
                String::new(),
            ),
        ],
    };
    assert_eq!(
        choice.summary(),
        "idle_deaths: tracepoint (fentry refused by the kernel: EPERM; \
         kprobe disabled by --hooks.disable; fine)"
    );
    assert_eq!(
        HookChoice::off_summary(Hook::IdleDeaths, "audit off: --audit.disable"),
        "idle_deaths: none (audit off: --audit.disable)"
    );
}

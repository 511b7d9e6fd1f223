//! The command line's parsing: flags, defaults, errors, and the clap definition.

use super::*;

#[test]
fn listen_addresses() {
    assert_eq!(
        parse_listen_address(":10291").unwrap(),
        ListenAddress::Any(10291)
    );
    assert_eq!(
        parse_listen_address("127.0.0.1:9").unwrap(),
        ListenAddress::Specific("127.0.0.1:9".parse().unwrap())
    );
    assert_eq!(
        parse_listen_address("[::1]:9").unwrap(),
        ListenAddress::Specific("[::1]:9".parse().unwrap())
    );
    for bad in ["10291", ":port", ":99999", "1.2.3.4:x"] {
        assert!(parse_listen_address(bad).is_err(), "{bad} accepted");
    }
}

#[test]
fn web_request_cap_and_connections_switch() {
    let a = Args::try_parse_from(["keepalive-daemon"]).unwrap();
    assert_eq!(a.max_requests, 40, "node_exporter's default");
    assert!(!a.disable_connections);
    let a = Args::try_parse_from([
        "keepalive-daemon",
        "--web.max-requests",
        "0",
        "--web.disable-connections",
    ])
    .unwrap();
    assert_eq!(a.max_requests, 0);
    assert!(a.disable_connections);
    for bad in ["-1", "x", ""] {
        assert!(
            Args::try_parse_from(["keepalive-daemon", "--web.max-requests", bad]).is_err(),
            "{bad:?} accepted"
        );
    }
}

#[test]
fn flags_parse_and_defaults_hold() {
    let a = Args::try_parse_from(["keepalive-daemon"]).unwrap();
    assert_eq!(a.listen, [":10291"]);
    assert!(a.interfaces.is_empty());
    let a = Args::try_parse_from([
        "keepalive-daemon",
        "--interface",
        "veth*",
        "--interface",
        "eth0",
        "--web.listen-address",
        "127.0.0.1:1",
        "--web.listen-address",
        ":2",
    ])
    .unwrap();
    assert_eq!(a.interfaces, ["veth*", "eth0"]);
    assert_eq!(a.listen, ["127.0.0.1:1", ":2"]);
    assert!(Args::try_parse_from(["keepalive-daemon", "--flows.max", "1"]).is_err());
    let a = Args::try_parse_from(["keepalive-daemon", "--flows.sweep-interval", "5m"]).unwrap();
    assert_eq!(a.sweep_interval, std::time::Duration::from_secs(300));
    for bad in ["5", "5x", "s", "10ms"] {
        assert!(
            Args::try_parse_from(["keepalive-daemon", "--flows.sweep-interval", bad]).is_err(),
            "{bad} accepted"
        );
    }
    assert!(Args::try_parse_from(["keepalive-daemon", "--bogus"]).is_err());
    let a = Args::try_parse_from([
        "keepalive-daemon",
        "--hooks.disable",
        "fentry",
        "--hooks.disable",
        "kprobe",
    ])
    .unwrap();
    let disabled: Vec<_> = a.hooks_disable.iter().map(|m| m.label()).collect();
    assert_eq!(disabled, ["fentry", "kprobe"]);
    assert!(Args::try_parse_from(["keepalive-daemon", "--hooks.disable", "uprobe"]).is_err());
}

/// The label is the flag's value: one spelling for the flag, the log and the metric.
#[test]
fn hook_mechanism_labels_are_their_flag_values() {
    use clap::ValueEnum as _;
    for m in HookMechanism::value_variants() {
        let v = m.to_possible_value().expect("not skipped");
        assert_eq!(v.get_name(), m.label());
    }
}

#[test]
fn connections_flags_parse_with_defaults() {
    let conns = |argv: &[&str]| match Args::try_parse_from(argv).unwrap().command {
        Some(Command::Connections(c)) => c,
        None => panic!("{argv:?}: no subcommand"),
    };
    let c = conns(&["keepalive-daemon", "connections"]);
    assert_eq!(c.address, "127.0.0.1:10291");
    assert_eq!(c.limit, 100);
    assert_eq!(c.http_config_file, None);
    assert!(!c.json && !c.probing);
    let c = conns(&[
        "keepalive-daemon",
        "connections",
        "--web.address",
        "https://h:10291",
        "--http.config.file",
        "/etc/k/http.yml",
        "--limit",
        "5",
        "--json",
        "--probing",
    ]);
    assert_eq!(c.address, "https://h:10291");
    assert_eq!(c.http_config_file, Some(PathBuf::from("/etc/k/http.yml")));
    assert_eq!(c.limit, 5);
    assert!(c.json && c.probing && !c.at_risk);
    assert!(conns(&["keepalive-daemon", "connections", "--at-risk"]).at_risk);
    assert!(Args::try_parse_from(["keepalive-daemon", "connections", "--limit", "x"]).is_err());
}

/// The --help text names the table's columns as the table prints them.
#[test]
fn connections_help_names_every_column() {
    use clap::CommandFactory as _;
    let mut cmd = Args::command();
    let help = cmd
        .find_subcommand_mut("connections")
        .expect("connections subcommand")
        .render_long_help()
        .to_string();
    for column in crate::web::table::COLUMNS.iter().skip(2) {
        assert!(
            help.contains(&format!("{column}:")),
            "{column} missing: {help}"
        );
    }
}

#[test]
fn kernel_log_level_defaults_off_and_matches_aya_log() {
    let a = Args::try_parse_from(["keepalive-daemon"]).unwrap();
    assert_eq!(a.kernel_log_level, KernelLogLevel::Off);
    assert_eq!(a.kernel_log_level.aya_level(), 0);
    assert_eq!(a.kernel_log_level.filter(), log::LevelFilter::Off);
    for (flag, aya, filter) in [
        ("error", aya_log::Level::Error, log::LevelFilter::Error),
        ("warn", aya_log::Level::Warn, log::LevelFilter::Warn),
        ("info", aya_log::Level::Info, log::LevelFilter::Info),
        ("debug", aya_log::Level::Debug, log::LevelFilter::Debug),
        ("trace", aya_log::Level::Trace, log::LevelFilter::Trace),
    ] {
        let a = Args::try_parse_from(["keepalive-daemon", "--log.kernel-level", flag]).unwrap();
        assert_eq!(a.kernel_log_level.aya_level(), aya as u8, "{flag}");
        assert_eq!(a.kernel_log_level.filter(), filter, "{flag}");
    }
    assert!(Args::try_parse_from(["keepalive-daemon", "--log.kernel-level", "all"]).is_err());
}

#[test]
fn clap_definition_is_consistent() {
    use clap::CommandFactory as _;
    Args::command().debug_assert();
}

/// The daemon's arguments from `extra` after the program name.
fn args(extra: &[&str]) -> Result<Args, clap::Error> {
    Args::try_parse_from(std::iter::once("keepalive-daemon").chain(extra.iter().copied()))
}

#[test]
fn baseline_program_is_off_by_default_and_after_ours_without_a_value() {
    let parse = |extra: &[&str]| args(extra).map(|a| a.baseline_program);
    assert_eq!(parse(&[]).unwrap(), None);
    assert_eq!(
        parse(&["--debug.baseline-program"]).unwrap(),
        Some(BaselinePosition::After)
    );
    assert_eq!(
        parse(&["--debug.baseline-program=before"]).unwrap(),
        Some(BaselinePosition::Before)
    );
    assert_eq!(
        parse(&["--debug.baseline-program=after"]).unwrap(),
        Some(BaselinePosition::After)
    );
    // Without `=` the next word is an argument, not the position: flags may follow.
    assert_eq!(
        parse(&["--debug.baseline-program", "--interface", "lo"]).unwrap(),
        Some(BaselinePosition::After)
    );
    assert!(parse(&["--debug.baseline-program=first"]).is_err());
}

#[test]
fn wire_floor_is_off_by_default_and_takes_parse_or_lookup() {
    let parse = |extra: &[&str]| args(extra).map(|a| a.wire_floor);
    assert_eq!(parse(&[]).unwrap(), None);
    assert_eq!(
        parse(&["--debug.wire-floor", "parse"]).unwrap(),
        Some(WireFloor::Parse)
    );
    assert_eq!(
        parse(&["--debug.wire-floor=lookup"]).unwrap(),
        Some(WireFloor::Lookup)
    );
    assert!(parse(&["--debug.wire-floor"]).is_err());
    assert!(parse(&["--debug.wire-floor=classify"]).is_err());
}

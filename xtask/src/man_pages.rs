//! The daemon's man pages, generated from its clap definition: keepalive-daemon.1 (with
//! the sections an operator looks for in a daemon's page) and one page per subcommand.
//! The package ships them; the deployment check puts them on MANPATH so that
//! `systemd-analyze verify` can resolve the unit's Documentation=man: reference.

use std::fs;
use std::path::{Path, PathBuf};

use anyhow::Context as _;
use clap::CommandFactory as _;
use clap_mangen::roff::{Inline, Roff, bold, italic, roman};
use keepalive_daemon::cli::Args;

/// The command the man pages describe (subcommand display names resolved).
pub fn man_command() -> clap::Command {
    let mut cmd = Args::command().disable_help_subcommand(true);
    cmd.build();
    cmd
}

/// Uncompressed man pages: keepalive-daemon.1 and one per subcommand.
pub fn write_man_pages(dir: &Path) -> anyhow::Result<Vec<PathBuf>> {
    let cmd = man_command();
    let mut pages = Vec::new();
    let main = dir.join("keepalive-daemon.1");
    let mut text = Vec::new();
    render_main_page(&cmd, &mut text)?;
    fs::write(&main, text).with_context(|| format!("writing {}", main.display()))?;
    pages.push(main);
    for sub in cmd.get_subcommands().filter(|s| !s.is_hide_set()) {
        let man = clap_mangen::Man::new(sub.clone()).manual("keepalive-daemon");
        let path = dir.join(man.get_filename());
        let mut text = Vec::new();
        man.render(&mut text)?;
        fs::write(&path, text).with_context(|| format!("writing {}", path.display()))?;
        pages.push(path);
    }
    Ok(pages)
}

/// clap_mangen's sections plus what an operator looks for in a daemon's man page.
fn render_main_page(cmd: &clap::Command, w: &mut Vec<u8>) -> anyhow::Result<()> {
    let man = clap_mangen::Man::new(cmd.clone()).manual("keepalive-daemon");
    man.render_title(w)?;
    man.render_name_section(w)?;
    man.render_synopsis_section(w)?;
    man.render_description_section(w)?;
    man.render_options_section(w)?;
    if cmd.has_subcommands() {
        man.render_subcommands_section(w)?;
    }
    let mut r = Roff::new();
    http_endpoints_section(&mut r);
    signals_section(&mut r);
    environment_section(&mut r);
    files_section(&mut r);
    see_also_section(&mut r);
    r.to_writer(w)?;
    man.render_version_section(w)?;
    Ok(())
}

fn section(r: &mut Roff, title: &str) {
    r.control("SH", [title]);
}

/// A tagged paragraph: `term`, then `text` indented below it.
fn item(r: &mut Roff, term: Inline, text: &str) {
    r.control("TP", []);
    r.text([term]);
    r.text([roman(text)]);
}

fn http_endpoints_section(r: &mut Roff) {
    section(r, "HTTP ENDPOINTS");
    item(
        r,
        bold("/metrics"),
        "Prometheus metrics (text format 0.0.4).",
    );
    item(
        r,
        bold("/healthz"),
        "200 \"ok\" once every program is attached and the kernel counters can be read; 503 otherwise.",
    );
    item(
        r,
        bold("/connections"),
        "The tracked connections' keepalive state, as JSON (what the connections subcommand prints).",
    );
    item(r, bold("/"), "A landing page with links.");
}

fn signals_section(r: &mut Roff) {
    section(r, "SIGNALS");
    r.text([roman(
        "On SIGINT or SIGTERM the daemon detaches every program it attached and exits 0.",
    )]);
}

fn environment_section(r: &mut Roff) {
    section(r, "ENVIRONMENT");
    item(
        r,
        bold("RUST_LOG"),
        "Log filter (env_logger syntax); overrides --log.level.",
    );
    item(
        r,
        bold("NOTIFY_SOCKET"),
        "Set by systemd (Type=notify): the daemon reports READY=1, STATUS= and WATCHDOG=1 there.",
    );
    item(
        r,
        bold("JOURNAL_STREAM"),
        "Set by systemd: log lines then carry syslog priority prefixes instead of timestamps.",
    );
}

fn files_section(r: &mut Roff) {
    section(r, "FILES");
    item(
        r,
        italic("/etc/default/keepalive-daemon"),
        "KEEPALIVE_DAEMON_ARGS, the flags the systemd unit starts the daemon with.",
    );
    item(
        r,
        italic("/usr/lib/systemd/system/keepalive-daemon.service"),
        "The systemd unit: runs the daemon with CAP_BPF, CAP_PERFMON and CAP_NET_ADMIN only.",
    );
    item(
        r,
        italic("/usr/share/keepalive-daemon/"),
        "Grafana dashboard (keepalive.json), Prometheus alert rules (alerts.yaml) and scrape configuration (scrape-config.yaml).",
    );
    item(
        r,
        italic("/sys/kernel/btf/vmlinux, /proc/kallsyms, /sys/kernel/tracing"),
        "Read at start-up for kernel struct offsets, symbol addresses and tracepoint layouts.",
    );
}

fn see_also_section(r: &mut Roff) {
    section(r, "SEE ALSO");
    r.text([roman(
        "systemd.exec(5), tc-bpf(8), bpftool(8); /usr/share/doc/keepalive-daemon/README.md",
    )]);
}

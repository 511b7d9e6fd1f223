//! `cargo xtask package`: the Debian package, built by cargo-deb from the
//! `[package.metadata.deb]` section of keepalive-daemon/Cargo.toml. This module generates
//! what cargo-deb cannot: the man pages and shell completions (from the daemon's clap
//! definition) and the shared files, under `target/release/deb-assets/`. `--check` then
//! inspects the .deb it built.

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context as _, bail, ensure};
use clap::CommandFactory as _;
use clap_complete::Shell;
use clap_mangen::roff::{Roff, bold, italic, roman};
use keepalive_daemon::cli::Args;
use keepalive_tests::process::TempDir;

use crate::tool::run_tool;
use crate::workspace_root;

/// cargo-deb version the packaging metadata is written for (`scripts/setup.sh`).
pub const CARGO_DEB_VERSION: &str = "3.8.0";

/// Where the generated assets go; cargo-deb maps `target/release/` to the real
/// target directory, and keepalive-daemon/Cargo.toml lists these paths.
const DEB_ASSETS: &str = "target/release/deb-assets";

/// Files shipped under /usr/share/keepalive-daemon/ when they exist in the tree.
pub const SHARED_FILES: [&str; 3] = [
    "dashboards/keepalive.json",
    "deploy/prometheus/alerts.yaml",
    "deploy/prometheus/scrape-config.yaml",
];

pub fn run(check: bool) -> anyhow::Result<()> {
    let version = cargo_deb_version()?;
    if version != CARGO_DEB_VERSION {
        eprintln!("note: cargo-deb {version}; the packaging is tested with {CARGO_DEB_VERSION}");
    }
    let assets = workspace_root().join(DEB_ASSETS);
    let generated = generate_assets(&assets)?;
    for path in &generated {
        println!("generated {}", path.display());
    }
    let deb = build_deb()?;
    println!("built {}", deb.display());
    if check {
        check_deb(&deb)?;
    }
    Ok(())
}

fn cargo_deb_version() -> anyhow::Result<String> {
    let hint = format!(
        "cargo-deb is not installed; install it with \
         `cargo install cargo-deb --version {CARGO_DEB_VERSION} --locked`"
    );
    let out = Command::new(cargo_bin())
        .args(["deb", "--version"])
        .output()
        .context(hint.clone())?;
    ensure!(out.status.success(), "{hint}");
    // "cargo-deb 3.8.0"
    let text = String::from_utf8_lossy(&out.stdout);
    Ok(text.split_whitespace().nth(1).unwrap_or("?").to_owned())
}

fn cargo_bin() -> String {
    std::env::var("CARGO").unwrap_or_else(|_| "cargo".into())
}

/// Man pages, completions and shared files, freshly generated into `dir`.
pub fn generate_assets(dir: &Path) -> anyhow::Result<Vec<PathBuf>> {
    if dir.exists() {
        fs::remove_dir_all(dir).with_context(|| format!("removing {}", dir.display()))?;
    }
    let (man, completions, share) = (dir.join("man"), dir.join("completions"), dir.join("share"));
    for d in [&man, &completions, &share] {
        fs::create_dir_all(d).with_context(|| format!("creating {}", d.display()))?;
    }
    let mut out = Vec::new();
    for page in write_man_pages(&man)? {
        run_tool(Command::new("gzip").args(["-9nf"]).arg(&page))?;
        out.push(page.with_extension("1.gz"));
    }
    for (shell, file) in [
        (Shell::Bash, "keepalive-daemon.bash"),
        (Shell::Zsh, "_keepalive-daemon"),
        (Shell::Fish, "keepalive-daemon.fish"),
    ] {
        let path = completions.join(file);
        let mut buf = Vec::new();
        clap_complete::generate(shell, &mut Args::command(), "keepalive-daemon", &mut buf);
        fs::write(&path, buf).with_context(|| format!("writing {}", path.display()))?;
        out.push(path);
    }
    for rel in SHARED_FILES {
        let src = workspace_root().join(rel);
        if !src.is_file() {
            eprintln!("note: {rel} does not exist; not packaged");
            continue;
        }
        let name = Path::new(rel).file_name().context("file name")?;
        let dst = share.join(name);
        fs::copy(&src, &dst).with_context(|| format!("copying {}", src.display()))?;
        out.push(dst);
    }
    Ok(out)
}

/// The command the man pages describe (subcommand display names resolved).
fn man_command() -> clap::Command {
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
    let section = |r: &mut Roff, title: &str| {
        r.control("SH", [title]);
    };
    let item = |r: &mut Roff, term: clap_mangen::roff::Inline, text: &str| {
        r.control("TP", []);
        r.text([term]);
        r.text([roman(text)]);
    };

    section(&mut r, "HTTP ENDPOINTS");
    item(
        &mut r,
        bold("/metrics"),
        "Prometheus metrics (text format 0.0.4).",
    );
    item(
        &mut r,
        bold("/healthz"),
        "200 \"ok\" once every program is attached and the kernel counters can be read; 503 otherwise.",
    );
    item(
        &mut r,
        bold("/connections"),
        "The tracked connections' keepalive state, as JSON (what the connections subcommand prints).",
    );
    item(&mut r, bold("/"), "A landing page with links.");

    section(&mut r, "SIGNALS");
    r.text([roman(
        "On SIGINT or SIGTERM the daemon detaches every program it attached and exits 0.",
    )]);

    section(&mut r, "ENVIRONMENT");
    item(
        &mut r,
        bold("RUST_LOG"),
        "Log filter (env_logger syntax); overrides --log.level.",
    );
    item(
        &mut r,
        bold("NOTIFY_SOCKET"),
        "Set by systemd (Type=notify): the daemon reports READY=1, STATUS= and WATCHDOG=1 there.",
    );
    item(
        &mut r,
        bold("JOURNAL_STREAM"),
        "Set by systemd: log lines then carry syslog priority prefixes instead of timestamps.",
    );

    section(&mut r, "FILES");
    item(
        &mut r,
        italic("/etc/default/keepalive-daemon"),
        "KEEPALIVE_DAEMON_ARGS, the flags the systemd unit starts the daemon with.",
    );
    item(
        &mut r,
        italic("/usr/lib/systemd/system/keepalive-daemon.service"),
        "The systemd unit: runs the daemon with CAP_BPF, CAP_PERFMON and CAP_NET_ADMIN only.",
    );
    item(
        &mut r,
        italic("/usr/share/keepalive-daemon/"),
        "Grafana dashboard (keepalive.json), Prometheus alert rules (alerts.yaml) and scrape configuration (scrape-config.yaml).",
    );
    item(
        &mut r,
        italic("/sys/kernel/btf/vmlinux, /proc/kallsyms, /sys/kernel/tracing"),
        "Read at start-up for kernel struct offsets, symbol addresses and tracepoint layouts.",
    );

    section(&mut r, "SEE ALSO");
    r.text([roman(
        "systemd.exec(5), tc-bpf(8), bpftool(8); /usr/share/doc/keepalive-daemon/README.md",
    )]);
    r.to_writer(w)?;
    man.render_version_section(w)?;
    Ok(())
}

/// Builds the release binary (and the eBPF programs, through build.rs), then runs
/// cargo-deb on it; returns the path of the .deb. cargo-deb does not build by itself:
/// the generated assets under target/release/ would make it build the whole workspace.
fn build_deb() -> anyhow::Result<PathBuf> {
    crate::cargo(&["build", "--release", "--package", "keepalive-daemon"])?;
    let out = run_tool(
        Command::new(cargo_bin())
            .args(["deb", "--package", "keepalive-daemon", "--no-build"])
            .current_dir(workspace_root()),
    )?;
    let path = out
        .lines()
        .rev()
        .map(str::trim)
        .find(|l| l.ends_with(".deb"))
        .with_context(|| format!("cargo deb printed no .deb path:\n{out}"))?;
    let path = PathBuf::from(path);
    ensure!(path.is_file(), "{} does not exist", path.display());
    Ok(path)
}

/// Paths the package must contain, with their permissions.
fn expected_paths() -> anyhow::Result<Vec<(String, &'static str)>> {
    const EXEC: &str = "-rwxr-xr-x";
    const FILE: &str = "-rw-r--r--";
    let mut paths: Vec<(String, &'static str)> = [
        ("usr/bin/keepalive-daemon", EXEC),
        ("etc/default/keepalive-daemon", FILE),
        ("usr/lib/systemd/system/keepalive-daemon.service", FILE),
        ("usr/share/man/man1/keepalive-daemon.1.gz", FILE),
        (
            "usr/share/bash-completion/completions/keepalive-daemon",
            FILE,
        ),
        ("usr/share/zsh/vendor-completions/_keepalive-daemon", FILE),
        (
            "usr/share/fish/vendor_completions.d/keepalive-daemon.fish",
            FILE,
        ),
        ("usr/share/doc/keepalive-daemon/README.md", FILE),
        ("usr/share/doc/keepalive-daemon/copyright", FILE),
    ]
    .into_iter()
    .map(|(p, m)| (p.to_owned(), m))
    .collect();
    for sub in man_command().get_subcommands().filter(|s| !s.is_hide_set()) {
        let name = sub.get_display_name().unwrap_or(sub.get_name());
        paths.push((format!("usr/share/man/man1/{name}.1.gz"), FILE));
    }
    for rel in SHARED_FILES {
        if workspace_root().join(rel).is_file() {
            let name = Path::new(rel)
                .file_name()
                .context("file name")?
                .to_string_lossy();
            paths.push((format!("usr/share/keepalive-daemon/{name}"), FILE));
        }
    }
    Ok(paths)
}

/// Lists the package and checks its paths, control files, and that the unit, man page,
/// completions and binary it carries work.
pub fn check_deb(deb: &Path) -> anyhow::Result<()> {
    let listing = run_tool(Command::new("dpkg-deb").arg("--contents").arg(deb))?;
    println!("\n$ dpkg-deb --contents {}\n{listing}", deb.display());
    // "-rw-r--r-- root/root  1234 2026-01-01 00:00 ./usr/bin/x"
    let entries: BTreeMap<String, String> = listing
        .lines()
        .filter_map(|l| {
            let mut f = l.split_whitespace();
            let mode = f.next()?.to_owned();
            let path = f.nth(4)?.trim_start_matches("./").trim_end_matches('/');
            Some((path.to_owned(), mode))
        })
        .collect();
    let mut problems = Vec::new();
    for (path, mode) in expected_paths()? {
        match entries.get(&path) {
            None => problems.push(format!("missing {path}")),
            Some(m) if m != mode => problems.push(format!("{path} has mode {m}, expected {mode}")),
            Some(_) => {}
        }
    }

    let tmp = TempDir::new("deb-check");
    let (root, control) = (tmp.join("root"), tmp.join("control"));
    run_tool(
        Command::new("dpkg-deb")
            .arg("--extract")
            .arg(deb)
            .arg(&root),
    )?;
    run_tool(
        Command::new("dpkg-deb")
            .arg("--control")
            .arg(deb)
            .arg(&control),
    )?;
    let fields = run_tool(Command::new("dpkg-deb").arg("--field").arg(deb).args([
        "Package",
        "Version",
        "Architecture",
        "Depends",
        "Section",
    ]))?;
    println!("{fields}");
    if !fields.contains("Package: keepalive-daemon") {
        problems.push(format!("unexpected control fields:\n{fields}"));
    }
    let read = |p: PathBuf| fs::read_to_string(&p).unwrap_or_default();
    if !read(control.join("conffiles"))
        .lines()
        .any(|l| l.trim() == "/etc/default/keepalive-daemon")
    {
        problems.push("/etc/default/keepalive-daemon is not a conffile".into());
    }
    let postinst = read(control.join("postinst"));
    if !postinst.contains("deb-systemd-helper") || !postinst.contains("keepalive-daemon.service") {
        problems.push(format!(
            "postinst does not enable keepalive-daemon.service:\n{postinst}"
        ));
    }
    for script in ["prerm", "postrm"] {
        if !read(control.join(script)).contains("keepalive-daemon.service") {
            problems.push(format!("{script} does not handle keepalive-daemon.service"));
        }
    }
    for (packaged, source) in [
        (
            "usr/lib/systemd/system/keepalive-daemon.service",
            "deploy/systemd/keepalive-daemon.service",
        ),
        (
            "etc/default/keepalive-daemon",
            "deploy/systemd/keepalive-daemon.default",
        ),
    ] {
        if fs::read(root.join(packaged)).ok() != fs::read(workspace_root().join(source)).ok() {
            problems.push(format!("{packaged} differs from {source}"));
        }
    }

    let bin = root.join("usr/bin/keepalive-daemon");
    match run_tool(Command::new(&bin).arg("--version")) {
        Ok(v) if v.starts_with("keepalive-daemon ") => println!("packaged binary: {}", v.trim()),
        Ok(v) => problems.push(format!("keepalive-daemon --version printed {v:?}")),
        Err(e) => problems.push(format!("{e:#}")),
    }
    let man = run_tool(
        Command::new("gzip")
            .arg("-dc")
            .arg(root.join("usr/share/man/man1/keepalive-daemon.1.gz")),
    )
    .unwrap_or_default();
    for want in [
        ".TH keepalive-daemon 1",
        "web.listen\\-address",
        ".SH FILES",
    ] {
        if !man.contains(want) {
            problems.push(format!("man page lacks {want:?}"));
        }
    }
    let bash = root.join("usr/share/bash-completion/completions/keepalive-daemon");
    if let Err(e) = run_tool(Command::new("bash").arg("-n").arg(&bash)) {
        problems.push(format!("bash completion: {e:#}"));
    }
    // The packaged unit, pointed at the packaged binary and man page, must verify.
    let unit = crate::deploy_check::verify_unit(
        &root.join("usr/lib/systemd/system/keepalive-daemon.service"),
        &bin,
        &root.join("usr/share/man"),
        tmp.path(),
    );
    if let Err(e) = unit {
        problems.push(format!("{e:#}"));
    }

    lintian(deb);
    if !problems.is_empty() {
        bail!("package check failed:\n  {}", problems.join("\n  "));
    }
    println!("package check passed: {} paths as expected", entries.len());
    Ok(())
}

/// lintian's opinion, when it is installed; informational only (no Debian changelog or
/// source package exists here, which lintian reports).
fn lintian(deb: &Path) {
    let Ok(out) = Command::new("lintian")
        .args(["--tag-display-limit", "0"])
        .arg(deb)
        .output()
    else {
        println!("lintian is not installed; skipped (apt-get install -y lintian)");
        return;
    };
    let text = String::from_utf8_lossy(&out.stdout);
    println!(
        "$ lintian {}\n{}{}",
        deb.display(),
        text,
        String::from_utf8_lossy(&out.stderr)
    );
}

//! `cargo xtask package --check`: the .deb listed and inspected. Its paths and modes,
//! its control files (conffile, systemd helper calls), installed copies equal to the
//! tree's, and the payload working: the binary runs, the man page renders the expected
//! sections, the bash completion parses, the unit verifies. lintian's report, when it is
//! installed, is printed for information.

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context as _, bail};
use keepalive_tests::process::TempDir;

use super::assets::SHARED_FILES;
use crate::man_pages::man_command;
use crate::systemd_verify::verify_unit;
use crate::tool::run_tool;
use crate::workspace::workspace_root;

/// Lists the package and checks its paths, control files, and that the unit, man page,
/// completions and binary it carries work.
pub fn check_deb(deb: &Path) -> anyhow::Result<()> {
    let listing = run_tool(Command::new("dpkg-deb").arg("--contents").arg(deb))?;
    println!("\n$ dpkg-deb --contents {}\n{listing}", deb.display());
    let entries = parse_listing(&listing);
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
    check_control(deb, &control, &mut problems)?;
    check_installed_copies(&root, &mut problems);
    check_payload(&root, tmp.path(), &mut problems);

    lintian(deb);
    if !problems.is_empty() {
        bail!("package check failed:\n  {}", problems.join("\n  "));
    }
    println!("package check passed: {} paths as expected", entries.len());
    Ok(())
}

/// Path (without "./" or a trailing "/") to mode, from `dpkg-deb --contents`.
fn parse_listing(listing: &str) -> BTreeMap<String, String> {
    // "-rw-r--r-- root/root  1234 2026-01-01 00:00 ./usr/bin/x"
    listing
        .lines()
        .filter_map(|l| {
            let mut f = l.split_whitespace();
            let mode = f.next()?.to_owned();
            let path = f.nth(4)?.trim_start_matches("./").trim_end_matches('/');
            Some((path.to_owned(), mode))
        })
        .collect()
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

/// The control fields (printed), the defaults file as conffile, and maintainer scripts
/// that enable and stop the service.
fn check_control(deb: &Path, control: &Path, problems: &mut Vec<String>) -> anyhow::Result<()> {
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
    Ok(())
}

/// The unit and the defaults file installed are the tree's, byte for byte.
fn check_installed_copies(root: &Path, problems: &mut Vec<String>) {
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
}

/// The extracted binary, man page, bash completion and unit work.
fn check_payload(root: &Path, tmp: &Path, problems: &mut Vec<String>) {
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
    let unit = verify_unit(
        &root.join("usr/lib/systemd/system/keepalive-daemon.service"),
        &bin,
        &root.join("usr/share/man"),
        tmp,
    );
    if let Err(e) = unit {
        problems.push(format!("{e:#}"));
    }
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

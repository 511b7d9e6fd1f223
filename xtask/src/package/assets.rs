//! What the package ships that cargo-deb cannot produce: compressed man pages, shell
//! completions generated from the daemon's clap definition, and copies of the shared
//! files (dashboard, alert rules, scrape configuration).

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::Context as _;
use clap::CommandFactory as _;
use clap_complete::Shell;
use keepalive_daemon::cli::Args;

use crate::man_pages::write_man_pages;
use crate::tool::run_tool;
use crate::workspace::workspace_root;

/// Files shipped under /usr/share/keepalive-daemon/ when they exist in the tree.
pub const SHARED_FILES: [&str; 3] = [
    "dashboards/keepalive.json",
    "deploy/prometheus/alerts.yaml",
    "deploy/prometheus/scrape-config.yaml",
];

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

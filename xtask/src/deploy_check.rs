//! `cargo xtask deploy-check`: the deployment files checked with the tools that exist
//! for them, and against each other and the daemon's flags. No root needed.
//!
//! - deploy/systemd/keepalive-daemon.service: `systemd-analyze verify` (on a copy whose
//!   ExecStart points at an existing binary, with the generated man page on MANPATH) and
//!   `systemd-analyze security --offline=yes`, whose exposure must be at most
//!   [`MAX_EXPOSURE`];
//! - as root, the daemon with the unit's capabilities, system call filter and address
//!   families (see sandbox_check.rs);
//! - deploy/systemd/keepalive-daemon.default: syntax, and every flag it mentions parses;
//! - deploy/kubernetes/*.yaml: parsed, and the DaemonSet's required fields;
//! - deploy/prometheus/scrape-config.yaml: `promtool check config` on a configuration
//!   built around it (with alerts.yaml as rule file when present).

use std::collections::BTreeSet;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context as _, bail};
use clap::{CommandFactory as _, Parser as _};
use keepalive_daemon::cli::{Args, ListenAddress, parse_listen_address};
use keepalive_tests::process::TempDir;
use serde_yaml::{Mapping, Value};

use crate::tool::{describe, have, run_tool};
use crate::workspace_root;

/// Highest acceptable `systemd-analyze security` exposure (0 = locked down, 10 = open).
pub const MAX_EXPOSURE: f64 = 2.5;

const UNIT: &str = "deploy/systemd/keepalive-daemon.service";
const DEFAULTS: &str = "deploy/systemd/keepalive-daemon.default";
const KUBERNETES_DIR: &str = "deploy/kubernetes";
const SCRAPE_CONFIG: &str = "deploy/prometheus/scrape-config.yaml";
const ALERTS: &str = "deploy/prometheus/alerts.yaml";
/// Job label the alert rules select on.
const JOB: &str = "keepalive";
/// Daemon port everywhere.
const PORT: u16 = 10291;

pub fn run() -> anyhow::Result<()> {
    let tmp = TempDir::new("deploy-check");
    // SAFETY: geteuid has no preconditions.
    let root = unsafe { libc::geteuid() } == 0;
    if root {
        crate::cargo(&["build", "--release", "--package", "keepalive-daemon"])?;
    }
    let checks: [(&str, &dyn Fn() -> anyhow::Result<()>); 5] = [
        ("systemd unit", &|| check_unit(tmp.path())),
        ("systemd sandbox emulation (root)", &|| {
            let bin = workspace_root().join("target/release/keepalive-daemon");
            crate::sandbox_check::run(&read(UNIT)?, &bin)
        }),
        ("defaults file", &check_defaults),
        ("kubernetes", &check_kubernetes),
        ("prometheus", &|| check_prometheus(tmp.path())),
    ];
    let mut failed = Vec::new();
    for (name, check) in checks {
        println!("== {name}");
        match check() {
            Ok(()) => println!("ok\n"),
            Err(e) => {
                println!("FAILED: {e:#}\n");
                failed.push(name);
            }
        }
    }
    if !failed.is_empty() {
        bail!("deploy-check failed: {}", failed.join(", "));
    }
    println!("deploy-check passed");
    Ok(())
}

/// Problems found by a check, reported together.
#[derive(Default)]
struct Problems(Vec<String>);

impl Problems {
    fn expect(&mut self, ok: bool, what: impl FnOnce() -> String) {
        if !ok {
            self.0.push(what());
        }
    }

    fn finish(self) -> anyhow::Result<()> {
        if self.0.is_empty() {
            Ok(())
        } else {
            bail!("\n  {}", self.0.join("\n  "))
        }
    }
}

fn read(rel: &str) -> anyhow::Result<String> {
    let path = workspace_root().join(rel);
    fs::read_to_string(&path).with_context(|| format!("reading {}", path.display()))
}

// ---- systemd ----------------------------------------------------------------------

fn check_unit(tmp: &Path) -> anyhow::Result<()> {
    let man_root = tmp.join("man");
    let man1 = man_root.join("man1");
    fs::create_dir_all(&man1)?;
    crate::package::write_man_pages(&man1)?;
    // Any existing executable satisfies verify's ExecStart check; prefer the real daemon.
    let release = workspace_root().join("target/release/keepalive-daemon");
    let bin = if release.is_file() {
        release
    } else {
        std::env::current_exe().context("locating xtask")?
    };
    let unit = workspace_root().join(UNIT);
    verify_unit(&unit, &bin, &man_root, tmp)?;
    println!(
        "systemd-analyze verify: no findings (ExecStart -> {})",
        bin.display()
    );
    let exposure = security(&unit)?;
    println!("systemd-analyze security: exposure {exposure} (at most {MAX_EXPOSURE})");

    let text = fs::read_to_string(&unit)?;
    let mut p = Problems::default();
    for line in [
        "Type=notify",
        "WatchdogSec=30s",
        "EnvironmentFile=-/etc/default/keepalive-daemon",
        "ExecStart=/usr/bin/keepalive-daemon $KEEPALIVE_DAEMON_ARGS",
        "RequiresMountsFor=/sys/kernel/tracing",
    ] {
        p.expect(text.lines().any(|l| l.trim() == line), || {
            format!("{UNIT} lacks {line}")
        });
    }
    // A missing path in these makes systemd refuse to start the unit; verify does not
    // notice. "-" marks a path as optional.
    for key in ["ReadOnlyPaths", "InaccessiblePaths", "ReadWritePaths"] {
        let prefix = format!("{key}=");
        for path in text
            .lines()
            .filter_map(|l| l.trim().strip_prefix(&prefix))
            .flat_map(str::split_whitespace)
            .filter(|p| !p.starts_with('-'))
        {
            p.expect(Path::new(path).exists(), || {
                format!("{key}= lists {path}, which this machine lacks; prefix it with \"-\"")
            });
        }
    }
    p.expect(!unit_capabilities(&text).contains("CAP_SYS_ADMIN"), || {
        format!("{UNIT} grants CAP_SYS_ADMIN")
    });
    p.finish()
}

/// `systemd-analyze verify` on a copy of `unit` whose ExecStart runs `bin`, with
/// `man_root` as MANPATH (for Documentation=man:). Fails on any output.
pub fn verify_unit(unit: &Path, bin: &Path, man_root: &Path, tmp: &Path) -> anyhow::Result<()> {
    let text = fs::read_to_string(unit).with_context(|| format!("reading {}", unit.display()))?;
    let exec = "ExecStart=/usr/bin/keepalive-daemon";
    if !text.lines().any(|l| l.starts_with(exec)) {
        bail!("{} has no line starting with {exec}", unit.display());
    }
    let copy_dir = tmp.join("verify");
    fs::create_dir_all(&copy_dir)?;
    let copy = copy_dir.join("keepalive-daemon.service");
    let rewritten: String = text
        .lines()
        .map(|l| match l.strip_prefix(exec) {
            Some(rest) => format!("ExecStart={}{rest}\n", bin.display()),
            None => format!("{l}\n"),
        })
        .collect();
    fs::write(&copy, rewritten)?;
    let mut cmd = Command::new("systemd-analyze");
    cmd.arg("verify");
    if !have("man") {
        println!(
            "note: man is not installed (apt-get install -y man-db): Documentation= not checked"
        );
        cmd.arg("--man=no");
    }
    cmd.arg(&copy).env("MANPATH", man_root);
    let line = describe(&cmd);
    let out = cmd.output().with_context(|| format!("running {line}"))?;
    let output = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    if !out.status.success() || !output.trim().is_empty() {
        bail!("{line} ({}):\n{output}", out.status);
    }
    Ok(())
}

/// Overall exposure from `systemd-analyze security --offline=yes`; fails above
/// [`MAX_EXPOSURE`] with the analyzer's full output.
fn security(unit: &Path) -> anyhow::Result<f64> {
    let mut cmd = Command::new("systemd-analyze");
    cmd.args(["security", "--offline=yes", "--no-pager"])
        .arg(format!("--threshold={}", (MAX_EXPOSURE * 10.0).round()))
        .arg(unit);
    let line = describe(&cmd);
    let out = cmd.output().with_context(|| format!("running {line}"))?;
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    // "→ Overall exposure level for keepalive-daemon.service: 2.4 OK 🙂"
    let exposure = text
        .lines()
        .find_map(|l| {
            let rest = l.split("Overall exposure level for ").nth(1)?;
            rest.split(": ")
                .nth(1)?
                .split_whitespace()
                .next()?
                .parse::<f64>()
                .ok()
        })
        .with_context(|| format!("{line} printed no overall exposure:\n{text}"))?;
    if !out.status.success() || exposure > MAX_EXPOSURE {
        bail!(
            "{line}: exposure {exposure}, at most {MAX_EXPOSURE} allowed ({}):\n{text}",
            out.status
        );
    }
    for l in text.lines().filter(|l| l.starts_with('✗')) {
        println!("  {}", l.split_whitespace().collect::<Vec<_>>().join(" "));
    }
    Ok(exposure)
}

/// The capabilities of CapabilityBoundingSet= lines.
fn unit_capabilities(unit: &str) -> BTreeSet<String> {
    unit.lines()
        .filter_map(|l| l.trim().strip_prefix("CapabilityBoundingSet="))
        .flat_map(|v| v.split_whitespace().map(str::to_owned))
        .collect()
}

// ---- defaults file ----------------------------------------------------------------

fn check_defaults() -> anyhow::Result<()> {
    let text = read(DEFAULTS)?;
    let mut p = Problems::default();
    let mut cmd = Args::command();
    cmd.build();
    let mut known: BTreeSet<String> = cmd
        .get_arguments()
        .filter_map(|a| a.get_long().map(|l| format!("--{l}")))
        .collect();
    known.extend(["--help".to_owned(), "--version".to_owned()]);
    let mut assignments = 0;
    for (i, raw) in text.lines().enumerate() {
        let n = i + 1;
        let line = raw.trim();
        let (commented, body) = match line.strip_prefix('#') {
            Some(rest) => (true, rest.trim()),
            None => (false, line),
        };
        if !commented && !body.is_empty() {
            let ok = body.split_once('=').is_some_and(|(k, _)| {
                !k.is_empty() && k.chars().all(|c| c.is_ascii_uppercase() || c == '_')
            });
            p.expect(ok, || format!("{DEFAULTS}:{n}: not KEY=VALUE: {raw}"));
        }
        if let Some(value) = body.strip_prefix("KEEPALIVE_DAEMON_ARGS=") {
            assignments += usize::from(!commented);
            let value = value.trim_matches('"');
            let argv = std::iter::once("keepalive-daemon").chain(value.split_whitespace());
            if let Err(e) = Args::try_parse_from(argv) {
                p.expect(false, || {
                    format!("{DEFAULTS}:{n}: {value:?} does not parse: {e}")
                });
            }
        } else if commented {
            for token in body.split_whitespace().filter(|t| t.starts_with("--")) {
                let flag = token.trim_end_matches([',', '.', ';', ')', '`', '"']);
                p.expect(known.contains(flag), || {
                    format!("{DEFAULTS}:{n}: mentions unknown flag {flag}")
                });
            }
        }
    }
    p.expect(assignments == 1, || {
        format!("{DEFAULTS}: {assignments} uncommented KEEPALIVE_DAEMON_ARGS= lines, want 1")
    });
    p.finish()
}

// ---- kubernetes -------------------------------------------------------------------

/// `v` at a dotted path of mapping keys (keys may contain dots when quoted in `[..]`:
/// not needed here).
fn at<'a>(v: &'a Value, path: &str) -> Option<&'a Value> {
    path.split('.').try_fold(v, |v, key| v.get(key))
}

fn str_at<'a>(v: &'a Value, path: &str) -> Option<&'a str> {
    at(v, path).and_then(Value::as_str)
}

fn seq_at<'a>(v: &'a Value, path: &str) -> &'a [Value] {
    at(v, path)
        .and_then(Value::as_sequence)
        .map(Vec::as_slice)
        .unwrap_or_default()
}

fn parse_documents(text: &str) -> anyhow::Result<Vec<Value>> {
    use serde::Deserialize as _;
    serde_yaml::Deserializer::from_str(text)
        .map(|d| Value::deserialize(d).map_err(anyhow::Error::from))
        .filter(|v| !matches!(v, Ok(Value::Null)))
        .collect()
}

fn load_kubernetes() -> anyhow::Result<Vec<(PathBuf, Value)>> {
    let dir = workspace_root().join(KUBERNETES_DIR);
    let mut docs = Vec::new();
    let mut files: Vec<PathBuf> = fs::read_dir(&dir)
        .with_context(|| format!("listing {}", dir.display()))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "yaml" || x == "yml"))
        .collect();
    files.sort();
    for f in files {
        let text = fs::read_to_string(&f)?;
        for d in parse_documents(&text).with_context(|| format!("parsing {}", f.display()))? {
            docs.push((f.clone(), d));
        }
    }
    Ok(docs)
}

/// The DaemonSet's facts other checks compare with.
struct DaemonSetFacts {
    namespace: String,
    name_label: String,
    port_name: String,
}

fn check_kubernetes() -> anyhow::Result<()> {
    let docs = load_kubernetes()?;
    let mut p = Problems::default();
    for (file, d) in &docs {
        for field in ["apiVersion", "kind", "metadata.name"] {
            p.expect(str_at(d, field).is_some(), || {
                format!("{}: a document has no {field}", file.display())
            });
        }
    }
    println!(
        "parsed {} objects: {}",
        docs.len(),
        docs.iter()
            .map(|(_, d)| format!(
                "{}/{}",
                str_at(d, "kind").unwrap_or("?"),
                str_at(d, "metadata.name").unwrap_or("?")
            ))
            .collect::<Vec<_>>()
            .join(", ")
    );
    let facts = daemonset_facts(&docs, &mut p)?;
    println!(
        "DaemonSet in namespace {}, pods labelled app.kubernetes.io/name={}, port {:?}",
        facts.namespace, facts.name_label, facts.port_name
    );
    if have("kubeconform") {
        let dir = workspace_root().join(KUBERNETES_DIR);
        let out = run_tool(
            Command::new("kubeconform")
                .args(["-strict", "-summary"])
                .arg(dir),
        );
        match out {
            Ok(o) => println!("{o}"),
            Err(e) => p.expect(false, || format!("{e:#}")),
        }
    } else {
        println!("kubeconform is not installed: schemas not checked, only the fields below");
    }
    p.finish()
}

fn daemonset_facts(docs: &[(PathBuf, Value)], p: &mut Problems) -> anyhow::Result<DaemonSetFacts> {
    let kind = |k: &'static str| {
        docs.iter()
            .map(|(_, d)| d)
            .filter(move |d| str_at(d, "kind") == Some(k))
    };
    let namespaces: BTreeSet<&str> = kind("Namespace")
        .filter_map(|d| str_at(d, "metadata.name"))
        .collect();
    let dss: Vec<&Value> = kind("DaemonSet").collect();
    if dss.len() != 1 {
        bail!("{KUBERNETES_DIR}: {} DaemonSets, expected 1", dss.len());
    }
    let ds = dss[0];
    p.expect(str_at(ds, "apiVersion") == Some("apps/v1"), || {
        "DaemonSet is not apps/v1".into()
    });
    let namespace = str_at(ds, "metadata.namespace")
        .unwrap_or_default()
        .to_owned();
    p.expect(namespaces.contains(namespace.as_str()), || {
        format!("DaemonSet namespace {namespace:?} is not among the Namespaces {namespaces:?}")
    });

    let template = at(ds, "spec.template").context("DaemonSet has no spec.template")?;
    let labels = at(template, "metadata.labels").and_then(Value::as_mapping);
    let selector = at(ds, "spec.selector.matchLabels").and_then(Value::as_mapping);
    match (selector, labels) {
        (Some(sel), Some(labels)) => {
            for (k, v) in sel {
                p.expect(labels.get(k) == Some(v), || {
                    format!("selector {k:?}={v:?} does not match the pod template's labels")
                });
            }
        }
        _ => p.expect(false, || {
            "DaemonSet lacks selector.matchLabels or template labels".into()
        }),
    }
    let name_label = labels
        .and_then(|l| l.get("app.kubernetes.io/name"))
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_owned();
    p.expect(!name_label.is_empty(), || {
        "pod template has no app.kubernetes.io/name label".into()
    });

    let annotations = at(template, "metadata.annotations");
    let annotation = |k: &str| annotations.and_then(|a| a.get(k)).and_then(Value::as_str);
    p.expect(annotation("prometheus.io/scrape") == Some("true"), || {
        "pod template lacks annotation prometheus.io/scrape: \"true\"".into()
    });
    p.expect(
        annotation("prometheus.io/port") == Some(&PORT.to_string()),
        || format!("pod template annotation prometheus.io/port is not \"{PORT}\""),
    );

    let spec = at(template, "spec").context("pod template has no spec")?;
    p.expect(
        at(spec, "hostNetwork").and_then(Value::as_bool) == Some(true),
        || "hostNetwork is not true".into(),
    );
    p.expect(
        at(spec, "hostPID").and_then(Value::as_bool) != Some(true),
        || "hostPID is set; it is not needed".into(),
    );
    p.expect(
        seq_at(spec, "tolerations")
            .iter()
            .any(|t| str_at(t, "operator") == Some("Exists") && t.get("key").is_none()),
        || "no toleration {operator: Exists} (runs on every node, tainted or not)".into(),
    );

    let containers = seq_at(spec, "containers");
    p.expect(containers.len() == 1, || {
        format!("{} containers, expected 1", containers.len())
    });
    let c = containers.first().context("no container")?;

    let args: Vec<&str> = seq_at(c, "args").iter().filter_map(Value::as_str).collect();
    match Args::try_parse_from(std::iter::once("keepalive-daemon").chain(args.iter().copied())) {
        Err(e) => p.expect(false, || {
            format!("container args {args:?} do not parse: {e}")
        }),
        Ok(parsed) => {
            let ports: Vec<u16> = parsed
                .listen
                .iter()
                .filter_map(|a| match parse_listen_address(a).ok()? {
                    ListenAddress::Any(port) => Some(port),
                    ListenAddress::Specific(s) => Some(s.port()),
                })
                .collect();
            p.expect(ports == [PORT], || {
                format!("daemon listens on {ports:?}, expected [{PORT}]")
            });
        }
    }
    let port = seq_at(c, "ports")
        .iter()
        .find(|p| at(p, "containerPort").and_then(Value::as_u64) == Some(PORT.into()));
    let port_name = port
        .and_then(|p| str_at(p, "name"))
        .unwrap_or_default()
        .to_owned();
    p.expect(!port_name.is_empty(), || {
        format!("no named containerPort {PORT}")
    });
    p.expect(
        port.and_then(|p| at(p, "hostPort")).and_then(Value::as_u64) == Some(PORT.into()),
        || format!("hostPort is not {PORT} (with hostNetwork it must equal containerPort)"),
    );
    for probe in ["livenessProbe", "readinessProbe"] {
        let path = str_at(c, &format!("{probe}.httpGet.path"));
        p.expect(matches!(path, Some("/healthz" | "/metrics")), || {
            format!("{probe} is not an httpGet of /healthz or /metrics")
        });
        let port = at(c, &format!("{probe}.httpGet.port"));
        let ok = port.and_then(Value::as_str) == Some(port_name.as_str())
            || port.and_then(Value::as_u64) == Some(PORT.into());
        p.expect(ok, || format!("{probe} does not target the metrics port"));
    }
    for r in ["requests.cpu", "requests.memory", "limits.memory"] {
        p.expect(at(c, &format!("resources.{r}")).is_some(), || {
            format!("no resources.{r}")
        });
    }

    let sc = at(c, "securityContext").context("container has no securityContext")?;
    for (field, want) in [
        ("privileged", false),
        ("allowPrivilegeEscalation", false),
        ("readOnlyRootFilesystem", true),
    ] {
        p.expect(at(sc, field).and_then(Value::as_bool) == Some(want), || {
            format!("securityContext.{field} is not {want}")
        });
    }
    let caps = |path: &str| -> BTreeSet<String> {
        seq_at(sc, path)
            .iter()
            .filter_map(Value::as_str)
            .map(str::to_owned)
            .collect()
    };
    p.expect(
        caps("capabilities.drop") == BTreeSet::from(["ALL".to_owned()]),
        || "capabilities.drop is not [ALL]".into(),
    );
    // The same capabilities as the systemd unit.
    let unit_caps: BTreeSet<String> = unit_capabilities(&read(UNIT)?)
        .iter()
        .map(|c| c.trim_start_matches("CAP_").to_owned())
        .collect();
    let added = caps("capabilities.add");
    p.expect(added == unit_caps, || {
        format!("capabilities.add {added:?} differ from the systemd unit's {unit_caps:?}")
    });
    p.expect(!added.contains("SYS_ADMIN"), || {
        "CAP_SYS_ADMIN added".into()
    });

    let volumes = seq_at(spec, "volumes");
    for host_path in ["/sys/kernel/btf", "/sys/kernel/tracing"] {
        let volume = volumes
            .iter()
            .find(|v| str_at(v, "hostPath.path") == Some(host_path))
            .and_then(|v| str_at(v, "name"));
        let mounted = volume.is_some_and(|name| {
            seq_at(c, "volumeMounts").iter().any(|m| {
                str_at(m, "name") == Some(name)
                    && str_at(m, "mountPath") == Some(host_path)
                    && at(m, "readOnly").and_then(Value::as_bool) == Some(true)
            })
        });
        p.expect(mounted, || {
            format!("{host_path} is not a read-only hostPath mount")
        });
    }
    Ok(DaemonSetFacts {
        namespace,
        name_label,
        port_name,
    })
}

// ---- prometheus -------------------------------------------------------------------

fn check_prometheus(tmp: &Path) -> anyhow::Result<()> {
    let docs = parse_documents(&read(SCRAPE_CONFIG)?)?;
    let [scrape] = docs.as_slice() else {
        bail!("{SCRAPE_CONFIG}: expected one YAML document");
    };
    let mut p = Problems::default();
    let jobs = seq_at(scrape, "scrape_configs");
    p.expect(jobs.len() >= 2, || {
        "expected a static and a kubernetes_sd job".into()
    });
    let static_job = jobs.iter().find(|j| j.get("static_configs").is_some());
    let k8s_job = jobs
        .iter()
        .find(|j| j.get("kubernetes_sd_configs").is_some());
    p.expect(
        static_job.and_then(|j| str_at(j, "job_name")) == Some(JOB),
        || format!("the static job is not named {JOB:?} (the alert rules' job)"),
    );
    for t in static_job
        .map(|j| seq_at(j, "static_configs"))
        .unwrap_or_default()
    {
        for target in seq_at(t, "targets").iter().filter_map(Value::as_str) {
            p.expect(target.ends_with(&format!(":{PORT}")), || {
                format!("static target {target} is not on port {PORT}")
            });
        }
    }

    // The Kubernetes job must find the DaemonSet's pods.
    let mut k8s_problems = Problems::default();
    let facts = daemonset_facts(&load_kubernetes()?, &mut k8s_problems)?;
    match k8s_job {
        None => p.expect(false, || "no kubernetes_sd job".into()),
        Some(job) => {
            let sd = seq_at(job, "kubernetes_sd_configs");
            p.expect(
                sd.iter().any(|c| {
                    str_at(c, "role") == Some("pod")
                        && seq_at(c, "namespaces.names")
                            .iter()
                            .any(|n| n.as_str() == Some(facts.namespace.as_str()))
                }),
                || {
                    format!(
                        "kubernetes_sd_configs has no role: pod in namespace {}",
                        facts.namespace
                    )
                },
            );
            let relabel = seq_at(job, "relabel_configs");
            let keeps = |label: &str, want: &str| {
                relabel.iter().any(|r| {
                    str_at(r, "action") == Some("keep")
                        && seq_at(r, "source_labels")
                            .iter()
                            .any(|s| s.as_str() == Some(label))
                        && str_at(r, "regex") == Some(want)
                })
            };
            p.expect(
                keeps(
                    "__meta_kubernetes_pod_label_app_kubernetes_io_name",
                    &facts.name_label,
                ),
                || {
                    format!(
                        "no keep rule for pods labelled app.kubernetes.io/name={}",
                        facts.name_label
                    )
                },
            );
            p.expect(
                keeps(
                    "__meta_kubernetes_pod_container_port_name",
                    &facts.port_name,
                ),
                || {
                    format!(
                        "no keep rule for the container port named {}",
                        facts.port_name
                    )
                },
            );
            p.expect(
                relabel.iter().any(|r| {
                    str_at(r, "target_label") == Some("job")
                        && str_at(r, "replacement") == Some(JOB)
                }),
                || format!("the kubernetes job does not relabel job to {JOB:?}"),
            );
        }
    }
    // The alert rules must select the job these configurations produce.
    if let Ok(alerts) = read(ALERTS) {
        for part in alerts.split("job=\"").skip(1) {
            let job = part.split('"').next().unwrap_or_default();
            p.expect(job == JOB, || {
                format!("{ALERTS} selects job=\"{job}\", scrape jobs produce {JOB:?}")
            });
        }
    }
    promtool(scrape, tmp, &mut p)?;
    p.finish()
}

/// `promtool check config` on `scrape` plus the alert rules. Debian's promtool is built
/// without Kubernetes discovery: then the Kubernetes job is checked (relabelling and all)
/// with its discovery replaced by a static target.
fn promtool(scrape: &Value, tmp: &Path, p: &mut Problems) -> anyhow::Result<()> {
    if !have("promtool") {
        p.expect(false, || {
            "promtool is not installed (apt-get install -y prometheus)".into()
        });
        return Ok(());
    }
    let mut config = Mapping::new();
    let mut global = Mapping::new();
    global.insert("scrape_interval".into(), "15s".into());
    global.insert("evaluation_interval".into(), "15s".into());
    config.insert("global".into(), Value::Mapping(global));
    let alerts = workspace_root().join(ALERTS);
    if alerts.is_file() {
        let rules = Value::Sequence(vec![alerts.display().to_string().into()]);
        config.insert("rule_files".into(), rules);
    } else {
        println!("note: {ALERTS} does not exist; checked without rule files");
    }
    let jobs = at(scrape, "scrape_configs").cloned().unwrap_or(Value::Null);
    config.insert("scrape_configs".into(), jobs);
    let path = tmp.join("prometheus.yml");
    let check = |config: &Mapping| -> anyhow::Result<Result<String, String>> {
        fs::write(&path, serde_yaml::to_string(config)?)?;
        let out = Command::new("promtool")
            .args(["check", "config"])
            .arg(&path)
            .output()
            .context("running promtool")?;
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        Ok(if out.status.success() {
            Ok(text)
        } else {
            Err(text)
        })
    };
    match check(&config)? {
        Ok(text) => println!("promtool check config (scrape jobs + alert rules):\n{text}"),
        Err(text) if text.contains("field kubernetes_sd_configs not found") => {
            println!(
                "note: this promtool is built without Kubernetes discovery (Debian's is); \
                 checking the Kubernetes job with a static target in its place"
            );
            let stubbed = stub_kubernetes_sd(&config);
            match check(&stubbed)? {
                Ok(text) => println!("promtool check config (scrape jobs + alert rules):\n{text}"),
                Err(text) => p.expect(false, || format!("promtool check config:\n{text}")),
            }
        }
        Err(text) => p.expect(false, || format!("promtool check config:\n{text}")),
    }
    Ok(())
}

fn stub_kubernetes_sd(config: &Mapping) -> Mapping {
    let mut config = config.clone();
    if let Some(Value::Sequence(jobs)) = config.get_mut("scrape_configs") {
        for job in jobs.iter_mut().filter_map(Value::as_mapping_mut) {
            if job.remove("kubernetes_sd_configs").is_some() {
                let target = Value::Sequence(vec![format!("node-1:{PORT}").into()]);
                let mut stat = Mapping::new();
                stat.insert("targets".into(), target);
                job.insert(
                    "static_configs".into(),
                    Value::Sequence(vec![Value::Mapping(stat)]),
                );
            }
        }
    }
    config
}

//! The Prometheus scrape configuration: its static job on the daemon's port, its
//! Kubernetes job finding the DaemonSet's pods, both producing the job label the alert
//! rules select on; then `promtool check config` on the jobs and the alert rules.

use std::fs;
use std::path::Path;
use std::process::Command;

use anyhow::{Context as _, bail};
use serde_norway::{Mapping, Value};

use super::files::{ALERTS, JOB, PORT, SCRAPE_CONFIG, read};
use super::kubernetes::{DaemonSetFacts, daemonset_facts, load_kubernetes};
use super::problems::Problems;
use super::yaml::{at, parse_documents, seq_at, str_at};
use crate::tool::have;
use crate::workspace::workspace_root;

pub(super) fn check_prometheus(tmp: &Path) -> anyhow::Result<()> {
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
    check_static_job(static_job, &mut p);

    // The Kubernetes job must find the DaemonSet's pods.
    let mut k8s_problems = Problems::default();
    let facts = daemonset_facts(&load_kubernetes()?, &mut k8s_problems)?;
    match k8s_job {
        None => p.expect(false, || "no kubernetes_sd job".into()),
        Some(job) => check_kubernetes_job(job, &facts, &mut p),
    }
    check_alert_jobs(&mut p);
    promtool(scrape, tmp, &mut p)?;
    p.finish()
}

/// The static job carries the alert rules' job name and targets the daemon's port.
fn check_static_job(static_job: Option<&Value>, p: &mut Problems) {
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
}

/// The Kubernetes job discovers pods in the DaemonSet's namespace, keeps those with its
/// name label and port name, and relabels their job to [`JOB`].
fn check_kubernetes_job(job: &Value, facts: &DaemonSetFacts, p: &mut Problems) {
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
            str_at(r, "target_label") == Some("job") && str_at(r, "replacement") == Some(JOB)
        }),
        || format!("the kubernetes job does not relabel job to {JOB:?}"),
    );
}

/// The alert rules must select the job these configurations produce.
fn check_alert_jobs(p: &mut Problems) {
    if let Ok(alerts) = read(ALERTS) {
        for part in alerts.split("job=\"").skip(1) {
            let job = part.split('"').next().unwrap_or_default();
            p.expect(job == JOB, || {
                format!("{ALERTS} selects job=\"{job}\", scrape jobs produce {JOB:?}")
            });
        }
    }
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
    let config = promtool_config(scrape);
    let path = tmp.join("prometheus.yml");
    match promtool_check(&config, &path)? {
        Ok(text) => println!("promtool check config (scrape jobs + alert rules):\n{text}"),
        Err(text) if text.contains("field kubernetes_sd_configs not found") => {
            println!(
                "note: this promtool is built without Kubernetes discovery (Debian's is); \
                 checking the Kubernetes job with a static target in its place"
            );
            let stubbed = stub_kubernetes_sd(&config);
            match promtool_check(&stubbed, &path)? {
                Ok(text) => println!("promtool check config (scrape jobs + alert rules):\n{text}"),
                Err(text) => p.expect(false, || format!("promtool check config:\n{text}")),
            }
        }
        Err(text) => p.expect(false, || format!("promtool check config:\n{text}")),
    }
    Ok(())
}

/// A whole Prometheus configuration around `scrape`'s jobs, with the alert rules as
/// rule file when they exist.
fn promtool_config(scrape: &Value) -> Mapping {
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
    config
}

/// `config` written to `path` and checked: promtool's output, as `Err` when it failed.
fn promtool_check(config: &Mapping, path: &Path) -> anyhow::Result<Result<String, String>> {
    fs::write(path, serde_norway::to_string(config)?)?;
    let out = Command::new("promtool")
        .args(["check", "config"])
        .arg(path)
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
}

/// `config` with each job's Kubernetes discovery replaced by one static target.
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

//! The Kubernetes manifests: every object parses and names itself, kubeconform's schema
//! check when it is installed, and the one DaemonSet runs the daemon the way the systemd
//! unit does (host network, the unit's capabilities, read-only host mounts, probes on
//! the metrics port).

use std::collections::BTreeSet;
use std::fs;
use std::path::PathBuf;
use std::process::Command;

use anyhow::{Context as _, bail};
use clap::Parser as _;
use keepalive_daemon::cli::{Args, ListenAddress, parse_listen_address};
use serde_norway::Value;

use super::files::{KUBERNETES_DIR, PORT, UNIT, read};
use super::problems::Problems;
use super::unit::unit_capabilities;
use super::yaml::{at, bool_at, parse_documents, seq_at, str_at, u64_at};
use crate::tool::{have, run_tool};
use crate::workspace::workspace_root;

/// The DaemonSet's facts other checks compare with.
pub(super) struct DaemonSetFacts {
    pub(super) namespace: String,
    pub(super) name_label: String,
    pub(super) port_name: String,
}

/// Every document of every manifest, with the file it came from.
pub(super) fn load_kubernetes() -> anyhow::Result<Vec<(PathBuf, Value)>> {
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

pub(super) fn check_kubernetes() -> anyhow::Result<()> {
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
    kubeconform(&mut p);
    p.finish()
}

/// kubeconform's schema check of the manifests, when it is installed.
fn kubeconform(p: &mut Problems) {
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
}

/// Checks the one DaemonSet and returns its facts. Problems go to `p`; a DaemonSet
/// lacking what the remaining checks need fails.
pub(super) fn daemonset_facts(
    docs: &[(PathBuf, Value)],
    p: &mut Problems,
) -> anyhow::Result<DaemonSetFacts> {
    let (ds, namespace) = the_daemonset(docs, p)?;
    let template = at(ds, "spec.template").context("DaemonSet has no spec.template")?;
    let name_label = check_pod_labels(ds, template, p);
    check_scrape_annotations(template, p);

    let spec = at(template, "spec").context("pod template has no spec")?;
    let containers = seq_at(spec, "containers");
    p.expect(containers.len() == 1, || {
        format!("{} containers, expected 1", containers.len())
    });
    let c = containers.first().context("no container")?;
    let audits_pods = check_daemon_args(c, p);
    check_pod_spec(spec, audits_pods, p);
    let port_name = check_container_port(c, p);
    check_health_probes(c, &port_name, p);
    for r in ["requests.cpu", "requests.memory", "limits.memory"] {
        p.expect(at(c, &format!("resources.{r}")).is_some(), || {
            format!("no resources.{r}")
        });
    }
    check_security_context(c, audits_pods, p)?;
    check_host_mounts(spec, c, p);
    Ok(DaemonSetFacts {
        namespace,
        name_label,
        port_name,
    })
}

/// The only DaemonSet (apps/v1) and its namespace, which a Namespace object declares.
fn the_daemonset<'a>(
    docs: &'a [(PathBuf, Value)],
    p: &mut Problems,
) -> anyhow::Result<(&'a Value, String)> {
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
    Ok((ds, namespace))
}

/// The selector matches the pod template's labels; returns its app.kubernetes.io/name
/// label (the scrape configuration keeps pods by it).
fn check_pod_labels(ds: &Value, template: &Value, p: &mut Problems) -> String {
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
    name_label
}

/// The prometheus.io annotations that annotation-based scrape configurations follow.
fn check_scrape_annotations(template: &Value, p: &mut Problems) {
    let annotations = at(template, "metadata.annotations");
    let annotation = |k: &str| annotations.and_then(|a| a.get(k)).and_then(Value::as_str);
    p.expect(annotation("prometheus.io/scrape") == Some("true"), || {
        "pod template lacks annotation prometheus.io/scrape: \"true\"".into()
    });
    p.expect(
        annotation("prometheus.io/port") == Some(&PORT.to_string()),
        || format!("pod template annotation prometheus.io/port is not \"{PORT}\""),
    );
}

/// Host network (the daemon watches the node's interfaces), the host PID namespace only
/// for the audit of the pods' namespaces (found through /proc/PID/ns/net), and a
/// toleration that lets it run on every node.
fn check_pod_spec(spec: &Value, audits_pods: bool, p: &mut Problems) {
    p.expect(bool_at(spec, "hostNetwork") == Some(true), || {
        "hostNetwork is not true".into()
    });
    let host_pid = bool_at(spec, "hostPID") == Some(true);
    p.expect(host_pid == audits_pods, || {
        if audits_pods {
            "the audit walks every namespace (--socket.all-namespaces) but hostPID is not \
             set: it would see no pod's namespace"
                .into()
        } else {
            "hostPID is set; it is not needed without the audit of every namespace".into()
        }
    });
    p.expect(
        seq_at(spec, "tolerations")
            .iter()
            .any(|t| str_at(t, "operator") == Some("Exists") && t.get("key").is_none()),
        || "no toleration {operator: Exists} (runs on every node, tainted or not)".into(),
    );
}

/// The container's args parse as the daemon's flags and make it listen on [`PORT`].
/// Returns whether the audit's inventory walks every network namespace (the pods').
fn check_daemon_args(c: &Value, p: &mut Problems) -> bool {
    let args: Vec<&str> = seq_at(c, "args").iter().filter_map(Value::as_str).collect();
    match Args::try_parse_from(std::iter::once("keepalive-daemon").chain(args.iter().copied())) {
        Err(e) => {
            p.expect(false, || {
                format!("container args {args:?} do not parse: {e}")
            });
            false
        }
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
            parsed.all_namespaces && !parsed.audit_disable
        }
    }
}

/// The named containerPort [`PORT`], equal to its hostPort; returns its name.
fn check_container_port(c: &Value, p: &mut Problems) -> String {
    let port = seq_at(c, "ports")
        .iter()
        .find(|p| u64_at(p, "containerPort") == Some(PORT.into()));
    let port_name = port
        .and_then(|p| str_at(p, "name"))
        .unwrap_or_default()
        .to_owned();
    p.expect(!port_name.is_empty(), || {
        format!("no named containerPort {PORT}")
    });
    p.expect(
        port.and_then(|p| u64_at(p, "hostPort")) == Some(PORT.into()),
        || format!("hostPort is not {PORT} (with hostNetwork it must equal containerPort)"),
    );
    port_name
}

/// Liveness and readiness probes ask the daemon's HTTP server on the metrics port.
fn check_health_probes(c: &Value, port_name: &str, p: &mut Problems) {
    for probe in ["livenessProbe", "readinessProbe"] {
        let path = str_at(c, &format!("{probe}.httpGet.path"));
        p.expect(matches!(path, Some("/healthz" | "/metrics")), || {
            format!("{probe} is not an httpGet of /healthz or /metrics")
        });
        let port = at(c, &format!("{probe}.httpGet.port"));
        let ok = port.and_then(Value::as_str) == Some(port_name)
            || port.and_then(Value::as_u64) == Some(PORT.into());
        p.expect(ok, || format!("{probe} does not target the metrics port"));
    }
}

/// Unprivileged, read-only root, and exactly the systemd unit's capabilities, plus
/// SYS_ADMIN and SYS_PTRACE when the audit enters the pods' namespaces (setns, and
/// /proc/PID/ns/net of processes with more capabilities; lifecycle/caps.rs).
fn check_security_context(c: &Value, audits_pods: bool, p: &mut Problems) -> anyhow::Result<()> {
    let sc = at(c, "securityContext").context("container has no securityContext")?;
    for (field, want) in [
        ("privileged", false),
        ("allowPrivilegeEscalation", false),
        ("readOnlyRootFilesystem", true),
    ] {
        p.expect(bool_at(sc, field) == Some(want), || {
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
    let mut want: BTreeSet<String> = unit_capabilities(&read(UNIT)?)
        .iter()
        .map(|c| c.trim_start_matches("CAP_").to_owned())
        .collect();
    if audits_pods {
        want.extend(["SYS_ADMIN".to_owned(), "SYS_PTRACE".to_owned()]);
    }
    let added = caps("capabilities.add");
    p.expect(added == want, || {
        format!(
            "capabilities.add {added:?} differ from {want:?} (the systemd unit's{})",
            if audits_pods {
                ", with SYS_ADMIN and SYS_PTRACE for the audit of every namespace"
            } else {
                ""
            }
        )
    });
    p.expect(audits_pods || !added.contains("SYS_ADMIN"), || {
        "CAP_SYS_ADMIN added without the audit of every namespace".into()
    });
    Ok(())
}

/// BTF and tracefs from the host, mounted read-only where the daemon looks for them.
fn check_host_mounts(spec: &Value, c: &Value, p: &mut Problems) {
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
                    && bool_at(m, "readOnly") == Some(true)
            })
        });
        p.expect(mounted, || {
            format!("{host_path} is not a read-only hostPath mount")
        });
    }
}

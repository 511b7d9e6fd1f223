//! What the `connections_cli` tests share: the daemon with a web config, certificates
//! made with openssl, curl as the independent client, the CLI run in a namespace, and
//! the comparisons of its output with the daemon's listing.

use std::{
    path::Path,
    process::{Child, Command, Output, Stdio},
    thread,
    time::{Duration, Instant},
};

use keepalive_daemon::web::table::COLUMNS;
use keepalive_tests::{
    Netns,
    daemon::daemon_bin,
    process::{TempDir, kill_and_reap, send_signal, wait_timeout},
    timing::{DAEMON_READY_TIMEOUT, DAEMON_TERM_TIMEOUT},
};
use serde_json::Value;

pub const USER: &str = "prometheus";
pub const PASSWORD: &str = "correct horse battery staple";
pub const ADDRESS: &str = "https://127.0.0.1:10291";
/// Bound on the time between curl's and the CLI's view of the same connection.
const MAX_AGE_DRIFT_S: f64 = 20.0;

/// The daemon with a web config in namespace A, watching only the veth (so that the
/// test's own HTTP requests on loopback never show up in the listing).
pub struct TlsDaemon {
    child: Child,
    stderr: std::path::PathBuf,
}

impl TlsDaemon {
    pub fn spawn(
        ns: &Netns,
        iface: &str,
        config: &Path,
        dir: &TempDir,
        curl_auth: &[&str],
    ) -> Self {
        let stderr = dir.join("daemon.stderr");
        let child = ns
            .command(daemon_bin())
            .args(["--interface", iface, "--web.config.file"])
            .arg(config)
            .args(["--web.listen-address", "127.0.0.1:10291"])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&stderr).unwrap())
            .spawn()
            .expect("spawning the daemon");
        let mut d = TlsDaemon { child, stderr };
        let deadline = Instant::now() + DAEMON_READY_TIMEOUT;
        loop {
            let (status, body) = curl(ns, curl_auth, &format!("{ADDRESS}/metrics"));
            if status == 200 && body.lines().any(|l| l == "keepalive_daemon_up 1") {
                return d;
            }
            assert!(
                d.child.try_wait().unwrap().is_none(),
                "daemon exited before becoming ready: {}",
                d.stderr()
            );
            assert!(
                Instant::now() < deadline,
                "daemon not ready over TLS within {DAEMON_READY_TIMEOUT:?} (last: {status}): {}",
                d.stderr()
            );
            thread::sleep(Duration::from_millis(200));
        }
    }

    fn stderr(&self) -> String {
        String::from_utf8_lossy(&std::fs::read(&self.stderr).unwrap_or_default()).into_owned()
    }

    pub fn terminate(mut self) {
        send_signal(&self.child, libc::SIGTERM);
        let status = wait_timeout(&mut self.child, DAEMON_TERM_TIMEOUT);
        assert!(
            status.is_some_and(|s| s.success()),
            "daemon exit after SIGTERM: {status:?}; {}",
            self.stderr()
        );
    }
}

impl Drop for TlsDaemon {
    fn drop(&mut self) {
        kill_and_reap(&mut self.child);
    }
}

/// `openssl ARGS` in `dir` (ARGS split at spaces: no argument here contains one).
fn openssl(dir: &Path, args: &str) {
    let out = Command::new("openssl")
        .args(args.split(' '))
        .current_dir(dir)
        .output()
        .expect("running openssl");
    assert!(
        out.status.success(),
        "openssl {args}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A CA `{ca}.crt` and certificates signed by it: `(name, extension)` pairs.
pub fn make_certs(dir: &Path, ca: &str, certs: &[(&str, &str)]) {
    openssl(
        dir,
        &format!(
            "req -x509 -newkey rsa:2048 -nodes -days 1 -subj /CN=kat-{ca} -keyout {ca}.key -out {ca}.crt"
        ),
    );
    for (name, ext) in certs {
        std::fs::write(dir.join(format!("{name}.ext")), ext).unwrap();
        openssl(
            dir,
            &format!(
                "req -newkey rsa:2048 -nodes -subj /CN=kat-{name} -keyout {name}.key -out {name}.csr"
            ),
        );
        openssl(
            dir,
            &format!(
                "x509 -req -in {name}.csr -CA {ca}.crt -CAkey {ca}.key -CAcreateserial -days 1 -extfile {name}.ext -out {name}.crt"
            ),
        );
    }
}

/// curl's status and body (status 0: no HTTP answer).
pub fn curl(ns: &Netns, extra: &[&str], url: &str) -> (u16, String) {
    let argv = [
        &["curl", "-s", "--max-time", "5", "-w", "\n%{http_code}"][..],
        extra,
        &[url],
    ]
    .concat();
    let out = ns.cmd_output(&argv);
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let (body, status) = text.rsplit_once('\n').unwrap_or(("", &text));
    (status.trim().parse().unwrap_or(0), body.to_owned())
}

/// `keepalive-daemon connections --web.address ADDRESS --http.config.file CONFIG
/// EXTRA` in `ns`.
fn cli(ns: &Netns, address: &str, config: &str, extra: &[&str]) -> Output {
    let bin = daemon_bin();
    let fixed = [
        bin.to_str().unwrap(),
        "connections",
        "--web.address",
        address,
        "--http.config.file",
        config,
    ];
    ns.cmd_output(&[&fixed[..], extra].concat())
}

/// Succeeds; its standard output.
pub fn cli_ok(ns: &Netns, address: &str, config: &str, extra: &[&str]) -> String {
    let out = cli(ns, address, config, extra);
    assert!(
        out.status.success(),
        "connections {address} {config} {extra:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).expect("UTF-8 output")
}

/// Fails, printing nothing on stdout and every `expected` part in its error message.
pub fn cli_fails(ns: &Netns, address: &str, config: &str, expected: &[&str]) {
    let out = cli(ns, address, config, &[]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    let what = format!("connections --web.address {address} --http.config.file {config}");
    assert!(!out.status.success(), "{what} succeeded");
    assert!(out.stdout.is_empty(), "{what} printed {:?}", out.stdout);
    for e in expected {
        assert!(stderr.contains(e), "{what}: {e:?} not in: {stderr}");
    }
}

/// GET /connections?limit=100 with curl and `auth`, parsed.
pub fn curl_listing(ns: &Netns, auth: &[&str]) -> Value {
    let (status, body) = curl(ns, auth, &format!("{ADDRESS}/connections?limit=100"));
    assert_eq!(status, 200, "curl GET /connections: {body}");
    serde_json::from_str(&body).expect("GET /connections is JSON")
}

/// What changes between two listings of the same connections: per connection the
/// seconds since the last probe and the inventory's idle age, and the inventory's time.
#[derive(Debug)]
struct Ages {
    probe: Vec<Option<f64>>,
    idle: Vec<Option<u64>>,
    inventory: Option<f64>,
}

/// A listing without its time-dependent part, and that part.
fn split_ages(mut v: Value) -> (Value, Ages) {
    // Each request's own walk time: present, but different every time.
    let top = v.as_object_mut().expect("a JSON object");
    for key in ["elapsed_seconds", "cpu_seconds"] {
        let t = top.remove(key).and_then(|t| t.as_f64());
        assert!(t.is_some_and(|t| t >= 0.0), "{key}: {t:?}");
    }
    // The keepalive audit's inventory runs every --audit.interval: the two requests
    // may read different ones, whose idle ages differ.
    let inventory = top
        .remove("audit_inventory_unix_seconds")
        .and_then(|t| t.as_f64());
    let conns = v["connections"].as_array_mut().expect("connections array");
    let mut ages = Ages {
        probe: Vec::new(),
        idle: Vec::new(),
        inventory,
    };
    for c in conns.iter_mut() {
        let c = c.as_object_mut().unwrap();
        let probe = c.remove("seconds_since_last_probe");
        ages.probe.push(probe.and_then(|a| a.as_f64()));
        let idle = c
            .get_mut("audit")
            .and_then(|a| a.as_object_mut())
            .and_then(|a| a.remove("idle_age_seconds"));
        ages.idle.push(idle.and_then(|a| a.as_u64()));
    }
    (v, ages)
}

/// The CLI's JSON is the daemon's: equal but for the ages, which only grew, and each
/// request's walk time. The idle ages are equal when both read the same inventory.
pub fn assert_same_listing(daemon: &Value, cli_json: &str) {
    let cli_value: Value = serde_json::from_str(cli_json).expect("the CLI prints JSON");
    let (expected, before) = split_ages(daemon.clone());
    let (got, after) = split_ages(cli_value);
    assert_eq!(
        got, expected,
        "the CLI's JSON differs from GET /connections"
    );
    for (b, a) in before.probe.iter().zip(&after.probe) {
        match (b, a) {
            (None, None) => {}
            (Some(b), Some(a)) => assert!(a >= b && a - b < MAX_AGE_DRIFT_S, "age {a} after {b}"),
            _ => panic!("ages {before:?} vs {after:?}"),
        }
    }
    match (before.inventory, after.inventory) {
        (None, None) => {}
        (Some(b), Some(a)) if a == b => assert_eq!(before.idle, after.idle),
        (Some(b), Some(a)) => assert!(a > b, "inventory of {a} after {b}"),
        (b, a) => panic!("inventories {b:?} then {a:?}"),
    }
}

/// The table: the header, one row per connection of `daemon` (same order and numbers),
/// the summary line.
pub fn assert_table_matches(daemon: &Value, table: &str, summary: &str) {
    // The recent endings, when there are any, follow after a blank line.
    let lines: Vec<&str> = table.lines().take_while(|l| !l.is_empty()).collect();
    let header: Vec<&str> = lines[0].split_whitespace().collect();
    assert_eq!(header, COLUMNS, "{table}");
    let conns = daemon["connections"].as_array().unwrap();
    assert_eq!(lines.len(), conns.len() + 2, "{table}");
    for (line, c) in lines[1..].iter().zip(conns) {
        let cells: Vec<String> = line.split_whitespace().map(str::to_owned).collect();
        let num = |k: &str| c[k].as_u64().unwrap().to_string();
        let expected = [
            c["local"].as_str().unwrap().to_owned(),
            c["remote"].as_str().unwrap().to_owned(),
            num("probes_sent"),
            num("probes_sent_answered"),
            num("unanswered_streak_sent"),
            num("probes_received"),
            num("probes_received_answered"),
            num("unanswered_streak_received"),
        ];
        assert_eq!(cells[..8], expected[..], "{line}");
        assert_eq!(
            cells[8] == "-",
            c["seconds_since_last_probe"].is_null(),
            "{line}"
        );
        assert_eq!(cells[9], c["ended"].as_str().unwrap(), "{line}");
    }
    assert_eq!(lines[lines.len() - 1], summary, "{table}");
}

pub fn write(dir: &TempDir, name: &str, text: &str) -> String {
    let path = dir.join(name);
    std::fs::write(&path, text).unwrap();
    path.display().to_string()
}

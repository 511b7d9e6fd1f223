//! --web.config.file with real TLS (openssl-made CA, server and client certificates),
//! basic auth with a bcrypt hash, right and wrong passwords, client certificates, and a
//! broken configuration that must fail before anything is attached.

use std::{
    path::{Path, PathBuf},
    process::{Command, Output},
};

use std::{
    process::{Child, Stdio},
    time::{Duration, Instant},
};

use keepalive_tests::{Netns, daemon::daemon_bin, require_root};

/// The daemon with a web config, ready once curl with `ready_args` gets a 200.
struct TlsDaemon<'a> {
    ns: &'a Netns,
    child: Child,
}

impl<'a> TlsDaemon<'a> {
    fn spawn(ns: &'a Netns, config: &str, ready_args: &[&str]) -> TlsDaemon<'a> {
        let child = Command::new("nsenter")
            .arg(format!("--net={}", ns.path().display()))
            .arg(daemon_bin())
            .args([
                "--web.config.file",
                config,
                "--web.listen-address",
                "127.0.0.1:10291",
            ])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawning the daemon");
        let mut d = TlsDaemon { ns, child };
        let deadline = Instant::now() + Duration::from_secs(30);
        while curl(ns, ready_args, URL) != 200 {
            assert!(
                d.child.try_wait().unwrap().is_none(),
                "daemon exited before becoming ready"
            );
            assert!(
                Instant::now() < deadline,
                "daemon not ready over TLS within 30 s"
            );
            std::thread::sleep(Duration::from_millis(200));
        }
        d
    }

    fn terminate(mut self) {
        let _ = Command::new("kill")
            .arg(self.child.id().to_string())
            .status();
        let status = self.child.wait().unwrap();
        assert!(status.success(), "daemon exit after SIGTERM: {status}");
        let _ = self.ns;
    }
}

impl Drop for TlsDaemon<'_> {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

const USER: &str = "prometheus";
const PASSWORD: &str = "correct horse battery staple";
const URL: &str = "https://127.0.0.1:10291/metrics";

fn run(cmd: &mut Command) -> Output {
    let out = cmd.output().unwrap_or_else(|e| panic!("{cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

/// A CA, a server certificate for 127.0.0.1 and a client certificate, all signed by it.
fn make_pki(dir: &Path) {
    let openssl = |args: &[&str]| run(Command::new("openssl").args(args).current_dir(dir));
    openssl(&[
        "req",
        "-x509",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-days",
        "1",
        "-subj",
        "/CN=kat-ca",
        "-keyout",
        "ca.key",
        "-out",
        "ca.crt",
    ]);
    for (name, ext) in [
        ("server", "subjectAltName=IP:127.0.0.1"),
        ("client", "extendedKeyUsage=clientAuth"),
    ] {
        std::fs::write(dir.join(format!("{name}.ext")), ext).unwrap();
        openssl(&[
            "req",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-subj",
            &format!("/CN=kat-{name}"),
            "-keyout",
            &format!("{name}.key"),
            "-out",
            &format!("{name}.csr"),
        ]);
        openssl(&[
            "x509",
            "-req",
            "-in",
            &format!("{name}.csr"),
            "-CA",
            "ca.crt",
            "-CAkey",
            "ca.key",
            "-CAcreateserial",
            "-days",
            "1",
            "-extfile",
            &format!("{name}.ext"),
            "-out",
            &format!("{name}.crt"),
        ]);
    }
}

/// HTTP status curl saw, or 0 when the connection or handshake failed.
fn curl(ns: &Netns, extra: &[&str], url: &str) -> u16 {
    let out = ns.cmd_output(
        &[
            &[
                "curl",
                "-s",
                "-o",
                "/dev/null",
                "-w",
                "%{http_code}",
                "--max-time",
                "5",
            ][..],
            extra,
            &[url],
        ]
        .concat(),
    );
    String::from_utf8_lossy(&out.stdout)
        .trim()
        .parse()
        .unwrap_or(0)
}

struct TempDir(PathBuf);
impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

#[test]
fn tls_basic_auth_and_client_certificates() {
    require_root();
    let dir = TempDir(std::env::temp_dir().join(format!("kat-webcfg-{}", std::process::id())));
    std::fs::create_dir_all(&dir.0).unwrap();
    let d = dir.0.as_path();
    make_pki(d);
    let hash = bcrypt::hash(PASSWORD, 6).unwrap();
    let p = |f: &str| d.join(f).display().to_string();

    // TLS + basic auth.
    let cfg = d.join("web.yml");
    std::fs::write(&cfg, format!(
        "tls_server_config:\n  cert_file: {}\n  key_file: {}\nbasic_auth_users:\n  {USER}: {hash}\n",
        p("server.crt"), p("server.key"))).unwrap();
    let ns = Netns::new("webcfg", "a");
    let cfg_s = cfg.display().to_string();
    let ca = p("ca.crt");
    let good = format!("{USER}:{PASSWORD}");
    let daemon = TlsDaemon::spawn(&ns, &cfg_s, &["--cacert", &ca, "-u", &good]);
    let bad = format!("{USER}:wrong");
    assert_eq!(
        curl(&ns, &["--cacert", &ca, "-u", &good], URL),
        200,
        "right password"
    );
    assert_eq!(
        curl(&ns, &["--cacert", &ca, "-u", &bad], URL),
        401,
        "wrong password"
    );
    assert_eq!(
        curl(&ns, &["--cacert", &ca, "-u", "nobody:x"], URL),
        401,
        "unknown user"
    );
    assert_eq!(curl(&ns, &["--cacert", &ca], URL), 401, "no credentials");
    assert_eq!(
        curl(&ns, &["-u", &good], URL),
        0,
        "server certificate must not verify without the CA"
    );
    assert_eq!(
        curl(&ns, &["-u", &good], "http://127.0.0.1:10291/metrics"),
        0,
        "plain HTTP must not be served"
    );
    daemon.terminate();

    // Client certificates required.
    std::fs::write(&cfg, format!(
        "tls_server_config:\n  cert_file: {}\n  key_file: {}\n  client_ca_file: {}\n  client_auth_type: RequireAndVerifyClientCert\n",
        p("server.crt"), p("server.key"), p("ca.crt"))).unwrap();
    let (cert, key) = (p("client.crt"), p("client.key"));
    let daemon = TlsDaemon::spawn(
        &ns,
        &cfg_s,
        &["--cacert", &ca, "--cert", &cert, "--key", &key],
    );
    assert_eq!(
        curl(&ns, &["--cacert", &ca, "--cert", &cert, "--key", &key], URL),
        200,
        "with a client certificate"
    );
    assert_eq!(
        curl(&ns, &["--cacert", &ca], URL),
        0,
        "without a client certificate"
    );
    daemon.terminate();
}

#[test]
fn a_broken_web_config_fails_before_attaching() {
    require_root();
    let dir = TempDir(std::env::temp_dir().join(format!("kat-webcfg-bad-{}", std::process::id())));
    std::fs::create_dir_all(&dir.0).unwrap();
    let cfg = dir.0.join("web.yml");
    std::fs::write(&cfg, "tls_server_config:\n  cert_file: /nonexistent/server.crt\n  key_file: /nonexistent/server.key\n").unwrap();
    let ns = Netns::new("webbad", "a");
    let out = Command::new("nsenter")
        .arg(format!("--net={}", ns.path().display()))
        .arg(daemon_bin())
        .args([
            "--web.config.file",
            &cfg.display().to_string(),
            "--web.listen-address",
            "127.0.0.1:10291",
        ])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success(),
        "daemon accepted a missing certificate"
    );
    assert!(
        stderr.contains("/nonexistent/server.crt"),
        "error does not name the file: {stderr}"
    );
    assert!(
        !stderr.contains("attached"),
        "something was attached before failing: {stderr}"
    );
}

//! --web.config.file with real TLS (openssl-made CA, server and client certificates):
//! basic auth with a bcrypt hash, right and wrong passwords, client certificates and
//! client_allowed_sans, a node_exporter-style file (TLS 1.3 only, cipher suites,
//! curves, headers), HTTP/2 offered by ALPN, certificate rotation without restart,
//! and a broken configuration that must fail before anything is attached.

#[path = "web_config/support.rs"]
mod support;

use std::{
    process::Command,
    time::{Duration, Instant},
};

use keepalive_tests::{Netns, daemon::daemon_bin, require_root};
use support::{TempDir, TlsDaemon, URL, curl, handshake, issue, make_pki};

const USER: &str = "prometheus";
const PASSWORD: &str = "correct horse battery staple";

#[test]
fn tls_basic_auth_and_client_certificates() {
    require_root();
    let dir = TempDir::new("webcfg");
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
    let dir = TempDir::new("webcfg-bad");
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

/// A daemon in its own namespace with the PKI of [`make_pki`] in a temp dir.
struct Setup {
    dir: TempDir,
    ns: Netns,
}

impl Setup {
    fn new(name: &str) -> Setup {
        let dir = TempDir::new(name);
        make_pki(&dir.0);
        let ns = Netns::new(name, "a");
        Setup { dir, ns }
    }

    /// Writes web.yml: tls_server_config with the server pair and `tls_extra` (indented
    /// by two already), then `rest` at top level.
    fn config(&self, tls_extra: &str, rest: &str) -> String {
        let cfg = self.dir.p("web.yml");
        let text = format!(
            "tls_server_config:\n  cert_file: {}\n  key_file: {}\n{tls_extra}{rest}",
            self.dir.p("server.crt"),
            self.dir.p("server.key")
        );
        std::fs::write(&cfg, text).unwrap();
        cfg
    }
}

#[test]
fn node_exporter_web_yml_with_tls13_only_refuses_tls12() {
    require_root();
    let s = Setup::new("webtls13");
    // As an operator would have written it for node_exporter.
    let cfg = s.config(
        "  min_version: TLS13\n  prefer_server_cipher_suites: true\n  curve_preferences: [X25519, CurveP256]\n  cipher_suites:\n    - TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384\n",
        "http_server_config:\n  http2: true\n  headers:\n    X-Frame-Options: deny\n    X-Content-Type-Options: nosniff\n",
    );
    let ca = s.dir.p("ca.crt");
    let daemon = TlsDaemon::spawn(&s.ns, &cfg, &["--cacert", &ca]);
    assert!(
        handshake(&s.ns, &ca, &["-tls1_2"]).is_none(),
        "a TLS 1.2-only client must be refused"
    );
    let h = handshake(&s.ns, &ca, &["-tls1_3"]).expect("TLS 1.3 handshake");
    assert_eq!(h.protocol, "TLSv1.3");
    let h = handshake(&s.ns, &ca, &["-tls1_3", "-groups", "P-384"]);
    assert!(h.is_none(), "P-384 is not in curve_preferences");
    assert_eq!(curl(&s.ns, &["--cacert", &ca], URL), 200);
    daemon.terminate();
}

#[test]
fn cipher_suites_restrict_tls12_negotiation() {
    require_root();
    let s = Setup::new("webciph");
    let cfg = s.config(
        "  max_version: TLS12\n  cipher_suites:\n    - TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384\n    - TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256\n",
        "",
    );
    let ca = s.dir.p("ca.crt");
    let daemon = TlsDaemon::spawn(&s.ns, &cfg, &["--cacert", &ca]);
    let tls12 = |ciphers: &str| handshake(&s.ns, &ca, &["-tls1_2", "-cipher", ciphers]);
    assert!(
        tls12("ECDHE-RSA-AES128-GCM-SHA256").is_none(),
        "a suite not in cipher_suites must be refused"
    );
    let h = tls12("ECDHE-RSA-CHACHA20-POLY1305").expect("a listed suite");
    assert_eq!(
        (h.protocol.as_str(), h.cipher.as_str()),
        ("TLSv1.2", "ECDHE-RSA-CHACHA20-POLY1305")
    );
    // The client prefers CHACHA20; the server's order (prefer_server_cipher_suites,
    // default true) puts AES-256 first.
    let h = tls12(
        "ECDHE-RSA-CHACHA20-POLY1305:ECDHE-RSA-AES256-GCM-SHA384:ECDHE-RSA-AES128-GCM-SHA256",
    )
    .expect("a client offering several suites");
    assert_eq!(h.cipher, "ECDHE-RSA-AES256-GCM-SHA384");
    assert!(
        handshake(&s.ns, &ca, &["-tls1_3"]).is_none(),
        "max_version TLS12"
    );
    daemon.terminate();
}

#[test]
fn client_allowed_sans_refuse_a_valid_certificate_with_another_san() {
    require_root();
    let s = Setup::new("websans");
    issue(
        &s.dir.0,
        "allowed",
        "kat-allowed",
        "extendedKeyUsage=clientAuth\nsubjectAltName=DNS:scraper.example",
    );
    issue(
        &s.dir.0,
        "other",
        "kat-other",
        "extendedKeyUsage=clientAuth\nsubjectAltName=DNS:intruder.example",
    );
    let ca = s.dir.p("ca.crt");
    let cfg = s.config(
        &format!(
            "  client_ca_file: {ca}\n  client_auth_type: RequireAndVerifyClientCert\n  client_allowed_sans: [scraper.example]\n"
        ),
        "",
    );
    let with = |name: &str| {
        [
            "--cacert".to_owned(),
            ca.clone(),
            "--cert".into(),
            s.dir.p(&format!("{name}.crt")),
            "--key".into(),
            s.dir.p(&format!("{name}.key")),
        ]
    };
    let allowed = with("allowed");
    let allowed: Vec<&str> = allowed.iter().map(String::as_str).collect();
    let daemon = TlsDaemon::spawn(&s.ns, &cfg, &allowed);
    assert_eq!(curl(&s.ns, &allowed, URL), 200, "the allowed SAN");
    let other = with("other");
    let other: Vec<&str> = other.iter().map(String::as_str).collect();
    assert_eq!(curl(&s.ns, &other, URL), 0, "signed by the CA, another SAN");
    let no_san = with("client");
    let no_san: Vec<&str> = no_san.iter().map(String::as_str).collect();
    assert_eq!(curl(&s.ns, &no_san, URL), 0, "signed by the CA, no SAN");
    assert_eq!(curl(&s.ns, &["--cacert", &ca], URL), 0, "no certificate");
    daemon.terminate();
}

#[test]
fn http2_is_offered_by_alpn_only_when_on() {
    require_root();
    let s = Setup::new("webalpn");
    let ca = s.dir.p("ca.crt");
    for (http2, expected) in [("true", "h2"), ("false", "http/1.1")] {
        let cfg = s.config("", &format!("http_server_config:\n  http2: {http2}\n"));
        let daemon = TlsDaemon::spawn(&s.ns, &cfg, &["--cacert", &ca]);
        let h = handshake(&s.ns, &ca, &["-alpn", "h2,http/1.1"]).expect("handshake");
        assert_eq!(h.alpn.as_deref(), Some(expected), "http2: {http2}");
        daemon.terminate();
    }
}

#[test]
fn a_rotated_certificate_is_served_without_restart() {
    require_root();
    let s = Setup::new("webrot");
    let cfg = s.config("", "");
    let ca = s.dir.p("ca.crt");
    let mut daemon = TlsDaemon::spawn(&s.ns, &cfg, &["--cacert", &ca]);
    let before = handshake(&s.ns, &ca, &[]).expect("handshake");
    assert!(
        before.subject.ends_with("CN = kat-server"),
        "{}",
        before.subject
    );

    // A new pair, moved in as cert-manager or an operator with `mv` would.
    issue(
        &s.dir.0,
        "server2",
        "kat-server-rotated",
        "subjectAltName=IP:127.0.0.1",
    );
    for ext in ["crt", "key"] {
        std::fs::rename(
            s.dir.0.join(format!("server2.{ext}")),
            s.dir.0.join(format!("server.{ext}")),
        )
        .unwrap();
    }
    let replaced = Instant::now();
    // The daemon looks at the files at most once a second: the first handshake after
    // more than a second is the one that must see the new pair.
    std::thread::sleep(Duration::from_millis(1100));
    let after = handshake(&s.ns, &ca, &[]).expect("handshake after the rotation");
    let took = replaced.elapsed();
    assert!(
        after.subject.ends_with("CN = kat-server-rotated"),
        "still the old certificate: {}",
        after.subject
    );
    assert!(took < Duration::from_secs(2), "took {took:?}");
    eprintln!("the rotated certificate was served {took:?} after the files were replaced");
    daemon.assert_running();
    assert_eq!(curl(&s.ns, &["--cacert", &ca], URL), 200);

    // A broken replacement keeps the rotated pair in service.
    std::fs::write(s.dir.0.join("server.crt"), "not a certificate\n").unwrap();
    std::thread::sleep(Duration::from_millis(1100));
    let kept = handshake(&s.ns, &ca, &[]).expect("handshake after a bad replacement");
    assert!(
        kept.subject.ends_with("CN = kat-server-rotated"),
        "{}",
        kept.subject
    );
    daemon.assert_running();
    daemon.terminate();
}

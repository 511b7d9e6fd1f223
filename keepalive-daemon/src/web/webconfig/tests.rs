//! Unit tests of the web configuration: keys and values as exporter-toolkit writes
//! them, mapped to rustls, and every mistake refused with the key named.

use std::path::PathBuf;

use rustls::{
    CipherSuite, NamedGroup, ProtocolVersion,
    pki_types::{CertificateDer, UnixTime},
    server::danger::ClientCertVerifier,
};

use super::{client_auth, tls, *};

/// A directory for one test's files, removed at the end.
struct Dir(PathBuf);

impl Dir {
    fn new(name: &str) -> Dir {
        let d = std::env::temp_dir().join(format!("ka-webcfg-{name}-{}", std::process::id()));
        std::fs::create_dir_all(&d).unwrap();
        Dir(d)
    }

    fn write(&self, name: &str, text: &str) -> PathBuf {
        let p = self.0.join(name);
        std::fs::write(&p, text).unwrap();
        p
    }
}

impl Drop for Dir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A CA, a server certificate and a client certificate (with `client_sans`) it signed,
/// and a client certificate from another CA: PEM texts.
struct Pki {
    ca: String,
    server: (String, String),
    client: CertificateDer<'static>,
    stranger: CertificateDer<'static>,
}

fn pki(client_sans: &[&str]) -> Pki {
    use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, IsCa, KeyPair};
    let ca_issuer = |cn: &str| {
        let mut p = CertificateParams::new(Vec::<String>::new()).unwrap();
        p.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        p.distinguished_name.push(rcgen::DnType::CommonName, cn);
        CertifiedIssuer::self_signed(p, KeyPair::generate().unwrap()).unwrap()
    };
    let (ca, other_ca) = (ca_issuer("ka-ca"), ca_issuer("other-ca"));
    let leaf = |sans: Vec<String>, client: bool, by: &CertifiedIssuer<'_, KeyPair>| {
        let mut p = CertificateParams::new(sans).unwrap();
        if client {
            p.extended_key_usages = vec![rcgen::ExtendedKeyUsagePurpose::ClientAuth];
        }
        let key = KeyPair::generate().unwrap();
        (p.signed_by(&key, by).unwrap(), key)
    };
    let (server, server_key) = leaf(vec!["127.0.0.1".into()], false, &ca);
    let sans: Vec<String> = client_sans.iter().map(|s| s.to_string()).collect();
    let (client, _) = leaf(sans.clone(), true, &ca);
    let (stranger, _) = leaf(sans, true, &other_ca);
    Pki {
        ca: ca.pem(),
        server: (server.pem(), server_key.serialize_pem()),
        client: client.der().clone(),
        stranger: stranger.der().clone(),
    }
}

/// A tls_server_config with the server pair inline and `extra` keys.
fn tls_config(pki: &Pki, extra: &str) -> TlsServerConfig {
    let indent = |pem: &str| pem.replace('\n', "\n    ");
    let yaml = format!(
        "cert: |\n    {}\nkey: |\n    {}\n{extra}",
        indent(&pki.server.0),
        indent(&pki.server.1)
    );
    serde_norway::from_str(&yaml).unwrap()
}

fn err_of<T: std::fmt::Debug>(r: Result<T, WebConfigError>) -> String {
    r.unwrap_err().to_string()
}

#[test]
fn config_files_parse_and_reject_mistakes() {
    let dir = Dir::new("parse");
    let ok = dir.write(
        "ok.yml",
        "basic_auth_users:\n  alice: $2y$10$abcdefghijklmnopqrstuuFakeFakeFakeFakeFakeFakeFakeFakeF\n",
    );
    let c = WebConfig::load(&ok).unwrap();
    assert_eq!(c.basic_auth_users.len(), 1);
    assert!(c.tls().unwrap().is_none());
    let plain = dir.write("plain.yml", "basic_auth_users:\n  bob: hunter2\n");
    assert!(matches!(
        WebConfig::load(&plain),
        Err(WebConfigError::Hash { .. })
    ));
    let missing = dir.write(
        "missing.yml",
        "tls_server_config:\n  cert_file: /nonexistent.crt\n  key_file: /nonexistent.key\n",
    );
    let err = err_of(WebConfig::load(&missing).unwrap().tls());
    assert!(err.contains("/nonexistent.crt"), "{err}");
    assert!(WebConfig::load(&dir.0.join("nope.yml")).is_err());
    // Only settings, no certificate: exporter-toolkit serves plain HTTP then.
    let versions_only = dir.write("v.yml", "tls_server_config:\n  min_version: TLS13\n");
    assert!(
        WebConfig::load(&versions_only)
            .unwrap()
            .tls()
            .unwrap()
            .is_none()
    );
    let no_key = dir.write("nokey.yml", "tls_server_config:\n  cert_file: a.crt\n");
    let err = err_of(WebConfig::load(&no_key).unwrap().tls());
    assert!(err.contains("tls_server_config.key_file: missing"), "{err}");
}

#[test]
fn unknown_keys_are_refused_at_every_level_with_the_key_named() {
    let dir = Dir::new("keys");
    for (yaml, key) in [
        ("rate_limits:\n  burst: 1\n", "rate_limits"),
        (
            "tls_server_config:\n  cert_file: a\n  key_file: b\n  ciphers: [x]\n",
            "ciphers",
        ),
        ("http_server_config:\n  http3: true\n", "http3"),
    ] {
        let f = dir.write("k.yml", yaml);
        let err = err_of(WebConfig::load(&f));
        assert!(err.contains(&format!("unknown field `{key}`")), "{err}");
    }
}

#[test]
fn relative_files_are_relative_to_the_config_directory() {
    let dir = Dir::new("rel");
    let p = pki(&[]);
    dir.write("tls.crt", &p.server.0);
    dir.write("tls.key", &p.server.1);
    let cfg = dir.write(
        "web.yml",
        "tls_server_config:\n  cert_file: tls.crt\n  key_file: tls.key\n",
    );
    let c = WebConfig::load(&cfg).unwrap();
    let t = c.tls_server_config.as_ref().unwrap();
    assert_eq!(
        t.cert_file.as_deref(),
        Some(dir.0.join("tls.crt").as_path())
    );
    assert!(c.tls().unwrap().is_some());
}

#[test]
fn inline_or_file_but_not_both() {
    let p = pki(&[]);
    assert!(tls::server_config(&tls_config(&p, ""), true).is_ok());
    let err = err_of(tls::server_config(
        &tls_config(&p, "cert_file: x.crt\n"),
        true,
    ));
    assert!(
        err.contains("tls_server_config.cert_file: give either cert"),
        "{err}"
    );
}

#[test]
fn tls_versions_map_to_rustls_and_old_ones_are_refused() {
    let supports = |min: Option<&str>, max: Option<&str>| -> Vec<ProtocolVersion> {
        tls::versions(min, max)
            .unwrap()
            .iter()
            .map(|v| v.version)
            .collect()
    };
    let (v12, v13) = (ProtocolVersion::TLSv1_2, ProtocolVersion::TLSv1_3);
    assert_eq!(supports(None, None), [v12, v13]);
    assert_eq!(supports(Some("TLS13"), None), [v13]);
    assert_eq!(supports(None, Some("TLS12")), [v12]);
    assert_eq!(supports(Some("TLS12"), Some("TLS13")), [v12, v13]);
    for (key, value) in [
        ("min_version", "TLS10"),
        ("min_version", "TLS11"),
        ("max_version", "TLS11"),
    ] {
        let err = err_of(tls::versions(
            (key == "min_version").then_some(value),
            (key == "max_version").then_some(value),
        ));
        assert!(
            err.contains(&format!(
                "tls_server_config.{key}: {value} is not supported: rustls"
            )),
            "{err}"
        );
    }
    let err = err_of(tls::versions(Some("TLS14"), None));
    assert!(
        err.contains("min_version: unknown TLS version \"TLS14\""),
        "{err}"
    );
    let err = err_of(tls::versions(Some("TLS13"), Some("TLS12")));
    assert!(
        err.contains("min_version: TLS13 is above max_version TLS12"),
        "{err}"
    );
}

#[test]
fn cipher_suites_map_go_names_and_ignore_tls13_ones() {
    let names = |v: &[&str]| -> Vec<String> { v.iter().map(|s| s.to_string()).collect() };
    let suites = |v: &[&str]| -> Vec<CipherSuite> {
        tls::provider(&names(v), &[])
            .unwrap()
            .cipher_suites
            .iter()
            .map(|s| s.suite())
            .collect()
    };
    let tls13 = [
        CipherSuite::TLS13_AES_256_GCM_SHA384,
        CipherSuite::TLS13_AES_128_GCM_SHA256,
        CipherSuite::TLS13_CHACHA20_POLY1305_SHA256,
    ];
    let go12 = [
        "TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256",
        "TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256",
        "TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384",
        "TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256",
        "TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256",
        "TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384",
    ];
    let rustls12 = [
        CipherSuite::TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256,
        CipherSuite::TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256,
        CipherSuite::TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384,
        CipherSuite::TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256,
        CipherSuite::TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256,
        CipherSuite::TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384,
    ];
    // Every Go name, in the configured order, after all TLS 1.3 suites.
    assert_eq!(suites(&go12), [&tls13[..], &rustls12[..]].concat());
    // TLS 1.3 names are accepted and change nothing, as in Go.
    assert_eq!(
        suites(&[
            "TLS_AES_128_GCM_SHA256",
            "TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384"
        ]),
        [
            &tls13[..],
            &[CipherSuite::TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384]
        ]
        .concat()
    );
    let err = err_of(tls::provider(
        &names(&["TLS_RSA_WITH_AES_128_CBC_SHA"]),
        &[],
    ));
    assert!(
        err.contains("tls_server_config.cipher_suites: TLS_RSA_WITH_AES_128_CBC_SHA is not supported by rustls"),
        "{err}"
    );
    let err = err_of(tls::provider(&names(&["TLS_NOPE"]), &[]));
    assert!(
        err.contains("cipher_suites: unknown cipher suite \"TLS_NOPE\""),
        "{err}"
    );
    // Only TLS 1.3 names with TLS 1.2 only: nothing left to negotiate.
    let p = pki(&[]);
    let t = tls_config(
        &p,
        "max_version: TLS12\ncipher_suites: [TLS_AES_128_GCM_SHA256]\n",
    );
    let err = err_of(tls::server_config(&t, true));
    assert!(
        err.contains("tls_server_config.cipher_suites: no cipher suite"),
        "{err}"
    );
}

#[test]
fn curves_map_to_kx_groups_and_p521_is_refused() {
    let names = |v: &[&str]| -> Vec<String> { v.iter().map(|s| s.to_string()).collect() };
    let groups: Vec<NamedGroup> = tls::provider(&[], &names(&["CurveP384", "X25519", "CurveP256"]))
        .unwrap()
        .kx_groups
        .iter()
        .map(|g| g.name())
        .collect();
    assert_eq!(
        groups,
        [
            NamedGroup::secp384r1,
            NamedGroup::X25519,
            NamedGroup::secp256r1
        ]
    );
    let err = err_of(tls::provider(&[], &names(&["CurveP521"])));
    assert!(
        err.contains("tls_server_config.curve_preferences: CurveP521 is not supported: ring"),
        "{err}"
    );
    let err = err_of(tls::provider(&[], &names(&["P256"])));
    assert!(
        err.contains("curve_preferences: unknown curve \"P256\""),
        "{err}"
    );
}

#[test]
fn server_order_and_alpn() {
    let p = pki(&[]);
    let c = tls::server_config(&tls_config(&p, ""), true).unwrap();
    assert!(
        c.ignore_client_order,
        "prefer_server_cipher_suites defaults to true"
    );
    assert_eq!(c.alpn_protocols, [b"h2".to_vec(), b"http/1.1".to_vec()]);
    let c = tls::server_config(
        &tls_config(&p, "prefer_server_cipher_suites: false\n"),
        false,
    )
    .unwrap();
    assert!(!c.ignore_client_order);
    assert_eq!(c.alpn_protocols, [b"http/1.1".to_vec()]);
}

#[test]
fn headers_as_exporter_toolkit_allows_them() {
    let ok = |h: &[(&str, &str)]| {
        validate_headers(
            &h.iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        )
    };
    ok(&[
        ("Strict-Transport-Security", "max-age=31536000"),
        ("X-Content-Type-Options", "nosniff"),
        ("X-Frame-Options", "deny"),
        ("X-XSS-Protection", "1; mode=block"),
        ("Content-Security-Policy", "default-src 'self'"),
    ])
    .unwrap();
    ok(&[("X-Frame-Options", "sameorigin")]).unwrap();
    for (name, value, expected) in [
        ("Server", "x", "header \"Server\" can not be configured"),
        (
            "x-frame-options",
            "deny",
            "header \"x-frame-options\" can not be configured",
        ),
        (
            "X-Frame-Options",
            "DENY",
            "invalid value \"DENY\" for X-Frame-Options",
        ),
        (
            "X-Content-Type-Options",
            "",
            "invalid value \"\" for X-Content-Type-Options",
        ),
        (
            "Content-Security-Policy",
            "a\r\nSet-Cookie: x",
            "contains a control character",
        ),
    ] {
        let err = err_of(ok(&[(name, value)]));
        assert!(
            err.starts_with("--web.config.file http_server_config.headers: "),
            "{err}"
        );
        assert!(err.contains(expected), "{err}");
    }
}

#[test]
fn every_client_auth_type() {
    let p = pki(&["client.example"]);
    let ca = format!("client_ca: |\n    {}\n", p.ca.replace('\n', "\n    "));
    let verifier = |extra: &str| {
        let t = tls_config(&p, extra);
        let provider = Arc::new(tls::provider(&[], &[]).unwrap());
        client_auth::verifier(&t, &provider)
    };
    let accepts = |v: &dyn ClientCertVerifier, cert: &CertificateDer<'_>| {
        v.verify_client_cert(cert, &[], UnixTime::now()).is_ok()
    };
    assert!(verifier("").unwrap().is_none());
    assert!(
        verifier("client_auth_type: NoClientCert\n")
            .unwrap()
            .is_none()
    );
    // (type, with the CA, asks, requires, accepts a stranger's certificate)
    for (value, with_ca, mandatory, stranger_ok) in [
        ("RequestClientCert", false, false, true),
        ("RequireAnyClientCert", false, true, true),
        ("RequireClientCert", false, true, true),
        ("VerifyClientCertIfGiven", true, false, false),
        ("RequireAndVerifyClientCert", true, true, false),
    ] {
        let extra = format!(
            "client_auth_type: {value}\n{}",
            if with_ca { &ca } else { "" }
        );
        let v = verifier(&extra).unwrap().expect(value);
        assert!(v.offer_client_auth(), "{value}");
        assert_eq!(v.client_auth_mandatory(), mandatory, "{value}");
        assert!(accepts(&*v, &p.client), "{value}: the CA's client");
        assert_eq!(
            accepts(&*v, &p.stranger),
            stranger_ok,
            "{value}: another CA's client"
        );
    }
    // A CA without a type: verify (this daemon's default before these keys).
    let v = verifier(&ca).unwrap().unwrap();
    assert!(v.client_auth_mandatory() && !accepts(&*v, &p.stranger));
    for (extra, expected) in [
        (
            format!("client_auth_type: NoClientCert\n{ca}"),
            "client_auth_type: NoClientCert with a client CA",
        ),
        (
            "client_auth_type: Sometimes\n".into(),
            "client_auth_type: unknown value \"Sometimes\"",
        ),
        (
            "client_auth_type: VerifyClientCertIfGiven\n".into(),
            "client_ca_file: missing",
        ),
        (
            "client_auth_type: RequireAndVerifyClientCert\n".into(),
            "client_ca_file: missing",
        ),
        (
            format!("client_auth_type: VerifyClientCertIfGiven\nclient_allowed_sans: [a]\n{ca}"),
            "client_allowed_sans: needs client_auth_type",
        ),
        (
            "client_allowed_sans: [a]\n".into(),
            "client_allowed_sans: needs client_auth_type",
        ),
    ] {
        let err = err_of(verifier(&extra));
        assert!(
            err.contains(&format!("tls_server_config.{expected}")),
            "{err}"
        );
    }
}

#[test]
fn client_allowed_sans_are_checked_after_verification() {
    let p = pki(&["client.example", "10.1.2.3"]);
    let ca = format!("client_ca: |\n    {}\n", p.ca.replace('\n', "\n    "));
    let verifier = |sans: &str, auth: &str, ca: &str| {
        let t = tls_config(
            &p,
            &format!("client_auth_type: {auth}\nclient_allowed_sans: {sans}\n{ca}"),
        );
        let provider = Arc::new(tls::provider(&[], &[]).unwrap());
        client_auth::verifier(&t, &provider).unwrap().unwrap()
    };
    let accepts = |v: &dyn ClientCertVerifier, cert: &CertificateDer<'_>| {
        v.verify_client_cert(cert, &[], UnixTime::now()).is_ok()
    };
    let v = verifier(
        "[other.example, 10.1.2.3]",
        "RequireAndVerifyClientCert",
        &ca,
    );
    assert!(accepts(&*v, &p.client), "the IP SAN matches");
    assert!(
        !accepts(&*v, &p.stranger),
        "verified first: another CA's client"
    );
    let v = verifier("[other.example]", "RequireAndVerifyClientCert", &ca);
    assert!(!accepts(&*v, &p.client), "no SAN matches");
    let v = verifier("[client.example]", "RequireAnyClientCert", "");
    assert!(accepts(&*v, &p.stranger), "any certificate with the SAN");
    let v = verifier("[Client.Example]", "RequireAnyClientCert", "");
    assert!(
        !accepts(&*v, &p.stranger),
        "exact match, as exporter-toolkit"
    );
}

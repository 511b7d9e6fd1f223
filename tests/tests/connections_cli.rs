//! `keepalive-daemon connections` against a daemon behind TLS and basic auth, and one
//! that requires client certificates: the real binary with --http.config.file (a
//! Prometheus HTTP client configuration), its table and JSON compared with what curl gets
//! from GET /connections with the same credentials, and every misconfiguration failing
//! with a message that names the setting to change. Certificates are made with openssl,
//! the password hash with the bcrypt crate.

#[path = "connections_cli/support.rs"]
mod support;

use std::{path::Path, thread, time::Duration};

use keepalive_tests::{
    Conn, FAST_KEEPALIVE, Netns, Setup, disable_keepalive, enable_keepalive, open_connections,
    process::TempDir, require_root, sockets::exchange_byte, timing::SETTLE,
};
use serde_json::Value;
use support::{
    ADDRESS, PASSWORD, TlsDaemon, USER, assert_same_listing, assert_table_matches, cli_fails,
    cli_ok, curl_listing, make_certs, write,
};

/// A name the server certificate carries besides 127.0.0.1 (for tls_config.server_name).
const SERVER_NAME: &str = "kat-daemon.test";
/// Keepalive runs this long on the probing connections (1 s idle, 1 s interval): two
/// or three probes each.
const PROBING: Duration = Duration::from_millis(3500);

#[test]
fn connections_cli_over_tls_and_basic_auth() {
    require_root();
    let dir = TempDir::new("conncli");
    let p = |f: &str| dir.join(f).display().to_string();
    let san = format!("subjectAltName=IP:127.0.0.1,DNS:{SERVER_NAME}");
    make_certs(dir.path(), "ca", &[("server", &san)]);
    let hash = bcrypt::hash(PASSWORD, 4).unwrap();
    let web = write(
        &dir,
        "web.yml",
        &format!(
            "tls_server_config:\n  cert_file: {}\n  key_file: {}\nbasic_auth_users:\n  {USER}: {hash}\n",
            p("server.crt"),
            p("server.key")
        ),
    );
    let setup = Setup::new("conncli");
    let (ca, user_pw) = (p("ca.crt"), format!("{USER}:{PASSWORD}"));
    let curl_auth = ["--cacert", ca.as_str(), "-u", user_pw.as_str()];
    let web = Path::new(&web);
    let daemon = TlsDaemon::spawn(&setup.a, &setup.veth.a_if, web, &dir, &curl_auth);
    let conns = traffic(&setup);

    let listing = curl_listing(&setup.a, &curl_auth);
    let rows = listing["connections"].as_array().unwrap();
    let with_probes = rows.iter().filter(|c| c["probes_sent"] != 0).count();
    assert_eq!(
        (listing["total"].as_u64(), rows.len(), with_probes),
        (Some(3), 3, 2),
        "{listing}"
    );
    let pw_file = write(&dir, "password", &format!("{PASSWORD}\n"));
    let cfg = write(
        &dir,
        "http.yml",
        &format!(
            "tls_config:\n  ca_file: {ca}\nbasic_auth:\n  username: {USER}\n  password_file: {pw_file}\n"
        ),
    );
    outputs_match(&setup.a, &cfg, &listing);
    refusals(&setup.a, &dir, &ca);
    insecure_and_server_name(&setup.a, &dir, &ca, &pw_file, &listing);
    drop(conns);
    daemon.terminate();
}

/// Two connections from A to B probe for a while (A's keepalive), then stop; one never
/// probes. Returns them, still open.
fn traffic(setup: &Setup) -> Vec<Conn> {
    let mut conns = open_connections(&setup.a, &setup.b, 1, 1);
    conns.extend(open_connections(&setup.a, &setup.b, 1, 0));
    exchange_byte(&conns);
    for c in &conns[..2] {
        enable_keepalive(&c.client, FAST_KEEPALIVE);
    }
    thread::sleep(PROBING);
    for c in &conns[..2] {
        disable_keepalive(&c.client);
    }
    // The last probes' answers arrive.
    thread::sleep(SETTLE);
    conns
}

/// The JSON and the table, whole, with --probing and with --limit, match `listing`.
fn outputs_match(ns: &Netns, cfg: &str, listing: &Value) {
    let run = |extra: &[&str]| cli_ok(ns, ADDRESS, cfg, extra);
    let note = listing["note"].as_str().unwrap();
    assert_same_listing(listing, &run(&["--json", "--limit", "100"]));
    assert_table_matches(listing, &run(&[]), &format!("3 of 3 connections. {note}"));

    let mut probing_only = listing.clone();
    probing_only["connections"]
        .as_array_mut()
        .unwrap()
        .retain(|c| c["probes_sent"] != 0);
    assert_same_listing(&probing_only, &run(&["--json", "--probing"]));
    assert_table_matches(
        &probing_only,
        &run(&["--probing"]),
        &format!("2 of 3 connections (1 without probes not shown: --probing). {note}"),
    );

    // --at-risk reaches the daemon (which rows it lists depends on the keepalive audit's
    // inventory: audit_view.rs checks those). Each output is checked against itself: the
    // two are separate requests, and an inventory run between them may add or drop the
    // CLI's own loopback connection to the daemon (keepalive off, so at risk).
    let at_risk: Value = serde_json::from_str(&run(&["--json", "--at-risk"])).unwrap();
    assert_eq!(
        (at_risk["at_risk_only"].as_bool(), at_risk["limit"].as_u64()),
        (Some(true), Some(100)),
        "{at_risk}"
    );
    let rows = at_risk["connections"].as_array().unwrap();
    assert!(
        rows.len() as u64 <= at_risk["total"].as_u64().unwrap(),
        "{at_risk}"
    );
    for r in rows {
        let limits = r["audit"]["at_risk"].as_array();
        assert!(limits.is_some_and(|l| !l.is_empty()), "{r}");
    }
    let table = run(&["--at-risk"]);
    let lines: Vec<&str> = table.lines().take_while(|l| !l.is_empty()).collect();
    let summary = lines.last().unwrap();
    assert!(
        summary.starts_with(&format!("{} of ", lines.len() - 2))
            && summary.contains(" connections at risk. "),
        "{table}"
    );

    // --limit reaches the daemon.
    let limited: Value = serde_json::from_str(&run(&["--json", "--limit", "1"])).unwrap();
    assert_eq!(limited["connections"].as_array().unwrap().len(), 1);
    assert_eq!(
        (limited["limit"].as_u64(), limited["truncated"].as_bool()),
        (Some(1), Some(true))
    );
}

/// Wrong password, no credentials, no CA, plain HTTP, nothing listening, an
/// unsupported key: each fails with what to change.
fn refusals(ns: &Netns, dir: &TempDir, ca: &str) {
    let wrong = write(
        dir,
        "wrong.yml",
        &format!(
            "tls_config:\n  ca_file: {ca}\nbasic_auth:\n  username: {USER}\n  password: wrong\n"
        ),
    );
    cli_fails(
        ns,
        ADDRESS,
        &wrong,
        &["refused user \"prometheus\" (401)", "wrong.yml"],
    );
    let anonymous = write(
        dir,
        "anonymous.yml",
        &format!("tls_config:\n  ca_file: {ca}\n"),
    );
    cli_fails(
        ns,
        ADDRESS,
        &anonymous,
        &["asks for basic auth (401): pass --http.config.file with basic_auth"],
    );
    let no_ca = write(
        dir,
        "no-ca.yml",
        &format!("basic_auth:\n  username: {USER}\n  password: {PASSWORD}\n"),
    );
    cli_fails(
        ns,
        ADDRESS,
        &no_ca,
        &["unknown authority", "tls_config.ca_file"],
    );
    cli_fails(
        ns,
        "127.0.0.1:10291",
        &no_ca,
        &["use https:// in --web.address"],
    );
    cli_fails(
        ns,
        "https://127.0.0.1:10292",
        &no_ca,
        &["connection refused", "pass --web.address"],
    );
    let oauth = write(dir, "oauth.yml", "oauth2:\n  client_id: x\n");
    cli_fails(ns, ADDRESS, &oauth, &["oauth2 not supported"]);
}

/// insecure_skip_verify needs no CA; server_name is what the certificate is checked
/// against (a name it lacks fails although it is valid for 127.0.0.1).
fn insecure_and_server_name(ns: &Netns, dir: &TempDir, ca: &str, pw_file: &str, listing: &Value) {
    let insecure = write(
        dir,
        "insecure.yml",
        &format!(
            "tls_config:\n  insecure_skip_verify: true\nbasic_auth:\n  username: {USER}\n  password: {PASSWORD}\n"
        ),
    );
    assert_same_listing(listing, &cli_ok(ns, ADDRESS, &insecure, &["--json"]));
    let named = |name: &str| {
        write(
            dir,
            &format!("named-{name}.yml"),
            &format!(
                "tls_config:\n  ca_file: {ca}\n  server_name: {name}\nbasic_auth:\n  username: {USER}\n  password_file: {pw_file}\n"
            ),
        )
    };
    let out = cli_ok(ns, ADDRESS, &named(SERVER_NAME), &["--json"]);
    assert_same_listing(listing, &out);
    cli_fails(
        ns,
        ADDRESS,
        &named("other.test"),
        &["not valid for", "tls_config.server_name"],
    );
}

#[test]
fn connections_cli_with_a_client_certificate() {
    require_root();
    let dir = TempDir::new("conncli-mtls");
    let p = |f: &str| dir.join(f).display().to_string();
    make_certs(
        dir.path(),
        "ca",
        &[
            ("server", "subjectAltName=IP:127.0.0.1"),
            ("client", "extendedKeyUsage=clientAuth"),
        ],
    );
    make_certs(
        dir.path(),
        "rogue-ca",
        &[("rogue", "extendedKeyUsage=clientAuth")],
    );
    let web = write(
        &dir,
        "web.yml",
        &format!(
            "tls_server_config:\n  cert_file: {}\n  key_file: {}\n  client_ca_file: {}\n  client_auth_type: RequireAndVerifyClientCert\n",
            p("server.crt"),
            p("server.key"),
            p("ca.crt")
        ),
    );
    let setup = Setup::new("conncli-mtls");
    let (ca, cert, key) = (p("ca.crt"), p("client.crt"), p("client.key"));
    let curl_tls = ["--cacert", &ca, "--cert", &cert, "--key", &key];
    let web = Path::new(&web);
    let daemon = TlsDaemon::spawn(&setup.a, &setup.veth.a_if, web, &dir, &curl_tls);
    // Nothing crosses the veth: the listing is empty, and stays so.
    let listing = curl_listing(&setup.a, &curl_tls);
    assert_eq!(listing["total"], 0, "{listing}");
    let note = listing["note"].as_str().unwrap();

    let mtls = write(
        &dir,
        "mtls.yml",
        &format!("tls_config:\n  ca_file: {ca}\n  cert_file: {cert}\n  key_file: {key}\n"),
    );
    assert_same_listing(&listing, &cli_ok(&setup.a, ADDRESS, &mtls, &["--json"]));
    let table = cli_ok(&setup.a, ADDRESS, &mtls, &[]);
    assert_table_matches(&listing, &table, &format!("0 of 0 connections. {note}"));

    let without = write(
        &dir,
        "no-cert.yml",
        &format!("tls_config:\n  ca_file: {ca}\n"),
    );
    cli_fails(
        &setup.a,
        ADDRESS,
        &without,
        &[
            "refused the handshake",
            "set tls_config.cert_file and key_file",
        ],
    );
    let rogue = write(
        &dir,
        "rogue.yml",
        &format!(
            "tls_config:\n  ca_file: {ca}\n  cert_file: {}\n  key_file: {}\n",
            p("rogue.crt"),
            p("rogue.key")
        ),
    );
    cli_fails(
        &setup.a,
        ADDRESS,
        &rogue,
        &["did not accept the client certificate", "rogue.crt"],
    );
    daemon.terminate();
}

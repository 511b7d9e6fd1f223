//! Helpers of the web_config tests: an openssl-made PKI, the daemon started with a
//! web configuration, and the two clients that look at it (curl for HTTP answers,
//! `openssl s_client` for what the handshake negotiated).

use std::{
    path::{Path, PathBuf},
    process::{Child, Command, Output, Stdio},
    time::{Duration, Instant},
};

use keepalive_tests::{Netns, daemon::daemon_bin};

pub const URL: &str = "https://127.0.0.1:10291/metrics";

/// The daemon with a web config, ready once curl with `ready_args` gets a 200.
pub struct TlsDaemon<'a> {
    ns: &'a Netns,
    child: Child,
}

impl<'a> TlsDaemon<'a> {
    pub fn spawn(ns: &'a Netns, config: &str, ready_args: &[&str]) -> TlsDaemon<'a> {
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
            d.assert_running();
            assert!(
                Instant::now() < deadline,
                "daemon not ready over TLS within 30 s"
            );
            std::thread::sleep(Duration::from_millis(200));
        }
        d
    }

    /// The same process is still serving (not restarted, not crashed).
    pub fn assert_running(&mut self) {
        assert!(
            self.child.try_wait().unwrap().is_none(),
            "daemon exited (before becoming ready, or while it should serve)"
        );
    }

    pub fn terminate(mut self) {
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

pub fn run(cmd: &mut Command) -> Output {
    let out = cmd.output().unwrap_or_else(|e| panic!("{cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

fn openssl(dir: &Path, args: &[&str]) -> Output {
    run(Command::new("openssl").args(args).current_dir(dir))
}

/// A CA, a server certificate for 127.0.0.1 and a client certificate, all signed by it.
pub fn make_pki(dir: &Path) {
    openssl(
        dir,
        &[
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
        ],
    );
    issue(dir, "server", "kat-server", "subjectAltName=IP:127.0.0.1");
    issue(dir, "client", "kat-client", "extendedKeyUsage=clientAuth");
}

/// `<name>.crt` and `<name>.key` for CN `cn` with the extensions `ext` (openssl's
/// extfile syntax), signed by the CA of [`make_pki`].
pub fn issue(dir: &Path, name: &str, cn: &str, ext: &str) {
    std::fs::write(dir.join(format!("{name}.ext")), ext).unwrap();
    let (key, csr, crt, extfile) = (
        format!("{name}.key"),
        format!("{name}.csr"),
        format!("{name}.crt"),
        format!("{name}.ext"),
    );
    let subj = format!("/CN={cn}");
    openssl(
        dir,
        &[
            "req", "-newkey", "rsa:2048", "-nodes", "-subj", &subj, "-keyout", &key, "-out", &csr,
        ],
    );
    openssl(
        dir,
        &[
            "x509",
            "-req",
            "-in",
            &csr,
            "-CA",
            "ca.crt",
            "-CAkey",
            "ca.key",
            "-CAcreateserial",
            "-days",
            "1",
            "-extfile",
            &extfile,
            "-out",
            &crt,
        ],
    );
}

/// HTTP status curl saw, or 0 when the connection or handshake failed. HTTP/1.1: these
/// tests are about TLS; that HTTP/2 is offered is checked through ALPN with openssl.
pub fn curl(ns: &Netns, extra: &[&str], url: &str) -> u16 {
    let out = ns.cmd_output(
        &[
            &[
                "curl",
                "-s",
                "--http1.1",
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

/// What `openssl s_client` negotiated with the daemon, the server certificate verified
/// against `ca`; `None` when the handshake failed.
pub struct Handshake {
    pub protocol: String,
    pub cipher: String,
    pub alpn: Option<String>,
    pub subject: String,
}

pub fn handshake(ns: &Netns, ca: &str, extra: &[&str]) -> Option<Handshake> {
    let out = ns.cmd_output(
        &[
            &[
                "timeout",
                "10",
                "openssl",
                "s_client",
                "-connect",
                "127.0.0.1:10291",
                "-CAfile",
                ca,
                "-verify_return_error",
            ][..],
            extra,
        ]
        .concat(),
    );
    if !out.status.success() {
        return None;
    }
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let field = |prefix: &str| {
        text.lines()
            .find_map(|l| l.trim().strip_prefix(prefix))
            .map(|v| v.trim().to_owned())
    };
    // "New, TLSv1.3, Cipher is TLS_AES_256_GCM_SHA384"
    let (protocol, cipher) = field("New, ")
        .and_then(|v| {
            let (p, c) = v.split_once(", Cipher is ")?;
            Some((p.to_owned(), c.to_owned()))
        })
        .unwrap_or_else(|| panic!("no protocol/cipher line in s_client's output:\n{text}"));
    Some(Handshake {
        protocol,
        cipher,
        alpn: field("ALPN protocol:"),
        subject: field("subject=").unwrap_or_default(),
    })
}

pub struct TempDir(pub PathBuf);

impl TempDir {
    pub fn new(name: &str) -> TempDir {
        let d = std::env::temp_dir().join(format!("kat-{name}-{}", std::process::id()));
        std::fs::create_dir_all(&d).unwrap();
        TempDir(d)
    }

    /// The path of `file` in it, as a string for command lines and YAML.
    pub fn p(&self, file: &str) -> String {
        self.0.join(file).display().to_string()
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

//! TLS for `connections`: tls_config turned into ureq's TLS settings (checked first with
//! rustls, so that a bad file is an error naming it rather than a failed handshake),
//! tls_config.server_name, and TLS and connection failures explained to the operator.

use std::{
    io,
    net::{SocketAddr, ToSocketAddrs as _},
    path::Path,
    sync::Arc,
};

use rustls::{CertificateError, RootCertStore, sign::CertifiedKey};
use rustls_pki_types::{CertificateDer, PrivateKeyDer, pem::PemObject as _};
use ureq::{
    Agent,
    config::Config,
    http::Uri,
    tls::{Certificate, ClientCert, PrivateKey, RootCerts},
    unversioned::{
        resolver::{ResolvedSocketAddrs, Resolver},
        transport::{DefaultConnector, NextTimeout},
    },
};

use super::{address::DaemonAddress, address::Scheme, http_config::TlsConfig};

#[derive(Debug, thiserror::Error)]
pub enum TlsSetupError {
    #[error("--http.config.file {config}: cannot use tls_config.{key} {source_name}: {reason}")]
    Pem {
        config: String,
        key: &'static str,
        source_name: String,
        reason: String,
    },
    #[error(
        "no CA certificates in the system store ({errors}): install ca-certificates, or set tls_config.ca_file in --http.config.file"
    )]
    NoSystemRoots { errors: String },
    #[error(
        "--http.config.file {config}: the client certificate {cert} and key {key} do not belong together ({reason}): set cert_file and key_file to a matching pair"
    )]
    Mismatch {
        config: String,
        cert: String,
        key: String,
        reason: String,
    },
}

/// A PEM source: the file or the inline value.
fn pem_source(
    file: Option<&Path>,
    inline: Option<&str>,
    key: &'static str,
    config: &Path,
) -> Result<Option<(Vec<u8>, String)>, TlsSetupError> {
    match (file, inline) {
        (Some(f), _) => std::fs::read(f)
            .map(|bytes| Some((bytes, f.display().to_string())))
            .map_err(|e| TlsSetupError::Pem {
                config: config.display().to_string(),
                key,
                source_name: f.display().to_string(),
                reason: e.to_string(),
            }),
        (None, Some(text)) => Ok(Some((text.as_bytes().to_vec(), "(inline)".to_owned()))),
        (None, None) => Ok(None),
    }
}

/// ureq's TLS settings from tls_config: the CA (or the system's CA certificates), the
/// client certificate, verification on or off. `https`: whether TLS will be used at all
/// (plain HTTP needs no roots, so a host without a CA store can still use it).
pub fn ureq_tls_config(
    t: &TlsConfig,
    config: &Path,
    https: bool,
) -> Result<ureq::tls::TlsConfig, TlsSetupError> {
    let pem_err = |key, source_name: &str, reason: String| TlsSetupError::Pem {
        config: config.display().to_string(),
        key,
        source_name: source_name.to_owned(),
        reason,
    };
    let mut builder = ureq::tls::TlsConfig::builder()
        .unversioned_rustls_crypto_provider(Arc::new(rustls::crypto::ring::default_provider()))
        .disable_verification(t.insecure_skip_verify);
    let ca_key = if t.ca_file.is_some() { "ca_file" } else { "ca" };
    if let Some((pem, name)) = pem_source(t.ca_file.as_deref(), t.ca.as_deref(), ca_key, config)? {
        let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(&pem)
            .collect::<Result<_, _>>()
            .map_err(|e| pem_err(ca_key, &name, e.to_string()))?;
        // ureq skips certificates it cannot use as roots: check here, where the file
        // can still be named.
        let (usable, _) = RootCertStore::empty().add_parsable_certificates(certs.clone());
        if usable == 0 {
            return Err(pem_err(
                ca_key,
                &name,
                "no usable PEM certificate".to_owned(),
            ));
        }
        let roots = certs.iter().map(|c| Certificate::from_der(c).to_owned());
        builder = builder.root_certs(RootCerts::Specific(Arc::new(roots.collect())));
    } else if https && !t.insecure_skip_verify {
        builder = builder.root_certs(system_roots()?);
    }
    let cert_key = if t.cert_file.is_some() {
        "cert_file"
    } else {
        "cert"
    };
    let key_key = if t.key_file.is_some() {
        "key_file"
    } else {
        "key"
    };
    let cert = pem_source(t.cert_file.as_deref(), t.cert.as_deref(), cert_key, config)?;
    let key = pem_source(t.key_file.as_deref(), t.key.as_deref(), key_key, config)?;
    if let (Some((cert_pem, cert_name)), Some((key_pem, key_name))) = (cert, key) {
        let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(&cert_pem)
            .collect::<Result<_, _>>()
            .map_err(|e| pem_err(cert_key, &cert_name, e.to_string()))?;
        if chain.is_empty() {
            return Err(pem_err(
                cert_key,
                &cert_name,
                "no PEM certificate".to_owned(),
            ));
        }
        let key = PrivateKeyDer::from_pem_slice(&key_pem)
            .map_err(|e| pem_err(key_key, &key_name, e.to_string()))?;
        // ureq would panic on a key that does not fit the certificate; rustls says why.
        let provider = rustls::crypto::ring::default_provider();
        CertifiedKey::from_der(chain.clone(), key.clone_key(), &provider).map_err(|e| {
            TlsSetupError::Mismatch {
                config: config.display().to_string(),
                cert: cert_name.clone(),
                key: key_name.clone(),
                reason: e.to_string(),
            }
        })?;
        let certs: Vec<Certificate<'static>> = chain
            .iter()
            .map(|c| Certificate::from_der(c).to_owned())
            .collect();
        let private = PrivateKey::from_pem(&key_pem)
            .map_err(|e| pem_err(key_key, &key_name, e.to_string()))?;
        builder = builder.client_cert(Some(ClientCert::new_with_certs(&certs, private)));
    }
    Ok(builder.build())
}

/// The system's CA certificates (SSL_CERT_FILE and SSL_CERT_DIR honoured), as Prometheus
/// uses when tls_config names no CA.
fn system_roots() -> Result<RootCerts, TlsSetupError> {
    let found = rustls_native_certs::load_native_certs();
    if found.certs.is_empty() {
        let errors: Vec<String> = found.errors.iter().map(ToString::to_string).collect();
        return Err(TlsSetupError::NoSystemRoots {
            errors: errors.join("; "),
        });
    }
    let roots = found
        .certs
        .iter()
        .map(|c| Certificate::from_der(c).to_owned());
    Ok(RootCerts::Specific(Arc::new(roots.collect())))
}

/// Resolves every URL to the addresses of --web.address's host: with
/// tls_config.server_name the URL names the server name (which rustls sends and checks),
/// while the connection goes where --web.address says.
#[derive(Debug)]
struct Pinned(Vec<SocketAddr>);

impl Resolver for Pinned {
    fn resolve(
        &self,
        _uri: &Uri,
        _config: &Config,
        _timeout: NextTimeout,
    ) -> Result<ResolvedSocketAddrs, ureq::Error> {
        let mut addrs = self.empty();
        // ureq keeps at most 16 addresses.
        for a in self.0.iter().take(16) {
            addrs.push(*a);
        }
        Ok(addrs)
    }
}

/// An agent that connects to `host`:`port` whatever host the URL names.
pub fn pinned_agent(config: Config, host: &str, port: u16) -> io::Result<Agent> {
    let addrs: Vec<SocketAddr> = (host, port).to_socket_addrs()?.collect();
    if addrs.is_empty() {
        return Err(io::Error::new(
            io::ErrorKind::NotFound,
            "resolves to no address",
        ));
    }
    Ok(Agent::with_parts(
        config,
        DefaultConnector::new(),
        Pinned(addrs),
    ))
}

/// What the operator configured, to explain failures with it.
#[derive(Debug)]
pub struct Explain {
    config_file: String,
    ca: Option<String>,
    client_cert: Option<String>,
}

impl Explain {
    pub fn new(t: &TlsConfig, config: &Path) -> Explain {
        let shown = |file: &Option<std::path::PathBuf>, inline: &Option<String>, key: &str| match (
            file, inline,
        ) {
            (Some(f), _) => Some(f.display().to_string()),
            (None, Some(_)) => Some(format!("tls_config.{key}")),
            (None, None) => None,
        };
        Explain {
            config_file: config.display().to_string(),
            ca: shown(&t.ca_file, &t.ca, "ca"),
            client_cert: shown(&t.cert_file, &t.cert, "cert"),
        }
    }

    pub fn config_file(&self) -> &str {
        &self.config_file
    }

    /// Why a request failed, and what to change.
    pub fn request_error(&self, e: &ureq::Error, address: &DaemonAddress) -> String {
        match e {
            ureq::Error::Rustls(t) => self.tls_problem(t, address),
            ureq::Error::Io(io) => match rustls_error(io) {
                Some(t) => self.tls_problem(t, address),
                None => io_problem(io, address),
            },
            ureq::Error::Timeout(t) => format!(
                "no answer in time ({t}): is the daemon reachable there? check --web.address"
            ),
            ureq::Error::HostNotFound => "cannot resolve the host: check --web.address".to_owned(),
            ureq::Error::Protocol(p) if address.scheme == Scheme::Http => format!(
                "the answer is not HTTP ({p}): if the daemon serves TLS (tls_server_config in its --web.config.file), use https:// in --web.address"
            ),
            other => other.to_string(),
        }
    }

    fn tls_problem(&self, t: &rustls::Error, address: &DaemonAddress) -> String {
        match t {
            rustls::Error::InvalidCertificate(CertificateError::UnknownIssuer) => match &self.ca {
                Some(ca) => format!(
                    "TLS: the daemon's certificate is not signed by the CA in {ca} (unknown authority): set tls_config.ca_file to the CA that signed it"
                ),
                None => "TLS: the daemon's certificate is signed by an unknown authority: pass that CA as tls_config.ca_file in --http.config.file (or insecure_skip_verify: true to skip the check)".to_owned(),
            },
            rustls::Error::InvalidCertificate(
                CertificateError::NotValidForName | CertificateError::NotValidForNameContext { .. },
            ) => format!(
                "TLS: the daemon's certificate is not valid for {} ({t}): use a name it carries in --web.address, or set tls_config.server_name",
                address.host
            ),
            rustls::Error::InvalidCertificate(_) => {
                format!("TLS: the daemon's certificate was refused ({t})")
            }
            rustls::Error::AlertReceived(alert) => match &self.client_cert {
                Some(cert) => format!(
                    "TLS: the daemon refused the handshake ({alert:?}): it did not accept the client certificate {cert}; is it signed by the daemon's client_ca_file?"
                ),
                None => format!(
                    "TLS: the daemon refused the handshake ({alert:?}): if it requires client certificates (client_auth_type in its --web.config.file), set tls_config.cert_file and key_file in --http.config.file"
                ),
            },
            rustls::Error::InvalidMessage(_) => format!(
                "TLS: the daemon did not answer TLS ({t}): if it serves plain HTTP, use http:// in --web.address"
            ),
            other => format!("TLS: {other}"),
        }
    }
}

/// The rustls error inside an I/O error, if that is what it is.
fn rustls_error(io: &io::Error) -> Option<&rustls::Error> {
    let mut inner: Option<&(dyn std::error::Error + 'static)> = io
        .get_ref()
        .map(|e| e as &(dyn std::error::Error + 'static));
    while let Some(e) = inner {
        if let Some(t) = e.downcast_ref::<rustls::Error>() {
            return Some(t);
        }
        inner = e.source();
    }
    None
}

fn io_problem(io: &io::Error, address: &DaemonAddress) -> String {
    match io.kind() {
        io::ErrorKind::ConnectionRefused => "connection refused: is keepalive-daemon running there? pass --web.address with the address it serves on (its --web.listen-address)".to_owned(),
        io::ErrorKind::UnexpectedEof | io::ErrorKind::ConnectionReset
            if address.scheme == Scheme::Http =>
        {
            format!(
                "the daemon closed the connection without an HTTP answer ({io}): if it serves TLS (tls_server_config in its --web.config.file), use https:// in --web.address"
            )
        }
        // A server that speaks no TLS drops the ClientHello.
        io::ErrorKind::UnexpectedEof | io::ErrorKind::ConnectionReset => format!(
            "the daemon closed the connection without a TLS answer ({io}): if it serves plain HTTP (no tls_server_config in its --web.config.file), use http:// in --web.address"
        ),
        _ => io.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn address(s: &str) -> DaemonAddress {
        DaemonAddress::parse(s).unwrap()
    }

    #[test]
    fn tls_failures_name_the_setting_to_change() {
        let mut t = TlsConfig::default();
        let none = Explain::new(&t, Path::new("/h.yml"));
        t.ca_file = Some("/etc/k/ca.crt".into());
        t.cert_file = Some("/etc/k/client.crt".into());
        let with = Explain::new(&t, Path::new("/h.yml"));
        let a = address("https://127.0.0.1:10291");
        let unknown = rustls::Error::InvalidCertificate(CertificateError::UnknownIssuer);
        assert!(
            none.tls_problem(&unknown, &a)
                .contains("unknown authority: pass that CA as tls_config.ca_file")
        );
        assert!(
            with.tls_problem(&unknown, &a)
                .contains("not signed by the CA in /etc/k/ca.crt")
        );
        let name = rustls::Error::InvalidCertificate(CertificateError::NotValidForName);
        assert!(
            none.tls_problem(&name, &a)
                .contains("not valid for 127.0.0.1")
        );
        let alert = rustls::Error::AlertReceived(rustls::AlertDescription::CertificateRequired);
        assert!(
            none.tls_problem(&alert, &a)
                .contains("set tls_config.cert_file and key_file")
        );
        assert!(
            with.tls_problem(&alert, &a)
                .contains("did not accept the client certificate /etc/k/client.crt")
        );
        let wrapped = io::Error::new(io::ErrorKind::InvalidData, unknown);
        assert!(
            none.request_error(&ureq::Error::Io(wrapped), &a)
                .contains("unknown authority")
        );
        let eof = || ureq::Error::Io(io::Error::from(io::ErrorKind::UnexpectedEof));
        assert!(
            none.request_error(&eof(), &a)
                .contains("use http:// in --web.address")
        );
        let plain = address("127.0.0.1:10291");
        assert!(
            none.request_error(&eof(), &plain)
                .contains("use https:// in --web.address")
        );
        let refused = io::Error::from(io::ErrorKind::ConnectionRefused);
        assert!(
            none.request_error(&ureq::Error::Io(refused), &a)
                .contains("is keepalive-daemon running there? pass --web.address")
        );
    }

    #[test]
    fn unusable_files_are_named() {
        let dir = std::env::temp_dir().join(format!("kat-clienttls-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let junk = dir.join("junk.pem");
        std::fs::write(&junk, "not a certificate\n").unwrap();
        let mut t = TlsConfig::default();
        t.ca_file = Some(junk.clone());
        let e = ureq_tls_config(&t, Path::new("/h.yml"), true)
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("tls_config.ca_file") && e.contains("junk.pem"),
            "{e}"
        );
        t.ca_file = Some(dir.join("missing.pem"));
        let e = ureq_tls_config(&t, Path::new("/h.yml"), true)
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("missing.pem") && e.contains("No such file"),
            "{e}"
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }
}

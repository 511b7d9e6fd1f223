//! `--web.config.file`: the subset of Prometheus' exporter-toolkit web configuration
//! that operators already write for node_exporter: TLS (optionally requiring client
//! certificates from a CA) and basic-auth users with bcrypt hashes.

use std::{collections::BTreeMap, path::Path, sync::Arc};

use rustls::{
    RootCertStore, ServerConfig,
    server::{WebPkiClientVerifier, danger::ClientCertVerifier},
};
use rustls_pki_types::{CertificateDer, PrivateKeyDer, pem::PemObject as _};
use serde::Deserialize;

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WebConfig {
    pub tls_server_config: Option<TlsServerConfig>,
    /// User name -> bcrypt hash.
    #[serde(default)]
    pub basic_auth_users: BTreeMap<String, String>,
    #[serde(default)]
    pub http_server_config: HttpServerConfig,
}

/// exporter-toolkit's http_server_config: HTTP/2 on or off (default on) and response
/// headers added to every answer.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HttpServerConfig {
    #[serde(default = "http2_default")]
    pub http2: bool,
    #[serde(default)]
    pub headers: BTreeMap<String, String>,
}

impl Default for HttpServerConfig {
    fn default() -> Self {
        HttpServerConfig {
            http2: http2_default(),
            headers: BTreeMap::new(),
        }
    }
}

fn http2_default() -> bool {
    true
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TlsServerConfig {
    pub cert_file: String,
    pub key_file: String,
    pub client_ca_file: Option<String>,
    /// NoClientCert (default), RequireAnyClientCert is not supported; with a CA file:
    /// VerifyClientCertIfGiven or RequireAndVerifyClientCert (the default then).
    pub client_auth_type: Option<String>,
}

#[derive(Debug, thiserror::Error)]
pub enum WebConfigError {
    #[error("cannot read --web.config.file {path}: {source}")]
    Read {
        path: String,
        source: std::io::Error,
    },
    #[error("invalid --web.config.file {path}: {source}")]
    Parse {
        path: String,
        source: serde_norway::Error,
    },
    #[error("TLS {what} {file}: {reason}")]
    Tls {
        what: &'static str,
        file: String,
        reason: String,
    },
    #[error(
        "client_auth_type {value:?} is not supported: use NoClientCert, VerifyClientCertIfGiven or RequireAndVerifyClientCert (the last two need client_ca_file)"
    )]
    ClientAuth { value: String },
    #[error("basic_auth_users: the hash of user {user:?} is not a bcrypt hash ($2a$/$2b$/$2y$)")]
    Hash { user: String },
}

impl WebConfig {
    pub fn load(path: &Path) -> Result<WebConfig, WebConfigError> {
        let p = path.display().to_string();
        let text = std::fs::read_to_string(path).map_err(|source| WebConfigError::Read {
            path: p.clone(),
            source,
        })?;
        let config: WebConfig = if text.trim().is_empty() {
            WebConfig::default()
        } else {
            serde_norway::from_str(&text)
                .map_err(|source| WebConfigError::Parse { path: p, source })?
        };
        for (user, hash) in &config.basic_auth_users {
            if !["$2a$", "$2b$", "$2y$"].iter().any(|v| hash.starts_with(v)) {
                return Err(WebConfigError::Hash { user: user.clone() });
            }
        }
        Ok(config)
    }

    /// The TLS server configuration, if TLS is configured.
    pub fn tls(&self) -> Result<Option<Arc<ServerConfig>>, WebConfigError> {
        let Some(t) = &self.tls_server_config else {
            return Ok(None);
        };
        let tls_err = |what, file: &str, reason: String| WebConfigError::Tls {
            what,
            file: file.to_owned(),
            reason,
        };
        let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(&t.cert_file)
            .and_then(|it| it.collect::<Result<_, _>>())
            .map_err(|e| tls_err("certificate", &t.cert_file, e.to_string()))?;
        if certs.is_empty() {
            return Err(tls_err(
                "certificate",
                &t.cert_file,
                "no PEM certificate in it".into(),
            ));
        }
        let key = PrivateKeyDer::from_pem_file(&t.key_file)
            .map_err(|e| tls_err("key", &t.key_file, e.to_string()))?;
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let builder = ServerConfig::builder_with_provider(provider.clone())
            .with_safe_default_protocol_versions()
            .map_err(|e| tls_err("setup", &t.cert_file, e.to_string()))?;
        let value = t
            .client_auth_type
            .as_deref()
            .unwrap_or(if t.client_ca_file.is_some() {
                "RequireAndVerifyClientCert"
            } else {
                "NoClientCert"
            });
        let unsupported = || WebConfigError::ClientAuth {
            value: value.to_owned(),
        };
        let mode = ClientAuth::parse(value).ok_or_else(unsupported)?;
        let config = match (mode, &t.client_ca_file) {
            (ClientAuth::NoClientCert, _) => builder.with_no_client_auth(),
            // Verifying client certificates needs the CA to verify them with.
            (_, None) => return Err(unsupported()),
            (_, Some(ca)) => {
                let optional = mode == ClientAuth::VerifyClientCertIfGiven;
                builder.with_client_cert_verifier(client_verifier(ca, optional, provider)?)
            }
        };
        let config = config
            .with_single_cert(certs, key)
            .map_err(|e| tls_err("certificate/key pair", &t.cert_file, e.to_string()))?;
        Ok(Some(Arc::new(config)))
    }
}

/// The client_auth_type values of exporter-toolkit the daemon supports.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum ClientAuth {
    NoClientCert,
    VerifyClientCertIfGiven,
    RequireAndVerifyClientCert,
}

impl ClientAuth {
    fn parse(value: &str) -> Option<ClientAuth> {
        match value {
            "NoClientCert" => Some(ClientAuth::NoClientCert),
            "VerifyClientCertIfGiven" => Some(ClientAuth::VerifyClientCertIfGiven),
            "RequireAndVerifyClientCert" => Some(ClientAuth::RequireAndVerifyClientCert),
            _ => None,
        }
    }
}

/// Verifies client certificates against the CAs in `ca`; `optional`: clients without
/// a certificate are let through (VerifyClientCertIfGiven).
fn client_verifier(
    ca: &str,
    optional: bool,
    provider: Arc<rustls::crypto::CryptoProvider>,
) -> Result<Arc<dyn ClientCertVerifier>, WebConfigError> {
    let ca_err = |e: &dyn std::fmt::Display| WebConfigError::Tls {
        what: "client CA",
        file: ca.to_owned(),
        reason: e.to_string(),
    };
    let mut roots = RootCertStore::empty();
    for cert in CertificateDer::pem_file_iter(ca).map_err(|e| ca_err(&e))? {
        let cert = cert.map_err(|e| ca_err(&e))?;
        roots.add(cert).map_err(|e| ca_err(&e))?;
    }
    let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider);
    let verifier = if optional {
        verifier.allow_unauthenticated()
    } else {
        verifier
    };
    verifier.build().map_err(|e| ca_err(&e))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn config_files_parse_and_reject_mistakes() {
        let dir = std::env::temp_dir().join(format!("ka-webcfg-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let write = |name: &str, text: &str| {
            let p = dir.join(name);
            std::fs::write(&p, text).unwrap();
            p
        };
        let ok = write(
            "ok.yml",
            "basic_auth_users:\n  alice: $2y$10$abcdefghijklmnopqrstuuFakeFakeFakeFakeFakeFakeFakeFakeF\n",
        );
        let c = WebConfig::load(&ok).unwrap();
        assert_eq!(c.basic_auth_users.len(), 1);
        assert!(c.tls().unwrap().is_none());
        let bad_key = write(
            "bad.yml",
            "tls_server_config:\n  cert_file: a\n  key_file: b\n  ciphers: x\n",
        );
        assert!(matches!(
            WebConfig::load(&bad_key),
            Err(WebConfigError::Parse { .. })
        ));
        let plain = write("plain.yml", "basic_auth_users:\n  bob: hunter2\n");
        assert!(matches!(
            WebConfig::load(&plain),
            Err(WebConfigError::Hash { .. })
        ));
        let missing = write(
            "missing.yml",
            "tls_server_config:\n  cert_file: /nonexistent.crt\n  key_file: /nonexistent.key\n",
        );
        let err = WebConfig::load(&missing)
            .unwrap()
            .tls()
            .unwrap_err()
            .to_string();
        assert!(err.contains("/nonexistent.crt"), "{err}");
        assert!(WebConfig::load(&dir.join("nope.yml")).is_err());
        std::fs::remove_dir_all(&dir).unwrap();
    }
}

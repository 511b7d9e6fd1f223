//! `--web.config.file`: Prometheus exporter-toolkit's web configuration, so that the
//! file an operator already wrote for node_exporter works here: TLS (versions, cipher
//! suites, curves, every client_auth_type, client_allowed_sans, inline or file
//! certificates re-read when they change), http_server_config (http2, headers) and
//! basic-auth users with bcrypt hashes. Unknown keys are an error at every level.
//!
//! Where rustls cannot do what Go's crypto/tls does (TLS 1.0/1.1, CBC and RSA-kex
//! cipher suites, P-521), loading fails with an error naming the key and the value.

mod cert_reload;
mod client_auth;
mod tls;

use std::{
    collections::BTreeMap,
    path::{Path, PathBuf},
    sync::Arc,
};

use rustls::ServerConfig;
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

/// exporter-toolkit's http_server_config: HTTP/2 on or off (default on; offered by
/// ALPN) and response headers added to every answer.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HttpServerConfig {
    #[serde(default = "yes")]
    pub http2: bool,
    #[serde(default)]
    pub headers: BTreeMap<String, String>,
}

impl Default for HttpServerConfig {
    fn default() -> Self {
        HttpServerConfig {
            http2: yes(),
            headers: BTreeMap::new(),
        }
    }
}

fn yes() -> bool {
    true
}

/// exporter-toolkit's tls_server_config, key for key. The names (versions, suites,
/// curves, client_auth_type) stay strings here and are mapped in `tls.rs`, so that an
/// error can name the key and say what rustls offers instead.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TlsServerConfig {
    /// The server certificate chain as inline PEM (instead of cert_file).
    pub cert: Option<String>,
    /// The server key as inline PEM (instead of key_file).
    pub key: Option<String>,
    /// The client CA certificates as inline PEM (instead of client_ca_file).
    pub client_ca: Option<String>,
    /// Relative paths are relative to the configuration file's directory.
    pub cert_file: Option<PathBuf>,
    pub key_file: Option<PathBuf>,
    pub client_ca_file: Option<PathBuf>,
    /// NoClientCert, RequestClientCert, RequireAnyClientCert (alias RequireClientCert),
    /// VerifyClientCertIfGiven, RequireAndVerifyClientCert.
    pub client_auth_type: Option<String>,
    /// The client certificate must carry one of these SANs (DNS, IP, e-mail, URI).
    pub client_allowed_sans: Option<Vec<String>>,
    /// TLS12 (default) or TLS13; TLS10 and TLS11 are refused (rustls lacks them).
    pub min_version: Option<String>,
    /// TLS13 (default) or TLS12.
    pub max_version: Option<String>,
    /// Go's names of TLS 1.2 suites, in preference order; TLS 1.3 names are
    /// accepted and ignored, as Go does.
    #[serde(default)]
    pub cipher_suites: Vec<String>,
    /// CurveP256, CurveP384, X25519 (CurveP521 is refused: not in ring).
    #[serde(default)]
    pub curve_preferences: Vec<String>,
    #[serde(default = "yes")]
    pub prefer_server_cipher_suites: bool,
}

impl TlsServerConfig {
    /// exporter-toolkit serves TLS when any of these is set; a section with only
    /// version or suite settings leaves plain HTTP.
    fn enabled(&self) -> bool {
        self.cert.is_some()
            || self.key.is_some()
            || self.client_ca.is_some()
            || self.cert_file.is_some()
            || self.key_file.is_some()
            || self.client_ca_file.is_some()
            || self.client_auth_type.is_some()
    }

    /// Relative file names are relative to `dir`, the configuration's directory, as
    /// exporter-toolkit resolves them.
    fn set_directory(&mut self, dir: &Path) {
        for file in [
            &mut self.cert_file,
            &mut self.key_file,
            &mut self.client_ca_file,
        ]
        .into_iter()
        .flatten()
        {
            if file.is_relative() {
                *file = dir.join(&*file);
            }
        }
    }
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
    /// A value this daemon (rustls) cannot apply, or a combination of keys that
    /// exporter-toolkit refuses too.
    #[error("--web.config.file tls_server_config.{key}: {reason}")]
    Setting { key: &'static str, reason: String },
    #[error("--web.config.file http_server_config.headers: {reason}")]
    Header { reason: String },
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
        let mut config: WebConfig = if text.trim().is_empty() {
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
        validate_headers(&config.http_server_config.headers)?;
        if let Some(t) = &mut config.tls_server_config {
            t.set_directory(path.parent().unwrap_or(Path::new(".")));
        }
        Ok(config)
    }

    /// The TLS server configuration, if TLS is configured. Certificates given as files
    /// are re-read when they change on disk (see `cert_reload.rs`).
    pub fn tls(&self) -> Result<Option<Arc<ServerConfig>>, WebConfigError> {
        match &self.tls_server_config {
            Some(t) if t.enabled() => {
                tls::server_config(t, self.http_server_config.http2).map(|c| Some(Arc::new(c)))
            }
            _ => Ok(None),
        }
    }
}

/// The response headers exporter-toolkit lets operators set, with the values allowed
/// where the header is an enumeration (None: any value).
const HEADERS: [(&str, Option<&[&str]>); 5] = [
    ("Strict-Transport-Security", None),
    ("X-Content-Type-Options", Some(&["nosniff"])),
    ("X-Frame-Options", Some(&["deny", "sameorigin"])),
    ("X-XSS-Protection", None),
    ("Content-Security-Policy", None),
];

/// Header names and enumerated values checked as exporter-toolkit checks them (names
/// exact, as written above); values also must not contain control characters, which
/// would corrupt the response.
fn validate_headers(headers: &BTreeMap<String, String>) -> Result<(), WebConfigError> {
    for (name, value) in headers {
        let reason = match HEADERS.iter().find(|(n, _)| n == name) {
            None => Some(format!(
                "header {name:?} can not be configured; allowed: {}",
                HEADERS.map(|(n, _)| n).join(", ")
            )),
            Some((_, Some(allowed))) if !allowed.contains(&value.as_str()) => Some(format!(
                "invalid value {value:?} for {name}: expected one of {allowed:?}"
            )),
            _ if value.chars().any(|c| c.is_control()) => Some(format!(
                "the value of {name} contains a control character (a line break?)"
            )),
            _ => None,
        };
        if let Some(reason) = reason {
            return Err(WebConfigError::Header { reason });
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests;

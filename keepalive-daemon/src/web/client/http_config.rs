//! `connections --http.config.file`: the HTTP client configuration Prometheus and promtool
//! users already write (prometheus/common's HTTPClientConfig YAML), the part that a
//! keepalive-daemon needs: `tls_config` (CA, client certificate, server name, skipping
//! verification) and `basic_auth`. Keys HTTPClientConfig has but this client does not
//! implement are refused by name; any other key is an error too.

use std::path::{Path, PathBuf};

use serde::Deserialize;
use serde::de::IgnoredAny;

/// The whole file. The `Option<IgnoredAny>` fields are HTTPClientConfig keys that are
/// recognised only to be refused with a clear message (see [`HttpClientConfig::load`]).
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HttpClientConfig {
    pub tls_config: Option<TlsConfig>,
    pub basic_auth: Option<BasicAuth>,
    /// Prometheus' default is true; a daemon never redirects, but honour it.
    pub follow_redirects: Option<bool>,
    /// Accepted for compatibility: this client speaks HTTP/1.1, which both values allow.
    pub enable_http2: Option<bool>,
    authorization: Option<IgnoredAny>,
    oauth2: Option<IgnoredAny>,
    bearer_token: Option<IgnoredAny>,
    bearer_token_file: Option<IgnoredAny>,
    proxy_url: Option<IgnoredAny>,
    no_proxy: Option<IgnoredAny>,
    proxy_from_environment: Option<IgnoredAny>,
    proxy_connect_header: Option<IgnoredAny>,
    http_headers: Option<IgnoredAny>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TlsConfig {
    /// CA certificates (PEM) the daemon's certificate must chain to, instead of the
    /// system's CA certificates.
    pub ca_file: Option<PathBuf>,
    /// The same, inline.
    pub ca: Option<String>,
    /// Client certificate (PEM) and its key, for a daemon that asks for one.
    pub cert_file: Option<PathBuf>,
    pub cert: Option<String>,
    pub key_file: Option<PathBuf>,
    pub key: Option<String>,
    /// The name the daemon's certificate must carry, when --web.address names it
    /// otherwise (e.g. by IP address).
    pub server_name: Option<String>,
    #[serde(default)]
    pub insecure_skip_verify: bool,
    ca_ref: Option<IgnoredAny>,
    cert_ref: Option<IgnoredAny>,
    key_ref: Option<IgnoredAny>,
    min_version: Option<IgnoredAny>,
    max_version: Option<IgnoredAny>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BasicAuth {
    pub username: Option<String>,
    pub username_file: Option<PathBuf>,
    pub password: Option<String>,
    pub password_file: Option<PathBuf>,
    username_ref: Option<IgnoredAny>,
    password_ref: Option<IgnoredAny>,
}

/// Basic-auth credentials, read from the file or the files it names.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Credentials {
    pub username: String,
    pub password: String,
}

#[derive(Debug, thiserror::Error)]
pub enum HttpConfigError {
    #[error("cannot read --http.config.file {path}: {source}")]
    Read {
        path: String,
        source: std::io::Error,
    },
    // The parser's message names the unknown key and lists the accepted ones.
    #[error("invalid --http.config.file {path}: {reason}")]
    Parse { path: String, reason: String },
    #[error(
        "--http.config.file {path}: {keys} not supported by keepalive-daemon connections (it supports tls_config: ca_file, ca, cert_file, cert, key_file, key, server_name, insecure_skip_verify; basic_auth: username, username_file, password, password_file; follow_redirects; enable_http2)"
    )]
    Unsupported { path: String, keys: String },
    #[error("--http.config.file {path}: {problem}")]
    Conflict { path: String, problem: &'static str },
    #[error("--http.config.file {path}: cannot read {what} {file}: {source}")]
    ReadReferenced {
        path: String,
        what: &'static str,
        file: String,
        source: std::io::Error,
    },
}

/// The one call into the YAML crate: switching crates is this line.
fn from_yaml<T: serde::de::DeserializeOwned>(text: &str) -> Result<T, String> {
    serde_norway::from_str(text).map_err(|e| e.to_string())
}

impl HttpClientConfig {
    /// Reads and checks the file: unknown keys, unsupported keys and contradictions
    /// (two passwords, a certificate without its key) are errors naming them.
    pub fn load(path: &Path) -> Result<HttpClientConfig, HttpConfigError> {
        let p = path.display().to_string();
        let text = std::fs::read_to_string(path).map_err(|source| HttpConfigError::Read {
            path: p.clone(),
            source,
        })?;
        HttpClientConfig::parse(&text, &p)
    }

    /// [`HttpClientConfig::load`] on text; `path` names it in errors.
    pub fn parse(text: &str, path: &str) -> Result<HttpClientConfig, HttpConfigError> {
        let config: HttpClientConfig = if text.trim().is_empty() {
            HttpClientConfig::default()
        } else {
            from_yaml(text).map_err(|reason| HttpConfigError::Parse {
                path: path.to_owned(),
                reason,
            })?
        };
        let unsupported = config.unsupported_keys();
        if !unsupported.is_empty() {
            return Err(HttpConfigError::Unsupported {
                path: path.to_owned(),
                keys: unsupported.join(", "),
            });
        }
        if let Some(problem) = config.conflict() {
            return Err(HttpConfigError::Conflict {
                path: path.to_owned(),
                problem,
            });
        }
        Ok(config)
    }

    /// The keys present that this client does not implement, as `section.key`.
    fn unsupported_keys(&self) -> Vec<&'static str> {
        let mut keys = Vec::new();
        let mut check = |present: bool, key| {
            if present {
                keys.push(key);
            }
        };
        check(self.authorization.is_some(), "authorization");
        check(self.oauth2.is_some(), "oauth2");
        check(self.bearer_token.is_some(), "bearer_token");
        check(self.bearer_token_file.is_some(), "bearer_token_file");
        check(self.proxy_url.is_some(), "proxy_url");
        check(self.no_proxy.is_some(), "no_proxy");
        check(
            self.proxy_from_environment.is_some(),
            "proxy_from_environment",
        );
        check(self.proxy_connect_header.is_some(), "proxy_connect_header");
        check(self.http_headers.is_some(), "http_headers");
        if let Some(t) = &self.tls_config {
            check(t.ca_ref.is_some(), "tls_config.ca_ref");
            check(t.cert_ref.is_some(), "tls_config.cert_ref");
            check(t.key_ref.is_some(), "tls_config.key_ref");
            check(t.min_version.is_some(), "tls_config.min_version");
            check(t.max_version.is_some(), "tls_config.max_version");
        }
        if let Some(b) = &self.basic_auth {
            check(b.username_ref.is_some(), "basic_auth.username_ref");
            check(b.password_ref.is_some(), "basic_auth.password_ref");
        }
        keys
    }

    /// What prometheus/common also refuses: two sources for one value, half a pair.
    fn conflict(&self) -> Option<&'static str> {
        if let Some(t) = &self.tls_config {
            if t.ca.is_some() && t.ca_file.is_some() {
                return Some("tls_config: at most one of ca and ca_file");
            }
            if t.cert.is_some() && t.cert_file.is_some() {
                return Some("tls_config: at most one of cert and cert_file");
            }
            if t.key.is_some() && t.key_file.is_some() {
                return Some("tls_config: at most one of key and key_file");
            }
            let has_cert = t.cert.is_some() || t.cert_file.is_some();
            let has_key = t.key.is_some() || t.key_file.is_some();
            if has_cert != has_key {
                return Some(
                    "tls_config: a client certificate needs both cert_file (or cert) and key_file (or key)",
                );
            }
        }
        if let Some(b) = &self.basic_auth {
            if b.username.is_some() && b.username_file.is_some() {
                return Some("basic_auth: at most one of username and username_file");
            }
            if b.username.is_none() && b.username_file.is_none() {
                return Some("basic_auth: username (or username_file) is required");
            }
            if b.password.is_some() && b.password_file.is_some() {
                return Some("basic_auth: at most one of password and password_file");
            }
        }
        None
    }

    /// The basic-auth credentials, reading username_file and password_file now (like
    /// Prometheus, a trailing newline in those files is not part of the value).
    pub fn credentials(&self, path: &Path) -> Result<Option<Credentials>, HttpConfigError> {
        let Some(b) = &self.basic_auth else {
            return Ok(None);
        };
        let read = |what, file: &Path| {
            std::fs::read_to_string(file)
                .map(|s| s.trim_end_matches(['\r', '\n']).to_owned())
                .map_err(|source| HttpConfigError::ReadReferenced {
                    path: path.display().to_string(),
                    what,
                    file: file.display().to_string(),
                    source,
                })
        };
        let username = match (&b.username, &b.username_file) {
            (Some(u), _) => u.clone(),
            (None, Some(f)) => read("basic_auth.username_file", f)?,
            (None, None) => String::new(),
        };
        let password = match (&b.password, &b.password_file) {
            (Some(p), _) => p.clone(),
            (None, Some(f)) => read("basic_auth.password_file", f)?,
            (None, None) => String::new(),
        };
        Ok(Some(Credentials { username, password }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<HttpClientConfig, String> {
        HttpClientConfig::parse(text, "cfg.yml").map_err(|e| e.to_string())
    }

    #[test]
    fn every_supported_key_is_read() {
        let c = parse(
            "tls_config:\n  ca_file: /ca.crt\n  cert_file: /c.crt\n  key_file: /c.key\n  server_name: kat.test\n  insecure_skip_verify: true\nbasic_auth:\n  username: prometheus\n  password_file: /pw\nfollow_redirects: false\nenable_http2: true\n",
        )
        .unwrap();
        let t = c.tls_config.as_ref().unwrap();
        assert_eq!(t.ca_file.as_deref(), Some(Path::new("/ca.crt")));
        assert_eq!(t.cert_file.as_deref(), Some(Path::new("/c.crt")));
        assert_eq!(t.key_file.as_deref(), Some(Path::new("/c.key")));
        assert_eq!(t.server_name.as_deref(), Some("kat.test"));
        assert!(t.insecure_skip_verify);
        let b = c.basic_auth.as_ref().unwrap();
        assert_eq!(b.username.as_deref(), Some("prometheus"));
        assert_eq!(b.password_file.as_deref(), Some(Path::new("/pw")));
        assert_eq!(c.follow_redirects, Some(false));
        assert_eq!(c.enable_http2, Some(true));

        let c = parse("tls_config:\n  ca: \"-----BEGIN CERTIFICATE-----\"\n  cert: x\n  key: y\nbasic_auth:\n  username_file: /u\n  password: secret\n").unwrap();
        let t = c.tls_config.unwrap();
        assert_eq!(
            (t.ca.as_deref(), t.cert.as_deref(), t.key.as_deref()),
            (Some("-----BEGIN CERTIFICATE-----"), Some("x"), Some("y"))
        );
        assert!(!t.insecure_skip_verify);
        assert_eq!(c.basic_auth.unwrap().password.as_deref(), Some("secret"));
        assert!(parse("").unwrap().tls_config.is_none());
    }

    #[test]
    fn unknown_keys_are_named() {
        for (text, key) in [
            ("tls_confg: {}\n", "tls_confg"),
            ("tls_config:\n  ca_fil: /x\n", "ca_fil"),
            ("basic_auth:\n  username: u\n  passwd: x\n", "passwd"),
        ] {
            let e = parse(text).unwrap_err();
            assert!(
                e.contains(&format!("unknown field `{key}`")) && e.contains("cfg.yml"),
                "{text:?}: {e}"
            );
        }
    }

    #[test]
    fn unsupported_http_client_keys_are_named() {
        let e = parse(
            "oauth2:\n  client_id: x\nauthorization:\n  credentials: y\nproxy_url: http://p:3128\n",
        )
        .unwrap_err();
        assert!(
            e.contains("cfg.yml: authorization, oauth2, proxy_url not supported"),
            "{e}"
        );
        let e = parse(
            "tls_config:\n  min_version: TLS12\nbasic_auth:\n  username: u\n  password_ref: v\n",
        )
        .unwrap_err();
        assert!(
            e.contains("tls_config.min_version, basic_auth.password_ref not supported"),
            "{e}"
        );
        for key in [
            "bearer_token",
            "bearer_token_file",
            "no_proxy",
            "proxy_from_environment",
            "proxy_connect_header",
            "http_headers",
        ] {
            let e = parse(&format!("{key}: x\n")).unwrap_err();
            assert!(e.contains(&format!(": {key} not supported")), "{e}");
        }
    }

    #[test]
    fn contradictions_are_refused() {
        for (text, problem) in [
            (
                "basic_auth:\n  username: u\n  password: p\n  password_file: /f\n",
                "at most one of password and password_file",
            ),
            (
                "basic_auth:\n  password: p\n",
                "username (or username_file) is required",
            ),
            (
                "tls_config:\n  cert_file: /c\n",
                "needs both cert_file (or cert) and key_file",
            ),
            (
                "tls_config:\n  ca: x\n  ca_file: /y\n",
                "at most one of ca and ca_file",
            ),
        ] {
            let e = parse(text).unwrap_err();
            assert!(e.contains(problem), "{text:?}: {e}");
        }
    }

    #[test]
    fn credentials_come_from_the_files_without_the_newline() {
        let dir = std::env::temp_dir().join(format!("kat-httpcfg-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let pw = dir.join("pw");
        std::fs::write(&pw, "s3cret\n").unwrap();
        let c = parse(&format!(
            "basic_auth:\n  username: prometheus\n  password_file: {}\n",
            pw.display()
        ))
        .unwrap();
        let creds = c.credentials(Path::new("cfg.yml")).unwrap().unwrap();
        assert_eq!(
            creds,
            Credentials {
                username: "prometheus".into(),
                password: "s3cret".into()
            }
        );
        std::fs::remove_file(&pw).unwrap();
        let e = c.credentials(Path::new("cfg.yml")).unwrap_err().to_string();
        assert!(
            e.contains("cannot read basic_auth.password_file") && e.contains("pw"),
            "{e}"
        );
        std::fs::remove_dir_all(&dir).unwrap();
        assert_eq!(
            parse("").unwrap().credentials(Path::new("x")).unwrap(),
            None
        );
    }
}

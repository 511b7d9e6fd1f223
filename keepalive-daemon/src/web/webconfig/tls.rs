//! The rustls `ServerConfig` for a tls_server_config: exporter-toolkit's names (those
//! of Go's crypto/tls) for TLS versions, cipher suites and curves mapped to rustls with
//! the ring provider, and the cases rustls cannot do turned into errors that name the
//! key, the value and what to write instead.

use std::{path::PathBuf, sync::Arc};

use rustls::{
    ServerConfig, SupportedCipherSuite, SupportedProtocolVersion,
    crypto::{CryptoProvider, SupportedKxGroup, ring},
};

use super::{TlsServerConfig, WebConfigError, cert_reload::ReloadingCert, client_auth};

/// PEM given inline in the configuration or as a file name.
#[derive(Debug, Clone)]
pub(super) enum Pem {
    Inline(String),
    File(PathBuf),
}

impl Pem {
    /// `inline` (e.g. `cert`) or `file` (e.g. `cert_file`); both at once is refused, as
    /// exporter-toolkit's documentation asks for one of them.
    pub(super) fn choose(
        inline: &Option<String>,
        file: &Option<PathBuf>,
        names: (&'static str, &'static str),
    ) -> Result<Option<Pem>, WebConfigError> {
        match (inline, file) {
            (Some(_), Some(_)) => Err(WebConfigError::Setting {
                key: names.1,
                reason: format!(
                    "give either {} (inline PEM) or {}, not both",
                    names.0, names.1
                ),
            }),
            (Some(text), None) => Ok(Some(Pem::Inline(text.clone()))),
            (None, Some(path)) => Ok(Some(Pem::File(path.clone()))),
            (None, None) => Ok(None),
        }
    }

    /// The PEM text, or an error naming the file.
    pub(super) fn read(&self, what: &'static str) -> Result<Vec<u8>, WebConfigError> {
        match self {
            Pem::Inline(text) => Ok(text.as_bytes().to_vec()),
            Pem::File(path) => std::fs::read(path).map_err(|e| WebConfigError::Tls {
                what,
                file: path.display().to_string(),
                reason: e.to_string(),
            }),
        }
    }

    /// The file name, or where in the configuration the PEM is, for messages.
    pub(super) fn describe(&self, inline_key: &str) -> String {
        match self {
            Pem::Inline(_) => format!("(inline {inline_key})"),
            Pem::File(path) => path.display().to_string(),
        }
    }
}

/// The server configuration: versions, suites, curves, the certificate (re-read when
/// its files change), client authentication, server-side suite order and ALPN.
pub(super) fn server_config(
    t: &TlsServerConfig,
    http2: bool,
) -> Result<ServerConfig, WebConfigError> {
    let versions = versions(t.min_version.as_deref(), t.max_version.as_deref())?;
    let provider = Arc::new(provider(&t.cipher_suites, &t.curve_preferences)?);
    let missing = |key, reason: &str| WebConfigError::Setting {
        key,
        reason: reason.to_owned(),
    };
    let cert = Pem::choose(&t.cert, &t.cert_file, ("cert", "cert_file"))?
        .ok_or_else(|| missing("cert_file", "missing: give one of cert or cert_file"))?;
    let key = Pem::choose(&t.key, &t.key_file, ("key", "key_file"))?
        .ok_or_else(|| missing("key_file", "missing: give one of key or key_file"))?;
    let resolver = ReloadingCert::new(cert, key, provider.clone())?;
    let verifier = client_auth::verifier(t, &provider)?;
    let builder = ServerConfig::builder_with_provider(provider)
        .with_protocol_versions(&versions)
        .map_err(|e| WebConfigError::Setting {
            key: "cipher_suites",
            reason: format!("no cipher suite is left for the TLS versions allowed: {e}"),
        })?;
    let builder = match verifier {
        None => builder.with_no_client_auth(),
        Some(v) => builder.with_client_cert_verifier(v),
    };
    let mut config = builder.with_cert_resolver(Arc::new(resolver));
    // rustls follows the client's order unless told otherwise; exporter-toolkit's
    // default (true) is the server's order, that of cipher_suites.
    config.ignore_client_order = t.prefer_server_cipher_suites;
    config.alpn_protocols = if http2 {
        vec![b"h2".to_vec(), b"http/1.1".to_vec()]
    } else {
        vec![b"http/1.1".to_vec()]
    };
    Ok(config)
}

/// TLS versions from min_version (default TLS12) to max_version (default TLS13).
pub(super) fn versions(
    min: Option<&str>,
    max: Option<&str>,
) -> Result<Vec<&'static SupportedProtocolVersion>, WebConfigError> {
    let min_v = version("min_version", min.unwrap_or("TLS12"))?;
    let max_v = version("max_version", max.unwrap_or("TLS13"))?;
    if min_v > max_v {
        return Err(WebConfigError::Setting {
            key: "min_version",
            reason: format!(
                "{} is above max_version {}",
                min.unwrap_or("TLS12"),
                max.unwrap_or("TLS13")
            ),
        });
    }
    let all = [(12, &rustls::version::TLS12), (13, &rustls::version::TLS13)];
    Ok(all
        .into_iter()
        .filter(|(v, _)| (min_v..=max_v).contains(v))
        .map(|(_, version)| version)
        .collect())
}

/// 12 or 13 for exporter-toolkit's version names.
fn version(key: &'static str, name: &str) -> Result<u8, WebConfigError> {
    let reason = match name {
        "TLS12" => return Ok(12),
        "TLS13" => return Ok(13),
        "TLS10" | "TLS11" => format!(
            "{name} is not supported: rustls implements only TLS 1.2 and 1.3; use TLS12 or TLS13"
        ),
        _ => format!("unknown TLS version {name:?}: use TLS12 or TLS13"),
    };
    Err(WebConfigError::Setting { key, reason })
}

/// ring's provider with the configured TLS 1.2 suites (TLS 1.3's are always all on:
/// Go ignores cipher_suites for TLS 1.3) and key-exchange groups.
pub(super) fn provider(
    suites: &[String],
    curves: &[String],
) -> Result<CryptoProvider, WebConfigError> {
    let mut provider = ring::default_provider();
    if !suites.is_empty() {
        let tls13 = ring::DEFAULT_CIPHER_SUITES
            .iter()
            .filter(|s| s.version() == &rustls::version::TLS13)
            .copied();
        let mut tls12 = Vec::new();
        for name in suites {
            if let Some(suite) = cipher_suite(name)? {
                tls12.push(suite);
            }
        }
        provider.cipher_suites = tls13.chain(tls12).collect();
    }
    if !curves.is_empty() {
        provider.kx_groups = curves
            .iter()
            .map(|name| curve(name))
            .collect::<Result<_, _>>()?;
    }
    Ok(provider)
}

/// Go's TLS 1.2 suites that rustls does not implement (CBC, RSA key exchange): named
/// so that the error can say rustls lacks them rather than that they do not exist.
const GO_ONLY_SUITES: [&str; 8] = [
    "TLS_RSA_WITH_AES_128_CBC_SHA",
    "TLS_RSA_WITH_AES_256_CBC_SHA",
    "TLS_RSA_WITH_AES_128_GCM_SHA256",
    "TLS_RSA_WITH_AES_256_GCM_SHA384",
    "TLS_ECDHE_ECDSA_WITH_AES_128_CBC_SHA",
    "TLS_ECDHE_ECDSA_WITH_AES_256_CBC_SHA",
    "TLS_ECDHE_RSA_WITH_AES_128_CBC_SHA",
    "TLS_ECDHE_RSA_WITH_AES_256_CBC_SHA",
];

const SUPPORTED_SUITES: &str =
    "TLS_ECDHE_{ECDSA,RSA}_WITH_{AES_128_GCM_SHA256,AES_256_GCM_SHA384,CHACHA20_POLY1305_SHA256}";

/// The rustls suite for a Go cipher suite name; `None` for the TLS 1.3 names, which
/// Go accepts and ignores.
fn cipher_suite(name: &str) -> Result<Option<SupportedCipherSuite>, WebConfigError> {
    use ring::cipher_suite as cs;
    let suite = match name {
        "TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256" => cs::TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256,
        "TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384" => cs::TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384,
        "TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256" => {
            cs::TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256
        }
        "TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256" => cs::TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256,
        "TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384" => cs::TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384,
        "TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256" => {
            cs::TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256
        }
        "TLS_AES_128_GCM_SHA256" | "TLS_AES_256_GCM_SHA384" | "TLS_CHACHA20_POLY1305_SHA256" => {
            return Ok(None);
        }
        _ => {
            let reason = if GO_ONLY_SUITES.contains(&name) {
                format!("{name} is not supported by rustls; use {SUPPORTED_SUITES}")
            } else {
                format!("unknown cipher suite {name:?}; use {SUPPORTED_SUITES}")
            };
            return Err(WebConfigError::Setting {
                key: "cipher_suites",
                reason,
            });
        }
    };
    Ok(Some(suite))
}

/// The key-exchange group for exporter-toolkit's curve names.
fn curve(name: &str) -> Result<&'static dyn SupportedKxGroup, WebConfigError> {
    use ring::kx_group;
    let reason = match name {
        "CurveP256" => return Ok(kx_group::SECP256R1),
        "CurveP384" => return Ok(kx_group::SECP384R1),
        "X25519" => return Ok(kx_group::X25519),
        "CurveP521" => "CurveP521 is not supported: ring, rustls' crypto provider here, \
                        lacks P-521; use CurveP256, CurveP384 or X25519"
            .to_owned(),
        _ => format!("unknown curve {name:?}: use CurveP256, CurveP384 or X25519"),
    };
    Err(WebConfigError::Setting {
        key: "curve_preferences",
        reason,
    })
}

//! `keepalive-daemon connections`: GET /connections from a running daemon over HTTP or
//! HTTPS (ureq with rustls), with the TLS and basic-auth settings of a Prometheus HTTP
//! client configuration, and the text to print: the table or the daemon's JSON. Every
//! error says what the operator can change.

mod address;
mod http_config;
mod tls;

use std::{path::Path, time::Duration};

pub use address::{AddressError, DaemonAddress, Scheme};
pub use http_config::{Credentials, HttpClientConfig, HttpConfigError};
pub use tls::TlsSetupError;
use ureq::Agent;

use crate::{cli::ConnectionsArgs, exporter::connections::Listing};

const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// The whole request; the daemon caps a listing at 10,000 connections.
const TOTAL_TIMEOUT: Duration = Duration::from_secs(30);
/// A listing of 10,000 connections is about 4 MiB of JSON.
const MAX_BODY_BYTES: u64 = 64 << 20;

/// Why the daemon's connections could not be fetched or shown.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error(transparent)]
    Address(#[from] AddressError),
    #[error(transparent)]
    Config(#[from] HttpConfigError),
    #[error(transparent)]
    Tls(#[from] TlsSetupError),
    #[error(
        "--http.config.file sets tls_config but --web.address {url} is plain HTTP: use https:// in --web.address"
    )]
    TlsOverHttp { url: String },
    #[error("cannot resolve {host} (--web.address): {source}")]
    Resolve {
        host: String,
        source: std::io::Error,
    },
    #[error("{url}: {problem}")]
    Request { url: String, problem: String },
    #[error("{url}: {problem}")]
    Status { url: String, problem: String },
    #[error(
        "the answer of {url} is not a keepalive-daemon connection listing ({source}): check --web.address"
    )]
    Parse {
        url: String,
        source: serde_json::Error,
    },
}

/// What `keepalive-daemon connections` prints: the table, or with --json the daemon's
/// JSON, filtered by --probing; --at-risk asks the daemon for the connections at risk
/// only (`?at_risk=1`).
pub fn connections_output(args: &ConnectionsArgs) -> Result<String, ClientError> {
    let address = DaemonAddress::parse(&args.address)?;
    let (config, config_path) = match &args.http_config_file {
        Some(path) => (HttpClientConfig::load(path)?, path.as_path()),
        None => (HttpClientConfig::default(), Path::new("")),
    };
    if config.tls_config.is_some() && address.scheme == Scheme::Http {
        return Err(ClientError::TlsOverHttp {
            url: address.to_string(),
        });
    }
    let credentials = config.credentials(config_path)?;
    let client = Client::new(&address, &config, config_path)?;
    let mut json = client.get(args.limit, args.at_risk, credentials.as_ref())?;
    let url = address.url(args.limit, args.at_risk);
    let mut listing: Listing = serde_json::from_value(json.clone())
        .map_err(|source| ClientError::Parse { url, source })?;
    if args.json {
        if args.probing {
            super::table::only_probing_json(&mut json);
        }
        // A Value always serialises.
        let text = serde_json::to_string_pretty(&json).unwrap_or_default();
        return Ok(text + "\n");
    }
    let hidden = if args.probing {
        super::table::only_probing(&mut listing)
    } else {
        0
    };
    Ok(super::table::render(&listing, hidden))
}

/// A configured HTTP client for one daemon.
struct Client<'a> {
    agent: Agent,
    address: &'a DaemonAddress,
    /// The host to put in the URL: tls_config.server_name when set (the connection
    /// still goes to the address's host, see [`tls::pinned_agent`]).
    url_host: String,
    tls: tls::Explain,
}

impl<'a> Client<'a> {
    fn new(
        address: &'a DaemonAddress,
        config: &HttpClientConfig,
        config_path: &Path,
    ) -> Result<Client<'a>, ClientError> {
        let default_tls = http_config::TlsConfig::default();
        let tls_cfg = config.tls_config.as_ref().unwrap_or(&default_tls);
        let https = address.scheme == Scheme::Https;
        let tls_config = tls::ureq_tls_config(tls_cfg, config_path, https)?;
        let builder = Agent::config_builder()
            .tls_config(tls_config)
            // The operator names the daemon; an environment proxy is not meant for it
            // (proxy_url is not supported either).
            .proxy(None)
            .http_status_as_error(false)
            .max_redirects(if config.follow_redirects == Some(false) {
                0
            } else {
                10
            })
            .user_agent(concat!("keepalive-daemon/", env!("CARGO_PKG_VERSION")))
            .timeout_connect(Some(CONNECT_TIMEOUT))
            .timeout_global(Some(TOTAL_TIMEOUT));
        let (agent, url_host) = match &tls_cfg.server_name {
            Some(name) if address.scheme == Scheme::Https => {
                let agent = tls::pinned_agent(builder.build(), &address.host, address.port)
                    .map_err(|source| ClientError::Resolve {
                        host: address.host.clone(),
                        source,
                    })?;
                (agent, name.clone())
            }
            _ => (builder.build().new_agent(), address.host.clone()),
        };
        Ok(Client {
            agent,
            address,
            url_host,
            tls: tls::Explain::new(tls_cfg, config_path),
        })
    }

    /// GET the listing: the daemon's JSON, parsed but not interpreted.
    fn get(
        &self,
        limit: usize,
        at_risk: bool,
        credentials: Option<&Credentials>,
    ) -> Result<serde_json::Value, ClientError> {
        let url = self.address.url_with_host(&self.url_host, limit, at_risk);
        let shown = self.address.url(limit, at_risk);
        let mut request = self.agent.get(&url).header("Accept", "application/json");
        if let Some(c) = credentials {
            request = request.header("Authorization", basic_auth_header(c));
        }
        let mut response = request.call().map_err(|e| ClientError::Request {
            url: shown.clone(),
            problem: self.tls.request_error(&e, self.address),
        })?;
        let status = response.status().as_u16();
        let body = response
            .body_mut()
            .with_config()
            .limit(MAX_BODY_BYTES)
            .read_to_string()
            .map_err(|e| ClientError::Request {
                url: shown.clone(),
                problem: self.tls.request_error(&e, self.address),
            })?;
        if status != 200 {
            return Err(ClientError::Status {
                url: shown,
                problem: status_problem(status, body.trim(), credentials, &self.tls),
            });
        }
        serde_json::from_str(&body).map_err(|source| ClientError::Parse { url: shown, source })
    }
}

fn basic_auth_header(c: &Credentials) -> String {
    use base64::Engine as _;
    let raw = format!("{}:{}", c.username, c.password);
    format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode(raw)
    )
}

/// What an answer other than 200 means for the operator.
fn status_problem(
    status: u16,
    body: &str,
    credentials: Option<&Credentials>,
    tls: &tls::Explain,
) -> String {
    match (status, credentials) {
        (401, None) => "the daemon asks for basic auth (401): pass --http.config.file with basic_auth (username, password_file)".to_owned(),
        (401, Some(c)) => format!(
            "the daemon refused user {:?} (401): check basic_auth's username and password in {}",
            c.username,
            tls.config_file()
        ),
        (404, _) => format!(
            "answered 404 ({body}): check the path in --web.address (the daemon serves /connections)"
        ),
        _ => format!("answered {status}: {body}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn basic_auth_is_rfc7617() {
        let c = Credentials {
            username: "Aladdin".into(),
            password: "open sesame".into(),
        };
        assert_eq!(basic_auth_header(&c), "Basic QWxhZGRpbjpvcGVuIHNlc2FtZQ==");
    }

    #[test]
    fn statuses_tell_what_to_do() {
        let none = tls::Explain::new(&http_config::TlsConfig::default(), Path::new("/h.yml"));
        let p = status_problem(401, "", None, &none);
        assert!(
            p.contains("asks for basic auth") && p.contains("--http.config.file with basic_auth"),
            "{p}"
        );
        let c = Credentials {
            username: "prometheus".into(),
            password: "x".into(),
        };
        let p = status_problem(401, "", Some(&c), &none);
        assert!(
            p.contains("refused user \"prometheus\"") && p.contains("/h.yml"),
            "{p}"
        );
        let p = status_problem(404, "not found", None, &none);
        assert!(p.contains("check the path in --web.address"), "{p}");
        assert_eq!(
            status_problem(503, "busy", None, &none),
            "answered 503: busy"
        );
    }

    /// Nothing listens on port 1 of loopback: the refusal names the way out.
    #[test]
    fn a_refused_connection_says_to_check_the_daemon_and_address() {
        let args = ConnectionsArgs {
            address: "127.0.0.1:1".into(),
            http_config_file: None,
            limit: 1,
            json: false,
            probing: false,
            at_risk: false,
        };
        let e = connections_output(&args).unwrap_err().to_string();
        assert!(
            e.starts_with("http://127.0.0.1:1/connections?limit=1: connection refused")
                && e.contains("is keepalive-daemon running there? pass --web.address"),
            "{e}"
        );
    }

    #[test]
    fn tls_settings_need_https() {
        let dir = std::env::temp_dir().join(format!("kat-client-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let cfg = dir.join("http.yml");
        std::fs::write(&cfg, "tls_config:\n  insecure_skip_verify: true\n").unwrap();
        let args = ConnectionsArgs {
            address: "127.0.0.1:1".into(),
            http_config_file: Some(cfg),
            limit: 1,
            json: false,
            probing: false,
            at_risk: false,
        };
        let e = connections_output(&args).unwrap_err().to_string();
        std::fs::remove_dir_all(&dir).unwrap();
        assert!(e.contains("use https:// in --web.address"), "{e}");
    }
}

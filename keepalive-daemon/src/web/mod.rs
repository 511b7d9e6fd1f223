//! The HTTP side: the server for /metrics, /connections and /healthz, its TLS and basic
//! auth configuration (--web.config.file), and the `connections` client subcommand.

pub(crate) mod auth;
pub mod client;
pub mod server;
pub mod table;
pub mod webconfig;

use std::{collections::BTreeMap, net::SocketAddr, sync::Arc};

use hyper::header::{HeaderMap, HeaderName, HeaderValue};
use tokio::net::TcpListener;

use crate::{
    cli::{Args, ListenAddress, ListenAddressError, parse_listen_address},
    exporter::state::State,
};

/// Why the server could not be set up; each names the flag to change.
#[derive(Debug, thiserror::Error)]
pub enum WebError {
    #[error(transparent)]
    Config(#[from] webconfig::WebConfigError),
    #[error(transparent)]
    ListenAddress(#[from] ListenAddressError),
    #[error("cannot listen on {at} (--web.listen-address {addr}): {error}; choose a free address")]
    Listen {
        at: SocketAddr,
        addr: String,
        // Not `source`: the message already carries it.
        error: std::io::Error,
    },
    #[error(
        "--web.config.file http_server_config.headers: {name:?}: {value:?} is not a valid HTTP header; fix its name or value"
    )]
    Header { name: String, value: String },
    #[error(transparent)]
    LocalAddr(#[from] std::io::Error),
}

/// The listeners, bound, with what --web.config.file and the --web.* flags ask of every
/// connection and request.
pub struct Server {
    transport: Arc<server::Transport>,
    auth: Option<Arc<auth::Auth>>,
    headers: HeaderMap,
    max_requests: usize,
    connections_enabled: bool,
    listeners: Vec<TcpListener>,
}

impl Server {
    /// Reads --web.config.file and binds every --web.listen-address: a bad TLS file or a
    /// port in use fails here, before anything is attached.
    pub async fn bind(args: &Args) -> Result<Server, WebError> {
        let config = match &args.web_config_file {
            None => webconfig::WebConfig::default(),
            Some(path) => webconfig::WebConfig::load(path)?,
        };
        let transport = server::Transport {
            tls: config.tls()?.map(tokio_rustls::TlsAcceptor::from),
            http2: config.http_server_config.http2,
        };
        let headers = header_map(&config.http_server_config.headers)?;
        let auth = auth::Auth::new(config.basic_auth_users).map(Arc::new);
        let mut listeners = Vec::new();
        for addr in &args.listen {
            listeners.push(bind(addr).await?);
        }
        Ok(Server {
            transport: Arc::new(transport),
            auth,
            headers,
            max_requests: args.max_requests,
            connections_enabled: !args.disable_connections,
            listeners,
        })
    }

    /// Serves `state` on every listener, for the daemon's life.
    pub fn spawn(self, state: &Arc<State>) -> Result<(), WebError> {
        let scheme = if self.transport.tls.is_some() {
            "https"
        } else {
            "http"
        };
        let shared = Arc::new(server::Shared::new(
            state.clone(),
            self.auth,
            self.headers,
            self.max_requests,
            self.connections_enabled,
        ));
        for listener in self.listeners {
            log::info!(
                "serving metrics on {scheme}://{}/metrics",
                listener.local_addr()?
            );
            tokio::spawn(server::serve(
                listener,
                shared.clone(),
                self.transport.clone(),
            ));
        }
        Ok(())
    }
}

/// http_server_config.headers as sent.
fn header_map(headers: &BTreeMap<String, String>) -> Result<HeaderMap, WebError> {
    let mut map = HeaderMap::new();
    for (name, value) in headers {
        let invalid = || WebError::Header {
            name: name.clone(),
            value: value.clone(),
        };
        let n = HeaderName::from_bytes(name.as_bytes()).map_err(|_| invalid())?;
        let v = HeaderValue::from_str(value).map_err(|_| invalid())?;
        map.insert(n, v);
    }
    Ok(map)
}

async fn bind(addr: &str) -> Result<TcpListener, WebError> {
    let explain = |error: std::io::Error, at: SocketAddr| WebError::Listen {
        at,
        addr: addr.to_owned(),
        error,
    };
    match parse_listen_address(addr)? {
        ListenAddress::Specific(at) => TcpListener::bind(at).await.map_err(|e| explain(e, at)),
        ListenAddress::Any(port) => {
            // [::] also accepts IPv4 unless IPv6 is off on this host.
            let v6 = SocketAddr::from(([0u16; 8], port));
            match TcpListener::bind(v6).await {
                Ok(l) => Ok(l),
                Err(e) if e.kind() == std::io::ErrorKind::AddrInUse => Err(explain(e, v6)),
                Err(_) => {
                    let v4 = SocketAddr::from(([0u8; 4], port));
                    TcpListener::bind(v4).await.map_err(|e| explain(e, v4))
                }
            }
        }
    }
}

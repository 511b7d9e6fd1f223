//! The HTTP side: the server for /metrics, /connections and /healthz, its TLS and basic
//! auth configuration (--web.config.file), and the `connections` client subcommand.

pub(crate) mod auth;
pub mod client;
pub(crate) mod http;
pub mod table;
pub mod webconfig;

use std::{net::SocketAddr, sync::Arc};

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
    #[error(transparent)]
    LocalAddr(#[from] std::io::Error),
}

/// The listeners, bound, with what --web.config.file asks of every connection.
pub struct Server {
    web: Arc<http::Web>,
    listeners: Vec<TcpListener>,
}

impl Server {
    /// Reads --web.config.file and binds every --web.listen-address: a bad TLS file or a
    /// port in use fails here, before anything is attached.
    pub async fn bind(args: &Args) -> Result<Server, WebError> {
        let web = match &args.web_config_file {
            None => http::Web::default(),
            Some(path) => {
                let config = webconfig::WebConfig::load(path)?;
                http::Web {
                    tls: config.tls()?.map(tokio_rustls::TlsAcceptor::from),
                    users: config.basic_auth_users,
                }
            }
        };
        let mut listeners = Vec::new();
        for addr in &args.listen {
            listeners.push(bind(addr).await?);
        }
        Ok(Server {
            web: Arc::new(web),
            listeners,
        })
    }

    /// Serves `state` on every listener, for the daemon's life.
    pub fn spawn(self, state: &Arc<State>) -> Result<(), WebError> {
        let scheme = if self.web.tls.is_some() {
            "https"
        } else {
            "http"
        };
        for listener in self.listeners {
            log::info!(
                "serving metrics on {scheme}://{}/metrics",
                listener.local_addr()?
            );
            tokio::spawn(http::serve(listener, state.clone(), self.web.clone()));
        }
        Ok(())
    }
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

//! The HTTP side: the server for /metrics, /connections and /healthz, its TLS and basic
//! auth configuration (--web.config.file), and the `connections` client subcommand.

pub mod client;
pub mod http;
pub mod webconfig;

use std::{net::SocketAddr, sync::Arc};

use anyhow::anyhow;
use keepalive_daemon::cli::{Args, ListenAddress, parse_listen_address};
use tokio::net::TcpListener;

use keepalive_daemon::exporter::state::State;

/// The listeners, bound, with what --web.config.file asks of every connection.
pub struct Server {
    web: Arc<http::Web>,
    listeners: Vec<TcpListener>,
}

impl Server {
    /// Reads --web.config.file and binds every --web.listen-address: a bad TLS file or a
    /// port in use fails here, before anything is attached.
    pub async fn bind(args: &Args) -> anyhow::Result<Server> {
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
    pub fn spawn(self, state: &Arc<State>) -> anyhow::Result<()> {
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

async fn bind(addr: &str) -> anyhow::Result<TcpListener> {
    let explain = |e: std::io::Error, at: SocketAddr| {
        anyhow!("cannot listen on {at} (--web.listen-address {addr}): {e}; choose a free address")
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

//! The endpoints: /metrics, the landing page, /connections and /healthz, over a
//! [`Backend`] (the daemon's [`State`]; a fake in the tests).
//!
//! /connections walks the kernel's flow map, which can take long on a big map: it runs
//! on the blocking pool, never on the runtime thread (a current-thread runtime: a walk
//! there would stall /metrics and the systemd watchdog), and one at a time.
//! `?at_risk=1` lists only the connections the keepalive audit has at risk.

use std::sync::Arc;

use hyper::{
    StatusCode,
    body::Bytes,
    header::{HeaderName, HeaderValue},
};

use super::service::Shared;
use crate::{
    error_chain::Chain,
    exporter::{connections, state::State},
};

/// What the endpoints serve. Errors are the operator's message.
pub trait Backend: Send + Sync + 'static {
    /// The Prometheus text; runs on the runtime thread.
    fn metrics(&self) -> Result<String, String>;
    /// Whether the kernel counters can be read; runs on the runtime thread.
    fn health(&self) -> Result<(), String>;
    /// The /connections JSON, at most `limit` rows. Blocking: runs on the blocking pool.
    fn connections_json(&self, limit: usize) -> Result<String, String>;
    /// The /connections JSON for the whole query (`?limit=`, `?at_risk=1`); a backend
    /// without the keepalive audit serves the plain listing.
    fn connections_query_json(&self, query: connections::Query) -> Result<String, String> {
        self.connections_json(query.limit)
    }
}

impl Backend for State {
    fn metrics(&self) -> Result<String, String> {
        self.render_metrics().map_err(|e| Chain(&e).to_string())
    }

    fn health(&self) -> Result<(), String> {
        self.render_metrics_checked()
            .map_err(|e| Chain(&e).to_string())
    }

    fn connections_json(&self, limit: usize) -> Result<String, String> {
        self.connections_query_json(connections::Query {
            limit,
            at_risk: false,
        })
    }

    fn connections_query_json(&self, query: connections::Query) -> Result<String, String> {
        // One inventory and one copy of the endings for the whole listing.
        let request = connections::Request {
            limit: query.limit,
            at_risk_only: query.at_risk,
            inventory: self.audit.inventory(),
            endings: self.audit.endings(),
        };
        let listing = self
            .connections(request)
            .map_err(|e| Chain(&e).to_string())?;
        serde_json::to_string_pretty(&listing)
            .map(|json| json + "\n")
            .map_err(|e| Chain(&e).to_string())
    }
}

/// A response before the shared headers are added.
pub struct Reply {
    pub status: StatusCode,
    pub ctype: &'static str,
    pub body: Bytes,
    pub headers: Vec<(HeaderName, HeaderValue)>,
}

impl Reply {
    pub fn new(status: StatusCode, ctype: &'static str, body: impl Into<Bytes>) -> Reply {
        Reply {
            status,
            ctype,
            body: body.into(),
            headers: Vec::new(),
        }
    }

    pub fn text(status: StatusCode, body: impl Into<Bytes>) -> Reply {
        Reply::new(status, "text/plain; charset=utf-8", body)
    }

    pub fn with(mut self, name: HeaderName, value: HeaderValue) -> Reply {
        self.headers.push((name, value));
        self
    }
}

pub async fn route(shared: &Shared, path: &str, query: &str) -> Reply {
    match path {
        "/metrics" => match shared.backend.metrics() {
            Ok(text) => Reply::new(StatusCode::OK, prometheus::TEXT_FORMAT, text),
            Err(e) => {
                log::error!("rendering metrics failed: {e}");
                Reply::text(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    format!("rendering metrics failed: {e}\n"),
                )
            }
        },
        "/" => Reply::new(
            StatusCode::OK,
            "text/html; charset=utf-8",
            landing_page(shared.connections_enabled),
        ),
        "/connections" if !shared.connections_enabled => Reply::text(
            StatusCode::NOT_FOUND,
            "/connections is disabled (--web.disable-connections)\n",
        ),
        "/connections" => connections(shared, query).await,
        // Served only once every program is attached; fails if the kernel counters
        // cannot be read.
        "/healthz" => match shared.backend.health() {
            Ok(()) => Reply::text(StatusCode::OK, "ok\n"),
            Err(e) => Reply::text(StatusCode::SERVICE_UNAVAILABLE, format!("unhealthy: {e}\n")),
        },
        _ => Reply::text(StatusCode::NOT_FOUND, "not found; try /metrics\n"),
    }
}

async fn connections(shared: &Shared, query: &str) -> Reply {
    let Ok(turn) = shared.listing.clone().try_acquire_owned() else {
        return Reply::text(
            StatusCode::SERVICE_UNAVAILABLE,
            "a listing is already running; retry\n",
        );
    };
    let query = connections::Query::parse(query);
    let backend: Arc<dyn Backend> = shared.backend.clone();
    // The permit goes with the walk: a client that hangs up does not start a second
    // walk beside one still running.
    let walk = tokio::task::spawn_blocking(move || {
        let _turn = turn;
        backend.connections_query_json(query)
    });
    match walk.await {
        Ok(Ok(json)) => Reply::new(StatusCode::OK, "application/json", json),
        Ok(Err(e)) => Reply::text(
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("reading the flow map failed: {e}\n"),
        ),
        Err(e) => {
            log::error!("the /connections listing failed: {e}");
            Reply::text(
                StatusCode::INTERNAL_SERVER_ERROR,
                format!("the listing failed: {e}\n"),
            )
        }
    }
}

fn landing_page(connections: bool) -> String {
    let connections = if connections {
        " &middot; <a href=\"/connections\">Connections</a>"
    } else {
        ""
    };
    format!(
        "<!DOCTYPE html>\n<html><head><title>keepalive-daemon</title></head><body>\n\
         <h1>keepalive-daemon {}</h1>\n<p>TCP keepalive probes, answers and keepalive-caused resets, \
         seen with eBPF.</p>\n<p><a href=\"/metrics\">Metrics</a>{connections} &middot; <a href=\"/healthz\">Health</a></p>\n</body></html>\n",
        env!("CARGO_PKG_VERSION")
    )
}

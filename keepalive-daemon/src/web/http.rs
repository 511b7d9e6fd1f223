//! A small HTTP/1.1 server for /metrics and the landing page. One request per
//! connection, bounded request size and time.

use std::{collections::BTreeMap, sync::Arc, time::Duration};

use tokio::{
    io::{AsyncRead, AsyncReadExt as _, AsyncWrite, AsyncWriteExt as _},
    net::TcpListener,
};
use tokio_rustls::TlsAcceptor;

use super::auth;
use crate::{
    error_chain::Chain,
    exporter::{connections, state::State},
};

/// What --web.config.file asks of every connection.
#[derive(Default)]
pub struct Web {
    pub tls: Option<TlsAcceptor>,
    /// User name -> bcrypt hash; empty: no authentication.
    pub users: BTreeMap<String, String>,
}

const MAX_REQUEST_HEAD: usize = 8192;
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);

pub async fn serve(listener: TcpListener, state: Arc<State>, web: Arc<Web>) {
    loop {
        match listener.accept().await {
            Ok((stream, peer)) => {
                let (state, web) = (state.clone(), web.clone());
                tokio::spawn(async move {
                    let serve_one = async {
                        match &web.tls {
                            Some(acceptor) => match acceptor.accept(stream).await {
                                Ok(tls) => handle(tls, &state, &web).await,
                                Err(e) => log::debug!("TLS handshake with {peer} failed: {e}"),
                            },
                            None => handle(stream, &state, &web).await,
                        }
                    };
                    if tokio::time::timeout(REQUEST_TIMEOUT, serve_one)
                        .await
                        .is_err()
                    {
                        log::debug!("HTTP request from {peer} timed out");
                    }
                });
            }
            Err(e) => {
                log::warn!("accepting an HTTP connection failed: {e}");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }
}

async fn handle<S: AsyncRead + AsyncWrite + Unpin>(mut stream: S, state: &State, web: &Web) {
    let mut buf = Vec::with_capacity(1024);
    let mut chunk = [0u8; 1024];
    while !buf.windows(4).any(|w| w == b"\r\n\r\n") {
        match stream.read(&mut chunk).await {
            Ok(0) | Err(_) => return,
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
        }
        if buf.len() > MAX_REQUEST_HEAD {
            let _ = respond(
                &mut stream,
                431,
                "text/plain",
                b"request header too large\n",
            )
            .await;
            return;
        }
    }
    let head = String::from_utf8_lossy(&buf);
    let mut parts = head.lines().next().unwrap_or_default().split_whitespace();
    let (method, target) = (
        parts.next().unwrap_or_default(),
        parts.next().unwrap_or_default(),
    );
    let (path, query) = target.split_once('?').unwrap_or((target, ""));
    if !web.users.is_empty() {
        let authorization = head
            .lines()
            .find_map(|l| {
                l.split_once(':')
                    .filter(|(k, _)| k.eq_ignore_ascii_case("authorization"))
            })
            .map(|(_, v)| v.trim().to_owned());
        let users = web.users.clone();
        // bcrypt is slow on purpose: keep it off the async thread.
        let ok =
            tokio::task::spawn_blocking(move || auth::authorized(&users, authorization.as_deref()))
                .await
                .unwrap_or(false);
        if !ok {
            let _ = respond(&mut stream, 401, "text/plain", b"unauthorized\n").await;
            return;
        }
    }
    let (status, ctype, body) = route(method, path, query, state);
    // HEAD gets the same headers and no body.
    let body = if method == "HEAD" {
        &b""[..]
    } else {
        body.as_bytes()
    };
    let _ = respond(&mut stream, status, ctype, body).await;
}

fn route(method: &str, path: &str, query: &str, state: &State) -> (u16, &'static str, String) {
    if method != "GET" && method != "HEAD" {
        return (405, "text/plain", "only GET is supported\n".into());
    }
    match path {
        "/metrics" => match state.render_metrics() {
            Ok(text) => (200, prometheus::TEXT_FORMAT, text),
            Err(e) => {
                let e = Chain(&e);
                log::error!("rendering metrics failed: {e}");
                (
                    500,
                    "text/plain",
                    format!("rendering metrics failed: {e}\n"),
                )
            }
        },
        "/" => (200, "text/html; charset=utf-8", landing_page()),
        "/connections" => {
            let listing = state
                .connections(connections::limit_from_query(query))
                .map_err(|e| Chain(&e).to_string())
                .and_then(|l| serde_json::to_string_pretty(&l).map_err(|e| Chain(&e).to_string()));
            match listing {
                Ok(json) => (200, "application/json", json + "\n"),
                Err(e) => (
                    500,
                    "text/plain",
                    format!("reading the flow map failed: {e}\n"),
                ),
            }
        }
        // Served only once every program is attached; fails if the kernel counters
        // cannot be read.
        "/healthz" => match state.render_metrics_checked() {
            Ok(()) => (200, "text/plain", "ok\n".into()),
            Err(e) => (503, "text/plain", format!("unhealthy: {}\n", Chain(&e))),
        },
        _ => (404, "text/plain", "not found; try /metrics\n".into()),
    }
}

fn landing_page() -> String {
    format!(
        "<!DOCTYPE html>\n<html><head><title>keepalive-daemon</title></head><body>\n\
         <h1>keepalive-daemon {}</h1>\n<p>TCP keepalive probes, answers and keepalive-caused resets, \
         seen with eBPF.</p>\n<p><a href=\"/metrics\">Metrics</a> &middot; <a href=\"/connections\">Connections</a> &middot; <a href=\"/healthz\">Health</a></p>\n</body></html>\n",
        env!("CARGO_PKG_VERSION")
    )
}

async fn respond<S: AsyncWrite + Unpin>(
    stream: &mut S,
    status: u16,
    ctype: &str,
    body: &[u8],
) -> std::io::Result<()> {
    let reason = match status {
        200 => "OK",
        401 => "Unauthorized",
        404 => "Not Found",
        405 => "Method Not Allowed",
        431 => "Request Header Fields Too Large",
        503 => "Service Unavailable",
        _ => "Internal Server Error",
    };
    let challenge = if status == 401 {
        "WWW-Authenticate: Basic realm=\"keepalive-daemon\"\r\n"
    } else {
        ""
    };
    let head = format!(
        "HTTP/1.1 {status} {reason}\r\nContent-Type: {ctype}\r\nContent-Length: {}\r\n{challenge}Connection: close\r\n\r\n",
        body.len()
    );
    stream.write_all(head.as_bytes()).await?;
    stream.write_all(body).await?;
    stream.shutdown().await
}

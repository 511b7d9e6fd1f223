//! The HTTP server: hyper (HTTP/1.1 with keep-alive, and HTTP/2 unless
//! http_server_config.http2 is false: over TLS by ALPN, over plain TCP by prior
//! knowledge), with TLS from --web.config.file and bounded waits for slow clients.
//!
//! Slow clients: a new connection must complete its TLS handshake and its first request
//! head within [`FIRST_REQUEST_TIMEOUT`] (hyper-util's protocol detection has no timer
//! of its own). Later heads on a kept-alive HTTP/1.1 connection fall under hyper's
//! header read timeout, which also counts the idle wait before them (hyper has one timer
//! for both), so it is [`IDLE_TIMEOUT`]: long enough that Prometheus, which scrapes
//! every 15 s to 1 min and keeps connections for 5 min, reuses its connection.

mod routes;
mod service;
#[cfg(test)]
mod tests;

use std::{net::SocketAddr, sync::Arc, time::Duration};

use hyper::service::service_fn;
use hyper_util::{
    rt::{TokioExecutor, TokioIo, TokioTimer},
    server::conn::auto,
};
use tokio::{net::TcpListener, sync::Notify, time::Instant};
use tokio_rustls::TlsAcceptor;

pub use routes::Backend;
pub use service::Shared;

/// From accepting a connection to its first complete request head (TLS included).
pub const FIRST_REQUEST_TIMEOUT: Duration = Duration::from_secs(10);
/// From the end of a response to the next complete request head on the same
/// HTTP/1.1 connection.
pub const IDLE_TIMEOUT: Duration = Duration::from_secs(120);
/// HTTP/2: a ping after this much silence; no answer within as long closes the connection.
const H2_KEEPALIVE: Duration = Duration::from_secs(60);

/// How connections are served: TLS or not, HTTP/2 or not.
pub struct Transport {
    pub tls: Option<TlsAcceptor>,
    pub http2: bool,
}

/// Accepts connections on `listener` for the daemon's life.
pub async fn serve(listener: TcpListener, shared: Arc<Shared>, transport: Arc<Transport>) {
    let builder = Arc::new(builder(transport.http2));
    loop {
        match listener.accept().await {
            Ok((stream, peer)) => {
                let (shared, transport, builder) =
                    (shared.clone(), transport.clone(), builder.clone());
                tokio::spawn(async move {
                    connection(stream, peer, shared, &transport, &builder).await;
                });
            }
            Err(e) => {
                // Out of file descriptors, most likely: wait instead of spinning.
                log::warn!("accepting an HTTP connection failed: {e}");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }
}

fn builder(http2: bool) -> auto::Builder<TokioExecutor> {
    let mut b = auto::Builder::new(TokioExecutor::new());
    b.http1()
        .keep_alive(true)
        .timer(TokioTimer::new())
        .header_read_timeout(IDLE_TIMEOUT);
    b.http2()
        .timer(TokioTimer::new())
        .keep_alive_interval(H2_KEEPALIVE)
        .keep_alive_timeout(H2_KEEPALIVE)
        // Requests beyond --web.max-requests are refused anyway; this bounds the
        // streams one connection can open.
        .max_concurrent_streams(64);
    if http2 { b } else { b.http1_only() }
}

async fn connection(
    stream: tokio::net::TcpStream,
    peer: SocketAddr,
    shared: Arc<Shared>,
    transport: &Transport,
    builder: &auto::Builder<TokioExecutor>,
) {
    let deadline = Instant::now() + FIRST_REQUEST_TIMEOUT;
    let first_request = Arc::new(Notify::new());
    let service = {
        let first_request = first_request.clone();
        service_fn(move |req| {
            // Stores a permit if nobody waits yet: the first call is never missed.
            first_request.notify_one();
            service::handle(shared.clone(), req)
        })
    };
    match &transport.tls {
        None => {
            let conn = builder.serve_connection(TokioIo::new(stream), service);
            drive(conn, &first_request, deadline, peer).await;
        }
        Some(acceptor) => match tokio::time::timeout_at(deadline, acceptor.accept(stream)).await {
            Ok(Ok(tls)) => {
                let conn = builder.serve_connection(TokioIo::new(tls), service);
                drive(conn, &first_request, deadline, peer).await;
            }
            Ok(Err(e)) => log::debug!("TLS handshake with {peer} failed: {e}"),
            Err(_) => log::debug!(
                "TLS handshake with {peer} not done within {FIRST_REQUEST_TIMEOUT:?}; closed"
            ),
        },
    }
}

/// Runs a connection to its end, or drops (closes) it when no first request came by
/// `deadline`.
async fn drive<C, E>(conn: C, first_request: &Notify, deadline: Instant, peer: SocketAddr)
where
    C: Future<Output = Result<(), E>>,
    E: std::fmt::Display,
{
    tokio::pin!(conn);
    tokio::select! {
        result = &mut conn => return report(result, peer),
        () = first_request.notified() => {}
        () = tokio::time::sleep_until(deadline) => {
            log::debug!("no complete request from {peer} within {FIRST_REQUEST_TIMEOUT:?}; closed");
            return;
        }
    }
    report(conn.await, peer);
}

fn report<E: std::fmt::Display>(result: Result<(), E>, peer: SocketAddr) {
    // Clients going away and timeouts are routine: debug, not warn.
    if let Err(e) = result {
        log::debug!("HTTP connection from {peer} ended: {e}");
    }
}

//! A blocking HTTP/1.1 client over one TCP connection, on hyper's client (each
//! [`Client`] owns a small runtime), for the web server tests: every request of a
//! client goes over the socket it was made with, so a test knows how many connections
//! it used. Included by tests/tests/web_server.rs (`#[path]`): the harness library does
//! not need hyper.

use std::{
    net::{SocketAddr, TcpStream},
    time::{Duration, Instant},
};

use anyhow::{Context as _, Result, anyhow};
use http_body_util::{BodyExt as _, Empty};
use hyper::{Request, body::Bytes, client::conn::http1::SendRequest};
use hyper_util::rt::TokioIo;
use tokio::runtime::Runtime;

use keepalive_tests::Netns;

/// Longest wait for one answer.
pub const ANSWER_TIMEOUT: Duration = Duration::from_secs(30);

/// A TCP connection to `addr` made inside `ns` (usable from any thread afterwards).
pub fn connect_in(ns: &Netns, addr: SocketAddr) -> TcpStream {
    ns.run_in(|| TcpStream::connect_timeout(&addr, Duration::from_secs(5)))
        .unwrap_or_else(|e| panic!("connecting to {addr} in {}: {e}", ns.name()))
}

/// One HTTP/1.1 connection.
pub struct Client {
    rt: Runtime,
    sender: SendRequest<Empty<Bytes>>,
    conn: tokio::task::JoinHandle<()>,
}

/// An answer and how long it took from sending the request to its last body byte.
#[derive(Debug)]
pub struct Answer {
    pub status: u16,
    pub headers: hyper::HeaderMap,
    pub body: String,
    pub elapsed: Duration,
}

impl Answer {
    /// A header's value; "" when absent.
    pub fn header(&self, name: &str) -> &str {
        self.headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
    }
}

impl Client {
    /// HTTP/1.1 over `tcp`, a connected socket.
    pub fn new(tcp: TcpStream) -> Result<Client> {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        tcp.set_nonblocking(true)?;
        let (sender, conn) = rt.block_on(async {
            let tcp = tokio::net::TcpStream::from_std(tcp)?;
            let (sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tcp)).await?;
            let conn = tokio::spawn(async move {
                let _ = conn.await;
            });
            anyhow::Ok((sender, conn))
        })?;
        Ok(Client { rt, sender, conn })
    }

    /// `method path`, with basic auth `user:password` if given.
    pub fn send(&mut self, method: &str, path: &str, basic: Option<&str>) -> Result<Answer> {
        let mut req = Request::builder()
            .method(method)
            .uri(path)
            .header("host", "keepalive-test");
        if let Some(credentials) = basic {
            req = req.header("authorization", basic_header(credentials));
        }
        let req = req.body(Empty::new())?;
        let sender = &mut self.sender;
        self.rt.block_on(async {
            tokio::time::timeout(ANSWER_TIMEOUT, async {
                sender.ready().await.context("the connection is closed")?;
                let start = Instant::now();
                let resp = sender.send_request(req).await?;
                let (parts, body) = resp.into_parts();
                let body = body.collect().await?.to_bytes();
                Ok(Answer {
                    status: parts.status.as_u16(),
                    headers: parts.headers,
                    body: String::from_utf8(body.to_vec()).context("body not UTF-8")?,
                    elapsed: start.elapsed(),
                })
            })
            .await
            .map_err(|_| anyhow!("{method} {path}: no answer within {ANSWER_TIMEOUT:?}"))?
        })
    }

    /// Whether the connection has ended (closed by the server or failed).
    pub fn is_closed(&mut self) -> bool {
        // Let the connection task see anything pending on the socket first.
        self.rt
            .block_on(async { tokio::time::sleep(Duration::from_millis(50)).await });
        self.conn.is_finished() || self.sender.is_closed()
    }
}

/// The Authorization header value for `user:password`.
pub fn basic_header(credentials: &str) -> String {
    use base64::Engine as _;
    format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode(credentials)
    )
}

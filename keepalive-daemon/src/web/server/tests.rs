//! The server in-process over loopback TCP, with a fake backend whose /connections
//! listing blocks until the test releases it (a request held in flight at will), and
//! hyper's client.

use std::{
    collections::BTreeMap,
    sync::{Arc, Condvar, Mutex},
    time::Duration,
};

use base64::Engine as _;
use http_body_util::{BodyExt as _, Empty};
use hyper::{Method, Request, StatusCode, body::Bytes, header::HeaderMap};
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::{
    io::{AsyncReadExt as _, AsyncWriteExt as _},
    net::{TcpListener, TcpStream},
};

use super::{FIRST_REQUEST_TIMEOUT, IDLE_TIMEOUT, Shared, Transport, serve};
use crate::web::auth::Auth;

/// /connections blocks until `release`; `started` counts listings begun.
#[derive(Default)]
struct Fake {
    gate: Mutex<(bool, usize)>,
    changed: Condvar,
}

impl Fake {
    fn release(&self) {
        self.gate.lock().unwrap().0 = true;
        self.changed.notify_all();
    }

    /// Waits (bounded) until `n` listings have started.
    async fn started(&self, n: usize) {
        for _ in 0..500 {
            if self.gate.lock().unwrap().1 >= n {
                return;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        panic!("{n} listings did not start within 5 s");
    }
}

impl super::Backend for Fake {
    fn metrics(&self) -> Result<String, String> {
        Ok("keepalive_daemon_up 1\n".into())
    }
    fn health(&self) -> Result<(), String> {
        Ok(())
    }
    fn connections_json(&self, limit: usize) -> Result<String, String> {
        let mut gate = self.gate.lock().unwrap();
        gate.1 += 1;
        let (gate, timeout) = self
            .changed
            .wait_timeout_while(gate, Duration::from_secs(10), |g| !g.0)
            .unwrap();
        assert!(!timeout.timed_out(), "the test never released the listing");
        drop(gate);
        Ok(format!("{{\"limit\": {limit}}}\n"))
    }
}

struct Options {
    max_requests: usize,
    connections: bool,
    http2: bool,
    users: BTreeMap<String, String>,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            max_requests: 40,
            connections: true,
            http2: true,
            users: BTreeMap::new(),
        }
    }
}

/// Starts a server on 127.0.0.1:<any>; returns its address and the fake.
async fn start(o: Options) -> (std::net::SocketAddr, Arc<Fake>) {
    let fake = Arc::new(Fake::default());
    let mut headers = HeaderMap::new();
    headers.insert("x-frame-options", "deny".parse().unwrap());
    let shared = Shared::new(
        fake.clone(),
        Auth::new(o.users).map(Arc::new),
        headers,
        o.max_requests,
        o.connections,
    );
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let transport = Transport {
        tls: None,
        http2: o.http2,
    };
    tokio::spawn(serve(listener, Arc::new(shared), Arc::new(transport)));
    (addr, fake)
}

type Sender = hyper::client::conn::http1::SendRequest<Empty<Bytes>>;

/// One HTTP/1.1 connection (hyper's client); every request on it uses this socket.
async fn connect(addr: std::net::SocketAddr) -> (Sender, tokio::task::JoinHandle<()>) {
    let tcp = TcpStream::connect(addr).await.unwrap();
    let (sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tcp))
        .await
        .unwrap();
    let task = tokio::spawn(async move {
        let _ = conn.await;
    });
    (sender, task)
}

struct Answer {
    status: StatusCode,
    headers: HeaderMap,
    body: String,
}

async fn send(s: &mut Sender, method: Method, path: &str, auth: Option<&str>) -> Answer {
    s.ready().await.expect("connection closed by the server");
    let mut req = Request::builder()
        .method(method)
        .uri(path)
        .header("host", "t");
    if let Some(a) = auth {
        let encoded = base64::engine::general_purpose::STANDARD.encode(a);
        req = req.header("authorization", format!("Basic {encoded}"));
    }
    let resp = s
        .send_request(req.body(Empty::new()).unwrap())
        .await
        .unwrap();
    let (parts, body) = resp.into_parts();
    let body = body.collect().await.unwrap().to_bytes();
    Answer {
        status: parts.status,
        headers: parts.headers,
        body: String::from_utf8(body.to_vec()).unwrap(),
    }
}

fn header<'a>(a: &'a Answer, name: &str) -> &'a str {
    a.headers
        .get(name)
        .unwrap_or_else(|| panic!("no {name} header: {:?}", a.headers))
        .to_str()
        .unwrap()
}

#[tokio::test]
async fn one_connection_serves_many_requests_with_head_405_404_and_headers() {
    let (addr, _fake) = start(Options::default()).await;
    let (mut s, conn) = connect(addr).await;
    for _ in 0..5 {
        let a = send(&mut s, Method::GET, "/metrics", None).await;
        assert_eq!(a.status, StatusCode::OK);
        assert_eq!(a.body, "keepalive_daemon_up 1\n");
        assert_eq!(header(&a, "x-frame-options"), "deny");
    }
    let head = send(&mut s, Method::HEAD, "/metrics", None).await;
    assert_eq!(head.status, StatusCode::OK);
    assert_eq!(header(&head, "content-length"), "22");
    assert_eq!(header(&head, "content-type"), prometheus::TEXT_FORMAT);
    assert_eq!(head.body, "");
    let post = send(&mut s, Method::POST, "/metrics", None).await;
    assert_eq!(post.status, StatusCode::METHOD_NOT_ALLOWED);
    assert_eq!(header(&post, "allow"), "GET, HEAD");
    assert_eq!(header(&post, "x-frame-options"), "deny");
    let missing = send(&mut s, Method::GET, "/nope", None).await;
    assert_eq!(missing.status, StatusCode::NOT_FOUND);
    assert_eq!(header(&missing, "x-frame-options"), "deny");
    let landing = send(&mut s, Method::GET, "/", None).await;
    assert!(landing.body.contains("href=\"/connections\""));
    assert!(
        !conn.is_finished(),
        "the server closed the kept-alive connection"
    );
    assert!(!s.is_closed());
}

#[tokio::test]
async fn requests_over_the_cap_are_refused_at_once_and_counted_until_answered() {
    let (addr, fake) = start(Options {
        max_requests: 1,
        ..Options::default()
    })
    .await;
    let (mut held, _c1) = connect(addr).await;
    let listing =
        tokio::spawn(
            async move { send(&mut held, Method::GET, "/connections?limit=7", None).await },
        );
    fake.started(1).await;
    let (mut s, _c2) = connect(addr).await;
    let refused = send(&mut s, Method::GET, "/metrics", None).await;
    assert_eq!(refused.status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(
        refused.body,
        "1 requests in flight already (--web.max-requests); retry\n"
    );
    fake.release();
    let a = listing.await.unwrap();
    assert_eq!(
        (a.status, a.body.as_str()),
        (StatusCode::OK, "{\"limit\": 7}\n")
    );
    let a = send(&mut s, Method::GET, "/metrics", None).await;
    assert_eq!(a.status, StatusCode::OK, "the permit came back");
}

#[tokio::test]
async fn one_listing_at_a_time_and_no_cap_with_zero() {
    let (addr, fake) = start(Options {
        max_requests: 0,
        ..Options::default()
    })
    .await;
    let (mut held, _c1) = connect(addr).await;
    let listing =
        tokio::spawn(async move { send(&mut held, Method::GET, "/connections", None).await });
    fake.started(1).await;
    let (mut s, _c2) = connect(addr).await;
    let second = send(&mut s, Method::GET, "/connections", None).await;
    assert_eq!(second.status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(second.body, "a listing is already running; retry\n");
    // /metrics answers while the listing runs: the runtime thread is free.
    assert_eq!(
        send(&mut s, Method::GET, "/metrics", None).await.status,
        StatusCode::OK
    );
    fake.release();
    assert_eq!(listing.await.unwrap().status, StatusCode::OK);
}

#[tokio::test]
async fn disabled_connections_answer_404_and_are_not_linked() {
    let (addr, _fake) = start(Options {
        connections: false,
        ..Options::default()
    })
    .await;
    let (mut s, _c) = connect(addr).await;
    let a = send(&mut s, Method::GET, "/connections", None).await;
    assert_eq!(a.status, StatusCode::NOT_FOUND);
    assert_eq!(
        a.body,
        "/connections is disabled (--web.disable-connections)\n"
    );
    let landing = send(&mut s, Method::GET, "/", None).await;
    assert!(!landing.body.contains("/connections"), "{}", landing.body);
    assert!(landing.body.contains("href=\"/metrics\""));
}

#[tokio::test]
async fn basic_auth_guards_every_path() {
    let hash = bcrypt::hash("s3cret", 4).unwrap();
    let (addr, _fake) = start(Options {
        users: BTreeMap::from([("prometheus".to_owned(), hash)]),
        ..Options::default()
    })
    .await;
    let (mut s, _c) = connect(addr).await;
    for (auth, path, status) in [
        (None, "/metrics", StatusCode::UNAUTHORIZED),
        (Some("prometheus:wrong"), "/", StatusCode::UNAUTHORIZED),
        (Some("nobody:s3cret"), "/healthz", StatusCode::UNAUTHORIZED),
        (Some("prometheus:s3cret"), "/metrics", StatusCode::OK),
        (Some("prometheus:s3cret"), "/healthz", StatusCode::OK),
    ] {
        let a = send(&mut s, Method::GET, path, auth).await;
        assert_eq!(a.status, status, "{auth:?} {path}");
        if status == StatusCode::UNAUTHORIZED {
            assert_eq!(
                header(&a, "www-authenticate"),
                "Basic realm=\"keepalive-daemon\""
            );
            assert_eq!(header(&a, "x-frame-options"), "deny");
        }
    }
}

#[tokio::test]
async fn http2_by_prior_knowledge_unless_switched_off() {
    for http2 in [true, false] {
        let (addr, _fake) = start(Options {
            http2,
            ..Options::default()
        })
        .await;
        let tcp = TcpStream::connect(addr).await.unwrap();
        let handshake =
            hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(tcp)).await;
        let answer = match handshake {
            Err(e) => Err(e),
            Ok((mut sender, conn)) => {
                tokio::spawn(conn);
                let req = Request::get("http://t/metrics")
                    .body(Empty::<Bytes>::new())
                    .unwrap();
                sender.send_request(req).await.map(|r| r.status())
            }
        };
        match (http2, answer) {
            (true, Ok(status)) => assert_eq!(status, StatusCode::OK),
            (false, Err(_)) => {}
            (http2, answer) => panic!("http2 {http2}: {answer:?}"),
        }
    }
}

/// Reads until the server closes; returns false if it sent bytes instead.
async fn closed_without_answer(tcp: &mut TcpStream) -> bool {
    let mut buf = [0u8; 512];
    matches!(tcp.read(&mut buf).await, Ok(0) | Err(_))
}

// Virtual time: the runtime jumps ahead whenever every task waits.
#[tokio::test(start_paused = true)]
async fn a_stalled_head_is_cut_off_and_an_idle_connection_kept_for_the_idle_timeout() {
    let (addr, _fake) = start(Options::default()).await;
    // Half a head, then nothing: closed once FIRST_REQUEST_TIMEOUT has passed.
    let mut tcp = TcpStream::connect(addr).await.unwrap();
    tcp.write_all(b"GET /metrics HTTP/1.1\r\nHost: t\r\n")
        .await
        .unwrap();
    let t = tokio::time::Instant::now();
    assert!(closed_without_answer(&mut tcp).await);
    let waited = t.elapsed();
    assert!(
        waited >= FIRST_REQUEST_TIMEOUT && waited < FIRST_REQUEST_TIMEOUT + Duration::from_secs(1),
        "closed after {waited:?}"
    );
    // Nothing at all: the same.
    let mut tcp = TcpStream::connect(addr).await.unwrap();
    let t = tokio::time::Instant::now();
    assert!(closed_without_answer(&mut tcp).await);
    assert!(t.elapsed() >= FIRST_REQUEST_TIMEOUT);
    // After a first request, an idle keep-alive connection outlives a 1-minute scrape
    // interval, and is closed once IDLE_TIMEOUT has passed without a request.
    let (mut s, conn) = connect(addr).await;
    assert_eq!(
        send(&mut s, Method::GET, "/metrics", None).await.status,
        StatusCode::OK
    );
    tokio::time::sleep(Duration::from_secs(60)).await;
    assert_eq!(
        send(&mut s, Method::GET, "/metrics", None).await.status,
        StatusCode::OK
    );
    let t = tokio::time::Instant::now();
    conn.await.unwrap();
    let idle = t.elapsed();
    assert!(
        idle >= IDLE_TIMEOUT && idle < IDLE_TIMEOUT + Duration::from_secs(1),
        "closed after {idle:?} idle"
    );
}

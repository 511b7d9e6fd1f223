//! One request: the cap on requests in flight (--web.max-requests), basic auth, the
//! route, then the response with the configured headers (http_server_config.headers);
//! HEAD gets GET's headers and no body.

use std::{
    convert::Infallible,
    pin::Pin,
    sync::Arc,
    task::{Context, Poll},
};

use http_body_util::Full;
use hyper::{
    Method, Request, Response, StatusCode,
    body::{Body, Bytes, Frame, Incoming, SizeHint},
    header::{self, HeaderMap, HeaderValue},
};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use super::routes::{self, Backend, Reply};
use crate::web::auth::Auth;

/// What every request needs, shared by all connections.
pub struct Shared {
    pub backend: Arc<dyn Backend>,
    /// None: no basic_auth_users, everything passes.
    pub auth: Option<Arc<Auth>>,
    /// http_server_config.headers, added to every response.
    pub headers: HeaderMap,
    /// Permits for requests in flight; None: no cap (--web.max-requests 0).
    pub in_flight: Option<Arc<Semaphore>>,
    pub max_requests: usize,
    /// One /connections listing at a time.
    pub listing: Arc<Semaphore>,
    /// False with --web.disable-connections.
    pub connections_enabled: bool,
}

impl Shared {
    pub fn new(
        backend: Arc<dyn Backend>,
        auth: Option<Arc<Auth>>,
        headers: HeaderMap,
        max_requests: usize,
        connections_enabled: bool,
    ) -> Shared {
        Shared {
            backend,
            auth,
            headers,
            in_flight: (max_requests > 0).then(|| Arc::new(Semaphore::new(max_requests))),
            max_requests,
            listing: Arc::new(Semaphore::new(1)),
            connections_enabled,
        }
    }
}

pub async fn handle(
    shared: Arc<Shared>,
    req: Request<Incoming>,
) -> Result<Response<Held>, Infallible> {
    let head = req.method() == Method::HEAD;
    // Refused at once, not queued, as node_exporter (promhttp's MaxRequestsInFlight).
    // Counted before auth: requests waiting for a password check count too, so a flood
    // of bad passwords queues at most --web.max-requests of them.
    let permit = match &shared.in_flight {
        None => None,
        Some(sem) => match sem.clone().try_acquire_owned() {
            Ok(p) => Some(p),
            Err(_) => {
                let reply = Reply::text(
                    StatusCode::SERVICE_UNAVAILABLE,
                    format!(
                        "{} requests in flight already (--web.max-requests); retry\n",
                        shared.max_requests
                    ),
                );
                return Ok(respond(&shared, reply, head, None));
            }
        },
    };
    let reply = answer(&shared, &req).await;
    Ok(respond(&shared, reply, head, permit))
}

async fn answer(shared: &Arc<Shared>, req: &Request<Incoming>) -> Reply {
    if let Some(auth) = &shared.auth {
        let authorization = req.headers().get(header::AUTHORIZATION);
        if !auth.check(authorization.map(HeaderValue::as_bytes)).await {
            return Reply::text(StatusCode::UNAUTHORIZED, "unauthorized\n").with(
                header::WWW_AUTHENTICATE,
                HeaderValue::from_static("Basic realm=\"keepalive-daemon\""),
            );
        }
    }
    if req.method() != Method::GET && req.method() != Method::HEAD {
        return Reply::text(
            StatusCode::METHOD_NOT_ALLOWED,
            "only GET and HEAD are supported\n",
        )
        .with(header::ALLOW, HeaderValue::from_static("GET, HEAD"));
    }
    let query = req.uri().query().unwrap_or("");
    routes::route(shared, req.uri().path(), query).await
}

fn respond(
    shared: &Shared,
    reply: Reply,
    head: bool,
    permit: Option<OwnedSemaphorePermit>,
) -> Response<Held> {
    let mut headers = shared.headers.clone();
    // Ours last: Content-Type and Content-Length are not the operator's to change.
    for (name, value) in reply.headers {
        headers.insert(name, value);
    }
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(reply.ctype));
    headers.insert(header::CONTENT_LENGTH, HeaderValue::from(reply.body.len()));
    // HEAD: GET's Content-Length, no body (hyper keeps the header for HEAD).
    let body = if head { Bytes::new() } else { reply.body };
    let mut response = Response::new(Held {
        body: Full::new(body),
        _permit: permit,
    });
    *response.status_mut() = reply.status;
    *response.headers_mut() = headers;
    response
}

/// A response body that holds the request's --web.max-requests permit until hyper has
/// taken the whole body (then drops it), so the request counts until it is answered.
pub struct Held {
    body: Full<Bytes>,
    _permit: Option<OwnedSemaphorePermit>,
}

impl Body for Held {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        Pin::new(&mut self.get_mut().body).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.body.size_hint()
    }
}

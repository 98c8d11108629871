//! Connections to Ollama that are driven inside the request's own task.
//!
//! hyper's pooled client runs each upstream connection as a separate task and hands every response
//! chunk to the request's task through a channel, so a burst of NDJSON lines that arrived in one
//! TCP segment leaves as one write per line, each after a cross-task (often cross-thread) wake-up.
//! Here the request's task polls the connection itself: before each read of the response body it
//! lets the connection decode what has arrived, so every chunk already received is handed on in the
//! same pass and the server writes them together. Idle connections wait in a small pool; one that
//! Ollama closed meanwhile is noticed at checkout (polled once: it has finished) and replaced.

use std::future::{Future, poll_fn};
use std::pin::Pin;
use std::pin::pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use bytes::Bytes;
use http::{Request, Response, Uri};
use http_body::{Frame, SizeHint};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::client::conn::http1;
use hyper_rustls::{HttpsConnector, MaybeHttpsStream};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;
use tokio::time::{Instant, Sleep};
use tower_service::Service;

/// Idle connections kept for reuse.
const MAX_IDLE: usize = 64;

type Io = MaybeHttpsStream<TokioIo<TcpStream>>;
type Driver = http1::Connection<Io, RequestBody>;

/// The body of a request to Ollama: the client's, read whole. A concrete type rather than a boxed
/// body: boxing cost an allocation and a dynamic call per poll on every request.
pub type RequestBody = Full<Bytes>;

/// Why an upstream exchange failed.
#[derive(Debug, thiserror::Error)]
pub enum UpstreamError {
    /// Connecting (TCP, TLS) failed.
    #[error("connect: {0}")]
    Connect(#[source] Box<dyn std::error::Error + Send + Sync>),
    /// The HTTP exchange failed (reset, closed, bad response, request body error).
    #[error("exchange: {0}")]
    Exchange(#[from] hyper::Error),
    /// No response headers before the deadline (connecting included).
    #[error("no response headers in time")]
    Timeout,
}

/// One HTTP/1.1 connection to Ollama: the request handle, the connection state machine, and the
/// timer of the deadline for response headers.
struct Conn {
    sender: http1::SendRequest<RequestBody>,
    driver: Driver,
    /// Armed once when the connection opens and then only pushed out when it fires before the
    /// current request's deadline (as `IdleTimeout` does): arming and cancelling a tokio timer on
    /// every request takes the timer wheel's lock twice, ~0.9k instructions of a ~50k request.
    /// Boxed because `Sleep` is `!Unpin`.
    timer: Pin<Box<Sleep>>,
}

/// Idle connections to one upstream, and how to open new ones.
///
/// A connection is boxed once, when it is opened: its state (hyper's buffers and, for `https://`,
/// the TLS session) is over a kilobyte, and it moves on every request (checkout, into the response
/// body, back to the pool); boxed, each move is a pointer instead of a `memcpy`.
pub struct Pool {
    connector: HttpsConnector<HttpConnector>,
    #[expect(clippy::vec_box, reason = "the box is the point: a checkout moves a pointer, not the state")]
    idle: Mutex<Vec<Box<Conn>>>,
}

impl Pool {
    /// A pool that opens connections with `connector`.
    #[must_use]
    pub fn new(connector: HttpsConnector<HttpConnector>) -> Arc<Self> {
        Arc::new(Self { connector, idle: Mutex::new(Vec::new()) })
    }

    /// Sends `request` and waits for the response headers, driving the connection meanwhile, for
    /// at most `timeout` in all (connecting included; then [`UpstreamError::Timeout`]). A reused
    /// connection that turns out closed before the request left is replaced once.
    pub async fn send(
        self: &Arc<Self>,
        request: Request<RequestBody>,
        uri: &Uri,
        timeout: Duration,
    ) -> Result<Response<PooledBody>, UpstreamError> {
        let deadline = Instant::now() + timeout;
        let mut request = request;
        if let Some(mut conn) = self.checkout() {
            match exchange(&mut conn, request, deadline).await {
                Ok(response) => return Ok(self.wrap(conn, response)),
                Err(Retry::Unsent(unsent)) => request = *unsent,
                Err(Retry::Failed(error)) => return Err(error),
            }
        }
        let mut conn = tokio::time::timeout_at(deadline, self.connect(uri, deadline))
            .await
            .map_err(|_| UpstreamError::Timeout)??;
        match exchange(&mut conn, request, deadline).await {
            Ok(response) => Ok(self.wrap(conn, response)),
            Err(Retry::Unsent(_)) => Err(UpstreamError::Connect("connection closed at once".into())),
            Err(Retry::Failed(error)) => Err(error),
        }
    }

    fn wrap(self: &Arc<Self>, conn: Box<Conn>, response: Response<Incoming>) -> Response<PooledBody> {
        response.map(|incoming| PooledBody { incoming, started: false, conn: Some(conn), pool: self.clone() })
    }

    /// An idle connection that is still open, if any.
    fn checkout(&self) -> Option<Box<Conn>> {
        let mut idle = self.idle.lock().ok()?;
        while let Some(mut conn) = idle.pop() {
            // Polling an idle connection once completes its last exchange (its response body was
            // read to the end) and notices an EOF or error that came while it waited, or a
            // `Connection: close` in its last response.
            let waker = Waker::noop();
            let alive = Pin::new(&mut conn.driver).poll(&mut Context::from_waker(waker)).is_pending();
            if alive && conn.sender.is_ready() {
                return Some(conn);
            }
        }
        None
    }

    fn checkin(&self, conn: Box<Conn>) {
        if let Ok(mut idle) = self.idle.lock()
            && idle.len() < MAX_IDLE
        {
            idle.push(conn);
        }
    }

    async fn connect(&self, uri: &Uri, deadline: Instant) -> Result<Box<Conn>, UpstreamError> {
        let mut connector = self.connector.clone();
        poll_fn(|cx| connector.poll_ready(cx)).await.map_err(UpstreamError::Connect)?;
        let io = connector.call(uri.clone()).await.map_err(UpstreamError::Connect)?;
        let (sender, driver) = http1::Builder::new().handshake(io).await?;
        Ok(Box::new(Conn { sender, driver, timer: Box::pin(tokio::time::sleep_until(deadline)) }))
    }
}

enum Retry {
    /// The request never left: it can go on another connection.
    Unsent(Box<Request<RequestBody>>),
    /// It failed after leaving (or could not be retried).
    Failed(UpstreamError),
}

/// Sends `request` on `conn` and polls the response future and the connection together until the
/// response headers arrive or `deadline` passes (the response future is pinned here, not boxed).
async fn exchange(
    conn: &mut Conn,
    request: Request<RequestBody>,
    deadline: Instant,
) -> Result<Response<Incoming>, Retry> {
    let mut sent = pin!(conn.sender.try_send_request(request));
    let mut driver_done = false;
    let answer = poll_fn(|cx| {
        if !driver_done {
            // The connection only finishes on EOF or error; the response future then reports it.
            driver_done = Pin::new(&mut conn.driver).poll(cx).is_ready();
        }
        // The answer can only come out of the connection, turned just above with the task's
        // waker: the response future needs no waker of its own. Given the task's, the answer's
        // arrival woke the task once more for nothing (a whole turn of the client's connection).
        if let Poll::Ready(answer) = sent.as_mut().poll(&mut Context::from_waker(Waker::noop())) {
            return Poll::Ready(Some(answer));
        }
        // The timer may be set for an earlier request's deadline: when it fires, it is pushed out
        // to this one's unless this one has passed too.
        while conn.timer.as_mut().poll(cx).is_ready() {
            if Instant::now() >= deadline {
                return Poll::Ready(None);
            }
            conn.timer.as_mut().reset(deadline);
        }
        Poll::Pending
    })
    .await;
    match answer {
        Some(Ok(response)) => Ok(response),
        Some(Err(mut error)) => Err(match error.take_message() {
            Some(request) => Retry::Unsent(Box::new(request)),
            None => Retry::Failed(UpstreamError::Exchange(error.into_error())),
        }),
        None => Err(Retry::Failed(UpstreamError::Timeout)),
    }
}

/// A response body read through its own connection; the connection returns to the pool when the
/// body has been read to the end, and is closed if the body is dropped early.
pub struct PooledBody {
    incoming: Incoming,
    /// Whether a frame has been asked for yet.
    started: bool,
    conn: Option<Box<Conn>>,
    pool: Arc<Pool>,
}

impl http_body::Body for PooledBody {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, hyper::Error>>> {
        let this = &mut *self;
        // The first frame has usually been decoded with the response head (a small JSON answer is
        // all of it): it is taken without a turn of the connection (~0.7k instructions).
        let mut frame = Poll::Pending;
        if !this.started {
            this.started = true;
            frame = Pin::new(&mut this.incoming).poll_frame(cx);
        }
        if frame.is_pending() {
            if let Some(conn) = this.conn.as_mut()
                && Pin::new(&mut conn.driver).poll(cx).is_ready()
            {
                // Closed or failed: the body reports what happened; the connection is done.
                this.conn = None;
            }
            frame = Pin::new(&mut this.incoming).poll_frame(cx);
        }
        // The server stops polling once `is_end_stream` says so (a body with a length), so the end
        // is taken from either signal.
        let ended = match &frame {
            Poll::Ready(None) => true,
            Poll::Ready(Some(Ok(_))) => this.incoming.is_end_stream(),
            _ => false,
        };
        if ended && let Some(conn) = this.conn.take() {
            // The connection finishes the message (and is checked for being open) on its next
            // turn, at checkout: a turn here cost ~0.7k instructions, and while this frame's bytes
            // were still held it made hyper allocate a new read buffer for the connection.
            this.pool.checkin(conn);
        }
        frame
    }

    fn is_end_stream(&self) -> bool {
        http_body::Body::is_end_stream(&self.incoming)
    }

    fn size_hint(&self) -> SizeHint {
        http_body::Body::size_hint(&self.incoming)
    }
}

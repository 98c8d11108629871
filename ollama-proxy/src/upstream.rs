//! Connections to Ollama that are driven inside the request's own task.
//!
//! hyper's pooled client (which this replaced) runs each upstream connection as a separate task
//! and hands every response chunk to the request's task through a channel, so a burst of NDJSON
//! lines that arrived in one TCP segment leaves as one write per line, each after a cross-task
//! (often cross-thread) wake-up.
//! Here the request's task reads the connection itself: the request head and body leave in one
//! (vectored) write, the response is read into the connection's one buffer, its head is parsed
//! there and its body decoded frame by frame ([`crate::h1`]), so every chunk already received is
//! handed on in the same pass and the server writes them together. Idle connections wait in a
//! small pool, and go back to it only once their response has been read to the end; one that
//! Ollama closed meanwhile is noticed at checkout (a read finds its end) and replaced. `https://`
//! upstreams take the same path over rustls.

use std::future::{Future, poll_fn};
use std::io::{self, IoSlice};
use std::pin::{Pin, pin};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, Waker, ready};
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use http::request::Parts;
use http::{Method, Request, Response, Uri};
use http_body::{Frame, SizeHint};
use hyper_rustls::{HttpsConnector, MaybeHttpsStream};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio::time::{Instant, Sleep};
use tower_service::Service;

use crate::h1::{self, Decoded, Decoder, WireError};

/// Idle connections kept for reuse.
const MAX_IDLE: usize = 64;
/// The read buffer's size: most answers (a JSON reply, a burst of NDJSON lines) fit in one read.
const READ_BUFFER: usize = 8 * 1024;
/// Room below which the read buffer is topped up before a read (taking back its own memory when
/// nothing still holds it, so a connection keeps one allocation across requests).
const MIN_READ: usize = 1024;

/// The body of a request to Ollama: the client's, read whole.
pub type RequestBody = Bytes;

/// Why an upstream exchange failed.
#[derive(Debug, thiserror::Error)]
pub enum UpstreamError {
    /// Connecting (TCP, TLS) failed.
    #[error("connect: {0}")]
    Connect(#[source] Box<dyn std::error::Error + Send + Sync>),
    /// The connection failed (reset, closed) before any byte of a response came: Ollama never
    /// started on the request.
    #[error("exchange: {0}")]
    Exchange(#[from] BodyError),
    /// Ollama started answering, but its head was malformed, over a bound, badly framed, or cut
    /// off: it may have started on the request, so the request is not sent again.
    #[error("bad response: {0}")]
    BadResponse(#[source] BodyError),
    /// No response headers before the deadline (connecting included).
    #[error("no response headers in time")]
    Timeout,
}

/// Why reading from (or writing to) Ollama failed.
#[derive(Debug, thiserror::Error)]
pub enum BodyError {
    /// The socket (or TLS) failed.
    #[error("io: {0}")]
    Io(#[from] io::Error),
    /// Ollama sent something that is not HTTP/1.1 as the proxy takes it, or stopped mid-message.
    #[error(transparent)]
    Wire(#[from] WireError),
}

/// The socket to Ollama: plain TCP, read directly, or TLS through rustls.
enum Stream {
    Plain(TcpStream),
    /// Boxed: the TLS session is over a kilobyte.
    Tls(Box<TokioIo<MaybeHttpsStream<TokioIo<TcpStream>>>>),
}

impl AsyncRead for Stream {
    fn poll_read(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Self::Plain(tcp) => Pin::new(tcp).poll_read(cx, buf),
            Self::Tls(tls) => Pin::new(&mut **tls).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for Stream {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Self::Plain(tcp) => Pin::new(tcp).poll_write(cx, buf),
            Self::Tls(tls) => Pin::new(&mut **tls).poll_write(cx, buf),
        }
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Self::Plain(tcp) => Pin::new(tcp).poll_write_vectored(cx, bufs),
            Self::Tls(tls) => Pin::new(&mut **tls).poll_write_vectored(cx, bufs),
        }
    }

    fn is_write_vectored(&self) -> bool {
        match self {
            Self::Plain(tcp) => tcp.is_write_vectored(),
            Self::Tls(tls) => tls.is_write_vectored(),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Self::Plain(tcp) => Pin::new(tcp).poll_flush(cx),
            Self::Tls(tls) => Pin::new(&mut **tls).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Self::Plain(tcp) => Pin::new(tcp).poll_shutdown(cx),
            Self::Tls(tls) => Pin::new(&mut **tls).poll_shutdown(cx),
        }
    }
}

/// One HTTP/1.1 connection to Ollama: its socket, the bytes read and not yet used, the request
/// head being written, and the timer of the deadline for response headers.
struct Conn {
    stream: Stream,
    buffer: BytesMut,
    head: Vec<u8>,
    parser: h1::HeadParser,
    /// Armed once when the connection opens and then only pushed out when it fires before the
    /// current request's deadline (as `IdleTimeout` does): arming and cancelling a tokio timer on
    /// every request takes the timer wheel's lock twice, ~0.9k instructions of a ~50k request.
    /// Boxed because `Sleep` is `!Unpin`.
    timer: Pin<Box<Sleep>>,
}

impl Conn {
    /// Reads what has arrived into the buffer (`Ok(0)`: the connection has closed).
    fn poll_read(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<usize>> {
        if self.buffer.capacity() - self.buffer.len() < MIN_READ {
            self.buffer.reserve(READ_BUFFER);
        }
        pin!(self.stream.read_buf(&mut self.buffer)).poll(cx)
    }

    /// Whether an idle connection is still open: nothing to read yet. A read that finds the end
    /// (Ollama closed it while it waited), an error or stray bytes mean it cannot be used.
    fn is_open(&mut self) -> bool {
        let mut probe = [0u8; 1];
        match &mut self.stream {
            // No syscall when tokio already knows there is nothing to read.
            Stream::Plain(tcp) => {
                tcp.try_read(&mut probe).is_err_and(|e| e.kind() == io::ErrorKind::WouldBlock)
            }
            Stream::Tls(tls) => {
                let mut probe = ReadBuf::new(&mut probe);
                Pin::new(&mut **tls)
                    .poll_read(&mut Context::from_waker(Waker::noop()), &mut probe)
                    .is_pending()
            }
        }
    }
}

/// Idle connections to one upstream, and how to open new ones.
///
/// A connection is boxed once, when it is opened: its state (and, for `https://`, the TLS session,
/// over a kilobyte) moves on every request (checkout, into the response body, back to the pool);
/// boxed, each move is a pointer instead of a `memcpy`.
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

    /// Sends `request` and waits for the response headers, for at most `timeout` in all
    /// (connecting included; then [`UpstreamError::Timeout`]). A reused connection that turns out
    /// closed before any of the request left is replaced once; so is one that closes or resets
    /// before any byte of an answer came, for a `GET` or `HEAD` only (Ollama closes idle
    /// connections, and one it closed just after the checkout's look is the usual keep-alive
    /// race): a request that left may have reached the box, and as hyper's, Go's and nginx's
    /// clients do, only one that is safe to repeat is sent to it again. Anything else goes back
    /// to the pool's rules (another box, or a 502).
    pub async fn send(
        self: &Arc<Self>,
        request: Request<RequestBody>,
        uri: &Uri,
        timeout: Duration,
    ) -> Result<Response<PooledBody>, UpstreamError> {
        let deadline = Instant::now() + timeout;
        let (parts, body) = request.into_parts();
        if let Some(mut conn) = self.checkout() {
            match exchange(&mut conn, &parts, &body, deadline).await {
                Ok(head) => return Ok(self.wrap(conn, head)),
                Err(Retry::Unsent) => {}
                Err(Retry::Failed(UpstreamError::Exchange(_)))
                    if matches!(parts.method, Method::GET | Method::HEAD) => {}
                Err(Retry::Failed(error)) => return Err(error),
            }
        }
        let mut conn = tokio::time::timeout_at(deadline, self.connect(uri, deadline))
            .await
            .map_err(|_| UpstreamError::Timeout)??;
        match exchange(&mut conn, &parts, &body, deadline).await {
            Ok(head) => Ok(self.wrap(conn, head)),
            Err(Retry::Unsent) => Err(UpstreamError::Connect("connection closed at once".into())),
            Err(Retry::Failed(error)) => Err(error),
        }
    }

    fn wrap(self: &Arc<Self>, conn: Box<Conn>, head: h1::Head) -> Response<PooledBody> {
        let mut body = PooledBody {
            conn: Some(conn),
            decoder: head.body,
            reusable: head.reusable,
            broken: None,
            pool: self.clone(),
        };
        if body.decoder.is_done() {
            // No body (a reply to HEAD, a 204, a 304): nothing will poll it.
            body.finish();
        }
        head.response.map(|()| body)
    }

    /// An idle connection that is still open, if any.
    fn checkout(&self) -> Option<Box<Conn>> {
        let mut idle = self.idle.lock().ok()?;
        while let Some(mut conn) = idle.pop() {
            if conn.is_open() {
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
        let stream = match connector.call(uri.clone()).await.map_err(UpstreamError::Connect)? {
            MaybeHttpsStream::Http(tcp) => Stream::Plain(tcp.into_inner()),
            tls @ MaybeHttpsStream::Https(_) => Stream::Tls(Box::new(TokioIo::new(tls))),
        };
        Ok(Box::new(Conn {
            stream,
            buffer: BytesMut::with_capacity(READ_BUFFER),
            head: Vec::with_capacity(512),
            parser: h1::HeadParser::default(),
            timer: Box::pin(tokio::time::sleep_until(deadline)),
        }))
    }
}

enum Retry {
    /// Nothing of the request left: it can go on another connection.
    Unsent,
    /// It failed after leaving (or could not be retried).
    Failed(UpstreamError),
}

/// Writes the request on `conn` and reads the response head, until it is there or `deadline`
/// passes.
///
/// Ollama may answer before it has read the whole body: Go's `net/http` answers a body it
/// rejects early (a 400 for malformed JSON) with `Connection: close`, and closes with the rest
/// unread, which resets the connection. So while the socket takes no more of the request, what
/// Ollama sent is read too (as hyper's client did): a whole response head ends the write, and a
/// write that fails after some of the request left is followed by reading what Ollama sent before
/// it. Either way its answer is the client's, and the connection, its request cut off, is not
/// used again.
async fn exchange(
    conn: &mut Conn,
    parts: &Parts,
    body: &Bytes,
    deadline: Instant,
) -> Result<h1::Head, Retry> {
    h1::encode_request(&mut conn.head, &parts.method, &parts.uri, &parts.headers, body.len());
    let Conn { stream, buffer, head, parser, timer } = conn;
    let mut request = RequestWrite::new(head, body, matches!(stream, Stream::Tls(_)));
    let mut answer = HeadRead::default();
    // `Some` once the request is written (`Some(None)`) or its write failed after some of it
    // left (`Some(Some(error))`): from then on only the answer is read.
    let mut written: Option<Option<io::Error>> = None;
    poll_fn(|cx| {
        if written.is_none() {
            match request.poll(stream, cx) {
                Poll::Ready(Ok(())) => written = Some(None),
                Poll::Ready(Err(Unwritten::Nothing)) => return Poll::Ready(Err(Retry::Unsent)),
                Poll::Ready(Err(Unwritten::Part(error))) => written = Some(Some(error)),
                Poll::Pending => {
                    // Ollama takes no more for now: it may have answered already.
                    if let Poll::Ready(read) = answer.poll(stream, buffer, parser, &parts.method, cx) {
                        return Poll::Ready(read.map(cut_off).map_err(Retry::Failed));
                    }
                }
            }
        }
        if let Some(failed) = &mut written
            && let Poll::Ready(read) = answer.poll(stream, buffer, parser, &parts.method, cx)
        {
            return Poll::Ready(match (read, failed.take()) {
                (Ok(head), None) => Ok(head),
                (Ok(head), Some(_)) => Ok(cut_off(head)),
                // Nothing came back: the failed write says why.
                (Err(UpstreamError::Exchange(_)), Some(error)) => {
                    Err(Retry::Failed(BodyError::Io(error).into()))
                }
                (Err(error), _) => Err(Retry::Failed(error)),
            });
        }
        // The timer may be set for an earlier request's deadline: pushed out to this one's.
        crate::kept_timer::poll_until(timer, deadline, cx)
            .map(|()| Err(Retry::Failed(UpstreamError::Timeout)))
    })
    .await
}

/// The head of an answer that came before the whole request left: the request was cut off, so the
/// connection carries no other.
fn cut_off(mut head: h1::Head) -> h1::Head {
    head.reusable = false;
    head
}

/// A request write that failed.
#[derive(Debug)]
enum Unwritten {
    /// No byte of the request can have left: it may go on another connection.
    Nothing,
    /// Some of it may have left.
    Part(io::Error),
}

/// A request being written: `head` and `body`, in one vectored write when the socket takes it
/// all. `buffered`: the stream is TLS, whose writes can fail after some of their bytes left.
///
/// A write to TCP that fails sent nothing in that call, so a failure of the first call sent
/// nothing at all. A TLS write (tokio-rustls) takes the plaintext into the session, turns it into
/// records and writes those to the socket until it would block; an error from the socket can come
/// after some records of that very call left, and the error does not say so. So on TLS any
/// failure may have sent part of the request: as after any write that failed once bytes left,
/// what Ollama sent before it is read, and it goes on another connection only if nothing came.
struct RequestWrite<'a> {
    head: &'a [u8],
    body: &'a [u8],
    buffered: bool,
    written: usize,
}

impl<'a> RequestWrite<'a> {
    fn new(head: &'a [u8], body: &'a [u8], buffered: bool) -> Self {
        Self { head, body, buffered, written: 0 }
    }

    /// Writes what the socket takes; ready once all of it left and was flushed, or it failed.
    fn poll<S: AsyncWrite + Unpin>(
        &mut self,
        stream: &mut S,
        cx: &mut Context<'_>,
    ) -> Poll<Result<(), Unwritten>> {
        let (head, body) = (self.head, self.body);
        while self.written < head.len() + body.len() {
            let (head_left, body_left) = if self.written < head.len() {
                (&head[self.written..], body)
            } else {
                (&head[..0], &body[self.written - head.len()..])
            };
            let slices = [IoSlice::new(head_left), IoSlice::new(body_left)];
            match ready!(Pin::new(&mut *stream).poll_write_vectored(cx, &slices)) {
                Ok(0) => return Poll::Ready(Err(self.failed(io::ErrorKind::WriteZero.into()))),
                Ok(n) => self.written += n,
                Err(error) => return Poll::Ready(Err(self.failed(error))),
            }
        }
        Pin::new(stream).poll_flush(cx).map_err(|error| self.failed(error))
    }

    fn failed(&self, error: io::Error) -> Unwritten {
        if self.written == 0 && !self.buffered { Unwritten::Nothing } else { Unwritten::Part(error) }
    }
}

/// Reading a response head into the connection's buffer. A failure before any byte of an answer
/// came is [`UpstreamError::Exchange`] (the request may go to another box); once Ollama has sent
/// something, it is [`UpstreamError::BadResponse`] (it may not).
#[derive(Default)]
struct HeadRead {
    /// Whether Ollama sent anything: interim (`1xx`) heads are taken off the buffer, so it is
    /// remembered apart.
    answered: bool,
}

impl HeadRead {
    /// Reads until `buffer` starts with a whole response head, and takes it. The buffer is empty
    /// at first: a connection goes back to the pool only when nothing was read past its last
    /// message.
    fn poll<S: AsyncRead + Unpin>(
        &mut self,
        stream: &mut S,
        buffer: &mut BytesMut,
        parser: &mut h1::HeadParser,
        method: &Method,
        cx: &mut Context<'_>,
    ) -> Poll<Result<h1::Head, UpstreamError>> {
        loop {
            if !buffer.is_empty() {
                self.answered = true;
                match parser.parse(buffer, method) {
                    Ok(Some(head)) => return Poll::Ready(Ok(head)),
                    Ok(None) => {}
                    Err(error) => return Poll::Ready(Err(UpstreamError::BadResponse(error.into()))),
                }
            }
            if buffer.capacity() - buffer.len() < MIN_READ {
                buffer.reserve(READ_BUFFER);
            }
            let failed = match ready!(pin!(stream.read_buf(buffer)).poll(cx)) {
                Ok(0) if self.answered => BodyError::Wire(parser.at_eof(buffer)),
                Ok(0) => BodyError::Wire(WireError::Closed),
                Ok(_) => continue,
                Err(error) => BodyError::Io(error),
            };
            return Poll::Ready(Err(if self.answered {
                UpstreamError::BadResponse(failed)
            } else {
                failed.into()
            }));
        }
    }
}

/// A response body read through its own connection; the connection returns to the pool when the
/// body has been read to the end (and the connection may carry another request), and is closed if
/// the body is dropped early or fails.
pub struct PooledBody {
    /// `None` once the body has ended or failed.
    conn: Option<Box<Conn>>,
    decoder: Decoder,
    reusable: bool,
    /// Why the body broke, until it is reported.
    broken: Option<BodyError>,
    pool: Arc<Pool>,
}

impl PooledBody {
    /// The body has ended: its connection goes back to the pool if it can carry another request
    /// (nothing past the message was read).
    fn finish(&mut self) {
        if let Some(conn) = self.conn.take()
            && self.reusable
            && conn.buffer.is_empty()
        {
            self.pool.checkin(conn);
        }
    }

    /// The body broke: the error is reported on the next poll, after a turn of the task. The
    /// server flushes what it has before waiting (the frames already passed on); reported at once,
    /// it would close the client's connection with them still unsent.
    fn fail(&mut self, error: BodyError, cx: &Context<'_>) -> Poll<Option<Result<Frame<Bytes>, BodyError>>> {
        self.conn = None;
        self.broken = Some(error);
        cx.waker().wake_by_ref();
        Poll::Pending
    }
}

impl http_body::Body for PooledBody {
    type Data = Bytes;
    type Error = BodyError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BodyError>>> {
        let this = &mut *self;
        loop {
            let Some(conn) = this.conn.as_mut() else { return Poll::Ready(this.broken.take().map(Err)) };
            // What has already arrived is decoded first: a small JSON answer came with the head.
            match this.decoder.decode(&mut conn.buffer) {
                Ok(Decoded::Data(data)) => {
                    if this.decoder.is_done() {
                        // The server stops polling once `is_end_stream` says so (a body with a
                        // length): the connection goes back now.
                        this.finish();
                    }
                    return Poll::Ready(Some(Ok(Frame::data(data))));
                }
                Ok(Decoded::End) => {
                    this.finish();
                    return Poll::Ready(None);
                }
                Ok(Decoded::More) => {}
                Err(error) => return this.fail(error.into(), cx),
            }
            match conn.poll_read(cx) {
                Poll::Pending => return Poll::Pending,
                Poll::Ready(Ok(0)) => {
                    if let Err(error) = this.decoder.at_eof() {
                        return this.fail(error.into(), cx);
                    }
                    this.reusable = false;
                    this.finish();
                    return Poll::Ready(None);
                }
                Poll::Ready(Ok(_)) => {}
                Poll::Ready(Err(error)) => return this.fail(error.into(), cx),
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.decoder.is_done()
    }

    fn size_hint(&self) -> SizeHint {
        match self.decoder.remaining() {
            Some(left) => SizeHint::with_exact(left),
            None => SizeHint::default(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A socket that takes `accept` bytes in its first write, then fails every write.
    struct Failing {
        accept: usize,
        calls: usize,
    }

    impl AsyncWrite for Failing {
        fn poll_write(mut self: Pin<&mut Self>, _: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
            self.calls += 1;
            if self.calls == 1 && self.accept > 0 {
                return Poll::Ready(Ok(self.accept.min(buf.len())));
            }
            Poll::Ready(Err(io::ErrorKind::ConnectionReset.into()))
        }

        fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
            Poll::Ready(Ok(()))
        }

        fn poll_shutdown(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
            Poll::Ready(Ok(()))
        }
    }

    /// What writing a request to a [`Failing`] socket gives (it never waits, so one poll ends it).
    fn write(accept: usize, buffered: bool) -> Result<(), Unwritten> {
        let mut socket = Failing { accept, calls: 0 };
        let mut request = RequestWrite::new(b"POST / HTTP/1.1\r\n\r\n", b"{}", buffered);
        match request.poll(&mut socket, &mut Context::from_waker(Waker::noop())) {
            Poll::Ready(result) => result,
            Poll::Pending => panic!("the socket never waits"),
        }
    }

    #[test]
    fn a_failed_write_counts_as_unsent_only_on_tcp_and_before_any_byte_was_taken() {
        // TCP: a failed first write sent nothing; a failure after bytes were taken did.
        assert!(matches!(write(0, false), Err(Unwritten::Nothing)));
        assert!(matches!(write(3, false), Err(Unwritten::Part(_))));
        // TLS: records may have left before the error, even in the first write.
        assert!(matches!(write(0, true), Err(Unwritten::Part(_))));
        assert!(matches!(write(3, true), Err(Unwritten::Part(_))));
    }
}

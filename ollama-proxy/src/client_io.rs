//! The client's socket as hyper sees it: a write timeout, and a lingering close.
//!
//! - **Write timeout.** hyper stops polling a response body while the socket is full, so a client
//!   that stops reading would keep its stream (and its in-flight slot) for ever: no body timer runs
//!   while the body is not polled. Here a write that stays blocked for `write_timeout` fails, hyper
//!   drops the connection, and the stream's slot is released. The timer is armed only once a write
//!   is blocked, so a client that keeps up costs nothing.
//! - **Lingering close** (like nginx's `lingering_close`). When hyper answers before reading the
//!   whole request (a 413 for a body that is still arriving, a 431, a 401 to a POST) and closes,
//!   closing a socket with unread input makes the kernel send a reset, and a client still sending
//!   its body (Python's urllib, curl) sees "connection reset" instead of the answer. So on close the
//!   write side is shut first (the client sees the end of the answer), then what the client still
//!   sends is read and thrown away until it closes too, for at most [`LINGER_TIME`] in all,
//!   [`LINGER_IDLE`] without data, and [`LINGER_BYTES`].

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll, ready};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio::time::{Instant, Sleep};

/// Longest lingering close, in all.
pub const LINGER_TIME: Duration = Duration::from_secs(10);
/// Longest pause in the client's input while lingering.
pub const LINGER_IDLE: Duration = Duration::from_secs(2);
/// Most bytes read and thrown away while lingering.
pub const LINGER_BYTES: u64 = 64 << 20;

/// A client connection with a write timeout and a lingering close.
pub struct ClientIo {
    stream: TcpStream,
    write_timeout: Duration,
    /// Armed while a write is blocked, and while lingering; boxed because `Sleep` is `!Unpin`,
    /// created the first time it is needed.
    timer: Option<Pin<Box<Sleep>>>,
    /// When the current blocked write started to wait (`None`: not blocked).
    blocked_since: Option<Instant>,
    linger: Option<Linger>,
}

struct Linger {
    started: Instant,
    last_input: Instant,
    drained: u64,
}

impl ClientIo {
    /// Wraps an accepted client socket.
    #[must_use]
    pub fn new(stream: TcpStream, write_timeout: Duration) -> Self {
        Self { stream, write_timeout, timer: None, blocked_since: None, linger: None }
    }

    /// Polls the timer set for `deadline` (resetting it if it was set for another time).
    fn timer_fired(&mut self, deadline: Instant, cx: &mut Context<'_>) -> bool {
        let timer = self.timer.get_or_insert_with(|| Box::pin(tokio::time::sleep_until(deadline)));
        if timer.deadline() != deadline {
            timer.as_mut().reset(deadline);
        }
        timer.as_mut().poll(cx).is_ready()
    }

    /// Turns a blocked write into a timeout error once it has waited `write_timeout`.
    fn on_write<T>(&mut self, result: Poll<io::Result<T>>, cx: &mut Context<'_>) -> Poll<io::Result<T>> {
        if result.is_ready() {
            self.blocked_since = None;
            return result;
        }
        let since = *self.blocked_since.get_or_insert_with(Instant::now);
        if self.timer_fired(since + self.write_timeout, cx) {
            return Poll::Ready(Err(io::Error::new(io::ErrorKind::TimedOut, "client stopped reading")));
        }
        Poll::Pending
    }

    /// Reads and discards the client's input until it closes or a linger limit is reached.
    fn poll_linger(&mut self, cx: &mut Context<'_>) -> Poll<()> {
        let mut scratch = [0u8; 8192];
        loop {
            let linger = self.linger.get_or_insert_with(|| {
                let now = Instant::now();
                Linger { started: now, last_input: now, drained: 0 }
            });
            let mut buf = ReadBuf::new(&mut scratch);
            match Pin::new(&mut self.stream).poll_read(cx, &mut buf) {
                // The client closed (or broke) its side: nothing is left to reset.
                Poll::Ready(Ok(())) if buf.filled().is_empty() => return Poll::Ready(()),
                Poll::Ready(Err(_)) => return Poll::Ready(()),
                Poll::Ready(Ok(())) => {
                    linger.drained += buf.filled().len() as u64;
                    linger.last_input = Instant::now();
                    if linger.drained > LINGER_BYTES {
                        return Poll::Ready(());
                    }
                }
                Poll::Pending => {
                    let deadline = (linger.last_input + LINGER_IDLE).min(linger.started + LINGER_TIME);
                    if self.timer_fired(deadline, cx) {
                        return Poll::Ready(());
                    }
                    return Poll::Pending;
                }
            }
        }
    }
}

impl AsyncRead for ClientIo {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_read(cx, buf)
    }
}

impl AsyncWrite for ClientIo {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        let result = Pin::new(&mut self.stream).poll_write(cx, buf);
        self.on_write(result, cx)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let result = Pin::new(&mut self.stream).poll_write_vectored(cx, bufs);
        self.on_write(result, cx)
    }

    fn is_write_vectored(&self) -> bool {
        self.stream.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        if self.linger.is_none() {
            ready!(Pin::new(&mut self.stream).poll_shutdown(cx))?;
        }
        self.poll_linger(cx).map(Ok)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    async fn pair(write_timeout: Duration) -> (ClientIo, TcpStream) {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        let (client, accepted) = tokio::join!(TcpStream::connect(addr), listener.accept());
        (ClientIo::new(accepted.expect("accept").0, write_timeout), client.expect("connect"))
    }

    #[tokio::test]
    async fn a_write_blocked_longer_than_the_timeout_fails() {
        let (mut server, _client) = pair(Duration::from_millis(200)).await;
        let chunk = vec![0u8; 1 << 16];
        // The client never reads: the socket buffers fill, then the write waits and fails.
        let error = loop {
            if let Err(error) = server.write_all(&chunk).await {
                break error;
            }
        };
        assert_eq!(error.kind(), io::ErrorKind::TimedOut);
    }

    #[tokio::test]
    async fn shutdown_ends_the_answer_and_waits_for_the_client_to_close() {
        let (mut server, mut client) = pair(Duration::from_secs(5)).await;
        server.write_all(b"answer").await.expect("write");
        client.write_all(&vec![b'x'; 100_000]).await.expect("unread input");
        let closing = tokio::spawn(async move { server.shutdown().await });
        let mut answer = Vec::new();
        client.read_to_end(&mut answer).await.expect("the answer, then the end; no reset");
        assert_eq!(answer, b"answer");
        drop(client);
        assert!(closing.await.is_ok_and(|r| r.is_ok()));
    }
}

//! Body wrappers for streaming: a pause limit between frames, and a guard held until the end.
//!
//! Bodies are passed through frame by frame, never collected, so an NDJSON or SSE chunk reaches
//! the client as soon as Ollama writes it.

use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use pin_project_lite::pin_project;
use tokio::time::{Instant, Sleep};

/// Boxed error type for bodies.
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// The body paused for longer than allowed.
#[derive(Debug, thiserror::Error)]
#[error("body idle for longer than {0:?}")]
pub struct IdleTimeoutError(pub Duration);

pin_project! {
    /// Fails the body when no frame arrives for `idle`.
    ///
    /// The timer is not re-armed on every frame (that takes the timer driver's lock each time);
    /// a frame only records when it came, and when the timer fires it is pushed out to
    /// `last frame + idle` if the body was not idle after all. It is made the first time the body
    /// has to wait: a body that is all there at once (a small JSON answer, a request body) never
    /// makes one, and stays small to move.
    pub struct IdleTimeout<B> {
        #[pin]
        inner: B,
        sleep: Option<Pin<Box<Sleep>>>,
        idle: Duration,
        last_frame: Instant,
    }
}

impl<B> IdleTimeout<B> {
    /// Wraps `inner` with a pause limit of `idle`.
    pub fn new(inner: B, idle: Duration) -> Self {
        Self { inner, sleep: None, idle, last_frame: Instant::now() }
    }
}

impl<B> Body for IdleTimeout<B>
where
    B: Body<Data = Bytes>,
    B::Error: Into<BoxError>,
{
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = self.project();
        if let Poll::Ready(frame) = this.inner.poll_frame(cx) {
            *this.last_frame = Instant::now();
            return Poll::Ready(frame.map(|r| r.map_err(Into::into)));
        }
        let deadline = *this.last_frame + *this.idle;
        let sleep = this.sleep.get_or_insert_with(|| Box::pin(tokio::time::sleep_until(deadline)));
        let idle = *this.idle;
        crate::kept_timer::poll_until(sleep, deadline, cx)
            .map(|()| Some(Err(Box::new(IdleTimeoutError(idle)) as BoxError)))
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

pin_project! {
    /// Keeps `guard` alive until the body is finished or dropped (an in-flight slot, say).
    pub struct Guarded<B, G> {
        #[pin]
        inner: B,
        guard: G,
    }
}

impl<B, G> Guarded<B, G> {
    /// Ties `guard`'s lifetime to `inner`.
    pub fn new(inner: B, guard: G) -> Self {
        Self { inner, guard }
    }
}

impl<B: Body, G> Body for Guarded<B, G> {
    type Data = B::Data;
    type Error = B::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<B::Data>, B::Error>>> {
        self.project().inner.poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

/// Whether `error` or any error it wraps is of type `E`.
pub fn caused_by<E: std::error::Error + 'static>(error: &(dyn std::error::Error + 'static)) -> bool {
    let mut current = Some(error);
    while let Some(e) = current {
        if e.is::<E>() {
            return true;
        }
        current = e.source();
    }
    false
}

#[cfg(test)]
mod tests {
    use super::*;
    use http_body_util::BodyExt;

    /// One frame, then nothing for ever: a client that stalls mid-body.
    #[derive(Default)]
    struct OneThenPending(bool);

    impl Body for OneThenPending {
        type Data = Bytes;
        type Error = std::convert::Infallible;

        fn poll_frame(
            mut self: Pin<&mut Self>,
            _: &mut Context<'_>,
        ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
            if self.0 {
                Poll::Pending
            } else {
                self.0 = true;
                Poll::Ready(Some(Ok(Frame::data(Bytes::from_static(b"x")))))
            }
        }
    }

    #[tokio::test(start_paused = true)]
    async fn a_body_that_pauses_too_long_fails() {
        let mut body =
            std::pin::pin!(IdleTimeout::new(OneThenPending::default(), Duration::from_millis(100)));
        let first = body.frame().await;
        assert!(first.is_some_and(|f| f.is_ok()));
        let second = body.frame().await;
        assert!(second.is_some_and(|f| f.is_err_and(|e| caused_by::<IdleTimeoutError>(&*e))));
    }

    /// Frames sent through a channel: a producer with its own pace.
    struct Channel(tokio::sync::mpsc::Receiver<Bytes>);

    impl Body for Channel {
        type Data = Bytes;
        type Error = std::convert::Infallible;

        fn poll_frame(
            mut self: Pin<&mut Self>,
            cx: &mut Context<'_>,
        ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
            self.0.poll_recv(cx).map(|b| b.map(|b| Ok(Frame::data(b))))
        }
    }

    #[tokio::test(start_paused = true)]
    async fn a_body_that_keeps_sending_within_the_limit_never_times_out() {
        let (sender, receiver) = tokio::sync::mpsc::channel(1);
        tokio::spawn(async move {
            for _ in 0..10 {
                tokio::time::sleep(Duration::from_millis(60)).await;
                if sender.send(Bytes::from_static(b"chunk")).await.is_err() {
                    return;
                }
            }
        });
        let body = IdleTimeout::new(Channel(receiver), Duration::from_millis(100));
        let collected = body.collect().await.map(http_body_util::Collected::to_bytes);
        assert_eq!(collected.map(|b| b.len()).ok(), Some(50));
    }
}

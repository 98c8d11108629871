//! The client's header deadline (`PROXY_HEADER_TIMEOUT_MS`) on one tokio timer per connection.
//!
//! hyper asks its timer for a new sleep each time it starts reading a request head, and polls it
//! when the head is not all there yet: on a keep-alive connection, after every response. With
//! hyper-util's `TokioTimer` each of those is a new tokio timer, and tokio wakes its own event loop
//! (a `write` to its eventfd, then an `epoll_wait` that returns at once) whenever a new timer is
//! due before the wake-up the loop last planned, even from the loop's own thread: 0.4–0.8 extra
//! syscalls per request, measured under `wrk` (nginx makes none). Here a connection keeps one tokio
//! timer, armed the first time hyper waits for a head and then only pushed out when it fires before
//! the deadline hyper asked for (as the upstream connection's timer does, `src/upstream.rs`). Every
//! deadline is kept exactly; the timer is registered again about once per header timeout rather
//! than once per request.

use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use tokio::time::Sleep;

/// hyper's timer for one client connection (one per connection: its tokio timer wakes that
/// connection's task).
#[derive(Default)]
pub struct HeaderTimer {
    /// The connection's tokio timer while no head is awaited; boxed because `Sleep` is `!Unpin`.
    idle: Arc<Mutex<Option<Pin<Box<Sleep>>>>>,
}

impl hyper::rt::Timer for HeaderTimer {
    fn sleep(&self, duration: Duration) -> Pin<Box<dyn hyper::rt::Sleep>> {
        self.sleep_until(Instant::now() + duration)
    }

    fn sleep_until(&self, deadline: Instant) -> Pin<Box<dyn hyper::rt::Sleep>> {
        Box::pin(HeaderSleep { deadline: deadline.into(), timer: None, idle: self.idle.clone() })
    }

    fn reset(&self, sleep: &mut Pin<Box<dyn hyper::rt::Sleep>>, new_deadline: Instant) {
        match sleep.as_mut().downcast_mut_pin::<HeaderSleep>() {
            Some(header) => header.get_mut().deadline = new_deadline.into(),
            None => *sleep = self.sleep_until(new_deadline),
        }
    }
}

/// One wait for a head: resolves at `deadline`, on the connection's timer.
struct HeaderSleep {
    deadline: tokio::time::Instant,
    /// The connection's timer, taken on the first poll and given back when this wait ends.
    timer: Option<Pin<Box<Sleep>>>,
    idle: Arc<Mutex<Option<Pin<Box<Sleep>>>>>,
}

impl Future for HeaderSleep {
    type Output = ();

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        let this = self.get_mut();
        let deadline = this.deadline;
        let timer = this.timer.get_or_insert_with(|| {
            let kept = this.idle.lock().ok().and_then(|mut idle| idle.take());
            kept.unwrap_or_else(|| Box::pin(tokio::time::sleep_until(deadline)))
        });
        // Never later than asked (a deadline only moves forward on a connection, but hyper may
        // reset one).
        if timer.deadline() > deadline {
            timer.as_mut().reset(deadline);
        }
        // Set for an earlier wait's deadline, it fires early: pushed out to this one's.
        crate::kept_timer::poll_until(timer, deadline, cx)
    }
}

impl Drop for HeaderSleep {
    fn drop(&mut self) {
        if let Some(timer) = self.timer.take()
            && let Ok(mut idle) = self.idle.lock()
        {
            *idle = Some(timer);
        }
    }
}

impl hyper::rt::Sleep for HeaderSleep {}

#[cfg(test)]
mod tests {
    use super::*;
    use hyper::rt::Timer;

    /// Polls `sleep` once (on a no-op waker): whether it has fired.
    fn fired(sleep: &mut Pin<Box<dyn hyper::rt::Sleep>>) -> bool {
        sleep.as_mut().poll(&mut Context::from_waker(std::task::Waker::noop())).is_ready()
    }

    #[tokio::test(start_paused = true)]
    async fn each_wait_fires_at_its_own_deadline_on_the_connections_one_timer() {
        let timer = HeaderTimer::default();
        let start = tokio::time::Instant::now().into_std();
        // The first wait arms the timer for start + 10 s and ends (its head came).
        let mut first = timer.sleep_until(start + Duration::from_secs(10));
        assert!(!fired(&mut first));
        drop(first);
        // The next head is awaited from start + 6 s: the kept timer fires at start + 10 s, early
        // for this wait, and is pushed out to start + 16 s.
        tokio::time::advance(Duration::from_secs(6)).await;
        let mut second = timer.sleep_until(start + Duration::from_secs(16));
        assert!(!fired(&mut second));
        tokio::time::advance(Duration::from_secs(4)).await;
        assert!(!fired(&mut second), "fired at the first wait's deadline");
        tokio::time::advance(Duration::from_millis(5_999)).await;
        assert!(!fired(&mut second), "fired before its deadline");
        tokio::time::advance(Duration::from_millis(1)).await;
        assert!(fired(&mut second), "did not fire at its deadline");
    }

    #[tokio::test(start_paused = true)]
    async fn a_kept_timer_set_later_is_brought_forward_and_reset_moves_a_wait() {
        let timer = HeaderTimer::default();
        let start = tokio::time::Instant::now().into_std();
        let mut long = timer.sleep_until(start + Duration::from_secs(30));
        assert!(!fired(&mut long));
        drop(long);
        let mut short = timer.sleep_until(start + Duration::from_secs(1));
        assert!(!fired(&mut short));
        tokio::time::advance(Duration::from_secs(1)).await;
        assert!(fired(&mut short), "a wait fired at a kept timer's later deadline");
        drop(short);
        let mut moved = timer.sleep_until(start + Duration::from_secs(2));
        timer.reset(&mut moved, start + Duration::from_secs(5));
        tokio::time::advance(Duration::from_secs(2)).await;
        assert!(!fired(&mut moved), "reset did not move the deadline");
        tokio::time::advance(Duration::from_secs(2)).await;
        assert!(fired(&mut moved));
    }
}

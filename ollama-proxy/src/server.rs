//! Worker threads, the accept loop (HTTP/1.1 with a header deadline against slowloris), and
//! graceful shutdown.
//!
//! Like nginx's worker processes, each worker thread runs an event loop of its own (a
//! single-threaded tokio runtime); a connection, its requests and its upstream connections stay on
//! the thread that got it. Compared with one work-stealing runtime this saves the cross-thread
//! wake-ups, locks and frees on every request. The first worker (the calling thread) also accepts
//! and deals connections round-robin: workers that all waited on one socket would not share a
//! burst of connections (the first one awake takes them all), and `SO_REUSEPORT` would need a
//! second bind and spread them only by hash.
//! Written on hyper directly rather than `axum::serve` because only hyper's connection builder
//! exposes `header_read_timeout` and the header limits.
//!
//! Memory per connection is bounded: at most `PROXY_MAX_CONNECTIONS` are open (the acceptor holds
//! one permit per connection, across all workers; one over the cap is answered 503 and closed at
//! once), a header block over `PROXY_MAX_HEADER_BYTES` or `PROXY_MAX_HEADERS` lines is a 431 (hyper's
//! read buffer is capped at the same size, instead of its ~400 KB default), and a client that does
//! not finish its headers within `PROXY_HEADER_TIMEOUT_MS` (also between keep-alive requests) is
//! dropped.

use std::io;
use std::time::Duration;

use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use hyper_util::server::graceful::GracefulShutdown;
use prometheus_client::metrics::gauge::Gauge;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, mpsc};

use crate::client_io::ClientIo;
use crate::header_timer::HeaderTimer;
use crate::{App, AppState};

/// A connection on its way to a worker, with its place under the connection cap.
type Handed = (std::net::TcpStream, ConnectionSlot);

/// Pending connections the kernel queues for accept (tokio's default; `std` would use 128, which
/// a burst of clients overflows).
pub const BACKLOG: i32 = 1024;

/// Binds the listening socket (`SO_REUSEADDR`, a [`BACKLOG`] queue), non-blocking, before any
/// event loop exists.
pub fn bind(addr: std::net::SocketAddr) -> io::Result<std::net::TcpListener> {
    let socket = socket2::Socket::new(socket2::Domain::for_address(addr), socket2::Type::STREAM, None)?;
    socket.set_reuse_address(true)?;
    socket.set_nonblocking(true)?;
    socket.bind(&addr.into())?;
    socket.listen(BACKLOG)?;
    Ok(socket.into())
}

/// Serves `listener` on `workers` threads (the calling thread is the first) until SIGTERM or
/// Ctrl-C, then drains them all. Returns whether every open request finished in time.
pub fn run(listener: std::net::TcpListener, state: &AppState, workers: usize) -> io::Result<bool> {
    listener.set_nonblocking(true)?;
    let mut others = Vec::new();
    let mut threads = Vec::new();
    for n in 1..workers.max(1) {
        let runtime = event_loop()?;
        let (send, receive) = mpsc::unbounded_channel::<Handed>();
        let state = state.for_worker();
        let thread = std::thread::Builder::new()
            .name(format!("worker-{n}"))
            .spawn(move || runtime.block_on(worker(receive, state)))?;
        others.push(send);
        threads.push(thread);
    }
    let mut drained = event_loop()?.block_on(accept(listener, state, others))?;
    for thread in threads {
        let name = thread.thread().name().unwrap_or("worker").to_owned();
        drained &= thread.join().unwrap_or_else(|_| {
            tracing::error!(worker = name, "worker thread panicked");
            false
        });
    }
    if drained {
        tracing::info!("all connections finished");
    } else {
        tracing::warn!("shutdown timeout reached with connections still open");
    }
    Ok(drained)
}

fn event_loop() -> io::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_current_thread().enable_all().build()
}

/// How long a worker's event loop keeps turning after shutdown begins, before open connections are
/// told to finish: a connection accepted just before the signal has not been read yet, and hyper
/// closes a connection that has read nothing at once, even when a whole request is waiting in it.
const LAST_READS: Duration = Duration::from_millis(20);

/// The first worker: accepts until a shutdown signal, serving every `others.len() + 1`-th
/// connection itself and handing the rest on (through unbounded channels: a worker that falls
/// behind queues connections rather than refusing them); then closes the socket and drains.
async fn accept(
    listener: std::net::TcpListener,
    state: &AppState,
    others: Vec<mpsc::UnboundedSender<Handed>>,
) -> io::Result<bool> {
    let listener = TcpListener::from_std(listener)?;
    let connections = Connections::new(state.clone());
    let mut turn = 0;
    let mut shutdown = std::pin::pin!(shutdown_signal());
    loop {
        tokio::select! {
            accepted = listener.accept() => {
                let stream = match accepted {
                    Ok((stream, _)) => stream,
                    Err(error) => {
                        // Out of file descriptors and the like: back off instead of spinning.
                        tracing::warn!(%error, "accept failed");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    }
                };
                let Some(slot) = ConnectionSlot::take(state) else {
                    refuse(&stream, state);
                    continue;
                };
                turn = (turn + 1) % (others.len() + 1);
                if turn == 0 {
                    connections.serve(stream, slot);
                    continue;
                }
                // The stream leaves this thread's event loop and joins the other's.
                match stream.into_std().map(|stream| others[turn - 1].send((stream, slot))) {
                    Ok(Ok(())) => {}
                    // That worker is gone (only a panic ends one early): serve it here instead.
                    Ok(Err(mpsc::error::SendError((stream, slot)))) => match TcpStream::from_std(stream) {
                        Ok(stream) => connections.serve(stream, slot),
                        Err(error) => tracing::warn!(%error, "cannot take a connection back"),
                    },
                    Err(error) => tracing::warn!(%error, "cannot hand a connection on"),
                }
            }
            () = &mut shutdown => break,
        }
    }
    drop(listener);
    state.start_draining();
    tracing::info!(timeout_ms = state.settings.shutdown_timeout.as_millis() as u64, "draining");
    // Closing the channels tells the other workers to drain too.
    drop(others);
    Ok(connections.drain().await)
}

/// Any other worker: serves the connections it is handed until the acceptor stops, then drains.
async fn worker(mut handed: mpsc::UnboundedReceiver<Handed>, state: AppState) -> bool {
    let connections = Connections::new(state);
    while let Some((stream, slot)) = handed.recv().await {
        match TcpStream::from_std(stream) {
            Ok(stream) => connections.serve(stream, slot),
            Err(error) => tracing::warn!(%error, "cannot take a connection over"),
        }
    }
    connections.drain().await
}

/// The HTTP connections of one worker.
struct Connections {
    app: App,
    /// Every setting but the timer, which is per connection.
    builder: http1::Builder,
    graceful: GracefulShutdown,
}

impl Connections {
    fn new(state: AppState) -> Self {
        let settings = &state.settings;
        let mut builder = http1::Builder::new();
        builder
            .header_read_timeout(settings.header_timeout)
            .keep_alive(true)
            .max_buf_size(settings.max_header_bytes.max(MIN_BUF_SIZE))
            .max_header_size(settings.max_header_bytes);
        // hyper parses up to 100 headers on the stack; any explicit count moves them to the heap
        // (an allocation per request), so the count is only set when it differs.
        if settings.max_headers != HYPER_DEFAULT_MAX_HEADERS {
            builder.max_headers(settings.max_headers);
        }
        Self { app: App(std::sync::Arc::new(state)), builder, graceful: GracefulShutdown::new() }
    }

    /// Serves one connection on this worker's event loop; `slot` is given back when it ends.
    fn serve(&self, stream: TcpStream, slot: ConnectionSlot) {
        let _ = stream.set_nodelay(true);
        let io = ClientIo::new(stream, self.app.0.settings.write_timeout);
        let app = self.app.clone();
        // Each connection gets a timer of its own (see `HeaderTimer`).
        let connection = self
            .builder
            .clone()
            .timer(HeaderTimer::default())
            .serve_connection(TokioIo::new(io), service_fn(move |request| app.call(request)));
        let connection = self.graceful.watch(connection);
        tokio::spawn(async move {
            if let Err(error) = connection.await {
                tracing::debug!(%error, "connection ended with an error");
            }
            drop(slot);
        });
    }

    /// Lets open requests and streams finish, for up to the shutdown timeout.
    async fn drain(self) -> bool {
        // Connections accepted in the last turns get their requests read first (see `LAST_READS`).
        tokio::time::sleep(LAST_READS).await;
        tokio::select! {
            () = self.graceful.shutdown() => true,
            () = tokio::time::sleep(self.app.0.settings.shutdown_timeout) => false,
        }
    }
}

/// hyper's smallest read buffer.
const MIN_BUF_SIZE: usize = 8192;
/// hyper's header count when none is set.
const HYPER_DEFAULT_MAX_HEADERS: usize = 100;

/// One place under `PROXY_MAX_CONNECTIONS`, held for the life of a connection.
pub struct ConnectionSlot {
    _permit: OwnedSemaphorePermit,
    gauge: Gauge,
}

impl ConnectionSlot {
    /// A free place, if any.
    fn take(state: &AppState) -> Option<Self> {
        let permit = state.connection_slots.clone().try_acquire_owned().ok()?;
        let gauge = state.metrics.open_connections.clone();
        gauge.inc();
        Some(Self { _permit: permit, gauge })
    }
}

impl Drop for ConnectionSlot {
    fn drop(&mut self) {
        self.gauge.dec();
    }
}

/// Answers a connection over the cap with a 503 (if the socket takes it at once) and closes it.
/// Nothing is read and nothing waits: a flood of connections costs a write and a close each.
fn refuse(stream: &TcpStream, state: &AppState) {
    const BODY: &str = r#"{"type":"about:blank","title":"Service Unavailable","status":503,"detail":"too many open connections; retry later"}"#;
    let answer = format!(
        "HTTP/1.1 503 Service Unavailable\r\ncontent-type: application/problem+json\r\nretry-after: {}\r\nconnection: close\r\ncontent-length: {}\r\n\r\n{BODY}",
        state.settings.retry_after_secs,
        BODY.len()
    );
    let _ = stream.try_write(answer.as_bytes());
    state.metrics.record_rejection("too_many_connections");
}

/// Resolves on SIGTERM or Ctrl-C.
pub async fn shutdown_signal() {
    let ctrl_c = async {
        if tokio::signal::ctrl_c().await.is_err() {
            std::future::pending::<()>().await;
        }
    };
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => tracing::info!(signal = "SIGINT", "shutting down"),
        () = terminate => tracing::info!(signal = "SIGTERM", "shutting down"),
    }
}

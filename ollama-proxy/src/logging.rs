//! JSON logs on stdout, written in batches like nginx's `access_log ... buffer= flush=`.
//!
//! One `write` per request line costs about as much CPU as the rest of a small proxied request,
//! so lines are gathered in memory and written every [`FLUSH_EVERY`], when [`MAX_BUFFERED`] bytes
//! are waiting, or at once for warnings and errors. [`flush`] is called at start and at shutdown so
//! nothing is held back then.
//!
//! Serving never waits for stdout: request threads only append to the buffer (a short lock, no
//! IO); the `log-flush` thread is the one that writes, outside that lock. When stdout is not read
//! (a stalled log pipe), that thread blocks, the buffer fills up to [`MAX_PENDING`], and further
//! lines are dropped and counted in `ollama_proxy_log_lines_dropped_total` instead of freezing the
//! workers.
//!
//! The one line per request ([`access`]) skips tracing's span and field machinery, which cost more
//! than the rest of a small proxied request: it is serialised straight into the same buffer, in the
//! same shape as the other lines, and only when the filter (`RUST_LOG`) lets INFO of
//! [`ACCESS_TARGET`] through.

use std::io::Write;
use std::sync::{LazyLock, Mutex, OnceLock};
use std::thread::Thread;
use std::time::{Duration, SystemTime};

use prometheus_client::metrics::counter::Counter;
use serde::{Serialize, Serializer};
use tracing::{Level, Metadata};
use tracing_subscriber::fmt::MakeWriter;

/// The `target` of access lines, for `RUST_LOG` (e.g. `info,ollama_proxy::access=off`).
pub const ACCESS_TARGET: &str = "ollama_proxy::access";

/// Longest time a log line waits in memory.
pub const FLUSH_EVERY: Duration = Duration::from_millis(100);

/// Bytes that trigger an early write.
pub const MAX_BUFFERED: usize = 64 * 1024;

/// Most bytes waiting for stdout; lines beyond are dropped (and counted) until it drains.
pub const MAX_PENDING: usize = 256 * 1024;

static BUFFER: Mutex<Vec<u8>> = Mutex::new(Vec::new());
/// Held while writing to stdout, so the flusher and a final [`flush`] never interleave.
static WRITING: Mutex<()> = Mutex::new(());
static FLUSHER: OnceLock<Thread> = OnceLock::new();
static DROPPED: LazyLock<Counter> = LazyLock::new(Counter::default);

/// Lines dropped because stdout did not keep up (`ollama_proxy_log_lines_dropped_total`).
#[must_use]
pub fn dropped_lines() -> &'static Counter {
    &DROPPED
}

/// Writes out everything buffered so far (waits for stdout).
pub fn flush() {
    let _writing = WRITING.lock();
    let pending = match BUFFER.lock() {
        Ok(mut buffer) => std::mem::take(&mut *buffer),
        Err(_) => return,
    };
    if !pending.is_empty() {
        let mut stdout = std::io::stdout().lock();
        // Nowhere to report a failed log write; dropping the lines is the only option.
        let _ = stdout.write_all(&pending).and_then(|()| stdout.flush());
    }
}

/// Appends one finished line; never waits for stdout.
fn append(line: &[u8], urgent: bool) {
    if line.is_empty() {
        return;
    }
    let wake = match BUFFER.lock() {
        Ok(mut buffer) if buffer.len() + line.len() <= MAX_PENDING => {
            let before = buffer.len();
            if buffer.capacity() == 0 {
                buffer.reserve(MAX_BUFFERED);
            }
            buffer.extend_from_slice(line);
            // Wake the flusher once when the batch fills, not on every line after that.
            urgent || (before < MAX_BUFFERED && buffer.len() >= MAX_BUFFERED)
        }
        _ => {
            DROPPED.inc();
            false
        }
    };
    if wake && let Some(flusher) = FLUSHER.get() {
        flusher.unpark();
    }
}

/// The `MakeWriter` for tracing-subscriber; starts the background flusher on first use.
#[derive(Debug, Clone, Copy, Default)]
pub struct BufferedStdout;

impl BufferedStdout {
    /// Creates the writer and starts the thread that writes the buffer out every [`FLUSH_EVERY`]
    /// (or sooner when woken).
    #[must_use]
    pub fn start() -> Self {
        let spawned = std::thread::Builder::new().name("log-flush".to_owned()).spawn(|| {
            loop {
                std::thread::park_timeout(FLUSH_EVERY);
                flush();
            }
        });
        match spawned {
            Ok(handle) => {
                let _ = FLUSHER.set(handle.thread().clone());
            }
            Err(_) => {
                eprintln!("ollama-proxy: could not start the log flusher; logs are written at shutdown");
            }
        }
        Self
    }
}

/// One log line being formatted; it lands in the buffer when dropped.
#[derive(Debug)]
pub struct LineWriter {
    urgent: bool,
    line: Vec<u8>,
}

impl Write for LineWriter {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        self.line.extend_from_slice(bytes);
        Ok(bytes.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Drop for LineWriter {
    fn drop(&mut self) {
        append(&self.line, self.urgent);
    }
}

impl<'a> MakeWriter<'a> for BufferedStdout {
    type Writer = LineWriter;

    fn make_writer(&'a self) -> LineWriter {
        LineWriter { urgent: false, line: Vec::with_capacity(256) }
    }

    fn make_writer_for(&'a self, meta: &Metadata<'_>) -> LineWriter {
        LineWriter { urgent: *meta.level() <= Level::WARN, line: Vec::with_capacity(256) }
    }
}

/// What the access line says about one answered request.
#[derive(Debug, Serialize)]
pub struct Access<'a> {
    /// The id echoed in `x-request-id`.
    pub request_id: &'a str,
    /// The request method.
    pub method: &'a str,
    /// The route pattern (a bounded set), not the raw path.
    pub route: &'static str,
    /// The status sent.
    pub status: u16,
    /// Why the proxy refused it, if it did.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rejected: Option<&'static str>,
    /// Time until the response headers were ready.
    pub elapsed_ms: f64,
}

#[derive(Serialize)]
struct Line<'a> {
    #[serde(serialize_with = "rfc3339_micros")]
    timestamp: SystemTime,
    level: &'static str,
    message: &'static str,
    #[serde(flatten)]
    access: &'a Access<'a>,
    target: &'static str,
}

fn rfc3339_micros<S: Serializer>(time: &SystemTime, serializer: S) -> Result<S::Ok, S::Error> {
    serializer.collect_str(&humantime::format_rfc3339_micros(*time))
}

/// Logs one answered request, if INFO of [`ACCESS_TARGET`] is enabled.
pub fn access(access: &Access<'_>) {
    if !tracing::enabled!(target: ACCESS_TARGET, Level::INFO) {
        return;
    }
    let line = Line {
        timestamp: SystemTime::now(),
        level: "INFO",
        message: "answered",
        access,
        target: ACCESS_TARGET,
    };
    // Lands in the buffer when dropped, like every other line.
    let mut writer = BufferedStdout.make_writer();
    if serde_json::to_writer(&mut writer.line, &line).is_ok() {
        writer.line.push(b'\n');
    } else {
        writer.line.clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_beyond_the_pending_limit_are_dropped_and_counted_without_waiting() {
        // No flusher runs in unit tests: nothing drains the buffer, like a stalled stdout.
        let line = vec![b'x'; 1000];
        let before = dropped_lines().get();
        for _ in 0..(MAX_PENDING / line.len() + 10) {
            append(&line, false);
        }
        assert!(BUFFER.lock().map_or(0, |b| b.len()) <= MAX_PENDING);
        assert!(dropped_lines().get() >= before + 10);
        BUFFER.lock().map(|mut b| b.clear()).unwrap_or_default();
    }
}

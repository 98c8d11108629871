//! JSON logs on stdout, written in batches like nginx's `access_log ... buffer= flush=`.
//!
//! One `write` per request line costs about as much CPU as the rest of a small proxied request,
//! so lines are gathered in memory and written every [`FLUSH_EVERY`], when [`MAX_BUFFERED`] bytes
//! are waiting, or at once for warnings and errors. [`flush`] is called at start and at shutdown so
//! nothing is held back then.
//!
//! The one line per request ([`access`]) skips tracing's span and field machinery, which cost more
//! than the rest of a small proxied request: it is serialised straight into the same buffer, in the
//! same shape as the other lines, and only when the filter (`RUST_LOG`) lets INFO of
//! [`ACCESS_TARGET`] through.

use std::io::Write;
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, SystemTime};

use serde::{Serialize, Serializer};
use tracing::{Level, Metadata};
use tracing_subscriber::fmt::MakeWriter;

/// The `target` of access lines, for `RUST_LOG` (e.g. `info,ollama_proxy::access=off`).
pub const ACCESS_TARGET: &str = "ollama_proxy::access";

/// Longest time a log line waits in memory.
pub const FLUSH_EVERY: Duration = Duration::from_millis(100);

/// Bytes that trigger an early write.
pub const MAX_BUFFERED: usize = 64 * 1024;

static BUFFER: OnceLock<Mutex<Vec<u8>>> = OnceLock::new();

fn buffer() -> &'static Mutex<Vec<u8>> {
    BUFFER.get_or_init(|| Mutex::new(Vec::with_capacity(MAX_BUFFERED)))
}

/// Writes out everything buffered so far.
pub fn flush() {
    if let Ok(mut pending) = buffer().lock() {
        write_out(&mut pending);
    }
}

fn write_out(pending: &mut Vec<u8>) {
    if !pending.is_empty() {
        let mut stdout = std::io::stdout().lock();
        // Nowhere to report a failed log write; dropping the lines is the only option.
        let _ = stdout.write_all(pending).and_then(|()| stdout.flush());
        pending.clear();
    }
}

/// The `MakeWriter` for tracing-subscriber; starts the background flusher on first use.
#[derive(Debug, Clone, Copy, Default)]
pub struct BufferedStdout;

impl BufferedStdout {
    /// Creates the writer and starts the thread that flushes every [`FLUSH_EVERY`].
    #[must_use]
    pub fn start() -> Self {
        let spawned = std::thread::Builder::new().name("log-flush".to_owned()).spawn(|| {
            loop {
                std::thread::sleep(FLUSH_EVERY);
                flush();
            }
        });
        if spawned.is_err() {
            eprintln!("ollama-proxy: could not start the log flusher; logs are written at shutdown");
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
        if let Ok(mut pending) = buffer().lock() {
            pending.extend_from_slice(&self.line);
            if self.urgent || pending.len() >= MAX_BUFFERED {
                write_out(&mut pending);
            }
        }
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

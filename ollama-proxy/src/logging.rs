//! JSON logs on stdout, written in batches like nginx's `access_log ... buffer= flush=`.
//!
//! One `write` per request line costs about as much CPU as the rest of a small proxied request,
//! so lines are gathered in memory and written every [`FLUSH_EVERY`], when [`MAX_BUFFERED`] bytes
//! are waiting, or at once for warnings and errors. [`flush`] is called at start and at shutdown so
//! nothing is held back then.

use std::io::Write;
use std::sync::{Mutex, OnceLock};
use std::time::Duration;

use tracing::{Level, Metadata};
use tracing_subscriber::fmt::MakeWriter;

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

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
#[derive(Debug)]
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
    pub rejected: Option<&'static str>,
    /// Time until the response headers were ready, in microseconds (written as milliseconds).
    pub elapsed_us: u64,
}

/// Logs one answered request, if INFO of [`ACCESS_TARGET`] is enabled.
pub fn access(access: &Access<'_>) {
    if !tracing::enabled!(target: ACCESS_TARGET, Level::INFO) {
        return;
    }
    // Lands in the buffer when dropped, like every other line.
    let mut writer = BufferedStdout.make_writer();
    access_line(&mut writer.line, SystemTime::now(), access);
}

/// Writes the access line, in the shape of tracing's JSON lines, straight into `line`: the fields
/// are a fixed set of short strings and numbers, so serde's machinery (a map serializer and an
/// escape scan for each of 16 strings) was most of the cost of the line. Strings that need no
/// escaping (all of them in practice: ids, methods and routes are checked tokens) are copied as
/// they are.
fn access_line(line: &mut Vec<u8>, now: SystemTime, access: &Access<'_>) {
    line.extend_from_slice(b"{\"timestamp\":\"");
    timestamp(line, now);
    line.extend_from_slice(b"\",\"level\":\"INFO\",\"message\":\"answered\",\"request_id\":");
    json_str(line, access.request_id);
    line.extend_from_slice(b",\"method\":");
    json_str(line, access.method);
    line.extend_from_slice(b",\"route\":");
    json_str(line, access.route);
    line.extend_from_slice(b",\"status\":");
    decimal(line, u64::from(access.status));
    if let Some(rejected) = access.rejected {
        line.extend_from_slice(b",\"rejected\":");
        json_str(line, rejected);
    }
    // Milliseconds with up to three decimals and at least one, as serde_json prints an f64.
    line.extend_from_slice(b",\"elapsed_ms\":");
    decimal(line, access.elapsed_us / 1000);
    line.push(b'.');
    let mut fraction = access.elapsed_us % 1000;
    let mut width = 3;
    while width > 1 && fraction.is_multiple_of(10) {
        fraction /= 10;
        width -= 1;
    }
    let digits =
        [b'0' + (fraction / 100 % 10) as u8, b'0' + (fraction / 10 % 10) as u8, b'0' + (fraction % 10) as u8];
    line.extend_from_slice(&digits[3 - width..]);
    line.extend_from_slice(b",\"target\":\"");
    line.extend_from_slice(ACCESS_TARGET.as_bytes());
    line.extend_from_slice(b"\"}\n");
}

/// `value` in decimal.
fn decimal(line: &mut Vec<u8>, value: u64) {
    let mut digits = [0u8; 20];
    let mut at = digits.len();
    let mut rest = value;
    loop {
        at -= 1;
        digits[at] = b'0' + (rest % 10) as u8;
        rest /= 10;
        if rest == 0 {
            break;
        }
    }
    line.extend_from_slice(&digits[at..]);
}

/// `text` as a JSON string.
fn json_str(line: &mut Vec<u8>, text: &str) {
    line.push(b'"');
    // A fold rather than `all`: with no early exit the compiler checks 16 or 32 bytes at a time.
    let escaped = |byte: u8| byte < 0x20 || byte == b'"' || byte == b'\\' || byte == 0x7f;
    if !text.bytes().fold(false, |any, byte| any | escaped(byte)) {
        line.extend_from_slice(text.as_bytes());
        line.push(b'"');
        return;
    }
    for &byte in text.as_bytes() {
        match byte {
            b'"' => line.extend_from_slice(b"\\\""),
            b'\\' => line.extend_from_slice(b"\\\\"),
            0..0x20 | 0x7f => {
                let hex = b"0123456789abcdef";
                line.extend_from_slice(b"\\u00");
                line.extend_from_slice(&[hex[usize::from(byte >> 4)], hex[usize::from(byte & 0xf)]]);
            }
            _ => line.push(byte),
        }
    }
    line.push(b'"');
}

thread_local! {
    /// The second last formatted and its `YYYY-MM-DDTHH:MM:SS`: lines in the same second share it.
    static SECOND: std::cell::Cell<(u64, [u8; 19])> = const { std::cell::Cell::new((u64::MAX, [0; 19])) };
}

/// `now` as RFC 3339 UTC with microseconds, like `humantime::format_rfc3339_micros`.
fn timestamp(line: &mut Vec<u8>, now: SystemTime) {
    let since = now.duration_since(SystemTime::UNIX_EPOCH).unwrap_or_default();
    let seconds = since.as_secs();
    let (cached, mut text) = SECOND.get();
    if cached != seconds {
        text = civil(seconds);
        SECOND.set((seconds, text));
    }
    line.extend_from_slice(&text);
    line.push(b'.');
    let micros = since.subsec_micros();
    let mut digits = [0u8; 6];
    for (i, digit) in digits.iter_mut().enumerate() {
        *digit = b'0' + (micros / 10u32.pow(5 - i as u32) % 10) as u8;
    }
    line.extend_from_slice(&digits);
    line.push(b'Z');
}

/// `YYYY-MM-DDTHH:MM:SS` of a Unix time (Howard Hinnant's days-to-civil algorithm; times before
/// 1970 never come here, so it runs on unsigned numbers).
fn civil(seconds: u64) -> [u8; 19] {
    let days = seconds / 86_400;
    let of_day = seconds % 86_400;
    let z = days + 719_468;
    let era = z / 146_097;
    let day_of_era = z % 146_097;
    let year_of_era = (day_of_era - day_of_era / 1460 + day_of_era / 36_524 - day_of_era / 146_096) / 365;
    let day_of_year = day_of_era - (365 * year_of_era + year_of_era / 4 - year_of_era / 100);
    let shifted_month = (5 * day_of_year + 2) / 153;
    let day = day_of_year - (153 * shifted_month + 2) / 5 + 1;
    let month = if shifted_month < 10 { shifted_month + 3 } else { shifted_month - 9 };
    let year = year_of_era + era * 400 + u64::from(month <= 2);
    let mut text = *b"0000-00-00T00:00:00";
    let mut put = |at: usize, width: usize, value: u64| {
        let mut rest = value;
        for i in (at..at + width).rev() {
            text[i] = b'0' + (rest % 10) as u8;
            rest /= 10;
        }
    };
    put(0, 4, year.min(9999));
    put(5, 2, month);
    put(8, 2, day);
    put(11, 2, of_day / 3600);
    put(14, 2, of_day / 60 % 60);
    put(17, 2, of_day % 60);
    text
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

    #[test]
    fn the_access_line_is_the_json_tracing_would_write() {
        let now = SystemTime::UNIX_EPOCH + Duration::from_micros(1_795_652_288_148_797);
        let mut line = Vec::new();
        let access = Access {
            request_id: "977e6e54b3a3818d",
            method: "GET",
            route: "/api/tags",
            status: 200,
            rejected: None,
            elapsed_us: 615,
        };
        access_line(&mut line, now, &access);
        let expected = concat!(
            r#"{"timestamp":"2026-11-26T00:18:08.148797Z","level":"INFO","message":"answered","#,
            r#""request_id":"977e6e54b3a3818d","method":"GET","route":"/api/tags","status":200,"#,
            r#""elapsed_ms":0.615,"target":"ollama_proxy::access"}"#,
            "\n"
        );
        assert_eq!(String::from_utf8_lossy(&line), expected);
        assert_eq!(
            humantime::format_rfc3339_micros(now).to_string(),
            "2026-11-26T00:18:08.148797Z",
            "same timestamp as the other lines"
        );
    }

    #[test]
    fn access_line_numbers_and_strings_stay_valid_json() {
        for (elapsed_us, printed) in
            [(0, 0.0), (1, 0.001), (1000, 1.0), (12_340, 12.34), (987_654_321, 987_654.321)]
        {
            let mut line = Vec::new();
            let access = Access {
                request_id: "a\"b\\c\u{1}",
                method: "BREW",
                route: "unmatched",
                status: 405,
                rejected: Some("method_not_allowed"),
                elapsed_us,
            };
            access_line(&mut line, SystemTime::now(), &access);
            let value: serde_json::Value = serde_json::from_slice(&line).unwrap_or_default();
            assert_eq!(value["elapsed_ms"].as_f64(), Some(printed), "{}", String::from_utf8_lossy(&line));
            assert!(value["elapsed_ms"].is_f64());
            assert_eq!(value["request_id"], "a\"b\\c\u{1}");
            assert_eq!(value["rejected"], "method_not_allowed");
            assert_eq!(value["status"], 405);
        }
    }
}

//! Smoke tests for a running Ouija Virtual: the edge API and pages, ask latency, and ollama-proxy.
//!
//! Each check prints one `PASS`/`FAIL`/`SKIP` line saying what it saw; a summary line follows and
//! the exit code is non-zero when any check failed. Failures say what to fix, in the words of
//! DEPLOY.md (database not migrated, proxy key refused, model management open, ...).

pub mod checks;
pub mod http;

use std::fmt;
use std::time::Duration;

/// What to check.
#[derive(Debug, Clone)]
pub struct Config {
    /// The edge's base URL, e.g. `https://ouija.example.workers.dev` (no trailing slash).
    pub base: String,
    /// ollama-proxy, when its checks should run.
    pub proxy: Option<Proxy>,
    /// Asks behind the p95 check.
    pub asks: usize,
    /// Asks in flight at once during the p95 check.
    pub concurrency: usize,
    /// How long to wait for `/health` to answer 200 before the checks start (a fresh deploy).
    pub wait_ready: Duration,
    /// The `source` every ask must come from (`groq`, `ollama`, `sqlite`), when set.
    pub expect_source: Option<String>,
}

/// ollama-proxy's address and bearer key.
#[derive(Clone)]
pub struct Proxy {
    /// Base URL, no trailing slash.
    pub url: String,
    /// One of the proxy's `PROXY_API_KEYS`; `None` makes the authenticated checks fail.
    pub key: Option<String>,
}

impl fmt::Debug for Proxy {
    // The key never reaches a log line, not even through `{:?}`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Proxy")
            .field("url", &self.url)
            .field("key", &self.key.as_ref().map(|_| "<redacted>"))
            .finish()
    }
}

/// The result of one check.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// It held; what was seen.
    Pass(String),
    /// It did not; what was seen and what to do.
    Fail(String),
    /// Not run; why.
    Skip(String),
}

/// One check's line in the report.
#[derive(Debug, Clone)]
pub struct CheckResult {
    /// Short, stable name (`health`, `ask`, `proxy-tags`, ...).
    pub name: &'static str,
    /// What happened.
    pub outcome: Outcome,
}

impl fmt::Display for CheckResult {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let (word, detail) = match &self.outcome {
            Outcome::Pass(d) => ("PASS", d),
            Outcome::Fail(d) => ("FAIL", d),
            Outcome::Skip(d) => ("SKIP", d),
        };
        write!(f, "{word}  {:<20} {detail}", self.name)
    }
}

/// Every check's result, in order.
#[derive(Debug, Clone, Default)]
pub struct Report {
    /// One per check.
    pub results: Vec<CheckResult>,
}

impl Report {
    /// Checks that failed.
    #[must_use]
    pub fn failed(&self) -> usize {
        self.results.iter().filter(|r| matches!(r.outcome, Outcome::Fail(_))).count()
    }

    /// The last line: overall verdict and counts.
    #[must_use]
    pub fn summary(&self, base: &str) -> String {
        let count = |pass: fn(&Outcome) -> bool| self.results.iter().filter(|r| pass(&r.outcome)).count();
        let passed = count(|o| matches!(o, Outcome::Pass(_)));
        let skipped = count(|o| matches!(o, Outcome::Skip(_)));
        let verdict = if self.failed() == 0 { "PASS" } else { "FAIL" };
        format!(
            "smoke {verdict}: {passed} passed, {} failed, {skipped} skipped against {base}",
            self.failed()
        )
    }
}

/// Nearest-rank percentile (`p` in 1..=100) of `samples`; `None` when empty.
#[must_use]
pub fn percentile(samples: &[Duration], p: usize) -> Option<Duration> {
    let mut sorted = samples.to_vec();
    sorted.sort_unstable();
    let rank = (p * sorted.len()).div_ceil(100).max(1);
    sorted.get(rank - 1).copied()
}

/// Milliseconds, for messages.
#[must_use]
pub fn ms(d: Duration) -> u128 {
    d.as_millis()
}

/// Runs every check against `config`, printing each line through `print` as it completes.
pub fn run(config: &Config, print: &mut dyn FnMut(&CheckResult)) -> Report {
    let client = http::Client::new();
    if !config.wait_ready.is_zero() {
        checks::wait_ready(&client, &config.base, config.wait_ready);
    }
    let mut report = Report::default();
    let mut record = |result: CheckResult| {
        print(&result);
        report.results.push(result);
    };
    for check in checks::EDGE {
        record(CheckResult { name: check.name, outcome: (check.run)(&client, config) });
    }
    for check in checks::PROXY {
        let outcome = match &config.proxy {
            Some(proxy) => (check.run)(&client, proxy),
            None => Outcome::Skip("no proxy URL given (--proxy-url / PROXY_URL)".to_owned()),
        };
        record(CheckResult { name: check.name, outcome });
    }
    report
}

#[cfg(test)]
mod tests {
    use super::*;

    fn millis(values: &[u64]) -> Vec<Duration> {
        values.iter().map(|&v| Duration::from_millis(v)).collect()
    }

    #[test]
    fn p95_is_the_nearest_rank() {
        let samples = millis(&(1..=20).collect::<Vec<_>>());
        assert_eq!(percentile(&samples, 95), Some(Duration::from_millis(19)));
        assert_eq!(percentile(&samples, 50), Some(Duration::from_millis(10)));
        assert_eq!(percentile(&millis(&[7]), 95), Some(Duration::from_millis(7)));
        assert_eq!(percentile(&[], 95), None);
    }

    #[test]
    fn p95_ignores_input_order() {
        assert_eq!(percentile(&millis(&[900, 5, 40, 12, 8]), 95), Some(Duration::from_millis(900)));
    }

    #[test]
    fn summary_counts_and_verdict() {
        let mut report = Report::default();
        report.results.push(CheckResult { name: "health", outcome: Outcome::Pass("ok".into()) });
        report.results.push(CheckResult { name: "ask", outcome: Outcome::Fail("503".into()) });
        report.results.push(CheckResult { name: "proxy-health", outcome: Outcome::Skip("none".into()) });
        assert_eq!(report.summary("http://x"), "smoke FAIL: 1 passed, 1 failed, 1 skipped against http://x");
        report.results.remove(1);
        assert!(report.summary("http://x").starts_with("smoke PASS: 1 passed, 0 failed"));
    }

    #[test]
    fn a_line_starts_with_its_verdict_and_name() {
        let line = CheckResult { name: "ask", outcome: Outcome::Fail("boom".into()) }.to_string();
        assert!(line.starts_with("FAIL  ask "), "{line}");
        assert!(line.ends_with("boom"));
    }

    #[test]
    fn the_proxy_key_is_not_in_debug_output() {
        let proxy = Proxy { url: "http://p".into(), key: Some("sekrit-key-0123456789".into()) };
        assert!(!format!("{proxy:?}").contains("sekrit"));
    }
}

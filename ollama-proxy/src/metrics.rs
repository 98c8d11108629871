//! Prometheus metrics: requests by route and status, upstream latency, in-flight, rejections.
//!
//! A labelled series is found in its family under a lock and a hash of its labels; the two that
//! every request records (its count and its upstream latency) are found that way once per thread
//! and then kept in a small per-thread list of handles (see [`HOT`]).

use std::cell::RefCell;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

/// Labels of a finished request.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RequestLabels {
    /// The route pattern (bounded set), not the raw path.
    pub route: &'static str,
    /// The HTTP status sent to the client.
    pub status: u16,
}

/// Labels of a latency observation.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RouteLabels {
    /// The route pattern.
    pub route: &'static str,
}

/// Labels of a refused request.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ReasonLabels {
    /// Why it was refused (see `ProxyError::reason`).
    pub reason: &'static str,
}

/// Labels of one upstream of the pool.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct UpstreamLabels {
    /// Its `host:port` (and base path, if any): never a token.
    pub upstream: String,
}

/// The per-upstream handles, created once so the hot path never looks a label up.
#[derive(Clone)]
pub struct UpstreamMetrics {
    /// `ollama_proxy_upstream_requests_total{upstream}`: tries sent to it.
    pub requests: Counter,
    /// `ollama_proxy_upstream_failures_total{upstream}`: refused, reset, timed out or 5xx.
    pub failures: Counter,
    /// `ollama_proxy_upstream_in_flight{upstream}`: also what least-in-flight routing reads.
    pub in_flight: Gauge<i64, std::sync::atomic::AtomicI64>,
    /// `ollama_proxy_upstream_up{upstream}`: 1 up, 0 ejected.
    pub up: Gauge<i64, std::sync::atomic::AtomicI64>,
}

/// Handles a thread has used, by the id of their [`Metrics`] (ids are never reused, so a handle
/// of a dropped registry is never taken for one of a new registry).
#[derive(Default)]
struct Hot {
    requests: Vec<(u64, &'static str, u16, Counter)>,
    latency: Vec<(u64, &'static str, Histogram)>,
}

/// Most handles of each kind kept per thread; beyond, series are looked up in their family. Routes
/// and statuses are bounded sets, and a worker sees a few pairs of them.
const MAX_HOT: usize = 32;

thread_local! {
    /// This thread's handles of the series it has recorded; a request scans a few entries instead
    /// of taking the family's lock and hashing its labels.
    static HOT: RefCell<Hot> = RefCell::default();
}

/// Source of [`Metrics::id`].
static NEXT_ID: AtomicU64 = AtomicU64::new(0);

/// All metrics and the registry that renders them.
pub struct Metrics {
    /// Tells this registry's handles apart in [`HOT`].
    id: u64,
    registry: Registry,
    /// `ollama_proxy_requests_total{route,status}`.
    pub requests: Family<RequestLabels, Counter>,
    /// `ollama_proxy_upstream_latency_seconds{route}`: time to Ollama's response headers.
    pub upstream_latency: Family<RouteLabels, Histogram>,
    /// `ollama_proxy_in_flight`: requests holding an upstream slot (streams count until they end).
    pub in_flight: Gauge<i64, std::sync::atomic::AtomicI64>,
    /// `ollama_proxy_rejected_total{reason}`.
    pub rejected: Family<ReasonLabels, Counter>,
    /// `ollama_proxy_open_connections`: client connections open now.
    pub open_connections: Gauge<i64, std::sync::atomic::AtomicI64>,
    /// `ollama_proxy_retries_total`: requests sent again to another upstream.
    pub retries: Counter,
    /// `ollama_proxy_retries_refused_total`: retries the pool-wide budget refused.
    pub retries_refused: Counter,
    upstream_requests: Family<UpstreamLabels, Counter>,
    upstream_failures: Family<UpstreamLabels, Counter>,
    upstream_in_flight: Family<UpstreamLabels, Gauge<i64, std::sync::atomic::AtomicI64>>,
    upstream_up: Family<UpstreamLabels, Gauge<i64, std::sync::atomic::AtomicI64>>,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    /// Registers every metric.
    #[must_use]
    pub fn new() -> Self {
        let mut registry = Registry::with_prefix("ollama_proxy");
        let requests = Family::<RequestLabels, Counter<u64, AtomicU64>>::default();
        registry.register("requests", "Requests answered, by route and status", requests.clone());
        let upstream_latency = Family::<RouteLabels, Histogram>::new_with_constructor(|| {
            Histogram::new([0.001, 0.005, 0.025, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0])
        });
        registry.register(
            "upstream_latency_seconds",
            "Time until Ollama sent response headers",
            upstream_latency.clone(),
        );
        let in_flight = Gauge::default();
        registry.register("in_flight", "Requests holding an upstream slot", in_flight.clone());
        let rejected = Family::<ReasonLabels, Counter>::default();
        registry.register("rejected", "Requests refused by the proxy, by reason", rejected.clone());
        let open_connections = Gauge::default();
        registry.register("open_connections", "Client connections open now", open_connections.clone());
        registry.register(
            "log_lines_dropped",
            "Log lines dropped because stdout was not read fast enough",
            crate::logging::dropped_lines().clone(),
        );
        let retries = Counter::default();
        registry.register("retries", "Requests sent again to another upstream", retries.clone());
        let retries_refused = Counter::default();
        registry.register(
            "retries_refused",
            "Retries refused by the pool-wide retry budget",
            retries_refused.clone(),
        );
        let upstream_requests = Family::default();
        registry.register("upstream_requests", "Tries sent to each upstream", upstream_requests.clone());
        let upstream_failures = Family::default();
        registry.register(
            "upstream_failures",
            "Tries that failed at each upstream (refused, reset, timeout, 5xx)",
            upstream_failures.clone(),
        );
        let upstream_in_flight = Family::default();
        registry.register(
            "upstream_in_flight",
            "Requests in flight at each upstream",
            upstream_in_flight.clone(),
        );
        let upstream_up = Family::default();
        registry.register(
            "upstream_up",
            "Whether each upstream is up (1) or ejected (0)",
            upstream_up.clone(),
        );
        Self {
            id: NEXT_ID.fetch_add(1, Ordering::Relaxed),
            registry,
            requests,
            upstream_latency,
            in_flight,
            rejected,
            open_connections,
            retries,
            retries_refused,
            upstream_requests,
            upstream_failures,
            upstream_in_flight,
            upstream_up,
        }
    }

    /// The handles of one upstream, labelled `upstream` (its `host:port`).
    #[must_use]
    pub fn upstream(&self, upstream: &str) -> UpstreamMetrics {
        let labels = UpstreamLabels { upstream: upstream.to_owned() };
        UpstreamMetrics {
            requests: self.upstream_requests.get_or_create(&labels).clone(),
            failures: self.upstream_failures.get_or_create(&labels).clone(),
            in_flight: self.upstream_in_flight.get_or_create(&labels).clone(),
            up: self.upstream_up.get_or_create(&labels).clone(),
        }
    }

    /// Counts one answered request.
    pub fn record_request(&self, route: &'static str, status: u16) {
        let id = self.id;
        HOT.with_borrow_mut(|hot| {
            let kept = hot.requests.iter().find(|(i, r, s, _)| *i == id && *s == status && *r == route);
            if let Some((.., counter)) = kept {
                counter.inc();
                return;
            }
            let counter = self.requests.get_or_create(&RequestLabels { route, status }).clone();
            counter.inc();
            if hot.requests.len() < MAX_HOT {
                hot.requests.push((id, route, status, counter));
            }
        });
    }

    /// Counts one refusal.
    pub fn record_rejection(&self, reason: &'static str) {
        self.rejected.get_or_create(&ReasonLabels { reason }).inc();
    }

    /// Records the time Ollama took to answer with headers.
    pub fn record_upstream_latency(&self, route: &'static str, elapsed: Duration) {
        let id = self.id;
        let seconds = elapsed.as_secs_f64();
        HOT.with_borrow_mut(|hot| {
            if let Some((.., histogram)) = hot.latency.iter().find(|(i, r, _)| *i == id && *r == route) {
                histogram.observe(seconds);
                return;
            }
            let histogram = self.upstream_latency.get_or_create(&RouteLabels { route }).clone();
            histogram.observe(seconds);
            if hot.latency.len() < MAX_HOT {
                hot.latency.push((id, route, histogram));
            }
        });
    }

    /// Renders the `OpenMetrics` text exposition.
    #[must_use]
    pub fn render(&self) -> String {
        let mut text = String::new();
        if prometheus_client::encoding::text::encode(&mut text, &self.registry).is_err() {
            text.clear();
        }
        text
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn handles_kept_per_thread_count_in_their_own_registry() {
        let first = Metrics::new();
        let second = Metrics::new();
        for _ in 0..3 {
            first.record_request("/api/chat", 200);
            first.record_upstream_latency("/api/chat", Duration::from_millis(3));
        }
        second.record_request("/api/chat", 200);
        second.record_request("/api/chat", 502);
        assert!(first.render().contains("ollama_proxy_requests_total{route=\"/api/chat\",status=\"200\"} 3"));
        assert!(
            first.render().contains("ollama_proxy_upstream_latency_seconds_count{route=\"/api/chat\"} 3")
        );
        let text = second.render();
        assert!(text.contains("ollama_proxy_requests_total{route=\"/api/chat\",status=\"200\"} 1"), "{text}");
        assert!(text.contains("ollama_proxy_requests_total{route=\"/api/chat\",status=\"502\"} 1"), "{text}");
    }

    #[test]
    fn rendered_text_names_every_metric() {
        let metrics = Metrics::new();
        metrics.record_request("/api/chat", 200);
        metrics.record_rejection("unauthorized");
        metrics.record_upstream_latency("/api/chat", Duration::from_millis(3));
        metrics.in_flight.inc();
        let upstream = metrics.upstream("box-a:11434");
        upstream.requests.inc();
        upstream.up.set(1);
        metrics.retries.inc();
        let text = metrics.render();
        for name in [
            "ollama_proxy_requests_total{route=\"/api/chat\",status=\"200\"} 1",
            "ollama_proxy_rejected_total{reason=\"unauthorized\"} 1",
            "ollama_proxy_upstream_latency_seconds_bucket",
            "ollama_proxy_in_flight 1",
            "ollama_proxy_open_connections 0",
            "ollama_proxy_log_lines_dropped_total",
            "ollama_proxy_upstream_requests_total{upstream=\"box-a:11434\"} 1",
            "ollama_proxy_upstream_failures_total{upstream=\"box-a:11434\"} 0",
            "ollama_proxy_upstream_in_flight{upstream=\"box-a:11434\"} 0",
            "ollama_proxy_upstream_up{upstream=\"box-a:11434\"} 1",
            "ollama_proxy_retries_total 1",
            "ollama_proxy_retries_refused_total 0",
        ] {
            assert!(text.contains(name), "{name} not in {text}");
        }
    }
}

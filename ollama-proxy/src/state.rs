//! The state every handler shares: settings, the upstream client, metrics and the in-flight cap.

use std::ops::Deref;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use axum::body::Body;
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use tokio::sync::Semaphore;

use crate::config::Settings;
use crate::health::HealthCache;
use crate::metrics::Metrics;
use crate::pool::Upstreams;
use crate::upstream::Pool;

/// The HTTP(S) client used for Ollama and the health targets.
pub type UpstreamClient = Client<HttpsConnector<HttpConnector>, Body>;

/// Cheap-to-clone handle to the shared state, and the upstream connections of one worker.
///
/// Each worker thread has its own pool and client (see [`AppState::for_worker`]): a connection is
/// registered with the event loop of the thread that opened it, and is only used from there.
#[derive(Clone)]
pub struct AppState {
    shared: Arc<Shared>,
    /// Idle connections for forwarded requests, one pool per upstream (same index as in
    /// [`Shared::upstreams`]), driven in the request's own task.
    pub connections: Arc<[Arc<Pool>]>,
    /// Pooled client for health checks (Ollama and `HEALTH_TARGETS`).
    pub client: UpstreamClient,
}

/// What [`AppState`] points to.
pub struct Shared {
    /// Validated settings.
    pub settings: Settings,
    /// Metrics registry and handles.
    pub metrics: Metrics,
    /// One permit per request allowed in flight to Ollama.
    pub slots: Arc<Semaphore>,
    /// One permit per client connection allowed open (`PROXY_MAX_CONNECTIONS`).
    pub connection_slots: Arc<Semaphore>,
    /// Bytes of request bodies held in memory now, all workers together.
    pub buffered_body_bytes: AtomicU64,
    /// The last `/health` checks, shared by every worker (see `health::checks`).
    pub health_cache: HealthCache,
    /// The Ollama boxes: routing, health, retry budget.
    pub upstreams: Upstreams,
    connector: HttpsConnector<HttpConnector>,
    draining: AtomicBool,
}

impl Deref for AppState {
    type Target = Shared;
    fn deref(&self) -> &Shared {
        &self.shared
    }
}

impl AppState {
    /// Builds the state and its client from validated settings.
    #[must_use]
    pub fn new(settings: Settings) -> Self {
        let mut http = HttpConnector::new();
        http.enforce_http(false);
        http.set_nodelay(true);
        http.set_connect_timeout(Some(settings.upstream_connect_timeout));
        let mut roots = rustls::RootCertStore { roots: webpki_roots::TLS_SERVER_ROOTS.to_vec() };
        for cert in &settings.upstream_ca {
            // Each one was checked by `Settings::validate`.
            let _ = roots.add(cert.clone());
        }
        let tls = rustls::ClientConfig::builder().with_root_certificates(roots).with_no_client_auth();
        let connector = hyper_rustls::HttpsConnectorBuilder::new()
            .with_tls_config(tls)
            .https_or_http()
            .enable_http1()
            .wrap_connector(http);
        let metrics = Metrics::new();
        let upstreams = Upstreams::new(&settings, &metrics);
        let shared = Arc::new(Shared {
            slots: Arc::new(Semaphore::new(settings.max_in_flight)),
            connection_slots: Arc::new(Semaphore::new(settings.max_connections)),
            buffered_body_bytes: AtomicU64::new(0),
            health_cache: HealthCache::default(),
            settings,
            metrics,
            upstreams,
            connector,
            draining: AtomicBool::new(false),
        });
        Self::with_connections(shared)
    }

    /// The same shared state with upstream connections of its own, for another worker.
    #[must_use]
    pub fn for_worker(&self) -> Self {
        Self::with_connections(self.shared.clone())
    }

    fn with_connections(shared: Arc<Shared>) -> Self {
        let connections =
            shared.upstreams.boxes().iter().map(|_| Pool::new(shared.connector.clone())).collect();
        // `HEALTH_TARGETS` checks run one round at a time (single-flight, see `health`), and the
        // prober asks each box one question after another: two idle connections per host suffice.
        let client = Client::builder(TokioExecutor::new())
            .pool_idle_timeout(std::time::Duration::from_secs(30))
            .pool_max_idle_per_host(2)
            .build(shared.connector.clone());
        Self { shared, connections, client }
    }

    /// Marks the proxy as shutting down: /health turns critical and /readyz 503.
    pub fn start_draining(&self) {
        self.draining.store(true, Ordering::Relaxed);
    }

    /// Whether shutdown has begun.
    #[must_use]
    pub fn is_draining(&self) -> bool {
        self.draining.load(Ordering::Relaxed)
    }
}

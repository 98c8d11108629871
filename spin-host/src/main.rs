//! spin-host: runs the edge module's Spin component the way `spin up` would, for tests and local
//! use where no Spin runtime can be installed. It serves the component's `wasi:http@0.3.0` handler
//! on wasmtime and answers Spin's `variables` interface from `SPIN_VARIABLE_<NAME>`. Each store is
//! granted only when given a file, so a test can prove a component never touches the other:
//! - `--sqlite FILE`: Spin's `sqlite` database `default`, a real database file initialised from
//!   `d1-migrations/` (`--migrations`);
//! - `--key-value FILE`: Spin's `key-value` store `default`, in the table Spin's local store uses,
//!   refusing keys and values over the hosted store's limits.
//!
//! Opening a store or database that is not granted is `access-denied`, as in Spin.
//!
//! Like Spin, it gives each request a fresh instance. It is test tooling: no TLS, no
//! `allowed_outbound_hosts` enforcement, no `spin.toml` parsing (variables come only from the
//! environment, so unset ones are "undefined" and the edge applies its own defaults).

mod key_value;
mod sqlite;
mod variables;

use std::collections::HashMap;
use std::future::Future;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use clap::Parser;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::graceful::GracefulShutdown;
use tokio::net::TcpListener;
use tokio::signal::unix::{signal, SignalKind};
use wasmtime::component::{Component, GuestTaskId, HasSelf, Linker, ResourceTable};
use wasmtime::error::Context as _;
use wasmtime::{Cache, CacheConfig, Engine, Store, StoreContextMut};
use wasmtime_wasi::{WasiCtx, WasiCtxView, WasiView};
use wasmtime_wasi_http::handler::{
    HandlerState, Instance, ProxyHandler, ProxyPre, ShouldAccept, WorkerExpiration, WorkerState, WorkerStatus,
};
use wasmtime_wasi_http::{WasiBody, WasiHttpCtx, WasiHttpCtxView, WasiHttpView};

// Bindings for `spin:sqlite`, `spin:key-value` and `spin:variables`, generated from the WIT inside
// the spin-sdk crate (see build.rs).
include!(concat!(env!("OUT_DIR"), "/spin_world.rs"));

/// How long a request may take to produce its response, and then to finish its background work.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(60);
/// How long in-flight connections get after SIGTERM.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(5);

/// Runs a Spin HTTP component:
/// `spin-host --listen 127.0.0.1:3000 [--sqlite FILE [--migrations DIR]] [--key-value FILE] COMPONENT.wasm`.
#[derive(Parser, Debug)]
#[command(version, about)]
struct Args {
    /// Address to serve on.
    #[arg(long, default_value = "127.0.0.1:3000")]
    listen: SocketAddr,
    /// Database file behind Spin's `sqlite` database `default` (created if missing); without it,
    /// opening that database is `access-denied`.
    #[arg(long)]
    sqlite: Option<PathBuf>,
    /// Directory of `*.sql` migrations applied to the `--sqlite` file in name order, each once
    /// (tracked in `d1_migrations`).
    #[arg(long, requires = "sqlite")]
    migrations: Option<PathBuf>,
    /// `SQLite` file behind Spin's `key-value` store `default` (created if missing); without it,
    /// opening that store is `access-denied`.
    #[arg(long)]
    key_value: Option<PathBuf>,
    /// The component, built for wasm32-wasip2.
    component: PathBuf,
}

/// What each instance's store holds.
pub struct Host {
    table: ResourceTable,
    wasi: WasiCtx,
    http: WasiHttpCtx,
    /// Spin's `sqlite` database `default`, when granted (`--sqlite`).
    db: Option<sqlite::Database>,
    /// Spin's `key-value` store `default`, when granted (`--key-value`).
    key_value: Option<sqlite::Database>,
    variables: Arc<HashMap<String, String>>,
}

impl WasiView for Host {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView { ctx: &mut self.wasi, table: &mut self.table }
    }
}

impl WasiHttpView for Host {
    fn http(&mut self) -> WasiHttpCtxView<'_> {
        WasiHttpCtxView {
            ctx: &mut self.http,
            table: &mut self.table,
            hooks: wasmtime_wasi_http::default_hooks(),
        }
    }
}

/// Builds instances for the [`ProxyHandler`]: one fresh instance per request, as Spin does.
struct Server {
    engine: Engine,
    pre: ProxyPre<Host>,
    db: Option<sqlite::Database>,
    key_value: Option<sqlite::Database>,
    variables: Arc<HashMap<String, String>>,
}

impl HandlerState for Server {
    type StoreData = Host;
    type WorkerExpiration = Expiration;
    type WorkerState = OneRequest;

    async fn instantiate(&self) -> wasmtime::Result<Instance<Host, Expiration, OneRequest>> {
        let host = Host {
            table: ResourceTable::new(),
            // The component's stdout and stderr are the host's: its logs show in the host's output.
            wasi: WasiCtx::builder().inherit_stdout().inherit_stderr().build(),
            http: WasiHttpCtx::new(),
            db: self.db.clone(),
            key_value: self.key_value.clone(),
            variables: self.variables.clone(),
        };
        let mut store = Store::new(&self.engine, host);
        let proxy = self.pre.instantiate_async(&mut store).await?;
        Ok(Instance {
            store,
            proxy,
            view: <Host as WasiHttpView>::http,
            expiration: Expiration { sleep: Box::pin(tokio::time::sleep(REQUEST_TIMEOUT)) },
            state: OneRequest,
        })
    }
}

/// Drops an instance whose request (or the work it does after responding) runs past the timeout.
struct Expiration {
    sleep: Pin<Box<tokio::time::Sleep>>,
}

impl WorkerExpiration for Expiration {
    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>, status: WorkerStatus, start: Instant) -> Poll<()> {
        let this = self.get_mut();
        if status == WorkerStatus::Idle {
            return Poll::Ready(());
        }
        let deadline = tokio::time::Instant::from_std(start + REQUEST_TIMEOUT);
        if this.sleep.deadline() != deadline {
            this.sleep.as_mut().reset(deadline);
        }
        this.sleep.as_mut().poll(cx)
    }
}

/// Accepts exactly one request per instance.
struct OneRequest;

impl WorkerState for OneRequest {
    type StoreData = Host;
    type RequestData = ();

    fn should_accept_request(&self, _concurrent: usize, total: usize) -> ShouldAccept {
        if total == 0 {
            ShouldAccept::Yes
        } else {
            ShouldAccept::Never
        }
    }

    fn on_request_start(
        &self,
        _: StoreContextMut<'_, Host>,
        (): (),
        _: GuestTaskId,
    ) -> Pin<Box<dyn Future<Output = ()> + Send + Sync>> {
        Box::pin(tokio::time::sleep(REQUEST_TIMEOUT))
    }

    fn drop(&self, store: Store<Host>, result: wasmtime::Result<()>) {
        if let Err(error) = result {
            eprintln!("spin-host: instance failed: {error:?}");
        }
        drop(store);
    }
}

fn engine() -> wasmtime::Result<Engine> {
    let mut config = wasmtime::Config::new();
    config.wasm_component_model_async(true);
    // Compiled components are cached on disk (~/.cache/wasmtime), so the tests' many starts of
    // the same component compile it once.
    config.cache(Some(Cache::new(CacheConfig::new())?));
    Engine::new(&config)
}

fn linker(engine: &Engine) -> wasmtime::Result<Linker<Host>> {
    let mut linker = Linker::new(engine);
    // Rust's std on wasm32-wasip2 imports WASI 0.2 (clocks, stdio); the SDK imports WASI 0.3.
    wasmtime_wasi::p2::add_to_linker_async(&mut linker)?;
    wasmtime_wasi::p3::add_to_linker(&mut linker)?;
    wasmtime_wasi_http::p3::add_to_linker(&mut linker)?;
    spin::sqlite::sqlite::add_to_linker::<_, HasSelf<Host>>(&mut linker, |host| host)?;
    spin::key_value::key_value::add_to_linker::<_, HasSelf<Host>>(&mut linker, |host| host)?;
    spin::variables::variables::add_to_linker::<_, HasSelf<Host>>(&mut linker, |host| host)?;
    Ok(linker)
}

#[tokio::main]
async fn main() -> wasmtime::Result<()> {
    let args = Args::parse();
    let db = args.sqlite.as_deref().map(|file| sqlite::open(file, args.migrations.as_deref())).transpose()?;
    let key_value = args.key_value.as_deref().map(key_value::open).transpose()?;
    let engine = engine()?;
    let component = Component::from_file(&engine, &args.component)
        .with_context(|| format!("loading {}", args.component.display()))?;
    let pre = linker(&engine)?.instantiate_pre(&component)?;
    let pre = ProxyPre::P3(wasmtime_wasi_http::p3::bindings::ServicePre::new(pre)?);
    let variables = Arc::new(variables::from_env());
    let handler = ProxyHandler::new(Server { engine, pre, db, key_value, variables });

    let listener =
        TcpListener::bind(args.listen).await.with_context(|| format!("listening on {}", args.listen))?;
    eprintln!("spin-host: serving {} on http://{}", args.component.display(), listener.local_addr()?);
    serve(listener, handler).await?;
    // Everything is already durable in SQLite: skip the destructors (wasmtime's cache worker and
    // the runtime's threads take a second or two to wind down).
    std::process::exit(0)
}

/// Serves until SIGTERM or SIGINT, then gives open connections [`SHUTDOWN_GRACE`] to finish.
async fn serve(listener: TcpListener, handler: ProxyHandler<Server>) -> wasmtime::Result<()> {
    let mut terminate = signal(SignalKind::terminate())?;
    let mut interrupt = signal(SignalKind::interrupt())?;
    let graceful = GracefulShutdown::new();
    let http = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
    loop {
        let (stream, _) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(connection) => connection,
                Err(error) => { eprintln!("spin-host: accept failed: {error}"); continue; }
            },
            _ = terminate.recv() => break,
            _ = interrupt.recv() => break,
        };
        let _ = stream.set_nodelay(true);
        let handler = handler.clone();
        let service = hyper::service::service_fn(move |request| handle(handler.clone(), request));
        let connection = http.serve_connection(TokioIo::new(stream), service).into_owned();
        let connection = graceful.watch(connection);
        tokio::spawn(async move {
            if let Err(error) = connection.await {
                eprintln!("spin-host: connection error: {error}");
            }
        });
    }
    eprintln!("spin-host: shutting down");
    let _ = tokio::time::timeout(SHUTDOWN_GRACE, graceful.shutdown()).await;
    Ok(())
}

/// One request through the component; a host-side failure is a plain 500, logged here.
async fn handle(
    handler: ProxyHandler<Server>,
    request: hyper::Request<Incoming>,
) -> Result<hyper::Response<WasiBody>, std::convert::Infallible> {
    let request = request.map(|body| body.map_err(wasmtime_wasi_http::Error::Hyper).boxed_unsync());
    Ok(handler.handle((), request).await.unwrap_or_else(|error| {
        eprintln!("spin-host: request failed: {error:?}");
        let body = Full::new(bytes_from("the component failed to answer\n")).map_err(|never| match never {});
        let mut response = hyper::Response::new(body.boxed_unsync());
        *response.status_mut() = hyper::StatusCode::INTERNAL_SERVER_ERROR;
        response
    }))
}

fn bytes_from(text: &'static str) -> hyper::body::Bytes {
    hyper::body::Bytes::from_static(text.as_bytes())
}

//! Entry point: parse the configuration, set up JSON logs, serve (or run `healthcheck`).
//!
//! No `#[tokio::main]`: serving runs one single-threaded runtime per worker thread
//! ([`server::run`]); the `healthcheck` probe gets a small runtime of its own.

use std::process::ExitCode;
use std::time::Duration;

use clap::Parser;
use ollama_proxy::config::{Cli, Command};
use ollama_proxy::{AppState, healthcheck, logging, pool, server};
use tracing_subscriber::EnvFilter;

/// musl's allocator is slow under a proxy's many small allocations; see `Cargo.toml`.
#[cfg(target_env = "musl")]
#[global_allocator]
static GLOBAL: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

fn main() -> ExitCode {
    let cli = Cli::parse();
    if let Some(Command::Healthcheck { url, timeout_ms }) = cli.command {
        let url = url.unwrap_or_else(healthcheck::default_url);
        let probe = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| e.to_string())
            .and_then(|rt| rt.block_on(healthcheck::probe(&url, Duration::from_millis(timeout_ms))));
        return match probe {
            Ok(_) => ExitCode::SUCCESS,
            Err(reason) => {
                eprintln!("healthcheck {url}: {reason}");
                ExitCode::FAILURE
            }
        };
    }
    let settings = match cli.settings.validate() {
        Ok(settings) => settings,
        Err(problems) => {
            eprintln!(
                "ollama-proxy: invalid configuration ({} problem{}):\n  - {}",
                problems.len(),
                if problems.len() == 1 { "" } else { "s" },
                problems.join("\n  - ")
            );
            return ExitCode::from(2);
        }
    };
    tracing_subscriber::fmt()
        .json()
        .flatten_event(true)
        .with_current_span(false)
        .with_span_list(false)
        .with_env_filter(EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info")))
        .with_writer(logging::BufferedStdout::start())
        .init();
    let listener = match server::bind(settings.listen) {
        Ok(listener) => listener,
        Err(error) => {
            tracing::error!(addr = %settings.listen, %error, "cannot listen");
            return ExitCode::FAILURE;
        }
    };
    let addr = listener.local_addr().map_or_else(|_| settings.listen.to_string(), |a| a.to_string());
    let workers = settings.workers;
    let state = AppState::new(settings);
    // The first probe round ends before the proxy says it listens: routing and /health start
    // from a checked pool.
    if let Err(error) = pool::start_probes(&state) {
        tracing::error!(%error, "cannot start the prober thread");
        return ExitCode::FAILURE;
    }
    let settings = &state.settings;
    let upstreams: Vec<&str> = state.upstreams.boxes().iter().map(|u| u.label.as_str()).collect();
    tracing::info!(
        addr,
        upstreams = upstreams.join(","),
        model = settings.model,
        allow_admin = settings.allow_admin,
        max_in_flight = settings.max_in_flight,
        workers = settings.workers,
        health_targets = settings.health_targets.len(),
        "listening"
    );
    logging::flush();
    let drained = server::run(listener, &state, workers).unwrap_or_else(|error| {
        tracing::error!(%error, "cannot start the worker threads");
        false
    });
    logging::flush();
    if drained { ExitCode::SUCCESS } else { ExitCode::FAILURE }
}

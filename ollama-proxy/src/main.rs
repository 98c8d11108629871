//! Entry point: parse the configuration, set up JSON logs, serve (or run `healthcheck`).

use std::process::ExitCode;
use std::time::Duration;

use clap::Parser;
use ollama_proxy::config::{Cli, Command};
use ollama_proxy::{AppState, healthcheck, logging, server};
use tracing_subscriber::EnvFilter;

#[tokio::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    if let Some(Command::Healthcheck { url, timeout_ms }) = cli.command {
        let url = url.unwrap_or_else(healthcheck::default_url);
        return match healthcheck::probe(&url, Duration::from_millis(timeout_ms)).await {
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
        .with_current_span(true)
        .with_span_list(false)
        .with_env_filter(EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info")))
        .with_writer(logging::BufferedStdout::start())
        .init();
    let listener = match tokio::net::TcpListener::bind(settings.listen).await {
        Ok(listener) => listener,
        Err(error) => {
            tracing::error!(addr = %settings.listen, %error, "cannot listen");
            return ExitCode::FAILURE;
        }
    };
    let addr = listener.local_addr().map_or_else(|_| settings.listen.to_string(), |a| a.to_string());
    tracing::info!(
        addr,
        upstream = %settings.upstream,
        model = settings.model,
        allow_admin = settings.allow_admin,
        max_in_flight = settings.max_in_flight,
        health_targets = settings.health_targets.len(),
        "listening"
    );
    logging::flush();
    let state = AppState::new(settings);
    let drained = server::serve(listener, state, server::shutdown_signal()).await;
    logging::flush();
    if drained { ExitCode::SUCCESS } else { ExitCode::FAILURE }
}

//! `ouija-smoke`: runs the smoke checks against a deployed (or local) Ouija Virtual.
//! Exit code 0 when every check passed, 1 when one failed, 2 for a usage error.

use std::process::ExitCode;
use std::time::Duration;

use ouija_smoke::{Config, Proxy, run};

const USAGE: &str = "usage: ouija-smoke --url URL [--proxy-url URL] [--asks N] [--concurrency N]
                   [--wait-ready SECONDS] [--expect-source groq|ollama|sqlite]

  --url URL            the edge's base URL (or SMOKE_URL)
  --proxy-url URL      ollama-proxy's base URL (or SMOKE_PROXY_URL); its checks are skipped without it
  --proxy-key KEY      a key from the proxy's PROXY_API_KEYS; prefer SMOKE_PROXY_KEY, which stays
                       out of the process list
  --asks N             asks behind the p95 check (default 20)
  --concurrency N      asks in flight at once (default 4)
  --wait-ready S       first wait up to S seconds for /health to answer 200 (default 0)
  --expect-source S    every ask must be answered by S
";

fn main() -> ExitCode {
    let config = match parse(std::env::args().skip(1).collect(), |name| std::env::var(name).ok()) {
        Ok(config) => config,
        Err(message) => {
            eprintln!("ouija-smoke: {message}\n\n{USAGE}");
            return ExitCode::from(2);
        }
    };
    println!(
        "smoke: {} checks against {}",
        ouija_smoke::checks::EDGE.len() + ouija_smoke::checks::PROXY.len(),
        config.base
    );
    let report = run(&config, &mut |result| println!("{result}"));
    println!("{}", report.summary(&config.base));
    if report.failed() == 0 { ExitCode::SUCCESS } else { ExitCode::FAILURE }
}

fn base_url(flag: &str, value: &str) -> Result<String, String> {
    let value = value.trim().trim_end_matches('/');
    if value.starts_with("http://") || value.starts_with("https://") {
        Ok(value.to_owned())
    } else {
        Err(format!("{flag} must start with http:// or https://, got {value:?}"))
    }
}

fn number(flag: &str, value: &str) -> Result<usize, String> {
    value.parse().map_err(|_| format!("{flag} takes a whole number, got {value:?}"))
}

/// Parses flags, falling back to `SMOKE_*` variables read through `env`. Empty values count as unset.
fn parse(args: Vec<String>, env: impl Fn(&str) -> Option<String>) -> Result<Config, String> {
    let env = |name: &str| env(name).filter(|v| !v.trim().is_empty());
    let (mut url, mut proxy_url, mut proxy_key) =
        (env("SMOKE_URL"), env("SMOKE_PROXY_URL"), env("SMOKE_PROXY_KEY"));
    let mut config = Config {
        base: String::new(),
        proxy: None,
        asks: 20,
        concurrency: 4,
        wait_ready: Duration::ZERO,
        expect_source: None,
    };
    let mut args = args.into_iter();
    while let Some(flag) = args.next() {
        if flag == "-h" || flag == "--help" {
            return Err("help".to_owned());
        }
        let value = args.next().ok_or_else(|| format!("{flag} needs a value"))?;
        let value = Some(value).filter(|v| !v.trim().is_empty());
        match (flag.as_str(), value) {
            ("--url", v) => url = v,
            ("--proxy-url", v) => proxy_url = v,
            ("--proxy-key", v) => proxy_key = v,
            ("--asks", Some(v)) => config.asks = number(&flag, &v)?.max(1),
            ("--concurrency", Some(v)) => config.concurrency = number(&flag, &v)?.max(1),
            ("--wait-ready", Some(v)) => config.wait_ready = Duration::from_secs(number(&flag, &v)? as u64),
            ("--expect-source", Some(v)) if ouija_smoke::checks::SOURCES.contains(&v.as_str()) => {
                config.expect_source = Some(v);
            }
            ("--expect-source", v) => {
                return Err(format!("--expect-source takes groq, ollama or sqlite, got {v:?}"));
            }
            ("--asks" | "--concurrency" | "--wait-ready", None) => {
                return Err(format!("{flag} needs a value"));
            }
            (other, _) => return Err(format!("unknown flag {other}")),
        }
    }
    let url = url.ok_or("--url (or SMOKE_URL) is required")?;
    config.base = base_url("--url", &url)?;
    config.proxy = match proxy_url {
        Some(proxy_url) => Some(Proxy { url: base_url("--proxy-url", &proxy_url)?, key: proxy_key }),
        None => None,
    };
    Ok(config)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(list: &[&str]) -> Vec<String> {
        list.iter().map(|s| (*s).to_owned()).collect()
    }

    #[test]
    fn flags_win_over_the_environment_and_trailing_slashes_go() {
        let env = |name: &str| (name == "SMOKE_URL").then(|| "http://env".to_owned());
        let config = parse(args(&["--url", "https://a.example/", "--asks", "5"]), env).unwrap();
        assert_eq!(config.base, "https://a.example");
        assert_eq!(config.asks, 5);
        assert!(config.proxy.is_none());
    }

    #[test]
    fn the_proxy_key_comes_from_the_environment() {
        let env = |name: &str| match name {
            "SMOKE_PROXY_URL" => Some("http://127.0.0.1:8000".to_owned()),
            "SMOKE_PROXY_KEY" => Some("k".repeat(20)),
            _ => None,
        };
        let config = parse(args(&["--url", "http://127.0.0.1:8787"]), env).unwrap();
        let proxy = config.proxy.unwrap();
        assert_eq!(proxy.url, "http://127.0.0.1:8000");
        assert_eq!(proxy.key.as_deref(), Some("kkkkkkkkkkkkkkkkkkkk"));
    }

    #[test]
    fn an_empty_proxy_url_means_no_proxy_checks() {
        let config = parse(args(&["--url", "http://x", "--proxy-url", ""]), |_| None).unwrap();
        assert!(config.proxy.is_none());
    }

    #[test]
    fn mistakes_are_reported() {
        assert!(parse(args(&[]), |_| None).unwrap_err().contains("--url"));
        assert!(parse(args(&["--url", "example.com"]), |_| None).unwrap_err().contains("http://"));
        assert!(
            parse(args(&["--url", "http://x", "--asks", "many"]), |_| None)
                .unwrap_err()
                .contains("whole number")
        );
        assert!(parse(args(&["--url", "http://x", "--expect-source", "gpt"]), |_| None).is_err());
        assert!(
            parse(args(&["--url", "http://x", "--bogus", "1"]), |_| None)
                .unwrap_err()
                .contains("unknown flag")
        );
    }
}

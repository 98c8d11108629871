//! Thin adapters, one per runtime, each behind its cargo feature and target.

#[cfg(feature = "cloudflare")]
mod cloudflare;

#[cfg(feature = "spin")]
mod spin;

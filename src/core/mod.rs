//! The platform-neutral core: no `worker`, no `spin_sdk`, no IO of its own. Everything it needs
//! from the world comes through [`seam::Platform`].

/// Code for the key-value store ([`seam::Store::KeyValue`], see [`kv`]): compiled where that store
/// can be chosen (Spin, the native tests) and left out of the Workers build, which has only D1
/// (an async branch never taken still costs its whole state machine in the wasm).
macro_rules! key_value {
    ($($code:tt)*) => {
        #[cfg(any(feature = "spin", not(target_arch = "wasm32")))]
        {
            $($code)*
        }
    };
}

pub mod admission;
pub mod api;
pub mod ask;
pub mod asker;
pub mod classify;
pub mod clean;
pub mod config;
pub mod dashboard;
pub mod domain;
pub mod fallback;
pub mod health;
#[cfg(any(feature = "spin", not(target_arch = "wasm32")))]
pub mod kv;
pub mod limits;
#[cfg(feature = "openapi")]
pub mod openapi;
pub mod pages;
pub mod persona;
pub mod providers;
pub mod remember;
pub mod seam;
pub mod speak;
pub mod state;
pub mod stream_clean;
pub mod stream_parse;
pub mod time;

pub use api::{Handled, handle};
pub use config::Config;
pub use seam::Platform;

#[cfg(test)]
mod chain_tests;
#[cfg(test)]
pub(crate) mod memory;

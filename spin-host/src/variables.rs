//! Spin's `variables` interface (`spin:variables/variables@3.0.0`), read from the environment the
//! way Spin's environment provider does: variable `groq_api_key` is `SPIN_VARIABLE_GROQ_API_KEY`.

use std::collections::HashMap;

use wasmtime::component::{Accessor, HasSelf};

use crate::spin::variables::variables::{Error, Host, HostWithStore};
use crate::Host as StoreData;

/// Every `SPIN_VARIABLE_<NAME>` in the environment, keyed by the lower-case Spin name.
pub fn from_env() -> HashMap<String, String> {
    std::env::vars()
        .filter_map(|(key, value)| Some((key.strip_prefix("SPIN_VARIABLE_")?.to_ascii_lowercase(), value)))
        .collect()
}

/// Spin variable names are lower-case letters, digits and underscores, starting with a letter.
fn valid_name(name: &str) -> bool {
    name.starts_with(|c: char| c.is_ascii_lowercase())
        && name.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
}

impl Host for StoreData {}

impl<T> HostWithStore<T> for HasSelf<StoreData> {
    async fn get(accessor: &Accessor<T, Self>, name: String) -> wasmtime::Result<Result<String, Error>> {
        if !valid_name(&name) {
            return Ok(Err(Error::InvalidName(name)));
        }
        Ok(accessor
            .with(|mut access| access.get().variables.get(&name).cloned().ok_or(Error::Undefined(name))))
    }
}

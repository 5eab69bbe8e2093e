//! osmox-webhook-filter: watch OsmoX responses in Envoy and deliver every notification status
//! change as a webhook.
//!
//! Everything outside `host` is a pure core with no proxy-wasm dependency: it builds and is
//! tested natively. `host` adapts it to proxy-wasm contexts and only exists on wasm32.
#![forbid(unsafe_code)]

pub mod body;
mod calendar;
pub mod config;
pub mod delivery;
pub mod events;
pub mod extract;
#[cfg(test)]
mod fuzz;
pub mod hashing;
mod heapsort;
pub mod intake;
mod json;
pub mod layout;
pub mod learn;
pub mod metrics;
pub mod osmox;
pub mod page_memory;
pub mod payload;
mod record;
pub mod routing;
pub mod signing;
pub mod store;

#[cfg(target_arch = "wasm32")]
mod host;

/// Sent as `user-agent` on every webhook.
pub const USER_AGENT: &str = concat!("osmox-webhook-filter/", env!("CARGO_PKG_VERSION"));

//! Getting a webhook to its endpoint: retry policy, outcome classification, circuit breaker,
//! and the ledger of pending deliveries kept in a `Store`.

pub mod breaker;
pub mod due;
pub mod held;
pub mod ledger;
pub mod live_endpoints;
pub mod outcome;
pub mod peers;
pub mod reports;
pub mod retry;
pub mod sender;
pub mod succession;
pub mod tick;
pub mod wake;

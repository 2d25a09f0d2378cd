//! The bank's domain: pure aggregates, events and commands. It depends on `annals-core`
//! only, so the same code runs on the in-memory store and on Kafka.

pub mod account;
pub mod money;

#[cfg(test)]
mod account_tests;

pub use account::{Account, AccountCommand, AccountError, AccountEvent, Status};
pub use money::{Currency, Money};

//! The bank's domain: pure aggregates, events, commands and the transfer saga. It
//! depends on `annals-core` and `annals-saga` only (no Kafka, no database), so the same
//! code runs on the in-memory store and on Kafka.

pub mod account;
pub mod money;
pub mod transfer;

#[cfg(test)]
mod account_tests;

pub use account::{Account, AccountCommand, AccountError, AccountEvent, Status};
pub use money::{Currency, Money};
pub use transfer::{InvalidTransfer, Transfer, TransferRequest};
